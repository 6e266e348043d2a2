"""The send path with offload: TSO-sized write queue buffers, cuts at transmit time
and at SACK block edges, TSO deferral while cwnd-limited."""

from __future__ import annotations

from peer import Peer

from stack import seq as sq
from stack.tcp.output import send_goal
from stack.tcp.sack import LOST, SACKED, Scoreboard, split_buffer
from stack.wire.tcp import ACK

MSS = 1448


def _big_window_peer():
    p = Peer(offload=True, wscale=7)
    _, tcb, _ = p.accept_connection()
    p.window = 4 << 20
    p.send(ACK, now=0.5)  # window update: 4 MB
    assert tcb.snd_wnd == 4 << 20
    return p, tcb


def _pattern(n):
    return bytes(i * 7 % 251 for i in range(n))


def test_queue_holds_tso_sized_buffers_and_sends_them_whole():
    p, tcb = _big_window_peer()
    goal = send_goal(tcb)
    assert goal % MSS == 0 and goal > 40 * MSS
    tcb.cc.cwnd = 1 << 20
    data = _pattern(3 * goal + 100)
    assert tcb.send(data, 1.0) == len(data)
    assert tcb.write_queue.qlen == 4
    out = p.take()
    # the short tail waits for the ACKs (Nagle) in its own buffer
    assert [len(o.payload) for o in out] == [goal, goal, goal]
    assert all(o.gso_size == MSS for o in out)
    assert b"".join(o.payload for o in out) + tcb.send_head.tobytes() == data


def test_small_writes_grow_the_unsent_tail_buffer():
    p, tcb = _big_window_peer()
    tcb.cc.cwnd = 1 << 20
    tcb.send(b"a" * 10, 1.0)  # leaves at once (nothing in flight)
    p.take()
    for _ in range(5):
        tcb.send(b"b" * 100, 1.01)  # held by Nagle, appended to one buffer
    assert p.take() == []
    assert tcb.write_queue.qlen == 2 and len(tcb.write_queue.last) == 500


def test_split_buffer_shares_memory_and_keeps_the_bytes():
    p, tcb = _big_window_peer()
    tcb.cc.cwnd = 2 * MSS  # send nothing beyond two segments
    data = _pattern(10 * MSS)
    tcb.send(data, 1.0)
    out = p.take()
    assert [len(o.payload) for o in out] == [2 * MSS]
    first, rest = tcb.write_queue.first, tcb.write_queue.first.next
    assert first.buf is rest.buf                 # cut without a copy
    assert first.tobytes() + rest.tobytes() == data
    assert rest.seq == first.end_seq == sq.add(first.seq, 2 * MSS)


def test_sack_block_edges_inside_a_buffer_cut_it():
    p, tcb = _big_window_peer()
    goal = send_goal(tcb)
    tcb.cc.cwnd = 1 << 20
    data = _pattern(2 * goal)
    tcb.send(data, 1.0)
    out = p.take()
    assert len(out) == 2
    base = out[0].hdr.seq
    lo, hi = sq.add(base, 10 * MSS), sq.add(base, 20 * MSS)
    p.send(ACK, ack=base, now=1.1, sack_blocks=((lo, hi),))
    pieces = []
    skb = tcb.write_queue.first
    while skb is not None:
        pieces.append((sq.sub(skb.seq, base) // MSS, len(skb) // MSS, bool(skb.sacked & SACKED)))
        skb = skb.next
    assert pieces[:3] == [(0, 10, False), (10, 10, True), (20, goal // MSS - 20, False)]
    assert b"".join(s.tobytes() for s in tcb.write_queue) == data


def test_scoreboard_cut_marks_only_the_covered_part():
    p, tcb = _big_window_peer()
    tcb.cc.cwnd = 1 << 20
    tcb.send(_pattern(20 * MSS), 1.0)
    p.take()
    q = tcb.write_queue
    sb = Scoreboard()
    una, nxt = tcb.snd_una, tcb.snd_nxt
    newly = sb.update(q, una, [(sq.add(una, 5 * MSS), nxt)], nxt)
    assert newly == 15 * MSS and q.qlen == 2
    assert not q.first.sacked & SACKED and q.last.sacked & SACKED
    # the unSACKed head now counts as lost: more than 2 segments SACKed above it
    assert sb.mark_lost(q, una, MSS) == 5 * MSS and q.first.sacked & LOST


def test_split_buffer_rejects_a_cut_outside_the_payload():
    p, tcb = _big_window_peer()
    tcb.cc.cwnd = MSS
    tcb.send(_pattern(3 * MSS), 1.0)
    skb = tcb.write_queue.first
    for n in (0, len(skb), len(skb) + 1):
        try:
            split_buffer(tcb.write_queue, skb, n)
        except ValueError:
            continue
        raise AssertionError(f"split at {n} accepted")


def test_cwnd_limited_sender_waits_for_a_third_of_cwnd():
    p, tcb = _big_window_peer()
    tcb.cc.cwnd = 30 * MSS
    tcb.cc.ssthresh = 30 * MSS  # congestion avoidance: cwnd stays put for a while
    tcb.send(_pattern(200 * MSS), 1.0)
    out = p.take()
    assert [len(o.payload) for o in out] == [30 * MSS]
    base = out[0].hdr.seq
    # 3 segments acknowledged: 3 of 30 free, less than a third: nothing leaves yet
    assert [o for o in p.send(ACK, ack=sq.add(base, 3 * MSS), now=1.1) if o.payload] == []
    # 12 free (cwnd grew a little in congestion avoidance): whole segments leave
    out = [o for o in p.send(ACK, ack=sq.add(base, 12 * MSS), now=1.11) if o.payload]
    assert [len(o.payload) for o in out] == [12 * MSS]
    assert out[0].hdr.seq == sq.add(base, 30 * MSS)


def test_bytes_written_are_referenced_not_copied():
    p, tcb = _big_window_peer()
    tcb.cc.cwnd = 2 * MSS
    data = _pattern(5 * MSS)
    tcb.send(data, 1.0)
    skb = tcb.write_queue.first
    assert isinstance(skb.buf, memoryview) and skb.buf.obj is data
    assert b"".join(s.tobytes() for s in tcb.write_queue) == data
    # a mutable buffer is copied: changing it later cannot change what is sent
    buf = bytearray(b"z" * MSS)
    tcb.send(buf, 1.0)
    buf[:] = b"y" * MSS
    assert tcb.write_queue.last.tobytes() == b"z" * MSS


def test_recv_hands_over_a_whole_buffer_without_copying():
    p = Peer()
    _, tcb, _ = p.accept_connection()
    p.send(ACK, b"q" * 1000, now=1.0)
    held = tcb.recv_queue.first.buf
    out = tcb.recv()
    assert out == b"q" * 1000 and out is held
    p.send(ACK, b"r" * 1000, now=1.1)
    assert tcb.recv(10) == b"r" * 10      # part of a buffer: a copy of that part
    assert tcb.recv() == b"r" * 990


def test_rto_resends_one_segment_of_a_large_buffer():
    p, tcb = _big_window_peer()
    tcb.cc.cwnd = 1 << 20
    tcb.send(_pattern(40 * MSS), 1.0)
    (sent,) = p.take()
    assert len(sent.payload) == 40 * MSS
    out = []
    for _ in range(3):  # the loss probe first, then the RTO
        out += p.fire()[1]
        if p.layer.counters["rto_expired"]:
            break
    assert p.layer.counters["rto_expired"] == 1
    assert [len(o.payload) for o in out][-1] == MSS and out[-1].hdr.seq == sent.hdr.seq
