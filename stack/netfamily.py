"""What differs between IPv4 and IPv6 for the transports: one small seam.

TCP and UDP key connections by addresses of either length (4 or 16 bytes) and never
ask which family they speak, except through the :class:`Family` of an address:
the pseudo-header sum of their checksums (RFC 9293 §3.1, RFC 8200 §8.1), the IP
header size that the MSS leaves out (RFC 9293 §3.7.1, RFC 8200 §8.3), the smallest
path MTU believed (RFC 1191's 68 raised to Linux's 552 for IPv4; RFC 8201 §4's 1280
for IPv6), the virtio GSO type of a super-segment and the wildcard address.
Output goes through the IP layer (stack/core.py's ``ip_output`` and ``route``),
which sends a 16-byte destination over IPv6 (stack/ip6.py).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from stack.wire.checksum import pseudo_header_sum, pseudo_header_sum6
from stack.wire.vnet import VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6


@dataclass(frozen=True, slots=True)
class Family:
    """One IP version as the transports see it."""

    name: str
    #: Address length in bytes.
    addr_len: int
    #: The unspecified address (listen on every address of the family).
    any: bytes
    #: The fixed IP header (IPv4 without options; IPv6 without extension headers).
    header_len: int
    #: The smallest path MTU a PMTUD message may set (smaller ones: see the users).
    pmtu_min: int
    #: virtio_net_hdr gso_type of a TCP super-segment.
    gso_tcp: int
    #: Folded pseudo-header sum (src, dst, protocol, upper-layer length).
    pseudo_header_sum: Callable[[bytes, bytes, int, int], int]

    def tcp_mss(self, mtu: int) -> int:
        """The MSS for a path MTU: the IP header and a 20-byte TCP header off
        (RFC 9293 §3.7.1, RFC 8200 §8.3), never under 64."""
        return max(mtu - self.header_len - 20, 64)


IPV4 = Family("ipv4", 4, b"\0" * 4, 20, 552, VIRTIO_NET_HDR_GSO_TCPV4, pseudo_header_sum)
IPV6 = Family("ipv6", 16, b"\0" * 16, 40, 1280, VIRTIO_NET_HDR_GSO_TCPV6, pseudo_header_sum6)


def family_of(addr: bytes) -> Family:
    """The family of a 4- or 16-byte address."""
    return IPV6 if len(addr) == 16 else IPV4


def parse_address(host: str) -> bytes:
    """A textual IPv4 or IPv6 address as 4 or 16 bytes; ValueError otherwise. A
    zone (``fe80::1%tsc0``) is refused: the stack has no scoped sockets."""
    return ipaddress.ip_address(host).packed


def address_str(addr: bytes) -> str:
    """4 or 16 bytes as text (RFC 5952 for IPv6)."""
    return str(ipaddress.ip_address(addr))


def sockaddr(addr: bytes, port: int) -> tuple:
    """An address as asyncio's transports give it: (host, port) for IPv4, (host,
    port, flowinfo, scope_id) for IPv6, so code written for sockets unpacks it
    alike. The flow information is 0 (no socket asks for flow labels back) and
    so is the scope (the stack has no scoped sockets)."""
    if len(addr) == 16:
        return address_str(addr), port, 0, 0
    return address_str(addr), port
