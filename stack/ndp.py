"""Neighbor Discovery for IPv6 (RFC 4861) without I/O: the neighbour cache and the
answers to solicitations and advertisements.

The cache (:class:`NeighborCache`) extends ARP's (stack/neigh.py: the same entries,
bounds and pending-frame queues) with the states of RFC 4861 §7.3.2: INCOMPLETE
(multicast solicitations, frames queued), REACHABLE (confirmed within
ReachableTime), STALE (used, unconfirmed), DELAY (used while STALE: wait
DELAY_FIRST_PROBE_TIME for an upper-layer hint), PROBE (unicast solicitations).

:class:`NeighborDiscovery` takes validated messages (stack/wire/ndp.py did the
RFC 4861 §6.1/§7.1 checks) and returns :class:`NdpEffects`: messages to send,
entries whose queued frames may now go, own addresses found duplicate. An
advertisement never creates an entry (RFC 4861 §7.2.5); only a solicitation or a
router's message with a link-layer address does (§7.2.3, §6.3.4), as STALE.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from stack.addrconf import Address6, AddressTable, AddrOrigin, AddrState
from stack.iface import Interface
from stack.neigh import Neighbour, NeighbourCache, NeighState
from stack.wire import ipv6 as wip6
from stack.wire.icmp6 import Icmp6Message
from stack.wire.ndp import (
    NdpOptions,
    NeighborAdvertisement,
    NeighborSolicitation,
    RouterAdvertisement,
    RouterSolicitation,
)

#: RFC 4861 §10 protocol constants.
MAX_MULTICAST_SOLICIT = 3
MAX_UNICAST_SOLICIT = 3
DELAY_FIRST_PROBE_TIME = 5.0
MIN_RANDOM_FACTOR = 0.5
MAX_RANDOM_FACTOR = 1.5


class NeighborCache(NeighbourCache):
    """The IPv6 neighbour cache: RFC 4861 §7.3 on top of the bounded ARP cache."""

    def __init__(self, rng: random.Random, *, max_entries: int = 1024,
                 base_reachable_time: float = 30.0, stale_time: float = 600.0,
                 retrans_time: float = 1.0, max_pending: int = 16) -> None:
        super().__init__(max_entries=max_entries, stale_time=stale_time,
                         retrans_time=retrans_time, max_probes=MAX_MULTICAST_SOLICIT,
                         max_pending=max_pending)
        self.rng = rng
        self.set_base_reachable_time(base_reachable_time)

    def set_base_reachable_time(self, base: float) -> None:
        """RFC 4861 §6.3.2: ReachableTime is BaseReachableTime times a random factor
        in [0.5, 1.5), drawn again whenever the base changes."""
        self.base_reachable_time = base
        self.reachable_time = base * self.rng.uniform(MIN_RANDOM_FACTOR, MAX_RANDOM_FACTOR)

    def _reachable(self, n: Neighbour, now: float) -> None:
        n.state, n.expires, n.probes = NeighState.REACHABLE, now + self.reachable_time, 0

    def _stale(self, n: Neighbour, now: float) -> None:
        n.state, n.expires, n.probes = NeighState.STALE, now + self.stale_time, 0

    def record(self, iface: Interface, ip: bytes, lladdr: bytes, now: float, *,
               is_router: bool | None = None) -> Neighbour | None:
        """A solicitation or a router's message from ``ip`` carried ``lladdr``
        (RFC 4861 §7.2.3, §6.3.4): create the entry STALE, or make it STALE if the
        address changed; an unchanged one keeps its state. None if the table is full.
        An INCOMPLETE entry given its address has frames to send: the caller sends
        them."""
        n = self.get(iface, ip)
        if n is None:
            if not self._make_room(now):
                return None
            n = Neighbour(ip, iface)
            self.entries[(iface.index, ip)] = n
            n.mac = lladdr
            self._stale(n, now)
        elif n.mac != lladdr:
            n.mac = lladdr
            self._stale(n, now)
        if is_router is not None:
            n.is_router = is_router
        return n

    def advertisement(self, iface: Interface, na: NeighborAdvertisement,
                      now: float) -> Neighbour | None:
        """RFC 4861 §7.2.5: update the entry for ``na.target``; there must be one
        (an unsolicited advertisement creates nothing). Returns the entry if it just
        learned its address (INCOMPLETE before: its frames may go)."""
        n = self.get(iface, na.target)
        if n is None:
            return None
        lladdr = na.options.target_lladdr
        if n.state is NeighState.INCOMPLETE:
            if lladdr is None:
                return None
            n.mac = lladdr
            (self._reachable if na.solicited else self._stale)(n, now)
            n.is_router = na.router
            return n
        changed = lladdr is not None and lladdr != n.mac
        if not na.override and changed:
            # A different address without Override: keep ours, but doubt it.
            if n.state is NeighState.REACHABLE:
                self._stale(n, now)
            return None
        if changed:
            n.mac = lladdr
        if na.solicited:
            self._reachable(n, now)
        elif changed:
            self._stale(n, now)
        n.is_router = na.router
        return None

    def confirm(self, iface: Interface, ip: bytes, now: float) -> None:
        """An upper layer saw forward progress with ``ip`` (RFC 4861 §7.3.1): REACHABLE."""
        n = self.get(iface, ip)
        if n is not None and n.mac is not None:
            self._reachable(n, now)

    def used(self, n: Neighbour, now: float) -> None:
        """A packet goes out through ``n`` (RFC 4861 §7.3.3): STALE becomes DELAY."""
        if n.state is NeighState.STALE:
            n.state, n.expires = NeighState.DELAY, now + DELAY_FIRST_PROBE_TIME

    def needs_refresh(self, n: Neighbour, now: float) -> bool:
        """Never: IPv6 revalidates through DELAY and PROBE (:meth:`used`)."""
        return False

    def next_deadline(self) -> float | None:
        """Earliest time an entry needs attention."""
        times = [n.next_probe if n.state in (NeighState.INCOMPLETE, NeighState.PROBE)
                 else n.expires for n in self.entries.values()]
        return min(times, default=None)

    def expire(self, now: float) -> tuple[list[Neighbour], list[Neighbour]]:
        """Advance timers. Returns (entries to solicit now: multicast if INCOMPLETE,
        unicast if PROBE; entries that failed, removed with their frames)."""
        probe: list[Neighbour] = []
        failed: list[Neighbour] = []
        for key, n in list(self.entries.items()):
            if n.state in (NeighState.INCOMPLETE, NeighState.PROBE):
                if n.next_probe > now:
                    continue
                limit = (self.max_probes if n.state is NeighState.INCOMPLETE
                         else MAX_UNICAST_SOLICIT)
                if n.probes >= limit:
                    del self.entries[key]
                    failed.append(n)
                    continue
                n.probes += 1
                n.next_probe = now + self.retrans_time
                probe.append(n)
            elif n.expires <= now:
                if n.state is NeighState.REACHABLE:
                    self._stale(n, now)
                elif n.state is NeighState.DELAY:
                    n.state, n.probes, n.next_probe = NeighState.PROBE, 1, now + self.retrans_time
                    probe.append(n)
                else:
                    del self.entries[key]
        return probe, failed


@dataclass(slots=True)
class NdpTransmit:
    """An NDP message to send: from ``src`` to ``dst`` out of ``iface``, to Ethernet
    address ``mac`` (None: resolve ``dst`` first). Hop limit 255 (RFC 4861 §6.1)."""

    iface: Interface
    src: bytes
    dst: bytes
    mac: bytes | None
    message: Icmp6Message


@dataclass(slots=True)
class NdpEffects:
    """What one call asks of the caller."""

    send: list[NdpTransmit] = field(default_factory=list)
    #: Entries that learned their link-layer address: send their pending frames.
    resolved: list[Neighbour] = field(default_factory=list)
    #: Entries that gave up: drop their frames (address unreachable, RFC 4861 §7.2.2).
    failed: list[Neighbour] = field(default_factory=list)
    #: Own addresses found duplicate (RFC 4862 §5.4.5): log them.
    duplicates: list[Address6] = field(default_factory=list)


class NeighborDiscovery:
    """NS/NA, DAD and RA reception for every interface of one stack."""

    def __init__(self, cache: NeighborCache, addresses: AddressTable, *,
                 router: bool = False) -> None:
        self.cache = cache
        self.addresses = addresses
        self.router = router
        #: Another process speaks for these addresses on the link (worker 0 of a
        #: stack's workers, stack/workers.py): no DAD probes and no router
        #: solicitations from here; DAD's timers still run, and a teed NS or NA for a
        #: tentative address still marks it duplicate, as in that process.
        self.dad_elsewhere = False

    # -- input -------------------------------------------------------------------
    def solicitation(self, iface: Interface, src: bytes, dst: bytes,
                     ns: NeighborSolicitation, now: float) -> NdpEffects:
        """RFC 4861 §7.2.3 and RFC 4862 §5.4.3: answer for an own address, learn
        the sender, notice another node's DAD on a tentative address."""
        fx = NdpEffects()
        own = self.addresses.lookup(ns.target)
        if own is None or own.iface is not iface or own.state is AddrState.DUPLICATE:
            return fx
        if own.state is AddrState.TENTATIVE:
            # From ::, another node runs DAD on our address; otherwise someone
            # resolves an address that is not ours yet: say nothing (RFC 4862 §5.4.3).
            if wip6.is_unspecified(src):
                self._duplicate(own, now, fx)
            return fx
        lladdr = ns.options.source_lladdr
        if wip6.is_unspecified(src):
            # RFC 4861 §7.2.4: an answer to a DAD probe goes to all nodes, unsolicited.
            self._advertise(fx, iface, own.addr, wip6.ALL_NODES, False)
            return fx
        if lladdr is not None:
            n = self.cache.record(iface, src, lladdr, now)
            if n is not None and n.pending:
                fx.resolved.append(n)
        elif wip6.is_multicast(dst):
            return fx   # §7.2.4: nowhere to answer a multicast one without the address
        self._advertise(fx, iface, own.addr, src, True, lladdr)
        return fx

    def _advertise(self, fx: NdpEffects, iface: Interface, target: bytes, dst: bytes,
                   solicited: bool, mac: bytes | None = None) -> None:
        na = NeighborAdvertisement(target, self.router, solicited, True,
                                   NdpOptions(target_lladdr=iface.mac))
        if wip6.is_multicast(dst):
            mac = wip6.multicast_mac(dst)
        fx.send.append(NdpTransmit(iface, target, dst, mac, na.to_message()))

    def advertisement(self, iface: Interface, na: NeighborAdvertisement,
                      now: float) -> NdpEffects:
        """RFC 4861 §7.2.5, RFC 4862 §5.4.4."""
        fx = NdpEffects()
        own = self.addresses.lookup(na.target)
        if own is not None:
            if own.iface is iface and own.state is AddrState.TENTATIVE:
                self._duplicate(own, now, fx)
            return fx   # an assigned address of ours: never learnt as a neighbour
        entry = self.cache.get(iface, na.target)
        was_router = entry is not None and entry.is_router
        n = self.cache.advertisement(iface, na, now)
        if was_router and entry is not None and not entry.is_router:
            # RFC 4861 §7.2.5: a router that says it no longer is one leaves the
            # Default Router List.
            self.addresses.link(iface).routers.pop(na.target, None)
        if n is not None and n.pending:
            fx.resolved.append(n)
        return fx

    def router_advertisement(self, iface: Interface, src: bytes, ra: RouterAdvertisement,
                             now: float) -> NdpEffects:
        """RFC 4861 §6.3.4: the link's parameters, the router's address, SLAAC."""
        fx = NdpEffects()
        if self.router:
            return fx   # RFC 4861 §6.2.7: routers only check others' RAs; not done
        link = self.addresses.link(iface)
        old_base = link.base_reachable_time
        self.addresses.router_advertisement(iface, src, ra, now)
        if link.base_reachable_time != old_base:
            self.cache.set_base_reachable_time(link.base_reachable_time)
        self.cache.retrans_time = link.retrans_time
        if ra.options.source_lladdr is not None:
            n = self.cache.record(iface, src, ra.options.source_lladdr, now, is_router=True)
            if n is not None and n.pending:
                fx.resolved.append(n)
        return fx

    def _duplicate(self, own: Address6, now: float, fx: NdpEffects) -> None:
        fx.duplicates.append(own)
        self.addresses.duplicate(own, now)

    # -- output ------------------------------------------------------------------
    def solicit(self, n: Neighbour, now: float) -> NdpTransmit | None:
        """The solicitation for entry ``n``: to the target's solicited-node group
        while INCOMPLETE (§7.2.2), to its cached address when probing (§7.3.3). The
        source is an assigned address of the interface (the link-local one first)."""
        src = self._source_for(n.iface, n.ip)
        if src is None:
            return None
        ns = NeighborSolicitation(n.ip, NdpOptions(source_lladdr=n.iface.mac))
        if n.state is NeighState.PROBE and n.mac is not None:
            return NdpTransmit(n.iface, src, n.ip, n.mac, ns.to_message())
        group = wip6.solicited_node(n.ip)
        return NdpTransmit(n.iface, src, group, wip6.multicast_mac(group), ns.to_message())

    def _source_for(self, iface: Interface, dst: bytes) -> bytes | None:
        """An assigned address of ``iface``: one on ``dst``'s prefix, else the
        link-local one (RFC 4861 §7.2.2 asks for the source of the queued packet;
        this is close enough for a host with one address per prefix)."""
        best = None
        for a in self.addresses.for_iface(iface):
            if not a.assigned:
                continue
            if wip6.prefix_match(a.addr, dst, a.prefixlen):
                return a.addr
            if best is None or wip6.is_link_local(a.addr):
                best = a.addr
        return best

    def dad_probe(self, a: Address6) -> NdpTransmit:
        """RFC 4862 §5.4.2: from ::, to the solicited-node group, no link-layer
        address option."""
        group = wip6.solicited_node(a.addr)
        return NdpTransmit(a.iface, wip6.UNSPECIFIED, group, wip6.multicast_mac(group),
                           NeighborSolicitation(a.addr).to_message())

    def router_solicitation(self, iface: Interface) -> NdpTransmit:
        """RFC 4861 §6.3.7: to all routers; from the link-local address with the
        link-layer address if it is assigned, else from :: without it."""
        ll = self.addresses.link_local_of(iface)
        opts = NdpOptions(source_lladdr=iface.mac) if ll is not None else NdpOptions()
        return NdpTransmit(iface, ll.addr if ll is not None else wip6.UNSPECIFIED,
                           wip6.ALL_ROUTERS, wip6.multicast_mac(wip6.ALL_ROUTERS),
                           RouterSolicitation(opts).to_message())

    # -- timers ------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """When :meth:`on_timer` must run next."""
        times = [t for t in (self.cache.next_deadline(), self.addresses.next_deadline())
                 if t is not None]
        return min(times, default=None)

    def on_timer(self, now: float) -> NdpEffects:
        """Run the cache's and the addresses' timers."""
        fx = NdpEffects()
        probe, fx.failed = self.cache.expire(now)
        for n in probe:
            t = self.solicit(n, now)
            if t is not None:
                fx.send.append(t)
        dad, passed = self.addresses.on_timer(now)
        if self.dad_elsewhere:
            return fx   # worker 0 probes and solicits the routers
        fx.send.extend(self.dad_probe(a) for a in dad)
        for a in passed:
            # An interface that configures itself asks the routers as soon as it
            # has a link-local address (RFC 4861 §6.3.7), then twice more.
            if a.origin is AddrOrigin.LINK_LOCAL and a.iface.index in self.addresses.autoconf:
                fx.send.append(self.router_solicitation(a.iface))
                self.addresses.start_solicitations(a.iface, now)
        for index in self.addresses.solicitations_due(now):
            iface = self._iface(index)
            if iface is not None:
                fx.send.append(self.router_solicitation(iface))
        return fx

    def _iface(self, index: int) -> Interface | None:
        """The interface with ``index`` (one of its addresses knows it)."""
        return next((a.iface for a in self.addresses.addresses.values()
                     if a.iface.index == index), None)
