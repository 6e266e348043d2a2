"""Software fallbacks for offloads: checksum completion and TCP segmentation.

Used only when a frame carrying offload state (a TSO super-segment, or a partial
checksum with VIRTIO_NET_HDR_F_NEEDS_CSUM) must leave through a device opened without
offloads, or be inspected by code that needs the final bytes. With offloads on both
sides the fast path never calls into this module.
"""

from __future__ import annotations

import struct

from stack.netdev import offload
from stack.skbuff import SkBuff
from stack.wire import checksum as cks
from stack.wire.ethernet import ETH_HLEN
from stack.wire.tcp import ACK, CWR, FIN, PSH, RST, SYN, URG
from stack.wire.vnet import VIRTIO_NET_HDR_F_NEEDS_CSUM

_H = struct.Struct("!H")
_L = struct.Struct("!L")


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
    ihl = (skb.buf[f + ETH_HLEN] & 0x0F) * 4
    tcp_off = f + ETH_HLEN + ihl
    thl = (skb.buf[tcp_off + 12] >> 4) * 4
    hdr_end = tcp_off + thl
    payload = skb.tail - hdr_end
    mss = skb.gso_size or payload or 1
    headers = bytes(mv[f:hdr_end])
    seq0 = _L.unpack_from(skb.buf, tcp_off + 4)[0]
    ident0 = _H.unpack_from(skb.buf, f + ETH_HLEN + 4)[0]
    flags0 = skb.buf[tcp_off + 13]
    src = bytes(mv[f + ETH_HLEN + 12:f + ETH_HLEN + 16])
    dst = bytes(mv[f + ETH_HLEN + 16:f + ETH_HLEN + 20])
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
        _H.pack_into(b, ip + 2, ihl + thl + len(chunk))
        _H.pack_into(b, ip + 4, (ident0 + i) & 0xFFFF)
        _H.pack_into(b, ip + 10, 0)
        _H.pack_into(b, ip + 10, cks.checksum(memoryview(b)[ip:ip + ihl]))
        _L.pack_into(b, t + 4, (seq0 + i * mss) & 0xFFFFFFFF)
        flags = flags0
        if i != n - 1:
            flags &= ~(FIN | PSH)
        if i != 0:
            flags &= ~CWR
        b[t + 13] = flags & (FIN | SYN | RST | PSH | ACK | URG | CWR | 0x40)
        _H.pack_into(b, t + 16, 0)
        seglen = thl + len(chunk)
        ph = cks.pseudo_header_sum(src, dst, 6, seglen)
        _H.pack_into(b, t + 16, cks.checksum(memoryview(b)[t:t + seglen], ph))
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
