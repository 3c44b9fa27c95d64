"""The console's nodes page (``/admin/nodes/``): every storage node with its status, zone,
space, last ping, replicas and mirror backlog; add one, drain or reactivate it, remove it
(confirmed first; refused while it holds the only copy of anything), and a page per node
with its recent warnings and errors from the system log. Over the same ``NodeAdmin`` as
``/api/nodes/``. Staff only (``proxy.web.pages.console``).

The table is ``#nodes``, one ``tr[data-node]`` per node carrying ``data-status``
(up, down or draining), so a live refresher can re-read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.web.iweb import IRequest

from common.errors import ApiError, BadRequest, NotFound
from proxy.catalog import console_store
from proxy.catalog.sessions import Session
from proxy.cluster.nodestore import ACTIVE, DRAINING
from proxy.remote import tierstore
from proxy.web.pages.base import field_errors, page
from proxy.web.pages.console import ConsolePage

TROUBLE_SHOWN = 20  # warnings and errors on a node's page
_ADD_FIELDS = ("name", "url", "rsync_url", "zone")


@dataclass(frozen=True)
class NodeRow:
    """One node as the page shows it."""

    name: str
    url: str
    rsync_url: str
    zone: str
    status: str  # up | down | draining: what the API shows
    state: str  # active | draining
    free_bytes: int | None
    total_bytes: int | None
    last_seen: str | None  # ISO 8601
    rtt_ms: float | None
    replicas: int
    backlog: int  # blobs it is to mirror to S3 and has not yet

    @property
    def used_bytes(self) -> int | None:
        """What the bar shows.

        >>> NodeRow("n", "", "", "a", "up", "active", 30, 100, None, None, 0, 0).used_bytes
        70
        """
        if self.free_bytes is None or self.total_bytes is None:
            return None
        return max(0, self.total_bytes - self.free_bytes)

    @classmethod
    def of(cls, node: dict[str, Any], backlog: int) -> NodeRow:
        return cls(
            node["name"], node["url"], node["rsync_url"], node["zone"], node["status"],
            node["state"], node["free_bytes"], node["total_bytes"], node["last_seen"],
            node["rtt_ms"], node["replicas"], backlog,
        )  # fmt: skip


class NodePages(ConsolePage):
    @page("/admin/nodes/", methods=["GET"])
    async def nodes_page(self, request: IRequest) -> bytes:
        session = await self._staff(request)
        return await self._nodes_page(request, session)

    async def _node_rows(self) -> list[NodeRow]:
        nodes = await self._nodes.list_nodes()
        backlog = await self._db.run(tierstore.mirror_backlog)
        return [NodeRow.of(node, backlog.get(node["name"], 0)) for node in nodes]

    async def _node(self, name: str) -> NodeRow:
        found = [row for row in await self._node_rows() if row.name == name]
        if not found:
            raise NotFound(f"There is no node named {name!r}.")
        return found[0]

    async def _nodes_page(
        self,
        request: IRequest,
        session: Session,
        *,
        errors: dict[str, str] | None = None,
        values: dict[str, str] | None = None,
        done: str = "",
        status: int = 200,
    ) -> bytes:
        return self._page(
            request, "console_nodes.html", session, status, nodes=await self._node_rows(),
            errors=errors or {}, values=values or {}, done=done, add_fields=_ADD_FIELDS,
        )  # fmt: skip

    @page("/admin/nodes/", methods=["POST"])
    async def add_node(self, request: IRequest) -> bytes:
        session, form = await self._staff_form(request)
        values = {name: form.fields.get(name, "").strip() for name in _ADD_FIELDS}
        try:
            added = await self._nodes.add(dict(values))
        except ApiError as error:
            errors = field_errors(error, "__all__")
            return await self._nodes_page(
                request, session, errors=errors, values=values, status=error.status
            )
        done = f"Node {added['name']} added; it is used once its first ping succeeds."
        return await self._nodes_page(request, session, done=done)

    @page("/admin/nodes/<name>/", methods=["GET"])
    async def node_page(self, request: IRequest, name: str) -> bytes:
        session = await self._staff(request)
        node = await self._node(name)
        trouble = await self._db.run(console_store.node_trouble, node.name, TROUBLE_SHOWN)
        return self._page(request, "console_node.html", session, node=node, trouble=trouble)

    @page("/admin/nodes/<name>/", methods=["POST"])
    async def change_node(self, request: IRequest, name: str) -> bytes:
        session, form = await self._staff_form(request)
        action = form.fields.get("action", "")
        try:
            if action not in ("drain", "reactivate"):
                raise BadRequest("Unknown action: drain or reactivate", field="action")
            await self._nodes.update(name, {"state": DRAINING if action == "drain" else ACTIVE})
        except ApiError as error:
            errors = {"__all__": error.detail}
            return await self._nodes_page(request, session, errors=errors, status=error.status)
        done = (
            f"Node {name} is being drained: its copies are made again elsewhere."
            if action == "drain"
            else f"Node {name} takes new copies again."
        )
        return await self._nodes_page(request, session, done=done)

    @page("/admin/nodes/<name>/remove", methods=["GET"])
    async def confirm_remove(self, request: IRequest, name: str) -> bytes:
        session = await self._staff(request)
        node = await self._node(name)
        return self._page(request, "console_node_remove.html", session, node=node)

    @page("/admin/nodes/<name>/remove", methods=["POST"])
    async def remove_node(self, request: IRequest, name: str) -> bytes:
        session, _ = await self._staff_form(request)
        try:
            await self._nodes.remove(name)
        except ApiError as error:
            errors = {"__all__": f"Node {name} was not removed: {error.detail}"}
            return await self._nodes_page(request, session, errors=errors, status=error.status)
        return await self._nodes_page(request, session, done=f"Node {name} removed.")
