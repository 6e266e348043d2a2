"""The cache side of the HTTP proxy: finding a stored response, deciding whether it
may be used, freshening it after a 304, and answering a request from it.

Functions of :class:`~apps.httpproxy.server.HttpProxy` (as in
:mod:`apps.httpproxy.spliced`): the proxy keeps the connection handling, these the
RFC 9111 §4 steps. The answer itself (304, 206, 416 or the stored response) is made
by the pure :func:`apps.httpproxy.conditional.answer`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from apps.httpproxy import cache as rules
from apps.httpproxy import conditional
from apps.httpproxy.parser import Headers, Request, Response, add_via, strip_hop_by_hop
from apps.httpproxy.store import StoredResponse

if TYPE_CHECKING:
    from apps.httpproxy.accesslog import Entry
    from apps.httpproxy.conn import BufferedStream
    from apps.httpproxy.server import HttpProxy


def usable_entry(proxy: HttpProxy, req: Request) -> StoredResponse | None:
    """A stored response that may answer ``req``, fresh or to revalidate; None when
    the cache is not to be used for it (a request body, no-store, or a precondition
    that only the origin evaluates, RFC 9111 §4.3.2)."""
    if proxy.cache is None or rules.request_no_store(req.method, req.headers) or \
            not conditional.cache_may_answer(req.headers):
        return None
    for stored in proxy.cache.variants(req.uri):
        if rules.vary_matches(stored.headers, stored.vary_key, req.headers):  # §4.1
            return stored
    return None


def is_fresh(proxy: HttpProxy, req: Request, stored: StoredResponse) -> bool:
    """Whether ``stored`` may be served without asking the origin (§4.2, §5.2)."""
    decision = rules.decide(req.headers, stored.status, stored.headers,
                            stored.request_time, stored.response_time, proxy.clock())
    return decision is rules.Decision.FRESH


def freshened(proxy: HttpProxy, stored: StoredResponse, resp: Response,
              request_time: float, response_time: float) -> StoredResponse | None:
    """The stored response updated by the origin's 304 (§4.3.4, §3.2); None when the
    304 does not select it (another validator): the caller then fetches the full
    response, since the client did not ask for a 304 about the proxy's copy."""
    assert proxy.cache is not None
    if not rules.validator_matches(stored.headers, resp.headers):
        proxy.counters["refresh_mismatch"] += 1
        return None
    proxy.counters["refresh_hit"] += 1
    headers = rules.freshen(stored.headers, strip_hop_by_hop(resp.headers))
    return proxy.cache.replace_headers(stored, headers, request_time, response_time)


async def send_stored(proxy: HttpProxy, client: BufferedStream, req: Request,
                      stored: StoredResponse, entry: Entry) -> bool:
    """Answer from the cache, with its current Age (RFC 9111 §4, §5.1): the stored
    response, or a 304, 206 or 416 made from it for the client's conditions and
    Range (:func:`apps.httpproxy.conditional.answer`). Whether the connection stays
    open."""
    assert proxy.cache is not None
    proxy.cache.touch(stored)
    headers = stored.headers.copy()
    now = proxy.clock()
    age = rules.current_age(stored.headers, stored.request_time, stored.response_time, now)
    headers.set("Age", rules.age_header(age))
    got = conditional.answer(req.method, req.headers, stored.status, stored.reason,
                             headers, stored.body, stored.response_time)
    if got.status not in (204, 304):
        got.headers.set("Content-Length", str(len(got.body)))
    if got.status != stored.status:
        proxy.counters[f"hit_{got.status}"] += 1
    add_via(got.headers, "HTTP/1.1", proxy.policy.via)
    keep = req.keep_alive and not proxy.draining
    connection_header(got.headers, req, keep)
    head = Response(got.status, got.reason, headers=got.headers).encode()
    body = b"" if req.method == "HEAD" else got.body
    entry.status, entry.type = got.status, got.headers.get("content-type") or "-"
    await proxy._write(client.writer, head + body, entry)
    return keep


class Capture:
    """The body of a response being stored, bounded by the per-object limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0
        self.overflow = False

    def add(self, data: bytes) -> None:
        """Keep ``data`` unless the object became too large to store."""
        if self.overflow:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.overflow, self.parts = True, []
        else:
            self.parts.append(data)


def store_response(proxy: HttpProxy, req: Request, resp: Response, headers: Headers,
                   body: bytes, times: tuple[float, float]) -> None:
    """Store a whole response with the secondary key of its Vary fields (§4.1) and
    the (request, response) times of §4.2.3."""
    assert proxy.cache is not None
    headers.remove("content-length")
    key = rules.secondary_key(rules.vary_names(resp.headers), req.headers)
    entry = StoredResponse(req.uri, key, resp.status, resp.reason, headers, body, *times)
    if proxy.cache.put(entry):
        proxy.counters["stored"] += 1


def connection_header(headers: Headers, req: Request, keep: bool) -> None:
    """Connection: close when the connection ends after this response; keep-alive
    for an HTTP/1.0 client whose connection stays (RFC 9112 §9.3)."""
    if not keep:
        headers.set("Connection", "close")
    elif req.version == "HTTP/1.0":
        headers.set("Connection", "keep-alive")
