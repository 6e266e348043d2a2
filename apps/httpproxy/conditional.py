"""Answering a request from a stored response: preconditions and ranges.

Pure functions, as in :mod:`apps.httpproxy.cache`: the stored response's status,
header fields and body in, the response to send out. RFC 9111 §4.3.2 says which
conditions a cache evaluates: If-None-Match (weak comparison, RFC 9110 §13.1.2) and,
only without it, If-Modified-Since (§13.1.3), then If-Range and Range (§13.1.5,
§14). If-Match and If-Unmodified-Since are not for a cache (§4.3.2): a request with
either is not answered from the cache (:func:`cache_may_answer`).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from apps.httpproxy.httpdate import header_date, parse_http_date
from apps.httpproxy.parser import Headers

#: A Range with more parts than this is ignored (a full 200): many small ranges cost
#: the sender far more than the request costs the client (RFC 9110 §14.2, §17.15).
MAX_RANGES = 32
#: Fields a 304 carries from the stored response (RFC 9110 §15.4.5), plus
#: Last-Modified when there is no ETag (it guides the recipient's cache update).
_NOT_MODIFIED_FIELDS = ("cache-control", "content-location", "date", "etag", "expires",
                        "vary")
_ENTITY_TAG = re.compile(r'\s*((?:W/)?"[\x21\x23-\x7e\x80-\xff]*")\s*(?:,|$)')
_RANGE_SPEC = re.compile(r"([0-9]*)-([0-9]*)")


@dataclass
class Answer:
    """The response to send for a hit: status, reason, header fields, body."""

    status: int
    reason: str
    headers: Headers
    body: bytes


def cache_may_answer(req_headers: Headers) -> bool:
    """Whether the request's preconditions are ones a cache evaluates (RFC 9111
    §4.3.2): If-Match and If-Unmodified-Since are left to the origin."""
    return not (req_headers.get_all("if-match") or req_headers.get_all("if-unmodified-since"))


def entity_tags(value: str) -> list[str] | None:
    """The entity-tags of an If-None-Match list (RFC 9110 §8.8.3), as sent; ["*"]
    for "*"; None when the value is not that grammar."""
    if value.strip() == "*":
        return ["*"]
    tags, pos = [], 0
    while pos < len(value):
        m = _ENTITY_TAG.match(value, pos)
        if m is None:
            if value[pos:].strip(" \t,") == "":
                break
            return None
        tags.append(m.group(1))
        pos = m.end()
    return tags or None


def weak_match(a: str, b: str) -> bool:
    """Weak comparison (RFC 9110 §8.8.3.2): the opaque-tags match, W/ ignored."""
    return a.removeprefix("W/") == b.removeprefix("W/")


def strong_match(a: str, b: str) -> bool:
    """Strong comparison: neither is weak and the opaque-tags match."""
    return not a.startswith("W/") and not b.startswith("W/") and a == b


def not_modified(method: str, req_headers: Headers, headers: Headers,
                 response_time: float) -> bool:
    """Whether a 304 answers the request (RFC 9111 §4.3.2, RFC 9110 §13.2.2):
    If-None-Match when present (any method it applies to: GET and HEAD here), else
    If-Modified-Since for GET and HEAD, compared with Last-Modified, or Date, or the
    time the response was received."""
    if method not in ("GET", "HEAD"):
        return False
    inm = req_headers.get_all("if-none-match")
    if inm:
        tags = entity_tags(", ".join(inm))
        etag = headers.get("etag")
        if tags is None:
            return False
        return tags == ["*"] or (etag is not None and any(weak_match(t, etag) for t in tags))
    since = header_date(req_headers, "if-modified-since")
    if since is None:
        return False   # §13.1.3: absent, invalid or a list: ignored
    last_modified = header_date(headers, "last-modified")
    if last_modified is None:
        last_modified = header_date(headers, "date")
    if last_modified is None:
        last_modified = response_time
    return last_modified <= since


def range_condition(req_headers: Headers, headers: Headers) -> bool:
    """If-Range (RFC 9110 §13.1.5): true without it; an entity-tag must match the
    stored ETag strongly; a date must equal a Last-Modified that is strong (§8.8.2.2:
    a Date at least one second later)."""
    values = req_headers.get_all("if-range")
    if not values:
        return True
    if len(values) != 1:
        return False
    value = values[0].strip()
    if value.startswith(('"', "W/")):
        etag = headers.get("etag")
        return etag is not None and strong_match(value, etag)
    when = parse_http_date(value)
    last_modified = header_date(headers, "last-modified")
    date = header_date(headers, "date")
    return (when is not None and last_modified is not None and date is not None
            and when == last_modified and date - last_modified >= 1)


def byte_ranges(value: str, length: int) -> list[tuple[int, int]] | None:
    """The satisfiable ranges of a ``bytes=`` Range (RFC 9110 §14.1.2) as inclusive
    (first, last) pairs, sorted and with overlapping or adjacent ones coalesced
    (§14.2 allows it); [] when none is satisfiable; None when the field is to be
    ignored (another unit, bad syntax, more than MAX_RANGES parts)."""
    unit, sep, spec = value.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    parts = [p.strip() for p in spec.split(",")]
    parts = [p for p in parts if p]
    if not parts or len(parts) > MAX_RANGES:
        return None
    out: list[tuple[int, int]] = []
    for part in parts:
        m = _RANGE_SPEC.fullmatch(part)
        if m is None or not (m[1] or m[2]):
            return None
        if m[1]:
            first = int(m[1])
            last = int(m[2]) if m[2] else length - 1
            if m[2] and last < first:
                return None   # §14.1.1: an invalid range-spec
            if first < length:
                out.append((first, min(last, length - 1)))
        elif int(m[2]) > 0:    # suffix-range: the last N bytes
            out.append((max(0, length - int(m[2])), length - 1))
    return _coalesce(out)


def _coalesce(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def answer(method: str, req_headers: Headers, status: int, reason: str, headers: Headers,
           body: bytes, response_time: float, boundary: str | None = None) -> Answer:
    """The response to a request served from a stored response: 304 when a
    condition says the client's copy is current, 206 or 416 for a Range on a 200,
    else the stored response itself. Preconditions are evaluated only for a 2xx
    (RFC 9110 §13.2.1). ``headers`` are those to send with a full response."""
    if not 200 <= status < 300:
        return Answer(status, reason, headers, body)
    if not_modified(method, req_headers, headers, response_time):
        return Answer(304, "Not Modified", not_modified_headers(headers), b"")
    ranges_value = req_headers.get_all("range")
    if method != "GET" or status != 200 or len(ranges_value) != 1 or not body:
        return Answer(status, reason, headers, body)
    ranges = byte_ranges(ranges_value[0], len(body))
    if ranges is None or not range_condition(req_headers, headers):
        return Answer(status, reason, headers, body)
    if not ranges:
        out = _without(headers, "content-length", "content-encoding", "content-type")
        out.set("Content-Range", f"bytes */{len(body)}")
        return Answer(416, "Range Not Satisfiable", out, b"")
    if len(ranges) == 1:
        first, last = ranges[0]
        out = headers.copy()
        out.set("Content-Range", f"bytes {first}-{last}/{len(body)}")
        return Answer(206, "Partial Content", out, body[first:last + 1])
    return _multipart(headers, body, ranges, boundary)


def _multipart(headers: Headers, body: bytes, ranges: list[tuple[int, int]],
               boundary: str | None) -> Answer:
    """A multipart/byteranges 206 (RFC 9110 §14.6): each part with its Content-Type
    and Content-Range; the boundary is random and absent from the body."""
    while boundary is None or boundary.encode() in body:
        boundary = secrets.token_hex(16)
    content_type = headers.get("content-type")
    parts = []
    for first, last in ranges:
        part = f"--{boundary}\r\n"
        if content_type is not None:
            part += f"Content-Type: {content_type}\r\n"
        part += f"Content-Range: bytes {first}-{last}/{len(body)}\r\n\r\n"
        parts.append(part.encode("latin-1") + body[first:last + 1] + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    out = _without(headers, "content-type", "content-encoding")
    out.set("Content-Type", f"multipart/byteranges; boundary={boundary}")
    return Answer(206, "Partial Content", out, b"".join(parts))


def not_modified_headers(headers: Headers) -> Headers:
    """The fields of a 304 made from a stored response (RFC 9110 §15.4.5)."""
    keep = set(_NOT_MODIFIED_FIELDS)
    if headers.get("etag") is None:
        keep.add("last-modified")
    keep |= {"age", "via"}
    return Headers((n, v) for n, v in headers if n.lower() in keep)


def _without(headers: Headers, *names: str) -> Headers:
    out = headers.copy()
    for name in names:
        out.remove(name)
    return out
