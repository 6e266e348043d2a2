"""What the benchmark clients (http_client, thesis_client) share: output and addresses.

The clients run as their own processes in the client namespace and speak to
their runner in JSON lines on stdout (read by :func:`tools.bench.proc.read_json_lines`).
"""

from __future__ import annotations

import argparse
import json
import sys

from tools.bench.uvsocks import parse_listen

Addr = tuple[str, int]
# The bounds both clients keep: a response head, one read, objects and repeats
# on one command line, concurrent connections.
MAX_HEAD = 16 << 10
READ_CHUNK = 1 << 20
MAX_OBJECTS = 32
MAX_REPEATS = 1000
MAX_CONCURRENCY = 1024


def emit(obj: dict[str, object]) -> None:
    """One JSON line on stdout, flushed (the runner reads them as they come)."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def address(text: str) -> Addr:
    """An argparse type: ``HOST:PORT`` as parse_listen reads it."""
    try:
        return parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
