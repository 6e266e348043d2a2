"""Process helpers of the lab that the demo and the benchmarks share: bounded
commands, namespace exec, curl downloads, stopping children, readiness waits.

Every command here runs with a timeout, so no step can hang; a command that fails or
times out raises :class:`CommandError` with its output.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Seconds a plain administrative command (ip, sysctl, ss) may take.
ADMIN_TIMEOUT = 20.0


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


#: Seconds a started stack or proxy may take to print "ready".
READY_TIMEOUT = 30.0


def wait_ready(proc: subprocess.Popen[bytes], log: Path, timeout: float = READY_TIMEOUT) -> None:
    """Wait (bounded) until the process printed ``ready``; CommandError if it died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CommandError(f"exited with {proc.returncode}: {tail(log)}")
        if b"ready" in log.read_bytes():
            return
        time.sleep(0.05)  # poll interval while the process starts
    raise CommandError(f"not ready within {timeout:g}s: {tail(log)}")


def tail(log: Path, limit: int = 1500) -> str:
    """The end of a log file (empty if absent)."""
    try:
        return log.read_text(errors="replace")[-limit:].strip()
    except OSError:
        return ""
