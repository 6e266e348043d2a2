"""Software fallbacks for offloads: checksum completion and TCP segmentation.

Used only when a frame carrying offload state (a TSO super-segment, or a partial
checksum with VIRTIO_NET_HDR_F_NEEDS_CSUM) must leave through a device opened without
offloads, or be inspected by code that needs the final bytes. With offloads on both
sides the fast path never calls into this module.
"""

from __future__ import annotations

from stack.netdev import offload
from stack.skbuff import SkBuff
from stack.wire import checksum as cks
from stack.wire.ethernet import ETH_HLEN
from stack.wire.fields import (
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
from stack.wire.vnet import VIRTIO_NET_HDR_F_NEEDS_CSUM

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
    mv = memoryview(skb.buf)
    f = skb.data
    ip0 = f + ETH_HLEN
    ihl = ip_header_len(skb.buf, ip0)
    tcp_off = ip0 + ihl
    thl = tcp_header_len(skb.buf, tcp_off)
    hdr_end = tcp_off + thl
    payload = skb.tail - hdr_end
    mss = skb.gso_size or payload or 1
    headers = bytes(mv[f:hdr_end])
    seq0 = _L.unpack_from(skb.buf, tcp_off + TCP_SEQ)[0]
    ident0 = _H.unpack_from(skb.buf, ip0 + IP_IDENT)[0]
    flags0 = skb.buf[tcp_off + TCP_FLAGS]
    src = bytes(mv[ip0 + IP_SRC:ip0 + IP_DST])
    dst = bytes(mv[ip0 + IP_DST:ip0 + IP_MIN_HLEN])
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
        _H.pack_into(b, ip + IP_TOTLEN, ihl + thl + len(chunk))
        _H.pack_into(b, ip + IP_IDENT, (ident0 + i) & 0xFFFF)
        _H.pack_into(b, ip + IP_CSUM, 0)
        _H.pack_into(b, ip + IP_CSUM, cks.checksum(memoryview(b)[ip:ip + ihl]))
        _L.pack_into(b, t + TCP_SEQ, (seq0 + i * mss) & 0xFFFFFFFF)
        flags = flags0
        if i != n - 1:
            flags &= ~(FIN | PSH)
        if i != 0:
            flags &= ~CWR
        b[t + TCP_FLAGS] = flags & (FIN | SYN | RST | PSH | ACK | URG | CWR | ECE)
        _H.pack_into(b, t + TCP_CSUM, 0)
        seglen = thl + len(chunk)
        ph = cks.pseudo_header_sum(src, dst, IPPROTO_TCP, seglen)
        _H.pack_into(b, t + TCP_CSUM, cks.checksum(memoryview(b)[t:t + seglen], ph))
        seg.dev = skb.dev
        out.append(seg)
    return out


def software_offload(skb: SkBuff) -> list[SkBuff]:
    """Frames equivalent to ``skb`` that need no offload from the device."""
    if skb.gso_size and skb.gso_type:
        return segment_tcp4(skb)
    complete_checksum(skb)
    skb.clear_vnet()
    return [skb]
