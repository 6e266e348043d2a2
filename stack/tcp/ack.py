"""ACK processing on synchronized connections: acceptance, window, loss recovery.

RFC 9293 §3.10.7.4 (fifth check) with RFC 5961 §5.2 ACK validity; RTT samples per
RFC 6298 (Karn's rule, or RFC 7323 timestamps); fast retransmit and recovery per
RFC 5681 §3.2 with RFC 6582 (NewReno) without SACK and RFC 6675 with SACK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stack import seq
from stack.skbuff import SkBuff
from stack.tcp import output, rack
from stack.tcp.api import TcpState
from stack.tcp.options import tsval
from stack.tcp.sack import LOST, RETRANS, SACKED
from stack.tcp.state import Event
from stack.wire.tcp import FIN, SYN, TcpHeader

if TYPE_CHECKING:
    from stack.tcp.tcb import Tcb

S = TcpState
DUPTHRESH = 3


def process_ack(tcb: Tcb, hdr: TcpHeader, plen: int, now: float) -> bool:
    """Handle the ACK field; False when the segment must be dropped."""
    ack = hdr.ack
    if seq.gt(ack, tcb.snd_nxt):
        # RFC 9293: an ACK for something not yet sent: ACK and drop.
        tcb.layer.count("ack_unsent")
        output.send_ack(tcb, now)
        return False
    if seq.lt(ack, seq.add(tcb.snd_una, -max(tcb.max_snd_wnd, 1))):
        # RFC 5961 §5.2: too old to be a plausible ACK: challenge and drop.
        tcb.layer.count("ack_too_old")
        output.send_challenge_ack(tcb, now)
        return False
    if tcb.state is S.TIME_WAIT:
        return True
    blocks = hdr.options.sack_blocks if tcb.sack_ok else None
    newly_sacked = 0
    if blocks and tcb.snd_nxt != tcb.snd_una:
        delivered: list[SkBuff] = []
        newly_sacked = tcb.scoreboard.update(tcb.write_queue, tcb.snd_una, list(blocks),
                                             tcb.snd_nxt, delivered)
        for skb in delivered:
            rack.on_delivered(tcb, skb, now)
    window = hdr.window << tcb.snd_wscale
    old_wnd = tcb.snd_wnd
    # RFC 1122 §4.2.2.17: a peer that answers is alive, even with a zero window.
    tcb.probes_out = 0
    if seq.gt(ack, tcb.snd_una):
        ack_new_data(tcb, ack, hdr, now)
    elif (ack == tcb.snd_una and plen == 0 and not hdr.flags & (SYN | FIN)
          and tcb.snd_nxt != tcb.snd_una and (window == old_wnd or newly_sacked)):
        dup_ack(tcb, newly_sacked, now)
    if seq.ge(ack, tcb.snd_una):  # RFC 9293: SND.UNA =< SEG.ACK =< SND.NXT
        update_window(tcb, hdr, window)
    sb = tcb._scoreboard
    if (sb is not None and sb.highest_sacked is not None and tcb.snd_una != tcb.snd_nxt
            and seq.gt(sb.highest_sacked, tcb.snd_una)):
        rack_loss(tcb, now)
    if tcb.snd_wnd > old_wnd and tcb.rtx_kind == "persist":
        tcb.timer_rtx = None  # let push() try; it re-arms the timer if still stuck
    fin_acked_transitions(tcb, now)
    return True


def rack_loss(tcb: Tcb, now: float) -> None:
    """RACK (RFC 8985 §6.2) on an ACK while holes remain (or when its reordering
    timer fires): mark what is lost by time; a first loss starts fast recovery (§6.2
    step 5 hands over to RFC 6675). What may still be only reordered arms the
    reordering timer (§6.3) when nothing is due sooner."""
    if rack.detect_loss(tcb, now) and not tcb.in_recovery and not tcb.rto_recovery:
        enter_recovery(tcb, now)
    reo = tcb.rack_reo_at
    if reo is not None and tcb.rtx_kind != "persist" and (
            tcb.timer_rtx is None or reo < tcb.timer_rtx):
        tcb.timer_rtx = reo
        tcb.rtx_kind = "reo"


def update_window(tcb: Tcb, hdr: TcpHeader, window: int) -> None:
    """RFC 9293 §3.10.7.4: SND.WND from the newest segment (SND.WL1/SND.WL2 rule)."""
    if seq.lt(tcb.snd_wl1, hdr.seq) or (tcb.snd_wl1 == hdr.seq
                                        and seq.le(tcb.snd_wl2, hdr.ack)):
        tcb.snd_wnd = window
        tcb.snd_wl1 = hdr.seq
        tcb.snd_wl2 = hdr.ack
        if window > tcb.max_snd_wnd:
            tcb.max_snd_wnd = window


def _free_acked(tcb: Tcb, ack: int) -> tuple[int, float | None, float | None]:
    """Unlink acknowledged buffers.

    Returns (payload bytes freed, Karn-safe send time, latest transmission time of
    the newest buffer acknowledged). RFC 6298 §3 (Karn): when the ACK covers any
    retransmitted buffer there is no sequence-based sample at all, since the ACK may
    answer the retransmission.
    """
    q = tcb.write_queue
    freed = 0
    when: float | None = None
    retransmitted = False
    last: SkBuff | None = None
    while (skb := q.first) is not None and skb is not tcb.send_head:
        if seq.le(skb.end_seq, ack):
            q.unlink(skb)
            freed += len(skb)
            when = skb.when
            retransmitted = retransmitted or skb.retrans > 0
            last = skb
            continue
        if seq.lt(skb.seq, ack):
            # Partly acknowledged (the peer trimmed to its window): drop the acked bytes.
            n = seq.sub(ack, skb.seq)
            skb.pull(min(n, len(skb)))
            skb.seq = ack
            freed += n
            retransmitted = retransmitted or skb.retrans > 0
        break
    if last is not None and not last.sacked & SACKED:
        rack.on_delivered(tcb, last, tcb.now)  # RFC 8985 §6.2 step 2
    return freed, None if retransmitted else when, when


def ack_new_data(tcb: Tcb, ack: int, hdr: TcpHeader, now: float) -> None:
    """SND.UNA < SEG.ACK <= SND.NXT: free data, sample RTT, drive congestion control."""
    acked = seq.sub(ack, tcb.snd_una)
    freed, when, last_sent = _free_acked(tcb, ack)
    rtt = None
    ts = hdr.options.timestamp if tcb.ts_ok else None
    if ts is not None and ts[1]:
        rtt = seq.sub(tsval(tcb, now), ts[1]) / 1000.0  # RFC 7323 §4.1
        if last_sent is not None:
            # A duplicate's ACK echoes an old TS.Recent (RFC 7323 §4.3, R2 before R3):
            # no round trip can be longer than the time since the data last left.
            rtt = min(rtt, now - last_sent)
        if not 0 <= rtt < 3600:
            rtt = None
    elif when is not None:
        rtt = now - when  # RFC 6298 §3 (Karn): never from a retransmitted buffer
    if rtt is not None:
        tcb.rtt.sample(max(rtt, 0.0))
    flight = output.flight_size(tcb)
    tcb.snd_una = ack
    tcb.bytes_acked += acked
    tcb.retransmits = 0
    tcb.probes_out = 0
    tcb.rtt.reset_backoff()
    rack.probe_acked(tcb, ack)
    if tcb.in_recovery:
        if seq.ge(ack, tcb.recover):
            exit_recovery(tcb, now)
        else:
            partial_ack(tcb, now)
    else:
        if tcb.rto_recovery and seq.ge(ack, tcb.recover):
            tcb.rto_recovery = False
            clear_marks(tcb)
        tcb.dupacks = 0
        tcb.cc.on_ack(acked, rtt, flight, now)
    if tcb.snd_una == tcb.snd_nxt:
        tcb.timer_rtx = None
    else:
        output.arm_rtx(tcb, now)  # RFC 6298 §5.3
    if freed and tcb.send_space() > 0:
        tcb.post("writable")


def dup_ack(tcb: Tcb, newly_sacked: int, now: float) -> None:
    """A duplicate ACK (RFC 5681 §2): maybe enter fast retransmit / recovery."""
    tcb.dupacks += 1
    tcb.layer.counters["dupacks"] += 1
    if tcb.in_recovery:
        if tcb.sack_ok and newly_sacked:
            tcb.scoreboard.mark_lost(tcb.write_queue, tcb.snd_una, tcb.mss)
        return
    if tcb.rto_recovery:
        return
    head = tcb.write_queue.first
    lost = tcb.dupacks >= DUPTHRESH
    if tcb.sack_ok and head is not None and not lost:
        lost = tcb.scoreboard.is_lost(head, tcb.mss)
    # RFC 6582 §3.2 step 1: without SACK no new recovery for losses from before the
    # last one ("recover"); RFC 6675 needs no such guard.
    if lost and (tcb.sack_ok or seq.gt(tcb.snd_una, tcb.recover)):
        enter_recovery(tcb, now)


def enter_recovery(tcb: Tcb, now: float) -> None:
    """Fast retransmit (RFC 5681 §3.2 steps 2-3; RFC 6675 §5 step 4)."""
    tcb.layer.counters["fast_retransmits"] += 1
    tcb.cc.on_enter_recovery(output.flight_size(tcb), now)
    tcb.in_recovery = True
    tcb.recover = tcb.snd_nxt
    head = tcb.write_queue.first
    if tcb.sack_ok:
        tcb.scoreboard.mark_lost(tcb.write_queue, tcb.snd_una, tcb.mss)
    if head is not None and head is not tcb.send_head and not head.sacked & SACKED:
        head.sacked = (head.sacked | LOST) & ~RETRANS
        output.retransmit(tcb, head, now)


def partial_ack(tcb: Tcb, now: float) -> None:
    """RFC 6582 §3.2 step 5 / RFC 6675: the next hole is lost too; resend it."""
    tcb.dupacks = 0
    head = tcb.write_queue.first
    if tcb.sack_ok:
        tcb.scoreboard.mark_lost(tcb.write_queue, tcb.snd_una, tcb.mss)
    if head is not None and head is not tcb.send_head and not head.sacked & (SACKED | RETRANS):
        head.sacked |= LOST
        output.retransmit(tcb, head, now)


def exit_recovery(tcb: Tcb, now: float) -> None:
    """A full ACK ends recovery (RFC 6582 §3.2 step 3)."""
    tcb.in_recovery = False
    tcb.rto_recovery = False
    tcb.dupacks = 0
    tcb.cc.on_exit_recovery(now)
    clear_marks(tcb)


def clear_marks(tcb: Tcb) -> None:
    """Forget LOST/RETRANS marks (SACKED ones stay until acknowledged)."""
    for skb in tcb.write_queue:
        if skb is tcb.send_head:
            break
        skb.sacked &= SACKED


def fin_acked_transitions(tcb: Tcb, now: float) -> None:
    """Moves that the acknowledgement of our FIN causes (RFC 9293 §3.10.7.4)."""
    if tcb.state not in (S.FIN_WAIT_1, S.CLOSING, S.LAST_ACK):
        return
    if tcb.write_seq != tcb.snd_una:
        return
    tcb.apply(Event.ACK_OF_FIN)
    tcb.timer_rtx = None
    if tcb.state is S.FIN_WAIT_2 and tcb.orphaned:
        tcb.timer_close = now + tcb.config.fin_timeout
    elif tcb.state is S.TIME_WAIT:
        from stack.tcp.input import enter_time_wait
        enter_time_wait(tcb, now)
