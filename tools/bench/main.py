"""`tapsplice bench ...`: benchmark commands, each with its baseline in the same run.

``tapsplice bench router`` downloads a large file over HTTP through the
tapsplice router (with TAP offloads, optionally also without; and on raw sockets
over veth pairs) and through the Linux kernel forwarding between veth pairs, prints a table, and writes the raw
samples with machine and version details to JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from apps.lab import LabError
from apps.origin import OriginError
from tools.bench import args as argtypes
from tools.bench.harness import (
    MAX_REPEATS,
    BenchPath,
    BenchTimeout,
    PathResult,
    Sample,
    build_report,
    default_json_path,
    format_size,
    parse_size,
    ratio,
    run_paths,
    write_json,
)
from tools.bench.http import add_http_parser
from tools.bench.kernel_lab import KernelLabConfig
from tools.bench.proc import CommandError, TransferError, sigterm_as_interrupt
from tools.bench.router import KernelRouterPath, StackRouterPath, stack_lab_config
from tools.bench.splice import add_splice_parser
from tools.bench.start import ready_to_run
from tools.bench.tcp import add_tcp_parser
from tools.bench.thesis import add_thesis_parser
from tools.bench.udp import add_udp_parser

DEFAULT_MAX_SECONDS = 1800.0


_size = argtypes.size
_seconds = argtypes.seconds


def _repeats(text: str) -> int:
    try:
        n = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from exc
    if not 1 <= n <= MAX_REPEATS:
        raise argparse.ArgumentTypeError(f"repeats must be 1..{MAX_REPEATS}")
    return n


def _warmup(text: str) -> int:
    n = _repeats(text) if text.strip() != "0" else 0
    return n


def _mtu(text: str) -> int:
    try:
        n = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from exc
    if not 576 <= n <= 65535:
        raise argparse.ArgumentTypeError("MTU must be 576..65535")
    return n


def add_parser(subparsers: Any) -> None:
    """Register ``tapsplice bench`` and its sub-commands on ``subparsers``."""
    bench = subparsers.add_parser(
        "bench",
        help="run benchmarks (each with a baseline in the same run)",
        description="Benchmarks. Each runs its baseline in the same invocation, "
        "prints a table and writes raw samples to JSON. Needs root.",
    )
    sub = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK")
    sub.required = True
    router = sub.add_parser(
        "router",
        help="HTTP download through the tapsplice router vs the kernel router",
        description="Download a file from nginx (server namespace) with curl (client "
        "namespace) through: the tapsplice router with offloads, optionally without "
        "them, the tapsplice router on raw sockets over veth pairs, and the Linux kernel "
        "router over veth pairs (the baseline).",
    )
    router.add_argument("--size", type=_size, default=parse_size("1G"),
                        help="download size, binary units (default: 1G)")  # fmt: skip
    router.add_argument("--repeats", type=_repeats, default=5,
                        help="downloads per path (default: 5)")  # fmt: skip
    router.add_argument("--warmup", type=_warmup, default=1,
                        help="uncounted downloads per path before the counted ones (default: 1)")  # fmt: skip
    router.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="where to write results (default: results/bench-router-TIME.json)")  # fmt: skip
    router.add_argument("--no-offload-too", action="store_true",
                        help="also measure `tapsplice router --no-offload`")  # fmt: skip
    router.add_argument("--no-offload-size", type=_size, default=parse_size("200M"),
                        help="download size for the --no-offload path (default: 200M)")  # fmt: skip
    router.add_argument("--no-raw", action="store_true",
                        help="skip the raw-socket row (the router on packet sockets over "
                             "veth pairs, `lab up --raw`)")  # fmt: skip
    router.add_argument("--mtu", type=_mtu, default=1500,
                        help="MTU of the lab TAPs and of the kernel lab's veths (default: 1500)")  # fmt: skip
    router.add_argument("--kernel-only", action="store_true",
                        help="measure only the kernel router (checks the harness itself)")  # fmt: skip
    router.add_argument("--transfer-timeout", type=_seconds, default=None, metavar="SECONDS",
                        help="limit for one download (default: from the size)")  # fmt: skip
    router.add_argument("--max-seconds", type=_seconds, default=DEFAULT_MAX_SECONDS,
                        help=f"limit for the whole run (default: {DEFAULT_MAX_SECONDS:g})")  # fmt: skip
    router.set_defaults(func=cmd_router)
    add_tcp_parser(sub)
    add_splice_parser(sub)
    add_thesis_parser(sub)
    add_udp_parser(sub)
    add_http_parser(sub)


def router_paths(args: argparse.Namespace) -> list[BenchPath]:
    """The paths `bench router` measures, the kernel baseline last."""
    paths: list[BenchPath] = []
    mtu = args.mtu
    if not args.kernel_only:
        # Both labs get the same MTU, so the comparison is like for like.
        lab = dataclasses.replace(stack_lab_config(), mtu=mtu)
        paths.append(StackRouterPath(args.size, True, args.transfer_timeout, lab))
        if not args.no_raw:
            # The same router on packet sockets over veth pairs (its own lab names).
            raw_lab = dataclasses.replace(stack_lab_config(), mtu=mtu)
            paths.append(StackRouterPath(args.size, True, args.transfer_timeout, raw_lab,
                                         raw=True))
        if args.no_offload_too:
            slow = StackRouterPath(args.no_offload_size, False, args.transfer_timeout, lab)
            if args.no_offload_size != args.size:
                # Without offloads every MTU-sized frame crosses Python: a
                # smaller file keeps the run short; Gbit/s stay comparable.
                slow.note = f"smaller file ({format_size(args.no_offload_size)})"
            paths.append(slow)
    # Unique names: another run on the same machine keeps its own twin lab.
    paths.append(KernelRouterPath(args.size, KernelLabConfig.unique(mtu), args.transfer_timeout))
    return paths


def results_table(results: Sequence[PathResult], baseline: str) -> Table:
    """The rich table of one run: throughput per path and ratio to the baseline."""
    base = next((r for r in results if r.name == baseline), None)
    table = Table(title="HTTP download through a router (Gbit/s)")
    notes = any(r.note for r in results)
    for col in ("path", "size", "median", "min", "max", f"x {baseline}") + (("note",) if notes else ()):
        table.add_column(col, justify="left" if col in ("path", "note") else "right")
    for r in results:
        st = r.stats()
        rel = ratio(r, base)
        row = [r.label, format_size(r.size), f"{st.median:.2f}", f"{st.min:.2f}", f"{st.max:.2f}",
               "-" if rel is None else f"{rel:.2f}"]  # fmt: skip
        table.add_row(*row, *((r.note,) if notes else ()))
    return table



def _measure(paths: Sequence[BenchPath], args: argparse.Namespace,
             console: Console) -> list[PathResult]:  # fmt: skip
    """Run the paths under a progress bar."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("setting up", total=len(paths) * args.repeats)

        def on_sample(path: BenchPath, index: int, sample: Sample) -> None:
            progress.update(task, advance=1,
                            description=f"{path.label}: {sample.gbit_per_s:.2f} Gbit/s")  # fmt: skip

        def on_start(path: BenchPath) -> None:
            progress.update(task, description=f"{path.label}: setting up")

        return run_paths(paths, args.repeats, args.max_seconds, on_sample,
                         warmup=args.warmup, on_start=on_start)  # fmt: skip


def cmd_router(args: argparse.Namespace) -> int:
    """`tapsplice bench router`: measure, print the table, write JSON; exit code."""
    console = Console()
    if not ready_to_run("router", console):
        return 2
    paths = router_paths(args)
    try:
        with sigterm_as_interrupt():
            results = _measure(paths, args, console)
    except (CommandError, TransferError, BenchTimeout, OriginError, LabError) as exc:
        console.print(f"[red]bench router failed:[/red] {exc}")
        return 1
    console.print(results_table(results, "kernel"))
    report = build_report(
        "router", results, "kernel",
        {
            "size_bytes": args.size, "repeats": args.repeats, "warmup": args.warmup,
            "no_offload_too": args.no_offload_too, "no_offload_size_bytes": args.no_offload_size,
            "kernel_only": args.kernel_only, "mtu": args.mtu, "no_raw": args.no_raw,
            "argv": sys.argv[1:],
        },
    )  # fmt: skip
    try:
        out = write_json(args.json or default_json_path("router"), report)
    except OSError as exc:
        console.print(f"[red]cannot write results:[/red] {exc}")
        return 1
    console.print(f"results written to {out}")
    return 0
