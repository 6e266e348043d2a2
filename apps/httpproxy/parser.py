"""Incremental HTTP/1.x message heads, body framing and hop-by-hop rules (RFC 9112).

Sans-I/O: the parse functions take the bytes received so far and return either
None (need more) or the message and how many bytes its head used. Limits are
checked on partial input too, so an endless head is refused as soon as it passes
a limit rather than buffered. Every rejection is an :class:`HttpError` carrying the
status code a proxy answers with (400, 414, 431 for requests; 502 for responses).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum

#: Limits of a request (and response) head.
MAX_START_LINE = 8 * 1024
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 100
#: A chunk-size line with extensions, and the trailer section of a chunked body.
MAX_CHUNK_LINE = 4096
MAX_TRAILER_BYTES = 16 * 1024
#: Chunk sizes: at most 16 hex digits and below 2**63, so that no 64-bit parser
#: further on could read a size we accepted as a different (wrapped) number.
MAX_CHUNK_SIZE_DIGITS = 16
MAX_CHUNK_SIZE = 2**63 - 1
#: RFC 9112 §2.2 asks to ignore "at least one" empty line before a request; a few
#: are ignored, an endless run of them is refused instead of buffered.
MAX_EMPTY_LINES = 4

# RFC 9110 §5.6.2: token = 1*tchar.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_VERSION = re.compile(rb"HTTP/1\.[0-9]\Z")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# ASCII digits only: str.isdigit() also accepts "\u00b2" and other digits int() refuses.
_DIGITS = re.compile(r"[0-9]{1,18}")
_PORT = re.compile(r"[0-9]{1,5}")
# RFC 3986 §3.2.2: IPv6address is hex digits and colons (a dotted IPv4 tail allowed);
# "%" (a zone ID, RFC 6874) and "v" (IPvFuture) are refused.
_IPV6_CHARS = re.compile(r"[0-9A-Fa-f:.]{2,45}")
# RFC 3986 §3.2.2 host (reg-name without ",", or an IP literal) and an optional port.
_HOST_FIELD = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+;=%]*)(?::[0-9]*)?")
# RFC 9112 §7.1.1: chunk-size [ chunk-ext ], with
# chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ), ext-val = token / quoted-string.
_TCHARS = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,%d})(?:[ \t]*;[ \t]*%s(?:[ \t]*=[ \t]*(?:%s|%s))?)*"
                         % (MAX_CHUNK_SIZE_DIGITS, _TCHARS, _TCHARS, _QUOTED))

#: RFC 9110 §7.6.1 and the proxy-only fields; plus whatever Connection names.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade", "proxy-authorization", "proxy-authenticate",
})
#: Fields a proxy must not drop because Connection names them (RFC 9110 §7.6.1: a
#: sender must not name fields meant for every recipient): removing Content-Length
#: or Transfer-Encoding would forward a body without its framing, removing Host the
#: request's authority. A message whose Connection names one is refused.
END_TO_END = frozenset({"content-length", "transfer-encoding", "host"})


class HttpError(ValueError):
    """A message the proxy refuses; ``status`` is what it answers the client with."""

    status = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class BadRequest(HttpError):
    """A malformed request (400)."""


class UriTooLong(HttpError):
    """A request line longer than MAX_START_LINE (414, RFC 9112 §3)."""

    status = 414


class HeadersTooLarge(HttpError):
    """More header bytes or fields than allowed (431, RFC 6585 §5)."""

    status = 431


class BadResponse(HttpError):
    """A malformed response from the origin (502, RFC 9110 §15.6.3)."""

    status = 502


class Headers:
    """Header fields in order, names compared case-insensitively."""

    def __init__(self, fields: Iterable[tuple[str, str]] = ()) -> None:
        self.fields: list[tuple[str, str]] = list(fields)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self.fields == other.fields

    def __repr__(self) -> str:
        return f"Headers({self.fields!r})"

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, in order."""
        name = name.lower()
        return [v for n, v in self.fields if n.lower() == name]

    def get(self, name: str) -> str | None:
        """The values of ``name`` joined with ", " (RFC 9110 §5.3), or None."""
        values = self.get_all(name)
        return ", ".join(values) if values else None

    def tokens(self, name: str) -> list[str]:
        """The comma-separated list elements of ``name``, lower-cased."""
        return [t.strip().lower() for v in self.get_all(name) for t in v.split(",")
                if t.strip()]

    def remove(self, name: str) -> None:
        """Drop every field called ``name``."""
        name = name.lower()
        self.fields = [(n, v) for n, v in self.fields if n.lower() != name]

    def set(self, name: str, value: str) -> None:
        """Replace every ``name`` field with one field."""
        self.remove(name)
        self.fields.append((name, value))

    def add(self, name: str, value: str) -> None:
        """Append a field."""
        self.fields.append((name, value))

    def copy(self) -> Headers:
        """An independent copy."""
        return Headers(self.fields)

    def encode(self) -> bytes:
        """The field lines and the empty line that ends the head."""
        return b"".join(f"{n}: {v}\r\n".encode("latin-1") for n, v in self.fields) + b"\r\n"


@dataclass
class Request:
    """A request head. ``target`` is as received; the rest is derived from it."""

    method: str
    target: str
    version: str = "HTTP/1.1"
    headers: Headers = field(default_factory=Headers)
    scheme: str = ""
    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def uri(self) -> str:
        """The effective request URI (RFC 9110 §7.1), normalised for cache keys."""
        if self.method == "CONNECT":
            return f"{uri_host(self.host)}:{self.port}"
        default = 443 if self.scheme == "https" else 80
        port = "" if self.port == default else f":{self.port}"
        return f"{self.scheme}://{uri_host(self.host)}{port}{self.path}"

    @property
    def keep_alive(self) -> bool:
        """Whether the client wants the connection kept after the response (RFC 9112
        §9.3): HTTP/1.1 unless "close"; HTTP/1.0 only with "keep-alive"."""
        conn = self.headers.tokens("connection")
        if "close" in conn:
            return False
        return self.version != "HTTP/1.0" or "keep-alive" in conn

    def encode_origin_form(self) -> bytes:
        """The request line in origin form and the head, for the origin server."""
        line = f"{self.method} {self.path} HTTP/1.1\r\n".encode("latin-1")
        return line + self.headers.encode()


@dataclass
class Response:
    """A response head."""

    status: int
    reason: str = ""
    version: str = "HTTP/1.1"
    headers: Headers = field(default_factory=Headers)

    def encode(self) -> bytes:
        """The status line and the head."""
        line = f"HTTP/1.1 {self.status} {self.reason}\r\n".encode("latin-1")
        return line + self.headers.encode()


def _split_head(buf: bytes | bytearray, error: type[HttpError],
                line_error: type[HttpError]) -> tuple[list[bytes], int] | None:
    """The lines of a complete head and its length; None if incomplete."""
    start = 0
    # RFC 9112 §2.2: a server SHOULD ignore at least one empty line before a request.
    while buf.startswith(b"\r\n", start):
        start += 2
        if start > 2 * MAX_EMPTY_LINES:
            raise error("too many empty lines before the start line")
    end = buf.find(b"\r\n\r\n", start)
    _check_line_ends(buf, start, len(buf) if end < 0 else end + 2, error)
    first = buf.find(b"\r\n", start)
    if (first < 0 and len(buf) - start > MAX_START_LINE) or first - start > MAX_START_LINE:
        raise line_error("start line too long")
    header_bytes = (len(buf) if end < 0 else end) - first
    if first >= 0 and header_bytes > MAX_HEADER_BYTES:
        raise HeadersTooLarge("header section too large")
    if end < 0:
        if buf.count(b"\r\n", start) > MAX_HEADERS + 1:
            raise HeadersTooLarge(f"more than {MAX_HEADERS} header fields")
        return None
    lines = bytes(buf[start:end]).split(b"\r\n")
    if len(lines) - 1 > MAX_HEADERS:
        raise HeadersTooLarge(f"more than {MAX_HEADERS} header fields")
    if any(b"\n" in line or b"\r" in line for line in lines):
        raise error("bare CR or LF in the head")
    return lines, end + 4


def _check_line_ends(buf: bytes | bytearray, start: int, stop: int,
                     error: type[HttpError]) -> None:
    """Every CR and LF in ``buf[start:stop]`` is part of a CRLF (RFC 9112 §2.2: a bare
    CR or LF is read differently by different parsers); refused as soon as it is seen,
    not when the head ends. A CR at the very end of an incomplete head may still get
    its LF."""
    crlf = buf.count(b"\r\n", start, stop)
    if buf.count(b"\n", start, stop) != crlf:
        raise error("bare LF in the head")
    cr = buf.count(b"\r", start, stop)
    if cr != crlf and not (cr == crlf + 1 and stop == len(buf) and buf.endswith(b"\r")):
        raise error("bare CR in the head")


def _fields(lines: list[bytes], error: type[HttpError]) -> Headers:
    headers = Headers()
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            # RFC 9112 §5.2: obsolete line folding; we reject rather than unfold.
            raise error("obsolete header line folding")
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.match(name):
            # §5.1: no whitespace between name and colon, and the name is a token.
            raise error(f"bad header field {line[:40]!r}")
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value):
            raise error(f"control character in header {name.decode()!r}")
        headers.add(name.decode("ascii"), value.decode("latin-1"))
    return headers


def parse_request_head(buf: bytes | bytearray) -> tuple[Request, int] | None:
    """A request head from the start of ``buf``: (request, bytes used) or None."""
    got = _split_head(buf, BadRequest, UriTooLong)
    if got is None:
        return None
    lines, used = got
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]) or not _VERSION.match(parts[2]):
        raise BadRequest(f"bad request line {lines[0][:60]!r}")
    try:
        target = parts[1].decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest("non-ASCII request target") from None
    if not target or not target.isprintable():
        raise BadRequest("bad request target")
    req = Request(parts[0].decode(), target, parts[2].decode(), _fields(lines[1:], BadRequest))
    hosts = req.headers.get_all("host")
    if len(hosts) > 1 or (hosts and not _HOST_FIELD.fullmatch(hosts[0])):
        raise BadRequest("more than one Host, or a bad Host")   # RFC 9112 §3.2
    _resolve_target(req)
    return req, used


def _authority(text: str, default_port: int | None) -> tuple[str, int]:
    """(host, port) of an authority (RFC 3986 §3.2.2-3): an IPv6 literal loses its
    brackets (``[2001:2::1]:80`` is ("2001:2::1", 80))."""
    if text.startswith("["):
        literal, sep, rest = text.partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise BadRequest(f"bad IP literal in {text[:60]!r}")
        host, port = _ip_literal(literal[1:]), rest[1:]
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = text, ""
        host = _check_host(host)
    if not port:
        if default_port is None:
            raise BadRequest(f"no port in {text!r}")
        return host, default_port
    if not _PORT.fullmatch(port) or not 0 < int(port) < 65536:
        raise BadRequest(f"bad port in {text!r}")
    return host, int(port)


def _ip_literal(text: str) -> str:
    """The IPv6 address inside ``[...]`` (RFC 3986 §3.2.2 IP-literal), compressed.
    No zone ID (RFC 6874 is for link-local scopes, which a proxy has no use for) and
    no IPvFuture: 400."""
    if not _IPV6_CHARS.fullmatch(text):
        raise BadRequest(f"bad or unsupported IP literal [{text[:60]}]")
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        raise BadRequest(f"bad IPv6 address [{text[:60]}]") from None


def _check_host(host: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9.\-_]{1,253}", host):
        # No userinfo (RFC 9110 §4.2.4); no percent-encoded or other reg-name bytes.
        raise BadRequest(f"bad or unsupported host {host[:60]!r}")
    return host.lower()


def uri_host(host: str) -> str:
    """``host`` as it is written in a URI or a Host field: an IPv6 address in
    brackets (RFC 3986 §3.2.2), anything else as it is."""
    return f"[{host}]" if ":" in host else host


def _resolve_target(req: Request) -> None:
    """Fill scheme/host/port/path from the target (RFC 9112 §3.2)."""
    target = req.target
    if req.method == "CONNECT":
        req.host, req.port = _authority(target, None)   # authority-form, §3.2.3
        return
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise BadRequest("a proxy needs an absolute-form target")
    # RFC 3986 §3.2: the authority ends at the first "/", "?" or "#".
    cut = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    auth, tail = rest[:cut], rest[cut:]
    if "@" in auth or not auth:
        raise BadRequest("bad authority in the target")
    # RFC 9110 §4.2.5: the fragment is the client's; it never goes on the wire.
    path, q, query = tail.partition("#")[0].partition("?")
    req.scheme = scheme.lower()
    req.host, req.port = _authority(auth, 443 if req.scheme == "https" else 80)
    req.path = (path or "/") + q + query
    if req.version == "HTTP/1.1" and req.headers.get("host") is None:
        raise BadRequest("HTTP/1.1 request without Host")  # RFC 9112 §3.2


def parse_response_head(buf: bytes | bytearray) -> tuple[Response, int] | None:
    """A response head from the start of ``buf``: (response, bytes used) or None."""
    got = _split_head(buf, BadResponse, BadResponse)
    if got is None:
        return None
    lines, used = got
    version, _sp, rest = lines[0].partition(b" ")
    code, _sp, reason = rest.partition(b" ")
    if not _VERSION.match(version) or not re.fullmatch(rb"[1-5][0-9][0-9]", code):
        # RFC 9110 §15: a status code outside 100-599 is invalid.
        raise BadResponse(f"bad status line {lines[0][:60]!r}")
    headers = _fields(lines[1:], BadResponse)
    return Response(int(code), reason.decode("latin-1"), version.decode(), headers), used


# -- body framing (RFC 9112 §6) ----------------------------------------------------------

class Framing(Enum):
    """How a message body ends."""

    NONE = "none"        # no body
    LENGTH = "length"    # Content-Length bytes
    CHUNKED = "chunked"  # chunked transfer coding
    CLOSE = "close"      # until the connection closes (responses only)
    TUNNEL = "tunnel"    # 2xx to CONNECT: the connection becomes a tunnel


def _check_connection(headers: Headers, error: type[HttpError]) -> None:
    """Refuse a message whose Connection (or Proxy-Connection) names a field that
    :data:`END_TO_END` says must stay (RFC 9110 §7.6.1)."""
    named = set(headers.tokens("connection")) | set(headers.tokens("proxy-connection"))
    bad = sorted(named & END_TO_END)
    if bad:
        raise error(f"Connection names {bad[0]}")


def _content_length(headers: Headers, error: type[HttpError]) -> int | None:
    values = headers.get_all("content-length")
    if not values:
        return None
    # RFC 9110 §8.6: 1*DIGIT; a list of identical values (or repeated fields) is one
    # value; anything else, an empty element included, is an error (RFC 9112 §6.3).
    elements = [e.strip(" \t") for v in values for e in v.split(",")]
    if len(set(elements)) != 1 or not _DIGITS.fullmatch(elements[0]):
        raise error(f"bad Content-Length {values[:3]}")
    return int(elements[0])


def request_framing(req: Request) -> tuple[Framing, int]:
    """The request body's framing and length (0 unless LENGTH)."""
    _check_connection(req.headers, BadRequest)
    if req.headers.get_all("transfer-encoding"):
        codings = req.headers.tokens("transfer-encoding")
        if req.version == "HTTP/1.0" or not codings or codings[-1] != "chunked" \
                or codings.count("chunked") > 1:
            # §6.1: HTTP/1.0 has no transfer codings; §7: chunked only once; §6.3 item
            # 4: without a final chunked the body length cannot be determined.
            raise BadRequest("Transfer-Encoding without one final chunked")
        if len(codings) > 1:
            # §6.1: a coding we do not apply; we would forward it undecoded.
            raise BadRequest(f"transfer coding {codings[0]!r} not implemented", 501)
        if req.headers.get("content-length") is not None:
            # §6.1: both present is a smuggling attempt; refuse rather than choose.
            raise BadRequest("both Transfer-Encoding and Content-Length")
        return Framing.CHUNKED, 0
    n = _content_length(req.headers, BadRequest)
    return (Framing.LENGTH, n) if n else (Framing.NONE, 0)


def response_framing(method: str, resp: Response) -> tuple[Framing, int]:
    """The response body's framing and length for a request ``method`` (§6.3)."""
    _check_connection(resp.headers, BadResponse)
    if method == "HEAD" or resp.status < 200 or resp.status in (204, 304):
        return Framing.NONE, 0
    if method == "CONNECT" and resp.status < 300:
        return Framing.TUNNEL, 0
    if resp.headers.get_all("transfer-encoding"):
        if resp.version == "HTTP/1.0" or resp.headers.tokens("transfer-encoding") != ["chunked"]:
            # §6.1: Transfer-Encoding in HTTP/1.0 is faulty framing; and a coding other
            # than chunked is one nothing here decodes: forwarding it undecoded, or
            # reading to the close, would both be guesses.
            raise BadResponse(f"Transfer-Encoding {resp.headers.get('transfer-encoding')!r}")
        # §6.3 item 3: chunked wins over a Content-Length, which set_framing removes.
        return Framing.CHUNKED, 0
    n = _content_length(resp.headers, BadResponse)
    if n is None:
        return Framing.CLOSE, 0
    return (Framing.LENGTH, n) if n else (Framing.NONE, 0)


def set_framing(headers: Headers, framing: Framing, length: int, chunked: bool = True,
                status: int = 200) -> None:
    """Make the framing fields of a forwarded head the proxy's own (RFC 9112 §6.3): one
    Content-Length for a LENGTH body, ``Transfer-Encoding: chunked`` for a CHUNKED body
    the proxy re-chunks (``chunked``), neither for a body that ends with the close,
    nor for a 1xx or 204 response ``status`` (RFC 9110 §8.6). What the sender wrote
    is never passed on, so no parser further on can read the body's end where this
    one did not."""
    headers.remove("transfer-encoding")
    if status < 200 or status == 204:
        headers.remove("content-length")
        return
    if framing is Framing.LENGTH:
        headers.set("Content-Length", str(length))
        return
    if framing is Framing.NONE:
        # No body follows (HEAD, 304, or a length of 0): a Content-Length stays as
        # one value, or goes when it is not one valid value.
        try:
            n = _content_length(headers, HttpError)
        except HttpError:
            n = None
        headers.remove("content-length")
        if n is not None:
            headers.add("Content-Length", str(n))
        return
    headers.remove("content-length")
    if framing is Framing.CHUNKED and chunked:
        headers.add("Transfer-Encoding", "chunked")


class ChunkedDecoder:
    """Incremental chunked decoding (RFC 9112 §7.1): :meth:`feed` returns the payload
    bytes and how many input bytes it used; ``done`` once the last chunk and the
    trailer section were read (bytes after that are not used). Strict: every line
    ends with CRLF and is at most MAX_CHUNK_LINE bytes, chunk-size is 1 to 16 hex
    digits below 2**63, extensions follow the chunk-ext grammar, trailer lines are
    field lines; anything else raises ``error``. The payload is all a caller may
    forward (re-chunked with :func:`encode_chunk`): extensions and trailers go no
    further."""

    def __init__(self, error: type[HttpError] = BadResponse) -> None:
        self.error = error
        self.remaining = 0        # payload bytes left in the current chunk
        self.state = "size"       # size, data, data_crlf, trailer, done
        self.trailer_bytes = 0

    @property
    def done(self) -> bool:
        """True after the whole chunked body was consumed."""
        return self.state == "done"

    def feed(self, data: bytes | bytearray | memoryview) -> tuple[bytes, int]:
        """Decode from ``data``: (payload, bytes of ``data`` used)."""
        data = bytes(data)
        out: list[bytes] = []
        pos = 0
        while pos < len(data) and self.state != "done":
            if self.state == "data":
                take = min(self.remaining, len(data) - pos)
                out.append(data[pos:pos + take])
                pos += take
                self.remaining -= take
                if self.remaining == 0:
                    self.state = "data_crlf"
                continue
            if self.state == "data_crlf":
                if len(data) - pos < 2:
                    break
                if data[pos:pos + 2] != b"\r\n":
                    raise self.error("chunk data not followed by CRLF")
                pos += 2
                self.state = "size"
                continue
            end = data.find(b"\r\n", pos, pos + MAX_CHUNK_LINE + 2)
            if end < 0:
                if len(data) - pos > MAX_CHUNK_LINE:
                    raise self.error("chunk line too long")
                break   # a line split across reads: the caller feeds it again
            self._line(data[pos:end])
            pos = end + 2
        return b"".join(out), pos

    def _line(self, line: bytes) -> None:
        if self.state == "size":
            m = _CHUNK_LINE.fullmatch(line)
            if m is None or int(m.group(1), 16) > MAX_CHUNK_SIZE:
                raise self.error(f"bad chunk line {line[:20]!r}")
            self.remaining = int(m.group(1), 16)
            self.state = "data" if self.remaining else "trailer"
            return
        self.trailer_bytes += len(line) + 2
        if self.trailer_bytes > MAX_TRAILER_BYTES:
            raise self.error("trailer section too large")
        if not line:
            self.state = "done"
        else:
            _fields([line], self.error)   # §7.1.2: a trailer line is a field line


def encode_chunk(data: bytes) -> bytes:
    """One chunk of the chunked coding (the empty chunk ends the body)."""
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b"0\r\n\r\n"


# -- forwarding ----------------------------------------------------------------------------

def strip_hop_by_hop(headers: Headers) -> Headers:
    """A copy without hop-by-hop fields (RFC 9110 §7.6.1), including those named in
    Connection."""
    named = set(headers.tokens("connection")) | set(headers.tokens("proxy-connection"))
    drop = HOP_BY_HOP | named
    return Headers((n, v) for n, v in headers if n.lower() not in drop)


def add_via(headers: Headers, version: str, pseudonym: str) -> None:
    """Append this proxy to Via (RFC 9110 §7.6.3): "1.1 tapsplice"."""
    received = version.removeprefix("HTTP/")
    entry = f"{received} {pseudonym}"
    current = headers.get("via")
    headers.set("Via", f"{current}, {entry}" if current else entry)
