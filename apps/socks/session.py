"""A spliced SOCKS5 session as a state machine on the client connection's TCB.

In splice mode the common session (SOCKS5, no authentication, CONNECT to an address
the policy answers at once) needs no task, no streams and no transport: the session
takes the TCB's events itself (``on_event``, fired where TCP's entry points end), parses
each message where it arrives, answers in the same step (so the greeting's ACK rides
on the method selection, the reply leaves in the step the server's SYN-ACK arrives),
waits for the server connection on its TCB's events too, and hands both TCBs to the
splice (DESIGN.md: no task per session where a protocol state machine does).

Everything else keeps the coroutine path of apps/socks/server.py, which the session
hands over to with what it has read so far (a TcpTransport, a StackStreamReader and a
task made then): SOCKS4, RFC 1929 authentication, UDP ASSOCIATE, names for the
resolver and names with several addresses, and a client that half-closed before the
splice (copied). The access-log lines and counters are the same on both paths: the
outcomes below are the coroutine path's, step for step.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from apps.socks import protocol as p
from apps.socks.protocol import Address, Command, Method, Rep, SocksError
from stack.streamreader import StackStreamReader
from stack.streams import TcpTransport
from stack.tcp.api import TcpState
from stack.wire.ipv4 import ip_str

if TYPE_CHECKING:
    from apps.clientslots import Ticket
    from apps.socks.server import Session, SocksServer
    from stack.streams import Driver
    from stack.tcp.tcb import Tcb

#: Bytes read ahead of the parser during the handshake (two whole messages fit; what
#: the client sends beyond stays in the TCB, whose window then closes).
READ_AHEAD = 2 * p.MAX_MESSAGE

Work = Callable[[asyncio.StreamReader, asyncio.StreamWriter, list[asyncio.StreamWriter]],
                Coroutine[Any, Any, None]]


class Stage(enum.Enum):
    """Where a session is (the one field its state machine moves)."""

    ADMITTING = "admitting"    # accepted; admission is due (deferred when refusing)
    GREETING = "greeting"      # waiting for the version identifier/method selection
    REQUEST = "request"        # method selection sent, waiting for the request
    CONNECTING = "connecting"  # intend_splice done, the server connection's handshake runs
    HANDED_OVER = "handed_over"  # the coroutine path has it (a task with streams)
    DONE = "done"              # spliced, or ended and logged


class SpliceSession:
    """One client connection of a splice-mode SOCKS server (see the module docstring).
    It is the connection's only user until the splice or a hand-over, and offers what
    the server's admission needs of a transport (get_extra_info, close, abort)."""

    __slots__ = ("server", "tcb", "driver", "stage", "buf", "unsent", "closing", "timer",
                 "deadline", "s", "ticket", "server_tcb")

    def __init__(self, server: SocksServer, tcb: Tcb, driver: Driver) -> None:
        self.server = server
        self.tcb = tcb
        self.driver = driver
        self.stage = Stage.ADMITTING
        self.buf = bytearray()         # read, not parsed yet
        self.unsent = bytearray()      # written, not taken by the TCB yet
        self.closing = False
        self.timer: asyncio.TimerHandle | None = None
        self.deadline = 0.0
        self.s: Session | None = None
        self.ticket: Ticket | None = None
        self.server_tcb: Tcb | None = None

    @classmethod
    def accept(cls, server: SocksServer, tcb: Tcb, driver: Driver) -> SpliceSession:
        """A connection the listener accepted (its ``on_accept``). A connection to
        refuse or close is dealt with on the next loop turn, as the coroutine path's
        task would: not inside the TCP layer's accept."""
        self = cls(server, tcb, driver)
        # As asyncio does for its TCP transports: short answers leave at once.
        tcb.nodelay = True
        tcb.on_event = self._client_event
        ip = ip_str(tcb.remote)
        pol = server.policy
        allowed = pol.client_allowed(ip)
        if (server.active >= pol.max_connections or server.slots.refusal(ip) is not None
                or not allowed):
            asyncio.get_running_loop().call_soon(self._start, allowed)
        else:
            self._start(allowed)
        return self

    # -- what admission needs of a transport -------------------------------------------
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """peername, sockname and tcb, as the stack's TcpTransport gives them."""
        tcb = self.tcb
        if name == "peername":
            return ip_str(tcb.remote), tcb.remote_port
        if name == "sockname":
            return ip_str(tcb.local), tcb.local_port
        if name == "tcb":
            return tcb
        return default

    def close(self) -> None:
        """FIN after what is written (the TCB resets instead if unread data is left,
        RFC 2525 §2.17, as a closed transport's would)."""
        self.closing = True
        if not self.unsent and self.tcb.state is not TcpState.CLOSED:
            self.tcb.close(self.driver.now())
        self._poke()

    def abort(self) -> None:
        """Reset the connection now."""
        self.closing = True
        self.unsent.clear()
        self.tcb.on_event = None
        if self.tcb.state is not TcpState.CLOSED:
            self.tcb.abort(self.driver.now())
        self._poke()

    def write(self, data: bytes) -> None:
        """Send ``data`` (what the send buffer does not take waits for "writable")."""
        if self.closing or self.tcb.state is TcpState.CLOSED:
            return
        if not self.unsent:
            try:
                n = self.tcb.send(data, self.driver.now())
            except OSError:
                return   # the connection failed: its event ends the session
            if n == len(data):
                self._poke()
                return
            data = data[n:]
        self.unsent += data

    def _flush(self) -> None:
        try:
            n = self.tcb.send(self.unsent, self.driver.now()) if self.unsent else 0
        except OSError:
            n = len(self.unsent)
        del self.unsent[:n]
        if not self.unsent and self.closing and self.tcb.state is not TcpState.CLOSED:
            self.tcb.close(self.driver.now())
        self._poke()

    def _poke(self) -> None:
        # Inside an input batch (a TCB event) the batch's end sends and re-arms.
        if not self.tcb.layer.batching:
            self.driver.poke()

    # -- the client connection's events ------------------------------------------------
    def _client_event(self, tcb: Tcb, event: str) -> None:
        if event == "writable":
            if self.unsent:
                self._flush()
        elif event == "readable" or event == "eof":
            self._read()
        elif event == "error" or event == "closed":
            self._read()
            self._lost(tcb.error)

    def _start(self, allowed: bool) -> None:
        """Admission (``allowed``: the policy lets the client's address in)."""
        admitted = self.server.admit(self)
        if admitted is None:
            self.stage = Stage.DONE
            return
        self.s, self.ticket = admitted
        srv = self.server
        if srv.policy.auth_required:
            s, ticket = self.s, self.ticket
            self._hand_over(lambda r, w, c: srv._serve(r, w, s, c, ticket))
            return
        if not allowed:
            srv.counters["client_denied"] += 1
            self._end("client not allowed")
            return
        loop = asyncio.get_running_loop()
        self.deadline = loop.time() + srv.policy.handshake_timeout
        self.timer = loop.call_at(self.deadline, self._handshake_timeout)
        self.stage = Stage.GREETING
        self._read()   # what arrived with the handshake (or before a deferred start)
        if self.tcb.state is TcpState.CLOSED:
            self._lost(self.tcb.error)

    def _read(self) -> None:
        """Take what the handshake may read and parse it; the client's FIN ends it."""
        if self.stage is not Stage.GREETING and self.stage is not Stage.REQUEST:
            return   # reading is paused from intend_splice on (docs/splice.md §1.2)
        tcb = self.tcb
        while True:
            room = READ_AHEAD - len(self.buf)
            if room <= 0 or not tcb.recv_available():
                break
            self.buf += tcb.recv(room)
            try:
                if self.stage is Stage.GREETING:
                    self._greeting()
                if self.stage is Stage.REQUEST:
                    self._request()
            except Exception as e:  # a bug must not leak the connection
                self._internal_error(e)
                return
            if self.stage is not Stage.GREETING and self.stage is not Stage.REQUEST:
                return
        if ((self.stage is Stage.GREETING or self.stage is Stage.REQUEST)
                and tcb.eof_received and not tcb.recv_available()):
            self._handshake_over()
            self._end("client closed during the handshake")

    def _lost(self, exc: Exception | None) -> None:
        """Reset (or gone) during the handshake: the session ends as the coroutine
        path's read would end it. Later the server connection's outcome decides."""
        if self.stage is not Stage.GREETING and self.stage is not Stage.REQUEST:
            return
        self._handshake_over()
        if exc is None:
            self._end("client closed during the handshake")
        elif isinstance(exc, ConnectionError):
            self._end(str(exc))
        elif isinstance(exc, TimeoutError):
            self.server.counters["handshake_timeout"] += 1
            self._end("handshake timeout")
        else:
            self._end(f"error: {exc}", failed=True)

    # -- the handshake -----------------------------------------------------------------
    def _greeting(self) -> None:
        s, ticket = self.s, self.ticket
        assert s is not None and ticket is not None
        try:
            if not s.version:
                s.version = p.detect_version(self.buf) or 0
            if s.version == p.SOCKS4_VERSION:
                srv, deadline = self.server, self.deadline
                self._hand_over(lambda r, w, c: srv._serve(r, w, s, c, ticket,
                                                           deadline=deadline))
                return
            got = p.parse_greeting(self.buf)
        except SocksError as e:
            self._handshake_over()
            self.server.counters[f"bad_{e.reason}"] += 1
            self._end(f"bad request: {e}")
            return
        if got is None:
            return
        greeting, n = got
        del self.buf[:n]
        method = Method.NO_AUTH if Method.NO_AUTH in greeting.methods else Method.NO_ACCEPTABLE
        self.write(p.MethodSelection(method).encode())
        if method == Method.NO_ACCEPTABLE:
            # RFC 1928 §3: the client must then close; we do not wait for it.
            self._handshake_over()
            self.server.counters["no_acceptable_method"] += 1
            self._end("no acceptable method")
            return
        self.stage = Stage.REQUEST

    def _request(self) -> None:
        s = self.s
        assert s is not None
        try:
            got = p.parse_request(self.buf)
        except SocksError as e:
            self._handshake_over()
            self._answer(e.reply, f"bad request: {e}")
            return
        if got is None:
            return
        request, n = got
        del self.buf[:n]
        s.dest = str(request.address)
        self._handshake_over()
        if request.command not in (Command.CONNECT, Command.UDP_ASSOCIATE):
            self._answer(Rep.COMMAND_NOT_SUPPORTED, f"command {request.command}")
            return
        if request.command == Command.UDP_ASSOCIATE:
            self._proceed_streams(request, None)
            return
        splice = self.server._spliceable(self)
        ip = self.server.policy.resolve(request.address)
        if not splice or ip is None:
            # Copied (the client half-closed), or a name for the resolver.
            self._proceed_streams(request, splice)
            return
        self._connect(request.address, ip)

    def _handshake_timeout(self) -> None:
        self.timer = None
        if self.stage is Stage.GREETING or self.stage is Stage.REQUEST:
            self._handshake_over()
            self.server.counters["handshake_timeout"] += 1
            self._end("handshake timeout")

    def _handshake_over(self) -> None:
        """The handshake's slot and clock are released (the connection keeps its slot)."""
        assert self.ticket is not None
        self.ticket.handshake_done()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    # -- connect and splice ------------------------------------------------------------
    def _connect(self, address: Address, ip: str) -> None:
        """The one address the policy gave: checked, then intend_splice (server.py
        ``_connect`` for one address)."""
        srv = self.server
        if ":" in ip:
            self._answer(Rep.ADDRESS_TYPE_NOT_SUPPORTED, "IPv6 destination")
            return
        if not srv.policy.destination_allowed(ip, address.port):
            self._answer(Rep.NOT_ALLOWED, "destination not allowed")
            return
        try:
            self.server_tcb = srv.splice.intend_tcb(self.tcb, ip, address.port)
        except OSError as e:
            self._connect_failed(e)
            return
        self.stage = Stage.CONNECTING
        # The server connection's outcome is taken where TCP fires it: the reply
        # leaves in the step the server's SYN-ACK arrives, without a future and a loop
        # turn in between.
        self.server_tcb.on_event = self._server_event
        self.timer = asyncio.get_running_loop().call_later(srv.policy.connect_timeout,
                                                           self._connect_timeout)

    def _server_event(self, tcb: Tcb, event: str) -> None:
        if self.stage is not Stage.CONNECTING:
            return
        if event == "established":
            self._connected(None)
        elif event in ("error", "closed"):
            self._connected(tcb.error or ConnectionResetError("connection closed"))

    def _connect_timeout(self) -> None:
        self.timer = None
        if self.stage is Stage.CONNECTING:
            self._connected(TimeoutError())

    def _connected(self, error: BaseException | None) -> None:
        """The server connection is established, failed (``error``) or took too long
        (a TimeoutError): splice, or give the splice up and answer the client."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        assert self.server_tcb is not None
        try:
            if error is None:
                self._splice()
                return
            self.server_tcb.on_event = None
            self.server.splice.abandon_tcb(self.tcb)
            if not isinstance(error, OSError):
                raise error
            self._connect_failed(error)
        except Exception as e:  # a bug must not leak the connections
            self._internal_error(e)

    def _connect_failed(self, error: OSError) -> None:
        """The reply and note the coroutine path gives a failed connect."""
        from apps.socks.server import _connect_rep
        rep = _connect_rep(error)
        notes: dict[int, str] = {Rep.TTL_EXPIRED: "connect timeout",
                                 Rep.CONNECTION_REFUSED: "refused"}
        self._answer(rep, notes.get(rep, f"connect: {error}"))

    def _splice(self) -> None:
        from apps.socks.server import _received
        s, srv, tcb, ticket = self.s, self.server, self.server_tcb, self.ticket
        assert s is not None and tcb is not None and ticket is not None
        reply = srv._reply(s.version, Rep.SUCCEEDED, (ip_str(tcb.local), tcb.local_port))
        early = bytes(self.buf)   # sent right after the request, before the reply
        self.buf.clear()
        s.up += len(early)
        if self.unsent:   # (only if the client's window was full: never in practice)
            self._flush()
        try:
            pair = srv.splice.splice_tcbs(self.tcb, tcb, reply_to_client=reply,
                                          to_server=early)
        except Exception:
            # Not spliced: the server connection is reset with the client's (_end).
            if tcb.state is not TcpState.CLOSED:
                tcb.abort(self.driver.now())
            raise
        self.stage = Stage.DONE
        s.rep = _received(s.version, Rep.SUCCEEDED)
        s.spliced = True
        srv.counters["rep_0x00"] += 1
        srv.counters["spliced"] += 1
        srv.splice_finished(pair, s, ticket)

    # -- endings -----------------------------------------------------------------------
    def _answer(self, rep: int, note: str) -> None:
        """An error reply, then the session ends with a FIN (server.py ``_answer``)."""
        from apps.socks.server import _received
        s = self.s
        assert s is not None
        s.rep = _received(s.version, rep)
        self.server.counters[f"rep_{rep:#04x}"] += 1
        self.write(self.server._reply(s.version, rep))
        self._end(note)

    def _end(self, note: str, failed: bool = False) -> None:
        """Close (or reset, ``failed``) the client connection; free the slot; log."""
        s = self.s
        assert s is not None and self.ticket is not None
        self.stage = Stage.DONE
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        s.note = note
        if failed:
            self.abort()
        else:
            self.close()
        self.server.session_over(s, self.ticket)

    def _internal_error(self, e: Exception) -> None:
        from apps.socks.server import log
        assert self.s is not None
        log.exception("socks session %s", self.s.client)
        if self.stage is Stage.DONE or self.stage is Stage.HANDED_OVER:
            return  # ended (or the coroutine path's) already
        self._handshake_over()
        self._end(f"internal error: {e!r}", failed=True)

    # -- the hand-over to the coroutine path ---------------------------------------------
    def _proceed_streams(self, request: p.Request, splice: bool | None) -> None:
        from apps.socks.server import _Input
        s, ticket, srv = self.s, self.ticket, self.server
        assert s is not None and ticket is not None
        early = bytes(self.buf)   # read past the request: the server's first bytes
        self.buf.clear()

        def work(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 conns: list[asyncio.StreamWriter]) -> Coroutine[Any, Any, None]:
            inp = _Input(reader)
            inp.buf += early
            return srv._proceed(request, inp, reader, writer, s, conns, ticket, splice)
        self._hand_over(work)

    def _hand_over(self, work: Work) -> None:
        """From here on the session is the coroutine path's: a TcpTransport on the TCB,
        a StackStreamReader holding what was read and not parsed, a StreamWriter, and
        a task running ``work(reader, writer, conns)`` inside the server's ``_run``."""
        assert self.s is not None and self.ticket is not None
        loop = asyncio.get_running_loop()
        self.stage = Stage.HANDED_OVER
        if self.timer is not None:   # the coroutine path keeps its own clock
            self.timer.cancel()
            self.timer = None
        tcb = self.tcb
        reader = StackStreamReader(loop=loop)
        inner = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport = TcpTransport(tcb, inner, self.driver)   # the TCB's events go there
        inner.connection_made(transport)
        if self.unsent:
            transport.write(bytes(self.unsent))
            self.unsent.clear()
        if self.buf:
            reader.feed_data(bytes(self.buf))
            self.buf.clear()
        # What the TCB still holds (and its FIN) goes to the reader now.
        transport.pause_reading()
        transport.resume_reading()
        if tcb.state is TcpState.CLOSED and tcb.on_event is not None:
            tcb.on_event(tcb, "closed")   # its end came before the transport
        writer = asyncio.StreamWriter(transport, inner, reader, loop)
        s, ticket, srv = self.s, self.ticket, self.server
        srv.spawn(srv._run(reader, writer, s, ticket,
                           lambda conns: work(reader, writer, conns)))
