"""The cache on the simulated network (RFC 9111/9110): revalidation never hands the
proxy's own 304 to a client, hits answer the client's Range and conditions,
only-if-cached, strict dates, header updates from a 304, and the access log's
status and times."""

from __future__ import annotations

import asyncio

import pytest

from apps.httpproxy.cache import format_http_date
from apps.httpproxy.parser import encode_chunk
from tests.httpproxy.harness import World, fetch, origin_url, simulate

BODY = b"0123456789" * 100


def codes(w: World) -> list[str]:
    return [f"{e.code}/{e.status}" for e in w.log.entries]


def ok(fields: str, body: bytes = BODY, chunked: bool = False) -> bytes:
    """A raw 200 with ``fields`` (CRLF-separated lines), Content-Length or chunked."""
    if chunked:
        framed = b"".join(encode_chunk(body[i:i + 300]) for i in range(0, len(body), 300))
        return (b"HTTP/1.1 200 OK\r\n" + fields.encode() + b"\r\nTransfer-Encoding: chunked"
                b"\r\n\r\n" + framed + encode_chunk(b""))
    return (b"HTTP/1.1 200 OK\r\n" + fields.encode()
            + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def not_modified(fields: str) -> bytes:
    return b"HTTP/1.1 304 Not Modified\r\n" + fields.encode() + b"\r\n\r\n"


# -- 1. the proxy's own 304 never reaches a plain GET -------------------------------------

@pytest.mark.parametrize("stored_etag,etag_304,chunked", [
    ('W/"a"', '"a"', True),     # nginx gzip: weak on the 200, strong on the 304
    ('"a"', '"b"', False),      # the origin changes the ETag in its 304
])
def test_a_304_that_does_not_select_the_stored_response_is_never_relayed(
        stored_etag, etag_304, chunked) -> None:
    async def body(w: World):
        w.origin.sequence["/r"] = [
            ok(f"Cache-Control: max-age=0\r\nETag: {stored_etag}", chunked=chunked),
            not_modified(f"ETag: {etag_304}\r\nCache-Control: max-age=0"),
            ok(f"Cache-Control: max-age=60\r\nETag: {etag_304}", BODY[::-1], chunked),
        ]
        conn = await w.connect()
        r1, b1 = await fetch(conn, origin_url("/r"))
        r2, b2 = await fetch(conn, origin_url("/r"))
        assert (r1.status, b1) == (200, BODY)
        assert (r2.status, b2) == (200, BODY[::-1])   # the origin's full answer
        assert w.origin.requests[1][2]["if-none-match"] == stored_etag
        assert "if-none-match" not in w.origin.requests[2][2]
        r3, b3 = await fetch(conn, origin_url("/r"))  # and that answer was stored
        assert (r3.status, b3) == (200, BODY[::-1]) and w.origin.hits["/r"] == 3
        assert codes(w) == ["TCP_MISS/200", "TCP_REFRESH_MISS/200", "TCP_MEM_HIT/200"]
        conn.writer.close()

    simulate(body)


def test_a_chunked_entry_freshened_by_a_matching_304_is_served_whole() -> None:
    async def body(w: World):
        w.origin.sequence["/r"] = [
            ok('Cache-Control: max-age=0\r\nETag: "a"', chunked=True),
            not_modified('ETag: "a"\r\nCache-Control: max-age=0'),
        ]
        conn = await w.connect()
        await fetch(conn, origin_url("/r"))
        r2, b2 = await fetch(conn, origin_url("/r"))
        assert (r2.status, b2, r2.headers.get("content-length")) == (200, BODY, "1000")
        assert codes(w) == ["TCP_MISS/200", "TCP_REFRESH_HIT/200"]
        conn.writer.close()

    simulate(body)


# -- 2. Range and conditions answered from the stored response ---------------------------

def test_range_and_conditional_requests_on_a_hit() -> None:
    async def body(w: World):
        date = format_http_date(w.proxy.clock())
        lm = format_http_date(w.proxy.clock() - 3600)
        w.origin.sequence["/r"] = [ok(f'Cache-Control: max-age=600\r\nETag: "a1"\r\n'
                                      f"Date: {date}\r\nLast-Modified: {lm}\r\n"
                                      "Content-Type: text/plain")]
        conn = await w.connect()
        await fetch(conn, origin_url("/r"))
        r, b = await fetch(conn, origin_url("/r"), fields=[("Range", "bytes=10-19")])
        assert (r.status, b, r.headers.get("content-range")) == (206, BODY[10:20],
                                                                 "bytes 10-19/1000")
        r, b = await fetch(conn, origin_url("/r"), fields=[("Range", "bytes=-5")])
        assert (r.status, b) == (206, BODY[-5:])
        r, b = await fetch(conn, origin_url("/r"), fields=[("Range", "bytes=0-1,5-6")])
        assert r.status == 206 and r.headers.get("content-type").startswith(
            "multipart/byteranges; boundary=")
        assert b.count(b"Content-Range: bytes ") == 2 and b"\r\n\r\n56\r\n" in b
        r, b = await fetch(conn, origin_url("/r"), fields=[("Range", "bytes=5000-")])
        assert (r.status, b, r.headers.get("content-range")) == (416, b"", "bytes */1000")
        # If-Range: the strong ETag or the (strong) Last-Modified, else the whole body.
        for if_range, status in (('"a1"', 206), ('"zz"', 200), ('W/"a1"', 200),
                                 (lm, 206), (date, 200)):
            r, b = await fetch(conn, origin_url("/r"), fields=[("Range", "bytes=1-2"),
                                                                ("If-Range", if_range)])
            assert (r.status, len(b)) == (status, 2 if status == 206 else 1000), if_range
        r, b = await fetch(conn, origin_url("/r"), fields=[("If-None-Match", 'W/"a1"')])
        assert (r.status, b) == (304, b"")
        assert r.headers.get("etag") == '"a1"' and r.headers.get("date") == date
        assert r.headers.get("cache-control") == "max-age=600"
        assert r.headers.get("content-type") is None and r.headers.get("age") is not None
        r, b = await fetch(conn, origin_url("/r"), fields=[("If-Modified-Since", lm)])
        assert (r.status, b) == (304, b"")
        # If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2).
        r, b = await fetch(conn, origin_url("/r"), fields=[("If-None-Match", '"x"'),
                                                            ("If-Modified-Since", lm)])
        assert (r.status, b) == (200, BODY)
        r, b = await fetch(conn, origin_url("/r"), method="HEAD",
                           fields=[("If-None-Match", '"a1"')])
        assert r.status == 304
        assert w.origin.hits["/r"] == 1
        assert codes(w)[1:] == ["TCP_MEM_HIT/206"] * 3 + ["TCP_MEM_HIT/416"] + [
            "TCP_MEM_HIT/206", "TCP_MEM_HIT/200", "TCP_MEM_HIT/200", "TCP_MEM_HIT/206",
            "TCP_MEM_HIT/200", "TCP_MEM_HIT/304", "TCP_MEM_HIT/304", "TCP_MEM_HIT/200",
            "TCP_MEM_HIT/304"]
        conn.writer.close()

    simulate(body)


def test_a_revalidated_hit_answers_the_clients_range() -> None:
    async def body(w: World):
        w.origin.sequence["/r"] = [ok('Cache-Control: max-age=0\r\nETag: "a"'),
                                   not_modified('ETag: "a"')]
        conn = await w.connect()
        await fetch(conn, origin_url("/r"))
        r, b = await fetch(conn, origin_url("/r"), fields=[("Range", "bytes=0-3")])
        assert (r.status, b) == (206, BODY[:4])
        assert "range" not in w.origin.requests[1][2]   # revalidated whole
        conn.writer.close()

    simulate(body)


def test_if_match_goes_to_the_origin() -> None:
    async def body(w: World):
        conn = await w.connect()
        await fetch(conn, origin_url("/fresh"))
        await fetch(conn, origin_url("/fresh"), fields=[("If-Match", '"v1"')])
        assert w.origin.hits["/fresh"] == 2    # RFC 9111 §4.3.2: not for a cache
        conn.writer.close()

    simulate(body)


# -- 3. strict dates ----------------------------------------------------------------------

@pytest.mark.parametrize("expires", [
    "Thu, 06 Nov 2036 08:49:37 UTC", "Thu, 06 Nov 2036 08:49:37 +0000",
    "Thu, 06 Nov 36 08:49:37 GMT", "Thu 06 Nov 2036 08:49:37 GMT",
    "Thu,  06 Nov 2036 08:49:37 GMT", "Thu, 06-Nov-2036 08:49:37 GMT",
    "Thu, 06 Nov 2036 08.49.37 GMT", "Thu, 06 Nov 2036 8:49:37 GMT",
])
def test_a_malformed_expires_is_already_stale(expires) -> None:
    async def body(w: World):
        date = format_http_date(w.proxy.clock())
        w.origin.sequence["/r"] = [ok(f"Date: {date}\r\nExpires: {expires}")] * 2
        conn = await w.connect()
        await fetch(conn, origin_url("/r"))
        await fetch(conn, origin_url("/r"))
        assert w.origin.hits["/r"] == 2
        conn.writer.close()

    simulate(body)


def test_repeated_expires_lines_are_invalid_and_an_invalid_date_is_the_response_time():
    async def body(w: World):
        later = format_http_date(w.proxy.clock() + 3600)
        w.origin.sequence["/two"] = [ok(f"Expires: {later}\r\nExpires: {later}")] * 2
        # Date invalid: Expires counts from the time the response came (an hour).
        w.origin.sequence["/nodate"] = [ok(f"Date: yesterday\r\nExpires: {later}")] * 2
        conn = await w.connect()
        for path in ("/two", "/two", "/nodate", "/nodate"):
            await fetch(conn, origin_url(path))
        assert (w.origin.hits["/two"], w.origin.hits["/nodate"]) == (2, 1)
        conn.writer.close()

    simulate(body)


# -- 4. only-if-cached --------------------------------------------------------------------

def test_only_if_cached() -> None:
    async def body(w: World):
        cc = [("Cache-Control", "only-if-cached")]
        conn = await w.connect()
        r, _b = await fetch(conn, origin_url("/fresh"), fields=cc)
        assert r.status == 504 and w.origin.hits["/fresh"] == 0
        conn = await w.connect()
        await fetch(conn, origin_url("/fresh"))
        r, b = await fetch(conn, origin_url("/fresh"), fields=cc)
        assert r.status == 200 and b and w.origin.hits["/fresh"] == 1
        await fetch(conn, origin_url("/etag"))        # stored, but stale at once
        r, _b = await fetch(conn, origin_url("/etag"), fields=cc)
        assert r.status == 504 and w.origin.hits["/etag"] == 1
        conn.writer.close()

    simulate(body)


# -- 5. a 304 updates the stored header fields --------------------------------------------

def test_a_304_replaces_the_stored_fields_but_not_content_length() -> None:
    async def body(w: World):
        w.origin.sequence["/r"] = [
            ok('Cache-Control: max-age=0\r\nETag: "a"\r\nAge: 500\r\n'
               "Content-Encoding: identity\r\nX-A: 1\r\nX-A: 2"),
            not_modified('ETag: "a"\r\nCache-Control: max-age=60\r\n'
                         "Content-Encoding: gzip\r\nX-A: 3\r\nContent-Length: 7"),
        ]
        conn = await w.connect()
        await fetch(conn, origin_url("/r"))
        r, b = await fetch(conn, origin_url("/r"))
        assert r.status == 200 and b == BODY
        assert r.headers.get_all("x-a") == ["3"]
        assert r.headers.get("content-encoding") == "gzip"
        assert r.headers.get("content-length") == "1000"
        assert int(r.headers.get("age")) < 5          # the 304's age, not the old 500
        r, b = await fetch(conn, origin_url("/r"))    # fresh for 60 s now
        assert codes(w)[-1] == "TCP_MEM_HIT/200" and w.origin.hits["/r"] == 2
        conn.writer.close()

    simulate(body)


# -- 6. the access log --------------------------------------------------------------------

def test_a_spliced_head_is_logged_with_its_status() -> None:
    async def body(w: World):
        conn = await w.connect()
        r, _b = await fetch(conn, origin_url("/nostore"), method="HEAD",
                            fields=[("Connection", "close")])
        assert r.status == 200
        conn.writer.close()
        assert await w.until(lambda: len(w.log.entries) == 1)
        assert w.log.entries[0].note == "spliced" and codes(w) == ["TCP_MISS/200"]

    simulate(body, mode="splice")


def test_elapsed_time_counts_from_the_requests_own_start() -> None:
    async def body(w: World):
        conn = await w.connect()
        await fetch(conn, origin_url("/fresh"))
        await asyncio.sleep(20)                       # idle on the kept-alive connection
        sent = w.proxy.clock()
        await fetch(conn, origin_url("/fresh"))
        second = w.log.entries[1]
        assert second.elapsed < 1.0 and second.start >= sent
        conn.writer.close()

    simulate(body)
