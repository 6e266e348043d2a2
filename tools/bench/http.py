"""`tapsplice bench http`: the HTTP proxy's benchmark, its baseline in the same run.

1. Fetch time against object size (1 KiB .. 100 MiB), every request a cache miss
   with the cache on: the kernel router (straight to nginx, the baseline), and
   `http-proxy` in copy mode, splice mode, and splice mode with --splice-min 0;
   each with "close" clients (one request per connection: the symmetric splice)
   and "keep-alive" clients (all requests of a size on one connection: the
   one-way splice).
2. Cache hits per second: 1 KiB and 100 KiB objects, 64 kept-alive clients, copy
   and splice mode (hits are served by the proxy itself in both).
3. The tap's cost: 8 MB misses (storable, so the TCP Tap copies them into the
   cache) in splice mode with the cache on against --cache-size 0 (no tap).
4. The shared disk store: hits per second and the hit ratio over fresh
   connections (one request each) round a series of URLs stored first, with
   --cache-dir in one process against --workers 2 sharing the store.

Tables at the end, raw figures in JSON, experiment 1 as a log-log PNG.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tools.bench import args as argtypes
from tools.bench.common_report import OnProgress, measure_or_report, ms_cell, with_progress
from tools.bench.harness import MAX_REPEATS, Stats, build_report, format_size
from tools.bench.harness import write_json as _write_json
from tools.bench.http_run import (
    BEHAVIOURS,
    HTTP_PATHS,
    LABELS,
    SHARED_PATHS,
    HitRun,
    HttpPlan,
    HttpRunner,
    Series,
    planned_steps,
)
from tools.bench.start import ready_to_run

FULL = {"sizes": [1 << 10, 10 << 10, 100 << 10, 1 << 20, 10 << 20, 100 << 20], "repeats": 30,
        "hit_sizes": [1 << 10, 100 << 10], "hit_seconds": 3.0, "tap_repeats": 10,
        "shared_keys": 64}
QUICK = {"sizes": [1 << 10, 1 << 20], "repeats": 3, "hit_sizes": [1 << 10],
         "hit_seconds": 0.5, "tap_repeats": 2, "shared_keys": 16}
HIT_CONCURRENCY = 64
# Requests per hit run at most, whatever its duration.
HIT_COUNT = 50_000
# Decimal 8 MB: under the proxy's default --max-object of 8 MiB, so it is stored.
TAP_SIZE = 8_000_000
MAX_SIZE = 1 << 30


def add_http_parser(sub: Any) -> None:
    """Register `bench http` on the `bench` sub-command parsers."""
    p = sub.add_parser("http", help="the HTTP proxy: fetch time vs size, cache hits/s, tap cost",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="two sizes, few repeats, short hit runs (a smoke run)")
    p.add_argument("--only", action="append", choices=(*HTTP_PATHS, *SHARED_PATHS),
                   default=None, metavar="PATH", help=f"measure only these paths "
                   f"(repeatable): {', '.join((*HTTP_PATHS, *SHARED_PATHS))}")
    p.add_argument("--repeats", type=argtypes.int_in(1, MAX_REPEATS), default=None,
                   help="requests per size up to 1 MiB, at most 3 above (default 30; "
                   "--quick: 3)")
    p.add_argument("--sizes", type=argtypes.size_up_to(MAX_SIZE), nargs="+", default=None, metavar="SIZE",
                   help="object sizes of experiment 1 (default 1K 10K 100K 1M 10M 100M)")
    p.add_argument("--json", type=Path, default=None, metavar="FILE",
                   help="where to write results (default results/bench-http-TIME.json)")
    p.add_argument("--plots", type=Path, default=Path("results"), metavar="DIR",
                   help="directory of the PNG figure (default results/)")
    p.add_argument("--max-seconds", type=argtypes.seconds, default=1800.0,
                   help="limit for the whole run (default 1800)")
    p.set_defaults(func=cmd_http)


def plan_from_args(args: argparse.Namespace) -> HttpPlan:
    """The plan the options describe (--quick changes only the defaults)."""
    base = QUICK if args.quick else FULL
    return HttpPlan(
        paths=[p for p in HTTP_PATHS if not args.only or p in args.only],
        sizes=sorted(set(args.sizes or base["sizes"])),
        repeats=args.repeats or base["repeats"],
        hit_sizes=list(base["hit_sizes"]), hit_concurrency=HIT_CONCURRENCY,
        hit_seconds=base["hit_seconds"], hit_count=HIT_COUNT,
        tap_size=TAP_SIZE, tap_repeats=min(args.repeats or base["tap_repeats"],
                                           base["tap_repeats"]),
        max_seconds=args.max_seconds,
        shared_paths=[p for p in SHARED_PATHS if not args.only or p in args.only],
        shared_keys=int(str(base["shared_keys"])))


def _note(s: Sequence[Series]) -> str:
    errors = sum(x.errors for x in s)
    bad = sum(x.verified is False for x in s)
    unchecked = sum(x.verified is None for x in s)
    parts = [f"{errors} failed" if errors else "", f"{bad} sha256 mismatch" if bad else "",
             f"{unchecked} unchecked" if unchecked else ""]
    return ", ".join(p for p in parts if p)


def sizes_table(series: Sequence[Series], sizes: Sequence[int]) -> Table:
    """Experiment 1: median [min-max] ms, request sent to last body byte."""
    table = Table(title="Fetch time, request to last body byte (cache misses): "
                  "median \\[min-max] ms")
    for col in ("path", "clients"):
        table.add_column(col)
    for size in sizes:
        table.add_column(format_size(size), justify="right")
    table.add_column("note")
    for path in HTTP_PATHS:
        for behaviour in BEHAVIOURS:
            row = [s for s in series if s.experiment == "sizes" and s.path == path
                   and s.behaviour == behaviour]
            if not row:
                continue
            by_size = {s.size: s for s in row}
            cells = [ms_cell(by_size[z].stats()) if z in by_size else "-" for z in sizes]
            table.add_row(LABELS[path], behaviour, *cells, _note(row))
    return table


def _rate(st: Stats | None, unit: str = "") -> str:
    if st is None:
        return "-"
    return f"{st.median:,.2f}{unit} [{st.min:,.2f}-{st.max:,.2f}]"


def hits_table(hits: Sequence[HitRun]) -> Table:
    """Experiment 2: requests per second of cache hits, per path and size."""
    table = Table(title=f"Cache hits, {HIT_CONCURRENCY} kept-alive clients")
    for col in ("path", "size", "req/s", "served from cache", "requests", "errors"):
        table.add_column(col, justify="left" if col == "path" else "right")
    for h in hits:
        share = f"{h.hits / h.ok:.0%}" if h.ok else "-"
        table.add_row(LABELS[h.path], format_size(h.size), f"{h.rps:,.0f}", share, str(h.ok),
                      str(h.errors))
    return table


def shared_table(hits: Sequence[HitRun]) -> Table:
    """Experiment 4: hits over fresh connections, one process against workers sharing
    the disk store (both measured in this run)."""
    table = Table(title=f"Hits from the disk store over fresh connections, "
                  f"{HIT_CONCURRENCY} clients")
    for col in ("path", "size", "req/s", "vs 1 process", "hit ratio", "requests", "errors"):
        table.add_column(col, justify="left" if col == "path" else "right")
    one = {h.size: h.rps for h in hits if h.path == "disk"}
    for h in hits:
        base = one.get(h.size)
        ratio = f"{h.rps / base:.2f}x" if base else "-"
        share = f"{h.hits / h.ok:.1%}" if h.ok else "-"
        table.add_row(LABELS[h.path], format_size(h.size), f"{h.rps:,.0f}", ratio, share,
                      str(h.ok), str(h.errors))
    return table


def tap_table(series: Sequence[Series]) -> Table:
    """Experiment 3: Gbit/s median [min-max] of 8 MB misses with and without the tap."""
    table = Table(title="The tap's cost: 8 MB misses in splice mode, Gbit/s median \\[min-max]")
    for col in ("path", "clients", "Gbit/s", "ms median", "note"):
        table.add_column(col, justify="left" if col in ("path", "clients", "note") else "right")
    for s in (x for x in series if x.experiment == "tap"):
        st = s.stats()
        table.add_row(LABELS[s.path] + (" (tap)" if s.path == "splice" else " (no tap)"),
                      s.behaviour, _rate(s.gbit()), "-" if st is None else f"{st.median * 1e3:.2f}",
                      _note([s]))
    return table


def build_http_report(plan: HttpPlan, runner: HttpRunner, argv: Sequence[str],
                      plots: dict[str, str]) -> dict[str, Any]:
    """The JSON document: the harness's envelope, every series, hit run and summary."""
    report = build_report("http", [], "kernel", {**dataclasses.asdict(plan), "argv": list(argv)})
    measured = dict.fromkeys(s.path for s in runner.series) | dict.fromkeys(
        h.path for h in runner.hits)
    report["paths"] = [{"name": name, "label": LABELS[name]} for name in measured]
    report.update(series=[s.record() for s in runner.series],
                  hits=[h.record() for h in runner.hits], proxy_counters=runner.summaries,
                  plots=plots, labels=dict(LABELS),
                  metrics={"seconds": "request sent to last body byte",
                           "sha256_verified": "one extra uncounted request per series, "
                                              "its body hashed",
                           "hits": "responses carrying Age (served from the cache)"})
    return report


def measure(plan: HttpPlan, console: Console) -> HttpRunner:
    """Run the plan under a progress bar; the runner keeps what was measured."""
    runner = HttpRunner(plan)

    def work(on_progress: OnProgress) -> HttpRunner:
        runner.progress = on_progress
        runner.run()
        return runner

    return with_progress(console, planned_steps(plan), work)


def output_paths(args: argparse.Namespace, now: _dt.datetime) -> tuple[Path, Path]:
    """Where the JSON and the PNG go (one timestamp for both)."""
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    return (args.json or Path("results") / f"bench-http-{stamp}.json",
            args.plots / f"bench-http-{stamp}-sizes.png")


def cmd_http(args: argparse.Namespace) -> int:
    """`tapsplice bench http`: measure, print the tables, write JSON and the PNG."""
    from tools.bench.http_plot import plot_sizes

    console = Console(width=None if sys.stdout.isatty() else 160)
    if not ready_to_run("http", console):
        return 2
    plan = plan_from_args(args)
    json_path, png = output_paths(args, _dt.datetime.now(_dt.UTC))
    runner = measure_or_report(console, "http", lambda: measure(plan, console))
    if runner is None:
        return 1
    if any(s.experiment == "sizes" for s in runner.series):
        console.print(sizes_table(runner.series, plan.sizes))
    kept = [h for h in runner.hits if not h.fresh]
    if kept:
        console.print(hits_table(kept))
    fresh = [h for h in runner.hits if h.fresh]
    if fresh:
        console.print(shared_table(fresh))
    if any(s.experiment == "tap" for s in runner.series):
        console.print(tap_table(runner.series))
    try:
        plots = {"sizes": str(plot_sizes(runner.series, png))} if runner.series else {}
        path = _write_json(json_path, build_http_report(plan, runner, sys.argv[1:], plots))
    except OSError as exc:
        console.print(f"[red]cannot write results:[/red] {exc}")
        return 1
    for png_path in plots.values():
        console.print(f"figure written to {png_path}")
    console.print(f"results written to {path}")
    return 0

