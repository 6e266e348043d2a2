"""Receive paths of a packet socket, measured against each other in one run:

    python -m tools.bench.raw_rx [--small N] [--large N]

RawDevice's one ``recv_into`` per frame against a TPACKET_V3 ring
(tools/bench/raw_ring.py) that copies each frame into an SkBuff as the stack needs it.
The kernel in the client namespace of a raw-socket lab first queues N frames at the
stack's veth end while nobody reads (small UDP datagrams, then 60 KB UDP GSO
super-datagrams, which arrive whole); then the reader drains them and the drain is
timed. So the figure is the reader's cost per frame alone, with no sender in the loop.
Prints one JSON object with frames/s (and Gbit/s for the large frames) per reader.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from apps.lab import LabConfig, lab_down, lab_up, run_in_ns
from stack.netdev.netns import enter_netns
from stack.netdev.raw import SO_RCVBUFFORCE, RawDevice
from tools.bench.raw_ring import RingReader

UDP_SEGMENT = 103
DRAIN_LIMIT = 20.0  # seconds one drain may take


def _send(cfg: LabConfig, count: int, size: int) -> None:
    """``count`` datagrams of ``size`` bytes from the client kernel to 198.18.0.2
    (UDP GSO of 1,400-byte segments when ``size`` is larger)."""
    with enter_netns(cfg.client_ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with s:
        if size > 1400:
            s.setsockopt(socket.SOL_UDP, UDP_SEGMENT, 1400)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 24)
        payload = b"r" * size
        for _ in range(count):
            s.sendto(payload, ("198.18.0.2", 9))


def _drain(reader: Any, count: int) -> tuple[int, int, float]:
    """Read until ``count`` frames or a quiet second; (frames, bytes, seconds)."""
    frames = nbytes = 0
    t0 = time.perf_counter()
    last = t0
    while frames < count and time.perf_counter() - t0 < DRAIN_LIMIT:
        batch = reader.read_batch()
        if not batch:
            if not select.select([reader], [], [], 1.0)[0]:
                break
            continue
        last = time.perf_counter()
        frames += len(batch)
        nbytes += sum(skb.tail - skb.data for skb in batch)
    return frames, nbytes, last - t0


def measure(cfg: LabConfig, opener: Callable[[], Any], count: int, size: int
            ) -> dict[str, float]:
    """Queue ``count`` frames at a fresh reader, then time its drain."""
    reader = opener()
    try:
        mac = reader.sock.getsockname()[4]
        run_in_ns(cfg.client_ns, "ip", "neigh", "replace", "198.18.0.2", "lladdr",
                  mac.hex(":"), "dev", cfg.client_tap, "nud", "permanent", check=True)
        while reader.read_batch():
            pass  # what arrived before the measurement
        _send(cfg, count, size)
        frames, nbytes, seconds = _drain(reader, count)
    finally:
        reader.close()
    return {"frames": frames, "seconds": seconds,
            "frames_per_s": frames / seconds if seconds else 0.0,
            "gbit_per_s": nbytes * 8 / seconds / 1e9 if seconds else 0.0}


def main(argv: list[str] | None = None) -> int:
    """Build a raw-socket lab, measure both readers on small and large frames."""
    p = argparse.ArgumentParser(prog="raw_rx", description=__doc__.split("\n\n")[0])
    p.add_argument("--small", type=int, default=20_000, help="64-byte datagrams")
    p.add_argument("--large", type=int, default=400, help="60 KB super-datagrams")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    cfg = LabConfig.unique("rawrx")
    lab_up(cfg, raw=True)

    def recv_into() -> RawDevice:
        dev = RawDevice.open(cfg.client_raw, netns=cfg.stack_ns)
        dev.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 1 << 27)  # hold them all
        return dev

    def ring() -> RingReader:
        return RingReader(cfg.client_raw, cfg.stack_ns, blocks=128)

    out: dict[str, Any] = {}
    try:
        for label, count, size in (("small", args.small, 64), ("large", args.large, 60000)):
            for name, opener in (("recv_into", recv_into), ("tpacket_v3", ring)):
                runs = [measure(cfg, opener, count, size) for _ in range(args.repeats)]
                best = max(runs, key=lambda r: r["frames_per_s"])
                out[f"{label}/{name}"] = {**best, "all_frames_per_s": [
                    round(r["frames_per_s"]) for r in runs]}
    finally:
        lab_down(cfg)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
