"""Kernel-socket servers of `bench splice`, run inside the server namespace.

``python -m tools.bench.splice_servers sink --listen ADDR:PORT``
    An HTTP upload sink: for each request it reads the headers, then exactly
    Content-Length body bytes into one preallocated buffer (discarded), and
    answers ``200`` with the count it received as the body, so the benchmark
    can check the size end to end. One thread per connection, at most
    ``--max-connections`` at once.

``python -m tools.bench.splice_servers hold --listen ADDR:PORT --max N``
    Accepts up to N connections and keeps them open and idle (a selector
    watches them only to close the ones the peer closes); any beyond N are
    closed at once.

Both print ``ready`` when listening and stop at SIGTERM/SIGINT, printing their
counters as JSON on stderr. Only the standard library is used.
"""

from __future__ import annotations

import argparse
import json
import selectors
import signal
import socket
import sys
import threading
from collections import Counter
from types import FrameType

from tools.bench.uvsocks import parse_listen, raise_nofile

BUF_SIZE = 4 << 20
MAX_HEADER = 16 << 10
MAX_BODY = 1 << 40
IDLE_TIMEOUT = 120.0
MAX_HOLD = 100_000


class HttpRequestError(ValueError):
    """The request head is malformed, too long, or lacks a usable Content-Length."""


def parse_request_head(head: bytes) -> int:
    """The Content-Length of an HTTP/1.x request head (without the blank line)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise HttpRequestError(f"bad request line: {lines[0][:80]!r}")
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"content-length":
            try:
                length = int(value.strip())
            except ValueError as exc:
                raise HttpRequestError(f"bad Content-Length: {value[:40]!r}") from exc
            if not 0 <= length <= MAX_BODY:
                raise HttpRequestError(f"Content-Length out of range: {length}")
            return length
    raise HttpRequestError("no Content-Length (chunked uploads are not supported)")


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """Read up to the end of the request head; (head, body bytes already read)."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEADER:
            raise HttpRequestError("request head too long")
        chunk = sock.recv(MAX_HEADER)
        if not chunk:
            raise HttpRequestError("connection closed in the request head")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _sink_one(sock: socket.socket, counters: Counter[str], buf: bytearray) -> None:
    """Serve one upload on ``sock``: read the body, answer with its length."""
    sock.settimeout(IDLE_TIMEOUT)
    try:
        head, rest = read_head(sock)
        length = parse_request_head(head)
    except HttpRequestError as exc:
        counters["bad_request"] += 1
        msg = str(exc).encode()
        sock.sendall(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: "
                     + str(len(msg)).encode() + b"\r\n\r\n" + msg)
        return
    got = min(len(rest), length)
    view = memoryview(buf)
    while got < length:
        n = sock.recv_into(view, min(len(view), length - got))
        if n == 0:
            break
        got += n
    counters["uploads"] += 1
    counters["bytes"] += got
    body = f"{got}\n".encode()
    sock.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: text/plain\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def serve_sink(listener: socket.socket, stop: threading.Event, max_connections: int,
               counters: Counter[str]) -> None:
    """Accept uploads on ``listener`` until ``stop`` is set (one thread each, bounded)."""
    slots = threading.BoundedSemaphore(max_connections)
    listener.settimeout(0.5)  # the accept loop notices ``stop`` within this time

    def worker(sock: socket.socket) -> None:
        try:
            with sock:
                _sink_one(sock, counters, bytearray(BUF_SIZE))
        except OSError:
            counters["errors"] += 1
        finally:
            slots.release()

    while not stop.is_set():
        try:
            sock, _addr = listener.accept()
        except TimeoutError:
            continue
        if not slots.acquire(blocking=False):
            counters["over_limit"] += 1
            sock.close()
            continue
        threading.Thread(target=worker, args=(sock,), daemon=True).start()


def serve_hold(listener: socket.socket, stop: threading.Event, limit: int,
               counters: Counter[str]) -> None:
    """Accept and keep up to ``limit`` idle connections until ``stop`` is set."""
    sel = selectors.DefaultSelector()
    listener.setblocking(False)
    sel.register(listener, selectors.EVENT_READ)
    held = 0
    try:
        while not stop.is_set():
            for key, _ev in sel.select(timeout=0.5):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is listener:
                    held += _accept_some(listener, sel, limit - held, counters)
                    continue
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                if not data:  # the peer closed (or reset): let it go
                    sel.unregister(sock)
                    sock.close()
                    held -= 1
                    counters["closed_by_peer"] += 1
            counters["held_max"] = max(counters["held_max"], held)
    finally:
        for key in list(sel.get_map().values()):
            if key.fileobj is not listener:
                key.fileobj.close()  # type: ignore[union-attr]
        sel.close()


def _accept_some(listener: socket.socket, sel: selectors.BaseSelector, room: int,
                 counters: Counter[str]) -> int:
    """Accept what is waiting (at most 256 per call); return how many are now held."""
    added = 0
    for _ in range(256):
        try:
            sock, _addr = listener.accept()
        except (BlockingIOError, InterruptedError):
            break
        counters["accepted"] += 1
        if added >= room:
            counters["over_limit"] += 1
            sock.close()
            continue
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ)
        added += 1
    return added


def main(argv: list[str] | None = None) -> int:
    """Run the sink or the holder until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="splice_servers")
    parser.add_argument("mode", choices=("sink", "hold"))
    parser.add_argument("--listen", required=True, help="ADDR:PORT")
    parser.add_argument("--max", type=int, default=64,
                        help="connections at once (sink) or held (hold)")
    args = parser.parse_args(argv)
    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        parser.error(str(exc))
    if not 1 <= args.max <= MAX_HOLD:
        parser.error(f"--max must be 1..{MAX_HOLD}")
    raise_nofile(args.max + 256)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    listener = socket.create_server((host, port), backlog=4096, reuse_port=False)
    counters: Counter[str] = Counter()
    print("ready", flush=True)
    with listener:
        if args.mode == "sink":
            serve_sink(listener, stop, args.max, counters)
        else:
            serve_hold(listener, stop, args.max, counters)
    print(json.dumps(dict(counters)), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
