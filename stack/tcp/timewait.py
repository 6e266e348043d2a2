"""TIME-WAIT as a small record, not a whole TCB (RFC 9293 §3.10.7.4, RFC 6191).

A connection that enters TIME-WAIT has nothing left to send or receive: all it
must still do for 2*MSL is re-acknowledge a retransmitted FIN (restarting the
2*MSL wait), acknowledge other segments, end on an in-window RST, answer
challenges (RFC 5961) and let a new SYN reopen the 4-tuple (RFC 6191). For that it
needs the 4-tuple, SND.NXT, RCV.NXT and the receive window, the timestamp state
(TS.Recent and our clock's offset, for PAWS and for the timestamps it sends) and
an expiry time. :class:`TimeWait` keeps exactly that (Linux does the same with
its timewait sock, which replaces the socket) and the connection table holds it
in place of the Tcb, whose buffers and objects are freed.

The application may still hold the Tcb: it keeps reporting TIME-WAIT, refers to
nothing, and moves to CLOSED (its "closed" event) when the record ends. The
record refers to it weakly, so a Tcb nobody holds is freed at once.

Spliced TCBs never get here (the splice has its own TIMEWAIT, docs/splice.md §2); a TCB
with an input hook keeps its full TIME-WAIT (input.py), as the hook may want its
segments.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Literal, final

from stack import seq
from stack.tcp import output
from stack.tcp.api import TcpState
from stack.tcp.input import acceptable
from stack.tcp.options import paws_reject, tsval, update_ts_recent
from stack.tcp.state import Event
from stack.wire.tcp import ACK, FIN, RST, SYN, TcpHeader, TcpOptions

if TYPE_CHECKING:
    from stack.tcp.layer import TcpLayer
    from stack.tcp.tcb import Tcb


# final: ``type(conn) is TimeWait`` (the layer's cheap test) then tells a type checker
# that anything else in the connection table is a Tcb.
@final
class TimeWait:
    """One connection in TIME-WAIT: the little state RFC 9293 §3.10.7.4 still needs."""

    __slots__ = (
        "layer", "local", "local_port", "remote", "remote_port",
        "snd_nxt", "rcv_nxt", "rcv_adv", "window", "snd_wnd", "max_snd_wnd",
        "ts_ok", "ts_recent", "ts_recent_age", "ts_offset",
        "offload", "df", "orphaned", "expiry", "hashed", "heap_deadline", "_tcb",
    )

    #: What readers of the connection table (control.py, aio.py) look at.
    state: Literal[TcpState.TIME_WAIT] = TcpState.TIME_WAIT
    splice = None
    listener = None

    def __init__(self, tcb: Tcb, expiry: float) -> None:
        self.layer: TcpLayer = tcb.layer
        self.local = tcb.local
        self.local_port = tcb.local_port
        self.remote = tcb.remote
        self.remote_port = tcb.remote_port
        self.snd_nxt = tcb.snd_nxt
        self.rcv_nxt = tcb.rcv_nxt
        # the window of the ACKs to come: the one the FIN's ACK carries
        self.window = output.select_window(tcb)
        self.rcv_adv = tcb.rcv_adv
        self.snd_wnd = tcb.snd_wnd
        self.max_snd_wnd = tcb.max_snd_wnd
        self.ts_ok = tcb.ts_ok
        self.ts_recent = tcb.ts_recent
        self.ts_recent_age = tcb.ts_recent_age
        self.ts_offset = tcb.ts_offset
        self.offload = tcb.offload
        self.df = not tcb.pmtu_locked
        self.orphaned = tcb.orphaned
        self.expiry = expiry
        self.hashed = True
        self.heap_deadline: float | None = None
        self._tcb = weakref.ref(tcb)

    @property
    def last_ack_sent(self) -> int:
        """RFC 7323 §4.3 Last.ACK.sent: every ACK of TIME-WAIT acknowledges RCV.NXT."""
        return self.rcv_nxt

    @property
    def snd_una(self) -> int:
        """SND.UNA: everything we sent, our FIN included, is acknowledged."""
        return self.snd_nxt

    def tcb(self) -> Tcb | None:
        """The application's Tcb, if anyone still holds it."""
        return self._tcb()

    def deadline(self) -> float | None:
        """When 2*MSL is over (None once the record has ended)."""
        return self.expiry if self.hashed else None

    def end(self, event: Event) -> None:
        """Leave the table; a Tcb still held moves to CLOSED by ``event``."""
        if not self.hashed:
            return
        self.hashed = False
        self.layer.forget(self)
        tcb = self._tcb()
        if tcb is not None and tcb.state is TcpState.TIME_WAIT and not tcb.hashed:
            tcb.apply(event)

    def expire(self, now: float) -> None:
        """The timer heap's call: end at 2*MSL (RFC 9293 §3.10.7.4)."""
        if self.hashed and now >= self.expiry:
            self.end(Event.TIMEOUT)

    # -------------------------------------------------------------- segments
    def send(self, flags: int, now: float) -> None:
        """<SEQ=SND.NXT><ACK=RCV.NXT> with ``flags``, our window and timestamps."""
        opts = TcpOptions()
        if self.ts_ok:
            opts.timestamp = (tsval(self, now), self.ts_recent)
        hdr = TcpHeader(self.local_port, self.remote_port, self.snd_nxt, self.rcv_nxt,
                        flags, self.window, options=opts)
        output.emit(self.layer, self.local, self.remote, hdr, [], 0, self.offload, 0, now,
                    df=self.df)

    def challenge(self, now: float) -> None:
        """RFC 5961 challenge ACK within the layer-wide rate limit (§7)."""
        layer = self.layer
        if layer.challenge_ack_allowed(now):
            layer.count("challenge_ack")
            self.send(ACK, now)
        else:
            layer.count("challenge_ack_ratelimited")

    def info(self) -> dict[str, Any]:
        """A tcp_info-like snapshot (control.py lists it): only the windows are known."""
        return {
            "state": self.state.name, "rtt": None, "rttvar": None, "rto": None,
            "cwnd": 0, "ssthresh": 0, "congestion": None, "snd_wnd": self.snd_wnd,
            "rcv_wnd": seq.sub(self.rcv_adv, self.rcv_nxt), "rcvbuf": 0, "sndbuf": 0,
            "retransmits": 0, "total_retrans": 0, "bytes_acked": 0, "bytes_received": 0,
            "segs_in": 0, "segs_out": 0, "mss": 0, "rcv_mss": 0, "pmtu": 0, "unacked": 0,
            "in_recovery": False,
            "options": {"timestamps": self.ts_ok, "sack": False, "wscale": False,
                        "snd_wscale": 0, "rcv_wscale": 0},
        }

    def __repr__(self) -> str:
        return (f"TimeWait({self.local.hex()}:{self.local_port} -> {self.remote.hex()}:"
                f"{self.remote_port} nxt={self.snd_nxt} rcv_nxt={self.rcv_nxt})")


def segment_arrives(tw: TimeWait, hdr: TcpHeader, payload: memoryview, now: float) -> None:
    """RFC 9293 §3.10.7.4 in TIME-WAIT, the checks of input.synchronized in order."""
    layer = tw.layer
    flags = hdr.flags
    seg_len = len(payload) + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
    ts = hdr.options.timestamp if tw.ts_ok else None
    if ts is not None and not flags & RST and paws_reject(tw, ts[0], now):
        layer.count("paws_reject")
        tw.send(ACK, now)
        return
    if not acceptable(tw, hdr.seq, seg_len):
        layer.count("seq_unacceptable")
        if flags & RST:
            return
        if flags & FIN:
            tw.expiry = now + 2 * layer.config.msl  # a retransmitted FIN restarts 2*MSL
        tw.send(ACK, now)
        return
    if flags & RST:
        if hdr.seq != tw.rcv_nxt:  # RFC 5961 §3.2
            layer.count("rst_in_window")
            tw.challenge(now)
            return
        layer.count("rst_received")
        tw.end(Event.DROP)
        return
    if flags & SYN:  # RFC 5961 §4.2
        layer.count("syn_in_window")
        tw.challenge(now)
        return
    if not flags & ACK:
        layer.count("no_ack_flag")
        return
    if ts is not None:
        update_ts_recent(tw, ts[0], hdr.seq, now)
    if not _ack_acceptable(tw, hdr.ack, now):
        return
    _text_and_fin(tw, hdr, payload, now)


def _ack_acceptable(tw: TimeWait, ack: int, now: float) -> bool:
    """ack.process_ack's checks that apply in TIME-WAIT (SND.UNA == SND.NXT)."""
    if seq.gt(ack, tw.snd_nxt):
        tw.layer.count("ack_unsent")
        tw.send(ACK, now)
        return False
    if seq.lt(ack, seq.add(tw.snd_nxt, -max(tw.max_snd_wnd, 1))):  # RFC 5961 §5.2
        tw.layer.count("ack_too_old")
        tw.challenge(now)
        return False
    return True


def _text_and_fin(tw: TimeWait, hdr: TcpHeader, payload: memoryview, now: float) -> None:
    """Steps seven and eight: no text is taken; a retransmitted FIN is acknowledged."""
    layer = tw.layer
    if payload and seq.gt(seq.add(hdr.seq, len(payload)), tw.rcv_nxt):
        tcb = tw.tcb()
        if tcb.orphaned if tcb is not None else tw.orphaned:
            # Nobody will ever read this: reset, as RFC 2525 §2.17 does for unread data.
            layer.count("data_after_close")
            tw.send(RST | ACK, now)
            tw.end(Event.DROP)
            return
    if payload:
        layer.count("data_after_fin")
    if hdr.flags & FIN and seq.add(hdr.seq, len(payload)) == seq.add(tw.rcv_nxt, -1):
        tw.send(ACK, now)


def reuse(layer: TcpLayer, conn: TimeWait | Tcb, hdr: TcpHeader) -> bool:
    """A new SYN may end TIME-WAIT early (RFC 9293 §3.10.7.4 note, RFC 6191).

    Only a plain SYN whose sequence number (or timestamp, when both ends use
    them) is beyond anything of the old connection, and only for a listener.
    """
    if hdr.flags & (SYN | ACK | RST | FIN) != SYN:
        return False
    listeners = layer.listeners
    if (conn.local, conn.local_port) not in listeners and \
            (b"\0\0\0\0", conn.local_port) not in listeners:
        return False
    ts = hdr.options.timestamp
    if conn.ts_ok and ts is not None:
        newer = seq.gt(ts[0], conn.ts_recent)
    else:
        newer = seq.gt(hdr.seq, conn.rcv_nxt)
    if newer:
        layer.count("time_wait_reused")
        if type(conn) is TimeWait:
            conn.end(Event.DROP)
        else:
            conn.set_closed()
    return newer
