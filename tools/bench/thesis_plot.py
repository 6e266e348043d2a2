"""The figures of `bench thesis` (matplotlib, Agg backend: no display needed).

Shaped like the thesis's: response time on a log scale against transfer size on
a log scale, one line per path; and response time and requests per second
against the number of concurrent clients. Every point is the median of its
repeats, with an error bar from the minimum to the maximum.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from matplotlib.axes import Axes  # noqa: E402  (the backend is chosen first)
from matplotlib.figure import Figure  # noqa: E402

from tools.bench.harness import Stats, format_size  # noqa: E402
from tools.bench.thesis_results import PathOutcome  # noqa: E402

MARKERS = "osD^vP*X"


def errorbar_series(ax: Axes, label: str, marker: str, points: Sequence[tuple[float, Stats]],
                    scale: float, **style: str) -> None:
    """One line of medians with min-max error bars; ``scale`` converts the unit (s -> ms).

    ``style`` passes matplotlib line options on (``color``, ``linestyle``).
    """
    if not points:
        return
    xs = [x for x, _ in points]
    med = [st.median * scale for _, st in points]
    lo = [(st.median - st.min) * scale for _, st in points]
    hi = [(st.max - st.median) * scale for _, st in points]
    ax.errorbar(xs, med, yerr=[lo, hi], label=label, marker=marker, capsize=3, linewidth=1.2,
                markersize=4, **style)


def log_size_axes(ax: Axes, sizes: set[int], xlabel: str, ylabel: str) -> None:
    """Both scales logarithmic, one x tick per size (1K, 1M, ...), a light grid."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = sorted(sizes)
    ax.set_xticks(ticks, [format_size(s) for s in ticks])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)


def _size_axes(ax: Axes, outcomes: Sequence[PathOutcome], metric: str, title: str) -> None:
    sizes: set[int] = set()
    for i, o in enumerate(outcomes):
        pts = [(float(p.size), st) for p in sorted(o.sizes, key=lambda p: p.size)
               if (st := p.stats(metric)) is not None]
        sizes.update(p.size for p in o.sizes)
        errorbar_series(ax, o.label, MARKERS[i % len(MARKERS)], pts, 1e3)
    log_size_axes(ax, sizes, "transfer size", "response time (ms)")
    ax.set_title(title)


def plot_sizes(outcomes: Sequence[PathOutcome], out: Path) -> Path:
    """Experiment 1's figure: GET to last byte, and connect to last byte, against size."""
    shown = [o for o in outcomes if o.sizes]
    fig = Figure(figsize=(13, 5.5), layout="constrained")
    left, right = fig.subplots(1, 2)
    _size_axes(left, shown, "response", "request (GET) to last byte")
    _size_axes(right, shown, "total", "connect (+ SOCKS5) to last byte")
    if shown:
        left.legend(fontsize=8)
    fig.suptitle("Response time against transfer size (median, min-max bars)")
    return save_figure(fig, out)


def _level_axes(ax: Axes, outcomes: Sequence[PathOutcome], figure: str, scale: float,
                ylabel: str, title: str, log_y: bool) -> None:
    levels: set[int] = set()
    for i, o in enumerate(outcomes):
        pts = [(float(lv.concurrency), st) for lv in sorted(o.levels, key=lambda v: v.concurrency)
               if (st := lv.stats(figure)) is not None]
        levels.update(lv.concurrency for lv in o.levels)
        errorbar_series(ax, o.label, MARKERS[i % len(MARKERS)], pts, scale)
    ax.set_xscale("log", base=2)
    ticks = sorted(levels)
    ax.set_xticks(ticks, [str(t) for t in ticks])
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)


def plot_load(outcomes: Sequence[PathOutcome], out: Path, object_size: int) -> Path:
    """Experiment 2's figure: mean and p99 response time, and req/s, against concurrency."""
    shown = [o for o in outcomes if o.levels]
    fig = Figure(figsize=(16, 5.5), layout="constrained")
    axes = fig.subplots(1, 3)
    _level_axes(axes[0], shown, "mean", 1e3, "response time (ms)",
                "mean, connect to last byte", True)
    _level_axes(axes[1], shown, "p99", 1e3, "response time (ms)",
                "p99, connect to last byte", True)
    _level_axes(axes[2], shown, "rps", 1.0, "requests per second", "throughput", False)
    if shown:
        axes[2].legend(fontsize=8)
    fig.suptitle(f"{format_size(object_size)} objects under load (median of runs, "
                 "min-max bars)")
    return save_figure(fig, out)


def save_figure(fig: Figure, out: Path) -> Path:
    """Write ``fig`` as a PNG to ``out`` (its directory made if missing); return ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out

