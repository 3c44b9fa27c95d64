"""PyArchive at catalogue scale: memory, idle CPU, job passes and listing (issue 15).

Run through ``scripts/bench`` (which makes sure .venv exists):

    scripts/bench scale [--files N] [--baseline 100] [--idle SECONDS] [--size BYTES]
                        [--jobs a,b,...] [--postgres URL] [--reps R] [--s3]

Two sittings in one run, each on a fresh proxy and two fresh nodes (zones a and b, registered
with ``pyarchive-proxy nodes add``, PYARCHIVE_REPLICAS=2, SQLite as scripts/run-local uses it,
or with ``--postgres`` a fresh schema of that PostgreSQL database):

    baseline  a catalogue of ``--baseline`` files (default 100): listing latencies only
    scale     a catalogue of ``--files`` files (default 100,000): everything below

How the catalogue is built, directly and not through the API (an upload of 100,000 files
would measure ingest, which ``scripts/bench small-files`` does), after the nodes are up and
before the proxy starts, in ONE transaction on the proxy's database with the proxy's own
store functions (its migrations have run: ``nodes add`` did it):

    - one real account (``store.create_user``, an argon2 hash of a random password; the
      benchmark logs in as it through ``/api-token-auth/``);
    - N files of ``--size`` bytes (default 1 KiB) of distinct content, at paths like
      ``photos/2013/07/IMG_004711.jpg`` (path order is not id order): per file one blob
      (``store.ensure_blob``: its md5, sha256 and size) and version 1 (``store.add_version``,
      which keeps the account's file counter); each blob marked as no longer held by the
      proxy (``local = 0``, as the replicator leaves it once two copies are confirmed);
    - on each of the two nodes the file's real bytes at ``replicas/<xx>/<blob id>-<sha256>``,
      the path and name a confirmed replica has (written by this script, not by rsync), and
      a ``confirmed`` replica row per node (``nodestore.set_replica``).

With ``--s3``, also mirrored: moto's S3 server (``bench_mirror.Moto``) is the active
connection, as ``scripts/run-local`` has it (bucket made, ``pyarchive-proxy s3 add
--activate`` before the proxy starts), and every blob is recorded as a verified mirror
(``remote_state = mirrored``, ``remote_verified = 1``, its mirroring node, one
``blob_parts`` row ``uploaded`` with the part's sha256), the state the mirror-sync job
leaves once a node reported the upload verified. The objects themselves are not written to
moto: no idle job reads them (scrub re-hashes the nodes' replicas, s3-cleanup removes only
deleted files' objects), and 100,000 PUTs to moto would measure moto. The nodes' mirror
journals stay empty, as they are once every blob is mirrored (a verified blob's record is
withdrawn and forgotten). Without ``--s3`` no connection is configured: blobs stay
``remote_state = local`` and the mirror jobs find no bucket.
No events, uploads or system-log rows are built.

Then, through the API and /proc only:

    memory    VmRSS of the proxy and each node (/proc/PID/status) after start (healthy,
              nodes seen up, 3 s more), after one pass of every job, and VmHWM (peak) then;
              every 10 s while idle (first, last, max); and VmRSS and VmHWM once the
              listings are done
    jobs      each proxy job run once with ``POST /api/jobs/<name>/run`` (staff), one after
              the other: the wall time of that request (the run's own duration beside it, as
              ``GET /api/jobs/`` reports it); ``--jobs`` picks some (scrub re-hashes every
              replica on its node: long at 100,000 files)
    idle      utime+stime (/proc/PID/stat) of the proxy, each node and each node's rsync
              daemon over ``--idle`` seconds (default 300) after the jobs, as % of one core
    listing   ``GET /storage/files/`` as the account, on one keep-alive connection, median
              of ``--reps`` requests (default 15, after 2 untimed) for page_size 20 and 1000:
              the first page (``?after=``), the last page by the keyset cursor (the token
              for the file before it, made with the proxy's ``cursor_token``, the one a
              ``next`` link carries there), and the last page by ``?page=``; at N and at the
              baseline, with the ratio N / baseline (target: within 2x); where the pages
              hold different numbers of files (page_size 1000 beside a 100-file
              baseline), also the ratio per file listed

One RESULT line per figure; $BENCH_DATA/results/pyarchive-scale.json. Every process started
is stopped by its PID (the nodes' rsync daemons too), even on error.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import secrets
import sqlite3
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from bench_common import (
    DATA,
    BenchError,
    Cluster,
    Conn,
    expect,
    log,
    main_wrapper,
    proc_cpu_s,
    proc_status_kb,
    project_version,
    sigterm_exits,
    sitting,
    tuning_env,
    write_result,
)
from bench_mirror import Moto

NAME = "pyarchive-scale"
USER = "scalebench"
PAGE_SIZES = (20, 1000)
_SET_HERE = frozenset({"PYARCHIVE_CLUSTER_SECRET", "PYARCHIVE_REPLICAS", "PYARCHIVE_DATABASE"})


# ---------------------------------------------------------------- the catalogue


def content(number: int, size: int) -> bytes:
    """File ``number``'s bytes: distinct for every number."""
    line = f"pyarchive scale file {number}\n".encode()
    return (line * (size // len(line) + 1))[:size]


def path_of(number: int) -> str:
    return f"photos/{2000 + number % 25}/{number % 12 + 1:02}/IMG_{number:06}.jpg"


@contextmanager
def transaction(database: str, data_dir: Path) -> Iterator[Any]:
    """One transaction on the proxy's database, as a ``common.db.Txn``."""
    from common.db import Txn, parse_database_url

    if not database:
        with closing(sqlite3.connect(data_dir / "pyarchive.sqlite3")) as conn:
            conn.isolation_level = None
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield Txn(conn.cursor(), "sqlite")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return
    import psycopg2

    from proxy.remote.dump import pg_connect_kwargs

    with closing(psycopg2.connect(**pg_connect_kwargs(parse_database_url(database)))) as pg:
        with pg:  # commits, or rolls back on an error
            yield Txn(pg.cursor(), "postgresql")


def build(
    cluster: Cluster, database: str, files: int, size: int, password: str, mirrored: bool = False
) -> dict[str, Any]:
    """The catalogue, directly (see the module docstring); what was built and how long."""
    from common.passwords import hash_password
    from common.signing import replica_key
    from proxy.catalog import store
    from proxy.cluster import nodestore

    assert cluster.proxy is not None
    t0 = time.perf_counter()
    written = 0
    with transaction(database, cluster.proxy.data_dir) as txn:
        now = time.time()
        user = store.create_user(txn, USER, "", hash_password(password), False, now)
        if user is None:
            raise BenchError(f"the account {USER} exists already")
        for number in range(files):
            data = content(number, size)
            md5, sha256 = hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()
            blob, _ = store.ensure_blob(txn, user.id, sha256, md5, size, now)
            path = path_of(number)
            store.add_version(
                txn, user.id, None, secrets.token_hex(16), path.rsplit("/", 1)[-1], blob, now,
                "image/jpeg", path,
            )  # fmt: skip
            txn.execute("UPDATE blobs SET local = 0 WHERE id = ?", (blob.id,))
            key = replica_key(blob.id, sha256)
            for node in cluster.nodes:
                target = node.data_dir / "replicas" / key[-2:] / key
                target.parent.mkdir(mode=0o750, exist_ok=True)
                target.write_bytes(data)
                written += 1
                nodestore.set_replica(txn, blob.id, node.name, nodestore.CONFIRMED, now)
            if mirrored:  # as mirror-sync records a verified upload (one part)
                txn.execute(
                    "UPDATE blobs SET remote_state = 'mirrored', remote_verified = 1,"
                    " mirror_node = ? WHERE id = ?",
                    (cluster.nodes[number % len(cluster.nodes)].name, blob.id),
                )
                txn.execute(
                    "INSERT INTO blob_parts (blob_id, idx, start, size, sha256, remote_state)"
                    " VALUES (?, 1, 0, ?, ?, 'uploaded')",
                    (blob.id, size, sha256),
                )
            if number and number % 20000 == 0:
                log(f"  built {number} of {files} files ...")
    seconds = time.perf_counter() - t0
    return {"files": files, "size": size, "replica_files": written, "mirrored": mirrored,
            "seconds": round(seconds, 1)}  # fmt: skip


def positions(cluster: Cluster, database: str) -> list[tuple[str, str]]:
    """The account's (path, id) in listing order (to make the last page's cursor)."""
    from proxy.catalog import store

    assert cluster.proxy is not None
    with transaction(database, cluster.proxy.data_dir) as txn:
        user = store.user_by_name(txn, USER)
        assert user is not None
        by = 'path COLLATE "C"' if txn.dialect == "postgresql" else "path"
        rows = txn.all(f"SELECT path, id FROM files WHERE owner_id = ? ORDER BY {by}, id",
                       (user.id,))  # fmt: skip
    return [(str(r[0]), str(r[1])) for r in rows]


# ---------------------------------------------------------------- measuring


def mib(pid: int, key: str) -> float:
    kb = proc_status_kb(pid, key)
    if kb is None:
        raise BenchError(f"no {key} for PID {pid}")
    return round(kb / 1024, 1)


def memory(cluster: Cluster, key: str = "VmRSS") -> dict[str, float]:
    assert cluster.proxy is not None
    found = {"proxy": mib(cluster.proxy.pid, key)}
    found.update({node.name: mib(node.pid, key) for node in cluster.nodes})
    return found


def cpu(cluster: Cluster) -> dict[str, float]:
    assert cluster.proxy is not None
    found = {"proxy": proc_cpu_s(cluster.proxy.pid) or 0.0}
    for node in cluster.nodes:
        found[node.name] = proc_cpu_s(node.pid) or 0.0
        if node.daemon_pid is not None:
            found[f"{node.name}-rsyncd"] = proc_cpu_s(node.daemon_pid) or 0.0
    return found


def login(cluster: Cluster, password: str) -> Conn:
    assert cluster.proxy is not None
    conn = Conn(cluster.proxy.port)
    status, answer = conn.json("POST", "/api-token-auth/", {"username": USER, "password": password})
    expect("login", status, answer)
    conn.headers["Authorization"] = f"JWT {answer['token']}"
    return conn


def run_jobs(cluster: Cluster, only: list[str] | None) -> dict[str, dict[str, Any]]:
    """Each proxy job once, one after the other, by ``POST /api/jobs/<name>/run``."""
    assert cluster.conn is not None
    status, listed = cluster.conn.request("GET", "/api/jobs/")
    expect("GET /api/jobs/", status, listed)
    jobs: Any = listed
    names = [j["name"] for j in jobs if j.get("where", "proxy") == "proxy"]
    if only is not None:
        unknown = set(only) - set(names)
        if unknown:
            raise BenchError(f"no such proxy job(s) {sorted(unknown)}; there are {names}")
        names = [n for n in names if n in only]
    found: dict[str, dict[str, Any]] = {}
    for name in names:
        t0 = time.perf_counter()
        status, answer = cluster.conn.request("POST", f"/api/jobs/{name}/run")
        seconds = time.perf_counter() - t0
        expect(f"POST /api/jobs/{name}/run", status, answer)
        found[name] = {"seconds": round(seconds, 3), "ok": answer.get("ok"),
                       "result": answer.get("result"), "error": answer.get("error")}  # fmt: skip
        log(f"  job {name}: {seconds:.2f} s, ok {answer.get('ok')}, {answer.get('result')}")
    status, listed = cluster.conn.request("GET", "/api/jobs/")
    expect("GET /api/jobs/", status, listed)
    listed_jobs: list[dict[str, Any]] = listed  # type: ignore[assignment]  # the API's job list
    for job in listed_jobs:
        if job["name"] in found:
            found[job["name"]]["last_duration"] = job.get("last_duration")
    return found


def timed_get(conn: Conn, target: str, reps: int) -> dict[str, Any]:
    """Median, min and max ms of ``reps`` GETs of ``target`` (after two untimed)."""
    times: list[float] = []
    answer: dict[str, Any] = {}
    for i in range(reps + 2):
        t0 = time.perf_counter()
        status, answer = conn.request("GET", target)
        ms = (time.perf_counter() - t0) * 1000
        expect(f"GET {target[:80]}", status, answer)
        if i >= 2:
            times.append(ms)
    return {"ms": round(statistics.median(times), 2), "min_ms": round(min(times), 2),
            "max_ms": round(max(times), 2), "results": len(answer.get("results", [])),
            "count": answer.get("count")}  # fmt: skip


def listing(conn: Conn, order: list[tuple[str, str]], reps: int) -> dict[str, dict[str, Any]]:
    from proxy.catalog.files import cursor_token

    count = len(order)
    found: dict[str, dict[str, Any]] = {}
    for size in PAGE_SIZES:
        last_page = max(1, math.ceil(count / size))
        start = (last_page - 1) * size  # the last page's first file
        after = "" if start == 0 else cursor_token(*order[start - 1])
        asks: dict[str, dict[str, str | int]] = {
            "first, ?after=": {"after": "", "page_size": size},
            "last, cursor": {"after": after, "page_size": size},
            "last, ?page=": {"page": last_page, "page_size": size},
        }
        for label, query in asks.items():
            got = timed_get(conn, f"/storage/files/?{urlencode(query)}", reps)
            want = count - start if label.startswith("last") else min(size, count)
            if got["results"] != want or got["count"] != count:
                raise BenchError(f"page_size {size} {label}: {got['results']} files of "
                                 f"{got['count']}, not {want} of {count}")  # fmt: skip
            found[f"page_size {size}, {label}"] = got
    return found


# ---------------------------------------------------------------- sittings


def start(
    args: argparse.Namespace, files: int, password: str, schema: str | None, moto: Moto | None
) -> Any:
    """A fresh cluster with the catalogue built before the proxy starts (and, with ``moto``,
    its S3 connection active)."""
    env = {"PYARCHIVE_REPLICAS": "2"}
    database = ""
    if args.postgres:
        database = f"{args.postgres}{'&' if '?' in args.postgres else '?'}schema={schema}"
        env["PYARCHIVE_DATABASE"] = database
    built: dict[str, Any] = {}

    def before_start(cluster: Cluster) -> None:
        log(f"  building {files} files directly (database and both nodes' replicas/) ...")
        built.update(build(cluster, database, files, args.size, password, moto is not None))
        log(f"  built in {built['seconds']} s")

    prepare = None if moto is None else moto.active_connection("bench-scale")
    cluster = Cluster(
        DATA, [("node1", "a"), ("node2", "b")], env, prepare=prepare, before_start=before_start
    )
    return cluster, database, built


@contextmanager
def pg_schema(url: str | None) -> Iterator[str | None]:
    """A fresh schema of the ``--postgres`` database for one sitting, dropped afterwards."""
    if url is None:
        yield None
        return
    import psycopg2

    from common.db import parse_database_url
    from proxy.remote.dump import pg_connect_kwargs

    schema = f"bench_scale_{secrets.token_hex(4)}"
    kwargs = pg_connect_kwargs(parse_database_url(url))
    with closing(psycopg2.connect(**kwargs)) as pg:
        pg.autocommit = True
        pg.cursor().execute(f"CREATE SCHEMA {schema}")
    try:
        yield schema
    finally:
        with closing(psycopg2.connect(**kwargs)) as pg:
            pg.autocommit = True
            pg.cursor().execute(f"DROP SCHEMA {schema} CASCADE")


def sitting_of(
    args: argparse.Namespace, files: int, full: bool, schema: str | None
) -> dict[str, Any]:
    password = secrets.token_urlsafe(16)
    log(f"== sitting with {files} files" + ("" if full else " (listing only)")
        + (", mirrored to S3 (moto)" if args.s3 else ""))  # fmt: skip
    with s3_server(args.s3) as moto:
        return measured(args, files, full, schema, password, moto)


@contextmanager
def s3_server(wanted: bool) -> Iterator[Moto | None]:
    """moto's S3 server for one sitting with ``--s3`` (None without), stopped afterwards."""
    if not wanted:
        yield None
        return
    moto = Moto()
    try:
        yield moto
    finally:
        moto.stop()


def measured(
    args: argparse.Namespace,
    files: int,
    full: bool,
    schema: str | None,
    password: str,
    moto: Moto | None,
) -> dict[str, Any]:
    cluster, database, built = start(args, files, password, schema, moto)
    out: dict[str, Any] = {"files": files, "built": built}
    try:
        time.sleep(3)
        if full:
            out["rss_after_start_mib"] = memory(cluster)
            log(f"  RSS after start: {out['rss_after_start_mib']} MiB")
            out["jobs"] = run_jobs(cluster, args.jobs)
            out["rss_after_jobs_mib"] = memory(cluster)
            out["peak_rss_mib"] = memory(cluster, "VmHWM")
            log(f"  RSS after the jobs: {out['rss_after_jobs_mib']} MiB, "
                f"peak {out['peak_rss_mib']} MiB")  # fmt: skip
            c0, t0 = cpu(cluster), time.perf_counter()
            log(f"  idle for {args.idle:g} s ...")
            samples = []  # RSS every 10 s while idle: flat, or growing?
            while (left := args.idle - (time.perf_counter() - t0)) > 0:
                time.sleep(min(10.0, left))
                samples.append(memory(cluster))
            c1, wall = cpu(cluster), time.perf_counter() - t0
            out["idle_rss_mib"] = {
                who: {"first": samples[0][who], "last": samples[-1][who],
                      "max": max(sample[who] for sample in samples)}
                for who in (samples[0] if samples else {})
            }  # fmt: skip
            log(f"  RSS while idle (first, last, max): {out['idle_rss_mib']} MiB")
            out["idle_seconds"] = round(wall, 1)
            out["idle_cpu_pct"] = {k: round(100 * (c1[k] - c0[k]) / wall, 2) for k in c0}
            log(f"  idle CPU, % of one core: {out['idle_cpu_pct']}")
        order = positions(cluster, database)
        conn = login(cluster, password)
        try:
            out["listing"] = listing(conn, order, args.reps)
        finally:
            conn.close()
        for label, got in out["listing"].items():
            log(f"  {label}: {got['ms']} ms")
        if full:
            out["rss_at_end_mib"] = memory(cluster)
            out["peak_rss_at_end_mib"] = memory(cluster, "VmHWM")
            log(f"  RSS after the listings: {out['rss_at_end_mib']} MiB, "
                f"peak {out['peak_rss_at_end_mib']} MiB")  # fmt: skip
    finally:
        cluster.stop()
    return out


def result(label: str, value: float, unit: str) -> None:
    print(f"RESULT pyarchive scale {label}: {value:g} {unit}", flush=True)


def scale(args: argparse.Namespace) -> dict[str, Any]:
    la0, t_start = os.getloadavg(), time.time()
    with pg_schema(args.postgres) as schema:
        base = sitting_of(args, args.baseline, False, schema)
    with pg_schema(args.postgres) as schema:
        big = sitting_of(args, args.files, True, schema)
    n = args.files
    ratios = {
        label: round(got["ms"] / base["listing"][label]["ms"], 2)
        for label, got in big["listing"].items()
    }
    # A page of 1,000 at the baseline holds only its 100 files: per file listed is the
    # like-for-like figure there.
    per_file = {
        label: round(
            (got["ms"] / got["results"])
            / (base["listing"][label]["ms"] / base["listing"][label]["results"]),
            2,
        )
        for label, got in big["listing"].items()
    }
    out = {
        "measurement": NAME,
        "description": "a catalogue of N files built directly (database + real replica files "
        "on two nodes; with --s3 also recorded as mirrored, moto the active connection): "
        "memory, idle CPU, one pass of every job, listing latency at N and at the baseline",
        "s3": bool(args.s3),
        **sitting(t_start, la0),
        "tool": project_version(),
        "database": "postgresql" if args.postgres else "sqlite",
        "idle_requested_s": args.idle,
        "reps": args.reps,
        "proxy_env": tuning_env(_SET_HERE),
        "baseline": base,
        "scale": big,
        "listing_ratio_n_to_baseline": ratios,
        "listing_ratio_per_file_n_to_baseline": per_file,
    }
    write_result(NAME, out)
    mirrored = " (mirrored)" if args.s3 else ""
    for part, found in (("after start", big["rss_after_start_mib"]),
                        ("after every job", big["rss_after_jobs_mib"]),
                        ("peak (VmHWM)", big["peak_rss_mib"]),
                        ("after the idle time and the listings", big["rss_at_end_mib"]),
                        ("peak (VmHWM) at the end", big["peak_rss_at_end_mib"])):  # fmt: skip
        for who, value in found.items():
            result(f"{n} files{mirrored}, {who} RSS {part}", value, "MiB")
    for who, seen in big.get("idle_rss_mib", {}).items():
        result(f"{n} files{mirrored}, {who} RSS while idle, last", seen["last"], "MiB")
        result(f"{n} files{mirrored}, {who} RSS while idle, max", seen["max"], "MiB")
    for who, pct in big["idle_cpu_pct"].items():
        idle = f"idle CPU over {big['idle_seconds']:g} s"
        result(f"{n} files{mirrored}, {who} {idle}", pct, "% of one core")
    for name, job in big["jobs"].items():
        result(f"{n} files{mirrored}, one pass of job {name}", job["seconds"], "s")
    for label, got in big["listing"].items():
        result(f"{n} files{mirrored}, listing {label}", got["ms"], "ms")
        result(f"{args.baseline} files, listing {label}", base["listing"][label]["ms"], "ms")
        result(f"listing {label}, {n} / {args.baseline} files", ratios[label], "x")
        if got["results"] != base["listing"][label]["results"]:
            result(f"listing {label}, per file listed, {n} / {args.baseline} files",
                   per_file[label], "x")  # fmt: skip
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("what", choices=["scale"])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--baseline", type=int, default=100)
    ap.add_argument("--idle", type=float, default=300.0)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--jobs", type=lambda s: [j for j in s.split(",") if j], default=None)
    ap.add_argument(
        "--s3",
        action="store_true",
        help="moto's S3 as the active connection, every blob recorded as a verified mirror",
    )
    ap.add_argument(
        "--postgres",
        metavar="URL",
        default=None,
        help="postgresql://user@host:port/database (a fresh schema per sitting)",
    )
    args = ap.parse_args()
    if args.files < 1 or args.baseline < 1 or args.size < 1 or args.reps < 1 or args.idle < 0:
        ap.error("--files, --baseline, --size and --reps must be positive, --idle not negative")
    sigterm_exits()
    work: Callable[[], Any] = lambda: scale(args)  # noqa: E731
    return main_wrapper("scale", work)


if __name__ == "__main__":
    raise SystemExit(main())
