"""The client side of `tapsplice bench tcp`, run inside the client namespace.

``python -m tools.bench.tcp_client MODE HOST PORT N [--timeout SECONDS]``

* ``send``  — connect, send N bytes (sendall of one preallocated 1 MiB buffer),
  half-close, wait for the server's close; the time runs from connect to the
  close completing. The peer's count is the kernel's ``tcpi_bytes_acked``.
* ``recv``  — connect, read exactly N bytes into a preallocated buffer, close.
* ``conns`` — N connections one after another: connect, half-close, wait for
  the server's close (so each one was really accepted and closed).
* ``hold``  — open N connections and keep them; print when they are all
  established, wait for a line on stdin, check they are still established,
  then drop them (RST: the process being measured is about to go anyway).

Each mode prints one JSON object per report line on stdout and exits 0; a
short or broken transfer exits 1 with the reason on stderr. Only the standard
library is used, and every loop is bounded by the count and by ``--timeout``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import socket
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

CHUNK = 1 << 20
MAX_COUNT = 100_000
MAX_SIZE = 1 << 40
# struct tcp_info (linux/tcp.h): byte offsets of the fields read here.
_TCPI_STATE = 0
_TCPI_TOTAL_RETRANS = 100
_TCPI_BYTES_ACKED = 120
_TCPI_LEN = 136
TCP_ESTABLISHED = 1
# Slack on top of the held sockets for stdio and the interpreter's own files.
_FD_SLACK = 64


class ClientError(RuntimeError):
    """A transfer came out short, the peer misbehaved, or the deadline passed."""


@dataclass(frozen=True)
class TcpInfo:
    """The few fields of the kernel's struct tcp_info the benchmark reads."""

    state: int
    total_retrans: int
    bytes_acked: int


def tcp_info(sock: socket.socket) -> TcpInfo:
    """TCP_INFO of ``sock``: state, retransmissions, bytes acknowledged by the peer."""
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCPI_LEN)
    if len(raw) < _TCPI_LEN:
        raise ClientError(f"TCP_INFO too short ({len(raw)} bytes): kernel before 4.1?")
    (retrans,) = struct.unpack_from("I", raw, _TCPI_TOTAL_RETRANS)
    (acked,) = struct.unpack_from("Q", raw, _TCPI_BYTES_ACKED)
    return TcpInfo(raw[_TCPI_STATE], retrans, acked)


class Deadline:
    """A fixed point in time; ``check`` raises once it has passed."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds remaining (never below a small positive floor, for timeouts)."""
        return max(0.001, self.end - time.monotonic())

    def check(self, what: str) -> None:
        """Raise :class:`ClientError` if the deadline has passed."""
        if time.monotonic() > self.end:
            raise ClientError(f"deadline passed during {what}")


def _connect(host: str, port: int, deadline: Deadline) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=deadline.left())
    sock.settimeout(deadline.left())
    return sock


def _wait_close(sock: socket.socket, deadline: Deadline) -> int:
    """Read until the peer's FIN; return how many bytes it sent first."""
    extra = 0
    while True:
        deadline.check("waiting for the server's close")
        data = sock.recv(65536)
        if not data:
            return extra
        extra += len(data)
        if extra > CHUNK:
            raise ClientError("the server sends data instead of closing")


def bulk_send(host: str, port: int, size: int, deadline: Deadline) -> dict[str, Any]:
    """Send ``size`` bytes and close; report seconds and what the peer acknowledged."""
    view = memoryview(bytearray(b"\x5a" * CHUNK))
    start = time.perf_counter()
    sock = _connect(host, port, deadline)
    try:
        left = size
        while left:
            deadline.check("sending")
            n = min(left, CHUNK)
            sock.sendall(view[:n])
            left -= n
        sock.shutdown(socket.SHUT_WR)
        extra = _wait_close(sock, deadline)
        info = tcp_info(sock)
    finally:
        sock.close()
    seconds = time.perf_counter() - start
    # bytes_acked counts sequence space: the SYN and the FIN take one number each.
    acked = info.bytes_acked - 2
    if acked != size:
        raise ClientError(f"sent {size} bytes, the peer acknowledged {acked}")
    return {"bytes": size, "peer_bytes": acked, "seconds": seconds,
            "retransmits": info.total_retrans, "unexpected_bytes": extra}  # fmt: skip


def bulk_recv(host: str, port: int, size: int, deadline: Deadline) -> dict[str, Any]:
    """Read exactly ``size`` bytes, then close; report seconds."""
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    start = time.perf_counter()
    sock = _connect(host, port, deadline)
    got = 0
    try:
        while got < size:
            deadline.check("receiving")
            n = sock.recv_into(view, min(CHUNK, size - got))
            if n == 0:
                break
            got += n
        info = tcp_info(sock)
    finally:
        # Closing with unread data resets the connection: the sender stops at once.
        sock.close()
    seconds = time.perf_counter() - start
    if got != size:
        raise ClientError(f"received {got} bytes of {size} before the server closed")
    return {"bytes": size, "received": got, "seconds": seconds,
            "retransmits": info.total_retrans}  # fmt: skip


def connections(host: str, port: int, count: int, deadline: Deadline) -> dict[str, Any]:
    """``count`` connections in a row, each closed by both sides; report seconds."""
    start = time.perf_counter()
    for i in range(count):
        deadline.check(f"connection {i}")
        sock = _connect(host, port, deadline)
        try:
            sock.shutdown(socket.SHUT_WR)
            if _wait_close(sock, deadline):
                raise ClientError(f"connection {i}: the server sent data")
        finally:
            sock.close()
    return {"connections": count, "seconds": time.perf_counter() - start}


def raise_nofile(need: int) -> int:
    """Raise RLIMIT_NOFILE so ``need`` more descriptors fit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need + _FD_SLACK
    if soft >= want:
        return soft
    if hard != resource.RLIM_INFINITY and hard < want:
        hard = want  # only root may raise the hard limit; ValueError/OSError otherwise
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


def _still_established(sock: socket.socket) -> bool:
    """Established from our side, and no FIN, RST or data from the peer since."""
    if tcp_info(sock).state != TCP_ESTABLISHED:
        return False
    # Non-blocking: with a timeout set, recv would first wait for readability.
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def _emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def _wait_for_line(deadline: Deadline) -> bool:
    """Wait for a line (or EOF) on stdin until the deadline; True if one came."""
    ready, _, _ = select.select([sys.stdin], [], [], deadline.left())
    if ready:
        os.read(sys.stdin.fileno(), 64)  # bounded: the content does not matter
    return bool(ready)


def hold(host: str, port: int, count: int, deadline: Deadline) -> dict[str, Any]:
    """Open ``count`` connections, report, wait for stdin, check them again, drop them."""
    raise_nofile(count)
    socks: list[socket.socket] = []
    start = time.perf_counter()
    try:
        for i in range(count):
            deadline.check(f"opening connection {i}")
            sock = _connect(host, port, deadline)
            socks.append(sock)
            # RST on close: nothing lingers in FIN_WAIT/TIME_WAIT afterwards.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        established = sum(tcp_info(s).state == TCP_ESTABLISHED for s in socks)
        _emit({"opened": len(socks), "established": established,
               "seconds": time.perf_counter() - start})  # fmt: skip
        if not _wait_for_line(deadline):
            raise ClientError("no release line before the deadline")
        still = sum(_still_established(s) for s in socks)
    finally:
        for s in socks:
            s.close()
    return {"held": count, "still_established": still}


MODES = {"send": bulk_send, "recv": bulk_recv, "conns": connections, "hold": hold}


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from exc
    if not 1 <= n <= MAX_SIZE:
        raise argparse.ArgumentTypeError(f"must be 1..{MAX_SIZE}")
    return n


def _port(text: str) -> int:
    n = _count(text)
    if n > 65535:
        raise argparse.ArgumentTypeError("port must be 1..65535")
    return n


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError("timeout must be in (0, 3600]")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The client's argument parser."""
    p = argparse.ArgumentParser(prog="tcp_client", description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=sorted(MODES))
    p.add_argument("host")
    p.add_argument("port", type=_port)
    p.add_argument("n", type=_count, help="bytes (send, recv) or connections (conns, hold)")
    p.add_argument("--timeout", type=_timeout, default=300.0,
                   help="limit for the whole run in seconds (default 300)")  # fmt: skip
    return p


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse and check the command line (counts of connections are bounded too)."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    if args.mode in ("conns", "hold") and args.n > MAX_COUNT:
        parser.error(f"at most {MAX_COUNT} connections")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run one mode; print its JSON report; 0 on success, 1 on a failed transfer."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        result = MODES[args.mode](args.host, args.port, args.n, Deadline(args.timeout))
    except (ClientError, OSError, ValueError) as exc:
        print(f"tcp_client {args.mode}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    _emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
