"""Paths of the router benchmark: an HTTP download through a router.

Each path puts an nginx origin in a server namespace and runs curl in a client
namespace; what differs is the router between them: the tapsplice stack (with
or without TAP offloads, or on raw sockets over veth pairs: `lab up --raw`) or the
Linux kernel over veth pairs (the baseline).
Every download is checked to have delivered exactly the file's size.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from apps.origin import Origin, OriginFile
from tools.bench.harness import Sample
from tools.bench.kernel_lab import KernelLabConfig, kernel_lab_down, kernel_lab_up
from tools.bench.proc import (
    CommandError,
    TransferError,
    curl_download,
    netns_exists,
    ns_cmd,
    run,
    stop_process,
)

log = logging.getLogger(__name__)

FILE_NAME = "bench.bin"
# Bound on the router becoming reachable once started.
READY_TIMEOUT = 30.0
# Slowest rate a transfer may run at before it is called hung (bytes/s), and
# the shortest time any transfer is allowed.
FLOOR_RATE = 5_000_000
MIN_TRANSFER_TIMEOUT = 60.0


def transfer_timeout(size: int) -> float:
    """Seconds one download of ``size`` bytes may take before it is abandoned."""
    return max(MIN_TRANSFER_TIMEOUT, size / FLOOR_RATE)


def check_download(size: int, expected: int, seconds: float) -> Sample:
    """A sample from a finished download; TransferError if the size is wrong."""
    if size != expected:
        raise TransferError(f"downloaded {size} bytes, the file has {expected}")
    return Sample(size, seconds)


class _HttpDownloadPath:
    """Common part: an origin in ``server_ns``, curl from ``client_ns``."""

    name = ""
    label = ""
    note = ""

    def __init__(self, size: int, timeout: float | None = None) -> None:
        self.size = size
        self.timeout = timeout or transfer_timeout(size)
        self._origin: Origin | None = None
        self._file: OriginFile | None = None
        self._client_ns = ""
        self._server_ip = ""

    def _start_origin(self, client_ns: str, server_ns: str, server_ip: str) -> None:
        self._client_ns, self._server_ip = client_ns, server_ip
        self._origin = Origin(server_ns, addr=server_ip)
        self._file = self._origin.make_file(FILE_NAME, self.size, random=False)
        self._origin.start()

    def run_transfer(self) -> Sample:
        """Download the benchmark file once and check its size."""
        if self._origin is None or self._file is None:
            raise RuntimeError(f"{self.name}: run_transfer before start")
        got = curl_download(self._client_ns, self._origin.url(self._file), self.timeout)
        return check_download(got.size, self.size, got.seconds)

    def _stop_origin(self) -> None:
        origin, self._origin = self._origin, None
        if origin is not None:
            origin.stop()


class KernelRouterPath(_HttpDownloadPath):
    """The baseline: the Linux kernel forwarding between veth pairs."""

    name = "kernel"
    label = "kernel (veth)"

    def __init__(self, size: int, cfg: KernelLabConfig | None = None,
                 timeout: float | None = None) -> None:  # fmt: skip
        super().__init__(size, timeout)
        self.cfg = cfg or KernelLabConfig()

    def start(self) -> None:
        """Build the twin lab and start the origin in its server namespace."""
        kernel_lab_up(self.cfg)
        self._start_origin(self.cfg.client_ns, self.cfg.server_ns, self.cfg.server_ip)

    def stop(self) -> None:
        """Stop the origin and remove the twin lab."""
        try:
            self._stop_origin()
        finally:
            kernel_lab_down(self.cfg)


def stack_lab_config() -> Any:
    """A stack lab (apps.lab.LabConfig) with namespace names unique to this run.

    Unique names keep the benchmark clear of a lab someone else is using on
    the same machine; the addresses are the lab's usual ones.
    """
    from apps.lab import LabConfig

    return LabConfig.unique("bench")


def _cli(*args: str) -> list[str]:
    """argv running this checkout's `tapsplice` with the current interpreter."""
    return [sys.executable, "-m", "apps.cli", *args]


class StackRouterPath(_HttpDownloadPath):
    """tapsplice's router (`tapsplice router --lab`) between the lab's TAPs."""

    def __init__(self, size: int, offload: bool = True, timeout: float | None = None,
                 lab_cfg: Any = None, raw: bool = False) -> None:  # fmt: skip
        super().__init__(size, timeout)
        self.offload = offload
        self.raw = raw
        self.name = ("stack-raw" if raw else "stack") + ("" if offload else "-no-offload")
        self.label = ("tapsplice raw sockets" if raw else "tapsplice") + (
            "" if offload else " --no-offload")
        self.lab = lab_cfg if lab_cfg is not None else stack_lab_config()
        self._router: subprocess.Popen[bytes] | None = None
        self._logdir: Path | None = None
        self._lab_is_ours = False

    def start(self) -> None:
        """Bring the lab up, start the origin and the router, wait until ping passes."""
        from apps.lab import lab_up

        if netns_exists(self.lab.client_ns) or netns_exists(self.lab.server_ns):
            raise CommandError(
                f"the lab ({self.lab.client_ns}/{self.lab.server_ns}) is already up, maybe "
                "in use by someone else"
            )
        self._lab_is_ours = True
        lab_up(self.lab, raw=self.raw)
        server_ip = str(self.lab.server_addr).split("/")[0]
        self._start_origin(self.lab.client_ns, self.lab.server_ns, server_ip)
        self._start_router()
        self._wait_ready(server_ip)

    def router_argv(self) -> list[str]:
        """The command line of the router process for this lab."""
        lab = self.lab
        args = ["router", "--lab", "--client-ns", lab.client_ns, "--client-tap", lab.client_tap,
                "--server-ns", lab.server_ns, "--server-tap", lab.server_tap,
                "--stack-ns", lab.stack_ns]  # fmt: skip
        return _cli(*args, *([] if self.offload else ["--no-offload"]))

    def _start_router(self) -> None:
        self._logdir = Path(tempfile.mkdtemp(prefix="tapsplice-bench-"))
        with open(self._logdir / "router.log", "wb") as out:
            # Own session, so a terminal Ctrl-C reaches only us and we stop it in order.
            self._router = subprocess.Popen(
                self.router_argv(), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True,
            )  # fmt: skip

    def router_log_tail(self, limit: int = 2000) -> str:
        """The end of the router's output (for error messages)."""
        if self._logdir is None or not (self._logdir / "router.log").exists():
            return ""
        return (self._logdir / "router.log").read_text(errors="replace")[-limit:].strip()

    def _wait_ready(self, server_ip: str) -> None:
        """Ping the server from the client, through the router, until it answers (bounded)."""
        assert self._router is not None
        probe = ns_cmd(self.lab.client_ns, "ping", "-c", "1", "-W", "1", "-q", server_ip)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            tried = time.monotonic()
            if self._router.poll() is not None:
                raise CommandError(
                    f"router exited with {self._router.returncode}: {self.router_log_tail()}"
                )
            try:
                run(probe, timeout=5.0)
                return
            except CommandError:
                # ping waits up to 1 s for a reply; when it fails sooner (no
                # route yet) pause for the rest of that second before retrying.
                time.sleep(max(0.0, min(1.0 - (time.monotonic() - tried), 1.0)))
        raise CommandError(
            f"no ping through the router within {READY_TIMEOUT:g}s: {self.router_log_tail()}"
        )

    def run_transfer(self) -> Sample:
        """Download once; a failure carries the end of the router's log."""
        try:
            return super().run_transfer()
        except TransferError as exc:
            raise TransferError(f"{exc}\nrouter log:\n{self.router_log_tail()}") from exc

    def stop(self) -> None:
        """Stop the router, the origin, and the lab (only if this path brought it up)."""
        router, self._router = self._router, None
        try:
            if router is not None:
                code = stop_process(router)
                log.debug("router stopped with exit code %s", code)
            self._stop_origin()
        finally:
            if self._lab_is_ours:
                from apps.lab import lab_down

                self._lab_is_ours = False
                lab_down(self.lab)
            if self._logdir is not None:
                shutil.rmtree(self._logdir, ignore_errors=True)
                self._logdir = None
