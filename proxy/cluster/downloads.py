"""Where a download is served from: a signed redirect to the best node, or the proxy itself."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from twisted.internet.interfaces import IReactorTime

from common.db import Database, Txn
from common.errors import ServiceUnavailable
from common.signing import DownloadGrant, NodeKeys, issue_download_token, replica_key
from proxy.catalog.store import Blob
from proxy.cluster import nodestore
from proxy.cluster.nodestore import CONFIRMED, UP
from proxy.cluster.placement import Candidate, ZoneMap, choose_source, zone_of
from proxy.uploads.staging import StagingArea

RETRY_AFTER = 30


@dataclass(frozen=True)
class Redirect:
    url: str


class DownloadLocator:
    def __init__(
        self,
        *,
        db: Database,
        staging: StagingArea,
        clock: IReactorTime,
        cluster_secret: str,
        token_lifetime: float,
        zones: ZoneMap,
    ) -> None:
        self._db = db
        self._staging = staging
        self._clock = clock
        self._secret = cluster_secret
        self._lifetime = token_lifetime
        self._zones = zones

    async def locate(
        self, blob: Blob, filename: str, client_address: str, content_type: str = ""
    ) -> Redirect | Path:
        """A redirect to a live node holding a confirmed replica (the client's zone first,
        then the fastest), else the proxy's own copy; 503 when neither exists."""
        local, holders, urls = await self._db.run(self._holders, blob.id)
        source = choose_source(holders, zone_of(client_address, self._zones))
        if source is not None:
            grant = DownloadGrant(
                replica_key(blob.id, blob.sha256), source.name, filename,
                int(self._clock.seconds() + self._lifetime), content_type,
            )  # fmt: skip
            token = issue_download_token(NodeKeys.for_node(self._secret, source.name), grant)
            return Redirect(f"{urls[source.name]}/download/{token}")
        if local:
            return self._staging.blob_path(blob.sha256, blob.id)
        raise ServiceUnavailable(
            "No copy of this file is reachable right now; try again shortly",
            retry_after=RETRY_AFTER,
        )

    @staticmethod
    def _holders(txn: Txn, blob_id: int) -> tuple[bool, list[Candidate], dict[str, str]]:
        local = bool(txn.scalar("SELECT local FROM blobs WHERE id = ?", (blob_id,)))
        on = {
            r.node for r in nodestore.replicas_of(txn, [blob_id])[blob_id] if r.state == CONFIRMED
        }
        nodes = [n for n in nodestore.list_nodes(txn) if n.name in on and n.status == UP]
        holders = [Candidate(n.name, n.zone, n.free_bytes or 0, n.rtt_ms or 0.0) for n in nodes]
        return local, holders, {n.name: n.url for n in nodes}
