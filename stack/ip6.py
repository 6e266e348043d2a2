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
ICMP's (RFC 4443 §2.4 (f)). TCP and UDP segments go to the transports the core
registered (a TCP segment straight from the received frame, no copy); ICMPv6 errors
about their packets go to them too. Upper layers nobody runs get a Parameter
Problem code 1. A router (``Stack(forwarding=True)``) forwards the rest
(stack/ip6forward.py).

Output: :meth:`Ipv6Layer.output` is the transports' (TCP and UDP hand the core a
16-byte destination): the next hop and source come from stack/route6.py, the flow
label is a keyed hash of the addresses, protocol and ports (RFC 6437 §3), and a
packet over the path MTU that is not a TCP super-segment goes in fragments.

Sans-I/O like the core: ``now`` on every entry point, frames go to the core's outbox.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import random
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stack import gso
from stack import icmp as sicmp
from stack.addrconf import Address6, AddressTable, AddrOrigin, AddrState
from stack.frag6 import FragmentError, Reassembler6, fragment
from stack.iface import Interface
from stack.ip6forward import forward
from stack.ndp import NdpEffects, NdpTransmit, NeighborCache, NeighborDiscovery
from stack.neigh import PendingFrame
from stack.route6 import Route6Table
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
    from stack.core import ProtocolHandler, Stack
    from stack.tcp.api import RouteInfo

log = logging.getLogger("tapsplice.ipv6")

_ETH_IPV6 = ETH_P_IPV6.to_bytes(2, "big")
_HEADROOM = 128
_NDP_TYPES = frozenset({wicmp6.NEIGHBOR_SOLICITATION, wicmp6.NEIGHBOR_ADVERTISEMENT})
#: Transports taken straight from the frame when no extension header comes first.
_DIRECT = frozenset({wip6.IPPROTO_TCP, wip6.IPPROTO_UDP})
#: The quoted transport ports and (TCP) sequence number of an ICMPv6 error.
_QUOTED = struct.Struct("!HHL")
#: ICMPv6 errors in the words of ICMP (RFC 7915 §5.2, which translates them), so
#: that a transport handles both families' errors alike: (type, code) -> ICMP's.
#: Packet Too Big becomes "fragmentation needed" with the MTU as it came.
_AS_ICMP4 = {(wicmp6.DEST_UNREACH, wicmp6.UNREACH_NO_ROUTE): (3, 1),
             (wicmp6.DEST_UNREACH, wicmp6.UNREACH_ADMIN): (3, 10),
             (wicmp6.DEST_UNREACH, wicmp6.UNREACH_BEYOND_SCOPE): (3, 1),
             (wicmp6.DEST_UNREACH, wicmp6.UNREACH_ADDRESS): (3, 1),
             (wicmp6.DEST_UNREACH, wicmp6.UNREACH_PORT): (3, 3),
             (wicmp6.PACKET_TOO_BIG, 0): (3, 4),
             (wicmp6.TIME_EXCEEDED, wicmp6.EXC_HOP_LIMIT): (11, 0),
             (wicmp6.TIME_EXCEEDED, wicmp6.EXC_FRAGTIME): (11, 1),
             (wicmp6.PARAM_PROBLEM, ipv6ext.PP_UNRECOGNIZED_NEXT_HEADER): (3, 2)}


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
        self.routes = Route6Table(self.addresses)
        # RFC 6437 §3: flow labels from a keyed hash, the key the host secret's.
        self._flow_key = hashlib.blake2s(self.addresses.secret, person=b"flow6").digest()

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
        self.routes.changed()
        return self.addresses.add_link_local(iface, now)

    def add_address(self, iface: Interface, addr: str, now: float) -> Address6:
        """Add ``addr`` ("2001:db8::2/64") to ``iface`` (enabling IPv6 on it); the
        address is tentative until DAD passes."""
        net = ipaddress.IPv6Interface(addr)
        self.enable(iface, now)
        self.routes.changed()
        return self.addresses.add(iface, net.ip.packed, net.network.prefixlen, now,
                                  AddrOrigin.STATIC)

    def configure(self, iface: Interface, specs: tuple[str, ...] | list[str],
                  now: float) -> None:
        """Give ``iface`` the addresses of the command line: "2001:db8::2/64" each,
        "auto" for SLAAC (``--addr auto``)."""
        for spec in specs:
            if spec == "auto":
                self.enable(iface, now, auto=True)
            else:
                self.add_address(iface, spec, now)

    def add_route(self, prefix: str, via: str | None = None, iface: Interface | None = None
                  ) -> None:
        """A static route for ``prefix`` ("2001:2::/48", "default"), through the
        interface whose prefix holds ``via`` (or ``iface``: on-link without one)."""
        gw = wip6.ip6_bytes(via) if via is not None else None
        if iface is None and gw is not None:
            iface = next((a.iface for a in self.addresses.addresses.values()
                          if wip6.prefix_match(a.addr, gw, a.prefixlen)
                          and (a.prefixlen or wip6.is_link_local(gw))), None)
        if iface is None or not iface.ipv6:
            raise ValueError(f"no IPv6 interface for route {prefix} via {via}")
        self.routes.add(prefix, iface, gw)

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
        self.routes.changed()   # addresses may have passed DAD, routers expired
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
            for p in n.pending:
                self.stack._drop("ndp_unresolved", count_rx=False)
                if p.forwarded:     # RFC 4443 §3.1 code 3: the address did not answer
                    self._icmp_error(n.iface, p.frame[ETH_HLEN:ETH_HLEN + wip6.IPV6_MIN_MTU],
                                     wicmp6.DEST_UNREACH, wicmp6.UNREACH_ADDRESS, 0, now)
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
        if wip6.is_multicast(hdr.src) or self.addresses.assigned(hdr.src) is not None:
            return self.stack._drop("ipv6_martian_source")
        if not self._accepts(iface, hdr.dst):
            if self.stack.forwarding:
                return forward(self, iface, skb, hdr, now)
            return self.stack._drop("ipv6_not_for_us")
        if hdr.next_header in _DIRECT and self.addresses.assigned(hdr.dst):
            handler = self.stack.protocols.get(hdr.next_header)
            if handler is not None:
                return self._transport_input(iface, skb, hdr, handler, now)
        packet = bytes(frame[ETH_HLEN:ETH_HLEN + wip6.IPV6_HLEN + hdr.payload_length])
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

    def _transport_input(self, iface: Interface, skb: SkBuff, hdr: wip6.Ipv6Header,
                         handler: ProtocolHandler, now: float) -> None:
        """A TCP segment or UDP datagram right after the fixed header, for an own
        address: taken from the frame as it is (offload flags and all), like IPv4's."""
        frame = skb.view()
        d = skb.data + ETH_HLEN
        end = d + wip6.IPV6_HLEN + hdr.payload_length
        skb.network_off = d
        skb.tail = end
        skb.pull(ETH_HLEN + wip6.IPV6_HLEN)
        skb.dev = iface
        self.counters["rx_local"] += 1
        if handler.input(skb, hdr.src, hdr.dst, now) is False:
            # No socket took the datagram (UDP): RFC 4443 §3.1 code 4.
            self._icmp_error(iface, bytes(frame[ETH_HLEN:end - d + ETH_HLEN]),
                             wicmp6.DEST_UNREACH, wicmp6.UNREACH_PORT, 0, now,
                             link_mcast=bool(frame[0] & 1))

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
        handler = self.stack.protocols.get(chain.upper_layer)
        if handler is not None and chain.upper_layer in (wip6.IPPROTO_TCP, wip6.IPPROTO_UDP):
            # Extension headers or fragments came first: a copy from the transport
            # header on, checksums checked again (a reassembled packet's flags were
            # only its last fragment's).
            skb = SkBuff.from_bytes(packet[chain.offset:], headroom=_HEADROOM)
            skb.dev = iface
            if chain.fragment is None and rx.trusted:
                skb.vnet_flags = VIRTIO_NET_HDR_F_DATA_VALID
            if handler.input(skb, hdr.src, hdr.dst, now) is False:
                self._icmp_error(iface, packet, wicmp6.DEST_UNREACH, wicmp6.UNREACH_PORT, 0,
                                 now, link_mcast=rx.link_mcast)
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
            self._error_to_transport(msg, now)
        else:
            self.counters["icmp6_ignored"] += 1

    def _error_to_transport(self, msg: wicmp6.Icmp6Message, now: float) -> None:
        """Hand an ICMPv6 error to the transport whose packet it quotes (RFC 4443
        §2.4 (b), RFC 5927), in ICMP's terms (``_AS_ICMP4``)."""
        q = bytes(msg.payload)
        found = ipv6ext.skip(q)
        if found is None or found[1] + 8 > len(q):
            self.counters["icmp6_error_bad_quote"] += 1
            return
        nh, at = found
        handler = self.stack.protocols.get(nh)
        mapped = _AS_ICMP4.get((msg.type, 0 if msg.type == wicmp6.PACKET_TOO_BIG else msg.code))
        if handler is None or not hasattr(handler, "icmp_error") or mapped is None:
            self.counters["icmp6_error_not_delivered"] += 1
            return
        mtu = 0
        if msg.type == wicmp6.PACKET_TOO_BIG:
            mtu = msg.rest
            if mtu < wip6.IPV6_MIN_MTU:
                # RFC 8201 §4: a Packet Too Big under the minimum link MTU is discarded.
                self.counters["icmp6_ptb_below_minimum"] += 1
                return
        sport, dport, seg_seq = _QUOTED.unpack_from(q, at)
        handler.icmp_error(q[8:24], q[24:40], sport, dport, mapped[0], mapped[1], now,
                           mtu=mtu, seg_seq=seg_seq if nh == wip6.IPPROTO_TCP else None)

    def learn_ndp(self, iface: Interface, skb: SkBuff, now: float) -> None:
        """Learn from an NS, NA or RA that another process of this interface received
        (worker 0, stack/workers.py): neighbours, routers and prefixes, a duplicate
        of a tentative address; nothing is answered (that process did)."""
        frame = skb.view()
        try:
            hdr = wip6.Ipv6Header.parse(frame[ETH_HLEN:])
            if not iface.ipv6 or hdr.next_header != wip6.IPPROTO_ICMPV6:
                return None
            packet = bytes(frame[ETH_HLEN:ETH_HLEN + wip6.IPV6_HLEN + hdr.payload_length])
            msg = wicmp6.Icmp6Message.parse(packet[wip6.IPV6_HLEN:], hdr.src, hdr.dst)
        except WireError as e:
            self.counters[e.reason] += 1
            return None
        if msg.type in _NDP_TYPES or msg.type == wicmp6.ROUTER_ADVERTISEMENT:
            rx = _Arrival(bytes(frame[6:12]), bool(frame[0] & 1), True)
            self._ndp_input(iface, hdr, msg, rx, now, answer=False)
        return None

    def _ndp_input(self, iface: Interface, hdr: wip6.Ipv6Header, msg: wicmp6.Icmp6Message,
                   rx: _Arrival, now: float, *, answer: bool = True) -> None:
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
        self.routes.changed()   # routers and prefixes may have come or gone
        if not answer:
            fx.send.clear()
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
        """Send one packet the stack made (ICMPv6): to a group or a link-local
        address out of ``iface``, elsewhere where the routing table says
        (stack/route6.py). A packet over the path MTU goes in fragments."""
        if len(payload) > 0xFFFF:
            self.counters["tx6_too_big"] += 1
            return False
        hop = self._next_hop(iface, dst)
        if hop is None:
            return False
        out, nexthop = hop
        link = self.addresses.link(out)
        skb = self._packet(src, dst, next_header, payload, link.cur_hop_limit)
        return self._send_frame(out, nexthop, skb, now)

    def _next_hop(self, iface: Interface | None, dst: bytes) -> tuple[Interface, bytes] | None:
        if iface is not None and (wip6.is_multicast(dst) or wip6.is_link_local(dst)):
            return iface, dst
        hop = self.routes.lookup(dst)
        if hop is None:
            self.counters["tx6_no_route"] += 1
            return None
        return hop.iface, hop.nexthop

    def _send_frame(self, out: Interface, nexthop: bytes, skb: SkBuff, now: float) -> bool:
        """Send a frame (Ethernet and IPv6 headers in place) or, over the path MTU
        and not a TCP super-segment, its fragments (RFC 8200 §5)."""
        mtu = self.path_mtu(out)
        if len(skb) - ETH_HLEN <= mtu or skb.gso_size:
            return self._output(out, nexthop, skb, now)
        gso.complete_checksum(skb)
        # RFC 7739 §5.1: an unpredictable identification per packet.
        frags = fragment(skb.tobytes()[ETH_HLEN:], mtu, self.rng.getrandbits(32))
        self.counters["tx6_fragmented"] += 1
        for f in frags:
            frame = SkBuff.from_bytes(bytes(ETH_HLEN) + f, headroom=_HEADROOM)
            frame.buf[frame.data + ETH_TYPE:frame.data + ETH_HLEN] = _ETH_IPV6
            self._output(out, nexthop, frame, now)
        return True

    def path_mtu(self, iface: Interface) -> int:
        """The link's MTU, or a router's lower MTU option (RFC 4861 §6.3.4)."""
        link_mtu = self.addresses.link(iface).mtu
        return min(link_mtu or iface.mtu, iface.mtu)

    # -- the transports' output --------------------------------------------------
    def route(self, dst: bytes) -> RouteInfo | None:
        """Source address, path MTU and offload towards ``dst`` (TCP's and UDP's
        ``IpService.route`` for IPv6 destinations), or None."""
        from stack.tcp.api import RouteInfo

        if wip6.is_multicast(dst) or wip6.is_unspecified(dst):
            return None
        hop = self.routes.lookup(dst)
        if hop is None:
            return None
        src = self.routes.source(hop.iface, dst)
        if src is None:
            return None
        return RouteInfo(src.addr, self.path_mtu(hop.iface), hop.iface.offload)

    def output(self, src: bytes, dst: bytes, proto: int, skb: SkBuff, now: float) -> bool:
        """Prepend an IPv6 header to ``skb`` (data at the transport header, maybe a
        partial checksum or a TCP super-segment) and send it."""
        hop = self._next_hop(None, dst)
        if hop is None:
            return False
        out, nexthop = hop
        plen = len(skb)
        if plen > 0xFFFF:
            self.counters["tx6_too_big"] += 1
            return False
        label = self.flow_label(src, dst, proto, bytes(skb.buf[skb.data:skb.data + 4]))
        wip6.IPV6_HEADER.pack_into(skb.push(wip6.IPV6_HLEN), 0, 6 << 28 | label, plen, proto,
                                   self.addresses.link(out).cur_hop_limit, src, dst)
        skb.push(ETH_HLEN)[ETH_TYPE:ETH_HLEN] = _ETH_IPV6
        if skb.vnet_flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
            skb.csum_start += ETH_HLEN + wip6.IPV6_HLEN
        if skb.gso_size:
            skb.hdr_len += ETH_HLEN + wip6.IPV6_HLEN
        self.counters["tx6_transport"] += 1
        return self._send_frame(out, nexthop, skb, now)

    def flow_label(self, src: bytes, dst: bytes, proto: int, ports: bytes) -> int:
        """RFC 6437 §3: a 20-bit keyed hash of the addresses, protocol and ports
        (the first 4 bytes of the transport header), never 0, the same for every
        packet of a flow."""
        digest = hashlib.blake2s(src + dst + bytes((proto,)) + ports, key=self._flow_key,
                                 digest_size=4).digest()
        return (int.from_bytes(digest, "big") & 0xFFFFF) or 1

    def _output(self, iface: Interface, nexthop: bytes, skb: SkBuff, now: float) -> bool:
        self.counters["tx_ip6"] += 1
        if wip6.is_multicast(nexthop):
            self.stack._emit(iface, wip6.multicast_mac(nexthop), skb)
            return True
        return self._link_output(iface, nexthop, skb, now)

    def _link_output(self, out: Interface, nexthop: bytes, skb: SkBuff, now: float, *,
                     forwarded: bool = False) -> bool:
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
        n.pending.append(PendingFrame(skb.tobytes(), save_vnet(skb), forwarded))
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
            # Not sent to us (a router's error): the source for the way back.
            hop = None if wip6.is_link_local(src) else self.routes.lookup(src)
            own = self.routes.source(hop.iface if hop is not None else iface, src)
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
