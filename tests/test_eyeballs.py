"""Connecting to the first address that answers (RFC 8305), on virtual time."""

from __future__ import annotations

import asyncio

import pytest

from apps.eyeballs import AllAttemptsFailed, connect_first, interleave
from stack.sim import SimNetwork
from stack.simloop import run


def virtual(body):
    async def main(_driver):
        return await body(asyncio.get_running_loop())
    return run(main, SimNetwork(1))


class Net:
    """Fake attempts: each address answers after a delay with a result or an error;
    the log says when each attempt started and how each ended."""

    def __init__(self, loop, plan: dict[str, tuple[float, object]]) -> None:
        self.loop, self.plan = loop, plan
        self.t0 = loop.time()
        self.started: list[tuple[str, float]] = []
        self.cancelled: list[str] = []
        self.discarded: list[object] = []

    async def connect(self, address: str) -> object:
        self.started.append((address, round(self.loop.time() - self.t0, 3)))
        delay, outcome = self.plan[address]
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            self.cancelled.append(address)
            raise
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def test_interleave_alternates_families_preferred_first_and_drops_duplicates():
    addrs = ["198.19.0.1", "198.19.0.2", "2001:2::1", "198.19.0.1", "2001:2::2", "198.19.0.3"]
    assert interleave(addrs) == ["2001:2::1", "198.19.0.1", "2001:2::2", "198.19.0.2",
                                 "198.19.0.3"]
    assert interleave(addrs, prefer_ipv6=False) == [
        "198.19.0.1", "2001:2::1", "198.19.0.2", "2001:2::2", "198.19.0.3"]


def test_a_silent_first_address_gets_company_after_the_attempt_delay_and_loses():
    async def body(loop):
        net = Net(loop, {"a": (10.0, "A"), "b": (0.1, "B")})
        got = await connect_first(["a", "b"], net.connect)
        assert got == ("b", "B")
        assert net.started == [("a", 0.0), ("b", 0.25)]
        await asyncio.sleep(0)
        assert net.cancelled == ["a"]
    virtual(body)


def test_a_refusal_starts_the_next_attempt_at_once():
    async def body(loop):
        net = Net(loop, {"a": (0.01, ConnectionRefusedError()), "b": (0.01, "B")})
        assert await connect_first(["a", "b"], net.connect) == ("b", "B")
        assert net.started == [("a", 0.0), ("b", 0.01)]
    virtual(body)


def test_the_delay_is_clamped_to_the_rfcs_bounds():
    async def body(loop):
        net = Net(loop, {"a": (60.0, "A"), "b": (60.0, "B"), "c": (0.0, "C")})
        assert await connect_first(["a", "b", "c"], net.connect, stagger=0.001) == ("c", "C")
        assert net.started == [("a", 0.0), ("b", 0.1), ("c", 0.2)]
    virtual(body)


def test_a_connection_made_after_the_winner_is_discarded():
    async def body(loop):
        net = Net(loop, {"a": (0.3, "A")})

        async def stubborn(address: str) -> object:
            if address == "a":
                return await net.connect(address)
            try:    # an attempt that finishes even when cancelled (a SYN/ACK in flight)
                await asyncio.sleep(0.5)
            except asyncio.CancelledError:
                pass
            return "B"

        got = await connect_first(["a", "b"], stubborn, discard=net.discarded.append)
        assert got == ("a", "A")
        await asyncio.sleep(1)
        assert net.discarded == ["B"]
    virtual(body)


def test_every_failure_is_reported_and_one_address_keeps_its_own_error():
    async def body(loop):
        net = Net(loop, {"a": (0.0, ConnectionRefusedError(111, "refused")),
                         "b": (0.0, OSError(113, "no route"))})
        with pytest.raises(AllAttemptsFailed) as info:
            await connect_first(["a", "b"], net.connect)
        assert [a for a, _ in info.value.errors] == ["a", "b"]
        assert isinstance(info.value.first, ConnectionRefusedError)
        assert "a: [Errno 111] refused; b: [Errno 113] no route" in str(info.value)
        with pytest.raises(ConnectionRefusedError):
            await connect_first(["a"], net.connect)
    virtual(body)


def test_one_at_a_time_with_an_attempt_timeout():
    async def body(loop):
        net = Net(loop, {"a": (60.0, "A"), "b": (0.5, "B")})
        got = await connect_first(["a", "b"], net.connect, stagger=None, attempt_timeout=3.0)
        assert got == ("b", "B")
        assert net.started == [("a", 0.0), ("b", 3.0)]   # never two at once
        assert net.cancelled == ["a"]
    virtual(body)


def test_one_at_a_time_reports_the_timed_out_attempt_by_its_address():
    async def body(loop):
        net = Net(loop, {"a": (60.0, "A"), "b": (0.0, ConnectionRefusedError())})
        with pytest.raises(AllAttemptsFailed) as info:
            await connect_first(["a", "b"], net.connect, stagger=None, attempt_timeout=2.0)
        assert [(a, type(e)) for a, e in info.value.errors] == [
            ("a", TimeoutError), ("b", ConnectionRefusedError)]
    virtual(body)


def test_cancelling_the_caller_cancels_every_attempt():
    async def body(loop):
        net = Net(loop, {"a": (60.0, "A"), "b": (60.0, "B")})
        task = asyncio.ensure_future(connect_first(["a", "b"], net.connect))
        await asyncio.sleep(1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)
        assert sorted(net.cancelled) == ["a", "b"]
    virtual(body)


def test_attempts_are_bounded_and_an_empty_list_is_an_error():
    async def body(loop):
        addrs = [f"198.19.0.{i}" for i in range(1, 30)]
        net = Net(loop, {a: (0.0, ConnectionRefusedError()) for a in addrs})
        with pytest.raises(AllAttemptsFailed) as info:
            await connect_first(addrs, net.connect)
        assert len(info.value.errors) == 8
        with pytest.raises(ValueError):
            await connect_first([], net.connect)
    virtual(body)
