"""A three-host simulated network for the HTTP proxy: client, proxy, origin.

client 198.18.0.1 --- 198.18.0.2 proxy 198.19.0.2 --- 198.19.0.1 origin

With ``ipv6=True`` the links speak IPv6 too, with the lab's addresses: the client
2001:2:0:1::1, the proxy 2001:2:0:1::2 and 2001:2:0:2::2, the origin 2001:2:0:2::1
(its servers and the proxy listen on both families).

The origin is a small HTTP/1.1 server that counts requests per path and serves
the variants the cache tests need; an echo service on 443 stands in for TLS.
Everything runs on virtual time (the proxy's clock and the origin's Date too).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from apps.httpproxy.cache import format_http_date
from apps.httpproxy.conn import BufferedStream
from apps.httpproxy.parser import (
    BadResponse,
    ChunkedDecoder,
    Headers,
    Response,
    encode_chunk,
    parse_response_head,
    response_framing,
)
from apps.httpproxy.policy import HttpPolicy
from apps.httpproxy.server import HttpProxy
from apps.httpproxy.store import CacheStore
from splice.testing.sim import splice_api
from stack.sim import SimNetwork
from stack.simloop import run, until
from stack.streams import TcpApi

CLIENT, PROXY_C, PROXY_S, ORIGIN = "198.18.0.1", "198.18.0.2", "198.19.0.2", "198.19.0.1"
CLIENT6, PROXY6_C, PROXY6_S, ORIGIN6 = ("2001:2:0:1::1", "2001:2:0:1::2", "2001:2:0:2::2",
                                       "2001:2:0:2::1")
PROXY_PORT, HTTP, TLS, OTHER = 3128, 80, 443, 8443
#: Virtual loop time 0 is this wall-clock time (the proxy's and the origin's clock).
EPOCH = 1_700_000_000.0
BIG = 3 << 20


class Records(logging.Handler):
    """Collects access-log entries."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.entries: list = []

    def emit(self, record: logging.LogRecord) -> None:
        self.entries.append(record.http)


@dataclass
class Origin:
    """The test origin: what it was asked, and its clock."""

    clock: Callable[[], float]
    hits: Counter = field(default_factory=Counter)
    requests: list = field(default_factory=list)
    version: str = "v1"
    #: path -> the raw response, in parts written with a short pause between them
    scripted: dict[str, list[bytes]] = field(default_factory=dict)
    #: every request as received: head and, for POST, the body bytes as framed
    raw_requests: list[bytes] = field(default_factory=list)
    #: path -> raw responses, one per request in order (before ``scripted``)
    sequence: dict[str, list[bytes]] = field(default_factory=dict)

    def page(self, path: str, head: dict[str, str]) -> tuple[int, list, bytes, str]:
        """(status, fields, body, framing) for a GET/HEAD of ``path``."""
        now = self.clock()
        date = [("Date", format_http_date(now))]
        body = f"{path} {self.version} ".encode() * 20
        etag = f'"{self.version}"'
        if path == "/fresh":
            return 200, date + [("Cache-Control", "max-age=60"), ("ETag", etag)], body, "len"
        if path in ("/etag", "/etag-changes"):
            if head.get("if-none-match") == etag:
                return 304, date + [("ETag", etag), ("Cache-Control", "max-age=0"),
                                    ("X-Refreshed", "yes")], b"", "len"
            return 200, date + [("Cache-Control", "max-age=0"), ("ETag", etag)], body, "len"
        if path == "/lm":   # heuristic: 10% of a 1000 s Last-Modified age
            return 200, date + [("Last-Modified", format_http_date(now - 1000))], body, "len"
        if path == "/nostore":
            return 200, date + [("Cache-Control", "no-store")], body, "len"
        if path == "/chunked":
            return 200, date + [("Cache-Control", "max-age=60")], body * 50, "chunked"
        if path == "/close":
            return 200, date + [("Cache-Control", "max-age=60")], body * 50, "close"
        if path in ("/big", "/big-paced"):
            return 200, date + [("Cache-Control", "max-age=60")], _big(), "len"
        if path == "/vary":
            lang = head.get("accept-language", "")
            return 200, date + [("Cache-Control", "max-age=60"), ("Vary", "Accept-Language")], \
                f"lang={lang}".encode(), "len"
        return 404, date, b"not found\n", "len"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request per connection (the proxy asks for close)."""
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = raw.decode("latin-1").split("\r\n")
        method, target, _v = lines[0].split(" ")
        head = {k.strip().lower(): v.strip() for k, _s, v in
                (line.partition(":") for line in lines[1:] if line)}
        self.requests.append((method, target, head))
        self.raw_requests.append(raw)
        self.hits[target] += 1
        if self.sequence.get(target):
            writer.write(self.sequence[target].pop(0))
            await writer.drain()
            writer.close()
            return
        if target in self.scripted:
            await self._scripted(self.scripted[target], writer)
            return
        if target == "/slow":
            await reader.read()        # never answers; ends when the proxy gives up
            writer.close()
            return
        if target == "/garbage":
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        elif target == "/badlen":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 12abc\r\n\r\n")
        elif target == "/short":   # promises more than it sends, then closes
            writer.write(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\n"
                         b"Content-Length: 100000\r\n\r\n" + b"s" * 5000)
        elif method == "POST":
            body, framed = await _request_body(reader, head)
            self.raw_requests[-1] += framed
            writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))
        elif target == "/big-paced":   # the head, a pause, then the body
            head_part, sep, rest = self._response(method, target, head).partition(b"\r\n\r\n")
            writer.write(head_part + sep)
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(rest)
        else:
            writer.write(self._response(method, target, head))
        await writer.drain()
        writer.close()

    async def _scripted(self, parts: list[bytes], writer: asyncio.StreamWriter) -> None:
        for i, part in enumerate(parts):
            if i:
                await asyncio.sleep(0.05)   # the next part in a later segment
            writer.write(part)
            await writer.drain()
        writer.close()

    def _response(self, method: str, path: str, head: dict[str, str]) -> bytes:
        status, fields, body, framing = self.page(path, head)
        headers = Headers(fields)
        if framing == "len":
            headers.add("Content-Length", str(len(body)))
        elif framing == "chunked":
            headers.add("Transfer-Encoding", "chunked")
            body = b"".join(encode_chunk(body[i:i + 1000]) for i in range(0, len(body), 1000)) \
                + encode_chunk(b"")
        if method == "HEAD" or status == 304:
            body = b""
        return Response(status, "X", headers=headers).encode() + body


async def _request_body(reader: asyncio.StreamReader,
                        head: dict[str, str]) -> tuple[bytes, bytes]:
    """(payload, the body as framed on the wire)."""
    if head.get("transfer-encoding") != "chunked":
        body = await reader.readexactly(int(head.get("content-length", "0")))
        return body, body
    decoder, out, pending, framed = ChunkedDecoder(), bytearray(), b"", bytearray()
    while not decoder.done:
        data = await reader.read(65536)
        if not data:
            break   # cut short: the proxy gave up on the body
        pending += data
        payload, used = decoder.feed(pending)
        out += payload
        framed += pending[:used]
        pending = pending[used:]
    return bytes(out), bytes(framed)


def _big() -> bytes:
    return bytes(range(256)) * (BIG // 256)


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


@dataclass
class World:
    """What a test body gets."""

    client: TcpApi
    proxy: HttpProxy
    proxy_api: TcpApi
    origin: Origin
    log: Records

    @property
    def now(self) -> float:
        """Virtual time."""
        return asyncio.get_running_loop().time()

    async def until(self, predicate: Callable[[], bool], timeout: float = 300.0) -> bool:
        """Let virtual time run (0.5 s steps) until ``predicate()`` or ``timeout``."""
        return await until(predicate, timeout, step=0.5)

    async def connect(self, proxy: str = PROXY_C) -> BufferedStream:
        """A client connection to the proxy (at ``proxy``: PROXY6_C for IPv6)."""
        return BufferedStream(*await self.client.open_connection(proxy, PROXY_PORT))

    def proxy_connections(self) -> int:
        """Connections in the proxy's TCP table, TIME_WAIT excluded."""
        return sum(1 for tcb in self.proxy_api.tcp.connections.values()
                   if tcb.state.name != "TIME_WAIT")


DEFAULT_MODE = {"mode": "copy"}


def simulate(body: Callable[[World], Awaitable[Any]], *, policy: HttpPolicy | None = None,
             mode: str | None = None, cache: CacheStore | bool | None = True,
             seed: int = 1, ipv6: bool = False, resolve: Any = None) -> Any:
    """Run ``body`` in a fresh three-host network with the proxy on the middle host
    (``ipv6``: dual-stack; ``resolve``: the proxy's resolver of names)."""
    mode = mode or DEFAULT_MODE["mode"]
    net = SimNetwork(seed)
    c, px, o = net.add_host("client"), net.add_host("proxy"), net.add_host("origin")
    net.connect(c, f"{CLIENT}/24", px, f"{PROXY_C}/24")
    net.connect(px, f"{PROXY_S}/24", o, f"{ORIGIN}/24")
    c.add_route("0.0.0.0/0", PROXY_C)
    o.add_route("0.0.0.0/0", PROXY_S)
    if ipv6:
        _add_ipv6(net, c, px, o)
    records = Records()
    access = logging.getLogger(f"tests.httpproxy.access.{id(records)}")
    access.propagate = False
    access.setLevel(logging.INFO)
    access.addHandler(records)
    store = CacheStore(16 << 20, 8 << 20) if cache is True else cache

    async def main(driver) -> Any:
        loop = asyncio.get_running_loop()

        def clock() -> float:
            return EPOCH + loop.time()

        origin = Origin(clock)
        origin_api = driver.tcp(o)
        await origin_api.start_server(origin.serve, ORIGIN, HTTP)
        await origin_api.start_server(_echo, ORIGIN, TLS)
        await origin_api.start_server(_echo, ORIGIN, OTHER)
        if ipv6:
            await origin_api.start_server(origin.serve, "::", HTTP)
            await origin_api.start_server(_echo, "::", TLS)
        proxy_api = driver.tcp(px)
        splice = splice_api(driver, px) if mode == "splice" else None
        proxy = HttpProxy(proxy_api, mode=mode, policy=policy, log=access, splice=splice,
                          cache=store, clock=clock, resolve=resolve)
        await proxy.start(PROXY_C, PROXY_PORT)
        if ipv6:
            await proxy.start(PROXY6_C, PROXY_PORT)
        return await body(World(driver.tcp(c), proxy, proxy_api, origin, records))

    try:
        return run(main, net)
    finally:
        access.removeHandler(records)


def _add_ipv6(net: SimNetwork, c: Any, px: Any, o: Any) -> None:
    """The lab's IPv6 addresses and routes on the three hosts (DAD run out)."""
    now = net.now
    c.ip6.add_address(c.interfaces[0], f"{CLIENT6}/64", now)
    px.ip6.add_address(px.interfaces[0], f"{PROXY6_C}/64", now)
    px.ip6.add_address(px.interfaces[1], f"{PROXY6_S}/64", now)
    o.ip6.add_address(o.interfaces[0], f"{ORIGIN6}/64", now)
    net.run(3.0)    # DAD
    c.ip6.add_route("default", PROXY6_C)
    o.ip6.add_route("default", PROXY6_S)


async def fetch(conn: BufferedStream, url: str, *, method: str = "GET",
                fields: list[tuple[str, str]] | None = None, body: bytes = b"",
                version: str = "HTTP/1.1") -> tuple[Response, bytes]:
    """Send one request on ``conn`` and read its response (body decoded)."""
    host = url.split("/")[2]
    headers = Headers([("Host", host), *(fields or [])])
    if body:
        headers.add("Content-Length", str(len(body)))
    conn.writer.write(f"{method} {url} {version}\r\n".encode() + headers.encode() + body)
    return await read_response(conn, method)


async def read_response(conn: BufferedStream, method: str = "GET") -> tuple[Response, bytes]:
    """One response from ``conn``: head and decoded body."""
    resp = await conn.read_head(parse_response_head)
    framing, length = response_framing(method, resp)
    out = bytearray()
    async for _raw, payload in conn.body(framing, length, BadResponse):
        out += payload
    return resp, bytes(out)


def origin_url(path: str, port: int = HTTP) -> str:
    """An absolute-form URL on the origin."""
    return f"http://{ORIGIN}{'' if port == HTTP else f':{port}'}{path}"
