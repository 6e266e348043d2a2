"""Running `bench http`: the labs, the proxy processes, the client, the results.

The kernel router runs in the kernel twin lab; the HTTP proxy's paths run in the
stack's lab, one `tapsplice http-proxy --lab` process per path. The client
(tools/bench/http_client.py) runs in the client namespace and prints JSON
lines; everything is torn down on the way out (failure, Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tools.bench.common_run import LabRunner, Progress, count_error, no_progress
from tools.bench.harness import Stats, summarize
from tools.bench.splice_load import OkRate
from tools.bench.splice_paths import (
    BenchLab,
    KernelRoute,
    Route,
    Service,
    transfer_timeout,
)
from tools.bench.thesis_run import repeats_for

# Experiment 1's paths, in table order; "splice-notap" serves only experiment 3.
HTTP_PATHS = ("kernel", "copy", "splice", "splice-min0")
TAP_PATHS = ("splice", "splice-notap")
HIT_PATHS = ("copy", "splice")
#: Hits over fresh connections from the disk store, one process against two workers
#: sharing it (one run, same lab, same objects).
SHARED_PATHS = ("disk", "disk-workers")
SHARED_WORKERS = 2
BEHAVIOURS = ("close", "keep-alive")
PROXY_ADDR = ("198.18.0.2", 3128)
LABELS = {"kernel": "kernel router", "copy": "http-proxy copy", "splice": "http-proxy splice",
          "splice-min0": "http-proxy splice --splice-min 0",
          "splice-notap": "http-proxy splice --cache-size 0",
          "disk": "http-proxy --cache-dir, 1 process",
          "disk-workers": f"http-proxy --cache-dir, {SHARED_WORKERS} workers"}


#: The load comes from one client address: no per-client share of the slots applies.
ONE_CLIENT_ADDRESS = ("--max-per-client", "256", "--max-handshakes-per-client", "256")


class HttpProxyRoute(Route):
    """`tapsplice http-proxy --lab` with the options of one path."""

    lab_kind = "stack"

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.label = LABELS[name]
        extra = {"copy": ["--mode", "copy"], "splice": ["--mode", "splice"],
                 "splice-min0": ["--mode", "splice", "--splice-min", "0"],
                 "splice-notap": ["--mode", "splice", "--cache-size", "0"],
                 "disk": ["--mode", "splice"],
                 "disk-workers": ["--mode", "splice", "--workers", str(SHARED_WORKERS)]}
        self.options = [*ONE_CLIENT_ADDRESS, *extra[name]]

    def _service(self, lab: Any) -> Service:
        options = list(self.options)
        if self.name in SHARED_PATHS:   # a new, empty store for each route
            options += ["--cache-dir", str(lab.logdir / f"cache-{self.name}")]
        return Service(f"http-{self.name}", lab.stack_argv("http-proxy", *options),
                       lab.logdir)

    def proxy(self, lab: Any) -> tuple[str, int]:
        """The proxy's listening address in the stack (client side)."""
        return PROXY_ADDR


def make_http_routes(names: list[str]) -> list[Route]:
    """The routes called ``names`` (experiment 1's order, then splice-notap)."""
    order = [*HTTP_PATHS, "splice-notap", *SHARED_PATHS]
    return [KernelRoute() if n == "kernel" else HttpProxyRoute(n) for n in order if n in names]


@dataclass
class HttpPlan:
    """What one run measures; built from the command line by http.py."""

    paths: list[str]
    sizes: list[int]
    repeats: int
    hit_sizes: list[int]
    hit_concurrency: int
    hit_seconds: float
    hit_count: int
    tap_size: int
    tap_repeats: int
    max_seconds: float
    #: Routes of the shared-store hit runs, and the URLs each run goes round.
    shared_paths: list[str] = field(default_factory=list)
    shared_keys: int = 0

    def routes(self) -> list[str]:
        """Every route the plan needs, experiment 3's extra one included."""
        names = list(self.paths)
        if self.tap_size and "splice" in names:
            names.append("splice-notap")
        return names + (self.shared_paths if self.shared_keys else [])


@dataclass
class Series:
    """The requests of one (experiment, path, behaviour, size)."""

    experiment: str
    path: str
    behaviour: str
    size: int
    samples: list[float] = field(default_factory=list)
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    verified: bool | None = None

    def stats(self) -> Stats | None:
        """Median/min/max seconds (None without samples)."""
        return summarize(self.samples) if self.samples else None

    def gbit(self) -> Stats | None:
        """Median/min/max Gbit/s over the samples (None without samples)."""
        rates = [self.size * 8 / s / 1e9 for s in self.samples if s > 0]
        return summarize(rates) if rates else None

    def record(self) -> dict[str, Any]:
        """The JSON object: every sample and the reduction."""
        st = self.stats()
        return {"experiment": self.experiment, "path": self.path, "behaviour": self.behaviour,
                "size_bytes": self.size, "samples_seconds": list(self.samples),
                "errors": self.errors, "error_kinds": dict(self.error_kinds),
                "sha256_verified": self.verified,
                "seconds": None if st is None else vars(st).copy()}


@dataclass(frozen=True)
class HitRun(OkRate):
    """One cache-hit load run of experiment 2."""

    path: str
    size: int
    ok: int
    hits: int
    errors: int
    seconds: float
    error_kinds: dict[str, int]
    #: A new connection per request (the shared-store runs) or kept-alive ones.
    fresh: bool = False

    def record(self) -> dict[str, Any]:
        """The JSON object of the run."""
        return {**vars(self), "size_bytes": self.size, "rps": self.rps}


def planned_steps(plan: HttpPlan) -> int:
    """Progress steps: every counted request and every hit run."""
    per_path = len(BEHAVIOURS) * sum(repeats_for(s, plan.repeats) + 1 for s in plan.sizes)
    steps = per_path * len(plan.paths)
    steps += len(plan.hit_sizes) * len([p for p in plan.paths if p in HIT_PATHS])
    if plan.shared_keys:
        steps += len(plan.hit_sizes) * len(plan.shared_paths)
    if plan.tap_size and "splice" in plan.paths:
        steps += 2 * len(BEHAVIOURS) * (plan.tap_repeats + 1)
    return steps


def object_name(size: int) -> str:
    """The origin's file name for an object of ``size`` bytes."""
    return f"obj-{size}.bin"


class HttpRunner(LabRunner):
    """Carries out an :class:`HttpPlan` under one deadline, reporting progress."""

    client_module = "tools.bench.http_client"
    client_name = "the http client"
    min_client_deadline = 1.0

    def __init__(self, plan: HttpPlan, progress: Progress = no_progress,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(plan.max_seconds, progress, clock)
        self.plan = plan
        self.series: list[Series] = []
        self.hits: list[HitRun] = []
        self.summaries: dict[str, dict[str, Any]] = {}
        self.objects: dict[int, str] = {}

    def run(self) -> None:
        """Measure every route; each lab is removed even on failure."""
        self.run_labs(make_http_routes(self.plan.routes()))

    def make_objects(self, lab: BenchLab) -> None:
        """Seeded random files, so every body can be checked against a sha256."""
        assert lab.origin is not None
        p = self.plan
        for size in sorted(set(p.sizes) | set(p.hit_sizes) | ({p.tap_size} - {0})):
            made = lab.origin.make_file(object_name(size), size, random=True)
            assert made.sha256 is not None
            self.objects[size] = made.sha256

    def measure_route(self, lab: BenchLab, route: Route) -> None:
        """The experiments ``route`` takes part in, in order."""
        p = self.plan
        if route.name in p.paths and p.sizes:
            for behaviour in BEHAVIOURS:
                self._sizes(lab, route, "sizes", behaviour, p.sizes, p.repeats)
        if route.name in HIT_PATHS:
            for size in p.hit_sizes:
                self._hits(lab, route, size)
        if route.name in p.shared_paths and p.shared_keys:
            for size in p.hit_sizes:
                self._hits(lab, route, size, keys=p.shared_keys)
        if route.name in TAP_PATHS and p.tap_size:
            for behaviour in BEHAVIOURS:
                self._sizes(lab, route, "tap", behaviour, [p.tap_size], p.tap_repeats)

    def route_stopped(self, route: Route, summary: dict[str, Any]) -> None:
        """The proxy's counters, by route name."""
        self.summaries[route.name] = summary

    def _spec(self, size: int, repeats: int) -> str:
        return f"{size}:/{object_name(size)}:{repeats}:{self.objects[size]}"

    def _base_argv(self, lab: BenchLab, route: Route, mode: str) -> list[str]:
        return self.base_argv(lab, route, mode, "--tag", secrets.token_hex(4))

    def _sizes(self, lab: BenchLab, route: Route, experiment: str, behaviour: str,
               sizes: list[int], repeats: int) -> None:
        argv = self._base_argv(lab, route, "sizes") + ["--behaviour", behaviour]
        table: dict[int, Series] = {}
        for size in sizes:
            n = repeats_for(size, repeats) if experiment == "sizes" else repeats
            argv += ["--object", self._spec(size, n)]
            table[size] = Series(experiment, route.name, behaviour, size)
            self.series.append(table[size])
        argv += ["--timeout", f"{transfer_timeout(max(sizes)):g}"]

        def on_line(obj: dict[str, Any]) -> None:
            s = table.get(int(obj.get("size", -1)))
            if s is None:
                return
            kind = obj.get("kind")
            if kind == "sample":
                s.samples.append(float(obj["seconds"]))
                self.progress(f"{route.label} {behaviour} {s.size} B: "
                              f"{s.samples[-1] * 1e3:.2f} ms", True)
            elif kind == "verified":
                s.verified = bool(obj["ok"])
                self.progress(f"{route.label} {behaviour} {s.size} B: checked", True)
            elif kind == "error":
                count_error(s, obj)

        self.client(lab, argv, on_line, f"{route.name} {experiment} {behaviour}")

    def _hits(self, lab: BenchLab, route: Route, size: int, keys: int = 0) -> None:
        """A hit run; with ``keys``, over fresh connections round that many URLs."""
        p = self.plan
        argv = self._base_argv(lab, route, "hits") + [
            "--object", self._spec(size, 1), "--concurrency", str(p.hit_concurrency),
            "--count", str(p.hit_count), "--seconds", f"{p.hit_seconds:g}", "--timeout", "30"]
        if keys:
            argv += ["--keys", str(keys), "--fresh"]

        def on_line(obj: dict[str, Any]) -> None:
            if obj.get("kind") == "hits":
                run = HitRun(route.name, size, int(obj["ok"]), int(obj["hits"]),
                             int(obj["errors"]), float(obj["seconds"]),
                             dict(obj.get("error_kinds", {})), bool(keys))
                self.hits.append(run)
                self.progress(f"{route.label} hits {size} B: {run.rps:,.0f} req/s", True)
            elif obj.get("kind") == "error":
                self.hits.append(HitRun(route.name, size, 0, 0, 1, 0.0,
                                        {str(obj.get("error")): 1}, bool(keys)))
                self.progress(f"{route.label} hits {size} B: failed", True)

        self.client(lab, argv, on_line, f"{route.name} hits")
