"""`tapsplice bench thesis`: the thesis's two experiments, with their figures.

1. Response time against transfer size (1 KiB .. 100 MiB): one client at a time
   fetches an object from nginx with an HTTP/1.0 GET, through SOCKS5 or straight
   through a router, and times the request to its last byte.
2. The same under load: 1, 16, 64 and 256 concurrent clients fetching a fixed
   object: mean and p99 response time, requests per second.

Paths: the kernel router (the baseline), the stack's router, the stack's SOCKS5
proxy spliced and in copy mode, a uvloop SOCKS5 proxy on kernel sockets,
microsocks and Dante (the last two when installed), all in one invocation.
Raw figures go to JSON with the machine and versions; each experiment writes a PNG.
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
from tools.bench.common_report import measure_or_report, ms_cell, with_progress
from tools.bench.harness import MAX_REPEATS, build_report, format_size, write_json
from tools.bench.start import ready_to_run
from tools.bench.thesis_results import PathOutcome, path_record
from tools.bench.thesis_run import (
    THESIS_PATHS,
    ThesisPlan,
    ThesisRunner,
    danted_version,
    planned_steps,
    tool_paths,
)

FULL = {"sizes": [1 << 10, 10 << 10, 100 << 10, 1 << 20, 10 << 20, 100 << 20],
        "levels": [1, 16, 64, 256], "repeats": 50, "load_repeats": 3, "load_seconds": 3.0}
QUICK = {"sizes": [1 << 10, 1 << 20], "levels": [1, 16], "repeats": 5, "load_repeats": 1,
         "load_seconds": 1.0}
LOAD_SIZE = 100 << 10
# Requests per load run at most, whatever its duration.
LOAD_COUNT = 20_000
MAX_SIZE = 1 << 30
MAX_LEVEL = 1024


_int_in = argtypes.int_in
_seconds = argtypes.seconds


_size = argtypes.size_up_to(MAX_SIZE)

def add_thesis_parser(sub: Any) -> None:
    """Register `bench thesis` on the `bench` sub-command parsers."""
    p = sub.add_parser("thesis", help="response time against size and under load, with plots",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="two sizes, two levels, few repeats (a smoke run)")
    p.add_argument("--only", action="append", choices=THESIS_PATHS, default=None,
                   metavar="PATH", help=f"measure only these paths (repeatable): "
                   f"{', '.join(THESIS_PATHS)}")
    p.add_argument("--repeats", type=_int_in(1, MAX_REPEATS), default=None,
                   help="requests per size up to 1 MiB, at most 3 above (default 50; "
                   "--quick: 5); load runs per level are at most 3 of these")
    p.add_argument("--warmup", type=_int_in(0, 10), default=1,
                   help="uncounted requests per size first (default 1)")
    p.add_argument("--sizes", type=_size, nargs="+", default=None, metavar="SIZE",
                   help="transfer sizes of experiment 1 (default 1K 10K 100K 1M 10M 100M)")
    p.add_argument("--levels", type=_int_in(1, MAX_LEVEL), nargs="+", default=None,
                   metavar="N", help="concurrency levels of experiment 2 (default 1 16 64 256)")
    p.add_argument("--load-size", type=_size, default=LOAD_SIZE,
                   help="object size of experiment 2 (default 100K)")
    p.add_argument("--load-seconds", type=_seconds, default=None,
                   help="seconds per load run (default 3; --quick: 1)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="where to write results (default results/bench-thesis-TIME.json)")
    p.add_argument("--plots", type=Path, default=Path("results"), metavar="DIR",
                   help="directory of the PNG figures (default results/)")
    p.add_argument("--max-seconds", type=_seconds, default=3600.0,
                   help="limit for the whole run (default 3600)")
    p.set_defaults(func=cmd_thesis)


def plan_from_args(args: argparse.Namespace) -> ThesisPlan:
    """The plan the options describe (--quick changes only the defaults)."""
    base = QUICK if args.quick else FULL
    repeats = args.repeats or base["repeats"]
    return ThesisPlan(
        paths=[p for p in THESIS_PATHS if not args.only or p in args.only],
        sizes=sorted(set(args.sizes or base["sizes"])),
        repeats=repeats, warmup=args.warmup,
        levels=sorted(set(args.levels or base["levels"])), load_size=args.load_size,
        load_repeats=min(base["load_repeats"], repeats),
        load_seconds=args.load_seconds or base["load_seconds"], load_count=LOAD_COUNT,
        max_seconds=args.max_seconds)


def sizes_table(outcomes: Sequence[PathOutcome], sizes: Sequence[int]) -> Table:
    """Experiment 1: median [min-max] ms from the GET to the last byte, per size."""
    table = Table(title="Response time, GET to last byte: median \\[min-max] ms")
    table.add_column("path")
    for size in sizes:
        table.add_column(format_size(size), justify="right")
    table.add_column("note")
    for o in outcomes:
        points = {p.size: p for p in o.sizes}
        cells = [ms_cell(points[s].stats("response")) if s in points else "-" for s in sizes]
        errors = sum(p.errors for p in o.sizes)
        note = o.unavailable or (f"{errors} failed requests" if errors else "")
        table.add_row(o.label, *cells, note)
    return table


def load_table(outcomes: Sequence[PathOutcome], object_size: int) -> Table:
    """Experiment 2: mean and p99 (ms, connect to last byte) and req/s per level."""
    table = Table(title=f"Under load, {format_size(object_size)} objects: "
                  "median \\[min-max] over runs")
    for col in ("path", "clients", "mean ms", "p99 ms", "req/s", "errors"):
        table.add_column(col, justify="left" if col == "path" else "right")
    for o in outcomes:
        if o.unavailable:
            table.add_row(o.label, "-", "-", "-", "-", o.unavailable)
        for lv in o.levels:
            rps = lv.stats("rps")
            rps_text = "-" if rps is None else f"{rps.median:,.0f} [{rps.min:,.0f}-{rps.max:,.0f}]"
            table.add_row(o.label, str(lv.concurrency), ms_cell(lv.stats("mean")),
                          ms_cell(lv.stats("p99")), rps_text, str(lv.errors))
    return table


def build_thesis_report(plan: ThesisPlan, outcomes: Sequence[PathOutcome], argv: Sequence[str],
                        plots: dict[str, str]) -> dict[str, Any]:
    """The JSON document: the harness's envelope, both experiments per path, plots."""
    report = build_report("thesis", [], "kernel",
                          {**dataclasses.asdict(plan), "argv": list(argv)})
    report["versions"]["dante"] = danted_version()
    report.update(paths=[path_record(o) for o in outcomes], tools=tool_paths(), plots=plots,
                  metrics={"response": "GET sent to last body byte",
                           "connect": "connect() start to SOCKS5 reply (or TCP connect)",
                           "total": "connect() start to last body byte",
                           "load mean/p99": "of total, per run"})
    return report


def measure(plan: ThesisPlan, console: Console) -> list[PathOutcome]:
    """Run the plan under a progress bar."""
    return with_progress(console, planned_steps(plan),
                         lambda on_progress: ThesisRunner(plan, on_progress).run())


def output_paths(args: argparse.Namespace, now: _dt.datetime) -> tuple[Path, Path, Path]:
    """Where the JSON and the two PNGs go (one timestamp for all three)."""
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    json_path = args.json or Path("results") / f"bench-thesis-{stamp}.json"
    return (json_path, args.plots / f"bench-thesis-{stamp}-sizes.png",
            args.plots / f"bench-thesis-{stamp}-load.png")


def write_plots(plan: ThesisPlan, outcomes: Sequence[PathOutcome], sizes_png: Path,
                load_png: Path) -> dict[str, str]:
    """Write the figures of the experiments that ran; their paths by experiment."""
    from tools.bench.thesis_plot import plot_load, plot_sizes

    plots = {}
    if any(o.sizes for o in outcomes):
        plots["sizes"] = str(plot_sizes(outcomes, sizes_png))
    if any(o.levels for o in outcomes):
        plots["load"] = str(plot_load(outcomes, load_png, plan.load_size))
    return plots


def cmd_thesis(args: argparse.Namespace) -> int:
    """`tapsplice bench thesis`: measure, print the tables, write JSON and PNGs."""
    console = Console(width=None if sys.stdout.isatty() else 140)
    if not ready_to_run("thesis", console):
        return 2
    plan = plan_from_args(args)
    json_path, sizes_png, load_png = output_paths(args, _dt.datetime.now(_dt.UTC))
    outcomes = measure_or_report(console, "thesis", lambda: measure(plan, console))
    if outcomes is None:
        return 1
    if plan.sizes:
        console.print(sizes_table(outcomes, plan.sizes))
    if plan.levels:
        console.print(load_table(outcomes, plan.load_size))
    try:
        plots = write_plots(plan, outcomes, sizes_png, load_png)
        path = write_json(json_path, build_thesis_report(plan, outcomes, sys.argv[1:], plots))
    except OSError as exc:
        console.print(f"[red]cannot write results:[/red] {exc}")
        return 1
    for kind, png in plots.items():
        console.print(f"figure ({kind}) written to {png}")
    console.print(f"results written to {path}")
    return 0
