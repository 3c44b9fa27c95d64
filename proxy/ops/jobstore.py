"""SQL for the ``jobs`` table: staff's intervals and each job's last run, one small function
per statement group."""

from __future__ import annotations

from typing import Any

from common.db import Txn


def load_all(txn: Txn) -> dict[str, tuple[Any, ...]]:
    rows = txn.all(
        "SELECT name, interval_seconds, last_run, last_duration, last_ok, last_result FROM jobs"
    )
    return {row[0]: (float(row[1]), *row[2:]) for row in rows}


def record_run(
    txn: Txn,
    name: str,
    started: float,
    duration: float,
    ok: bool,
    result: str,
    next_run: float | None,
) -> None:
    txn.execute(
        "INSERT INTO jobs (name, interval_seconds, last_run, last_duration, last_ok,"
        " last_result, next_run) VALUES (?, 0, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE"
        " SET last_run = excluded.last_run, last_duration = excluded.last_duration,"
        " last_ok = excluded.last_ok, last_result = excluded.last_result,"
        " next_run = excluded.next_run",
        (name, started, duration, int(ok), result, next_run),
    )


def store_interval(txn: Txn, name: str, seconds: float) -> None:
    txn.execute(
        "INSERT INTO jobs (name, interval_seconds) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET interval_seconds = excluded.interval_seconds",
        (name, seconds),
    )
