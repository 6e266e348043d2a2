"""Helpers for lab tests: the stack as a subprocess in the test's lab."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from apps.labproc import ns_cmd, wait_until


class StackProcess:
    """`tapsplice <command> --lab` for the test's lab, as a subprocess."""

    def __init__(self, lab, command: str, *extra: str, log: Path) -> None:
        argv = [sys.executable, "-m", "apps.cli", command, "--lab",
                "--client-ns", lab.client_ns, "--client-tap", lab.client_tap,
                "--server-ns", lab.server_ns, "--server-tap", lab.server_tap, *extra]
        self.log = log
        self.proc = subprocess.Popen(argv, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
        self.lab = lab

    def wait_ready(self) -> None:
        ok = wait_until(ns_cmd(self.lab.client_ns, "ping", "-c", "1", "-W", "1",
                               "198.18.0.2"), timeout=20)
        assert ok, self.log.read_text()

    def wait_logged(self, text: str = "ready", timeout: float = 30.0) -> None:
        """Wait until the log shows ``text`` (a supervisor's ``ready``: all workers)."""
        wait_logged(self.proc, self.log, text, timeout)

    def worker_pids(self) -> list[str]:
        """The pids of a supervisor's workers."""
        return subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                              text=True, timeout=10).stdout.split()

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            raise AssertionError("the stack did not stop on SIGTERM") from None
        text = self.log.read_text()
        assert self.proc.returncode == 0, text
        return json.loads(text[text.index("{\n"):])


def wait_logged(proc: subprocess.Popen, log: Path, text: str, timeout: float = 30.0) -> None:
    """Wait (bounded) until ``log`` shows ``text``; fail if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)  # poll interval while the process starts


def ping(ns: str, addr: str, count: int = 2, size: int = 56) -> subprocess.CompletedProcess:
    """ping from inside a namespace."""
    return subprocess.run(ns_cmd(ns, "ping", "-c", str(count), "-i", "0.2", "-W", "1",
                                 "-s", str(size), addr),
                          capture_output=True, text=True, timeout=30)


def kernel_loss(ns: str, per_mille: int | None) -> None:
    """Random loss of the kernel's TCP packets both ways, with nftables.

    This machine's kernel has no netem qdisc (CONFIG_NET_SCH_NETEM is unset), so the
    kernel side drops with nftables' random number generator; duplication, reordering,
    corruption and delay come from the stack's --impair on the other side of the wire.
    """
    if per_mille is None:
        subprocess.run(ns_cmd(ns, "nft", "delete", "table", "inet", "tsfault"),
                       capture_output=True, timeout=10)
        return
    rule = f"meta l4proto tcp numgen random mod 1000 < {per_mille} counter drop"
    ruleset = ("table inet tsfault {\n"
               f"  chain out {{ type filter hook output priority 0; {rule}; }}\n"
               f"  chain in {{ type filter hook input priority 0; {rule}; }}\n}}\n")
    nft_load(ns, ruleset)


def nft_load(ns: str, ruleset: str) -> None:
    """Load an nftables ruleset inside a namespace."""
    subprocess.run(ns_cmd(ns, "nft", "-f", "-"), input=ruleset, text=True, check=True,
                   timeout=10)


def nft_packets(ns: str, table: str) -> int:
    """Packets counted by the counters of an inet table in a namespace."""
    out = subprocess.run(ns_cmd(ns, "nft", "list", "table", "inet", table),
                         capture_output=True, text=True, timeout=10).stdout
    return sum(int(w.split()[0]) for w in out.split("packets")[1:])


def kernel_drops(ns: str) -> int:
    """Packets the kernel_loss rules dropped."""
    return nft_packets(ns, "tsfault")
