"""asyncio transports, protocols and streams over the stack's TCP.

A :class:`TcpTransport` is an :class:`asyncio.Transport` whose other side is a sans-I/O
:class:`~stack.tcp.tcb.Tcb`, so asyncio's :class:`asyncio.StreamWriter` and
:class:`asyncio.StreamReaderProtocol` work on it unchanged, with the stack's
:class:`~stack.streamreader.StackStreamReader` (an asyncio.StreamReader that can hand
what it buffered over to a splice): ``read``/``readexactly``/``readuntil``, ``write``/``drain`` (back-pressure
from the send buffer, which the peer's window drains), ``write_eof`` (half-close),
``close``/``wait_closed`` and ``get_extra_info``. :class:`TcpApi` provides the
``open_connection``/``start_server``/``create_connection``/``create_server`` calls.

Flow control both ways: the transport pauses the protocol's writing above a high-water
mark of bytes the TCB has not taken yet, and reads from the TCB only while the protocol
has not paused reading (the StreamReader pauses above twice its limit), so an
application that stops reading closes the TCP window instead of growing a buffer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from stack.netfamily import parse_address, sockaddr
from stack.streamreader import DEFAULT_LIMIT, StackStreamReader
from stack.tcp.api import TcpState
from stack.tcp.layer import Listener, TcpLayer
from stack.tcp.tcb import Tcb

READ_CHUNK = 256 * 1024
__all__ = ["DEFAULT_LIMIT", "Driver", "StackStreamReader", "TcpApi", "TcpServer",
           "TcpTransport", "established"]


class Driver(Protocol):
    """What the transports need from the driver: its clock and a nudge after a call."""

    def now(self) -> float: ...
    def poke(self) -> None: ...


class TcpTransport(asyncio.Transport):
    """An asyncio transport on one TCP connection of the stack."""

    def __init__(self, tcb: Tcb, protocol: asyncio.Protocol, driver: Driver) -> None:
        super().__init__()
        self._tcb = tcb
        self._app = protocol
        self._driver = driver
        self._unsent = bytearray()
        self._high = 256 * 1024
        self._low = 64 * 1024
        self._writing_paused = False
        self._reading_paused = False
        self._fin_wanted = False
        self._fin_sent = False
        self._released = False      # tcb.close() called
        self._end_delivered = False
        self._closing = False
        self._lost = False
        self._detached = False
        self._lent = False
        self._close_when_back = False
        #: The StackStreamReader fed by this transport's protocol (it binds itself).
        self._stream_in: StackStreamReader | None = None
        # As asyncio does for its TCP transports (it sets TCP_NODELAY): an application
        # writing a response head and then a short body must not have the body wait
        # for the peer's (perhaps delayed) ACK of the head.
        tcb.nodelay = True
        tcb.on_event = self._on_event

    # -- asyncio.Transport API -------------------------------------------------
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """peername, sockname (IPv6: (host, port, flowinfo, scope_id) like an
        AF_INET6 socket's), tcp_info (a dict like Linux's), tcb (the TCB itself)."""
        tcb = self._tcb
        if name == "peername":
            return sockaddr(tcb.remote, tcb.remote_port)
        if name == "sockname":
            return sockaddr(tcb.local, tcb.local_port)
        if name == "tcp_info":
            return tcb.info()
        if name == "tcb":
            return tcb
        return default

    def bind_reader(self, reader: StackStreamReader) -> None:
        """``reader`` holds what this transport hands to its protocol (called by the
        reader when the protocol gives it the transport)."""
        self._stream_in = reader

    def can_hand_over(self) -> bool:
        """Whether :meth:`take_buffered` can hand over what the protocol buffered (a
        StackStreamReader's bytes, or a protocol that keeps none of its own)."""
        return self._stream_in is not None or not isinstance(
            self._app, asyncio.StreamReaderProtocol)

    def take_buffered(self, limit: int | None = None) -> bytes:
        """What the stream reader took from the connection and the application did not
        read (up to ``limit`` bytes, None: all), removed from it. ValueError if the
        protocol buffers in a reader that is not a StackStreamReader (its bytes could
        not be handed over)."""
        if self._stream_in is not None:
            return self._stream_in.take_buffered(limit)
        if not self.can_hand_over():
            raise ValueError("the stream's reader is not a StackStreamReader: its "
                             "buffered bytes cannot be handed over")
        return b""

    def put_back(self, data: bytes) -> None:
        """Return bytes :meth:`take_buffered` took to the front of the stream reader (a
        splice that was refused)."""
        if data and self._stream_in is not None:
            self._stream_in.put_back(data)

    def is_closing(self) -> bool:
        """True once close() or abort() was called or the connection is gone."""
        return self._closing or self._lost

    def detach(self) -> bytes:
        """Hand the connection over to the splice layer: no more reads or writes through
        this transport; closing it later releases the handle only (no FIN,
        docs/splice.md §1.4). Returns what was written but not yet taken by the TCB."""
        unsent = bytes(self._unsent)
        self._unsent.clear()
        self._detached = True
        self._tcb.on_event = None  # the splice layer owns the connection now
        self._reading_paused = True
        self._check_pause()
        return unsent

    def lend(self) -> bytes:
        """Lend the connection to a one-way splice: writes raise and nothing is
        delivered to the protocol until :meth:`give_back`. Returns what was written
        but not yet taken by the TCB."""
        unsent = bytes(self._unsent)
        self._unsent.clear()
        self._lent = True
        self._check_pause()
        return unsent

    def eof_written(self) -> None:
        """The connection's sending side was ended for this transport (a one-way splice
        relayed the FIN): further writes are refused as after write_eof()."""
        self._fin_wanted = self._fin_sent = True

    def give_back(self) -> None:
        """The one-way splice is over: writes are accepted again, and what arrived
        meanwhile is handed to the protocol."""
        self._lent = False
        if not self._lost and not self._detached:
            self._deliver()
            self._flush()
        if self._close_when_back:
            self.close()

    def close(self) -> None:
        """Send what is buffered, then FIN; the connection is released afterwards."""
        if self._lent:
            self._close_when_back = True  # a one-way splice owns the sending side
            return
        if self._detached:
            self._closing = True
            self._connection_lost(None)
            return
        if self._closing:
            return
        self._closing = True
        self._reading_paused = True
        self._flush()

    def abort(self) -> None:
        """Reset the connection now, dropping buffered data."""
        if self._detached:
            self.close()
            return
        self._closing = True
        self._unsent.clear()
        if self._tcb.state is not TcpState.CLOSED:
            self._tcb.abort(self._driver.now())
            self._driver.poke()
        self._connection_lost(None)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data``; it moves into the TCB as fast as the send buffer allows."""
        if self._detached or self._lent:
            raise RuntimeError("the connection is spliced: write through the splice API")
        if self._fin_wanted or self._closing:
            raise RuntimeError("write after write_eof() or close()")
        if self._lost:
            return
        if not data:
            return
        if not self._unsent and isinstance(data, bytes) and \
                self._tcb.state is not TcpState.CLOSED:
            # TCP keeps a reference to immutable bytes instead of copying them: hand
            # them over directly and keep only what did not fit.
            try:
                n = self._tcb.send(data, self._driver.now())
            except OSError:
                n = 0  # the error event reports it
            if n < len(data):
                self._unsent += memoryview(data)[n:]
        else:
            self._unsent += data
        self._flush()

    def write_eof(self) -> None:
        """Half-close: FIN after everything written so far."""
        if self._fin_wanted:
            return
        self._fin_wanted = True
        self._flush()

    def can_write_eof(self) -> bool:
        """TCP can half-close."""
        return True

    def get_write_buffer_size(self) -> int:
        """Bytes written but not yet taken by the TCB."""
        return len(self._unsent)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        """(low, high) water marks for pause_writing/resume_writing."""
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Set the water marks (asyncio semantics)."""
        if high is None:
            high = 4 * low if low is not None else 256 * 1024
        if low is None:
            low = high // 4
        if not 0 <= low <= high:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) >= 0")
        self._high, self._low = high, low
        self._check_pause()

    def pause_reading(self) -> None:
        """Stop handing data to the protocol (the TCP window will close)."""
        self._reading_paused = True

    def resume_reading(self) -> None:
        """Hand data to the protocol again."""
        if self._reading_paused and not self._closing:
            self._reading_paused = False
            if self._stream_in is None and isinstance(self._app,
                                                      asyncio.StreamReaderProtocol):
                # asyncio's own StreamReader resumes from inside its wait, before it
                # creates the future it waits on: bytes handed over now would wake
                # nobody. They go on the next turn.
                try:
                    asyncio.get_running_loop().call_soon(self._deliver)
                    return
                except RuntimeError:
                    pass
            # A StackStreamReader checks its buffer again after resuming, so handing
            # over at once is safe (and saves a loop turn per resume: a quarter of a
            # copying proxy's throughput); so is it for any plain protocol.
            self._deliver()

    def is_reading(self) -> bool:
        """Whether data is being handed to the protocol."""
        return not self._reading_paused

    # -- the TCB side ------------------------------------------------------------
    def _flush(self) -> None:
        tcb = self._tcb
        if self._lost or self._detached:
            return
        now = self._driver.now()
        if self._unsent and tcb.state is not TcpState.CLOSED:
            try:
                n = tcb.send(self._unsent, now)
            except OSError:
                n = 0  # the error event reports it
            if n:
                del self._unsent[:n]
        if not self._unsent:
            if self._closing and not self._released:
                # close() after write_eof() (or a FIN a one-way splice relayed) still
                # hands the connection over to TCP: it is orphaned, so a peer that
                # never sends its FIN does not keep it in FIN-WAIT-2 for ever.
                self._fin_sent = self._released = True
                tcb.close(now)
                tcb.on_event = self._on_event  # keep hearing about the end
            elif self._fin_wanted and not self._fin_sent:
                self._fin_sent = True
                tcb.shutdown_write(now)
        self._check_pause()
        if not tcb.layer.batching:  # inside a read batch the driver sends at its end
            self._driver.poke()

    def _check_pause(self) -> None:
        size = len(self._unsent)
        if not self._writing_paused and size > self._high:
            self._writing_paused = True
            self._app.pause_writing()
        elif self._writing_paused and size <= self._low:
            self._writing_paused = False
            self._app.resume_writing()

    def _deliver(self) -> None:
        tcb = self._tcb
        if self._detached or self._lent:
            return
        while not self._reading_paused and tcb.recv_available():
            data = tcb.recv(READ_CHUNK)
            if not data:
                break
            self._app.data_received(data)
        if (tcb.eof_received and not tcb.recv_available() and not self._end_delivered
                and not self._reading_paused):
            self._end_delivered = True
            keep_open = self._app.eof_received()
            if not keep_open and not self._closing:
                self.close()
        self._driver.poke()

    def _on_event(self, tcb: Tcb, event: str) -> None:
        if self._detached:
            if event in ("error", "closed"):
                self._connection_lost(None)
            return
        if event in ("readable", "eof"):
            self._deliver()
        elif event == "writable":
            self._flush()
        elif event in ("error", "closed"):
            if event == "closed" and (tcb.recv_available() or not self._end_delivered):
                self._deliver()
            self._connection_lost(tcb.error)

    def _connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._unsent.clear()
        if self._writing_paused:
            self._writing_paused = False
            self._app.resume_writing()
        self._app.connection_lost(exc)


class TcpServer(asyncio.AbstractServer):
    """A listening endpoint; each accepted connection gets a fresh protocol."""

    def __init__(self, api: TcpApi, listener: Listener,
                 factory: Callable[[], asyncio.Protocol]) -> None:
        self._api = api
        self._listener = listener
        self._factory = factory
        self._closed = asyncio.Event()
        listener.on_accept = self._accept

    def _accept(self, tcb: Tcb) -> None:
        protocol = self._factory()
        transport = TcpTransport(tcb, protocol, self._api.driver)
        protocol.connection_made(transport)
        transport._deliver()  # data that arrived with the handshake

    @property
    def sockets(self) -> tuple:
        """No kernel sockets: see :attr:`address`."""
        return ()

    @property
    def address(self) -> tuple:
        """(address, port) listened on; IPv6: (address, port, 0, 0)."""
        return sockaddr(self._listener.addr, self._listener.port)

    @property
    def listener(self) -> Listener:
        """The TCP listener (for splice's init_splice and statistics)."""
        return self._listener

    def close(self) -> None:
        """Stop listening."""
        if not self._closed.is_set():
            self._listener.close(self._api.driver.now())
            self._api.driver.poke()
            self._closed.set()

    def is_serving(self) -> bool:
        """Whether it is still listening."""
        return not self._closed.is_set()

    async def wait_closed(self) -> None:
        """Wait until close() was called."""
        await self._closed.wait()

    async def start_serving(self) -> None:
        """Already serving from creation."""

    async def serve_forever(self) -> None:
        """Serve until closed."""
        await self._closed.wait()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        """The running loop."""
        return asyncio.get_running_loop()

    async def __aenter__(self) -> TcpServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()


def _addr(host: str | bytes | None) -> bytes:
    """A host as 4 or 16 bytes: None and "" are 0.0.0.0 (IPv4 only, as before);
    "::" is every IPv6 address (IPv6 only: asyncio's servers set IPV6_V6ONLY too)."""
    if host is None or host in ("", "0.0.0.0"):
        return b"\0\0\0\0"
    if isinstance(host, bytes):
        return host
    try:
        return parse_address(host)
    except ValueError:
        raise OSError(f"cannot resolve {host!r}: the stack takes IP addresses") from None


def established(tcb: Tcb) -> asyncio.Future[None]:
    """A future that completes when ``tcb``'s handshake does, or fails with its error."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_event(t: Tcb, event: str) -> None:
        if done.done():
            return
        if event == "established":
            done.set_result(None)
        elif event in ("error", "closed"):
            done.set_exception(t.error or ConnectionResetError("connection closed"))

    tcb.on_event = on_event
    return done


class _Handler:
    """Runs a client_connected_cb as asyncio.start_server does, except that a handler
    task that ends cancelled is no error (Python 3.11's own callback asks a cancelled
    task for its exception and logs the CancelledError that raises). What the handler
    left open stays open, as before: a cancelled handler cleans up after itself."""

    def __init__(self, cb: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                    Awaitable[None] | None],
                 loop: asyncio.AbstractEventLoop) -> None:
        self._cb = cb
        self._loop = loop
        self._tasks: set[asyncio.Task[None]] = set()  # strong references while running

    def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        res = self._cb(reader, writer)
        if not asyncio.iscoroutine(res):
            return
        task = self._loop.create_task(res)
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if t.cancelled():
                return
            exc = t.exception()
            if exc is not None:
                self._loop.call_exception_handler({
                    "message": "Unhandled exception in client_connected_cb",
                    "exception": exc, "transport": writer.transport})
                writer.transport.close()

        task.add_done_callback(done)


class TcpApi:
    """asyncio-shaped calls on a stack's TCP: like ``asyncio.open_connection`` & co."""

    def __init__(self, tcp: TcpLayer, driver: Driver) -> None:
        self.tcp = tcp
        self.driver = driver

    async def create_connection(self, protocol_factory: Callable[[], asyncio.Protocol],
                                host: str, port: int, *, local_addr: tuple[str, int] | None
                                = None) -> tuple[TcpTransport, asyncio.Protocol]:
        """Connect to (host, port); like ``loop.create_connection``."""
        src: bytes | None = None
        sport: int | None = None
        if local_addr is not None:
            src, sport = _addr(local_addr[0]), local_addr[1] or None
        tcb = self.tcp.connect(_addr(host), port, self.driver.now(), src=src, sport=sport)
        self.driver.poke()
        try:
            await established(tcb)
        except asyncio.CancelledError:
            tcb.abort(self.driver.now())
            self.driver.poke()
            raise
        protocol = protocol_factory()
        transport = TcpTransport(tcb, protocol, self.driver)
        protocol.connection_made(transport)
        transport._deliver()
        return transport, protocol

    async def create_server(self, protocol_factory: Callable[[], asyncio.Protocol],
                            host: str | None, port: int, *, backlog: int = 128) -> TcpServer:
        """Listen on (host, port); like ``loop.create_server``."""
        listener = self.tcp.listen(_addr(host), port, backlog)
        return TcpServer(self, listener, protocol_factory)

    async def open_connection(self, host: str, port: int, *, limit: int = DEFAULT_LIMIT,
                              **kw: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Like ``asyncio.open_connection``."""
        loop = asyncio.get_running_loop()
        reader = StackStreamReader(limit=limit, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport, _ = await self.create_connection(lambda: protocol, host, port, **kw)
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)

    async def start_server(self, client_connected_cb: Callable[
            [asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None] | None],
            host: str | None, port: int, *, limit: int = DEFAULT_LIMIT,
            backlog: int = 128) -> TcpServer:
        """Like ``asyncio.start_server``."""
        loop = asyncio.get_running_loop()

        def factory() -> asyncio.StreamReaderProtocol:
            reader = StackStreamReader(limit=limit, loop=loop)
            return asyncio.StreamReaderProtocol(reader, _Handler(client_connected_cb, loop),
                                                loop=loop)

        return await self.create_server(factory, host, port, backlog=backlog)
