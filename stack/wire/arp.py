"""ARP for Ethernet and IPv4 only (RFC 826)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from stack.wire.errors import BytesLike, WireError

ARP_LEN = 28
ARP_REQUEST = 1
ARP_REPLY = 2

_HTYPE_ETHERNET = 1
_PTYPE_IPV4 = 0x0800
_ARP = struct.Struct("!HHBBH6s4s6s4s")


@dataclass(slots=True)
class ArpPacket:
    """An Ethernet/IPv4 ARP request or reply (sender/target hardware and protocol addresses)."""

    op: int
    sha: bytes
    spa: bytes
    tha: bytes
    tpa: bytes

    @classmethod
    def parse(cls, buf: BytesLike) -> ArpPacket:
        """Decode an ARP packet; trailing bytes (Ethernet padding) are ignored.

        Reasons: "arp_truncated", "arp_unsupported" (not Ethernet/IPv4),
        "arp_bad_op" (neither request nor reply).
        """
        if len(buf) < ARP_LEN:
            raise WireError("arp_truncated", f"{len(buf)} bytes")
        htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(buf, 0)
        if htype != _HTYPE_ETHERNET or ptype != _PTYPE_IPV4 or hlen != 6 or plen != 4:
            raise WireError("arp_unsupported", f"htype {htype} ptype {ptype:#x} "
                                               f"hlen {hlen} plen {plen}")
        if op not in (ARP_REQUEST, ARP_REPLY):
            raise WireError("arp_bad_op", str(op))
        return cls(op, sha, spa, tha, tpa)

    def emit_into(self, buf: bytearray | memoryview, offset: int = 0) -> None:
        """Write the 28-byte packet into ``buf`` at ``offset``."""
        if (len(self.sha), len(self.spa), len(self.tha), len(self.tpa)) != (6, 4, 6, 4):
            raise WireError("arp_bad_field", "address lengths must be 6/4/6/4")
        try:
            _ARP.pack_into(buf, offset, _HTYPE_ETHERNET, _PTYPE_IPV4, 6, 4, self.op,
                           self.sha, self.spa, self.tha, self.tpa)
        except struct.error as e:
            raise WireError("arp_bad_field", str(e)) from None

    def to_bytes(self) -> bytes:
        """The 28-byte packet."""
        out = bytearray(ARP_LEN)
        self.emit_into(out)
        return bytes(out)
