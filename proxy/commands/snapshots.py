"""``pyarchive-proxy restore --from-s3`` and ``snapshots list``: disaster recovery from the
metadata snapshots in a bucket, named on the command line (no database connection needed to
find them)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from proxy.commands.shared import config_of, secret_key


def _s3_options(command: Any) -> Any:
    """The bucket options of ``restore`` and ``snapshots``; the secret key is never a flag
    (flags show in ``ps``): it comes from $PYARCHIVE_S3_SECRET_KEY or a hidden prompt."""
    options = [
        click.option("--bucket", required=True, help="The bucket the snapshots are in."),
        click.option("--region", required=True, help="The bucket's region (e.g. eu-west-1)."),
        click.option("--endpoint-url", default="", help="S3-compatible endpoint; empty: AWS."),
        click.option("--prefix", default="pyarchive", show_default=True, help="Key prefix."),
        click.option("--access-key", required=True, help="Access key id."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _s3_settings(s3: dict[str, str], name: str = "") -> Any:
    from common.s3 import S3Settings, valid_bucket, valid_prefix

    if not valid_bucket(s3["bucket"]):
        raise click.BadParameter("not a valid bucket name", param_hint="--bucket")
    if not valid_prefix(s3["prefix"]):
        raise click.BadParameter("not a valid key prefix", param_hint="--prefix")
    secret = secret_key(ask=True)
    if not secret:
        raise click.ClickException("no S3 secret key: set PYARCHIVE_S3_SECRET_KEY or type it")
    return S3Settings(secret_key=secret, name=name, **s3)


@click.command()
@click.option("--from-s3", "from_s3", is_flag=True, help="Restore from the bucket (required).")
@click.option("--snapshot", help="Snapshot name (default: the newest).")
@click.option(
    "--connection-name",
    default="restored",
    show_default=True,
    help="Name of the S3 connection, unless the snapshot has one for this bucket.",
)
@click.option(
    "--backup-key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Your copy of the old proxy's DATA_DIR/backup_key, which verifies the snapshots "
    "(default: the backup_key setting, else this data directory's backup_key).",
)
@click.option(
    "--trust-unsigned",
    is_flag=True,
    help="Restore a snapshot even if the backup key does not verify it (anyone holding the "
    "bucket's credentials, every node included, could have written it).",
)
@click.option(
    "--restore-staff",
    is_flag=True,
    help="Keep the snapshot's staff rights (default: every account comes back non-staff).",
)
@_s3_options
@click.pass_context
def restore(
    ctx: click.Context,
    /,
    from_s3: bool,
    snapshot: str | None,
    connection_name: str,
    backup_key_file: Path | None,
    trust_unsigned: bool,
    restore_staff: bool,
    **s3: str,
) -> None:
    """Rebuild an empty database from a metadata snapshot in an S3 bucket.

    For disaster recovery: users, files and versions come back, files whose content is in
    the bucket become 'remote' (cache them back), nodes must be added again. Only a
    snapshot signed with the backup key is restored (see --backup-key-file), and accounts
    come back without staff rights unless --restore-staff. The bucket's secret key comes
    from $PYARCHIVE_S3_SECRET_KEY, or is asked for.
    """
    from proxy.keys import load_connection_box
    from proxy.remote.restore import RestoreError, Trust, restore_from_s3
    from proxy.service import database_url

    if not from_s3:
        raise click.UsageError("say where to restore from: --from-s3 (the only source so far)")
    config = config_of(ctx)
    settings = _s3_settings(s3, connection_name)
    os.makedirs(config.data_dir, exist_ok=True)
    key = _backup_key(config, backup_key_file)
    try:
        done = restore_from_s3(
            database_url(config), settings, snapshot,
            box=load_connection_box(config),
            trust=Trust(key, unsigned=trust_unsigned), restore_staff=restore_staff,
            say=click.echo, workdir=config.data_dir,
        )  # fmt: skip
    except RestoreError as exc:
        raise click.ClickException(str(exc)) from None
    if key is not None and backup_key_file is not None:
        _adopt_backup_key(config, key)
    click.echo(
        f"restored {done['snapshot']}: {done['users']} users, {done['files']} files, "
        f"{done['blobs_remote']} blobs remote, {done['blobs_lost']} blobs lost"
        + (f" ({done['files_lost']} files have lost content)" if done["files_lost"] else "")
    )
    click.echo("next: start the proxy, add storage nodes, then cache files back as needed")


def _backup_key(config: Any, key_file: Path | None) -> str | None:
    """The key that verifies snapshots: the file given, the setting, or the one kept in the
    data directory (never a new one: a new key verifies nothing)."""
    from proxy.keys import BACKUP_KEY_FILE

    path = key_file or Path(config.data_dir) / BACKUP_KEY_FILE
    if key_file is None and config.backup_key:
        return str(config.backup_key)
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"cannot read the backup key {path}: {exc}") from None
    if not key:
        raise click.ClickException(f"the backup key file {path} is empty")
    return key


def _adopt_backup_key(config: Any, key: str) -> None:
    """Let the restored proxy go on signing with the key the operator keeps a copy of."""
    from proxy.keys import BACKUP_KEY_FILE

    path = Path(config.data_dir) / BACKUP_KEY_FILE
    if config.backup_key or path.exists():
        if (config.backup_key or path.read_text().strip()) != key:
            kept = "the backup_key setting" if config.backup_key else str(path)
            click.echo(f"note: this proxy signs new snapshots with another backup key than "
                       f"the one given ({kept})")  # fmt: skip
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
        out.flush()
        os.fsync(out.fileno())
    click.echo(f"the backup key is kept in {path}: new snapshots are signed with it")


@click.group()
def snapshots() -> None:
    """Metadata snapshots in an S3 bucket (written by the metadata-backup job)."""


@snapshots.command("list")
@_s3_options
def snapshots_list(**s3: str) -> None:
    """List the snapshots in a bucket, newest first."""
    from botocore.exceptions import BotoCoreError, ClientError

    from common.s3 import make_client
    from proxy.remote.snapshots import list_snapshots_in

    settings = _s3_settings(s3)
    try:
        found = list_snapshots_in(make_client(settings, max_pool_connections=1), settings)
    except (BotoCoreError, ClientError) as exc:
        raise click.ClickException(f"S3 error: {exc}") from None
    for snapshot in found:
        shown = snapshot.public()
        click.echo(f"{shown['name']}\t{shown['size']}\t{shown['taken_at']}")
