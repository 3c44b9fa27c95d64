"""``pyarchive-node``: run a storage node (HTTP API plus its rsync daemon)."""

from __future__ import annotations

from typing import Any

import click

from common.config import ConfigError, load, sample_file
from common.running import begin_logging, keep_files_private, serve_forever
from node.config import NodeConfig


def _config(ctx: click.Context) -> NodeConfig:
    options = dict(ctx.obj)
    try:
        config = load(NodeConfig, "node", config_file=options.pop("config_file"), overrides=options)
        config.check()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    return config


@click.group(invoke_without_command=True)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="INI file.")
@click.option("--name", help="This node's name in the cluster (required).")
@click.option("--data-dir", help="Replicas, incoming/ and rsyncd files (default ./var/node).")
@click.option("--listen", help="Twisted endpoint string (default tcp:8101:interface=127.0.0.1).")
@click.option("--rsync-port", type=int, help="Port of the node's rsync daemon (default 8873).")
@click.option("--zone", help="The zone this node is in (default 'default').")
@click.pass_context
def main(ctx: click.Context, /, **options: Any) -> None:
    """A PyArchive storage node. Without a command it serves until stopped.

    Its key comes from $PYARCHIVE_NODE_KEY or the config file ('pyarchive-proxy nodes key NAME'
    prints it); given $PYARCHIVE_CLUSTER_SECRET instead, the node derives its key from it.
    """
    keep_files_private()  # every command: serve, but also those that create the database
    ctx.obj = options
    if ctx.invoked_subcommand is None:
        ctx.invoke(serve)


@main.command()
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Serve the HTTP API and run the rsync daemon; stops both cleanly on SIGINT/SIGTERM."""
    from twisted.internet import reactor

    from node.service import build_node

    config = _config(ctx)
    begin_logging()
    try:
        node = build_node(config, reactor)
    except (ConfigError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    serve_forever(
        reactor, node, "pyarchive-node",
        lambda address: (
            f"pyarchive-node {config.name} serving on {address.host}:{address.port}, "
            f"rsync on {config.rsync_bind_address()}:{config.rsync_port}"
        ),
    )  # fmt: skip


@main.command("print-config-sample")
def print_config_sample() -> None:
    """Print every setting with its default and meaning (the source of etc/node.conf-sample)."""
    click.echo(config_sample(), nl=False)


def config_sample() -> str:
    preamble = [
        "# PyArchive storage node settings. Every setting can also be given as an environment",
        "# variable PYARCHIVE_<NAME> (e.g. PYARCHIVE_CLUSTER_SECRET=...) or on the command line",
        "# where a flag exists (--name, --data-dir, --listen, --rsync-port, --zone); the command",
        "# line wins, then the environment, then this file. Durations take s/m/h/d.",
    ]
    return sample_file(NodeConfig, "node", preamble)
