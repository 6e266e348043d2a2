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

On a kept-alive connection, a body alone may be spliced one way
(:func:`splice_body`, :func:`splice_request_body`, docs/splice.md §7): the proxy
sent the head, the stack relays the body, and the connection is the proxy's again.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from apps.httpproxy import cache as rules
from apps.httpproxy import hits
from apps.httpproxy.conn import Abort
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
    from apps.httpproxy.hits import Capture
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
                          body: tuple[Framing, int], entry: Entry,
                          ips: list[str] | None = None) -> bool:
    """Forward the request and splice the response; always the last exchange.
    ``ips``: the origin's addresses the client connection can be spliced with
    (apps/httpproxy/dial.py), resolved here when None."""
    origin = await proxy._open_origin(client, req.host, req.port, entry, splice=True,
                                      ips=ips)
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
        hits.store_response(proxy, req, resp, strip_hop_by_hop(resp.headers), payload,
                            times)
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


async def splice_body(proxy: HttpProxy, origin: BufferedStream, client: BufferedStream,
                      length: int | None, capture: Capture | None, entry: Entry) -> None:
    """A body spliced one way (docs/splice.md §7): the stack relays it from the origin
    to the client; then the client connection is ours again for its next request
    (Content-Length), or has ended with the origin's FIN (``length`` None, a
    close-delimited body). With ``capture`` a TCP Tap keeps the copy for the
    cache."""
    assert proxy.splice is not None
    seam = bytes(origin.buf if length is None else origin.buf[:length])
    del origin.buf[:len(seam)]
    bound = capture.limit if capture is not None else 0
    tap = capture is not None and (length is None or length <= capture.limit)
    ow = await proxy.splice.relay(origin.writer, client.writer, length, seam=seam,
                                 tap=tap, tap_limit=(length or bound) + 1,
                                 tap_total=length or bound,
                                 idle_timeout=proxy.policy.response_timeout)
    proxy.counters["spliced_bodies"] += 1
    proxy.counters["spliced_body_bytes"] += ow.counters["relayed_bytes"]
    entry.bytes += length if length is not None else (
        ow.counters["relayed_bytes"] + ow.counters["copied_bytes"])
    entry.note = entry.note or "body spliced"
    if ow.outcome != "done":
        proxy.counters["body_cut"] += 1
        entry.note = f"response body: spliced relay ended {ow.outcome}"
        raise Abort(entry.note)
    if capture is not None:
        data = None
        if tap:
            try:
                data = await ow.tap_reader.read(-1)
            except ConnectionError:
                data = None      # the tap gave up: larger than the cache takes
        if data is not None and (length is None or len(data) == length):
            capture.add(data)
        else:
            capture.overflow = True

async def splice_request_body(proxy: HttpProxy, client: BufferedStream,
                          origin: BufferedStream, length: int) -> None:
    """A Content-Length request body (an upload) spliced one way, client to origin:
    the other direction of the same primitive (docs/splice.md §7)."""
    assert proxy.splice is not None
    seam = bytes(client.buf[:length])
    del client.buf[:len(seam)]
    ow = await proxy.splice.relay(client.writer, origin.writer, length, seam=seam,
                                 idle_timeout=proxy.policy.handshake_timeout)
    proxy.counters["spliced_request_bodies"] += 1
    if ow.outcome != "done":
        raise HttpError(f"request body: spliced relay ended {ow.outcome}")
