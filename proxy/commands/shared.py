"""What every ``pyarchive-proxy`` command shares: the settings, a run against the migrated
database, and the S3 secret key (never a flag: flags show in ``ps``)."""

from __future__ import annotations

import getpass
import os
from typing import Any

import click
from twisted.internet.defer import ensureDeferred

from common.config import ConfigError, load
from proxy.config import ProxyConfig


def config_of(ctx: click.Context) -> ProxyConfig:
    """The settings: the top-level options (kept in ``ctx.obj``), the environment, the file."""
    options = ctx.obj
    try:
        return load(
            ProxyConfig,
            "proxy",
            config_file=options.pop("config_file"),
            overrides=options,
        )
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def with_database(config: Any, work: Any) -> None:
    """Run ``await work(db, reactor)`` against the migrated database, then exit; an ApiError
    becomes one clear line and exit status 1."""
    from twisted.internet import task

    from common.errors import ApiError
    from proxy.migrations import migrate
    from proxy.service import open_database

    os.makedirs(config.data_dir, exist_ok=True)
    failure: list[str] = []

    async def run(reactor: Any) -> None:
        db = open_database(config)
        try:
            await db.run(migrate)
            await work(db, reactor)
        except ApiError as exc:
            failure.append(exc.detail)
        finally:
            db.close()

    try:
        task.react(lambda reactor: ensureDeferred(run(reactor)))
    except SystemExit as exit_:
        if exit_.code or failure:
            raise click.ClickException(failure[0] if failure else "failed (see above)") from None


def secret_key(ask: bool) -> str | None:
    """The S3 secret key from $PYARCHIVE_S3_SECRET_KEY, else (if ``ask``) a hidden prompt."""
    secret = os.environ.get("PYARCHIVE_S3_SECRET_KEY")
    if secret or not ask:
        return secret or None
    return getpass.getpass("S3 secret key: ")
