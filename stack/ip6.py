"""IPv6 for the stack's own addresses: input, ICMPv6, Neighbor Discovery, DAD.

The :class:`~stack.core.Stack` hands every IPv6 frame to its :class:`Ipv6Layer`
(``stack.ip6``). An interface speaks IPv6 once :meth:`Ipv6Layer.enable` gave it its
stable link-local address (RFC 4862 §5.3, RFC 7217); :meth:`Ipv6Layer.add_address`
adds more (dual stack: the IPv4 address stays). Every address is tentative until
DAD passes (RFC 4862 §5.4). Frames on an interface without IPv6 are dropped as
``eth_ipv6_unsupported``, as before.

Input: the fixed header and the extension-header chain are checked by the wire
layer (stack/wire/ipv6*.py); its refusals are counted drops, and those RFC 8200
answers are answered with a Parameter Problem. Packets to an assigned address, to
all-nodes or to the solicited-node group of an own address are taken; fragments are
reassembled (stack/frag6.py). ICMPv6 echo requests are answered, NDP messages go to
stack/ndp.py, and ICMPv6 errors are rate-limited by the same kind of token bucket as
ICMP's (RFC 4443 §2.4 (f)). Nothing is forwarded, and no transport runs over IPv6
yet: UDP datagrams get a port unreachable, other upper layers (TCP included) a
Parameter Problem code 1.

Sans-I/O like the core: ``now`` on every entry point, frames go to the core's outbox.
"""

from __future__ import annotations

import ipaddress
import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stack import icmp as sicmp
from stack.addrconf import Address6, AddressTable, AddrOrigin, AddrState
from stack.frag6 import FragmentError, Reassembler6, fragment
from stack.iface import Interface
from stack.ndp import NdpEffects, NdpTransmit, NeighborCache, NeighborDiscovery
from stack.neigh import PendingFrame
from stack.skbuff import SkBuff
from stack.wire import WireError, ipv6ext
from stack.wire import checksum as cks
from stack.wire import icmp6 as wicmp6
from stack.wire import ipv6 as wip6
from stack.wire import ndp as wndp
from stack.wire import udp as wudp
from stack.wire.ethernet import ETH_HLEN, ETH_P_IPV6
from stack.wire.fields import ETH_TYPE
from stack.wire.vnet import (
    VIRTIO_NET_HDR_F_DATA_VALID,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    save_vnet,
)

if TYPE_CHECKING:
    from stack.core import Stack

log = logging.getLogger("tapsplice.ipv6")

_ETH_IPV6 = ETH_P_IPV6.to_bytes(2, "big")
_HEADROOM = 128
_NDP_TYPES = frozenset({wicmp6.NEIGHBOR_SOLICITATION, wicmp6.NEIGHBOR_ADVERTISEMENT})


@dataclass(frozen=True, slots=True)
class _Arrival:
    """What the link said about a received packet."""

    eth_src: bytes
    #: Sent to an Ethernet group address (RFC 4443 §2.4 (e.3): no errors about it).
    link_mcast: bool
    #: The checksums were checked by the kernel (virtio_net_hdr flags).
    trusted: bool


class Ipv6Layer:
    """The IPv6 side of one :class:`~stack.core.Stack`."""

    def __init__(self, stack: Stack, rng: random.Random, *, secret: bytes | None = None,
                 icmp_rate: float = 100.0, icmp_burst: float = 50.0) -> None:
        self.stack = stack
        self.rng = rng
        self.addresses = AddressTable(secret if secret is not None else rng.randbytes(32),
                                      rng)
        self.cache = NeighborCache(rng)
        self.nd = NeighborDiscovery(self.cache, self.addresses, router=stack.forwarding)
        self.reasm = Reassembler6()
        self.icmp_bucket = sicmp.TokenBucket(icmp_rate, icmp_burst)
        self.counters = stack.counters

    # -- configuration -------------------------------------------------------------
    def enable(self, iface: Interface, now: float, *, auto: bool = False) -> Address6 | None:
        """Turn IPv6 on for ``iface``: its link-local address starts DAD. With
        ``auto`` the interface takes global addresses by SLAAC (``--addr auto``).
        Returns the new link-local address (None if IPv6 was on already); ValueError
        on a link whose MTU is under IPv6's 1280 bytes (RFC 8200 §5)."""
        if iface.mtu < wip6.IPV6_MIN_MTU:
            raise ValueError(f"{iface.name}: MTU {iface.mtu} is too small for IPv6")
        if auto:
            self.addresses.autoconf.add(iface.index)
        if iface.ipv6:
            return None
        iface.ipv6 = True
        return self.addresses.add_link_local(iface, now)

    def add_address(self, iface: Interface, addr: str, now: float) -> Address6:
        """Add ``addr`` ("2001:db8::2/64") to ``iface`` (enabling IPv6 on it); the
        address is tentative until DAD passes."""
        net = ipaddress.IPv6Interface(addr)
        self.enable(iface, now)
        return self.addresses.add(iface, net.ip.packed, net.network.prefixlen, now,
                                  AddrOrigin.STATIC)

    # -- timers --------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """The earliest time :meth:`on_timer` must run, or None."""
        if not (self.addresses.addresses or self.cache.entries or len(self.reasm)):
            return None     # IPv6 unused: the core asks at every event, keep it cheap
        times = [t for t in (self.nd.next_deadline(), self.reasm.next_deadline())
                 if t is not None]
        return min(times, default=None)

    def on_timer(self, now: float) -> None:
        """Neighbour solicitations and failures, DAD, lifetimes, reassembly timeouts."""
        deadline = self.next_deadline()
        if deadline is None or deadline > now:
            return
        self._apply(self.nd.on_timer(now), now)
        for first in self.reasm.expire(now):
            a = self.addresses.assigned(first[24:40]) or self._any_address_for(first[8:24])
            if a is not None:
                self._icmp_error(a.iface, first, wicmp6.TIME_EXCEEDED, wicmp6.EXC_FRAGTIME,
                                 0, now)

    def _apply(self, fx: NdpEffects, now: float) -> None:
        for t in fx.send:
            self._send_ndp(t, now)
        for n in fx.resolved:
            self.stack._flush_pending(n)
        for n in fx.failed:
            for _ in n.pending:
                self.stack._drop("ndp_unresolved", count_rx=False)
            n.pending.clear()
        for a in fx.duplicates:
            # RFC 4862 §5.4.5: a duplicate is logged and never used.
            self.counters["ipv6_dad_duplicate"] += 1
            log.warning("%s: IPv6 address %s is in use by another node; not using it",
                        a.iface.name, wip6.ip6_str(a.addr))

    # -- input ---------------------------------------------------------------------
    def input(self, iface: Interface, skb: SkBuff, now: float) -> None:
        """One received frame with EtherType IPv6 (data at the Ethernet header)."""
        if not iface.ipv6:
            return self.stack._drop("eth_ipv6_unsupported")
        frame = skb.view()
        try:
            hdr = wip6.Ipv6Header.parse(frame[ETH_HLEN:])
        except WireError as e:
            return self.stack._drop(e.reason)
        packet = bytes(frame[ETH_HLEN:ETH_HLEN + wip6.IPV6_HLEN + hdr.payload_length])
        if wip6.is_multicast(hdr.src) or self.addresses.assigned(hdr.src) is not None:
            return self.stack._drop("ipv6_martian_source")
        if not self._accepts(iface, hdr.dst):
            return self.stack._drop("ipv6_not_for_us")
        rx = _Arrival(bytes(frame[6:12]), bool(frame[0] & 1), bool(
            skb.vnet_flags & (VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID)))
        chain = self._walk(iface, packet, rx, now)
        if chain is None:
            return None
        if chain.fragment is not None and not chain.fragment.atomic:
            whole = self._reassemble(iface, packet, chain, rx, now)
            if whole is None:
                return None
            packet = whole
            chain = self._walk(iface, packet, rx, now)
            if chain is None:
                return None
            if chain.fragment is not None and not chain.fragment.atomic:
                return self.stack._drop("frag6_nested")   # fragments of fragments
        self.counters["rx_local"] += 1
        return self._deliver(iface, hdr, packet, chain, rx, now)

    def _accepts(self, iface: Interface, dst: bytes) -> bool:
        """An own address (any state but duplicate: a tentative one hears only NDP),
        all-nodes, or the solicited-node group of an address of ``iface``."""
        if dst == wip6.ALL_NODES:
            return True
        if wip6.is_solicited_node(dst):
            return any(wip6.solicited_node(a.addr) == dst and a.state is not AddrState.DUPLICATE
                       for a in self.addresses.for_iface(iface))
        a = self.addresses.lookup(dst)
        return a is not None and a.state is not AddrState.DUPLICATE

    def _walk(self, iface: Interface, packet: bytes, rx: _Arrival,
              now: float) -> ipv6ext.HeaderChain | None:
        try:
            return ipv6ext.walk(packet)
        except ipv6ext.ParameterProblem as e:
            if e.answer:
                self._icmp_error(iface, packet, wicmp6.PARAM_PROBLEM, e.code, e.pointer, now,
                                 link_mcast=rx.link_mcast,
                                 exception=e.code == ipv6ext.PP_UNRECOGNIZED_OPTION)
            self.stack._drop(e.reason)
        except WireError as e:
            self.stack._drop(e.reason)
        return None

    def _reassemble(self, iface: Interface, packet: bytes, chain: ipv6ext.HeaderChain,
                    rx: _Arrival, now: float) -> bytes | None:
        if wip6.is_multicast(packet[24:40]):
            self.stack._drop("frag6_multicast")     # only unicast traffic is reassembled
            return None
        whole, why = self.reasm.add(packet, chain, now)
        if isinstance(why, FragmentError):
            self._icmp_error(iface, packet, wicmp6.PARAM_PROBLEM, why.code, why.pointer, now,
                             link_mcast=rx.link_mcast)
            why = why.reason
        if why is not None:
            self.stack._drop(why)
        elif whole is None:
            self.counters["rx_local"] += 1        # held until its packet is whole
        return whole

    def _deliver(self, iface: Interface, hdr: wip6.Ipv6Header, packet: bytes,
                 chain: ipv6ext.HeaderChain, rx: _Arrival, now: float) -> None:
        if chain.upper_layer == wip6.IPPROTO_ICMPV6:
            return self._icmp6_input(iface, hdr, packet, chain.offset, rx, now)
        if chain.upper_layer == wip6.IPPROTO_NONE:
            self.counters["ipv6_no_next_header"] += 1
            return None
        a = self.addresses.lookup(hdr.dst)
        if a is not None and not a.assigned:
            self.counters["ipv6_to_tentative"] += 1
            return None
        if chain.upper_layer == wip6.IPPROTO_UDP:
            return self._udp_input(iface, packet, chain.offset, rx, now)
        # RFC 8200 §4: an upper layer this stack does not run over IPv6 (yet: TCP
        # included) is an unrecognised Next Header.
        self.counters["ipv6_unknown_next_header"] += 1
        self._icmp_error(iface, packet, wicmp6.PARAM_PROBLEM,
                         ipv6ext.PP_UNRECOGNIZED_NEXT_HEADER, chain.nh_pointer, now,
                         link_mcast=rx.link_mcast)

    def _udp_input(self, iface: Interface, packet: bytes, at: int, rx: _Arrival,
                   now: float) -> None:
        """No UDP socket runs over IPv6 yet: a well-formed datagram earns a port
        unreachable (RFC 4443 §3.1, as for IPv4: traceroute ends on it). A truncated,
        mis-sized or mis-summed one is counted and not answered; a zero checksum is an
        error in IPv6 (RFC 8200 §8.1)."""
        datagram = packet[at:]
        try:
            hdr = wudp.UdpHeader.parse(datagram)
        except WireError as e:
            self.counters["udp6_" + e.reason.removeprefix("udp_")] += 1
            return None
        if hdr.length != len(datagram):
            self.counters["udp6_bad_length"] += 1
            return None
        pseudo = cks.pseudo_header_sum6(packet[8:24], packet[24:40], wip6.IPPROTO_UDP,
                                        hdr.length)
        if not rx.trusted and (hdr.checksum == 0 or cks.ones_sum(datagram, pseudo) != 0xFFFF):
            self.counters["udp6_bad_checksum"] += 1
            return None
        self.counters["udp6_no_port"] += 1
        self._icmp_error(iface, packet, wicmp6.DEST_UNREACH, wicmp6.UNREACH_PORT, 0, now,
                         link_mcast=rx.link_mcast)

    def _icmp6_input(self, iface: Interface, hdr: wip6.Ipv6Header, packet: bytes, at: int,
                     rx: _Arrival, now: float) -> None:
        src, dst = hdr.src, hdr.dst
        try:
            msg = wicmp6.Icmp6Message.parse(packet[at:], src, dst,
                                            verify_checksum=not rx.trusted)
        except WireError as e:
            self.counters[e.reason] += 1
            return None
        own = self.addresses.lookup(dst)
        if own is not None and not own.assigned and msg.type not in _NDP_TYPES:
            # RFC 4862 §5.4: a tentative address receives nothing but NDP.
            self.counters["ipv6_to_tentative"] += 1
            return None
        if msg.type in _NDP_TYPES or msg.type == wicmp6.ROUTER_ADVERTISEMENT:
            return self._ndp_input(iface, hdr, msg, rx, now)
        if msg.type == wicmp6.ECHO_REQUEST:
            if wip6.is_multicast(dst):
                self.counters["icmp6_echo_multicast_ignored"] += 1
                return None
            self.counters["icmp6_echo_replies"] += 1
            self.send(iface, dst, src, wip6.IPPROTO_ICMPV6,
                      wicmp6.echo_reply(msg).to_bytes(dst, src), now)
        elif msg.is_error:
            self.counters["icmp6_errors_received"] += 1
        else:
            self.counters["icmp6_ignored"] += 1

    def _ndp_input(self, iface: Interface, hdr: wip6.Ipv6Header, msg: wicmp6.Icmp6Message,
                   rx: _Arrival, now: float) -> None:
        """Validate (stack/wire/ndp.py) and act (stack/ndp.py); refusals are counted
        under their reason, like every other bad input."""
        src, dst, hl, mac = hdr.src, hdr.dst, hdr.hop_limit, rx.eth_src
        try:
            if msg.type == wicmp6.NEIGHBOR_SOLICITATION:
                ns = wndp.parse_ns(msg, src, dst, hl, mac)
                fx = self.nd.solicitation(iface, src, dst, ns, now)
            elif msg.type == wicmp6.NEIGHBOR_ADVERTISEMENT:
                fx = self.nd.advertisement(iface, wndp.parse_na(msg, dst, hl, mac), now)
            else:
                ra = wndp.parse_ra(msg, src, hl, mac)
                fx = self.nd.router_advertisement(iface, src, ra, now)
        except WireError as e:
            self.counters[e.reason] += 1
            return None
        self.counters[f"icmp6_in_{msg.type}"] += 1
        self._apply(fx, now)

    # -- output --------------------------------------------------------------------
    def _send_ndp(self, t: NdpTransmit, now: float) -> None:
        payload = t.message.to_bytes(t.src, t.dst)
        skb = self._packet(t.src, t.dst, wip6.IPPROTO_ICMPV6, payload, wndp.NDP_HOP_LIMIT)
        self.counters["tx_ndp"] += 1
        if t.mac is not None:
            self.stack._emit(t.iface, t.mac, skb)
        else:
            self._link_output(t.iface, t.dst, skb, now)

    def _packet(self, src: bytes, dst: bytes, next_header: int, payload: bytes,
                hop_limit: int) -> SkBuff:
        """An Ethernet frame (MACs left for the output path) around one packet."""
        skb = SkBuff.from_bytes(payload, headroom=_HEADROOM)
        wip6.Ipv6Header(src, dst, next_header, hop_limit).emit_into(
            skb.push(wip6.IPV6_HLEN), 0, len(payload))
        skb.push(ETH_HLEN)[ETH_TYPE:ETH_HLEN] = _ETH_IPV6
        return skb

    def send(self, iface: Interface, src: bytes, dst: bytes, next_header: int,
             payload: bytes, now: float) -> bool:
        """Send one packet out of ``iface``: to ``dst`` if it is on the link (link-local,
        in the prefix of an address of the interface, or an on-link prefix a router
        announced), else to the interface's first default router. A packet over the
        link's MTU (a router's MTU option may lower it) goes in fragments."""
        if len(payload) > 0xFFFF:
            self.counters["tx6_too_big"] += 1
            return False
        link = self.addresses.link(iface)
        nexthop: bytes | None = dst
        if not wip6.is_multicast(dst) and not self._on_link(iface, dst):
            nexthop = next(iter(link.routers), None)
        if nexthop is None:
            self.counters["tx6_no_route"] += 1
            return False
        skb = self._packet(src, dst, next_header, payload, link.cur_hop_limit)
        mtu = min(link.mtu or iface.mtu, iface.mtu)
        if wip6.IPV6_HLEN + len(payload) <= mtu:
            return self._output(iface, nexthop, skb, now)
        # RFC 7739 §5.1: an unpredictable identification per packet.
        frags = fragment(skb.tobytes()[ETH_HLEN:], mtu, self.rng.getrandbits(32))
        self.counters["tx6_fragmented"] += 1
        for f in frags:
            frame = SkBuff.from_bytes(bytes(ETH_HLEN) + f, headroom=_HEADROOM)
            frame.buf[frame.data + ETH_TYPE:frame.data + ETH_HLEN] = _ETH_IPV6
            self._output(iface, nexthop, frame, now)
        return True

    def _output(self, iface: Interface, nexthop: bytes, skb: SkBuff, now: float) -> bool:
        self.counters["tx_ip6"] += 1
        if wip6.is_multicast(nexthop):
            self.stack._emit(iface, wip6.multicast_mac(nexthop), skb)
            return True
        return self._link_output(iface, nexthop, skb, now)

    def _on_link(self, iface: Interface, dst: bytes) -> bool:
        if wip6.is_link_local(dst):
            return True
        if any(wip6.prefix_match(a.addr, dst, a.prefixlen)
               for a in self.addresses.for_iface(iface) if a.assigned):
            return True
        return any(wip6.prefix_match(p, dst, plen)
                   for p, plen in self.addresses.link(iface).prefixes)

    def _link_output(self, out: Interface, nexthop: bytes, skb: SkBuff, now: float) -> bool:
        """Address the frame to ``nexthop``'s MAC, resolving it first if need be
        (RFC 4861 §7.2.2: frames wait in a bounded queue)."""
        n = self.cache.get(out, nexthop)
        if n is not None and n.mac is not None:
            self.cache.used(n, now)
            self.stack._emit(out, n.mac, skb)
            return True
        n = self.cache.start_resolution(out, nexthop, now)
        if n is None:
            self.stack._drop("ndp_table_full", count_rx=False)
            return False
        if len(n.pending) >= self.cache.max_pending:
            self.stack._drop("ndp_queue_full", count_rx=False)
            return False
        n.pending.append(PendingFrame(skb.tobytes(), save_vnet(skb), False))
        if n.probes == 0:
            n.probes, n.next_probe = 1, now + self.cache.retrans_time
            t = self.nd.solicit(n, now)
            if t is not None:
                self._send_ndp(t, now)
        return True

    def _any_address_for(self, dst: bytes) -> Address6 | None:
        """An assigned address on the link towards ``dst`` (an error's source)."""
        for a in self.addresses.addresses.values():
            if a.assigned and (wip6.prefix_match(a.addr, dst, a.prefixlen)
                               or (wip6.is_link_local(dst) and wip6.is_link_local(a.addr))):
                return a
        return None

    def _icmp_error(self, iface: Interface, packet: bytes, type_: int, code: int, rest: int,
                    now: float, *, link_mcast: bool = False, exception: bool = False) -> None:
        """Send an ICMPv6 error about ``packet`` back to its source (RFC 4443 §2.4)."""
        src, dst = packet[8:24], packet[24:40]
        to_mcast = link_mcast or wip6.is_multicast(dst)
        if not sicmp.may_send_error6(src, to_mcast, _is_icmp6_error(packet), exception):
            self.counters["icmp6_error_suppressed"] += 1
            return
        own = self.addresses.assigned(dst)
        if own is None:
            own = next((a for a in self.addresses.for_iface(iface) if a.assigned), None)
        if own is None:
            self.counters["icmp6_error_no_source"] += 1
            return
        if not self.icmp_bucket.take(now):
            self.counters["icmp6_error_ratelimited"] += 1
            return
        self.counters[f"icmp6_sent_{type_}_{code}"] += 1
        msg = wicmp6.error(type_, code, packet, rest)
        self.send(iface, own.addr, src, wip6.IPPROTO_ICMPV6, msg.to_bytes(own.addr, src), now)


def _is_icmp6_error(packet: bytes) -> bool:
    """Whether ``packet`` carries an ICMPv6 error (never answered with one)."""
    found = ipv6ext.skip(packet)
    return (found is not None and found[0] == wip6.IPPROTO_ICMPV6 and found[1] < len(packet)
            and packet[found[1]] < 128)
