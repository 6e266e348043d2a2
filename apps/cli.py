"""The `tapsplice` command line.

Each subcommand lives in the module that owns it; this file only wires argparse.
Subcommand modules expose ``add_parser(subparsers)`` which registers the
command and sets ``func`` (called with the parsed arguments, returns an exit code).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="tapsplice",
        description="A userspace TCP/IP stack on TAP devices with TCP splicing.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    from apps import connect, demo, replay, stackcmd
    from apps import stat as stat_cmd
    from apps.socks import cli as socks
    from tools import lab
    from tools.bench import main as bench

    demo.add_parser(sub)
    lab.add_parser(sub)
    stackcmd.add_parser(sub)
    connect.add_parser(sub)
    socks.add_parser(sub)
    __import__("apps.httpproxy.cli", fromlist=["add_parser"]).add_parser(sub)  # http-proxy
    bench.add_parser(sub)
    stat_cmd.add_parser(sub)
    replay.add_parser(sub)
    return parser


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
