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
#: Fields whose values the parser judges (framing, Host): their own tests cover them.
_CHECKED_FIELDS = ("host", "content-length", "transfer-encoding", "connection",
                   "proxy-connection")


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["GET", "HEAD", "POST", "DELETE"]), _token,
       st.text(alphabet="abc/._-=?&", max_size=30),
       st.lists(st.tuples(_token.filter(lambda n: n not in _CHECKED_FIELDS), _value),
                max_size=20))
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


# -- framing hardening (RFC 9112 §6-7, RFC 9110 §7.6.1) ------------------------------------

def _post(fields: str) -> str:
    return f"POST http://h/ HTTP/1.1\r\nHost: h\r\n{fields}\r\n\r\n"


@pytest.mark.parametrize("conn", ["Connection: Content-Length", "Connection: close, content-length",
                                  "Connection: Transfer-Encoding", "Proxy-Connection: Content-Length",
                                  "Connection: Host"])
def test_connection_naming_a_framing_field_is_refused(conn: str) -> None:
    # Removing the field named in Connection would forward a body without its framing.
    with pytest.raises(BadRequest):
        hp.request_framing(req(_post(f"{conn}\r\nContent-Length: 5")))
    resp = hp.Response(200, headers=Headers([tuple(conn.split(": ")), ("Content-Length", "5")]))
    with pytest.raises(BadResponse):
        hp.response_framing("GET", resp)


@pytest.mark.parametrize("bad,status", [
    ("Content-Length: \u00b2", 400),             # a Latin-1 digit passes str.isdigit()
    ("Content-Length: 5, \u00b2", 400),
    ("Content-Length: ", 400),                   # empty: not "no body"
    ("Content-Length: 5,", 400),
    ("Content-Length: +5", 400),
    ("Content-Length: 5 5", 400),
    ("Content-Length: " + "9" * 30, 400),
    ("Transfer-Encoding: gzip, chunked", 501),   # §6.1: a coding we do not apply
    ("Transfer-Encoding: chunked, chunked", 400),  # §7: chunked at most once
    ("Transfer-Encoding: chunked, gzip", 400),   # §6.3 item 4: not final
    ("Transfer-Encoding: identity", 400),
])
def test_request_framing_is_strict(bad: str, status: int) -> None:
    with pytest.raises(BadRequest) as e:
        hp.request_framing(req(_post(bad)))
    assert e.value.status == status


def test_identical_lengths_collapse_to_one_value() -> None:
    for fields in ("Content-Length: 5, 5", "Content-Length: 5\r\nContent-Length: 5"):
        r = req(_post(fields))
        assert hp.request_framing(r) == (Framing.LENGTH, 5)
        out = hp.strip_hop_by_hop(r.headers)
        hp.set_framing(out, Framing.LENGTH, 5)
        assert out.get_all("content-length") == ["5"]


def test_set_framing_emits_only_the_proxys_framing_fields() -> None:
    h = Headers([("Content-Length", "10"), ("Transfer-Encoding", "chunked"), ("A", "b")])
    hp.set_framing(h, Framing.CHUNKED, 0)
    assert h.fields == [("A", "b"), ("Transfer-Encoding", "chunked")]
    h = Headers([("Content-Length", "10"), ("A", "b")])
    hp.set_framing(h, Framing.CLOSE, 0)
    assert h.fields == [("A", "b")]
    h = Headers([("Content-Length", "0, 0")])
    hp.set_framing(h, Framing.NONE, 0)
    assert h.fields == [("Content-Length", "0")]


@pytest.mark.parametrize("fields,expected", [
    ([("Transfer-Encoding", "chunked"), ("Content-Length", "10")], (Framing.CHUNKED, 0)),
    ([("Content-Length", "10, 10")], (Framing.LENGTH, 10)),
])
def test_response_framing_both_fields_is_chunked(fields, expected) -> None:
    assert hp.response_framing("GET", hp.Response(200, headers=Headers(fields))) == expected


@pytest.mark.parametrize("fields,version", [
    ([("Content-Length", "\u00b2")], "HTTP/1.1"),
    ([("Content-Length", "")], "HTTP/1.1"),
    ([("Transfer-Encoding", "gzip")], "HTTP/1.1"),           # nothing here decodes it
    ([("Transfer-Encoding", "gzip, chunked")], "HTTP/1.1"),
    ([("Transfer-Encoding", "chunked, chunked")], "HTTP/1.1"),
    ([("Transfer-Encoding", "chunked")], "HTTP/1.0"),        # §6.1: faulty framing
])
def test_response_framing_refuses_what_it_cannot_frame(fields, version) -> None:
    with pytest.raises(BadResponse):
        hp.response_framing("GET", hp.Response(200, version=version, headers=Headers(fields)))


@pytest.mark.parametrize("line", [b"HTTP/1.1 000 X", b"HTTP/1.1 099 X", b"HTTP/1.1 600 X",
                                  b"HTTP/1.1 \xb2\xb2\xb2 X", b"HTTP/1.1 20 X"])
def test_status_codes_outside_100_to_599_are_502(line: bytes) -> None:
    with pytest.raises(BadResponse):
        parse_response_head(line + b"\r\n\r\n")


@pytest.mark.parametrize("text", [
    "GET http://h/ HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n",      # RFC 9112 §3.2
    "GET http://h/ HTTP/1.1\r\nHost: h, h\r\n\r\n",
    "GET http://h/ HTTP/1.1\r\nHost: a b\r\n\r\n",
    "GET http://h/ HTTP/1.1\r\nHost: h/x\r\n\r\n",
    "GET http://h:\u00b2/ HTTP/1.1\r\nHost: h\r\n\r\n",
    "GET http://h:08080808/ HTTP/1.1\r\nHost: h\r\n\r\n",
    "GET http://h/a\rb HTTP/1.1\r\nHost: h\r\n\r\n",
])
def test_more_malformed_requests_are_400(text: str) -> None:
    with pytest.raises(BadRequest) as e:
        parse_request_head(text.encode("latin-1"))
    assert e.value.status == 400


@pytest.mark.parametrize("raw", [b"GET http://h/ HTTP/1.1\nHost: h\n\n",
                                 b"GET http://h/ HTTP/1.1\nHost: h",
                                 b"GET http://h/ HTTP/1.1\r\nHost: h\r\nX: \rY\r\n",
                                 b"\r\n" * 20 + b"GET"])
def test_bare_lf_cr_and_empty_line_floods_are_refused_before_the_head_ends(raw) -> None:
    # Nothing to wait for: a head with a bare LF or CR is refused as soon as it is seen.
    with pytest.raises(BadRequest):
        parse_request_head(raw)


@pytest.mark.parametrize("target,path,uri", [
    ("http://h/p?q=1#frag", "/p?q=1", "http://h/p?q=1"),        # a fragment never goes out
    ("http://h#frag", "/", "http://h/"),
    ("http://h?q=1/qbp", "/?q=1/qbp", "http://h/?q=1/qbp"),     # RFC 3986 §3.2
    ("http://h:81?q#x/y", "/?q", "http://h:81/?q"),
    ("http://h/a/b", "/a/b", "http://h/a/b"),
])
def test_absolute_form_per_rfc3986(target: str, path: str, uri: str) -> None:
    r = req(f"GET {target} HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (r.host, r.path, r.uri) == ("h", path, uri)
    assert b"#" not in r.encode_origin_form()


@pytest.mark.parametrize("raw", [
    b"5;a\nb\r\nhello\r\n0\r\n\r\n",          # bare LF in an extension
    b"5;a=\x01\r\nhello\r\n0\r\n\r\n",        # control byte
    b"5;a=b\rc\r\nhello\r\n0\r\n\r\n",        # bare CR
    b"5;" + b"a" * 5000 + b"\r\nhello\r\n0\r\n\r\n",   # a long line read in one piece
    b"0" * 17 + b"5\r\nhello\r\n0\r\n\r\n",    # too many digits
    b"8000000000000000\r\n",                   # 2**63: overflows a signed 64-bit size
    b" 5\r\nhello\r\n0\r\n\r\n",
    b"5 \r\nhello\r\n0\r\n\r\n",               # BWS only before ";" (§7.1.1)
    b"-5\r\n", b"0x5\r\n", b"+5\r\n", b"\xb2\r\n", b";a\r\n",
    b"5;=b\r\nhello\r\n0\r\n\r\n",
    b'5;a="b\r\nhello\r\n0\r\n\r\n',
    b"5\r\nhello\n0\r\n\r\n",                  # bare LF after the data
    b"5\r\nhello\r\n0\r\nX: a\nb\r\n\r\n",      # bare LF in a trailer
    b"5\r\nhello\r\n0\r\nX: a\x01\r\n\r\n",
    b"5\r\nhello\r\n0\r\nnocolon\r\n\r\n",
    b"5\r\nhello\r\n0\r\nX : a\r\n\r\n",
    b"5\r\nhello\r\n0\r\nX: a\r\n folded\r\n\r\n",
    b"5\r\nhello\r\n0\r\nX: " + b"a" * 5000 + b"\r\n\r\n",
])
def test_chunked_framing_is_strict(raw: bytes) -> None:
    dec = ChunkedDecoder()
    with pytest.raises(BadResponse):
        dec.feed(raw)


def test_valid_chunk_extensions_and_trailers_still_decode() -> None:
    for raw in (b"5 ; a = b ; c=\"q \\\" d\"\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
                b"00005;x\r\nhello\r\n000\r\n\r\n", b"A\r\n0123456789\r\n0\r\n\r\n"):
        dec = ChunkedDecoder()
        payload, used = dec.feed(raw)
        assert dec.done and used == len(raw) and payload in (b"hello", b"0123456789")


def test_chunk_line_limit_applies_to_lines_in_one_read_and_across_reads() -> None:
    line = b"5;" + b"a" * (hp.MAX_CHUNK_LINE - 2)
    dec = ChunkedDecoder()
    assert dec.feed(line + b"\r\nhello\r\n0\r\n\r\n")[0] == b"hello"   # at the limit
    for feed in ([line + b"a\r\n"], [line[:100], line + b"a"]):
        dec = ChunkedDecoder()
        with pytest.raises(BadResponse):
            for data in feed:
                dec.feed(data)
