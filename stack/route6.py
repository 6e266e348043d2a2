"""IPv6 routing for the stack: next-hop determination (RFC 4861 §5.2) and source
address selection (RFC 6724, the rules a host with few addresses needs).

A destination is on-link when it is link-local, in the prefix of an address of an
interface, or in a prefix a router announced on-link (RFC 4861 §6.3.4); otherwise
the most specific configured route (``--route 2001:2::/48 via 2001:2:0:1::1``) or,
failing one, a default router the link's Router Advertisements gave (RFC 4861
§6.3.6: the first one heard while it lives) is the next hop. The answers are cached
per destination (bounded); the owner clears the cache whenever addresses, routes
or what routers said change.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from stack.addrconf import Address6, AddressTable, AddrState
from stack.iface import Interface
from stack.wire import ipv6 as wip6


@dataclass(frozen=True, slots=True)
class Route6:
    """A configured IPv6 route: prefix, length, gateway (None: on-link), interface."""

    prefix: bytes
    prefixlen: int
    via: bytes | None
    iface: Interface

    def describe(self) -> str:
        """One line like ``ip -6 route`` prints."""
        gw = f" via {wip6.ip6_str(self.via)}" if self.via else ""
        return f"{wip6.ip6_str(self.prefix)}/{self.prefixlen}{gw} dev {self.iface.name}"


@dataclass(frozen=True, slots=True)
class NextHop:
    """Where a packet to one destination goes: out of ``iface`` to ``nexthop``."""

    iface: Interface
    nexthop: bytes


class Route6Table:
    """Configured routes plus the interfaces' prefixes and routers."""

    CACHE_MAX = 4096
    MAX_ROUTES = 256

    def __init__(self, addresses: AddressTable) -> None:
        self.addresses = addresses
        self.routes: list[Route6] = []
        self._cache: dict[bytes, NextHop | None] = {}

    def add(self, prefix: str, iface: Interface, via: bytes | None = None) -> Route6:
        """Add (or replace) the route for ``prefix`` ("2001:db8::/32" or "default")."""
        net = ipaddress.IPv6Network("::/0" if prefix == "default" else prefix, strict=False)
        if len(self.routes) >= self.MAX_ROUTES:
            raise ValueError(f"at most {self.MAX_ROUTES} IPv6 routes")
        route = Route6(net.network_address.packed, net.prefixlen, via, iface)
        self.routes = [r for r in self.routes
                       if (r.prefix, r.prefixlen) != (route.prefix, route.prefixlen)]
        self.routes.append(route)
        self.routes.sort(key=lambda r: -r.prefixlen)
        self.changed()
        return route

    def changed(self) -> None:
        """Addresses, routes or router information changed: forget cached answers."""
        self._cache.clear()

    def lookup(self, dst: bytes) -> NextHop | None:
        """The interface and next hop towards unicast ``dst``, or None."""
        try:
            return self._cache[dst]
        except KeyError:
            pass
        found = self._resolve(dst)
        if len(self._cache) >= self.CACHE_MAX:
            self._cache.clear()
        self._cache[dst] = found
        return found

    def _resolve(self, dst: bytes) -> NextHop | None:
        table = self.addresses
        if wip6.is_link_local(dst):
            # fe80::/10 is on every link; without a zone the first interface with
            # a link-local address is taken (the stack has no scoped sockets).
            a = next((a for a in table.addresses.values()
                      if a.assigned and wip6.is_link_local(a.addr)), None)
            return NextHop(a.iface, dst) if a is not None else None
        best: tuple[int, NextHop] | None = None
        for a in table.addresses.values():
            if a.assigned and not wip6.is_link_local(a.addr) \
                    and wip6.prefix_match(a.addr, dst, a.prefixlen):
                if best is None or a.prefixlen > best[0]:
                    best = (a.prefixlen, NextHop(a.iface, dst))
        for index, link in table.links.items():
            iface = self._iface(index)
            for (p, plen) in link.prefixes:
                if iface is not None and wip6.prefix_match(p, dst, plen) \
                        and (best is None or plen > best[0]):
                    best = (plen, NextHop(iface, dst))
        for r in self.routes:   # longest first
            if best is not None and r.prefixlen <= best[0]:
                break
            if wip6.prefix_match(r.prefix, dst, r.prefixlen):
                best = (r.prefixlen, NextHop(r.iface, r.via or dst))
                break
        if best is not None:
            return best[1]
        for index, link in table.links.items():
            iface = self._iface(index)
            if iface is not None and link.routers:
                return NextHop(iface, next(iter(link.routers)))
        return None

    def _iface(self, index: int) -> Interface | None:
        return next((a.iface for a in self.addresses.addresses.values()
                     if a.iface.index == index), None)

    def source(self, iface: Interface, dst: bytes) -> Address6 | None:
        """RFC 6724 §5 for the addresses of the outgoing interface: the same scope
        as ``dst`` (rule 2), preferred before deprecated (rule 3), the longest
        common prefix (rule 8)."""
        want_ll = wip6.is_link_local(dst)
        best: tuple[tuple[bool, bool, int], Address6] | None = None
        d = int.from_bytes(dst, "big")
        for a in self.addresses.for_iface(iface):
            if not a.assigned:
                continue
            common = 128 - (int.from_bytes(a.addr, "big") ^ d).bit_length()
            rank = (wip6.is_link_local(a.addr) == want_ll, a.state is AddrState.PREFERRED,
                    common)
            if best is None or rank > best[0]:
                best = (rank, a)
        return best[1] if best is not None else None
