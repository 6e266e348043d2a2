"""ICMPv6 (RFC 4443): the message, its pseudo-header checksum and the errors' quote.

Neighbor Discovery's messages and options (RFC 4861) are :mod:`stack.wire.ndp`'s.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from stack.wire.checksum import ones_sum, pseudo_header_sum6
from stack.wire.errors import BytesLike, WireError
from stack.wire.ipv6 import IPPROTO_ICMPV6, IPV6_HLEN, IPV6_MIN_MTU

# Error messages (RFC 4443 §3): types 0..127.
DEST_UNREACH = 1
PACKET_TOO_BIG = 2
TIME_EXCEEDED = 3
PARAM_PROBLEM = 4
# Informational messages (RFC 4443 §4, RFC 4861 §4): types 128..255.
ECHO_REQUEST = 128
ECHO_REPLY = 129
ROUTER_SOLICITATION = 133
ROUTER_ADVERTISEMENT = 134
NEIGHBOR_SOLICITATION = 135
NEIGHBOR_ADVERTISEMENT = 136
REDIRECT = 137

# Destination Unreachable codes (RFC 4443 §3.1).
UNREACH_NO_ROUTE = 0
UNREACH_ADMIN = 1
UNREACH_BEYOND_SCOPE = 2
UNREACH_ADDRESS = 3
UNREACH_PORT = 4
# Time Exceeded codes (RFC 4443 §3.3).
EXC_HOP_LIMIT = 0
EXC_FRAGTIME = 1

ICMP6_HLEN = 8
#: RFC 4443 §2.4 (c): an error carries as much of the offending packet as fits
#: without the error packet exceeding the minimum IPv6 MTU.
ERROR_MAX_QUOTE = IPV6_MIN_MTU - IPV6_HLEN - ICMP6_HLEN

_ICMP6 = struct.Struct("!BBHI")
_H = struct.Struct("!H")


@dataclass(slots=True)
class Icmp6Message:
    """An ICMPv6 message: type, code, the 32-bit word after the checksum and the body.

    ``rest`` is id << 16 | seq for echo messages, the MTU for Packet Too Big, the
    pointer for Parameter Problem and flags or reserved bits for NDP. A parsed
    ``payload`` is a zero-copy memoryview into the parsed buffer.
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
        """Types 0..127 are errors (RFC 4443 §2.1): never answered with an error."""
        return self.type < 128

    @classmethod
    def parse(cls, buf: BytesLike, src: bytes, dst: bytes,
              verify_checksum: bool = True) -> Icmp6Message:
        """Decode a whole message that came from ``src`` to ``dst``.

        The checksum covers the IPv6 pseudo-header (RFC 4443 §2.3). Reasons:
        "icmp6_truncated", "icmp6_bad_checksum". Error messages shorter than
        their 8-byte header are truncated; informational ones need only 4 bytes
        for the type, code and checksum, but every type this stack reads has 8.
        """
        if len(buf) < ICMP6_HLEN:
            raise WireError("icmp6_truncated", f"{len(buf)} bytes")
        if verify_checksum and ones_sum(
                buf, pseudo_header_sum6(src, dst, IPPROTO_ICMPV6, len(buf))) != 0xFFFF:
            raise WireError("icmp6_bad_checksum")
        typ, code, _csum, rest = _ICMP6.unpack_from(buf, 0)
        return cls(typ, code, rest, memoryview(buf)[ICMP6_HLEN:])

    def to_bytes(self, src: bytes, dst: bytes) -> bytes:
        """The whole message with its checksum for ``src`` -> ``dst`` computed."""
        out = bytearray(ICMP6_HLEN + len(self.payload))
        try:
            _ICMP6.pack_into(out, 0, self.type, self.code, 0, self.rest)
        except struct.error as e:
            raise WireError("icmp6_bad_field", str(e)) from None
        out[ICMP6_HLEN:] = self.payload
        csum = ~ones_sum(out, pseudo_header_sum6(src, dst, IPPROTO_ICMPV6, len(out)))
        _H.pack_into(out, 2, csum & 0xFFFF)
        return bytes(out)


def error_payload(packet: BytesLike) -> bytes:
    """The body of an ICMPv6 error about ``packet`` (an IPv6 packet): as much of it
    as keeps the error within 1280 bytes (RFC 4443 §2.4 (c)). Ethernet padding past
    the payload length is not quoted."""
    n = len(packet)
    if n >= IPV6_HLEN and packet[0] >> 4 == 6:
        n = min(n, IPV6_HLEN + _H.unpack_from(packet, 4)[0])
    return bytes(packet[:min(n, ERROR_MAX_QUOTE)])


def error(type_: int, code: int, packet: BytesLike, rest: int = 0) -> Icmp6Message:
    """An error message quoting ``packet``; ``rest`` is the MTU (Packet Too Big) or
    the pointer (Parameter Problem), 0 otherwise."""
    if type_ >= 128:
        raise WireError("icmp6_bad_field", f"type {type_} is not an error")
    return Icmp6Message(type_, code, rest, error_payload(packet))


def echo_reply(request: Icmp6Message) -> Icmp6Message:
    """The reply to an echo request: same identifier, sequence and data (RFC 4443
    §4.2)."""
    return Icmp6Message(ECHO_REPLY, 0, request.rest, request.payload)
