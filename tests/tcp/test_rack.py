"""RACK-TLP (RFC 8985): loss probes, time-based loss marking, lost retransmissions."""

from __future__ import annotations

import pytest
from harness import A, B, Net
from peer import Peer

from stack import seq as sq
from stack.tcp import rack
from stack.tcp.api import TcpConfig, TcpState
from stack.wire.tcp import ACK

MSS = 1448


def data_segments(out):
    return [(o.hdr.seq, len(o.payload)) for o in out if o.payload]


def _flight(p, tcb, n, now=1.0):
    tcb.cc.cwnd = 20 * MSS
    tcb.send(b"d" * (n * MSS), now)
    out = p.take()
    assert len(out) == n
    return [o.hdr.seq for o in out]


def test_probe_resends_the_last_segment_after_two_srtt():
    p = Peer()
    _, tcb, _ = p.accept_connection()  # SRTT 0.1, RTO 0.3
    seqs = _flight(p, tcb, 4)
    t, out = p.fire()
    # PTO = 2 * SRTT (more than one segment in flight), earlier than the RTO
    assert t == pytest.approx(1.2)
    assert data_segments(out) == [(seqs[-1], MSS)]
    assert p.layer.counters["tlp_probes"] == 1 and p.layer.counters["rto_expired"] == 0
    # with the probe outstanding the next timer is the RTO, not another probe
    assert tcb.rtx_kind == "rtx" and p.layer.next_deadline() == pytest.approx(1.5)


def test_probe_sends_new_data_when_the_window_allows():
    p = Peer()
    _, tcb, _ = p.accept_connection()
    tcb.cc.cwnd = 2 * MSS
    tcb.send(b"n" * (3 * MSS), 1.0)
    first = data_segments(p.take())
    assert len(first) == 2
    _, out = p.fire()
    assert data_segments(out) == [(sq.add(first[-1][0], MSS), MSS)]
    assert tcb.snd_nxt == tcb.write_seq


def test_a_new_data_probe_is_two_segments_so_the_receiver_acks_at_once():
    p = Peer()
    _, tcb, _ = p.accept_connection()
    tcb.cc.cwnd = 2 * MSS
    tcb.send(b"n" * (10 * MSS), 1.0)
    first = data_segments(p.take())
    _, out = p.fire()
    # one segment would wait out a delayed ACK at the receiver (RFC 1122 §4.2.3.2);
    # without offload the probe is two MSS-sized segments
    start = sq.add(first[-1][0], first[-1][1])
    assert data_segments(out) == [(start, MSS), (sq.add(start, MSS), MSS)]
    assert p.layer.counters["tlp_probes"] == 1


def test_single_segment_probe_waits_for_a_delayed_ack():
    p = Peer(TcpConfig(min_rto=1.0))
    _, tcb, _ = p.accept_connection()  # SRTT 0.1, RTO 1.0
    tcb.send(b"x" * 100, 1.0)
    p.take()
    t, out = p.fire()
    # RFC 8985 §7.2: one segment in flight: 2 * SRTT + the worst-case delayed ACK
    assert t == pytest.approx(1.0 + 0.2 + TcpConfig().delack_max)
    assert len(data_segments(out)) == 1


def test_sack_of_the_probe_marks_the_earlier_tail_lost():
    p = Peer()
    _, tcb, _ = p.accept_connection()
    seqs = _flight(p, tcb, 4)
    p.fire()  # the probe: segment 3 again, at 1.2
    end = sq.add(seqs[-1], MSS)
    out = p.send(ACK, ack=seqs[0], now=1.32, sack_blocks=((seqs[-1], end),))
    # segments 0..2 were sent 0.2 s before the probe: all lost; the reduced cwnd
    # (beta * 4 segments) lets the first two out at once
    assert [s for s, _ in data_segments(out)] == seqs[:2]
    assert p.layer.counters["rack_lost_bytes"] == 3 * MSS
    assert tcb.in_recovery and p.layer.counters["rto_expired"] == 0


def test_lost_retransmission_is_sent_again_before_the_rto():
    p = Peer()
    _, tcb, _ = p.accept_connection()
    seqs = _flight(p, tcb, 8)
    end = sq.add(seqs[-1], MSS)
    out = p.send(ACK, ack=seqs[0], now=1.1, sack_blocks=((seqs[1], end),))
    assert data_segments(out)[0] == (seqs[0], MSS) and tcb.in_recovery
    # new data leaves after the retransmission ...
    tcb.send(b"e" * (2 * MSS), 1.15)
    new = data_segments(p.take())
    assert [s for s, _ in new] == [end, sq.add(end, MSS)]
    # ... and arrives, while the retransmission of segment 0 does not
    new_end = sq.add(end, 2 * MSS)
    out = p.send(ACK, ack=seqs[0], now=1.3, sack_blocks=((seqs[1], new_end),))
    assert (seqs[0], MSS) in data_segments(out)
    assert tcb.write_queue.first.retrans == 2
    assert p.layer.counters["rto_expired"] == 0


def test_reordering_within_the_window_is_not_loss():
    p = Peer()
    _, tcb, _ = p.accept_connection()
    seqs = _flight(p, tcb, 4)
    tcb.send(b"f" * MSS, 1.001)  # sent 1 ms after the others: inside reo_wnd (25 ms)
    (late,) = data_segments(p.take())
    assert rack.reo_wnd(tcb) == pytest.approx(0.025)
    out = p.send(ACK, ack=seqs[0], now=1.101, sack_blocks=((late[0], sq.add(late[0], MSS)),))
    assert data_segments(out) == [] and not tcb.in_recovery


def test_reordering_timer_marks_the_hole_lost_when_no_ack_follows():
    p = Peer()
    _, tcb, _ = p.accept_connection()
    seqs = _flight(p, tcb, 4)
    tcb.send(b"f" * MSS, 1.001)
    (late,) = data_segments(p.take())
    out = p.send(ACK, ack=seqs[0], now=1.101, sack_blocks=((late[0], sq.add(late[0], MSS)),))
    assert data_segments(out) == [] and not tcb.in_recovery
    # RFC 8985 §6.3: the four earlier segments may still be reordered until their
    # send time + RACK.rtt (0.1) + reo_wnd (0.025); then, with no ACK in between,
    # the reordering timer judges them lost — long before the RTO (1.3 s)
    t, out = p.fire()
    assert t == pytest.approx(1.0 + 0.1 + 0.025)
    assert tcb.rtx_kind != "reo" and tcb.in_recovery
    assert [s for s, _ in data_segments(out)] == seqs[:len(data_segments(out))]
    assert data_segments(out) and p.layer.counters["rack_lost_bytes"] == 4 * MSS
    assert p.layer.counters["rack_reo_timeouts"] == 1
    assert p.layer.counters["rto_expired"] == 0


def _transfer(net, size, until, on_connect=None):
    lst = net.b.listen(B, 9)
    c = net.a.connect(B, 9, net.now)
    if on_connect is not None:
        on_connect(c)
    net.run(max_steps=1000, stop=lambda: bool(lst.accept_queue))
    s = lst.accept()
    data = bytes(range(256)) * (size // 256)
    sent, got = 0, bytearray()
    for _ in range(200000):
        if sent < len(data):
            sent += c.send(memoryview(data)[sent:sent + 65536], net.now)
        got += s.recv()
        if len(got) == len(data) or net.now > until or not net.step():
            break
    assert c.state is TcpState.ESTABLISHED
    return bytes(got) == data


def _drop_nth_transmissions(nth_frame, times):
    """A drop filter: the nth data frame from A, and its next ``times - 1``
    retransmissions (the frames starting at the same sequence number)."""
    state = {"frames": 0, "target": None, "dropped": 0}

    def f(src, hdr, plen):
        if src == B or not plen:
            return False
        state["frames"] += 1
        if state["frames"] == nth_frame:
            state["target"] = hdr.seq
        if hdr.seq == state["target"] and state["dropped"] < times:
            state["dropped"] += 1
            return True
        return False
    return f, state


@pytest.mark.parametrize("offload", [False, True])
def test_transfer_survives_a_lost_retransmission_without_rto(offload):
    net = Net(delay=0.005, offload=offload)
    f, state = _drop_nth_transmissions(15, 2)
    net.drop_filter.append(f)
    assert _transfer(net, 4 << 20, until=30.0)
    assert state["dropped"] == 2
    assert net.a.counters["rto_expired"] == 0 and net.a.counters["rack_lost_bytes"] > 0


def test_lost_tail_is_repaired_by_a_probe():
    net = Net(delay=0.005, offload=True)
    size = 200 * 1024
    conn = []
    dropped = []

    def last_frame(src, hdr, plen):
        # the frame carrying the last byte of the transfer, the first time only
        if src == B or not plen or dropped:
            return False
        if sq.sub(sq.add(hdr.seq, plen), conn[0].iss) == size + 1:
            dropped.append(hdr.seq)
            return True
        return False
    net.drop_filter.append(last_frame)
    assert _transfer(net, size, until=30.0, on_connect=conn.append)
    assert dropped and net.a.counters["tlp_probes"] >= 1
    assert net.a.counters["rto_expired"] == 0


def test_delayed_ack_after_a_sub_millisecond_handshake_is_the_shortest():
    from stack.wire.tcp import SYN
    p = Peer()
    lst = p.layer.listen(A, 80)
    (synack,) = p.send(SYN, now=0.0, **p.syn_options())
    p.ack = sq.add(synack.hdr.seq, 1)
    p.send(ACK, now=0.0002)  # RTT below the 1 ms timestamp clock: SRTT 0.0
    tcb = lst.accept()
    assert tcb.rtt.has_sample and tcb.rtt.srtt == 0.0
    assert p.send(ACK, b"x" * 100, now=1.0) == []
    # delayed, but by delack_min: a 200 ms delay would equal the peer's minimum RTO,
    # and a loss probe answered that late would not save it from timing out
    assert p.layer.next_deadline() == pytest.approx(1.0 + TcpConfig().delack_min)
