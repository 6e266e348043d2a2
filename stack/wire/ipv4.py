"""IPv4 header (RFC 791): parse, emit, option walking and in-place option removal."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from stack.wire.checksum import checksum, ones_sum
from stack.wire.errors import BytesLike, WireError
from stack.wire.fields import IP_CSUM as IP_CSUM
from stack.wire.fields import IP_DST as IP_DST
from stack.wire.fields import IP_FLAG_DF, IP_FLAG_MF, IP_FRAG_OFFSET_MASK, IP_MIN_HLEN
from stack.wire.fields import IP_FRAG as IP_FRAG
from stack.wire.fields import IP_PROTO as IP_PROTO
from stack.wire.fields import IP_SRC as IP_SRC
from stack.wire.fields import IP_TOTLEN as IP_TOTLEN
from stack.wire.fields import IP_TTL as IP_TTL

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPV4_MIN_HLEN = IP_MIN_HLEN
IPV4_MAX_HLEN = 60

# Byte offsets of fields inside the header (for in-place rewriting) are
# stack.wire.fields'; the codec re-exports them for its callers.

_IPOPT_EOL = 0
_IPOPT_NOP = 1
_FLAG_DF = IP_FLAG_DF
_FLAG_MF = IP_FLAG_MF
_FRAG_MASK = IP_FRAG_OFFSET_MASK
#: The fixed header for the fast path: version/IHL, TOS, total length, ident, flags/fragment, TTL, proto, checksum, src, dst.
IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
_IPV4 = IPV4_HEADER
_H = struct.Struct("!H")


@dataclass(slots=True)
class Ipv4Header:
    """An IPv4 header. ``frag_offset`` is in bytes (a multiple of 8)."""

    src: bytes
    dst: bytes
    proto: int
    ttl: int = 64
    tos: int = 0
    ident: int = 0
    df: bool = False
    mf: bool = False
    frag_offset: int = 0
    total_length: int = 0
    checksum: int = 0
    options: bytes = b""

    @property
    def header_len(self) -> int:
        """Header length in bytes: 20 plus the options padded to a multiple of 4."""
        return IPV4_MIN_HLEN + (len(self.options) + 3 & ~3)

    @property
    def is_fragment(self) -> bool:
        """True if this datagram is a fragment (more follow, or not the first)."""
        return self.mf or self.frag_offset != 0

    @classmethod
    def parse(cls, buf: BytesLike, verify_checksum: bool = True) -> Ipv4Header:
        """Decode the header at the start of ``buf`` (the whole datagram, maybe padded).

        Reasons: "ipv4_truncated", "ipv4_bad_version", "ipv4_bad_ihl",
        "ipv4_bad_total_length", "ipv4_bad_checksum", "ipv4_bad_options".
        """
        n = len(buf)
        if n < IPV4_MIN_HLEN:
            raise WireError("ipv4_truncated", f"{n} bytes")
        (ver_ihl, tos, total_length, ident, frag, ttl, proto, csum,
         src, dst) = _IPV4.unpack_from(buf, 0)
        if ver_ihl >> 4 != 4:
            raise WireError("ipv4_bad_version", str(ver_ihl >> 4))
        hlen = (ver_ihl & 0x0F) * 4
        if hlen < IPV4_MIN_HLEN or hlen > n:
            raise WireError("ipv4_bad_ihl", f"header {hlen} bytes, buffer {n}")
        # A buffer longer than total_length is fine: Ethernet pads short frames.
        if total_length < hlen or total_length > n:
            raise WireError("ipv4_bad_total_length", f"{total_length} (buffer {n})")
        if verify_checksum and ones_sum(buf[:hlen]) != 0xFFFF:
            raise WireError("ipv4_bad_checksum", f"{csum:#06x}")
        options = b""
        if hlen > IPV4_MIN_HLEN:
            options = bytes(buf[IPV4_MIN_HLEN:hlen])
            parse_options(options)
        return cls(src, dst, proto, ttl, tos, ident, bool(frag & _FLAG_DF),
                   bool(frag & _FLAG_MF), (frag & _FRAG_MASK) * 8, total_length, csum,
                   options)

    def emit_into(self, buf: bytearray | memoryview, offset: int, payload_len: int) -> int:
        """Write the header (total length and checksum computed); return its length.

        Options are padded with zero bytes (End of Option List) to a multiple of 4.
        """
        hlen = self.header_len
        if hlen > IPV4_MAX_HLEN:
            raise WireError("ipv4_bad_field", f"options too long ({len(self.options)})")
        if self.frag_offset & 7 or len(self.src) != 4 or len(self.dst) != 4:
            raise WireError("ipv4_bad_field", "frag_offset or address length")
        if offset < 0 or len(buf) - offset < hlen:
            raise WireError("ipv4_bad_field", "buffer too small for the header")
        frag = (self.frag_offset >> 3) | (_FLAG_DF if self.df else 0) | (
            _FLAG_MF if self.mf else 0)
        try:
            _IPV4.pack_into(buf, offset, 0x40 | hlen >> 2, self.tos, hlen + payload_len,
                            self.ident, frag, self.ttl, self.proto, 0, self.src, self.dst)
        except struct.error as e:
            raise WireError("ipv4_bad_field", str(e)) from None
        opt_end = offset + IPV4_MIN_HLEN + len(self.options)
        buf[offset + IPV4_MIN_HLEN:opt_end] = self.options
        buf[opt_end:offset + hlen] = bytes(offset + hlen - opt_end)
        _H.pack_into(buf, offset + IP_CSUM, checksum(buf[offset:offset + hlen]))
        return hlen

    def to_bytes(self, payload_len: int) -> bytes:
        """The header alone, for a payload of ``payload_len`` bytes."""
        out = bytearray(self.header_len)
        self.emit_into(out, 0, payload_len)
        return bytes(out)


def parse_options(opts: BytesLike) -> list[tuple[int, bytes]]:
    """Walk IPv4 options (RFC 791 §3.1): ``[(type, data), ...]``.

    End of Option List ends the walk, No Operation is skipped. Any other option
    must carry a length byte >= 2 that stays inside ``opts`` ("ipv4_bad_options").
    """
    out: list[tuple[int, bytes]] = []
    n = len(opts)
    i = 0
    while i < n:
        kind = opts[i]
        if kind == _IPOPT_EOL:
            break
        if kind == _IPOPT_NOP:
            i += 1
            continue
        if i + 1 >= n:
            raise WireError("ipv4_bad_options", f"option {kind} has no length")
        length = opts[i + 1]
        if length < 2 or i + length > n:
            raise WireError("ipv4_bad_options", f"option {kind} length {length}")
        out.append((kind, bytes(opts[i + 2:i + length])))
        i += length
    return out


def strip_options(buf: bytearray | memoryview, offset: int,
                  verify_checksum: bool = True) -> int:
    """Remove the options of the IPv4 header at ``offset`` in place.

    The fixed 20-byte header moves forward over the options so the payload stays
    where it is (no payload copy); IHL, total length and checksum are fixed up.
    Returns the new header offset (``offset`` + length of the options). The header
    is validated first like :meth:`Ipv4Header.parse` (WireError on bad input).
    """
    hdr = Ipv4Header.parse(memoryview(buf)[offset:], verify_checksum)
    optlen = len(hdr.options)
    if optlen == 0:
        return offset
    fixed = bytearray(buf[offset:offset + IPV4_MIN_HLEN])
    fixed[0] = 0x45
    _H.pack_into(fixed, IP_TOTLEN, hdr.total_length - optlen)
    _H.pack_into(fixed, IP_CSUM, 0)
    _H.pack_into(fixed, IP_CSUM, checksum(fixed))
    new_off = offset + optlen
    buf[new_off:new_off + IPV4_MIN_HLEN] = fixed
    return new_off


def ip_str(addr: bytes) -> str:
    """4 bytes -> dotted quad."""
    if len(addr) != 4:
        raise ValueError(f"IPv4 address must be 4 bytes, got {len(addr)}")
    return ".".join(str(b) for b in addr)


def endpoint_str(addr: bytes, port: int) -> str:
    """4 bytes and a port -> ``"a.b.c.d:port"`` (logs, statistics)."""
    return f"{ip_str(addr)}:{port}"


def ip_bytes(text: str) -> bytes:
    """Dotted quad -> 4 bytes; ValueError on bad text."""
    return ipaddress.IPv4Address(text).packed
