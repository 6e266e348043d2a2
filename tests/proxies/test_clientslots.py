"""apps/clientslots.py: per-address slot and handshake counts, the idle pool."""

from __future__ import annotations

import asyncio

import pytest

from apps.clientslots import HANDSHAKE_LIMIT, PER_CLIENT_LIMIT, ClientSlots, IdlePool


def test_handshakes_and_connections_are_bounded_per_address() -> None:
    slots = ClientSlots(max_per_client=3, max_handshakes=2)
    a1, a2 = slots.admit("a"), slots.admit("a")
    assert slots.refusal("a") == HANDSHAKE_LIMIT and slots.refusal("b") is None
    a1.handshake_done()
    a1.handshake_done()                  # idempotent
    a3 = slots.admit("a")
    assert slots.refusal("a") == PER_CLIENT_LIMIT
    a2.release()
    a2.release()
    assert slots.refusal("a") is None
    a3.release()
    a1.release()
    assert not slots.connections and not slots.handshakes   # nothing left behind


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        ClientSlots(max_per_client=0)


def test_idle_pool_closes_the_oldest_first() -> None:
    async def main() -> list[str]:
        pool, ended = IdlePool(), []

        async def idle(name: str, addr: str) -> None:
            try:
                async with asyncio.timeout(3600) as t:
                    with pool.waiting(addr, t):
                        await asyncio.Event().wait()
            except TimeoutError:
                ended.append(name)

        tasks = [asyncio.ensure_future(idle(n, a)) for n, a in
                 (("x1", "x"), ("y1", "y"), ("x2", "x"))]
        await asyncio.sleep(0)
        assert len(pool) == 3
        assert pool.close_oldest("y") and not pool.close_oldest("z")
        await asyncio.sleep(0)
        assert pool.close_oldest()
        await asyncio.gather(*tasks[:2])
        assert len(pool) == 1 and pool.evicted == 2
        tasks[2].cancel()
        return ended

    assert asyncio.run(main()) == ["y1", "x1"]
