"""`tapsplice bench splice`: the splicing SOCKS proxy against real baselines, one run.

1. Bulk transfers (download from nginx, upload to a Python sink), both directions,
   through: the stack's SOCKS5 proxy in splice mode and in copy mode, the stack's
   router, the bare Python TAP forwarder (the ceiling), the same splice, router and
   bare forwarder on raw sockets over veth pairs (`lab up --raw`; the forwarder also
   on a TPACKET_V3 ring), the kernel router (veth twin lab), a uvloop SOCKS5 proxy on
   kernel sockets (tools/bench/uvsocks.py) and microsocks, the last two in the twin
   lab's router namespace. Ratios to the kernel router, to the uvloop proxy, and
   of splice to copy mode.
2. Requests per second for 1 KiB objects with 64 concurrent SOCKS5 clients,
   through the splicing proxy (one process and two workers, on TAPs and on raw
   sockets) and through the uvloop proxy.
3. The proxy process's VmRSS before and after opening 10,000 idle spliced pairs.

Targets are reported, never asserted. Raw samples go to JSON with machine and
software versions.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tools.bench import args as argtypes
from tools.bench.common_report import measure_or_report, with_progress
from tools.bench.harness import (
    MAX_REPEATS,
    PathResult,
    build_report,
    default_json_path,
    format_size,
    write_json,
)
from tools.bench.splice_paths import ALL_ROUTES, DIRECTIONS, RPS_WORKERS, WORKERS_ROUTE
from tools.bench.splice_run import Outcome, Plan, Runner, planned_steps
from tools.bench.start import ready_to_run

EXTRA_PARTS = ("rps", "memory")
ALL_PARTS = ALL_ROUTES + EXTRA_PARTS
QUICK = {"size": 32 << 20, "repeats": 1, "warmup": 0, "pairs": 500, "rps_count": 500,
         "rps_duration": 3.0}
FULL = {"size": 1 << 30, "repeats": 3, "warmup": 1, "pairs": 10_000, "rps_count": 10_000,
        "rps_duration": 10.0}
MAX_PAIRS = 20_000
# Targets (reported, not asserted).
TARGET_VS_KERNEL = 1.0
TARGET_VS_UVSOCKS = 1.5
TARGET_VS_COPY = 3.0
TARGET_RPS = 2000.0
TARGET_MEMORY_BYTES = 100e6


_int_in = argtypes.int_in
_size = argtypes.size
_seconds = argtypes.seconds


def add_splice_parser(sub: Any) -> None:
    """Register `bench splice` on the `bench` sub-command parsers."""
    p = sub.add_parser(
        "splice", help="spliced SOCKS vs copy mode, routers and kernel-socket proxies",
        description=__doc__.split("\n\n")[0] + " See the module docstring for the parts.")
    p.add_argument("--size", type=_size, default=None,
                   help="bytes per transfer, binary units (default 1G; --quick: 32M)")
    p.add_argument("--repeats", type=_int_in(1, MAX_REPEATS), default=None,
                   help="counted transfers per path and direction (default 3; --quick: 1)")
    p.add_argument("--warmup", type=_int_in(0, MAX_REPEATS), default=None,
                   help="uncounted transfers before those (default 1; --quick: 0)")
    p.add_argument("--pairs", type=_int_in(1, MAX_PAIRS), default=None,
                   help="idle spliced pairs for the memory part (default 10000; --quick: 500)")
    p.add_argument("--concurrency", type=_int_in(1, 1024), default=64,
                   help="concurrent clients of the requests-per-second part (default 64)")
    p.add_argument("--rps-duration", type=_seconds, default=None,
                   help="seconds of each requests-per-second run (default 10; --quick: 3)")
    p.add_argument("--quick", action="store_true",
                   help="small sizes, one repeat, fewer pairs (a smoke run)")
    p.add_argument("--only", action="append", choices=ALL_PARTS, default=None, metavar="NAME",
                   help=f"measure only these parts (repeatable): {', '.join(ALL_PARTS)}")
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="where to write results (default results/bench-splice-TIME.json)")
    p.add_argument("--max-seconds", type=_seconds, default=3600.0,
                   help="limit for the whole run (default 3600)")
    p.set_defaults(func=cmd_splice)


def plan_from_args(args: argparse.Namespace) -> Plan:
    """The plan the options describe (--quick changes only the defaults)."""
    base = QUICK if args.quick else FULL
    parts = list(args.only) if args.only else list(ALL_PARTS)

    def pick(name: str, attr: str | None = None) -> Any:
        value = getattr(args, attr or name)
        return base[name] if value is None else value

    return Plan(routes=[r for r in ALL_ROUTES if r in parts], size=pick("size"),
                repeats=pick("repeats"), warmup=pick("warmup"), rps="rps" in parts,
                memory="memory" in parts, concurrency=args.concurrency,
                rps_count=base["rps_count"], rps_duration=pick("rps_duration"),
                pairs=pick("pairs"), max_seconds=args.max_seconds)


def _median(results: Sequence[PathResult], name: str) -> float | None:
    r = next((r for r in results if r.name == name), None)
    return r.stats().median if r is not None and r.samples else None


def path_ratios(results: Sequence[PathResult], result: PathResult) -> dict[str, float | None]:
    """Median of ``result`` over the kernel router's, the uvloop proxy's (same
    direction) and, for the splice rows, over copy mode's."""
    direction = result.note
    mine = result.stats().median if result.samples else None

    def over(other: str) -> float | None:
        base = _median(results, f"{other}-{direction}")
        return mine / base if mine is not None and base else None

    return {"vs_kernel": over("kernel"), "vs_uvsocks": over("uvsocks"),
            "splice_vs_copy": over("copy") if result.name.startswith("splice-") else None}


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def transfer_table(out: Outcome, size: int) -> Table:
    """Gbit/s per path and direction, with the three ratios."""
    table = Table(title=f"Bulk transfers of {format_size(size)} (Gbit/s)")
    for col in ("path", "dir", "median", "min", "max", "x kernel", "x uvloop", "x copy",
                "note"):
        table.add_column(col, justify="left" if col in ("path", "dir", "note") else "right")
    for r in out.transfers:
        st = r.stats()
        rel = path_ratios(out.transfers, r)
        table.add_row(r.label, {"download": "down", "upload": "up"}.get(r.note, r.note),
                      f"{st.median:.2f}", f"{st.min:.2f}", f"{st.max:.2f}",
                      _fmt(rel["vs_kernel"]), _fmt(rel["vs_uvsocks"]),
                      _fmt(rel["splice_vs_copy"]), "")
    for name, why in out.unavailable.items():
        table.add_row(name, "-", "-", "-", "-", "-", "-", "-", why)
    return table


def splice_drops(summary: dict[str, Any]) -> dict[str, int]:
    """The ``drop.*`` counters of a stack process's splice summary (none for others)."""
    counters = summary.get("splice") or {}
    return {k[5:]: v for k, v in counters.items() if k.startswith("drop.") and v}


def extra_table(out: Outcome) -> Table:
    """Requests per second and memory of idle pairs."""
    table = Table(title="Requests per second (1 KiB objects) and idle-pair memory")
    for col in ("measurement", "figure", "detail"):
        table.add_column(col, justify="right" if col == "figure" else "left")
    for name, r in out.rps.items():
        detail = f"{r.get('ok')} ok, {r.get('errors')} errors in {r.get('seconds', 0):.1f} s"
        if r.get("cpu_ms_per_request") is not None:
            detail += f"; {r['cpu_ms_per_request']:.2f} ms of the proxy's CPU per request"
        drops = splice_drops(out.summaries.get(name, {}))
        if drops:
            detail += "; splice drops " + ", ".join(f"{k} {v}" for k, v in drops.items())
        table.add_row(f"req/s through {name}", f"{r.get('rps', 0):,.0f}", detail)
    m = out.memory
    if m is not None:
        per = m.get("bytes_per_pair")
        table.add_row(f"VmRSS growth for {m['pairs_held']} idle spliced pairs",
                      f"{m['delta_bytes'] / 1e6:.1f} MB",
                      f"{_fmt(per, ',.0f')} B/pair; RSS {m['rss_before_bytes'] / 1e6:.1f} -> "
                      f"{m['rss_after_bytes'] / 1e6:.1f} MB; stack splices "
                      f"{m.get('stack_splices')}")
    return table


def targets(out: Outcome) -> list[dict[str, Any]]:
    """Each target with its measured value and whether it was met (None: not measured)."""
    rows: list[dict[str, Any]] = []
    for direction in DIRECTIONS:
        r = next((r for r in out.transfers if r.name == f"splice-{direction}"), None)
        rel = path_ratios(out.transfers, r) if r is not None else {}
        for key, goal in (("vs_kernel", TARGET_VS_KERNEL), ("vs_uvsocks", TARGET_VS_UVSOCKS),
                          ("splice_vs_copy", TARGET_VS_COPY)):
            value = rel.get(key)
            rows.append({"target": f"splice {direction} {key} >= {goal:g}x", "value": value,
                         "met": None if value is None else value >= goal})
    for name, label in (("splice", "one process"), (WORKERS_ROUTE, f"{RPS_WORKERS} workers")):
        rps = out.rps.get(name, {}).get("rps")
        rows.append({"target": f"splice req/s >= {TARGET_RPS:g} ({label})", "value": rps,
                     "met": None if rps is None else rps >= TARGET_RPS})
    mem = out.memory["delta_bytes"] if out.memory else None
    rows.append({"target": f"idle pairs memory <= {TARGET_MEMORY_BYTES / 1e6:g} MB",
                 "value": mem, "met": None if mem is None else mem <= TARGET_MEMORY_BYTES})
    return rows


def target_table(rows: Sequence[dict[str, Any]]) -> Table:
    """Targets: value and met / not met / not measured."""
    table = Table(title="Targets (reported, not asserted)")
    for col in ("target", "value", "met"):
        table.add_column(col)
    for row in rows:
        met = {True: "[green]met[/green]", False: "[red]not met[/red]"}.get(row["met"],
                                                                            "not measured")
        value = row["value"]
        shown = _fmt(value / 1e6, ".1f") + " MB" if "MB" in row["target"] and value else _fmt(
            value, ",.2f")
        table.add_row(row["target"], shown, met)
    return table


def build_splice_report(plan: Plan, out: Outcome, argv: Sequence[str]) -> dict[str, Any]:
    """The JSON document: the harness's report plus ratios, rps, memory, targets."""
    report = build_report("splice", out.transfers, None,
                          {**dataclasses.asdict(plan), "argv": list(argv)})
    for record, result in zip(report["paths"], out.transfers, strict=True):
        record["direction"] = result.note
        record["route"] = result.name.rsplit("-", 1)[0]
        record.update(path_ratios(out.transfers, result))
    report.update(unavailable=out.unavailable, rps=out.rps, memory=out.memory,
                  targets=targets(out), process_summaries=out.summaries,
                  tools={"microsocks": shutil.which("microsocks")})
    return report



def measure(plan: Plan, console: Console) -> Outcome:
    """Run the plan under a progress bar."""
    return with_progress(console, planned_steps(plan),
                         lambda on_progress: Runner(plan, on_progress).run())


def cmd_splice(args: argparse.Namespace) -> int:
    """`tapsplice bench splice`: measure, print the tables, write JSON; exit code."""
    # Piped output gets 80 columns by default: too narrow for the transfer table.
    console = Console(width=None if sys.stdout.isatty() else 120)
    if not ready_to_run("splice", console):
        return 2
    plan = plan_from_args(args)
    out = measure_or_report(console, "splice", lambda: measure(plan, console))
    if out is None:
        return 1
    if out.transfers or out.unavailable:
        console.print(transfer_table(out, plan.size))
    if out.rps or out.memory:
        console.print(extra_table(out))
    report = build_splice_report(plan, out, sys.argv[1:])
    console.print(target_table(report["targets"]))
    try:
        path = write_json(args.json or default_json_path("splice"), report)
    except OSError as exc:
        console.print(f"[red]cannot write results:[/red] {exc}")
        return 1
    console.print(f"results written to {path}")
    return 0
