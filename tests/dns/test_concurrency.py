"""In-flight sharing, the concurrency bound, and the randomness of IDs and ports."""

from __future__ import annotations

import asyncio
import random

import pytest

from stack.dns import Resolver, ResolverConfig, ResolverTimeout
from tests.dns.fakenet import S1, FakeNet, Send, qname, reply, run


def slow(delay: float):
    return lambda q: [Send(reply(q, f"{qname(q)} 30 IN A 198.18.1.1"), delay)]


def test_identical_concurrent_lookups_send_one_query():
    net = FakeNet()
    net.udp[S1] = slow(0.5)
    res = Resolver(net, [S1])

    async def main():
        return await asyncio.gather(res.resolve("www.example"), res.resolve("WWW.EXAMPLE."))
    assert run(main) == [["198.18.1.1"], ["198.18.1.1"]]
    assert len(net.sent) == 1
    assert res.counters["inflight_shared"] == 1
    assert res.stats()["inflight"] == 0


def test_a_cancelled_waiter_does_not_cancel_the_shared_lookup():
    net = FakeNet()
    net.udp[S1] = slow(0.5)
    res = Resolver(net, [S1])

    async def main():
        first = asyncio.ensure_future(res.resolve("www.example"))
        second = asyncio.ensure_future(res.resolve("www.example"))
        await asyncio.sleep(0.25)
        first.cancel()
        return await second
    assert run(main) == ["198.18.1.1"]
    assert len(net.sent) == 1


def test_query_ids_come_from_the_given_rng_and_ports_are_fresh():
    net = FakeNet(seed=3)
    net.udp[S1] = slow(0.125)
    res = Resolver(net, [S1], rng=random.Random(42))

    async def main():
        for i in range(20):
            await res.resolve(f"h{i}.example")
    run(main)
    expected = random.Random(42)
    assert [s.query.id for s in net.sent] == [expected.getrandbits(16) for _ in range(20)]
    assert len({s.query.id for s in net.sent}) == 20
    assert len({s.src_port for s in net.sent}) == 20
    assert len(net.endpoints) == 20


def test_default_ids_are_not_a_sequence():
    net = FakeNet()
    net.udp[S1] = slow(0.125)
    res = Resolver(net, [S1])

    async def main():
        for i in range(16):
            await res.resolve(f"h{i}.example")
    run(main)
    ids = [s.query.id for s in net.sent]
    assert len(set(ids)) > 12
    assert len({b - a for a, b in zip(ids, ids[1:], strict=False)}) > 12


def test_max_inflight_bounds_the_queries_on_the_network():
    net = FakeNet()
    net.udp[S1] = slow(0.5)
    res = Resolver(net, [S1], config=ResolverConfig(max_inflight=2))
    peak = 0

    async def watch():
        nonlocal peak
        while True:
            peak = max(peak, net.open_endpoints())
            await asyncio.sleep(0.0625)

    async def main():
        watcher = asyncio.ensure_future(watch())
        t0 = asyncio.get_running_loop().time()
        got = await asyncio.gather(*(res.resolve(f"h{i}.example") for i in range(5)))
        watcher.cancel()
        return got, asyncio.get_running_loop().time() - t0
    got, took = run(main)
    assert got == [["198.18.1.1"]] * 5
    assert took == 1.5  # three waves of at most two queries
    assert peak == 2
    assert [s.at - 1000.0 for s in net.sent] == [0.0, 0.0, 0.5, 0.5, 1.0]


def test_waiting_for_a_slot_counts_against_the_deadline():
    net = FakeNet()
    net.udp[S1] = slow(0.75)
    res = Resolver(net, [S1], config=ResolverConfig(max_inflight=1, deadline=1.0))

    async def main():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        got = await asyncio.gather(res.resolve("a.example"), res.resolve("b.example"),
                                   return_exceptions=True)
        return got, loop.time() - t0
    (first, second), took = run(main)
    assert first == ["198.18.1.1"]
    # b got the slot at 0.75 and only the 0.25 s left of its deadline for its try.
    assert isinstance(second, ResolverTimeout) and took == 1.0
    assert [s.at - 1000.0 for s in net.sent] == [0.0, 0.75]


def test_no_slot_before_the_deadline_is_a_timeout():
    net = FakeNet()
    net.udp[S1] = slow(0.75)
    res = Resolver(net, [S1], config=ResolverConfig(max_inflight=1, deadline=0.5))

    async def main():
        return await asyncio.gather(res.resolve("a.example"), res.resolve("b.example"),
                                    return_exceptions=True)
    first, second = run(main)
    assert isinstance(first, ResolverTimeout) and isinstance(second, ResolverTimeout)
    assert "slot" in str(second)
    assert res.counters["inflight_full"] == 1 and len(net.sent) == 1


def test_joined_waiter_keeps_its_own_deadline():
    net = FakeNet()
    # alias.example (asked at 0) answers at 1 with a CNAME to slow.example, which a
    # direct lookup started at 0.5 is already waiting for; its answer comes at 3.25.
    net.udp[S1] = lambda q: [Send(reply(q, f"{qname(q)} 30 IN A 198.18.1.1"), 2.75)] \
        if qname(q) == "slow.example." else \
        [Send(reply(q, f"{qname(q)} 30 IN CNAME slow.example."), 1.0)]
    res = Resolver(net, [S1], config=ResolverConfig(timeout=4.0, deadline=3.0))

    async def main():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        via = asyncio.ensure_future(res.resolve("alias.example"))
        await asyncio.sleep(0.5)
        direct = asyncio.ensure_future(res.resolve("slow.example"))
        with pytest.raises(ResolverTimeout):
            await via
        assert loop.time() - t0 == 3.0
        assert await direct == ["198.18.1.1"]
        assert loop.time() - t0 == 3.25
    run(main)
    assert len(net.sent) == 2 and res.counters["inflight_shared"] == 1
