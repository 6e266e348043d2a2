"""IPv6 header (RFC 8200 §3) and IPv6 address helpers (RFC 4291).

The extension-header chain that may follow the fixed header is walked by
:mod:`stack.wire.ipv6ext`.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from stack.wire.errors import BytesLike, WireError
from stack.wire.fields import IP6_DST as IP6_DST
from stack.wire.fields import IP6_HLEN, IP6_PLEN
from stack.wire.fields import IP6_HLIM as IP6_HLIM
from stack.wire.fields import IP6_NXT as IP6_NXT
from stack.wire.fields import IP6_SRC as IP6_SRC

IPV6_HLEN = IP6_HLEN
#: RFC 8200 §5: every link carries packets of 1280 bytes; no IPv6 MTU is smaller.
IPV6_MIN_MTU = 1280

# Next Header values (IANA "Assigned Internet Protocol Numbers").
IPPROTO_HOPOPTS = 0
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_ICMPV6 = 58
IPPROTO_NONE = 59
IPPROTO_DSTOPTS = 60

UNSPECIFIED = bytes(16)
#: ff02::1 and ff02::2 (RFC 4291 §2.7.1).
ALL_NODES = bytes.fromhex("ff020000000000000000000000000001")
ALL_ROUTERS = bytes.fromhex("ff020000000000000000000000000002")
_SOLICITED_PREFIX = bytes.fromhex("ff0200000000000000000001ff")
_LINK_LOCAL_PREFIX = bytes.fromhex("fe80000000000000")

#: The fixed header: version/traffic class/flow label, payload length, next header,
#: hop limit, source, destination.
IPV6_HEADER = struct.Struct("!IHBB16s16s")
_IPV6 = IPV6_HEADER


@dataclass(slots=True)
class Ipv6Header:
    """The fixed IPv6 header. ``payload_length`` counts everything after it."""

    src: bytes
    dst: bytes
    next_header: int
    hop_limit: int = 64
    traffic_class: int = 0
    flow_label: int = 0
    payload_length: int = 0

    @classmethod
    def parse(cls, buf: BytesLike) -> Ipv6Header:
        """Decode the header at the start of ``buf`` (the packet, maybe padded).

        Reasons: "ipv6_truncated", "ipv6_bad_version", "ipv6_bad_payload_length"
        (past the buffer; a Jumbo Payload's 0 is refused too: RFC 2675 needs links
        with an MTU over 65,575 bytes, and Ethernet is not one).
        """
        n = len(buf)
        if n < IPV6_HLEN:
            raise WireError("ipv6_truncated", f"{n} bytes")
        vtf, plen, nxt, hlim, src, dst = _IPV6.unpack_from(buf, 0)
        if vtf >> 28 != 6:
            raise WireError("ipv6_bad_version", str(vtf >> 28))
        if IPV6_HLEN + plen > n or (plen == 0 and nxt == IPPROTO_HOPOPTS):
            raise WireError("ipv6_bad_payload_length", f"{plen} (buffer {n})")
        return cls(src, dst, nxt, hlim, vtf >> 20 & 0xFF, vtf & 0xFFFFF, plen)

    def emit_into(self, buf: bytearray | memoryview, offset: int, payload_len: int) -> int:
        """Write the header (payload length from ``payload_len``); return 40."""
        if len(self.src) != 16 or len(self.dst) != 16:
            raise WireError("ipv6_bad_field", "addresses must be 16 bytes")
        if not 0 <= self.traffic_class <= 0xFF or not 0 <= self.flow_label <= 0xFFFFF:
            raise WireError("ipv6_bad_field", "traffic class or flow label out of range")
        if offset < 0 or len(buf) - offset < IPV6_HLEN:
            raise WireError("ipv6_bad_field", "buffer too small for the header")
        vtf = 6 << 28 | self.traffic_class << 20 | self.flow_label
        try:
            _IPV6.pack_into(buf, offset, vtf, payload_len, self.next_header, self.hop_limit,
                            self.src, self.dst)
        except struct.error as e:
            raise WireError("ipv6_bad_field", str(e)) from None
        return IPV6_HLEN

    def to_bytes(self, payload_len: int) -> bytes:
        """The 40-byte header alone, for a payload of ``payload_len`` bytes."""
        out = bytearray(IPV6_HLEN)
        self.emit_into(out, 0, payload_len)
        return bytes(out)


def payload_end(buf: BytesLike) -> int:
    """Where the packet at the start of ``buf`` ends (40 + payload length), for
    cutting Ethernet padding; the header must have been checked."""
    return IPV6_HLEN + int.from_bytes(buf[IP6_PLEN:IP6_PLEN + 2], "big")


# -- addresses -------------------------------------------------------------------------
def ip6_bytes(text: str) -> bytes:
    """Text form (RFC 5952 or any RFC 4291 §2.2 form) -> 16 bytes; ValueError if bad."""
    return ipaddress.IPv6Address(text).packed


def ip6_str(addr: bytes) -> str:
    """16 bytes -> the RFC 5952 text form."""
    if len(addr) != 16:
        raise ValueError(f"IPv6 address must be 16 bytes, got {len(addr)}")
    return str(ipaddress.IPv6Address(addr))


def is_multicast(addr: bytes) -> bool:
    """ff00::/8 (RFC 4291 §2.7)."""
    return addr[0] == 0xFF


def is_link_local(addr: bytes) -> bool:
    """fe80::/10 (RFC 4291 §2.5.6)."""
    return addr[0] == 0xFE and addr[1] & 0xC0 == 0x80


def is_unspecified(addr: bytes) -> bool:
    """:: (RFC 4291 §2.5.2)."""
    return addr == UNSPECIFIED


def is_loopback(addr: bytes) -> bool:
    """::1 (RFC 4291 §2.5.3)."""
    return addr == UNSPECIFIED[:15] + b"\x01"


def solicited_node(addr: bytes) -> bytes:
    """The solicited-node multicast address of ``addr``: ff02::1:ff00:0/104 plus its
    low 24 bits (RFC 4291 §2.7.1)."""
    return _SOLICITED_PREFIX + addr[13:16]


def is_solicited_node(addr: bytes) -> bool:
    """Whether ``addr`` is in ff02::1:ff00:0/104."""
    return addr[:13] == _SOLICITED_PREFIX


def multicast_mac(addr: bytes) -> bytes:
    """The Ethernet address of IPv6 multicast ``addr``: 33:33 and its low 32 bits
    (RFC 2464 §7)."""
    return b"\x33\x33" + addr[12:16]


def link_local(iid: bytes) -> bytes:
    """fe80::/64 with interface identifier ``iid`` (8 bytes; RFC 4291 §2.5.6)."""
    if len(iid) != 8:
        raise ValueError("an interface identifier is 8 bytes")
    return _LINK_LOCAL_PREFIX + iid


def prefix_match(a: bytes, b: bytes, prefixlen: int) -> bool:
    """Whether the first ``prefixlen`` bits of ``a`` and ``b`` agree."""
    if prefixlen == 0:
        return True
    shift = 128 - prefixlen
    return int.from_bytes(a, "big") >> shift == int.from_bytes(b, "big") >> shift
