"""The client of `bench http`, run inside the client namespace; JSON lines on stdout.

A small asyncio HTTP/1.1 client on kernel sockets. Through the proxy it sends
absolute-form requests (RFC 9112 §3.2.2); without ``--proxy`` (the kernel router)
origin-form ones, otherwise the same code.

``python -m tools.bench.http_client sizes --dest A:P [--proxy A:P] --behaviour B
--object SIZE:PATH:N:SHA256 ... --tag T``
    For each object: one uncounted request whose body is checked against the
    sha256, then N counted requests whose body lengths are checked. Every target
    gets a unique query (``?r=TAG-N``) so that each request is a cache miss.
    ``close``: one request per connection (``Connection: close``); ``keep-alive``:
    all requests of one object on one connection. One line per counted request:
    ``{"kind": "sample", "size", "seconds"}`` (request sent to last body byte),
    ``{"kind": "verified", "size", "ok"}`` per object, ``{"kind": "error", ...}``
    (a response carrying ``Age``, i.e. a cache hit, is an error too).

``python -m tools.bench.http_client hits --dest A:P --proxy A:P --object SIZE:PATH:1:SHA256
--concurrency C --count N --seconds S``
    Fetch the object once (a miss, sha256 checked), repeat until a response carries
    ``Age`` (the proxy answered from its cache), then C kept-alive connections
    repeat the same request until N requests were issued or S seconds passed.
    One line ``{"kind": "hits", "ok", "hits", "errors", "seconds", "error_kinds"}``.
    With ``--keys K`` the object is asked for under K URLs (``?k=TAG-i``), each
    filled that way in turn, and the load goes round them; with ``--fresh`` every
    request of the load is on a new connection (``Connection: close``), so that
    with --workers the connections spread over the workers.

Every request is bounded by ``--timeout``, every mode by ``--deadline``;
``{"kind": "done"}`` ends the output.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import time
from collections import Counter
from dataclasses import dataclass

from tools.bench.args import int_in, number_in
from tools.bench.common_client import (
    MAX_CONCURRENCY,
    MAX_OBJECTS,
    MAX_REPEATS,
    READ_CHUNK,
    Addr,
    address,
    emit,
)
from tools.bench.uvsocks import raise_nofile

MAX_COUNT = 1_000_000
MAX_KEYS = 1024
# Requests tried, at most, until the object is seen served from the cache.
MAX_FILL_TRIES = 50
FILL_POLL = 0.05
BEHAVIOURS = ("close", "keep-alive")


class HttpClientError(Exception):
    """The response was not what the benchmark asked for (status, framing, length, hash)."""


@dataclass(frozen=True)
class ResponseHead:
    """What the client needs from a response head."""

    status: int
    length: int
    keep_alive: bool
    from_cache: bool


def parse_response_head(head: bytes) -> ResponseHead:
    """Parse a response head (status line and fields, without the blank line).

    Only ``200`` with a Content-Length body is accepted (the origin serves
    static files); anything else is an :class:`HttpClientError`.
    """
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise HttpClientError(f"bad status line {lines[0][:60]!r}")
    status = int(parts[1])
    if status != 200:
        raise HttpClientError(f"status {status}")
    fields: dict[bytes, list[bytes]] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise HttpClientError(f"bad header line {line[:60]!r}")
        fields.setdefault(name.lower(), []).append(value.strip())
    if b"transfer-encoding" in fields:
        raise HttpClientError("Transfer-Encoding is not expected from a static file")
    lengths = set(fields.get(b"content-length", []))
    if len(lengths) != 1:
        raise HttpClientError("no Content-Length" if not lengths else "conflicting Content-Length")
    text = lengths.pop()
    if not text.isdigit():
        raise HttpClientError(f"bad Content-Length {text[:30]!r}")
    tokens = {t.strip().lower() for v in fields.get(b"connection", []) for t in v.split(b",")}
    # RFC 9112 §9.3: HTTP/1.1 persists unless "close"; HTTP/1.0 only with "keep-alive".
    keep = b"close" not in tokens and (parts[0] != b"HTTP/1.0" or b"keep-alive" in tokens)
    return ResponseHead(status, int(text), keep, b"age" in fields)


def build_request(dest: Addr, target: str, absolute: bool, keep_alive: bool) -> bytes:
    """A GET for ``target`` (a path with query) at ``dest``, absolute-form for a proxy."""
    host = dest[0] if dest[1] == 80 else f"{dest[0]}:{dest[1]}"
    uri = f"http://{host}{target}" if absolute else target
    conn = "keep-alive" if keep_alive else "close"
    return f"GET {uri} HTTP/1.1\r\nHost: {host}\r\nConnection: {conn}\r\n\r\n".encode()


class Connection:
    """One client connection: send a GET, read its response to the last body byte."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.usable = True

    @classmethod
    async def open(cls, addr: Addr) -> Connection:
        """Connect to ``addr`` (the proxy, or the origin on the router path)."""
        reader, writer = await asyncio.open_connection(*addr, limit=READ_CHUNK)
        return cls(reader, writer)

    async def get(self, request: bytes, expect: int,
                  digest: hashlib._Hash | None = None) -> tuple[float, ResponseHead]:
        """Send ``request``; read exactly ``expect`` body bytes; (seconds, head)."""
        self.usable = False  # until the whole response is read
        t0 = time.perf_counter()
        self.writer.write(request)
        try:
            raw = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError as exc:
            raise HttpClientError("response head too long") from exc
        except asyncio.IncompleteReadError as exc:
            raise HttpClientError("closed before the end of the response head") from exc
        head = parse_response_head(raw[:-4])
        if head.length != expect:
            raise HttpClientError(f"Content-Length {head.length}, expected {expect}")
        got = 0
        while got < head.length:
            chunk = await self.reader.read(min(READ_CHUNK, head.length - got))
            if not chunk:
                raise HttpClientError(f"closed after {got} of {head.length} body bytes")
            if digest is not None:
                digest.update(chunk)
            got += len(chunk)
        seconds = time.perf_counter() - t0
        self.usable = head.keep_alive
        return seconds, head

    def close(self) -> None:
        """Drop the connection at once (nothing is pending on it)."""
        self.writer.transport.abort()


def _kind(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:80]}"


ERRORS = (OSError, HttpClientError, TimeoutError, asyncio.IncompleteReadError)


@dataclass(frozen=True)
class ObjectSpec:
    """One object: its size, URL path, counted requests and sha256 (hex)."""

    size: int
    path: str
    repeats: int
    sha256: str


class Fetcher:
    """Requests of one behaviour through one proxy (or none), each bounded in time."""

    def __init__(self, dest: Addr, proxy: Addr | None, keep_alive: bool, tag: str,
                 timeout: float) -> None:
        self.dest = dest
        self.proxy = proxy
        self.keep_alive = keep_alive
        self.tag = tag
        self.timeout = timeout
        self.serial = 0
        self.conn: Connection | None = None

    def request(self, path: str, unique: bool = True) -> bytes:
        """The next request for ``path``; a unique query makes it a cache miss."""
        self.serial += 1
        target = f"{path}?r={self.tag}-{self.serial}" if unique else path
        return build_request(self.dest, target, self.proxy is not None, self.keep_alive)

    async def fetch(self, request: bytes, expect: int,
                    digest: hashlib._Hash | None = None) -> tuple[float, ResponseHead]:
        """One request on the kept connection (opened when there is none usable)."""
        try:
            async with asyncio.timeout(self.timeout):
                if self.conn is None or not self.conn.usable:
                    self.drop()
                    self.conn = await Connection.open(self.proxy or self.dest)
                result = await self.conn.get(request, expect, digest)
        except BaseException:
            self.drop()
            raise
        if not self.keep_alive:
            self.drop()
        return result

    def drop(self) -> None:
        """Close the kept connection, if any."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None


async def run_object(f: Fetcher, obj: ObjectSpec, deadline: float) -> None:
    """The checked request, then the counted ones (see the module docstring)."""
    digest = hashlib.sha256()
    try:
        await f.fetch(f.request(obj.path), obj.size, digest)
        emit({"kind": "verified", "size": obj.size, "ok": digest.hexdigest() == obj.sha256})
    except ERRORS as exc:
        emit({"kind": "error", "size": obj.size, "error": _kind(exc)})
    for _ in range(obj.repeats):
        if time.monotonic() > deadline:
            emit({"kind": "error", "size": obj.size, "error": "deadline"})
            return
        try:
            seconds, head = await f.fetch(f.request(obj.path), obj.size)
        except ERRORS as exc:
            emit({"kind": "error", "size": obj.size, "error": _kind(exc)})
            continue
        if head.from_cache:
            # A unique query should never be in the cache: the sample is not a miss.
            emit({"kind": "error", "size": obj.size, "error": "served from the cache (Age)"})
            continue
        emit({"kind": "sample", "size": obj.size, "seconds": seconds})


async def run_sizes(args: argparse.Namespace, deadline: float) -> None:
    """Each object in turn, a fresh connection for each (keep-alive: kept within it)."""
    f = Fetcher(args.dest, args.proxy, args.behaviour == "keep-alive", args.tag, args.timeout)
    for obj in args.object:
        try:
            await run_object(f, obj, deadline)
        finally:
            f.drop()
        if time.monotonic() > deadline:
            return


async def fill_cache(f: Fetcher, obj: ObjectSpec, deadline: float) -> bool:
    """Fetch ``obj`` (sha256 checked), then until the proxy answers from its cache.

    The tap stores the copy once the relay has ended, which may be a moment after
    the client read the last byte: hence a bounded number of tries.
    """
    digest = hashlib.sha256()
    await f.fetch(f.request(obj.path, unique=False), obj.size, digest)
    if digest.hexdigest() != obj.sha256:
        raise HttpClientError("sha256 of the first response differs from the file's")
    for _ in range(MAX_FILL_TRIES):
        if time.monotonic() > deadline:
            break
        _seconds, head = await f.fetch(f.request(obj.path, unique=False), obj.size)
        if head.from_cache:
            return True
        await asyncio.sleep(FILL_POLL)  # poll interval while the store completes
    return False


def hit_paths(obj: ObjectSpec, keys: int, tag: str) -> list[str]:
    """The URLs (paths) the hit load asks for: the object's, or ``keys`` of its own."""
    if keys == 1:
        return [obj.path]
    return [f"{obj.path}?k={tag}-{i}" for i in range(keys)]


async def fill_all(args: argparse.Namespace, obj: ObjectSpec, paths: list[str],
                   deadline: float) -> bool:
    """Each of ``paths`` stored (:func:`fill_cache`), on a connection of its own."""
    for path in paths:
        first = Fetcher(args.dest, args.proxy, True, args.tag, args.timeout)
        try:
            if not await fill_cache(first, ObjectSpec(obj.size, path, 1, obj.sha256),
                                    deadline):
                emit({"kind": "error", "size": obj.size,
                      "error": "never served from the cache"})
                return False
        except ERRORS as exc:
            emit({"kind": "error", "size": obj.size, "error": _kind(exc)})
            return False
        finally:
            first.drop()
    return True


async def run_hits(args: argparse.Namespace, deadline: float) -> None:
    """The cache-hit load (see the module docstring)."""
    obj: ObjectSpec = args.object[0]
    paths = hit_paths(obj, args.keys, args.tag)
    if not await fill_all(args, obj, paths, deadline):
        return
    loop = asyncio.get_running_loop()
    start = loop.time()
    stop_at = start + min(args.seconds, max(deadline - time.monotonic(), 0.0))
    issued = ok = hits = 0
    kinds: Counter[str] = Counter()

    async def worker() -> None:
        nonlocal issued, ok, hits
        f = Fetcher(args.dest, args.proxy, not args.fresh, args.tag, args.timeout)
        requests = [f.request(path, unique=False) for path in paths]
        try:
            while issued < args.count and loop.time() < stop_at:
                issued += 1
                try:
                    _seconds, head = await f.fetch(requests[issued % len(requests)],
                                                   obj.size)
                except ERRORS as exc:
                    kinds[_kind(exc)] += 1
                    continue
                ok += 1
                hits += head.from_cache
        finally:
            f.drop()

    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    emit({"kind": "hits", "size": obj.size, "ok": ok, "hits": hits,
          "errors": sum(kinds.values()), "seconds": loop.time() - start,
          "error_kinds": dict(kinds)})


def parse_object(text: str) -> ObjectSpec:
    """``SIZE:PATH:REPEATS:SHA256`` as an ObjectSpec; ArgumentTypeError otherwise."""
    parts = text.split(":")
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"not SIZE:PATH:REPEATS:SHA256: {text!r}")
    try:
        size, repeats = int(parts[0]), int(parts[2])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not SIZE:PATH:REPEATS:SHA256: {text!r}") from exc
    sha = parts[3].lower()
    if size < 0 or not parts[1].startswith("/") or "?" in parts[1]:
        raise argparse.ArgumentTypeError(f"bad size or path: {text!r}")
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise argparse.ArgumentTypeError(f"not a sha256 in hex: {parts[3][:70]!r}")
    if not 1 <= repeats <= MAX_REPEATS:
        raise argparse.ArgumentTypeError(f"repeats must be 1..{MAX_REPEATS}")
    return ObjectSpec(size, parts[1], repeats, sha)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (bounds checked)."""
    p = argparse.ArgumentParser(prog="http_client")
    p.add_argument("mode", choices=("sizes", "hits"))
    p.add_argument("--dest", type=address, required=True)
    p.add_argument("--proxy", type=address, default=None)
    p.add_argument("--behaviour", choices=BEHAVIOURS, default="keep-alive")
    p.add_argument("--object", type=parse_object, action="append", default=[])
    p.add_argument("--tag", default="0")
    p.add_argument("--concurrency", type=int_in(1, MAX_CONCURRENCY), default=64)
    p.add_argument("--count", type=int_in(1, MAX_COUNT), default=20_000)
    p.add_argument("--seconds", type=number_in(0.01, 3600), default=3.0)
    p.add_argument("--keys", type=int_in(1, MAX_KEYS), default=1,
                   help="hits: URLs of the object (each its own cache entry)")
    p.add_argument("--fresh", action="store_true",
                   help="hits: a new connection for every request of the load")
    p.add_argument("--timeout", type=number_in(0.01, 3600), default=60.0)
    p.add_argument("--deadline", type=number_in(0.01, 24 * 3600), default=600.0,
                   help="seconds for the whole mode")
    args = p.parse_args(argv)
    if not 1 <= len(args.object) <= MAX_OBJECTS:
        p.error(f"1..{MAX_OBJECTS} --object needed")
    if args.mode == "hits" and (args.proxy is None or len(args.object) != 1):
        p.error("hits needs --proxy and exactly one --object")
    if not args.tag.isalnum() or len(args.tag) > 32:
        p.error("--tag: up to 32 letters and digits")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run one mode; results go to stdout as JSON lines, then ``{"kind": "done"}``."""
    args = parse_args(argv)
    deadline = time.monotonic() + args.deadline
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    if args.mode == "sizes":
        runner(run_sizes(args, deadline))
    else:
        raise_nofile(args.concurrency + 256)
        runner(run_hits(args, deadline))
    emit({"kind": "done"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
