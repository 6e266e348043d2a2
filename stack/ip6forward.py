"""IPv6 forwarding for a router stack (RFC 8200, RFC 4443), on the received frame.

The frame is forwarded in place, as IPv4's (stack/core.py): only the hop limit
changes (IPv6 has no header checksum, RFC 8200 §3), so a TCP super-segment from the
TAP keeps its virtio offload state (VIRTIO_NET_HDR_GSO_TCPV6, gso_size, a partial
checksum) and leaves whole. A router never fragments IPv6 (RFC 8200 §5): a packet,
or a super-segment's wire segments, larger than the outgoing link's MTU earns a
Packet Too Big carrying that MTU (RFC 4443 §3.2, RFC 8201). A hop limit of 1 or 0
ends in a Time Exceeded (RFC 4443 §3.3), after the hop-by-hop options were read
(RFC 8200 §4.3); no route in a Destination Unreachable
code 0, a link-local source or destination is never forwarded (RFC 4291 §2.5.6;
code 2 "beyond the scope of the source address", RFC 4443 §3.1). The next hop on
the outgoing link is resolved by Neighbor Discovery like the stack's own packets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stack.skbuff import SkBuff
from stack.wire import WireError, ipv6ext
from stack.wire import icmp6 as wicmp6
from stack.wire import ipv6 as wip6
from stack.wire.ethernet import ETH_HLEN
from stack.wire.fields import TCP_DOFF, TCP_MIN_HLEN

if TYPE_CHECKING:
    from stack.iface import Interface
    from stack.ip6 import Ipv6Layer

_HLIM = wip6.IP6_HLIM


def forward(layer: Ipv6Layer, iface: Interface, skb: SkBuff, hdr: wip6.Ipv6Header,
            now: float) -> None:
    """Forward one received packet that is not for the stack (``hdr`` checked)."""
    stack = layer.stack
    buf = skb.buf
    d = skb.data + ETH_HLEN
    end = d + wip6.IPV6_HLEN + hdr.payload_length
    skb.tail = end      # cut Ethernet padding
    src, dst = hdr.src, hdr.dst
    if wip6.is_multicast(dst) or wip6.is_unspecified(dst) or wip6.is_link_local(dst):
        return stack._drop("ipv6_not_for_us")
    if wip6.is_link_local(src) or wip6.is_unspecified(src):
        _error(layer, iface, skb, wicmp6.DEST_UNREACH, wicmp6.UNREACH_BEYOND_SCOPE, 0, now)
        return stack._drop("ipv6_link_local_source")
    if hdr.next_header == wip6.IPPROTO_HOPOPTS and not _hop_by_hop(layer, iface, skb, d,
                                                                    end, now):
        return None
    if hdr.hop_limit <= 1:
        _error(layer, iface, skb, wicmp6.TIME_EXCEEDED, wicmp6.EXC_HOP_LIMIT, 0, now)
        return stack._drop("ipv6_hop_limit_exceeded")
    hop = layer.routes.lookup(dst)
    if hop is None:
        _error(layer, iface, skb, wicmp6.DEST_UNREACH, wicmp6.UNREACH_NO_ROUTE, 0, now)
        return stack._drop("ipv6_no_route")
    wire_len = end - d
    if skb.gso_size:
        # A super-segment's wire segments are its headers plus gso_size each: the
        # TCP header right after the fixed header says how long they are.
        t = d + wip6.IPV6_HLEN
        if hdr.next_header != wip6.IPPROTO_TCP or t + TCP_MIN_HLEN > end \
                or (buf[t + TCP_DOFF] >> 4) << 2 < TCP_MIN_HLEN:
            return stack._drop("tcp6_gso_unparsable")
        wire_len = wip6.IPV6_HLEN + ((buf[t + TCP_DOFF] >> 4) << 2) + skb.gso_size
    mtu = layer.path_mtu(hop.iface)
    if wire_len > mtu:
        _error(layer, iface, skb, wicmp6.PACKET_TOO_BIG, 0, mtu, now)
        return stack._drop("ipv6_packet_too_big")
    buf[d + _HLIM] = hdr.hop_limit - 1
    stack.counters["rx_forwarded"] += 1
    layer._link_output(hop.iface, hop.nexthop, skb, now, forwarded=True)


def _hop_by_hop(layer: Ipv6Layer, iface: Interface, skb: SkBuff, d: int, end: int,
                now: float) -> bool:
    """RFC 8200 §4.3: every router on the path reads the hop-by-hop options; one it
    does not know acts by the two high bits of its type (skip, discard, discard and
    answer a Parameter Problem code 2). None is known here. False: dropped."""
    packet = memoryview(skb.buf)[d:end]
    n = len(packet)
    hlen = 8 * (packet[wip6.IPV6_HLEN + 1] + 1) if n >= wip6.IPV6_HLEN + 8 else n
    if wip6.IPV6_HLEN + hlen > n:
        layer.stack._drop("ipv6_ext_truncated")
        return False
    try:
        ipv6ext.walk_options(packet, wip6.IPV6_HLEN + 2, wip6.IPV6_HLEN + hlen, False)
    except ipv6ext.ParameterProblem as e:
        if e.answer:
            _error(layer, iface, skb, wicmp6.PARAM_PROBLEM, e.code, e.pointer, now)
        layer.stack._drop(e.reason)
        return False
    except WireError as e:
        layer.stack._drop(e.reason)
        return False
    return True


def _error(layer: Ipv6Layer, iface: Interface, skb: SkBuff, type_: int, code: int,
           rest: int, now: float) -> None:
    """An ICMPv6 error about the frame's packet (quoted as far as RFC 4443 allows)."""
    frame = skb.view()
    quote_end = min(len(frame), ETH_HLEN + wip6.IPV6_MIN_MTU)
    layer._icmp_error(iface, bytes(frame[ETH_HLEN:quote_end]), type_, code, rest, now,
                      link_mcast=bool(frame[0] & 1))
