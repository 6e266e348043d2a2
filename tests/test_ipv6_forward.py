"""The IPv6 router (stack/ip6forward.py) against hand-made frames on two probes:
hop limit, Neighbor Discovery of the next hop, Time Exceeded, Packet Too Big (never
fragments), no route, link-local sources, super-segments forwarded whole; mutated
frames for the router's own TCP and UDP and for forwarding, each counted once."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from stack.sim import SimNetwork
from stack.skbuff import SkBuff
from stack.tcp.layer import ANY6, TcpLayer
from stack.udp import UdpLayer
from stack.wire.ipv6 import ip6_bytes
from stack.wire.tcp import SYN, TcpHeader, TcpOptions, build_segment
from stack.wire.vnet import VIRTIO_NET_HDR_GSO_TCPV6
from tests.test_core_ipv6 import eth, icmp6, mmac, na_frame, ns_frame, sn

A = ip6_bytes("2001:2:0:1::1")
R1 = ip6_bytes("2001:2:0:1::2")
R2 = ip6_bytes("2001:2:0:2::2")
B = ip6_bytes("2001:2:0:2::1")
AMAC = b"\x02\x00\x00\x00\x00\xa1"
BMAC = b"\x02\x00\x00\x00\x00\xb1"


def ip6(src: bytes, dst: bytes, payload: bytes, hlim: int = 64, nxt: int = 17,
        label: int = 0x12345) -> bytes:
    return struct.pack("!IHBB", 6 << 28 | label, len(payload), nxt, hlim) + src + dst + payload


class Router:
    def __init__(self, mtu2: int = 1500, offload: bool = False,
                 offload2: bool | None = None) -> None:
        self.net = SimNetwork(seed=5)
        self.r = self.net.add_host("r", forwarding=True)
        self.pa = self.net.add_probe(self.r, "198.18.0.2/24", offload=offload)
        self.pb = self.net.add_probe(self.r, "198.19.0.2/24", mtu=mtu2,
                                     offload=offload if offload2 is None else offload2)
        self.ia, self.ib = self.r.interfaces
        self.net.start()
        self.net.run(0.01)
        self.r.ip6.add_address(self.ia, "2001:2:0:1::2/64", self.net.now)
        self.r.ip6.add_address(self.ib, "2001:2:0:2::2/64", self.net.now)
        self.net.run(3.0)
        self.pa.take(), self.pb.take()
        # A asks for the router's address: the router learns A.
        self.pa.send(ns_frame(A, sn(R1), R1, mmac(sn(R1)), sll=AMAC))
        self.net.run(0.01)
        assert len(self.pa.take()) == 1

    def from_a(self, packet: bytes) -> None:
        self.pa.send(eth(self.ia.mac, AMAC, packet))
        self.net.run(0.01)


def test_forwarded_with_hop_limit_down_after_resolving_the_next_hop():
    rt = Router()
    udp = struct.pack("!HHHH", 5000, 53, 12, 0) + b"abcd"
    rt.from_a(ip6(A, B, udp))
    (ns,) = rt.pb.take()            # the router solicits B first (RFC 4861 §7.2.2)
    assert ns == ns_frame(R2, sn(B), B, mmac(sn(B)), sll=rt.ib.mac, eth_src=rt.ib.mac)
    rt.pb.send(na_frame(B, R2, B, rt.ib.mac, 0x60, tll=BMAC, eth_src=BMAC))
    rt.net.run(0.01)
    (fwd,) = rt.pb.take()
    assert fwd == eth(BMAC, rt.ib.mac, ip6(A, B, udp, hlim=63))
    assert rt.r.counters["rx_forwarded"] == 1


def test_hop_limit_one_gets_time_exceeded():
    rt = Router()
    packet = ip6(A, B, b"\0" * 16, hlim=1)
    rt.from_a(packet)
    (err,) = rt.pa.take()
    assert err == eth(AMAC, rt.ia.mac, ip6(R1, A, icmp6(R1, A, 3, 0, bytes(4) + packet),
                                           hlim=64, nxt=58, label=0))
    assert rt.pb.take() == [] and rt.r.counters["drop.ipv6_hop_limit_exceeded"] == 1


def test_too_big_for_the_next_link_gets_packet_too_big_never_fragments():
    rt = Router(mtu2=1280)
    packet = ip6(A, B, bytes(1300))
    rt.from_a(packet)
    (err,) = rt.pa.take()
    quote = packet[:1280 - 48]
    assert err == eth(AMAC, rt.ia.mac, ip6(R1, A, icmp6(R1, A, 2, 0, struct.pack("!I", 1280)
                                                        + quote), nxt=58, label=0))
    assert rt.pb.take() == []


def test_no_route_and_link_local_source():
    rt = Router()
    rt.from_a(ip6(A, ip6_bytes("2001:2:0:7::1"), b"\0" * 8))
    (err,) = rt.pa.take()
    assert err[14 + 40] == 1 and err[14 + 41] == 0          # no route to destination
    rt.from_a(ip6(ip6_bytes("fe80::1"), B, b"\0" * 8))
    assert rt.r.counters["drop.ipv6_link_local_source"] == 1
    assert rt.pb.take() == []


def test_super_segment_forwarded_whole():
    rt = Router(offload=True)
    tcp = struct.pack("!HHLLBBHHH", 40000, 80, 1, 1, 5 << 4, 0x10, 512, 0, 0) + bytes(3000)
    # The router has no entry for B yet: solicit, answer, then the frame goes.
    frame = eth(rt.ia.mac, AMAC, ip6(A, B, tcp, nxt=6))
    skb = SkBuff.from_bytes(frame)
    skb.gso_type, skb.gso_size = VIRTIO_NET_HDR_GSO_TCPV6, 1000
    rt.pa.end.write(skb, rt.net.now)
    rt.net.run(0.01)
    rt.pb.take()
    rt.pb.send(na_frame(B, R2, B, rt.ib.mac, 0x60, tll=BMAC, eth_src=BMAC))
    rt.net.run(0.01)
    (out,) = rt.pb.take_skbs()
    assert out.gso_type == VIRTIO_NET_HDR_GSO_TCPV6 and out.gso_size == 1000
    assert out.tobytes() == eth(BMAC, rt.ib.mac, ip6(A, B, tcp, nxt=6, hlim=63))


def test_super_segment_whose_segments_do_not_fit_gets_packet_too_big():
    rt = Router(offload=True, mtu2=1280)
    tcp = struct.pack("!HHLLBBHHH", 40000, 80, 1, 1, 5 << 4, 0x10, 512, 0, 0) + bytes(2600)
    skb = SkBuff.from_bytes(eth(rt.ia.mac, AMAC, ip6(A, B, tcp, nxt=6)))
    skb.gso_type, skb.gso_size = VIRTIO_NET_HDR_GSO_TCPV6, 1300     # 40 + 20 + 1300 > 1280
    rt.pa.end.write(skb, rt.net.now)
    rt.net.run(0.01)
    (err,) = rt.pa.take()
    assert err[14 + 40:14 + 41] == b"\x02" and err[14 + 44:14 + 48] == struct.pack("!I", 1280)
    assert rt.pb.take() == [] and rt.r.counters["drop.ipv6_packet_too_big"] == 1


def _seeds(rt: Router) -> list[bytes]:
    syn_r = build_segment(A, R1, TcpHeader(40000, 80, 1, 0, SYN, 65535,
                                           options=TcpOptions(mss=1440, wscale=7)))
    syn_b = build_segment(A, B, TcpHeader(40001, 80, 1, 0, SYN, 65535))
    udp = struct.pack("!HHHH", 5000, 53, 12, 0) + b"abcd"
    mac = rt.ia.mac
    return [eth(mac, AMAC, ip6(A, R1, syn_r, nxt=6)), eth(mac, AMAC, ip6(A, B, syn_b, nxt=6)),
            eth(mac, AMAC, ip6(A, R1, udp)), eth(mac, AMAC, ip6(A, B, udp, hlim=1))]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 120), st.integers(0, 255),
                          st.integers(0, 2)), min_size=1, max_size=10))
def test_mutated_transport_and_forwarded_frames_are_counted_never_crash(edits):
    rt = Router()
    tcp = TcpLayer(rt.r, rng=rt.r.rng)
    rt.r.register_protocol(6, tcp)
    rt.r.register_protocol(17, UdpLayer(rt.r, rng=rt.r.rng))
    tcp.listen(ANY6, 80)
    seeds = _seeds(rt)
    before = dict(rt.r.counters)
    for which, pos, value, how in edits:
        f = bytearray(seeds[which])
        pos = 14 + pos % (len(f) - 14)
        if how == 0:
            f[pos] = value
        elif how == 1:
            del f[pos:]
        else:
            f[pos] ^= 1 << (value % 8)
        rt.pa.send(bytes(f))
    rt.net.run(5.0)
    c = {k: rt.r.counters[k] - before.get(k, 0) for k in
         ("rx_frames", "rx_local", "rx_dropped", "rx_arp", "rx_forwarded")}
    assert c["rx_frames"] == c["rx_local"] + c["rx_dropped"] + c["rx_arp"] + c["rx_forwarded"]


def test_hop_by_hop_options_are_read_by_the_router():
    from stack.wire.ipv6ext import options_header

    rt = Router()
    rt.pb.send(ns_frame(B, sn(R2), R2, mmac(sn(R2)), sll=BMAC, eth_src=BMAC))
    rt.net.run(0.01)
    rt.pb.take()                                        # the router knows B now
    udp = struct.pack("!HHHH", 5000, 53, 12, 0) + b"abcd"
    skip = options_header(17, bytes((0x1E, 2, 0, 0)))  # action 00: skipped
    rt.from_a(ip6(A, B, skip + udp, nxt=0))
    (fwd,) = rt.pb.take()
    assert fwd == eth(BMAC, rt.ib.mac, ip6(A, B, skip + udp, nxt=0, hlim=63))
    answer = options_header(17, bytes((0x9E, 2, 0, 0)))  # action 10: a Parameter Problem
    packet = ip6(A, B, answer + udp, nxt=0)
    rt.from_a(packet)
    (err,) = rt.pa.take()
    assert err == eth(AMAC, rt.ia.mac, ip6(R1, A, icmp6(R1, A, 4, 2, struct.pack("!I", 42)
                                                        + packet), nxt=58, label=0))
    assert rt.pb.take() == [] and rt.r.counters["drop.ipv6_unknown_option"] == 1


def test_super_segment_to_a_link_without_offload_is_segmented_in_software():
    from stack.wire.checksum import checksum, pseudo_header_sum6

    rt = Router(offload=True, offload2=False)
    rt.pb.send(ns_frame(B, sn(R2), R2, mmac(sn(R2)), sll=BMAC, eth_src=BMAC))
    rt.net.run(0.01)
    rt.pb.take()
    data = bytes(range(250)) * 10
    tcp = struct.pack("!HHLLBBHHH", 40000, 80, 7, 1, 5 << 4, 0x18, 512, 0, 0) + data
    skb = SkBuff.from_bytes(eth(rt.ia.mac, AMAC, ip6(A, B, tcp, nxt=6)))
    skb.gso_type, skb.gso_size = VIRTIO_NET_HDR_GSO_TCPV6, 1000
    rt.pa.end.write(skb, rt.net.now)
    rt.net.run(0.01)
    out = rt.pb.take()
    assert [len(f) - 14 - 40 - 20 for f in out] == [1000, 1000, 500]
    for i, f in enumerate(out):
        seg = f[54:]
        want = struct.pack("!HHLLBBHHH", 40000, 80, 7 + 1000 * i, 1, 5 << 4,
                           0x18 if i == 2 else 0x10, 512, 0, 0) + data[1000 * i:1000 * (i + 1)]
        c = checksum(want, pseudo_header_sum6(A, B, 6, len(want)))
        assert f == eth(BMAC, rt.ib.mac, ip6(A, B, want[:16] + struct.pack("!H", c)
                                                 + want[18:], nxt=6, hlim=63))
        assert seg[20:] == data[1000 * i:1000 * (i + 1)]
