"""The mirror's settings: one typed value, read once from the node's configuration.

``etc/node.conf-sample`` documents the ``mirror_*`` and ``restore_*`` settings behind it; the
rest (the first retry's wait, the ListParts page size) are fixed here, and tests set them.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.config import NodeConfig


@dataclass(frozen=True)
class MirrorSettings:
    """How the mirror works: its pace, part size, transfers at once, bandwidth and retries."""

    interval: float = 5.0
    part_size: int = 8 * 2**20
    parts_in_flight: int = 4
    bandwidth: int = 0  # bytes per second for all transfers together; 0: no limit
    retry_base: float = 5.0
    retry_max: float = 600.0
    restore_parts_in_flight: int = 4
    list_page_size: int = 1000  # ListParts MaxParts (S3's largest page)

    @property
    def threads(self) -> int:
        """Worker threads: every part in flight, plus room for the steps between them."""
        return self.parts_in_flight + self.restore_parts_in_flight + 4

    @classmethod
    def from_config(cls, config: NodeConfig) -> MirrorSettings:
        return cls(
            interval=config.mirror_interval,
            part_size=config.mirror_part_size,
            parts_in_flight=config.mirror_parts_in_flight,
            bandwidth=config.mirror_bandwidth,
            retry_max=config.mirror_retry_max,
            restore_parts_in_flight=config.restore_parts_in_flight,
        )
