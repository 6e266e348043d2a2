"""Running `bench thesis`: each lab brought up once, each path measured with both
experiments by the client in tools/bench/thesis_client.py, everything torn down
on the way out (failure, Ctrl-C or SIGTERM included).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.bench.harness import BenchTimeout
from tools.bench.proc import ns_cmd, run_json_client, signals_deferred
from tools.bench.splice_paths import (
    HTTP_PORT,
    PROXY_PORT,
    SMALL_SIZE,
    BenchLab,
    KernelTwinLab,
    Route,
    Service,
    StackLab,
    UvSocksRoute,
    _popen,
    make_routes,
    python_argv,
    transfer_timeout,
    wait_listening,
)
from tools.bench.thesis_results import (
    PathOutcome,
    load_run_from_json,
    timing_from_json,
)

DANTED = "/usr/sbin/danted"
THESIS_PATHS = ("kernel", "stack-router", "splice", "copy", "uvsocks", "microsocks", "dante")
# Connections the stack's SOCKS proxy may hold: the highest concurrency level
# needs two per client, with room for connections still closing.
STACK_MAX_CONNECTIONS = 4096


def dante_conf(internal: str, external: str, port: int = PROXY_PORT) -> str:
    """A danted configuration: SOCKS5 without authentication, CONNECT only."""
    return (
        "logoutput: stderr\n"
        f"internal: {internal} port = {port}\n"
        f"external: {external}\n"
        "clientmethod: none\n"
        "socksmethod: none\n"
        "user.privileged: root\n"
        "user.unprivileged: nobody\n"
        "client pass { from: 0.0.0.0/0 to: 0.0.0.0/0 }\n"
        "socks pass { from: 0.0.0.0/0 to: 0.0.0.0/0 command: connect }\n"
    )


class DanteRoute(UvSocksRoute):
    """Dante's danted (Debian package `dante-server`) in the twin lab's router namespace."""

    name = "dante"
    label = "dante"

    def unavailable(self) -> str | None:
        """``not installed`` when /usr/sbin/danted is absent."""
        return None if Path(DANTED).exists() else "not installed"

    def start(self, lab: Any) -> None:
        """Write the configuration, start danted, wait for its listening socket."""
        conf = lab.logdir / "danted.conf"
        conf.write_text(dante_conf(lab.proxy_ip, lab.cfg.router_server_addr.split("/")[0]))
        argv = ns_cmd(lab.cfg.router_ns, DANTED, "-f", str(conf),
                      "-p", str(lab.logdir / "danted.pid"))
        self.service = Service("dante", argv, lab.logdir)
        self.service.proc = _popen(argv, self.service.log)
        try:
            wait_listening(lab.cfg.router_ns, PROXY_PORT, self.service.proc, self.service.log)
        except BaseException:
            self.stop()
            raise


def thesis_routes(names: list[str]) -> list[Route]:
    """The routes called ``names``: the splice benchmark's, and Dante."""
    routes = make_routes(names, max_connections=STACK_MAX_CONNECTIONS)
    if "dante" in names:
        routes.append(DanteRoute())
    return routes


@dataclass
class ThesisPlan:
    """What one run measures; built from the command line by thesis.py."""

    paths: list[str]
    sizes: list[int]
    repeats: int
    warmup: int
    levels: list[int]
    load_size: int
    load_repeats: int
    load_seconds: float
    load_count: int
    max_seconds: float


def repeats_for(size: int, repeats: int) -> int:
    """Counted requests for one size: all of ``repeats`` up to 1 MiB, at most 3 above
    (a 100 MB transfer varies little, and 50 of them would take long)."""
    return repeats if size <= 1 << 20 else min(repeats, 3)


def planned_steps(plan: ThesisPlan) -> int:
    """Progress steps: every counted request of experiment 1 and every load run."""
    per_path = sum(repeats_for(s, plan.repeats) for s in plan.sizes)
    per_path += len(plan.levels) * plan.load_repeats
    return per_path * len(plan.paths)


def object_name(size: int) -> str:
    """The origin's file name for an object of ``size`` bytes."""
    return f"obj-{size}.bin"


Progress = Callable[[str, bool], None]


def _nothing(text: str, advance: bool) -> None:
    return None


class ThesisRunner:
    """Carries out a :class:`ThesisPlan` under one deadline, reporting progress."""

    def __init__(self, plan: ThesisPlan, progress: Progress = _nothing,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.plan = plan
        self.progress = progress
        self.clock = clock
        self.deadline = clock() + plan.max_seconds
        self.outcomes: list[PathOutcome] = []

    def left(self, what: str) -> float:
        """Seconds left before the deadline; BenchTimeout once it has passed."""
        left = self.deadline - self.clock()
        if left <= 0:
            raise BenchTimeout(f"deadline of {self.plan.max_seconds:g}s passed during {what}")
        return left

    def run(self) -> list[PathOutcome]:
        """Measure every path; each lab is removed even on failure."""
        routes = thesis_routes(self.plan.paths)
        for lab_cls in (KernelTwinLab, StackLab):
            mine = [r for r in routes if r.lab_kind == lab_cls.kind]
            for r in [r for r in mine if r.unavailable()]:
                self.outcomes.append(PathOutcome(r.name, r.label, unavailable=r.unavailable()))
            mine = [r for r in mine if not r.unavailable()]
            if not mine:
                continue
            lab = lab_cls()
            self.progress(f"{lab.kind} lab: setting up", False)
            try:
                with signals_deferred():
                    lab.start(SMALL_SIZE)
                    self._make_objects(lab)
                for route in mine:
                    self._route(lab, route)
            finally:
                with signals_deferred():
                    lab.stop()
        order = {name: i for i, name in enumerate(THESIS_PATHS)}
        self.outcomes.sort(key=lambda o: order.get(o.name, len(order)))
        return self.outcomes

    def _make_objects(self, lab: BenchLab) -> None:
        assert lab.origin is not None
        for size in sorted(set(self.plan.sizes) | {self.plan.load_size}):
            lab.origin.make_file(object_name(size), size, random=False)

    def _route(self, lab: BenchLab, route: Route) -> None:
        outcome = PathOutcome(route.name, route.label)
        self.outcomes.append(outcome)
        self.progress(f"{route.label}: starting", False)
        with signals_deferred():
            route.start(lab)
        try:
            if self.plan.sizes:
                self._sizes(lab, route, outcome)
            if self.plan.levels:
                self._load(lab, route, outcome)
        finally:
            with signals_deferred():
                outcome.summary = route.stop()

    def _base_argv(self, lab: BenchLab, route: Route, mode: str) -> list[str]:
        proxy = route.proxy(lab)
        argv = [mode, "--dest", f"{lab.server_ip}:{HTTP_PORT}"]
        if proxy is not None:
            argv += ["--proxy", f"{proxy[0]}:{proxy[1]}"]
        return argv

    def _sizes(self, lab: BenchLab, route: Route, outcome: PathOutcome) -> None:
        p = self.plan
        argv = self._base_argv(lab, route, "sizes") + ["--warmup", str(p.warmup)]
        for size in p.sizes:
            argv += ["--object", f"{size}:/{object_name(size)}:{repeats_for(size, p.repeats)}"]
        argv += ["--timeout", f"{transfer_timeout(max(p.sizes)):g}"]

        def on_line(obj: dict[str, Any]) -> None:
            point = outcome.size_point(int(obj["size"]))
            if obj.get("kind") == "sample":
                point.samples.append(timing_from_json(obj))
                self.progress(f"{route.label} {point.size} B: "
                              f"{point.samples[-1].response * 1e3:.2f} ms", True)
            elif obj.get("kind") == "error":
                point.errors += 1
                kind = str(obj.get("error", "?"))
                point.error_kinds[kind] = point.error_kinds.get(kind, 0) + 1

        self._client(lab, argv, on_line, f"{route.name} sizes")

    def _load(self, lab: BenchLab, route: Route, outcome: PathOutcome) -> None:
        p = self.plan
        argv = self._base_argv(lab, route, "load") + [
            "--path", f"/{object_name(p.load_size)}", "--expect", str(p.load_size),
            "--repeats", str(p.load_repeats), "--timeout", "30"]
        for c in p.levels:
            argv += ["--level", f"{c}:{p.load_count}:{p.load_seconds:g}"]

        def on_line(obj: dict[str, Any]) -> None:
            if obj.get("kind") != "run":
                return
            run = load_run_from_json(int(obj["concurrency"]), obj)
            outcome.level(run.concurrency).runs.append(run)
            self.progress(f"{route.label} x{run.concurrency}: {run.rps:,.0f} req/s", True)

        self._client(lab, argv, on_line, f"{route.name} load")

    def _client(self, lab: BenchLab, args: list[str], on_line: Callable[[dict[str, Any]], None],
                what: str) -> None:
        """Run the client in the client namespace, feeding each JSON line to ``on_line``."""
        left = self.left(what)
        argv = ns_cmd(lab.client_ns, *python_argv("tools.bench.thesis_client", *args,
                                                  "--deadline", f"{left:.0f}"))
        run_json_client(argv, on_line, self.deadline + 60.0, self.clock, "the thesis client",
                        what)


def danted_version() -> str | None:
    """danted's version (None when not installed)."""
    if not Path(DANTED).exists():
        return None
    try:
        done = subprocess.run([DANTED, "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    words = (done.stdout + done.stderr).split()
    return words[1].rstrip(".") if len(words) > 1 else None


def tool_paths() -> dict[str, str | None]:
    """Where the third-party proxies were found (None: not installed)."""
    return {"microsocks": shutil.which("microsocks"),
            "danted": DANTED if Path(DANTED).exists() else None}
