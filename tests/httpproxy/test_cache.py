"""RFC 9111 rules (pure functions) and the bounded store."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.httpproxy import cache as c
from apps.httpproxy.parser import Headers
from apps.httpproxy.store import CacheStore, StoredResponse

T0 = 1_700_000_000.0
DATE = c.format_http_date(T0)


def h(*fields: tuple[str, str]) -> Headers:
    return Headers(fields)


def test_http_dates() -> None:
    assert c.parse_http_date(DATE) == T0
    assert c.parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777.0
    assert c.parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == 784111777.0
    assert c.parse_http_date("Sun Nov  6 08:49:37 1994") == 784111777.0
    assert c.parse_http_date("not a date") is None


def test_cache_control_parsing() -> None:
    cc = c.parse_cache_control(h(("Cache-Control", 'max-age=5, private="a,b", No-Cache'),
                                 ("Cache-Control", "max-age=9")))
    assert cc == {"max-age": "5", "private": "a,b", "no-cache": None}


@pytest.mark.parametrize("method,req,status,resp,ok", [
    ("GET", [], 200, [], True),                                  # heuristic status
    ("GET", [], 200, [("Cache-Control", "no-store")], False),
    ("GET", [("Cache-Control", "no-store")], 200, [], False),
    ("GET", [], 200, [("Cache-Control", "private")], False),     # shared cache
    ("GET", [("Authorization", "x")], 200, [("Cache-Control", "max-age=9")], False),
    ("GET", [("Authorization", "x")], 200, [("Cache-Control", "s-maxage=9")], True),
    ("GET", [], 302, [], False),                                 # not heuristic, no expiry
    ("GET", [], 302, [("Cache-Control", "max-age=60")], True),
    ("GET", [], 500, [("Cache-Control", "max-age=60")], False),
    ("GET", [], 200, [("Vary", "*")], False),
    ("POST", [], 200, [("Cache-Control", "max-age=60")], False),
    ("HEAD", [], 200, [], False),
])
def test_storable(method, req, status, resp, ok) -> None:
    assert c.storable(method, h(*req), status, h(*resp)) is ok


def test_freshness_lifetime_sources_in_order() -> None:
    assert c.freshness_lifetime(200, h(("Cache-Control", "max-age=10, s-maxage=20"))) == 20
    assert c.freshness_lifetime(200, h(("Cache-Control", "max-age=10"),
                                       ("Expires", c.format_http_date(T0 + 99)),
                                       ("Date", DATE))) == 10
    assert c.freshness_lifetime(200, h(("Expires", c.format_http_date(T0 + 99)),
                                       ("Date", DATE))) == 99
    assert c.freshness_lifetime(200, h(("Expires", "0"), ("Date", DATE))) == 0
    lm = c.format_http_date(T0 - 1000)
    assert c.freshness_lifetime(200, h(("Date", DATE), ("Last-Modified", lm))) == 100
    assert c.freshness_lifetime(302, h(("Date", DATE), ("Last-Modified", lm))) == 0


def test_age_arithmetic() -> None:
    # Date 10 s before the response arrived, Age 3 from upstream, 2 s in flight.
    headers = h(("Date", c.format_http_date(T0 - 10)), ("Age", "3"))
    assert c.current_age(headers, T0 - 2, T0, T0) == 10      # apparent age wins
    assert c.current_age(headers, T0 - 20, T0, T0 + 5) == 28  # 3 + 20 delay + 5 resident


def fresh_decision(req, resp, now=T0 + 1):
    return c.decide(h(*req), 200, h(("Date", DATE), *resp), T0, T0, now)


def test_decide_request_and_response_directives() -> None:
    Fresh, Reval = c.Decision.FRESH, c.Decision.REVALIDATE
    assert fresh_decision([], [("Cache-Control", "max-age=60")]) is Fresh
    assert fresh_decision([], [("Cache-Control", "max-age=60")], T0 + 61) is Reval
    assert fresh_decision([], [("Cache-Control", "max-age=60, no-cache")]) is Reval
    assert fresh_decision([("Cache-Control", "no-cache")], [("Cache-Control", "max-age=60")]) \
        is Reval
    # Pragma only counts without Cache-Control in the request (RFC 9111 §5.4).
    assert fresh_decision([("Pragma", "no-cache")], [("Cache-Control", "max-age=60")]) is Reval
    assert fresh_decision([("Pragma", "no-cache"), ("Cache-Control", "max-stale=1")],
                          [("Cache-Control", "max-age=60")]) is Fresh
    assert fresh_decision([("Cache-Control", "max-age=0")], [("Cache-Control", "max-age=60")]) \
        is Reval
    assert fresh_decision([("Cache-Control", "min-fresh=100")],
                          [("Cache-Control", "max-age=60")]) is Reval
    assert fresh_decision([("Cache-Control", "max-stale=100")],
                          [("Cache-Control", "max-age=60")], T0 + 100) is Fresh
    assert fresh_decision([("Cache-Control", "max-stale=100")],
                          [("Cache-Control", "max-age=60, must-revalidate")], T0 + 100) is Reval


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10**6), st.integers(0, 10**7), st.integers(-10**6, 10**6),
       st.integers(0, 10**6))
def test_freshness_never_exceeds_explicit_max_age(max_age, lm_age, expires, elapsed) -> None:
    headers = h(("Cache-Control", f"max-age={max_age}"), ("Date", DATE),
                ("Expires", c.format_http_date(T0 + expires)),
                ("Last-Modified", c.format_http_date(T0 - lm_age)))
    assert c.freshness_lifetime(200, headers) == max_age
    decision = c.decide(h(), 200, headers, T0, T0, T0 + elapsed)
    assert decision is (c.Decision.FRESH if elapsed < max_age else c.Decision.REVALIDATE)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 10**8), st.integers(0, 10**8))
def test_heuristic_is_at_most_a_tenth_of_the_last_modified_age(lm_age, date_skew) -> None:
    headers = h(("Date", c.format_http_date(T0 + date_skew)),
                ("Last-Modified", c.format_http_date(T0 + date_skew - lm_age)))
    assert 0 <= c.freshness_lifetime(200, headers) <= 0.1 * lm_age


_directives = st.lists(st.sampled_from(["no-store", "private", "public", "max-age=5",
                                        "s-maxage=3", "no-cache", "must-revalidate"]),
                       max_size=4)


@settings(max_examples=300, deadline=None)
@given(_directives, _directives, st.sampled_from([200, 203, 301, 302, 404, 500]))
def test_no_store_is_never_stored(req_cc, resp_cc, status) -> None:
    req = h(("Cache-Control", ", ".join(req_cc))) if req_cc else h()
    resp = h(("Cache-Control", ", ".join(resp_cc))) if resp_cc else h()
    if "no-store" in req_cc or "no-store" in resp_cc or "private" in resp_cc:
        assert not c.storable("GET", req, status, resp)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["Accept-Encoding", "accept-language", "X-A"]), min_size=1,
                max_size=3),
       st.dictionaries(st.sampled_from(["accept-encoding", "accept-language", "x-a"]),
                       st.sampled_from(["gzip", "br", "en", " gzip "]), max_size=3),
       st.dictionaries(st.sampled_from(["accept-encoding", "accept-language", "x-a"]),
                       st.sampled_from(["gzip", "br", "en"]), max_size=3))
def test_vary_mismatch_is_never_served(vary, first, second) -> None:
    resp = h(("Vary", ", ".join(vary)))
    key = c.secondary_key(c.vary_names(resp), Headers(first.items()))
    served = c.vary_matches(resp, key, Headers(second.items()))
    names = {n.lower() for n in vary}
    same = all((first.get(n) or "").strip() == (second.get(n) or "").strip() for n in names)
    assert served == same


def test_revalidation_helpers() -> None:
    stored = h(("ETag", '"v1"'), ("Last-Modified", DATE), ("Content-Length", "5"),
               ("X-Old", "a"), ("Cache-Control", "max-age=1"))
    cond = c.conditional_headers(h(("Accept", "*/*")), stored)
    assert cond.get("if-none-match") == '"v1"' and cond.get("if-modified-since") == DATE
    fresh = c.freshen(stored, h(("Cache-Control", "max-age=60"), ("Content-Length", "0"),
                                ("ETag", '"v1"')))
    assert fresh.get("cache-control") == "max-age=60"
    assert fresh.get("content-length") == "5" and fresh.get("x-old") == "a"
    assert c.validator_matches(stored, h(("ETag", '"v1"')))
    assert not c.validator_matches(stored, h(("ETag", '"v2"')))


def test_invalidation_after_unsafe_methods() -> None:
    uri = "http://h.test/a"
    loc = h(("Location", "/b"), ("Content-Location", "http://other.test/c"))
    assert c.invalidated_uris("POST", 201, uri, loc) == [uri, "http://h.test/b"]
    assert c.invalidated_uris("POST", 500, uri, loc) == []
    assert c.invalidated_uris("GET", 200, uri, loc) == []


# -- store ------------------------------------------------------------------------------

def entry(uri: str, size: int, key=()) -> StoredResponse:
    return StoredResponse(uri, key, 200, "OK", h(("Cache-Control", "max-age=60")),
                          b"x" * size, T0, T0)


def test_store_is_bounded_lru() -> None:
    store = CacheStore(max_bytes=3100, max_object=1500)
    assert not store.put(entry("http://h/big", 2000))
    for name in "abc":
        assert store.put(entry(f"http://h/{name}", 700))
    store.touch(store.variants("http://h/a")[0])          # a is now most recent
    assert store.put(entry("http://h/d", 700))
    assert store.bytes <= 3100
    assert store.variants("http://h/b") == []             # least recently used went first
    assert store.variants("http://h/a") and store.variants("http://h/d")


def test_store_variants_are_bounded() -> None:
    store = CacheStore()
    for i in range(20):
        store.put(entry("http://h/v", 10, (("accept", str(i)),)))
    assert len(store.variants("http://h/v")) == 8
    assert store.invalidate("http://h/v") == 8 and len(store) == 0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 3000)), max_size=60))
def test_store_bytes_never_exceed_the_bound(puts) -> None:
    store = CacheStore(max_bytes=8000, max_object=4000)
    for uri, size in puts:
        store.put(entry(f"http://h/{uri}", size))
        assert store.bytes <= 8000
        assert store.bytes == sum(e.size for u in range(10)
                                  for e in store.variants(f"http://h/{u}"))


def test_disk_store_survives_a_restart(tmp_path: Path) -> None:
    store = CacheStore(max_bytes=1 << 20, directory=tmp_path)
    store.put(entry("http://h/a", 1000))
    store.put(entry("http://h/b", 10, (("accept", "x"),)))
    (tmp_path / "stray.entry").write_bytes(b"junk")
    again = CacheStore(max_bytes=1 << 20, directory=tmp_path)
    (a,) = again.variants("http://h/a")
    assert a.body == b"x" * 1000 and a.headers.get("cache-control") == "max-age=60"
    assert again.variants("http://h/b")[0].vary_key == (("accept", "x"),)
    assert not (tmp_path / "stray.entry").exists()
    assert again.bytes == store.bytes


def test_disk_store_drops_a_damaged_entry(tmp_path: Path) -> None:
    store = CacheStore(directory=tmp_path)
    store.put(entry("http://h/a", 100))
    (path,) = tmp_path.glob("*.entry")
    path.write_bytes(path.read_bytes()[:-10])              # truncated body
    assert store.variants("http://h/a") == []
    assert store.counters["disk_errors"] == 1 and len(store) == 0


@pytest.mark.parametrize("value,expected", [
    ("60", 60), ("\u00b2", None), ("6\u00b2", None), ("", None), ("-1", None), (" 6", None),
    ("9" * 5000, c.MAX_DELTA), ("0" * 5000 + "7", 7), (str(2**40), c.MAX_DELTA),
])
def test_delta_seconds_is_ascii_digits_and_bounded(value, expected) -> None:
    assert c.delta_seconds(value) == expected


def test_stored_heads_carry_no_transfer_coding_and_the_bodys_length(tmp_path: Path) -> None:
    head = h(("Transfer-Encoding", "chunked"), ("Content-Length", "999"),
             ("Connection", "keep-alive, X-Hop"), ("X-Hop", "1"), ("Keep-Alive", "5"),
             ("Cache-Control", "max-age=60"))
    for store in (CacheStore(1 << 20), CacheStore(1 << 20, directory=tmp_path)):
        store.put(StoredResponse("http://h/", (), 200, "OK", head.copy(), b"hello", T0, T0))
        got = store.variants("http://h/")[0]
        assert got.headers.fields == [("Cache-Control", "max-age=60"), ("Content-Length", "5")]
