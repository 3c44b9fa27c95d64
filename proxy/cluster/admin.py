"""Staff administration of storage nodes (API and command line share it)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from twisted.internet.interfaces import IReactorTime

from common.db import Database, Txn
from common.errors import BadRequest
from proxy.api.forms import check_fields
from proxy.api.views import isotime
from proxy.cluster import nodestore
from proxy.cluster.nodestore import ACTIVE, DRAINING, Node
from proxy.events import kinds
from proxy.events.emit import NO_WAKING, Emitter, Waker

T = TypeVar("T")

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _name(value: object, field: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise BadRequest(f"{field} must be 1 to 64 letters, digits, '_', '.' or '-'", field=field)
    return value


def _url(value: object, field: str, schemes: set[str]) -> str:
    if not isinstance(value, str) or len(value) > 500:
        raise BadRequest(f"{field} is required", field=field)
    try:
        parts = urlsplit(value)  # ValueError: a bad [IPv6] host, or one NFKC makes a delimiter
        port_ok = parts.port != 0  # None (the scheme's default) or 1..65535
    except ValueError:  # not a number, or out of range
        parts, port_ok = urlsplit(""), False
    bad = not port_ok or parts.query or parts.fragment
    if parts.scheme not in schemes or not parts.hostname or bad:
        wanted = " or ".join(sorted(f"{s}://HOST:PORT" for s in schemes))
        raise BadRequest(f"{field} must look like {wanted}", field=field)
    return value.rstrip("/")


def node_json(node: Node, replicas: int) -> dict[str, Any]:
    return {
        "name": node.name,
        "url": node.url,
        "rsync_url": node.rsync_url,
        "zone": node.zone,
        "status": node.public_status,
        "state": node.state,
        "free_bytes": node.free_bytes,
        "total_bytes": node.total_bytes,
        "last_seen": isotime(node.last_seen),
        "rtt_ms": None if node.rtt_ms is None else round(node.rtt_ms, 2),
        "replicas": replicas,
    }


class NodeAdmin:
    def __init__(self, *, db: Database, clock: IReactorTime, waker: Waker = NO_WAKING) -> None:
        self._db = db
        self._clock = clock
        self._waker = waker

    async def _told(self, name: str, change: str, work: Callable[[Txn], T]) -> T:
        """Run ``work`` and, in its transaction, tell staff ``node.changed`` (live pages)."""
        emitter = Emitter(self._clock.seconds())

        def txn_work(txn: Txn) -> T:
            done = work(txn)
            emitter.for_staff(txn, kinds.NODE_CHANGED, node=name, change=change)
            return done

        done = await self._db.run(txn_work)
        self._waker.wake(emitter.users)
        return done

    async def add(self, data: dict[str, Any]) -> dict[str, Any]:
        check_fields(data, {"name", "url", "rsync_url", "zone"})
        name = _name(data.get("name"), "name")
        url = _url(data.get("url"), "url", {"http", "https"})
        rsync_url = _url(data.get("rsync_url"), "rsync_url", {"rsync"})
        zone = data.get("zone")
        zone = _name("default" if zone in (None, "") else zone, "zone")  # not {}, 0 or false
        now = self._clock.seconds()
        node = await self._told(
            name, "added", lambda txn: nodestore.add_node(txn, name, url, rsync_url, zone, now)
        )
        return node_json(node, 0)

    async def list_nodes(self) -> list[dict[str, Any]]:
        return await self._db.run(self._list_txn)

    @staticmethod
    def _list_txn(txn: Txn) -> list[dict[str, Any]]:
        counts = nodestore.replica_counts(txn)
        return [node_json(n, counts.get(n.name, 0)) for n in nodestore.list_nodes(txn)]

    async def update(self, name: str, data: dict[str, Any]) -> dict[str, Any]:
        check_fields(data, {"state", "zone", "url", "rsync_url"})
        changes: dict[str, object] = {}
        if "state" in data:
            if data["state"] not in (ACTIVE, DRAINING):
                raise BadRequest("state must be 'active' or 'draining'", field="state")
            changes["state"] = data["state"]
        if "zone" in data:
            changes["zone"] = _name(data["zone"], "zone")
        if "url" in data:
            changes["url"] = _url(data["url"], "url", {"http", "https"})
        if "rsync_url" in data:
            changes["rsync_url"] = _url(data["rsync_url"], "rsync_url", {"rsync"})
        name = _name(name, "name")
        change = {ACTIVE: "reactivated", DRAINING: "drained"}.get(
            str(changes.get("state")), "moved"
        )
        node = await self._told(
            name, change, lambda txn: nodestore.update_node(txn, name, **changes)
        )
        counts = await self._db.run(nodestore.replica_counts)
        return node_json(node, counts.get(node.name, 0))

    async def remove(self, name: str) -> None:
        name = _name(name, "name")
        await self._told(name, "removed", lambda txn: nodestore.remove_node(txn, name))
