"""Spliced responses: the thesis's HTTP/1.0 caching proxy on the splice layer.

When the client will send no further request on its connection (HTTP/1.0 without
keep-alive, or ``Connection: close``) and the request has no body, there is nothing
left for the proxy to read from the client once the request is forwarded: the origin
connection is opened with intend_splice, the request written as the proxy's own data,
and the two connections spliced (docs/splice.md §1). The stack relays the whole response;
the proxy copies no byte of it. When the response may be cached, a TCP Tap
(docs/splice.md §6) keeps a copy, from which the cache entry is made afterwards.

A spliced response is relayed byte for byte: its head is the origin's (no Via field is
added, hop-by-hop fields are not removed), as in the thesis's proxy.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from apps.httpproxy import cache as rules
from apps.httpproxy.parser import (
    BadResponse,
    ChunkedDecoder,
    Framing,
    HttpError,
    Request,
    parse_response_head,
    response_framing,
    strip_hop_by_hop,
)

if TYPE_CHECKING:
    from apps.httpproxy.accesslog import Entry
    from apps.httpproxy.conn import BufferedStream
    from apps.httpproxy.server import HttpProxy

#: Room for the response head on top of the largest object the cache keeps.
HEAD_ROOM = 64 << 10


def can_splice(proxy: HttpProxy, client: BufferedStream, req: Request,
               framing: Framing) -> bool:
    """Whether this exchange is the last on its connection and may be spliced."""
    if proxy.mode != "splice" or proxy.splice is None or req.keep_alive:
        return False
    if framing is not Framing.NONE or client.buf or req.method not in ("GET", "HEAD"):
        return False
    tcb = client.writer.get_extra_info("tcb")
    return tcb is not None and tcb.state.name == "ESTABLISHED"


async def forward_spliced(proxy: HttpProxy, client: BufferedStream, req: Request,
                          body: tuple[Framing, int], entry: Entry) -> bool:
    """Forward the request and splice the response; always the last exchange."""
    origin = await proxy._open_origin(client, req.host, req.port, entry, splice=True)
    if origin is None:
        return False
    request_time = proxy.clock()
    await proxy._send_request(client, origin, req, body, None)
    # The tap always keeps the response head, for the access log's status (a HEAD
    # too); the body as well when the response may fill the cache.
    limit = HEAD_ROOM
    if proxy.cache is not None and req.method == "GET" and \
            not rules.request_no_store(req.method, req.headers):
        limit += proxy.cache.max_object
    pair = await proxy.splice.splice(client.writer, origin.writer, tap="s2c",
                                     tap_limit=limit, tap_total=limit)
    proxy.counters["spliced"] += 1
    entry.code, entry.note = "TCP_MISS", "spliced"
    head, rest = await _read_tap(pair.tap_reader)
    await proxy.splice.wait_finished(pair)
    entry.bytes = pair.counters["s2c_bytes"]
    if head:
        _learn(proxy, req, head, rest, entry, (request_time, proxy.clock()))
    return False


async def _read_tap(reader) -> tuple[bytes, bytes | None]:
    """(response head, the rest or None when the copy is incomplete) from the tap."""
    if reader is None:
        return b"", None
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return b"", None
    try:
        return head, await reader.read(-1)
    except ConnectionError:
        return head, None  # larger than the cache takes, or reset: nothing stored


def _learn(proxy: HttpProxy, req: Request, head: bytes, rest: bytes | None, entry: Entry,
           times: tuple[float, float]) -> None:
    """Fill the access-log status and the cache from the tapped response."""
    try:
        got = parse_response_head(head)
        if got is None:
            return
        resp, _n = got
        entry.status = resp.status
        entry.type = resp.headers.get("content-type") or "-"
        framing, length = response_framing(req.method, resp)
        payload = None if rest is None else _payload(rest, framing, length)
    except HttpError:
        return
    if payload is None or proxy.cache is None or req.method != "GET":
        return
    if rules.storable(req.method, req.headers, resp.status, resp.headers):
        proxy._store(req, resp, strip_hop_by_hop(resp.headers), payload, times)
        proxy.counters["stored_from_tap"] += 1


def _payload(rest: bytes, framing: Framing, length: int) -> bytes | None:
    """The whole body, or None if the copy is incomplete."""
    if framing is Framing.NONE:
        return b""
    if framing is Framing.LENGTH:
        return rest[:length] if len(rest) >= length else None
    if framing is Framing.CLOSE:
        return rest
    if framing is Framing.CHUNKED:
        decoder = ChunkedDecoder(error=BadResponse)
        body, _used = decoder.feed(rest)
        return body if decoder.done else None
    return None

