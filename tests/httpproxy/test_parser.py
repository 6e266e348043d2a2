"""HTTP/1.x head parsing, body framing, chunked decoding and hop-by-hop removal."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.httpproxy import parser as hp
from apps.httpproxy.parser import (
    BadRequest,
    BadResponse,
    ChunkedDecoder,
    Framing,
    Headers,
    HeadersTooLarge,
    HttpError,
    UriTooLong,
    parse_request_head,
    parse_response_head,
)


def req(text: str):
    got = parse_request_head(text.encode("latin-1"))
    assert got is not None
    return got[0]


def test_absolute_form_request() -> None:
    r = req("GET http://Example.TEST:8080/a/b?x=1 HTTP/1.1\r\nHost: e\r\nX-A:  v \r\n\r\n")
    assert (r.method, r.scheme, r.host, r.port, r.path) == ("GET", "http", "example.test",
                                                            8080, "/a/b?x=1")
    assert r.uri == "http://example.test:8080/a/b?x=1"
    assert r.headers.get("x-a") == "v"
    assert r.keep_alive


def test_default_port_and_empty_path_normalise_the_uri() -> None:
    r = req("GET http://h.test HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (r.port, r.path, r.uri) == (80, "/", "http://h.test/")
    r = req("GET http://h.test?q HTTP/1.1\r\nHost: h\r\n\r\n")
    assert r.path == "/?q"


def test_connect_authority_form() -> None:
    r = req("CONNECT h.test:443 HTTP/1.1\r\nHost: h.test:443\r\n\r\n")
    assert (r.host, r.port, r.uri) == ("h.test", 443, "h.test:443")
    with pytest.raises(BadRequest):
        req("CONNECT h.test HTTP/1.1\r\nHost: h\r\n\r\n")


def test_incomplete_head_needs_more_and_reports_its_length() -> None:
    raw = b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\nNEXT"
    for cut in range(len(raw) - 4):
        assert parse_request_head(raw[:cut]) is None
    r, used = parse_request_head(raw)
    assert raw[used:] == b"NEXT"


@pytest.mark.parametrize("text", [
    "GET /origin-form HTTP/1.1\r\nHost: h\r\n\r\n",          # a proxy needs absolute-form
    "GET http://h/ HTTP/1.1\r\n\r\n",                         # no Host in HTTP/1.1
    "GET http://h/ HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",  # obs-fold
    "GET http://h/ HTTP/1.1\r\nHost : h\r\n\r\n",            # space before colon
    "GET http://h/ HTTP/2.0\r\nHost: h\r\n\r\n",
    "GET  http://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
    "GET http://u@h/ HTTP/1.1\r\nHost: h\r\n\r\n",
    "GET ftp://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
    "GET http://h:99999/ HTTP/1.1\r\nHost: h\r\n\r\n",
    "GET http://h/ HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n",
    "GET http://h/ HTTP/1.1\r\nHost: h\nX: y\r\n\r\n",
])
def test_malformed_requests_are_400(text: str) -> None:
    with pytest.raises(BadRequest) as e:
        parse_request_head(text.encode("latin-1"))
    assert e.value.status == 400


def test_limits() -> None:
    with pytest.raises(UriTooLong):   # refused before the line is complete
        parse_request_head(b"GET http://h/" + b"a" * hp.MAX_START_LINE)
    big = b"GET http://h/ HTTP/1.1\r\nHost: h\r\nX: " + b"v" * hp.MAX_HEADER_BYTES
    with pytest.raises(HeadersTooLarge) as e:
        parse_request_head(big)
    assert e.value.status == 431
    many = b"GET http://h/ HTTP/1.1\r\nHost: h\r\n" + b"X: y\r\n" * hp.MAX_HEADERS
    with pytest.raises(HeadersTooLarge):
        parse_request_head(many)                    # even before the head ends
    ok = b"GET http://h/ HTTP/1.1\r\nHost: h\r\n" + b"X: y\r\n" * (hp.MAX_HEADERS - 1)
    assert parse_request_head(ok + b"\r\n") is not None


def test_response_head_and_errors_are_502() -> None:
    resp, used = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
    assert (resp.status, resp.reason, used) == (200, "OK", 38)
    for bad in (b"HTTP/1.1 2000 X\r\n\r\n", b"ICY 200 OK\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n"):
        with pytest.raises(BadResponse) as e:
            parse_response_head(bad)
        assert e.value.status == 502


def test_request_framing() -> None:
    assert hp.request_framing(req("GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n")) == (
        Framing.NONE, 0)
    assert hp.request_framing(req(
        "POST http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n")) == (
        Framing.LENGTH, 5)
    assert hp.request_framing(req(
        "POST http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")) == (
        Framing.CHUNKED, 0)
    for bad in ("Content-Length: 5\r\nContent-Length: 6", "Content-Length: -1",
                "Transfer-Encoding: gzip",
                "Transfer-Encoding: chunked\r\nContent-Length: 3"):
        with pytest.raises(BadRequest):
            hp.request_framing(req(f"POST http://h/ HTTP/1.1\r\nHost: h\r\n{bad}\r\n\r\n"))


@pytest.mark.parametrize("method,status,fields,expected", [
    ("HEAD", 200, [("Content-Length", "10")], (Framing.NONE, 0)),
    ("GET", 304, [("Content-Length", "10")], (Framing.NONE, 0)),
    ("GET", 204, [], (Framing.NONE, 0)),
    ("GET", 200, [("Content-Length", "10")], (Framing.LENGTH, 10)),
    ("GET", 200, [("Transfer-Encoding", "chunked"), ("Content-Length", "10")],
     (Framing.CHUNKED, 0)),
    ("GET", 200, [("Transfer-Encoding", "gzip")], (Framing.CLOSE, 0)),
    ("GET", 200, [], (Framing.CLOSE, 0)),
    ("CONNECT", 200, [], (Framing.TUNNEL, 0)),
])
def test_response_framing(method, status, fields, expected) -> None:
    assert hp.response_framing(method, hp.Response(status, headers=Headers(fields))) == expected


def test_hop_by_hop_removed_and_via_added() -> None:
    h = Headers([("Connection", "close, X-Private"), ("X-Private", "1"), ("Keep-Alive", "5"),
                 ("Proxy-Authorization", "Basic x"), ("TE", "trailers"), ("Upgrade", "h2c"),
                 ("Proxy-Connection", "keep-alive"), ("Accept", "*/*"),
                 ("Transfer-Encoding", "chunked"), ("Trailer", "X")])
    out = hp.strip_hop_by_hop(h)
    assert out.fields == [("Accept", "*/*")]
    hp.add_via(out, "HTTP/1.0", "px")
    hp.add_via(out, "HTTP/1.1", "py")
    assert out.get("via") == "1.0 px, 1.1 py"


def _chunked(parts: list[bytes]) -> bytes:
    return b"".join(hp.encode_chunk(p) for p in parts if p) + hp.encode_chunk(b"")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8), st.integers(1, 50),
       st.binary(max_size=20))
def test_chunked_round_trip_in_any_pieces(parts, step, after) -> None:
    raw = _chunked(parts) + after
    dec = ChunkedDecoder()
    out, pending, pos = [], b"", 0
    while not dec.done and pos < len(raw):
        pending += raw[pos:pos + step]
        pos += step
        payload, used = dec.feed(pending)
        out.append(payload)
        pending = pending[used:]
    assert dec.done
    assert b"".join(out) == b"".join(parts)
    assert pending + raw[pos:] == after          # bytes after the body are not used


def test_chunked_with_extensions_and_trailers() -> None:
    dec = ChunkedDecoder()
    payload, used = dec.feed(b"3;ext=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\nrest")
    assert (payload, dec.done, used) == (b"abc", True, 27)


@pytest.mark.parametrize("raw", [b"zz\r\n", b"3\r\nabcX\r\n", b"1" * 5000,
                                 b"0\r\n" + b"X: y\r\n" * 5000])
def test_bad_chunked_is_an_error(raw: bytes) -> None:
    with pytest.raises(BadResponse):
        ChunkedDecoder().feed(raw)


_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=12)
_value = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=30)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["GET", "HEAD", "POST", "DELETE"]), _token,
       st.text(alphabet="abc/._-=?&", max_size=30),
       st.lists(st.tuples(_token, _value), max_size=20))
def test_request_round_trip(method, host, path, fields) -> None:
    headers = Headers([("Host", host), *fields])
    target = f"http://{host}/{path}"
    raw = f"{method} {target} HTTP/1.1\r\n".encode() + headers.encode()
    r, used = parse_request_head(raw)
    assert used == len(raw)
    assert (r.method, r.target, r.host, r.headers) == (method, target, host, headers)
    again, _n = parse_request_head(r.encode_origin_form().replace(
        r.path.encode(), target.encode(), 1))
    assert again.headers == headers


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_request_parser_raises_only_typed_errors(data: bytes) -> None:
    for buf in (data, b"GET http://h/ HTTP/1.1\r\nHost: h\r\n" + data,
                b"GET http://h/ HTTP/1.1\r\n" + data + b"\r\n\r\n"):
        try:
            parse_request_head(buf)
        except HttpError as e:
            assert e.status in (400, 414, 431)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_response_and_chunked_raise_only_typed_errors(data: bytes) -> None:
    for buf in (data, b"HTTP/1.1 200 OK\r\n" + data + b"\r\n\r\n"):
        try:
            parse_response_head(buf)
        except HttpError as e:
            assert e.status in (502, 431)
    try:
        ChunkedDecoder().feed(data)
    except BadResponse:
        pass
