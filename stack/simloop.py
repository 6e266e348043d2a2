"""asyncio on virtual time, driving a :class:`~stack.sim.SimNetwork`.

:class:`VirtualTimeLoop` is an ordinary selector event loop whose clock only moves
when nothing is ready to run: its selector, instead of sleeping for the time to the
next timer, advances the clock by exactly that much. User coroutines written against
the stack's asyncio API therefore run unchanged, and a 2*MSL TIME_WAIT or a two-hour
keepalive takes as long as the computation it involves. A loop with nothing scheduled
and nothing ready would wait forever on a real clock; here it is a deadlock and raises.

:class:`SimDriver` ties a :class:`~stack.sim.SimNetwork` to such a loop: after every
change it moves the network's frames and re-arms one loop timer for the network's
next event. :func:`run` is ``asyncio.run`` for a simulation.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Awaitable, Callable
from typing import TypeVar

from stack.core import Stack
from stack.sim import SimNetwork
from stack.streams import TcpApi
from stack.tcp.api import TcpConfig
from stack.tcp.layer import TcpLayer
from stack.udp import IPPROTO_UDP, UdpConfig, UdpLayer
from stack.udpapi import UdpApi
from stack.wire.ipv4 import IPPROTO_TCP

T = TypeVar("T")


class SimulationDeadlock(RuntimeError):
    """Every task waits and no timer or frame can ever wake one."""


class _VirtualSelector(selectors.DefaultSelector):
    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualTimeLoop | None = None

    def select(self, timeout: float | None = None):  # noqa: D102 - selector protocol
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise SimulationDeadlock("nothing is scheduled and nothing can happen")
        assert self.loop is not None
        self.loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on a virtual clock (see the module docstring)."""

    def __init__(self, start: float = 1000.0) -> None:
        selector = _VirtualSelector()
        super().__init__(selector)
        selector.loop = self
        # Timers are due within the loop's clock resolution of now: the platform's
        # monotonic one (1 ns on Linux), fine enough for virtual time as it is.
        self._virtual_now = float(start)

    def time(self) -> float:
        """The virtual clock."""
        return self._virtual_now

    def advance(self, dt: float) -> None:
        """Move the clock forward (only the selector does this)."""
        if dt > 0:
            self._virtual_now += dt


class SimDriver:
    """Runs a SimNetwork under a VirtualTimeLoop and gives hosts an asyncio TCP API."""

    def __init__(self, net: SimNetwork, loop: asyncio.AbstractEventLoop) -> None:
        self.net = net
        self.loop = loop
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.apis: dict[int, TcpApi] = {}
        self.udp_apis: dict[int, UdpApi] = {}
        net.clock.advance_to(loop.time())

    def now(self) -> float:
        """The shared virtual time."""
        return self.loop.time()

    def tcp(self, stack: Stack, config: TcpConfig | None = None) -> TcpApi:
        """The asyncio TCP API of ``stack`` (TCP is attached on first use)."""
        api = self.apis.get(id(stack))
        if api is None:
            layer = TcpLayer(stack, config=config, rng=stack.rng)
            stack.register_protocol(IPPROTO_TCP, layer)
            api = self.apis[id(stack)] = TcpApi(layer, self)
        return api

    def udp(self, stack: Stack, config: UdpConfig | None = None) -> UdpApi:
        """The asyncio UDP API of ``stack`` (UDP is attached on first use)."""
        api = self.udp_apis.get(id(stack))
        if api is None:
            layer = UdpLayer(stack, config=config, rng=stack.rng)
            stack.register_protocol(IPPROTO_UDP, layer)
            api = self.udp_apis[id(stack)] = UdpApi(layer, self)
        return api

    def poke(self) -> None:
        """Move queued frames onto the links and re-arm the network timer."""
        self.net.clock.advance_to(self.loop.time())
        self.net.flush()
        t = self.net.next_event()
        if t == self._timer_at and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = t
        self._timer = None if t is None else self.loop.call_at(t, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        now = self.loop.time()
        self.net.clock.advance_to(now)
        while True:
            t = self.net.next_event()
            if t is None or t > now:
                break
            self.net.step(limit=now)
        self.poke()


async def until(predicate: Callable[[], bool], timeout: float = 300.0,
                step: float = 0.05) -> bool:
    """Let (virtual) time run in ``step`` s until ``predicate()`` holds or ``timeout``
    passes; the predicate's last value."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate() and loop.time() < end:
        await asyncio.sleep(step)
    return predicate()


def run(main: Callable[[SimDriver], Awaitable[T]], net: SimNetwork, *,
        start: float | None = None) -> T:
    """Run ``main(driver)`` to completion on virtual time; like ``asyncio.run``."""
    loop = VirtualTimeLoop(net.now if start is None else start)
    try:
        asyncio.set_event_loop(loop)
        driver = SimDriver(net, loop)

        async def _main() -> T:
            net.start()
            driver.poke()
            return await main(driver)

        return loop.run_until_complete(_main())
    finally:
        try:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        finally:
            asyncio.set_event_loop(None)
            loop.close()
