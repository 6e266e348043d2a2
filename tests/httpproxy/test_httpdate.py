"""Strict HTTP-dates (RFC 9110 §5.6.7): the three forms and nothing else."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.httpproxy import cache as c
from apps.httpproxy.httpdate import format_http_date, header_date, parse_http_date
from apps.httpproxy.parser import Headers

T = 784111777.0   # Sun, 06 Nov 1994 08:49:37 GMT
NOW = 1_700_000_000.0


@pytest.mark.parametrize("value", [
    "Sun, 06 Nov 1994 08:49:37 GMT",        # IMF-fixdate
    "Sunday, 06-Nov-94 08:49:37 GMT",       # obsolete RFC 850
    "Sun Nov  6 08:49:37 1994",             # obsolete asctime
])
def test_the_three_forms(value) -> None:
    assert parse_http_date(value) == T
    assert parse_http_date(value, NOW) == T


@pytest.mark.parametrize("value", [
    "Sun, 06 Nov 1994 08:49:37 UTC", "Sun, 06 Nov 1994 08:49:37 EST",
    "Sun, 06 Nov 1994 08:49:37 +0000", "Sun, 06 Nov 1994 08:49:37 gmt",
    "Sun, 06 Nov 1994 08:49:37",                         # wrong or missing zones
    "Sun, 06 Nov 94 08:49:37 GMT", "Sunday, 06-Nov-1994 08:49:37 GMT",
    "Sun Nov  6 08:49:37 94",                            # two-digit years elsewhere
    "Sun 06 Nov 1994 08:49:37 GMT", "Sunday 06-Nov-94 08:49:37 GMT",   # no comma
    "Sun,  06 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 1994  08:49:37 GMT",
    " Sun, 06 Nov 1994 08:49:37 GMT", "Sun Nov 6 08:49:37 1994",       # spaces
    "Sun, 06-Nov-1994 08:49:37 GMT", "Sun, 06 Nov-1994 08:49:37 GMT",  # dashes
    "Sun, 06 Nov 1994 08.49.37 GMT", "Sun, 06 Nov 1994 8:49:37 GMT",
    "Sun, 6 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 1994 08:49 GMT",     # times, days
    "sun, 06 Nov 1994 08:49:37 GMT", "Sun, 06 nov 1994 08:49:37 GMT",  # case
    "Sun, 31 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 1994 24:00:00 GMT",
    "Sun, 06 Nov 1994 08:60:00 GMT", "Sun, 29 Feb 1994 08:49:37 GMT",  # ranges
    "Sun, 06 Nov 1994 08:49:37 GMT, Sun, 06 Nov 1994 08:49:37 GMT",    # a list
    "Sun, 06 Nov 1994 08:49:37 GMT\x00", "Sun, \uff10\uff16 Nov 1994 08:49:37 GMT",
    "0", "-1", "", "not a date", "1994-11-06T08:49:37Z",
])
def test_anything_else_is_invalid(value) -> None:
    assert parse_http_date(value) is None


def test_rfc850_two_digit_years_are_at_most_50_years_ahead() -> None:
    # Seen in November 2023: "36" is 2036, "94" is 1994, "73" is 2073 (50 years
    # ahead, not more) and "74" is 1974 (2074 would be more than 50 years ahead).
    assert parse_http_date("Thursday, 06-Nov-36 08:49:37 GMT", NOW) == \
        parse_http_date("Thu, 06 Nov 2036 08:49:37 GMT")
    assert parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT", NOW) == T
    assert parse_http_date("Monday, 06-Nov-73 08:49:37 GMT", NOW) == \
        parse_http_date("Mon, 06 Nov 2073 08:49:37 GMT")
    assert parse_http_date("Wednesday, 06-Nov-74 08:49:37 GMT", NOW) == \
        parse_http_date("Wed, 06 Nov 1974 08:49:37 GMT")


def test_a_field_on_two_lines_is_not_a_date() -> None:
    one = Headers([("Date", "Sun, 06 Nov 1994 08:49:37 GMT")])
    assert header_date(one, "date") == T
    assert header_date(Headers([*one, *one]), "date") is None
    assert header_date(Headers(), "date") is None


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**33))
def test_format_and_parse_round_trip(t) -> None:
    assert parse_http_date(format_http_date(t)) == t


def test_invalid_expires_is_stale_and_invalid_date_is_the_response_time() -> None:
    later = format_http_date(NOW + 100)
    h = Headers([("Expires", later)])
    assert c.freshness_lifetime(200, h, response_time=NOW) == 100
    h = Headers([("Date", "Sun, 06 Nov 2023 8:49:37 GMT"), ("Expires", later)])
    assert c.freshness_lifetime(200, h, response_time=NOW) == 100
    h = Headers([("Date", format_http_date(NOW)), ("Expires", "Sun, 06 Nov 2094 08:49:37 UTC")])
    assert c.freshness_lifetime(200, h, response_time=NOW) == 0
    h = Headers([("Date", format_http_date(NOW)), ("Expires", later), ("Expires", later)])
    assert c.freshness_lifetime(200, h, response_time=NOW) == 0
    # The age of a response with an invalid Date: as if dated when it came in.
    h = Headers([("Date", "yesterday")])
    assert c.current_age(h, NOW, NOW, NOW + 5) == 5
