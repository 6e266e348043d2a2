"""Replay a capture into a fresh sans-I/O stack, for debugging.

:func:`replay` builds a :class:`~stack.core.Stack` with one interface per given
address (its MAC taken from the capture, so frames addressed to the original host
are taken), a TCP layer, and optional listeners whose connections read and discard
what arrives. It then feeds the frames addressed to those interfaces in capture
order, on a virtual clock set to each frame's timestamp, running the stack's timers
in between, and returns every frame the stack sent plus its counters. Frames the
original host sent (its address as source) are skipped unless ``feed_all``.

With the same ``seed`` as the recorded stack (a simulation built with a seeded
``random.Random``) the replay is exact; a capture of a stack with other random ISNs
diverges once the peer acknowledges the original ISN — which is often the point.
"""

from __future__ import annotations

import ipaddress
import random
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from stack.core import Stack
from stack.iface import Interface
from stack.skbuff import SkBuff
from stack.tcp.api import TcpConfig
from stack.tcp.layer import Listener, TcpLayer
from stack.tcp.tcb import Tcb
from stack.wire.ipv4 import IPPROTO_TCP, ip_str
from stack.wire.tcp import flags_str

__all__ = ["ReplayResult", "replay", "describe", "discard_listener"]

_ETH_IP, _ETH_ARP = b"\x08\x00", b"\x08\x06"


@dataclass
class ReplayResult:
    """What a replay fed, skipped and sent, and the stack's counters at the end."""

    fed: int = 0
    skipped: int = 0
    sent: list[tuple[float, str, bytes]] = field(default_factory=list)
    stack_counters: dict[str, int] = field(default_factory=dict)
    tcp_counters: dict[str, int] = field(default_factory=dict)
    accepted: int = 0
    bytes_read: int = 0


def discard_listener(layer: TcpLayer, addr: bytes, port: int,
                     result: ReplayResult | None = None) -> Listener:
    """Listen on (addr, port); accepted connections read and drop whatever arrives, at
    once (so the receive window behaves as for an application that keeps up), and
    close at the end of the peer's stream."""
    lst = layer.listen(addr, port)

    def on_event(tcb: Tcb, event: str) -> None:
        data = tcb.recv()
        if result is not None:
            result.bytes_read += len(data)
        if tcb.eof_received and not tcb.user_shutdown:
            tcb.close(tcb.now)

    def on_accept(tcb: Tcb) -> None:
        if result is not None:
            result.accepted += 1
        tcb.on_event = on_event
        on_event(tcb, "accepted")

    lst.on_accept = on_accept
    return lst


def describe(frame: bytes) -> str:
    """One line about an Ethernet frame: ARP, a TCP segment, or its EtherType."""
    if len(frame) < 14:
        return f"runt frame ({len(frame)} bytes)"
    etype = frame[12:14]
    if etype == _ETH_ARP and len(frame) >= 42:
        op = "request" if frame[21] == 1 else "reply"
        return f"ARP {op} {ip_str(frame[28:32])} -> {ip_str(frame[38:42])}"
    if etype != _ETH_IP or len(frame) < 34:
        return f"ethertype 0x{etype.hex()} ({len(frame)} bytes)"
    ihl = (frame[14] & 15) * 4
    total = struct.unpack_from("!H", frame, 16)[0]
    src, dst, proto = ip_str(frame[26:30]), ip_str(frame[30:34]), frame[23]
    t = 14 + ihl
    if proto != IPPROTO_TCP or len(frame) < t + 20:
        return f"IPv4 {src} > {dst} proto {proto} len {total}"
    sport, dport, seq, ack, doff, flags, win = struct.unpack_from("!HHIIBBH", frame, t)
    plen = max(0, total - ihl - (doff >> 4) * 4)
    return (f"TCP {src}:{sport} > {dst}:{dport} [{flags_str(flags)}] seq {seq} "
            f"ack {ack} win {win} len {plen}")


def _src_dst(frame: bytes) -> tuple[bytes, bytes] | None:
    if frame[12:14] == _ETH_IP and len(frame) >= 34:
        return frame[26:30], frame[30:34]
    if frame[12:14] == _ETH_ARP and len(frame) >= 42:
        return frame[28:32], frame[38:42]
    return None


def _build(addrs: list[str], frames: list[tuple[float, bytes]], seed: int | None,
           config: TcpConfig | None) -> tuple[Stack, TcpLayer, list[Interface]]:
    rng = random.Random(seed) if seed is not None else random.Random()
    stack = Stack(rng=rng)
    # No offloads: the frames sent are complete, as on a wire (and in a capture).
    ifaces = [stack.add_interface(f"eth{i}", a, offload=False) for i, a in enumerate(addrs)]
    for iface in ifaces:
        # Take the MAC frames were addressed to, and learn the peers' MACs, so the
        # replayed stack neither drops the frames nor has to resolve anybody.
        for ts, frame in frames:
            sd = _src_dst(frame)
            if sd is None:
                continue
            if sd[1] == iface.addr and not frame[0] & 1:
                iface.mac = frame[0:6]
            if sd[1] == iface.addr and iface.on_link(sd[0]) and sd[0] != iface.addr:
                stack.neigh.update(iface, sd[0], frame[6:12], ts, create=True)
    layer = TcpLayer(stack, config=config, rng=stack.rng)
    stack.register_protocol(IPPROTO_TCP, layer)
    return stack, layer, ifaces


def _run_timers(stack: Stack, until: float, budget: list[int], *,
                strictly_before: bool = False) -> None:
    while budget[0] > 0:
        d = stack.next_deadline()
        if d is None or d > until or (strictly_before and d == until):
            return
        budget[0] -= 1
        stack.on_timer(d)


def replay(frames: Iterable[tuple[float, bytes]], addrs: list[str], *,
           listen: Iterable[int] = (), feed_all: bool = False, linger: float = 1.0,
           seed: int | None = None, config: TcpConfig | None = None,
           max_timer_runs: int = 1_000_000) -> ReplayResult:
    """Feed ``frames`` ((timestamp, Ethernet frame) in capture order) to a fresh stack
    with interfaces ``addrs`` ("A.B.C.D/N"); see the module docstring. ValueError for
    a bad address."""
    for a in addrs:
        ipaddress.IPv4Interface(a)  # a typed error before anything runs
    frames = list(frames)
    stack, layer, ifaces = _build(addrs, frames, seed, config)
    result = ReplayResult()
    for port in listen:
        discard_listener(layer, b"\0\0\0\0", port, result)
    budget = [max_timer_runs]
    now = frames[0][0] if frames else 0.0

    def collect(t: float) -> None:
        for iface, skb in stack.drain():
            result.sent.append((t, iface.name, skb.tobytes()))

    for ts, batch in _batches(frames, ifaces, feed_all, result):
        # Timers due before the batch run first, those due at its time after it (as a
        # simulation step does); the batch itself is one read batch of a driver.
        now = max(ts, now)  # a capture's clock may step back; the stack's may not
        _run_timers(stack, now, budget, strictly_before=True)
        collect(now)
        stack.begin_batch()
        for iface, frame in batch:
            stack.receive_frame(iface, SkBuff.from_bytes(frame, headroom=128), now)
        stack.end_batch(now)
        _run_timers(stack, now, budget)
        collect(now)
    end = now + linger
    while budget[0] > 0:
        d = stack.next_deadline()
        if d is None or d > end:
            break
        _run_timers(stack, d, budget)
        collect(d)
    result.stack_counters = {k: v for k, v in stack.counters.items() if v}
    result.tcp_counters = {k: v for k, v in layer.counters.items() if v}
    return result


def _batches(frames: list[tuple[float, bytes]], ifaces: list[Interface], feed_all: bool,
             result: ReplayResult) -> Iterator[tuple[float, list[tuple[Interface, bytes]]]]:
    """Frames to feed, grouped: consecutive frames with one timestamp, not separated
    by a frame the original host sent, arrived together."""
    batch: list[tuple[Interface, bytes]] = []
    batch_ts = 0.0
    for ts, frame in frames:
        target = _target(ifaces, _src_dst(frame), feed_all)
        if batch and (target is None or ts != batch_ts):
            yield batch_ts, batch
            batch = []
        if target is None:
            result.skipped += 1
            continue
        result.fed += 1
        batch_ts = ts
        batch.append((target, frame))
    if batch:
        yield batch_ts, batch


def _target(ifaces: list[Interface], sd: tuple[bytes, bytes] | None,
            feed_all: bool) -> Interface | None:
    """The interface a captured frame enters, or None to skip it."""
    if sd is None:
        return ifaces[0] if feed_all and ifaces else None
    src, dst = sd
    if not feed_all and any(src == i.addr for i in ifaces):
        return None  # the original host sent it
    for iface in ifaces:
        if dst == iface.addr:
            return iface
    if feed_all:
        return next((i for i in ifaces if i.on_link(src) or i.on_link(dst)), ifaces[0])
    return None
