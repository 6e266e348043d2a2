"""UDP (RFC 768)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from stack.wire.checksum import ones_sum, pseudo_header_sum, pseudo_header_sum6
from stack.wire.errors import BytesLike, WireError

UDP_HLEN = 8
IPPROTO_UDP = 17
_UDP = struct.Struct("!HHHH")


@dataclass(slots=True)
class UdpHeader:
    """Ports, length (header included) and checksum of a UDP datagram."""

    sport: int
    dport: int
    length: int = 0
    checksum: int = 0

    @classmethod
    def parse(cls, buf: BytesLike) -> UdpHeader:
        """Decode the header; ``buf`` is the datagram, possibly followed by padding.

        Reasons: "udp_truncated", "udp_bad_length" (length < 8 or past the buffer).
        """
        if len(buf) < UDP_HLEN:
            raise WireError("udp_truncated", f"{len(buf)} bytes")
        sport, dport, length, csum = _UDP.unpack_from(buf, 0)
        if length < UDP_HLEN or length > len(buf):
            raise WireError("udp_bad_length", f"{length} (buffer {len(buf)})")
        return cls(sport, dport, length, csum)

    def to_bytes(self) -> bytes:
        """The 8-byte header as given (length and checksum not computed)."""
        try:
            return _UDP.pack(self.sport, self.dport, self.length, self.checksum)
        except struct.error as e:
            raise WireError("udp_bad_field", str(e)) from None


def build_datagram(src: bytes, dst: bytes, sport: int, dport: int, payload: BytesLike) -> bytes:
    """Header + payload with length and checksum filled in.

    A computed checksum of 0 is sent as 0xFFFF, since 0 means "no checksum" (RFC 768).
    """
    length = UDP_HLEN + len(payload)
    if length > 0xFFFF:
        raise WireError("udp_bad_field", f"datagram too long ({length})")
    out = bytearray(length)
    try:
        _UDP.pack_into(out, 0, sport, dport, length, 0)
    except struct.error as e:
        raise WireError("udp_bad_field", str(e)) from None
    out[UDP_HLEN:] = payload
    csum = ~ones_sum(out, pseudo_header_sum(src, dst, IPPROTO_UDP, length)) & 0xFFFF
    struct.pack_into("!H", out, 6, csum or 0xFFFF)
    return bytes(out)


def verify(src: bytes, dst: bytes, datagram: BytesLike) -> bool:
    """True if the checksum is right or absent (0). WireError if malformed."""
    hdr = UdpHeader.parse(datagram)
    if hdr.checksum == 0:
        return True
    body = memoryview(datagram)[:hdr.length]
    pseudo = (pseudo_header_sum6 if len(src) == 16 else pseudo_header_sum)(
        src, dst, IPPROTO_UDP, hdr.length)
    return ones_sum(body, pseudo) == 0xFFFF
