"""Exact-segment tests: crafted input to one TcpLayer, exact output and state."""

from __future__ import annotations

import pytest
from harness import A, B, seg
from peer import Peer

from stack import seq as sq
from stack.tcp.api import TcpConfig, TcpState
from stack.wire.tcp import ACK, FIN, PSH, RST, SYN

S = TcpState


# ------------------------------------------------------------------ LISTEN / no connection
def test_syn_to_listener_gets_synack_with_options():
    p = Peer()
    lst = p.layer.listen(A, 80)
    out = p.send(SYN, now=0.0, **p.syn_options())
    assert len(out) == 1
    h = out[0].hdr
    assert h.flags == SYN | ACK
    assert h.ack == 1001
    assert (h.sport, h.dport) == (80, 5000)
    assert h.window == 65535
    assert h.options.mss == 1460
    assert h.options.wscale == 7  # 6 MB autotuning limit needs a shift of 7
    assert h.options.sack_permitted
    assert h.options.timestamp[1] == 500
    assert lst.syn_queue_len == 1 and lst.accept() is None
    tcb = p.layer.connections[(A, 80, B, 5000)]
    assert tcb.state is S.SYN_RECEIVED and tcb.iss == h.seq


def test_synack_echoes_only_offered_options():
    p = Peer(ts=False, sack=False, wscale=None, mss=1000)
    p.layer.listen(A, 80)
    h = p.send(SYN, now=0.0, **p.syn_options())[0].hdr
    assert h.options.mss == 1460
    assert h.options.wscale is None and not h.options.sack_permitted
    assert h.options.timestamp is None
    tcb = p.layer.connections[(A, 80, B, 5000)]
    assert tcb.mss == 1000 and tcb.rcv_wscale == 0


def test_passive_handshake_establishes_and_accepts():
    p = Peer()
    lst, tcb, synack = p.accept_connection()
    assert tcb.state is S.ESTABLISHED
    assert tcb.snd_una == sq.add(synack.hdr.seq, 1)
    assert tcb.snd_wnd == 65535 >> 2 << 2
    assert tcb.snd_wscale == 2 and tcb.ts_ok and tcb.sack_ok
    assert lst.syn_queue_len == 0
    assert p.cap.sent == []


def test_no_connection_syn_gets_rst_ack():
    p = Peer()
    out = p.send(SYN, now=0.0, **p.syn_options())
    assert len(out) == 1
    h = out[0].hdr
    assert h.flags == RST | ACK and h.seq == 0 and h.ack == 1001
    assert p.layer.counters["no_connection"] == 1


def test_no_connection_ack_gets_rst_from_ack_field():
    p = Peer()
    out = p.send(ACK, b"xyz", ack=777)
    assert [(o.flags, o.hdr.seq) for o in out] == [(RST, 777)]


def test_rst_is_never_answered_with_rst():
    p = Peer()
    assert p.send(RST | ACK, ack=5) == []
    assert p.send(RST) == []


def test_listener_answers_bare_ack_with_rst():
    p = Peer()
    p.layer.listen(A, 80)
    out = p.send(ACK, ack=4242)
    assert [(o.flags, o.hdr.seq) for o in out] == [(RST, 4242)]


def test_bad_checksum_is_counted_and_dropped():
    p = Peer()
    p.layer.listen(A, 80)
    skb = seg(5000, 80, 1000, 0, SYN, mss=1460)
    skb.buf[skb.data + 16] ^= 0xFF
    p.layer.input(skb, B, A, 0.0)
    assert p.take() == [] and p.layer.counters["tcp_bad_checksum"] == 1


def test_truncated_header_is_counted():
    p = Peer()
    from stack.skbuff import SkBuff
    p.layer.input(SkBuff.from_bytes(b"\x00" * 10), B, A, 0.0)
    assert p.layer.counters["tcp_truncated"] == 1


# ------------------------------------------------------------------ SYN-SENT
def test_connect_sends_syn_with_all_options():
    p = Peer()
    tcb = p.layer.connect(B, 5000, 0.0, sport=80)
    (syn,) = p.take()
    h = syn.hdr
    assert h.flags == SYN and h.seq == tcb.iss and h.ack == 0
    assert h.options.mss == 1460 and h.options.wscale == 7 and h.options.sack_permitted
    assert h.options.timestamp is not None and h.options.timestamp[1] == 0
    assert tcb.state is S.SYN_SENT


def test_active_open_completes_with_ack():
    p = Peer()
    events = []
    tcb, syn = p.open_connection()
    tcb.on_event = lambda t, e: events.append(e)
    assert tcb.state is S.ESTABLISHED
    assert tcb.rcv_nxt == 1001 and tcb.snd_una == sq.add(syn.hdr.seq, 1)
    assert tcb.rtt.srtt == pytest.approx(0.1)


def test_synsent_bad_ack_gets_rst_and_stays():
    p = Peer()
    tcb = p.layer.connect(B, 5000, 0.0, sport=80)
    (syn,) = p.take()
    bad = sq.add(syn.hdr.seq, 5)
    out = p.send(SYN | ACK, ack=bad, mss=1460)
    # The RST, then at once the SYN again (the stale ACK was most likely the peer's
    # TIME-WAIT for this 4-tuple, which the RST ended) — once per connection.
    assert [(o.flags, o.hdr.seq) for o in out] == [(RST, bad), (SYN, syn.hdr.seq)]
    assert tcb.state is S.SYN_SENT
    out = p.send(ACK, ack=bad)
    assert [(o.flags, o.hdr.seq) for o in out] == [(RST, bad)]
    assert tcb.state is S.SYN_SENT
    assert p.layer.counters["synsent_retry_after_rst"] == 1


def test_synsent_rst_needs_acceptable_ack():
    p = Peer()
    tcb = p.layer.connect(B, 5000, 0.0, sport=80)
    (syn,) = p.take()
    assert p.send(RST, ack=0) == []
    assert tcb.state is S.SYN_SENT
    p.send(RST | ACK, ack=sq.add(syn.hdr.seq, 1))
    assert tcb.state is S.CLOSED
    assert isinstance(tcb.error, ConnectionRefusedError)
    assert (A, 80, B, 5000) not in p.layer.connections


def test_simultaneous_open():
    p = Peer(ts=False)
    tcb = p.layer.connect(B, 5000, 0.0, sport=80)
    (syn,) = p.take()
    out = p.send(SYN, now=0.05, mss=1400)
    assert len(out) == 1
    h = out[0].hdr
    assert h.flags == SYN | ACK and h.seq == syn.hdr.seq and h.ack == 1001
    assert tcb.state is S.SYN_RECEIVED
    p.ack = sq.add(syn.hdr.seq, 1)
    assert p.send(ACK, now=0.1) == []
    assert tcb.state is S.ESTABLISHED and tcb.mss == 1400


def test_syn_retransmitted_with_backoff_then_timeout():
    p = Peer(TcpConfig(syn_retries=2))
    tcb = p.layer.connect(B, 5000, 0.0, sport=80)
    p.take()
    assert p.layer.next_deadline() == pytest.approx(1.0)
    out = p.tick(1.0)
    assert [o.flags for o in out] == [SYN]
    assert p.layer.next_deadline() == pytest.approx(3.0)
    assert [o.flags for o in p.tick(3.0)] == [SYN]
    assert p.tick(6.99) == []
    p.tick(7.0)
    assert tcb.state is S.CLOSED and isinstance(tcb.error, TimeoutError)


def test_icmp_port_unreachable_refuses_syn_sent():
    p = Peer()
    tcb = p.layer.connect(B, 5000, 0.0, sport=80)
    p.layer.icmp_error(A, B, 80, 5000, 3, 3, 0.01)
    assert tcb.state is S.CLOSED and isinstance(tcb.error, ConnectionRefusedError)


def test_icmp_is_soft_when_established():
    p = Peer()
    _, tcb, _ = p.accept_connection()
    p.layer.icmp_error(A, B, 80, 5000, 3, 1, 0.2)
    assert tcb.state is S.ESTABLISHED and tcb.error is None and tcb.soft_error is not None


# ------------------------------------------------------------------ ESTABLISHED: receiving
def test_in_order_data_is_delayed_acked():
    p = Peer()
    _, tcb, _ = p.accept_connection()
    assert p.send(ACK | PSH, b"hello", now=1.0) == []
    assert tcb.recv_available() == 5
    d = p.layer.next_deadline()
    assert 1.0 + 0.04 <= d <= 1.0 + 0.2
    out = p.tick(d)
    assert [(o.flags, o.hdr.ack) for o in out] == [(ACK, 1006)]
    assert tcb.recv(100) == b"hello" and tcb.recv(100) == b""


def test_every_second_full_segment_is_acked_at_once():
    p = Peer()
    _, tcb, _ = p.accept_connection()
    assert p.send(ACK, b"a" * 1460, now=1.0) == []
    out = p.send(ACK, b"b" * 1460, now=1.0)
    assert [(o.flags, o.hdr.ack) for o in out] == [(ACK, 1001 + 2920)]


def test_out_of_order_gets_immediate_dup_ack_with_sack():
    p = Peer()
    _, tcb, _ = p.accept_connection()
    out = p.send(ACK, b"x" * 100, seq=1101, now=1.0)
    assert len(out) == 1
    h = out[0].hdr
    assert h.ack == 1001 and h.options.sack_blocks == ((1101, 1201),)
    assert tcb.recv_available() == 0
    out = p.send(ACK, b"y" * 100, seq=1001, now=1.01)
    assert [o.hdr.ack for o in out] == [1201]
    assert out[0].hdr.options.sack_blocks == ()
    assert tcb.recv(1000) == b"y" * 100 + b"x" * 100


def test_overlapping_out_of_order_segments_are_merged():
    p = Peer(ts=False)
    _, tcb, _ = p.accept_connection()
    p.send(ACK, bytes(range(50, 100)), seq=1051, now=1.0)
    p.send(ACK, bytes(range(20, 80)), seq=1021, now=1.0)
    p.send(ACK, bytes(range(90, 120)), seq=1091, now=1.0)
    assert tcb.ooo_bytes == 100
    p.send(ACK, bytes(range(0, 30)), seq=1001, now=1.0)
    assert tcb.recv(1000) == bytes(range(120))
    assert tcb.rcv_nxt == 1121 and tcb.ooo_bytes == 0


def test_unacceptable_segment_gets_ack_and_is_dropped():
    p = Peer()
    _, tcb, _ = p.accept_connection()
    out = p.send(ACK, b"zz", seq=sq.add(1001, 10 << 20), now=1.0)
    assert [(o.flags, o.hdr.ack) for o in out] == [(ACK, 1001)]
    assert tcb.recv_available() == 0 and tcb.ooo_bytes == 0


def test_paws_rejects_old_timestamp():
    p = Peer()
    _, tcb, _ = p.accept_connection()
    out = p.send(ACK, b"old", tsval=1, now=1.0)
    assert [(o.flags, o.hdr.ack) for o in out] == [(ACK, 1001)]
    assert tcb.recv_available() == 0 and p.layer.counters["paws_reject"] == 1


def test_ack_of_unsent_data_is_answered_and_ignored():
    p = Peer()
    _, tcb, _ = p.accept_connection()
    una = tcb.snd_una
    out = p.send(ACK, ack=sq.add(una, 1000), now=1.0)
    assert [(o.flags, o.hdr.seq) for o in out] == [(ACK, una)]
    assert tcb.snd_una == una


# ------------------------------------------------------------------ RST / SYN (RFC 5961)
def test_in_window_rst_gets_challenge_ack():
    p = Peer()
    _, tcb, _ = p.accept_connection()
    out = p.send(RST, seq=1100, advance=False, now=1.0)
    assert [(o.flags, o.hdr.ack) for o in out] == [(ACK, 1001)]
    assert tcb.state is S.ESTABLISHED


def test_exact_rst_resets():
    p = Peer()
    _, tcb, _ = p.accept_connection()
    events = []
    tcb.on_event = lambda t, e: events.append(e)
    assert p.send(RST, now=1.0) == []
    assert tcb.state is S.CLOSED and isinstance(tcb.error, ConnectionResetError)
    assert events == ["error", "closed"]
    with pytest.raises(ConnectionResetError):
        tcb.send(b"x", 1.0)


def test_syn_on_established_gets_challenge_ack():
    p = Peer()
    _, tcb, _ = p.accept_connection()
    out = p.send(SYN, seq=1001, advance=False, now=1.0, mss=1460)
    assert [(o.flags, o.hdr.ack) for o in out] == [(ACK, 1001)]
    assert tcb.state is S.ESTABLISHED


def test_challenge_acks_are_rate_limited():
    p = Peer(TcpConfig(challenge_ack_limit=3))
    p.accept_connection()
    n = sum(len(p.send(RST, seq=1100, advance=False, now=1.5)) for _ in range(10))
    assert n == 3 and p.layer.counters["challenge_ack_ratelimited"] == 7


# ------------------------------------------------------------------ closing
def test_passive_close_sequence():
    p = Peer()
    _, tcb, _ = p.accept_connection()
    out = p.send(FIN | ACK, now=1.0)
    assert [(o.flags, o.hdr.ack) for o in out] == [(ACK, 1002)]
    assert tcb.state is S.CLOSE_WAIT and tcb.eof_received
    tcb.close(1.1)
    out = p.take()
    assert [(o.flags, o.hdr.seq) for o in out] == [(FIN | ACK | PSH, tcb.snd_una)]
    assert tcb.state is S.LAST_ACK
    p.send(ACK, ack=sq.add(tcb.snd_una, 1), now=1.2)
    assert tcb.state is S.CLOSED and (A, 80, B, 5000) not in p.layer.connections


def test_active_close_and_time_wait():
    p = Peer()
    _, tcb, _ = p.accept_connection()
    tcb.shutdown_write(1.0)
    (fin,) = p.take()
    assert fin.flags & FIN and tcb.state is S.FIN_WAIT_1
    p.send(ACK, ack=sq.add(fin.hdr.seq, 1), now=1.1)
    assert tcb.state is S.FIN_WAIT_2
    out = p.send(FIN | ACK, now=1.2)
    assert [(o.flags, o.hdr.ack) for o in out] == [(ACK, 1002)]
    assert tcb.state is S.TIME_WAIT
    assert p.layer.next_deadline() == pytest.approx(61.2)
    # a retransmitted FIN is acknowledged again and restarts 2*MSL
    out = p.send(FIN | ACK, seq=1001, advance=False, now=30.0)
    assert [(o.flags, o.hdr.ack) for o in out] == [(ACK, 1002)]
    assert p.layer.next_deadline() == pytest.approx(90.0)
    p.tick(89.9)
    assert tcb.state is S.TIME_WAIT
    p.tick(90.0)
    assert tcb.state is S.CLOSED and not p.layer.connections


def test_connections_past_the_time_wait_bound_end_it_early_oldest_first():
    p = Peer(TcpConfig(max_time_wait=2))
    tcbs = []
    for i in range(4):
        _, tcb, _ = p.accept_connection(port=80 + i)
        tcb.shutdown_write(1.0 + i)
        (fin,) = p.take()
        p.send(ACK, ack=sq.add(fin.hdr.seq, 1), now=1.1 + i)
        p.send(FIN | ACK, now=1.2 + i)
        p.take()
        tcbs.append(tcb)
    assert [t.state for t in tcbs] == [S.CLOSED, S.CLOSED, S.TIME_WAIT, S.TIME_WAIT]
    assert p.layer.counters["time_wait_recycled"] == 2
    assert len(p.layer.connections) == 2


def test_simultaneous_close_goes_through_closing():
    p = Peer()
    _, tcb, _ = p.accept_connection()
    tcb.shutdown_write(1.0)
    (fin,) = p.take()
    out = p.send(FIN | ACK, now=1.1)  # does not acknowledge our FIN
    assert tcb.state is S.CLOSING
    assert [(o.flags, o.hdr.ack) for o in out] == [(ACK, 1002)]
    p.send(ACK, ack=sq.add(fin.hdr.seq, 1), now=1.2)
    assert tcb.state is S.TIME_WAIT


def test_fin_with_ack_of_our_fin_goes_straight_to_time_wait():
    p = Peer()
    _, tcb, _ = p.accept_connection()
    tcb.shutdown_write(1.0)
    (fin,) = p.take()
    p.send(FIN | ACK, ack=sq.add(fin.hdr.seq, 1), now=1.1)
    assert tcb.state is S.TIME_WAIT


def test_close_with_unread_data_sends_rst():
    p = Peer()
    _, tcb, _ = p.accept_connection()
    p.send(ACK, b"unread", now=1.0)
    tcb.close(1.1)
    out = p.take()
    assert [o.flags for o in out] == [RST | ACK]
    assert tcb.state is S.CLOSED


def test_orphaned_fin_wait_2_times_out():
    p = Peer(TcpConfig(fin_timeout=10.0))
    _, tcb, _ = p.accept_connection()
    tcb.close(1.0)
    (fin,) = p.take()
    p.send(ACK, ack=sq.add(fin.hdr.seq, 1), now=1.1)
    assert tcb.state is S.FIN_WAIT_2
    p.tick(11.1)
    assert tcb.state is S.CLOSED


def test_out_of_order_fin_is_kept_until_the_hole_fills():
    p = Peer()
    _, tcb, _ = p.accept_connection()
    p.send(FIN | ACK, b"tail", seq=1005, advance=False, now=1.0)
    assert tcb.state is S.ESTABLISHED and not tcb.eof_received
    out = p.send(ACK, b"head", seq=1001, advance=False, now=1.1)
    assert tcb.state is S.CLOSE_WAIT and tcb.eof_received
    assert out[-1].hdr.ack == 1010
    assert tcb.recv(100) == b"headtail"


def test_new_syn_ends_time_wait_early():
    p = Peer()
    lst, tcb, _ = p.accept_connection()
    tcb.shutdown_write(1.0)
    (fin,) = p.take()
    p.send(FIN | ACK, ack=sq.add(fin.hdr.seq, 1), now=1.1)
    assert tcb.state is S.TIME_WAIT
    # an old sequence number: challenge ACK, TIME-WAIT stays
    out = p.send(SYN, seq=500, advance=False, now=2.0, mss=1460)
    assert [o.flags for o in out] == [ACK] and tcb.state is S.TIME_WAIT
    # a newer incarnation: TIME-WAIT ends and the listener answers
    p.tsval += 1000
    out = p.send(SYN, seq=900000, advance=False, now=3.0, **p.syn_options())
    assert [(o.flags, o.hdr.ack) for o in out] == [(SYN | ACK, 900001)]
    assert tcb.state is S.CLOSED
    assert p.layer.connections[(A, 80, B, 5000)].state is S.SYN_RECEIVED


def test_data_on_a_closed_window_is_trimmed_and_acked():
    cfg = TcpConfig(rcvbuf_autotune=False, rcvbuf=4000, window_scaling=False)
    p = Peer(cfg, wscale=None)
    _, tcb, _ = p.accept_connection()
    p.send(ACK, b"a" * 1460, now=1.0)
    p.send(ACK, b"b" * 1460, now=1.0)
    p.send(ACK, b"c" * 1080, now=1.0)
    p.tick(2.0)
    assert tcb.rcv_adv == tcb.rcv_nxt == 1001 + 4000
    # a one-byte window probe at RCV.NXT: its ACK is processed, its byte is not taken
    out = p.send(ACK, b"!", now=3.0, advance=False)
    assert [(o.flags, o.hdr.ack, o.hdr.window) for o in out] == [(ACK, 5001, 0)]
    assert tcb.recv_available() == 4000


def test_close_after_shutdown_bounds_fin_wait_2():
    p = Peer(TcpConfig(fin_timeout=5.0))
    _, tcb, _ = p.accept_connection()
    tcb.shutdown_write(1.0)
    (fin,) = p.take()
    p.send(ACK, ack=sq.add(fin.hdr.seq, 1), now=1.1)
    assert tcb.state is S.FIN_WAIT_2 and p.layer.next_deadline() is None
    tcb.close(2.0)
    assert p.layer.next_deadline() == pytest.approx(7.0)
    p.tick(7.0)
    assert tcb.state is S.CLOSED and not p.layer.connections
