"""The HTTP proxy on the simulated network: cache behaviour, keep-alive, bodies, CONNECT
and every error path, on virtual time."""

from __future__ import annotations

import asyncio
import base64
import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.httpproxy.policy import HttpPolicy
from tests.httpproxy.harness import (
    BIG,
    CLIENT,
    ORIGIN,
    OTHER,
    TLS,
    World,
    _big,
    fetch,
    origin_url,
    read_response,
    simulate,
)


def codes(w: World) -> list[str]:
    return [f"{e.code}/{e.status}" for e in w.log.entries]


def test_cacheable_object_reaches_the_origin_once() -> None:
    async def body(w: World):
        conn = await w.connect()
        r1, b1 = await fetch(conn, origin_url("/fresh"))
        await w.until(lambda: False, timeout=5)
        r2, b2 = await fetch(conn, origin_url("/fresh"))
        assert (r1.status, r2.status) == (200, 200) and b1 == b2 and b1
        assert w.origin.hits["/fresh"] == 1
        assert r1.headers.get("via") == "1.1 tapsplice"
        assert 5 <= int(r2.headers.get("age")) <= 6
        assert codes(w) == ["TCP_MISS/200", "TCP_MEM_HIT/200"]
        # The origin got origin form with Host, Via and no proxy fields.
        method, target, head = w.origin.requests[0]
        assert (method, target, head["host"], head["via"]) == ("GET", "/fresh", ORIGIN,
                                                               "1.1 tapsplice")
        fields = w.log.entries[0].line().split()
        assert fields[2:] == [CLIENT, "TCP_MISS/200", str(w.log.entries[0].bytes), "GET",
                              origin_url("/fresh"), "-", f"HIER_DIRECT/{ORIGIN}", "-"]
        assert w.log.entries[1].line().split()[-2] == "HIER_NONE/-"
        conn.writer.close()

    simulate(body)


def test_revalidation_with_304_and_with_a_changed_object() -> None:
    async def body(w: World):
        conn = await w.connect()
        _r, b1 = await fetch(conn, origin_url("/etag"))
        r2, b2 = await fetch(conn, origin_url("/etag"))
        assert b2 == b1 and r2.status == 200
        assert r2.headers.get("x-refreshed") == "yes"         # freshened from the 304
        assert w.origin.requests[1][2].get("if-none-match") == '"v1"'
        w.origin.version = "v2"
        r3, b3 = await fetch(conn, origin_url("/etag"))
        assert b3 != b1 and b"v2" in b3 and r3.headers.get("etag") == '"v2"'
        r4, b4 = await fetch(conn, origin_url("/etag"))
        assert b4 == b3                                       # the new object was stored
        assert codes(w) == ["TCP_MISS/200", "TCP_REFRESH_HIT/200", "TCP_REFRESH_MISS/200",
                            "TCP_REFRESH_HIT/200"]
        assert w.origin.hits["/etag"] == 4
        conn.writer.close()

    simulate(body)


def test_heuristic_freshness_from_last_modified() -> None:
    async def body(w: World):
        await fetch(await w.connect(), origin_url("/lm"))
        await w.until(lambda: False, timeout=50)
        await fetch(await w.connect(), origin_url("/lm"))     # within 10% of 1000 s
        assert w.origin.hits["/lm"] == 1
        await w.until(lambda: False, timeout=60)
        await fetch(await w.connect(), origin_url("/lm"))     # stale: If-Modified-Since
        assert w.origin.hits["/lm"] == 2
        assert "if-modified-since" in w.origin.requests[-1][2]
        assert codes(w)[1:] == ["TCP_MEM_HIT/200", "TCP_REFRESH_MISS/200"]

    simulate(body)


@pytest.mark.parametrize("fields,version", [
    ([("Cache-Control", "no-cache")], "HTTP/1.1"),
    ([("Pragma", "no-cache")], "HTTP/1.0"),
    ([("Cache-Control", "no-store")], "HTTP/1.1"),
])
def test_client_no_cache_goes_to_the_origin(fields, version) -> None:
    async def body(w: World):
        await fetch(await w.connect(), origin_url("/fresh"))
        r, b = await fetch(await w.connect(), origin_url("/fresh"), fields=fields,
                           version=version)
        assert r.status == 200 and b
        assert w.origin.hits["/fresh"] == 2

    simulate(body)


def test_no_store_is_never_served_from_the_cache() -> None:
    async def body(w: World):
        conn = await w.connect()
        for _ in range(3):
            r, _b = await fetch(conn, origin_url("/nostore"))
            assert r.status == 200
        assert w.origin.hits["/nostore"] == 3 and len(w.proxy.cache) == 0
        conn.writer.close()

    simulate(body)


def test_vary_selects_the_variant() -> None:
    async def body(w: World):
        conn = await w.connect()
        got = []
        for lang in ("en", "fr", "en", "fr"):
            _r, b = await fetch(conn, origin_url("/vary"), fields=[("Accept-Language", lang)])
            got.append(b)
        assert got == [b"lang=en", b"lang=fr", b"lang=en", b"lang=fr"]
        assert w.origin.hits["/vary"] == 2
        conn.writer.close()

    simulate(body)


def test_unsafe_method_invalidates() -> None:
    async def body(w: World):
        conn = await w.connect()
        await fetch(conn, origin_url("/fresh"))
        r, b = await fetch(conn, origin_url("/fresh"), method="POST", body=b"payload")
        assert (r.status, b) == (201, b"payload")
        await fetch(conn, origin_url("/fresh"))
        assert w.origin.hits["/fresh"] == 3
        conn.writer.close()

    simulate(body)


def test_request_bodies_chunked_and_with_expect() -> None:
    async def body(w: World):
        conn = await w.connect()
        chunks = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        conn.writer.write(f"POST {origin_url('/post')} HTTP/1.1\r\nHost: x\r\n"
                          "Transfer-Encoding: chunked\r\n\r\n".encode() + chunks)
        r, b = await read_response(conn, "POST")
        assert (r.status, b) == (201, b"hello world")
        # Expect: 100-continue: the proxy says 100 before the client sends the body.
        conn.writer.write(f"POST {origin_url('/post')} HTTP/1.1\r\nHost: x\r\n"
                          "Expect: 100-continue\r\nContent-Length: 4\r\n\r\n".encode())
        interim, _b = await read_response(conn)
        assert interim.status == 100
        conn.writer.write(b"body")
        r, b = await read_response(conn, "POST")
        assert (r.status, b) == (201, b"body")
        assert "expect" not in w.origin.requests[-1][2]
        conn.writer.close()

    simulate(body)


@pytest.mark.parametrize("mode", ["copy", "splice"])
def test_keep_alive_and_pipelining_on_one_connection(mode: str) -> None:
    async def body(w: World):
        conn = await w.connect()
        r, b = await fetch(conn, origin_url("/chunked"))
        assert r.headers.get("transfer-encoding") == "chunked" and len(b) == len("/chunked v1 ") * 20 * 50
        r, b = await fetch(conn, origin_url("/missing"))
        assert r.status == 404 and b == b"not found\n"
        r, _b = await fetch(conn, origin_url("/chunked"), method="HEAD")
        assert r.status == 200
        # Two requests in one write: both answered, in order.
        two = b"".join(f"GET {origin_url(p)} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                       for p in ("/fresh", "/vary"))
        conn.writer.write(two)
        (r1, b1), (r2, b2) = await read_response(conn), await read_response(conn)
        assert (r1.status, r2.status) == (200, 200)
        assert b1.startswith(b"/fresh v1") and b2 == b"lang="
        # A close-delimited response ends the connection.
        r, b = await fetch(conn, origin_url("/close"))
        assert r.headers.get("connection") == "close" and len(b) == len("/close v1 ") * 20 * 50
        assert await conn.read_some() == b""
        assert w.proxy.counters["accepted"] == 1 and len(w.log.entries) == 6
        conn.writer.close()

    simulate(body, mode=mode)


def test_chunked_to_an_http10_client_is_close_delimited() -> None:
    async def body(w: World):
        conn = await w.connect()
        r, b = await fetch(conn, origin_url("/chunked"), version="HTTP/1.0")
        assert r.headers.get("transfer-encoding") is None
        assert r.headers.get("connection") == "close" and len(b) == len("/chunked v1 ") * 20 * 50
        # ... and it was stored: the next client gets Content-Length from the cache.
        r, b2 = await fetch(await w.connect(), origin_url("/chunked"))
        assert b2 == b and r.headers.get("content-length") == str(len(b))
        assert w.origin.hits["/chunked"] == 1

    simulate(body)


def test_large_object_intact_and_cached() -> None:
    async def body(w: World):
        for _ in range(2):
            conn = await w.connect()
            r, b = await fetch(conn, origin_url("/big"))
            assert r.status == 200 and len(b) == BIG and b == _big()
            conn.writer.close()
        assert w.origin.hits["/big"] == 1

    simulate(body)


def test_object_over_the_per_object_limit_is_relayed_not_stored() -> None:
    from apps.httpproxy.store import CacheStore

    async def body(w: World):
        for _ in range(2):
            r, b = await fetch(await w.connect(), origin_url("/big"))
            assert b == _big()
        assert w.origin.hits["/big"] == 2 and len(w.proxy.cache) == 0

    simulate(body, cache=CacheStore(16 << 20, 1 << 20))


# -- CONNECT -------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["copy", "splice"])
def test_connect_to_443_is_tunnelled(mode: str) -> None:
    async def body(w: World):
        conn = await w.connect()
        conn.writer.write(f"CONNECT {ORIGIN}:{TLS} HTTP/1.1\r\nHost: x\r\n\r\nearly".encode())
        head = await conn.read_head(lambda buf: (None if b"\r\n\r\n" not in buf else
                                                 (bytes(buf), buf.index(b"\r\n\r\n") + 4)))
        assert head.startswith(b"HTTP/1.1 200 ")
        payload = b"t" * 200_000
        conn.writer.write(payload)
        conn.writer.write_eof()
        got = bytearray(conn.buf)
        conn.buf.clear()
        while data := await conn.reader.read(65536):
            got += data
        assert bytes(got) == b"early" + payload
        assert await w.until(lambda: bool(w.log.entries))
        assert codes(w) == ["TCP_TUNNEL/200"]
        assert w.log.entries[0].bytes >= len(payload)
        assert w.proxy.counters["spliced"] == (mode == "splice")
        conn.writer.close()

    simulate(body, mode=mode)


def test_connect_to_another_port_is_403() -> None:
    async def body(w: World):
        conn = await w.connect()
        conn.writer.write(f"CONNECT {ORIGIN}:{OTHER} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        r, b = await read_response(conn)
        assert r.status == 403 and b"port 8443" in b
        assert await conn.read_some() == b""
        assert codes(w) == ["TCP_DENIED/403"]

    simulate(body, mode="splice")


def test_connect_ports_are_configurable() -> None:
    async def body(w: World):
        conn = await w.connect()
        conn.writer.write(f"CONNECT {ORIGIN}:{OTHER} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert (await conn.read_some()).startswith(b"HTTP/1.1 200 ")
        conn.writer.close()

    simulate(body, policy=HttpPolicy(connect_ports=frozenset({OTHER})))


# -- errors -------------------------------------------------------------------------------

async def raw_exchange(w: World, data: bytes) -> tuple[bytes, float]:
    """Send ``data``, read until the proxy closes; (what came back, time taken)."""
    conn = await w.connect()
    t0 = w.now
    conn.writer.write(data)
    out = bytearray()
    while chunk := await conn.read_some():
        out += chunk
    conn.writer.close()
    return bytes(out), w.now - t0


@pytest.mark.parametrize("data,status", [
    (b"GET /relative HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET http://h/ HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n", 400),
    (b"BLAH\r\n\r\n", 400),
    (b"GET http://h/ HTTP/1.1\r\nHost: h\r\n" + b"X: " + b"y" * 70_000 + b"\r\n\r\n", 431),
    (b"GET http://h/" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414),
])
def test_bad_requests_are_answered_and_closed(data: bytes, status: int) -> None:
    async def body(w: World):
        out, _t = await raw_exchange(w, data)
        assert out.startswith(f"HTTP/1.1 {status} ".encode())
        assert w.log.entries[0].status == status

    simulate(body)


@pytest.mark.parametrize("url,status,text", [
    ("http://nowhere.test/", 502, b"unknown host name 'nowhere.test'"),
    (origin_url("/", 81), 502, b"connect to"),                       # refused
    ("http://198.19.0.99/", 504, b"timed out"),                       # nobody there
    (origin_url("/slow"), 504, b"did not answer in time"),
    (origin_url("/garbage"), 502, b"bad response"),
    (origin_url("/badlen"), 502, b"Content-Length"),
])
def test_origin_failures(url: str, status: int, text: bytes) -> None:
    policy = HttpPolicy(connect_timeout=3.0, response_timeout=5.0)

    async def body(w: World):
        t0 = w.now
        r, b = await fetch(await w.connect(), url)
        assert r.status == status and text in b
        assert w.now - t0 < 10
        assert w.log.entries[0].status == status
        assert await w.until(lambda: w.proxy.active == 0 and w.proxy_connections() == 0)

    simulate(body, policy=policy)


@pytest.mark.parametrize("mode", ["copy", "splice"])
def test_body_cut_short_resets_the_client_and_is_not_stored(mode: str) -> None:
    """Copied, or spliced one way (splice_min below the body): either way the client
    is reset once the origin ends short of its Content-Length."""
    async def body(w: World):
        for _ in range(2):
            conn = await w.connect()
            conn.writer.write(f"GET {origin_url('/short')} HTTP/1.1\r\nHost: x\r\n\r\n"
                              .encode())
            out, reset = bytearray(), False
            try:
                while chunk := await conn.read_some():
                    out += chunk
            except ConnectionError:
                reset = True
            assert reset and out.startswith(b"HTTP/1.1 200 ") and len(out) < 100000
        assert w.origin.hits["/short"] == 2 and len(w.proxy.cache) == 0
        assert w.proxy.counters["body_cut"] == 2
        if mode == "splice":
            assert w.proxy.splice.splicer.counters["oneway_short"] == 2
        assert await w.until(lambda: w.proxy.active == 0 and w.proxy_connections() == 0)

    simulate(body, mode=mode, policy=HttpPolicy(splice_min=1000))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from([
    b"GET ", b"http://198.19.0.1/fresh", b"http://h/", b" HTTP/1.1\r\n", b"Host: x\r\n",
    b"\r\n", b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n", b"abc",
    b"CONNECT 198.19.0.1:443", b"\x00\xff", b" ", b"0\r\n\r\n", b"Connection: close\r\n",
]), max_size=25))
def test_fuzzed_clients_never_leave_a_session_behind(parts) -> None:
    policy = HttpPolicy(handshake_timeout=3.0, keepalive_timeout=3.0, response_timeout=3.0)

    async def body(w: World):
        conn = await w.connect()
        conn.writer.write(b"".join(parts))
        conn.writer.write_eof()
        try:
            while await conn.read_some():
                pass
        except ConnectionError:
            pass
        conn.writer.close()
        assert await w.until(lambda: w.proxy.active == 0, timeout=60)
        assert w.proxy.counters["internal_error"] == 0

    simulate(body, policy=policy)


def test_slowloris_is_cut_off() -> None:
    policy = HttpPolicy(handshake_timeout=4.0)

    async def body(w: World):
        conn = await w.connect()
        t0 = w.now
        conn.writer.write(b"GET http://h/ HTTP/1.1\r\n")
        out = b""
        for _ in range(20):             # one header byte a second, never finishing
            try:
                async with asyncio.timeout(1):
                    out = await conn.read_some()
                break
            except TimeoutError:
                conn.writer.write(b"X")
        assert out.startswith(b"HTTP/1.1 408 ")
        assert w.now - t0 < 6
        assert await w.until(lambda: w.proxy.active == 0)

    simulate(body, policy=policy)


def test_idle_keep_alive_connection_is_closed_silently() -> None:
    policy = HttpPolicy(keepalive_timeout=7.0)

    async def body(w: World):
        conn = await w.connect()
        await fetch(conn, origin_url("/fresh"))
        t0 = w.now
        assert await conn.read_some() == b""
        assert 6 < w.now - t0 < 9 and len(w.log.entries) == 1

    simulate(body, policy=policy)


def test_forwarding_loop_is_refused() -> None:
    async def body(w: World):
        r, b = await fetch(await w.connect(), origin_url("/fresh"),
                           fields=[("Via", "1.0 other, 1.1 tapsplice")])
        assert r.status == 508 and b"loop" in b and w.origin.hits["/fresh"] == 0
        r, _b = await fetch(await w.connect(), origin_url("/fresh"),
                            fields=[("Via", "1.1 tapsplice-2")])
        assert r.status == 200

    simulate(body)


def test_client_network_is_checked() -> None:
    policy = HttpPolicy(allow_clients=(ipaddress.ip_network("10.0.0.0/8"),))

    async def body(w: World):
        r, _b = await fetch(await w.connect(), origin_url("/fresh"))
        assert r.status == 403 and codes(w) == ["TCP_DENIED/403"]
        assert w.origin.hits["/fresh"] == 0

    simulate(body, policy=policy)


def test_proxy_authorization_basic() -> None:
    policy = HttpPolicy(users={"alice": "wonder:land"})

    def auth(user: str, password: str) -> list[tuple[str, str]]:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return [("Proxy-Authorization", f"Basic {token}")]

    async def body(w: World):
        r, _b = await fetch(await w.connect(), origin_url("/fresh"))
        assert r.status == 407 and r.headers.get("proxy-authenticate").startswith("Basic")
        r, _b = await fetch(await w.connect(), origin_url("/fresh"), fields=auth("alice", "x"))
        assert r.status == 407
        r, b = await fetch(await w.connect(), origin_url("/fresh"),
                           fields=auth("alice", "wonder:land"))
        assert r.status == 200 and b
        assert "proxy-authorization" not in w.origin.requests[0][2]   # never forwarded
        assert [e.user for e in w.log.entries] == ["-", "alice", "alice"]
        assert codes(w) == ["TCP_DENIED/407", "TCP_DENIED/407", "TCP_MISS/200"]

    simulate(body, policy=policy)


def test_disk_cache_hits_across_a_restart(tmp_path) -> None:
    from apps.httpproxy.store import CacheStore

    async def body(w: World):
        r, b = await fetch(await w.connect(), origin_url("/fresh"))
        r2, b2 = await fetch(await w.connect(), origin_url("/fresh"))
        assert r.status == r2.status == 200 and b2 == b
        assert w.origin.hits["/fresh"] == codes(w).count("TCP_MISS/200")
        return codes(w)

    assert simulate(body, cache=CacheStore(1 << 20, directory=tmp_path)) == [
        "TCP_MISS/200", "TCP_HIT/200"]
    # A new proxy on the same directory: the origin is not asked again.
    assert simulate(body, cache=CacheStore(1 << 20, directory=tmp_path)) == [
        "TCP_HIT/200", "TCP_HIT/200"]


def test_without_a_cache_everything_goes_to_the_origin() -> None:
    async def body(w: World):
        conn = await w.connect()
        for _ in range(2):
            await fetch(conn, origin_url("/fresh"))
        assert w.origin.hits["/fresh"] == 2
        conn.writer.close()

    simulate(body, cache=None)


@pytest.mark.parametrize("path,version,fields", [
    ("/big", "HTTP/1.1", [("Connection", "close")]),
    ("/close", "HTTP/1.0", []),
    ("/chunked", "HTTP/1.1", [("Connection", "close")]),
])
def test_last_response_is_spliced_and_its_tapped_copy_fills_the_cache(path, version, fields):
    async def body(w: World):
        conn = await w.connect()
        r1, b1 = await fetch(conn, origin_url(path), fields=fields, version=version)
        assert r1.status == 200 and b1
        assert r1.headers.get("via") is None   # relayed byte for byte by the stack
        sp = w.proxy.splice.splicer.counters
        assert sp["splices"] == 1 and sp["copied_payload_bytes"] == 0
        conn.writer.close()   # as clients do after a "close" response: the splice ends
        assert await w.until(lambda: len(w.log.entries) == 1)
        assert codes(w) == ["TCP_MISS/200"] and w.log.entries[0].note == "spliced"
        conn2 = await w.connect()
        r2, b2 = await fetch(conn2, origin_url(path))   # kept alive: copied, or a hit
        assert (r2.status, b2) == (200, b1)
        assert w.origin.hits[path] == 1                 # the tap filled the cache
        assert codes(w)[1].endswith("HIT/200")
        conn2.writer.close()

    simulate(body, mode="splice")


def test_kept_alive_requests_are_not_spliced():
    async def body(w: World):
        conn = await w.connect()
        for _ in range(2):
            r, b = await fetch(conn, origin_url("/nostore"))
            assert r.status == 200 and r.headers.get("via") == "1.1 tapsplice"
        assert w.proxy.splice.splicer.counters["splices"] == 0
        conn.writer.close()

    simulate(body, mode="splice")


def test_spliced_response_larger_than_the_cache_takes_is_logged_not_stored():
    from apps.httpproxy.store import CacheStore

    async def body(w: World):
        conn = await w.connect()
        r1, b1 = await fetch(conn, origin_url("/big"), fields=[("Connection", "close")])
        assert r1.status == 200 and b1 == _big()
        conn.writer.close()
        assert await w.until(lambda: len(w.log.entries) == 1)
        assert codes(w) == ["TCP_MISS/200"]          # status from the tapped head
        conn2 = await w.connect()
        r2, b2 = await fetch(conn2, origin_url("/big"))
        assert b2 == b1 and w.origin.hits["/big"] == 2   # nothing was stored
        conn2.writer.close()

    simulate(body, mode="splice", cache=CacheStore(16 << 20, 100_000))


def test_kept_alive_large_bodies_are_spliced_one_way_and_fill_the_cache():
    async def body(w: World):
        conn = await w.connect()
        r1, b1 = await fetch(conn, origin_url("/big-paced"))
        assert r1.status == 200 and b1 == _big()
        assert r1.headers.get("via") == "1.1 tapsplice"     # the proxy's own head
        r2, b2 = await fetch(conn, origin_url("/big-paced"))  # same connection: a hit
        assert b2 == b1
        r3, b3 = await fetch(conn, origin_url("/big-paced"), fields=[
            ("Cache-Control", "no-cache")])                  # to the origin again
        assert b3 == b1
        r4, b4 = await fetch(conn, origin_url("/fresh"))     # small: copied
        assert r4.status == 200 and b4.startswith(b"/fresh v1")
        assert w.origin.hits["/big-paced"] == 2
        assert codes(w)[:2] == ["TCP_MISS/200", "TCP_MEM_HIT/200"]
        counters = w.proxy.counters
        assert counters["spliced_bodies"] == 2 and counters["accepted"] == 1
        assert counters["spliced_body_bytes"] > BIG       # the relay carried most of both
        splicer = w.proxy.splice.splicer
        assert splicer.counters["oneway_done"] == 2
        # The last request on the connection: its response spliced both ways, on the
        # client connection that two one-way splices used before.
        r5, b5 = await fetch(conn, origin_url("/big-paced"), fields=[
            ("Cache-Control", "no-cache"), ("Connection", "close")])
        assert r5.status == 200 and b5 == b1 and splicer.counters["splices"] == 1
        assert await conn.read_some() == b""
        assert splicer.counters["copied_payload_bytes"] == 0
        conn.writer.close()
        assert await w.until(lambda: w.proxy.active == 0 and w.proxy_connections() == 0)

    simulate(body, mode="splice")


def test_large_upload_is_spliced_one_way_then_the_connection_goes_on():
    upload = bytes(range(251)) * 4000          # ~1 MB, not a multiple of anything
    async def body(w: World):
        conn = await w.connect()
        r, b = await fetch(conn, origin_url("/post"), method="POST", body=upload)
        assert (r.status, b) == (201, upload)  # the origin echoes what it received
        r, b = await fetch(conn, origin_url("/fresh"))
        assert r.status == 200 and b.startswith(b"/fresh v1")
        assert w.proxy.counters["spliced_request_bodies"] == 1
        # ... and the echoed 1 MB response body came back spliced one way too.
        assert w.proxy.counters["spliced_bodies"] == 1
        assert w.proxy.splice.splicer.counters["copied_payload_bytes"] == 0
        conn.writer.close()
        assert await w.until(lambda: w.proxy.active == 0 and w.proxy_connections() == 0)

    simulate(body, mode="splice")


def test_close_delimited_body_is_spliced_up_to_the_origins_fin_and_cached():
    async def body(w: World):
        conn = await w.connect()
        r, b = await fetch(conn, origin_url("/chunked"))        # kept alive, copied
        assert r.status == 200
        r, b = await fetch(conn, origin_url("/close"))          # ends with the FIN
        assert r.headers.get("connection") == "close" and b == b"/close v1 " * 20 * 50
        assert await conn.read_some() == b""
        splicer = w.proxy.splice.splicer
        assert splicer.counters["oneway_done"] == 1 and w.proxy.counters["spliced_bodies"] == 1
        conn.writer.close()
        r2, b2 = await fetch(await w.connect(), origin_url("/close"))
        assert b2 == b and w.origin.hits["/close"] == 1       # the tap filled the cache
        assert splicer.counters["copied_payload_bytes"] == 0
        assert await w.until(lambda: w.proxy.active == 0 and w.proxy_connections() == 0)

    simulate(body, mode="splice")


# -- proxy defaults and abuse ------------------------------------------------------------

def basic(user: bytes, password: bytes) -> list[tuple[str, str]]:
    token = base64.b64encode(user + b":" + password).decode()
    return [("Proxy-Authorization", f"Basic {token}")]


def test_client_text_is_escaped_in_the_access_log() -> None:
    policy = HttpPolicy(users={"alice": "pw"})
    evil = b"eve\n1700000000.000      0 198.18.0.1 TCP_MISS/200 \x1b]0;x\x07\\"

    async def body(w: World):
        r, _b = await fetch(await w.connect(), origin_url("/fresh"), fields=basic(evil, b"x"))
        assert r.status == 407
        (e,) = w.log.entries
        line = e.line()
        assert all(0x20 <= ord(c) < 0x7f for c in line), line
        assert "eve\\x0a1700000000.000\\x20" in line and "\\x1b]0;x\\x07\\\\" in line

    simulate(body, policy=policy)


def test_a_cancelled_handler_ends_cancelled_and_releases_everything() -> None:
    async def body(w: World):
        conn = await w.connect()
        conn.writer.write(f"CONNECT {ORIGIN}:{TLS} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = await conn.read_head(lambda buf: (None if b"\r\n\r\n" not in buf else
                                                 (bytes(buf), buf.index(b"\r\n\r\n") + 4)))
        assert head.startswith(b"HTTP/1.1 200 ")    # the tunnel is up: two connections
        assert w.proxy_connections() == 2
        (task,) = [t for t in asyncio.all_tasks() if not t.done() and getattr(
            t.get_coro(), "__qualname__", "") == "HttpProxy.handle"]
        task.cancel()
        await asyncio.wait([task])
        assert task.cancelled()                     # not swallowed: it ends as cancelled
        assert w.proxy.active == 0 and not w.proxy.slots.connections
        assert await w.until(lambda: w.proxy_connections() == 0)
        with pytest.raises(ConnectionResetError):   # the client's side was reset
            await conn.reader.read(65536)
        conn.writer.close()

    simulate(body, mode="copy")


def _resolver(*addrs: str):
    async def resolve(_name: str) -> list[str]:
        return list(addrs)
    return resolve


@pytest.mark.parametrize("mode", ["copy", "splice"])
def test_a_name_with_a_dead_first_address_is_fetched_from_the_next(mode: str) -> None:
    async def body(w: World):
        w.proxy.resolve = _resolver("198.19.0.77", ORIGIN)    # nobody has .77
        conn = await w.connect()
        t0 = w.now
        resp, data = await fetch(conn, "http://multi.test/fresh")
        assert resp.status == 200 and data
        # Copy mode races the next address 250 ms later (RFC 8305 §5); splice mode
        # tries one at a time, each with a share of the connect timeout.
        assert w.now - t0 < (1.0 if w.proxy.mode == "copy" else 6.0)
        assert w.log.entries[0].line().split()[-2] == f"HIER_DIRECT/{ORIGIN}"
        conn.writer.close()
        assert await w.until(lambda: w.proxy_connections() == 0)   # no attempt left

    simulate(body, mode=mode)


def test_a_name_whose_addresses_all_refuse_gets_502_naming_each() -> None:
    async def body(w: World):
        w.proxy.resolve = _resolver(ORIGIN, CLIENT)
        conn = await w.connect()
        resp, data = await fetch(conn, "http://closed.test:4444/x")
        assert resp.status == 502
        assert f"{ORIGIN}: connection refused; {CLIENT}: connection refused" in data.decode()
        conn.writer.close()

    simulate(body)
