"""The simulated network (stack/sim.py): a batch ends even when a handler raises."""

from __future__ import annotations

import dpkt
import pytest

from stack.sim import SimNetwork
from stack.skbuff import SkBuff
from stack.tcp.layer import TcpLayer
from stack.wire.ipv4 import IPPROTO_TCP, ip_bytes

#: An IP protocol number no layer of the stack uses (RFC 3692 experiment).
BOOM_PROTO = 253
PEER_MAC = b"\x02\x00\x00\x00\x00\xc1"


class Boom(Exception):
    """Raised by the handler under test."""


class RaisingHandler:
    """A registered protocol handler that raises on every datagram."""

    def input(self, skb: SkBuff, src: bytes, dst: bytes, now: float) -> None:
        raise Boom("handler failed")

    def next_deadline(self) -> float | None:
        return None

    def on_timer(self, now: float) -> None:
        pass


def boom_frame(dst_mac: bytes, src: str, dst: str) -> bytes:
    """An Ethernet frame carrying an IPv4 datagram of BOOM_PROTO."""
    pkt = dpkt.ip.IP(src=ip_bytes(src), dst=ip_bytes(dst), p=BOOM_PROTO, ttl=64,
                     data=b"boom")
    pkt.len = 20 + 4
    return bytes(dpkt.ethernet.Ethernet(dst=dst_mac, src=PEER_MAC, type=0x0800, data=pkt))


def test_a_raising_handler_does_not_leave_the_batch_open():
    net = SimNetwork(seed=3)
    a, b = net.add_host("a"), net.add_host("b")
    link = net.connect(a, "198.18.0.1/24", b, "198.18.0.2/24")
    probe = net.add_probe(b, "198.19.0.2/24")
    la, lb = TcpLayer(a, rng=a.rng), TcpLayer(b, rng=b.rng)
    a.register_protocol(IPPROTO_TCP, la)
    b.register_protocol(IPPROTO_TCP, lb)
    b.register_protocol(BOOM_PROTO, RaisingHandler())
    net.start()
    lst = lb.listen(ip_bytes("198.18.0.2"), 9, 8)
    c = la.connect(ip_bytes("198.18.0.2"), 9, net.now)
    net.flush()
    assert net.run_until(lambda: bool(lst.accept_queue), 5.0)
    s = lst.accept()
    net.run(1.0)
    assert link.next_deadline() is None  # nothing in flight
    probe.take()
    probe.send(boom_frame(b.interfaces[-1].mac, "198.19.0.1", "198.19.0.2"))
    with pytest.raises(Boom):
        net.step()
    assert not lb.batching
    s.send(b"hi", net.now)
    net.flush()
    assert link.next_deadline() is not None  # the data left at once
    assert net.run_until(lambda: c.recv_available() == 2, 1.0)
    assert c.recv() == b"hi"
