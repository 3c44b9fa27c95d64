"""Clients that go away: raw sockets cut at a chosen moment, a TCP relay that cuts at random,
and a resumable seed-API client whose every request is bounded in time.

Blocking on purpose, like ``tests.proc``: these drive a real proxy process over loopback.
"""

from __future__ import annotations

import hashlib
import http.client
import itertools
import json
import random
import select
import selectors
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.proc import ProxyProcess

# Every request a test sends after a disconnect must be answered within this many seconds.
ANSWER_BOUND = 5.0


def multipart_body(data: bytes, filename: str = "part.bin") -> tuple[bytes, str]:
    """A multipart/form-data body with one ``file`` part, and its Content-Type."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"'
        "\r\nContent-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return (
        head + data + f"\r\n--{boundary}--\r\n".encode(),
        f"multipart/form-data; boundary={boundary}",
    )


def chunk_request(
    path: str, token: str, start: int, data: bytes, total: int, *, multipart: bool
) -> bytes:
    """The bytes of one seed-API chunk PUT: request line, headers and body."""
    headers = {
        "Host": "127.0.0.1",
        "Authorization": f"JWT {token}",
        "Content-Range": f"bytes {start}-{start + len(data) - 1}/{total}",
    }
    if multipart:
        body, headers["Content-Type"] = multipart_body(data)
    else:
        body, headers["Content-Type"] = data, "application/octet-stream"
    headers["Content-Length"] = str(len(body))
    head = f"PUT {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (head + "\r\n").encode() + body


def end_connection(sock: socket.socket, how: str) -> None:
    """Close with a FIN ("fin") or abort with a RST ("rst")."""
    if how == "rst":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class FsyncWatch:
    """Reads the log the slow-disk stand-in (``tests.slow_fsync_proxy``) writes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _lines(self) -> list[list[str]]:
        if not self.path.exists():
            return []
        return [line.split() for line in self.path.read_text().splitlines() if line.strip()]

    def started(self) -> int:
        return sum(1 for parts in self._lines() if parts[0] == "start")

    def wait_for_start(self, seen: int, timeout: float = 10.0) -> tuple[str, float]:
        """Block until fsync number ``seen + 1`` has started; its id and start time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            starts = [parts for parts in self._lines() if parts[0] == "start"]
            if len(starts) > seen:
                return starts[seen][1], float(starts[seen][2])
            time.sleep(0.002)
        raise AssertionError("the chunk's fsync never started")

    def end_of(self, fsync_id: str, timeout: float = 10.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for parts in self._lines():
                if parts[0] == "end" and parts[1] == fsync_id:
                    return float(parts[2])
            time.sleep(0.01)
        raise AssertionError(f"fsync {fsync_id} never ended")


@dataclass
class Answer:
    status: int
    body: Any
    seconds: float


class BoundedClient:
    """Seed-API requests, each one answered within ``bound`` seconds or counted as a hang.

    ``port`` may be a relay's, so that the requests themselves are cut at random.
    """

    def __init__(self, port: int, token: str, bound: float = ANSWER_BOUND) -> None:
        self.port = port
        self.token = token
        self.bound = bound
        self.sent = 0
        self.hangs = 0
        self.lost = 0  # requests whose connection went away before an answer
        self.slowest = 0.0

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer | None:
        """The answer, or None when the connection was lost or the answer did not come in
        time (counted in ``hangs``: a test asserts there were none)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.bound)
        began = time.monotonic()
        self.sent += 1
        try:
            headers = {"Authorization": f"JWT {self.token}", **(headers or {})}
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            # http.client takes an answer cut inside its headers for a whole answer without
            # a body; the proxy always frames its answers (chunked, or a Content-Length).
            framed = response.chunked or response.getheader("Content-Length") is not None
            raw = response.read()
            if not framed:
                raise http.client.IncompleteRead(raw)
        except TimeoutError:
            self.hangs += 1
            return None
        except (OSError, http.client.HTTPException):
            self.lost += 1
            return None
        finally:
            conn.close()
        seconds = time.monotonic() - began
        self.slowest = max(self.slowest, seconds)
        try:
            parsed: Any = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw
        return Answer(response.status, parsed, seconds)

    def put_chunk(
        self, path: str, start: int, data: bytes, total: int, *, multipart: bool
    ) -> Answer | None:
        headers = {"Content-Range": f"bytes {start}-{start + len(data) - 1}/{total}"}
        if multipart:
            body, headers["Content-Type"] = multipart_body(data)
        else:
            body, headers["Content-Type"] = data, "application/octet-stream"
        return self.request("PUT", path, body, headers)

    def offset(self, path: str) -> int | None:
        answer = self.request("GET", path)
        if answer is None:
            return None
        assert answer.status == 200 and isinstance(answer.body, dict), answer
        return int(answer.body["offset"])

    def finish(
        self,
        path: str,
        source: bytes,
        chunk: int,
        *,
        multipart: Callable[[int], bool] = lambda _: False,
        offsets: list[int] | None = None,
        attempts: int = 200,
    ) -> dict[str, Any]:
        """Resume the upload at ``path`` to its end and complete it; the completion's answer.

        Every offset the server reports is appended to ``offsets`` (callers check they never
        go backwards).
        """
        seen = offsets if offsets is not None else []
        total = len(source)
        for _ in range(attempts):
            if self.hangs:
                raise AssertionError(f"a request for {path} was not answered in {self.bound} s")
            offset = self.offset(path)
            if offset is None:
                continue
            seen.append(offset)
            if offset < total:
                end = min(offset + chunk, total)
                answer = self.put_chunk(
                    path, offset, source[offset:end], total, multipart=multipart(offset)
                )
                if answer is not None:
                    assert answer.status in (200, 400, 409), answer
                    assert isinstance(answer.body, dict) and "offset" in answer.body, answer
                    seen.append(int(answer.body["offset"]))
                continue
            md5 = hashlib.md5(source).hexdigest()
            answer = self.request(
                "POST",
                path,
                json.dumps({"md5": md5}).encode(),
                {"Content-Type": "application/json"},
            )
            if answer is None:
                continue
            if answer.status == 200:
                return dict(answer.body)
            assert answer.body == {"detail": "Upload has already been completed"}, answer
            # Completed by the attempt whose answer was lost: the upload names its file.
            status = self.request("GET", path)
            if status is not None and status.body.get("file_id"):
                return dict(status.body)
        raise AssertionError(f"upload {path} did not finish in {attempts} attempts")


def never_backwards(offsets: list[int]) -> bool:
    return all(a <= b for a, b in itertools.pairwise(offsets))


@dataclass
class RelayStats:
    connections: int = 0
    cut_fin: int = 0
    cut_rst: int = 0
    cut_after_request: int = 0  # of those, cut after the whole request went through


class _Pair:
    """One relayed connection: the client's socket, the server's, and where to cut it."""

    def __init__(
        self, client: socket.socket, server: socket.socket, plan: tuple[str, int, str] | None
    ) -> None:
        self.ends = {"up": (client, server), "down": (server, client)}
        self.plan = plan
        self.carried = {"up": 0, "down": 0}
        self.closed = False
        self.head = b""  # the request's first bytes, until its length is known
        self.request_length: int | None = None
        self.cut_at: float | None = None  # for "after": when to cut, the request being whole

    def learn_length(self, data: bytes) -> None:
        """Read the request's total length off its headers (Content-Length)."""
        if self.request_length is not None or len(self.head) > 65536:
            return
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            return
        length = 0
        for line in self.head[:end].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        self.request_length = end + 4 + length


class TcpRelay:
    """Forwards loopback connections to ``target`` and cuts some of them at a random byte.

    Each connection, with probability ``cut_chance``, is cut once one direction (the request
    on its way to the proxy, or the answer on its way back) has carried a random number of
    bytes: by a FIN to both ends or a RST to both ends. One thread and a selector run every
    connection, so a cut takes effect at once.
    """

    def __init__(
        self, target: int, seed: int, cut_chance: float = 0.4, cut_within: int = 1 << 20
    ) -> None:
        self.target = target
        self.cut_chance = cut_chance
        self.cut_within = cut_within
        self.stats = RelayStats()
        self._random = random.Random(seed)
        self._selector = selectors.DefaultSelector()
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.setblocking(False)
        self.port = int(self._listener.getsockname()[1])
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._stopping = False
        self._waiting: list[_Pair] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._thread.join(10)
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()

    def _run(self) -> None:
        while not self._stopping:
            for key, _ in self._selector.select(timeout=0.002 if self._waiting else 0.05):
                if key.data is None:
                    self._accept()
                else:
                    pair, direction = key.data
                    self._pump(pair, direction)
            now = time.monotonic()
            for pair in [p for p in self._waiting if p.cut_at is not None and p.cut_at <= now]:
                self._waiting.remove(pair)
                self._cut(pair)

    def _plan(self) -> tuple[str, int, str] | None:
        """Where to cut a new connection, if at all: ``(where, amount, how)``.

        "up": after ``amount`` bytes of the request; "down": after ``amount`` bytes of the
        answer; "after": ``amount`` ms after the request's last byte, its answer unsent (the
        client went away just after sending, the case that once wedged uploads).
        """
        if self._random.random() >= self.cut_chance:
            return None
        where = self._random.choice(["up", "up", "after", "after", "down"])
        how = self._random.choice(["fin", "rst"])
        if where == "up":
            return where, self._random.randrange(self.cut_within), how
        if where == "after":
            return where, self._random.choice([0, 0, 1, 2, 5, 10, 30]), how
        return where, self._random.randrange(600), how  # answers are a few hundred bytes

    def _cut(self, pair: _Pair) -> None:
        assert pair.plan is not None
        if pair.closed:
            return
        how = pair.plan[2]
        self.stats.cut_fin += how == "fin"
        self.stats.cut_rst += how == "rst"
        self.stats.cut_after_request += pair.plan[0] == "after"
        self._close(pair, how)

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        server = socket.create_connection(("127.0.0.1", self.target))
        self.stats.connections += 1
        pair = _Pair(client, server, self._plan())
        for sock in (client, server):
            sock.setblocking(False)
        # Blocking sends keep this simple; loopback buffers drain quickly.
        self._selector.register(client, selectors.EVENT_READ, (pair, "up"))
        self._selector.register(server, selectors.EVENT_READ, (pair, "down"))

    def _pump(self, pair: _Pair, direction: str) -> None:
        source, sink = pair.ends[direction]
        try:
            data = source.recv(262144)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(pair, "fin")
            return
        if pair.plan is not None and pair.plan[0] == direction:
            left = pair.plan[1] - pair.carried[direction]
            if len(data) >= left:
                self._send(sink, data[: max(left, 0)])
                self._cut(pair)
                return
        if pair.plan is not None and pair.plan[0] == "after":
            if direction == "down":
                return  # the client is gone: its answer goes nowhere
            pair.learn_length(data)
            whole = pair.request_length is not None
            if whole and pair.carried["up"] + len(data) >= pair.request_length:  # type: ignore[operator]
                pair.cut_at = time.monotonic() + pair.plan[1] / 1000
                self._waiting.append(pair)
        pair.carried[direction] += len(data)
        if not self._send(sink, data):
            self._close(pair, "fin")

    @staticmethod
    def _send(sink: socket.socket, data: bytes) -> bool:
        view = memoryview(data)
        while view:
            try:
                view = view[sink.send(view) :]
            except BlockingIOError:
                select.select([], [sink], [], 1.0)
            except OSError:
                return False
        return True

    def _close(self, pair: _Pair, how: str) -> None:
        if pair.closed:
            return
        pair.closed = True
        for sock in pair.ends["up"]:
            try:
                self._selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            try:
                end_connection(sock, how)
            except OSError:
                pass


def stored_matches(proxy: ProxyProcess, token: str, file_id: str, source: bytes) -> bool:
    """The stored file's md5, sha256 and downloaded bytes are the source's (asked directly)."""
    auth = {"Authorization": f"JWT {token}"}
    status, stored = proxy.request("GET", f"/storage/files/{file_id}/", headers=auth)
    if status != 200 or stored["md5"] != hashlib.md5(source).hexdigest():
        return False
    if stored["sha256"] != hashlib.sha256(source).hexdigest():
        return False
    status, body = proxy.request("GET", f"/storage/download/{file_id}/", headers=auth)
    return status == 200 and body == source


@dataclass
class RandomRunReport:
    uploads: int = 0
    intact: int = 0
    mebibytes: float = 0.0
    requests: int = 0
    lost_answers: int = 0
    connections: int = 0
    cut_fin: int = 0
    cut_rst: int = 0
    cut_after_request: int = 0
    hangs: int = 0
    backwards: int = 0
    slowest_answer: float = 0.0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.uploads} uploads ({self.mebibytes:.0f} MiB), {self.requests} requests over "
            f"{self.connections} connections, {self.cut_fin} cut by FIN and {self.cut_rst} by "
            f"RST ({self.cut_after_request} of them just after the whole request), "
            f"{self.lost_answers} answers lost; hangs: {self.hangs}; offsets backwards: "
            f"{self.backwards}; intact: {self.intact}/{self.uploads}; slowest answer "
            f"{self.slowest_answer:.2f} s; {self.seconds:.1f} s"
        )


def random_disconnect_run(
    proxy: ProxyProcess,
    token: str,
    *,
    uploads: int,
    concurrency: int,
    sizes: tuple[int, int],
    chunk: int,
    seed: int,
    cut_chance: float,
) -> RandomRunReport:
    """Many uploads at once through a relay that cuts connections at random byte counts.

    Each upload is created, resumed after every failure from the offset the server reports
    and completed, all through the relay; then its stored md5, sha256 and bytes are checked
    directly. Raw and multipart chunks are mixed at random.
    """
    rng = random.Random(seed)
    relay = TcpRelay(
        proxy.port, seed=rng.randrange(2**32), cut_chance=cut_chance, cut_within=chunk + 2048
    )
    report = RandomRunReport(uploads=uploads)
    plans = [(rng.randrange(*sizes), rng.randrange(2**32)) for _ in range(uploads)]
    clients: list[BoundedClient] = []
    began = time.monotonic()

    def one(number: int, size: int, upload_seed: int) -> tuple[bool, list[int]]:
        own = random.Random(upload_seed)
        source = own.randbytes(size)
        client = BoundedClient(relay.port, token)
        clients.append(client)
        multipart = lambda _offset: own.random() < 0.4  # noqa: E731
        path = None
        for _ in range(100):
            end = min(chunk, size)
            headers = {
                "Content-Range": f"bytes 0-{end - 1}/{size}",
                "Content-Type": "application/octet-stream",
            }
            create = f"/storage/tmp-upload/?filename=random-{number}.bin"
            answer = client.request("PUT", create, source[:end], headers)
            if answer is not None:
                assert answer.status == 200, answer
                path = "/" + answer.body["url"].split("/", 3)[3]
                break
        assert path is not None, "the upload could not be created"
        offsets: list[int] = [chunk if size > chunk else size]
        done = client.finish(path, source, chunk, multipart=multipart, offsets=offsets)
        return stored_matches(proxy, token, str(done["file_id"]), source), offsets

    try:
        with ThreadPoolExecutor(concurrency) as pool:
            futures = [pool.submit(one, n, size, s) for n, (size, s) in enumerate(plans)]
            for future in futures:
                try:
                    intact, offsets = future.result()
                except AssertionError as failure:
                    report.failures.append(str(failure))
                    continue
                report.intact += intact
                report.backwards += not never_backwards(offsets)
    finally:
        relay.stop()
    report.seconds = time.monotonic() - began
    report.mebibytes = sum(size for size, _ in plans) / 2**20
    report.requests = sum(c.sent for c in clients)
    report.lost_answers = sum(c.lost for c in clients)
    report.hangs = sum(c.hangs for c in clients)
    report.slowest_answer = max((c.slowest for c in clients), default=0.0)
    report.connections = relay.stats.connections
    report.cut_fin, report.cut_rst = relay.stats.cut_fin, relay.stats.cut_rst
    report.cut_after_request = relay.stats.cut_after_request
    return report
