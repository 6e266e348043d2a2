"""Segment arrival (RFC 9293 §3.10.7), one function per state group.

LISTEN is handled by the layer (it has no TCB yet). :func:`syn_sent` covers
SYN-SENT, :func:`synchronized` every other state, in the RFC's order: PAWS
(RFC 7323 §5.3), sequence acceptability, RST (RFC 5961 §3.2), SYN (RFC 5961 §4.2),
ACK (RFC 5961 §5.2, RFC 5681/6582/6675 via ack.py), URG, segment text, FIN.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from stack import seq
from stack.tcp import output
from stack.tcp.ack import process_ack
from stack.tcp.api import TcpRefused, TcpReset, TcpState
from stack.tcp.options import apply_peer_syn, paws_reject, tsval, update_ts_recent
from stack.tcp.reassembly import receive_data
from stack.tcp.state import CAN_RECEIVE, Event
from stack.wire.tcp import ACK, FIN, RST, SYN, URG, TcpHeader

if TYPE_CHECKING:
    from stack.tcp.tcb import Tcb

S = TcpState


def segment_arrives(tcb: Tcb, hdr: TcpHeader, payload: memoryview, now: float) -> None:
    """Process one segment for an existing connection."""
    tcb.now = now
    tcb.segs_in += 1
    tcb.last_recv = now
    if tcb.state is S.SYN_SENT:
        syn_sent(tcb, hdr, payload, now)
    elif tcb.state is not S.CLOSED:
        synchronized(tcb, hdr, payload, now)
    if tcb.state is not S.CLOSED:
        from stack.tcp.timers import arm_keepalive
        arm_keepalive(tcb, now)


# ------------------------------------------------------------------ SYN-SENT
def syn_sent(tcb: Tcb, hdr: TcpHeader, payload: memoryview, now: float) -> None:
    """RFC 9293 §3.10.7.3."""
    flags = hdr.flags
    layer = tcb.layer
    ack_ok = False
    if flags & ACK:
        if seq.le(hdr.ack, tcb.iss) or seq.gt(hdr.ack, tcb.snd_nxt):
            if not flags & RST:
                layer.reply_rst(tcb.local, tcb.remote, hdr, len(payload), now)
                if not tcb.syn_retried:
                    # Most likely the peer's TIME-WAIT for this 4-tuple answered (it
                    # judged our SYN old, RFC 6191), and our RST just ended it (RFC
                    # 1337 notes peers that do not): try again now, once, rather than
                    # after the SYN's 1-second retransmission timeout.
                    tcb.syn_retried = True
                    layer.count("synsent_retry_after_rst")
                    output.send_syn(tcb, now)
            layer.count("synsent_bad_ack")
            return
        ack_ok = True
    if flags & RST:
        if ack_ok:  # RFC 5961 §3.2: acceptable only with an acceptable ACK
            tcb.fail(TcpRefused("connection refused"))
        else:
            layer.count("synsent_rst_without_ack")
        return
    if not flags & SYN:
        layer.count("synsent_no_syn")
        return
    tcb.irs = hdr.seq
    tcb.rcv_nxt = seq.add(hdr.seq, 1)
    tcb.rcv_adv = tcb.rcv_nxt
    apply_peer_syn(tcb, hdr.options, now, we_sent_syn=True)
    tcb.cc.set_mss(tcb.mss)
    # RFC 7323 §2.2: the window of a SYN is never scaled.
    tcb.snd_wnd = hdr.window
    tcb.max_snd_wnd = max(tcb.max_snd_wnd, tcb.snd_wnd)
    tcb.snd_wl1 = hdr.seq
    tcb.snd_wl2 = hdr.ack
    if not ack_ok:
        # Simultaneous open (RFC 9293 §3.5, Figure 8).
        tcb.apply(Event.SYN_RCVD)
        tcb.timer_rtx = None
        output.send_syn(tcb, now)
        return
    syn_acked(tcb, hdr.ack, hdr.options.timestamp, now)
    tcb.apply(Event.SYN_ACK_RCVD)
    became_established(tcb, now)
    if payload or flags & FIN:
        text_and_fin(tcb, hdr, payload, now)
    output.push(tcb, now)
    if tcb.last_ack_sent != tcb.rcv_nxt or tcb.ack_now:
        output.send_ack(tcb, now)


def syn_acked(tcb: Tcb, ack: int, ts: tuple[int, int] | None, now: float) -> None:
    """Our SYN is acknowledged: take an RTT sample (Karn: only if never retransmitted)."""
    if tcb.ts_ok and ts is not None and ts[1]:
        rtt = seq.sub(tsval(tcb, now), ts[1]) / 1000.0
        if 0 <= rtt < 3600:
            tcb.rtt.sample(max(rtt, 0.0))
    elif tcb.retransmits == 0:
        tcb.rtt.sample(max(now - tcb.syn_time, 0.0))
    tcb.snd_una = ack
    tcb.recover = tcb.iss  # RFC 6582 §3.2: initialised to the ISS
    tcb.retransmits = 0
    tcb.rtt.reset_backoff()
    tcb.timer_rtx = None


def became_established(tcb: Tcb, now: float) -> None:
    """Common work on entering ESTABLISHED (either direction of open)."""
    tcb.post("established")
    if tcb.write_queue:
        tcb.post("writable")
    if tcb.user_shutdown and not tcb.has_fin_queued():
        tcb.queue_fin(now)


# ------------------------------------------------------------------ synchronized
class RcvWindow(Protocol):
    """What the acceptability test reads: a Tcb, or a TIME-WAIT record."""

    @property
    def rcv_nxt(self) -> int:
        """RCV.NXT."""
        ...

    @property
    def rcv_adv(self) -> int:
        """The right edge of the window last advertised."""
        ...


def acceptable(tcb: RcvWindow, seg_seq: int, seg_len: int) -> bool:
    """RFC 9293 §3.10.7.4 segment acceptability test (four cases)."""
    wnd = max(0, seq.sub(tcb.rcv_adv, tcb.rcv_nxt))
    if seg_len == 0:
        if wnd == 0:
            return seg_seq == tcb.rcv_nxt
        return seq.in_window(tcb.rcv_nxt, seg_seq, wnd)
    if wnd == 0:
        # Special allowance (§3.10.7.4): keep the ACK of a segment at RCV.NXT; its
        # text is trimmed away later.
        return seg_seq == tcb.rcv_nxt
    return (seq.in_window(tcb.rcv_nxt, seg_seq, wnd)
            or seq.in_window(tcb.rcv_nxt, seq.add(seg_seq, seg_len - 1), wnd))


def synchronized(tcb: Tcb, hdr: TcpHeader, payload: memoryview, now: float) -> None:
    """RFC 9293 §3.10.7.4 for SYN-RECEIVED ... TIME-WAIT."""
    layer = tcb.layer
    if tcb.state is S.SYN_RECEIVED and hdr.flags & SYN and hdr.seq == tcb.irs \
            and repeated_syn(tcb, hdr, payload, now):
        return
    flags = hdr.flags
    seg_len = len(payload) + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
    ts = hdr.options.timestamp if tcb.ts_ok else None
    if ts is not None and not flags & RST and paws_reject(tcb, ts[0], now):
        layer.count("paws_reject")
        output.send_ack(tcb, now)
        return
    if not acceptable(tcb, hdr.seq, seg_len):
        layer.count("seq_unacceptable")
        if flags & RST:
            return
        if tcb.state is S.TIME_WAIT and flags & FIN:
            tcb.timer_close = now + 2 * tcb.config.msl  # RFC 9293 §3.10.7.4, FIN
        output.send_ack(tcb, now)
        return
    if flags & RST:
        reset_arrives(tcb, hdr, now)
        return
    if flags & SYN:
        # RFC 5961 §4.2: any SYN on a synchronized connection gets a challenge ACK.
        layer.count("syn_in_window")
        output.send_challenge_ack(tcb, now)
        return
    if not flags & ACK:
        layer.count("no_ack_flag")
        return
    if ts is not None:
        update_ts_recent(tcb, ts[0], hdr.seq, now)
        tcb.rcv_rtt_sample(ts[1], now)
    if tcb.state is S.SYN_RECEIVED and not synrecv_ack(tcb, hdr, payload, now):
        return
    if not process_ack(tcb, hdr, len(payload), now):
        return
    if tcb.state is S.CLOSED:
        return
    if flags & URG and tcb.state in CAN_RECEIVE and hdr.urgent:
        # RFC 9293 §3.8.5 / RFC 6093: urgent data stays in band; only the pointer is kept.
        tcb.rcv_up = seq.max_seq(tcb.rcv_up, seq.add(hdr.seq, hdr.urgent))
    if payload or flags & FIN:
        text_and_fin(tcb, hdr, payload, now)
    if tcb.state is S.CLOSED:
        return
    if tcb.ack_now and tcb.out_of_order_queue:
        # The immediate ACK goes out alone so that it can carry SACK blocks, which
        # data segments leave out (they would not fit in the MSS).
        output.send_ack(tcb, now)
    if tcb.layer.batching:
        tcb.layer.defer_output(tcb)  # one push and one ACK at the end of the batch
        return
    output.push(tcb, now)
    if tcb.ack_now or (payload and tcb.last_ack_sent != tcb.rcv_nxt):
        output.schedule_ack(tcb, now)


def output_after_batch(tcb: Tcb, now: float) -> None:
    """What :func:`synchronized` leaves to the end of an input batch: transmit what
    the ACKs allow, then acknowledge the data received (at once or delayed)."""
    if tcb.state is S.CLOSED:
        return
    tcb.now = now
    output.push(tcb, now)
    if tcb.ack_now or tcb.last_ack_sent != tcb.rcv_nxt:
        output.schedule_ack(tcb, now)


def repeated_syn(tcb: Tcb, hdr: TcpHeader, payload: memoryview, now: float) -> bool:
    """The peer's SYN again, in SYN-RECEIVED; True when the segment was dealt with."""
    if hdr.flags & ACK and hdr.ack == tcb.snd_nxt and not payload:
        # Simultaneous open (RFC 9293 Figure 8): the peer's SYN-ACK acknowledges our
        # SYN; its SYN is the one we already hold, so only the ACK is new.
        hdr.flags &= ~SYN
        hdr.seq = seq.add(hdr.seq, 1)
        return False
    if not hdr.flags & ACK:
        output.send_syn(tcb, now)  # the peer did not get our SYN-ACK
        return True
    return False


def synrecv_ack(tcb: Tcb, hdr: TcpHeader, payload: memoryview, now: float) -> bool:
    """The ACK that completes a passive (or simultaneous) open; False: drop the segment."""
    if not (seq.lt(tcb.snd_una, hdr.ack) and seq.le(hdr.ack, tcb.snd_nxt)):
        tcb.layer.reply_rst(tcb.local, tcb.remote, hdr, len(payload), now)
        tcb.layer.count("synrecv_bad_ack")
        return False
    syn_acked(tcb, hdr.ack, hdr.options.timestamp if tcb.ts_ok else None, now)
    tcb.snd_wnd = hdr.window << tcb.snd_wscale
    tcb.max_snd_wnd = max(tcb.max_snd_wnd, tcb.snd_wnd)
    tcb.snd_wl1 = hdr.seq
    tcb.snd_wl2 = hdr.ack
    tcb.apply(Event.ACK_OF_SYN)
    became_established(tcb, now)
    if tcb.listener is not None:
        tcb.layer.listener_established(tcb)
    return True


def reset_arrives(tcb: Tcb, hdr: TcpHeader, now: float) -> None:
    """RFC 9293 §3.10.7.4 second check with RFC 5961 §3.2: exact match or challenge."""
    if hdr.seq != tcb.rcv_nxt:
        tcb.layer.count("rst_in_window")
        output.send_challenge_ack(tcb, now)
        return
    tcb.layer.count("rst_received")
    if tcb.state is S.SYN_RECEIVED and tcb.passive:
        tcb.set_closed()  # back to LISTEN: the listener forgets this half-open attempt
    elif tcb.state is S.SYN_RECEIVED:
        tcb.fail(TcpRefused("connection refused"))
    elif tcb.state in (S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT):
        tcb.fail(TcpReset("connection reset by peer"))
    else:
        tcb.set_closed()


# ------------------------------------------------------------------ text and FIN
def text_and_fin(tcb: Tcb, hdr: TcpHeader, payload: memoryview, now: float) -> None:
    """RFC 9293 §3.10.7.4 steps seven and eight."""
    fin = bool(hdr.flags & FIN)
    if tcb.orphaned and payload and seq.gt(seq.add(hdr.seq, len(payload)), tcb.rcv_nxt):
        # Nobody will ever read this: reset, as RFC 2525 §2.17 does for unread data.
        tcb.layer.count("data_after_close")
        output.send_rst(tcb, tcb.snd_nxt, now)
        tcb.set_closed()
        return
    if tcb.state in CAN_RECEIVE:
        fin_now = receive_data(tcb, hdr.seq, payload, fin, now)
    else:
        fin_now = False
        if payload:
            tcb.layer.count("data_after_fin")
        if fin and seq.add(hdr.seq, len(payload)) == seq.add(tcb.rcv_nxt, -1):
            tcb.ack_now = True  # a retransmitted FIN: acknowledge it again
    if fin_now:
        fin_arrives(tcb, now)


def fin_arrives(tcb: Tcb, now: float) -> None:
    """The peer's FIN, in order (RFC 9293 §3.10.7.4, eighth step)."""
    tcb.rcv_nxt = seq.add(tcb.rcv_nxt, 1)
    tcb.ack_now = True
    if not tcb.eof_received:
        tcb.eof_received = True
        tcb.post("eof")
    tcb.apply(Event.FIN_RCVD)
    if tcb.state is S.TIME_WAIT:
        enter_time_wait(tcb, now)


def enter_time_wait(tcb: Tcb, now: float) -> None:
    """TIME-WAIT lasts 2*MSL (RFC 9293 §3.10.7.4); only the close timer stays armed."""
    tcb.timer_rtx = None
    tcb.timer_keepalive = None
    tcb.timer_close = now + 2 * tcb.config.msl
    tcb.write_queue.purge()
    tcb.send_head = None
    tcb.layer.note_time_wait(tcb)
