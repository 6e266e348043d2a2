"""Pieces the `bench http`, `bench thesis` and `bench splice` commands share.

The progress bar a run is measured under, the guard that turns a failed run
into a red line and exit code 1, and the "median [min-max] ms" table cell.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tools.bench.harness import BenchTimeout, Stats
from tools.bench.proc import CommandError, TransferError, sigterm_as_interrupt

T = TypeVar("T")
# What a runner reports: a description, and whether a counted step was done.
OnProgress = Callable[[str, bool], None]


def ms_cell(st: Stats | None) -> str:
    """``median [min-max]`` of seconds, shown in milliseconds; ``-`` without data."""
    if st is None:
        return "-"
    return f"{st.median * 1e3:.2f} [{st.min * 1e3:.2f}-{st.max * 1e3:.2f}]"


def with_progress(console: Console, total: int, work: Callable[[OnProgress], T]) -> T:
    """Call ``work`` with a progress callback driving a transient bar of ``total`` steps."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("setting up", total=total)

        def on_progress(text: str, advance: bool) -> None:
            progress.update(task, advance=1 if advance else 0, description=text)

        return work(on_progress)


def measure_or_report(console: Console, name: str, measure: Callable[[], T]) -> T | None:
    """Run ``measure`` with SIGTERM as Ctrl-C; None after printing why `bench NAME` failed.

    Only the failures a run can meet (a command, a transfer, the deadline, the
    origin or the lab) are caught; anything else is a bug and propagates.
    """
    from apps.lab import LabError
    from apps.origin import OriginError

    try:
        with sigterm_as_interrupt():
            return measure()
    except (CommandError, TransferError, BenchTimeout, OriginError, LabError) as exc:
        console.print(f"[red]bench {name} failed:[/red] {exc}")
        return None
