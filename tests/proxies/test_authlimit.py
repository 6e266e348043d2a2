"""apps/authlimit.py on a fake clock."""

from __future__ import annotations

import pytest

from apps.authlimit import AuthLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def limiter(**kw) -> tuple[AuthLimiter, Clock]:
    clock = Clock()
    return AuthLimiter(clock=clock, **kw), clock


def test_free_failures_then_exponential_backoff_capped() -> None:
    lim, clock = limiter(free=3, base=1.0, cap=8.0)
    for _ in range(3):
        assert lim.wait("a") == 0.0
        lim.failed("a")
    assert lim.wait("a") == 1.0          # fourth attempt: 1 s after the third failure
    clock.now += 1.0
    assert lim.wait("a") == 0.0
    lim.failed("a")
    assert lim.wait("a") == 2.0
    for _ in range(10):
        clock.now += lim.wait("a")
        lim.failed("a")
    assert lim.wait("a") == 8.0          # capped
    assert lim.failures("a") == 14


def test_other_addresses_are_not_affected_and_success_forgets() -> None:
    lim, clock = limiter(free=1, base=5.0)
    lim.failed("a")
    lim.failed("a")
    assert lim.wait("a") == 10.0 and lim.wait("b") == 0.0
    lim.succeeded("a")
    assert lim.wait("a") == 0.0 and lim.failures("a") == 0


def test_entries_age_out() -> None:
    lim, clock = limiter(free=0, forget=60.0)
    lim.failed("a")
    assert lim.failures("a") == 1 and lim.wait("a") > 0
    clock.now += 60.0
    assert lim.failures("a") == 0 and lim.wait("a") == 0.0 and len(lim) == 0


def test_table_is_bounded_oldest_out() -> None:
    lim, clock = limiter(max_addresses=3)
    for addr in ("a", "b", "c"):
        lim.failed(addr)
        clock.now += 1
    lim.failed("a")                      # a is now the most recent
    lim.failed("d")
    assert len(lim) == 3 and lim.evicted == 1
    assert lim.failures("b") == 0 and lim.failures("a") == 2


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        AuthLimiter(base=0)
    with pytest.raises(ValueError):
        AuthLimiter(max_addresses=0)


def test_attempt_refuses_unchecked_inside_the_window() -> None:
    lim, clock = limiter(free=2, base=4.0)
    calls: list[bool] = []

    def check(result: bool):
        def run() -> bool:
            calls.append(result)
            return result
        return run

    assert lim.attempt("a", check(False)) == "failed"
    assert lim.attempt("a", check(False)) == "failed"
    assert lim.attempt("a", check(True)) == "throttled"     # not even checked
    assert calls == [False, False] and lim.failures("a") == 2
    assert lim.attempt("b", check(True)) == "ok"
    clock.now += 4.0
    assert lim.attempt("a", check(True)) == "ok" and lim.failures("a") == 0
