"""Seeded fault injection for frames: loss, duplication, reordering, corruption, delay.

One decision procedure serves the in-memory link and the `--impair` option on real
TAP devices, so a fault model means the same thing in a simulation and in the lab.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from stack.netdev.faults import FaultModel


@dataclass(slots=True)
class Delivery:
    """One copy of a frame to deliver: when, and whether to flip a bit in it."""

    at: float
    corrupt: bool


class FaultInjector:
    """Applies a :class:`FaultModel` to a stream of frames with its own RNG."""

    def __init__(self, model: FaultModel, rng: random.Random) -> None:
        self.model = model
        self.rng = rng
        self.busy_until = 0.0   # rate limit: when the wire is free again
        self.counters = {"lost": 0, "duplicated": 0, "reordered": 0, "corrupted": 0}

    def plan(self, now: float, nbytes: int) -> list[Delivery]:
        """The deliveries for one frame of ``nbytes`` sent at ``now`` (empty: lost)."""
        m, r = self.model, self.rng
        if m.loss and r.random() < m.loss:
            self.counters["lost"] += 1
            return []
        start = now
        if m.rate_bps:
            start = max(now, self.busy_until)
            self.busy_until = start + nbytes * 8 / m.rate_bps
            start = self.busy_until
        copies = 1
        if m.duplicate and r.random() < m.duplicate:
            copies = 2
            self.counters["duplicated"] += 1
        out = []
        for _ in range(copies):
            at = start + m.delay
            if m.jitter:
                at = max(start, at + r.uniform(-m.jitter, m.jitter))
            if m.reorder and r.random() < m.reorder:
                at += m.reorder_delay
                self.counters["reordered"] += 1
            bad = bool(m.corrupt) and r.random() < m.corrupt
            if bad:
                self.counters["corrupted"] += 1
            out.append(Delivery(at, bad))
        return out

    def flip_bit(self, frame: bytearray | memoryview, start: int, end: int) -> None:
        """Flip one random bit in ``frame[start:end]`` (a wire error)."""
        if end > start:
            pos = self.rng.randrange(start, end)
            frame[pos] ^= 1 << self.rng.randrange(8)
