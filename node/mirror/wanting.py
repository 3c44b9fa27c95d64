"""Taking the proxy's want-list into the ledger (``node.mirror.loop``'s ``sync``): the
whole list (anything else held is dropped), or a delta of blobs added and withdrawn, which
is taken only on top of the journal it was made for (``node.mirror.wire``). The records
that changed are returned for the ledger to keep in one transaction."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from node.mirror.ledger import Ledger
from node.mirror.state import Blob, MirrorRecord, Record, RestoreRecord
from node.mirror.wire import RestoreWant, WantList


def take(ledger: Ledger, want: WantList) -> list[Record]:
    """Apply ``want`` to the ledger's records in memory; the records that changed."""
    if want.complete:
        mirrors = {b.key for b in want.mirror}
        restores = {r.blob.key for r in want.restore}
        drop_mirrors = [k for k in ledger.mirrors if k not in mirrors]
        drop_restores = [k for k in ledger.restores if k not in restores]
    else:
        drop_mirrors, drop_restores = list(want.withdraw_mirror), list(want.withdraw_restore)
    return [
        *_drop_mirrors(ledger, drop_mirrors),
        *_drop_restores(ledger, drop_restores),
        *_want_mirrors(ledger, want.mirror),
        *_want_restores(ledger, want.restore),
    ]


def takes(ledger: Ledger, want: WantList) -> bool:
    """Whether ``want`` can be taken: the whole list always; a delta only on top of the
    journal it was made for, holding the change it starts from or a newer one."""
    if want.cursor is None or want.cursor.since is None:
        return True
    held = ledger.cursor
    return want.cursor.state == ledger.state_id and held is not None and (held >= want.cursor.since)


def _drop_mirrors(ledger: Ledger, keys: list[str]) -> list[Record]:
    changed: list[Record] = []
    for key in keys:
        old = ledger.mirrors.get(key)
        if old is not None and not old.dropped:
            old.dropped, old.attempts, old.next_attempt_at = True, 0, 0.0
            changed.append(old)
    return changed


def _drop_restores(ledger: Ledger, keys: list[str]) -> list[Record]:
    changed: list[Record] = []
    for key in keys:
        old = ledger.restores.get(key)
        if old is not None and not old.dropped:
            old.dropped = True
            changed.append(old)
    return changed


def _want_mirrors(ledger: Ledger, blobs: tuple[Blob, ...]) -> list[Record]:
    """Take ``blobs`` as blobs to mirror; the records that changed."""
    changed: list[Record] = []
    for blob in blobs:
        record = ledger.mirrors.get(blob.key)
        if record is not None and record.blob == blob:
            if record.dropped:
                record.dropped = False
                changed.append(record)
            ledger.touch(record)  # asked again: report it again
            continue
        if record is not None and blob.key in ledger.active:
            record.dropped = True  # the running upload stops; the new record waits
        ledger.mirrors[blob.key] = MirrorRecord(blob)
        changed.append(ledger.mirrors[blob.key])
    return changed


def _want_restores(ledger: Ledger, items: tuple[RestoreWant, ...]) -> list[Record]:
    """Take ``items`` as blobs to restore; the records that changed."""
    changed: list[Record] = []
    for item in items:
        record = ledger.restores.get(item.blob.key)
        if record is not None and record.blob == item.blob and _layout(record) == item.parts:
            if record.dropped:
                record.dropped = False
                changed.append(record)
            ledger.touch(record)  # asked again: report it again
            continue
        if record is not None and item.blob.key in ledger.active:
            record.dropped = True  # the running restore stops; the new record waits
        ledger.restores[item.blob.key] = RestoreRecord(item.blob, [replace(p) for p in item.parts])
        changed.append(ledger.restores[item.blob.key])
    return changed


def _layout(record: RestoreRecord) -> tuple[Any, ...]:
    return tuple(replace(p, done=False) for p in record.parts)
