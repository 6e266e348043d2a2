"""Labs and routes of `bench splice`: where the client and the origin live, and what
sits between them.

Three labs: the stack's lab (client and server namespaces joined only through a
tapsplice process on their TAPs), the same over raw sockets (veth pairs to a stack
namespace, `lab up --raw`) and the kernel twin lab (client, router and
server namespaces over veth pairs). Each lab's server namespace runs nginx (the
download origin, sparse files) and a Python upload sink on kernel sockets
(tools/bench/splice_servers.py; nginx is left to downloads because a PUT sink
in nginx would need a configuration of our own). A route is the box in the
middle: the stack's SOCKS5 proxy (splice or copy mode) or router in the stack's
lab; the kernel's forwarding, the uvloop SOCKS5 proxy or microsocks in the
router namespace of the twin lab.

Transfers run curl in the client namespace with a cleared environment (no
proxies leak in; ``--noproxy`` is not used because it switches ``--socks5`` off
too) and check the byte counts: curl's own and, for uploads, the sink's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apps.lab import LabConfig, lab_down, lab_up
from apps.labproc import READY_TIMEOUT, tail, wait_ready
from apps.origin import Origin, OriginFile
from tools.bench.harness import Sample
from tools.bench.kernel_lab import KernelLabConfig, kernel_lab_down, kernel_lab_up
from tools.bench.proc import CommandError, TransferError, ns_cmd, run, stop_process

REPO = Path(__file__).resolve().parents[2]
PROXY_PORT = 1080
HTTP_PORT = 80
SINK_PORT = 8080
HOLD_PORT = 9000
SMALL_SIZE = 1024
CLEAN_ENV = ("env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
STACK_CLIENT_GW = "198.18.0.2"
DIRECTIONS = ("download", "upload")


@dataclass(frozen=True)
class CurlResult:
    """What curl reported: bytes down, bytes up, seconds, and the response body."""

    downloaded: int
    uploaded: int
    seconds: float
    body: str


def parse_curl(text: str) -> CurlResult:
    """Parse the response body followed by the ``-w`` line ``DOWN UP SECONDS``."""
    body, _, last = text.rstrip("\n").rpartition("\n")
    parts = last.split()
    if len(parts) != 3:
        raise TransferError(f"unexpected curl output: {text[-200:]!r}")
    try:
        down, up, secs = int(float(parts[0])), int(float(parts[1])), float(parts[2])
    except ValueError as exc:
        raise TransferError(f"unexpected curl output: {text[-200:]!r}") from exc
    if secs <= 0 or down < 0 or up < 0:
        raise TransferError(f"implausible curl output: {last!r}")
    return CurlResult(down, up, secs, body)


def curl_argv(netns: str, url: str, via: list[str], timeout: float,
              upload: Path | None = None) -> list[str]:
    """curl in ``netns`` through ``via`` (e.g. ``--socks5 A:P``), with a cleared env."""
    argv = [*CLEAN_ENV, "curl", "-sS", "--fail", "--http1.1", *via,
            "--max-time", f"{timeout:g}", "-w", "\n%{size_download} %{size_upload} %{time_total}"]
    if upload is None:
        argv += ["-o", "/dev/null", url]
    else:
        # No "Expect: 100-continue": the sink answers only once it has the body.
        argv += ["-T", str(upload), "-H", "Expect:", url]
    return ns_cmd(netns, *argv)


def check_transfer(direction: str, got: CurlResult, size: int) -> Sample:
    """A sample if every count agrees with ``size``; TransferError otherwise."""
    if direction == "download":
        if got.downloaded != size:
            raise TransferError(f"downloaded {got.downloaded} bytes, the file has {size}")
        return Sample(size, got.seconds)
    if got.uploaded != size:
        raise TransferError(f"curl uploaded {got.uploaded} bytes of {size}")
    try:
        received = int(got.body.strip())
    except ValueError as exc:
        raise TransferError(f"the sink's answer is not a count: {got.body[:80]!r}") from exc
    if received != size:
        raise TransferError(f"the sink received {received} bytes of {size}")
    return Sample(size, got.seconds)


def transfer_timeout(size: int) -> float:
    """Seconds one transfer may take (at least 60 s; 5 MB/s is called hung)."""
    return max(60.0, size / 5e6)


def _popen(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        # Own session: a terminal Ctrl-C reaches only us and we stop it in order.
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                cwd=REPO, start_new_session=True)


def summary_from_log(log: Path) -> dict[str, Any]:
    """The JSON object a process printed last (its counters at exit), or {}."""
    text = tail(log, 1 << 20)
    for start in (text.rfind("\n{"), text.find("{")):
        if start < 0:
            continue
        try:
            value = json.loads(text[start:])
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return {}


class Service:
    """A child process (maybe in a namespace) that prints ``ready``, with its log."""

    def __init__(self, name: str, argv: list[str], logdir: Path) -> None:
        self.name = name
        self.argv = argv
        self.log = logdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.summary: dict[str, Any] = {}

    def start(self, ready_timeout: float = READY_TIMEOUT) -> None:
        """Start it and wait for ``ready``."""
        self.proc = _popen(self.argv, self.log)
        try:
            wait_ready(self.proc, self.log, ready_timeout)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        """The child's pid (RuntimeError before start)."""
        if self.proc is None:
            raise RuntimeError(f"{self.name} not started")
        return self.proc.pid

    def stop(self) -> dict[str, Any]:
        """SIGTERM (then SIGKILL to its group); return the JSON counters it printed."""
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process(proc, grace=10.0)
            self.summary = summary_from_log(self.log)
        return self.summary


def python_argv(module: str, *args: str) -> list[str]:
    """This interpreter running ``module`` of this checkout."""
    return [sys.executable, "-m", module, *args]


class BenchLab:
    """A lab with its origin (nginx) and upload sink; the routes run inside it."""

    kind = ""

    def __init__(self, client_ns: str, server_ns: str, server_ip: str) -> None:
        self.client_ns = client_ns
        self.server_ns = server_ns
        self.server_ip = server_ip
        self.logdir = Path(tempfile.mkdtemp(prefix="tapsplice-bsplice-"))
        self.origin: Origin | None = None
        self.big: OriginFile | None = None
        self.small: OriginFile | None = None
        self.upload_file = self.logdir / "upload.bin"
        self.sink: Service | None = None

    def start(self, size: int) -> None:
        """Bring the namespaces up, then the origin and the sink."""
        self._up()
        self.origin = Origin(self.server_ns, addr=self.server_ip, port=HTTP_PORT)
        self.big = self.origin.make_file("big.bin", size, random=False)
        self.small = self.origin.make_file("small.bin", SMALL_SIZE, random=True)
        self.origin.start()
        with open(self.upload_file, "wb") as f:
            f.truncate(size)  # sparse: no disk or CPU to make it
        self.logdir.chmod(0o755)
        self.sink = Service("sink", ns_cmd(self.server_ns, *python_argv(
            "tools.bench.splice_servers", "sink", "--listen", f"{self.server_ip}:{SINK_PORT}")),
            self.logdir)
        self.sink.start()

    def transfer(self, direction: str, via: list[str], size: int) -> Sample:
        """One checked transfer of ``size`` bytes in ``direction`` through ``via``."""
        if self.origin is None or self.big is None:
            raise RuntimeError("lab not started")
        timeout = transfer_timeout(size)
        if direction == "download":
            argv = curl_argv(self.client_ns, self.origin.url(self.big), via, timeout)
        else:
            url = f"http://{self.server_ip}:{SINK_PORT}/upload"
            argv = curl_argv(self.client_ns, url, via, timeout, upload=self.upload_file)
        try:
            out = run(argv, timeout=timeout + 10.0)
        except CommandError as exc:
            raise TransferError(str(exc)) from exc
        return check_transfer(direction, parse_curl(out), size)

    def stop(self) -> None:
        """Stop the sink and the origin, remove the namespaces and the temp dir."""
        try:
            if self.sink is not None:
                self.sink.stop()
            if self.origin is not None:
                self.origin.stop()
        finally:
            self.sink = self.origin = None
            try:
                self._down()
            finally:
                shutil.rmtree(self.logdir, ignore_errors=True)

    def _up(self) -> None:
        raise NotImplementedError

    def _down(self) -> None:
        raise NotImplementedError


class StackLab(BenchLab):
    """The stack's lab with names unique to this run."""

    kind = "stack"

    def __init__(self, cfg: LabConfig | None = None) -> None:
        self.cfg = cfg or LabConfig.unique("bspl")
        super().__init__(self.cfg.client_ns, self.cfg.server_ns,
                         self.cfg.server_addr.split("/")[0])

    def _up(self) -> None:
        lab_up(self.cfg)

    def _down(self) -> None:
        lab_down(self.cfg)

    def stack_argv(self, command: str, *extra: str) -> list[str]:
        """`tapsplice COMMAND --lab` for this lab's names."""
        c = self.cfg
        return python_argv("apps.cli", command, "--lab", "--client-ns", c.client_ns,
                           "--client-tap", c.client_tap, "--server-ns", c.server_ns,
                           "--server-tap", c.server_tap, "--log-level", "warning", *extra)


class RawStackLab(StackLab):
    """The stack's lab over raw sockets (veth pairs, `lab up --raw`), unique names."""

    kind = "raw"

    def __init__(self, cfg: LabConfig | None = None) -> None:
        super().__init__(cfg or LabConfig.unique("bsplr"))

    def _up(self) -> None:
        lab_up(self.cfg, raw=True)

    def stack_argv(self, command: str, *extra: str) -> list[str]:
        """`tapsplice COMMAND --lab` on the raw lab (its stack namespace named)."""
        return super().stack_argv(command, "--stack-ns", self.cfg.stack_ns, *extra)


class KernelTwinLab(BenchLab):
    """The kernel twin lab (veth pairs, a router namespace) with unique names."""

    kind = "kernel"

    def __init__(self, cfg: KernelLabConfig | None = None) -> None:
        self.cfg = cfg or KernelLabConfig.unique()
        super().__init__(self.cfg.client_ns, self.cfg.server_ns, self.cfg.server_ip)

    @property
    def proxy_ip(self) -> str:
        """Where proxies in the router namespace listen: its client-side address."""
        return self.cfg.router_client_addr.split("/")[0]

    def _up(self) -> None:
        kernel_lab_up(self.cfg)

    def _down(self) -> None:
        kernel_lab_down(self.cfg)


def wait_listening(netns: str, port: int, proc: subprocess.Popen[bytes], log: Path,
                   timeout: float = READY_TIMEOUT) -> None:
    """Wait (bounded) until something listens on ``port`` in ``netns``."""
    deadline = time.monotonic() + timeout
    probe = ns_cmd(netns, "ss", "-Hltn", f"sport = :{port}")
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CommandError(f"exited with {proc.returncode}: {tail(log)}")
        if run(probe, timeout=5.0).strip():
            return
        time.sleep(0.05)  # poll interval while the process binds
    raise CommandError(f"nothing listens on port {port} within {timeout:g}s: {tail(log)}")


class Route:
    """The box between client and origin; ``lab_kind`` says which lab it runs in."""

    name = ""
    label = ""
    lab_kind = ""
    socks = True

    def __init__(self) -> None:
        self.service: Service | None = None
        self.summary: dict[str, Any] = {}

    def unavailable(self) -> str | None:
        """Why this route cannot run here (None when it can)."""
        return None

    def start(self, lab: Any) -> None:
        """Start the box in ``lab`` and wait until it accepts traffic."""
        self.service = self._service(lab)
        if self.service is not None:
            self.service.start()

    def _service(self, lab: Any) -> Service | None:
        return None

    def proxy(self, lab: Any) -> tuple[str, int] | None:
        """The SOCKS5 proxy's address (None for routers)."""
        return None

    def via(self, lab: Any) -> list[str]:
        """curl's options for this route."""
        proxy = self.proxy(lab)
        return [] if proxy is None else ["--socks5", f"{proxy[0]}:{proxy[1]}"]

    @property
    def pid(self) -> int:
        """The pid of the box's process (RuntimeError if it has none)."""
        if self.service is None:
            raise RuntimeError(f"{self.name} has no process")
        return self.service.pid

    def stop(self) -> dict[str, Any]:
        """Stop the box; its counters (JSON it printed at exit) are kept in ``summary``."""
        service, self.service = self.service, None
        if service is not None:
            self.summary = service.stop()
        return self.summary


class StackSocksRoute(Route):
    """`tapsplice socks --lab --mode MODE` between the stack lab's TAPs."""

    lab_kind = "stack"

    def __init__(self, mode: str, max_connections: int = 1024, workers: int = 1) -> None:
        super().__init__()
        self.mode = mode
        self.workers = workers
        self.name = mode if workers == 1 else f"{mode}-workers"
        self.label = f"stack socks {mode}" + (f", {workers} workers" if workers > 1 else "")
        self.max_connections = max_connections

    def _service(self, lab: Any) -> Service:
        # The load comes from one client address: no per-client share applies.
        n = str(self.max_connections)
        return Service(f"socks-{self.name}", lab.stack_argv(
            "socks", "--mode", self.mode, "--max-connections", n, "--max-per-client", n,
            "--max-handshakes-per-client", n, "--workers", str(self.workers)), lab.logdir)

    def proxy(self, lab: Any) -> tuple[str, int]:
        """The stack's client-side address, port 1080."""
        return STACK_CLIENT_GW, PROXY_PORT


class StackRouterRoute(Route):
    """`tapsplice router --lab`: the stack forwarding IPv4 between the TAPs."""

    name = "stack-router"
    label = "stack router"
    lab_kind = "stack"
    socks = False

    def _service(self, lab: Any) -> Service:
        return Service("router", lab.stack_argv("router"), lab.logdir)


class TapForwarderRoute(Route):
    """tools/bench/tapfwd.py: the least a Python program can do between the two TAPs
    (the ceiling of the stack's own paths on this machine)."""

    lab_kind = "stack"
    socks = False

    def __init__(self, threads: int = 1) -> None:
        super().__init__()
        self.threads = threads
        self.name = "tapfwd" if threads == 1 else "tapfwd-threads"
        self.label = "bare Python TAP forwarder" + (", 2 threads" if threads > 1 else "")

    def _service(self, lab: Any) -> Service:
        c = lab.cfg
        return Service(self.name, python_argv(
            "tools.bench.tapfwd", "--client-ns", c.client_ns, "--client-tap", c.client_tap,
            "--server-ns", c.server_ns, "--server-tap", c.server_tap,
            "--threads", str(self.threads)), lab.logdir)


class RawSocksRoute(StackSocksRoute):
    """`tapsplice socks --lab --mode splice` on raw sockets over the raw lab's veths."""

    lab_kind = "raw"

    def __init__(self, max_connections: int = 1024, workers: int = 1) -> None:
        super().__init__("splice", max_connections, workers)
        self.name = "splice-raw" if workers == 1 else RAW_WORKERS_ROUTE
        self.label = "stack socks splice, raw sockets" + (
            f", {workers} workers" if workers > 1 else "")


class RawRouterRoute(StackRouterRoute):
    """`tapsplice router --lab` on raw sockets over the raw lab's veths."""

    name = "stack-router-raw"
    label = "stack router, raw sockets"
    lab_kind = "raw"


class RawForwarderRoute(Route):
    """tools/bench/rawfwd.py: the least a Python program can do between the raw lab's
    two veth ends (the ceiling of the stack's raw-socket paths)."""

    lab_kind = "raw"
    socks = False

    def __init__(self, reader: str = "recv_into") -> None:
        super().__init__()
        self.reader = reader
        self.name = "rawfwd" if reader == "recv_into" else "rawfwd-ring"
        self.label = "bare Python raw-socket forwarder" + (
            ", TPACKET_V3 ring" if reader == "ring" else "")

    def _service(self, lab: Any) -> Service:
        c = lab.cfg
        return Service(self.name, python_argv(
            "tools.bench.rawfwd", "--client-ns", c.client_ns, "--client-tap", c.client_tap,
            "--server-ns", c.server_ns, "--server-tap", c.server_tap,
            "--stack-ns", c.stack_ns, "--reader", self.reader), lab.logdir)


class KernelRoute(Route):
    """The Linux kernel forwarding between veth pairs (the baseline)."""

    name = "kernel"
    label = "kernel router"
    lab_kind = "kernel"
    socks = False


class UvSocksRoute(Route):
    """tools/bench/uvsocks.py in the twin lab's router namespace."""

    name = "uvsocks"
    label = "uvloop socks"
    lab_kind = "kernel"

    def _service(self, lab: Any) -> Service:
        argv = python_argv("tools.bench.uvsocks", "--listen", f"{lab.proxy_ip}:{PROXY_PORT}")
        return Service("uvsocks", ns_cmd(lab.cfg.router_ns, *argv), lab.logdir)

    def proxy(self, lab: Any) -> tuple[str, int]:
        """The router namespace's client-side address, port 1080."""
        return lab.proxy_ip, PROXY_PORT


class MicrosocksRoute(UvSocksRoute):
    """microsocks (Debian package `microsocks`) in the twin lab's router namespace."""

    name = "microsocks"
    label = "microsocks"

    def unavailable(self) -> str | None:
        """``not installed`` when the binary is not on PATH."""
        return None if shutil.which("microsocks") else "not installed"

    def start(self, lab: Any) -> None:
        """Start microsocks; it prints nothing, so wait for its listening socket."""
        argv = ns_cmd(lab.cfg.router_ns, "microsocks", "-i", lab.proxy_ip, "-p", str(PROXY_PORT))
        self.service = Service("microsocks", argv, lab.logdir)
        self.service.proc = _popen(argv, self.service.log)
        try:
            wait_listening(lab.cfg.router_ns, PROXY_PORT, self.service.proc, self.service.log)
        except BaseException:
            self.stop()
            raise


ALL_ROUTES = ("splice", "copy", "stack-router", "tapfwd", "tapfwd-threads", "splice-raw",
              "stack-router-raw", "rawfwd", "rawfwd-ring", "kernel", "uvsocks", "microsocks")
#: The spliced proxy as two worker processes (one per core): requests/s only, since a
#: single transfer is one connection and so one worker.
WORKERS_ROUTE = "splice-workers"
#: The same on raw sockets (a fanout group per interface): requests/s only.
RAW_WORKERS_ROUTE = "splice-workers-raw"
RPS_WORKERS = 2


def make_routes(names: list[str], max_connections: int = 1024) -> list[Route]:
    """The routes called ``names``, in the canonical order."""
    makers = {
        "splice": lambda: StackSocksRoute("splice", max_connections),
        "copy": lambda: StackSocksRoute("copy", max_connections),
        "stack-router": StackRouterRoute,
        "tapfwd": TapForwarderRoute,
        "tapfwd-threads": lambda: TapForwarderRoute(threads=2),
        "splice-raw": lambda: RawSocksRoute(max_connections),
        "stack-router-raw": RawRouterRoute,
        "rawfwd": RawForwarderRoute,
        "rawfwd-ring": lambda: RawForwarderRoute("ring"),
        "kernel": KernelRoute,
        "uvsocks": UvSocksRoute,
        "microsocks": MicrosocksRoute,
        WORKERS_ROUTE: lambda: StackSocksRoute("splice", max_connections, RPS_WORKERS),
        RAW_WORKERS_ROUTE: lambda: RawSocksRoute(max_connections, RPS_WORKERS),
    }
    return [makers[n]() for n in (*ALL_ROUTES, WORKERS_ROUTE, RAW_WORKERS_ROUTE)
            if n in names]
