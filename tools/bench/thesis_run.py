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

from tools.bench.common_run import LabRunner, Progress, count_error, no_progress
from tools.bench.proc import ns_cmd
from tools.bench.splice_paths import (
    PROXY_PORT,
    BenchLab,
    Route,
    Service,
    UvSocksRoute,
    _popen,
    make_routes,
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


class ThesisRunner(LabRunner):
    """Carries out a :class:`ThesisPlan` under one deadline, reporting progress."""

    client_module = "tools.bench.thesis_client"
    client_name = "the thesis client"

    def __init__(self, plan: ThesisPlan, progress: Progress = no_progress,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(plan.max_seconds, progress, clock)
        self.plan = plan
        self.outcomes: list[PathOutcome] = []

    def run(self) -> list[PathOutcome]:
        """Measure every path; each lab is removed even on failure."""
        routes = thesis_routes(self.plan.paths)
        for r in [r for r in routes if r.unavailable()]:
            self.outcomes.append(PathOutcome(r.name, r.label, unavailable=r.unavailable()))
        self.run_labs([r for r in routes if not r.unavailable()])
        order = {name: i for i, name in enumerate(THESIS_PATHS)}
        self.outcomes.sort(key=lambda o: order.get(o.name, len(order)))
        return self.outcomes

    def make_objects(self, lab: BenchLab) -> None:
        """The origin's file of every size the plan fetches."""
        assert lab.origin is not None
        for size in sorted(set(self.plan.sizes) | {self.plan.load_size}):
            lab.origin.make_file(object_name(size), size, random=False)

    def measure_route(self, lab: BenchLab, route: Route) -> None:
        """Both experiments on ``route``, into a new PathOutcome."""
        outcome = PathOutcome(route.name, route.label)
        self.outcomes.append(outcome)
        if self.plan.sizes:
            self._sizes(lab, route, outcome)
        if self.plan.levels:
            self._load(lab, route, outcome)

    def route_stopped(self, route: Route, summary: dict[str, Any]) -> None:
        """The route's process summary, on its outcome."""
        # measure_route appended this route's outcome before anything could fail.
        self.outcomes[-1].summary = summary

    def _sizes(self, lab: BenchLab, route: Route, outcome: PathOutcome) -> None:
        p = self.plan
        argv = self.base_argv(lab, route, "sizes") + ["--warmup", str(p.warmup)]
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
                count_error(point, obj)

        self.client(lab, argv, on_line, f"{route.name} sizes")

    def _load(self, lab: BenchLab, route: Route, outcome: PathOutcome) -> None:
        p = self.plan
        argv = self.base_argv(lab, route, "load") + [
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

        self.client(lab, argv, on_line, f"{route.name} load")


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
