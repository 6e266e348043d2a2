"""The transmission control block (RFC 9293 §3.3.1) and its sans-I/O connection API.

A :class:`Tcb` holds the send and receive sequence variables under their RFC
names, the negotiated options, the timers and three queues:

- ``write_queue``: SkBuffs of up to one TSO super-segment each (one MSS without
  offload), covering ``[snd_una, write_seq)``: unacknowledged data first, then data
  not sent yet (from ``send_head`` on). Buffers are cut (without copying) where a
  window, a SACK block or a loss probe needs it. Our FIN is the FIN flag of the
  last buffer (it takes one sequence number).
- ``recv_queue``: in-order payload waiting for the application.
- ``out_of_order_queue``: payload above ``rcv_nxt``, sorted and non-overlapping.

The application talks to it through :meth:`send`, :meth:`recv`, :meth:`shutdown_write`,
:meth:`close` and :meth:`abort`; the owning TcpLayer feeds it segments and timer
ticks. Events for the application are queued and fired by the layer once the
TCP state is consistent again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from stack import seq
from stack.netfamily import address_str, family_of
from stack.skbuff import SkbQueue, SkBuff
from stack.tcp import output
from stack.tcp.api import RouteInfo, TcpAborted, TcpConfig, TcpState, TcpStateError
from stack.tcp.congestion import CongestionControl, make_congestion_control
from stack.tcp.options import tsval, wscale_for
from stack.tcp.rtt import RttEstimator
from stack.tcp.sack import Scoreboard
from stack.tcp.state import CAN_SEND, Event, InvalidTransition, transition
from stack.wire.tcp import FIN, TcpHeader

if TYPE_CHECKING:
    from stack.tcp.layer import Listener, TcpLayer

log = logging.getLogger("tapsplice.tcp")

EventCallback = Callable[["Tcb", str], None]
InputHook = Callable[["Tcb", TcpHeader, SkBuff, float], bool]


class Tcb:
    """One TCP connection."""

    # Fixed attributes: an idle connection must stay small (no per-instance dict).
    __slots__ = (
        "layer", "config", "state", "local", "local_port", "remote", "remote_port",
        "offload", "now",
        # sequence variables (RFC 9293 §3.3.1)
        "iss", "snd_una", "snd_nxt", "snd_wnd", "snd_wl1", "snd_wl2", "snd_up",
        "snd_wscale", "max_snd_wnd", "write_seq", "irs", "rcv_nxt", "rcv_wnd", "rcv_adv",
        "rcv_up", "last_ack_sent",
        # options
        "adv_mss", "mss", "rcv_mss", "pmtu", "pmtu_locked", "wscale_ok", "sack_ok", "ts_ok", "ts_recent",
        "ts_recent_age", "ts_offset", "rcvbuf", "rcvbuf_limit", "rcv_wscale", "sndbuf",
        # queues
        "write_queue", "send_head", "recv_queue", "rcv_queued", "out_of_order_queue",
        "ooo_bytes", "last_ooo", "ooo_fin",
        # loss recovery
        "rtt", "cc", "_scoreboard", "retransmits", "total_retrans", "dupacks",
        "in_recovery", "recover", "rto_recovery", "last_send", "probes_out",
        "persist_backoff", "rack_xmit", "rack_end", "rack_rtt", "rack_reo_at", "tlp_end",
        # timers
        "timer_rtx", "rtx_kind", "timer_delack", "timer_keepalive", "timer_close",
        "heap_deadline", "ack_now",
        # application
        "on_event", "events", "eof_received", "error", "soft_error", "listener",
        "orphaned", "user_shutdown", "passive", "hashed", "in_syn_queue", "keepalive",
        "keepalive_probes", "nodelay", "syn_time", "syn_retried", "rcv_rtt", "input_hook",
        "bytes_acked", "bytes_received", "segs_in", "segs_out", "autotune_copied",
        "autotune_start", "last_recv",
        # set by the splice layer (splice/splicer.py)
        "splice", "spliceable",
        # a TIME-WAIT record (timewait.py) refers to its TCB weakly
        "__weakref__",
    )

    def __init__(self, layer: TcpLayer, local: bytes, local_port: int, remote: bytes,
                 remote_port: int, route: RouteInfo, now: float) -> None:
        cfg: TcpConfig = layer.config
        self.layer = layer
        self.config = cfg
        self.state = TcpState.CLOSED
        self.local = local
        self.local_port = local_port
        self.remote = remote
        self.remote_port = remote_port
        self.offload = route.offload
        self.now = now
        self._init_sequence_variables()
        self._init_options(route, now)
        self._init_queues()
        self._init_recovery(now)
        self._init_timers()
        self._init_application(now)

    def _init_sequence_variables(self) -> None:
        # -- send sequence variables (RFC 9293 §3.3.1) --
        self.iss = 0
        self.snd_una = 0
        self.snd_nxt = 0
        self.snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = 0
        self.snd_up = 0
        self.snd_wscale = 0
        self.max_snd_wnd = 0
        self.write_seq = 0          # sequence number of the next byte the application queues
        # -- receive sequence variables --
        self.irs = 0
        self.rcv_nxt = 0
        self.rcv_wnd = 0
        self.rcv_adv = 0            # right edge of the window we last advertised
        self.rcv_up = 0
        self.last_ack_sent = 0      # RFC 7323 §4.3 Last.ACK.sent

    def _init_options(self, route: RouteInfo, now: float) -> None:
        cfg = self.config
        self.adv_mss = family_of(self.local).tcp_mss(route.mtu)
        self.mss = min(self.adv_mss, cfg.mss_default)
        self.rcv_mss = self.mss     # estimate of the peer's segment size (delayed ACK)
        self.pmtu = route.mtu       # path MTU: the route's until ICMP says less (RFC 1191)
        self.pmtu_locked = False    # raised to PMTU_MIN: sent without DF (output.py)
        self.wscale_ok = False
        self.sack_ok = False
        self.ts_ok = False
        self.ts_recent = 0
        self.ts_recent_age = now
        self.ts_offset = self.layer.ts_offset_for(self.local, self.remote)
        self.rcvbuf = cfg.rcvbuf_initial if cfg.rcvbuf_autotune else cfg.rcvbuf
        self.rcvbuf_limit = cfg.rcvbuf_max if cfg.rcvbuf_autotune else cfg.rcvbuf
        self.rcv_wscale = wscale_for(self.rcvbuf_limit) if cfg.window_scaling else 0
        self.sndbuf = cfg.sndbuf

    def _init_queues(self) -> None:
        self.write_queue = SkbQueue()
        self.send_head: SkBuff | None = None   # first buffer not sent yet
        self.recv_queue = SkbQueue()
        self.rcv_queued = 0                    # bytes in recv_queue
        self.out_of_order_queue = SkbQueue()
        self.ooo_bytes = 0
        self.last_ooo: tuple[int, int] | None = None  # latest out-of-order segment (SACK)
        self.ooo_fin: int | None = None        # sequence number of an out-of-order FIN

    def _init_recovery(self, now: float) -> None:
        cfg = self.config
        self.rtt = RttEstimator(cfg.min_rto, cfg.max_rto, cfg.initial_rto)
        self.cc: CongestionControl = make_congestion_control(cfg.congestion, self.mss, now)
        self._scoreboard: Scoreboard | None = None  # made on the first SACK block
        self.retransmits = 0        # consecutive RTO expirations of the same data
        self.total_retrans = 0
        self.dupacks = 0
        self.in_recovery = False
        self.recover = 0            # RFC 6582 "recover": snd_nxt when loss was detected
        self.rto_recovery = False   # retransmitting everything after an RTO
        self.last_send = now        # time of the last data transmission (idle restart)
        self.probes_out = 0         # zero-window probes without any ACK in between
        self.persist_backoff = 0    # zero-window probes since the window closed
        # RACK (RFC 8985 §6.1): send time and end of the most recently sent data
        # known to have been delivered (SACKed or cumulatively acknowledged).
        self.rack_xmit = 0.0
        self.rack_end = 0
        self.rack_rtt = 0.0
        self.rack_reo_at: float | None = None  # RACK reordering timer (RFC 8985 §6.3)
        self.tlp_end: int | None = None  # snd_nxt after a loss probe, until it is acked

    def _init_timers(self) -> None:
        # absolute deadlines or None
        self.timer_rtx: float | None = None    # retransmission (or persist, see rtx_kind)
        self.rtx_kind = "rtx"
        self.timer_delack: float | None = None
        self.timer_keepalive: float | None = None
        self.timer_close: float | None = None  # TIME_WAIT 2*MSL or FIN_WAIT_2 timeout
        self.heap_deadline: float | None = None  # owned by the layer's timer heap
        # -- delayed ACK --
        self.ack_now = False        # an ACK is due at once (out-of-order data, FIN, hole filled)

    def _init_application(self, now: float) -> None:
        cfg = self.config
        self.on_event: EventCallback | None = None
        self.events: list[str] = []
        self.eof_received = False
        self.error: Exception | None = None
        self.soft_error: Exception | None = None
        self.listener: Listener | None = None
        self.orphaned = False       # close() was called: nobody will read any more
        self.user_shutdown = False  # shutdown_write() or close() was called
        self.passive = False
        self.hashed = False
        self.in_syn_queue = False
        self.keepalive = cfg.keepalive
        self.keepalive_probes = 0
        self.nodelay = cfg.nodelay
        self.syn_time = now
        self.syn_retried = False    # SYN sent again at once after a stale ACK (input.py)
        self.rcv_rtt = 0.0          # receiver-side RTT estimate from timestamps (autotuning)
        #: Optional hook for the splice layer: called with each arriving segment before
        #: TCP processing; returning True means the segment was consumed.
        self.input_hook: InputHook | None = None
        # -- statistics --
        self.bytes_acked = 0
        self.bytes_received = 0
        self.segs_in = 0
        self.segs_out = 0
        self.autotune_copied = 0
        self.autotune_start = now
        self.last_recv = now
        self.splice: Any = None
        self.spliceable = False

    @property
    def scoreboard(self) -> Scoreboard:
        """The sender's SACK scoreboard, created when first needed (idle connections
        never need one)."""
        sb = self._scoreboard
        if sb is None:
            sb = self._scoreboard = Scoreboard()
        return sb

    # ------------------------------------------------------------------ events
    def post(self, event: str) -> None:
        """Queue ``event`` for the application (fired by the layer, never re-entrantly)."""
        if event in self.events:
            return
        self.events.append(event)
        self.layer.note_events(self)

    def fail(self, err: Exception) -> None:
        """Record a fatal error, drop everything and move to CLOSED."""
        if self.error is None:
            self.error = err
            self.post("error")
        self.set_closed()

    def set_closed(self) -> None:
        """Enter CLOSED (Event.DROP): free queues, stop timers, leave the connection table."""
        if self.state is TcpState.CLOSED:
            if self.hashed:
                self._release()
            return
        self.apply(Event.DROP)

    def _release(self) -> None:
        self.write_queue.purge()
        self.out_of_order_queue.purge()
        self.ooo_bytes = 0
        self.send_head = None
        self.timer_rtx = self.timer_delack = self.timer_keepalive = self.timer_close = None
        self.layer.unhash(self)
        self.post("closed")

    def apply(self, event: Event) -> None:
        """Move along the state table (stack/tcp/state.py), the one place that assigns
        ``state``. A pair the table does not list closes the connection with the
        error recorded, then raises it (state.InvalidTransition)."""
        try:
            new = transition(self.state, event)
        except InvalidTransition as e:
            self.fail(e)
            raise
        if log.isEnabledFor(logging.DEBUG):  # --log-level debug: one line per change
            log.debug("tcp %s:%d<->%s:%d %s -%s-> %s", address_str(self.local),
                      self.local_port, address_str(self.remote), self.remote_port,
                      self.state.name, event.name.lower(), new.name)
        self.state = new
        if new is TcpState.CLOSED:
            self._release()

    # --------------------------------------------------------- application API
    @property
    def local_address(self) -> tuple[bytes, int]:
        """(address, port) of our end."""
        return self.local, self.local_port

    @property
    def remote_address(self) -> tuple[bytes, int]:
        """(address, port) of the peer."""
        return self.remote, self.remote_port

    def send_space(self) -> int:
        """Bytes that :meth:`send` would accept now."""
        if self.state not in CAN_SEND or self.user_shutdown:
            return 0
        return max(0, self.sndbuf - seq.sub(self.write_seq, self.snd_una))

    def send(self, data: bytes | bytearray | memoryview, now: float) -> int:
        """Queue up to :meth:`send_space` bytes of ``data``; return how many were taken.

        Raises the connection's error if it failed, TcpStateError after a shutdown.
        """
        self.now = now
        if self.error is not None:
            raise self.error
        if self.state not in CAN_SEND or self.user_shutdown:
            raise TcpStateError(f"cannot send in state {self.state.name}")
        n = min(len(data), self.send_space())
        if n <= 0:
            return 0
        output.queue_data(self, memoryview(data)[:n])
        if self.layer.batching:
            # Called back from an event inside an input batch: the batch's output
            # pass sends it, together with what the batch's ACKs allow.
            self.layer.defer_output(self)
        elif self.state not in (TcpState.SYN_SENT, TcpState.SYN_RECEIVED):
            output.push(self, now)
        self.layer.after_call(self)
        return n

    def recv(self, max: int = 1 << 30) -> bytes:  # noqa: A002 - name fixed by the API
        """Take up to ``max`` in-order bytes (b"" when none); may send a window update."""
        if max <= 0 or not self.recv_queue:
            return b""
        parts: list[bytes] = []
        got = 0
        q = self.recv_queue
        while q.first is not None and got < max:
            skb = q.first
            n = len(skb)
            take = min(n, max - got)
            buf = skb.buf
            if take == n and type(buf) is bytes and skb.data == 0 and n == len(buf):
                parts.append(buf)  # the buffer itself: no copy (reassembly._held)
                skb.pull(take)
            else:
                parts.append(bytes(skb.pull(take)))
            got += take
            if not len(skb):
                q.pop()
        out = parts[0] if len(parts) == 1 else b"".join(parts)
        self.rcv_queued -= got
        self.autotune_copied += got
        if self.state in CAN_SEND or self.state in (TcpState.FIN_WAIT_1, TcpState.FIN_WAIT_2):
            output.autotune_rcvbuf(self, self.now)
            output.maybe_window_update(self, self.now)
            self.layer.after_call(self)
        return out

    def recv_available(self) -> int:
        """Bytes that :meth:`recv` can return right now."""
        return self.rcv_queued

    def shutdown_write(self, now: float) -> None:
        """Send a FIN after all queued data (half-close, RFC 9293 §3.10.4)."""
        self.now = now
        if self.user_shutdown or self.state is TcpState.CLOSED:
            return
        self.user_shutdown = True
        if self.state is TcpState.SYN_SENT:
            # Nothing was synchronised: the FIN goes out once established.
            self.layer.after_call(self)
            return
        self.queue_fin(now)
        self.layer.after_call(self)

    def queue_fin(self, now: float) -> None:
        """Append our FIN to the write queue and move along the state table."""
        output.queue_fin(self)
        self.apply(Event.CLOSE)
        output.push(self, now)

    def close(self, now: float) -> None:
        """Release the connection: FIN after queued data, or RST if unread data remains.

        RFC 9293 §3.10.4; the reset on unread data follows RFC 2525 §2.17.
        """
        self.now = now
        self.orphaned = True
        self.on_event = None
        if self.state is TcpState.CLOSED:
            self.layer.unhash(self)
            return
        if self.rcv_queued > 0 or self.state in (TcpState.SYN_SENT, TcpState.LISTEN):
            self.abort(now)
            return
        self.shutdown_write(now)
        if self.state is TcpState.FIN_WAIT_2 and self.timer_close is None:
            # Our FIN was acknowledged before the close: bound the wait for the peer's.
            self.timer_close = now + self.config.fin_timeout
        self.layer.after_call(self)

    def abort(self, now: float) -> None:
        """Reset the connection at once (RFC 9293 §3.10.5)."""
        self.now = now
        if self.state in (TcpState.SYN_RECEIVED, TcpState.ESTABLISHED, TcpState.FIN_WAIT_1,
                          TcpState.FIN_WAIT_2, TcpState.CLOSE_WAIT):
            output.send_rst(self, self.snd_nxt, now)
        if self.error is None:
            self.error = TcpAborted("connection aborted")
        self.set_closed()
        self.layer.after_call(self)

    def set_keepalive(self, on: bool, now: float) -> None:
        """Enable or disable keepalive probes on this connection (RFC 9293 §3.8.4)."""
        from stack.tcp.timers import arm_keepalive
        self.keepalive = on
        arm_keepalive(self, now)
        self.layer.after_call(self)

    def set_nodelay(self, on: bool, now: float) -> None:
        """Disable (True) or enable Nagle's algorithm; pending data may leave at once."""
        self.now = now
        self.nodelay = on
        if on:
            output.push(self, now)
        self.layer.after_call(self)

    def info(self) -> dict[str, Any]:
        """A snapshot like Linux's tcp_info."""
        return {
            "state": self.state.name,
            "rtt": self.rtt.srtt,
            "rttvar": self.rtt.rttvar,
            "rto": self.rtt.rto,
            "cwnd": self.cc.cwnd,
            "ssthresh": self.cc.ssthresh,
            "congestion": self.cc.name,
            "snd_wnd": self.snd_wnd,
            "rcv_wnd": seq.sub(self.rcv_adv, self.rcv_nxt),
            "rcvbuf": self.rcvbuf,
            "sndbuf": self.sndbuf,
            "retransmits": self.retransmits,
            "total_retrans": self.total_retrans,
            "bytes_acked": self.bytes_acked,
            "bytes_received": self.bytes_received,
            "segs_in": self.segs_in,
            "segs_out": self.segs_out,
            "mss": self.mss,
            "rcv_mss": self.rcv_mss,
            "pmtu": self.pmtu,
            "unacked": seq.sub(self.snd_nxt, self.snd_una),
            "in_recovery": self.in_recovery,
            "options": {
                "timestamps": self.ts_ok, "sack": self.sack_ok, "wscale": self.wscale_ok,
                "snd_wscale": self.snd_wscale, "rcv_wscale": self.rcv_wscale,
            },
        }

    # ------------------------------------------------------------------ timers
    def deadline(self) -> float | None:
        """The earliest armed timer of this connection."""
        best: float | None = None
        for t in (self.timer_rtx, self.timer_delack, self.timer_keepalive, self.timer_close):
            if t is not None and (best is None or t < best):
                best = t
        return best

    def rcv_rtt_sample(self, tsecr: int, now: float) -> None:
        """Receiver RTT from an echoed timestamp (RFC 7323 §4), for buffer autotuning."""
        if not tsecr:
            return
        rtt = seq.sub(tsval(self, now), tsecr) / 1000.0
        if 0 <= rtt < 60:
            self.rcv_rtt = rtt if not self.rcv_rtt else 0.875 * self.rcv_rtt + 0.125 * rtt

    def has_fin_queued(self) -> bool:
        """Whether our FIN is in the write queue (sent or not)."""
        last = self.write_queue.last
        return last is not None and bool(last.tcp_flags & FIN)

    def __repr__(self) -> str:
        return (f"Tcb({self.state.name} {self.local.hex()}:{self.local_port} -> "
                f"{self.remote.hex()}:{self.remote_port} una={self.snd_una} "
                f"nxt={self.snd_nxt} rcv_nxt={self.rcv_nxt})")
