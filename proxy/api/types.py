"""The JSON objects of the proxy's HTTP API, declared once as msgspec Structs.

One piece on purpose (over 400 lines): it is the API's vocabulary, declarations only, read top
to bottom beside the document it becomes; the shared field types at the top serve every type.

``msgspec.json.schema_components(COMPONENTS, ref_template="#/components/schemas/{name}")``
turns them into the OpenAPI document's schemas, and the same types can decode request bodies
and encode answers, so the document cannot drift from what the proxy does.

How the schema is read off a type:

- a field without a default is ``required``; a field that may be absent defaults to ``UNSET``
  (msgspec leaves it out of the encoding and of ``required``), one that is present but may be
  empty is ``X | None``;
- answers (what the proxy sends) forbid unknown fields, so their schemas say
  ``additionalProperties: false`` and a client knows the listed fields are all there is;
  request bodies forbid them too, because the proxy refuses a field it does not know (400);
  ``Error`` does not;
- what the proxy checks about an input field (a name's characters, a URL's form, a number's
  range) is written on its type with ``Meta``, so the document refuses what the proxy
  refuses; what one field's schema cannot say (a password that contains the username) is in
  its description;
- a class docstring is its schema's ``description`` and a ``Meta(description=...)`` a field's,
  both shown by ReDoc, so they are written for the API's readers.
"""

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

# ---------------------------------------------------------------- shared field types

_HEX32 = "^[0-9a-f]{32}$"

Id = Annotated[str, Meta(pattern=_HEX32, description="32 hex digits.")]
ParentId = Annotated[Id, Meta(description="File this upload becomes a new version of.")]
Md5 = Annotated[str, Meta(pattern="^[0-9a-fA-F]{32}$", description="Hex md5.")]
Sha256 = Annotated[str, Meta(pattern="^[0-9a-f]{64}$", description="Hex sha256.")]
Size = Annotated[int, Meta(ge=0, description="Bytes.")]
Count = Annotated[int, Meta(ge=0)]
VersionNumber = Annotated[int, Meta(ge=1)]
Time = Annotated[datetime, Meta(tz=True)]  # tz=True is what makes msgspec say "date-time"
Uri = Annotated[str, Meta(extra_json_schema={"format": "uri"})]
Email = Annotated[str, Meta(extra_json_schema={"format": "email"})]
# msgspec adds "contentEncoding": "base64" to any bytes type and no Meta can take it away.
Binary = Annotated[
    bytes,
    Meta(extra_json_schema={"format": "binary", "contentMediaType": "application/octet-stream"}),
]

RemoteState = Literal["local", "mirroring", "mirrored", "remote", "restoring", "lost"]
PartState = Literal["pending", "uploading", "uploaded"]
NodeStatus = Literal["up", "down", "draining"]
NodeState = Literal["active", "draining"]
LogLevel = Literal["debug", "info", "warn", "error"]

# What the proxy accepts in its inputs (the checks live in proxy.catalog, proxy.cluster,
# proxy.remote and proxy.uploads; these say the same in JSON Schema).
Name = Annotated[
    str,
    Meta(pattern="^[A-Za-z0-9_.-]{1,64}$", description="1 to 64 letters, digits, `_`, `.` or `-`."),
]
# A URL as the proxy reads it (urlsplit): a host, a port from 1 to 65535 if any, no query or
# fragment. urlsplit drops tabs and line breaks, and takes any other character in a host.
_HOST = r"[^/?#@:\[\]\t\n\r]+"
_PORT_NUMBER = "|".join(  # 1 to 65535
    (
        "[1-9][0-9]{0,3}",
        "[1-5][0-9]{4}",
        "6[0-4][0-9]{3}",
        "65[0-4][0-9]{2}",
        "655[0-2][0-9]",
        "6553[0-5]",
    )
)
_PORT = f"(:(0*({_PORT_NUMBER}))?)?"
_USER = r"([^/?#@\[\]\t\n\r]*@)?"
_PATH = r"(/[^?#]*)?"
NodeUrl = Annotated[
    str,
    Meta(
        pattern=f"^https?://{_USER}{_HOST}{_PORT}{_PATH}$",
        max_length=500,
        description="`http://HOST:PORT` of the node's API.",
    ),
]
RsyncUrl = Annotated[
    str,
    Meta(
        pattern=f"^rsync://{_USER}{_HOST}{_PORT}{_PATH}$",
        max_length=500,
        description="`rsync://pyarchive@HOST:PORT/incoming`",
    ),
]
Endpoint = Annotated[
    Annotated[str, Meta(pattern=f"^(https?://{_HOST}{_PORT}/?)?$")] | None,
    Meta(description="`http(s)://HOST[:PORT]` without a path; empty or null for AWS itself."),
]
Bucket = Annotated[
    str,
    Meta(
        pattern=r"^[a-z0-9](([a-z0-9-]|\.[a-z0-9-])*\.?[a-z0-9])?$",
        min_length=3,
        max_length=63,
        description="An S3 bucket name: 3 to 63 lowercase letters, digits, `.` and `-`.",
    ),
]
_SEGMENT = r"(\.{0,2}[A-Za-z0-9_-][A-Za-z0-9._-]*|\.{3}[A-Za-z0-9._-]*)"
Prefix = Annotated[
    str,
    Meta(
        pattern=f"^{_SEGMENT}(/{_SEGMENT})*$",
        max_length=200,
        description="Path segments of letters, digits, `.`, `_` or `-` separated by `/`; no "
        "`.` or `..` segment.",
    ),
]
AccessKey = Annotated[
    str, Meta(pattern="^[!-~]{1,256}$", description="1 to 256 printable characters, no spaces.")
]
_NOT_IN_A_NAME = r"/\\\x00-\x1f\x7f-\x9f"
Filename = Annotated[
    str,
    Meta(
        # Not only spaces or dots, no separator, no control character.
        pattern=f"^[^{_NOT_IN_A_NAME}]*[^{_NOT_IN_A_NAME}\\s.][^{_NOT_IN_A_NAME}]*$",
        max_length=255,
        description="A name, not a path: no `/`, `\\` or control characters, at most 255 "
        "bytes in UTF-8.",
    ),
]
FilePath = Annotated[
    str,
    Meta(
        # Segments as a Filename, separated by single `/`s; no leading or trailing `/`.
        pattern=f"^[^{_NOT_IN_A_NAME}]*[^{_NOT_IN_A_NAME}\\s.][^{_NOT_IN_A_NAME}]*"
        f"(/[^{_NOT_IN_A_NAME}]*[^{_NOT_IN_A_NAME}\\s.][^{_NOT_IN_A_NAME}]*)*$",
        max_length=1024,
        description="`folder/.../name`: relative, `/`-separated; no empty, `.` or `..` "
        "segment, no `\\` or control characters; at most 1024 bytes in UTF-8 and 255 per "
        "segment. Compared NFC-normalised. Its last segment is the file's name.",
    ),
]
Seconds = Annotated[float, Meta(gt=0, le=30 * 86400)]
Duration = Annotated[
    str,
    Meta(pattern=r"^\s*[0-9]+(\.[0-9]+)?\s*([mM][sS]|[sSmMhHdD])?\s*$"),
]


# ---------------------------------------------------------------- service, auth


class Error(msgspec.Struct, kw_only=True, frozen=True):
    """Every error answer. Some carry more fields: a refused chunk carries `offset` (the bytes
    the server holds), a refused form field names it in `field`."""

    # Unlike the other answers it does not forbid unknown fields: leaving additionalProperties
    # out allows the extra ones (msgspec cannot write "additionalProperties": true on a Struct).
    detail: Annotated[str, Meta(description="What went wrong, for people.")]


class Health(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The proxy is up."""

    status: Literal["ok"]


class Registration(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A new account."""

    username: Annotated[
        str, Meta(min_length=1, max_length=150, pattern="^[A-Za-z0-9_.@+-]{1,150}$")
    ]
    password: Annotated[
        str,
        Meta(
            min_length=8,
            max_length=1024,
            description="Refused when too short, entirely numeric, made of too few different "
            "characters, or containing the username.",
        ),
    ]
    email: (
        Annotated[Email | Literal[""] | None, Meta(description="Empty or null: none.")] | UnsetType
    ) = UNSET


class User(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """An account."""

    id: int
    username: str
    email: Annotated[str, Meta(description="Empty when none was given.")]
    is_staff: bool


class Credentials(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A username and password to trade for a token."""

    username: str
    password: str


class Token(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A login token: send it as `Authorization: JWT <token>`."""

    token: Annotated[str, Meta(description="A signed JWT.")]


# ---------------------------------------------------------------- uploads


class Upload(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A resumable upload as it now stands."""

    id: Id
    url: Annotated[
        Uri,
        Meta(
            description="Where to send the next chunk and the completion. It names the proxy "
            "that holds the upload; use it as given."
        ),
    ]
    file: Annotated[
        Uri | None,
        Meta(description="The stored file's download URL once complete; null before."),
    ]
    filename: str
    offset: Annotated[
        Size, Meta(description="Bytes stored durably so far: the next chunk starts here.")
    ]
    created_at: Time
    status: Annotated[Literal[1, 2], Meta(description="1: uploading, 2: complete.")]
    completed_at: Time | None
    user: Annotated[int, Meta(description="Id of the owner.")]
    parent: Id | None
    expires: Annotated[Time, Meta(description="After this an unfinished upload is dropped.")]
    # Not in `required`: the seed API's clients do not rely on these three, which came later.
    file_id: Annotated[Id | None, Meta(description="The stored file, once complete.")] = None
    version: Annotated[
        int | None,
        Meta(description="The stored file's version this upload became, once complete."),
    ] = None
    total: Annotated[
        int | None, Meta(description="The file's size, once a Content-Range has said it.")
    ] = None
    sha256: Annotated[
        Sha256 | None,
        Meta(
            description="The stored content's sha256, once complete (null before, and once "
            "its file is deleted): a client that hashed what it sent compares the two "
            "without asking for the file."
        ),
    ] = None
    # Always sent since issue 13, not in `required` for the same reason.
    path: (
        Annotated[
            str,
            Meta(
                description="Where its file is (`folder/name`), unique among your files: the "
                "filename unless the upload named a path (with a `parent`: the parent's path)."
            ),
        ]
        | UnsetType
    ) = UNSET
    # In the list of unfinished uploads only.
    dialect: (
        Annotated[
            Literal["seed", "tus"],
            Meta(description="How it was started: the chunked API (`seed`) or tus."),
        ]
        | UnsetType
    ) = UNSET
    tus_url: (
        Annotated[Uri, Meta(description="A tus upload's URL, where a tus client resumes it.")]
        | UnsetType
    ) = UNSET


class UnfinishedUploads(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The caller's uploads still in progress, newest first."""

    results: Annotated[
        list[Upload],
        Meta(
            description="At most 100, newest first; a tus final upload is not listed (its "
            "partial uploads are)."
        ),
    ]


class ChunkForm(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A chunk sent as a multipart form."""

    file: Annotated[Binary, Meta(description="This chunk's bytes.")]
    filename: (
        Annotated[
            Filename,
            Meta(description="With the first chunk, this or `path` is required."),
        ]
        | UnsetType
    ) = UNSET
    path: (
        Annotated[
            FilePath,
            Meta(description="Where the file goes among yours; default: the filename."),
        ]
        | UnsetType
    ) = UNSET
    parent: ParentId | UnsetType = UNSET


class WholeFileForm(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A whole file sent as a multipart form."""

    file: Annotated[Binary, Meta(description="The whole file.")]
    filename: Annotated[Filename, Meta(description="This or `path` is required.")] | UnsetType = (
        UNSET
    )
    path: (
        Annotated[
            FilePath,
            Meta(description="Where the file goes among yours; default: the filename."),
        ]
        | UnsetType
    ) = UNSET
    md5: Md5
    parent: ParentId | UnsetType = UNSET


class Completion(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The whole file's md5, which completes an upload."""

    md5: Annotated[Md5, Meta(description="Hex md5 of the whole file.")]


# ---------------------------------------------------------------- files


class Version(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """One stored version of a file."""

    number: VersionNumber
    size: Size
    md5: Md5
    sha256: Sha256
    created_at: Time
    filename: Annotated[str, Meta(description="The name it was uploaded as.")] | UnsetType = UNSET
    download_url: Uri | UnsetType = UNSET


class FileReplica(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """One copy of a file's content on a storage node."""

    node: str
    zone: str
    state: Annotated[str, Meta(description="pending, copying, confirmed, failed or quarantined.")]


class FilePart(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """One part of a file's current version mirrored to S3."""

    index: Annotated[int, Meta(ge=1)]
    offset: Size
    size: Size
    sha256: Sha256 | None
    remote_state: PartState


class FileRestore(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Progress of a restore from S3."""

    node: str | None
    parts_restored: Count
    parts_total: Count
    detail: Annotated[str, Meta(description="Why the last restore failed.")]


class File(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """`size`, `md5`, `sha256` and `download_url` are the current version's."""

    id: Id
    filename: str
    size: Size
    md5: Md5
    sha256: Sha256
    created_at: Time
    download_url: Uri
    versions: Annotated[list[Version], Meta(description="Newest first.")]
    content_type: (
        Annotated[
            str,
            Meta(
                description="The current version's type, as its uploader said (tus `filetype`)"
                "; downloads are served with it. Empty: not said (`application/octet-stream`)."
            ),
        ]
        | UnsetType
    ) = UNSET
    # Always sent since issue 13; not in `required`, as the seed API's files had none.
    path: (
        Annotated[
            str,
            Meta(
                description="`folder/name`, unique among your files; its last segment is "
                "`filename`. Files stored before paths have their filename as their path."
            ),
        ]
        | UnsetType
    ) = UNSET
    version: Annotated[VersionNumber, Meta(description="The current version.")] | UnsetType = UNSET
    updated_at: Time | UnsetType = UNSET
    # Sent in lists and the detail since issue 13 (`pyarchive ls` shows it); not in
    # `required`, as the seed API's files had none.
    remote_state: (
        Annotated[
            RemoteState,
            Meta(
                description="The current version in the S3 tier: `local` before any copy is "
                "in S3, `mirroring` while one is sent, `mirrored` once there, `remote` once "
                "uncached (only in S3), `restoring` while brought back, `lost` after a "
                "disaster recovery that did not find it in the bucket."
            ),
        ]
        | UnsetType
    ) = UNSET
    remote_verified: (
        Annotated[
            bool, Meta(description="Whether the S3 copy was read back and its sha256 matched.")
        ]
        | UnsetType
    ) = UNSET
    # The file detail's fields; a file in a FileList has none of them.
    parts: (
        Annotated[
            list[FilePart],
            Meta(description="The parts mirrored to S3, as the mirroring node reported them."),
        ]
        | UnsetType
    ) = UNSET
    restore: FileRestore | UnsetType = UNSET
    cache_url: Uri | UnsetType = UNSET
    uncache_url: Uri | UnsetType = UNSET
    replicas: (
        Annotated[
            list[FileReplica],
            Meta(description="Where the current version's content is kept on storage nodes."),
        ]
        | UnsetType
    ) = UNSET
    mirror_node: (
        Annotated[str | None, Meta(description="The node that mirrors it to S3, if any.")]
        | UnsetType
    ) = UNSET
    mirror_detail: (
        Annotated[str, Meta(description="Why its last mirror attempt failed; empty if none.")]
        | UnsetType
    ) = UNSET


class FileList(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """One page of files."""

    count: Annotated[Count, Meta(description="Files in all pages.")]
    next: Uri | None
    previous: Uri | None
    results: Annotated[
        list[File],
        Meta(
            description="By path (in Unicode code point order), then id; 20 per page unless "
            "`page_size` or the proxy says otherwise."
        ),
    ]


class FileMove(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Where the file goes among yours (a rename; its name is the path's last segment)."""

    path: FilePath


class Rollback(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The version to make current again."""

    version: Annotated[VersionNumber, Meta(le=999_999_999)]


class RemoteAction(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """What became of a request to cache, uncache or restore a file."""

    detail: str
    remote_state: str
    cache_url: Uri | UnsetType = UNSET
    status_url: Uri | UnsetType = UNSET


# ---------------------------------------------------------------- nodes


class Node(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A storage node and what the monitor last saw of it."""

    name: str
    url: Annotated[str, Meta(description="http://HOST:PORT of the node's API.")]
    rsync_url: Annotated[str, Meta(description="rsync://pyarchive@HOST:PORT/incoming")]
    zone: str
    status: NodeStatus
    state: NodeState
    free_bytes: int | None
    total_bytes: int | None
    last_seen: Time | None
    rtt_ms: float | None
    replicas: Annotated[int, Meta(description="Confirmed replicas it holds.")]


class NewNode(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A storage node to register."""

    name: Name
    url: NodeUrl
    rsync_url: RsyncUrl
    # One text type, not `Name | Literal[""]`: msgspec checks a text value against the one
    # text type of a union, so "" would meet Name's pattern and be refused.
    zone: (
        Annotated[
            str,
            Meta(
                pattern="^([A-Za-z0-9_.-]{1,64})?$",
                description="Empty or null: `default`.",
            ),
        ]
        | None
    ) = "default"


class NodeChange(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The fields of a node to change; the others stay."""

    state: NodeState | UnsetType = UNSET
    zone: Name | UnsetType = UNSET
    url: NodeUrl | UnsetType = UNSET
    rsync_url: RsyncUrl | UnsetType = UNSET


# ---------------------------------------------------------------- jobs, system log


class Job(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A periodic job and how its last run went."""

    name: Annotated[str, Meta(description="e.g. `scrub`, or `mirror@node1`.")]
    description: str
    interval: Annotated[float | None, Meta(description="Seconds between runs.")]
    last_run: Time | None
    last_duration: Annotated[float | None, Meta(description="Seconds.")]
    last_ok: bool | None
    last_result: Annotated[str, Meta(description="Short JSON, or the error.")]
    next_run: Time | None
    running: bool
    where: Annotated[str, Meta(description="`proxy`, or the node it runs on.")]


class JobInterval(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """How often a job is to run."""

    interval: Annotated[
        Seconds | Duration | None,
        Meta(
            description="Seconds (above 0, at most 30 days), a duration like `10m`, or null for "
            "the configured default."
        ),
    ]


class JobRun(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """How a run started by hand went."""

    job: str
    ok: bool
    result: Any | UnsetType = UNSET  # whatever the job returns
    error: str | UnsetType = UNSET


class LogEntry(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """One entry of the system log."""

    id: int
    at: Time
    level: LogLevel
    event: Annotated[str, Meta(description="e.g. `node.down`, `job.failed`.")]
    job: Annotated[str, Meta(description="The job it concerns, or empty.")]
    message: str
    data: dict[str, Any]


# ---------------------------------------------------------------- S3 connections


class S3Connection(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """An S3 connection; its secret key is never shown."""

    name: str
    endpoint_url: Annotated[str, Meta(description="Empty for AWS itself.")]
    region: str
    bucket: str
    prefix: Annotated[str, Meta(description="Objects are stored as `<prefix>/<sha256>`.")]
    access_key: str
    secret_key_hint: Annotated[
        str | None,
        Meta(
            description="`…` and the secret key's last 4 characters; null when this proxy "
            "cannot open the stored secret (see `secret_unreadable`)."
        ),
    ]
    secret_unreadable: Annotated[
        bool,
        Meta(
            description="The secret was sealed with another encryption key: PATCH a new "
            "`secret_key`."
        ),
    ]
    active: bool
    validated_at: Time | None
    validation_ok: bool | None
    validation_detail: str
    created_at: Time
    updated_at: Time


SecretKey = Annotated[
    AccessKey,
    Meta(description="Stored encrypted; never shown.", extra_json_schema={"writeOnly": True}),
]


class NewS3Connection(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """An S3 connection to add (not active, not validated yet)."""

    name: Name
    endpoint_url: Endpoint = ""
    region: Annotated[Name, Meta(description="A region name like `us-east-1`.")]
    bucket: Bucket
    prefix: Prefix = "pyarchive"
    access_key: AccessKey
    secret_key: SecretKey


class S3ConnectionChange(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The fields of an S3 connection to change; the others stay."""

    endpoint_url: Endpoint | UnsetType = UNSET
    region: Annotated[Name, Meta(description="A region name like `us-east-1`.")] | UnsetType = UNSET
    bucket: Bucket | UnsetType = UNSET
    prefix: Prefix | UnsetType = UNSET
    access_key: AccessKey | UnsetType = UNSET
    secret_key: SecretKey | UnsetType = UNSET


# What a PATCH takes: one field at least (the proxy refuses one that changes nothing).
S3ConnectionPatch = Annotated[S3ConnectionChange, Meta(extra_json_schema={"minProperties": 1})]


# ---------------------------------------------------------------- live events

EventType = Literal[
    "upload.progress",
    "upload.complete",
    "file.created",
    "file.updated",
    "file.deleted",
    "file.rolled_back",
    "file.moved",
    "replica.confirmed",
    "part.mirrored",
    "file.backed_up",
    "restore.progress",
    "file.restored",
    # staff accounts only
    "node.status",
    "node.changed",
    "job.started",
    "job.finished",
]
EventId = Annotated[int, Meta(ge=0, le=2**63 - 1)]


class Event(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """One event of your feed. `data` by `type`: `upload.progress` {upload_id, filename,
    offset, total}; `upload.complete` {upload_id, file_id, filename, path, size, version};
    `file.created` and `file.updated` (a new version) {file_id, filename, path, size,
    version}; `file.deleted` {file_id, path}; `file.rolled_back` {file_id, path, version: the
    new current one}; `file.moved` {file_id, path, filename}; `replica.confirmed` {file_id,
    path, replicas: confirmed copies now}; `part.mirrored` {file_id, path, index, parts_done,
    parts_total}; `file.backed_up` {file_id, path}: mirrored to S3 and verified;
    `restore.progress` {file_id, path, parts_done, parts_total}; `file.restored` {file_id,
    path}. Staff also get `node.status` {node, status, was}, `node.changed` {node, change},
    `job.started` {job} and `job.finished` {job, ok, result, duration}."""

    id: Annotated[
        int, Meta(ge=1, le=2**63 - 1, description="Its number among your events, in order.")
    ]
    type: EventType
    data: dict[str, Any]
    created_at: Time


class Changes(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Your events after `since`, oldest first (at most 100: ask again from `last_id`)."""

    events: list[Event]
    last_id: Annotated[EventId, Meta(description="What to send as `since` next time.")]
    reset: Annotated[
        bool,
        Meta(
            description="`since` is older than the events kept, or is not one of yours: "
            "reload what you show, then go on from `last_id`."
        ),
    ]


# ---------------------------------------------------------------- accounts, for staff and oneself

Quota = Annotated[
    int | None,
    Meta(description="Bytes the account's files and open uploads may take; null: no limit."),
]


class UserAccount(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """An account as staff see it."""

    username: str
    email: str
    is_staff: bool
    is_active: Annotated[bool, Meta(description="False: disabled, cannot log in.")]
    quota: Quota
    used: Annotated[Size, Meta(description="Bytes of every version of the account's files.")]
    last_login: Time | None
    created_at: Time
    must_change_password: Annotated[
        bool, Meta(description="Staff reset the password: its owner must choose a new one.")
    ]


class UserAccounts(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Every account, by username."""

    results: list[UserAccount]


class UserChange(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """What staff change of an account (any of the fields)."""

    is_staff: bool | UnsetType = UNSET
    is_active: (
        Annotated[bool, Meta(description="False disables it and signs it out everywhere.")]
        | UnsetType
    ) = UNSET
    quota: Annotated[int, Meta(ge=0)] | UnsetType | None = UNSET


class NewUserAccount(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """An account staff create."""

    username: Annotated[
        str, Meta(min_length=1, max_length=150, pattern="^[A-Za-z0-9_.@+-]{1,150}$")
    ]
    password: Annotated[str, Meta(min_length=8, max_length=1024)]
    email: (
        Annotated[Email | Literal[""] | None, Meta(description="Empty or null: none.")] | UnsetType
    ) = UNSET
    is_staff: bool = False
    quota: Annotated[int, Meta(ge=0)] | None = None


class PasswordReset(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A password staff set; its owner must change it at the next login."""

    password: Annotated[str, Meta(min_length=8, max_length=1024)]


class Me(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The caller's own account."""

    username: str
    email: str
    is_staff: bool
    used: Annotated[Size, Meta(description="Bytes of every version of your files.")]
    quota: Quota
    must_change_password: bool


class SignedOut(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Every session and token of the account was ended."""

    detail: str


# ---------------------------------------------------------------- login throttling, settings


class AccountFailures(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Recent failed logins as one username (which may name no account)."""

    username: Annotated[str, Meta(description="The name tried, as recorded.")]
    failures: Annotated[Count, Meta(description="Failures in the last 15 minutes.")]
    last_failure: Time
    throttled_until: Annotated[
        Time | None, Meta(description="When its wait ends, if logins as it wait now; else null.")
    ]


class AddressFailures(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Recent failed logins from one address."""

    address: Annotated[str, Meta(description="The client's address, as recorded.")]
    failures: Annotated[Count, Meta(description="Failures in the last 15 minutes.")]
    last_failure: Time
    throttled_until: Annotated[
        Time | None, Meta(description="When its wait ends, if logins from it wait now; else null.")
    ]


class LoginFailures(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Failed logins that still count for throttling, the most recent first."""

    accounts: list[AccountFailures]
    addresses: list[AddressFailures]


class ThrottleCleared(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The failures forgotten: logins wait no longer for them."""

    cleared: Annotated[Count, Meta(description="How many failed logins were forgotten.")]


class Settings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Settings staff change at run time."""

    allow_registration: Annotated[
        bool, Meta(description="Whether anyone may create an account (`/register/`).")
    ]
    allow_registration_source: Annotated[
        Literal["config", "staff"],
        Meta(description="`config`: the setting's value; `staff`: staff switched it."),
    ]


class SettingsChange(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """What staff change of the settings (any of the fields)."""

    allow_registration: bool | UnsetType = UNSET


COMPONENTS: tuple[type, ...] = (
    Error,
    Health,
    Registration,
    User,
    Credentials,
    Token,
    Upload,
    ChunkForm,
    WholeFileForm,
    Completion,
    Version,
    File,
    FilePart,
    FileReplica,
    FileRestore,
    FileList,
    Rollback,
    RemoteAction,
    Node,
    NewNode,
    NodeChange,
    Job,
    JobInterval,
    JobRun,
    LogEntry,
    S3Connection,
    NewS3Connection,
    S3ConnectionChange,
    Event,
    Changes,
    UserAccount,
    UserAccounts,
    UserChange,
    NewUserAccount,
    PasswordReset,
    Me,
    SignedOut,
    AccountFailures,
    AddressFailures,
    LoginFailures,
    ThrottleCleared,
    Settings,
    SettingsChange,
)
