"""Answers made from a stored response (RFC 9110 §13, §14; RFC 9111 §4.3.2, §4.3.4),
and the stored fields a 304 updates (RFC 9111 §3.2)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.httpproxy import cache as c
from apps.httpproxy import conditional as cond
from apps.httpproxy.httpdate import format_http_date
from apps.httpproxy.parser import Headers

T0 = 1_700_000_000.0
BODY = bytes(range(256)) * 4
STORED = Headers([("Date", format_http_date(T0)), ("ETag", '"e1"'),
                  ("Last-Modified", format_http_date(T0 - 60)), ("Content-Type", "a/b"),
                  ("Cache-Control", "max-age=60"), ("Content-Length", str(len(BODY))),
                  ("Content-Encoding", "gzip"), ("X-Other", "1")])


def ans(*fields: tuple[str, str], method: str = "GET", headers: Headers = STORED,
        status: int = 200) -> cond.Answer:
    return cond.answer(method, Headers(fields), status, "OK", headers, BODY, T0,
                       boundary="BOUNDARY")


@pytest.mark.parametrize("value,tags", [
    ('"a"', ['"a"']), ('W/"a", "b"', ['W/"a"', '"b"']), ("*", ["*"]),
    ('"a",', ['"a"']), ("a", None), ('"a" "b"', None), ("", None), ('"a', None),
])
def test_entity_tags(value, tags) -> None:
    assert cond.entity_tags(value) == tags


def test_weak_and_strong_comparison() -> None:   # RFC 9110 §8.8.3.2 table
    assert not cond.strong_match('W/"1"', 'W/"1"') and cond.weak_match('W/"1"', 'W/"1"')
    assert not cond.strong_match('W/"1"', 'W/"2"') and not cond.weak_match('W/"1"', 'W/"2"')
    assert not cond.strong_match('W/"1"', '"1"') and cond.weak_match('W/"1"', '"1"')
    assert cond.strong_match('"1"', '"1"') and cond.weak_match('"1"', '"1"')


def test_if_none_match_is_weak_and_takes_precedence() -> None:
    assert ans(("If-None-Match", 'W/"e1"')).status == 304
    assert ans(("If-None-Match", '"x", "e1"')).status == 304
    assert ans(("If-None-Match", "*")).status == 304
    assert ans(("If-None-Match", '"x"')).status == 200
    assert ans(("If-None-Match", "e1")).status == 200            # not an entity-tag
    # If-Modified-Since is not looked at when If-None-Match is there (§13.1.3).
    assert ans(("If-None-Match", '"x"'), ("If-Modified-Since", format_http_date(T0))
               ).status == 200
    assert ans(("If-None-Match", '"e1"'), method="HEAD").status == 304
    assert ans(("If-None-Match", '"e1"'), status=404).status == 404   # §13.2.1: 2xx only


def test_if_modified_since() -> None:
    assert ans(("If-Modified-Since", format_http_date(T0 - 60))).status == 304
    assert ans(("If-Modified-Since", format_http_date(T0 - 61))).status == 200
    assert ans(("If-Modified-Since", "Sun, 06 Nov 2094 08:49:37 UTC")).status == 200
    assert ans(("If-Modified-Since", format_http_date(T0)),
               ("If-Modified-Since", format_http_date(T0))).status == 200   # a list
    assert ans(("If-Modified-Since", format_http_date(T0)), method="POST").status == 200
    # No Last-Modified: the Date, then the time the response came (RFC 9111 §4.3.2).
    no_lm = Headers([f for f in STORED if f[0] != "Last-Modified"])
    assert ans(("If-Modified-Since", format_http_date(T0)), headers=no_lm).status == 304
    assert ans(("If-Modified-Since", format_http_date(T0 - 1)), headers=no_lm).status == 200


def test_a_304_carries_the_fields_of_rfc_9110_15_4_5() -> None:
    got = ans(("If-None-Match", '"e1"'))
    assert (got.status, got.body) == (304, b"")
    assert [n for n, _v in got.headers] == ["Date", "ETag", "Cache-Control"]
    no_etag = Headers([f for f in STORED if f[0] != "ETag"])
    got = ans(("If-Modified-Since", format_http_date(T0)), headers=no_etag)
    assert [n for n, _v in got.headers] == ["Date", "Last-Modified", "Cache-Control"]


def test_single_and_multiple_ranges() -> None:
    got = ans(("Range", "bytes=0-9"))
    assert (got.status, got.body, got.headers.get("content-range")) == (
        206, BODY[:10], "bytes 0-9/1024")
    assert got.headers.get("content-encoding") == "gzip"      # a range of the coded bytes
    assert ans(("Range", "bytes=1000-")).body == BODY[1000:]
    assert ans(("Range", "bytes=1000-5000")).body == BODY[1000:]
    assert ans(("Range", "bytes=-2000")).body == BODY
    got = ans(("Range", "bytes=0-0, -1"))
    assert got.headers.get("content-type") == "multipart/byteranges; boundary=BOUNDARY"
    assert got.headers.get("content-encoding") is None
    assert got.body == (b"--BOUNDARY\r\nContent-Type: a/b\r\nContent-Range: bytes 0-0/1024"
                        b"\r\n\r\n\x00\r\n--BOUNDARY\r\nContent-Type: a/b\r\nContent-Range: "
                        b"bytes 1023-1023/1024\r\n\r\n\xff\r\n--BOUNDARY--\r\n")
    # Overlapping and adjacent ranges are coalesced: one part.
    got = ans(("Range", "bytes=10-20, 0-9, 15-30"))
    assert (got.status, got.body, got.headers.get("content-range")) == (
        206, BODY[:31], "bytes 0-30/1024")


@pytest.mark.parametrize("value", [
    "bytes=1024-", "bytes=2000-3000", "bytes=-0", "bytes=1024-, -0",
])
def test_unsatisfiable_ranges_are_416(value) -> None:
    got = ans(("Range", value))
    assert (got.status, got.body, got.headers.get("content-range")) == (
        416, b"", "bytes */1024")


@pytest.mark.parametrize("value", [
    "items=0-1", "bytes=5-1", "bytes=a-b", "bytes=", "bytes 0-1", "bytes=--1",
    "bytes=" + ",".join(f"{i * 2}-{i * 2}" for i in range(cond.MAX_RANGES + 1)),
])
def test_ranges_to_ignore_give_the_whole_body(value) -> None:
    got = ans(("Range", value))
    assert (got.status, got.body) == (200, BODY)


def test_range_applies_to_get_on_a_200_only() -> None:
    assert ans(("Range", "bytes=0-1"), method="HEAD").status == 200
    assert ans(("Range", "bytes=0-1"), status=203).status == 203
    assert ans(("Range", "bytes=0-1"), ("Range", "bytes=3-4")).status == 200


def test_if_range() -> None:   # RFC 9110 §13.1.5
    rng = ("Range", "bytes=0-1")
    assert ans(rng, ("If-Range", '"e1"')).status == 206
    assert ans(rng, ("If-Range", '"e2"')).status == 200
    assert ans(rng, ("If-Range", 'W/"e1"')).status == 200        # never weak
    weak = Headers([("ETag", 'W/"e1"') if n == "ETag" else (n, v) for n, v in STORED])
    assert ans(rng, ("If-Range", '"e1"'), headers=weak).status == 200
    assert ans(rng, ("If-Range", format_http_date(T0 - 60))).status == 206
    assert ans(rng, ("If-Range", format_http_date(T0 - 59))).status == 200
    # A Last-Modified less than a second before the Date is weak: no match.
    close = Headers([("Last-Modified", format_http_date(T0)) if n == "Last-Modified"
                     else (n, v) for n, v in STORED])
    assert ans(rng, ("If-Range", format_http_date(T0)), headers=close).status == 200
    assert ans(rng, ("If-Range", "garbage")).status == 200


def test_a_cache_leaves_if_match_and_if_unmodified_since_to_the_origin() -> None:
    assert cond.cache_may_answer(Headers([("If-None-Match", '"a"')]))
    assert not cond.cache_may_answer(Headers([("If-Match", '"a"')]))
    assert not cond.cache_may_answer(Headers([("If-Unmodified-Since", "x")]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1100), st.integers(0, 1100)), min_size=1,
                max_size=5), st.integers(1, 1024))
def test_range_answers_hold_exactly_the_asked_bytes(pairs, length) -> None:
    body = BODY[:length]
    spec = "bytes=" + ",".join(f"{min(a, b)}-{max(a, b)}" for a, b in pairs)
    got = cond.answer("GET", Headers([("Range", spec)]), 200, "OK", Headers(), body, T0,
                      boundary="B0UNDARY")
    wanted = sorted({i for a, b in pairs for i in range(min(a, b), max(a, b) + 1)
                     if i < length})
    if not wanted:
        assert got.status == 416
    elif got.headers.get("content-range"):
        first, last = wanted[0], wanted[-1]
        assert got.body == body[first:last + 1] and len(wanted) == last - first + 1
    else:
        parts = got.body.split(b"--B0UNDARY")[1:-1]
        assert len(parts) >= 2 and got.body.endswith(b"--B0UNDARY--\r\n")


# -- RFC 9111 §3.2, §4.3.4 --------------------------------------------------------------

def test_a_304_updates_every_stored_field_but_the_excluded_ones() -> None:
    stored = Headers([("ETag", '"v1"'), ("Content-Length", "5"), ("Age", "900"),
                      ("X-Old", "a"), ("Cache-Control", "max-age=1"),
                      ("Cache-Control", "public"), ("Content-Encoding", "br"),
                      ("Content-Type", "a/b")])
    fresh = c.freshen(stored, Headers([("Cache-Control", "max-age=60"),
                                       ("Content-Length", "0"), ("ETag", '"v1"'),
                                       ("Content-Encoding", "gzip"),
                                       ("Content-Type", "c/d"), ("X-New", "n")]))
    assert fresh.get_all("cache-control") == ["max-age=60"]
    assert fresh.get("content-length") == "5" and fresh.get("x-old") == "a"
    assert fresh.get("content-encoding") == "gzip" and fresh.get("content-type") == "c/d"
    assert fresh.get("x-new") == "n" and fresh.get("age") is None


def test_which_304_selects_the_stored_response() -> None:
    stored = Headers([("ETag", '"v1"'), ("Last-Modified", "x")])
    assert c.validator_matches(stored, Headers([("ETag", '"v1"')]))
    assert not c.validator_matches(stored, Headers([("ETag", '"v2"')]))
    assert c.validator_matches(stored, Headers([("ETag", 'W/"v1"')]))
    weak = Headers([("ETag", 'W/"v1"')])
    assert not c.validator_matches(weak, Headers([("ETag", '"v1"')]))   # strong vs weak
    assert c.validator_matches(weak, Headers([("ETag", 'W/"v1"')]))
    assert c.validator_matches(stored, Headers([("Last-Modified", "x")]))
    assert not c.validator_matches(stored, Headers([("Last-Modified", "y")]))
    assert c.validator_matches(stored, Headers())


def test_revalidation_sends_the_stored_validators_not_the_clients() -> None:
    client = Headers([("Accept", "*/*"), ("If-None-Match", '"mine"'), ("Range", "bytes=0-1"),
                      ("If-Range", '"mine"'), ("If-Modified-Since", "x")])
    out = c.conditional_headers(client, Headers([("ETag", 'W/"v1"')]))
    assert out.fields == [("Accept", "*/*"), ("If-None-Match", 'W/"v1"')]


_field_text = st.text(st.sampled_from('bytes=0123456789-,*"W/ GMTSunNov:\t'), max_size=40)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.sampled_from(["Range", "If-Range", "If-None-Match",
                                        "If-Modified-Since"]), _field_text),
       st.sampled_from(["GET", "HEAD"]), st.integers(0, 40))
def test_any_conditions_give_a_well_formed_answer(fields, method, length) -> None:
    body = BODY[:length]
    got = cond.answer(method, Headers(fields.items()), 200, "OK", STORED, body, T0)
    assert got.status in (200, 206, 304, 416)
    if got.status == 200:
        assert got.body == body
    elif got.status == 206 and got.headers.get("content-range"):
        first, last = map(int, got.headers.get("content-range")[6:].split("/")[0].split("-"))
        assert got.body == body[first:last + 1] and 0 <= first <= last < length
    elif got.status in (304, 416):
        assert got.body == b""
