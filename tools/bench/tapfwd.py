"""The ceiling of any Python program on these TAP devices: a bare frame forwarder.

    python -m tools.bench.tapfwd --client-ns NS --client-tap TAP --server-ns NS
                                 --server-tap TAP [--seconds N]

It does the least a router between the stack lab's two TAPs can do and still carry a
kernel-to-kernel TCP transfer: it answers ARP for the gateway addresses 198.18.0.2 and
198.19.0.2, learns the kernels' MACs from their requests, and passes every IPv4 frame
to the other device with only the Ethernet addresses rewritten (the vnet header, TSO
super-segments and partial checksums pass through untouched). No TTL, no checksum, no
TCP, no splice: each 64 KB super-segment costs one readv, two slice assignments and
one write. Whatever this reaches, the stack (which does all of those) cannot pass on
this machine — it is the bench's ceiling row, not a product.

``--threads 2`` gives each device a thread of its own (reading it and writing the
other): the system calls release the GIL, so this is the most the interpreter's threads
could add.

Prints ``ready`` when both devices are open, runs until SIGTERM/SIGINT or
``--seconds`` (default 3600), then prints its frame counts as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import sys
import threading
import time

from stack.netdev.tap import TapDevice
from stack.skbuff import SkBuff
from stack.wire.vnet import VNET_HDR_LEN

_ARP = b"\x08\x06"
_IP = b"\x08\x00"
_MAC = bytes.fromhex("02005fa0b1c2")
_GATEWAYS = (socket.inet_aton("198.18.0.2"), socket.inet_aton("198.19.0.2"))
_HOSTS = (socket.inet_aton("198.18.0.1"), socket.inet_aton("198.19.0.1"))
# hardware type 1, IPv4, lengths 6 and 4, then the high byte of the operation
_ARP_HEAD = b"\x00\x01\x08\x00\x06\x04\x00"


class Forwarder:
    """Two TAPs, each frame out of the other one (see the module docstring)."""

    def __init__(self, client: TapDevice, server: TapDevice) -> None:
        self.devs = (client, server)
        self.peer_mac: list[bytes | None] = [None, None]
        # one set per reading side: the threads of --threads 2 never share one
        self.counts = [dict.fromkeys(("forwarded", "arp_replies", "dropped"), 0)
                       for _ in range(2)]
        self._bufs = []
        for _ in range(2):
            buf = bytearray(VNET_HDR_LEN + 65535 + 18)
            self._bufs.append((buf, [memoryview(buf)]))

    def pump(self, side: int) -> None:
        """Forward or answer what device ``side`` has, up to 512 frames (the stack's
        driver reads at most 8 batches of 64 before it looks at the other device).

        The leanest loop Python allows: one preallocated buffer per side, ``readv``
        into it, the Ethernet addresses assigned in place, the same bytes (vnet header
        included, as the kernel gave it) written to the other device.
        """
        fd_in = self.devs[side].fileno()
        fd_out = self.devs[1 - side].fileno()
        out_mac = self.peer_mac[1 - side]
        buf, iov = self._bufs[side]
        counts = self.counts[side]
        eth = VNET_HDR_LEN
        for _ in range(512):
            try:
                n = os.readv(fd_in, iov)
            except BlockingIOError:
                return
            kind = buf[eth + 12:eth + 14]
            if kind == _IP and out_mac is not None:
                buf[eth:eth + 6] = out_mac
                buf[eth + 6:eth + 12] = _MAC
                try:
                    os.write(fd_out, iov[0][:n])
                    counts["forwarded"] += 1
                except OSError:
                    counts["dropped"] += 1
            elif kind == _ARP:
                self._arp(side, bytes(buf[eth:n]))
            else:
                counts["dropped"] += 1

    def _arp(self, side: int, frame: bytes) -> None:
        if len(frame) < 42 or frame[16:20] != b"\x08\x00\x06\x04":
            return
        op, sha, spa, tpa = frame[20:22], frame[22:28], frame[28:32], frame[38:42]
        self.peer_mac[side] = sha
        if op != b"\x00\x01" or tpa not in _GATEWAYS:
            return
        self._send(side, sha + _MAC + _ARP + _ARP_HEAD + b"\x02" + _MAC + tpa + sha + spa)
        self.counts[side]["arp_replies"] += 1

    def ask(self) -> None:
        """ARP for each kernel's address until its MAC is known (the server's kernel
        would otherwise never speak first)."""
        for side in (0, 1):
            if self.peer_mac[side] is None:
                gw, host = _GATEWAYS[side], _HOSTS[side]
                self._send(side, b"\xff" * 6 + _MAC + _ARP + _ARP_HEAD + b"\x01" + _MAC + gw
                           + b"\x00" * 6 + host)

    def _send(self, side: int, frame: bytes) -> None:
        self.devs[side].write(SkBuff.from_bytes(frame, headroom=16))


def serve(fwd: Forwarder, sides: tuple[int, ...], stop: dict, deadline: float) -> None:
    """Forward what arrives on ``sides`` until ``stop`` or the deadline."""
    ep = select.epoll()
    side_of = {}
    for side in sides:
        ep.register(fwd.devs[side].fileno(), select.EPOLLIN)
        side_of[fwd.devs[side].fileno()] = side
    try:
        while not stop["now"] and time.monotonic() < deadline:
            if None in fwd.peer_mac:
                fwd.ask()
            try:
                events = ep.poll(0.5)
            except InterruptedError:
                continue
            for fd, _ev in events:
                fwd.pump(side_of[fd])
    finally:
        ep.close()


def main(argv: list[str] | None = None) -> int:
    """Run the forwarder until a signal or the time limit."""
    p = argparse.ArgumentParser(prog="tapfwd", description=__doc__.split("\n\n")[0])
    for name in ("client-ns", "client-tap", "server-ns", "server-tap"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--seconds", type=float, default=3600.0)
    p.add_argument("--threads", type=int, choices=(1, 2), default=1)
    args = p.parse_args(argv)
    client = TapDevice.open(args.client_tap, netns=args.client_ns)
    server = TapDevice.open(args.server_tap, netns=args.server_ns)
    fwd = Forwarder(client, server)
    stop = {"now": False}
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, f: stop.update(now=True))
    print("ready", flush=True)
    deadline = time.monotonic() + args.seconds
    try:
        if args.threads == 1:
            serve(fwd, (0, 1), stop, deadline)
        else:
            other = threading.Thread(target=serve, args=(fwd, (1,), stop, deadline))
            other.start()
            try:
                serve(fwd, (0,), stop, deadline)
            finally:
                stop["now"] = True
                other.join()
    finally:
        client.close()
        server.close()
    total = {k: fwd.counts[0][k] + fwd.counts[1][k] for k in fwd.counts[0]}
    print(json.dumps(total), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
