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
