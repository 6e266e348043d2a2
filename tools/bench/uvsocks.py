"""A SOCKS5 proxy on kernel sockets with uvloop: the baseline of `bench splice`.

``python -m tools.bench.uvsocks --listen ADDR:PORT [--max-connections N]``

CONNECT only, no authentication (RFC 1928 method 0x00). After the reply the two
connections are relayed by asyncio protocols, with no per-byte work in Python:
uvloop reads up to 256 KiB at a time into its own buffer and hands the bytes to
``data_received``, which passes them straight to the other transport's
``write`` (uvloop tries the send at once and queues only the rest). Flow
control is the transports' own: when the outgoing side's queue passes the high
water mark (4 MiB) the incoming side stops reading until it drains. A FIN is
passed on as a half-close and the pair closes when both directions ended.

It prints ``ready`` once listening, and at SIGTERM/SIGINT its counters as one
JSON object on stderr. Every table is bounded (``--max-connections``) and every
handshake has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import resource
import signal
import socket
import struct
import sys
from collections import Counter
from dataclasses import dataclass
from typing import cast

SOCKS_VERSION = 5
METHOD_NO_AUTH = 0x00
METHOD_NO_ACCEPTABLE = 0xFF
CMD_CONNECT = 0x01
ATYP_IPV4 = 0x01
ATYP_DOMAIN = 0x03
ATYP_IPV6 = 0x04
# RFC 1928 §6 reply codes used here.
REP_SUCCEEDED = 0x00
REP_GENERAL_FAILURE = 0x01
REP_NETWORK_UNREACHABLE = 0x03
REP_HOST_UNREACHABLE = 0x04
REP_CONNECTION_REFUSED = 0x05
REP_TTL_EXPIRED = 0x06
REP_COMMAND_NOT_SUPPORTED = 0x07
REP_ADDRESS_TYPE_NOT_SUPPORTED = 0x08

# Longest handshake message: a request with a 255-byte domain name.
MAX_HANDSHAKE = 4 + 1 + 255 + 2
# Bytes a client may send after its request before the reply; then it is paused.
EARLY_DATA_LIMIT = 256 << 10
HANDSHAKE_TIMEOUT = 10.0
CONNECT_TIMEOUT = 10.0
WRITE_HIGH_WATER = 4 << 20
WRITE_LOW_WATER = 1 << 20
DEFAULT_MAX_CONNECTIONS = 20_000


class SocksProtocolError(ValueError):
    """The client's bytes are not a SOCKS5 message we accept; ``reply`` says why."""

    def __init__(self, message: str, reply: int | None = None) -> None:
        super().__init__(message)
        self.reply = reply


@dataclass(frozen=True)
class Request:
    """A parsed SOCKS5 request: command, destination host (text) and port."""

    command: int
    host: str
    port: int


def parse_greeting(buf: bytes | bytearray) -> tuple[int, frozenset[int]] | None:
    """The client's method offer (RFC 1928 §3): (bytes used, methods), None if short."""
    if len(buf) < 2:
        return None
    if buf[0] != SOCKS_VERSION:
        raise SocksProtocolError(f"version {buf[0]} is not SOCKS5")
    n = buf[1]
    if n == 0:
        raise SocksProtocolError("no methods offered")
    if len(buf) < 2 + n:
        return None
    return 2 + n, frozenset(buf[2 : 2 + n])


def parse_request(buf: bytes | bytearray) -> tuple[int, Request] | None:
    """A request (RFC 1928 §4): (bytes used, request), None if more bytes are needed."""
    if len(buf) < 5:
        return None
    if buf[0] != SOCKS_VERSION:
        raise SocksProtocolError(f"request version {buf[0]}", REP_GENERAL_FAILURE)
    if buf[2] != 0:
        raise SocksProtocolError("reserved byte not zero", REP_GENERAL_FAILURE)
    atyp = buf[3]
    if atyp == ATYP_IPV4:
        end = 4 + 4
    elif atyp == ATYP_IPV6:
        end = 4 + 16
    elif atyp == ATYP_DOMAIN:
        if buf[4] == 0:
            raise SocksProtocolError("empty domain name", REP_GENERAL_FAILURE)
        end = 5 + buf[4]
    else:
        raise SocksProtocolError(f"address type {atyp}", REP_ADDRESS_TYPE_NOT_SUPPORTED)
    if len(buf) < end + 2:
        return None
    raw = bytes(buf[4 if atyp != ATYP_DOMAIN else 5 : end])
    if atyp == ATYP_DOMAIN:
        try:
            host = raw.decode("ascii")
        except UnicodeDecodeError as exc:
            raise SocksProtocolError("domain name not ASCII", REP_GENERAL_FAILURE) from exc
    else:
        host = str(ipaddress.ip_address(raw))
    (port,) = struct.unpack_from("!H", buf, end)
    return end + 2, Request(buf[1], host, port)


def encode_reply(rep: int, bound: tuple[str, int] | None = None) -> bytes:
    """A reply (RFC 1928 §6) with an IPv4 or IPv6 bound address (0.0.0.0:0 if none)."""
    host, port = bound or ("0.0.0.0", 0)
    addr = ipaddress.ip_address(host)
    atyp = ATYP_IPV4 if addr.version == 4 else ATYP_IPV6
    return bytes((SOCKS_VERSION, rep, 0, atyp)) + addr.packed + struct.pack("!H", port)


def reply_for(exc: BaseException) -> int:
    """The reply code for a failed connect."""
    if isinstance(exc, TimeoutError):
        return REP_TTL_EXPIRED
    if isinstance(exc, ConnectionRefusedError):
        return REP_CONNECTION_REFUSED
    if isinstance(exc, socket.gaierror):
        return REP_HOST_UNREACHABLE
    if isinstance(exc, OSError) and "unreachable" in str(exc).lower():
        return REP_NETWORK_UNREACHABLE
    return REP_GENERAL_FAILURE


class _Side(asyncio.Protocol):
    """One connection of a relayed pair; ``peer`` is the other one's protocol."""

    def __init__(self, proxy: SocksProxy) -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
            self.proxy.counters["relayed_bytes"] += len(data)

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer is None or peer.transport is None:
            return False
        if peer.eof:
            peer.transport.close()
            return False
        if peer.transport.can_write_eof():
            peer.transport.write_eof()
        return True  # keep our sending half open until the peer's FIN

    # The outgoing transport's flow control pauses the side that feeds it.
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        peer, self.peer = self.peer, None
        if peer is not None and peer.transport is not None:
            peer.peer = None
            if exc is not None:
                peer.transport.abort()
            else:
                peer.transport.close()


class _ClientSide(_Side):
    """The client's connection: the SOCKS5 handshake, then one half of the relay."""

    def __init__(self, proxy: SocksProxy) -> None:
        super().__init__(proxy)
        self.buf = bytearray()
        self.greeted = False
        self.connecting = False
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        proxy = self.proxy
        proxy.counters["accepted"] += 1
        if len(proxy.clients) >= proxy.max_connections:
            proxy.counters["over_limit"] += 1
            transport.close()
            return
        proxy.clients.add(self)
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(HANDSHAKE_TIMEOUT, self._handshake_timeout)

    def _handshake_timeout(self) -> None:
        self.proxy.counters["handshake_timeout"] += 1
        if self.task is not None:
            self.task.cancel()
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.peer is not None:
            super().data_received(data)
            return
        self.buf += data
        if not self.connecting:
            try:
                self._advance()
            except SocksProtocolError as exc:
                self._fail(str(exc), exc.reply)
                return
        if self.connecting:
            # Bytes after the request wait in buf until the relay starts; past a
            # bound the client is paused rather than buffered without end.
            if len(self.buf) > EARLY_DATA_LIMIT and self.transport is not None:
                self.transport.pause_reading()
        elif len(self.buf) > MAX_HANDSHAKE:
            self._fail("handshake too long", REP_GENERAL_FAILURE)

    def _advance(self) -> None:
        if not self.greeted:
            got = parse_greeting(self.buf)
            if got is None:
                return
            used, methods = got
            del self.buf[:used]
            if METHOD_NO_AUTH not in methods:
                self._fail("no acceptable method", None, bytes((5, METHOD_NO_ACCEPTABLE)))
                return
            self.greeted = True
            assert self.transport is not None
            self.transport.write(bytes((SOCKS_VERSION, METHOD_NO_AUTH)))
        req = parse_request(self.buf)
        if req is None:
            return
        used, request = req
        del self.buf[:used]
        if request.command != CMD_CONNECT:
            self._fail(f"command {request.command}", REP_COMMAND_NOT_SUPPORTED)
            return
        self.connecting = True
        self.task = asyncio.ensure_future(self._connect(request))

    async def _connect(self, request: Request) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                transport, server = await loop.create_connection(
                    lambda: _Side(self.proxy), request.host, request.port)
        except (OSError, TimeoutError) as exc:
            self._fail(f"connect: {exc}", reply_for(exc))
            return
        server = cast(_Side, server)
        if self.transport is None or self.transport.is_closing():
            transport.close()
            return
        if self.timer is not None:
            self.timer.cancel()
        self.peer, server.peer = server, self
        self.proxy.counters["connected"] += 1
        self.transport.write(encode_reply(REP_SUCCEEDED, transport.get_extra_info("sockname")))
        if self.buf:  # the client did not wait for the reply
            early, self.buf = bytes(self.buf), bytearray()
            super().data_received(early)
        self.transport.resume_reading()
        if self.eof:
            transport.write_eof()

    def _fail(self, why: str, rep: int | None, raw: bytes | None = None) -> None:
        self.proxy.counters["failed"] += 1
        if self.transport is None:
            return
        if raw is not None:
            self.transport.write(raw)
        elif rep is not None:
            self.transport.write(encode_reply(rep))
        self.transport.close()

    def eof_received(self) -> bool:
        if self.peer is None:
            self.eof = True
            # A FIN during the handshake or the connect: wait for the connect to finish.
            return self.connecting
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.proxy.clients.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        super().connection_lost(exc)


class SocksProxy:
    """The proxy's state: the client table (bounded) and counters."""

    def __init__(self, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.max_connections = max_connections
        self.clients: set[_ClientSide] = set()
        self.counters: Counter[str] = Counter()

    async def start(self, host: str, port: int, backlog: int = 1024) -> asyncio.Server:
        """Listen on (host, port); the returned server is already serving."""
        loop = asyncio.get_running_loop()
        return await loop.create_server(lambda: _ClientSide(self), host, port,
                                        backlog=backlog, reuse_address=True)


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` as (address, port); ValueError if malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected ADDR:PORT, got {text!r}")
    ipaddress.ip_address(host)
    value = int(port)
    if not 0 < value < 65536:
        raise ValueError(f"port out of range: {value}")
    return host, value


def raise_nofile(wanted: int) -> int:
    """Raise RLIMIT_NOFILE towards ``wanted`` (root may raise the hard limit); new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def _serve(host: str, port: int, proxy: SocksProxy) -> None:
    server = await proxy.start(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """Run the proxy until SIGTERM/SIGINT; print the counters as JSON on stderr."""
    import uvloop

    parser = argparse.ArgumentParser(prog="uvsocks", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", required=True, help="ADDR:PORT")
    parser.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS)
    args = parser.parse_args(argv)
    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        parser.error(str(exc))
    if args.max_connections < 1:
        parser.error("--max-connections must be at least 1")
    raise_nofile(2 * args.max_connections + 64)
    proxy = SocksProxy(args.max_connections)
    uvloop.run(_serve(host, port, proxy))
    print(json.dumps(dict(proxy.counters)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
