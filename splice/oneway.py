"""One-way splice with a byte budget (docs/splice.md §7).

One direction of two established connections is spliced for ``budget`` bytes: what
the *source* connection's peer sends (an origin's response body) leaves on the
*sink* connection (to the client) without the application touching it; then both
connections return to the application, which goes on using them (reads the client's
next request on a kept-alive connection). The other direction stays the
application's throughout.

It runs in two phases.

COPYING. The sink may still hold the application's own unacknowledged data (the
response head it just wrote). Until its peer has acknowledged all of it, the stack
moves what arrives on the source into the sink itself (TCP receive queue to TCP send
queue: no trip through the application), so nothing waits for that
acknowledgement — a client delaying its ACK of a short head costs nothing.

RELAYING. Once the sink's own data is acknowledged (and the source holds no
out-of-order data), the source's segments are rewritten in place and sent out of
the sink, as in a symmetric splice (splice/relay.py), up to the budget's end: a
segment crossing it is cut there, a FIN is kept back for the source TCB. The
sink's peer's acknowledgements are relayed back to the source's peer (mapped), so
flow control and loss recovery stay end to end; text or FIN it sends meanwhile is
held and given to the sink TCB afterwards. The two TCBs are silent while relaying.

Hand-back. When the sink's peer acknowledges the budget's last byte, the sink TCB
takes over with its send sequence at the end of the relayed range, the source TCB
with its receive sequence there; both TCBs move their timestamp clock past any
relayed TSval (RFC 7323 §5 PAWS at the peers: one clock per connection, never going
back). A source FIN held back is delivered to the source TCB then.

A source that ends early (FIN or RST before the budget) or a sink peer that resets
ends the splice with outcome "short" or "reset": the sink's send sequence is put at
the end of what was relayed, so the application's reset is exact.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from splice.mapping import TS_MAP, ConnSnapshot, DirectionMap, make_maps, snapshot_of
from splice.pair import QueuedFrame, SpliceError
from splice.relay import RelayError, RelayResult, flow_frame_ip, flow_tcp_valid, relay_rewrite
from splice.tap import Tap
from stack import seq
from stack.core import flow_key
from stack.skbuff import SkBuff
from stack.tcp import lend
from stack.tcp.api import TcpState
from stack.wire import checksum as cks
from stack.wire.ethernet import ETH_HLEN
from stack.wire.fields import (
    IP_CSUM,
    IP_MIN_HLEN,
    IP_TOTLEN,
    TCP_ACK,
    TCP_CSUM,
    TCP_DOFF,
    TCP_FLAGS,
    TCP_SEQ,
    U16,
    U32,
)
from stack.wire.ipv4 import IPPROTO_TCP
from stack.wire.tcp import ACK, FIN, RST, SYN, TcpHeader, tcp_checksum
from stack.wire.vnet import VIRTIO_NET_HDR_F_NEEDS_CSUM, restore_vnet, save_vnet

if TYPE_CHECKING:
    from splice.splicer import Splicer
    from stack.tcp.tcb import Tcb

_L = U32
_H = U16
#: Relayed TSvals start just past the TCBs' own clocks: unlike a symmetric splice
#: (splicer.py's 10 s headroom), neither TCB sends anything while relaying.
TS_HEADROOM_MS = 1
#: Room for the time a TSval spent on the way to us, when bounding later ones.
TS_TRANSIT_MS = 1_000
#: When the newest relayed TSval is unknown (a splice that ended early), the TCBs'
#: clocks move this far at the hand-back instead.
TS_HANDBACK_MS = 11_000
#: Text the sink's peer sends while relaying is kept for the sink TCB up to this much.
HELD_LIMIT = 256 << 10
#: Full segments copied before relaying (a peer acknowledges every second one at once).
COPY_SEGMENTS = 4
#: States in which a sink connection can carry a spliced direction.
SINK_STATES = (TcpState.ESTABLISHED, TcpState.CLOSE_WAIT)


class Phase(enum.Enum):
    """Where a one-way splice is."""

    COPYING = "copying"
    RELAYING = "relaying"
    DONE = "done"


@dataclass(eq=False, slots=True)
class OneWay:
    """One direction spliced for a byte budget."""

    source: Tcb                     # the connection the bytes arrive on
    sink: Tcb                       # the connection they leave on
    budget: int | None              # bytes still to move; None: up to the source's FIN
    started: float
    phase: Phase = Phase.COPYING
    tap: Tap | None = None
    counters: Counter = field(default_factory=Counter)
    #: Once relaying: the relay's range, in the source's and the sink's spaces.
    src_start: int = 0
    src_end: int | None = None      # None when splicing up to the FIN
    sink_start: int = 0
    sink_end: int | None = None
    fin_at: int | None = None       # the source's FIN, relayed (source space)
    src_hi: int = 0                 # end of the highest source byte relayed
    sink_acked: int = 0             # the sink's peer's highest acknowledgement
    to_sink: DirectionMap | None = None
    to_source: DirectionMap | None = None
    #: (header, text) the sink's peer sent while relaying, for the sink TCB.
    held: list[tuple[TcpHeader, bytes]] = field(default_factory=list)
    held_bytes: int = 0
    source_fin: TcpHeader | None = None    # a FIN kept back for the source TCB
    #: The newest TSval seen from each peer while relaying, and when (the peers' clocks
    #: tick at most once a millisecond, RFC 7323 §5.4: a bound on later ones).
    source_ts: tuple[int, float] | None = None
    sink_ts: tuple[int, float] | None = None
    outcome: str | None = None             # "done", "short", "reset", "aborted"
    on_done: Callable[[OneWay], None] | None = None
    #: Bumped whenever new data moves or is acknowledged (for idle timeouts: probes
    #: and retransmissions into a closed window are not progress).
    progress: int = 0
    #: COPYING: bytes copied before the source's text waits for the relay (enough for
    #: the sink's peer to acknowledge at once: it does so for two full segments).
    copy_cap: int = 0
    #: Source frames waiting for the relay to start.
    waiting: list[QueuedFrame] = field(default_factory=list)
    waiting_bytes: int = 0
    #: The sink's snd_nxt when the last ACK probe was sent (one per flight).
    probed: int | None = None
    #: With a tap, an asyncio.StreamReader fed with its copy (set by splice/aio.py).
    tap_reader: object = None

    def info(self) -> dict:
        """A summary for statistics."""
        return {"phase": self.phase.value, "budget": self.budget,
                "outcome": self.outcome, "counters": dict(self.counters)}



def snapshot(tcb: Tcb, snd_nxt: int, rcv_nxt: int, now: float) -> ConnSnapshot:
    """A connection frozen for the relay's maps, with its base points; relayed TSvals
    start just past its own clock."""
    return snapshot_of(tcb, snd_nxt, rcv_nxt,
                       seq.add(lend.ts_clock(tcb, now), TS_HEADROOM_MS))


def cut(skb: SkBuff, keep: int, src: bytes, dst: bytes, *, clear_fin: bool) -> None:
    """Shorten the segment in ``skb`` (data at its TCP header, network_off at IP) to
    ``keep`` bytes of text, optionally clearing FIN; both checksums are recomputed
    (a header and what remains: once per response, never on the relay's hot path)."""
    buf = skb.buf
    ip = skb.network_off
    t = skb.data
    ihl = t - ip
    thl = (buf[t + TCP_DOFF] >> 4) << 2
    _H.pack_into(buf, ip + IP_TOTLEN, ihl + thl + keep)
    buf[ip + IP_CSUM] = buf[ip + IP_CSUM + 1] = 0
    _H.pack_into(buf, ip + IP_CSUM, cks.checksum(memoryview(buf)[ip:ip + ihl]))
    skb.tail = t + thl + keep
    if clear_fin:
        buf[t + TCP_FLAGS] &= ~FIN & 0xFF
    if skb.vnet_flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
        _H.pack_into(buf, t + TCP_CSUM,
                     cks.pseudo_header_sum(src, dst, IPPROTO_TCP, thl + keep))
    else:
        _H.pack_into(buf, t + TCP_CSUM, tcp_checksum(src, dst, memoryview(buf)[t:skb.tail]))
    if skb.gso_type and keep <= skb.gso_size:
        skb.gso_type = skb.gso_size = skb.hdr_len = 0


def _clear_fin(skb: SkBuff) -> None:
    """Clear FIN in place, keeping the checksum right."""
    buf = skb.buf
    t = skb.data
    old = _H.unpack_from(buf, t + TCP_DOFF)[0]
    buf[t + TCP_FLAGS] &= ~FIN & 0xFF
    if not skb.vnet_flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
        csum = _H.unpack_from(buf, t + TCP_CSUM)[0]
        new = _H.unpack_from(buf, t + TCP_DOFF)[0]
        _H.pack_into(buf, t + TCP_CSUM, cks.update16(csum, old, new))


class OneWaySplicer:
    """The one-way splices of a :class:`~splice.splicer.Splicer`'s stack."""

    def __init__(self, splicer: Splicer) -> None:
        self.splicer = splicer
        self.stack = splicer.stack
        self.tcp = splicer.tcp
        self.counters = splicer.counters
        self.by_tcb: dict[int, OneWay] = {}

    # -- starting -------------------------------------------------------------------
    def start(self, source: Tcb, sink: Tcb, budget: int | None, now: float, *,
              seam: bytes = b"", tap: Tap | None = None) -> OneWay:
        """Splice ``source`` -> ``sink`` for ``budget`` bytes, or with ``budget`` None up
        to and including the source's FIN (the sink's sending side ends with it).
        ``seam`` is source text the application took but did not use: it goes first
        and counts in the budget. ``tap`` gets a copy of the bytes, in order."""
        for tcb in (source, sink):
            if id(tcb) in self.by_tcb or id(tcb) in self.splicer.sides:
                raise SpliceError("the connection is already part of a splice")
        if source is sink:
            raise SpliceError("source and sink are the same connection")
        if source.state not in (TcpState.ESTABLISHED, TcpState.CLOSE_WAIT,
                                TcpState.FIN_WAIT_1, TcpState.FIN_WAIT_2):
            raise SpliceError(f"the source connection is {source.state.name}")
        if sink.state not in SINK_STATES:
            raise SpliceError(f"the sink connection is {sink.state.name}, not "
                              "ESTABLISHED or CLOSE_WAIT")
        if sink.has_fin_queued():
            raise SpliceError("the sink connection has been shut down for writing")
        if budget is not None and (budget < 0 or len(seam) > budget):
            raise SpliceError(f"budget {budget} must be >= 0 and cover the "
                              f"{len(seam)} seam bytes")
        ow = OneWay(source, sink, budget, now, tap=tap, copy_cap=COPY_SEGMENTS * sink.mss)
        if tap is not None:
            tap.next_seq = 0
            tap.fin_seq = None
        for tcb in (source, sink):
            self.by_tcb[id(tcb)] = ow
            lend.lend(tcb, self._input)
        self.counters["oneway_started"] += 1
        if seam:
            self._copy(ow, seam, now)
        self._pull(ow, now)
        self._check(ow, now)
        return ow

    def abort(self, ow: OneWay, now: float) -> None:
        """Give up (the application's timeout): both connections are reset."""
        if ow.phase is Phase.DONE:
            return
        self._finish(ow, "aborted", now)
        for tcb in (ow.source, ow.sink):
            if tcb.state is not TcpState.CLOSED:
                tcb.abort(now)
        self.tcp.flush_events()

    # -- input ----------------------------------------------------------------------
    def _input(self, tcb: Tcb, hdr: TcpHeader, skb: SkBuff, now: float) -> bool:
        ow = self.by_tcb.get(id(tcb))
        if ow is None:
            lend.release(tcb)
            return False
        if ow.phase is Phase.COPYING:
            if (tcb is ow.source and ow.counters["copied_bytes"] >= ow.copy_cap
                    and not hdr.flags & (SYN | RST) and len(skb) > hdr.header_len
                    and not tcb.out_of_order_queue):
                # Enough was copied for the sink's peer to acknowledge at once: the
                # source's text waits (as a frame) for the relay to start.
                lend.take_ack(tcb, hdr, now)
                self._hold_source(ow, skb, hdr)
            else:
                lend.take_segment(tcb, hdr, skb.view()[hdr.header_len:], now)
                if tcb is ow.source:
                    self._pull(ow, now)
            self._check(ow, now)
            return True
        if tcb is ow.source:
            self._from_source(ow, hdr, skb, now)
        else:
            self._from_sink(ow, hdr, skb, now)
        return True

    # -- COPYING --------------------------------------------------------------------
    def _copy(self, ow: OneWay, data: bytes, now: float) -> None:
        from splice.splicer import Splicer
        Splicer._force_send(ow.sink, data, now)
        if ow.budget is not None:
            ow.budget -= len(data)
        ow.progress += 1
        ow.counters["copied_bytes"] += len(data)
        self.counters["seam_bytes"] += len(data)
        if ow.tap is not None:
            ow.tap.feed(ow.tap.next_seq, data)
        self.tcp.schedule(ow.sink)

    def _pull(self, ow: OneWay, now: float) -> None:
        """Move what the source TCB holds in order, up to the budget, to the sink."""
        n = ow.source.recv_available()
        if ow.budget is not None:
            n = min(n, ow.budget)
        if n > 0:
            self._copy(ow, ow.source.recv(n), now)
            self.tcp.schedule(ow.source)

    def _hold_source(self, ow: OneWay, skb: SkBuff, hdr: TcpHeader) -> None:
        start = skb.network_off - ETH_HLEN
        if ow.waiting_bytes + skb.tail - start > self.splicer.queue_limit:
            ow.counters["drop.queue_full"] += 1
            return
        frame = bytes(skb.buf[start:skb.tail])
        ow.waiting.append(QueuedFrame(frame, save_vnet(skb), skb.data - start,
                                      len(skb) - hdr.header_len))
        ow.waiting_bytes += len(frame)
        self.counters["seam_bytes"] += len(skb) - hdr.header_len

    def _check(self, ow: OneWay, now: float) -> None:
        src, sink = ow.source, ow.sink
        if ow.phase is not Phase.COPYING:
            return
        if ow.budget == 0:
            self._finish(ow, "done", now)
        elif src.state is TcpState.CLOSED or sink.state is TcpState.CLOSED:
            self._finish(ow, "reset", now)
        elif src.eof_received and not src.recv_available():
            if ow.budget is None:        # all of it copied: the sink TCB sends the FIN
                self._finish(ow, "done", now)
                sink.shutdown_write(now)
                self.tcp.schedule(sink)
            else:
                self._finish(ow, "short", now)
        elif (sink.snd_una == sink.write_seq and sink.state in SINK_STATES
              and src.state is TcpState.ESTABLISHED and src.snd_una == src.write_seq
              and not src.out_of_order_queue and not src.recv_available()):
            self._start_relaying(ow, now)
        elif (ow.counters["copied_bytes"] >= ow.copy_cap and self._sent_all(sink, now)
              and sink.snd_una != sink.write_seq and ow.probed != sink.snd_nxt
              and sink.state in SINK_STATES):
            # All copied, all sent, only the acknowledgement missing — and the peer
            # may hold it back (a delayed ACK of a short last segment: 40 ms and
            # more). The last byte sent once more follows the data; a duplicate is
            # acknowledged at once (RFC 5681 §4.2 asks it of out-of-order and
            # duplicate data; Linux enters quick-ACK mode), and that ACK covers all.
            # (A bare segment below the window would do, but Linux rate-limits its
            # answers to those.)
            probed_at = sink.snd_nxt
            if lend.probe_for_ack(sink, now):
                ow.probed = probed_at
                ow.counters["ack_probes"] += 1

    @staticmethod
    def _sent_all(sink: Tcb, now: float) -> bool:
        """Whether everything queued on the sink has left (sent now if it may: inside
        an input batch TCP would only send at the batch's end, after our probe)."""
        return lend.send_queued(sink, now)

    def _start_relaying(self, ow: OneWay, now: float) -> None:
        src, sink = ow.source, ow.sink
        for tcb in (src, sink):
            lend.acknowledge(tcb, now)  # before the relayed clock takes over
            lend.silence(tcb)
        ow.src_start = ow.src_hi = src.rcv_nxt
        ow.sink_start = ow.sink_acked = sink.snd_nxt
        if ow.budget is not None:
            ow.src_end = seq.add(src.rcv_nxt, ow.budget)
            ow.sink_end = seq.add(sink.snd_nxt, ow.budget)
        ow.to_source, ow.to_sink = make_maps(
            snapshot(sink, sink.snd_nxt, sink.rcv_nxt, now),
            snapshot(src, src.snd_nxt, src.rcv_nxt, now))
        if ow.tap is not None:
            # The tap continues in the source's sequence space; it ends with the budget.
            ow.tap.next_seq = src.rcv_nxt
            ow.tap.fin_seq = ow.src_end    # None: it ends at the FIN it sees
        ow.phase = Phase.RELAYING
        self.stack.flows[flow_key(src)] = functools.partial(self._flow, ow)
        self.stack.flows[flow_key(sink)] = functools.partial(self._flow_ack, ow)
        self.counters["oneway_relaying"] += 1
        waiting, ow.waiting, ow.waiting_bytes = ow.waiting, [], 0
        for q in waiting:
            if ow.phase is not Phase.RELAYING:
                break
            skb = SkBuff.from_bytes(q.frame, headroom=128)
            restore_vnet(skb, q.vnet)
            skb.network_off = skb.data + ETH_HLEN
            skb.data += q.tcp_off
            self._from_source(ow, TcpHeader.parse(skb.view()), skb, now)

    # -- RELAYING: the source's segments ---------------------------------------------
    def _flow(self, ow: OneWay, skb: SkBuff, now: float) -> bool:
        """Straight from the device: a source segment wholly inside the budget, with
        no SYN, FIN or RST. Anything else goes the normal way (False)."""
        ip = flow_frame_ip(skb)
        if ip < 0:
            return False
        buf = skb.buf
        t = ip + IP_MIN_HLEN
        if buf[t + TCP_FLAGS] & (SYN | FIN | RST):
            return False
        thl = (buf[t + TCP_DOFF] >> 4) << 2
        text = skb.tail - t - thl
        if thl < 20 or text < 0:
            return False
        end = (_L.unpack_from(buf, t + TCP_SEQ)[0] + text) & 0xFFFFFFFF
        src = ow.source
        if (ow.src_end is not None and not seq.lt(end, ow.src_end)
                or not flow_tcp_valid(skb, t, src.remote, src.local)):
            return False
        if text:
            skb.network_off = ip
            skb.data = t
            self._relay(ow, skb, end, now)
        else:
            ow.counters["source_acks_absorbed"] += 1
        return True

    def _flow_ack(self, ow: OneWay, skb: SkBuff, now: float) -> bool:
        """Straight from the device: a pure ACK of the sink's peer inside the relayed
        range and short of the budget's end, relayed to the source's peer. Anything
        else (text, flags, the final ACK) goes the normal way (False)."""
        ip = flow_frame_ip(skb)
        if ip < 0:
            return False
        buf = skb.buf
        t = ip + IP_MIN_HLEN
        if buf[t + TCP_FLAGS] & (SYN | FIN | RST | ACK) != ACK or skb.tail != t + (
                (buf[t + TCP_DOFF] >> 4) << 2):
            return False
        ack = _L.unpack_from(buf, t + TCP_ACK)[0]
        relayed_end = (ow.sink_start + ow.src_hi - ow.src_start) & 0xFFFFFFFF
        sink = ow.sink
        if not (seq.ge(ack, ow.sink_start) and seq.le(ack, relayed_end)
                and (ow.sink_end is None or seq.lt(ack, ow.sink_end))
                and flow_tcp_valid(skb, t, sink.remote, sink.local)):
            return False
        if seq.gt(ack, ow.sink_acked):
            ow.sink_acked = ack
            ow.progress += 1
        if self._send(ow, skb, ow.to_source, ow.source, now) is not None:
            ow.counters["acks_relayed"] += 1
        return True

    def _from_source(self, ow: OneWay, hdr: TcpHeader, skb: SkBuff, now: float) -> None:
        src = ow.source
        flags = hdr.flags
        if flags & RST:
            lend.take_segment(src, hdr, skb.view()[hdr.header_len:], now)
            if src.state is TcpState.CLOSED:
                self._finish(ow, "reset", now)
            return
        if flags & SYN:
            ow.counters["drop.syn"] += 1
            return
        text = len(skb) - hdr.header_len
        end = seq.add(hdr.seq, text)
        ts = hdr.options.timestamp
        if ts is not None and (ow.source_ts is None or seq.gt(ts[0], ow.source_ts[0])):
            ow.source_ts = (ts[0], now)
        if ow.src_end is None:
            # Up to the FIN: it is relayed too, and ends the source's direction.
            if flags & FIN:
                ow.source_fin = dataclasses.replace(hdr, seq=end, flags=flags & ~SYN)
                ow.fin_at = end
            if text or flags & FIN:
                self._relay(ow, skb, end, now, fin=bool(flags & FIN))
            else:
                ow.counters["source_acks_absorbed"] += 1
            return
        if flags & FIN:
            ow.source_fin = dataclasses.replace(hdr, seq=end, flags=flags & ~SYN)
        if seq.gt(end, ow.src_end):
            keep = seq.sub(ow.src_end, hdr.seq)
            if keep <= 0:
                ow.counters["drop.beyond_budget"] += 1
                self.counters["oneway_beyond_budget"] += 1
                return
            ow.counters["cut_at_budget"] += 1
            cut(skb, keep, src.remote, src.local, clear_fin=bool(flags & FIN))
            text, end = keep, ow.src_end
        elif flags & FIN:
            _clear_fin(skb)
        if text:
            self._relay(ow, skb, end, now)
        else:
            ow.counters["source_acks_absorbed"] += 1
        if flags & FIN and seq.lt(end, ow.src_end) and ow.phase is Phase.RELAYING:
            self._finish(ow, "short", now)  # the source ended before the budget

    def _relay(self, ow: OneWay, skb: SkBuff, end: int, now: float,
               fin: bool = False) -> None:
        """Rewrite a source segment (data at its TCP header) and send it to the sink."""
        buf = skb.buf
        t = skb.data
        if ow.tap is not None:
            thl = (buf[t + TCP_DOFF] >> 4) << 2
            ow.tap.feed(_L.unpack_from(buf, t + TCP_SEQ)[0],
                        memoryview(buf)[t + thl:skb.tail],
                        fin)
        skb.data = skb.network_off - ETH_HLEN
        res = self._send(ow, skb, ow.to_sink, ow.sink, now)
        if res is None:
            return
        ow.counters["relayed_segments"] += 1
        ow.counters["relayed_bytes"] += res.payload_bytes
        if len(res.frames) != 1 or res.frames[0] is not skb:
            self.counters["copied_payload_bytes"] += res.payload_bytes
        if seq.gt(end, ow.src_hi):
            ow.src_hi = end
            ow.progress += 1

    def _send(self, ow: OneWay, skb: SkBuff, m: DirectionMap | None, out: Tcb,
              now: float) -> RelayResult | None:
        """Rewrite the frame (data at its Ethernet header) for ``out``'s connection and
        send it; None (counted) when it cannot be relayed. Called while relaying only:
        ``m`` (one of ``ow``'s maps) is made then, and ``out``'s peer has a route."""
        try:
            # (both Optionals are settled while relaying: the map is made, the peer routed)
            res = relay_rewrite(skb, m, self.stack.routes.lookup(out.remote).iface.offload)  # type: ignore[arg-type, union-attr]
        except RelayError as e:
            ow.counters["drop." + e.reason] += 1
            self.counters["drop." + e.reason] += 1
            return None
        for frame in res.frames:
            self.stack.output_frame(frame, now)
        return res

    # -- RELAYING: the sink's peer's segments ----------------------------------------
    def _from_sink(self, ow: OneWay, hdr: TcpHeader, skb: SkBuff, now: float) -> None:
        sink = ow.sink
        flags = hdr.flags
        if flags & RST:
            lend.take_segment(sink, hdr, skb.view()[hdr.header_len:], now)
            if sink.state is TcpState.CLOSED:
                self._finish(ow, "reset", now)
                if ow.source.state is not TcpState.CLOSED:
                    ow.source.abort(now)
            return
        if flags & SYN:
            ow.counters["drop.syn"] += 1
            return
        ts = hdr.options.timestamp
        if ts is not None and (ow.sink_ts is None or seq.gt(ts[0], ow.sink_ts[0])):
            ow.sink_ts = (ts[0], now)
        if not flags & ACK:
            ow.counters["drop.no_ack"] += 1
            return
        ack = hdr.ack
        relayed_end = seq.add(ow.sink_start, seq.sub(ow.src_hi, ow.src_start))
        if seq.gt(ack, seq.add(relayed_end, 1 if ow.fin_at is not None else 0)):
            ow.counters["drop.ack_of_unsent"] += 1  # acknowledges what was never relayed
            return
        text = len(skb) - hdr.header_len
        if text or flags & FIN:
            # Text or FIN of the other direction: the application's, after the
            # hand-back. The acknowledgement goes on to the source's peer now.
            if ow.held_bytes + text <= HELD_LIMIT:
                ow.held.append((hdr, bytes(skb.view()[hdr.header_len:])))
                ow.held_bytes += text
            else:
                ow.counters["drop.held_full"] += 1
            cut(skb, 0, sink.remote, sink.local, clear_fin=True)
        if seq.gt(ack, ow.sink_acked):
            ow.sink_acked = ack
            ow.progress += 1
        if seq.lt(ack, ow.sink_start):
            t = skb.data
            _L.pack_into(skb.buf, t + TCP_ACK, ow.sink_start)
            if not skb.vnet_flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
                csum = _H.unpack_from(skb.buf, t + TCP_CSUM)[0]
                _H.pack_into(skb.buf, t + TCP_CSUM, cks.update32(csum, ack, ow.sink_start))
        skb.data = skb.network_off - ETH_HLEN
        if self._send(ow, skb, ow.to_source, ow.source, now) is not None:
            ow.counters["acks_relayed"] += 1
        if ow.sink_end is not None and seq.ge(ack, ow.sink_end):
            self._hand_back(ow, hdr, now)
        elif ow.fin_at is not None and seq.gt(ack, relayed_end):
            self._hand_back(ow, hdr, now)         # the relayed FIN is acknowledged

    # -- the end --------------------------------------------------------------------
    def _hand_back(self, ow: OneWay, last: TcpHeader, now: float) -> None:
        """The sink's peer has the whole budget (or the relayed FIN): both TCBs take
        over. After a FIN the sink TCB ends its sending side too, in the state the FIN
        and its acknowledgement put it in."""
        src, sink = ow.source, ow.sink
        src_end = ow.src_end if ow.src_end is not None else ow.fin_at
        assert src_end is not None
        end = seq.add(ow.sink_start, seq.sub(src_end, ow.src_start))
        lend.advance_snd(sink, end)
        # The source's peer had all of it acknowledged (relayed from the sink's peer).
        lend.advance_rcv(src, src_end, now,
                         ts_val=ow.source_ts[0] if ow.source_ts is not None else None)
        self._catch_up_clocks(ow, now)
        held, ow.held = ow.held, []
        fin = ow.source_fin
        self._finish(ow, "done", now)
        if ow.fin_at is not None:
            # Its FIN went out as the relayed one (the peer acknowledged it below).
            sink.shutdown_write(now)
        # What the sink's peer sent meanwhile, then the segment that ended it all.
        for hdr, text in held:
            lend.take_segment(sink, hdr, memoryview(text), now)
        if not held or held[-1][0] is not last:
            lend.take_ack(sink, last, now)   # (it has ACK: _from_sink drops the others)
        if fin is not None and src.state is not TcpState.CLOSED:
            lend.take_segment(src, fin, memoryview(b""), now)
        for tcb in (src, sink):
            self.tcp.schedule(tcb)
        self.tcp.flush_events()

    @staticmethod
    def _catch_up_clocks(ow: OneWay, now: float) -> None:
        """Move each TCB's timestamp clock past every TSval relayed on its connection:
        one clock per connection, or the peer's PAWS (RFC 7323 §5) drops the TCB's
        next segments. Relayed TSvals are the other peer's, shifted by a constant;
        that peer's newest one seen, plus a tick per millisecond since (and a margin
        for the time it spent on the way), bounds them."""
        for tcb, m, peer in ((ow.sink, ow.to_sink, ow.source_ts),
                             (ow.source, ow.to_source, ow.sink_ts)):
            if m is None or m.ts_mode != TS_MAP or not tcb.ts_ok:
                continue
            if peer is None:
                jump = TS_HANDBACK_MS
            else:
                elapsed = int((now - peer[1]) * 1000) + TS_TRANSIT_MS
                newest = seq.add(peer[0], m.tsval_delta + elapsed)
                jump = max(0, seq.sub(newest, lend.ts_clock(tcb, now)) + 1)
            lend.advance_ts_clock(tcb, jump)

    def _finish(self, ow: OneWay, outcome: str, now: float) -> None:
        if ow.phase is Phase.DONE:
            return
        copying = ow.phase is Phase.COPYING
        if ow.phase is Phase.RELAYING and outcome != "done":
            # The sink TCB continues from the end of what was relayed (its reset is
            # then in the peer's window); nothing of the relayed range is its to resend.
            lend.advance_snd(ow.sink, seq.add(ow.sink_start,
                                              seq.sub(ow.src_hi, ow.src_start)))
            lend.advance_rcv(ow.source, ow.src_hi, now)
            self._catch_up_clocks(ow, now)
        ow.phase = Phase.DONE
        ow.outcome = outcome
        self.stack.flows.pop(flow_key(ow.source), None)
        self.stack.flows.pop(flow_key(ow.sink), None)
        for tcb in (ow.source, ow.sink):
            self.by_tcb.pop(id(tcb), None)
            lend.release(tcb, self._input)
            lend.resume(tcb, now)
        if ow.tap is not None:
            if outcome == "done" and copying:
                ow.tap._end(True)
            else:
                ow.tap.close()
        self.counters["oneway_" + outcome] += 1
        if ow.on_done is not None:
            ow.on_done(ow)
