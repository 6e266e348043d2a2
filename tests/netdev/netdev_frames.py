"""Frame builders shared by the netdev tests."""

from __future__ import annotations

import struct

import dpkt

from stack.wire.checksum import ones_sum, pseudo_header_sum

MAC_A = b"\x02\x00\x00\x00\x00\x0a"
MAC_B = b"\x02\x00\x00\x00\x00\x0b"
IP_A = bytes([198, 18, 0, 1])
IP_B = bytes([198, 18, 0, 2])


def udp_frame(payload: bytes, sport: int = 1000, dport: int = 2000) -> bytes:
    """A complete Ethernet/IPv4/UDP frame with correct checksums (built by dpkt)."""
    udp = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    udp.ulen = 8 + len(payload)
    ip = dpkt.ip.IP(src=IP_A, dst=IP_B, p=dpkt.ip.IP_PROTO_UDP, ttl=64, data=udp)
    ip.len = 20 + udp.ulen
    eth = dpkt.ethernet.Ethernet(src=MAC_A, dst=MAC_B, type=dpkt.ethernet.ETH_TYPE_IP, data=ip)
    return bytes(eth)


def partial_udp_frame(payload: bytes, sport: int = 1000, dport: int = 2000) -> bytes:
    """The same frame as an offloading sender hands it over: UDP checksum field
    holding the folded pseudo-header sum (VIRTIO_NET_HDR_F_NEEDS_CSUM, csum_start 34,
    csum_offset 6)."""
    frame = bytearray(udp_frame(payload, sport, dport))
    ulen = 8 + len(payload)
    struct.pack_into("!H", frame, 34 + 6, pseudo_header_sum(IP_A, IP_B, 17, ulen))
    return bytes(frame)


def udp_checksum_ok(frame: bytes) -> bool:
    """True when the UDP checksum of an Ethernet/IPv4/UDP frame (IHL 5) verifies."""
    if len(frame) < 42 or frame[14] != 0x45:
        return False
    total = struct.unpack_from("!H", frame, 16)[0]
    udp = frame[34:14 + total]
    if total < 28 or len(udp) != total - 20:
        return False
    s = ones_sum(udp, pseudo_header_sum(frame[26:30], frame[30:34], 17, len(udp)))
    return s == 0xFFFF
