"""The ceiling of any Python program on raw sockets: a bare frame forwarder between the
raw-socket lab's two veth ends (tools/bench/tapfwd.py's forwarder on packet sockets).

    python -m tools.bench.rawfwd --client-ns NS --client-tap TAP --server-ns NS
                                 --server-tap TAP --stack-ns NS [--reader ring]
                                 [--seconds N]

It answers ARP for the gateways, learns the kernels' MACs and passes every IPv4 frame
to the other interface with only the Ethernet addresses rewritten (vnet header, TSO
super-segments and partial checksums untouched). ``--reader recv_into`` (the default)
reads as RawDevice does, one ``recv_into`` per frame into a preallocated buffer;
``--reader ring`` reads from a TPACKET_V3 ring, copying each frame into an SkBuff as
the stack would need it (tools/bench/raw_ring.py). Either way each frame is one
``write`` on the other socket.

Prints ``ready`` once both sockets are bound, runs until SIGTERM/SIGINT or
``--seconds``, then prints its frame counts as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
from typing import Any

from apps.lab import LabConfig
from stack.netdev.netns import enter_netns
from stack.netdev.raw import PACKET_QDISC_BYPASS, PACKET_VNET_HDR, SOL_PACKET, RawDevice
from stack.skbuff import SkBuff
from tools.bench.raw_ring import RingReader
from tools.bench.tapfwd import _ARP, _IP, _MAC, Forwarder, serve

_VNET = 10


class RawForwarder(Forwarder):
    """tapfwd's forwarder reading packet sockets (or their rings) instead of TAPs."""

    def __init__(self, client: RawDevice, server: RawDevice,
                 rings: tuple[RingReader, RingReader] | None = None) -> None:
        super().__init__(client, server)  # type: ignore[arg-type]
        self.raw = (client, server)
        self.rings = rings
        if rings is not None:  # the loop polls the rings' sockets
            self.devs = (_RingSide(rings[0]), _RingSide(rings[1]))  # type: ignore[assignment]

    def _send(self, side: int, frame: bytes) -> None:
        self.raw[side].write(SkBuff.from_bytes(frame, headroom=16))

    def pump(self, side: int) -> None:
        """Forward what one side has, up to 512 frames (see tapfwd.Forwarder.pump)."""
        if self.rings is not None:
            return self._pump_ring(side)
        sock_in = self.raw[side].sock
        fd_out = self.raw[1 - side].sock.fileno()
        out_mac = self.peer_mac[1 - side]
        buf, iov = self._bufs[side]
        counts = self.counts[side]
        eth = _VNET
        for _ in range(512):
            try:
                n = sock_in.recv_into(iov[0])
            except BlockingIOError:
                return
            except OSError:
                counts["dropped"] += 1
                return
            self._one(side, buf, iov[0], eth, n, out_mac, fd_out, counts)

    def _pump_ring(self, side: int) -> None:
        assert self.rings is not None
        ring = self.rings[side]
        fd_out = self.raw[1 - side].sock.fileno()
        out_mac = self.peer_mac[1 - side]
        counts = self.counts[side]
        for _ in range(8):
            batch = ring.read_batch()
            for skb in batch:
                start = skb.data - _VNET
                self._one(side, skb.buf, memoryview(skb.buf), start + _VNET, skb.tail,
                          out_mac, fd_out, counts, start)
            if len(batch) < ring.batch:
                return

    def _one(self, side: int, buf: bytearray, view: memoryview, eth: int, end: int,
             out_mac: bytes | None, fd_out: int, counts: dict[str, int],
             start: int = 0) -> None:
        kind = buf[eth + 12:eth + 14]
        if kind == _IP and out_mac is not None:
            buf[eth:eth + 6] = out_mac
            buf[eth + 6:eth + 12] = _MAC
            try:
                os.write(fd_out, view[start:end])
                counts["forwarded"] += 1
            except OSError:
                counts["dropped"] += 1
        elif kind == _ARP:
            self._arp(side, bytes(buf[eth:end]))
        else:
            counts["dropped"] += 1


def _sender(name: str, netns: str) -> RawDevice:
    """A packet socket on ``name`` that sends with vnet headers and receives nothing."""
    with enter_netns(netns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
        sock.bind((name, 0))
    sock.setblocking(False)
    return RawDevice(sock, name, mac=sock.getsockname()[4], offload=True, mtu=1500)


class _RingSide:
    """What tapfwd.serve polls: the ring's socket."""

    def __init__(self, ring: RingReader) -> None:
        self.ring = ring

    def fileno(self) -> int:
        return self.ring.fileno()


def main(argv: list[str] | None = None) -> int:
    """Run the forwarder until a signal or the time limit."""
    p = argparse.ArgumentParser(prog="rawfwd", description=__doc__.split("\n\n")[0])
    for name in ("client-ns", "client-tap", "server-ns", "server-tap", "stack-ns"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--reader", choices=("recv_into", "ring"), default="recv_into")
    p.add_argument("--seconds", type=float, default=3600.0)
    args = p.parse_args(argv)
    cfg = LabConfig(client_ns=args.client_ns, server_ns=args.server_ns,
                    client_tap=args.client_tap, server_tap=args.server_tap,
                    stack_ns=args.stack_ns)
    rings = None
    if args.reader == "ring":
        rings = (RingReader(cfg.client_raw, cfg.stack_ns),
                 RingReader(cfg.server_raw, cfg.stack_ns))
        # The rings read; these sockets only send (no protocol: they receive nothing).
        client, server = (_sender(name, cfg.stack_ns)
                          for name in (cfg.client_raw, cfg.server_raw))
    else:
        client = RawDevice.open(cfg.client_raw, netns=cfg.stack_ns)
        server = RawDevice.open(cfg.server_raw, netns=cfg.stack_ns)
    fwd = RawForwarder(client, server, rings)
    stop: dict[str, Any] = {"now": False}
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, f: stop.update(now=True))
    print("ready", flush=True)
    try:
        serve(fwd, (0, 1), stop, time.monotonic() + args.seconds)
    finally:
        for dev in (client, server):
            dev.close()
        for ring in rings or ():
            ring.close()
    total = {k: fwd.counts[0][k] + fwd.counts[1][k] for k in fwd.counts[0]}
    print(json.dumps(total), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
