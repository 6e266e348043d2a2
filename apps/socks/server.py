"""The SOCKS connection handler: handshake, policy, connect, reply, relay.

One :meth:`SocksServer.handle` call per client connection (it is an asyncio
``client_connected_cb``). The handshake (greeting, RFC 1929 sub-negotiation,
request) runs under the policy's handshake timeout, the connect under its connect
timeout, so a stalled client or origin never holds a task. Every path ends in the
``finally`` of :meth:`SocksServer.handle`, which closes both connections (or aborts
them after an error) and writes one access-log line.

Mode "copy" relays both directions through the streams API. Mode "splice" hands
both connections to :meth:`SocksServer._splice`, the hook the splice layer fills.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from apps import authlimit
from apps.authlimit import AuthLimiter
from apps.clientslots import ClientSlots, Ticket
from apps.copyrelay import IdleTimeout, copy_both
from apps.eyeballs import ATTEMPT_DELAY, MAX_ATTEMPTS, AllAttemptsFailed, connect_first
from apps.logsafe import escape, field
from apps.names import Resolve, lookup, resolver_of
from apps.socks import protocol as p
from apps.socks.policy import Policy, check_mode, own_interface_defaults
from apps.socks.protocol import Address, Command, Method, Rep, SocksError
from apps.socks.session import SpliceSession
from apps.socks.udprelay import Association

ACCESS_LOG = logging.getLogger("tapsplice.socks.access")
log = logging.getLogger("tapsplice.socks")

MODES = ("copy", "splice")
#: The least time one address of several gets in splice mode (seconds).
MIN_SHARE = 2.0


class Conn(Protocol):
    """What admission needs of a client connection: an asyncio transport, or a
    :class:`SpliceSession` on the connection's TCB."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``peername`` (and the other names an asyncio transport knows)."""
        ...

    def close(self) -> None:
        """FIN after what is written."""
        ...

    def abort(self) -> None:
        """Reset at once."""
        ...


class _ClientGone(Exception):
    """The client closed or reset the connection during the handshake."""


@dataclass
class Session:
    """What the access log records about one client connection."""

    client: str
    start: float
    version: int = 0
    user: str = "-"
    dest: str = "-"
    rep: int | None = None   # the reply code the client received (SOCKS4: 0x5A/0x5B)
    up: int = 0      # client -> destination bytes
    down: int = 0    # destination -> client bytes
    duration: float = 0.0
    note: str = ""
    spliced: bool = False   # handed to the splice layer: logged when the splice ends

    def line(self) -> str:
        """The access-log line. User, destination and note come from the client: they
        are escaped (apps/logsafe.py), so one session is one line of printable ASCII."""
        rep = "-" if self.rep is None else f"0x{self.rep:02x}"
        version = f"socks{self.version}" if self.version else "-"
        text = (f"{field(self.client)} {version} user={field(self.user)} "
                f"dest={field(self.dest)} rep={rep} "
                f"up={self.up} down={self.down} dur={self.duration:.3f}")
        return f"{text} {escape(self.note)}" if self.note else text


class _Input:
    """Bytes read from the client and not parsed yet; parses one message at a time."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.buf = bytearray()

    async def fill(self) -> None:
        """Read what the client sent next (at most MAX_MESSAGE bytes)."""
        try:
            data = await self.reader.read(p.MAX_MESSAGE)
        except ConnectionError as e:
            raise _ClientGone(str(e)) from None
        if not data:
            raise _ClientGone("client closed during the handshake")
        self.buf += data

    async def next(self, parse):
        """The next message, reading more as the parser asks."""
        while (got := parse(self.buf)) is None:
            await self.fill()
        msg, n = got
        del self.buf[:n]
        return msg


class SocksServer:
    """A SOCKS5/SOCKS4a proxy on an asyncio-shaped TCP API (TcpApi or TapStack)."""

    def __init__(self, api: Any, *, mode: str = "copy", policy: Policy | None = None,
                 log: logging.Logger | None = None, splice: Any = None,
                 auth_limiter: AuthLimiter | None = None,
                 resolve: Resolve | None = None, udp: Any = None) -> None:
        check_mode(mode, MODES, splice)
        self.api = api
        #: Where UDP ASSOCIATE opens its sockets (``create_datagram_endpoint``; by
        #: default the API itself when it has one, as a TapStack does).
        self.udp = udp if udp is not None else (
            api if hasattr(api, "create_datagram_endpoint") else None)
        #: Names not in the hosts mapping go here (default: the stack's resolver,
        #: ``api.resolve``, when the API has one).
        self.resolve = resolve or resolver_of(api)
        self.mode = mode
        self.splice = splice
        #: Without allowed clients, start() fills in the listening interface's subnet.
        self.policy = policy or Policy()
        self.access_log = log or ACCESS_LOG
        #: Back-off of repeated RFC 1929 failures per client address (on loop time).
        self.auth_limiter = auth_limiter or AuthLimiter(clock=_loop_time)
        assert self.policy.max_per_client is not None  # Policy.__post_init__ sets it
        self.slots = ClientSlots(self.policy.max_per_client,
                                 self.policy.max_handshakes_per_client)
        self.active = 0
        self.counters: Counter[str] = Counter()
        #: Tasks of sessions handed over to the coroutine path (session.py).
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> Any:
        """Listen on (host, port); returns the server object of the API."""
        if self._by_protocol():
            # Splice mode on the stack: one state machine per client connection on its
            # TCB; a transport, streams and a task only where it hands over (session.py).
            server = await self.api.create_server(asyncio.Protocol, host, port)
            driver = self.api.driver
            server.listener.on_accept = lambda tcb: SpliceSession.accept(self, tcb, driver)
        else:
            server = await self.api.start_server(self.handle, host, port)
        self.policy = own_interface_defaults(server, self.api, host, self.policy)
        if self.splice is not None:
            self.splice.init_splice(server)  # docs/splice.md §1.1: before any accept
        return server

    def _by_protocol(self) -> bool:
        """Whether sessions run as :class:`SpliceSession` (splice mode on the stack's
        TCP API, with a splice layer that splices TCBs)."""
        return (self.mode == "splice" and hasattr(self.api, "create_server")
                and hasattr(self.api, "driver") and hasattr(self.splice, "splice_tcbs"))

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a session's coroutine as a task (held until it ends), as
        ``start_server`` runs ``handle``: an exception it lets out is reported to the
        loop; a cancelled one is no error."""
        loop = asyncio.get_running_loop()
        task = loop.create_task(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                loop.call_exception_handler({
                    "message": "Unhandled exception in a SOCKS session",
                    "exception": t.exception()})

        task.add_done_callback(done)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one client connection from greeting to the end of the relay."""
        admitted = self.admit(writer.transport)
        if admitted is not None:
            s, ticket = admitted
            await self._run(reader, writer, s, ticket,
                            lambda conns: self._serve(reader, writer, s, conns, ticket))

    def admit(self, transport: Conn) -> tuple[Session, Ticket] | None:
        """Count a new client connection and take its slot; None when it is refused
        (the connection limit closes it, a per-client limit resets it; logged)."""
        loop = asyncio.get_running_loop()
        peer = transport.get_extra_info("peername") or ("?", 0)
        s = Session(client=f"{peer[0]}:{peer[1]}", start=loop.time())
        self.counters["accepted"] += 1
        if self.active >= self.policy.max_connections:
            self.counters["over_limit"] += 1
            s.note = "connection limit"
            transport.close()
            self._log(s, loop.time())
            return None
        refusal = self.slots.refusal(str(peer[0]))
        if refusal is not None:
            # One address may not take every slot: refused at once with a RST.
            self.counters[refusal] += 1
            s.note = refusal.replace("_", " ")
            transport.abort()
            self._log(s, loop.time())
            return None
        self.active += 1
        return s, self.slots.admit(str(peer[0]))

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   s: Session, ticket: Ticket,
                   work: Callable[[list[asyncio.StreamWriter]], Awaitable[None]]) -> None:
        """Run an admitted session's ``work``; every path ends here, in the ``finally``
        that closes both connections (or aborts them after an error) and logs."""
        conns: list[asyncio.StreamWriter] = [writer]
        failed = False
        try:
            await work(conns)
        except asyncio.CancelledError:
            s.note, failed = "cancelled", True
            raise  # the finally releases everything; the cancellation goes on
        except _ClientGone as e:
            s.note = str(e)
        except (ConnectionError, OSError, SocksError) as e:
            s.note, failed = s.note or f"error: {e}", True
        except Exception as e:  # a bug must not leak the connections
            log.exception("socks session %s", s.client)
            s.note, failed = f"internal error: {e!r}", True
        finally:
            for w in conns:
                _finish(w, failed)
            if not s.spliced:
                self.session_over(s, ticket)
            # A spliced session is logged (and its slot freed) when the splice ends;
            # this task, its streams and their buffers are gone meanwhile.

    def session_over(self, s: Session, ticket: Ticket) -> None:
        """An admitted session that was not spliced has ended: free its slot, log it."""
        self.active -= 1
        ticket.release()
        self._log(s, asyncio.get_running_loop().time())

    def _log(self, s: Session, now: float) -> None:
        s.duration = now - s.start
        self.access_log.info("%s", s.line(), extra={"socks": s})

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     s: Session, conns: list[asyncio.StreamWriter], ticket: Ticket,
                     inp: _Input | None = None, deadline: float | None = None) -> None:
        """The whole session: handshake (to ``deadline`` in loop time, by default the
        handshake timeout from now), then :meth:`_proceed`."""
        ip = str(s.client.rpartition(":")[0])
        if not self.policy.client_allowed(ip):
            self.counters["client_denied"] += 1
            s.note = "client not allowed"
            return
        inp = inp or _Input(reader)
        if deadline is None:
            deadline = asyncio.get_running_loop().time() + self.policy.handshake_timeout
        try:
            async with asyncio.timeout_at(deadline):
                request = await self._handshake(inp, writer, s)
        except TimeoutError:
            self.counters["handshake_timeout"] += 1
            s.note = "handshake timeout"
            return
        except SocksError as e:
            self.counters[f"bad_{e.reason}"] += 1
            s.note = f"bad request: {e}"
            return
        finally:
            ticket.handshake_done()
        if request is None:
            return
        await self._proceed(request, inp, reader, writer, s, conns, ticket)

    async def _proceed(self, request: p.Request, inp: _Input, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter, s: Session,
                       conns: list[asyncio.StreamWriter], ticket: Ticket,
                       splice: bool | None = None) -> None:
        """After the handshake: UDP ASSOCIATE, or connect and relay (spliced when
        ``splice``; by default when the mode and the client connection allow)."""
        if request.command == Command.UDP_ASSOCIATE:
            await self._associate(reader, writer, request.address, s)
            return
        if splice is None:
            splice = self.mode == "splice" and self._spliceable(writer)
        server = await self._connect(request.address, writer, s, splice)
        if server is None:
            return
        server_reader, server_writer = server
        conns.append(server_writer)
        reply = self._reply(s.version, Rep.SUCCEEDED, server_writer.get_extra_info("sockname"))
        if inp.buf:  # data the client sent right after its request (no wait for the reply)
            server_writer.write(bytes(inp.buf))
            s.up += len(inp.buf)
            inp.buf.clear()
        if splice:
            await self._splice(writer, server_writer, reply, s, ticket)
        else:
            await self._copy(reader, writer, server_reader, server_writer, reply, s)

    # -- handshake --------------------------------------------------------------------------
    async def _handshake(self, inp: _Input, writer: asyncio.StreamWriter,
                         s: Session) -> p.Request | None:
        """Greeting, authentication and request; the request (CONNECT or UDP
        ASSOCIATE), or None if it was answered already."""
        if not inp.buf:
            await inp.fill()
        s.version = p.detect_version(inp.buf) or 0
        if s.version == p.SOCKS4_VERSION:
            return await self._handshake4(inp, writer, s)
        greeting = await inp.next(p.parse_greeting)
        want = Method.USERPASS if self.policy.auth_required else Method.NO_AUTH
        method = want if want in greeting.methods else Method.NO_ACCEPTABLE
        writer.write(p.MethodSelection(method).encode())
        if method == Method.NO_ACCEPTABLE:
            # RFC 1928 §3: the client must then close; we do not wait for it.
            self.counters["no_acceptable_method"] += 1
            s.note = "no acceptable method"
            await writer.drain()
            return None
        if method == Method.USERPASS and not await self._authenticate(inp, writer, s):
            return None
        try:
            request = await inp.next(p.parse_request)
        except SocksError as e:
            s.note = f"bad request: {e}"
            await self._answer(writer, s, e.reply)
            return None
        s.dest = str(request.address)
        if request.command not in (Command.CONNECT, Command.UDP_ASSOCIATE):
            s.note = f"command {request.command}"
            await self._answer(writer, s, Rep.COMMAND_NOT_SUPPORTED)
            return None
        return request

    async def _authenticate(self, inp: _Input, writer: asyncio.StreamWriter,
                            s: Session) -> bool:
        """RFC 1929 sub-negotiation; on failure the server closes (§2). An address
        inside its back-off window (apps/authlimit.py) is refused unchecked."""
        req = await inp.next(p.parse_userpass_request)
        s.user = req.username.decode("latin-1")   # byte for byte; escaped when logged
        ip = s.client.rpartition(":")[0]
        outcome = self.auth_limiter.attempt(
            ip, lambda: self.policy.authenticate(req.username, req.password))
        ok = outcome == authlimit.OK
        writer.write(p.UserPassResponse(0 if ok else 1).encode())
        await writer.drain()
        if not ok:
            self.counters[f"auth_{outcome}"] += 1
            s.note = f"authentication {outcome}"
            authlimit.log_failure(log, ip, s.user, self.auth_limiter, outcome)
        return ok

    async def _handshake4(self, inp: _Input, writer: asyncio.StreamWriter,
                          s: Session) -> p.Request | None:
        """A SOCKS4/4a request: CONNECT only, and never when passwords are required."""
        req = await inp.next(p.parse_socks4_request)
        s.user = req.userid.decode("latin-1") or "-"   # escaped when logged
        s.dest = str(req.address)
        if self.policy.auth_required:
            # SOCKS4 has no passwords: a proxy that requires them must refuse it.
            self.counters["auth_failed"] += 1
            s.note = "socks4 cannot authenticate"
            await self._answer(writer, s, Rep.NOT_ALLOWED)
            return None
        if req.command != Command.CONNECT:
            s.note = f"command {req.command}"
            await self._answer(writer, s, Rep.COMMAND_NOT_SUPPORTED)
            return None
        return p.Request(Command.CONNECT, req.address)

    # -- connect and reply ---------------------------------------------------------------
    def _spliceable(self, writer: asyncio.StreamWriter | Conn) -> bool:
        """A client that already half-closed (sent its FIN with the request) cannot be
        spliced (docs/splice.md §1.2 wants it ESTABLISHED): that session is copied."""
        tcb = writer.get_extra_info("tcb")
        if tcb is not None and tcb.state.name == "ESTABLISHED":
            return True
        self.counters["splice_fallback_copy"] += 1
        return False

    async def _connect(self, address: Address, writer: asyncio.StreamWriter,
                       s: Session, splice: bool = False,
                       ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """Check the policy and connect; on failure answer the client and return None."""
        found = await lookup(address, self.policy, self.resolve)
        port = address.port
        refusal: int | None = None
        ips = [ip for ip in found.addresses if ":" not in ip]
        allowed = [ip for ip in ips if self.policy.destination_allowed(ip, port)]
        if found.ip is None:
            # RFC 1928 §6: an unknown name, failing servers and a resolver timeout
            # are all "host unreachable" to the client; the log says which.
            self.counters[f"resolve_{found.failure}"] += 1
            s.note, refusal = found.note, Rep.HOST_UNREACHABLE
        elif not ips:
            s.note, refusal = "IPv6 destination", Rep.ADDRESS_TYPE_NOT_SUPPORTED
        elif not allowed:
            s.note, refusal = "destination not allowed", Rep.NOT_ALLOWED
        if refusal is not None:
            await self._answer(writer, s, refusal)
            return None

        def attempt(ip: str) -> Any:
            if splice:
                # intend_splice: the server connection's SYN carries the client
                # connection's options (docs/splice.md §1.2, §5).
                return self.splice.open_connection(writer, ip, port)
            return self.api.open_connection(ip, port)

        error: BaseException
        try:
            async with asyncio.timeout(self.policy.connect_timeout):
                if len(allowed) == 1:
                    return await attempt(allowed[0])
                return (await self._connect_any(allowed, attempt, splice))[1]
        except AllAttemptsFailed as e:
            error, note = e.first, f"every address failed: {e}"
        except (TimeoutError, OSError) as e:
            error, note = e, ""
            if isinstance(e, TimeoutError) and len(allowed) > 1:
                note = f"connect timeout ({len(allowed)} addresses)"
        rep = _connect_rep(error)
        notes: dict[int, str] = {Rep.TTL_EXPIRED: "connect timeout",
                                 Rep.CONNECTION_REFUSED: "refused"}
        s.note = note or notes.get(rep, f"connect: {error}")
        await self._answer(writer, s, rep)
        return None

    async def _connect_any(self, ips: list[str], attempt: Any, splice: bool) -> Any:
        """A name with several addresses (apps/eyeballs.py): the first that answers.
        Copy mode races them 250 ms apart (RFC 8305 §5); splice mode intends one
        server connection at a time (docs/splice.md §1.2), each given a share of the
        connect timeout."""
        share = max(self.policy.connect_timeout / len(ips[:MAX_ATTEMPTS]), MIN_SHARE)
        return await connect_first(ips, attempt, discard=lambda c: c[1].transport.abort(),
                                   stagger=None if splice else ATTEMPT_DELAY,
                                   attempt_timeout=share)

    @staticmethod
    def _reply(version: int, rep: int, bound: tuple[str, int] | None = None) -> bytes:
        """The reply bytes for the client's protocol version."""
        host, port = bound or ("0.0.0.0", 0)
        if version == p.SOCKS4_VERSION:
            ip = host if ":" not in host else "0.0.0.0"
            return p.Socks4Reply(_received(version, rep), port, ip).encode()
        return p.Reply(rep, Address.of(host, port)).encode()

    async def _answer(self, writer: asyncio.StreamWriter, s: Session, rep: int) -> None:
        """Send an error reply (the connection is closed afterwards)."""
        s.rep = _received(s.version, rep)
        self.counters[f"rep_{rep:#04x}"] += 1
        writer.write(self._reply(s.version, rep))
        # Bounded: a client that stops reading must not hold the task.
        async with asyncio.timeout(self.policy.handshake_timeout):
            await writer.drain()

    # -- UDP ASSOCIATE (RFC 1928 §7) ------------------------------------------------------------
    async def _associate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         expected: Address, s: Session) -> None:
        """Open a relay for the client, reply with its address, relay until the
        control connection ends (apps/socks/udprelay.py); one access-log line."""
        s.dest = "udp"
        refusal = self._udp_refusal(expected)
        if refusal:
            s.note = refusal
            await self._answer(writer, s, Rep.COMMAND_NOT_SUPPORTED)
            return
        client_ip = s.client.rpartition(":")[0]
        bind_ip = writer.get_extra_info("sockname")[0]
        assoc = Association(self.udp, self.policy, self.resolve, client_ip, expected.port,
                            self.counters)
        try:
            bound = await assoc.open(bind_ip)
        except OSError as e:
            s.note = f"udp associate: {e}"
            await self._answer(writer, s, Rep.GENERAL_FAILURE)
            return
        try:
            s.rep = Rep.SUCCEEDED
            self.counters["rep_0x00"] += 1
            self.counters["udp_associations"] += 1
            writer.write(self._reply(s.version, Rep.SUCCEEDED, bound))
            ended = await assoc.hold(reader, self.policy.udp_idle_timeout)
        finally:
            assoc.close()
            s.up, s.down = assoc.stats["bytes_up"], assoc.stats["bytes_down"]
            s.note = s.note or assoc.summary()
        s.note = f"{s.note}; {ended}"

    def _udp_refusal(self, expected: Address) -> str:
        """Why this proxy cannot relay UDP for the request, or ""."""
        if self.udp is None:
            return "udp associate: no UDP on this stack"
        seat = getattr(self.api, "seat", None)
        if seat is not None and seat.count > 1 and not expected.port:
            # The workers' steering sums both ports (stack/netdev/steer.py): without
            # the client's port no relay port can be chosen for this worker.
            return "udp associate without the client's port needs a single worker"
        return ""

    # -- relay ---------------------------------------------------------------------------------
    async def _copy(self, client_reader: asyncio.StreamReader,
                    client_writer: asyncio.StreamWriter,
                    server_reader: asyncio.StreamReader,
                    server_writer: asyncio.StreamWriter, reply: bytes, s: Session) -> None:
        """Copy mode: send the reply, then relay both ways until both ends are done."""
        s.rep = _received(s.version, Rep.SUCCEEDED)
        self.counters["rep_0x00"] += 1
        client_writer.write(reply)

        def up(n: int) -> None:
            s.up += n

        def down(n: int) -> None:
            s.down += n

        try:
            await copy_both(client_reader, client_writer, server_reader, server_writer,
                            a_to_b=up, b_to_a=down, idle_timeout=self.policy.idle_timeout)
        except IdleTimeout:
            self.counters["idle_timeout"] += 1
            s.note = "idle timeout"
            raise

    async def _splice(self, client_writer: asyncio.StreamWriter,
                      server_writer: asyncio.StreamWriter, reply: bytes, s: Session,
                      ticket: Ticket) -> None:
        """Splice mode: the reply is the write allowance n (docs/splice.md §1.3); from then on
        the stack relays the two connections itself. Nothing waits here: the access-log
        line (with the bytes relayed) is written when both directions have ended (the
        pair's TIMEWAIT goes on in the stack without the session), so an idle spliced
        pair costs the proxy no task, stream or buffer."""
        pair = await self.splice.splice(client_writer, server_writer, reply_to_client=reply)
        s.rep = _received(s.version, Rep.SUCCEEDED)
        s.spliced = True
        self.counters["rep_0x00"] += 1
        self.counters["spliced"] += 1
        self.splice_finished(pair, s, ticket)

    def splice_finished(self, pair: Any, s: Session, ticket: Ticket) -> None:
        """Log the spliced session and free its slot once both directions ended."""

        def finished() -> None:
            self.active -= 1
            ticket.release()
            s.up += pair.counters["c2s_bytes"]
            s.down += pair.counters["s2c_bytes"]
            ended = {"idle": "spliced, idle timeout", "drain": "spliced, reset at stop"}
            s.note = s.note or ended.get(pair.ended_by or "",
                                         "spliced, reset" if pair.reset else "spliced")
            self._log(s, asyncio.get_running_loop().time())

        self.splice.when_finished(pair, finished)


def _connect_rep(error: BaseException) -> int:
    """The SOCKS reply for a failed connect (RFC 1928 §6)."""
    if isinstance(error, TimeoutError):
        return Rep.TTL_EXPIRED
    if isinstance(error, ConnectionRefusedError):
        return Rep.CONNECTION_REFUSED
    text = str(error)
    if "route" in text or "unreachable" in text:
        return Rep.NETWORK_UNREACHABLE
    return Rep.GENERAL_FAILURE


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


def _received(version: int, rep: int) -> int:
    """The reply code as the client received it: SOCKS4 has only "granted" (0x5A)
    and "rejected" (0x5B) for every SOCKS5 reason (the reason goes in the note)."""
    if version == p.SOCKS4_VERSION:
        return p.Socks4Status.GRANTED if rep == Rep.SUCCEEDED else p.Socks4Status.REJECTED
    return rep


def _finish(writer: asyncio.StreamWriter, failed: bool) -> None:
    """Release one connection: FIN after what is queued, or RST after an error (so that
    a reset on one side reaches the other as a reset)."""
    transport = writer.transport
    if failed:
        transport.abort()
    else:
        transport.close()

