"""Running `bench splice`: transfers per route and direction, requests per second,
and the memory of idle spliced pairs, each lab brought up once and always torn down.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tools.bench.harness import BenchTimeout, PathResult
from tools.bench.proc import CommandError, ns_cmd, run
from tools.bench.splice_paths import (
    ALL_ROUTES,
    DIRECTIONS,
    HOLD_PORT,
    HTTP_PORT,
    SMALL_SIZE,
    BenchLab,
    KernelTwinLab,
    RawStackLab,
    Route,
    Service,
    StackLab,
    StackSocksRoute,
    make_routes,
    python_argv,
)

RPS_ROUTES = ("splice", "splice-workers", "splice-raw", "splice-workers-raw", "uvsocks")
# Handshakes in flight while opening the idle pairs: below the stack's SYN and
# accept backlogs, so no SYN is dropped and retried a second later.
HOLD_CONCURRENCY = 64


@dataclass
class Plan:
    """What one run measures; built from the command line by splice.py."""

    routes: list[str]
    size: int
    repeats: int
    warmup: int
    rps: bool
    memory: bool
    concurrency: int = 64
    rps_count: int = 10_000
    rps_duration: float = 10.0
    pairs: int = 10_000
    max_seconds: float = 3600.0


@dataclass
class Outcome:
    """Everything measured: transfer results, rps and memory figures, route notes."""

    transfers: list[PathResult] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    rps: dict[str, dict[str, Any]] = field(default_factory=dict)
    memory: dict[str, Any] | None = None
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)


Progress = Callable[[str, bool], None]


def _nothing(text: str, advance: bool) -> None:
    return None


def planned_steps(plan: Plan) -> int:
    """How many progress steps a plan has (samples, rps runs, the memory run)."""
    transfer_routes = [r for r in plan.routes if r in
                       ALL_ROUTES]
    steps = len(transfer_routes) * len(DIRECTIONS) * plan.repeats
    return steps + (len(RPS_ROUTES) if plan.rps else 0) + (1 if plan.memory else 0)


class Runner:
    """Carries out a :class:`Plan` under one deadline, reporting progress."""

    def __init__(self, plan: Plan, progress: Progress = _nothing,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.plan = plan
        self.progress = progress
        self.clock = clock
        self.deadline = clock() + plan.max_seconds
        self.out = Outcome()

    def _check_deadline(self, what: str) -> None:
        if self.clock() > self.deadline:
            raise BenchTimeout(f"deadline of {self.plan.max_seconds:g}s passed during {what}")

    def run(self) -> Outcome:
        """Measure everything in the plan; the labs are removed even on failure."""
        want = set(self.plan.routes) | (set(RPS_ROUTES) if self.plan.rps else set())
        routes = make_routes(sorted(want))
        for lab_cls in (StackLab, RawStackLab, KernelTwinLab):
            mine = [r for r in routes if r.lab_kind == lab_cls.kind]
            need_memory = self.plan.memory and lab_cls.kind == "stack"
            if not mine and not need_memory:
                continue
            lab = lab_cls()
            self.progress(f"{lab.kind} lab: setting up", False)
            try:
                lab.start(self.plan.size)
                for route in mine:
                    self._route(lab, route)
                if need_memory:
                    self._memory(lab)
            finally:
                lab.stop()
        return self.out

    def _route(self, lab: BenchLab, route: Route) -> None:
        why = route.unavailable()
        if why is not None:
            self.out.unavailable[route.name] = why
            return
        self.progress(f"{route.label}: starting", False)
        route.start(lab)
        try:
            if route.name in self.plan.routes:
                for direction in DIRECTIONS:
                    self.out.transfers.append(self._transfers(lab, route, direction))
            if self.plan.rps and route.name in RPS_ROUTES:
                self.out.rps[route.name] = self._rps(lab, route)
                self.progress(f"{route.label}: {self.out.rps[route.name]['rps']:.0f} req/s", True)
        finally:
            summary = route.stop()
            if summary:
                self.out.summaries[route.name] = summary

    def _transfers(self, lab: BenchLab, route: Route, direction: str) -> PathResult:
        size = self.plan.size
        result = PathResult(f"{route.name}-{direction}", route.label, size, direction)
        for i in range(self.plan.warmup + self.plan.repeats):
            self._check_deadline(f"{route.name} {direction}")
            sample = lab.transfer(direction, route.via(lab), size)
            if i < self.plan.warmup:
                result.warmup.append(sample)
                continue
            result.samples.append(sample)
            self.progress(f"{route.label} {direction}: {sample.gbit_per_s:.2f} Gbit/s", True)
        return result

    def _rps(self, lab: BenchLab, route: Route) -> dict[str, Any]:
        self._check_deadline(f"{route.name} rps")
        proxy = route.proxy(lab)
        assert proxy is not None
        p = self.plan
        argv = ns_cmd(lab.client_ns, *python_argv(
            "tools.bench.splice_load", "rps", "--proxy", f"{proxy[0]}:{proxy[1]}",
            "--dest", f"{lab.server_ip}:{HTTP_PORT}", "--path", "/small.bin",
            "--expect", str(SMALL_SIZE), "--concurrency", str(p.concurrency),
            "--count", str(p.rps_count), "--duration", f"{p.rps_duration:g}"))
        cpu_before = process_tree_cpu(route.pid)
        out = run(argv, timeout=p.rps_duration + 60.0)
        result = parse_json_line(out)
        # CPU seconds of the proxy (and its workers) per request: what one session
        # costs, whatever else the machine is doing.
        cpu = process_tree_cpu(route.pid) - cpu_before
        result["proxy_cpu_seconds"] = cpu
        ok = int(result.get("ok", 0))
        result["cpu_ms_per_request"] = cpu * 1000 / ok if ok else None
        return result

    def _memory(self, lab: BenchLab) -> None:
        self._check_deadline("memory")
        p = self.plan
        self.progress(f"memory: opening {p.pairs} spliced pairs", False)
        holder = Service("hold", ns_cmd(lab.server_ns, *python_argv(
            "tools.bench.splice_servers", "hold", "--listen", f"{lab.server_ip}:{HOLD_PORT}",
            "--max", str(p.pairs + 16))), lab.logdir)
        route = StackSocksRoute("splice", max_connections=p.pairs + 64)
        holder.start()
        try:
            route.start(lab)
            try:
                self.out.memory = self._hold_pairs(lab, route)
            finally:
                self.out.summaries["memory-splice"] = route.stop()
        finally:
            holder.stop()
        splices = self.out.summaries["memory-splice"].get("splice", {}).get("splices")
        self.out.memory["stack_splices"] = splices
        self.progress(f"memory: {self.out.memory['delta_bytes'] / 1e6:.1f} MB", True)

    def _hold_pairs(self, lab: BenchLab, route: Route) -> dict[str, Any]:
        p = self.plan
        before = vm_rss(route.pid)
        limit = min(600.0, 30.0 + p.pairs / 50.0)
        proxy = route.proxy(lab)
        assert proxy is not None
        argv = ns_cmd(lab.client_ns, *python_argv(
            "tools.bench.splice_load", "hold", "--proxy", f"{proxy[0]}:{proxy[1]}",
            "--dest", f"{lab.server_ip}:{HOLD_PORT}", "--count", str(p.pairs),
            "--concurrency", str(HOLD_CONCURRENCY), "--duration", f"{limit:g}"))
        t0 = time.monotonic()
        client = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, start_new_session=True)
        try:
            line = read_line(client, limit + 10.0)
            opened = time.monotonic() - t0
            report = parse_json_line(line)
            after = vm_rss(route.pid)
            assert client.stdin is not None
            client.stdin.write(b"\n")
            client.stdin.flush()
            client.wait(timeout=60.0)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait(timeout=10.0)
        held = int(report.get("held", 0))
        return {"pairs_asked": p.pairs, "pairs_held": held, "failed": report.get("failed", 0),
                "rss_before_bytes": before, "rss_after_bytes": after,
                "delta_bytes": after - before, "open_seconds": opened,
                "bytes_per_pair": (after - before) / held if held else None}


def process_tree_cpu(pid: int) -> float:
    """User plus system CPU seconds of process ``pid`` and of its live descendants
    (a supervisor's workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo, seen = 0.0, [pid], set()
    while todo and len(seen) < 1024:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / tick   # utime, stime
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue   # it ended meanwhile
    return total


def vm_rss(pid: int) -> int:
    """VmRSS of process ``pid`` in bytes (from /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise CommandError(f"no VmRSS for pid {pid}")


def read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The first line ``proc`` writes on stdout, within ``timeout`` seconds."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise CommandError(f"no report within {timeout:g}s")
    line = proc.stdout.readline().decode(errors="replace")
    if not line:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise CommandError(f"the load client exited without a report: {err[-1500:]}")
    return line


def parse_json_line(text: str) -> dict[str, Any]:
    """The last JSON object line of ``text``; CommandError if there is none."""
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    raise CommandError(f"no JSON report in {text[-300:]!r}")

