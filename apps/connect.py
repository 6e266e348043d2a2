"""`tapsplice connect HOST PORT`: netcat over the stack (stdin -> connection -> stdout)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

import uvloop

from apps.stackcmd import add_common, open_stack
from stack.aio import TapStack

log = logging.getLogger("tapsplice.connect")
CHUNK = 256 * 1024


async def _pump_stdin(writer: asyncio.StreamWriter) -> None:
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()
    while True:
        data = await loop.run_in_executor(None, os.read, fd, CHUNK)
        if not data:
            break
        writer.write(data)
        await writer.drain()
    writer.write_eof()


async def _pump_stdout(reader: asyncio.StreamReader) -> int:
    out = sys.stdout.buffer
    total = 0
    while data := await reader.read(CHUNK):
        out.write(data)
        total += len(data)
    out.flush()
    return total


async def _session(net: TapStack, args: argparse.Namespace) -> int:
    net.start()
    try:
        reader, writer = await asyncio.wait_for(
            net.open_connection(args.host, args.port), timeout=args.timeout)
    except (TimeoutError, OSError) as e:
        print(f"connect {args.host}:{args.port}: {e or 'timed out'}", file=sys.stderr)
        return 1
    sender = asyncio.ensure_future(_pump_stdin(writer))
    try:
        received = await _pump_stdout(reader)
    except ConnectionError as e:
        print(f"connection lost: {e}", file=sys.stderr)
        return 1
    finally:
        sender.cancel()
        writer.close()
    log.info("received %d bytes", received)
    return 0


def cmd_connect(args: argparse.Namespace) -> int:
    """Run one connection over the stack; exit when the peer closes."""
    net = open_stack(args)
    try:
        return uvloop.run(_session(net, args))
    finally:
        net.close()


def add_parser(subparsers) -> None:
    """Register `connect`."""
    p = subparsers.add_parser(
        "connect", help="netcat over the stack: stdin to HOST:PORT, the replies to stdout",
        description="Open one TCP connection from the stack to HOST:PORT; copy standard "
                    "input to it (half-closing at end of input) and what arrives to "
                    "standard output, until the peer closes.")
    p.add_argument("host", help="IPv4 address to connect to")
    p.add_argument("port", type=int)
    p.add_argument("--timeout", type=float, default=10.0, help="connect timeout (seconds)")
    add_common(p, workers=False)
    p.set_defaults(func=cmd_connect)
