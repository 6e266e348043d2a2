"""The first steps every benchmark command takes."""

from __future__ import annotations

import os

from rich.console import Console


def ready_to_run(name: str, console: Console) -> bool:
    """Root check, then removal of namespaces left by crashed earlier runs."""
    from apps.lab import cleanup_stale as lab_cleanup_stale
    from tools.bench.kernel_lab import cleanup_stale

    if os.geteuid() != 0:
        console.print(f"[red]bench {name} needs root (network namespaces)[/red]")
        return False
    for ns in cleanup_stale() + lab_cleanup_stale():
        console.print(f"removed stale namespace {ns}")
    return True
