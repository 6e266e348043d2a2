"""apps/cli.py: every command is wired; `tapsplice bench` comes from tools/bench through
the tapsplice.commands entry point group, not an import of the product."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from apps import cli

ROOT = Path(__file__).resolve().parents[1]


def test_bench_is_registered_through_the_entry_point_group():
    from tools.bench import main as bench
    assert bench.add_parser in cli.plugin_commands()
    args = cli.build_parser().parse_args(["bench", "router"])
    assert args.command == "bench" and args.func is bench.cmd_router


def test_the_product_commands_load_without_the_tools_package():
    """Building the parser imports nothing from tools/ when no entry point asks for it
    (here: the group is emptied)."""
    code = ("import sys, apps.cli as c\n"
            "c.plugin_commands = lambda: []\n"
            "p = c.build_parser()\n"
            "assert not [m for m in sys.modules if m == 'tools' or m.startswith('tools.')]\n"
            "p.parse_args(['lab', 'status'])\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_bench_help_runs_as_a_command():
    done = subprocess.run([sys.executable, "-m", "apps.cli", "bench", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "usage: tapsplice bench" in done.stdout
