"""``pyarchive-proxy nodes ...``: staff administration of storage nodes from the command line,
through the same ``NodeAdmin`` as ``/api/nodes/``."""

from __future__ import annotations

import os
import re
from typing import Any

import click

from proxy.cluster.admin import NodeAdmin
from proxy.commands.shared import config_of, with_database


@click.group()
def nodes() -> None:
    """Register, list, drain and remove storage nodes (the same as /api/nodes/)."""


@nodes.command("add")
@click.argument("name")
@click.argument("url")
@click.argument("rsync_url")
@click.option("--zone", default="default", help="The node's zone (replicas spread over zones).")
@click.pass_context
def nodes_add(ctx: click.Context, name: str, url: str, rsync_url: str, zone: str) -> None:
    """Register node NAME at URL (http://HOST:PORT) with its RSYNC_URL (rsync://...)."""

    async def run(db: Any, reactor: Any) -> None:
        node = await NodeAdmin(db=db, clock=reactor).add(
            {"name": name, "url": url, "rsync_url": rsync_url, "zone": zone}
        )
        print(f"added node {node['name']} ({node['url']}, zone {node['zone']})")

    with_database(config_of(ctx), run)


@nodes.command("update")
@click.argument("name")
@click.option("--url", help="New http://HOST:PORT of the node's API.")
@click.option("--rsync-url", help="New rsync://pyarchive@HOST:PORT/incoming.")
@click.option("--zone", help="New zone.")
@click.option("--active", is_flag=True, help="Undo a drain: place new replicas here again.")
@click.pass_context
def nodes_update(
    ctx: click.Context, name: str, url: str | None, rsync_url: str | None, zone: str | None,
    active: bool,
) -> None:  # fmt: skip
    """Change NAME's addresses or zone, or make a drained node active again."""
    changes = {"url": url, "rsync_url": rsync_url, "zone": zone}
    data: dict[str, Any] = {k: v for k, v in changes.items() if v is not None}
    if active:
        data["state"] = "active"

    async def run(db: Any, reactor: Any) -> None:
        node = await NodeAdmin(db=db, clock=reactor).update(name, data)
        print(f"node {node['name']}: {node['url']}, {node['rsync_url']}, zone {node['zone']}, "
              f"{node['state']}")  # fmt: skip

    with_database(config_of(ctx), run)


@nodes.command("list")
@click.pass_context
def nodes_list(ctx: click.Context) -> None:
    """Show every node with what the monitor last saw."""

    async def run(db: Any, reactor: Any) -> None:
        for node in await NodeAdmin(db=db, clock=reactor).list_nodes():
            free = node["free_bytes"]
            shown = "?" if free is None else f"{free / 2**30:.1f} GiB free"
            print(f"{node['name']}\t{node['status']}\t{node['zone']}\t{shown}\t"
                  f"{node['replicas']} replicas\t{node['url']}")  # fmt: skip

    with_database(config_of(ctx), run)


@nodes.command("drain")
@click.argument("name")
@click.pass_context
def nodes_drain(ctx: click.Context, name: str) -> None:
    """Stop placing new replicas on NAME."""

    async def run(db: Any, reactor: Any) -> None:
        await NodeAdmin(db=db, clock=reactor).update(name, {"state": "draining"})
        print(f"node {name} is draining")

    with_database(config_of(ctx), run)


@nodes.command("remove")
@click.argument("name")
@click.pass_context
def nodes_remove(ctx: click.Context, name: str) -> None:
    """Forget NAME (refused while it holds the only copy of anything)."""

    async def run(db: Any, reactor: Any) -> None:
        await NodeAdmin(db=db, clock=reactor).remove(name)
        print(f"node {name} removed")

    with_database(config_of(ctx), run)


@nodes.command("key")
@click.argument("name")
@click.pass_context
def nodes_key(ctx: click.Context, name: str) -> None:
    """Print node NAME's key, derived from this proxy's cluster secret: give it to that node
    as PYARCHIVE_NODE_KEY (it is good for that node's name only)."""
    from common.signing import node_key
    from proxy.keys import load_cluster_secret

    config = config_of(ctx)
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):  # as NodeAdmin checks a name
        raise click.ClickException(f"{name!r} is not a node name")
    os.makedirs(config.data_dir, exist_ok=True)
    click.echo(node_key(load_cluster_secret(config), name))
