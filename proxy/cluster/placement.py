"""Where replicas go and which replica serves a download: pure functions over node views."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

HEADROOM = 64 * 2**20  # leave this much free on a node beyond the file itself


@dataclass(frozen=True)
class Candidate:
    name: str
    zone: str
    free_bytes: int
    rtt_ms: float


def choose_nodes(
    candidates: list[Candidate],
    *,
    size: int,
    count: int,
    used_zones: set[str] = frozenset(),  # type: ignore[assignment]
    exclude: set[str] = frozenset(),  # type: ignore[assignment]
) -> list[str]:
    """Up to ``count`` nodes with room for ``size`` bytes, spreading over zones first,
    then taking the most free space.

    >>> nodes = [Candidate("a1", "a", 900 * 2**20, 1), Candidate("a2", "a", 800 * 2**20, 1),
    ...          Candidate("b1", "b", 200 * 2**20, 1)]
    >>> choose_nodes(nodes, size=100 * 2**20, count=2)
    ['a1', 'b1']
    >>> choose_nodes(nodes, size=100 * 2**20, count=2, used_zones={"b"}, exclude={"b1"})
    ['a1', 'a2']
    >>> choose_nodes(nodes, size=500 * 2**20, count=2)
    ['a1', 'a2']
    """
    pool = [c for c in candidates if c.name not in exclude and c.free_bytes >= size + HEADROOM]
    zones = set(used_zones)
    chosen: list[str] = []
    while pool and len(chosen) < count:
        pool.sort(key=lambda c: (c.zone in zones, -c.free_bytes, c.name))
        pick = pool.pop(0)
        chosen.append(pick.name)
        zones.add(pick.zone)
    return chosen


def choose_source(holders: list[Candidate], client_zone: str | None) -> Candidate | None:
    """The replica to send a client to: its own zone first, then the lowest round trip.

    >>> near, far = Candidate("n1", "home", 0, 9.0), Candidate("n2", "cloud", 0, 1.0)
    >>> choose_source([near, far], "home").name, choose_source([near, far], None).name
    ('n1', 'n2')
    """
    if not holders:
        return None
    return min(holders, key=lambda c: (c.zone != client_zone, c.rtt_ms, c.name))


ZoneMap = list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]]


def parse_zone_map(text: str) -> ZoneMap:
    """``home=192.168.0.0/16, office=10.0.0.0/8`` -> [(zone, network), ...].

    >>> [(zone, str(net)) for zone, net in parse_zone_map("home=192.168.0.0/16")]
    [('home', '192.168.0.0/16')]
    """
    found: ZoneMap = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        zone, sep, network = item.partition("=")
        if not sep or not zone.strip():
            raise ValueError(f"expected ZONE=NETWORK, got {item!r}")
        found.append((zone.strip(), ipaddress.ip_network(network.strip(), strict=False)))
    return found


def zone_of(address: str, zones: ZoneMap) -> str | None:
    """The zone whose network holds ``address`` (the most specific one), if any.

    An IPv4 client of a listener on ``::`` shows as an IPv4-mapped address; it is matched as
    the IPv4 address it is.

    >>> zones = parse_zone_map("home=192.168.0.0/16")
    >>> zone_of("192.168.1.20", zones), zone_of("::ffff:192.168.1.20", zones)
    ('home', 'home')
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    matches = [
        (net.prefixlen, zone) for zone, net in zones if ip.version == net.version and ip in net
    ]
    return max(matches)[1] if matches else None
