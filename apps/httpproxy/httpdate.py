"""HTTP-dates, strictly (RFC 9110 §5.6.7).

Three forms and nothing else: the preferred IMF-fixdate
(``Sun, 06 Nov 1994 08:49:37 GMT``) and the two obsolete forms a recipient must
still accept, rfc850-date (``Sunday, 06-Nov-94 08:49:37 GMT``) and asctime-date
(``Sun Nov  6 08:49:37 1994``). HTTP-date is case-sensitive, its spaces are single
SP characters and its zone is the literal ``GMT``; a value that differs in any way
(another zone name, a numeric offset, a two-digit year outside the rfc850 form,
a missing comma, extra spaces, dashes in an IMF-fixdate, dotted or one-digit
times, a day that the month does not have) is not an HTTP-date. A field given on
more than one line is a list, which an HTTP-date never is, so it is invalid too.
What an invalid date means is the caller's rule (RFC 9111 §5.3: an invalid
Expires is in the past; §4.2.3: an invalid Date is replaced by the response time).
"""

from __future__ import annotations

import calendar
import re
import time

from apps.httpproxy.parser import Headers

_DAY = "Mon|Tue|Wed|Thu|Fri|Sat|Sun"
_DAY_L = "Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH = "|".join(_MONTHS)
_TIME = r"(?P<h>[0-9]{2}):(?P<mi>[0-9]{2}):(?P<s>[0-9]{2})"
#: The three grammars of §5.6.7, anchored, ASCII only.
_IMF_FIXDATE = re.compile(
    rf"(?:{_DAY}), (?P<d>[0-9]{{2}}) (?P<mo>{_MONTH}) (?P<y>[0-9]{{4}}) {_TIME} GMT", re.ASCII)
_RFC850 = re.compile(
    rf"(?:{_DAY_L}), (?P<d>[0-9]{{2}})-(?P<mo>{_MONTH})-(?P<y>[0-9]{{2}}) {_TIME} GMT",
    re.ASCII)
_ASCTIME = re.compile(
    rf"(?:{_DAY}) (?P<mo>{_MONTH}) (?P<d>[0-9]{{2}}| [0-9]) {_TIME} (?P<y>[0-9]{{4}})",
    re.ASCII)
#: A year 50 years ahead, in seconds (the rfc850 two-digit year rule of §5.6.7).
_FIFTY_YEARS = 50 * 365.2425 * 86400


def parse_http_date(value: str | None, now: float | None = None) -> float | None:
    """``value`` as seconds since the epoch, or None when it is not an HTTP-date.

    ``now`` places an rfc850 two-digit year: a date more than 50 years after ``now``
    is taken in the century before (§5.6.7). Without ``now`` the years 70-99 are
    the 1900s and 00-69 the 2000s."""
    if not value:
        return None
    for form in (_IMF_FIXDATE, _RFC850, _ASCTIME):
        m = form.fullmatch(value)
        if m is not None:
            return _timestamp(m, form is _RFC850, now)
    return None


def _timestamp(m: re.Match[str], two_digit_year: bool, now: float | None) -> float | None:
    year, day = int(m["y"]), int(m["d"].strip())
    month = _MONTHS.index(m["mo"]) + 1
    hour, minute, second = int(m["h"]), int(m["mi"]), int(m["s"])
    if two_digit_year:
        if now is None:
            year += 1900 if year >= 70 else 2000
        else:
            # §5.6.7: a date more than 50 years ahead is the most recent past year with
            # these digits; the century of ``now`` first, moved back (or on) by 100.
            year += time.gmtime(now).tm_year // 100 * 100
            t = _utc(year, month, min(day, 28), hour, minute, second)
            if t - now > _FIFTY_YEARS:
                year -= 100
            elif now - t > 100 * 365.2425 * 86400 - _FIFTY_YEARS:
                year += 100
    # §5.6.7 allows a leap second (60); nothing else out of the clock's range.
    if not (1 <= day <= calendar.monthrange(year, month)[1] and hour <= 23
            and minute <= 59 and second <= 60):
        return None
    return _utc(year, month, day, hour, minute, second)


def _utc(year: int, month: int, day: int, hour: int, minute: int, second: int) -> float:
    return float(calendar.timegm((year, month, day, hour, minute, second)))


def header_date(headers: Headers, name: str, now: float | None = None) -> float | None:
    """The HTTP-date in field ``name``; None when absent, invalid or given on more
    than one line (the field is a single value, not a list)."""
    values = headers.get_all(name)
    if len(values) != 1:
        return None
    return parse_http_date(values[0], now)


def format_http_date(t: float) -> str:
    """``t`` as an IMF-fixdate (§5.6.7), the only form a sender generates."""
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(t))
