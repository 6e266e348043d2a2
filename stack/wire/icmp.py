"""ICMP for IPv4 (RFC 792), with the error-size rule of RFC 1812 §4.3.2.3."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from stack.wire.checksum import checksum, ones_sum
from stack.wire.errors import BytesLike, WireError

ECHO_REPLY = 0
DEST_UNREACH = 3
SOURCE_QUENCH = 4
REDIRECT = 5
ECHO_REQUEST = 8
TIME_EXCEEDED = 11
PARAMETER_PROBLEM = 12
TIMESTAMP = 13
TIMESTAMP_REPLY = 14
INFO_REQUEST = 15
INFO_REPLY = 16
#: Query messages (RFC 792): an error about one of these is allowed, unlike one about
#: an error (RFC 1122 §3.2.2).
QUERY_TYPES = frozenset({ECHO_REQUEST, ECHO_REPLY, TIMESTAMP, TIMESTAMP_REPLY, INFO_REQUEST,
                         INFO_REPLY})

UNREACH_NET = 0
UNREACH_HOST = 1
UNREACH_PROTOCOL = 2
UNREACH_PORT = 3
UNREACH_NEEDFRAG = 4
EXC_TTL = 0
EXC_FRAGTIME = 1

ICMP_HLEN = 8
#: RFC 1812 §4.3.2.3: an ICMP error datagram should not exceed 576 bytes.
ICMP_ERROR_MAX_DATAGRAM = 576

_ERROR_TYPES = frozenset({DEST_UNREACH, SOURCE_QUENCH, REDIRECT, TIME_EXCEEDED,
                          PARAMETER_PROBLEM})
_ICMP = struct.Struct("!BBHI")
_H = struct.Struct("!H")


@dataclass(slots=True)
class IcmpMessage:
    """An ICMP message: type, code, the 32-bit rest-of-header word and the body.

    ``rest`` is id << 16 | seq for echo messages and holds the next-hop MTU in its
    low 16 bits for "fragmentation needed" (RFC 1191). A parsed ``payload`` is a
    zero-copy memoryview into the parsed buffer; ``bytes()`` it to keep it.
    """

    type: int
    code: int
    rest: int = 0
    payload: bytes | bytearray | memoryview = b""

    @property
    def echo_id(self) -> int:
        """Identifier of an echo request/reply."""
        return self.rest >> 16

    @property
    def echo_seq(self) -> int:
        """Sequence number of an echo request/reply."""
        return self.rest & 0xFFFF

    @property
    def is_error(self) -> bool:
        """True for error messages (RFC 1122 §3.2.2), which must never trigger errors."""
        return self.type in _ERROR_TYPES

    @classmethod
    def parse(cls, buf: BytesLike, verify_checksum: bool = True) -> IcmpMessage:
        """Decode a whole ICMP message (reasons "icmp_truncated", "icmp_bad_checksum")."""
        if len(buf) < ICMP_HLEN:
            raise WireError("icmp_truncated", f"{len(buf)} bytes")
        if verify_checksum and ones_sum(buf) != 0xFFFF:
            raise WireError("icmp_bad_checksum")
        typ, code, _csum, rest = _ICMP.unpack_from(buf, 0)
        return cls(typ, code, rest, memoryview(buf)[ICMP_HLEN:])

    def to_bytes(self) -> bytes:
        """The whole message with its checksum computed."""
        out = bytearray(ICMP_HLEN + len(self.payload))
        try:
            _ICMP.pack_into(out, 0, self.type, self.code, 0, self.rest)
        except struct.error as e:
            raise WireError("icmp_bad_field", str(e)) from None
        out[ICMP_HLEN:] = self.payload
        _H.pack_into(out, 2, checksum(out))
        return bytes(out)


def error_payload(ip_datagram: BytesLike, outer_header_len: int = 20) -> bytes:
    """The body of an ICMP error about ``ip_datagram``.

    The original IP header plus as much of its payload as keeps the whole error
    datagram (outer IP header + 8-byte ICMP header + this) within 576 bytes
    (RFC 1812 §4.3.2.3; RFC 792's minimum is the header plus 64 bits). Ethernet
    padding past the datagram's total length is not quoted.
    """
    n = len(ip_datagram)
    if n >= 4 and ip_datagram[0] >> 4 == 4:
        total = _H.unpack_from(ip_datagram, 2)[0]
        if (ip_datagram[0] & 0x0F) * 4 <= total < n:
            n = total
    n = min(n, ICMP_ERROR_MAX_DATAGRAM - outer_header_len - ICMP_HLEN)
    return bytes(ip_datagram[:n])
