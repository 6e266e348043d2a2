"""The figure of `bench http` experiment 1 (matplotlib, Agg backend).

Fetch time on a log scale against object size on a log scale, one line per
path and client behaviour; each point the median, bars from minimum to maximum.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402  (the backend is chosen first)

from tools.bench.http_run import BEHAVIOURS, HTTP_PATHS, LABELS, Series  # noqa: E402
from tools.bench.thesis_plot import (  # noqa: E402
    MARKERS,
    errorbar_series,
    log_size_axes,
    save_figure,
)

# One colour per path (C0, C1, ...), one line style per behaviour.
STYLES = {"close": "--", "keep-alive": "-"}


def plot_sizes(series: Sequence[Series], out: Path) -> Path:
    """Experiment 1's figure: request to last body byte against object size."""
    fig = Figure(figsize=(10, 6.5), layout="constrained")
    ax = fig.subplots()
    sizes: set[int] = set()
    shown = 0
    for i, path in enumerate(HTTP_PATHS):
        for behaviour in BEHAVIOURS:
            row = sorted((s for s in series if s.experiment == "sizes" and s.path == path
                          and s.behaviour == behaviour), key=lambda s: s.size)
            points = [(float(s.size), st) for s in row if (st := s.stats()) is not None]
            sizes.update(s.size for s in row)
            if not points:
                continue
            errorbar_series(ax, f"{LABELS[path]}, {behaviour}", MARKERS[i % len(MARKERS)],
                            points, 1e3, color=f"C{i}", linestyle=STYLES[behaviour])
            shown += 1
    log_size_axes(ax, sizes, "object size", "fetch time, request to last body byte (ms)")
    if shown:
        ax.legend(fontsize=8)
    fig.suptitle("HTTP proxy: fetch time against object size (cache misses; median, "
                 "min-max bars)")
    return save_figure(fig, out)
