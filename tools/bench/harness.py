"""The generic benchmark harness shared by every `tapsplice bench` command.

A benchmark is a list of :class:`BenchPath` objects (start, run one transfer,
stop), each run ``repeats`` times under one overall deadline. The harness keeps
the raw samples, reduces them to median/min/max, relates each path to a
baseline path measured in the same run, and writes everything, with the
machine and software versions, to a JSON file.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import re
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

# Hard ceilings, whatever the command line asks for.
MAX_REPEATS = 100
SCHEMA_VERSION = 1


class BenchTimeout(RuntimeError):
    """The benchmark's overall deadline passed before all samples were taken."""


@dataclass(frozen=True)
class Sample:
    """One transfer: how many bytes moved in how many seconds."""

    size: int
    seconds: float

    @property
    def gbit_per_s(self) -> float:
        """Throughput in Gbit/s (10**9 bits per second)."""
        return self.size * 8 / self.seconds / 1e9


class BenchPath(Protocol):
    """One way through the network under test: set up, transfer, tear down."""

    name: str
    label: str
    size: int
    note: str

    def start(self) -> None:
        """Bring up whatever the path needs (namespaces, servers, router)."""

    def run_transfer(self) -> Sample:
        """Do one transfer of ``size`` bytes; raise if it came out short."""

    def stop(self) -> None:
        """Tear everything down; safe to call after a failed or partial start."""


@dataclass(frozen=True)
class Stats:
    """Median, minimum and maximum of a list of throughputs."""

    median: float
    min: float
    max: float


def summarize(values: Sequence[float]) -> Stats:
    """Median/min/max of ``values``; ValueError when there are none."""
    if not values:
        raise ValueError("no samples to summarize")
    return Stats(statistics.median(values), min(values), max(values))


@dataclass
class PathResult:
    """All samples of one path and what they reduce to."""

    name: str
    label: str
    size: int
    note: str = ""
    samples: list[Sample] = field(default_factory=list)
    warmup: list[Sample] = field(default_factory=list)

    def stats(self) -> Stats:
        """Median/min/max throughput in Gbit/s over the samples."""
        return summarize([s.gbit_per_s for s in self.samples])


def ratio(result: PathResult, baseline: PathResult | None) -> float | None:
    """Median throughput of ``result`` over that of ``baseline`` (None if unknown)."""
    if baseline is None or not baseline.samples or not result.samples:
        return None
    base = baseline.stats().median
    return result.stats().median / base if base > 0 else None


ProgressHook = Callable[[BenchPath, int, Sample], None]


def run_paths(
    paths: Sequence[BenchPath],
    repeats: int,
    max_seconds: float,
    on_sample: ProgressHook | None = None,
    clock: Callable[[], float] = time.monotonic,
    warmup: int = 0,
    on_start: Callable[[BenchPath], None] | None = None,
) -> list[PathResult]:
    """Run every path ``warmup`` + ``repeats`` times, all within ``max_seconds``.

    Each path is started, sampled, and stopped (in a finally, so a failure or
    Ctrl-C still tears it down) before the next one starts. Warm-up transfers
    (cold page cache, ARP, first connection) are kept apart and left out of
    the statistics; ``on_sample`` sees only counted ones. Passing the deadline
    raises :class:`BenchTimeout`.
    """
    if not 1 <= repeats <= MAX_REPEATS:
        raise ValueError(f"repeats must be 1..{MAX_REPEATS}, got {repeats}")
    if not 0 <= warmup <= MAX_REPEATS:
        raise ValueError(f"warmup must be 0..{MAX_REPEATS}, got {warmup}")
    deadline = clock() + max_seconds
    results = []
    for path in paths:
        result = PathResult(path.name, path.label, path.size, path.note)
        try:
            if on_start is not None:
                on_start(path)
            path.start()
            for i in range(warmup + repeats):
                if clock() > deadline:
                    raise BenchTimeout(f"deadline of {max_seconds:g}s passed during {path.name}")
                sample = path.run_transfer()
                if i < warmup:
                    result.warmup.append(sample)
                    continue
                result.samples.append(sample)
                if on_sample is not None:
                    on_sample(path, i - warmup, sample)
        finally:
            path.stop()
        results.append(result)
    return results


def _sample_records(samples: Sequence[Sample]) -> list[dict[str, float]]:
    return [{"bytes": s.size, "seconds": s.seconds, "gbit_per_s": s.gbit_per_s} for s in samples]


def _read_first(path: str, pattern: str) -> str | None:
    try:
        with open(path) as f:
            for line in f:
                m = re.match(pattern, line)
                if m:
                    return m.group(1).strip()
    except OSError:
        return None
    return None


def machine_info() -> dict[str, Any]:
    """The machine the figures were taken on: CPUs, memory, kernel, CPU model."""
    mem_kib = _read_first("/proc/meminfo", r"MemTotal:\s+(\d+)\s+kB")
    return {
        "nproc": os.cpu_count(),
        "memory_bytes": int(mem_kib) * 1024 if mem_kib else None,
        "kernel": platform.release(),
        "cpu_model": _read_first("/proc/cpuinfo", r"model name\s*:\s*(.*)"),
        "machine": platform.machine(),
    }


def _tool_version(cmd: Sequence[str], pattern: str) -> str | None:
    """First match of ``pattern`` in a tool's version output (stdout or stderr)."""
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(pattern, done.stdout + done.stderr)
    return m.group(1) if m else None


def versions() -> dict[str, str | None]:
    """Versions of the software involved: python, tapsplice, nginx, curl."""
    try:
        own = importlib.metadata.version("tapsplice")
    except importlib.metadata.PackageNotFoundError:
        own = None
    return {
        "python": platform.python_version(),
        "tapsplice": own,
        "nginx": _tool_version(["nginx", "-v"], r"nginx/(\S+)"),
        "curl": _tool_version(["curl", "--version"], r"curl (\S+)"),
    }


def path_record(result: PathResult, baseline: PathResult | None) -> dict[str, Any]:
    """The JSON object for one path: raw samples and their reduction."""
    record: dict[str, Any] = {
        "name": result.name,
        "label": result.label,
        "size_bytes": result.size,
        "note": result.note,
        "samples": _sample_records(result.samples),
        "warmup_samples": _sample_records(result.warmup),
    }
    if result.samples:
        st = result.stats()
        record.update(median_gbit_per_s=st.median, min_gbit_per_s=st.min, max_gbit_per_s=st.max)
    else:
        record.update(median_gbit_per_s=None, min_gbit_per_s=None, max_gbit_per_s=None)
    record["ratio_vs_baseline"] = ratio(result, baseline)
    return record


def find_baseline(results: Sequence[PathResult], name: str | None) -> PathResult | None:
    """The result called ``name`` (None when absent or not asked for)."""
    return next((r for r in results if r.name == name), None) if name else None


def build_report(
    benchmark: str,
    results: Sequence[PathResult],
    baseline: str | None,
    parameters: dict[str, Any],
    machine: dict[str, Any] | None = None,
    software: dict[str, Any] | None = None,
    created: _dt.datetime | None = None,
) -> dict[str, Any]:
    """The whole JSON document of one benchmark run."""
    base = find_baseline(results, baseline)
    when = created or _dt.datetime.now(_dt.UTC)
    return {
        "schema": SCHEMA_VERSION,
        "benchmark": benchmark,
        "created": when.isoformat(timespec="seconds"),
        "parameters": parameters,
        "baseline": baseline,
        "machine": machine if machine is not None else machine_info(),
        "versions": software if software is not None else versions(),
        "paths": [path_record(r, base) for r in results],
    }


def default_json_path(benchmark: str, now: _dt.datetime | None = None) -> Path:
    """``results/bench-NAME-TIMESTAMP.json`` relative to the working directory."""
    when = now or _dt.datetime.now(_dt.UTC)
    return Path("results") / f"bench-{benchmark}-{when.strftime('%Y%m%dT%H%M%SZ')}.json"


def write_json(path: Path, report: dict[str, Any]) -> Path:
    """Write ``report`` to ``path`` (parents created) atomically; return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """Parse ``1G``, ``200M``, ``512k``, ``4096`` (binary units) into bytes.

    Raises ValueError on anything else, including zero and negative sizes.
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"bad size: {text!r} (examples: 1G, 200M, 4096)")
    size = int(float(m.group(1)) * _SIZE_UNITS[m.group(2).upper()])
    if size <= 0:
        raise ValueError(f"size must be positive: {text!r}")
    return size


def format_size(size: int) -> str:
    """Bytes as a short binary-unit string: 1 GiB, 200 MiB, 4096 B."""
    for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            return f"{round(size / factor, 1):g} {unit}"
    return f"{size} B"
