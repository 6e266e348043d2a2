"""A spliced SOCKS5 session as a protocol state machine on the stack's transport.

In splice mode the common session (SOCKS5, no authentication, CONNECT to an address
the policy answers at once, one address) needs no task and no streams: each message is
parsed where it arrives (``data_received``), the method selection and the reply leave
in the same step as the message they answer (so the greeting's ACK rides on the
method selection instead of going out alone), the server connection is a bare TCB
waited for with a callback, and the splice takes both connections from there
(DESIGN.md: no task per session where a protocol state machine does).

Everything else keeps the coroutine path of apps/socks/server.py, which the session
hands over to with what it has read so far: SOCKS4, RFC 1929 authentication, UDP
ASSOCIATE, names that need the resolver, names with several addresses, and a client
that half-closed before the splice (copied). The access-log lines and counters are
the same on both paths: the outcomes below are the coroutine path's, step for step.
"""

from __future__ import annotations

import asyncio
import enum
from typing import TYPE_CHECKING, Any

from apps.socks import protocol as p
from apps.socks.protocol import Address, Command, Method, Rep, SocksError
from stack.streamreader import StackStreamReader
from stack.tcp.api import TcpState
from stack.wire.ipv4 import ip_str

if TYPE_CHECKING:
    from apps.clientslots import Ticket
    from apps.socks.server import Session, SocksServer
    from splice.aio import SpliceApi
    from stack.streams import TcpTransport
    from stack.tcp.tcb import Tcb


class Stage(enum.Enum):
    """Where a session is (the one field its state machine moves)."""

    GREETING = "greeting"      # waiting for the version identifier/method selection
    REQUEST = "request"        # method selection sent, waiting for the request
    CONNECTING = "connecting"  # intend_splice done, the server connection's handshake runs
    HANDED_OVER = "handed_over"  # the coroutine path has it (a task with streams)
    DONE = "done"              # spliced, or ended and logged


class SpliceSession(asyncio.Protocol):
    """One client connection of a splice-mode SOCKS server (see the module docstring)."""

    def __init__(self, server: SocksServer) -> None:
        self.server = server
        self.stage = Stage.DONE
        self.transport: TcpTransport | None = None
        self.buf = bytearray()
        self.inner: asyncio.StreamReaderProtocol | None = None   # after a hand-over
        self.timer: asyncio.TimerHandle | None = None
        self.deadline = 0.0
        self.s: Session | None = None
        self.ticket: Ticket | None = None
        self.server_tcb: Tcb | None = None
        #: The client's FIN or the connection's loss before a deferred start.
        self.early_end: tuple[str, Exception | None] | None = None

    # -- asyncio.Protocol --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Admit the client (limits, allowed addresses) and start the handshake clock.
        A connection to refuse or close is dealt with on the next loop turn, as the
        coroutine path's task would: not inside the TCP layer's accept."""
        self.transport = transport  # type: ignore[assignment]  # the stack's TcpTransport
        srv = self.server
        ip = str((transport.get_extra_info("peername") or ("?", 0))[0])
        if (srv.active >= srv.policy.max_connections or srv.slots.refusal(ip) is not None
                or not srv.policy.client_allowed(ip)):
            asyncio.get_running_loop().call_soon(self._start)
            return
        self._start()

    def _start(self) -> None:
        assert self.transport is not None
        admitted = self.server.admit(self.transport)
        if admitted is None:
            return
        self.s, self.ticket = admitted
        srv = self.server
        if srv.policy.auth_required:
            self._hand_over(lambda r, w, c: srv._serve(r, w, self.s, c, self.ticket))
            self._replay()
            return
        if not srv.policy.client_allowed(self.s.client.rpartition(":")[0]):
            srv.counters["client_denied"] += 1
            self._end("client not allowed")
            return
        loop = asyncio.get_running_loop()
        self.deadline = loop.time() + srv.policy.handshake_timeout
        self.timer = loop.call_at(self.deadline, self._handshake_timeout)
        self.stage = Stage.GREETING
        self._replay()

    def _replay(self) -> None:
        """What arrived before a deferred start, to the state machine or the streams."""
        if self.buf and self.inner is None:
            self.data_received(b"")
        if self.early_end is not None:
            kind, exc = self.early_end
            self.early_end = None
            if kind == "eof":
                self.eof_received()
            else:
                self.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Parse what the stage waits for; answer it at once."""
        if self.inner is not None:
            self.inner.data_received(data)
            return
        self.buf += data
        try:
            if self.stage is Stage.GREETING:
                self._greeting()
            if self.stage is Stage.REQUEST:
                self._request()
        except Exception as e:  # a bug must not leak the connection
            self._internal_error(e)

    def eof_received(self) -> bool | None:
        """The client's FIN: during the handshake it ends the session."""
        if self.inner is not None:
            return self.inner.eof_received()
        if self.s is None:        # before a deferred start: it replays this
            self.early_end = ("eof", None)
        if self.stage is Stage.GREETING or self.stage is Stage.REQUEST:
            self._handshake_over()
            self._end("client closed during the handshake")
        return True  # the transport is closed by _end, or by the splice later

    def connection_lost(self, exc: Exception | None) -> None:
        """Reset (or gone) during the handshake: the session ends; later the server
        connection's outcome decides, as on the coroutine path."""
        if self.inner is not None:
            self.inner.connection_lost(exc)
            return
        if self.s is None:
            self.early_end = ("lost", exc)
        if self.stage is not Stage.GREETING and self.stage is not Stage.REQUEST:
            return
        # What the coroutine path's read would have raised, and how it ends there.
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

    def pause_writing(self) -> None:
        """Back-pressure goes to the streams after a hand-over (nothing else writes much)."""
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        """See :meth:`pause_writing`."""
        if self.inner is not None:
            self.inner.resume_writing()

    # -- the handshake -----------------------------------------------------------------
    def _greeting(self) -> None:
        s, ticket = self.s, self.ticket
        assert s is not None and ticket is not None and self.transport is not None
        try:
            if not s.version:
                s.version = p.detect_version(self.buf) or 0
            if s.version == p.SOCKS4_VERSION:
                self._hand_over(lambda r, w, c: self.server._serve(
                    r, w, s, c, ticket, deadline=self.deadline))
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
        self.transport.write(p.MethodSelection(method).encode())
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
        if request.command not in (Command.CONNECT, Command.UDP_ASSOCIATE):
            self._handshake_over()
            self._answer(Rep.COMMAND_NOT_SUPPORTED, f"command {request.command}")
            return
        self._handshake_over()
        if request.command == Command.UDP_ASSOCIATE:
            self._proceed_streams(request, None)
            return
        assert self.transport is not None
        splice = self.server._spliceable(self.transport)
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
        api: SpliceApi = srv.splice
        assert self.transport is not None
        try:
            self.server_tcb = api.intend(self.transport, ip, address.port)
        except OSError as e:
            self._connect_failed(e)
            return
        self.stage = Stage.CONNECTING
        # The server connection's outcome is taken where TCP fires it (its events are
        # fired at the end of an entry point, where callbacks may call back in): the
        # reply leaves in the step the server's SYN-ACK arrives, without a future and
        # a loop turn in between.
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
        assert self.transport is not None and self.server_tcb is not None
        try:
            if error is None:
                self._splice()
                return
            self.server_tcb.on_event = None
            self.server.splice.abandon(self.transport)
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
        assert self.transport is not None
        reply = srv._reply(s.version, Rep.SUCCEEDED, (ip_str(tcb.local), tcb.local_port))
        early = bytes(self.buf)   # sent right after the request, before the reply
        self.buf.clear()
        s.up += len(early)
        try:
            pair = srv.splice.splice_transport(self.transport, tcb, reply_to_client=reply,
                                               to_server=early)
        except Exception:
            # Not spliced: the server connection is reset with the client's (_end).
            if tcb.state is not TcpState.CLOSED:
                tcb.abort(srv.splice.driver.now())
            raise
        self.stage = Stage.DONE
        s.rep = _received(s.version, Rep.SUCCEEDED)
        s.spliced = True
        srv.counters["rep_0x00"] += 1
        srv.counters["spliced"] += 1
        srv.splice_finished(pair, s, ticket)
        self.transport.close()   # detached: releases the handle only (no FIN)

    # -- endings -----------------------------------------------------------------------
    def _answer(self, rep: int, note: str) -> None:
        """An error reply, then the session ends with a FIN (server.py ``_answer``)."""
        from apps.socks.server import _received
        s = self.s
        assert s is not None and self.transport is not None
        s.note = note
        s.rep = _received(s.version, rep)
        self.server.counters[f"rep_{rep:#04x}"] += 1
        if not self.transport.is_closing():
            self.transport.write(self.server._reply(s.version, rep))
        self._end(note)

    def _end(self, note: str, failed: bool = False) -> None:
        """Close (or reset, ``failed``) the client connection; free the slot; log."""
        s = self.s
        assert s is not None and self.ticket is not None and self.transport is not None
        self.stage = Stage.DONE
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        s.note = note
        if failed:
            self.transport.abort()
        else:
            self.transport.close()
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
        s, ticket = self.s, self.ticket
        assert s is not None and ticket is not None

        def work(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 conns: list[asyncio.StreamWriter]) -> Any:
            inp = _Input(reader)
            inp.buf += self.buf   # read past the request: the server's first bytes
            self.buf.clear()
            return self.server._proceed(request, inp, reader, writer, s, conns, ticket,
                                        splice)
        self._hand_over(work, keep_buffer=True)

    def _hand_over(self, work: Any, keep_buffer: bool = False) -> None:
        """From here on the session is the coroutine path's: a StackStreamReader fed
        with what was read and not parsed, a StreamWriter, and a task running
        ``work(reader, writer, conns)`` inside the server's ``_run``."""
        assert self.transport is not None and self.s is not None and self.ticket is not None
        loop = asyncio.get_running_loop()
        self.stage = Stage.HANDED_OVER
        if self.timer is not None:   # the coroutine path keeps its own clock
            self.timer.cancel()
            self.timer = None
        reader = StackStreamReader(loop=loop)
        self.inner = asyncio.StreamReaderProtocol(reader, loop=loop)
        self.inner.connection_made(self.transport)
        if self.buf and not keep_buffer:
            reader.feed_data(bytes(self.buf))
            self.buf.clear()
        writer = asyncio.StreamWriter(self.transport, self.inner, reader, loop)
        s, ticket = self.s, self.ticket
        self.server.spawn(self.server._run(reader, writer, s, ticket,
                                           lambda conns: work(reader, writer, conns)))
