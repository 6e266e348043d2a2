"""FaultModel and its --impair text form."""

from __future__ import annotations

import pytest

from stack.netdev.faults import FaultModel


def test_parse_full_example() -> None:
    f = FaultModel.parse("loss=1%,duplicate=1%,reorder=2%,corrupt=0.1%,delay=1ms")
    assert f.loss == pytest.approx(0.01)
    assert f.duplicate == pytest.approx(0.01)
    assert f.reorder == pytest.approx(0.02)
    assert f.corrupt == pytest.approx(0.001)
    assert f.delay == pytest.approx(0.001)
    assert f.jitter == 0.0 and f.rate_bps is None


@pytest.mark.parametrize("text,field,value", [
    ("delay=250us", "delay", 250e-6),
    ("delay=2s", "delay", 2.0),
    ("delay=0.5", "delay", 0.5),
    ("jitter=3ms", "jitter", 0.003),
    ("reorder_delay=5ms", "reorder_delay", 0.005),
    ("rate=10mbit", "rate_bps", 10e6),
    ("rate=1.5gbit", "rate_bps", 1.5e9),
    ("rate=64kbit", "rate_bps", 64e3),
    ("rate=9600", "rate_bps", 9600.0),
    ("loss=0.25", "loss", 0.25),
    (" LOSS = 100% ", "loss", 1.0),
])
def test_parse_units(text: str, field: str, value: float) -> None:
    assert getattr(FaultModel.parse(text), field) == pytest.approx(value)


def test_parse_empty_is_clean() -> None:
    assert FaultModel.parse("").is_clean
    assert not FaultModel.parse("loss=1%").is_clean


def test_str_round_trips() -> None:
    f = FaultModel.parse("loss=1%,reorder=2%,delay=1ms,jitter=100us,rate=10mbit")
    assert FaultModel.parse(str(f)) == f


@pytest.mark.parametrize("text,needle", [
    ("loss", "key=value"),
    ("loss=abc", "not a number"),
    ("loss=150%", "more than 100%"),
    ("loss=2", "more than 100%"),
    ("loss=1ms", "unit"),
    ("delay=5h", "unit"),
    ("delay=-1ms", "not a number"),
    ("rate=10furlongs", "unit"),
    ("rate=0mbit", "positive"),
    ("bandwidth=1mbit", "unknown impairment"),
    ("loss=1%,loss=2%", "twice"),
])
def test_parse_bad(text: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        FaultModel.parse(text)


def test_constructor_validates() -> None:
    with pytest.raises(ValueError):
        FaultModel(loss=1.5)
    with pytest.raises(ValueError):
        FaultModel(delay=-0.1)
    with pytest.raises(ValueError):
        FaultModel(rate_bps=0)
