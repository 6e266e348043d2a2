"""Statistics and result records of `bench thesis`: pure code, no I/O.

Experiment 1 keeps every request's timings per transfer size; experiment 2 keeps
one summary per load run (a run has too many requests to keep them all) and
reduces the runs of one concurrency level to median, min and max.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tools.bench.harness import Stats, summarize
from tools.bench.splice_load import OkRate

# The three times of one request: connecting (with the SOCKS5 handshake on proxy
# paths), from the GET to the last byte, and the two together.
METRICS = ("connect", "response", "total")


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean; ValueError when there are no values."""
    if not values:
        raise ValueError("no values")
    return math.fsum(values) / len(values)


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100): a value that occurred.

    ValueError when there are no values or ``q`` is out of range.
    """
    if not values:
        raise ValueError("no values")
    if not 0 < q <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {q}")
    ordered = sorted(values)
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


def p99(values: Sequence[float]) -> float:
    """The 99th percentile (nearest rank)."""
    return percentile(values, 99)


def latency_summary(values: Sequence[float]) -> dict[str, float | int]:
    """Count, mean, median, p99, min and max of latencies in seconds."""
    if not values:
        return {"n": 0}
    return {"n": len(values), "mean": mean(values), "median": percentile(values, 50),
            "p99": p99(values), "min": min(values), "max": max(values)}


@dataclass(frozen=True)
class Timing:
    """One request of experiment 1, seconds per metric (see METRICS)."""

    connect: float
    response: float
    total: float


@dataclass
class SizePoint:
    """All requests of one path for one transfer size."""

    size: int
    samples: list[Timing] = field(default_factory=list)
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)

    def stats(self, metric: str = "response") -> Stats | None:
        """Median/min/max of ``metric`` in seconds (None without samples)."""
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}")
        values = [getattr(t, metric) for t in self.samples]
        return summarize(values) if values else None


@dataclass(frozen=True)
class LoadRun(OkRate):
    """One load run: requests at a fixed concurrency for a bounded count and time.

    ``total`` and ``response`` are latency summaries (see latency_summary).
    """

    concurrency: int
    ok: int
    errors: int
    seconds: float
    total: dict[str, float | int]
    response: dict[str, float | int]
    error_kinds: dict[str, int] = field(default_factory=dict)


LOAD_FIGURES = ("mean", "p99", "rps")


@dataclass
class LoadLevel:
    """The runs of one path at one concurrency level."""

    concurrency: int
    runs: list[LoadRun] = field(default_factory=list)

    def stats(self, figure: str) -> Stats | None:
        """Median/min/max over runs of ``mean`` or ``p99`` (connect to last byte,
        seconds) or of ``rps``; None when no run completed a request."""
        if figure not in LOAD_FIGURES:
            raise ValueError(f"unknown figure {figure!r}")
        if figure == "rps":
            values = [r.rps for r in self.runs if r.ok]
        else:
            values = [float(r.total[figure]) for r in self.runs if r.ok and figure in r.total]
        return summarize(values) if values else None

    @property
    def errors(self) -> int:
        """Failed requests over all runs."""
        return sum(r.errors for r in self.runs)


@dataclass
class PathOutcome:
    """Everything measured on one path; ``unavailable`` says why it was skipped."""

    name: str
    label: str
    sizes: list[SizePoint] = field(default_factory=list)
    levels: list[LoadLevel] = field(default_factory=list)
    unavailable: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    def size_point(self, size: int) -> SizePoint:
        """The point for ``size``, created on first use."""
        for p in self.sizes:
            if p.size == size:
                return p
        point = SizePoint(size)
        self.sizes.append(point)
        return point

    def level(self, concurrency: int) -> LoadLevel:
        """The level for ``concurrency``, created on first use."""
        for lv in self.levels:
            if lv.concurrency == concurrency:
                return lv
        level = LoadLevel(concurrency)
        self.levels.append(level)
        return level


def _stats_record(st: Stats | None) -> dict[str, float] | None:
    return None if st is None else {"median": st.median, "min": st.min, "max": st.max}


def size_record(point: SizePoint) -> dict[str, Any]:
    """JSON of one size: every sample, and median/min/max per metric."""
    return {
        "size_bytes": point.size,
        "samples": [{m: getattr(t, m) for m in METRICS} for t in point.samples],
        "errors": point.errors,
        "error_kinds": point.error_kinds,
        **{f"{m}_seconds": _stats_record(point.stats(m)) for m in METRICS},
    }


def level_record(level: LoadLevel) -> dict[str, Any]:
    """JSON of one concurrency level: every run, and median/min/max over the runs."""
    runs = [{"ok": r.ok, "errors": r.errors, "seconds": r.seconds, "rps": r.rps,
             "total": r.total, "response": r.response, "error_kinds": r.error_kinds}
            for r in level.runs]
    return {"concurrency": level.concurrency, "runs": runs, "errors": level.errors,
            "mean_seconds": _stats_record(level.stats("mean")),
            "p99_seconds": _stats_record(level.stats("p99")),
            "rps": _stats_record(level.stats("rps"))}


def path_record(outcome: PathOutcome) -> dict[str, Any]:
    """JSON of one path (both experiments)."""
    return {"name": outcome.name, "label": outcome.label, "unavailable": outcome.unavailable,
            "sizes": [size_record(p) for p in outcome.sizes],
            "load": [level_record(lv) for lv in outcome.levels],
            "process_summary": outcome.summary}


def load_run_from_json(concurrency: int, obj: dict[str, Any]) -> LoadRun:
    """A LoadRun from the load client's JSON line; ValueError if a field is missing."""
    try:
        return LoadRun(concurrency, int(obj["ok"]), int(obj["errors"]), float(obj["seconds"]),
                       dict(obj["total"]), dict(obj["response"]),
                       dict(obj.get("error_kinds") or {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"bad load run record: {exc}") from exc


def timing_from_json(obj: dict[str, Any]) -> Timing:
    """A Timing from the size client's JSON line; ValueError if it is not one."""
    try:
        t = Timing(float(obj["connect"]), float(obj["response"]), float(obj["total"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"bad sample record: {exc}") from exc
    if min(t.connect, t.response, t.total) < 0:
        raise ValueError(f"negative time in {obj!r}")
    return t
