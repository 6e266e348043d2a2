"""Connection timers: retransmission, persist, delayed ACK, keepalive, TIME-WAIT.

Each Tcb keeps absolute deadlines (``timer_rtx`` doubles as the persist timer, as
in Linux); :func:`run_timers` fires the expired ones. Retransmission follows
RFC 6298 §5 (backoff, retries limit -> TcpTimeout), the persist timer RFC 9293
§3.8.6.1, keepalive RFC 9293 §3.8.4 / RFC 1122 §4.2.3.6.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stack import seq
from stack.tcp import output
from stack.tcp.ack import rack_loss
from stack.tcp.api import TcpState, TcpTimeout
from stack.tcp.sack import RETRANS
from stack.tcp.state import Event

if TYPE_CHECKING:
    from stack.tcp.tcb import Tcb

S = TcpState


def run_timers(tcb: Tcb, now: float) -> None:
    """Fire every timer of ``tcb`` that is due at ``now``."""
    tcb.now = now
    if tcb.timer_close is not None and now >= tcb.timer_close:
        tcb.timer_close = None
        close_timeout(tcb)
        return
    if tcb.timer_rtx is not None and now >= tcb.timer_rtx:
        tcb.timer_rtx = None
        if tcb.rtx_kind == "persist":
            persist_timeout(tcb, now)
        elif tcb.rtx_kind == "reo":
            reo_timeout(tcb, now)
        elif tcb.rtx_kind == "tlp":
            probe_timeout(tcb, now)
        else:
            rtx_timeout(tcb, now)
        if tcb.state is S.CLOSED:
            return
    if tcb.timer_delack is not None and now >= tcb.timer_delack:
        tcb.timer_delack = None
        if tcb.state in output.SENDING or tcb.state in (S.FIN_WAIT_2, S.TIME_WAIT):
            output.send_ack(tcb, now)
    if tcb.timer_keepalive is not None and now >= tcb.timer_keepalive:
        tcb.timer_keepalive = None
        keepalive_timeout(tcb, now)


def reo_timeout(tcb: Tcb, now: float) -> None:
    """RACK's reordering timer (RFC 8985 §6.3): what was still inside the reordering
    window when the last ACK came is judged again; the lost part is retransmitted."""
    tcb.layer.counters["rack_reo_timeouts"] += 1
    rack_loss(tcb, now)
    output.push(tcb, now)
    if tcb.timer_rtx is None and tcb.snd_nxt != tcb.snd_una:
        output.arm_rtx(tcb, now)


def close_timeout(tcb: Tcb) -> None:
    """TIME-WAIT's 2*MSL (or an orphan's FIN-WAIT-2 lifetime) is over: the close
    timer is armed in no other state, and the table takes both to CLOSED."""
    tcb.apply(Event.TIMEOUT)


def rtx_timeout(tcb: Tcb, now: float) -> None:
    """RFC 6298 §5.4-5.6: retransmit the earliest unacknowledged segment, back off."""
    cfg = tcb.config
    if tcb.state is S.SYN_SENT or tcb.state is S.SYN_RECEIVED:
        limit = cfg.syn_retries if tcb.state is S.SYN_SENT else cfg.synack_retries
        if tcb.retransmits >= limit:
            tcb.fail(tcb.soft_error or TcpTimeout("connection timed out"))
            return
        tcb.retransmits += 1
        tcb.total_retrans += 1
        tcb.rtt.backoff()
        output.send_syn(tcb, now)
        return
    if tcb.snd_una == tcb.snd_nxt:
        return
    if tcb.retransmits >= cfg.retries2:
        # Give up: tell the peer (if it still listens) and report the timeout.
        output.send_rst(tcb, tcb.snd_nxt, now)
        tcb.fail(TcpTimeout("connection timed out"))
        return
    tcb.retransmits += 1
    tcb.layer.counters["rto_expired"] += 1
    tcb.cc.on_rto(output.flight_size(tcb), now)
    tcb.rtt.backoff()
    tcb.in_recovery = False
    tcb.dupacks = 0
    tcb.tlp_end = None
    tcb.rto_recovery = True
    tcb.recover = tcb.snd_nxt
    tcb.scoreboard.mark_all_lost(tcb.write_queue, tcb.snd_nxt)
    head = tcb.write_queue.first
    if head is not None and head is not tcb.send_head:
        head.sacked &= ~RETRANS
        if len(head) > tcb.mss:
            output.split_skb(tcb, head, tcb.mss)  # cwnd is one segment now
        output.retransmit(tcb, head, now)
    output.arm_rtx(tcb, now)


def probe_timeout(tcb: Tcb, now: float) -> None:
    """RFC 8985 §7.3: send a tail loss probe, then arm the retransmission timer.

    The probe is new data when the peer's window takes it (it also makes progress),
    else the last segment sent, again. New data goes as two full-sized segments
    when there is that much: a receiver acknowledges at least every second one at
    once (RFC 1122 §4.2.3.2, RFC 5681 §4.2) but may hold the ACK of a single one for
    its delayed-ACK timer — 40 ms on Linux, forty round trips here, after the ACK
    that ended the flight was lost. (Linux's own probe is a whole TSO buffer.) A
    copy of data the receiver already has is acknowledged at once anyway.
    """
    if tcb.state not in output.SENDING or tcb.snd_una == tcb.snd_nxt:
        return
    tcb.layer.counters["tlp_probes"] += 1
    first = tcb.send_head
    mss = tcb.mss
    wnd_end = seq.add(tcb.snd_una, tcb.snd_wnd)
    if first is not None and len(first) > 2 * mss:
        output.split_skb(tcb, first, 2 * mss)
    if first is not None and seq.le(first.end_seq, wnd_end):
        probe = [first]
        # Without offload the queue holds one-MSS buffers: take the next one too.
        nxt = first.next
        if (not tcb.offload and len(first) <= mss and nxt is not None
                and len(nxt) <= mss and seq.le(nxt.end_seq, wnd_end)):
            probe.append(nxt)
        for skb in probe:
            output.transmit(tcb, skb, skb, len(skb), now)
        output.mark_sent(tcb, first, probe[-1], now)
    else:
        last = first.prev if first is not None else tcb.write_queue.last
        if last is None:
            return
        if len(last) > mss:
            output.split_skb(tcb, last, len(last) - mss)
            last = last.next
            assert last is not None  # split_skb queued the tail right after it
        output.retransmit(tcb, last, now)
    tcb.tlp_end = tcb.snd_nxt
    output.arm_rtx(tcb, now)  # an RTO now: the probe is outstanding (RFC 8985 §7.3)


def persist_timeout(tcb: Tcb, now: float) -> None:
    """Probe a zero window (RFC 9293 §3.8.6.1) and back off the next probe."""
    if tcb.state not in output.SENDING or tcb.send_head is None:
        return
    if tcb.snd_nxt != tcb.snd_una:
        output.arm_rtx(tcb, now)
        return
    if tcb.probes_out >= tcb.config.retries2:
        tcb.fail(TcpTimeout("zero-window probes unanswered"))
        return
    tcb.probes_out += 1
    tcb.persist_backoff += 1
    tcb.layer.counters["window_probes"] += 1
    output.send_probe(tcb, now)
    output.update_persist(tcb, now)


def arm_keepalive(tcb: Tcb, now: float) -> None:
    """Re-arm keepalive after traffic from the peer (only when enabled)."""
    if not tcb.keepalive or tcb.state not in (S.ESTABLISHED, S.CLOSE_WAIT):
        tcb.timer_keepalive = None
        return
    tcb.keepalive_probes = 0
    tcb.timer_keepalive = tcb.last_recv + tcb.config.keepalive_idle


def keepalive_timeout(tcb: Tcb, now: float) -> None:
    """Idle too long: probe the peer, give up after keepalive_probes probes."""
    cfg = tcb.config
    if not tcb.keepalive or tcb.state not in (S.ESTABLISHED, S.CLOSE_WAIT):
        return
    if tcb.snd_nxt != tcb.snd_una or tcb.send_head is not None:
        # Data is outstanding: the retransmission timer watches the peer instead.
        tcb.timer_keepalive = now + cfg.keepalive_intvl
        return
    if tcb.keepalive_probes >= cfg.keepalive_probes:
        tcb.fail(TcpTimeout("keepalive timed out"))
        return
    tcb.keepalive_probes += 1
    tcb.layer.counters["keepalive_probes"] += 1
    output.send_probe(tcb, now)
    tcb.timer_keepalive = now + cfg.keepalive_intvl
