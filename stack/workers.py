"""Worker processes: one stack, N processes, one queue of each TAP device apiece.

A single Python process is one core. For many short connections (the requests-per-
second load of `bench splice`) the stack can spread over several processes, the way a
multiqueue NIC spreads flows over CPUs with RSS:

- every TAP device is created ``multi_queue`` and opened N times here, in queue order;
- a steering program (stack/netdev/steer.py) sends each TCP or UDP frame to queue
  ``(sport + dport) mod N``: both directions of a connection reach one worker, and a
  worker that opens a connection picks a local port that brings it home
  (TcpConfig.port_shard);
- the workers share nothing but the devices, the interface MACs and the host secret
  (stack/hostkey.py); a spliced pair lives in one worker because the worker that
  accepted the client opened the server connection;
- ARP frames reach worker 0, which answers them and forwards a copy to every other
  worker over a datagram socket (:class:`ArpShare`), so that each one's neighbour
  cache learns the replies to its own requests. Neighbor Discovery the same way
  (RFC 4861): NS, NA and RA reach worker 0 (the steering program sends ICMPv6 but its
  errors there), which answers the solicitations for the addresses every worker
  shares, runs their DAD (RFC 4862 §5.4) and solicits the routers; the copies teach
  the others their neighbours, routers and prefixes, and a duplicate. The others
  solicit their own neighbours (the answer comes back through worker 0) and send no
  DAD probes (NeighborDiscovery.dad_elsewhere).

:func:`open_seats` prepares what each worker gets (a :class:`Seat`); :func:`run_workers`
forks one process per seat and supervises them: it prints ``ready`` once all are
ready, forwards SIGTERM/SIGINT, stops the rest when one dies, and merges the counters
they report at exit. A worker builds its stack with ``TapStack(..., seat=seat)``.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import random
import selectors
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stack.netdev.steer import attach_steering
from stack.skbuff import SkBuff
from stack.wire.ethernet import ETH_HLEN, random_mac
from stack.wire.fields import ETH_TYPE

log = logging.getLogger("tapsplice.workers")

#: Upper bound of --workers (queues per device; the kernel allows 256).
MAX_WORKERS = 16
#: Seconds the workers have to report ready.
READY_TIMEOUT = 60.0
#: Seconds stopping workers have to exit before they are killed.
STOP_GRACE = 15.0
_PR_SET_PDEATHSIG = 1
_ETH_ARP = b"\x08\x06"
_ETH_IPV6 = b"\x86\xdd"
_ICMPV6 = 58
_IP6_NEXT = ETH_HLEN + 6       # the IPv6 fixed header's next header, in the frame
_ICMP6_TYPE = ETH_HLEN + 40    # the type of an ICMPv6 message after it
#: ICMPv6 types shared (RFC 4861 §4): Router Advertisement, NS, NA.
_NDP_SHARED = frozenset({134, 135, 136})
_ARP_MSG_MAX = 2048
_ARP_BATCH = 64


@dataclass
class Seat:
    """What one worker gets: its place, its queue of every device (in attachment
    order), the interfaces' MACs, its ARP sockets (worker 0: one per other worker;
    the others: one to worker 0) and, once forked, the pipe to its supervisor."""

    index: int
    count: int
    devices: list[Any]
    macs: list[bytes]
    arp_socks: list[socket.socket] = field(default_factory=list)
    channel: int = -1
    reported: set[str] = field(default_factory=set)

    def close(self) -> None:
        """Release the devices and sockets (the supervisor and the other workers do)."""
        for dev in self.devices:
            dev.close()
        for s in self.arp_socks:
            s.close()
        self.devices = []
        self.arp_socks = []

    def report(self, kind: str, payload: Any = None) -> None:
        """Tell the supervisor ``ready`` or this worker's ``summary`` (a JSON line),
        each once: TapStack reports both itself when it has a seat."""
        if self.channel < 0 or kind in self.reported:
            return
        self.reported.add(kind)
        line = json.dumps({"kind": kind, "index": self.index, "payload": payload}) + "\n"
        data = line.encode()
        while data:
            n = os.write(self.channel, data)
            data = data[n:]


def open_seats(attachments: list[Any], count: int, *, offload: bool = True) -> list[Seat]:
    """Open ``count`` queues of every attachment's TAP, steer them, and pair up the
    ARP sockets. The devices must have been created ``multi_queue``."""
    from stack.netdev.tap import TapDevice

    if not 2 <= count <= MAX_WORKERS:
        raise ValueError(f"workers must be 2..{MAX_WORKERS}, not {count}")
    rng = random.SystemRandom()
    per_device: list[list[Any]] = []
    try:
        for a in attachments:
            if getattr(a, "kind", "tap") == "raw":  # a fanout group, steered the same way
                from stack.netdev.raw import RawDevice
                per_device.append(RawDevice.open_queues(a.tap, count, netns=a.netns,
                                                        offload=offload, mac=a.mac))
                continue
            queues = TapDevice.open_queues(a.tap, count, netns=a.netns, offload=offload,
                                           multi_queue=True)
            per_device.append(queues)
            attach_steering(queues[0].fileno(), count)
    except BaseException:
        for queues in per_device:
            for q in queues:
                q.close()
        raise
    # A raw socket answers to its interface's own MAC (RawDevice.mac).
    macs = [a.mac or getattr(q[0], "mac", None) or random_mac(rng)
            for a, q in zip(attachments, per_device, strict=True)]
    seats = [Seat(i, count, [queues[i] for queues in per_device], macs)
             for i in range(count)]
    for seat in seats[1:]:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        a.setblocking(False)
        b.setblocking(False)
        seats[0].arp_socks.append(a)
        seat.arp_socks.append(b)
    return seats


class ArpShare:
    """Worker 0 copies every ARP and NDP frame it reads to the other workers; they
    learn from the copies without answering them."""

    def __init__(self, tapstack: Any, seat: Seat) -> None:
        self.net = tapstack
        self.seat = seat
        self.counters = {"arp_shared": 0, "arp_share_dropped": 0, "arp_learned": 0,
                         "ndp_shared": 0, "ndp_learned": 0}
        if seat.index:
            tapstack.stack.ip6.nd.dad_elsewhere = True

    def start(self) -> None:
        """Hook into the driver (worker 0) or watch the socket (the others)."""
        driver = self.net.driver
        if self.seat.index == 0:
            driver.rx_tee = self._tee
        else:
            for s in self.seat.arp_socks:
                driver.loop.add_reader(s.fileno(), self._on_readable, s)

    def stop(self) -> None:
        """Stop watching the sockets."""
        driver = self.net.driver
        driver.rx_tee = None
        if self.seat.index and driver.loop is not None:
            for s in self.seat.arp_socks:
                try:
                    driver.loop.remove_reader(s.fileno())
                except (ValueError, OSError):
                    pass

    def _tee(self, iface: Any, skb: SkBuff) -> None:
        buf, d = skb.buf, skb.data
        etype = buf[d + ETH_TYPE:d + ETH_HLEN]
        if etype == _ETH_ARP:
            shared = "arp_shared"
        elif (etype == _ETH_IPV6 and skb.tail - d > _ICMP6_TYPE
              and buf[d + _IP6_NEXT] == _ICMPV6 and buf[d + _ICMP6_TYPE] in _NDP_SHARED):
            # An NS, NA or RA right after the fixed header, where RFC 4861 puts them.
            shared = "ndp_shared"
        else:
            return
        msg = bytes((iface.index,)) + bytes(buf[d:skb.tail])
        for s in self.seat.arp_socks:
            try:
                s.send(msg)
                self.counters[shared] += 1
            except OSError:  # a full or closed socket: that worker asks again later
                self.counters["arp_share_dropped"] += 1

    def _on_readable(self, sock: socket.socket) -> None:
        stack = self.net.stack
        now = self.net.driver.now()
        for _ in range(_ARP_BATCH):
            try:
                msg = sock.recv(_ARP_MSG_MAX)
            except BlockingIOError:
                break
            except OSError:
                break
            if len(msg) < 1 + ETH_HLEN or msg[0] >= len(stack.interfaces):
                self.counters["arp_share_dropped"] += 1
                continue
            skb = SkBuff.from_bytes(msg[1:], headroom=128)
            iface = stack.interfaces[msg[0]]
            if msg[1 + ETH_TYPE:1 + ETH_HLEN] == _ETH_IPV6:
                stack.ip6.learn_ndp(iface, skb, now)
                self.counters["ndp_learned"] += 1
            else:
                stack.learn_arp(iface, skb, now)
                self.counters["arp_learned"] += 1
        self.net.driver.poke()


# ---------------------------------------------------------------- supervisor
def merge_summaries(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Add up the workers' counters (numbers add, dicts merge, the rest: first wins)."""
    def merge(a: Any, b: Any) -> Any:
        if isinstance(a, dict) and isinstance(b, dict):
            out = dict(a)
            for k, v in b.items():
                out[k] = merge(out[k], v) if k in out else v
            return out
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) \
                and not isinstance(a, bool):
            return a + b
        return a
    total: dict[str, Any] = {}
    for p in parts:
        total = merge(total, p)
    return total


class _Child:
    def __init__(self, index: int, pid: int, fd: int) -> None:
        self.index = index
        self.pid = pid
        self.fd = fd
        self.buf = b""
        self.ready = False
        self.summary: dict[str, Any] | None = None
        self.exit_code: int | None = None


def _fork_worker(seat: Seat, seats: list[Seat], children: list[_Child],
                 child: Callable[[Seat], int]) -> _Child:
    r, w = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the worker
        code = 1
        try:
            _die_with_parent(parent)
            os.close(r)
            for c in children:
                os.close(c.fd)
            for other in seats:
                if other is not seat:
                    other.close()
            seat.channel = w
            code = child(seat)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(w)
    return _Child(seat.index, pid, r)


def _die_with_parent(parent: int) -> None:
    """Ask the kernel for SIGTERM when the supervisor dies (prctl PR_SET_PDEATHSIG),
    so that a killed supervisor does not leave workers serving on their own."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the supervisor's own stop() still reaches the workers
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def run_workers(seats: list[Seat], child: Callable[[Seat], int], *,
                ready_timeout: float = READY_TIMEOUT, grace: float = STOP_GRACE) -> int:
    """Fork a worker for each seat running ``child(seat)``; supervise until they end.

    A stop signal goes on to the workers (each drains, see stack/aio.py); one still
    running ``grace`` seconds later is killed. Prints ``ready`` when every worker
    reported ready, and at the end the merged counters (JSON, on stderr) with each
    worker's connection count. Returns 0 when
    all workers exited 0 after a stop signal, 1 otherwise.
    """
    children: list[_Child] = []
    for seat in seats:
        children.append(_fork_worker(seat, seats, children, child))
    for seat in seats:
        seat.close()
    return _supervise(children, ready_timeout, grace)


def _supervise(children: list[_Child], ready_timeout: float, grace: float) -> int:
    stopping: dict[str, str | None] = {"why": None}

    def stop(why: str) -> None:
        if stopping["why"] is None:
            stopping["why"] = why
        _signal_running(children, signal.SIGTERM)

    old = {sig: signal.signal(sig, lambda s, f: stop("signal")) for sig in
           (signal.SIGTERM, signal.SIGINT)}
    sel = selectors.DefaultSelector()
    for c in children:
        sel.register(c.fd, selectors.EVENT_READ, c)
    started = time.monotonic()
    stop_at: float | None = None
    announced = False
    try:
        while any(c.exit_code is None for c in children) or sel.get_map():
            for key, _ev in sel.select(timeout=0.2):
                _read_child(key.data, sel)
            _reap(children)
            if not announced and all(c.ready for c in children):
                announced = True
                print("ready", flush=True)
            if stopping["why"] is None:
                dead = [c for c in children if c.exit_code is not None]
                if dead:
                    log.error("worker %d exited with %s; stopping the others",
                              dead[0].index, dead[0].exit_code)
                    stop("worker exited")
                elif not announced and time.monotonic() - started > ready_timeout:
                    log.error("workers not ready within %gs", ready_timeout)
                    stop("not ready")
            if stopping["why"] is not None:
                stop_at = stop_at or time.monotonic()
                if time.monotonic() - stop_at > grace:
                    _signal_running(children, signal.SIGKILL)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        sel.close()
    parts = [c.summary or {} for c in children]
    summary = merge_summaries(parts)
    summary["workers"] = [{"index": c.index, "exit": c.exit_code,
                           "connections": (c.summary or {}).get("connections"),
                           "splices": ((c.summary or {}).get("splice") or {}).get("splices")}
                          for c in children]
    print(json.dumps(summary, indent=1), file=sys.stderr, flush=True)
    clean = stopping["why"] == "signal" and all(c.exit_code == 0 for c in children)
    return 0 if clean else 1


def _signal_running(children: list[_Child], sig: int) -> None:
    for c in children:
        if c.exit_code is None:
            try:
                os.kill(c.pid, sig)
            except ProcessLookupError:
                pass  # it has just exited; _reap will see it


def _read_child(c: _Child, sel: selectors.BaseSelector) -> None:
    try:
        data = os.read(c.fd, 1 << 16)
    except OSError:
        data = b""
    if not data:
        sel.unregister(c.fd)
        os.close(c.fd)
        return
    c.buf += data
    while b"\n" in c.buf:
        line, c.buf = c.buf.split(b"\n", 1)
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("kind") == "ready":
            c.ready = True
        elif msg.get("kind") == "summary" and isinstance(msg.get("payload"), dict):
            c.summary = msg["payload"]


def _reap(children: list[_Child]) -> None:
    for c in children:
        if c.exit_code is None:
            pid, status = os.waitpid(c.pid, os.WNOHANG)
            if pid:
                c.exit_code = os.waitstatus_to_exitcode(status)
