"""Unit tests for the upload claim queue and shielded work (no sockets, a fake clock)."""

from __future__ import annotations

import io

import pytest
from twisted.internet import task
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from proxy.uploads.bodies import SpoolBody
from proxy.uploads.progress import UploadProgress
from proxy.uploads.shield import shielded

UPLOAD = "0" * 32


def _progress() -> UploadProgress:
    return UploadProgress(task.Clock(), ThreadPool())  # type: ignore[arg-type]


def test_a_waiter_that_gives_up_leaves_the_queue_and_never_gets_the_claim() -> None:
    progress, first, quitter = _progress(), object(), object()
    assert progress.try_claim(UPLOAD, first)
    waiting = progress.claim(UPLOAD, quitter)
    waiting.cancel()
    failures: list[object] = []
    waiting.addErrback(failures.append)
    progress.release(UPLOAD, first)
    assert progress.holder(UPLOAD) is None, "the claim must not go to a waiter that left"
    assert progress.try_claim(UPLOAD, object())
    assert len(failures) == 1


def test_a_bounded_wait_for_the_claim_times_out_on_the_clock() -> None:
    clock = task.Clock()
    progress, first, second = _progress(), object(), object()
    progress.try_claim(UPLOAD, first)
    waiting = progress.claim(UPLOAD, second).addTimeout(2.0, clock)
    outcome: list[object] = []
    waiting.addBoth(outcome.append)
    clock.advance(1.9)
    assert outcome == []
    clock.advance(0.2)
    assert len(outcome) == 1
    assert isinstance(outcome[0], Failure) and outcome[0].check(TimeoutError)
    progress.release(UPLOAD, first)
    assert progress.holder(UPLOAD) is None


def test_waiters_get_the_claim_in_order() -> None:
    progress, owners = _progress(), [object() for _ in range(3)]
    progress.try_claim(UPLOAD, owners[0])
    second, third = progress.claim(UPLOAD, owners[1]), progress.claim(UPLOAD, owners[2])
    progress.release(UPLOAD, owners[0])
    assert second.called and not third.called and progress.holder(UPLOAD) is owners[1]
    progress.release(UPLOAD, owners[1])
    assert third.called and progress.holder(UPLOAD) is owners[2]


def test_cancelling_shielded_work_stops_the_wait_not_the_work() -> None:
    work: Deferred[str] = Deferred()
    waiting = shielded(work)
    waiting.cancel()
    failures: list[object] = []
    waiting.addErrback(failures.append)
    assert failures and failures[0].check(CancelledError)  # type: ignore[attr-defined]
    assert not work.called, "the work itself was not cancelled"
    work.callback("committed")  # finishing later is fine, and nobody is left to tell
    assert work.called


def test_shielded_work_passes_its_result_and_its_failure_through() -> None:
    done: list[object] = []
    shielded(Deferred.fromCoroutine(_answer())).addCallback(done.append)
    assert done == [42]
    failed: list[object] = []
    shielded(Deferred.fromCoroutine(_fail())).addErrback(failed.append)
    assert failed and failed[0].check(ValueError)  # type: ignore[attr-defined]


async def _answer() -> int:
    return 42


async def _fail() -> int:
    raise ValueError("no")


def test_a_handed_over_spool_outlives_the_request_that_brought_it() -> None:
    body = SpoolBody(io.BytesIO(), limit=1024)
    body.write(b"chunk bytes")
    spool = body.hand_over()
    body.close()  # what Twisted does when the connection is lost
    spool.seek(0)
    assert spool.read() == b"chunk bytes"
    spool.close()
    other = SpoolBody(io.BytesIO(), limit=1024)
    other.close()
    with pytest.raises(ValueError):
        other.read()
