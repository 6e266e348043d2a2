"""The fault model of a simulated link and its text form (the CLI's --impair).

Text form: comma-separated ``key=value`` pairs, for example
``loss=1%,duplicate=1%,reorder=2%,corrupt=0.1%,delay=1ms,jitter=200us,rate=10mbit``.
Probabilities take ``%`` or a plain fraction in [0, 1]; times take ``s``, ``ms``,
``us`` (a plain number is seconds); the rate takes ``bit``, ``kbit``, ``mbit``,
``gbit`` (a plain number is bit/s), as in tc-netem(8).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields

_PROBS = ("loss", "duplicate", "reorder", "corrupt")
_TIMES = ("delay", "jitter", "reorder_delay")
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
_RATE_UNITS = {"bit": 1.0, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "bps": 1.0}
_NUM = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Z%]*)\s*$")


@dataclass
class FaultModel:
    """Impairments of one direction of a link.

    Probabilities are per frame in [0, 1]; ``delay`` and ``jitter`` are seconds
    (arrival = delay + uniform(-jitter, +jitter), never before the frame was
    sent); a reordered frame is held back ``reorder_delay`` more so later frames
    overtake it; ``rate_bps`` adds serialization time and queueing.
    """

    loss: float = 0
    duplicate: float = 0
    reorder: float = 0
    corrupt: float = 0
    delay: float = 0.0
    jitter: float = 0.0
    rate_bps: float | None = None
    reorder_delay: float = 0.001

    def __post_init__(self) -> None:
        for name in _PROBS:
            v = getattr(self, name)
            if not (isinstance(v, int | float) and 0.0 <= v <= 1.0):
                raise ValueError(f"{name} must be a probability in [0, 1], not {v!r}")
        for name in _TIMES:
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a non-negative time in seconds, not {v!r}")
        if self.rate_bps is not None and not (math.isfinite(self.rate_bps) and self.rate_bps > 0):
            raise ValueError(f"rate must be positive, not {self.rate_bps!r}")

    @property
    def is_clean(self) -> bool:
        """True when the model changes nothing (a perfect, instant link)."""
        return self == FaultModel()

    @classmethod
    def parse(cls, text: str) -> FaultModel:
        """Build a model from ``key=value,...`` text; ValueError says what is wrong."""
        kw: dict[str, float] = {}
        for item in (p.strip() for p in text.split(",")):
            if not item:
                continue
            key, sep, value = item.partition("=")
            key = key.strip().lower().replace("-", "_")
            if not sep:
                raise ValueError(f"impairment {item!r}: expected key=value")
            if key in ("rate", "rate_bps"):
                key = "rate_bps"
            if key in kw:
                raise ValueError(f"impairment {key!r} given twice")
            kw[key] = _parse_value(key, value)
        return cls(**kw)

    def __str__(self) -> str:
        parts = []
        for f in fields(self):
            v = getattr(self, f.name)
            if v == f.default:
                continue
            if f.name in _PROBS:
                parts.append(f"{f.name}={v * 100:g}%")
            elif f.name == "rate_bps":
                parts.append(f"rate={v:g}bit")
            else:
                parts.append(f"{f.name}={v * 1e6:g}us")
        return ",".join(parts)


def _parse_value(key: str, value: str) -> float:
    m = _NUM.match(value)
    if m is None:
        raise ValueError(f"impairment {key}: {value.strip()!r} is not a number with a unit")
    num, unit = float(m.group(1)), m.group(2).lower()
    if key in _PROBS:
        if unit == "%":
            num /= 100.0
        elif unit:
            raise ValueError(f"impairment {key}: unit {unit!r}; use % or a fraction")
        if num > 1.0:
            raise ValueError(f"impairment {key}: {value.strip()} is more than 100%")
        return num
    if key in _TIMES:
        if unit and unit not in _TIME_UNITS:
            raise ValueError(f"impairment {key}: unit {unit!r}; use s, ms or us")
        return num * _TIME_UNITS.get(unit, 1.0)
    if key == "rate_bps":
        if unit and unit not in _RATE_UNITS:
            raise ValueError(f"impairment rate: unit {unit!r}; use bit, kbit, mbit or gbit")
        if num <= 0:
            raise ValueError("impairment rate: must be positive")
        return num * _RATE_UNITS.get(unit, 1.0)
    known = ", ".join((*_PROBS, *_TIMES, "rate"))
    raise ValueError(f"unknown impairment {key!r} (known: {known})")


@dataclass(slots=True)
class Fate:
    """What the fault model decided for one frame."""

    lost: bool
    copies: int            # 1, or 2 when duplicated
    arrival: float         # when the (first) copy arrives
    reordered: bool
    corrupt: bool
    bitpos: float          # where in the frame a corrupting bit flip lands, in [0, 1)


class FaultDecider:
    """Draws a :class:`Fate` per frame from one seeded RNG: the single definition of
    what a fault model does, used by the in-memory link and by ``--impair`` alike."""

    __slots__ = ("model", "rng", "busy_until")

    def __init__(self, model: FaultModel, rng) -> None:
        self.model = model
        self.rng = rng
        self.busy_until = 0.0   # rate limit: when the transmitter is free again

    def decide(self, now: float, nbytes: int) -> Fate:
        """The fate of a frame of ``nbytes`` sent at ``now``."""
        f, rng = self.model, self.rng
        # Draw every decision for every frame, so that changing one probability
        # does not shift the random sequence of the others.
        lost = rng.random() < f.loss
        dup = rng.random() < f.duplicate
        reord = rng.random() < f.reorder
        corrupt = rng.random() < f.corrupt
        bitpos = rng.random()
        jitter = rng.uniform(-f.jitter, f.jitter) if f.jitter else 0.0
        depart = now
        if f.rate_bps:  # serialization: frames queue behind each other
            depart = max(now, self.busy_until) + nbytes * 8 / f.rate_bps
            self.busy_until = depart
        arrival = depart + max(0.0, f.delay + jitter)
        if reord:
            arrival += f.reorder_delay
        return Fate(lost, 2 if dup else 1, arrival, reord, corrupt, bitpos)


def flip_bit(data: bytearray, start: int, end: int, where: float) -> None:
    """Flip one bit of ``data[start:end]`` at relative position ``where`` (noise)."""
    nbits = (end - start) * 8
    if nbits > 0:
        bit = min(int(where * nbits), nbits - 1)
        data[start + bit // 8] ^= 0x80 >> (bit % 8)
