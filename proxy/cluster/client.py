"""The proxy's side of its conversations with nodes: pings, signed internal calls, rsync."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import treq
from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure

from common.signing import DownloadGrant, NodeKeys, issue_download_token, sign_request
from proxy.cluster.nodeapi import Pushed, WantedReplica

# Confirm and verify make the node hash the whole replica; allow for this slow a disk and CPU.
_SLOWEST_HASHING = 20 * 2**20  # bytes per second


class NodeError(Exception):
    """A node answered with an error, or not at all."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NodeClient:
    """HTTP calls to nodes (``proxy.cluster.nodeapi.NodeApi`` over the network); the internal
    ones are signed with the key of the node they are for, derived from the cluster secret."""

    def __init__(self, *, http: Any, clock: IReactorTime, cluster_secret: str, timeout: float):
        self._http = http  # a treq HTTPClient (or the treq module)
        self._clock = clock
        self._secret = cluster_secret
        self.timeout = timeout

    async def health(self, base_url: str) -> dict[str, Any]:
        response = await self._http.get(f"{base_url}/health", timeout=self.timeout)
        body = await response.json()
        if response.code != 200 or not isinstance(body, dict):
            raise NodeError(f"health answered {response.code}", response.code)
        return body

    def timeout_for(self, size: int) -> float:
        """How long a call that reads ``size`` bytes on the node may take (it hashes them)."""
        return self.timeout + size / _SLOWEST_HASHING

    async def call(
        self,
        method: str,
        base_url: str,
        node: str,
        path: str,
        payload: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> tuple[int, Any]:
        """A signed request; returns (status, parsed JSON body or None)."""
        body = json.dumps(payload).encode() if payload is not None else b""
        signed_path = urlsplit(base_url).path.rstrip("/") + path
        keys = NodeKeys.for_node(self._secret, node)
        headers = sign_request(keys, method, signed_path, body, now=self._clock.seconds())
        headers["Content-Type"] = "application/json"
        response = await self._http.request(
            method, f"{base_url}{path}", data=body or None, headers=headers,
            timeout=timeout or self.timeout,
        )  # fmt: skip
        raw = await response.content()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        return response.code, parsed

    async def confirm(
        self, base_url: str, node: str, key: str, size: int, md5: str, sha256: str
    ) -> None:
        status, body = await self.call(
            "POST", base_url, node, f"/internal/replicas/{key}/confirm",
            {"size": size, "md5": md5, "sha256": sha256}, timeout=self.timeout_for(size),
        )  # fmt: skip
        if status != 200:
            detail = body.get("detail") if isinstance(body, dict) else None
            raise NodeError(f"confirm answered {status}: {detail}", status)

    async def confirm_batch(
        self, base_url: str, node: str, wanted: Sequence[WantedReplica]
    ) -> dict[str, str | None]:
        payload = {
            "replicas": [
                {"key": w.key, "size": w.size, "md5": w.md5, "sha256": w.sha256} for w in wanted
            ]
        }
        status, body = await self.call(
            "POST", base_url, node, "/internal/replicas/confirm-batch", payload,
            timeout=self.timeout_for(sum(w.size for w in wanted)),
        )  # fmt: skip
        if status != 200:
            detail = body.get("detail") if isinstance(body, dict) else None
            raise NodeError(f"batch confirm answered {status}: {detail}", status)
        return batch_outcomes([w.key for w in wanted], body)

    async def delete(self, base_url: str, node: str, key: str) -> None:
        status, _ = await self.call("DELETE", base_url, node, f"/internal/replicas/{key}")
        if status not in (200, 204, 404):
            raise NodeError(f"delete answered {status}", status)

    async def fetch(
        self, base_url: str, node: str, key: str, write: Callable[[bytes], None]
    ) -> None:
        """Download a replica through the node's signed download URL, calling ``write`` with
        each piece in order (the caller checks size and checksum)."""
        grant = DownloadGrant(key, node, key, int(self._clock.seconds() + 300))
        token = issue_download_token(NodeKeys.for_node(self._secret, node), grant)
        response = await self._http.get(f"{base_url}/download/{token}", timeout=self.timeout)
        if response.code != 200:
            await response.content()
            raise NodeError(f"download answered {response.code}", response.code)
        await treq.collect(response, write)

    async def verify(self, base_url: str, node: str, key: str, size: int, sha256: str) -> bool:
        """True if the node's copy checks out; False if the node found it corrupt."""
        status, _ = await self.call(
            "POST", base_url, node, f"/internal/replicas/{key}/verify",
            {"size": size, "sha256": sha256}, timeout=self.timeout_for(size),
        )  # fmt: skip
        if status == 200:
            return True
        if status in (404, 409):
            return False
        raise NodeError(f"verify answered {status}", status)

    async def mirror_sync(
        self, base_url: str, node: str, want: Mapping[str, Any], *, timeout: float
    ) -> dict[str, Any]:
        """Send the node its S3 mirror want-list; returns the node's report (a JSON object)."""
        status, body = await self.call(
            "POST", base_url, node, "/internal/mirror/sync", want, timeout=timeout
        )
        if status != 200 or not isinstance(body, dict):
            detail = body.get("detail") if isinstance(body, dict) else None
            raise NodeError(f"mirror sync answered {status}: {detail}", status)
        return body


def batch_outcomes(keys: Sequence[str], body: Any) -> dict[str, str | None]:
    """What a node's batch confirm answer says of each key asked: None for confirmed, else
    why not. Nothing is taken on trust: a key confirmed is one asked for whose entry says
    exactly ``"confirmed": true``; a key the answer leaves out, names twice or garbles is
    not confirmed.

    >>> outcomes = batch_outcomes(["1-a", "2-b", "3-c"], {"results": [
    ...     {"key": "1-a", "confirmed": True}, {"key": "2-b", "confirmed": False,
    ...     "status": 409, "detail": "its sha256 is ..."}, {"key": "9-z", "confirmed": True}]})
    >>> outcomes["1-a"], outcomes["2-b"]
    (None, 'confirm answered 409: its sha256 is ...')
    >>> outcomes["3-c"]
    'the node did not answer for it'
    """
    outcomes: dict[str, str | None] = {key: "the node did not answer for it" for key in keys}
    results = body.get("results") if isinstance(body, dict) else None
    if not isinstance(results, list):
        raise NodeError("batch confirm answered without a list of results")
    answered: set[str] = set()
    for entry in results:
        key = entry.get("key") if isinstance(entry, dict) else None
        if not isinstance(key, str) or key not in outcomes:
            continue
        if key in answered:  # named twice: believe neither answer
            outcomes[key] = "the node answered for it twice"
            continue
        answered.add(key)
        if entry.get("confirmed") is True:
            outcomes[key] = None
        else:
            detail = str(entry.get("detail", ""))[:300]
            outcomes[key] = f"confirm answered {entry.get('status')}: {detail}"
    return outcomes


class RsyncError(Exception):
    pass


class _RsyncProtocol(protocol.ProcessProtocol):
    def __init__(self, done: Deferred[None]) -> None:
        self.done = done
        self.errors = b""

    def errReceived(self, data: bytes) -> None:
        self.errors = (self.errors + data)[-4000:]

    def outReceived(self, data: bytes) -> None:
        pass

    def processEnded(self, reason: Failure) -> None:
        if reason.check(ProcessDone):
            self.done.callback(None)
        else:
            message = self.errors.decode("utf-8", "replace").strip().splitlines()
            self.done.errback(RsyncError(f"rsync failed ({reason.value}): {message[-1:] or ''}"))


class RsyncPusher:
    """Copies a file to a node's rsync daemon (``proxy.cluster.nodeapi.ReplicaPusher``): an
    argument list, a timeout, ``--partial``."""

    def __init__(
        self,
        *,
        reactor: IReactorProcess,
        clock: IReactorTime,
        cluster_secret: str,
        timeout: float,
        binary: str = "rsync",
        scratch: Path | None = None,
    ) -> None:
        self._reactor = reactor
        self._clock = clock
        self._secret = cluster_secret
        self._timeout = timeout
        self._binary = binary
        # Where a batch's folder of links is made; one a stopped proxy left is removed here.
        self._scratch = scratch
        if scratch is not None:
            scratch.mkdir(parents=True, exist_ok=True)
            for left in scratch.glob(f"{_BATCH_PREFIX}*"):
                shutil.rmtree(left, ignore_errors=True)

    def push(
        self, source: str, rsync_url: str, node: str, key: str, size: int = 0
    ) -> Deferred[None]:
        """Run rsync; ``--timeout`` ends a stalled transfer, and as a last resort the process
        is killed after four timeouts plus the time the file takes at 10 MiB/s.

        Neither ``--whole-file`` nor ``--checksum-choice=none``: a first push has no basis
        file, so rsync sends it whole anyway, and its transfer checksum is already the cheap
        xxh128 (negotiated between rsync 3.2+ peers; ``none`` saved under 0.1 CPU s/GiB). Both
        would throw away the delta against what ``--partial --inplace`` kept of a broken push,
        which is what lets a retry send only the rest (``none`` implies whole-file).
        """
        return self._run(["--", source, f"{rsync_url.rstrip('/')}/{key}"], node, size)

    def push_batch(self, files: Sequence[Pushed], rsync_url: str, node: str) -> Deferred[None]:
        """One rsync run for many files: a temporary folder holds a link named by key to
        each staging file, ``--files-from`` lists the keys and ``--copy-links`` sends what
        they point to, so each lands at ``incoming/<key>`` as a single push would put it.
        The node's side is unchanged: it never learns the proxy's staging layout."""
        return deferToThread(self._link_batch, files).addCallback(
            self._push_linked, rsync_url, node, sum(f.size for f in files)
        )

    def _link_batch(self, files: Sequence[Pushed]) -> Path:
        folder = Path(tempfile.mkdtemp(prefix=_BATCH_PREFIX, dir=self._scratch))
        try:
            links = folder / "files"
            links.mkdir()
            for pushed in files:
                (links / pushed.key).symlink_to(os.path.abspath(pushed.source))
            (folder / "list").write_text("".join(f"{f.key}\n" for f in files))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return folder

    def _push_linked(self, folder: Path, rsync_url: str, node: str, size: int) -> Deferred[None]:
        args = [
            "--copy-links", f"--files-from={folder / 'list'}",
            "--", f"{folder / 'files'}/", f"{rsync_url.rstrip('/')}/",
        ]  # fmt: skip

        def cleaned(result: object) -> Deferred[object]:
            return deferToThread(shutil.rmtree, folder, True).addBoth(lambda _: result)

        return self._run(args, node, size).addBoth(cleaned)

    def _run(self, where: list[str], node: str, size: int) -> Deferred[None]:
        done: Deferred[None] = Deferred()
        proto = _RsyncProtocol(done)
        args = [
            self._binary, "--partial", "--inplace",
            f"--timeout={max(int(self._timeout), 1)}", *where,
        ]  # fmt: skip
        password = NodeKeys.for_node(self._secret, node).rsync_password
        env = {"RSYNC_PASSWORD": password, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        process = self._reactor.spawnProcess(proto, self._binary, args, env=env)
        deadline = self._timeout * 4 + size / (10 * 2**20)
        killer = self._clock.callLater(deadline, _kill, process)

        def finished(result: object) -> object:
            if killer.active():
                killer.cancel()
            return result

        return done.addBoth(finished)


_BATCH_PREFIX = "rsync-batch-"


def _kill(process: Any) -> None:
    try:
        process.signalProcess("KILL")
    except Exception:
        pass
