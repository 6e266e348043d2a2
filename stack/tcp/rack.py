"""RACK-TLP loss detection (RFC 8985) on the write_queue.

RACK (§6) judges loss by time rather than by counting duplicate ACKs: once data
sent at time T is known to have been delivered (SACKed or cumulatively
acknowledged), any unSACKed buffer sent sufficiently before T (more than the
reordering window earlier) is lost, whether it is an original transmission or a
retransmission. That repairs a lost retransmission in one round trip, where the
RFC 6675 scoreboard alone (which never retransmits a buffer twice) waits for
the retransmission timer.

TLP (§7) sends a probe when a flight goes unacknowledged for about two round
trips: new data if the peer's window allows, else the last segment again. The
probe's ACK (with SACK blocks) lets RACK find a lost tail, which would otherwise
be recovered only by a retransmission timeout.

Per-buffer state is the buffer's ``when`` (time of its latest transmission),
``retrans`` (how often it was retransmitted) and ``sacked`` flags; the TCB keeps
RACK.xmit_ts, RACK.end_seq and RACK.rtt as ``rack_xmit``, ``rack_end`` and
``rack_rtt``, and the end of an outstanding probe as ``tlp_end``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stack import seq
from stack.skbuff import SkBuff
from stack.tcp.api import TcpState
from stack.tcp.sack import LOST, RETRANS, SACKED

if TYPE_CHECKING:
    from stack.tcp.tcb import Tcb

#: States in which a loss probe may be sent (data of ours is in flight, peer reads).
PROBE_STATES = frozenset({TcpState.ESTABLISHED, TcpState.CLOSE_WAIT, TcpState.FIN_WAIT_1})


def on_delivered(tcb: Tcb, skb: SkBuff, now: float) -> None:
    """RFC 8985 §6.2 step 2: ``skb`` was SACKed or acknowledged at ``now``.

    A retransmitted buffer delivered sooner than min_RTT after its retransmission
    was most likely delivered by an earlier transmission: the sample is ambiguous
    and skipped (§6.2 step 2, the timestamp-free variant of the spurious check).
    """
    when = skb.when
    rtt = now - when
    if skb.retrans:
        min_rtt = tcb.rtt.min_rtt
        if min_rtt is not None and rtt < min_rtt:
            return
    if when > tcb.rack_xmit or (when == tcb.rack_xmit and seq.gt(skb.end_seq, tcb.rack_end)):
        tcb.rack_xmit = when
        tcb.rack_end = skb.end_seq
        tcb.rack_rtt = max(rtt, 0.0)


def reo_wnd(tcb: Tcb) -> float:
    """RFC 8985 §6.2 step 4: a quarter of min_RTT, never more than SRTT."""
    min_rtt = tcb.rtt.min_rtt
    if min_rtt is None:
        return 0.0
    return min(min_rtt / 4, tcb.rtt.srtt or min_rtt)


def detect_loss(tcb: Tcb, now: float) -> int:
    """RFC 8985 §6.2 step 5: mark LOST what was sent too long before delivered data.

    A buffer already retransmitted and found lost again loses its RETRANS mark, so
    that the recovery code sends it once more. Returns the bytes newly marked.

    A buffer sent before the delivered data but still inside its RACK.rtt + reo_wnd
    sets the reordering timer (§6.3, ``rack_reo_at``) for when that runs out: without
    it, a hole at the end of a flight would wait for the retransmission timer.
    """
    tcb.rack_reo_at = None
    if not tcb.rack_xmit:
        return 0
    window = reo_wnd(tcb) + tcb.rack_rtt
    reo_at: float | None = None
    newly = 0
    skb = tcb.write_queue.first
    head = tcb.send_head
    while skb is not None and skb is not head:
        marks = skb.sacked
        if not marks & SACKED and (not marks & LOST or marks & RETRANS):
            when = skb.when
            # Sent before the delivered data (by time, then by sequence) and its
            # RACK.rtt + reo_wnd has run out: lost.
            before = when < tcb.rack_xmit or (when == tcb.rack_xmit
                                              and seq.lt(skb.end_seq, tcb.rack_end))
            # (one expression for both tests: a timer set for ``expiry`` must find
            # the buffer lost when it fires, whatever the float rounding)
            expiry = when + window
            if before and expiry <= now:
                skb.sacked = (marks | LOST) & ~RETRANS
                newly += seq.sub(skb.end_seq, skb.seq)
            elif before and (reo_at is None or expiry < reo_at):
                reo_at = expiry
        skb = skb.next
    if newly:
        tcb.layer.counters["rack_lost_bytes"] += newly
    tcb.rack_reo_at = reo_at
    return newly


def pto_delay(tcb: Tcb) -> float | None:
    """RFC 8985 §7.2: the PTO to arm now, or None when no probe may be scheduled.

    A probe needs SACK (its ACK must be able to tell what arrived), an RTT sample,
    no recovery in progress and no earlier probe outstanding. PTO is two SRTTs,
    plus the peer's worst-case delayed ACK when only one segment is in flight,
    never below ``tlp_min`` and never later than the RTO would fire.
    """
    cfg = tcb.config
    if (not cfg.tlp or not tcb.sack_ok or tcb.in_recovery or tcb.rto_recovery
            or tcb.tlp_end is not None or tcb.state not in PROBE_STATES
            or not tcb.rtt.has_sample):
        return None
    pto = 2 * tcb.rtt.srtt
    if seq.sub(tcb.snd_nxt, tcb.snd_una) <= tcb.mss:
        pto += cfg.delack_max
    return min(max(pto, cfg.tlp_min), tcb.rtt.rto)


def probe_acked(tcb: Tcb, ack: int) -> None:
    """An ACK at or beyond the probe ends the probe episode (RFC 8985 §7.4)."""
    if tcb.tlp_end is not None and seq.ge(ack, tcb.tlp_end):
        tcb.tlp_end = None
