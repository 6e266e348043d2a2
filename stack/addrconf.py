"""The stack's own IPv6 addresses and what it learns from routers.

* Every address starts TENTATIVE and is not used until Duplicate Address Detection
  passes (RFC 4862 §5.4): ``dad_transmits`` Neighbor Solicitations from ``::`` to its
  solicited-node group, ``retrans_time`` apart, the first after a random delay of up
  to ``dad_delay`` (RFC 4862 §5.4.2, MAX_RTR_SOLICITATION_DELAY). A solicitation
  from ``::`` or an advertisement for it meanwhile makes it DUPLICATE: never used.
* Generated addresses (the link-local one of each interface and SLAAC's) have a
  stable, opaque interface identifier (RFC 7217): a keyed hash of the prefix, the
  interface name and a DAD counter, so an interface keeps its address across
  restarts on the same network and changes it on another. A duplicate is retried
  with the next counter, ``idgen_retries`` times (RFC 7217 §6).
* Router Advertisements (RFC 4861 §6.3.4) give the default routers, the on-link
  prefixes, the link's parameters and, on interfaces that ask (``--addr auto``),
  addresses by SLAAC (RFC 4862 §5.5.3), with their lifetimes.

Sans-I/O: every entry point takes ``now``; the caller sends the solicitations
:meth:`AddressTable.on_timer` names. Each table has a bound.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from enum import Enum

from stack.iface import Interface
from stack.wire import ipv6 as wip6
from stack.wire.ndp import INFINITY, PrefixInformation, RouterAdvertisement

#: RFC 4862 §5.5.3 (e): a Router Advertisement may not cut a valid lifetime below
#: two hours (unless it is shorter already), so a forged one cannot end an address.
TWO_HOURS = 7200.0
#: RFC 4861 §10: a host solicits routers up to 3 times, 4 seconds apart, until one
#: advertises.
MAX_RTR_SOLICITATIONS = 3
RTR_SOLICITATION_INTERVAL = 4.0
#: RFC 4861 §6.3.2 / §10: MTU options under the IPv6 minimum are ignored.
_MIN_MTU = wip6.IPV6_MIN_MTU
#: RFC 5453 §4: interface identifiers no address may use (subnet-router anycast,
#: the reserved subnet anycast range, the IANA Ethernet block range).
_RESERVED_IIDS = (range(0, 1), range(0x02005EFFFE000000, 0x02005EFFFE005213),
                  range(0xFDFFFFFFFFFFFF80, 1 << 64))


_IID_LABEL = b"tapsplice RFC 7217 IID\0"


class AddrState(Enum):
    """RFC 4862 §2 address states (DUPLICATE: DAD failed, never used)."""

    TENTATIVE = "tentative"
    PREFERRED = "preferred"
    DEPRECATED = "deprecated"
    DUPLICATE = "duplicate"


class AddrOrigin(Enum):
    """Where an address came from."""

    LINK_LOCAL = "link-local"
    STATIC = "static"
    SLAAC = "slaac"


@dataclass(eq=False, slots=True)
class Address6:
    """One of the stack's IPv6 addresses on one interface."""

    addr: bytes
    prefixlen: int
    iface: Interface
    origin: AddrOrigin
    state: AddrState = AddrState.TENTATIVE
    dad_left: int = 0                 # DAD solicitations still to send
    next_event: float = math.inf      # the next DAD solicitation, or the end of DAD
    dad_counter: int = 0              # RFC 7217's DAD_Counter
    preferred_until: float = math.inf
    valid_until: float = math.inf

    @property
    def assigned(self) -> bool:
        """Usable: DAD passed and the valid lifetime has not run out."""
        return self.state in (AddrState.PREFERRED, AddrState.DEPRECATED)


def stable_iid(secret: bytes, ifname: str, prefix: bytes, dad_counter: int = 0) -> bytes:
    """An RFC 7217 §5 interface identifier: F(Prefix, Net_Iface, DAD_Counter,
    secret_key), here SHA-256, its first 64 bits. ``secret`` may be the host's secret
    (stack/hostkey.py), so that a restarted stack keeps its addresses. Identifiers RFC 5453 reserves are
    skipped by counting on."""
    counter = dad_counter
    while True:
        # The label keeps these hashes apart from the other keyed hashes of the same
        # host secret (stack/hostkey.py: ISNs, timestamps, ports).
        h = hashlib.sha256(_IID_LABEL + prefix[:8] + ifname.encode()
                           + counter.to_bytes(4, "big") + secret).digest()[:8]
        value = int.from_bytes(h, "big")
        if not any(value in r for r in _RESERVED_IIDS):
            return h
        counter += 1


def _lifetime(now: float, seconds: int) -> float:
    return math.inf if seconds == INFINITY else now + seconds


@dataclass(slots=True)
class LinkParams:
    """What Router Advertisements on one interface said (RFC 4861 §6.3.2, §6.3.4)."""

    cur_hop_limit: int = 64
    base_reachable_time: float = 30.0
    retrans_time: float = 1.0
    mtu: int | None = None
    #: Default routers (link-local address -> when the lifetime ends).
    routers: dict[bytes, float] = field(default_factory=dict)
    #: On-link prefixes ((prefix, length) -> when the lifetime ends).
    prefixes: dict[tuple[bytes, int], float] = field(default_factory=dict)
    #: Router Solicitations still to send, and when the next is due (RFC 4861 §6.3.7).
    solicitations_left: int = 0
    next_solicitation: float = math.inf


class AddressTable:
    """The stack's own IPv6 addresses on every interface, and the link parameters."""

    def __init__(self, secret: bytes, rng: random.Random, *, dad_transmits: int = 1,
                 retrans_time: float = 1.0, dad_delay: float = 1.0,
                 max_per_iface: int = 8, idgen_retries: int = 3, max_routers: int = 4,
                 max_prefixes: int = 8) -> None:
        self.secret = secret
        self.rng = rng
        self.dad_transmits = dad_transmits
        self.retrans_time = retrans_time
        self.dad_delay = dad_delay
        self.max_per_iface = max_per_iface
        self.idgen_retries = idgen_retries
        self.max_routers = max_routers
        self.max_prefixes = max_prefixes
        self.addresses: dict[bytes, Address6] = {}
        #: Interfaces that take addresses by SLAAC (``--addr auto``), by index.
        self.autoconf: set[int] = set()
        self.links: dict[int, LinkParams] = {}

    # -- addresses ---------------------------------------------------------------
    def add(self, iface: Interface, addr: bytes, prefixlen: int, now: float,
            origin: AddrOrigin = AddrOrigin.STATIC, dad_counter: int = 0) -> Address6:
        """Add ``addr`` as TENTATIVE and schedule its DAD; ValueError when it is the
        stack's already or the interface holds ``max_per_iface`` addresses."""
        if addr in self.addresses:
            raise ValueError(f"{wip6.ip6_str(addr)} is already an address of the stack")
        if len(self.for_iface(iface)) >= self.max_per_iface:
            raise ValueError(f"{iface.name} has {self.max_per_iface} IPv6 addresses")
        if not 0 <= prefixlen <= 128 or wip6.is_multicast(addr) or wip6.is_unspecified(addr):
            raise ValueError(f"{wip6.ip6_str(addr)}/{prefixlen} is not a unicast address")
        a = Address6(addr, prefixlen, iface, origin, dad_counter=dad_counter)
        self._start_dad(a, now)
        self.addresses[addr] = a
        return a

    def _start_dad(self, a: Address6, now: float) -> None:
        a.state = AddrState.TENTATIVE
        a.dad_left = self.dad_transmits
        a.next_event = now + self.rng.uniform(0.0, self.dad_delay)

    def add_link_local(self, iface: Interface, now: float) -> Address6:
        """The interface's stable link-local address (RFC 4862 §5.3, RFC 7217)."""
        return self._add_generated(iface, wip6.link_local(bytes(8))[:8], 64, now,
                                   AddrOrigin.LINK_LOCAL, 0)

    def _add_generated(self, iface: Interface, prefix: bytes, prefixlen: int, now: float,
                       origin: AddrOrigin, counter: int) -> Address6:
        addr = prefix[:8] + stable_iid(self.secret, iface.name, prefix, counter)
        return self.add(iface, addr, prefixlen, now, origin, counter)

    def lookup(self, addr: bytes) -> Address6 | None:
        """The entry for ``addr`` in any state."""
        return self.addresses.get(addr)

    def assigned(self, addr: bytes) -> Address6 | None:
        """The entry for ``addr`` if the stack may use it (DAD passed)."""
        a = self.addresses.get(addr)
        return a if a is not None and a.assigned else None

    def for_iface(self, iface: Interface) -> list[Address6]:
        """The interface's addresses, in any state."""
        return [a for a in self.addresses.values() if a.iface is iface]

    def link_local_of(self, iface: Interface) -> Address6 | None:
        """The interface's assigned link-local address, if any."""
        return next((a for a in self.addresses.values() if a.iface is iface and a.assigned
                     and wip6.is_link_local(a.addr)), None)

    def remove(self, a: Address6) -> None:
        """Forget ``a``."""
        if self.addresses.get(a.addr) is a:
            del self.addresses[a.addr]

    def duplicate(self, a: Address6, now: float) -> Address6 | None:
        """DAD failed for ``a`` (RFC 4862 §5.4.5): it is never used. A generated one
        is replaced by the next RFC 7217 candidate while retries remain; returns it."""
        a.state, a.next_event, a.dad_left = AddrState.DUPLICATE, math.inf, 0
        if a.origin is AddrOrigin.STATIC or a.dad_counter >= self.idgen_retries:
            return None
        self.remove(a)
        try:
            return self._add_generated(a.iface, a.addr[:8], a.prefixlen, now, a.origin,
                                       a.dad_counter + 1)
        except ValueError:
            return None

    # -- timers ------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """When :meth:`on_timer` must run next."""
        times = [min(a.next_event, a.preferred_until if a.state is AddrState.PREFERRED
                     else math.inf, a.valid_until) for a in self.addresses.values()]
        for link in self.links.values():
            times.extend(link.routers.values())
            times.extend(link.prefixes.values())
            times.append(link.next_solicitation)
        best = min(times, default=math.inf)
        return None if best == math.inf else best

    def on_timer(self, now: float) -> tuple[list[Address6], list[Address6]]:
        """Run DAD and lifetimes. Returns (addresses whose DAD solicitation is due now,
        addresses that just passed DAD)."""
        probe: list[Address6] = []
        passed: list[Address6] = []
        for a in list(self.addresses.values()):
            if a.valid_until <= now:
                self.remove(a)      # RFC 4862 §5.5.4: invalid addresses go
                continue
            if a.state is AddrState.PREFERRED and a.preferred_until <= now:
                a.state = AddrState.DEPRECATED
            if a.state is not AddrState.TENTATIVE or a.next_event > now:
                continue
            if a.dad_left > 0:
                a.dad_left -= 1
                a.next_event = now + self.retrans_time
                probe.append(a)
            else:
                a.state, a.next_event = AddrState.PREFERRED, math.inf
                if a.preferred_until <= now:
                    a.state = AddrState.DEPRECATED
                passed.append(a)
        for link in self.links.values():
            link.routers = {k: t for k, t in link.routers.items() if t > now}
            link.prefixes = {k: t for k, t in link.prefixes.items() if t > now}
        return probe, passed

    # -- router advertisements -----------------------------------------------------
    def start_solicitations(self, iface: Interface, now: float) -> None:
        """The first Router Solicitation of ``iface`` goes now; schedule the others."""
        link = self.link(iface)
        link.solicitations_left = MAX_RTR_SOLICITATIONS - 1
        link.next_solicitation = now + RTR_SOLICITATION_INTERVAL

    def solicitations_due(self, now: float) -> list[int]:
        """Indexes of the interfaces whose next Router Solicitation is due now."""
        due = []
        for index, link in self.links.items():
            if link.next_solicitation <= now:
                link.solicitations_left -= 1
                link.next_solicitation = (now + RTR_SOLICITATION_INTERVAL
                                          if link.solicitations_left > 0 else math.inf)
                due.append(index)
        return due

    def link(self, iface: Interface) -> LinkParams:
        """The link parameters of ``iface`` (defaults until a router speaks)."""
        params = self.links.get(iface.index)
        if params is None:
            params = self.links[iface.index] = LinkParams(retrans_time=self.retrans_time)
        return params

    def router_advertisement(self, iface: Interface, src: bytes, ra: RouterAdvertisement,
                             now: float) -> list[Address6]:
        """Take a validated RA from router ``src`` (RFC 4861 §6.3.4); returns the
        addresses SLAAC started."""
        link = self.link(iface)
        # A router spoke: no more solicitations (RFC 4861 §6.3.7).
        link.solicitations_left, link.next_solicitation = 0, math.inf
        if ra.cur_hop_limit:
            link.cur_hop_limit = ra.cur_hop_limit
        if ra.reachable_time:
            link.base_reachable_time = ra.reachable_time / 1000
        if ra.retrans_timer:
            link.retrans_time = ra.retrans_timer / 1000
        mtu = ra.options.mtu
        if mtu is not None and _MIN_MTU <= mtu <= iface.mtu:
            link.mtu = mtu
        _bounded_set(link.routers, src, now + ra.router_lifetime, ra.router_lifetime > 0,
                     self.max_routers)
        added: list[Address6] = []
        for pi in ra.options.prefixes:
            if pi.on_link and not wip6.is_link_local(pi.prefix):
                key = (_masked(pi.prefix, pi.prefix_length), pi.prefix_length)
                _bounded_set(link.prefixes, key, _lifetime(now, pi.valid_lifetime),
                             pi.valid_lifetime > 0, self.max_prefixes)
            if iface.index in self.autoconf:
                a = self._slaac(iface, pi, now)
                if a is not None:
                    added.append(a)
        return added

    def _slaac(self, iface: Interface, pi: PrefixInformation, now: float) -> Address6 | None:
        """RFC 4862 §5.5.3 for one Prefix Information option."""
        # An interface identifier on Ethernet is 64 bits (RFC 4862 §5.5.3 (d)): a
        # prefix of another length neither forms nor refreshes an address.
        if (not pi.autonomous or wip6.is_link_local(pi.prefix) or pi.prefix_length != 64
                or pi.preferred_lifetime > pi.valid_lifetime):
            return None
        prefix = _masked(pi.prefix, 64)
        mine = next((a for a in self.for_iface(iface) if a.origin is AddrOrigin.SLAAC
                     and a.addr[:8] == prefix[:8]), None)
        if mine is not None:
            _update_lifetimes(mine, pi, now)
            return None
        if pi.valid_lifetime == 0:
            return None
        try:
            a = self._add_generated(iface, prefix, 64, now, AddrOrigin.SLAAC, 0)
        except ValueError:
            return None
        a.preferred_until = _lifetime(now, pi.preferred_lifetime)
        a.valid_until = _lifetime(now, pi.valid_lifetime)
        return a


def _update_lifetimes(a: Address6, pi: PrefixInformation, now: float) -> None:
    """RFC 4862 §5.5.3 (e): the preferred lifetime is taken as it is; the valid one
    only if longer than two hours or than what remains, else cut to two hours."""
    a.preferred_until = _lifetime(now, pi.preferred_lifetime)
    if a.state is AddrState.DEPRECATED and a.preferred_until > now:
        a.state = AddrState.PREFERRED
    new = _lifetime(now, pi.valid_lifetime)
    remaining = a.valid_until - now
    if pi.valid_lifetime > TWO_HOURS or new > a.valid_until:
        a.valid_until = new
    elif remaining > TWO_HOURS:
        a.valid_until = now + TWO_HOURS


def _masked(prefix: bytes, length: int) -> bytes:
    n = int.from_bytes(prefix, "big")
    mask = ((1 << length) - 1) << (128 - length) if length else 0
    return (n & mask).to_bytes(16, "big")


def _bounded_set(table: dict, key: object, until: float, keep: bool, bound: int) -> None:
    """Set, refresh or (lifetime 0) remove an entry of a bounded table; a new entry
    beyond the bound is not taken (the first routers and prefixes heard stay)."""
    if not keep:
        table.pop(key, None)
    elif key in table or len(table) < bound:
        table[key] = until
