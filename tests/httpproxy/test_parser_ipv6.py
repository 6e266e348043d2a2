"""IPv6 literals in request targets and Host fields (RFC 3986 §3.2.2 IP-literal)."""

from __future__ import annotations

import pytest

from apps.httpproxy.parser import BadRequest, Headers, Request, parse_request_head, uri_host


def req(text: str) -> Request:
    got = parse_request_head(text.encode("latin-1"))
    assert got is not None
    return got[0]


@pytest.mark.parametrize("authority, host, port, uri", [
    ("[2001:2:0:2::1]:8080", "2001:2:0:2::1", 8080, "http://[2001:2:0:2::1]:8080/x"),
    ("[2001:2:0:2::1]", "2001:2:0:2::1", 80, "http://[2001:2:0:2::1]/x"),
    ("[2001:2:0:2::1]:80", "2001:2:0:2::1", 80, "http://[2001:2:0:2::1]/x"),
    # Written out in full or in capitals, it is the same address (and cache key).
    ("[2001:0002:0000:0002:0000:0000:0000:0001]", "2001:2:0:2::1", 80,
     "http://[2001:2:0:2::1]/x"),
    ("[2001:2:0:2::ABCD]:81", "2001:2:0:2::abcd", 81, "http://[2001:2:0:2::abcd]:81/x"),
    ("[::ffff:198.19.0.1]", "::ffff:c613:1", 80, "http://[::ffff:c613:1]/x"),
])
def test_absolute_form_with_an_ipv6_literal(authority: str, host: str, port: int,
                                            uri: str) -> None:
    r = req(f"GET http://{authority}/x HTTP/1.1\r\nHost: {authority}\r\n\r\n")
    assert (r.host, r.port, r.path) == (host, port, "/x")
    assert r.uri == uri


def test_connect_to_an_ipv6_literal() -> None:
    r = req("CONNECT [2001:2:0:2::1]:443 HTTP/1.1\r\nHost: [2001:2:0:2::1]:443\r\n\r\n")
    assert (r.host, r.port) == ("2001:2:0:2::1", 443)
    assert r.uri == "[2001:2:0:2::1]:443"


@pytest.mark.parametrize("target", [
    "CONNECT [2001:2:0:2::1] HTTP/1.1",          # authority-form needs its port
    "CONNECT 2001:2:0:2::1:443 HTTP/1.1",        # no brackets
    "CONNECT [2001:2:0:2::1]443 HTTP/1.1",       # nothing but ":port" after "]"
    "GET http://[2001:2:0:2::1/ HTTP/1.1",       # unclosed
    "GET http://[fe80::1%25eth0]/ HTTP/1.1",     # a zone ID (RFC 6874)
    "GET http://[v1.fe80::1]/ HTTP/1.1",         # IPvFuture
    "GET http://[2001:2::g]/ HTTP/1.1",          # not hex
    "GET http://[2001:2::1::2]/ HTTP/1.1",       # two "::"
    "GET http://[198.19.0.1]/ HTTP/1.1",         # IPv4 has no brackets
    "GET http://[]/ HTTP/1.1",
    "GET http://[2001:2::1]:0/ HTTP/1.1",
    "GET http://[2001:2::1]:65536/ HTTP/1.1",
    "GET http://2001:2::1/ HTTP/1.1",
])
def test_bad_ipv6_targets_are_refused(target: str) -> None:
    with pytest.raises(BadRequest) as e:
        parse_request_head(f"{target}\r\nHost: h\r\n\r\n".encode())
    assert e.value.status == 400


@pytest.mark.parametrize("host", ["[2001:2:0:2::1]", "[2001:2:0:2::1]:8080", "[::1]"])
def test_host_field_with_an_ipv6_literal(host: str) -> None:
    r = req(f"GET http://[2001:2:0:2::1]/ HTTP/1.1\r\nHost: {host}\r\n\r\n")
    assert r.headers.get("host") == host


@pytest.mark.parametrize("host", ["[fe80::1%eth0]", "[v1.x]", "[2001:2::1", "2001:2::1]"])
def test_bad_host_field_is_refused(host: str) -> None:
    with pytest.raises(BadRequest):
        parse_request_head(f"GET http://h.test/ HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())


def test_uri_host_brackets_ipv6_only() -> None:
    assert uri_host("2001:2::1") == "[2001:2::1]"
    assert uri_host("198.19.0.1") == "198.19.0.1"
    assert uri_host("h.test") == "h.test"
    assert Request("GET", "/", headers=Headers(), scheme="http", host="2001:2::1",
                   port=8080, path="/p").uri == "http://[2001:2::1]:8080/p"
