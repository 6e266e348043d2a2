"""`tapsplice replay FILE.pcap --addr A.B.C.D/N ...`: feed a capture to a fresh stack.

The frames addressed to the given addresses are handed, in capture order and at
their capture times (virtual time), to a new sans-I/O stack with those addresses;
each frame the stack sends in answer is printed, then its counters. Nothing touches
a device or the network (stack/testing/replay.py does the work).
"""

from __future__ import annotations

import argparse
import ipaddress
import sys

import dpkt

from stack.netdev.pcap import PcapWriter, read_pcap
from stack.testing.replay import ReplayResult, describe, replay

#: Frames printed at most (the counters are printed whatever the number).
MAX_PRINTED = 10_000


def _addr(text: str) -> str:
    try:
        ipaddress.IPv4Interface(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not A.B.C.D/N") from None
    return text if "/" in text else text + "/24"


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number")
    return int(text)


def print_result(result: ReplayResult, start: float, out=None) -> None:
    """The frames sent (time relative to the first captured frame) and the counters."""
    out = out if out is not None else sys.stdout  # looked up now: tests swap it
    for i, (t, dev, frame) in enumerate(result.sent):
        if i == MAX_PRINTED:
            print(f"... {len(result.sent) - MAX_PRINTED} more frames", file=out)
            break
        print(f"{t - start:+.6f} {dev} > {describe(frame)}", file=out)
    print(f"fed {result.fed} frames, skipped {result.skipped}, the stack sent "
          f"{len(result.sent)}; accepted {result.accepted} connections, read "
          f"{result.bytes_read} bytes", file=out)
    for title, counters in (("stack", result.stack_counters), ("tcp", result.tcp_counters)):
        print(f"{title} counters:", file=out)
        for key in sorted(counters):
            print(f"  {key} {counters[key]}", file=out)


def cmd_replay(args: argparse.Namespace) -> int:
    """Run `tapsplice replay`."""
    try:
        frames = read_pcap(args.file)
    except (OSError, ValueError, dpkt.dpkt.Error) as e:
        print(f"replay: cannot read {args.file}: {e}", file=sys.stderr)
        return 2
    if len(frames) > args.max_frames:
        print(f"replay: {len(frames)} frames; only the first {args.max_frames} are fed",
              file=sys.stderr)
        frames = frames[:args.max_frames]
    result = replay(frames, args.addr, listen=args.listen, feed_all=args.all,
                    linger=args.linger, seed=args.seed)
    print_result(result, frames[0][0] if frames else 0.0)
    if args.out:
        with PcapWriter(args.out) as w:
            for t, _dev, frame in result.sent:
                w.write(frame, t)
    return 0


def add_parser(subparsers) -> None:
    """Register `replay`."""
    p = subparsers.add_parser(
        "replay", help="feed a pcap to a fresh stack (virtual time) and show its answers",
        description="Hand the frames of FILE addressed to the given addresses to a new "
                    "stack, at their capture times on a virtual clock, and print what "
                    "it sends and its counters. For debugging; no device is touched.")
    p.add_argument("file", metavar="FILE.pcap")
    p.add_argument("--addr", action="append", type=_addr, required=True,
                   help="an address of the stack, A.B.C.D/N (repeatable)")
    p.add_argument("--listen", action="append", type=_port, default=[],
                   help="a port to accept connections on; they read and discard")
    p.add_argument("--all", action="store_true",
                   help="also feed frames the original host sent")
    p.add_argument("--linger", type=float, default=1.0,
                   help="virtual seconds of timers run after the last frame")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the stack's random numbers (ISNs), for exact replays")
    p.add_argument("--max-frames", type=int, default=1_000_000,
                   help="feed at most this many frames")
    p.add_argument("--out", metavar="OUT.pcap", help="also write the frames sent here")
    p.set_defaults(func=cmd_replay)
