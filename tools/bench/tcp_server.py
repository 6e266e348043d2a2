"""The kernel baseline's servers for `tapsplice bench tcp`: discard and chargen.

``python -m tools.bench.tcp_server ADDR [--discard-port 9] [--chargen-port 19]
[--lifetime SECONDS]`` runs in the kernel twin lab's server namespace on plain
kernel sockets, one thread per service, one connection at a time:

* discard (RFC 863) reads into a preallocated buffer with ``recv_into`` until
  the client closes, then closes and prints ``{"service": "discard", "bytes": N}``;
* chargen (RFC 864) sends one preallocated block of the pattern in a loop
  until the client closes, then prints ``{"service": "chargen", "bytes": N}``.

It prints ``ready`` once both listen and exits after ``--lifetime`` seconds
or on SIGTERM, whichever comes first.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType

from apps.services import CHARGEN_BLOCK

CHUNK = 1 << 20
BACKLOG = 1024
# How often the accept loops look at the stop flag (seconds).
_POLL = 0.5
_lock = threading.Lock()


def _report(service: str, nbytes: int, error: str = "") -> None:
    record: dict[str, object] = {"service": service, "bytes": nbytes}
    if error:
        record["error"] = error
    with _lock:
        print(json.dumps(record), flush=True)


def discard_one(conn: socket.socket, stop: threading.Event) -> tuple[int, str]:
    """Read until EOF into one preallocated buffer; return (bytes, error)."""
    view = memoryview(bytearray(CHUNK))
    total = 0
    try:
        while not stop.is_set():
            n = conn.recv_into(view)
            if n == 0:
                return total, ""
            total += n
    except OSError as exc:
        return total, type(exc).__name__
    return total, "stopped"


def chargen_one(conn: socket.socket, stop: threading.Event) -> tuple[int, str]:
    """Send the pattern until the client goes away; return (bytes, why it ended)."""
    block = memoryview(CHARGEN_BLOCK)
    total = 0
    try:
        while not stop.is_set():
            conn.sendall(block)
            total += len(block)
    except OSError as exc:
        # The normal end: the client closed (reset or broken pipe).
        return total, "" if isinstance(exc, ConnectionError) else type(exc).__name__
    return total, "stopped"


Handler = Callable[[socket.socket, threading.Event], tuple[int, str]]


def serve(listener: socket.socket, service: str, handler: Handler,
          stop: threading.Event, conn_timeout: float) -> None:  # fmt: skip
    """Accept connections one at a time until ``stop`` is set."""
    listener.settimeout(_POLL)
    while not stop.is_set():
        try:
            conn, _peer = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        with conn:
            conn.settimeout(conn_timeout)
            nbytes, error = handler(conn, stop)
        _report(service, nbytes, error)


def listen(addr: str, port: int) -> socket.socket:
    """A listening TCP socket on ``addr:port``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((addr, port))
    sock.listen(BACKLOG)
    return sock


def build_parser() -> argparse.ArgumentParser:
    """The server's argument parser."""
    p = argparse.ArgumentParser(prog="tcp_server", description=__doc__.splitlines()[0])
    p.add_argument("addr")
    p.add_argument("--discard-port", type=int, default=9)
    p.add_argument("--chargen-port", type=int, default=19)
    p.add_argument("--lifetime", type=float, default=3600.0,
                   help="exit after this many seconds (default 3600)")  # fmt: skip
    p.add_argument("--conn-timeout", type=float, default=300.0,
                   help="idle limit of one connection in seconds (default 300)")  # fmt: skip
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Serve discard and chargen until the lifetime ends or SIGTERM arrives."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    services = (("discard", args.discard_port, discard_one),
                ("chargen", args.chargen_port, chargen_one))  # fmt: skip
    listeners = [listen(args.addr, port) for _name, port, _h in services]
    threads = [threading.Thread(target=serve, args=(lst, name, h, stop, args.conn_timeout),
                                daemon=True)
               for lst, (name, _port, h) in zip(listeners, services, strict=True)]  # fmt: skip
    for t in threads:
        t.start()
    with _lock:
        print("ready", flush=True)
    end = time.monotonic() + args.lifetime
    while not stop.is_set() and time.monotonic() < end:
        stop.wait(_POLL)
    stop.set()
    for lst in listeners:
        lst.close()
    for t in threads:
        t.join(timeout=2 * _POLL + 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
