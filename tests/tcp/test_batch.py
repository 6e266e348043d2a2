"""Input batches (TcpLayer.begin_batch / end_batch): one output pass per connection."""

from __future__ import annotations

import heapq

from harness import A, B, Net

from stack.skbuff import SkBuff
from stack.tcp.api import TcpConfig, TcpState
from stack.wire.tcp import ACK


def _pair(**kw):
    net = Net(delay=0.001, **kw)
    lst = net.b.listen(B, 9)
    c = net.a.connect(B, 9, net.now)
    net.run(max_steps=100, stop=lambda: bool(lst.accept_queue))
    s = lst.accept()
    assert c.state is s.state is TcpState.ESTABLISHED
    return net, c, s


def _deliver_batch(net, dst, batch=True):
    """Feed every frame in flight to ``dst`` as one batch; return what it sent."""
    layer = net.layers[dst]
    frames = [f for f in net.frames if f.dst == dst]
    net.frames = [f for f in net.frames if f.dst != dst]
    heapq.heapify(net.frames)
    net.now = max([net.now] + [f.when for f in frames])
    start = len(net.log)
    if batch:
        layer.begin_batch()
    for f in sorted(frames):
        skb = SkBuff.from_bytes(f.data, headroom=64)
        skb.vnet_flags = f.vnet_flags
        layer.input(skb, f.src, f.dst, net.now)
        if batch:
            assert [e for e in net.log[start:] if e[1] == dst] == []  # nothing yet
    if batch:
        layer.end_batch(net.now)
    return [e for e in net.log[start:] if e[1] == dst], len(frames)


def test_one_ack_for_a_batch_of_data_segments():
    net, c, s = _pair()
    c.set_nodelay(True, net.now)
    c.cc.cwnd = 10 * c.mss
    for i in range(6):
        c.send(b"%d" % i * 1000, net.now)  # six segments in flight to B
    sent, n = _deliver_batch(net, B)
    assert n == 6
    assert len(sent) == 1 and sent[0][2].flags == ACK and sent[0][2].ack == s.rcv_nxt
    assert s.recv() == b"".join(b"%d" % i * 1000 for i in range(6))


def test_without_a_batch_every_second_segment_is_acknowledged():
    net, c, s = _pair()
    c.set_nodelay(True, net.now)
    c.cc.cwnd = 10 * c.mss
    for i in range(6):
        c.send(b"%d" % i * c.mss, net.now)
    sent, n = _deliver_batch(net, B, batch=False)
    assert n == 6 and len(sent) == 3  # RFC 5681 §4.2, the reference behaviour


def _acks_in_flight(offload=True):
    net, c, s = _pair(config_a=TcpConfig(sndbuf=1 << 20), offload=offload)
    c.cc.cwnd = 4 * c.mss
    for _ in range(4):
        c.send(bytes(c.mss), net.now)  # four separate frames
    c.send(bytes(60 * c.mss), net.now)  # waits for cwnd
    _deliver_batch(net, B, batch=False)  # B acknowledges every second one
    assert len([f for f in net.frames if f.dst == A]) == 2
    return net, c


def test_acks_of_a_batch_release_one_larger_transmission():
    net, c = _acks_in_flight()
    sent, n = _deliver_batch(net, A)
    data = [e[3] for e in sent if e[3]]
    assert n == 2 and len(data) == 1 and data[0] > 4 * c.mss  # one super-segment


def test_acks_without_a_batch_each_release_a_transmission():
    net, c = _acks_in_flight()
    sent, n = _deliver_batch(net, A, batch=False)
    assert n == 2 and len([e for e in sent if e[3]]) == 2


def test_a_connection_closed_inside_the_batch_is_skipped():
    net, c, s = _pair()
    c.send(b"x" * 100, net.now)
    c.abort(net.now)  # data then RST in flight to B
    sent, n = _deliver_batch(net, B)
    assert n == 2 and s.state is TcpState.CLOSED and sent == []
    assert not net.b.batching and net.b._deferred == {}


def test_data_written_during_a_batch_leaves_with_the_batch_output():
    net, c = _acks_in_flight()
    frames = [f for f in net.frames if f.dst == A]
    start = len(net.log)
    net.a.begin_batch()
    c.send(bytes(10 * c.mss), net.now)  # as a "writable" callback would
    assert [e for e in net.log[start:] if e[1] == A] == []
    for f in frames:
        skb = SkBuff.from_bytes(f.data, headroom=64)
        skb.vnet_flags = f.vnet_flags
        net.a.input(skb, f.src, f.dst, f.when)
    assert [e for e in net.log[start:] if e[1] == A] == []
    net.a.end_batch(max(f.when for f in frames))
    assert len([e for e in net.log[start:] if e[1] == A and e[3]]) == 1
