"""The two sides `tapsplice bench tcp` compares, and how it drives their clients.

* :class:`StackSide` — the stack's lab (apps/lab.py, unique names) with
  ``tapsplice serve --lab`` (echo, discard, chargen on 198.18.0.2);
* :class:`KernelSide` — the kernel twin lab (kernel_lab.py, unique names) with
  tools/bench/tcp_server.py (discard, chargen on kernel sockets) in its server
  namespace, reached from its client namespace through the kernel router.

The clients (tools/bench/tcp_client.py) run in each side's client namespace.
Each side checks the byte counts it can see on the server, so every transfer is
verified on its receiving end. Everything started here is stopped in ``stop``.
"""

from __future__ import annotations

import json
import os
import queue
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from tools.bench.kernel_lab import KernelLabConfig, kernel_lab_down, kernel_lab_up
from tools.bench.proc import CommandError, TransferError, netns_exists, ns_cmd, run, stop_process
from tools.bench.proc import wait_until as _wait_until

ROOT = Path(__file__).resolve().parents[2]
DISCARD_PORT, CHARGEN_PORT = 9, 19
READY_TIMEOUT = 30.0
# One client process holds at most this many connections (RLIMIT_NOFILE and
# the select() of a single process stay comfortable); more use more processes.
HOLD_PER_PROCESS = 5000
# A wide ephemeral range in the client namespaces: thousands of short
# connections leave TIME_WAIT entries behind (RFC 9293 3.6.1).
PORT_RANGE = "1024 65535"
_LINE_MAX = 1 << 16


class LineReader:
    """Lines from a child's stdout pipe, each awaited with a timeout (select)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.fd = stream.fileno()
        self._buf = b""

    def read_line(self, timeout: float) -> str:
        """The next line without its newline; CommandError on timeout or EOF."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CommandError(f"no line from the child within {timeout:g}s")
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(self.fd, 4096)
            if not chunk:
                raise CommandError("the child closed its output")
            self._buf += chunk
            if len(self._buf) > _LINE_MAX:
                raise CommandError("the child wrote an overlong line")
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode(errors="replace").strip()


class LinePump:
    """Lines of a child's stdout, read by a thread into a bounded queue.

    For a child that reports per connection: reading only after a client
    finishes would let thousands of lines fill the pipe and stall the child.
    """

    def __init__(self, stream: IO[bytes], max_lines: int = 1_000_000) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue(max_lines)
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[bytes]) -> None:
        try:
            for raw in stream:
                self._queue.put(raw[:_LINE_MAX].decode(errors="replace").strip())
        except (OSError, ValueError):
            pass  # the stream was closed under us: the child is being stopped
        self._queue.put(None)

    def read_line(self, timeout: float) -> str:
        """The next line; CommandError on timeout or when the child's output ended."""
        try:
            line = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise CommandError(f"no line from the child within {timeout:g}s") from None
        if line is None:
            self._queue.put(None)  # stays at EOF for later readers
            raise CommandError("the child closed its output")
        return line


def parse_report(text: str) -> dict[str, Any]:
    """The last JSON object line of a client's output; TransferError if none."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TransferError(f"bad client report {line!r}: {exc}") from exc
            if isinstance(value, dict):
                return value
    raise TransferError(f"no report in the client's output: {text[-300:]!r}")


def parse_vmrss(status: str) -> int:
    """VmRSS of a /proc/PID/status text, in bytes; ValueError if absent."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                return int(parts[1]) * 1024
    raise ValueError("no VmRSS line")


def read_rss(pid: int) -> int:
    """Resident set size of process ``pid`` in bytes."""
    with open(f"/proc/{pid}/status") as f:
        return parse_vmrss(f.read())


def client_argv(netns: str, mode: str, host: str, port: int, n: int, timeout: float) -> list[str]:
    """The command line of one benchmark client inside ``netns``."""
    return ns_cmd(netns, sys.executable, "-m", "tools.bench.tcp_client", mode, host, str(port),
                  str(n), "--timeout", f"{timeout:g}")  # fmt: skip


def run_client(netns: str, mode: str, host: str, port: int, n: int,
               timeout: float) -> dict[str, Any]:  # fmt: skip
    """Run one client to completion; its report, or TransferError with its stderr."""
    argv = client_argv(netns, mode, host, port, n, timeout)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 15,
                              cwd=ROOT, stdin=subprocess.DEVNULL)  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise TransferError(f"client {mode} in {netns} overran {timeout:g}s") from exc
    if done.returncode != 0:
        raise TransferError(f"client {mode} in {netns} to {host}:{port} failed "
                            f"({done.returncode}): {done.stderr.strip()}")  # fmt: skip
    return parse_report(done.stdout)


def kernel_loss(netns: str, per_mille: int | None) -> None:
    """Drop ``per_mille``/1000 of the TCP packets in and out of ``netns`` (None: remove).

    This kernel has no netem, so the loss comes from nftables' random numbers
    on the input and output hooks of an ``inet`` table in the client namespace.
    """
    if per_mille is None:
        run(ns_cmd(netns, "nft", "delete", "table", "inet", "tsbench"), check=False)
        return
    rule = f"meta l4proto tcp numgen random mod 1000 < {per_mille} counter drop"
    ruleset = ("table inet tsbench {\n"
               f"  chain out {{ type filter hook output priority 0; {rule}; }}\n"
               f"  chain in {{ type filter hook input priority 0; {rule}; }}\n}}\n")
    try:
        subprocess.run(ns_cmd(netns, "nft", "-f", "-"), input=ruleset, text=True, check=True,
                       capture_output=True, timeout=20)  # fmt: skip
    except (subprocess.SubprocessError, OSError) as exc:
        raise CommandError(f"nft in {netns}: {exc}") from exc


def kernel_loss_drops(netns: str) -> int:
    """Packets the loss table has dropped so far (0 when it is absent)."""
    out = run(ns_cmd(netns, "nft", "list", "table", "inet", "tsbench"), check=False)
    total = 0
    for part in out.split("counter")[1:]:
        words = part.split()
        if len(words) >= 2 and words[0] == "packets" and words[1].isdigit():
            total += int(words[1])
    return total


def _widen_ports(netns: str) -> None:
    run(ns_cmd(netns, "sysctl", "-qw", f"net.ipv4.ip_local_port_range={PORT_RANGE}"))


class StackSide:
    """The stack's lab and its ``serve`` process."""

    name = "stack"
    label = "tapsplice"
    host = "198.18.0.2"

    def __init__(self, lab_cfg: Any) -> None:
        self.lab = lab_cfg
        self.client_ns: str = lab_cfg.client_ns
        self.proc: subprocess.Popen[bytes] | None = None
        self.summaries: list[dict[str, Any]] = []
        self._logdir = Path(tempfile.mkdtemp(prefix="tapsplice-bench-tcp-"))
        self._lab_is_ours = False
        self._runs = 0

    @property
    def pid(self) -> int:
        """Process id of the running stack."""
        if self.proc is None:
            raise RuntimeError("the stack is not running")
        return self.proc.pid

    def start(self) -> None:
        """Bring up the lab (refusing one that exists) and start the stack."""
        from apps.lab import lab_up

        if netns_exists(self.lab.client_ns) or netns_exists(self.lab.server_ns):
            raise CommandError(f"lab {self.lab.client_ns} exists already")
        self._lab_is_ours = True
        lab_up(self.lab)
        _widen_ports(self.client_ns)
        self.start_process()

    def argv(self) -> list[str]:
        """The stack's command line."""
        lab = self.lab
        return [sys.executable, "-m", "apps.cli", "serve", "--lab", "--log-level", "warning",
                "--client-ns", lab.client_ns, "--client-tap", lab.client_tap,
                "--server-ns", lab.server_ns, "--server-tap", lab.server_tap]  # fmt: skip

    def _log(self) -> Path:
        return self._logdir / f"serve-{self._runs}.log"

    def log_tail(self, limit: int = 1500) -> str:
        """The end of the current stack process's log."""
        path = self._log()
        return path.read_text(errors="replace")[-limit:] if path.exists() else ""

    def start_process(self) -> None:
        """Start ``tapsplice serve`` and wait for "ready" and a ping through the TAP."""
        self._runs += 1
        with open(self._log(), "wb") as err:
            # Own session: a terminal Ctrl-C reaches us, and we stop the stack in order.
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=err, cwd=ROOT,
                                         start_new_session=True)  # fmt: skip
        assert self.proc.stdout is not None
        try:
            line = LineReader(self.proc.stdout).read_line(READY_TIMEOUT)
        except CommandError as exc:
            raise CommandError(f"the stack did not start: {exc}: {self.log_tail()}") from exc
        if line != "ready":
            raise CommandError(f"the stack said {line!r}: {self.log_tail()}")
        # The kernel drops frames sent before the TAP's link watcher runs: ping first.
        probe = ns_cmd(self.client_ns, "ping", "-c", "1", "-W", "1", "-q", self.host)
        if not _wait_until(probe, READY_TIMEOUT):
            raise CommandError(f"no ping to the stack: {self.log_tail()}")

    def stop_process(self) -> None:
        """Stop the stack (SIGTERM) and keep its counter summary."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        code = stop_process(proc)
        if proc.stdout is not None:
            proc.stdout.close()
        text = self.log_tail(1 << 20)
        start = text.find("{\n")
        try:
            summary = json.loads(text[start:]) if start >= 0 else {}
        except json.JSONDecodeError:
            summary = {}
        self.summaries.append({"exit_code": code, "summary": summary})

    def restart(self) -> None:
        """A fresh stack process in the same lab."""
        self.stop_process()
        self.start_process()

    def check_server(self, service: str, count: int, nbytes: int) -> int | None:
        """Check the stack is still running; it reports nothing per connection.

        The client's checks stand for the stack's count: TCP_INFO's bytes the
        stack acknowledged before closing, and the EOF of each connection.
        """
        if self.proc is not None and self.proc.poll() is not None:
            raise TransferError(f"the stack exited ({self.proc.returncode}): {self.log_tail()}")
        return None

    def stop(self) -> None:
        """Stop the stack and remove the lab (only if this side made it)."""
        try:
            self.stop_process()
        finally:
            if self._lab_is_ours:
                from apps.lab import lab_down

                self._lab_is_ours = False
                lab_down(self.lab)
            shutil.rmtree(self._logdir, ignore_errors=True)


class KernelSide:
    """The kernel twin lab and the kernel discard/chargen server."""

    name = "kernel"
    label = "kernel (veth)"

    def __init__(self, cfg: KernelLabConfig, lifetime: float) -> None:
        self.cfg = cfg
        self.client_ns = cfg.client_ns
        self.host = cfg.server_ip
        self.lifetime = lifetime
        self.proc: subprocess.Popen[bytes] | None = None
        self._lines: LinePump | None = None

    def start(self) -> None:
        """Build the twin lab and start the server in its server namespace."""
        kernel_lab_up(self.cfg)
        _widen_ports(self.client_ns)
        argv = ns_cmd(self.cfg.server_ns, sys.executable, "-m", "tools.bench.tcp_server",
                      self.host, "--lifetime", f"{self.lifetime:g}")  # fmt: skip
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, cwd=ROOT,
                                     start_new_session=True)  # fmt: skip
        assert self.proc.stdout is not None
        self._lines = LinePump(self.proc.stdout)
        line = self._lines.read_line(READY_TIMEOUT)
        if line != "ready":
            raise CommandError(f"kernel server said {line!r}")

    def check_server(self, service: str, count: int, nbytes: int) -> int | None:
        """Read the server's report of ``count`` connections to ``service``.

        ``nbytes`` is what discard must have counted on each (chargen reports
        what it sent, which is more than the client read, and is not checked).
        Returns the bytes discard counted over the connections (None for chargen).
        """
        if self._lines is None:
            raise RuntimeError("kernel server not started")
        total = 0
        for i in range(count):
            rec = json.loads(self._lines.read_line(30.0))
            if rec.get("service") != service:
                raise TransferError(f"kernel server reported {rec}, expected {service}")
            if rec.get("error") and service == "discard":
                raise TransferError(f"kernel discard connection {i}: {rec['error']}")
            if service == "discard" and rec.get("bytes") != nbytes:
                raise TransferError(f"kernel discard counted {rec.get('bytes')} of {nbytes}")
            total += int(rec.get("bytes", 0))
        return total if service == "discard" else None

    def stop(self) -> None:
        """Stop the server and remove the twin lab."""
        proc, self.proc = self.proc, None
        try:
            if proc is not None:
                stop_process(proc)
                if proc.stdout is not None:
                    proc.stdout.close()
        finally:
            kernel_lab_down(self.cfg)


def _split(count: int, per: int) -> list[int]:
    """``count`` as chunks of at most ``per`` (one client process each)."""
    return [min(per, count - i) for i in range(0, count, per)]


def _stop_clients(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for stream in (p.stdin, p.stdout, p.stderr):
            if stream is not None:
                stream.close()


def _release(procs: list[subprocess.Popen[bytes]], timeout: float) -> int:
    """Tell every holding client to check and drop its connections; sum still established."""
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(b"release\n")
        p.stdin.flush()
    still = 0
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise TransferError("a holding client did not finish") from exc
        if p.returncode != 0:
            raise TransferError(f"holding client failed: {err.decode(errors='replace')}")
        still += int(parse_report(out.decode(errors="replace"))["still_established"])
    return still


def hold_and_measure(side: StackSide, count: int, timeout: float,
                     per_process: int = HOLD_PER_PROCESS) -> dict[str, Any]:  # fmt: skip
    """Open ``count`` idle connections to the stack's discard service and hold them.

    The stack's VmRSS is read before (after a few warm-up connections) and
    while they are held; each connection is checked established when opened
    and again after the reading (no FIN or RST from the stack meanwhile).
    """
    # Warm-up: the first connections allocate what every later one reuses.
    run_client(side.client_ns, "conns", side.host, DISCARD_PORT, 20, timeout)
    rss_before = read_rss(side.pid)
    procs: list[subprocess.Popen[bytes]] = []
    opened = established = 0
    started = time.monotonic()
    try:
        for chunk in _split(count, per_process):
            argv = client_argv(side.client_ns, "hold", side.host, DISCARD_PORT, chunk, timeout)
            p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, cwd=ROOT)  # fmt: skip
            procs.append(p)
            assert p.stdout is not None
            try:
                rec = json.loads(LineReader(p.stdout).read_line(timeout))
            except CommandError as exc:
                raise TransferError(f"holding client: {exc}") from exc
            opened += int(rec["opened"])
            established += int(rec["established"])
        open_seconds = time.monotonic() - started
        # A barrier: the stack handles segments in order, so once one more
        # connection has been accepted and closed, every earlier one is accepted.
        run_client(side.client_ns, "conns", side.host, DISCARD_PORT, 1, timeout)
        rss_after = read_rss(side.pid)
        still = _release(procs, timeout)
    finally:
        _stop_clients(procs)
    return {"connections": count, "opened": opened, "established": established,
            "still_established": still, "processes": len(procs),
            "rss_before": rss_before, "rss_after": rss_after,
            "bytes_per_connection": (rss_after - rss_before) / count,
            "open_seconds": open_seconds}  # fmt: skip
