"""Message framing through the proxy, end to end on the simulated network: what the
origin and the client receive when a message could be read two ways (RFC 9112 §6-7,
RFC 9110 §7.6.1), and cached responses that arrived chunked."""

from __future__ import annotations

import logging

import pytest

from apps.httpproxy.conn import PeerClosed
from tests.httpproxy.harness import ORIGIN, World, fetch, origin_url, read_response, simulate

OK_HEAD = b"HTTP/1.1 200 OK\r\n"


async def exchange(w: World, data: bytes) -> bytes:
    """Send ``data`` on a new connection and read until the proxy closes or resets it."""
    conn = await w.connect()
    conn.writer.write(data)
    out = bytearray()
    try:
        while chunk := await conn.read_some():
            out += chunk
    except PeerClosed:
        pass
    conn.writer.close()
    return bytes(out)


def get(path: str, *fields: str) -> bytes:
    extra = "".join(f"{f}\r\n" for f in fields)
    return f"GET {origin_url(path)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n".encode()


def post(head: str, body: bytes) -> bytes:
    return (f"POST {origin_url('/post')} HTTP/1.1\r\nHost: x\r\n{head}\r\n\r\n".encode()
            + body)


def split(raw: bytes) -> tuple[bytes, bytes]:
    head, _sep, body = raw.partition(b"\r\n\r\n")
    return head, body


@pytest.mark.parametrize("conn", ["Connection: Content-Length", "Connection: close, Host",
                                  "Proxy-Connection: Content-Length"])
def test_request_whose_connection_names_a_framing_field_is_400(conn: str) -> None:
    async def body(w: World):
        out = await exchange(w, post(f"{conn}\r\nContent-Length: 5", b"hello")
                             + get("/fresh"))
        assert out.startswith(b"HTTP/1.1 400 ") and out.count(b"HTTP/1.1") == 1
        assert w.origin.hits["/post"] == 0
        assert w.proxy.counters["bad_request_400"] == 1

    simulate(body)


def test_response_whose_connection_names_content_length_is_502() -> None:
    async def body(w: World):
        w.origin.scripted["/conn-cl"] = [OK_HEAD + b"Connection: Content-Length\r\n"
                                         b"Content-Length: 5\r\n\r\nhello"]
        r, _b = await fetch(await w.connect(), origin_url("/conn-cl"))
        assert r.status == 502 and r.headers.get("connection") == "close"
        assert w.proxy.counters["bad_response"] == 1

    simulate(body)


def test_response_with_both_lengths_is_forwarded_chunked_only() -> None:
    async def body(w: World):
        w.origin.scripted["/both"] = [OK_HEAD + b"Content-Length: 3\r\n"
                                      b"Transfer-Encoding: chunked\r\n\r\n"
                                      b"5\r\nhello\r\n0\r\n\r\n"]
        conn = await w.connect()
        r, b = await fetch(conn, origin_url("/both"))
        assert (r.status, b) == (200, b"hello")
        assert r.headers.get_all("content-length") == []
        assert r.headers.get("transfer-encoding") == "chunked"
        r, b = await fetch(conn, origin_url("/missing"))      # still in step
        assert (r.status, b) == (404, b"not found\n")
        conn.writer.close()

    simulate(body)


def test_chunked_response_is_reframed_without_extensions_or_trailers() -> None:
    async def body(w: World):
        w.origin.scripted["/ext"] = [OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
                                     b"5;a=b\r\nhello\r\n6 ; c=\"d\"\r\n world\r\n"
                                     b"0;z\r\nX-T: 1\r\n\r\n"]
        head, rest = split(await exchange(w, get("/ext")))
        assert head.startswith(OK_HEAD) and b"Transfer-Encoding: chunked" in head
        # the proxy's own chunk lines (one per read), no extension, no trailer
        assert rest in (b"b\r\nhello world\r\n0\r\n\r\n",
                        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")

    simulate(body)


@pytest.mark.parametrize("chunks", [
    b"5;a\nb\r\nhello\r\n0\r\n\r\n",
    b"5;a=\x01\r\nhello\r\n0\r\n\r\n",
    b"10000000000000005\r\nhello\r\n0\r\n\r\n",
    b"8000000000000000\r\nhello\r\n0\r\n\r\n",
    b"5;" + b"a" * 5000 + b"\r\nhello\r\n0\r\n\r\n",
    b"5\r\nhello\r\n0\r\nX: a\nb\r\n\r\n",
    b"5\nhello\r\n0\r\n\r\n",
])
def test_invalid_chunked_from_the_origin_is_502_and_never_forwarded(chunks: bytes) -> None:
    async def body(w: World):
        w.origin.scripted["/bad"] = [OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunks]
        out = await exchange(w, get("/bad"))
        head, rest = split(out)
        assert head.startswith(b"HTTP/1.1 502 ") and rest.startswith(b"502 Bad Gateway: ")
        assert w.proxy.counters["bad_response"] == 1
        assert w.proxy.counters["internal_error"] == 0

    simulate(body)


def test_invalid_chunk_after_the_head_ends_the_client_without_a_final_chunk() -> None:
    async def body(w: World):
        w.origin.scripted["/late"] = [OK_HEAD + b"Cache-Control: max-age=60\r\n"
                                      b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
                                      b"3;x\ny\r\nabc\r\n0\r\n\r\n"]
        out = await exchange(w, get("/late"))
        head, rest = split(out)
        assert head.startswith(OK_HEAD) and rest == b"5\r\nhello\r\n"
        assert w.proxy.counters["bad_response_body"] == 1
        assert w.proxy.counters["stored"] == 0 and len(w.proxy.cache) == 0

    simulate(body)


def test_chunked_request_body_is_reframed() -> None:
    async def body(w: World):
        conn = await w.connect()
        conn.writer.write(post("Transfer-Encoding: chunked",
                               b"5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"))
        r, b = await read_response(conn, "POST")
        assert (r.status, b) == (201, b"hello")
        assert w.origin.raw_requests[-1].endswith(b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        conn.writer.close()

    simulate(body)


@pytest.mark.parametrize("chunks", [b"5;a\nb\r\nhello\r\n0\r\n\r\n", b"zz\r\n",
                                    b"5\r\nhello\r\n0\r\nX: \x01\r\n\r\n"])
def test_invalid_chunked_request_body_is_400(chunks: bytes) -> None:
    async def body(w: World):
        out = await exchange(w, post("Transfer-Encoding: chunked", chunks))
        assert out.startswith(b"HTTP/1.1 400 "), out[:80]
        assert w.proxy.counters["bad_request_400"] == 1
        assert w.proxy.counters["internal_error"] == 0

    simulate(body)


@pytest.mark.parametrize("fields", ["Content-Length: 5, 5",
                                    "Content-Length: 5\r\nContent-Length: 5"])
def test_identical_request_lengths_reach_the_origin_as_one(fields: str) -> None:
    async def body(w: World):
        conn = await w.connect()
        conn.writer.write(post(fields, b"hello"))
        r, b = await read_response(conn, "POST")
        assert (r.status, b) == (201, b"hello")
        head = w.origin.raw_requests[-1].partition(b"\r\n\r\n")[0].lower()
        assert head.count(b"content-length") == 1 and b"content-length: 5\r\n" in head + b"\r\n"
        conn.writer.close()

    simulate(body)


def test_identical_response_lengths_reach_the_client_as_one() -> None:
    async def body(w: World):
        w.origin.scripted["/dup"] = [OK_HEAD + b"Content-Length: 5, 5\r\n"
                                     b"Content-Length: 5\r\n\r\nhello"]
        head, rest = split(await exchange(w, get("/dup")))
        assert head.lower().count(b"content-length") == 1 and rest == b"hello"
        assert b"Content-Length: 5" in head

    simulate(body)


@pytest.mark.parametrize("data", [
    post("Content-Length: \u00b2", b"").replace("\u00b2".encode(), b"\xb2"),
    b"GET http://h/ HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n",
    post("Transfer-Encoding: chunked\r\nContent-Length: 5", b"0\r\n\r\n"),
    b"GET http://h/ HTTP/1.1\nHost: h\n\n",
])
def test_ambiguous_requests_are_400_without_a_traceback(data: bytes, caplog) -> None:
    async def body(w: World):
        out = await exchange(w, data)
        assert out.startswith(b"HTTP/1.1 400 ")
        assert w.proxy.counters["internal_error"] == 0

    with caplog.at_level(logging.INFO, logger="tapsplice.httpproxy"):
        simulate(body)
    mine = [r for r in caplog.records if r.name == "tapsplice.httpproxy"]
    assert len(mine) == 1 and mine[0].levelno == logging.INFO and mine[0].exc_info is None


def test_transfer_codings_other_than_chunked_are_501() -> None:
    async def body(w: World):
        out = await exchange(w, post("Transfer-Encoding: gzip, chunked", b"0\r\n\r\n"))
        assert out.startswith(b"HTTP/1.1 501 ")
        assert w.origin.hits["/post"] == 0

    simulate(body)


@pytest.mark.parametrize("url,target", [
    (f"http://{ORIGIN}/fresh?a=1#top", "/fresh?a=1"),
    (f"http://{ORIGIN}?q=1/qbp", "/?q=1/qbp"),
])
def test_the_origin_sees_the_target_per_rfc3986(url: str, target: str) -> None:
    async def body(w: World):
        out = await exchange(w, f"GET {url} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert out.startswith(b"HTTP/1.1 404 ") or out.startswith(b"HTTP/1.1 200 "), out[:80]
        method, got, head = w.origin.requests[-1]
        assert (got, head["host"]) == (target, ORIGIN)
        assert w.log.entries[0].url == f"http://{ORIGIN}{target}"

    simulate(body)


@pytest.mark.parametrize("value", [b"max-age=\xb2", b"max-age=" + b"9" * 5000])
def test_odd_numbers_in_cache_control_are_not_a_crash(value: bytes) -> None:
    async def body(w: World):
        w.origin.scripted["/cc"] = [OK_HEAD + b"Cache-Control: " + value +
                                    b"\r\nContent-Length: 2\r\n\r\nok"]
        conn = await w.connect()
        r, b = await fetch(conn, origin_url("/cc"))
        assert (r.status, b) == (200, b"ok")
        r, b = await fetch(conn, origin_url("/cc"))
        assert (r.status, b) == (200, b"ok")
        assert w.proxy.counters["internal_error"] == 0
        # an unreadable max-age is stale (RFC 9111 §4.2.1); a huge one is 2**31
        assert w.origin.hits["/cc"] == (2 if b"\xb2" in value else 1)
        conn.writer.close()

    simulate(body)


@pytest.mark.parametrize("mode", ["copy", "splice"])
def test_a_response_that_arrived_chunked_is_served_from_the_cache_with_its_length(mode) -> None:
    async def body(w: World):
        conn = await w.connect()
        r1, b1 = await fetch(conn, origin_url("/chunked"))
        assert r1.headers.get("transfer-encoding") == "chunked"
        r2, b2 = await fetch(conn, origin_url("/chunked"))
        assert w.origin.hits["/chunked"] == 1 and b2 == b1
        assert r2.headers.get("transfer-encoding") is None
        assert r2.headers.get_all("content-length") == [str(len(b1))]
        r3, b3 = await fetch(conn, origin_url("/missing"))     # the connection is in step
        assert (r3.status, b3) == (404, b"not found\n")
        conn.writer.close()

    simulate(body, mode=mode)



def test_no_length_goes_out_with_a_204_or_an_interim_response() -> None:
    # RFC 9110 §8.6: never with 1xx or 204; a lenient client would read a body there.
    async def body(w: World):
        w.origin.scripted["/nc"] = [b"HTTP/1.1 103 Early Hints\r\nContent-Length: 5\r\n"
                                    b"Link: </a.css>; rel=preload\r\n\r\n"
                                    b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n"
                                    b"Transfer-Encoding: chunked\r\n\r\n"]
        out = await exchange(w, get("/nc"))
        assert out.startswith(b"HTTP/1.1 103 ") and b"HTTP/1.1 204 " in out
        assert b"content-length" not in out.lower() and b"transfer-encoding" not in out.lower()
        assert b"Link: </a.css>; rel=preload" in out

    simulate(body)
