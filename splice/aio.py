"""Splicing asyncio streams: the helper a proxy author calls.

::

    splice = SpliceApi.attach(net)                          # net: a TapStack
    server = await api.start_server(handle, "198.18.0.2", 1080)
    splice.init_splice(server)
    ...
    async def handle(reader, writer):
        request = await reader.readexactly(...)            # the proxy's own protocol
        s_reader, s_writer = await splice.open_connection(writer, host, port)
        pair = await splice.splice(writer, s_writer, reply_to_client=b"...")
        await splice.wait_closed(pair)                      # relayed by the stack meanwhile

After ``open_connection`` the client connection may not be read; after ``splice`` neither
stream may be used, and closing them releases the handles only (docs/splice.md §1).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

from splice.oneway import OneWay
from splice.pair import SpliceError, SplicePair
from splice.splicer import Splicer
from splice.tap import Tap
from stack.streams import Driver, StackStreamReader, TcpServer, TcpTransport, established
from stack.tcp.tcb import Tcb

if TYPE_CHECKING:
    from stack.core import Stack
    from stack.tcp.layer import TcpLayer


class SpliceHost(Protocol):
    """What :meth:`SpliceApi.attach` needs of a stack: a TapStack (stack/aio.py), a
    stack's TcpApi (stack/streams.py), or anything else with its TCP layer and
    driver. One that also has a ``splicer`` attribute learns the splicer there."""

    @property
    def tcp(self) -> TcpLayer:
        """The stack's TCP layer."""
        ...

    @property
    def driver(self) -> Driver:
        """The clock and the nudge after a call (stack/streams.py)."""
        ...


def _tcb(writer: asyncio.StreamWriter) -> Tcb:
    tcb = writer.transport.get_extra_info("tcb")
    if tcb is None:
        raise SpliceError("not a connection of this stack")
    return tcb


def _transport(writer: asyncio.StreamWriter) -> TcpTransport:
    # Streams of this stack (_tcb found their TCB) have the stack's transport.
    return cast(TcpTransport, writer.transport)


def _take_buffered(writer: asyncio.StreamWriter, limit: int | None) -> bytes:
    """What the stream's reader took from the connection but the application did not
    read (up to ``limit`` bytes, None: all), removed from it (the stack's
    StackStreamReader hands it over; SpliceError for a reader that cannot)."""
    try:
        return _transport(writer).take_buffered(limit)
    except ValueError as e:
        raise SpliceError(str(e)) from None


async def _until_done(ow: OneWay, idle_timeout: float | None) -> None:
    """Wait for a one-way splice to end; TimeoutError after ``idle_timeout`` seconds
    in which it made no progress."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    if ow.outcome is not None:
        return

    def finish(_ow: OneWay) -> None:
        if not done.done():
            done.set_result(None)

    ow.on_done = finish
    while not done.done():
        mark = ow.progress
        try:
            await asyncio.wait_for(asyncio.shield(done), idle_timeout)
        except TimeoutError:
            if ow.progress == mark:
                raise


class TapOverflow(ConnectionError):
    """The tap could not keep a complete copy (the reader fell behind, or the splice
    was reset before the end)."""


def _stream_tap(reader: StackStreamReader, limit: int, total: int | None) -> Tap:
    """A Tap that feeds ``reader``; bounded by ``limit`` bytes not yet read and, when
    ``total`` is given, by that many bytes in all (a cache wants at most one object)."""
    tap = Tap(0, limit=limit)

    def on_data(data: bytes) -> None:
        if reader.buffered_size() + len(data) > limit or (
                total is not None and tap.delivered > total):
            tap._give_up()  # the reader is not keeping up, or has had all it wants
            return
        reader.feed_data(data)

    def on_end(complete: bool) -> None:
        if complete:
            reader.feed_eof()
        else:
            reader.set_exception(TapOverflow("the tap lost part of the stream"))

    tap.on_data, tap.on_end = on_data, on_end
    return tap


class SpliceApi:
    """asyncio-level splice calls on top of a :class:`Splicer`; :meth:`attach` makes
    one for a stack."""

    @classmethod
    def attach(cls, net: SpliceHost, *, window_scheme: str = "rescale",
               **options: Any) -> SpliceApi:
        """Add a splice layer to a stack and return its API. ``net`` is a TapStack
        (stack/aio.py), or a stack's TcpApi (stack/streams.py; on the simulated network
        splice/testing/sim.py does this per host): anything with ``tcp`` (the
        TcpLayer) and ``driver``. ``window_scheme`` and ``options`` (``idle_timeout``,
        ``max_pairs``, ...) go to the :class:`Splicer`. A TapStack learns its splicer
        (``net.splicer``: sessions, drain, counters, the control socket); it takes one
        splice layer only (ValueError for a second)."""
        if getattr(net, "splicer", None) is not None:
            raise ValueError("this stack has a splice layer already")
        tcp = net.tcp
        # The TCP layer's IP service is the stack's core (stack.core.Stack).
        stack = cast("Stack", getattr(net, "stack", None) or tcp.ip)
        splicer = Splicer(stack, tcp, window_scheme=window_scheme, **options)
        if hasattr(net, "splicer"):
            net.splicer = splicer
        return cls(splicer, net.driver)

    def __init__(self, splicer: Splicer, driver: Driver) -> None:
        self.splicer = splicer
        self.driver = driver
        # pair id -> [(until, callback)]: callbacks for "finished" (both directions
        # ended: TIMEWAIT or reset) and "closed" (torn down). No future or task is kept
        # per pair, so idle splices cost nothing here.
        self._callbacks: dict[int, list[tuple[str, Callable[[], None]]]] = {}
        splicer.on_close = self._pair_closed
        splicer.on_finished = self._pair_finished

    def init_splice(self, server: TcpServer) -> None:
        """Connections accepted by ``server`` can be spliced (docs/splice.md §1.1)."""
        self.splicer.init_splice(server.listener)

    async def open_connection(self, client_writer: asyncio.StreamWriter, host: str,
                              port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """intend_splice + connect: the server connection, built from the client's
        options. Raises ConnectionRefusedError, TimeoutError... like open_connection."""
        loop = asyncio.get_running_loop()
        client = _tcb(client_writer)
        dst = ipaddress.IPv4Address(host).packed
        server = self.splicer.intend_splice(client, dst, port, self.driver.now())
        _transport(client_writer).pause_reading()
        self.driver.poke()
        try:
            await established(server)
        except BaseException:
            self.splicer.abandon(client, self.driver.now())
            self.driver.poke()
            raise
        reader = StackStreamReader(loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport = TcpTransport(server, protocol, self.driver)
        protocol.connection_made(transport)
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)

    def intend_tcb(self, client: Tcb, host: str, port: int) -> Tcb:
        """:meth:`open_connection` for a protocol that owns the client connection's TCB
        itself (apps/socks/session.py) and stops reading it from now on: intend_splice,
        and the server connection's TCB, connecting (its ``on_event`` says
        "established", "error" or "closed"; on failure call :meth:`abandon_tcb`). No
        transport, stream or task is made: :meth:`splice_tcbs` splices the TCBs."""
        dst = ipaddress.IPv4Address(host).packed
        server = self.splicer.intend_splice(client, dst, port, self.driver.now())
        self._poke()
        return server

    def abandon_tcb(self, client: Tcb) -> None:
        """Give up the splice :meth:`intend_tcb` began (the server connection failed or
        took too long): the server connection is reset, the client's is the caller's."""
        self.splicer.abandon(client, self.driver.now())
        self._poke()

    def splice_tcbs(self, client: Tcb, server: Tcb, *, reply_to_client: bytes = b"",
                    to_server: bytes = b"") -> SplicePair:
        """:meth:`splice` for the TCBs of :meth:`intend_tcb`: ``to_server`` (client bytes
        the application read past its request) goes to the server first,
        ``reply_to_client`` is the write allowance n (docs/splice.md §1.3); what the
        client connection holds unread goes to the server too. A misuse raises
        SpliceError as :meth:`splice` does."""
        now = self.driver.now()
        # As a server stream would: the proxy's own bytes leave without Nagle's wait.
        server.nodelay = True
        server.on_event = None      # the splice layer owns both connections now
        client.on_event = None
        if to_server:
            Splicer._force_send(server, to_server, now)
        self.splicer.check_splice(client, server, len(reply_to_client))
        pair = self.splicer.splice(client, server, len(reply_to_client), now)
        if reply_to_client:
            self.splicer.write_owed(client, reply_to_client, now)
        self._poke()
        return pair

    def _poke(self) -> None:
        """Nudge the driver after a call, unless it comes from inside an input batch
        (a TCB's event): the batch's end sends and re-arms the timer anyway."""
        if not self.splicer.tcp.batching:
            self.driver.poke()

    async def open_mirrored(self, like_writer: asyncio.StreamWriter, host: str,
                            port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect with the options of the connection behind ``like_writer`` (docs/splice.md
        §5: its MSS, window scale, SACK and timestamps), without intend_splice: a
        connection that one-way splices (:meth:`relay`) may later join to it."""
        loop = asyncio.get_running_loop()
        like = _tcb(like_writer)
        dst = ipaddress.IPv4Address(host).packed
        conn = self.splicer.tcp.connect(dst, port, self.driver.now(),
                                        setup=lambda t: self.splicer._mirror(t, like))
        self.driver.poke()
        try:
            await established(conn)
        except BaseException:
            if conn.state.name != "CLOSED":
                conn.abort(self.driver.now())
                self.driver.poke()
            raise
        reader = StackStreamReader(loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport = TcpTransport(conn, protocol, self.driver)
        protocol.connection_made(transport)
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)

    async def splice(self, client_writer: asyncio.StreamWriter,
                     server_writer: asyncio.StreamWriter, *,
                     reply_to_client: bytes = b"", tap: str | None = None,
                     tap_limit: int = 4 << 20, tap_total: int | None = None) -> SplicePair:
        """Splice the two connections; ``reply_to_client`` is written to the client
        first (it is the write allowance n of docs/splice.md §1.3). With ``tap`` ("s2c" or
        "c2s") ``pair.tap_reader`` is an asyncio.StreamReader with a copy of that
        direction (TCP Tap, docs/splice.md §6): it ends at the direction's FIN, or with an
        error if the tap fell behind by more than ``tap_limit`` bytes, passed
        ``tap_total`` bytes in all, or the splice was reset — the relay itself never
        waits for it. A misuse (connections not joined by open_connection, not both
        established, spliced already, a bad ``tap``, a client stream whose reader cannot
        hand its bytes over) raises SpliceError and changes nothing: both streams are
        still the application's."""
        client, server = _tcb(client_writer), _tcb(server_writer)
        # A misuse raises before anything changes: both streams stay the application's
        # (docs/splice.md §1).
        self.splicer.check_splice(client, server, len(reply_to_client), tap or "s2c")
        if not _transport(client_writer).can_hand_over():
            raise SpliceError("the client stream's reader cannot hand its bytes over "
                              "(use the stack's StackStreamReader)")
        now = self.driver.now()
        # Bytes the application's stream took from the client but did not consume
        # belong to the server (nothing lost at the seam).
        unread = _take_buffered(client_writer, None)
        pending_to_server = _transport(server_writer).detach()
        _transport(client_writer).detach()
        if pending_to_server:
            Splicer._force_send(server, pending_to_server, now)
        tap_obj = None
        tap_reader = None
        if tap is not None:
            tap_reader = StackStreamReader(limit=tap_limit)
            tap_obj = _stream_tap(tap_reader, tap_limit, tap_total)
        pair = self.splicer.splice(client, server, len(reply_to_client), now, unread=unread,
                                   tap=tap_obj, tap_direction=tap or "s2c")
        pair.tap_reader = tap_reader
        if reply_to_client:
            self.splicer.write_owed(client, reply_to_client, now)
        self.driver.poke()
        return pair

    async def relay(self, source_writer: asyncio.StreamWriter,
                    sink_writer: asyncio.StreamWriter, budget: int | None, *,
                    seam: bytes = b"",
                    tap: bool = False, tap_limit: int = 4 << 20,
                    tap_total: int | None = None,
                    idle_timeout: float | None = None) -> OneWay:
        """One-way splice (docs/splice.md §7): the next ``budget`` bytes the source's peer
        sends go to the sink's peer through the stack; then both streams are the
        application's again (a kept-alive client connection reads its next request).
        With ``budget`` None the splice goes up to the source's FIN, which is relayed
        too: the sink's sending side is then closed (a close-delimited HTTP body).

        ``seam`` is source data the application read but did not use; it goes first
        and counts in the budget (so does what the source's reader has buffered).
        Neither stream may be written meanwhile. Returns the finished splice:
        ``outcome`` is "done" (the sink's peer acknowledged the whole budget),
        "short" (the source ended first), "reset" or "aborted"; after anything but
        "done" the sink connection cannot carry more (reset it). With ``tap``,
        ``ow.tap_reader`` holds a copy of the budget's bytes (bounded as in
        :meth:`splice`). ``idle_timeout``: seconds without a segment moving before
        the splice is aborted (TimeoutError, both connections reset)."""
        src, sink = _tcb(source_writer), _tcb(sink_writer)
        extra = _take_buffered(source_writer, None if budget is None else budget - len(seam))
        now = self.driver.now()
        src_t, sink_t = _transport(source_writer), _transport(sink_writer)
        for tcb, unsent in ((src, src_t.lend()), (sink, sink_t.lend())):
            if unsent:
                Splicer._force_send(tcb, unsent, now)
        tap_obj = tap_reader = None
        if tap:
            tap_reader = StackStreamReader(limit=tap_limit)
            tap_obj = _stream_tap(tap_reader, tap_limit, tap_total)
        try:
            ow = self.splicer.splice_one_way(src, sink, budget, now, seam=seam + extra,
                                             tap=tap_obj)
        except BaseException:
            # Refused: the source's reader gets back what was taken from it, in front
            # of what the connection delivers next.
            src_t.put_back(extra)
            src_t.give_back()
            sink_t.give_back()
            raise
        ow.tap_reader = tap_reader
        self.driver.poke()
        try:
            await _until_done(ow, idle_timeout)
        finally:
            if ow.outcome is None:
                self.splicer.oneway.abort(ow, self.driver.now())
            if ow.outcome == "done" and ow.budget is None:
                sink_t.eof_written()          # the relayed FIN ended its sending side
            src_t.give_back()
            sink_t.give_back()
            self.driver.poke()
        return ow

    def _fire(self, pair: SplicePair, until: str) -> None:
        keep = []
        for kind, cb in self._callbacks.pop(id(pair), []):
            if kind == "finished" or until == "closed":
                cb()
            else:
                keep.append((kind, cb))
        if keep:
            self._callbacks[id(pair)] = keep

    def _pair_closed(self, pair: SplicePair) -> None:
        self._fire(pair, "closed")

    def _pair_finished(self, pair: SplicePair) -> None:
        self._fire(pair, "finished")

    def when_finished(self, pair: SplicePair, callback: Callable[[], None]) -> None:
        """Call ``callback`` once both directions have ended (both FINs acknowledged:
        the pair is in TIMEWAIT) or the splice was reset."""
        if pair.closed or pair.timewait_until is not None:
            asyncio.get_running_loop().call_soon(callback)
        else:
            self._callbacks.setdefault(id(pair), []).append(("finished", callback))

    def when_closed(self, pair: SplicePair, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the pair is torn down (after TIMEWAIT, or a reset)."""
        if pair.closed:
            asyncio.get_running_loop().call_soon(callback)
        else:
            self._callbacks.setdefault(id(pair), []).append(("closed", callback))

    async def wait_finished(self, pair: SplicePair) -> None:
        """Wait until both directions have ended (TIMEWAIT) or the splice was reset."""
        await self._wait(self.when_finished, pair)

    async def wait_closed(self, pair: SplicePair) -> None:
        """Wait until the splice is torn down (TIMEWAIT over, or reset)."""
        await self._wait(self.when_closed, pair)

    @staticmethod
    async def _wait(register: Callable[[SplicePair, Callable[[], None]], None],
                    pair: SplicePair) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not fut.done():
                fut.set_result(None)

        register(pair, wake)
        await fut
