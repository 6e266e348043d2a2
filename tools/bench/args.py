"""argparse types shared by the benchmark commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from tools.bench.harness import format_size, parse_size


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An integer in ``low..high`` (``,`` and ``_`` separators allowed)."""
    return number_in(low, high, lambda t: int(t.replace(",", "").replace("_", "")))


def _show(v: float) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def number_in(low: float, high: float, kind: Callable[[str], float] = float
              ) -> Callable[[str], float]:
    """A number that ``kind`` parses, within ``low..high`` (NaN refused: it is not)."""
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be within {_show(low)}..{_show(high)}")
        return value
    return parse


def size(text: str, limit: int | None = None) -> int:
    """A byte count in binary units ("64M", "1G"), at most ``limit`` when given."""
    try:
        n = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    if limit is not None and n > limit:
        raise argparse.ArgumentTypeError(f"at most {format_size(limit)}")
    return n


def size_up_to(limit: int) -> Callable[[str], int]:
    """An argparse type: a byte count as :func:`size` reads it, at most ``limit``."""
    def parse(text: str) -> int:
        return size(text, limit)
    return parse


def seconds(text: str) -> float:
    """A duration in (0, 1 day] seconds."""
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not 0 < value <= 24 * 3600:
        raise argparse.ArgumentTypeError("seconds must be in (0, 86400]")
    return value
