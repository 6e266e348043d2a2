"""Limits on password guessing, shared by the SOCKS (RFC 1929) and HTTP (Basic
Proxy-Authorization) proxies.

:class:`AuthLimiter` keeps, per client address, the number of failed attempts and
the time of the last one. The first ``free`` failures cost nothing (people mistype);
after that the address must wait ``base * 2**(failures - free)`` seconds, at most
``cap``, after its last failure before another attempt is even checked. An attempt
inside that window is refused without looking at the password (so a guess there
tells nothing) and does not extend the window. A success forgets the address.

The table is bounded (``max_addresses``, least recently failed out first) and aged
(an address quiet for ``forget`` seconds starts afresh), so a flood of addresses
costs a fixed amount of memory. The clock is passed in: tests use a fake one.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from apps.logsafe import field

__all__ = ["FAILED", "OK", "THROTTLED", "AuthLimiter", "log_failure"]

#: What :meth:`AuthLimiter.attempt` found.
OK, FAILED, THROTTLED = "ok", "failed", "throttled"


@dataclass(slots=True)
class _Record:
    failures: int
    last: float


class AuthLimiter:
    """Exponential back-off of authentication attempts per client address."""

    def __init__(self, *, free: int = 3, base: float = 1.0, cap: float = 60.0,
                 forget: float = 900.0, max_addresses: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if free < 0 or not 0 < base <= cap or forget <= 0 or max_addresses < 1:
            raise ValueError("bad auth limiter settings")
        self.free, self.base, self.cap = free, base, cap
        self.forget, self.max_addresses = forget, max_addresses
        self.clock = clock
        self._table: OrderedDict[str, _Record] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._table)

    def _record(self, addr: str, now: float) -> _Record | None:
        rec = self._table.get(addr)
        if rec is not None and now - rec.last >= self.forget:
            del self._table[addr]
            return None
        return rec

    def backoff(self, failures: int) -> float:
        """Seconds an address with ``failures`` failures waits after the last one."""
        if failures < self.free:
            return 0.0
        return min(self.cap, self.base * 2.0 ** min(failures - self.free, 64))

    def wait(self, addr: str) -> float:
        """Seconds before an attempt from ``addr`` will be checked (0: now)."""
        now = self.clock()
        rec = self._record(addr, now)
        if rec is None:
            return 0.0
        return max(0.0, rec.last + self.backoff(rec.failures) - now)

    def failures(self, addr: str) -> int:
        """Failed attempts counted for ``addr``."""
        rec = self._record(addr, self.clock())
        return 0 if rec is None else rec.failures

    def failed(self, addr: str) -> int:
        """Count a failed attempt from ``addr``; returns its failures so far."""
        now = self.clock()
        rec = self._record(addr, now)
        if rec is None:
            while len(self._table) >= self.max_addresses:
                self._table.popitem(last=False)   # the least recently failed
                self.evicted += 1
            rec = self._table[addr] = _Record(0, now)
        rec.failures += 1
        rec.last = now
        self._table.move_to_end(addr)
        return rec.failures

    def succeeded(self, addr: str) -> None:
        """A correct password from ``addr``: forget its failures."""
        self._table.pop(addr, None)

    def attempt(self, addr: str, check: Callable[[], bool]) -> str:
        """One authentication attempt from ``addr``: THROTTLED (refused unchecked,
        the address is inside its back-off window), else ``check()`` decides OK or
        FAILED and the table is updated."""
        if self.wait(addr) > 0:
            return THROTTLED
        if check():
            self.succeeded(addr)
            return OK
        self.failed(addr)
        return FAILED


def log_failure(logger: logging.Logger, addr: str, user: str | bytes | None,
                limiter: AuthLimiter, outcome: str) -> None:
    """A failed (WARNING) or throttled (DEBUG: the failures before it were logged)
    attempt, with the client's user name escaped."""
    level = logging.WARNING if outcome == FAILED else logging.DEBUG
    logger.log(level, "authentication %s from %s user %s (%d failures, next check in %.1f s)",
               outcome, field(addr), field(user), limiter.failures(addr), limiter.wait(addr))
