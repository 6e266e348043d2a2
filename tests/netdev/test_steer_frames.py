"""The steering program run on frames of every kind (tests/netdev/bpfvm.py interprets
it as the kernel would): TCP and UDP over IPv4 and IPv6 reach the queue of their ports,
ICMP and ICMPv6 errors the queue of the ports they quote, and the rest queue 0 — on a
TAP (the frame from its Ethernet header) and as a fanout program (from the IP header)."""

from __future__ import annotations

import struct

import pytest

from stack.netdev.steer import EXT_WALK, port_sum_program, queue_of
from tests.netdev.bpfvm import run

MACS = bytes(range(1, 13))
SRC4, DST4 = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
SRC6 = bytes.fromhex("20010002000000010000000000000001")
DST6 = bytes.fromhex("20010002000000010000000000000002")
TCP, UDP, ICMP6 = 6, 17, 58


def ports_off_zero(queues: int) -> tuple[int, int]:
    """A port pair whose queue is not 0, so that a wrong answer of 0 shows."""
    sport = next(p for p in range(40000, 41000) if queue_of(p, 7, queues) != 0)
    return sport, 7


def transport(proto: int, sport: int, dport: int) -> bytes:
    if proto == TCP:
        return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x02, 65535, 0, 0)
    return struct.pack("!HHHH", sport, dport, 12, 0) + b"data"


def ip4(proto: int, body: bytes, *, frag: int = 0, options: bytes = b"") -> bytes:
    ihl = 5 + len(options) // 4
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 4 * ihl + len(body), 1, frag, 64,
                      proto, 0, SRC4, DST4)
    return hdr + options + body


def ip6(next_header: int, body: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(body), next_header, 64, SRC6,
                       DST6) + body


def ext(next_header: int, units: int = 0) -> bytes:
    """A hop-by-hop/routing/destination-options header of (units + 1) * 8 bytes."""
    return bytes([next_header, units]) + bytes(6 + 8 * units)


def eth(etype: int, packet: bytes) -> bytes:
    return MACS + struct.pack("!H", etype) + packet


def steer(queues: int, frame: bytes, fanout: bool) -> int:
    code = port_sum_program(queues, at_network_header=fanout)
    if fanout:
        return run(code, frame[14:], frame[:14])
    return run(code, frame)


MODES = pytest.mark.parametrize("fanout", [False, True], ids=["tap", "fanout"])
COUNTS = pytest.mark.parametrize("queues", [2, 3, 16])


def ported_frames(sport: int, dport: int) -> dict[str, bytes]:
    """Frames that must reach queue_of(sport, dport)."""
    t, u = transport(TCP, sport, dport), transport(UDP, sport, dport)
    quote4 = ip4(UDP, transport(UDP, dport, sport))  # what we sent, quoted back
    quote6 = ip6(TCP, transport(TCP, dport, sport))
    out = {
        "ipv4 tcp": eth(0x0800, ip4(TCP, t)),
        "ipv4 udp": eth(0x0800, ip4(UDP, u)),
        "ipv4 tcp with options": eth(0x0800, ip4(TCP, t, options=b"\x01" * 8)),
        "ipv4 icmp unreachable": eth(0x0800, ip4(1, bytes([3, 3]) + bytes(6) + quote4)),
        "ipv4 icmp time exceeded": eth(0x0800, ip4(1, bytes([11, 0]) + bytes(6) + quote4)),
        "ipv6 tcp": eth(0x86DD, ip6(TCP, t)),
        "ipv6 udp": eth(0x86DD, ip6(UDP, u)),
        "ipv6 tcp after hop-by-hop": eth(0x86DD, ip6(0, ext(TCP) + t)),
        "ipv6 udp after hop-by-hop, routing, dest opts":
            eth(0x86DD, ip6(0, ext(43, 1) + ext(60, 2) + ext(UDP) + u)),
    }
    for type_ in (1, 2, 3, 4):
        out[f"ipv6 icmpv6 error {type_}"] = eth(0x86DD, ip6(ICMP6, bytes([type_, 0])
                                                        + bytes(6) + quote6))
    out["ipv6 icmpv6 error quoting udp"] = eth(0x86DD, ip6(ICMP6, bytes([1, 4]) + bytes(6)
                                           + ip6(UDP, transport(UDP, dport, sport))))
    out["ipv6 icmpv6 error after dest opts"] = eth(0x86DD, ip6(60, ext(ICMP6) + bytes(
        [3, 0]) + bytes(6) + quote6))
    return out


def zero_frames(sport: int, dport: int) -> dict[str, bytes]:
    """Frames that must reach queue 0."""
    t, u = transport(TCP, sport, dport), transport(UDP, sport, dport)
    chain = b"".join(ext(60) for _ in range(EXT_WALK)) + ext(TCP)
    return {
        "arp": eth(0x0806, bytes(28)),
        "another ethertype": eth(0x88CC, t),
        "ipv4 first fragment": eth(0x0800, ip4(UDP, u, frag=0x2000)),
        "ipv4 later fragment": eth(0x0800, ip4(UDP, u, frag=0x0010)),
        "ipv4 echo": eth(0x0800, ip4(1, bytes([8, 0]) + bytes(6) + t)),
        "ipv4 other protocol": eth(0x0800, ip4(47, t)),
        "ipv4 truncated": eth(0x0800, ip4(TCP, t)[:22]),
        "ipv6 fragment": eth(0x86DD, ip6(44, bytes([UDP, 0, 0, 0]) + bytes(4) + u)),
        "ipv6 tcp after hop-by-hop then fragment":
            eth(0x86DD, ip6(0, ext(44) + bytes([TCP, 0, 0, 1]) + bytes(4) + t)),
        "ipv6 chain longer than the walk": eth(0x86DD, ip6(60, chain + t)),
        "ipv6 no next header": eth(0x86DD, ip6(59, t)),
        "ipv6 other protocol": eth(0x86DD, ip6(47, t)),
        "ipv6 truncated": eth(0x86DD, ip6(TCP, t)[:41]),
        "ipv6 extension header cut short": eth(0x86DD, ip6(0, ext(TCP, 4)[:10])),
        "ipv6 echo": eth(0x86DD, ip6(ICMP6, bytes([128, 0]) + bytes(6) + t)),
        "ipv6 echo reply": eth(0x86DD, ip6(ICMP6, bytes([129, 0]) + bytes(6) + t)),
        "ipv6 error quoting an extension header": eth(0x86DD, ip6(ICMP6, bytes(
            [1, 0]) + bytes(6) + ip6(60, ext(TCP) + transport(TCP, dport, sport)))),
        "ipv6 error quoting icmpv6": eth(0x86DD, ip6(ICMP6, bytes([1, 0]) + bytes(6)
                                         + ip6(ICMP6, bytes([128, 0]) + bytes(6) + t))),
        **{f"ipv6 ndp {ty}": eth(0x86DD, ip6(ICMP6, bytes([ty, 0]) + bytes(6) + DST6
                                             + t)) for ty in range(133, 138)},
    }


@MODES
@COUNTS
def test_tcp_udp_and_errors_reach_the_queue_of_their_ports(queues, fanout):
    sport, dport = ports_off_zero(queues)
    want = queue_of(sport, dport, queues)
    got = {name: steer(queues, f, fanout) for name, f in ported_frames(sport, dport).items()}
    assert got == {name: want for name in got}


@MODES
@COUNTS
def test_everything_else_reaches_queue_zero(queues, fanout):
    sport, dport = ports_off_zero(queues)
    got = {name: steer(queues, f, fanout) for name, f in zero_frames(sport, dport).items()}
    assert got == {name: 0 for name in got}


@MODES
def test_ipv6_ports_spread_like_ipv4_ones(fanout):
    # Both directions of every flow land on one queue, the one queue_of names.
    for sport in range(40000, 40064):
        for a, b in ((sport, 80), (80, sport)):
            v4 = steer(4, eth(0x0800, ip4(TCP, transport(TCP, a, b))), fanout)
            v6 = steer(4, eth(0x86DD, ip6(TCP, transport(TCP, a, b))), fanout)
            assert v4 == v6 == queue_of(sport, 80, 4)
