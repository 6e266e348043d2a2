"""Lending a connection to the splice layer: the only way splice/ changes a TCB.

A splice (splice/splicer.py, splice/oneway.py; docs/splice.md) borrows the proxy's TCBs:
it sees their segments first, keeps them silent while the peers talk end to end
through the relay, and at a hand-back gives them sequence numbers they never sent or
received themselves. Every such change is one operation here, named in RFC 9293's
words, with its invariants kept here and tested in tests/tcp/test_lend.py; splice/
reads TCB fields but assigns none and calls no TCP step function.

Module functions taking a Tcb, not a ``Loan`` object: what a loan is (the input hook
and the owner mark) already lives in the TCB, where TCP reads it (layer.input,
note_time_wait), so an object would be a second place for the same fact and one
more allocation per splice. Every operation is a slow path (splice start, hand-back,
teardown, segments before relaying); none is on the relay's per-segment path.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from stack import seq
from stack.tcp import output
from stack.tcp.api import TcpState
from stack.tcp.input import segment_arrives
from stack.tcp.options import tsval
from stack.tcp.timers import arm_keepalive
from stack.wire.tcp import ACK, FIN, PSH, TcpHeader

if TYPE_CHECKING:
    from stack.tcp.tcb import InputHook, Tcb

_NO_TEXT = memoryview(b"")
#: Bytes the timestamp option takes in every segment (RFC 7323 Appendix A layout).
_TS_ROOM = 12
#: A timestamp clock moves forward by less than half its space at once (RFC 7323 §5.2).
_TS_HALF = 1 << 31


# -- the loan itself -----------------------------------------------------------------
def make_spliceable(tcb: Tcb, *, rcv_wscale: int | None = None) -> None:
    """Mark a connection being accepted as one that may be lent later; optionally fix
    its receive window scale (RFC 7323 §2.2) before its SYN-ACK offers it."""
    tcb.spliceable = True
    if rcv_wscale is not None:
        tcb.rcv_wscale = rcv_wscale


def mirror_options(tcb: Tcb, like: Tcb) -> None:
    """Before ``tcb``'s SYN: offer the options ``like`` agreed (docs/splice.md §5), its MSS
    (grown by the timestamp room, so that segments fit ``like``'s peer unsplit) and,
    with window scaling, ``like``'s peer's scale as ours (windows pass unchanged)."""
    cfg = tcb.config
    if (cfg.window_scaling != like.wscale_ok or cfg.sack != like.sack_ok
            or cfg.timestamps != like.ts_ok):
        # (Nothing writes a TCB's config: when it already offers these, it is kept.)
        tcb.config = dataclasses.replace(cfg, window_scaling=like.wscale_ok,
                                         sack=like.sack_ok, timestamps=like.ts_ok)
    tcb.adv_mss = like.mss + (_TS_ROOM if like.ts_ok else 0)
    tcb.rcv_wscale = like.snd_wscale if like.wscale_ok else 0


def lend(tcb: Tcb, hook: InputHook, owner: Any = None) -> None:
    """From now on every segment arriving for ``tcb`` goes to ``hook`` first (True:
    taken). ``owner`` (a splice side) marks the TCB as spliced for the rest of the
    stack: the drain leaves it alone, TIME-WAIT keeps the TCB. ValueError when it is
    lent to another hook already."""
    if tcb.input_hook is not None and tcb.input_hook != hook:
        raise ValueError("the connection is lent already")
    tcb.input_hook = hook
    if owner is not None:
        tcb.splice = owner


def release(tcb: Tcb, hook: InputHook | None = None, *, disown: bool = False) -> None:
    """Segments go to TCP alone again (only if lent to ``hook``, when given).
    ``disown`` also drops the owner mark: the application has the connection back
    as if it had never been lent."""
    if hook is None or tcb.input_hook == hook:
        tcb.input_hook = None
    if disown:
        tcb.splice = None


# -- segments the borrower gives back --------------------------------------------------
def take_segment(tcb: Tcb, hdr: TcpHeader, text: memoryview, now: float) -> None:
    """The TCB takes a whole segment as if it were not lent (RFC 9293 §3.10.7
    SEGMENT ARRIVES)."""
    segment_arrives(tcb, hdr, text, now)


def take_ack(tcb: Tcb, hdr: TcpHeader, now: float) -> None:
    """The TCB takes only the acknowledgement and window of a segment whose text and
    FIN belong to the other connection (docs/splice.md §2: not delivered, not
    acknowledged by the proxy). A segment without ACK gives it nothing."""
    flags = hdr.flags
    if not flags & ACK:
        return
    if flags & FIN:
        hdr = dataclasses.replace(hdr, flags=flags & ~FIN)
    segment_arrives(tcb, hdr, _NO_TEXT, now)


# -- what the TCB sends for the borrower ----------------------------------------------
def send_all(tcb: Tcb, data: bytes | memoryview, now: float) -> int:
    """SEND all of ``data`` (RFC 9293 §3.10.2): the send buffer grows to take it, for
    these bytes were accepted from the other peer already and cannot be refused. The
    count taken: less than ``len(data)`` only when the connection refuses more."""
    need = seq.sub(tcb.write_seq, tcb.snd_una) + len(data)
    if need > tcb.sndbuf:
        tcb.sndbuf = need
    view = memoryview(data)
    taken = 0
    while taken < len(view):
        n = tcb.send(view[taken:], now)
        if n <= 0:
            break
        taken += n
    return taken


def send_queued(tcb: Tcb, now: float) -> bool:
    """Transmit what may be transmitted now, also inside an input batch (where TCP
    would wait for the batch's end); True when everything queued has left."""
    if tcb.send_head is not None:
        output.push(tcb, now)
    return tcb.send_head is None and tcb.snd_nxt == tcb.write_seq


def acknowledge(tcb: Tcb, now: float, *, at_once: bool = True) -> None:
    """Make sure the peer gets an ACK of everything below RCV.NXT: nothing when the
    last ACK sent said so; else a pure ACK now, or (``at_once`` False) from the
    delayed-ACK timer, due now, so that data about to leave can carry it."""
    if tcb.last_ack_sent == tcb.rcv_nxt:
        return
    if at_once:
        output.send_ack(tcb, now)
    else:
        tcb.timer_delack = now


def probe_for_ack(tcb: Tcb, now: float) -> bool:
    """Send the last byte sent once more: a duplicate is acknowledged at once (RFC 5681
    §4.2; Linux enters quick-ACK mode), where a short last segment may wait for the
    peer's delayed ACK. Only when everything queued has left; False when nothing was
    sent."""
    last = tcb.write_queue.last
    if (last is None or not len(last) or tcb.send_head is not None
            or tcb.snd_nxt != tcb.write_seq):
        return False
    output.send_segment(tcb, seq.add(tcb.snd_nxt, -1), ACK | PSH, now,
                        parts=[last.view()[-1:]], plen=1)
    return True


def send_on_behalf(tcb: Tcb, seq_: int, ack: int, flags: int, window: int,
                   now: float) -> bool:
    """<SEQ=seq_><ACK=ack><CTL=flags> on ``tcb``'s 4-tuple with numbers the relay
    chose for a peer (a challenge ACK or a reset, RFC 5961 §3.2): no option, nothing
    of the TCB's own state used or changed. False when the IP layer dropped it."""
    hdr = TcpHeader(tcb.local_port, tcb.remote_port, seq_, ack, flags, window)
    return output.emit(tcb.layer, tcb.local, tcb.remote, hdr, [], 0, False, 0, now)


# -- silence --------------------------------------------------------------------------
def silence(tcb: Tcb) -> None:
    """Stop every timer: the TCB sends nothing on its own while the relay speaks for
    it (retransmission, probe and persist, delayed ACK, keepalive, close)."""
    tcb.timer_rtx = tcb.timer_delack = tcb.timer_keepalive = tcb.timer_close = None


def resume(tcb: Tcb, now: float) -> None:
    """The TCB speaks again: the retransmission timer when data is outstanding (RFC
    6298 §5.1), the persist timer when data waits on a closed window (RFC 9293
    §3.8.6.1), keepalive when enabled (§3.8.4). Nothing on a closed TCB or in
    TIME-WAIT (its 2*MSL timer is its own)."""
    if tcb.state is TcpState.CLOSED or tcb.state is TcpState.TIME_WAIT:
        return
    if tcb.timer_rtx is None:
        if tcb.snd_nxt != tcb.snd_una:
            output.arm_rtx(tcb, now)
        elif tcb.send_head is not None:
            output.update_persist(tcb, now)
    arm_keepalive(tcb, now)
    tcb.layer.schedule(tcb)


# -- the hand-back --------------------------------------------------------------------
def _caught_up(value: int, old: int, end: int) -> int:
    """``value`` (a sequence number not behind ``old``) moved up to ``end`` when the
    advance from ``old`` to ``end`` passes it; distances are taken from ``old``, so an
    advance of more than half the sequence space is still right."""
    return end if seq.sub(value, old) < seq.sub(end, old) else value


def advance_snd(tcb: Tcb, end: int) -> None:
    """The send side as if the TCB itself had sent, and seen acknowledged, everything
    up to ``end``: SND.UNA = SND.NXT = ``end``, and every variable that follows them
    with it (loss recovery, RACK and SACK state, the retransmission timer: nothing is
    outstanding). ValueError when the TCB still holds data of its own."""
    if tcb.write_queue or tcb.snd_una != tcb.write_seq:
        raise ValueError("the send queue is not empty")
    old = tcb.snd_una
    tcb.snd_una = tcb.snd_nxt = tcb.write_seq = end
    tcb.snd_up = _caught_up(tcb.snd_up, old, end)
    tcb.snd_wl2 = end               # the newest ACK seen acknowledges ``end``
    tcb.send_head = None
    tcb.recover = tcb.rack_end = end
    tcb.dupacks = 0
    tcb.in_recovery = tcb.rto_recovery = False
    tcb.tlp_end = None
    tcb.rack_reo_at = None          # RFC 8985 §6.3: no hole left to judge again
    tcb._scoreboard = None
    tcb.retransmits = tcb.probes_out = tcb.persist_backoff = 0
    tcb.rtt.reset_backoff()
    tcb.timer_rtx = None


def advance_rcv(tcb: Tcb, end: int, now: float, *, ts_val: int | None = None) -> None:
    """The receive side as if the TCB itself had received, and acknowledged,
    everything up to ``end``: RCV.NXT = ``end``, the advertised edge never behind it,
    Last.ACK.sent = ``end`` (RFC 7323 §4.3); ``ts_val``, the newest TSval of what was
    received meanwhile, becomes TS.Recent when newer. ValueError when out-of-order
    data is held (it would lie inside the range)."""
    if tcb.out_of_order_queue:
        raise ValueError("out-of-order data is held")
    old = tcb.rcv_nxt
    tcb.rcv_nxt = end
    tcb.rcv_adv = _caught_up(tcb.rcv_adv, old, end)
    tcb.rcv_wnd = seq.sub(tcb.rcv_adv, end)
    tcb.rcv_up = _caught_up(tcb.rcv_up, old, end)
    tcb.last_ack_sent = end
    tcb.snd_wl1 = end               # the peer's next segment is the newest seen
    tcb.last_ooo = tcb.ooo_fin = None
    if ts_val is not None and seq.gt(ts_val, tcb.ts_recent):
        tcb.ts_recent, tcb.ts_recent_age = ts_val, now


def discard_out_of_order(tcb: Tcb) -> None:
    """Forget data held above RCV.NXT: it was never acknowledged (RFC 2018 §8 allows
    dropping SACKed data), so its sender sends it again."""
    tcb.out_of_order_queue.purge()
    tcb.ooo_bytes = 0
    tcb.last_ooo = tcb.ooo_fin = None


# -- the timestamp clock (RFC 7323 §5) ------------------------------------------------
def ts_clock(tcb: Tcb, now: float) -> int:
    """The TSval the TCB would send now."""
    return tsval(tcb, now)


def advance_ts_clock(tcb: Tcb, ms: int) -> None:
    """Move the TCB's timestamp clock ``ms`` ticks forward, never back: past TSvals
    the relay sent on its connection, or the peer's PAWS check (RFC 7323 §5.3) drops
    the TCB's next segments."""
    if not 0 <= ms < _TS_HALF:
        raise ValueError(f"a clock moves forward by 0 .. 2**31-1 ticks, not {ms}")
    tcb.ts_offset = (tcb.ts_offset + ms) & seq.MASK


# -- the end --------------------------------------------------------------------------
def close_silently(tcb: Tcb) -> None:
    """Enter CLOSED without sending anything (the peers ended the connection end to
    end, or the relay sent its reset): queues freed, timers stopped, table left."""
    if tcb.state is not TcpState.CLOSED:
        tcb.set_closed()
