"""HTTP caching rules for a shared cache (RFC 9111), as pure functions.

Nothing here reads a clock or touches the store: every function takes the header
fields and the times it needs (seconds since the epoch), so the rules can be
tested exhaustively. The server combines them: :func:`storable` when a response
arrives, :func:`vary_matches` and :func:`decide` when a request may be served from the
cache, :func:`conditional_headers` and :func:`freshen` for revalidation, and
:func:`invalidated_uris` after unsafe methods.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import Enum
from urllib.parse import urljoin, urlsplit

from apps.httpproxy import httpdate
from apps.httpproxy.conditional import strong_match, weak_match
from apps.httpproxy.parser import Headers, strip_hop_by_hop

#: RFC 9110 §15.1: status codes heuristically cacheable (206 left out: partial responses
#: are not stored; ranges are answered from a stored 200, apps/httpproxy/conditional.py).
HEURISTIC_STATUS = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
#: Status codes this cache understands well enough to store (§3 "understood").
UNDERSTOOD_STATUS = HEURISTIC_STATUS | {302, 303, 307}
#: §4.2.2: at most 10% of the time since Last-Modified; and never more than a day.
HEURISTIC_FRACTION = 0.1
HEURISTIC_MAX = 86400.0
#: Header fields a 304 does not replace in the stored response (§3.2): Content-Length,
#: the hop-by-hop fields that are never stored (§3.1; those named in Connection are
#: removed before), and Content-Range, which describes a message, not the stored
#: representation. The body is stored as received (content codings untouched), so
#: Content-Encoding and Content-Type are updated like any other field.
_NOT_UPDATED = frozenset({"content-length", "transfer-encoding", "content-range",
                          "connection", "keep-alive", "trailer", "te", "upgrade",
                          "proxy-connection", "proxy-authenticate",
                          "proxy-authentication-info"})
#: Request fields of the client's own conditional or range request, left out when the
#: cache revalidates its stored response (§4.3.1): the origin's answer must be about
#: the whole stored representation, and the client's conditions are evaluated against
#: the updated stored response afterwards.
_CLIENT_CONDITIONS = ("if-match", "if-none-match", "if-modified-since",
                      "if-unmodified-since", "if-range", "range")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
#: Delta-seconds beyond this are this value (RFC 9111 §1.2.2: 2**31).
MAX_DELTA = 2**31


def parse_cache_control(headers: Headers) -> dict[str, str | None]:
    """Cache-Control directives, names lower-cased, quotes removed (§5.2). A
    directive given twice keeps its first value."""
    out: dict[str, str | None] = {}
    for value in headers.get_all("cache-control"):
        for part in _split_list(value):
            name, sep, arg = part.partition("=")
            name = name.strip().lower()
            if name and name not in out:
                out[name] = arg.strip().strip('"') if sep else None
    return out


def _split_list(value: str) -> Iterable[str]:
    """Comma-separated elements, commas inside quoted strings kept."""
    part: list[str] = []
    quoted = False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            yield "".join(part)
            part = []
        else:
            part.append(ch)
    yield "".join(part)


def delta_seconds(value: str | None) -> int | None:
    """A delta-seconds argument (§1.2.2); None if missing or invalid. ASCII digits
    only (str.isdigit() also takes "\u00b2", which int() refuses); a value past 2**31,
    however many digits, is 2**31 (§1.2.2), never a long int() conversion."""
    if value is None or not re.fullmatch(r"[0-9]+", value):
        return None
    digits = value.lstrip("0") or "0"
    return MAX_DELTA if len(digits) > 10 else min(int(digits), MAX_DELTA)


def parse_http_date(value: str | None, now: float | None = None) -> float | None:
    """An HTTP-date (RFC 9110 §5.6.7, strictly: :mod:`apps.httpproxy.httpdate`) as
    seconds since the epoch; None if invalid."""
    return httpdate.parse_http_date(value, now)


def format_http_date(t: float) -> str:
    """IMF-fixdate for ``t``."""
    return httpdate.format_http_date(t)


def request_no_store(method: str, req_headers: Headers) -> bool:
    """Whether the cache must not be used at all for this request."""
    return method not in ("GET", "HEAD") or "no-store" in parse_cache_control(req_headers)


def only_if_cached(req_headers: Headers) -> bool:
    """Whether the client wants only a stored response (§5.2.1.7): a 504 otherwise,
    and the origin is never contacted."""
    return "only-if-cached" in parse_cache_control(req_headers)


def storable(method: str, req_headers: Headers, status: int, resp_headers: Headers) -> bool:
    """Whether a shared cache may store this response (§3, §3.5)."""
    if method != "GET" or status not in UNDERSTOOD_STATUS:
        return False
    req_cc, cc = parse_cache_control(req_headers), parse_cache_control(resp_headers)
    if "no-store" in req_cc or "no-store" in cc or "private" in cc:
        return False
    if "*" in resp_headers.tokens("vary"):
        return False   # §4.1: never matches a later request
    if req_headers.get("authorization") is not None and not (
            {"public", "s-maxage", "must-revalidate"} & cc.keys()):
        return False   # §3.5
    explicit = (delta_seconds(cc.get("s-maxage")) is not None
                or delta_seconds(cc.get("max-age")) is not None
                or resp_headers.get("expires") is not None)
    return explicit or "public" in cc or "no-cache" in cc or status in HEURISTIC_STATUS


def freshness_lifetime(status: int, headers: Headers, response_time: float | None = None,
                       now: float | None = None) -> float:
    """The freshness lifetime of a response in a shared cache (§4.2.1, §4.2.2).
    An invalid (or repeated) Date counts as ``response_time`` (RFC 9110 §6.6.1);
    an invalid Expires means already stale (§5.3)."""
    cc = parse_cache_control(headers)
    for directive in ("s-maxage", "max-age"):
        if directive in cc:
            value = delta_seconds(cc[directive])
            return 0.0 if value is None else float(value)   # invalid means stale (§4.2.1)
    date = httpdate.header_date(headers, "date", now)
    if date is None:
        date = response_time
    if headers.get_all("expires"):
        expires = httpdate.header_date(headers, "expires", now)
        if expires is None or date is None:
            return 0.0   # §5.3: an invalid Expires is in the past
        return max(0.0, expires - date)
    if status not in HEURISTIC_STATUS and "public" not in cc:
        return 0.0
    last_modified = httpdate.header_date(headers, "last-modified", now)
    if last_modified is None or date is None or last_modified >= date:
        return 0.0
    return min(HEURISTIC_FRACTION * (date - last_modified), HEURISTIC_MAX)


def current_age(headers: Headers, request_time: float, response_time: float,
                now: float) -> float:
    """The age of a stored response at ``now`` (§4.2.3)."""
    age_value = delta_seconds((headers.get("age") or "").split(",")[0].strip()) or 0
    date_value = httpdate.header_date(headers, "date", now)
    if date_value is None:
        date_value = response_time
    apparent_age = max(0.0, response_time - date_value)
    response_delay = max(0.0, response_time - request_time)
    corrected_age_value = age_value + response_delay
    corrected_initial_age = max(apparent_age, corrected_age_value)
    resident_time = max(0.0, now - response_time)
    return corrected_initial_age + resident_time


class Decision(Enum):
    """What to do with a stored response for a request."""

    FRESH = "fresh"            # serve it
    REVALIDATE = "revalidate"  # ask the origin (conditional request)


def _client_wants_revalidation(req_headers: Headers, req_cc: dict[str, str | None]) -> bool:
    if "no-cache" in req_cc:
        return True
    # §5.4: Pragma: no-cache counts only without Cache-Control (HTTP/1.0 clients).
    return (not req_headers.get_all("cache-control")
            and "no-cache" in req_headers.tokens("pragma"))


def decide(req_headers: Headers, status: int, headers: Headers,
           request_time: float, response_time: float, now: float) -> Decision:
    """Whether a stored response may be served for this request (§4.2, §5.2)."""
    req_cc, cc = parse_cache_control(req_headers), parse_cache_control(headers)
    if _client_wants_revalidation(req_headers, req_cc) or "no-cache" in cc:
        return Decision.REVALIDATE
    lifetime = freshness_lifetime(status, headers, response_time, now)
    age = current_age(headers, request_time, response_time, now)
    max_age = delta_seconds(req_cc.get("max-age"))
    if max_age is not None and age > max_age:
        return Decision.REVALIDATE
    min_fresh = delta_seconds(req_cc.get("min-fresh")) or 0
    if lifetime - age > min_fresh:
        return Decision.FRESH
    # Stale: a client may accept it (max-stale) unless the origin forbids (§4.2.4).
    if "max-stale" in req_cc and not ({"must-revalidate", "proxy-revalidate", "s-maxage"}
                                      & cc.keys()):
        value = req_cc["max-stale"]
        allowed = delta_seconds(value)
        if value is None or (allowed is not None and age - lifetime <= allowed):
            return Decision.FRESH
    return Decision.REVALIDATE


def vary_names(headers: Headers) -> tuple[str, ...]:
    """The request field names a response varies on, normalised (§4.1)."""
    return tuple(sorted(set(headers.tokens("vary"))))


def secondary_key(names: Iterable[str], req_headers: Headers) -> tuple[tuple[str, str], ...]:
    """The values of the Vary fields in a request, normalised by whitespace (§4.1)."""
    return tuple((n, " ".join((req_headers.get(n) or "").split())) for n in names)


def vary_matches(stored_headers: Headers, stored_key: tuple[tuple[str, str], ...],
                 req_headers: Headers) -> bool:
    """Whether a stored response selected by Vary may serve ``req_headers``."""
    names = vary_names(stored_headers)
    if "*" in names:
        return False
    return secondary_key(names, req_headers) == stored_key


def conditional_headers(req_headers: Headers, stored_headers: Headers) -> Headers:
    """The request to send to the origin to revalidate a stored response (§4.3.1):
    the client's request without its own conditions and Range, with the stored
    response's validators, sent as stored."""
    out = req_headers.copy()
    for name in _CLIENT_CONDITIONS:
        out.remove(name)
    etag = stored_headers.get("etag")
    if etag is not None:
        out.set("If-None-Match", etag)
    last_modified = stored_headers.get("last-modified")
    if last_modified is not None:
        out.set("If-Modified-Since", last_modified)
    return out


def can_revalidate(stored_headers: Headers) -> bool:
    """Whether the stored response has a validator."""
    return stored_headers.get("etag") is not None or \
        stored_headers.get("last-modified") is not None


def freshen(stored_headers: Headers, not_modified: Headers) -> Headers:
    """The stored header fields updated with those of a 304 (§4.3.4, §3.2): every
    field of the 304 replaces all the stored lines of that name, except the fields
    of _NOT_UPDATED. Age describes a message, not the representation: the stored
    one goes, and the 304's (if any) is the new age value (§4.2.3)."""
    replace = {n.lower() for n, _v in not_modified if n.lower() not in _NOT_UPDATED}
    replace.add("age")
    kept = [(n, v) for n, v in stored_headers if n.lower() not in replace]
    added = [(n, v) for n, v in not_modified if n.lower() in replace]
    return Headers(kept + added)


def validator_matches(stored_headers: Headers, not_modified: Headers) -> bool:
    """Whether a 304 selects the stored response for update (§4.3.4). A strong ETag
    in the 304 must match the stored one strongly (a stored weak W/"x" is not
    selected by a strong "x"), a weak one weakly; without an ETag, the Last-Modified
    must be the stored one. A 304 without any validator answers the conditions
    this cache sent, which were the stored response's own: it selects it."""
    etag = not_modified.get("etag")
    if etag is not None:
        stored = stored_headers.get("etag")
        if stored is None:
            return False
        return weak_match(etag, stored) if etag.startswith("W/") else \
            strong_match(etag, stored)
    last_modified = not_modified.get("last-modified")
    if last_modified is not None:
        return last_modified == stored_headers.get("last-modified")
    return True


def invalidated_uris(method: str, status: int, uri: str, headers: Headers) -> list[str]:
    """URIs to drop after an unsafe request with a non-error response (§4.4): the
    target, and Location and Content-Location when they have the same origin."""
    if method in SAFE_METHODS or not 200 <= status < 400:
        return []
    out = [uri]
    origin = urlsplit(uri)[:2]
    for name in ("location", "content-location"):
        value = headers.get(name)
        if value:
            target = urljoin(uri, value.strip())
            if urlsplit(target)[:2] == origin:
                out.append(target)
    return out


def age_header(age: float) -> str:
    """The Age value (§5.1), whole seconds."""
    return str(min(int(age), MAX_DELTA))


def stored_head(headers: Headers, status: int, body_length: int) -> Headers:
    """The header fields to keep with a stored body (RFC 9111 §3.1): no hop-by-hop
    fields and no transfer coding (the body is stored decoded), and a Content-Length
    that is the stored body's, so a hit's head always matches the body it carries
    (RFC 9112 §6.3). 204 has no body and no Content-Length (RFC 9110 §8.6)."""
    out = strip_hop_by_hop(headers)
    out.remove("content-length")
    if status != 204:
        out.add("Content-Length", str(body_length))
    return out
