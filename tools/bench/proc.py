"""Subprocess helpers for the benchmarks: signals, JSON-line clients; the bounded
commands, namespace exec and curl they share with the demo come from apps/labproc.py
(re-exported here).

Every command here runs with a timeout, so no benchmark step can hang; a
command that fails or times out raises :class:`CommandError` with its output.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any

from apps.labproc import (  # noqa: F401 - re-exported: the benchmarks' helpers
    ADMIN_TIMEOUT,
    CommandError,
    Download,
    TransferError,
    curl_download,
    netns_exists,
    ns_cmd,
    parse_curl_output,
    run,
    stop_process,
    wait_until,
)
from tools.bench.harness import BenchTimeout

# Bytes one JSON line of a benchmark client may take.
MAX_LINE = 1 << 20
DEFERRED_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM becomes KeyboardInterrupt, so every cleanup in a finally still runs."""
    old = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back while a lab, a route or the client starts or stops.

    An interruption in the middle of a teardown would skip the steps after it
    (an nginx left running in a removed namespace was seen that way), and one
    inside a spawn would lose the pid of the child. The Python handlers are
    swapped for one that only notes the signal (a signal mask would not do:
    rich's refresh thread would take the signal instead); once the block ends
    the signal is raised again. Starting and stopping are bounded by their own
    timeouts. Call from the main thread only.
    """
    caught: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    old = {sig: signal.signal(sig, note) for sig in DEFERRED_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if caught:
            signal.raise_signal(caught[0])


def read_json_lines(proc: subprocess.Popen[bytes], deadline: float,
                    clock: Callable[[], float] = time.monotonic,
                    name: str = "the thesis client") -> Iterator[dict[str, Any]]:
    """Yield each JSON object line ``proc`` prints, until EOF; BenchTimeout at ``deadline``.

    Reads the raw descriptor (a buffered reader could hold lines that select()
    does not see). Lines that are not JSON objects are skipped; a line over
    MAX_LINE bytes is a CommandError. ``name`` names the client in errors.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    pending = b""
    while True:
        while (nl := pending.find(b"\n")) >= 0:
            line, pending = pending[:nl], pending[nl + 1:]
            obj = _json_object(line)
            if obj is not None:
                yield obj
        if len(pending) > MAX_LINE:
            raise CommandError(f"{name} printed an over-long line")
        left = deadline - clock()
        if left <= 0:
            raise BenchTimeout(f"{name} overran the deadline")
        ready, _, _ = select.select([fd], [], [], min(left, 5.0))
        if not ready:
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            obj = _json_object(pending)
            if obj is not None:
                yield obj
            return
        pending += chunk


def _json_object(line: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def run_json_client(argv: Sequence[str], on_line: Callable[[dict[str, Any]], None],
                    deadline: float, clock: Callable[[], float], name: str, what: str) -> None:
    """Run a benchmark client, feeding each JSON line to ``on_line`` until ``{"kind": "done"}``.

    ``name`` ("the http client") and ``what`` (the step) go into the errors:
    a CommandError when the client ends without "done", BenchTimeout past
    ``deadline``. The client is stopped and its pipes closed on every way out.
    """
    with signals_deferred():
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
    try:
        for obj in read_json_lines(proc, deadline, clock, name):
            if obj.get("kind") == "done":
                return
            on_line(obj)
        err = proc.stderr.read(4000).decode(errors="replace") if proc.stderr else ""
        raise CommandError(f"{name} stopped early during {what}: {err}")
    finally:
        with signals_deferred():
            stop_process(proc)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
