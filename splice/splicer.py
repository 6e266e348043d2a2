"""Symmetric TCP splice in the stack (docs/splice.md §1-§5).

The :class:`Splicer` owns every splice pair of one stack. Its three primitives follow
docs/splice.md §1: :meth:`Splicer.init_splice` on a listener, :meth:`Splicer.intend_splice`
(which opens the server connection with the client connection's options), and
:meth:`Splicer.splice` with the write allowance ``n``. From intend_splice on, the
splicer sees every segment of both connections first (the TCB's ``input_hook``) and
acts by the interface's splice state (splice/state.py): queue it, let the TCB take only
its acknowledgement, or rewrite it in place and send it out of the other interface
(splice/relay.py) — the proxy acknowledges nothing on its own behalf once relaying.
"""

from __future__ import annotations

import functools
import heapq
import itertools
from collections import Counter, deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from splice import guard
from splice.demux import SpliceDemux
from splice.mapping import ConnSnapshot, make_maps, snapshot_of
from splice.pair import QueuedFrame, Side, SpliceError, SplicePair
from splice.relay import RelayError, flow_frame_ip, flow_tcp_valid, relay_rewrite
from splice.state import RELAYING, SpliceEvent, SpliceState
from splice.tap import Tap
from stack import seq
from stack.core import flow_key
from stack.skbuff import SkBuff
from stack.tcp import lend
from stack.tcp.api import TcpState
from stack.wire import checksum as cks
from stack.wire.ethernet import ETH_HLEN
from stack.wire.fields import (
    IP_MIN_HLEN,
    TCP_ACK,
    TCP_CSUM,
    TCP_DOFF,
    TCP_FLAGS,
    TCP_SEQ,
    TCP_WIN,
    U16,
    U32,
)
from stack.wire.ipv4 import IPPROTO_TCP
from stack.wire.tcp import ACK, FIN, RST, SYN, TcpHeader
from stack.wire.vnet import VIRTIO_NET_HDR_F_NEEDS_CSUM, restore_vnet, save_vnet

if TYPE_CHECKING:
    from splice.oneway import OneWay
    from stack.core import Stack
    from stack.tcp.layer import Listener, TcpLayer
    from stack.tcp.tcb import Tcb

S, E = SpliceState, SpliceEvent
_L = U32

_H = U16
#: "rescale": windows rescaled between any scales, rounded down (docs/splice.md
#: §5.2); "thesis": the client connection's receive scale is 0 (windows toward the
#: client clamped to 65,535), as in the thesis.
WINDOW_SCHEMES = ("rescale", "thesis")
#: How far ahead of the proxy's own timestamp clock relayed TSvals start (ms).
TS_HEADROOM_MS = 10_000
#: Idle timeout of spliced pairs (s): Squid's client and read timeouts are 15 minutes.
DEFAULT_IDLE_TIMEOUT = 900.0


class Splicer:
    """Splice pairs of one stack, their relay and their timers."""

    def __init__(self, stack: Stack, tcp: TcpLayer, *, queue_limit: int = 8 << 20,
                 timewait: float | None = None, max_pairs: int = 65536,
                 max_timewait: int | None = None, window_scheme: str = "rescale",
                 idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT) -> None:
        if window_scheme not in WINDOW_SCHEMES:
            raise ValueError(f"window scheme {window_scheme!r}: one of {WINDOW_SCHEMES}")
        if idle_timeout is not None and not idle_timeout > 0:
            raise ValueError(f"idle timeout {idle_timeout!r}: seconds > 0, or None")
        self.stack = stack
        self.tcp = tcp
        self.window_scheme = window_scheme
        self.queue_limit = queue_limit
        self.timewait = 2 * tcp.config.msl if timewait is None else timewait
        self.max_pairs = max_pairs
        #: Bound of pairs in TIMEWAIT (default a quarter of max_pairs). A proxy closing
        #: 1,500 pairs a second would otherwise hold 90,000 for the 2*MSL of 60 s: past
        #: the bound the oldest one ends its TIMEWAIT early (counted timewait_recycled),
        #: as Linux ends TIME-WAIT early past tcp_max_tw_buckets.
        self.max_timewait = max(1, max_pairs // 4) if max_timewait is None else max_timewait
        self.in_timewait = 0
        #: Seconds without a segment either way after which a spliced pair is ended
        #: with a RST to both peers (None: never). Nothing else ends a pair whose peers
        #: vanished without a FIN or RST, and it holds its slot and memory meanwhile.
        self.idle_timeout = idle_timeout
        self._idle_heap: list[tuple[float, int, SplicePair]] = []
        self.sides: dict[int, Side] = {}           # id(tcb) -> its side
        #: Arriving 4-tuple (local, lport, remote, rport) -> side, for pairs where both
        #: interfaces relay: their segments skip TCP's parsing (see SpliceDemux).
        self.fast: dict[tuple[bytes, int, bytes, int], Side] = {}
        self.pairs: dict[int, SplicePair] = {}     # id(client side) -> pair
        self.counters: Counter[str] = Counter()
        self._heap: list[tuple[float, int, SplicePair]] = []
        self._tie = itertools.count()
        #: Called with each pair once it is torn down (for the asyncio helpers).
        self.on_close: Callable[[SplicePair], None] | None = None
        #: Called when both directions have ended (both FINs acknowledged: TIMEWAIT).
        self.on_finished: Callable[[SplicePair], None] | None = None
        stack.timer_sources.append(self)
        from splice.oneway import OneWaySplicer
        #: One-way splices with a byte budget (splice/oneway.py).
        self.oneway = OneWaySplicer(self)
        if stack.protocols.get(IPPROTO_TCP) is tcp:
            stack.register_protocol(IPPROTO_TCP, SpliceDemux(self))

    # -- primitives (docs/splice.md §1) ---------------------------------------------
    def init_splice(self, listener: Listener) -> None:
        """Connections accepted from ``listener`` can be spliced later.

        With the "rescale" scheme (default) nothing is forced on them: every window scale
        can be mapped (the relay rescales and rounds down, docs/splice.md §5.2), so the client
        connection keeps its normal scale and server-to-client windows are not held to
        64 KB. The "thesis" scheme sets the client's receive scale to 0, as the thesis
        did (for comparison in benchmarks).
        """
        thesis = self.window_scheme == "thesis"

        def mark(tcb: Tcb) -> None:
            lend.make_spliceable(tcb, rcv_wscale=0 if thesis else None)
        listener.tcb_setup = mark

    def intend_splice(self, client: Tcb, dst: bytes, dport: int, now: float) -> Tcb:
        """Open the server connection for ``client`` with the client's options (§5);
        from now on the application may not read from the client connection."""
        if id(client) in self.sides or id(client) in self.oneway.by_tcb:
            raise SpliceError("the client connection is already part of a splice")
        if client.state is not TcpState.ESTABLISHED:
            raise SpliceError(f"the client connection is {client.state.name}, "
                              "not ESTABLISHED")
        if len(self.pairs) >= self.max_pairs and not self._recycle_timewait(now, 1):
            raise SpliceError("too many splices")
        server = self.tcp.connect(dst, dport, now, setup=lambda t: lend.mirror_options(t, client))
        c = Side(client, "client", S.ESTABLISHED)
        s = Side(server, "server", S.CLOSE)
        c.other, s.other = s, c
        pair = SplicePair(c, s, created=now)
        self.pairs[id(c)] = pair
        for side, key in ((c, "s2c"), (s, "c2s")):   # what leaves out of each side
            side.pair, side.seg_key, side.byte_key = pair, key + "_segments", key + "_bytes"
        for side in (c, s):
            self.sides[id(side.tcb)] = side
            lend.lend(side.tcb, self._input, owner=side)
        self.counters["intended"] += 1
        return server

    def splice(self, client: Tcb, server: Tcb, n: int, now: float,
               unread: bytes = b"", tap: Tap | None = None,
               tap_direction: str = "s2c") -> SplicePair:
        """Start relaying between the two connections (§2); the application may still
        write ``n`` bytes to the client connection. ``unread`` is client data the
        application took from the connection but did not use (its stream buffer).
        ``tap`` receives a copy of one direction (docs/splice.md §6: "s2c" is what the server
        sends, "c2s" what the client sends), from the first byte not yet read by the
        application on."""
        c, s = self.check_splice(client, server, n, tap_direction)
        pair = self.pairs[id(c)]
        # Nothing lost at the seam (§4): what one side sent and the proxy accepted but
        # did not use goes to the other side as the proxy's own data.
        from_c = unread + client.recv(1 << 40)
        from_s = server.recv(1 << 40)
        self._hand_over(c, s, from_c, now)
        self._hand_over(s, c, from_s, now)
        if tap is not None:
            tapped, seam = (s, from_s) if tap_direction == "s2c" else (c, from_c)
            tap.next_seq = seq.add(tapped.tcb.rcv_nxt, -len(seam))
            tap.feed(tap.next_seq, seam)  # what the proxy held comes first
            tapped.tap = tap
        c.owed = n
        owes = [self._set_base_points(side, now) for side in (c, s)]
        snap_c, snap_s = self._snapshot(c, now), self._snapshot(s, now)
        s.out_map, c.out_map = make_maps(snap_c, snap_s)
        for side in (c, s):
            route = self.stack.routes.lookup(side.tcb.remote)
            side.offload = route.iface.offload if route is not None else False
        pair.spliced_at = pair.last_seen = now
        if self.idle_timeout is not None:
            heapq.heappush(self._idle_heap, (now + self.idle_timeout, next(self._tie), pair))
        for side, owed in zip((c, s), owes, strict=True):
            side.apply(E.SPLICE_OWED if owed else E.SPLICE_CLEAN)
            self.counters["pre_spliced" if owed else "spliced_clean"] += 1
        for side in (c, s):
            if side.state is S.SPLICED:
                self._start_relaying(side, now)
        self.counters["splices"] += 1
        return pair

    def check_splice(self, client: Tcb, server: Tcb, n: int,
                     tap_direction: str = "s2c") -> tuple[Side, Side]:
        """The (client, server) sides that :meth:`splice` would join, or SpliceError
        for a misuse (docs/splice.md §1); changes nothing either way, so a caller can check
        before it lets go of the connections."""
        c, s = self.sides.get(id(client)), self.sides.get(id(server))
        if c is None or s is None or c.other is not s or c.role != "client":
            raise SpliceError("these connections were not joined by intend_splice")
        if c.state is not S.ESTABLISHED or s.state is not S.ESTABLISHED:
            raise SpliceError(f"cannot splice: client {c.state.value}, "
                              f"server {s.state.value} (both must be established)")
        if n < 0:
            raise SpliceError("n must be >= 0")
        if tap_direction not in ("s2c", "c2s"):
            raise SpliceError(f"tap direction {tap_direction!r}: 's2c' or 'c2s'")
        return c, s

    @staticmethod
    def _set_base_points(side: Side, now: float) -> bool:
        """Fix the side's base points (docs/splice.md §4); True when the proxy still owes or
        awaits the acknowledgement of its own data on it (PRE_SPLICED)."""
        tcb = side.tcb
        owes = side.owed > 0 or bool(tcb.write_queue)
        side.iss = seq.add(tcb.write_seq, side.owed)
        side.irs = tcb.rcv_nxt
        # Data above rcv_nxt was never acknowledged: its sender will send it again and
        # it is relayed then (RFC 2018 §8 allows dropping SACKed data).
        lend.discard_out_of_order(tcb)
        # The peer must have everything below irs acknowledged: at once on a side that
        # relays from now on; a side the proxy still writes to (PRE_SPLICED) has it
        # carried by that data, or sent by the timer.
        lend.acknowledge(tcb, now, at_once=not owes)
        return owes

    def write_owed(self, client: Tcb, data: bytes, now: float) -> None:
        """Write part of the ``n`` bytes allowed after splice() on the client connection."""
        side = self.sides.get(id(client))
        if side is None or side.role != "client" or side.state not in (S.PRE_SPLICED,):
            raise SpliceError("no bytes are owed on this connection")
        if len(data) > side.owed:
            raise SpliceError(f"{len(data)} bytes exceed the {side.owed} still allowed")
        self._force_send(client, data, now)
        side.owed -= len(data)
        self._check_owed(side, now)

    # -- state of the pair ---------------------------------------------------------------
    @staticmethod
    def _mirror(server: Tcb, client: Tcb) -> None:
        """Build the server connection's SYN from the client connection (§5): the
        server must send segments the client can take without a split, and client
        windows pass unchanged (the setup of splice/aio.py's connections too)."""
        lend.mirror_options(server, client)

    def _snapshot(self, side: Side, now: float) -> ConnSnapshot:
        # Relayed TSvals continue from here. The proxy's own TCB may still send on a
        # PRE_SPLICED connection, with its own clock: starting the relayed clock well
        # ahead keeps every relayed TSval newer than any the TCB sent, or the peer's
        # PAWS (RFC 7323 §5) would drop relayed segments. Echoes map back exactly, so
        # the peers' RTT samples do not see the offset.
        return snapshot_of(side.tcb, side.iss, side.irs,
                           seq.add(lend.ts_clock(side.tcb, now), TS_HEADROOM_MS))

    def _hand_over(self, src: Side, dst: Side, data: bytes, now: float) -> None:
        if data:
            self.counters["seam_bytes"] += len(data)
            self._force_send(dst.tcb, data, now)

    @staticmethod
    def _force_send(tcb: Tcb, data: bytes, now: float) -> None:
        """Queue all of ``data`` (the send buffer grows if it must: these bytes are
        already accepted from the other peer and cannot be refused)."""
        if lend.send_all(tcb, data, now) < len(data):
            raise SpliceError("the connection refused data it must carry")

    def _check_owed(self, side: Side, now: float) -> None:
        if side.state is S.PRE_SPLICED and side.owed == 0 and not side.tcb.write_queue:
            side.apply(E.OWED_DONE)
            self._start_relaying(side, now)

    def _start_relaying(self, side: Side, now: float) -> None:
        """The interface relays from now on: its TCB falls silent; queued frames go."""
        lend.silence(side.tcb)
        other = side.other
        if other is not None and other.state in RELAYING:
            # Both directions relay: segments of this pair may take the fast paths.
            for s_ in (side, other):
                t = s_.tcb
                self.fast[(t.local, t.local_port, t.remote, t.remote_port)] = s_
                self.stack.flows[flow_key(t)] = functools.partial(self._flow_relay, s_)
        while side.pending:
            q = side.pending.popleft()
            side.pending_bytes -= len(q.frame)
            skb = SkBuff.from_bytes(q.frame, headroom=128)
            restore_vnet(skb, q.vnet)
            skb.network_off = skb.data + ETH_HLEN
            skb.data += q.tcp_off
            hdr = TcpHeader.parse(skb.view())
            self._relay(side, skb, hdr.flags, hdr.ack, now)

    # -- the input hook -------------------------------------------------------------------
    def _input(self, tcb: Tcb, hdr: TcpHeader, skb: SkBuff, now: float) -> bool:
        side = self.sides.get(id(tcb))
        if side is None:
            return False
        if side.state is S.CLOSE:
            lend.take_segment(tcb, hdr, skb.view()[hdr.header_len:], now)
            if tcb.state is TcpState.ESTABLISHED:
                side.apply(E.CONNECTED)
            elif tcb.state is TcpState.CLOSED:
                # The server could not be reached: the client connection goes back to
                # the application, which answers its client (e.g. SOCKS "refused").
                self.abandon(side.other.tcb, now)
            return True
        if hdr.flags & RST:
            return self._on_rst(side, hdr, skb, now)
        if hdr.flags & SYN:
            return self._on_syn(side, hdr, skb, now)
        # Only segments that are taken count as activity: a spoofed RST or SYN must
        # not keep an abandoned pair alive.
        side.pair.last_seen = now
        ts = hdr.options.timestamp
        if ts is not None:
            side.peer_tsval = ts[0]  # a FIN's TSval judges SYNs in TIMEWAIT
        payload = len(skb) - hdr.header_len
        if side.state is S.ESTABLISHED or side.state is S.PRE_SPLICED:
            # Its acknowledgement and window are the proxy's TCB's; its text and FIN
            # belong to the other connection (docs/splice.md §2).
            lend.take_ack(tcb, hdr, now)
            if payload or hdr.flags & FIN:
                self._forward(side, skb, hdr, now)
            self._check_owed(side, now)
            return True
        self._check_fin_acked(side, hdr.flags, hdr.ack, now)
        self._forward(side, skb, hdr, now)
        return True

    def _forward(self, arrived: Side, skb: SkBuff, hdr: TcpHeader, now: float) -> None:
        out = arrived.other
        assert out is not None
        if out.state in RELAYING:
            self._relay(out, skb, hdr.flags, hdr.ack, now)
        else:
            self._queue(out, skb, hdr)

    def _clamp_ack(self, arrived: Side, skb: SkBuff, flags: int, ack: int) -> None:
        """An ACK that does not yet cover the proxy's own data on the arriving
        connection says nothing to the other peer: raise it to the base point, so that
        it maps to what that peer already had acknowledged (never below)."""
        if not flags & ACK or arrived.out_map is None or not seq.lt(ack, arrived.iss):
            return
        t = skb.data  # at the TCP header here
        buf = skb.buf
        _L.pack_into(buf, t + TCP_ACK, arrived.iss)
        if not skb.vnet_flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
            csum = _H.unpack_from(buf, t + TCP_CSUM)[0]
            _H.pack_into(buf, t + TCP_CSUM, cks.update32(csum, ack, arrived.iss))
        self.counters["acks_clamped"] += 1

    def _set_seq(self, skb: SkBuff, old: int, new: int) -> None:
        """Move the sequence number of the segment (data at its TCP header)."""
        t = skb.data
        buf = skb.buf
        _L.pack_into(buf, t + TCP_SEQ, new)
        if not skb.vnet_flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
            csum = _H.unpack_from(buf, t + TCP_CSUM)[0]
            _H.pack_into(buf, t + TCP_CSUM, cks.update32(csum, old, new))

    def _queue(self, out: Side, skb: SkBuff, hdr: TcpHeader) -> None:
        start = skb.network_off - ETH_HLEN
        frame = bytes(skb.buf[start:skb.tail])
        if out.pending_bytes + len(frame) > self.queue_limit:
            self.counters["drop.splice_queue_full"] += 1
            return
        payload = len(skb) - hdr.header_len
        if out.pending is None:
            out.pending = deque()
        out.pending.append(QueuedFrame(frame, save_vnet(skb), skb.data - start, payload))
        out.pending_bytes += len(frame)
        self.counters["seam_bytes"] += payload

    def _relay(self, out: Side, skb: SkBuff, flags: int, ack: int, now: float) -> None:
        """Rewrite the frame (data at its TCP header) in place for ``out``'s connection
        and send it (§3)."""
        pair = out.pair
        arrived = out.other
        pair.last_seen = now
        if flags & ACK:
            # The newest acknowledgement and window of the arriving peer (splice/guard.py):
            # a reordered older segment must not move them back.
            prev = arrived.peer_ack
            if prev is None or (ack - prev) & 0xFFFFFFFF < 0x80000000:
                arrived.peer_ack = ack
                win = skb.data + TCP_WIN
                arrived.peer_win = (skb.buf[win] << 8) | skb.buf[win + 1]
            if arrived.out_map is not None and seq.lt(ack, arrived.iss):
                self._clamp_ack(arrived, skb, flags, ack)
        if arrived.tap is not None:
            t = skb.data
            thl = (skb.buf[t + TCP_DOFF] >> 4) << 2
            arrived.tap.feed(_L.unpack_from(skb.buf, t + TCP_SEQ)[0],
                             memoryview(skb.buf)[t + thl:skb.tail], bool(flags & FIN))
        seq_in = _L.unpack_from(skb.buf, skb.data + TCP_SEQ)[0]
        skb.data = skb.network_off - ETH_HLEN
        try:
            # out relays, so splice() made its map (the Optional is for the states before)
            res = relay_rewrite(skb, out.out_map, out.offload)  # type: ignore[arg-type]
        except RelayError as e:
            pair.counters["drop." + e.reason] += 1
            self.counters["drop." + e.reason] += 1
            return
        counters = pair.counters
        counters[out.seg_key] += 1
        if res.payload_bytes:
            counters[out.byte_key] += res.payload_bytes
            out.sent_end = seq_in + res.payload_bytes  # (unmasked; splice/guard.py)
        if len(res.frames) != 1 or res.frames[0] is not skb:
            self.counters["copied_payload_bytes"] += res.payload_bytes
        for frame in res.frames:
            self.stack.output_frame(frame, now)
        if flags & FIN:
            t = skb.data + ETH_HLEN + ((skb.buf[skb.data + ETH_HLEN] & 15) << 2)
            seq_out = _L.unpack_from(skb.buf, t + TCP_SEQ)[0]
            out.fin_end = seq.add(seq_out, res.payload_bytes + 1)
            out.apply(E.FIN_OUT)
        if flags & RST:
            pair.reset = True
            self._teardown(pair, now)

    def _flow_relay(self, side: Side, skb: SkBuff, now: float) -> bool:
        """The shortest path (the core's flow table): a frame of a pair relaying both
        ways, straight from the device. Anything unusual goes the normal way (False)."""
        ip = flow_frame_ip(skb)
        if ip < 0:
            return False
        buf = skb.buf
        t = ip + IP_MIN_HLEN
        flags = buf[t + TCP_FLAGS]
        if flags & (SYN | FIN | RST) or not flow_tcp_valid(skb, t, side.tcb.remote,
                                                           side.tcb.local):
            return False
        skb.network_off = ip
        skb.data = t
        ack = _L.unpack_from(buf, t + TCP_ACK)[0]
        if side.state is S.FIN_RELAYED:
            self._check_fin_acked(side, flags, ack, now)
        self._relay(side.other, skb, flags, ack, now)
        self.counters["flow_path_segments"] += 1
        return True

    def _check_fin_acked(self, side: Side, flags: int, ack: int, now: float) -> None:
        if (side.state is S.FIN_RELAYED and side.fin_end is not None and flags & ACK
                and seq.ge(ack, side.fin_end)):
            side.apply(E.FIN_ACKED)
            other = side.other
            if other is not None and other.state is S.SHUTDOWN:
                side.apply(E.BOTH_SHUTDOWN)
                other.apply(E.BOTH_SHUTDOWN)
                pair = self._pair_of(side)
                pair.timewait_until = now + self.timewait
                heapq.heappush(self._heap, (pair.timewait_until, next(self._tie), pair))
                self.in_timewait += 1
                if self.in_timewait > self.max_timewait:
                    self._recycle_timewait(now, self.in_timewait - self.max_timewait)
                if self.on_finished is not None:
                    self.on_finished(pair)

    def _on_rst(self, side: Side, hdr: TcpHeader, skb: SkBuff, now: float) -> bool:
        pair = self._pair_of(side)
        other = side.other
        assert other is not None
        if side.state in RELAYING or side.state is S.PRE_SPLICED:
            # RFC 5961 §3.2 on the receiving peer's behalf (splice/guard.py).
            verdict = guard.judge_rst(side, hdr.seq)
            if verdict is not guard.RELAY:
                self.counters[f"rst_{verdict}"] += 1
                if verdict is guard.CHALLENGE:
                    guard.send_challenge_ack(self.tcp, side, now)
                return True
            rst_seq, _window = guard.receiver_view(side)
            if seq.lt(hdr.seq, rst_seq):
                # The answer to our challenge ACK, overtaken by newer ACKs of the
                # receiver: it would now be below the receiver's window and dropped.
                self._set_seq(skb, hdr.seq, rst_seq)
            else:
                rst_seq = hdr.seq
            if other.state in RELAYING:
                out_map = other.out_map
                self._relay(other, skb, hdr.flags, hdr.ack, now)  # tears the pair down
                if out_map is not None:
                    # The receiver's RCV.NXT may be another of its candidates.
                    guard.reset_candidates(self.tcp, other,
                                           seq.add(rst_seq, out_map.seq_delta), now)
                return True
            pair.reset = True
            self._teardown(pair, now, abort_other=other)
            return True
        # Before splice(): the TCB judges the RST itself (RFC 5961); if it takes it,
        # the pair is over and the other connection is reset too.
        lend.take_segment(side.tcb, hdr, skb.view()[hdr.header_len:], now)
        if side.tcb.state is TcpState.CLOSED:
            self._teardown(pair, now, abort_other=other)
        return True

    def _on_syn(self, side: Side, hdr: TcpHeader, skb: SkBuff, now: float) -> bool:
        """A SYN on a spliced 4-tuple (RFC 5961 §4.2): never relayed; answered with a
        challenge ACK, except a newer one on a pair in TIMEWAIT, which opens a new
        connection (the peer closed last and reuses its port)."""
        ts = hdr.options.timestamp
        if guard.judge_syn(side, hdr.seq, ts[0] if ts else None) is guard.RELAY:
            self.counters["timewait_reopened"] += 1
            tcb = side.tcb
            self._teardown(self._pair_of(side), now)
            self.tcp.input(skb, tcb.remote, tcb.local, now)
            return True
        self.counters["syn_challenge"] += 1
        guard.send_challenge_ack(self.tcp, side, now)
        return True

    # -- teardown and timers ------------------------------------------------------------------
    def end_pair(self, pair: SplicePair, why: str, now: float) -> None:
        """End ``pair`` from the stack's side: a RST to both peers (each at a sequence
        number it accepts), then teardown. ``why`` ("idle", "drain") is counted
        (``<why>_reset``) and kept in ``pair.ended_by``."""
        if pair.closed:
            return
        for side in pair.sides():
            guard.reset_peer(self.tcp, side, now)
        pair.reset = True
        pair.ended_by = why
        self.counters[f"{why}_reset"] += 1
        self._teardown(pair, now)

    def end_all(self, why: str, now: float) -> int:
        """End every pair not yet in TIMEWAIT (see :meth:`end_pair`); how many."""
        live = [p for p in self.pairs.values() if p.timewait_until is None]
        for pair in live:
            self.end_pair(pair, why, now)
        self.tcp.flush_events()
        return len(live)

    def live_pairs(self) -> int:
        """Pairs whose peers may still send (not in TIMEWAIT)."""
        return sum(1 for p in self.pairs.values() if p.timewait_until is None)

    def _expire_idle(self, now: float) -> None:
        """End pairs silent for idle_timeout seconds; re-arm the others (one heap entry
        per pair and idle period, never one per segment)."""
        heap = self._idle_heap
        while heap and heap[0][0] <= now:
            _t, _tie, pair = heapq.heappop(heap)
            if pair.closed or pair.timewait_until is not None:
                continue  # gone, or ending by itself: TIMEWAIT has its own timer
            assert self.idle_timeout is not None  # pairs are queued here only with one
            due = pair.last_seen + self.idle_timeout
            if due > now:
                heapq.heappush(heap, (due, next(self._tie), pair))
            else:
                self.end_pair(pair, "idle", now)

    def _pair_of(self, side: Side) -> SplicePair:
        return self.pairs[id(side if side.role == "client" else side.other)]

    def _teardown(self, pair: SplicePair, now: float, abort_other: Side | None = None) -> None:
        if pair.closed:
            return
        pair.closed = True
        for side in pair.sides():
            tcb = side.tcb
            lend.release(tcb)   # it stays marked spliced: TCP leaves its end alone
            self.sides.pop(id(tcb), None)
            self.fast.pop((tcb.local, tcb.local_port, tcb.remote, tcb.remote_port), None)
            self.stack.flows.pop(flow_key(tcb), None)
            if side is abort_other and tcb.state is not TcpState.CLOSED:
                tcb.abort(now)
            else:
                lend.close_silently(tcb)  # the peers ended it end to end
            if side.state is not S.CLOSED:    # (after TIMEWAIT's TIMEOUT it is)
                side.apply(E.RESET)
            if side.tap is not None:
                side.tap.close()
            side.pending = None
            side.pending_bytes = 0
        self.pairs.pop(id(pair.client), None)
        if pair.timewait_until is not None:
            self.in_timewait -= 1
        self.counters["closed"] += 1
        if self.on_close is not None:
            self.on_close(pair)

    def _recycle_timewait(self, now: float, count: int) -> int:
        """End the TIMEWAIT of up to ``count`` pairs, oldest first; how many ended."""
        done = 0
        while done < count and self._end_oldest_timewait(now, None):
            self.counters["timewait_recycled"] += 1
            done += 1
        return done

    def _end_oldest_timewait(self, now: float, due: float | None) -> bool:
        """End the TIMEWAIT of the oldest pair still in it (only if its 2*MSL is over
        by ``due``, when given); False when there is none."""
        while self._heap and (due is None or self._heap[0][0] <= due):
            _t, _tie, pair = heapq.heappop(self._heap)
            if pair.closed:
                continue
            for side in pair.sides():
                side.apply(E.TIMEOUT)
            self._teardown(pair, now)
            return True
        return False

    def abandon(self, client: Tcb, now: float) -> None:
        """Give up a splice before splice() (the server could not be reached): the
        server connection is reset; the client connection is left to the application."""
        side = self.sides.get(id(client))
        if side is None or side.role != "client":
            return
        pair = self.pairs[id(side)]
        pair.closed = True
        for s in pair.sides():
            lend.release(s.tcb, disown=True)  # the application's again
            self.sides.pop(id(s.tcb), None)
            s.apply(E.RESET)
        if pair.server.tcb.state is not TcpState.CLOSED:
            pair.server.tcb.abort(now)
        self.pairs.pop(id(side), None)
        self.counters["abandoned"] += 1

    def next_deadline(self) -> float | None:
        """When the oldest pair in TIMEWAIT or the next idle check is due."""
        due = None
        for heap in (self._heap, self._idle_heap):
            while heap and heap[0][2].closed:
                heapq.heappop(heap)
            if heap and (due is None or heap[0][0] < due):
                due = heap[0][0]
        return due

    def on_timer(self, now: float) -> None:
        """End TIMEWAIT of pairs whose 2*MSL has passed, and pairs idle too long."""
        while self._end_oldest_timewait(now, now):
            pass
        if self._idle_heap:
            self._expire_idle(now)
        self.tcp.flush_events()

    def splice_one_way(self, source: Tcb, sink: Tcb, budget: int | None, now: float, *,
                       seam: bytes = b"", tap: Tap | None = None) -> OneWay:
        """Splice one direction, ``source`` -> ``sink``, for ``budget`` bytes (None: up
        to and including the source's FIN), then give both connections back
        (docs/splice.md §7; splice/oneway.py)."""
        return self.oneway.start(source, sink, budget, now, seam=seam, tap=tap)

    def stats(self) -> dict:
        """Stack-wide splice counters, one line per pair and per one-way splice."""
        ways = {id(w): w for w in self.oneway.by_tcb.values()}
        return {"counters": dict(self.counters),
                "pairs": [p.info() for p in self.pairs.values()],
                "one_way": [w.info() for w in ways.values()]}
