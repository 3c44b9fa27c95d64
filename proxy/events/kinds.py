"""The event types, exactly as clients see them (SSE ``event:``, the long poll's ``type``).

Payloads stay small: a page re-fetches ``GET /storage/files/<file_id>/`` on any event that
names its file.
"""

from __future__ import annotations

UPLOAD_PROGRESS = "upload.progress"  # {upload_id, filename, offset, total}
UPLOAD_COMPLETE = "upload.complete"  # {upload_id, file_id, filename, path, size, version}
FILE_CREATED = "file.created"  # {file_id, filename, path, size, version}
FILE_UPDATED = "file.updated"  # {file_id, filename, path, size, version}: a new version
FILE_DELETED = "file.deleted"  # {file_id, path}
FILE_ROLLED_BACK = "file.rolled_back"  # {file_id, path, version}: the new current version
FILE_MOVED = "file.moved"  # {file_id, path, filename}: the file has another path now
# The content's events name each file whose current version it is (emit.Emitter.for_blob):
REPLICA_CONFIRMED = "replica.confirmed"  # {file_id, path, replicas}: confirmed copies now
PART_MIRRORED = "part.mirrored"  # {file_id, path, index, parts_done, parts_total}
FILE_BACKED_UP = "file.backed_up"  # {file_id, path}: mirrored to S3 and verified there
RESTORE_PROGRESS = "restore.progress"  # {file_id, path, parts_done, parts_total}
FILE_RESTORED = "file.restored"  # {file_id, path}: back on a storage node from S3

# Staff only: recorded in the feed of every active staff account at the time (a household or
# an office has a few), so that each reads them with its own cursor; demotion drops them from
# the demoted account's feed (``proxy.catalog.users``).
NODE_STATUS = "node.status"  # {node, status, was}: the monitor saw it go up or down
NODE_CHANGED = "node.changed"  # {node, change}: added, drained, reactivated, moved, removed
JOB_STARTED = "job.started"  # {job}: a run began (slow jobs, and runs staff asked for)
JOB_FINISHED = "job.finished"  # {job, ok, result, duration}: that run ended

STAFF_ONLY = (NODE_STATUS, NODE_CHANGED, JOB_STARTED, JOB_FINISHED)

# Control, never stored: the client's cursor is too old (pruned) or from another database;
# it reloads its view and goes on from the stream's new position. SSE only, without an id.
RESET = "reset"

RECORDED = (
    UPLOAD_PROGRESS, UPLOAD_COMPLETE, FILE_CREATED, FILE_UPDATED, FILE_DELETED,
    FILE_ROLLED_BACK, FILE_MOVED, REPLICA_CONFIRMED, PART_MIRRORED, FILE_BACKED_UP,
    RESTORE_PROGRESS, FILE_RESTORED, *STAFF_ONLY,
)  # fmt: skip
