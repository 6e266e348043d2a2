"""The client side of `bench splice` load tests, run inside the client namespace.

``python -m tools.bench.splice_load rps --proxy A:P --dest A:P --path /x --expect N``
    ``--concurrency`` workers each loop: connect to the SOCKS5 proxy, greet it,
    ask it to CONNECT to ``--dest``, send an HTTP/1.0 GET for ``--path`` and
    read to EOF; the response must be 200 with a body of exactly ``--expect``
    bytes. Stops after ``--count`` requests or ``--duration`` seconds, whichever
    comes first, and prints one JSON object: ok, errors, seconds, rps.

``python -m tools.bench.splice_load hold --proxy A:P --dest A:P --count N``
    Opens N SOCKS5 connections to ``--dest`` (``--concurrency`` handshakes at
    a time), prints ``{"held": k, "failed": f}`` once they are all up, waits
    for a line on stdin (at most ``--duration`` seconds), then drops them.

Every wait is bounded by a per-step timeout and by the overall deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import socket
import struct
import sys
import time
from collections import Counter
from dataclasses import dataclass

from tools.bench.uvsocks import parse_listen, raise_nofile

STEP_TIMEOUT = 10.0
MAX_RESPONSE = 1 << 20
MAX_COUNT = 1_000_000
MAX_CONCURRENCY = 4096


class LoadError(RuntimeError):
    """One request failed: the proxy refused, the response was wrong, or it timed out."""


class OkRate:
    """The ``rps`` of a load run's result that has ``ok`` requests in ``seconds``."""

    ok: int
    seconds: float

    @property
    def rps(self) -> float:
        """Successful requests per second."""
        return self.ok / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class RpsResult(OkRate):
    """Outcome of an ``rps`` run."""

    ok: int
    errors: int
    seconds: float
    error_kinds: dict[str, int]


def socks_request(host: str, port: int) -> bytes:
    """A SOCKS5 CONNECT request (RFC 1928 §4) for an IPv4 address."""
    return b"\x05\x01\x00\x01" + ipaddress.IPv4Address(host).packed + struct.pack("!H", port)


def check_http_response(data: bytes, expect: int) -> None:
    """Raise LoadError unless ``data`` is a 200 response whose body has ``expect`` bytes."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise LoadError("no end of the response head")
    status = head.split(b"\r\n", 1)[0].split(b" ")
    if len(status) < 2 or status[1] != b"200":
        raise LoadError(f"status line {head[:60]!r}")
    if len(body) != expect:
        raise LoadError(f"body of {len(body)} bytes, expected {expect}")


async def socks_connect(proxy: tuple[str, int], dest: tuple[str, int]
                        ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a connection through the proxy to ``dest`` (method negotiation, CONNECT)."""
    reader, writer = await asyncio.open_connection(*proxy)
    try:
        writer.write(b"\x05\x01\x00")
        if await reader.readexactly(2) != b"\x05\x00":
            raise LoadError("the proxy refused the no-authentication method")
        writer.write(socks_request(*dest))
        head = await reader.readexactly(4)
        if head[0] != 5 or head[1] != 0:
            raise LoadError(f"the proxy answered {head[1]:#04x}")
        rest = {1: 4, 4: 16}.get(head[3])
        if rest is None:
            raise LoadError(f"reply address type {head[3]}")
        await reader.readexactly(rest + 2)
    except BaseException:
        writer.transport.abort()
        raise
    return reader, writer


async def one_get(proxy: tuple[str, int], dest: tuple[str, int], path: str, expect: int) -> None:
    """One HTTP/1.0 GET through the proxy, checked."""
    reader, writer = await socks_connect(proxy, dest)
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {dest[0]}\r\n\r\n".encode())
        data = await reader.read(MAX_RESPONSE)
        while chunk := await reader.read(MAX_RESPONSE):
            data += chunk
            if len(data) > MAX_RESPONSE:
                raise LoadError("response too long")
        check_http_response(data, expect)
    finally:
        writer.close()


async def run_rps(proxy: tuple[str, int], dest: tuple[str, int], path: str, expect: int,
                  concurrency: int, count: int, duration: float) -> RpsResult:
    """Run the request loop; see the module docstring."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + duration
    issued = 0
    ok = 0
    kinds: Counter[str] = Counter()

    async def worker() -> None:
        nonlocal issued, ok
        while issued < count and loop.time() < deadline:
            issued += 1
            try:
                async with asyncio.timeout(STEP_TIMEOUT):
                    await one_get(proxy, dest, path, expect)
                ok += 1
            except (OSError, LoadError, TimeoutError, asyncio.IncompleteReadError) as exc:
                kinds[type(exc).__name__ + ": " + str(exc)[:60]] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return RpsResult(ok, sum(kinds.values()), loop.time() - start, dict(kinds))


async def run_hold(proxy: tuple[str, int], dest: tuple[str, int], count: int,
                   concurrency: int, duration: float) -> dict[str, int]:
    """Open ``count`` connections, report, hold them until a stdin line or the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration
    held: list[asyncio.StreamWriter] = []
    failed: Counter[str] = Counter()
    gate = asyncio.Semaphore(concurrency)

    async def open_one() -> None:
        async with gate:
            if loop.time() >= deadline:
                failed["deadline"] += 1
                return
            try:
                async with asyncio.timeout(STEP_TIMEOUT):
                    _reader, writer = await socks_connect(proxy, dest)
                held.append(writer)
            except (OSError, LoadError, TimeoutError, asyncio.IncompleteReadError) as exc:
                failed[type(exc).__name__] += 1

    await asyncio.gather(*(open_one() for _ in range(count)))
    report = {"held": len(held), "failed": sum(failed.values()), **failed}
    print(json.dumps(report), flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        async with asyncio.timeout(max(0.0, deadline - loop.time())):
            await reader.readline()
    except TimeoutError:
        pass
    for writer in held:
        sock = writer.get_extra_info("socket")
        if sock is not None:  # RST: no FIN handshakes to wait for on the way out
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
    return report


def _addr(text: str) -> tuple[str, int]:
    try:
        return parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (bounds checked)."""
    p = argparse.ArgumentParser(prog="splice_load")
    p.add_argument("mode", choices=("rps", "hold"))
    p.add_argument("--proxy", type=_addr, required=True)
    p.add_argument("--dest", type=_addr, required=True)
    p.add_argument("--path", default="/")
    p.add_argument("--expect", type=int, default=0)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--duration", type=float, default=10.0)
    args = p.parse_args(argv)
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        p.error(f"--concurrency must be 1..{MAX_CONCURRENCY}")
    if not 1 <= args.count <= MAX_COUNT:
        p.error(f"--count must be 1..{MAX_COUNT}")
    if not 0 < args.duration <= 3600:
        p.error("--duration must be in (0, 3600]")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run one mode; the result goes to stdout as JSON."""
    args = parse_args(argv)
    import uvloop

    raise_nofile(args.count + args.concurrency + 256)
    if args.mode == "rps":
        t0 = time.monotonic()
        res = uvloop.run(run_rps(args.proxy, args.dest, args.path, args.expect,
                                 args.concurrency, args.count, args.duration))
        print(json.dumps({"ok": res.ok, "errors": res.errors, "seconds": res.seconds,
                          "rps": res.rps, "wall": time.monotonic() - t0,
                          "error_kinds": res.error_kinds}), flush=True)
        return 0
    report = uvloop.run(run_hold(args.proxy, args.dest, args.count, args.concurrency,
                                 args.duration))
    return 0 if report["held"] else 1


if __name__ == "__main__":
    sys.exit(main())
