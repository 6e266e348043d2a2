"""The HTTP forward proxy: requests, access checks, cache, origin exchange, tunnels.

One :meth:`HttpProxy.handle` call per client connection (an asyncio
``client_connected_cb``). It reads requests one after the other on the kept-alive
connection; each request is answered from the cache, by the origin (a fresh
origin connection per request, asked to close), or by an error response. CONNECT
turns the connection into a tunnel: spliced by the stack in splice mode, copied
through the streams otherwise. Every wait is bounded by a policy timeout, and
every path ends in the ``finally`` of :meth:`HttpProxy.handle`, which closes both
connections (or aborts them after an error); one access-log line per request.

The response body is relayed by :meth:`HttpProxy._relay_body`, the one place that
copies body bytes from the origin to the client, or spliced one way by the stack
(:mod:`apps.httpproxy.spliced`). Finding, freshening, storing and answering from
stored responses is :mod:`apps.httpproxy.hits`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import http
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from apps import authlimit
from apps.authlimit import AuthLimiter
from apps.clientslots import ClientSlots, IdlePool, Ticket, admit_closing_idle
from apps.copyrelay import IdleTimeout, copy_both
from apps.httpproxy import cache as rules
from apps.httpproxy import dial, hits, spliced
from apps.httpproxy.accesslog import Entry
from apps.httpproxy.conn import Abort, BufferedStream, PeerClosed
from apps.httpproxy.parser import (
    BadRequest,
    BadResponse,
    ChunkedDecoder,
    Framing,
    Headers,
    HttpError,
    Request,
    Response,
    add_via,
    encode_chunk,
    parse_request_head,
    parse_response_head,
    request_framing,
    response_framing,
    set_framing,
    strip_hop_by_hop,
    uri_host,
)
from apps.httpproxy.policy import HttpPolicy, refusal_response
from apps.httpproxy.store import CacheStore, StoredResponse
from apps.logsafe import escape
from apps.names import Resolve, resolver_of
from apps.socks.policy import check_mode, own_interface_defaults

ACCESS_LOG = logging.getLogger("tapsplice.httpproxy.access")
log = logging.getLogger("tapsplice.httpproxy")

MODES = ("splice", "copy")
CONNECT_REPLY = b"HTTP/1.1 200 Connection established\r\n\r\n"


class HttpProxy:
    """An HTTP/1.1 forward proxy with a shared cache on an asyncio-shaped TCP API."""

    def __init__(self, api: Any, *, splice: Any = None, mode: str = "splice",
                 cache: CacheStore | None = None, policy: HttpPolicy | None = None,
                 log: logging.Logger | None = None,
                 clock: Callable[[], float] = time.time,
                 auth_limiter: AuthLimiter | None = None,
                 resolve: Resolve | None = None, ipv6: bool | None = None) -> None:
        check_mode(mode, MODES, splice)
        self.api = api
        #: Origin names not in the hosts mapping go here (default: ``api.resolve``).
        self.resolve = resolve or resolver_of(api)
        #: Names resolve to AAAA records too (default: when the stack speaks IPv6).
        self.ipv6 = dial.speaks_ipv6(api) if ipv6 is None else ipv6
        self.mode = mode
        self.splice = splice
        self.cache = cache
        #: Without allowed clients, start() fills in the listening interface's subnet.
        self.policy = policy or HttpPolicy()
        self._clients_given = self.policy.allow_clients
        self.access_log = log or ACCESS_LOG
        self.clock = clock
        #: Back-off of repeated Basic failures per client address (on loop time).
        self.auth_limiter = auth_limiter or AuthLimiter(
            clock=lambda: asyncio.get_running_loop().time())
        #: Per-client slots and the kept-alive connections waiting (apps/clientslots.py).
        assert self.policy.max_per_client is not None  # Policy.__post_init__ sets it
        self.slots = ClientSlots(self.policy.max_per_client,
                                 self.policy.max_handshakes_per_client)
        self.idle = IdlePool()
        #: Set by drain(): no connection is kept alive any more.
        self.draining = False
        self.active = 0
        self.counters: Counter[str] = Counter()

    def drain(self) -> None:
        """The stack is stopping (TapStack.drain_hooks): kept-alive connections waiting
        for a request are closed now, and every response from now on says
        ``Connection: close`` (RFC 9112 §9.6), so that running exchanges finish and
        nothing waits for a next request."""
        self.draining = True
        while self.idle.close_oldest():
            pass

    async def start(self, host: str, port: int) -> Any:
        """Listen on (host, port); returns the server object of the API."""
        server = await self.api.start_server(self.handle, host, port)
        # Without --allow-client each listening address adds its interface's subnet
        # (a proxy on 198.18.0.2 and on 2001:2:0:1::2 serves both of that side's).
        given = self._clients_given
        filled = own_interface_defaults(server, self.api, host, replace(
            self.policy, allow_clients=None if given is None else self.policy.allow_clients))
        if given is None:
            own = self.policy.allow_clients or ()
            self.policy = replace(filled, allow_clients=own + tuple(
                n for n in filled.allow_clients or () if n not in own))
        if self.splice is not None and dial.splice_family(host):
            self.splice.init_splice(server)  # docs/splice.md §1.1: before any accept
        return server

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one client connection: every request on it, or one tunnel."""
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.counters["accepted"] += 1
        ticket = admit_closing_idle(self.slots, self.idle, str(peer[0]),
                                    self.active >= self.policy.max_connections, self.counters)
        if isinstance(ticket, str):
            self.counters[ticket] += 1
            if ticket == "over_limit":
                writer.transport.abort()
            else:   # one address over its share: told at once, then closed
                writer.write(refusal_response(ticket))
                writer.transport.close()
            return
        self.active += 1
        conns: list[asyncio.StreamWriter] = [writer]
        failed = False
        try:
            await self._serve(BufferedStream(reader, writer), str(peer[0]), conns, ticket)
        except asyncio.CancelledError:
            failed = True
            raise  # the finally releases everything; the cancellation goes on
        except (Abort, ConnectionError, OSError, HttpError, TimeoutError) as e:
            self.counters["aborted"] += 1
            log.debug("client %s: %s", peer[0], escape(str(e)))
            failed = True
        except Exception:  # a bug must not leak the connections
            self.counters["internal_error"] += 1
            log.exception("http session %s", peer[0])
            failed = True
        finally:
            self.active -= 1
            ticket.release()
            for w in conns:
                _finish(w, failed)

    async def _serve(self, client: BufferedStream, ip: str,
                     conns: list[asyncio.StreamWriter], ticket: Ticket) -> None:
        loop = asyncio.get_running_loop()
        first = True
        while True:
            entry = Entry(client=ip, start=self.clock(), began=loop.time())
            keep = False
            try:
                req = await self._read_request(client, entry, first)
                ticket.handshake_done()   # the first request head is in (or never came)
                if req is not None:
                    keep = await self._exchange(client, req, entry, conns)
            finally:
                entry.elapsed = loop.time() - entry.began
                if entry.method != "NONE" or entry.status:
                    self.access_log.info("%s", entry.line(), extra={"http": entry})
            if not keep or self.draining:
                return
            first = False

    async def _read_request(self, client: BufferedStream, entry: Entry,
                            first: bool) -> Request | None:
        """The next request head; None when the connection ends without one (after an
        error response if it was malformed or too slow)."""
        try:
            if not first and not client.buf:
                # A kept-alive connection may stay quiet for the keep-alive timeout; under
                # slot pressure the oldest idle one is closed early (its timeout expires).
                async with asyncio.timeout(self.policy.keepalive_timeout) as wait:
                    with self.idle.waiting(entry.client, wait):
                        if not await client.fill():
                            return None
                # The request starts with its first byte, not when the previous one
                # ended: the time a kept-alive connection waited is no part of it.
                entry.start, entry.began = self.clock(), asyncio.get_running_loop().time()
            # The whole head within the handshake timeout: a slowloris client that
            # trickles bytes is cut off (and answered 408 if it sent something).
            async with asyncio.timeout(self.policy.handshake_timeout):
                return await client.read_head(parse_request_head)
        except TimeoutError:
            self.counters["client_timeout"] += 1
            if client.buf.strip():
                entry.note = "request timeout"
                await self._error(client, entry, 408, "request head not received in time")
            return None
        except PeerClosed:
            return None
        except HttpError as e:
            self._refused(f"bad_request_{e.status}", entry, e)
            await self._error(client, entry, e.status, str(e))
            return None

    def _refused(self, counter: str, entry: Entry, e: HttpError) -> None:
        """Count a refused message and log it once (INFO, no traceback)."""
        self.counters[counter] += 1
        entry.note = entry.note or str(e)
        log.info("refused (%s) for %s %s: %s", counter, entry.client, escape(entry.url),
                 escape(str(e)))

    # -- one exchange ------------------------------------------------------------------------
    async def _exchange(self, client: BufferedStream, req: Request, entry: Entry,
                        conns: list[asyncio.StreamWriter]) -> bool:
        """Answer one request; whether the client connection stays open for another."""
        entry.method, entry.url = req.method, req.uri
        if not await self._access(client, req, entry):
            return False
        if req.method == "CONNECT":
            await self._tunnel(client, req, entry, conns)
            return False
        if req.scheme != "http":
            await self._error(client, entry, 400, "https URLs go through CONNECT")
            return False
        if any(hop.split()[-1:] == [self.policy.via.lower()]
               for hop in req.headers.tokens("via")):
            # RFC 9110 §7.6.3: Via lets a proxy see a request that already passed it.
            self.counters["loop"] += 1
            await self._error(client, entry, 508, "forwarding loop")
            return False
        try:
            framing, length = request_framing(req)
        except HttpError as e:
            self._refused(f"bad_request_{e.status}", entry, e)
            await self._error(client, entry, e.status, str(e))
            return False
        stored = hits.usable_entry(self, req) if framing is Framing.NONE else None
        if stored is not None and hits.is_fresh(self, req, stored):
            entry.code = "TCP_HIT" if self.cache and self.cache.on_disk else "TCP_MEM_HIT"
            self.counters["hit"] += 1
            return await hits.send_stored(self, client, req, stored, entry)
        if rules.only_if_cached(req.headers):
            # RFC 9111 §5.2.1.7: nothing usable is stored, and the origin is not asked.
            self.counters["only_if_cached_miss"] += 1
            await self._error(client, entry, 504, "only-if-cached: not in the cache")
            return False
        if stored is not None and not rules.can_revalidate(stored.headers):
            stored = None
        return await self._forward(client, req, (framing, length), stored, entry)

    async def _access(self, client: BufferedStream, req: Request, entry: Entry) -> bool:
        """Client network and Proxy-Authorization (RFC 9110 §11.7.1) checks."""
        if not self.policy.client_allowed(entry.client):
            self.counters["client_denied"] += 1
            entry.code = "TCP_DENIED"
            await self._error(client, entry, 403, "client not allowed")
            return False
        if not self.policy.auth_required:
            return True
        user, password = _basic_credentials(req.headers.get("proxy-authorization"))
        if user is not None:
            entry.user = user.decode("latin-1") or "-"   # byte for byte; escaped in the log
        outcome = "missing" if user is None else self.auth_limiter.attempt(
            entry.client, lambda: self.policy.authenticate(user, password))
        if outcome == authlimit.OK:
            return True
        self.counters[f"auth_{outcome}"] += 1
        entry.code = "TCP_DENIED"
        if user is not None:
            authlimit.log_failure(log, entry.client, user, self.auth_limiter, outcome)
        if outcome == authlimit.THROTTLED:   # RFC 6585 §4: 429 with Retry-After
            wait = f"{max(1, round(self.auth_limiter.wait(entry.client)))}"
            await self._error(client, entry, 429, "too many failed attempts",
                              [("Retry-After", wait)])
        else:
            await self._error(client, entry, 407, "proxy authentication required",
                              [("Proxy-Authenticate", 'Basic realm="tapsplice"')])
        return False

    # -- to the origin -------------------------------------------------------------------
    async def _open_origin(self, client: BufferedStream, host: str, port: int,
                           entry: Entry, splice: bool = False,
                           ips: list[str] | None = None) -> BufferedStream | None:
        """Resolve (unless ``ips`` are known), check and connect; on failure answer
        the client and return None (apps/httpproxy/dial.py)."""
        if ips is None:
            ips = await dial.destinations(self, client, host, port, entry)
            if ips is None:
                return None
        return await dial.connect(self, client, ips, host, port, entry, splice)

    async def _forward(self, client: BufferedStream, req: Request,
                       body: tuple[Framing, int], stored: StoredResponse | None,
                       entry: Entry) -> bool:
        """Send the request to the origin and relay (or use) its response."""
        ips = None
        if stored is None and spliced.can_splice(self, client, req, body[0]):
            ips = await dial.destinations(self, client, req.host, req.port, entry)
            if ips is None:
                return False
            pairable = dial.splice_candidates(client, ips)
            if pairable:
                return await spliced.forward_spliced(self, client, req, body, entry,
                                                     pairable)
        origin = await self._open_origin(client, req.host, req.port, entry, ips=ips)
        if origin is None:
            return False
        try:
            request_time = self.clock()
            try:
                await self._send_request(client, origin, req, body, stored)
            except BadRequest as e:   # a malformed request body: nothing was answered yet
                self._refused(f"bad_request_{e.status}", entry, e)
                origin.writer.transport.abort()   # the origin must not take a cut body
                await self._error(client, entry, e.status, str(e))
                return False
            resp = await self._response_head(client, origin, req, entry)
            if resp is None:
                return False
            response_time = self.clock()
            if self.cache is not None:
                for uri in rules.invalidated_uris(req.method, resp.status, req.uri,
                                                  resp.headers):
                    self.cache.invalidate(uri)
            if stored is not None and resp.status == 304:
                fresh = hits.freshened(self, stored, resp, request_time, response_time)
                if fresh is not None:
                    entry.code = "TCP_REFRESH_HIT"
                    return await hits.send_stored(self, client, req, fresh, entry)
            else:
                entry.code = "TCP_REFRESH_MISS" if stored is not None else "TCP_MISS"
                return await self._relay_response(client, origin, req, resp, entry,
                                                  (request_time, response_time))
        finally:
            _finish(origin.writer, False)
        # RFC 9111 §4.3.4: the 304 is about another representation than the stored
        # one; the client asked for the resource, not for a 304 about the proxy's
        # copy, so the request is sent again as the client sent it.
        entry.peer = "-"
        keep = await self._forward(client, req, body, None, entry)
        if entry.code == "TCP_MISS":
            entry.code = "TCP_REFRESH_MISS"
        return keep

    async def _send_request(self, client: BufferedStream, origin: BufferedStream,
                            req: Request, body: tuple[Framing, int],
                            stored: StoredResponse | None) -> None:
        """The request in origin form (RFC 9112 §3.2.1), then its body: a chunked body
        re-chunked by the proxy (RFC 9112 §7.1), without extensions or trailers."""
        headers = strip_hop_by_hop(req.headers)
        if stored is not None:
            headers = rules.conditional_headers(headers, stored.headers)
        # §3.2.2: a proxy replaces Host with the target's authority.
        # RFC 3986 §3.2.2: an IPv6 address goes back into brackets.
        host = uri_host(req.host)
        headers.set("Host", host if req.port == 80 else f"{host}:{req.port}")
        add_via(headers, req.version, self.policy.via)
        framing, length = body
        set_framing(headers, framing, length)   # our framing fields, never the client's
        headers.add("Connection", "close")  # one origin connection per request
        if framing is not Framing.NONE and "100-continue" in headers.tokens("expect"):
            # RFC 9110 §10.1.1: we read the body before the origin's answer, so the
            # client is told to send it now rather than after its own timeout.
            headers.remove("expect")
            if req.version == "HTTP/1.1":
                client.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        out = Request(req.method, req.target, "HTTP/1.1", headers, path=req.path)
        origin.writer.write(out.encode_origin_form())
        if (framing is Framing.LENGTH and length >= max(self.policy.splice_min, 1)
                and self._may_relay(client.writer, origin.writer)):
            await spliced.splice_request_body(self, client, origin, length)
            return
        pieces = client.body(framing, length, BadRequest)
        chunked = framing is Framing.CHUNKED
        while True:
            async with asyncio.timeout(self.policy.handshake_timeout):
                piece = await anext(pieces, None)
                if piece is None:
                    break
                if piece[1] or not chunked:
                    origin.writer.write(encode_chunk(piece[1]) if chunked else piece[1])
                await origin.writer.drain()
        if chunked:
            origin.writer.write(encode_chunk(b""))

    async def _response_head(self, client: BufferedStream, origin: BufferedStream,
                             req: Request, entry: Entry) -> Response | None:
        """The origin's final response head (interim 1xx forwarded to HTTP/1.1
        clients, RFC 9110 §15.2); None after answering 502/504."""
        try:
            async with asyncio.timeout(self.policy.response_timeout):
                while True:
                    resp = await origin.read_head(parse_response_head)
                    if resp.status >= 200 or resp.status == 101:
                        break
                    if req.version == "HTTP/1.1":
                        interim = strip_hop_by_hop(resp.headers)
                        set_framing(interim, Framing.NONE, 0, status=resp.status)
                        client.writer.write(Response(resp.status, resp.reason,
                                                     headers=interim).encode())
        except TimeoutError:
            self.counters["origin_timeout"] += 1
            await self._error(client, entry, 504, "the origin did not answer in time")
            return None
        except (PeerClosed, BadResponse) as e:
            self.counters["bad_response"] += 1
            if isinstance(e, BadResponse):
                log.info("refused (bad_response) from %s: %s", entry.url, escape(str(e)))
            await self._error(client, entry, 502, f"bad response from the origin: {e}")
            return None
        if resp.status == 101:  # we removed Upgrade; an origin switching anyway is broken
            await self._error(client, entry, 502, "unexpected 101 from the origin")
            return None
        return resp

    async def _relay_response(self, client: BufferedStream, origin: BufferedStream,
                              req: Request, resp: Response, entry: Entry,
                              times: tuple[float, float]) -> bool:
        """Send the response head to the client, relay the body, store it if allowed."""
        try:
            framing, length = response_framing(req.method, resp)
            if framing is Framing.CHUNKED:
                # RFC 9112 §7.1: chunked bytes read with the head are checked before the
                # head goes out, so that a bad start is a 502 rather than a cut body.
                ChunkedDecoder(BadResponse).feed(origin.buf)
        except HttpError as e:
            self._refused("bad_response", entry, e)
            await self._error(client, entry, 502, str(e))
            return False
        headers = strip_hop_by_hop(resp.headers)
        keep = req.keep_alive and not self.draining
        rechunk = framing is Framing.CHUNKED and req.version == "HTTP/1.1"
        # RFC 9112 §6.3: the framing fields are the proxy's own (chunked wins over a
        # Content-Length, identical lengths become one).
        set_framing(headers, framing, length, chunked=rechunk, status=resp.status)
        if framing in (Framing.CHUNKED, Framing.CLOSE) and not rechunk:
            keep = False   # the body ends when we close (RFC 9112 §6.3 item 8)
        store = headers.copy()
        add_via(headers, resp.version, self.policy.via)
        hits.connection_header(headers, req, keep)
        entry.status, entry.type = resp.status, headers.get("content-type") or "-"
        await self._write(client.writer, Response(resp.status, resp.reason, headers=headers)
                          .encode(), entry)
        capture = None
        if self.cache is not None and rules.storable(req.method, req.headers, resp.status,
                                                     resp.headers):
            capture = hits.Capture(self.cache.max_object)
        relayable = self._may_relay(client.writer, origin.writer)
        if relayable and framing is Framing.LENGTH and length >= max(self.policy.splice_min, 1):
            await spliced.splice_body(self, origin, client, length, capture, entry)
        elif relayable and framing is Framing.CLOSE:
            # The body ends with the origin's FIN: spliced up to it, FIN included (the
            # client connection ends there, as it must).
            await spliced.splice_body(self, origin, client, None, capture, entry)
        else:
            await self._relay_body(origin, client.writer, (framing, length), rechunk,
                                   capture, entry)
        if capture is not None and not capture.overflow:
            hits.store_response(self, req, resp, store, b"".join(capture.parts), times)
        return keep

    async def _relay_body(self, origin: BufferedStream, client_writer: asyncio.StreamWriter,
                          body: tuple[Framing, int], rechunk: bool, capture: hits.Capture | None,
                          entry: Entry) -> None:
        """Copy the response body from the origin to the client, by its framing: the
        payload, in chunks of the proxy's own when ``rechunk`` (chunked to an HTTP/1.1
        client; the origin's chunk lines, extensions and trailers are not forwarded,
        RFC 9112 §7.1). A framing error ends the client connection without a final
        chunk.
        ``capture`` (when not None) receives the payload for the cache. A body cut
        short or stalled resets the client (its head was already sent). This is the
        only place body bytes move origin -> client; bytes of the body already read
        with the head are in ``origin.buf``."""
        framing, length = body
        pieces = origin.body(framing, length, BadResponse)
        try:
            while True:
                async with asyncio.timeout(self.policy.response_timeout):
                    piece = await anext(pieces, None)
                if piece is None:
                    if rechunk:
                        await self._write(client_writer, encode_chunk(b""), entry)
                    return
                payload = piece[1]
                if capture is not None:
                    capture.add(payload)
                if payload:
                    await self._write(client_writer,
                                      encode_chunk(payload) if rechunk else payload, entry)
        except (TimeoutError, HttpError, PeerClosed) as e:
            if isinstance(e, HttpError):
                self._refused("bad_response_body", entry, e)
            self.counters["body_cut"] += 1
            entry.note = f"response body: {e}"
            raise Abort(entry.note) from None

    def _may_relay(self, a: asyncio.StreamWriter, b: asyncio.StreamWriter) -> bool:
        """Whether a body may be spliced one way between these connections."""
        return (self._relay_ready(a) and self._relay_ready(b)
                and dial.spliceable_pair(dial.peer_ip(a), dial.peer_ip(b)))

    def _relay_ready(self, writer: asyncio.StreamWriter) -> bool:
        """Whether this connection of the stack may take part in a one-way splice."""
        if self.mode != "splice" or self.splice is None:
            return False
        tcb = writer.get_extra_info("tcb")
        return tcb is not None and tcb.state.name in ("ESTABLISHED", "CLOSE_WAIT")

    # -- CONNECT -----------------------------------------------------------------------------
    async def _tunnel(self, client: BufferedStream, req: Request, entry: Entry,
                      conns: list[asyncio.StreamWriter]) -> None:
        """CONNECT (RFC 9110 §9.3.6): a tunnel to an allowed port."""
        if not self.policy.connect_allowed(req.port):
            self.counters["connect_denied"] += 1
            entry.code = "TCP_DENIED"
            await self._error(client, entry, 403, f"CONNECT to port {req.port} not allowed")
            return
        ips = await dial.destinations(self, client, req.host, req.port, entry)
        if ips is None:
            return
        pairable = dial.splice_candidates(client, ips)
        # An IPv6 end is copied (dial.splice_family); spliced, only addresses the
        # client can be spliced with are tried.
        splice = self.mode == "splice" and _spliceable(client.writer) and bool(pairable)
        origin = await self._open_origin(client, req.host, req.port, entry, splice,
                                         pairable if splice else ips)
        if origin is None:
            return
        conns.append(origin.writer)
        entry.code, entry.status = "TCP_TUNNEL", 200
        if client.buf:   # early data (a TLS ClientHello sent with the CONNECT)
            origin.writer.write(bytes(client.buf))
            client.buf.clear()
        if splice:
            pair = await self.splice.splice(client.writer, origin.writer,
                                            reply_to_client=CONNECT_REPLY)
            self.counters["spliced"] += 1
            try:
                await self.splice.wait_finished(pair)
            finally:
                entry.bytes += len(CONNECT_REPLY) + pair.counters["s2c_bytes"]
            return
        await self._write(client.writer, CONNECT_REPLY, entry)

        def down(n: int) -> None:
            entry.bytes += n

        try:
            await copy_both(client.reader, client.writer, origin.reader, origin.writer,
                            b_to_a=down, idle_timeout=self.policy.idle_timeout)
        except IdleTimeout:
            self.counters["idle_timeout"] += 1
            raise

    # -- output -----------------------------------------------------------------------------
    async def _write(self, writer: asyncio.StreamWriter, data: bytes, entry: Entry) -> None:
        """Write and wait for room, bounded: a client that stops reading is dropped."""
        writer.write(data)
        entry.bytes += len(data)
        async with asyncio.timeout(self.policy.keepalive_timeout):
            await writer.drain()

    async def _error(self, client: BufferedStream, entry: Entry, status: int, message: str,
                     extra: list[tuple[str, str]] | None = None) -> None:
        """An error response with a short text body; the connection closes after it."""
        if entry.code == "NONE" and status >= 500:
            entry.code = "TCP_MISS"
        entry.status = status
        entry.note = entry.note or message
        body = f"{status} {_phrase(status)}: {message}\n".encode("utf-8", "replace")
        headers = Headers([("Content-Type", "text/plain; charset=utf-8"),
                           ("Content-Length", str(len(body))), ("Connection", "close"),
                           *(extra or [])])
        add_via(headers, "HTTP/1.1", self.policy.via)
        entry.type = "text/plain"
        try:
            await self._write(client.writer,
                              Response(status, _phrase(status), headers=headers).encode()
                              + body, entry)
        except (TimeoutError, ConnectionError):
            pass   # the connection is closed right after anyway


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _basic_credentials(value: str | None) -> tuple[bytes | None, bytes]:
    """(user, password) from ``Basic base64(user:password)`` (RFC 7617)."""
    if not value:
        return None, b""
    scheme, _sp, token = value.strip().partition(" ")
    if scheme.lower() != "basic":
        return None, b""
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None, b""
    user, sep, password = decoded.partition(b":")
    return (user, password) if sep else (None, b"")


def _spliceable(writer: asyncio.StreamWriter) -> bool:
    """Only an ESTABLISHED client connection can be spliced (docs/splice.md §1.2)."""
    tcb = writer.get_extra_info("tcb")
    return tcb is not None and tcb.state.name == "ESTABLISHED"


def _finish(writer: asyncio.StreamWriter, failed: bool) -> None:
    """FIN after what is queued, or RST after an error."""
    if failed:
        writer.transport.abort()
    else:
        writer.transport.close()

