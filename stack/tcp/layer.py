"""The TCP layer: demultiplexing, listeners, active opens, timers and events.

:class:`TcpLayer` owns the connection table (keyed by the 4-tuple, bounded), the
listeners (keyed by address and port, each with a bounded SYN queue and accept
queue; SYN cookies when the SYN queue is full, RFC 4987), answers segments for no
connection with a RST (RFC 9293 §3.10.7.1) and keeps one timer heap for all
connections. A connection in TIME-WAIT is a small record in the table
(timewait.py), not its Tcb. Application callbacks are queued (each connection or
listener once, oldest first) and fired once TCP state is consistent again, never
from the middle of an update.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import random
from collections import Counter, deque
from collections.abc import Callable

from stack import seq
from stack.netfamily import family_of
from stack.portshard import queue_of
from stack.skbuff import SkBuff
from stack.tcp import output, timewait
from stack.tcp.api import (
    IpService,
    TcpAddressError,
    TcpConfig,
    TcpError,
    TcpRefused,
    TcpState,
)
from stack.tcp.input import output_after_batch, segment_arrives
from stack.tcp.isn import IsnGenerator
from stack.tcp.options import apply_peer_syn, send_mss
from stack.tcp.state import Event
from stack.tcp.syncookies import SynCookies, decode_ts_options, encode_ts_options
from stack.tcp.tcb import Tcb
from stack.tcp.timers import arm_keepalive, run_timers
from stack.tcp.timewait import TimeWait
from stack.wire.errors import WireError
from stack.wire.tcp import ACK, FIN, RST, SYN, TcpHeader, TcpOptions, verify_tcp_checksum
from stack.wire.vnet import VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM

ANY = b"\0\0\0\0"
#: The IPv6 wildcard: a listener on it hears IPv6 only (as a socket with
#: IPV6_V6ONLY, asyncio's default for its servers); IPv4 needs a listener of its own.
ANY6 = bytes(16)
_CSUM_TRUSTED = VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID
Key = tuple[bytes, int, bytes, int]
#: What the connection table holds: a whole TCB, or a TIME-WAIT record (timewait.py).
Conn = Tcb | TimeWait


class Listener:
    """A passive open on (addr, port): a SYN queue count and an accept queue."""

    def __init__(self, layer: TcpLayer, addr: bytes, port: int, backlog: int) -> None:
        self.layer = layer
        self.addr = addr
        self.port = port
        self.backlog = max(1, backlog)
        self.syn_queue_len = 0
        self.accept_queue: deque[Tcb] = deque()
        self.on_accept: Callable[[Tcb], None] | None = None
        self.on_event: Callable[[Listener, str], None] | None = None
        self.closed = False
        #: Applied to every connection created by this listener before its SYN-ACK
        #: (used e.g. by the splice layer to force a receive window scale).
        self.tcb_setup: Callable[[Tcb], None] | None = None
        #: Accept only clients whose route leaves through the interface that owns
        #: ``addr`` (strict reverse path, RFC 3704 §2.2): a SYN for 198.18.0.2 that
        #: came in from another interface's side is answered with a RST. A spoofed
        #: source cannot complete the handshake, so this is the arrival interface
        #: for every connection that could be accepted. Not for 0.0.0.0 listeners.
        self.own_interface_only = False

    @property
    def local_address(self) -> tuple[bytes, int]:
        """(address, port) listened on."""
        return self.addr, self.port

    def accept(self) -> Tcb | None:
        """The oldest established connection not yet accepted, or None."""
        return self.accept_queue.popleft() if self.accept_queue else None

    def close(self, now: float) -> None:
        """Stop listening; reset connections not accepted yet."""
        if self.closed:
            return
        self.closed = True
        self.layer.listeners.pop((self.addr, self.port), None)
        for tcb in list(self.layer.connections.values()):
            if tcb.listener is self and (tcb.in_syn_queue or tcb in self.accept_queue):
                tcb.abort(now)
        self.accept_queue.clear()

    def fire(self) -> None:
        """Deliver queued connections to ``on_accept`` (or announce them)."""
        if self.on_accept is not None:
            while self.accept_queue:
                self.on_accept(self.accept_queue.popleft())
        elif self.on_event is not None and self.accept_queue:
            self.on_event(self, "acceptable")


class TcpLayer:
    """All TCP connections and listeners of one stack."""

    def __init__(self, ip: IpService, *, config: TcpConfig | None = None,
                 rng: random.Random | None = None, secret: bytes | None = None) -> None:
        """``secret`` keys the ISNs, timestamp offsets and ephemeral ports (see
        stack/hostkey.py: one per host keeps them continuous across restarts);
        without it they are drawn from ``rng``."""
        self.ip = ip
        self.config = config or TcpConfig()
        self.rng = rng or random.Random()
        self.connections: dict[Key, Conn] = {}
        #: Connections in the order they entered TIME-WAIT (note_time_wait); at most
        #: max_time_wait entries (some may have ended already).
        self._time_waits: deque[Conn] = deque()
        self.listeners: dict[tuple[bytes, int], Listener] = {}
        self.counters: Counter[str] = Counter()
        def key(use: bytes) -> bytes:
            if secret is None:
                return self.rng.randbytes(32)
            return hashlib.blake2s(secret, person=use).digest()
        self.isn_gen = IsnGenerator(key(b"isn"))
        self.cookies = SynCookies(self.rng.randbytes(32))
        self._ts_key = key(b"tsoffset")
        self._port_key = key(b"ports")
        self._port_counter = 0
        self._heap: list[tuple[float, int, Conn]] = []
        self._tie = itertools.count()
        #: Connections and listeners with events to fire, oldest first; each at most
        #: once (``_queued``), so the queue is bounded by the tables.
        self._pending: deque[Tcb | Listener] = deque()
        self._queued: set[Tcb | Listener] = set()
        self._firing = False
        self._ca_second = -1
        self._ca_count = 0
        #: Between begin_batch() and end_batch(): connections whose output waits.
        self.batching = False
        self._deferred: dict[Tcb, None] = {}

    # ------------------------------------------------------------------ misc
    def count(self, reason: str) -> None:
        """Count one event or drop by reason."""
        self.counters[reason] += 1

    def challenge_ack_allowed(self, now: float) -> bool:
        """RFC 5961 §7: at most challenge_ack_limit challenge ACKs per second."""
        sec = int(now)
        if sec != self._ca_second:
            self._ca_second = sec
            self._ca_count = 0
        if self._ca_count >= self.config.challenge_ack_limit:
            return False
        self._ca_count += 1
        return True

    # ------------------------------------------------------------------ batches
    def begin_batch(self) -> None:
        """The driver is about to feed a batch of frames read together.

        Until :meth:`end_batch`, segments that arrive for a connection do not
        make it transmit or acknowledge at once: each connection gets one output
        pass at the end, with every ACK and all data of the batch taken in
        (fewer, larger segments; one ACK for several data segments, as GRO gives
        a kernel). ACKs that carry SACK information still leave at once.
        """
        self.batching = True

    def end_batch(self, now: float) -> None:
        """The batch is over: one output pass for each connection that had input."""
        self.batching = False
        pending, self._deferred = self._deferred, {}
        for tcb in pending:
            output_after_batch(tcb, now)
            self.schedule(tcb)
        self.flush_events()

    def defer_output(self, tcb: Tcb) -> None:
        """Remember ``tcb`` for the output pass of :meth:`end_batch` (once each;
        the dict is bounded by the connection table)."""
        self._deferred[tcb] = None

    # ------------------------------------------------------------------ input
    def input(self, skb: SkBuff, src: bytes, dst: bytes, now: float) -> None:
        """One TCP segment from the IP layer (``skb.data`` at the TCP header)."""
        self.counters["segs_in"] += 1
        seg = skb.view()
        try:
            hdr = TcpHeader.parse(seg)
            if not skb.vnet_flags & _CSUM_TRUSTED and not verify_tcp_checksum(src, dst, seg):
                self.count("tcp_bad_checksum")
                return
        except WireError as e:
            self.count(e.reason)
            return
        payload = seg[hdr.header_len:]
        tcb = self.connections.get((dst, hdr.dport, src, hdr.sport))
        if tcb is not None and tcb.state is TcpState.TIME_WAIT:
            if timewait.reuse(self, tcb, hdr):
                tcb = None
            elif type(tcb) is TimeWait:
                timewait.segment_arrives(tcb, hdr, payload, now)
                self.after_call(tcb)
                return
        if tcb is not None:
            if tcb.input_hook is None or not tcb.input_hook(tcb, hdr, skb, now):
                segment_arrives(tcb, hdr, payload, now)
            self.after_call(tcb)
            return
        lst = (self.listeners.get((dst, hdr.dport))
               or self.listeners.get((ANY if len(dst) == 4 else ANY6, hdr.dport)))
        if lst is not None:
            self._listen_input(lst, hdr, payload, src, dst, now)
        else:
            self.count("no_connection")
            self.reply_rst(dst, src, hdr, len(payload), now)
        self.flush_events()

    def reply_rst(self, local: bytes, remote: bytes, hdr: TcpHeader, plen: int,
                  now: float) -> None:
        """RST for a segment that belongs to no connection (RFC 9293 §3.10.7.1).

        Never in answer to a RST.
        """
        if hdr.flags & RST:
            return
        if hdr.flags & ACK:
            rst = TcpHeader(hdr.dport, hdr.sport, hdr.ack, 0, RST, 0)
        else:
            seg_len = plen + (1 if hdr.flags & SYN else 0) + (1 if hdr.flags & FIN else 0)
            rst = TcpHeader(hdr.dport, hdr.sport, 0, seq.add(hdr.seq, seg_len), RST | ACK, 0)
        self.count("rst_sent")
        output.emit(self, local, remote, rst, [], 0, False, 0, now)

    # ------------------------------------------------------------------ listen
    def listen(self, addr: bytes, port: int, backlog: int = 128) -> Listener:
        """Passive open on (addr, port); ``addr`` 0.0.0.0 listens on every IPv4
        address, :: on every IPv6 one."""
        if not 0 < port < 65536:
            raise TcpAddressError(f"bad port {port}")
        if (addr, port) in self.listeners:
            raise TcpAddressError("address already in use")
        lst = Listener(self, addr, port, min(backlog, self.config.accept_backlog))
        self.listeners[(addr, port)] = lst
        return lst

    def _listen_input(self, lst: Listener, hdr: TcpHeader, payload: memoryview,
                      src: bytes, dst: bytes, now: float) -> None:
        """RFC 9293 §3.10.7.2: a segment for a listener."""
        flags = hdr.flags
        if flags & RST:
            self.count("listen_rst")
            return
        if lst.own_interface_only and not self._via_own_interface(lst, src):
            self.count("listen_wrong_iface")
            self.reply_rst(dst, src, hdr, len(payload), now)
            return
        if flags & ACK:
            if not flags & SYN and self._cookie_ack(lst, hdr, payload, src, dst, now):
                return
            self.reply_rst(dst, src, hdr, len(payload), now)
            return
        if not flags & SYN:
            self.count("listen_no_syn")
            return
        if len(lst.accept_queue) >= lst.backlog:
            self.count("listen_overflow")
            return
        full_table = len(self.connections) >= self.config.max_connections
        if lst.syn_queue_len >= self.config.syn_backlog or full_table:
            if self.config.syncookies:
                self._cookie_synack(hdr, src, dst, now)
            else:
                self.count("syn_queue_full")
            return
        tcb = self._new_passive(lst, hdr, src, dst, now)
        if tcb is not None:
            output.send_syn(tcb, now)
            self.after_call(tcb)

    def _via_own_interface(self, lst: Listener, src: bytes) -> bool:
        """Whether the route back to ``src`` leaves through the listener's interface."""
        route = self.ip.route(src)
        return route is not None and route.src == lst.addr

    def _new_passive(self, lst: Listener, hdr: TcpHeader, src: bytes, dst: bytes,
                     now: float) -> Tcb | None:
        route = self.ip.route(src)
        if route is None:
            self.count("no_route")
            return None
        tcb = Tcb(self, dst, hdr.dport, src, hdr.sport, route, now)
        tcb.passive = True
        tcb.listener = lst
        if lst.tcb_setup is not None:
            lst.tcb_setup(tcb)
        iss = self.isn_gen.isn(dst, hdr.dport, src, hdr.sport, now)
        _init_send_seq(tcb, iss)
        tcb.irs = hdr.seq
        tcb.rcv_nxt = tcb.rcv_adv = seq.add(hdr.seq, 1)
        apply_peer_syn(tcb, hdr.options, now, we_sent_syn=False)
        tcb.cc.set_mss(tcb.mss)
        tcb.snd_wnd = tcb.max_snd_wnd = hdr.window  # RFC 7323 §2.2: unscaled in a SYN
        tcb.snd_wl1 = hdr.seq
        tcb.snd_wl2 = iss
        tcb.apply(Event.SYN_RCVD)
        tcb.syn_time = now
        tcb.in_syn_queue = True
        lst.syn_queue_len += 1
        self._hash(tcb)
        return tcb

    def _cookie_synack(self, hdr: TcpHeader, src: bytes, dst: bytes, now: float) -> None:
        """Answer a SYN statelessly with a SYN cookie (RFC 4987 §3.6)."""
        self.count("syncookies_sent")
        route = self.ip.route(src)
        if route is None:
            self.count("no_route")
            return
        peer = hdr.options
        mss = send_mss(self.config.mss_min, peer.mss, 0xFFFF)  # never 0: a table index
        cookie, _mss = self.cookies.make(dst, hdr.dport, src, hdr.sport, hdr.seq, mss, now)
        adv_mss = family_of(dst).tcp_mss(route.mtu)
        opts = TcpOptions(mss=adv_mss)
        if peer.timestamp is not None and self.config.timestamps:
            # Window scale and SACK-permitted survive only inside our TSval.
            ws = peer.wscale if self.config.window_scaling else None
            sack = peer.sack_permitted and self.config.sack
            base = (int(now * 1000) + self.ts_offset_for(dst, src)) & seq.MASK
            opts.timestamp = (encode_ts_options(base, None if ws is None else min(ws, 14),
                                                sack), peer.timestamp[0])
            if ws is not None:
                opts.wscale = output.wscale_for_buffer(self._rcvbuf_limit())
            opts.sack_permitted = sack
        synack = TcpHeader(hdr.dport, hdr.sport, cookie, seq.add(hdr.seq, 1), SYN | ACK,
                           min(self._rcvbuf_initial(), 0xFFFF), options=opts)
        output.emit(self, dst, src, synack, [], 0, False, 0, now)

    def _rcvbuf_initial(self) -> int:
        cfg = self.config
        return cfg.rcvbuf_initial if cfg.rcvbuf_autotune else cfg.rcvbuf

    def _rcvbuf_limit(self) -> int:
        cfg = self.config
        return cfg.rcvbuf_max if cfg.rcvbuf_autotune else cfg.rcvbuf

    def _cookie_ack(self, lst: Listener, hdr: TcpHeader, payload: memoryview,
                    src: bytes, dst: bytes, now: float) -> bool:
        """The ACK completing a cookie handshake: build the connection from the cookie."""
        if not self.config.syncookies or len(lst.accept_queue) >= lst.backlog:
            return False
        client_isn = seq.add(hdr.seq, -1)
        cookie = seq.add(hdr.ack, -1)
        mss = self.cookies.check(dst, hdr.dport, src, hdr.sport, client_isn, cookie, now)
        route = self.ip.route(src)
        if mss is None or route is None or len(self.connections) >= self.config.max_connections:
            self.count("syncookie_invalid")
            return False
        self.count("syncookies_ok")
        tcb = Tcb(self, dst, hdr.dport, src, hdr.sport, route, now)
        tcb.passive = True
        tcb.listener = lst
        _init_send_seq(tcb, cookie)
        tcb.snd_una = tcb.snd_nxt = tcb.recover = hdr.ack
        tcb.irs = client_isn
        tcb.rcv_nxt = hdr.seq
        tcb.rcv_adv = seq.add(hdr.seq, min(tcb.rcvbuf, 0xFFFF))
        peer = TcpOptions(mss=mss)
        ts = hdr.options.timestamp
        decoded = decode_ts_options(ts[1]) if ts is not None else None
        if ts is not None and decoded is not None and self.config.timestamps:
            peer.timestamp = ts
            peer.wscale, peer.sack_permitted = decoded
            tcb.ts_offset = self.ts_offset_for(dst, src)
        apply_peer_syn(tcb, peer, now, we_sent_syn=False)
        if tcb.wscale_ok:
            tcb.rcv_wscale = output.wscale_for_buffer(tcb.rcvbuf_limit)
        tcb.cc.set_mss(tcb.mss)
        tcb.snd_wnd = tcb.max_snd_wnd = hdr.window << tcb.snd_wscale
        tcb.snd_wl1, tcb.snd_wl2 = hdr.seq, hdr.ack
        tcb.apply(Event.COOKIE_ACK)
        self._hash(tcb)
        tcb.post("established")
        self.listener_established(tcb)
        segment_arrives(tcb, hdr, payload, now)
        self.after_call(tcb)
        return True

    def listener_established(self, tcb: Tcb) -> None:
        """A passive connection completed its handshake: move it to the accept queue."""
        lst = tcb.listener
        if tcb.in_syn_queue and lst is not None:
            tcb.in_syn_queue = False
            lst.syn_queue_len -= 1
        if lst is None or lst.closed:
            tcb.abort(tcb.now)
            return
        if len(lst.accept_queue) >= lst.backlog:
            self.count("accept_queue_overflow")
            tcb.abort(tcb.now)
            return
        lst.accept_queue.append(tcb)
        self._note(lst)

    # ------------------------------------------------------------------ connect
    def connect(self, dst: bytes, dport: int, now: float, *, src: bytes | None = None,
                sport: int | None = None,
                setup: Callable[[Tcb], None] | None = None) -> Tcb:
        """Active open: send a SYN and return the new connection (in SYN-SENT).

        ``setup`` may adjust the new connection (MSS, window scale, buffers) before
        its SYN is built.
        """
        route = self.ip.route(dst)
        if route is None:
            raise TcpAddressError("no route to host")
        if not 0 < dport < 65536:
            raise TcpAddressError(f"bad port {dport}")
        if len(self.connections) >= self.config.max_connections:
            raise TcpAddressError("connection table full")
        src = src or route.src
        if len(src) != len(dst):
            raise TcpAddressError("the local address is not of the destination's family")
        if sport is None:
            sport = self._ephemeral(src, dst, dport)
        elif (src, sport, dst, dport) in self.connections:
            raise TcpAddressError("address already in use")
        tcb = Tcb(self, src, sport, dst, dport, route, now)
        _init_send_seq(tcb, self.isn_gen.isn(src, sport, dst, dport, now))
        tcb.apply(Event.SYN_SENT)
        tcb.syn_time = now
        if setup is not None:
            setup(tcb)
        self._hash(tcb)
        output.send_syn(tcb, now)
        self.after_call(tcb)
        return tcb

    def note_time_wait(self, tcb: Tcb) -> None:
        """``tcb`` entered TIME-WAIT: the table keeps a small record in its place
        (timewait.py), unless a splice or an input hook may want its segments; past
        ``max_time_wait`` the oldest ends now, as Linux does past tcp_max_tw_buckets."""
        conn: Conn = tcb
        if tcb.hashed and tcb.splice is None and tcb.input_hook is None:
            tw = TimeWait(tcb, tcb.timer_close if tcb.timer_close is not None
                          else tcb.now + 2 * self.config.msl)
            tcb.timer_close = None
            tcb.hashed = False
            self.connections[(tcb.local, tcb.local_port, tcb.remote, tcb.remote_port)] = tw
            self.schedule(tw)
            conn = tw
        q = self._time_waits
        while q and not q[0].hashed:
            q.popleft()  # ended already (2*MSL over, reset, reused)
        q.append(conn)
        while len(q) > self.config.max_time_wait:
            old = q.popleft()
            if old.state is TcpState.TIME_WAIT and old.hashed:
                if type(old) is TimeWait:
                    old.end(Event.TIMEOUT)
                else:
                    old.apply(Event.TIMEOUT)
                self.count("time_wait_recycled")

    def forget(self, tw: TimeWait) -> None:
        """Remove an ended TIME-WAIT record from the table."""
        key = (tw.local, tw.local_port, tw.remote, tw.remote_port)
        if self.connections.get(key) is tw:
            del self.connections[key]

    def ts_offset_for(self, local: bytes, remote: bytes) -> int:
        """Our timestamp clock's offset toward ``remote``: keyed per address pair, as
        RFC 7323 §5.4 suggests, so that every connection to one peer sees one
        monotonic clock. A new connection reusing a 4-tuple the peer still holds in
        TIME-WAIT then carries newer timestamps, which the peer accepts (RFC 6191);
        a random offset per connection made such SYNs look old to its PAWS check."""
        digest = hashlib.blake2s(local + remote, key=self._ts_key, digest_size=4).digest()
        return int.from_bytes(digest, "big")

    def _ephemeral(self, src: bytes, dst: bytes, dport: int) -> int:
        """RFC 6056 §3.3.3 (Algorithm 3): a keyed per-destination offset plus a global
        counter, so that ports toward one destination are used in turn, not reused at
        random while the peer may still hold them in TIME-WAIT. With a ``port_shard``
        only this worker's ports qualify (stack/netdev/steer.py)."""
        index, count = self.config.port_shard
        lo, hi = self.config.ephemeral_ports
        n = hi - lo + 1
        digest = hashlib.blake2s(src + dst + dport.to_bytes(2, "big"), key=self._port_key,
                                 digest_size=4).digest()
        offset = int.from_bytes(digest, "big")
        for i in range(n):
            port = lo + (offset + self._port_counter + i) % n
            if count > 1 and queue_of(port, dport, count) != index:
                continue  # another worker's queue
            if (src, port, dst, dport) not in self.connections:
                self._port_counter += i + 1
                return port
        raise TcpAddressError("no free ephemeral port")

    # ------------------------------------------------------------------ ICMP
    def icmp_error(self, local: bytes, remote: bytes, sport: int, dport: int, type: int,
                   code: int, now: float, *, mtu: int = 0,
                   seg_seq: int | None = None) -> None:
        """An ICMP error about one of our segments (RFC 5927, RFC 1122 §4.2.3.9).

        Soft errors are remembered (reported if the connection later times out);
        port or protocol unreachable during SYN-SENT refuses the connection.
        ``seg_seq`` (the quoted segment's sequence number, when the IP layer passes
        it) must lie in [SND.UNA, SND.NXT) (RFC 5927 §4.1); "fragmentation needed"
        with a next-hop ``mtu`` lowers the MSS (RFC 1191).
        """
        tcb = self.connections.get((local, sport, remote, dport))
        if tcb is None:
            self.count("icmp_no_connection")
            return
        if isinstance(tcb, TimeWait):  # (``type`` is a parameter here)
            # Nothing in flight: every quoted sequence number is outside [una, nxt).
            self.count("icmp_out_of_window" if seg_seq is not None else "icmp_soft_error")
            return
        tcb.now = now
        if seg_seq is not None and not (seq.le(tcb.snd_una, seg_seq)
                                        and seq.lt(seg_seq, tcb.snd_nxt)):
            self.count("icmp_out_of_window")
            return
        if type == 3 and code == 4 and mtu:
            outcome = output.path_mtu_changed(tcb, mtu, now)
            self.count("icmp_pmtu_ignored" if outcome == "ignored" else "icmp_frag_needed")
            if outcome == "clamped":
                self.count("icmp_pmtu_clamped")
        elif tcb.state is TcpState.SYN_SENT and type == 3 and code in (2, 3):
            self.count("icmp_hard_error")
            tcb.fail(TcpRefused(f"ICMP destination unreachable (code {code})"))
        else:
            self.count("icmp_soft_error")
            tcb.soft_error = TcpError(f"ICMP type {type} code {code}")
        self.after_call(tcb)

    # ------------------------------------------------------------------ table
    def _hash(self, tcb: Tcb) -> None:
        key = (tcb.local, tcb.local_port, tcb.remote, tcb.remote_port)
        self.connections[key] = tcb
        tcb.hashed = True
        arm_keepalive(tcb, tcb.now)

    def unhash(self, tcb: Tcb) -> None:
        """Remove a connection from the table (it reached CLOSED or was released)."""
        if not tcb.hashed:
            key = (tcb.local, tcb.local_port, tcb.remote, tcb.remote_port)
            tw = self.connections.get(key)
            if type(tw) is TimeWait and tw.tcb() is tcb:
                tw.end(Event.DROP)  # the application aborted it in TIME-WAIT
            return
        tcb.hashed = False
        key = (tcb.local, tcb.local_port, tcb.remote, tcb.remote_port)
        if self.connections.get(key) is tcb:
            del self.connections[key]
        lst = tcb.listener
        if lst is not None:
            if tcb.in_syn_queue:
                tcb.in_syn_queue = False
                lst.syn_queue_len -= 1
            if tcb in lst.accept_queue:
                lst.accept_queue.remove(tcb)

    # ------------------------------------------------------------------ timers
    def schedule(self, tcb: Conn) -> None:
        """Make sure the heap holds an entry no later than ``tcb``'s next deadline."""
        d = tcb.deadline()
        if d is None or not tcb.hashed:
            return
        if tcb.heap_deadline is not None and tcb.heap_deadline <= d:
            return
        tcb.heap_deadline = d
        heapq.heappush(self._heap, (d, next(self._tie), tcb))
        if len(self._heap) > 4 * len(self.connections) + 64:
            self._rebuild_heap()

    def _rebuild_heap(self) -> None:
        self._heap = []
        for tcb in self.connections.values():
            d = tcb.deadline()
            tcb.heap_deadline = d
            if d is not None:
                self._heap.append((d, next(self._tie), tcb))
        heapq.heapify(self._heap)

    def _stale(self, entry: tuple[float, int, Conn]) -> bool:
        d, _, tcb = entry
        return not tcb.hashed or tcb.heap_deadline != d

    def next_deadline(self) -> float | None:
        """When :meth:`on_timer` must be called next (None: no timer armed)."""
        for _ in range(len(self._heap) + 1):
            if not self._heap:
                return None
            entry = self._heap[0]
            if self._stale(entry):
                heapq.heappop(self._heap)
                continue
            d, _, tcb = entry
            actual = tcb.deadline()
            if actual == d:
                return d
            # The timer moved later or was stopped: requeue at its real deadline.
            heapq.heappop(self._heap)
            tcb.heap_deadline = None
            self.schedule(tcb)
        return self._heap[0][0] if self._heap else None

    def on_timer(self, now: float) -> None:
        """Run every connection timer due at ``now``."""
        heap = self._heap
        due: list[Conn] = []
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if self._stale(entry):
                continue
            tcb = entry[2]
            tcb.heap_deadline = None
            due.append(tcb)
        for tcb in due:
            d = tcb.deadline()
            if d is not None and d <= now:
                if type(tcb) is TimeWait:
                    tcb.expire(now)
                else:
                    run_timers(tcb, now)
            self.schedule(tcb)
        self.flush_events()

    # ------------------------------------------------------------------ events
    def note_events(self, tcb: Tcb) -> None:
        """``tcb`` has events to fire."""
        self._note(tcb)

    def _note(self, obj: Tcb | Listener) -> None:
        if obj not in self._queued:
            self._queued.add(obj)
            self._pending.append(obj)

    def after_call(self, tcb: Conn) -> None:
        """End of an entry point: reschedule ``tcb`` and fire queued events."""
        self.schedule(tcb)
        self.flush_events()

    def flush_events(self) -> None:
        """Fire queued events; callbacks may call back into TCP (queued again).

        One flush fires at most ``max_events`` connections' or listeners' events,
        so that callbacks that keep posting cannot hold the caller forever; the
        rest stay queued, in order, for the next flush (every entry point ends
        with one) and are counted as ``events_deferred``.
        """
        pending = self._pending
        if self._firing or not pending:
            return  # (most entry points: nothing queued)
        self._firing = True
        queued = self._queued
        try:
            rounds = self.config.max_events
            while pending and rounds > 0:
                rounds -= 1
                obj = pending.popleft()
                queued.discard(obj)
                if isinstance(obj, Listener):
                    obj.fire()
                    continue
                events, obj.events = obj.events, []
                cb = obj.on_event
                for ev in events:
                    if cb is not None:
                        cb(obj, ev)
            if pending:
                self.counters["events_deferred"] += len(pending)
        finally:
            self._firing = False

    def events_pending(self) -> int:
        """Connections and listeners whose events wait for the next flush."""
        return len(self._pending)


def _init_send_seq(tcb: Tcb, iss: int) -> None:
    tcb.iss = iss
    tcb.snd_una = iss
    tcb.snd_nxt = iss
    tcb.snd_up = iss
    tcb.write_seq = seq.add(iss, 1)
    tcb.recover = iss

