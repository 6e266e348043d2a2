"""Lending a connection to the splice layer (stack/tcp/lend.py): each operation's
invariants, on one real TcpLayer talking to a scripted peer (exact segments)."""

from __future__ import annotations

import pytest
from harness import B
from peer import Peer

from stack import seq as sq
from stack.tcp import lend
from stack.tcp.api import TcpAborted, TcpConfig, TcpState
from stack.wire.tcp import ACK, FIN, PSH, RST, TcpHeader

S = TcpState


def established(**kw):
    p = Peer(**kw)
    _lst, tcb, _synack = p.accept_connection()
    return p, tcb


def borrowed(tcb):
    """Lend ``tcb`` to a hook that takes every segment; the segments it got."""
    got: list[TcpHeader] = []

    def hook(t, hdr, skb, now):
        got.append(hdr)
        return True
    lend.lend(tcb, hook)
    return hook, got


def acked_flight(p: Peer, tcb, n: int = 3000) -> None:
    """``tcb`` sends n bytes, the peer acknowledges all of them."""
    tcb.send(b"d" * n, p.now)
    while tcb.snd_una != tcb.write_seq:
        p.take()
        p.send(ACK, ack=tcb.snd_nxt, now=p.now + 0.05)
    p.take()


# -- the send side at a hand-back --------------------------------------------------
def test_advance_snd_makes_every_send_variable_follow_and_new_data_start_there():
    p, tcb = established()
    acked_flight(p, tcb)
    # What a relay leaves behind in a TCB: loss-recovery and RACK state of old data.
    tcb.rack_reo_at = p.now + 0.001
    tcb.tlp_end, tcb.in_recovery, tcb.dupacks = tcb.snd_nxt, True, 2
    tcb.scoreboard  # noqa: B018 - made on first use
    lend.silence(tcb)
    end = sq.add(tcb.snd_una, 1_000_000)
    lend.advance_snd(tcb, end)
    assert tcb.snd_una == tcb.snd_nxt == tcb.write_seq == end
    assert tcb.recover == tcb.rack_end == tcb.snd_wl2 == end
    assert (tcb.rack_reo_at, tcb.tlp_end, tcb._scoreboard) == (None, None, None)
    assert not tcb.in_recovery and not tcb.rto_recovery and tcb.dupacks == 0
    assert tcb.send_head is None and not tcb.write_queue and tcb.deadline() is None
    # The peer's ACK of ``end`` is an ordinary one; new data starts at ``end``, with
    # the retransmission (or loss probe) timer, never RACK's stale reordering timer.
    p.ack = end
    assert p.send(ACK, now=p.now + 0.01) == []
    tcb.send(b"n" * 100, p.now)
    (out,) = p.take()
    assert out.hdr.seq == end and out.payload == b"n" * 100
    assert tcb.rtx_kind in ("rtx", "tlp") and tcb.timer_rtx > p.now
    p.send(ACK, ack=sq.add(end, 100), now=p.now + 0.05)
    assert tcb.snd_una == sq.add(end, 100) and tcb.timer_rtx is None
    assert p.tick(p.now + 60) == []


def test_advance_snd_past_half_the_sequence_space_still_takes_window_updates():
    p, tcb = established()
    acked_flight(p, tcb)
    end = sq.add(tcb.snd_una, 3 << 30)
    lend.advance_snd(tcb, end)
    p.ack = end
    p.send(ACK, window=100, now=p.now + 0.01)  # same SEG.SEQ as SND.WL1: WL2 decides
    assert tcb.snd_wnd == 100 << tcb.snd_wscale


def test_advance_snd_refuses_a_tcb_with_data_of_its_own():
    p, tcb = established()
    tcb.send(b"mine", p.now)
    una, nxt = tcb.snd_una, tcb.snd_nxt
    with pytest.raises(ValueError):
        lend.advance_snd(tcb, sq.add(una, 10))
    assert (tcb.snd_una, tcb.snd_nxt) == (una, nxt)


# -- the receive side at a hand-back -----------------------------------------------
def test_advance_rcv_makes_every_receive_variable_follow():
    p, tcb = established()
    p.send(ACK | PSH, b"x" * 1000, now=0.2)
    p.tick(1.0)
    old_ts = tcb.ts_recent
    end = sq.add(tcb.rcv_nxt, 5_000_000)
    lend.advance_rcv(tcb, end, 1.0, ts_val=old_ts + 50)
    assert tcb.rcv_nxt == tcb.last_ack_sent == tcb.snd_wl1 == end
    assert sq.ge(tcb.rcv_adv, end) and tcb.rcv_wnd == sq.sub(tcb.rcv_adv, end)
    assert (tcb.ts_recent, tcb.ts_recent_age) == (old_ts + 50, 1.0)
    assert tcb.recv_available() == 1000  # the application's own bytes stay
    lend.advance_rcv(tcb, end, 2.0, ts_val=old_ts)  # an older TSval changes nothing
    assert (tcb.ts_recent, tcb.ts_recent_age) == (old_ts + 50, 1.0)
    # A segment at ``end`` is the next one; one from before it draws an ACK of ``end``.
    p.seq, p.tsval = end, old_ts + 60
    assert p.send(ACK, now=1.1) == []
    (dup,) = p.send(ACK, seq=sq.add(end, -500), now=1.2)
    assert dup.hdr.ack == end
    tcb.send(b"r", 1.3)
    (out,) = p.take()
    assert out.hdr.ack == end and out.hdr.window > 0


def test_advance_rcv_refuses_out_of_order_data():
    p, tcb = established()
    p.send(ACK, b"later", seq=sq.add(p.seq, 100), now=0.2)
    nxt = tcb.rcv_nxt
    with pytest.raises(ValueError):
        lend.advance_rcv(tcb, sq.add(nxt, 10), 0.3)
    assert tcb.rcv_nxt == nxt


def test_discard_out_of_order_forgets_it_and_sack_blocks_stop():
    p, tcb = established()
    (ack,) = p.send(ACK, b"later", seq=sq.add(p.seq, 100), now=0.2)
    assert ack.hdr.options.sack_blocks
    lend.discard_out_of_order(tcb)
    assert not tcb.out_of_order_queue and tcb.ooo_bytes == 0
    assert tcb.last_ooo is None and tcb.ooo_fin is None
    (dup,) = p.send(ACK, seq=sq.add(p.seq, -1), now=0.3)  # unacceptable: an ACK
    assert dup.hdr.ack == tcb.rcv_nxt and not dup.hdr.options.sack_blocks


# -- silence and resume ------------------------------------------------------------
def test_a_silenced_tcb_arms_no_timer_and_sends_nothing():
    p, tcb = established(config=TcpConfig(keepalive=True, keepalive_idle=5.0))
    tcb.send(b"o" * 2000, 0.2)          # outstanding: retransmission timer
    p.send(ACK | PSH, b"i" * 10, now=0.2)  # delayed ACK owed
    p.take()
    assert tcb.deadline() is not None
    _hook, got = borrowed(tcb)
    lend.silence(tcb)
    assert tcb.deadline() is None
    assert p.send(ACK | PSH, b"more", now=0.3) == []
    assert p.tick(10_000.0) == []
    assert tcb.deadline() is None and len(got) == 1 and tcb.state is S.ESTABLISHED


def test_resume_rearms_retransmission_and_keepalive_only():
    p, tcb = established(config=TcpConfig(keepalive=True, keepalive_idle=5.0))
    tcb.send(b"o" * 2000, 0.2)
    p.take()
    lend.silence(tcb)
    lend.resume(tcb, 0.5)
    assert tcb.timer_rtx is not None and tcb.timer_rtx > 0.5
    assert tcb.timer_keepalive == tcb.last_recv + 5.0 and tcb.timer_delack is None
    out = p.tick(tcb.timer_rtx)
    # It retransmits (or probes) by itself again.
    assert out and sq.le(tcb.snd_una, out[0].hdr.seq) and sq.lt(out[0].hdr.seq, tcb.snd_nxt)


def test_resume_with_nothing_outstanding_arms_nothing_but_keepalive():
    p, tcb = established()
    acked_flight(p, tcb)
    lend.silence(tcb)
    lend.resume(tcb, 1.0)
    assert tcb.deadline() is None
    tcb.set_keepalive(True, 1.0)
    lend.silence(tcb)
    lend.resume(tcb, 1.0)
    assert tcb.deadline() == tcb.timer_keepalive == tcb.last_recv + tcb.config.keepalive_idle


def test_resume_arms_persist_for_data_waiting_on_a_closed_window():
    p, tcb = established()
    p.send(ACK, window=0, now=0.2)
    tcb.send(b"w" * 100, 0.3)
    lend.silence(tcb)
    lend.resume(tcb, 0.4)
    assert tcb.rtx_kind == "persist" and tcb.timer_rtx > 0.4


def test_resume_leaves_a_closed_tcb_alone():
    p, tcb = established()
    lend.close_silently(tcb)
    lend.resume(tcb, 1.0)
    assert tcb.deadline() is None


# -- segments given to the TCB -----------------------------------------------------
def test_take_ack_takes_acknowledgement_and_window_not_text_or_fin():
    p, tcb = established()
    tcb.send(b"s" * 100, 0.2)
    p.take()
    taken = []

    def hook(t, hdr, skb, now):
        taken.append(hdr)
        lend.take_ack(t, hdr, now)
        return True
    lend.lend(tcb, hook)
    nxt = tcb.rcv_nxt
    assert p.send(ACK | FIN, b"other's", ack=tcb.snd_nxt, window=50, now=0.3) == []
    assert tcb.snd_una == tcb.snd_nxt and tcb.snd_wnd == 50 << tcb.snd_wscale
    assert tcb.rcv_nxt == nxt and tcb.state is S.ESTABLISHED and not tcb.eof_received
    before = (tcb.snd_wnd, tcb.segs_in)
    p.send(PSH, b"no ack", ack=0, now=0.4)  # (flags without ACK: nothing to take)
    assert (tcb.snd_wnd, tcb.segs_in) == before and len(taken) == 2


def test_take_segment_is_what_tcp_does_without_a_loan():
    p, tcb = established()

    def hook(t, hdr, skb, now):
        lend.take_segment(t, hdr, skb.view()[hdr.header_len:], now)
        return True
    lend.lend(tcb, hook)
    p.send(ACK | FIN, b"all of it", now=0.3)
    assert tcb.recv(100) == b"all of it" and tcb.state is S.CLOSE_WAIT


def test_lend_refuses_a_second_borrower_release_gives_segments_back():
    p, tcb = established()
    hook, got = borrowed(tcb)
    lend.lend(tcb, hook, owner="side")
    with pytest.raises(ValueError):
        lend.lend(tcb, lambda *a: True)
    lend.release(tcb, lambda *a: True)     # not its borrower: nothing changes
    p.send(ACK | PSH, b"one", now=0.2)
    assert len(got) == 1 and tcb.recv_available() == 0
    lend.release(tcb, hook)
    assert tcb.input_hook is None and tcb.splice == "side"  # still marked spliced
    p.seq = tcb.rcv_nxt                    # "one" went to the hook, not to TCP
    p.send(ACK | PSH, b"two", now=0.3)
    assert tcb.recv(10) == b"two"
    lend.release(tcb, disown=True)
    assert tcb.splice is None


# -- sending for the borrower ------------------------------------------------------
def test_send_all_grows_the_send_buffer_to_take_everything():
    p, tcb = established(config=TcpConfig(sndbuf=4096))
    data = bytes(range(256)) * 64
    assert lend.send_all(tcb, data, 0.2) == len(data)
    assert sq.sub(tcb.write_seq, tcb.snd_una) == len(data) and tcb.sndbuf >= len(data)


def test_send_all_on_an_aborted_connection_raises_its_error():
    p, tcb = established()
    tcb.abort(0.2)
    with pytest.raises(TcpAborted):
        lend.send_all(tcb, b"x", 0.3)


def test_send_queued_and_probe_for_ack():
    p, tcb = established()
    assert not lend.probe_for_ack(tcb, 0.2)        # nothing was sent
    tcb.send(b"abc", 0.2)
    assert lend.send_queued(tcb, 0.2)
    p.take()
    assert lend.probe_for_ack(tcb, 0.25)
    (probe,) = p.take()
    assert probe.hdr.seq == sq.add(tcb.snd_nxt, -1) and probe.payload == b"c"
    assert probe.flags == ACK | PSH and tcb.snd_nxt == tcb.write_seq


def test_acknowledge_now_later_or_not_at_all():
    p, tcb = established()
    lend.acknowledge(tcb, 0.2)
    assert p.take() == []                           # nothing new to acknowledge
    p.send(ACK | PSH, b"x", now=0.2)
    assert p.take() == [] and tcb.last_ack_sent != tcb.rcv_nxt  # a delayed ACK
    lend.acknowledge(tcb, 0.21, at_once=False)
    assert tcb.timer_delack == 0.21 and p.take() == []
    lend.acknowledge(tcb, 0.22)
    (out,) = p.take()
    assert out.flags == ACK and out.hdr.ack == tcb.rcv_nxt == tcb.last_ack_sent
    assert tcb.timer_delack is None


def test_send_on_behalf_uses_the_given_numbers_and_changes_nothing():
    p, tcb = established()
    before = (tcb.snd_nxt, tcb.rcv_nxt, tcb.last_ack_sent, tcb.segs_out)
    assert lend.send_on_behalf(tcb, 12345, 67890, RST, 0, 0.2)
    (out,) = p.take()
    assert (out.hdr.seq, out.hdr.ack, out.flags, out.hdr.window) == (12345, 67890, RST, 0)
    assert out.dst == B and out.hdr.options.timestamp is None
    assert (tcb.snd_nxt, tcb.rcv_nxt, tcb.last_ack_sent, tcb.segs_out) == before


# -- clocks, options, the end ------------------------------------------------------
def test_the_timestamp_clock_only_moves_forward():
    p, tcb = established()
    t0 = lend.ts_clock(tcb, 1.0)
    lend.advance_ts_clock(tcb, 11_000)
    assert lend.ts_clock(tcb, 1.0) == sq.add(t0, 11_000)
    for bad in (-1, 1 << 31):
        with pytest.raises(ValueError):
            lend.advance_ts_clock(tcb, bad)
    assert lend.ts_clock(tcb, 1.0) == sq.add(t0, 11_000)


@pytest.mark.parametrize("ts,wscale", [(True, 2), (False, None)])
def test_mirror_options_offers_what_the_other_connection_agreed(ts, wscale):
    p, like = established(ts=ts, sack=ts, wscale=wscale, mss=1200)
    tcb = p.layer.connect(B, 6000, 0.5, setup=lambda t: lend.mirror_options(t, like))
    (syn,) = p.take()
    o = syn.hdr.options
    assert o.mss == like.mss + (12 if ts else 0) == 1200
    assert (o.timestamp is not None, bool(o.sack_permitted)) == (ts, ts)
    assert o.wscale == wscale and tcb.rcv_wscale == (wscale or 0)


def test_make_spliceable_marks_and_fixes_the_receive_scale():
    p = Peer()
    lst = p.layer.listen(p.layer.ip.addr, 80)
    lst.tcb_setup = lambda t: lend.make_spliceable(t, rcv_wscale=0)
    (synack,) = p.send(0x02, now=0.0, **p.syn_options())
    tcb = next(iter(p.layer.connections.values()))
    assert tcb.spliceable and tcb.rcv_wscale == 0 and synack.hdr.options.wscale == 0


def test_close_silently_sends_nothing_and_leaves_the_table():
    p, tcb = established()
    tcb.send(b"unacked", 0.2)
    p.take()
    lend.close_silently(tcb)
    assert tcb.state is S.CLOSED and tcb.deadline() is None and not p.layer.connections
    assert p.tick(100.0) == []
    lend.close_silently(tcb)                        # twice: nothing more
    assert p.take() == []
