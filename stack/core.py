"""The sans-I/O stack: Ethernet, ARP, IPv4 (local delivery, forwarding), ICMP; IPv6
frames go to stack/ip6.py.

The :class:`Stack` never reads a clock and never does I/O. A driver (stack/aio.py on
real TAP devices, stack/sim.py on the in-memory link) hands it received frames with
:meth:`Stack.receive_frame`, calls :meth:`Stack.on_timer` at
:meth:`Stack.next_deadline`, and sends what :meth:`Stack.drain` returns.

Buffer ownership: the received SkBuff is only borrowed for the duration of the call
and until the driver has sent the frames drained after it (the forwarding path
rewrites and transmits the very same buffer). Anything kept longer is copied.

Every received frame ends in exactly one of the counters ``rx_arp``, ``rx_local``,
``rx_forwarded`` or ``rx_dropped`` (with ``drop.<reason>`` naming why).
"""

from __future__ import annotations

import random
import struct
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from stack import gso
from stack import icmp as sicmp
from stack.frag import Reassembler, fragment
from stack.iface import Interface, RouteTable
from stack.ip6 import Ipv6Layer
from stack.neigh import NeighbourCache, NeighState, PendingFrame
from stack.skbuff import SkBuff
from stack.wire import WireError
from stack.wire import checksum as cks
from stack.wire import icmp as wicmp
from stack.wire import ipv4 as wip
from stack.wire import udp as wudp
from stack.wire.arp import ARP_REPLY, ARP_REQUEST, ArpPacket
from stack.wire.ethernet import BROADCAST, ETH_HLEN, ETH_P_ARP, ETH_P_IP, random_mac
from stack.wire.fields import (
    ETH_DST,
    ETH_SRC,
    ETH_TYPE,
    FLOW_KEY,
    FRAME_FLOW_KEY,
    FRAME_FLOW_KEY_END,
    FRAME_IP_DST,
    FRAME_IP_PROTO,
    FRAME_IP_VIHL,
    FRAME_TCP,
    IP_CSUM,
    IP_DST,
    IP_FLAG_DF,
    IP_FLAG_MF,
    IP_FRAG,
    IP_FRAG_MF_OFFSET,
    IP_FRAG_OFFSET_MASK,
    IP_IDENT,
    IP_MIN_HLEN,
    IP_PROTO,
    IP_SRC,
    IP_TOTLEN,
    IP_TTL,
    IP_VIHL_NO_OPTIONS,
    TCP_DOFF,
    TCP_MIN_HLEN,
    U16,
)
from stack.wire.ipv4 import IPPROTO_TCP
from stack.wire.vnet import (
    VIRTIO_NET_HDR_F_DATA_VALID,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    restore_vnet,
    save_vnet,
)

if TYPE_CHECKING:
    from stack.tcp.api import RouteInfo

_H = U16
_ETH_IP = b"\x08\x00"
_ETH_ARP = b"\x08\x06"
HEADROOM = 128
_ZERO = b"\0\0\0\0"
#: Ethernet + a 20-byte IPv4 header + a 20-byte TCP header: the least a frame offered
#: to the flow table holds (the handlers read the IPv4 and TCP headers in place).
_FLOW_MIN_LEN = FRAME_TCP + TCP_MIN_HLEN
#: An ICMP error quotes the original IPv4 header and at least 8 bytes of its payload.
_QUOTE_MIN = IP_MIN_HLEN + 8
#: The quoted TCP ports and sequence number (RFC 5927 §4.1).
_QUOTED_TCP = struct.Struct("!HHL")


class FlowEnds(Protocol):
    """The addresses and ports of a connection (a TCB), as :func:`flow_key` reads them."""

    local: bytes
    local_port: int
    remote: bytes
    remote_port: int


def flow_key(conn: FlowEnds) -> bytes:
    """The key in :attr:`Stack.flows` of the segments that arrive on ``conn``: their
    source (the remote end) and destination (the local end) as on the wire."""
    return FLOW_KEY.pack(conn.remote, conn.local, conn.remote_port, conn.local_port)


class TimerSource(Protocol):
    """An owner of timers the stack runs (a protocol handler, the splice layer)."""

    def next_deadline(self) -> float | None: ...
    def on_timer(self, now: float) -> None: ...


class ProtocolHandler(TimerSource, Protocol):
    """A transport protocol attached to the stack (TCP)."""

    def input(self, skb: SkBuff, src: bytes, dst: bytes, now: float) -> bool | None:
        """Take a datagram (data at the transport header); False: no socket wanted
        it, answer port unreachable (UDP)."""
        ...


class Stack:
    """Interfaces, neighbours, routes and the IPv4 layer of one host or router."""

    def __init__(self, *, forwarding: bool = False, rng: random.Random | None = None,
                 neigh: NeighbourCache | None = None, reassembler: Reassembler | None = None,
                 icmp_rate: float = 100.0, icmp_burst: float = 50.0,
                 ipv6_secret: bytes | None = None) -> None:
        self.forwarding = forwarding
        self.rng = rng or random.Random()
        self.interfaces: list[Interface] = []
        self.by_addr: dict[bytes, Interface] = {}
        self.routes = RouteTable()
        self.neigh = neigh or NeighbourCache()
        self.reasm = reassembler or Reassembler()
        self.icmp_bucket = sicmp.TokenBucket(icmp_rate, icmp_burst)
        self.protocols: dict[int, ProtocolHandler] = {}
        #: Exact-match fast path: key = source address, destination address, source
        #: port, destination port as on the wire (12 bytes); the handler gets the frame
        #: (data at its Ethernet header) and returns False to send it the normal way.
        self.flows: dict[bytes, Callable[[SkBuff, float], bool]] = {}
        #: Other owners of timers (the splice layer): next_deadline() and on_timer(now).
        self.timer_sources: list[TimerSource] = []
        self.counters: Counter[str] = Counter()
        #: IPv6 (RFC 7217 addresses are keyed by ``ipv6_secret``; default: a fresh one).
        self.ip6 = Ipv6Layer(self, self.rng, secret=ipv6_secret, icmp_rate=icmp_rate,
                             icmp_burst=icmp_burst)
        self.outbox: list[tuple[Interface, SkBuff]] = []
        self._ident = self.rng.randrange(1 << 16)
        self.on_drop: Callable[[str], None] | None = None

    # -- configuration -------------------------------------------------------
    def add_interface(self, name: str, addr: str, *, mac: bytes | None = None,
                      mtu: int = 1500, offload: bool = True) -> Interface:
        """Attach an interface with address ``addr`` ("a.b.c.d/n") and its connected route."""
        ip, _, plen = addr.partition("/")
        prefixlen = int(plen or 32)
        if not 0 <= prefixlen <= 32:
            raise ValueError(f"bad prefix length in {addr!r}")
        iface = Interface(len(self.interfaces), name, mac or random_mac(self.rng),
                          wip.ip_bytes(ip), prefixlen, mtu, offload)
        if iface.addr in self.by_addr:
            raise ValueError(f"address {ip} is already on {self.by_addr[iface.addr].name}")
        self.interfaces.append(iface)
        if iface.configured:  # 0.0.0.0: no address yet (DHCP gives one: set_address)
            self.by_addr[iface.addr] = iface
            self.routes.add(f"{ip}/{prefixlen}", iface)
        return iface

    def set_address(self, iface: Interface, addr: bytes, prefixlen: int) -> None:
        """Give ``iface`` a new address and connected route (a DHCP lease); the old
        address and every route out of the interface go."""
        self.clear_address(iface)
        if addr in self.by_addr:
            raise ValueError(f"address {wip.ip_str(addr)} is already on "
                             f"{self.by_addr[addr].name}")
        iface.set_address(addr, prefixlen)
        self.by_addr[addr] = iface
        self.routes.add(f"{wip.ip_str(addr)}/{prefixlen}", iface)

    def clear_address(self, iface: Interface) -> None:
        """Take the address off ``iface`` (a lease lost): its routes go too."""
        if self.by_addr.get(iface.addr) is iface:
            del self.by_addr[iface.addr]
        self.routes.remove_iface(iface)
        iface.set_address(b"\0\0\0\0", 32)

    def add_route(self, prefix: str, via: str | None = None, ifname: str | None = None) -> None:
        """Add a static route; the interface is the one whose subnet holds ``via``."""
        iface = None
        if ifname is not None:
            iface = next((i for i in self.interfaces if i.name == ifname), None)
        elif via is not None:
            gw = wip.ip_bytes(via)
            iface = next((i for i in self.interfaces if i.on_link(gw)), None)
        if iface is None:
            raise ValueError(f"no interface for route {prefix} via {via} dev {ifname}")
        self.routes.add(prefix, iface, via)

    def register_protocol(self, proto: int, handler: ProtocolHandler) -> None:
        """Deliver IP protocol ``proto`` addressed to the stack to ``handler``."""
        self.protocols[proto] = handler

    def start(self, now: float) -> None:
        """Announce every interface with a gratuitous ARP request (RFC 5227 §3)."""
        for iface in self.interfaces:
            self._send_arp(iface, ARP_REQUEST, BROADCAST, iface.addr, b"\0" * 6, iface.addr)

    # -- driver interface ------------------------------------------------------
    def begin_batch(self) -> None:
        """Frames read together follow: protocols may hold their output until
        :meth:`end_batch` (one pass per connection, like GRO batches a kernel's)."""
        for p in self.protocols.values():
            begin = getattr(p, "begin_batch", None)
            if begin is not None:
                begin()

    def end_batch(self, now: float) -> None:
        """The batch is over: protocols send what they held."""
        for p in self.protocols.values():
            end = getattr(p, "end_batch", None)
            if end is not None:
                end(now)

    def drain(self) -> list[tuple[Interface, SkBuff]]:
        """Take the frames queued for transmission since the last call."""
        out = self.outbox
        self.outbox = []
        return out

    def next_deadline(self) -> float | None:
        """The earliest time :meth:`on_timer` must run, or None."""
        times = [self.neigh.next_deadline(), self.reasm.next_deadline(),
                 self.ip6.next_deadline()]
        times.extend(p.next_deadline() for p in self.protocols.values())
        times.extend(t.next_deadline() for t in self.timer_sources)
        live = [t for t in times if t is not None]
        return min(live) if live else None

    def on_timer(self, now: float) -> None:
        """Run every timer that is due."""
        probe, failed = self.neigh.expire(now)
        for n in probe:
            if n.state is NeighState.INCOMPLETE:
                self._send_arp(n.iface, ARP_REQUEST, BROADCAST, n.iface.addr,
                               b"\0" * 6, n.ip)
        for n in failed:
            for p in n.pending:
                self._drop("arp_unresolved", count_rx=False)
                if p.forwarded:
                    self._icmp_error(n.iface, p.frame[ETH_HLEN:], wicmp.DEST_UNREACH,
                                     wicmp.UNREACH_HOST, now)
        self.ip6.on_timer(now)
        for quoted in self.reasm.expire(now):
            src = quoted[IP_SRC:IP_DST]
            iface = self.routes.lookup(src)
            if iface is not None:
                self._icmp_error(iface.iface, quoted, wicmp.TIME_EXCEEDED,
                                 wicmp.EXC_FRAGTIME, now)
        for owner in (*self.protocols.values(), *self.timer_sources):
            deadline = owner.next_deadline()
            if deadline is not None and deadline <= now:
                owner.on_timer(now)

    def _drop(self, reason: str, count_rx: bool = True) -> None:
        c = self.counters
        c["drop." + reason] += 1
        if count_rx:
            c["rx_dropped"] += 1
        if self.on_drop is not None:
            self.on_drop(reason)

    # -- receive ----------------------------------------------------------------
    def receive_frame(self, iface: Interface, skb: SkBuff, now: float) -> None:
        """Process one received Ethernet frame (data at the Ethernet header)."""
        c = self.counters
        c["rx_frames"] += 1
        buf = skb.buf
        d = skb.data
        if skb.tail - d < ETH_HLEN:
            return self._drop("eth_truncated")
        if not buf[d + ETH_DST] & 1 and buf[d + ETH_DST:d + ETH_SRC] != iface.mac:
            return self._drop("eth_not_for_us")
        etype = buf[d + ETH_TYPE:d + ETH_HLEN]
        if etype == _ETH_IP:
            if (self.flows and skb.tail - d >= _FLOW_MIN_LEN
                    and buf[d + FRAME_IP_VIHL] == IP_VIHL_NO_OPTIONS
                    and buf[d + FRAME_IP_PROTO] == IPPROTO_TCP):
                # Exact-match flow table (a 20-byte IPv4 header carrying TCP): the
                # splice layer's relayed pairs take their own short path from here.
                # Only frames long enough for both headers are offered; shorter ones
                # take the normal path, which drops them as truncated.
                handler = self.flows.get(bytes(buf[d + FRAME_FLOW_KEY:d + FRAME_FLOW_KEY_END]))
                if handler is not None and handler(skb, now):
                    c["rx_local"] += 1
                    return None
            return self._ip_input(iface, skb, now)
        if etype == _ETH_ARP:
            return self._arp_input(iface, skb, now)
        if etype == b"\x86\xdd":
            return self.ip6.input(iface, skb, now)
        return self._drop("eth_unknown_type")

    def learn_arp(self, iface: Interface, skb: SkBuff, now: float) -> None:
        """Learn from an ARP frame another process of this interface received, without
        answering it (that process did; stack/workers.py)."""
        self._arp_input(iface, skb, now, answer=False)

    def _arp_input(self, iface: Interface, skb: SkBuff, now: float,
                   answer: bool = True) -> None:
        try:
            pkt = ArpPacket.parse(skb.view()[ETH_HLEN:])
        except WireError as e:
            return self._drop(e.reason)
        for_us = pkt.tpa == iface.addr
        if pkt.spa != _ZERO and not pkt.sha[0] & 1 and pkt.spa not in self.by_addr:
            n = self.neigh.update(iface, pkt.spa, pkt.sha, now, create=for_us)
            if n is not None and n.pending:
                self._flush_pending(n)
        if not for_us:
            return self._drop("arp_not_for_us")
        self.counters["rx_arp"] += 1
        if pkt.op == ARP_REQUEST and answer:
            self._send_arp(iface, ARP_REPLY, pkt.sha, iface.addr, pkt.sha, pkt.spa)

    def _send_arp(self, iface: Interface, op: int, eth_dst: bytes, spa: bytes, tha: bytes,
                  tpa: bytes) -> None:
        body = ArpPacket(op, iface.mac, spa, tha, tpa).to_bytes()
        skb = SkBuff.from_bytes(eth_dst + iface.mac + _ETH_ARP + body, headroom=HEADROOM)
        self.counters["tx_arp"] += 1
        self.outbox.append((iface, skb))

    def _ip_input(self, iface: Interface, skb: SkBuff, now: float) -> None:
        buf = skb.buf
        d = skb.data + ETH_HLEN
        avail = skb.tail - d
        if avail < IP_MIN_HLEN:
            return self._drop("ipv4_truncated")
        vihl = buf[d]
        if vihl >> 4 != 4:
            return self._drop("ipv4_bad_version")
        ihl = (vihl & 15) << 2
        if ihl < IP_MIN_HLEN or ihl > avail:
            return self._drop("ipv4_bad_ihl")
        totlen = _H.unpack_from(buf, d + IP_TOTLEN)[0]
        if totlen < ihl or totlen > avail:
            return self._drop("ipv4_bad_total_length")
        mv = memoryview(buf)
        if cks.ones_sum(mv[d:d + ihl]) != 0xFFFF:
            return self._drop("ipv4_bad_checksum")
        if ihl > IP_MIN_HLEN:
            try:
                wip.parse_options(mv[d + IP_MIN_HLEN:d + ihl])
            except WireError:
                return self._drop("ipv4_bad_options")
        skb.tail = d + totlen  # cut Ethernet padding
        src = bytes(mv[d + IP_SRC:d + IP_DST])
        dst = bytes(mv[d + IP_DST:d + IP_MIN_HLEN])
        if src[0] >= 224 or src[0] in (0, 127) or src in self.by_addr:
            return self._drop("ipv4_martian_source")
        if dst in self.by_addr:
            return self._local_input(iface, skb, d, ihl, src, dst, now)
        if dst == b"\xff\xff\xff\xff" or (dst == iface.broadcast and iface.configured):
            if buf[d + IP_PROTO] == wip.IPPROTO_UDP and wip.IPPROTO_UDP in self.protocols:
                # UDP sockets that asked for broadcasts hear them (a DHCP client).
                return self._local_input(iface, skb, d, ihl, src, dst, now)
            return self._drop("ipv4_broadcast")
        if dst[0] >= 224:
            return self._drop("ipv4_broadcast")
        if not self.forwarding:
            return self._drop("ipv4_not_for_us")
        return self._forward(iface, skb, d, ihl, totlen, dst, now)

    # -- forwarding ----------------------------------------------------------------
    def _forward(self, iface: Interface, skb: SkBuff, d: int, ihl: int, totlen: int,
                 dst: bytes, now: float) -> None:
        buf = skb.buf
        ttl = buf[d + IP_TTL]
        if ttl <= 1:
            self._icmp_error(iface, skb.view()[ETH_HLEN:], wicmp.TIME_EXCEEDED,
                             wicmp.EXC_TTL, now)
            return self._drop("ipv4_ttl_expired")
        route = self.routes.lookup(dst)
        if route is None:
            self._icmp_error(iface, skb.view()[ETH_HLEN:], wicmp.DEST_UNREACH,
                             wicmp.UNREACH_NET, now)
            return self._drop("ipv4_no_route")
        out = route.iface
        # RFC 1812 §5.3.1: decrement TTL, patch the header checksum incrementally
        # (RFC 1624) rather than summing the header again.
        old = (ttl << 8) | buf[d + IP_PROTO]
        buf[d + IP_TTL] = ttl - 1
        csum = _H.unpack_from(buf, d + IP_CSUM)[0]
        _H.pack_into(buf, d + IP_CSUM, cks.update16(csum, old, old - 0x100))
        wire_len = totlen
        if skb.gso_size:
            # A super-frame's wire segments are its headers plus gso_size each: the
            # TCP header must be there to say how long they are.
            t = d + ihl
            if t + TCP_MIN_HLEN > skb.tail or (buf[t + TCP_DOFF] >> 4) << 2 < TCP_MIN_HLEN:
                return self._drop("tcp_truncated")
            wire_len = ihl + ((buf[t + TCP_DOFF] >> 4) << 2) + skb.gso_size
        if wire_len > out.mtu:
            return self._forward_too_big(iface, out, skb, d, ihl, route.via or dst, now)
        self.counters["rx_forwarded"] += 1
        self._link_output(out, route.via or dst, skb, now, forwarded=True)

    def _forward_too_big(self, iface: Interface, out: Interface, skb: SkBuff, d: int,
                         ihl: int, nexthop: bytes, now: float) -> None:
        buf = skb.buf
        if buf[d + IP_FRAG] << 8 & IP_FLAG_DF or skb.gso_size:
            # DF set (always the case for TSO frames): RFC 1191 path MTU discovery.
            self._icmp_error(iface, skb.view()[ETH_HLEN:], wicmp.DEST_UNREACH,
                             wicmp.UNREACH_NEEDFRAG, now, mtu=out.mtu)
            return self._drop("ipv4_frag_needed")
        gso.complete_checksum(skb)
        mv = skb.view()
        frags = fragment(mv[ETH_HLEN:ETH_HLEN + ihl], mv[ETH_HLEN + ihl:], out.mtu)
        self.counters["rx_forwarded"] += 1
        self.counters["ipv4_fragmented"] += 1
        for f in frags:
            frag_skb = SkBuff.from_bytes(bytes(mv[:ETH_HLEN]) + f, headroom=HEADROOM)
            self._link_output(out, nexthop, frag_skb, now, forwarded=True)

    # -- local delivery ----------------------------------------------------------------
    def _local_input(self, iface: Interface, skb: SkBuff, d: int, ihl: int, src: bytes,
                     dst: bytes, now: float) -> None:
        buf = skb.buf
        frag = _H.unpack_from(buf, d + IP_FRAG)[0]
        proto = buf[d + IP_PROTO]
        if frag & IP_FRAG_MF_OFFSET:
            mv = skb.view()
            key = (src, dst, proto, _H.unpack_from(buf, d + IP_IDENT)[0])
            whole, reason = self.reasm.add(key, bytes(mv[ETH_HLEN:ETH_HLEN + ihl]),
                                           (frag & IP_FRAG_OFFSET_MASK) << 3,
                                           bool(frag & IP_FLAG_MF),
                                           bytes(mv[ETH_HLEN + ihl:]), now)
            if reason is not None:
                return self._drop(reason)
            self.counters["rx_local"] += 1
            if whole is None:
                return None
            skb = SkBuff.from_bytes(whole.payload, headroom=HEADROOM)
            return self._deliver(iface, skb, whole.header + whole.payload[:8], proto,
                                 src, dst, now)
        # Where the IP header starts, for layers that relay the frame as it is (splice).
        skb.network_off = d
        skb.pull(ETH_HLEN + ihl)
        self.counters["rx_local"] += 1
        quoted = bytes(memoryview(buf)[d:d + ihl + _QUOTE_MIN - IP_MIN_HLEN])
        return self._deliver(iface, skb, quoted, proto, src, dst, now)

    def _deliver(self, iface: Interface, skb: SkBuff, quoted: bytes, proto: int, src: bytes,
                 dst: bytes, now: float) -> None:
        handler = self.protocols.get(proto)
        if handler is not None:
            skb.dev = iface
            if handler.input(skb, src, dst, now) is False:
                # No socket took the datagram (UDP): RFC 1122 §4.1.3.1.
                self._icmp_error(iface, quoted, wicmp.DEST_UNREACH, wicmp.UNREACH_PORT, now)
        elif proto == wip.IPPROTO_ICMP:
            self._icmp_input(iface, skb, src, dst, now)
        elif proto == wip.IPPROTO_UDP:
            self._udp_input(iface, skb, quoted, src, dst, now)
        else:
            self.counters["ip_unknown_protocol"] += 1
            self._icmp_error(iface, quoted, wicmp.DEST_UNREACH, wicmp.UNREACH_PROTOCOL, now)

    def _udp_input(self, iface: Interface, skb: SkBuff, quoted: bytes, src: bytes,
                   dst: bytes, now: float) -> None:
        """No UDP port is open here: a well-formed datagram earns a port unreachable
        (RFC 1122 §4.1.3.1). A truncated one, or one whose length or checksum is
        wrong, is counted and dropped unanswered, as Linux does (InErrors,
        InCsumErrors): it may not even have come from its source."""
        datagram = skb.view()
        try:
            hdr = wudp.UdpHeader.parse(datagram)
        except WireError as e:
            self.counters[e.reason] += 1
            return None
        trusted = skb.vnet_flags & (VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID)
        if not trusted and not wudp.verify(src, dst, datagram[:hdr.length]):
            self.counters["udp_bad_checksum"] += 1
            return None
        self.counters["udp_no_port"] += 1
        self._icmp_error(iface, quoted, wicmp.DEST_UNREACH, wicmp.UNREACH_PORT, now)

    def _icmp_input(self, iface: Interface, skb: SkBuff, src: bytes, dst: bytes,
                    now: float) -> None:
        trusted = skb.vnet_flags & (VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID)
        try:
            msg = wicmp.IcmpMessage.parse(skb.view(), verify_checksum=not trusted)
        except WireError as e:
            self.counters["icmp_" + e.reason] += 1
            return None
        if msg.type == wicmp.ECHO_REQUEST:
            self.counters["icmp_echo_replies"] += 1
            self.send_ip(dst, src, wip.IPPROTO_ICMP, sicmp.echo_reply(msg), now, df=False)
        elif msg.is_error:
            self.counters["icmp_errors_received"] += 1
            self._icmp_error_input(msg, now)
        else:
            self.counters["icmp_ignored"] += 1

    def _icmp_error_input(self, msg: wicmp.IcmpMessage, now: float) -> None:
        """Hand an ICMP error to the protocol whose datagram it quotes (RFC 5927)."""
        q = bytes(msg.payload)
        ihl = (q[0] & 15) * 4 if q else 0
        # RFC 792 / RFC 1812 §4.3.2.3: the quote is the original IPv4 header and at
        # least 8 bytes of its payload (TCP: the ports and the sequence number).
        if (len(q) < _QUOTE_MIN or q[0] >> 4 != 4 or ihl < IP_MIN_HLEN
                or len(q) < ihl + _QUOTE_MIN - IP_MIN_HLEN):
            self.counters["icmp_error_bad_quote"] += 1
            return
        handler = self.protocols.get(q[IP_PROTO])
        if handler is None or not hasattr(handler, "icmp_error"):
            self.counters["icmp_error_no_protocol"] += 1
            return
        sport, dport, seg_seq = _QUOTED_TCP.unpack_from(q, ihl)
        # The quoted sequence number lets TCP check the error is about data in flight
        # (RFC 5927 §4.1); the next-hop MTU drives path MTU discovery (RFC 1191).
        mtu = msg.rest & 0xFFFF if msg.type == wicmp.DEST_UNREACH else 0
        handler.icmp_error(q[IP_SRC:IP_DST], q[IP_DST:IP_MIN_HLEN], sport, dport, msg.type,
                           msg.code, now,
                           mtu=mtu, seg_seq=seg_seq)

    def _icmp_error(self, iface: Interface, original: bytes | memoryview, type_: int,
                    code: int, now: float, mtu: int = 0) -> None:
        if len(original) < IP_MIN_HLEN:
            return
        src = bytes(original[IP_SRC:IP_DST])
        frag_off = _H.unpack_from(original, IP_FRAG)[0] & IP_FRAG_OFFSET_MASK
        proto = original[IP_PROTO]
        is_err = False
        ihl = (original[0] & 15) * 4
        if proto == wip.IPPROTO_ICMP and len(original) > ihl:
            is_err = original[ihl] not in wicmp.QUERY_TYPES
        dst = bytes(original[IP_DST:IP_MIN_HLEN])
        bcast = dst[0] >= 224 or dst == b"\xff\xff\xff\xff" or dst == iface.broadcast
        if not sicmp.may_send_error(src, bcast, is_err, frag_off):
            self.counters["icmp_error_suppressed"] += 1
            return
        if not self.icmp_bucket.take(now):
            self.counters["icmp_error_ratelimited"] += 1
            return
        self.counters[f"icmp_sent_{type_}_{code}"] += 1
        self.send_ip(iface.addr, src, wip.IPPROTO_ICMP,
                     sicmp.error(type_, code, original, mtu), now, df=False)

    # -- output -----------------------------------------------------------------------
    def send_ip(self, src: bytes, dst: bytes, proto: int, payload: bytes, now: float, *,
                df: bool = True, ttl: int = 64) -> bool:
        """Send ``payload`` as one IPv4 datagram (fragmented if it must be)."""
        skb = SkBuff.from_bytes(payload, headroom=HEADROOM)
        return self.ip_output(src, dst, proto, skb, now, df=df, ttl=ttl)

    def route(self, dst: bytes) -> RouteInfo | None:
        """Source, MTU and offload of the way to ``dst`` (TCP's IpService; IPv6: ip6.py)."""
        from stack.tcp.api import RouteInfo
        if len(dst) == 16:
            return self.ip6.route(dst)
        r = self.routes.lookup(dst)
        if r is None:
            return None
        return RouteInfo(r.iface.addr, r.iface.mtu, r.iface.offload)

    def ip_output(self, src: bytes, dst: bytes, proto: int, skb: SkBuff, now: float, *,
                  df: bool = True, ttl: int = 64, iface: int | None = None) -> bool:
        """Prepend an IPv4 header to ``skb`` (data at the transport header) and send it.
        To 255.255.255.255 it goes to the broadcast MAC of interface ``iface`` (an
        index; default the first), routed nowhere (RFC 919). IPv6: stack/ip6.py."""
        if len(dst) == 16:
            return self.ip6.output(src, dst, proto, skb, now)
        if dst == b"\xff\xff\xff\xff":
            return self._broadcast_output(src, dst, proto, skb, iface, df, ttl)
        route = self.routes.lookup(dst)
        if route is None:
            self.counters["tx_no_route"] += 1
            return False
        if dst in self.by_addr:
            self.counters["tx_to_self_unsupported"] += 1
            return False
        plen = len(skb)
        total = IP_MIN_HLEN + plen
        if total > 65535:
            self.counters["tx_too_long"] += 1
            return False
        self._push_ipv4(skb, src, dst, proto, total, df, ttl)
        out = route.iface
        nexthop = route.via or dst
        if total > out.mtu and not skb.gso_size:
            if df:
                self.counters["tx_too_big"] += 1
                return False
            gso.complete_checksum(skb)
            mv = skb.view()
            for f in fragment(mv[:IP_MIN_HLEN], mv[IP_MIN_HLEN:], out.mtu):
                self._link_output(out, nexthop, SkBuff.from_bytes(f, headroom=HEADROOM),
                                  now, forwarded=False, has_eth=False)
            return True
        self.counters["tx_ip"] += 1
        return self._link_output(out, nexthop, skb, now, forwarded=False, has_eth=False)

    def _push_ipv4(self, skb: SkBuff, src: bytes, dst: bytes, proto: int, total: int,
                   df: bool, ttl: int) -> None:
        """Prepend a 20-byte IPv4 header with the next identification and its checksum."""
        self._ident = (self._ident + 1) & 0xFFFF
        h = skb.push(IP_MIN_HLEN)
        wip.IPV4_HEADER.pack_into(h, 0, IP_VIHL_NO_OPTIONS, 0, total, self._ident,
                                  IP_FLAG_DF if df else 0, ttl, proto, 0, src, dst)
        _H.pack_into(h, IP_CSUM, cks.checksum(h))
        if skb.vnet_flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
            skb.csum_start += IP_MIN_HLEN

    def _broadcast_output(self, src: bytes, dst: bytes, proto: int, skb: SkBuff,
                          index: int | None, df: bool, ttl: int) -> bool:
        if not self.interfaces:
            self.counters["tx_no_route"] += 1
            return False
        out = self.interfaces[index or 0]
        total = IP_MIN_HLEN + len(skb)
        if total > out.mtu:
            self.counters["tx_too_big"] += 1
            return False
        self._push_ipv4(skb, src, dst, proto, total, df, ttl)
        skb.push(ETH_HLEN)[ETH_TYPE:ETH_HLEN] = _ETH_IP
        if skb.vnet_flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
            skb.csum_start += ETH_HLEN
        self.counters["tx_broadcast"] += 1
        self._emit(out, BROADCAST, skb)
        return True

    def output_frame(self, skb: SkBuff, now: float) -> bool:
        """Send a complete frame (data at its Ethernet header, IPv4 header filled in,
        addressed to a remote host) towards its destination: route, neighbour, MACs.
        Used by the splice relay, which rewrites received frames in place."""
        dst = bytes(skb.buf[skb.data + FRAME_IP_DST:skb.data + FRAME_TCP])
        route = self.routes.lookup(dst)
        if route is None:
            self.counters["tx_no_route"] += 1
            return False
        return self._link_output(route.iface, route.via or dst, skb, now, forwarded=False)

    def _link_output(self, out: Interface, nexthop: bytes, skb: SkBuff, now: float, *,
                     forwarded: bool, has_eth: bool = True) -> bool:
        """Address the frame to ``nexthop``'s MAC (resolving it if needed) and queue it."""
        if not has_eth:
            skb.push(ETH_HLEN)[ETH_TYPE:ETH_HLEN] = _ETH_IP
            if skb.vnet_flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
                skb.csum_start += ETH_HLEN
            if skb.gso_size:
                b, t = skb.buf, skb.data + FRAME_TCP
                skb.hdr_len = FRAME_TCP + ((b[t + TCP_DOFF] >> 4) << 2)
        n = self.neigh.get(out, nexthop)
        if n is None or n.mac is None:
            return self._queue_unresolved(out, nexthop, skb, now, forwarded)
        if self.neigh.needs_refresh(n, now):
            self._send_arp(out, ARP_REQUEST, n.mac, out.addr, b"\0" * 6, nexthop)
        self._emit(out, n.mac, skb)
        return True

    def _emit(self, out: Interface, mac: bytes, skb: SkBuff) -> None:
        d = skb.data
        buf = skb.buf
        buf[d + ETH_DST:d + ETH_SRC] = mac
        buf[d + ETH_SRC:d + ETH_TYPE] = out.mac
        if not out.offload and (skb.gso_size or skb.vnet_flags & VIRTIO_NET_HDR_F_NEEDS_CSUM):
            self.counters["tx_software_offload"] += 1
            for seg in gso.software_offload(skb):
                self.outbox.append((out, seg))
            return
        self.outbox.append((out, skb))

    def _queue_unresolved(self, out: Interface, nexthop: bytes, skb: SkBuff, now: float,
                          forwarded: bool) -> bool:
        n = self.neigh.start_resolution(out, nexthop, now)
        if n is None:
            self._drop("arp_table_full", count_rx=False)
            return False
        if len(n.pending) >= self.neigh.max_pending:
            self._drop("arp_queue_full", count_rx=False)
            return False
        n.pending.append(PendingFrame(skb.tobytes(), save_vnet(skb), forwarded))
        if n.probes == 0:
            n.probes = 1
            n.next_probe = now + self.neigh.retrans_time
            self._send_arp(out, ARP_REQUEST, BROADCAST, out.addr, b"\0" * 6, nexthop)
        return True

    def _flush_pending(self, n) -> None:
        while n.pending:
            p = n.pending.popleft()
            skb = SkBuff.from_bytes(p.frame, headroom=HEADROOM)
            restore_vnet(skb, p.vnet)
            self._emit(n.iface, n.mac, skb)


__all__ = ["Stack", "ProtocolHandler", "FlowEnds", "flow_key", "HEADROOM", "ETH_P_IP", "ETH_P_ARP"]
