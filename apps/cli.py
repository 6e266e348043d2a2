"""The `tapsplice` command line.

Each subcommand lives in the module that owns it; this file only wires argparse.
Subcommand modules expose ``add_parser(subparsers)`` which registers the
command and sets ``func`` (called with the parsed arguments, returns an exit code).
Commands from outside the product (``tapsplice bench``, in tools/bench) register such
a function as an entry point of the group ``tapsplice.commands`` (pyproject.toml), so
the product never imports them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="tapsplice",
        description="A userspace TCP/IP stack on TAP devices with TCP splicing.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    from apps import connect, demo, lab, replay, stackcmd
    from apps import stat as stat_cmd
    from apps.socks import cli as socks

    demo.add_parser(sub)
    lab.add_parser(sub)
    stackcmd.add_parser(sub)
    connect.add_parser(sub)
    socks.add_parser(sub)
    __import__("apps.httpproxy.cli", fromlist=["add_parser"]).add_parser(sub)  # http-proxy
    for add_parser in plugin_commands():
        add_parser(sub)
    stat_cmd.add_parser(sub)
    replay.add_parser(sub)
    return parser


#: The entry point group of subcommands that live outside the product.
COMMANDS_GROUP = "tapsplice.commands"


def plugin_commands() -> list[Callable[[Any], Any]]:
    """The ``add_parser`` functions registered in the ``tapsplice.commands`` entry point
    group, by command name."""
    from importlib.metadata import entry_points
    return [ep.load() for ep in sorted(entry_points(group=COMMANDS_GROUP),
                                       key=lambda ep: ep.name)]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tapsplice` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(getattr(args, "log_level", "info")).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    profile = os.environ.get("TAPSPLICE_PROFILE")
    if profile:
        # A cProfile of the whole command, written at exit (stacks stop on SIGTERM).
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    finally:
        if profile:
            prof.disable()
            # "{command}" and "{pid}" in the name keep the profiles of a benchmark's
            # processes apart (the benchmark and each stack it starts).
            prof.dump_stats(profile.format(command=getattr(args, "command", "x"),
                                           pid=os.getpid()))


if __name__ == "__main__":
    sys.exit(main())
