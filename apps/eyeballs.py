"""Connecting to a name with several addresses: the first attempt that succeeds wins.

RFC 8305 (Happy Eyeballs v2) §4–§5: the addresses are ordered with the families
interleaved (the preferred family first, then one of the other, and so on), and a
new attempt starts when the previous one fails or when the Connection Attempt Delay
has passed without an answer (250 ms by default, never under 100 ms or over 2 s,
§5); the first connection established wins and every other attempt is cancelled
(one that completes anyway is closed). A proxy that must not race — the splice, which
intends one server connection per client connection at a time (docs/splice.md §1.2)
— passes ``stagger=None``: then one attempt at a time, each bounded by
``attempt_timeout`` while other addresses remain.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")

#: RFC 8305 §5: the Connection Attempt Delay, its floor and its ceiling.
ATTEMPT_DELAY = 0.25
MIN_ATTEMPT_DELAY = 0.1
MAX_ATTEMPT_DELAY = 2.0
#: Addresses tried for one connection at most (a name can have hundreds).
MAX_ATTEMPTS = 8


class AllAttemptsFailed(OSError):
    """No address answered; ``errors`` holds (address, exception) per attempt, and
    ``first`` the first attempt's error (what a caller maps to its own reply)."""

    def __init__(self, errors: list[tuple[str, BaseException]]) -> None:
        self.first = errors[0][1]
        text = "; ".join(f"{addr}: {err or type(err).__name__}" for addr, err in errors)
        code = getattr(self.first, "errno", None)
        super().__init__(*((code, text) if code is not None else (text,)))
        self.errors = errors


def interleave(addresses: Sequence[str], prefer_ipv6: bool = True) -> list[str]:
    """RFC 8305 §4: alternate the families, the preferred one first, each family in
    the order given (the resolver's order); duplicates dropped."""
    seen: dict[str, None] = dict.fromkeys(addresses)
    v6 = [a for a in seen if ipaddress.ip_address(a).version == 6]
    v4 = [a for a in seen if ipaddress.ip_address(a).version == 4]
    first, second = (v6, v4) if prefer_ipv6 else (v4, v6)
    out: list[str] = []
    for i in range(max(len(first), len(second))):
        out += first[i:i + 1] + second[i:i + 1]
    return out


class _Race(Generic[T]):
    """The attempts of one connection and their outcomes."""

    def __init__(self, connect: Callable[[str], Awaitable[T]],
                 discard: Callable[[T], None]) -> None:
        self.connect = connect
        self.discard = discard
        self.tasks: dict[asyncio.Task[T], str] = {}
        self.errors: list[tuple[str, BaseException]] = []

    def start(self, address: str) -> None:
        self.tasks[asyncio.ensure_future(self.connect(address))] = address

    async def wait(self, timeout: float | None) -> tuple[str, T] | None:
        """Wait for the first attempt to end (or ``timeout``): the winner, or None."""
        done, _ = await asyncio.wait(self.tasks, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            address = self.tasks.pop(task)
            if task.cancelled():
                continue
            error = task.exception()
            if error is None:
                return address, task.result()
            self.errors.append((address, error))
        return None

    def cancel_all(self, reason: BaseException | None = None) -> None:
        """Cancel what is still running (recording ``reason`` as its error when
        given); a connection made anyway is discarded."""
        for task, address in self.tasks.items():
            if reason is not None:
                self.errors.append((address, reason))
            task.cancel()
            task.add_done_callback(self._discard_late)
        self.tasks.clear()

    def _discard_late(self, task: asyncio.Task[T]) -> None:
        if not task.cancelled() and task.exception() is None:
            self.discard(task.result())


async def connect_first(addresses: Sequence[str], connect: Callable[[str], Awaitable[T]], *,
                        discard: Callable[[T], None] = lambda _c: None,
                        stagger: float | None = ATTEMPT_DELAY,
                        attempt_timeout: float | None = None) -> tuple[str, T]:
    """Connect to the first of ``addresses`` that answers; returns (address, result).

    ``connect(address)`` makes one attempt; ``discard(result)`` closes a connection
    that succeeded after another won. ``stagger``: the Connection Attempt Delay
    (clamped to RFC 8305 §5's bounds), or None for one attempt at a time. Raises
    :class:`AllAttemptsFailed` when every attempt failed; cancellation cancels them
    all."""
    todo = list(addresses[:MAX_ATTEMPTS])
    if not todo:
        raise ValueError("no address to connect to")
    if stagger is not None:
        stagger = min(max(stagger, MIN_ATTEMPT_DELAY), MAX_ATTEMPT_DELAY)
    race: _Race[T] = _Race(connect, discard)
    try:
        while todo or race.tasks:
            if todo and (stagger is not None or not race.tasks):
                race.start(todo.pop(0))
            if stagger is not None:
                timeout = stagger if todo else None
            else:
                timeout = attempt_timeout if todo else None
            won = await race.wait(timeout)
            if won is not None:
                return won
            if stagger is None and race.tasks and todo:
                # This attempt took too long: on to the next address.
                race.cancel_all(TimeoutError("attempt timed out"))
    finally:
        race.cancel_all()
    if len(race.errors) == 1:
        raise race.errors[0][1]   # one address: its own error, unchanged
    raise AllAttemptsFailed(race.errors)


__all__ = ["AllAttemptsFailed", "connect_first", "interleave"]
