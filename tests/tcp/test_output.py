"""Exact-segment tests of the sending side: RTO, Nagle, persist, TSO, recovery, windows."""

from __future__ import annotations

import pytest
from harness import A, B
from peer import Peer

from stack import seq as sq
from stack.tcp.api import TcpConfig, TcpState
from stack.wire.checksum import pseudo_header_sum
from stack.wire.tcp import ACK, PSH, RST, SYN
from stack.wire.vnet import VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4

S = TcpState
MSS = 1448  # 1460 minus the 12 bytes of the timestamp option (RFC 6691)


def data_segments(out):
    return [(o.hdr.seq, len(o.payload)) for o in out if o.payload]


def test_rto_exact_timing_and_backoff():
    p = Peer(TcpConfig(tlp=False))  # RFC 6298 alone: no loss probe in front of the RTO
    _, tcb, _ = p.accept_connection()
    # one RTT sample of 0.1 s: SRTT 0.1, RTTVAR 0.05, RTO = 0.1 + 4 * 0.05 = 0.3
    assert tcb.rtt.rto == pytest.approx(0.3)
    assert tcb.send(b"x" * 100, 1.0) == 100
    (first,) = p.take()
    assert first.hdr.seq == tcb.snd_una and first.flags == ACK | PSH
    assert p.tick(1.299) == []
    t, (r1,) = p.fire()
    assert t == pytest.approx(1.3)
    assert (r1.hdr.seq, r1.payload) == (first.hdr.seq, first.payload)
    t, out = p.fire()
    assert t == pytest.approx(1.9) and len(out) == 1
    assert p.layer.next_deadline() == pytest.approx(3.1)
    assert tcb.info()["retransmits"] == 2 and tcb.cc.cwnd == MSS


def test_retries_exhausted_times_out():
    p = Peer(TcpConfig(retries2=2, tlp=False))
    _, tcb, _ = p.accept_connection()
    tcb.send(b"x", 1.0)
    p.fire()
    p.fire()
    assert tcb.state is S.ESTABLISHED
    t, out = p.fire()
    assert t == pytest.approx(3.1) and [o.flags for o in out] == [RST | ACK]
    assert tcb.state is S.CLOSED and isinstance(tcb.error, TimeoutError)
    with pytest.raises(TimeoutError):
        tcb.send(b"y", 3.2)


def test_ack_stops_rto_and_samples_rtt():
    p = Peer()
    _, tcb, _ = p.accept_connection()
    tcb.send(b"x" * 100, 1.0)
    (s,) = p.take()
    p.send(ACK, ack=sq.add(s.hdr.seq, 100), now=1.2)
    assert tcb.snd_una == tcb.snd_nxt and p.layer.next_deadline() is None
    # second sample 0.2: SRTT = 7/8*0.1 + 1/8*0.2
    assert tcb.rtt.srtt == pytest.approx(0.1125)
    assert tcb.info()["bytes_acked"] == 100


def test_nagle_holds_small_segment_until_ack():
    p = Peer()
    _, tcb, _ = p.accept_connection()
    tcb.send(b"a" * 10, 1.0)
    (s,) = p.take()
    tcb.send(b"b" * 10, 1.0)
    tcb.send(b"c" * 10, 1.0)
    assert p.take() == []
    out = p.send(ACK, ack=sq.add(s.hdr.seq, 10), now=1.1)
    assert [o.payload for o in out] == [b"b" * 10 + b"c" * 10]


def test_nodelay_sends_small_segments_at_once():
    p = Peer(TcpConfig(nodelay=True))
    _, tcb, _ = p.accept_connection()
    tcb.send(b"a" * 10, 1.0)
    tcb.send(b"b" * 10, 1.0)
    assert [o.payload for o in p.take()] == [b"a" * 10, b"b" * 10]


def test_initial_window_limits_first_flight():
    p = Peer()
    _, tcb, _ = p.accept_connection()
    assert tcb.send(b"z" * 20000, 1.0) == 20000
    out = p.take()
    assert sum(len(o.payload) for o in out) == tcb.cc.cwnd // MSS * MSS
    assert all(len(o.payload) == MSS for o in out)


def test_zero_window_persist_probes_back_off_then_open():
    p = Peer(window=0)
    _, tcb, _ = p.accept_connection()
    assert tcb.snd_wnd == 0
    tcb.send(b"q" * 100, 1.0)
    assert p.take() == []
    d1 = p.layer.next_deadline()
    assert d1 == pytest.approx(1.3)
    (probe,) = p.tick(d1)
    assert probe.hdr.seq == sq.add(tcb.snd_una, -1) and probe.payload == b""
    d2 = p.layer.next_deadline()
    assert d2 - d1 == pytest.approx(0.6)
    p.tick(d2)
    assert p.layer.next_deadline() - d2 == pytest.approx(1.2)
    out = p.send(ACK, ack=tcb.snd_una, window=1000, now=d2 + 0.1)
    assert data_segments(out) == [(tcb.snd_una, 100)]


def test_sender_sws_avoidance():
    # RFC 9293 §3.8.6.2.1: no segment below min(MSS, max window / 2).
    p = Peer(wscale=None, window=4000)
    _, tcb, _ = p.accept_connection()
    tcb.cc.cwnd = 100000
    tcb.send(b"w" * 8000, 1.0)
    out = p.take()
    assert data_segments(out) == [(tcb.snd_una, MSS), (sq.add(tcb.snd_una, MSS), MSS)]
    # 1080 usable, then 1180: below both one MSS and half the window, nothing is sent
    out = p.send(ACK, ack=sq.add(tcb.snd_una, 100), window=4000, now=1.1)
    assert data_segments(out) == []
    out = p.send(ACK, ack=tcb.snd_nxt, window=4000, now=1.2)
    assert [n for _, n in data_segments(out)] == [MSS, MSS]


def test_partial_segments_to_a_peer_with_a_tiny_window():
    p = Peer(wscale=None, window=1000)
    _, tcb, _ = p.accept_connection()
    tcb.send(b"p" * 3000, 1.0)
    out = p.take()
    assert data_segments(out) == [(tcb.snd_una, 1000)]
    out = p.send(ACK, ack=tcb.snd_nxt, window=1000, now=1.1)
    assert [n for _, n in data_segments(out)] == [1000]


def test_tso_super_segment_with_partial_checksum():
    p = Peer(offload=True)
    _, tcb, _ = p.accept_connection()
    tcb.cc.cwnd = 10 * MSS
    tcb.send(b"t" * (10 * MSS), 1.0)
    (s,) = p.take()
    assert len(s.payload) == 10 * MSS and s.gso_size == MSS
    assert s.gso_type == VIRTIO_NET_HDR_GSO_TCPV4
    assert s.vnet_flags == VIRTIO_NET_HDR_F_NEEDS_CSUM
    seglen = len(s.raw)
    assert s.hdr.checksum == pseudo_header_sum(A, B, 6, seglen)
    assert tcb.snd_nxt == sq.add(s.hdr.seq, 10 * MSS)


def test_tso_type_is_set():
    p = Peer(offload=True)
    _, tcb, _ = p.accept_connection()
    tcb.cc.cwnd = 3 * MSS
    tcb.send(b"t" * (3 * MSS), 1.0)
    (s,) = p.take()
    assert s.gso_size == MSS and len(s.payload) == 3 * MSS
    p2 = Peer(offload=True)
    _, tcb2, _ = p2.accept_connection()
    tcb2.send(b"t" * 100, 1.0)
    (small,) = p2.take()
    assert small.gso_size == 0 and small.gso_type == 0


def _flight(p, tcb, n):
    tcb.cc.cwnd = 20 * MSS
    tcb.send(b"d" * (n * MSS), 1.0)
    out = p.take()
    assert len(out) == n
    return [o.hdr.seq for o in out]


def test_fast_retransmit_on_three_dupacks_newreno():
    p = Peer(sack=False)
    _, tcb, _ = p.accept_connection()
    seqs = _flight(p, tcb, 8)
    p.send(ACK, ack=seqs[1], now=1.1)          # segment 1 arrived, 2 lost
    for i in range(2):
        assert data_segments(p.send(ACK, ack=seqs[1], now=1.11 + i / 100)) == []
    out = p.send(ACK, ack=seqs[1], now=1.14)  # third duplicate
    assert data_segments(out)[0] == (seqs[1], MSS)
    assert tcb.in_recovery and tcb.cc.ssthresh < 20 * MSS
    # partial ACK: the next hole is retransmitted at once (RFC 6582)
    out = p.send(ACK, ack=seqs[3], now=1.2)
    assert (seqs[3], MSS) in data_segments(out)
    # full ACK ends recovery
    p.send(ACK, ack=tcb.snd_nxt, now=1.3)
    assert not tcb.in_recovery and tcb.snd_una == tcb.snd_nxt


def test_sack_recovery_retransmits_only_holes():
    p = Peer()
    _, tcb, _ = p.accept_connection()
    seqs = _flight(p, tcb, 8)
    end = sq.add(seqs[-1], MSS)
    # segments 0 and 3 lost; 1, 2, 4..7 SACKed
    out = []
    out += p.send(ACK, ack=seqs[0], now=1.1, sack_blocks=((seqs[1], seqs[3]),))
    out += p.send(ACK, ack=seqs[0], now=1.11, sack_blocks=((seqs[4], seqs[6]), (seqs[1], seqs[3])))
    out += p.send(ACK, ack=seqs[0], now=1.12, sack_blocks=((seqs[4], end), (seqs[1], seqs[3])))
    rtx = [s for s, _ in data_segments(out)]
    assert seqs[0] in rtx and seqs[3] in rtx
    assert not set(rtx) & {seqs[1], seqs[2], seqs[4], seqs[5], seqs[6], seqs[7]}
    assert tcb.in_recovery


def test_window_update_after_reading_a_full_buffer():
    cfg = TcpConfig(rcvbuf_autotune=False, rcvbuf=8192, window_scaling=False)
    p = Peer(cfg, wscale=None)
    _, tcb, _ = p.accept_connection()
    out = []
    for i in range(6):
        chunk = min(MSS, 8192 - i * MSS)
        out += p.send(ACK, b"r" * chunk, now=1.0 + i / 1000)
    p.tick(1.5)
    assert tcb.recv_available() == 8192
    assert tcb.rcv_adv == tcb.rcv_nxt  # window closed
    tcb.recv(100)
    assert p.take() == []               # receiver SWS avoidance: no tiny update
    tcb.recv(8000)
    assert p.take() == []               # due now, from the timer...
    (upd,) = p.tick(1.5)
    assert upd.flags == ACK and upd.hdr.window >= 8000


def test_window_update_rides_on_an_answer_written_at_once():
    cfg = TcpConfig(rcvbuf_autotune=False, rcvbuf=8192, window_scaling=False)
    p = Peer(cfg, wscale=None)
    _, tcb, _ = p.accept_connection()
    for i in range(6):
        p.send(ACK, b"r" * min(MSS, 8192 - i * MSS), now=1.0 + i / 1000)
    p.tick(1.5)
    p.take()
    tcb.recv(8192)                      # the window reopens ...
    tcb.send(b"answer", 1.5)            # ... and the answer carries it
    (seg,) = p.take()
    assert seg.payload == b"answer" and seg.hdr.window >= 8000
    assert p.tick(1.6) == []            # no separate window update follows


def test_keepalive_probes_then_timeout():
    cfg = TcpConfig(keepalive=True, keepalive_idle=10.0, keepalive_intvl=5.0,
                    keepalive_probes=2)
    p = Peer(cfg)
    _, tcb, _ = p.accept_connection()
    assert p.layer.next_deadline() == pytest.approx(10.1)
    (k1,) = p.tick(10.1)
    assert k1.hdr.seq == sq.add(tcb.snd_una, -1) and k1.payload == b""
    # an answer re-arms the idle timer
    p.send(ACK, now=12.0)
    assert p.layer.next_deadline() == pytest.approx(22.0)
    assert len(p.tick(22.0)) == 1
    assert len(p.tick(27.0)) == 1
    p.tick(32.0)
    assert tcb.state is S.CLOSED and isinstance(tcb.error, TimeoutError)


def test_syn_cookies_when_syn_queue_is_full():
    p = Peer(TcpConfig(syn_backlog=0))
    lst = p.layer.listen(A, 80)
    (synack,) = p.send(SYN, now=0.0, **p.syn_options())
    assert synack.flags == SYN | ACK and not p.layer.connections
    assert synack.hdr.options.wscale == 7 and synack.hdr.options.sack_permitted
    p.ack = sq.add(synack.hdr.seq, 1)
    p.send(ACK, b"GET", now=0.1)
    tcb = lst.accept()
    assert tcb is not None and tcb.state is S.ESTABLISHED
    assert tcb.mss == MSS and tcb.snd_wscale == 2 and tcb.sack_ok and tcb.ts_ok
    assert tcb.recv(10) == b"GET"


def test_forged_cookie_ack_gets_rst():
    p = Peer(TcpConfig(syn_backlog=0))
    lst = p.layer.listen(A, 80)
    p.send(SYN, now=0.0, **p.syn_options())
    out = p.send(ACK, ack=12345, now=0.1)
    assert [o.hdr.seq for o in out] == [12345] and lst.accept() is None


def test_send_buffer_bound():
    p = Peer(TcpConfig(sndbuf=5000))
    _, tcb, _ = p.accept_connection()
    assert tcb.send(b"s" * 8000, 1.0) == 5000
    assert tcb.send_space() == 0 and tcb.send(b"more", 1.0) == 0
    (first, *_) = p.take()
    events = []
    tcb.on_event = lambda t, e: events.append(e)
    p.send(ACK, ack=sq.add(first.hdr.seq, MSS), now=1.1)
    assert tcb.send_space() == MSS and "writable" in events


def test_zero_window_answered_probes_never_time_out():
    # RFC 1122 §4.2.2.17: keep probing as long as the peer acknowledges the probes.
    p = Peer(TcpConfig(retries2=3), window=0)
    _, tcb, _ = p.accept_connection()
    tcb.send(b"q" * 100, 1.0)
    for _ in range(8):
        t, out = p.fire()
        assert [o.hdr.seq for o in out] == [sq.add(tcb.snd_una, -1)]
        p.send(ACK, ack=tcb.snd_una, window=0, now=t + 0.05)
    assert tcb.state is S.ESTABLISHED
    # the probe interval kept doubling from the RTO of 0.3 s
    assert p.layer.next_deadline() - t == pytest.approx(0.3 * 2 ** 8)


def test_zero_window_unanswered_probes_time_out():
    p = Peer(TcpConfig(retries2=3), window=0)
    _, tcb, _ = p.accept_connection()
    tcb.send(b"q" * 100, 1.0)
    for _ in range(4):
        p.fire()
    assert tcb.state is S.CLOSED and isinstance(tcb.error, TimeoutError)


def test_karn_no_rtt_sample_when_a_retransmission_is_acked():
    p = Peer(ts=False)
    _, tcb, _ = p.accept_connection()
    srtt = tcb.rtt.srtt
    tcb.send(b"k" * (2 * 1460), 1.0)
    assert len(p.take()) == 2
    t, out = p.fire()
    assert len(out) == 1  # the first segment again
    p.send(ACK, ack=tcb.snd_nxt, now=t + 3.0)
    assert tcb.snd_una == tcb.snd_nxt and tcb.rtt.srtt == srtt


def test_limited_transmit_on_first_two_dupacks():
    p = Peer(sack=False)
    _, tcb, _ = p.accept_connection()
    tcb.cc.cwnd = 4 * MSS
    tcb.send(b"l" * (8 * MSS), 1.0)
    seqs = [o.hdr.seq for o in p.take()]
    assert len(seqs) == 4
    out1 = p.send(ACK, ack=seqs[0], now=1.1)
    out2 = p.send(ACK, ack=seqs[0], now=1.11)
    # RFC 3042: one new segment per duplicate ACK, beyond cwnd
    assert data_segments(out1) == [(sq.add(seqs[3], MSS), MSS)]
    assert data_segments(out2) == [(sq.add(seqs[3], 2 * MSS), MSS)]
    out3 = p.send(ACK, ack=seqs[0], now=1.12)
    assert data_segments(out3)[0] == (seqs[0], MSS) and tcb.in_recovery


def test_closed_window_reopens_as_soon_as_one_segment_fits():
    cfg = TcpConfig(rcvbuf_autotune=False, rcvbuf=1 << 20)
    p = Peer(cfg)
    _, tcb, _ = p.accept_connection()
    n = 0
    while tcb.rcv_adv != tcb.rcv_nxt:
        p.send(ACK, b"f" * 1460, now=1.0)
        n += 1
        assert n < 2000
    p.tick(2.0)
    tcb.recv(1000)
    assert p.take() == []
    tcb.recv(2000)
    assert p.take() == []
    (upd,) = p.tick(2.0)                # from the timer, in the same instant
    assert upd.hdr.window << tcb.rcv_wscale >= 1460


def test_fragmentation_needed_shrinks_mss_and_resends_in_smaller_segments():
    p = Peer()
    _, tcb, _ = p.accept_connection()
    tcb.send(b"m" * (3 * MSS), 1.0)
    sent = p.take()
    assert [len(o.payload) for o in sent] == [MSS] * 3
    una = tcb.snd_una
    # RFC 5927 §4.1: a quoted sequence number outside the window is ignored
    p.layer.icmp_error(A, B, 80, 5000, 3, 4, 1.05, mtu=1000, seg_seq=sq.add(una, -5))
    assert p.take() == [] and tcb.mss == MSS
    p.layer.icmp_error(A, B, 80, 5000, 3, 4, 1.05, mtu=1000, seg_seq=una)
    out = p.take()
    new = 1000 - 40 - 12
    assert tcb.mss == new and out
    assert all(len(o.payload) <= new for o in out)
    assert out[0].hdr.seq == una
    # acknowledging everything brings recovery to an end; new data uses the new MSS
    p.send(ACK, ack=tcb.snd_nxt, now=1.2)
    tcb.send(b"n" * 3000, 1.2)
    assert all(len(o.payload) <= new for o in p.take())
    assert not tcb.rto_recovery and tcb.cc.cwnd >= 3 * new
