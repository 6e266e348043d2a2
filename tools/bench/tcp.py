"""`tapsplice bench tcp`: the stack's TCP against the kernel's, in one run.

Experiments (names for ``--only``):

* ``bulk-in``     — a kernel client sends ``--size`` bytes to discard: the stack
  receives; baseline: a kernel discard server behind the kernel router (veth);
* ``bulk-out``    — the client reads ``--size`` bytes from chargen: the stack sends;
* ``connections`` — N connections one after another (connect, close, the
  server's close), connections per second;
* ``memory``      — the stack's VmRSS growth per idle established connection,
  holding 1,000 and 10,000 connections (no kernel baseline);
* ``time-wait``   — bytes the stack keeps per connection in TIME-WAIT and in all
  for ``--time-wait`` (16,384, the default max_time_wait) of them: tracemalloc
  over a simulated run of the TCP layer (no namespaces), a TIME-WAIT record
  (stack/tcp/timewait.py) against the baseline of a whole closed Tcb;
* ``loss-in``, ``loss-out`` — the bulk transfers again with random loss of the
  client namespace's TCP packets (nftables), on both sides alike; 256 MiB per
  transfer unless ``--full``. nftables sees packets as the kernel handles them
  (TSO/GRO super-segments of up to 64 KB), so the loss is 1% of those, fewer
  than 1% of wire-sized segments: a like-for-like fault, not a line model.

``bulk`` and ``loss`` select both directions. Stack and kernel samples
alternate, so load from elsewhere on the machine hits both alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import gc
import random
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from stack.skbuff import SkBuff
from stack.tcp.api import RouteInfo, TcpConfig, TcpState
from stack.tcp.layer import TcpLayer
from stack.wire.tcp import ACK, FIN, SYN, TcpHeader, TcpOptions, build_segment
from tools.bench import args as argtypes
from tools.bench.harness import (
    MAX_REPEATS,
    BenchTimeout,
    Stats,
    default_json_path,
    format_size,
    machine_info,
    summarize,
    versions,
    write_json,
)
from tools.bench.proc import CommandError, TransferError, sigterm_as_interrupt
from tools.bench.router import transfer_timeout
from tools.bench.start import ready_to_run

SCHEMA_VERSION = 1
EXPERIMENTS: dict[str, tuple[str, str]] = {
    "bulk-in": ("Bulk transfer, the stack receives (discard)", "MB/s"),
    "bulk-out": ("Bulk transfer, the stack sends (chargen)", "MB/s"),
    "connections": ("Connections opened and closed one after another", "conn/s"),
    "memory": ("Memory per idle established connection (VmRSS growth)", "bytes/conn"),
    "time-wait": ("Memory per connection in TIME-WAIT (tracemalloc, simulated)",
                  "bytes/conn"),
    "loss-in": ("Bulk transfer under loss, the stack receives", "MB/s"),
    "loss-out": ("Bulk transfer under loss, the stack sends", "MB/s"),
}
ALIASES = {"bulk": ("bulk-in", "bulk-out"), "loss": ("loss-in", "loss-out")}
DEFAULT_SIZE = 1 << 30
DEFAULT_LOSS_SIZE = 256 << 20
DEFAULT_CONNECTIONS = 2000
DEFAULT_HOLD = (1000, 10000)
DEFAULT_LOSS_PER_MILLE = 10
DEFAULT_TIME_WAIT = 16384
QUICK = {"size": 16 << 20, "loss_size": 8 << 20, "connections": 200, "hold": (200,),
         "repeats": 1, "time_wait": 1000}  # fmt: skip
MAX_CONNECTIONS = 100_000
DEFAULT_MAX_SECONDS = 3600.0


@dataclass(frozen=True)
class Plan:
    """What one run measures, with every option resolved."""

    experiments: tuple[str, ...]
    size: int
    loss_size: int
    connections: int
    hold: tuple[int, ...]
    repeats: int
    loss_per_mille: int
    max_seconds: float
    time_wait: int = DEFAULT_TIME_WAIT

    def samples(self) -> int:
        """How many samples the run takes (for the progress bar)."""
        per_exp = {"memory": len(self.hold) * self.repeats}
        return sum(per_exp.get(e, 2 * self.repeats) for e in self.experiments)


def select_experiments(only: Sequence[str] | None) -> tuple[str, ...]:
    """Experiments named by ``--only`` (aliases expanded), in the canonical order."""
    if not only:
        return tuple(EXPERIMENTS)
    wanted: set[str] = set()
    for name in only:
        if name in ALIASES:
            wanted.update(ALIASES[name])
        elif name in EXPERIMENTS:
            wanted.add(name)
        else:
            raise ValueError(f"unknown experiment {name!r}; known: "
                             f"{', '.join([*EXPERIMENTS, *ALIASES])}")  # fmt: skip
    return tuple(e for e in EXPERIMENTS if e in wanted)


def resolve_plan(args: argparse.Namespace) -> Plan:
    """The plan from parsed options: ``--quick`` fills what was not given."""
    quick = QUICK if args.quick else {}

    def pick(name: str, default: Any) -> Any:
        given = getattr(args, name)
        return given if given is not None else quick.get(name, default)

    hold = tuple(args.hold) if args.hold else quick.get("hold", DEFAULT_HOLD)
    size = pick("size", DEFAULT_SIZE)
    # --full: the transfers under loss are as large as the others.
    loss_size = pick("loss_size", size if args.full else DEFAULT_LOSS_SIZE)
    return Plan(select_experiments(args.only), size, loss_size,
                pick("connections", DEFAULT_CONNECTIONS),
                tuple(sorted(set(hold))), pick("repeats", 3), args.loss_per_mille,
                args.max_seconds, pick("time_wait", DEFAULT_TIME_WAIT))  # fmt: skip


@dataclass
class Series:
    """The samples of one path (or one setting) of an experiment."""

    name: str
    label: str
    workload: str
    note: str = ""
    values: list[float] = field(default_factory=list)
    raw: list[dict[str, Any]] = field(default_factory=list)

    def stats(self) -> Stats | None:
        """Median/min/max of the values (None before any sample)."""
        return summarize(self.values) if self.values else None


@dataclass
class Experiment:
    """One experiment's title, unit and series; the kernel's is the baseline."""

    name: str
    title: str
    unit: str
    series: list[Series] = field(default_factory=list)
    note: str = ""

    def ratio(self, series: Series) -> float | None:
        """Median of ``series`` over the kernel's median (None without a baseline)."""
        base = next((s for s in self.series if s.name == "kernel"), None)
        if base is None or series is base:
            return None
        a, b = series.stats(), base.stats()
        if a is None or b is None or b.median <= 0:
            return None
        return a.median / b.median


def mb_per_s(nbytes: int, seconds: float) -> float:
    """Throughput in MB/s (10**6 bytes per second)."""
    if seconds <= 0:
        raise ValueError("seconds must be positive")
    return nbytes / seconds / 1e6


def experiment_record(exp: Experiment) -> dict[str, Any]:
    """The JSON object of one experiment, raw samples included."""
    out = []
    for s in exp.series:
        st = s.stats()
        out.append({"name": s.name, "label": s.label, "workload": s.workload, "note": s.note,
                    "samples": s.raw, "values": s.values,
                    "median": st.median if st else None, "min": st.min if st else None,
                    "max": st.max if st else None, "ratio_vs_kernel": exp.ratio(s)})  # fmt: skip
    return {"name": exp.name, "title": exp.title, "unit": exp.unit, "note": exp.note,
            "series": out}  # fmt: skip


def build_tcp_report(plan: Plan, experiments: Sequence[Experiment], extra: dict[str, Any],
                     argv: Sequence[str], created: _dt.datetime | None = None,
                     machine: dict[str, Any] | None = None,
                     software: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """The whole JSON document of a `bench tcp` run."""
    when = created or _dt.datetime.now(_dt.UTC)
    params = dataclasses.asdict(plan)
    params["argv"] = list(argv)
    return {"schema": SCHEMA_VERSION, "benchmark": "tcp",
            "created": when.isoformat(timespec="seconds"), "parameters": params,
            "baseline": "kernel",
            "machine": machine if machine is not None else machine_info(),
            "versions": software if software is not None else versions(),
            "experiments": [experiment_record(e) for e in experiments], **extra}  # fmt: skip


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"


def experiment_table(exp: Experiment) -> Table:
    """One rich table: median, min, max and ratio to the kernel per series."""
    table = Table(title=f"{exp.title} ({exp.unit})", caption=exp.note or None)
    notes = any(s.note for s in exp.series)
    for col in ("path", "workload", "median", "min", "max", "x kernel") + (("note",) if notes else ()):
        table.add_column(col, justify="left" if col in ("path", "workload", "note") else "right")
    for s in exp.series:
        st = s.stats()
        rel = exp.ratio(s)
        cells = [_fmt(st.median), _fmt(st.min), _fmt(st.max)] if st else ["-"] * 3
        row = [s.label, s.workload, *cells, "-" if rel is None else f"{rel:.2f}"]
        table.add_row(*row, *((s.note,) if notes else ()))
    return table


class Side(Protocol):
    """What the runner needs of a side (tcp_labs.StackSide / KernelSide)."""

    name: str
    label: str
    host: str
    client_ns: str

    def check_server(self, service: str, count: int, nbytes: int) -> int | None:
        """Check the server's own report of the last ``count`` connections."""


ClientFn = Callable[[str, str, str, int, int, float], dict[str, Any]]
TimeWaitFn = Callable[[int, bool], dict[str, Any]]
SampleHook = Callable[[str, str, float], None]


def connections_timeout(count: int) -> float:
    """Seconds a run of ``count`` connections may take (a floor of 100 per second)."""
    return max(60.0, count / 100.0)


class Runner:
    """Runs a :class:`Plan` against a stack side and a kernel side.

    The client, loss and memory functions are parameters so that the
    sequencing, the checks and the shaping of results can be exercised
    without namespaces.
    """

    def __init__(self, plan: Plan, stack: Any, kernel: Any, client: ClientFn,
                 hold: Callable[[Any, int, float], dict[str, Any]],
                 loss: Callable[[str, int | None], None],
                 drops: Callable[[str], int] = lambda ns: 0,
                 on_sample: SampleHook | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 time_wait: TimeWaitFn | None = None) -> None:  # fmt: skip
        self.plan, self.stack, self.kernel = plan, stack, kernel
        self.time_wait = time_wait or time_wait_memory
        self.client, self.hold, self.loss, self.drops = client, hold, loss, drops
        self.on_sample = on_sample
        self.clock = clock
        self.deadline = clock() + plan.max_seconds
        self.loss_drops: dict[str, int] = {}

    def _tick(self, what: str) -> None:
        if self.clock() > self.deadline:
            raise BenchTimeout(f"deadline of {self.plan.max_seconds:g}s passed before {what}")

    def _record(self, exp: Experiment, series: Series, value: float, raw: dict[str, Any]) -> None:
        series.values.append(value)
        series.raw.append(raw)
        if self.on_sample is not None:
            self.on_sample(exp.name, series.label, value)

    def run(self) -> list[Experiment]:
        """Every experiment of the plan, in order."""
        out = []
        for name in self.plan.experiments:
            title, unit = EXPERIMENTS[name]
            exp = Experiment(name, title, unit)
            getattr(self, "_" + name.replace("-", "_"))(exp)
            out.append(exp)
        return out

    def _bulk_sample(self, side: Any, mode: str, size: int) -> tuple[float, dict[str, Any]]:
        service, port = ("discard", 9) if mode == "send" else ("chargen", 19)
        rep = self.client(side.client_ns, mode, side.host, port, size, transfer_timeout(size))
        counted = side.check_server(service, 1, size)
        if mode == "recv":
            received = int(rep["received"])
        else:
            # The kernel server's own count where there is one, else what the
            # stack acknowledged (TCP_INFO) before it closed.
            received = int(counted if counted is not None else rep["peer_bytes"])
        if received != size:
            raise TransferError(f"{side.name} {mode}: {received} bytes received of {size}")
        raw = {**rep, "bytes": size, "received_bytes": received}
        return mb_per_s(size, float(rep["seconds"])), raw

    def _bulk(self, exp: Experiment, mode: str, size: int) -> None:
        sides = (self.stack, self.kernel)
        series = [Series(s.name, s.label, format_size(size)) for s in sides]
        exp.series.extend(series)
        for i in range(self.plan.repeats):
            for side, ser in zip(sides, series, strict=True):
                self._tick(f"{exp.name} {side.name} #{i}")
                value, raw = self._bulk_sample(side, mode, size)
                self._record(exp, ser, value, raw)

    def _bulk_in(self, exp: Experiment) -> None:
        self._bulk(exp, "send", self.plan.size)

    def _bulk_out(self, exp: Experiment) -> None:
        self._bulk(exp, "recv", self.plan.size)

    def _lossy(self, exp: Experiment, mode: str) -> None:
        pm = self.plan.loss_per_mille
        exp.note = (f"{pm / 10:g}% random loss of the client namespace's TCP packets both "
                    "ways (nftables, which sees TSO/GRO super-segments); "
                    f"{format_size(self.plan.loss_size)} per transfer")  # fmt: skip
        namespaces = [self.stack.client_ns, self.kernel.client_ns]
        try:
            for ns in namespaces:
                self.loss(ns, pm)
            self._bulk(exp, mode, self.plan.loss_size)
            for side in (self.stack, self.kernel):
                self.loss_drops[f"{exp.name}/{side.name}"] = self.drops(side.client_ns)
        finally:
            for ns in namespaces:
                self.loss(ns, None)

    def _loss_in(self, exp: Experiment) -> None:
        self._lossy(exp, "send")

    def _loss_out(self, exp: Experiment) -> None:
        self._lossy(exp, "recv")

    def _connections(self, exp: Experiment) -> None:
        n = self.plan.connections
        sides = (self.stack, self.kernel)
        series = [Series(s.name, s.label, f"{n:,} connections") for s in sides]
        exp.series.extend(series)
        for i in range(self.plan.repeats):
            for side, ser in zip(sides, series, strict=True):
                self._tick(f"connections {side.name} #{i}")
                rep = self.client(side.client_ns, "conns", side.host, 9, n, connections_timeout(n))
                side.check_server("discard", n, 0)
                if int(rep["connections"]) != n:
                    raise TransferError(f"{side.name}: {rep['connections']} connections of {n}")
                self._record(exp, ser, n / float(rep["seconds"]), rep)

    def _memory(self, exp: Experiment) -> None:
        exp.note = "VmRSS of the stack process while holding, minus before; no kernel baseline"
        for n in self.plan.hold:
            ser = Series(f"stack-{n}", self.stack.label, f"{n:,} held")
            exp.series.append(ser)
            for i in range(self.plan.repeats):
                self._tick(f"memory {n} #{i}")
                self.stack.restart()  # a fresh process: nothing freed earlier to reuse
                rep = self.hold(self.stack, n, connections_timeout(n) + 60.0)
                if not rep["established"] == rep["still_established"] == n:
                    raise TransferError(f"held {rep['still_established']} of {n} connections "
                                   f"({rep['established']} established when opened)")  # fmt: skip
                self._record(exp, ser, float(rep["bytes_per_connection"]), rep)
        # Later experiments get a process without the held connections' aftermath.
        self.stack.restart()

    def _time_wait(self, exp: Experiment) -> None:
        n = self.plan.time_wait
        exp.note = ("tracemalloc over a simulated run of the TCP layer: what the stack keeps "
                    "per connection in TIME-WAIT (table, timer heap, record); baseline: "
                    f"the same connections kept as whole closed Tcbs; totals for {n:,} "
                    "in the JSON")  # fmt: skip
        series = [Series("record", "TIME-WAIT record", f"{n:,} in TIME-WAIT"),
                  Series("tcb", "whole closed Tcb (baseline)", f"{n:,} in TIME-WAIT")]
        exp.series.extend(series)
        for i in range(self.plan.repeats):
            for ser, whole in zip(series, (False, True), strict=True):
                self._tick(f"time-wait {ser.name} #{i}")
                rep = self.time_wait(n, whole)
                if rep["connections"] != n:
                    raise TransferError(f"{rep['connections']} of {n} in TIME-WAIT")
                self._record(exp, ser, float(rep["bytes_per_connection"]), rep)


# -- TIME-WAIT memory (simulated) ----------------------------------------------
_TW_LOCAL = bytes([198, 19, 0, 2])


class _Wire:
    """The IP layer of the simulated run: every address is on the link; remembers
    only the header of the last segment sent (what the scripted peer answers)."""

    def __init__(self) -> None:
        self.last: TcpHeader | None = None

    def route(self, dst: bytes) -> RouteInfo:
        return RouteInfo(_TW_LOCAL, 1500, False)

    def ip_output(self, src: bytes, dst: bytes, proto: int, skb: SkBuff, now: float, *,
                  df: bool = True) -> bool:
        self.last = TcpHeader.parse(skb.view())
        return True


def _keep_whole(tcb: Any, hdr: Any, skb: Any, now: float) -> bool:
    return False  # an input hook that takes nothing: TCP keeps the whole Tcb (timewait.py)


def _to_time_wait(layer: TcpLayer, wire: _Wire, lst: Any, remote: bytes, port: int,
                  now: float, whole: bool) -> None:
    """One connection from a scripted peer: handshake, our close, its FIN: TIME-WAIT."""
    def feed(seq_: int, ack: int, flags: int, **opts: Any) -> TcpHeader:
        hdr = TcpHeader(port, 80, seq_, ack, flags, 65535, options=TcpOptions(**opts))
        skb = SkBuff.from_bytes(build_segment(remote, _TW_LOCAL, hdr), headroom=64)
        layer.input(skb, remote, _TW_LOCAL, now)
        assert wire.last is not None
        return wire.last
    synack = feed(1000, 0, SYN, mss=1460, wscale=7, sack_permitted=True, timestamp=(1, 0))
    tsecr = synack.options.timestamp[0] if synack.options.timestamp else 0
    feed(1001, synack.seq + 1, ACK, timestamp=(2, tsecr))
    tcb = lst.accept()
    if whole:
        tcb.input_hook = _keep_whole
    tcb.close(now)
    fin = wire.last
    assert fin is not None and fin.flags & FIN
    feed(1001, fin.seq + 1, FIN | ACK, timestamp=(3, tsecr))


def time_wait_memory(count: int, whole_tcb: bool = False) -> dict[str, Any]:
    """Bytes the TCP layer keeps for ``count`` connections in TIME-WAIT: traced
    allocations (tracemalloc) after the run less before it, every other reference
    dropped and the timer heap's stale entries gone. ``whole_tcb`` keeps each as a
    whole closed Tcb, as the layer did before TIME-WAIT records."""
    cfg = TcpConfig(max_time_wait=count, max_connections=count + 16)
    started = time.monotonic()
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        wire = _Wire()
        layer = TcpLayer(wire, config=cfg, rng=random.Random(1))
        lst = layer.listen(_TW_LOCAL, 80, backlog=128)
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        now = 0.0
        for i in range(count):
            now = i * 1e-4  # all inside 2*MSL
            remote = bytes([198, 18, 1 + i // 60000, 1])
            _to_time_wait(layer, wire, lst, remote, 1024 + i % 60000, now, whole_tcb)
        wire.last = None
        layer.on_timer(now + 5.0)  # retransmission timers long stopped leave the heap
        gc.collect()
        total = tracemalloc.get_traced_memory()[0] - before
        held = sum(1 for c in layer.connections.values() if c.state is TcpState.TIME_WAIT)
    finally:
        if not tracing:
            tracemalloc.stop()
    per = total / count
    return {"connections": held, "kind": "tcb" if whole_tcb else "record",
            "total_bytes": total, "bytes_per_connection": per,
            f"bytes_for_{DEFAULT_TIME_WAIT}": round(per * DEFAULT_TIME_WAIT),
            "seconds": time.monotonic() - started}


# -- command line ------------------------------------------------------------
_size = argtypes.size
_bounded_int = argtypes.int_in
_seconds = argtypes.seconds


def _experiment(text: str) -> str:
    if text not in EXPERIMENTS and text not in ALIASES:
        raise argparse.ArgumentTypeError(
            f"unknown experiment {text!r}; choose from {', '.join([*EXPERIMENTS, *ALIASES])}")
    return text


def add_tcp_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``tapsplice bench tcp`` on the ``bench`` sub-command parsers."""
    p = sub.add_parser(
        "tcp", help="TCP of the stack vs the kernel: bulk both ways, connections, memory, loss",
        description="The stack's TCP (tapsplice serve: discard, chargen) against kernel "
        "servers behind the kernel router over veth, in the same run. Needs root.")
    p.add_argument("--size", type=_size, default=None,
                   help="bytes per bulk transfer, binary units (default 1G)")  # fmt: skip
    p.add_argument("--loss-size", type=_size, default=None,
                   help="bytes per transfer under loss (default 256M)")  # fmt: skip
    p.add_argument("--connections", type=_bounded_int(1, MAX_CONNECTIONS), default=None,
                   help=f"connections per sample of the rate (default {DEFAULT_CONNECTIONS})")  # fmt: skip
    p.add_argument("--hold", type=_bounded_int(1, MAX_CONNECTIONS), action="append",
                   default=None, metavar="N",
                   help="idle connections to hold for the memory figure (repeatable; "
                   "default 1000 and 10000)")  # fmt: skip
    p.add_argument("--time-wait", type=_bounded_int(1, MAX_CONNECTIONS), default=None,
                   metavar="N", help="connections in TIME-WAIT for the time-wait figure "
                   f"(default {DEFAULT_TIME_WAIT})")  # fmt: skip
    p.add_argument("--loss-per-mille", type=_bounded_int(1, 500), default=DEFAULT_LOSS_PER_MILLE,
                   help="random loss in 1/1000 (default 10, i.e. 1%%)")  # fmt: skip
    p.add_argument("--repeats", type=_bounded_int(1, MAX_REPEATS), default=None,
                   help="samples per path (default 3)")  # fmt: skip
    p.add_argument("--only", type=_experiment, action="append", default=None, metavar="NAME",
                   help="run only this experiment (repeatable): "
                   + ", ".join([*EXPERIMENTS, *ALIASES]))  # fmt: skip
    p.add_argument("--quick", action="store_true",
                   help="small sizes and counts, one repeat (a smoke run)")  # fmt: skip
    p.add_argument("--full", action="store_true",
                   help="transfers under loss of --size too (default: 256M)")  # fmt: skip
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="where to write results (default results/bench-tcp-TIME.json)")  # fmt: skip
    p.add_argument("--max-seconds", type=_seconds, default=DEFAULT_MAX_SECONDS,
                   help=f"limit for the whole run (default {DEFAULT_MAX_SECONDS:g})")  # fmt: skip
    p.set_defaults(func=cmd_tcp)
    return p



def _run_sides(plan: Plan, console: Console) -> tuple[list[Experiment], dict[str, Any]]:
    """Bring both sides up, run the plan with a progress bar, tear both down."""
    from tools.bench.kernel_lab import KernelLabConfig
    from tools.bench.router import stack_lab_config
    from tools.bench.tcp_labs import (
        KernelSide,
        StackSide,
        hold_and_measure,
        kernel_loss,
        kernel_loss_drops,
        run_client,
    )

    stack = StackSide(stack_lab_config())
    kernel = KernelSide(KernelLabConfig.unique(), lifetime=plan.max_seconds + 60)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    try:
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("setting up the labs", total=plan.samples())

            def on_sample(exp: str, label: str, value: float) -> None:
                progress.update(task, advance=1, description=f"{exp} {label}: {_fmt(value)}")

            stack.start()
            kernel.start()
            runner = Runner(plan, stack, kernel, run_client, hold_and_measure, kernel_loss,
                            kernel_loss_drops, on_sample)  # fmt: skip
            results = runner.run()
    finally:
        try:
            stack.stop()
        finally:
            kernel.stop()
    return results, {"loss_drops": runner.loss_drops, "stack_processes": stack.summaries}


def cmd_tcp(args: argparse.Namespace) -> int:
    """`tapsplice bench tcp`: measure, print one table per experiment, write JSON."""
    from apps.lab import LabError

    console = Console()
    if not ready_to_run("tcp", console):
        return 2
    plan = resolve_plan(args)
    try:
        with sigterm_as_interrupt():
            results, extra = _run_sides(plan, console)
    except (CommandError, TransferError, BenchTimeout, LabError, OSError) as exc:
        console.print(f"[red]bench tcp failed:[/red] {exc}")
        return 1
    for exp in results:
        console.print(experiment_table(exp))
    report = build_tcp_report(plan, results, extra, sys.argv[1:])
    try:
        out = write_json(args.json or default_json_path("tcp"), report)
    except OSError as exc:
        console.print(f"[red]cannot write results:[/red] {exc}")
        return 1
    console.print(f"results written to {out}")
    return 0
