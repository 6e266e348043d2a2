"""RFC 6298 estimator: exact values from the §2 formulas, backoff, bounds."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stack.tcp.rtt import RttEstimator


def rfc6298_reference(samples, g=0.001, lo=0.2, hi=120.0):
    """SRTT/RTTVAR/RTO written straight from RFC 6298 §2.2-§2.4."""
    srtt = rttvar = None
    rto = 1.0
    for r in samples:
        if srtt is None:
            srtt, rttvar = r, r / 2
        else:
            rttvar = 0.75 * rttvar + 0.25 * abs(srtt - r)
            srtt = 0.875 * srtt + 0.125 * r
        rto = min(max(srtt + max(g, 4 * rttvar), lo), hi)
    return srtt, rttvar, rto


def test_initial_rto_before_any_sample():
    e = RttEstimator()
    assert e.rto == 1.0
    assert not e.has_sample
    assert e.min_rtt is None


def test_first_sample_rule():
    e = RttEstimator()
    e.sample(0.5)
    assert e.srtt == 0.5
    assert e.rttvar == 0.25
    assert e.rto == pytest.approx(0.5 + 4 * 0.25)


def test_sequence_matches_hand_computation():
    e = RttEstimator()
    for r in (0.1, 0.3, 0.2):
        e.sample(r)
    # By hand: after 0.1: srtt 0.1, var 0.05.
    # after 0.3: var = .75*.05 + .25*.2 = .0875; srtt = .875*.1 + .125*.3 = .125
    # after 0.2: var = .75*.0875 + .25*.075 = .084375; srtt = .875*.125 + .125*.2 = .134375
    assert e.rttvar == pytest.approx(0.084375)
    assert e.srtt == pytest.approx(0.134375)
    assert e.rto == pytest.approx(0.134375 + 4 * 0.084375)


def test_rttvar_uses_old_srtt():
    e = RttEstimator()
    e.sample(1.0)
    e.sample(3.0)
    # |SRTT_old - R| = 2, not |SRTT_new - R| = 1.75
    assert e.rttvar == pytest.approx(0.75 * 0.5 + 0.25 * 2.0)


def test_min_rto_and_granularity():
    e = RttEstimator(min_rto=0.2, granularity=0.05)
    e.sample(0.01)
    assert e.rto == 0.2  # clamped up
    e2 = RttEstimator(min_rto=0.001, granularity=0.05)
    for _ in range(200):
        e2.sample(0.01)
    # RTTVAR decays to ~0 so G dominates K*RTTVAR
    assert e2.rto == pytest.approx(0.01 + 0.05, rel=1e-3)


def test_backoff_doubles_and_caps_then_resets():
    e = RttEstimator(max_rto=10.0)
    e.sample(0.5)
    base = e.rto
    e.backoff()
    assert e.rto == pytest.approx(2 * base)
    e.backoff()
    assert e.rto == pytest.approx(4 * base)
    for _ in range(100):
        e.backoff()
    assert e.rto == 10.0
    e.reset_backoff()
    assert e.rto == pytest.approx(base)


def test_new_sample_keeps_backoff_until_reset():
    e = RttEstimator()
    e.sample(0.5)
    e.backoff()
    e.sample(0.5)
    assert e.rto == pytest.approx(2 * e.srtt + 2 * 4 * e.rttvar)


def test_rto_setter_for_syn_timeout():
    e = RttEstimator()
    e.backoff()
    e.rto = 3.0
    assert e.rto == 3.0 and e.backoffs == 0


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, "x"])
def test_bad_samples_are_counted_not_used(bad):
    e = RttEstimator()
    e.sample(bad)
    assert e.rejected == 1
    assert not e.has_sample
    assert e.rto == 1.0


def test_bad_construction():
    with pytest.raises(ValueError):
        RttEstimator(min_rto=5.0, max_rto=1.0)
    with pytest.raises(ValueError):
        RttEstimator(granularity=math.nan)


def test_min_rtt_window_in_time():
    e = RttEstimator()
    e.sample(0.05, now=0.0)
    e.sample(0.2, now=10.0)
    assert e.min_rtt == 0.05
    e.sample(0.3, now=400.0)  # the 0.05 and 0.2 samples are older than 300 s
    assert e.min_rtt == 0.3


rtts = st.floats(min_value=0.0, max_value=1000.0, allow_nan=False)


@given(st.lists(rtts, min_size=1, max_size=60), st.integers(0, 70))
def test_rto_always_within_bounds(samples, backoffs):
    e = RttEstimator(min_rto=0.2, max_rto=60.0)
    for r in samples:
        e.sample(r)
        assert 0.2 <= e.rto <= 60.0
    for _ in range(backoffs):
        e.backoff()
        assert 0.2 <= e.rto <= 60.0


@given(st.lists(rtts, min_size=1, max_size=60))
def test_matches_reference_and_min(samples):
    e = RttEstimator()
    for r in samples:
        e.sample(r)
    srtt, rttvar, rto = rfc6298_reference(samples)
    assert e.srtt == pytest.approx(srtt)
    assert e.rttvar == pytest.approx(rttvar)
    assert e.rto == pytest.approx(rto)
    assert e.min_rtt == min(samples)
