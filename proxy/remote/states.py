"""A blob's ``remote_state`` and what each value means.

``local`` (not yet mirrored) -> ``mirroring`` (a node is assigned to mirror it) -> ``mirrored``
(verified in S3, local copies kept) -> ``remote`` (uncached: only in S3) -> ``restoring`` ->
``mirrored`` again. ``lost`` is set by a disaster-recovery restore for a blob whose object is
not in the bucket.
"""

from __future__ import annotations

LOCAL, MIRRORING, MIRRORED, REMOTE, RESTORING, LOST = (
    "local", "mirroring", "mirrored", "remote", "restoring", "lost",
)  # fmt: skip
NOT_HERE = (REMOTE, RESTORING, LOST)  # states in which no node holds the content
