"""Ethernet II header (IEEE 802.3 framing as used by RFC 894) and MAC helpers."""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

from stack.wire.errors import BytesLike, WireError
from stack.wire.fields import ETH_HLEN as ETH_HLEN

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
BROADCAST = b"\xff" * 6

#: The fixed header for the fast path: dst, src, ethertype.
ETH_HEADER = struct.Struct("!6s6sH")
_ETH = ETH_HEADER


@dataclass(slots=True)
class EthernetHeader:
    """Destination MAC, source MAC and EtherType of an Ethernet II frame."""

    dst: bytes
    src: bytes
    ethertype: int

    @classmethod
    def parse(cls, buf: BytesLike) -> EthernetHeader:
        """Decode the first 14 bytes of ``buf`` (reason "eth_truncated")."""
        if len(buf) < ETH_HLEN:
            raise WireError("eth_truncated", f"{len(buf)} bytes")
        dst, src, ethertype = _ETH.unpack_from(buf, 0)
        return cls(dst, src, ethertype)

    def emit_into(self, buf: bytearray | memoryview, offset: int = 0) -> None:
        """Write the 14-byte header into ``buf`` at ``offset``."""
        if len(self.dst) != 6 or len(self.src) != 6:
            raise WireError("eth_bad_field", "MAC addresses must be 6 bytes")
        try:
            _ETH.pack_into(buf, offset, self.dst, self.src, self.ethertype)
        except struct.error as e:
            raise WireError("eth_bad_field", str(e)) from None

    def to_bytes(self) -> bytes:
        """The 14-byte header."""
        out = bytearray(ETH_HLEN)
        self.emit_into(out)
        return bytes(out)


def mac_str(mac: bytes) -> str:
    """``b"\\x02\\x00..."`` -> ``"02:00:..."``."""
    return ":".join(f"{b:02x}" for b in mac)


def parse_mac(s: str) -> bytes:
    """``"02:00:5e:00:00:01"`` -> 6 bytes; ValueError on anything else."""
    parts = s.split(":")
    if len(parts) != 6 or any(len(p) != 2 for p in parts):
        raise ValueError(f"bad MAC address {s!r}")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(f"bad MAC address {s!r}") from None


def random_mac(rng: random.Random) -> bytes:
    """A random locally administered unicast MAC (IEEE 802: U/L bit set, I/G bit clear)."""
    first = (rng.randrange(256) & 0xFC) | 0x02
    return bytes([first]) + rng.randbytes(5)


def is_multicast(mac: bytes) -> bool:
    """True for group addresses (I/G bit set), broadcast included."""
    return bool(mac[0] & 1)
