"""Subprocess helpers for the benchmarks: bounded commands, namespace exec, curl.

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
from dataclasses import dataclass
from types import FrameType
from typing import Any

from tools.bench.harness import BenchTimeout

# Seconds a plain administrative command (ip, sysctl, ss) may take.
ADMIN_TIMEOUT = 20.0
# Bytes one JSON line of a benchmark client may take.
MAX_LINE = 1 << 20
DEFERRED_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class CommandError(RuntimeError):
    """A command exited non-zero, could not start, or overran its timeout."""


class TransferError(RuntimeError):
    """A download did not deliver exactly the bytes it should have."""


def ns_cmd(netns: str, *cmd: str) -> list[str]:
    """The argv that runs ``cmd`` inside network namespace ``netns``."""
    return ["ip", "netns", "exec", netns, *cmd]


def run(cmd: Sequence[str], timeout: float = ADMIN_TIMEOUT, check: bool = True) -> str:
    """Run ``cmd`` to completion within ``timeout`` seconds; return its stdout.

    With ``check`` a non-zero exit raises :class:`CommandError`; a timeout
    always does (the child is killed first by subprocess.run).
    """
    try:
        done = subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandError(f"{' '.join(cmd)}: timed out after {timeout:g}s") from exc
    except OSError as exc:
        raise CommandError(f"{' '.join(cmd)}: {exc}") from exc
    if check and done.returncode != 0:
        raise CommandError(
            f"{' '.join(cmd)}: exit {done.returncode}: {done.stderr.strip() or done.stdout.strip()}"
        )
    return done.stdout


def netns_exists(netns: str) -> bool:
    """Whether a named network namespace exists (as listed by ``ip netns``)."""
    return os.path.exists(os.path.join("/run/netns", netns))


def stop_process(proc: subprocess.Popen[bytes], grace: float = 5.0) -> int | None:
    """Stop a child started with ``start_new_session=True``; return its exit code.

    SIGTERM first (nginx and the router both shut down cleanly on it), then,
    after ``grace`` seconds, SIGKILL to the child's own process group so that
    workers it forked cannot outlive it. Only this child's group is signalled.
    """
    if proc.poll() is not None:
        return proc.returncode
    try:
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        return proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        return None


@dataclass(frozen=True)
class Download:
    """What curl reported for one download: bytes received and seconds taken."""

    size: int
    seconds: float


def parse_curl_output(text: str) -> Download:
    """Parse curl's ``-w '%{size_download} %{time_total}'`` output.

    Raises :class:`TransferError` on anything else (curl's own message ends
    up there when the transfer broke before the write-out).
    """
    parts = text.split()
    if len(parts) != 2:
        raise TransferError(f"unexpected curl output: {text!r}")
    try:
        size = int(float(parts[0]))
        seconds = float(parts[1])
    except ValueError as exc:
        raise TransferError(f"unexpected curl output: {text!r}") from exc
    if size < 0 or seconds <= 0:
        raise TransferError(f"implausible curl output: {text!r}")
    return Download(size, seconds)


def curl_download(netns: str, url: str, timeout: float, output: str = "/dev/null") -> Download:
    """Download ``url`` with curl inside ``netns`` and report size and duration.

    curl's own ``--max-time`` bounds the transfer; the subprocess timeout is a
    little longer as a second fence. Proxies from the environment are ignored:
    benchmark traffic must stay inside the namespaces.
    """
    cmd = ns_cmd(
        netns, "curl", "-sS", "--fail", "--http1.1", "--noproxy", "*",
        "--max-time", f"{timeout:g}", "-o", output,
        "-w", "%{size_download} %{time_total}", url,
    )  # fmt: skip
    try:
        out = run(cmd, timeout=timeout + 10.0)
    except CommandError as exc:
        raise TransferError(str(exc)) from exc
    return parse_curl_output(out)


def wait_until(probe: Sequence[str], timeout: float, interval: float = 0.2) -> bool:
    """Run ``probe`` until it exits 0, at most ``timeout`` seconds; True if it did.

    Used for readiness (ping through a router, a listening port); the pause
    between tries is a poll interval, not synchronisation.
    """
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        try:
            run(probe, timeout=min(left, 5.0) + 1.0)
            return True
        except CommandError:
            pass
        if deadline - time.monotonic() <= interval:
            return False
        time.sleep(interval)


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
