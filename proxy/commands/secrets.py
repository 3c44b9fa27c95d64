"""``pyarchive-proxy rotate-secret {token,encryption}``: replace one of the proxy's kept keys.

The token key (DATA_DIR/secret_key) signs login tokens and browser sessions; the encryption
key (DATA_DIR/encryption_key) seals the S3 connections' secret keys in the database. Each is
rotated alone. Stop the proxy first and start it after: a running proxy holds the old key.
"""

from __future__ import annotations

import secrets
from typing import Any

import click

from proxy.commands.shared import config_of, with_database


@click.command("rotate-secret")
@click.argument("which", type=click.Choice(["token", "encryption"]))
@click.pass_context
def rotate_secret(ctx: click.Context, which: str) -> None:
    """Replace the token key or the encryption key with a new random one (stop the proxy
    first, start it after).

    token: every login token and browser session issued before stops working (users log in
    again). encryption: every stored S3 secret key is re-sealed with the new key, in one
    transaction; nothing else changes.
    """
    config = config_of(ctx)
    setting = {"token": "secret_key", "encryption": "encryption_key"}[which]
    if getattr(config, setting):
        raise click.ClickException(
            f"{setting} is set in the configuration (PYARCHIVE_{setting.upper()} or the config "
            "file), not kept in the data directory: change it there"
        )
    if which == "encryption" and config.secret_key:
        raise click.ClickException(
            "secret_key is set in the configuration and, with no encryption_key set, seals the "
            "S3 secrets as in older releases: set encryption_key (the same on every proxy) and "
            "enter the S3 secret keys again, or keep both keys in the data directory"
        )
    if which == "token":
        _rotate_token(config)
    else:
        _rotate_encryption(config)


def _rotate_token(config: Any) -> None:
    from proxy.catalog.sessions import end_all
    from proxy.keys import load_connection_box, reseal_connections, write_kept

    async def run(db: Any, reactor: Any) -> None:
        # S3 secrets sealed with the token key by older releases move to their own key first:
        # after this the old token key opens nothing.
        await reseal_connections(config, _connections(config, db, reactor, load_connection_box))
        write_kept(_token_path(config), secrets.token_urlsafe(48))
        ended = await db.run(end_all)
        click.echo(
            f"rotated the token key ({_token_path(config)}): every login token issued before "
            f"is refused from the proxy's next start, and {ended} browser sessions were ended; "
            "users log in again. Start (or restart) the proxy now."
        )

    with_database(config, run)


def _rotate_encryption(config: Any) -> None:
    from proxy.keys import EncryptionKeyFiles, load_connection_box, read_kept, write_kept
    from proxy.remote.connections import connection_box

    files = EncryptionKeyFiles.under(config.data_dir)

    async def run(db: Any, reactor: Any) -> None:
        load_connection_box(config)  # makes the current key if there was none yet
        current, new = read_kept(files.current), secrets.token_urlsafe(48)
        write_kept(files.pending, new)  # opened too, should the steps below be cut short
        older = [read_kept(files.previous), read_kept(_token_path(config))]
        box = connection_box(new, [current, *[key for key in older if key]])
        connections = _connections(config, db, reactor, lambda _config: box)
        resealed, unreadable = await connections.reseal()
        write_kept(files.previous, current)
        files.pending.replace(files.current)
        lost = f"; {unreadable} could not be opened with any key and stay so" if unreadable else ""
        click.echo(
            f"rotated the encryption key ({files.current}): {resealed} S3 secret keys re-sealed "
            f"with it{lost}. Start (or restart) the proxy now; it then forgets the old key."
        )

    with_database(config, run)


def _token_path(config: Any) -> Any:
    from pathlib import Path

    return Path(config.data_dir) / "secret_key"


def _connections(config: Any, db: Any, reactor: Any, box_of: Any) -> Any:
    from proxy.ops.systemlog import SystemLog
    from proxy.remote.connections import S3Connections

    no_pool: Any = None  # re-sealing makes no S3 requests
    return S3Connections(db, reactor, box_of(config), reactor, no_pool, SystemLog(db, reactor))
