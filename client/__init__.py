"""The PyArchive client library: ``PyArchiveClient`` speaks the proxy's HTTP API."""

from client.api import PyArchiveClient
from client.errors import ApiError, ProtocolError, PyArchiveError

__all__ = ["ApiError", "ProtocolError", "PyArchiveClient", "PyArchiveError"]
