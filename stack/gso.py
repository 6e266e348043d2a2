"""Software fallbacks for offloads: checksum completion and TCP segmentation.

Used only when a frame carrying offload state (a TSO super-segment, or a partial
checksum with VIRTIO_NET_HDR_F_NEEDS_CSUM) must leave through a device opened without
offloads, or be inspected by code that needs the final bytes. With offloads on both
sides the fast path never calls into this module.
"""

from __future__ import annotations

from collections.abc import Callable

from stack.netdev import offload
from stack.skbuff import SkBuff
from stack.wire import checksum as cks
from stack.wire.ethernet import ETH_HLEN
from stack.wire.fields import (
    IP6_DST,
    IP6_HLEN,
    IP6_PLEN,
    IP6_SRC,
    IP_CSUM,
    IP_DST,
    IP_IDENT,
    IP_MIN_HLEN,
    IP_SRC,
    IP_TOTLEN,
    TCP_CSUM,
    TCP_FLAGS,
    TCP_SEQ,
    U16,
    U32,
    ip_header_len,
    tcp_header_len,
)
from stack.wire.ipv4 import IPPROTO_TCP
from stack.wire.tcp import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG
from stack.wire.vnet import (
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_TCPV6,
)

_H = U16
_L = U32


def complete_checksum(skb: SkBuff) -> None:
    """Finish a partial checksum in place (the device would have done it) and clear
    the offload flag."""
    if not skb.vnet_flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
        return
    if skb.data + skb.csum_start + skb.csum_offset + 2 <= skb.tail:
        offload.complete_checksum(skb.buf, skb.data, skb.tail, skb.csum_start,
                                  skb.csum_offset)
    skb.vnet_flags &= ~VIRTIO_NET_HDR_F_NEEDS_CSUM


def segment_tcp4(skb: SkBuff) -> list[SkBuff]:
    """Split a TCPv4 super-frame (Ethernet + IPv4 + TCP + payload, gso_size set) into
    frames of at most gso_size payload bytes with complete checksums.

    Per RFC 9293 the flags that belong to the end of the data (FIN, PSH) stay on the
    last segment only; CWR only on the first (RFC 3168 §6.1.2, as Linux's GSO does).
    """
    ip0 = skb.data + ETH_HLEN
    ihl = ip_header_len(skb.buf, ip0)
    ident0 = _H.unpack_from(skb.buf, ip0 + IP_IDENT)[0]
    src = bytes(skb.buf[ip0 + IP_SRC:ip0 + IP_DST])
    dst = bytes(skb.buf[ip0 + IP_DST:ip0 + IP_MIN_HLEN])

    def fix_ip(b: bytearray, ip: int, i: int, seglen: int) -> int:
        _H.pack_into(b, ip + IP_TOTLEN, ihl + seglen)
        _H.pack_into(b, ip + IP_IDENT, (ident0 + i) & 0xFFFF)
        _H.pack_into(b, ip + IP_CSUM, 0)
        _H.pack_into(b, ip + IP_CSUM, cks.checksum(memoryview(b)[ip:ip + ihl]))
        return cks.pseudo_header_sum(src, dst, IPPROTO_TCP, seglen)

    return _segment(skb, ihl, fix_ip)


def segment_tcp6(skb: SkBuff) -> list[SkBuff]:
    """:func:`segment_tcp4` for a TCPv6 super-frame (the TCP header right after the
    fixed IPv6 header, as the stack and the kernel build them)."""
    ip0 = skb.data + ETH_HLEN
    src = bytes(skb.buf[ip0 + IP6_SRC:ip0 + IP6_DST])
    dst = bytes(skb.buf[ip0 + IP6_DST:ip0 + IP6_HLEN])

    def fix_ip(b: bytearray, ip: int, i: int, seglen: int) -> int:
        _H.pack_into(b, ip + IP6_PLEN, seglen)
        return cks.pseudo_header_sum6(src, dst, IPPROTO_TCP, seglen)

    return _segment(skb, IP6_HLEN, fix_ip)


def _segment(skb: SkBuff, ihl: int,
             fix_ip: Callable[[bytearray, int, int, int], int]) -> list[SkBuff]:
    """The TCP half of segmentation; ``fix_ip`` sets the IP header of segment i
    (its TCP length given) and returns the pseudo-header sum."""
    mv = memoryview(skb.buf)
    f = skb.data
    tcp_off = f + ETH_HLEN + ihl
    thl = tcp_header_len(skb.buf, tcp_off)
    hdr_end = tcp_off + thl
    payload = skb.tail - hdr_end
    mss = skb.gso_size or payload or 1
    headers = bytes(mv[f:hdr_end])
    seq0 = _L.unpack_from(skb.buf, tcp_off + TCP_SEQ)[0]
    flags0 = skb.buf[tcp_off + TCP_FLAGS]
    out = []
    n = max(1, -(-payload // mss))
    for i in range(n):
        start = hdr_end + i * mss
        chunk = mv[start:min(start + mss, skb.tail)]
        seg = SkBuff.from_bytes(headers, headroom=64, tailroom=len(chunk))
        seg.put_data(chunk)
        b = seg.buf
        ip = seg.data + ETH_HLEN
        t = ip + ihl
        seglen = thl + len(chunk)
        ph = fix_ip(b, ip, i, seglen)
        _L.pack_into(b, t + TCP_SEQ, (seq0 + i * mss) & 0xFFFFFFFF)
        flags = flags0
        if i != n - 1:
            flags &= ~(FIN | PSH)
        if i != 0:
            flags &= ~CWR
        b[t + TCP_FLAGS] = flags & (FIN | SYN | RST | PSH | ACK | URG | CWR | ECE)
        _H.pack_into(b, t + TCP_CSUM, 0)
        _H.pack_into(b, t + TCP_CSUM, cks.checksum(memoryview(b)[t:t + seglen], ph))
        seg.dev = skb.dev
        out.append(seg)
    return out


def software_offload(skb: SkBuff) -> list[SkBuff]:
    """Frames equivalent to ``skb`` that need no offload from the device."""
    if skb.gso_size and skb.gso_type:
        if skb.gso_type & ~VIRTIO_NET_HDR_GSO_ECN == VIRTIO_NET_HDR_GSO_TCPV6:
            return segment_tcp6(skb)
        return segment_tcp4(skb)
    complete_checksum(skb)
    skb.clear_vnet()
    return [skb]
