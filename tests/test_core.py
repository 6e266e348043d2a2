"""The sans-I/O core on the simulated link: ARP, ICMP, forwarding, fragments, drops."""

from __future__ import annotations

import struct

import dpkt
import pytest

from stack.sim import Probe, SimNetwork
from stack.skbuff import SkBuff
from stack.wire.ipv4 import ip_bytes

A_MAC_PEER = b"\x02\x00\x00\x00\x00\xa1"
B_MAC_PEER = b"\x02\x00\x00\x00\x00\xb1"
A_HOST, A_STACK = "198.18.0.1", "198.18.0.2"
B_HOST, B_STACK = "198.19.0.1", "198.19.0.2"


def eth(dst: bytes, src: bytes, payload, etype: int = dpkt.ethernet.ETH_TYPE_IP) -> bytes:
    return bytes(dpkt.ethernet.Ethernet(dst=dst, src=src, type=etype, data=payload))


def arp(op: int, sha: bytes, spa: str, tha: bytes, tpa: str) -> dpkt.arp.ARP:
    return dpkt.arp.ARP(op=op, sha=sha, spa=ip_bytes(spa), tha=tha, tpa=ip_bytes(tpa))


def ip(src: str, dst: str, payload, p: int = dpkt.ip.IP_PROTO_ICMP, ttl: int = 64,
       df: bool = False, id_: int = 7) -> dpkt.ip.IP:
    pkt = dpkt.ip.IP(src=ip_bytes(src), dst=ip_bytes(dst), p=p, ttl=ttl, id=id_, data=payload)
    pkt.df = int(df)
    pkt.len = 20 + len(bytes(payload))
    return pkt


def echo(ident: int = 1, seq: int = 1, data: bytes = b"hello") -> dpkt.icmp.ICMP:
    return dpkt.icmp.ICMP(type=8, code=0, data=dpkt.icmp.ICMP.Echo(id=ident, seq=seq, data=data))


class Lab:
    """A router stack between two probes standing in for hosts A and B."""

    def __init__(self, forwarding: bool = True, b_mtu: int = 1500, offload: bool = False):
        self.net = SimNetwork(seed=1)
        self.stack = self.net.add_host("r", forwarding=forwarding)
        self.a: Probe = self.net.add_probe(self.stack, f"{A_STACK}/24", offload=offload)
        self.b: Probe = self.net.add_probe(self.stack, f"{B_STACK}/24", mtu=b_mtu,
                                           offload=offload)
        self.ia, self.ib = self.stack.interfaces
        self.net.start()

    def run(self, t: float = 0.01) -> None:
        self.net.run(t)

    def resolve_a(self) -> None:
        """Host A learns the stack's MAC and the stack learns A's (ARP both ways)."""
        self.a.send(eth(b"\xff" * 6, A_MAC_PEER,
                        arp(1, A_MAC_PEER, A_HOST, b"\0" * 6, A_STACK), 0x0806))
        self.run()
        self.a.take()
        self.b.take()

    def from_a(self, pkt) -> None:
        self.a.send(eth(self.ia.mac, A_MAC_PEER, pkt))
        self.run()

    def answer_arp_on_b(self) -> None:
        for f in self.b.take():
            e = dpkt.ethernet.Ethernet(f)
            if e.type == 0x0806 and e.data.op == 1 and e.data.tpa == ip_bytes(B_HOST):
                self.b.send(eth(e.src, B_MAC_PEER, arp(2, B_MAC_PEER, B_HOST, e.src,
                                                        B_STACK), 0x0806))
        self.run()


def frames_of(probe: Probe) -> list[dpkt.ethernet.Ethernet]:
    return [dpkt.ethernet.Ethernet(f) for f in probe.take()]


def test_gratuitous_arp_at_start():
    lab = Lab()
    lab.run()
    for probe, iface in ((lab.a, lab.ia), (lab.b, lab.ib)):
        (f,) = frames_of(probe)
        assert f.dst == b"\xff" * 6 and f.type == 0x0806
        assert f.data.op == 1 and f.data.spa == f.data.tpa == iface.addr
        assert f.data.sha == iface.mac


def test_arp_request_answered_and_others_ignored():
    lab = Lab()
    lab.run()
    lab.a.take()
    lab.a.send(eth(b"\xff" * 6, A_MAC_PEER, arp(1, A_MAC_PEER, A_HOST, b"\0" * 6, A_STACK),
                   0x0806))
    lab.a.send(eth(b"\xff" * 6, A_MAC_PEER,
                   arp(1, A_MAC_PEER, A_HOST, b"\0" * 6, "198.18.0.77"), 0x0806))
    lab.run()
    (reply,) = frames_of(lab.a)
    assert reply.dst == A_MAC_PEER and reply.data.op == 2
    assert reply.data.sha == lab.ia.mac and reply.data.spa == ip_bytes(A_STACK)
    assert reply.data.tha == A_MAC_PEER and reply.data.tpa == ip_bytes(A_HOST)
    assert lab.stack.counters["drop.arp_not_for_us"] == 1
    assert lab.stack.neigh.lookup_mac(lab.ia, ip_bytes(A_HOST)) == A_MAC_PEER


def test_ping_is_answered():
    lab = Lab(forwarding=False)
    lab.resolve_a()
    lab.from_a(ip(A_HOST, A_STACK, echo(0x1234, 9, b"x" * 100)))
    (f,) = frames_of(lab.a)
    reply = f.data
    assert f.dst == A_MAC_PEER and f.src == lab.ia.mac
    assert reply.src == ip_bytes(A_STACK) and reply.dst == ip_bytes(A_HOST)
    assert reply.data.type == 0 and reply.data.data.id == 0x1234 and reply.data.data.seq == 9
    assert reply.data.data.data == b"x" * 100
    # dpkt recomputes checksums when serialising: equal bytes mean ours were right.
    raw = bytes(reply)
    reply.sum = 0
    reply.data.sum = 0
    assert bytes(reply) == raw


def test_forwarding_resolves_next_hop_and_decrements_ttl():
    lab = Lab()
    lab.resolve_a()
    lab.from_a(ip(A_HOST, B_HOST, echo(data=b"through"), ttl=10))
    (req,) = frames_of(lab.b)
    assert req.type == 0x0806 and req.data.tpa == ip_bytes(B_HOST) and req.dst == b"\xff" * 6
    lab.b.send(eth(lab.ib.mac, B_MAC_PEER,
                   arp(2, B_MAC_PEER, B_HOST, lab.ib.mac, B_STACK), 0x0806))
    lab.run()
    (fwd,) = frames_of(lab.b)
    assert fwd.src == lab.ib.mac and fwd.dst == B_MAC_PEER
    assert fwd.data.ttl == 9 and fwd.data.data.data.data == b"through"
    raw = bytes(fwd.data)
    fwd.data.sum = 0
    assert bytes(fwd.data) == raw  # incremental checksum == recomputed
    assert lab.stack.counters["rx_forwarded"] == 1


def test_ttl_expiry_and_no_route_send_icmp_errors():
    lab = Lab()
    lab.resolve_a()
    lab.from_a(ip(A_HOST, B_HOST, echo(), ttl=1))
    (te,) = frames_of(lab.a)
    assert te.data.data.type == 11 and te.data.data.code == 0
    quoted = dpkt.ip.IP(bytes(te.data.data.data)[4:])
    assert quoted.dst == ip_bytes(B_HOST)
    lab.from_a(ip(A_HOST, "198.18.200.9", echo()))
    (nr,) = frames_of(lab.a)
    assert nr.data.data.type == 3 and nr.data.data.code == 0
    c = lab.stack.counters
    assert c["drop.ipv4_ttl_expired"] == 1 and c["drop.ipv4_no_route"] == 1


def test_no_error_about_an_error_or_for_broadcast():
    lab = Lab()
    lab.resolve_a()
    err = dpkt.icmp.ICMP(type=3, code=1, data=dpkt.icmp.ICMP.Unreach(data=b"\0" * 28))
    lab.from_a(ip(A_HOST, B_HOST, err, ttl=1))
    assert frames_of(lab.a) == []
    assert lab.stack.counters["icmp_error_suppressed"] == 1


def test_unresolved_next_hop_gives_host_unreachable_after_retries():
    lab = Lab()
    lab.resolve_a()
    lab.from_a(ip(A_HOST, B_HOST, echo()))
    lab.run(10.0)
    requests = [f for f in frames_of(lab.b) if f.type == 0x0806]
    assert len(requests) == lab.stack.neigh.max_probes
    (hu,) = frames_of(lab.a)
    assert hu.data.data.type == 3 and hu.data.data.code == 1
    assert lab.stack.counters["drop.arp_unresolved"] == 1
    assert lab.stack.neigh.get(lab.ib, ip_bytes(B_HOST)) is None


def test_pending_queue_is_bounded():
    lab = Lab()
    lab.resolve_a()
    for i in range(lab.stack.neigh.max_pending + 5):
        lab.a.send(eth(lab.ia.mac, A_MAC_PEER, ip(A_HOST, B_HOST, echo(seq=i))))
    lab.run()
    assert lab.stack.counters["drop.arp_queue_full"] == 5
    lab.answer_arp_on_b()
    fwd = [f for f in frames_of(lab.b) if f.type == 0x0800]
    assert [f.data.data.data.seq for f in fwd] == list(range(lab.stack.neigh.max_pending))


def test_udp_to_stack_gets_port_unreachable():
    lab = Lab()
    lab.resolve_a()
    lab.from_a(ip(A_HOST, A_STACK, dpkt.udp.UDP(sport=5, dport=6, ulen=9, data=b"q"),
                  p=dpkt.ip.IP_PROTO_UDP))
    (pu,) = frames_of(lab.a)
    assert pu.data.data.type == 3 and pu.data.data.code == 3


def _fragments(pkt: dpkt.ip.IP, size: int) -> list[bytes]:
    body = bytes(pkt.data)
    out = []
    for off in range(0, len(body), size):
        chunk = body[off:off + size]
        f = dpkt.ip.IP(src=pkt.src, dst=pkt.dst, p=pkt.p, id=pkt.id, ttl=64, data=chunk)
        f.offset = off // 8  # dpkt takes the raw field, in 8-byte units
        f.mf = int(off + size < len(body))
        f.len = 20 + len(chunk)
        out.append(bytes(f))
    return out


def _reassemble(frames: list[dpkt.ethernet.Ethernet]) -> bytes:
    parts = sorted((f.data.offset * 8, bytes(f.data.data)) for f in frames)
    return b"".join(p for _, p in parts)


def test_fragmented_ping_is_reassembled_and_reply_fragmented():
    lab = Lab(forwarding=False)
    lab.resolve_a()
    data = bytes(range(256)) * 12
    frags = _fragments(ip(A_HOST, A_STACK, echo(5, 6, data)), 1480)
    for f in reversed(frags):  # out of order on purpose
        lab.a.send(eth(lab.ia.mac, A_MAC_PEER, f))
    lab.run()
    replies = frames_of(lab.a)
    assert len(replies) == 3 and all(len(f.data) <= 1500 for f in replies)
    icmp = dpkt.icmp.ICMP(_reassemble(replies))
    assert icmp.type == 0 and icmp.data.data == data


def test_reassembly_timeout_sends_time_exceeded():
    lab = Lab(forwarding=False)
    lab.resolve_a()
    first = _fragments(ip(A_HOST, A_STACK, echo(data=b"z" * 3000)), 1480)[0]
    lab.a.send(eth(lab.ia.mac, A_MAC_PEER, first))
    lab.run(lab.stack.reasm.timeout + 1)
    # A's neighbour entry went stale meanwhile: a unicast ARP refresh goes out too.
    (te,) = [f for f in frames_of(lab.a) if f.type == 0x0800]
    assert te.data.data.type == 11 and te.data.data.code == 1
    assert len(lab.stack.reasm) == 0 and lab.stack.reasm.bytes == 0


def test_too_big_with_df_gets_frag_needed_without_df_is_fragmented():
    lab = Lab(b_mtu=1280)
    lab.resolve_a()
    lab.from_a(ip(A_HOST, B_HOST, echo(data=b"d" * 1400), df=True))
    (fn,) = frames_of(lab.a)
    assert fn.data.data.type == 3 and fn.data.data.code == 4
    assert int.from_bytes(bytes(fn.data.data)[6:8], "big") == 1280
    lab.b.take()
    lab.from_a(ip(A_HOST, B_HOST, echo(data=b"d" * 1400), df=False))
    lab.answer_arp_on_b()
    fwd = [f for f in frames_of(lab.b) if f.type == 0x0800]
    assert len(fwd) == 2 and all(len(f.data) <= 1280 for f in fwd)
    assert dpkt.icmp.ICMP(_reassemble(fwd)).data.data == b"d" * 1400


def _tcp_superframe(dst_mac: bytes, payload: bytes) -> bytes:
    tcp = dpkt.tcp.TCP(sport=40000, dport=80, seq=1000, ack=5, flags=0x18, win=500,
                       data=payload)
    return eth(dst_mac, A_MAC_PEER, ip(A_HOST, B_HOST, tcp, p=dpkt.ip.IP_PROTO_TCP, df=True))


@pytest.mark.parametrize("offload", [True, False])
def test_tso_superframe_forwarded_intact_or_segmented(offload):
    lab = Lab(offload=offload)
    if not offload:  # a super-frame into a plain link: give B's side offload only
        lab = Lab(offload=True)
        lab.ib.offload = False
        lab.net.wires[(id(lab.stack), lab.ib.index)]._link.offload = False
    lab.resolve_a()
    lab.a.send(eth(lab.ia.mac, A_MAC_PEER, ip(A_HOST, B_HOST, echo())))
    lab.run()
    lab.answer_arp_on_b()
    lab.b.take()
    payload = bytes(i % 251 for i in range(10000))
    lab.a.send(_tcp_superframe(lab.ia.mac, payload), gso_size=1448)
    lab.run()
    got = lab.b.take_skbs()
    if offload:
        (skb,) = got
        assert skb.gso_size == 1448 and len(skb) == 14 + 20 + 20 + 10000
    else:
        assert len(got) == 7 and all(s.gso_size == 0 for s in got)
        segs = [dpkt.ethernet.Ethernet(s.tobytes()).data for s in got]
        assert b"".join(bytes(s.data.data) for s in segs) == payload
        for s in segs:
            raw = bytes(s)
            s.sum = 0
            s.data.sum = 0
            assert bytes(s) == raw  # dpkt recomputed both checksums identically


def test_not_forwarding_drops_transit_traffic():
    lab = Lab(forwarding=False)
    lab.resolve_a()
    lab.from_a(ip(A_HOST, B_HOST, echo()))
    assert frames_of(lab.b) == []
    assert lab.stack.counters["drop.ipv4_not_for_us"] == 1


def test_counters_add_up():
    lab = Lab()
    lab.resolve_a()
    lab.from_a(ip(A_HOST, A_STACK, echo()))
    lab.from_a(ip(A_HOST, B_HOST, echo(), ttl=1))
    # Too short for the link model to carry: hand it to the core directly.
    lab.stack.receive_frame(lab.ia, SkBuff.from_bytes(b"\x00" * 10), lab.net.now)
    c = lab.stack.counters
    assert c["rx_frames"] == c["rx_arp"] + c["rx_local"] + c["rx_forwarded"] + c["rx_dropped"]
    assert c["drop.eth_truncated"] == 1


def _raw_ip(src: str, dst: str, proto: int, payload: bytes, ihl: int = 20) -> bytes:
    """An IPv4 datagram whose payload is taken as given (no codec fills it in)."""
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | ihl >> 2, 0, ihl + len(payload), 9,
                                0, 64, proto, 0, ip_bytes(src), ip_bytes(dst)))
    hdr += bytes(ihl - 20)
    total = sum(int.from_bytes(hdr[i:i + 2], "big") for i in range(0, ihl, 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    hdr[10:12] = (~total & 0xFFFF).to_bytes(2, "big")
    return bytes(hdr) + payload


@pytest.mark.parametrize("payload, reason", [
    (b"\0\5\0\6", "udp_truncated"),                       # half a header
    (b"\0\5\0\6\0\x40\0\0q", "udp_bad_length"),           # length past the datagram
    (b"\0\5\0\6\0\x09\x12\x34q", "udp_bad_checksum"),     # wrong checksum
])
def test_malformed_udp_gets_no_port_unreachable(payload, reason):
    # Linux counts such datagrams as UDP InErrors/InCsumErrors and answers nothing;
    # only a well-formed datagram to a closed port earns a port unreachable.
    lab = Lab()
    lab.resolve_a()
    lab.a.send(eth(lab.ia.mac, A_MAC_PEER, _raw_ip(A_HOST, A_STACK, 17, payload)))
    lab.run()
    assert frames_of(lab.a) == []
    assert lab.stack.counters[reason] == 1
    assert lab.stack.counters["udp_no_port"] == 0


def test_icmp_error_quoting_a_bad_header_is_counted_not_delivered():
    lab = Lab()
    lab.resolve_a()
    got: list = []

    class Proto:
        def input(self, *a): ...
        def next_deadline(self): return None
        def on_timer(self, now): ...
        def icmp_error(self, *a, **kw): got.append(a)

    lab.stack.register_protocol(6, Proto())
    # The quoted header claims IHL 8 bytes (less than the 20 any header has).
    quoted = bytearray(_raw_ip(A_STACK, A_HOST, 6, b"\0" * 20))
    quoted[0] = 0x42
    err = dpkt.icmp.ICMP(type=3, code=4, data=dpkt.icmp.ICMP.Unreach(mtu=1000,
                                                                     data=bytes(quoted)))
    lab.from_a(ip(A_HOST, A_STACK, err))
    assert got == []
    assert lab.stack.counters["icmp_error_bad_quote"] == 1


def test_superframe_with_a_truncated_tcp_header_is_a_counted_drop():
    lab = Lab(offload=True)
    lab.resolve_a()
    lab.a.send(eth(lab.ia.mac, A_MAC_PEER, _raw_ip(A_HOST, B_HOST, 6, b"\0" * 8)),
               gso_size=1448)
    lab.run()
    assert lab.stack.counters["drop.tcp_truncated"] == 1
    assert lab.stack.counters["rx_forwarded"] == 0
