"""Hand-made relay frames and an independent checksum oracle for the splice tests.

Frames are built byte by byte here (not with the code under test), and checked with
dpkt and a plain word-by-word checksum, so that a shared mistake cannot hide.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import dpkt

from stack.skbuff import SkBuff
from stack.wire.vnet import (
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_TCPV4,
)

ETH = 14
HEADROOM = 64
MAC_A = b"\x02\x00\x00\x00\x00\x01"
MAC_B = b"\x02\x00\x00\x00\x00\x02"


def ref_sum(data: bytes) -> int:
    """One's-complement sum of 16-bit big-endian words, word by word (RFC 1071)."""
    if len(data) % 2:
        data += b"\x00"
    s = 0
    for (w,) in struct.iter_unpack("!H", data):
        s += w
        s = (s & 0xFFFF) + (s >> 16)
    return s


def pseudo(src: bytes, dst: bytes, tcp_len: int) -> bytes:
    """IPv4 pseudo-header bytes (RFC 9293 §3.1)."""
    return src + dst + bytes((0, 6)) + struct.pack("!H", tcp_len)


def tcp_csum(src: bytes, dst: bytes, seg: bytes) -> int:
    """The full TCP checksum of ``seg`` with its checksum field taken as zero."""
    seg = seg[:16] + b"\x00\x00" + seg[18:]
    return ~ref_sum(pseudo(src, dst, len(seg)) + seg) & 0xFFFF


def tcp_verifies(src: bytes, dst: bytes, seg: bytes) -> bool:
    """The whole segment, pseudo-header included, sums to 0xFFFF."""
    return ref_sum(pseudo(src, dst, len(seg)) + seg) == 0xFFFF


# -- options as items ---------------------------------------------------------
@dataclass(frozen=True)
class Opt:
    """One TCP option: ``kind`` 1 (NOP), 8 (TS: ``values`` = TSval, TSecr), 5 (SACK:
    ``values`` = edges), or anything else with raw ``data``."""

    kind: int
    values: tuple[int, ...] = ()
    data: bytes = b""

    def encode(self) -> bytes:
        """Wire bytes of the option."""
        if self.kind == 1:
            return b"\x01"
        if self.kind in (8, 5):
            body = struct.pack(f"!{len(self.values)}I", *self.values)
            return bytes((self.kind, 2 + len(body))) + body
        return bytes((self.kind, 2 + len(self.data))) + self.data


def encode_options(opts: list[Opt]) -> bytes:
    """Options padded with zeros (End of Option List) to a multiple of 4."""
    raw = b"".join(o.encode() for o in opts)
    return raw + bytes(-len(raw) % 4)


@dataclass
class Segment:
    """An Ethernet + IPv4 + TCP frame description."""

    src: bytes
    dst: bytes
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    urgent: int = 0
    options: list[Opt] = field(default_factory=list)
    payload: bytes = b""
    ip_options: bytes = b""
    ttl: int = 57
    ident: int = 0x1234
    pad: int = 0  # Ethernet padding bytes after the datagram

    def tcp_bytes(self) -> bytes:
        """TCP header + payload with a complete checksum."""
        opts = encode_options(self.options)
        hlen = 20 + len(opts)
        hdr = struct.pack("!HHIIBBHHH", self.sport, self.dport, self.seq, self.ack,
                          hlen << 2, self.flags, self.window, 0, self.urgent) + opts
        seg = hdr + self.payload
        c = tcp_csum(self.src, self.dst, seg)
        return seg[:16] + struct.pack("!H", c) + seg[18:]

    def frame(self) -> bytes:
        """The whole Ethernet frame, checksums complete."""
        seg = self.tcp_bytes()
        ihl = 20 + len(self.ip_options)
        ip = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl >> 2, 0, ihl + len(seg), self.ident,
                         0x4000, self.ttl, 6, 0, self.src, self.dst) + self.ip_options
        ip = ip[:10] + struct.pack("!H", ~ref_sum(ip) & 0xFFFF) + ip[12:]
        return MAC_B + MAC_A + b"\x08\x00" + ip + seg + bytes(self.pad)


def make_skb(seg: Segment, needs_csum: bool = False, gso_size: int = 0) -> SkBuff:
    """The frame in an SkBuff, optionally in NEEDS_CSUM form and/or as a super-segment,
    the way a TAP with offloads hands it over."""
    raw = bytearray(seg.frame())
    skb = SkBuff.from_bytes(raw, headroom=HEADROOM)
    t = ETH + 20 + len(seg.ip_options)
    if needs_csum or gso_size:
        tcp_len = len(seg.tcp_bytes())
        partial = ref_sum(pseudo(seg.src, seg.dst, tcp_len))
        struct.pack_into("!H", skb.buf, skb.data + t + 16, partial)
        skb.vnet_flags = VIRTIO_NET_HDR_F_NEEDS_CSUM
        skb.csum_start = t
        skb.csum_offset = 16
    if gso_size:
        skb.gso_type = VIRTIO_NET_HDR_GSO_TCPV4
        skb.gso_size = gso_size
        skb.hdr_len = t + 20 + len(encode_options(seg.options))
    return skb


def device_bytes(skb: SkBuff) -> bytes:
    """The frame as the device would put it on the wire: a partial checksum is
    completed over csum_start..end (computed here independently of stack.gso)."""
    raw = bytearray(skb.tobytes())
    if skb.vnet_flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
        start, off = skb.csum_start, skb.csum_offset
        c = ~ref_sum(bytes(raw[start:])) & 0xFFFF
        struct.pack_into("!H", raw, start + off, c)
    return bytes(raw)


def parse(frame: bytes) -> tuple[dpkt.ip.IP, dpkt.tcp.TCP]:
    """dpkt's view of a frame (raises on anything dpkt cannot parse)."""
    eth = dpkt.ethernet.Ethernet(frame)
    ip = eth.data
    assert isinstance(ip, dpkt.ip.IP), "not IPv4"
    tcp = ip.data
    assert isinstance(tcp, dpkt.tcp.TCP), "not TCP"
    return ip, tcp
