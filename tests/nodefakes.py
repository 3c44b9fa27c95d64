"""A base for the tests' in-memory nodes: each fake plays the calls of
``proxy.cluster.nodeapi.NodeApi`` its tests need and inherits a refusal for the rest, so every
fake is a whole ``NodeApi`` that mypy checks wherever it is handed to the proxy's code."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from proxy.cluster.nodeapi import WantedReplica


class NotPlayed(AssertionError):
    """A fake was asked for a call it does not play: the test reached further than it meant."""


class UnplayedNodeApi:
    """Every ``NodeApi`` call fails with ``NotPlayed``; subclasses override what they play."""

    async def health(self, base_url: str) -> dict[str, Any]:
        raise NotPlayed(f"health of {base_url}")

    async def confirm(
        self, base_url: str, node: str, key: str, size: int, md5: str, sha256: str
    ) -> None:
        raise NotPlayed(f"confirm of {key} on {base_url}")

    async def confirm_batch(
        self, base_url: str, node: str, wanted: Sequence[WantedReplica]
    ) -> dict[str, str | None]:
        raise NotPlayed(f"batch confirm of {len(wanted)} replicas on {base_url}")

    async def verify(self, base_url: str, node: str, key: str, size: int, sha256: str) -> bool:
        raise NotPlayed(f"verify of {key} on {base_url}")

    async def delete(self, base_url: str, node: str, key: str) -> None:
        raise NotPlayed(f"delete of {key} on {base_url}")

    async def fetch(
        self, base_url: str, node: str, key: str, write: Callable[[bytes], None]
    ) -> None:
        raise NotPlayed(f"fetch of {key} from {base_url}")

    async def mirror_sync(
        self, base_url: str, node: str, want: Mapping[str, Any], *, timeout: float
    ) -> dict[str, Any]:
        raise NotPlayed(f"mirror sync with {base_url}")
