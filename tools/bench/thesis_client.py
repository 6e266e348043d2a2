"""The client of `bench thesis`, run inside the client namespace; JSON lines on stdout.

``python -m tools.bench.thesis_client sizes --dest A:P [--proxy A:P] --object SIZE:PATH:N``
    Experiment 1. For each ``--object`` in turn: ``--warmup`` uncounted requests,
    then N counted ones, one at a time on blocking sockets (no event loop in the
    way of a single transfer). Each request connects (to the SOCKS5 proxy, or
    straight to ``--dest`` on router paths), sends an HTTP/1.0 GET and reads the
    body to its last byte, which must be exactly SIZE bytes. One line per
    request: ``{"kind": "sample", "size", "connect", "response", "total"}`` or
    ``{"kind": "error", "size", "error"}``; ``{"kind": "done"}`` at the end.

``python -m tools.bench.thesis_client load --dest A:P [--proxy A:P] --path P --expect N
--level C:COUNT:SECONDS ... --repeats R``
    Experiment 2. For each level, R runs of C concurrent workers (uvloop) that
    repeat such requests until COUNT requests were issued or SECONDS passed. One
    line per run: ``{"kind": "run", "concurrency", "ok", "errors", "seconds",
    "total", "response", "error_kinds"}``.

Every request is bounded by ``--timeout``, every mode by ``--deadline``.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass

from tools.bench.common_client import (
    MAX_CONCURRENCY,
    MAX_HEAD,
    MAX_OBJECTS,
    MAX_REPEATS,
    READ_CHUNK,
    Addr,
    address,
    emit,
)
from tools.bench.splice_load import LoadError, socks_connect, socks_request
from tools.bench.thesis_results import latency_summary
from tools.bench.uvsocks import raise_nofile

MAX_LEVEL_COUNT = 1_000_000


def get_request(dest: Addr, path: str) -> bytes:
    """The HTTP/1.0 GET the client sends (the origin closes after the response)."""
    return f"GET {path} HTTP/1.0\r\nHost: {dest[0]}\r\n\r\n".encode()


def parse_head(head: bytes) -> int:
    """The Content-Length of a 200 response head (without the blank line).

    LoadError for any other status, a missing or bad Content-Length.
    """
    lines = head.split(b"\r\n")
    status = lines[0].split(b" ")
    if len(status) < 2 or not status[0].startswith(b"HTTP/") or status[1] != b"200":
        raise LoadError(f"status line {lines[0][:60]!r}")
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"content-length":
            try:
                length = int(value.strip())
            except ValueError as exc:
                raise LoadError(f"bad Content-Length {value[:30]!r}") from exc
            if length < 0:
                raise LoadError("negative Content-Length")
            return length
    raise LoadError("no Content-Length")


@dataclass(frozen=True)
class ObjectSpec:
    """One object of experiment 1: its size, URL path and counted requests."""

    size: int
    path: str
    repeats: int


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise LoadError("the proxy closed during the handshake")
        data += chunk
    return data


def _socks_handshake(sock: socket.socket, dest: Addr) -> None:
    """RFC 1928: no-authentication method, then CONNECT to ``dest``."""
    sock.sendall(b"\x05\x01\x00")
    if _recv_exact(sock, 2) != b"\x05\x00":
        raise LoadError("the proxy refused the no-authentication method")
    sock.sendall(socks_request(*dest))
    head = _recv_exact(sock, 4)
    if head[0] != 5 or head[1] != 0:
        raise LoadError(f"the proxy answered {head[1]:#04x}")
    rest = {1: 4, 4: 16}.get(head[3])
    if rest is None:
        raise LoadError(f"reply address type {head[3]}")
    _recv_exact(sock, rest + 2)


def _read_response(sock: socket.socket, expect: int, buf: memoryview, deadline: float) -> None:
    """Read the head and exactly ``expect`` body bytes (the last byte ends the clock)."""
    data = b""
    while (end := data.find(b"\r\n\r\n")) < 0:
        if len(data) > MAX_HEAD:
            raise LoadError("response head too long")
        chunk = sock.recv(READ_CHUNK)
        if not chunk:
            raise LoadError("closed before the end of the head")
        data += chunk
    length = parse_head(data[:end])
    if length != expect:
        raise LoadError(f"Content-Length {length}, expected {expect}")
    got = len(data) - end - 4
    while got < length:
        if time.perf_counter() > deadline:
            raise TimeoutError("request deadline")
        n = sock.recv_into(buf)
        if n == 0:
            raise LoadError(f"closed after {got} of {length} body bytes")
        got += n
    if got != length:
        raise LoadError(f"{got} body bytes, expected {length}")


def fetch(dest: Addr, proxy: Addr | None, path: str, expect: int, timeout: float,
          buf: memoryview) -> tuple[float, float, float]:
    """One checked GET; (connect, response, total) in seconds."""
    t0 = time.perf_counter()
    sock = socket.create_connection(proxy or dest, timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if proxy is not None:
            _socks_handshake(sock, dest)
        t1 = time.perf_counter()
        sock.sendall(get_request(dest, path))
        _read_response(sock, expect, buf, t0 + timeout)
        t2 = time.perf_counter()
    finally:
        sock.close()
    return t1 - t0, t2 - t1, t2 - t0


def run_sizes(dest: Addr, proxy: Addr | None, objects: list[ObjectSpec], warmup: int,
              timeout: float, deadline: float) -> None:
    """Experiment 1 (see the module docstring)."""
    buf = memoryview(bytearray(READ_CHUNK))
    for obj in objects:
        for i in range(warmup + obj.repeats):
            if time.monotonic() > deadline:
                emit({"kind": "error", "size": obj.size, "error": "deadline"})
                return
            try:
                connect, response, total = fetch(dest, proxy, obj.path, obj.size, timeout, buf)
            except (OSError, LoadError) as exc:
                emit({"kind": "error", "size": obj.size,
                      "error": f"{type(exc).__name__}: {str(exc)[:80]}"})
                continue
            if i >= warmup:
                emit({"kind": "sample", "size": obj.size, "connect": connect,
                      "response": response, "total": total})


async def async_fetch(dest: Addr, proxy: Addr | None, path: str, expect: int
                      ) -> tuple[float, float]:
    """One checked GET on the event loop; (response, total) in seconds."""
    t0 = time.perf_counter()
    if proxy is not None:
        reader, writer = await socks_connect(proxy, dest)
    else:
        reader, writer = await asyncio.open_connection(*dest)
    try:
        t1 = time.perf_counter()
        writer.write(get_request(dest, path))
        head = await reader.readuntil(b"\r\n\r\n")
        length = parse_head(head[:-4])
        if length != expect:
            raise LoadError(f"Content-Length {length}, expected {expect}")
        got = 0
        while got < length:
            chunk = await reader.read(READ_CHUNK)
            if not chunk:
                raise LoadError(f"closed after {got} of {length} body bytes")
            got += len(chunk)
        if got != length:
            raise LoadError(f"{got} body bytes, expected {length}")
        t2 = time.perf_counter()
    finally:
        writer.transport.abort()
    return t2 - t1, t2 - t0


async def load_run(dest: Addr, proxy: Addr | None, path: str, expect: int, concurrency: int,
                   count: int, seconds: float, timeout: float) -> dict[str, object]:
    """One run of ``concurrency`` workers, at most ``count`` requests and ``seconds``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    stop_at = start + seconds
    issued = 0
    totals: list[float] = []
    responses: list[float] = []
    kinds: Counter[str] = Counter()

    async def worker() -> None:
        nonlocal issued
        while issued < count and loop.time() < stop_at:
            issued += 1
            try:
                async with asyncio.timeout(timeout):
                    response, total = await async_fetch(dest, proxy, path, expect)
            except (OSError, LoadError, TimeoutError, asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError) as exc:
                kinds[f"{type(exc).__name__}: {str(exc)[:60]}"] += 1
                continue
            responses.append(response)
            totals.append(total)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"kind": "run", "concurrency": concurrency, "ok": len(totals),
            "errors": sum(kinds.values()), "seconds": loop.time() - start,
            "total": latency_summary(totals), "response": latency_summary(responses),
            "error_kinds": dict(kinds)}


async def run_load(dest: Addr, proxy: Addr | None, path: str, expect: int,
                   levels: list[tuple[int, int, float]], repeats: int, timeout: float,
                   deadline: float) -> None:
    """Experiment 2 (see the module docstring)."""
    for concurrency, count, seconds in levels:
        for _ in range(repeats):
            left = deadline - time.monotonic()
            if left <= 0:
                emit({"kind": "error", "size": expect, "error": "deadline"})
                return
            emit(await load_run(dest, proxy, path, expect, concurrency, count,
                                min(seconds, left), timeout))


def parse_object(text: str) -> ObjectSpec:
    """``SIZE:PATH:REPEATS`` (sizes in bytes) as an ObjectSpec; ArgumentTypeError else."""
    parts = text.split(":")
    try:
        size, repeats = int(parts[0]), int(parts[2])
    except (IndexError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"not SIZE:PATH:REPEATS: {text!r}") from exc
    if len(parts) != 3 or not parts[1].startswith("/") or size < 0:
        raise argparse.ArgumentTypeError(f"not SIZE:PATH:REPEATS: {text!r}")
    if not 1 <= repeats <= MAX_REPEATS:
        raise argparse.ArgumentTypeError(f"repeats must be 1..{MAX_REPEATS}")
    return ObjectSpec(size, parts[1], repeats)


def parse_level(text: str) -> tuple[int, int, float]:
    """``CONCURRENCY:COUNT:SECONDS`` within the bounds; ArgumentTypeError else."""
    parts = text.split(":")
    try:
        concurrency, count, seconds = int(parts[0]), int(parts[1]), float(parts[2])
    except (IndexError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"not CONCURRENCY:COUNT:SECONDS: {text!r}") from exc
    if len(parts) != 3 or not 1 <= concurrency <= MAX_CONCURRENCY:
        raise argparse.ArgumentTypeError(f"concurrency must be 1..{MAX_CONCURRENCY}: {text!r}")
    if not 1 <= count <= MAX_LEVEL_COUNT or not 0 < seconds <= 3600:
        raise argparse.ArgumentTypeError(f"count or seconds out of range: {text!r}")
    return concurrency, count, seconds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (bounds checked)."""
    p = argparse.ArgumentParser(prog="thesis_client")
    p.add_argument("mode", choices=("sizes", "load"))
    p.add_argument("--dest", type=address, required=True)
    p.add_argument("--proxy", type=address, default=None)
    p.add_argument("--object", type=parse_object, action="append", default=[])
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--path", default="/")
    p.add_argument("--expect", type=int, default=0)
    p.add_argument("--level", type=parse_level, action="append", default=[])
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--deadline", type=float, default=600.0, help="seconds for the whole mode")
    args = p.parse_args(argv)
    if len(args.object) > MAX_OBJECTS or len(args.level) > MAX_OBJECTS:
        p.error(f"at most {MAX_OBJECTS} objects or levels")
    if not 0 <= args.warmup <= MAX_REPEATS or not 1 <= args.repeats <= MAX_REPEATS:
        p.error(f"--warmup and --repeats must be within 0..{MAX_REPEATS}")
    if not 0 < args.timeout <= 3600 or not 0 < args.deadline <= 24 * 3600:
        p.error("--timeout or --deadline out of range")
    if args.mode == "sizes" and not args.object:
        p.error("sizes needs at least one --object")
    if args.mode == "load" and not args.level:
        p.error("load needs at least one --level")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run one mode; results go to stdout as JSON lines, then ``{"kind": "done"}``."""
    args = parse_args(argv)
    deadline = time.monotonic() + args.deadline
    if args.mode == "sizes":
        run_sizes(args.dest, args.proxy, args.object, args.warmup, args.timeout, deadline)
    else:
        import uvloop

        raise_nofile(2 * max(c for c, _, _ in args.level) + 256)
        uvloop.run(run_load(args.dest, args.proxy, args.path, args.expect, args.level,
                            args.repeats, args.timeout, deadline))
    emit({"kind": "done"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
