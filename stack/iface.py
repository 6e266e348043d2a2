"""Interfaces and the routing table (longest-prefix match)."""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, field

from stack.wire.ipv4 import ip_bytes, ip_str


def addr_int(addr: bytes) -> int:
    """A 4-byte IPv4 address as an integer."""
    return int.from_bytes(addr, "big")


@dataclass(eq=False)
class Interface:
    """One attached link: its MAC, its IPv4 address and prefix, MTU and offload state,
    and whether it speaks IPv6."""

    index: int
    name: str
    mac: bytes
    addr: bytes
    prefixlen: int
    mtu: int = 1500
    offload: bool = True
    counters: Counter = field(default_factory=Counter)
    #: Whether the interface speaks IPv6 too (dual stack: stack/ip6.py holds its
    #: IPv6 addresses; the IPv4 one above stays).
    ipv6: bool = False
    #: The directed broadcast address of the subnet (derived; checked per packet).
    broadcast: bytes = field(init=False, default=b"")

    def __post_init__(self) -> None:
        self.broadcast = self.network.broadcast_address.packed

    @property
    def network(self) -> ipaddress.IPv4Network:
        """The attached subnet."""
        return ipaddress.IPv4Network((ip_str(self.addr), self.prefixlen), strict=False)

    @property
    def configured(self) -> bool:
        """Whether the interface has an address yet (a DHCP client's has not)."""
        return self.addr != b"\0\0\0\0"

    def set_address(self, addr: bytes, prefixlen: int) -> None:
        """Take a new address and prefix (the broadcast address follows)."""
        self.addr = addr
        self.prefixlen = prefixlen
        self.broadcast = self.network.broadcast_address.packed

    def on_link(self, dst: bytes) -> bool:
        """Whether ``dst`` is on this interface's subnet."""
        shift = 32 - self.prefixlen
        return (addr_int(dst) >> shift) == (addr_int(self.addr) >> shift)

    def __repr__(self) -> str:
        return f"Interface({self.name} {ip_str(self.addr)}/{self.prefixlen} mtu {self.mtu})"


@dataclass(frozen=True, slots=True)
class Route:
    """A route: destination prefix, optional gateway, outgoing interface."""

    network: int
    prefixlen: int
    via: bytes | None
    iface: Interface

    @property
    def prefix(self) -> str:
        """The prefix as text."""
        return f"{ip_str(self.network.to_bytes(4, 'big'))}/{self.prefixlen}"

    def describe(self) -> str:
        """One line like ``ip route`` prints."""
        gw = f" via {ip_str(self.via)}" if self.via else ""
        return f"{self.prefix}{gw} dev {self.iface.name}"


class RouteTable:
    """Routes with longest-prefix match and a bounded per-destination cache."""

    CACHE_MAX = 4096

    def __init__(self) -> None:
        self.routes: list[Route] = []
        self._cache: dict[bytes, Route | None] = {}

    def add(self, prefix: str, iface: Interface, via: str | None = None) -> Route:
        """Add a route for ``prefix`` ("a.b.c.d/n" or "default") out of ``iface``."""
        if prefix == "default":
            prefix = "0.0.0.0/0"
        net = ipaddress.IPv4Network(prefix, strict=False)
        gw = ip_bytes(via) if via else None
        if gw is not None and not iface.on_link(gw):
            raise ValueError(f"gateway {via} is not on {iface.name}'s subnet")
        route = Route(int(net.network_address), net.prefixlen, gw, iface)
        self.routes = [r for r in self.routes
                       if not (r.network == route.network and r.prefixlen == route.prefixlen)]
        self.routes.append(route)
        self.routes.sort(key=lambda r: -r.prefixlen)
        self._cache.clear()
        return route

    def remove_iface(self, iface: Interface) -> None:
        """Remove every route out of ``iface``."""
        self.routes = [r for r in self.routes if r.iface is not iface]
        self._cache.clear()

    def lookup(self, dst: bytes) -> Route | None:
        """The most specific route to ``dst``, or None."""
        try:
            return self._cache[dst]
        except KeyError:
            pass
        d = addr_int(dst)
        found = None
        for r in self.routes:
            shift = 32 - r.prefixlen
            if r.prefixlen == 0 or (d >> shift) == (r.network >> shift):
                found = r
                break
        if len(self._cache) >= self.CACHE_MAX:
            self._cache.clear()
        self._cache[dst] = found
        return found
