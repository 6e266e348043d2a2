"""A listener with own_interface_only accepts only clients reached through the
interface that owns its address; others get a RST (connection refused)."""

from __future__ import annotations

import pytest

from stack.sim import SimNetwork
from stack.simloop import run


async def _serve(reader, writer) -> None:
    writer.write(b"hi")
    await writer.drain()
    writer.close()


@pytest.mark.parametrize("bound", [True, False])
def test_listener_on_its_own_interface_only(bound: bool) -> None:
    net = SimNetwork(3)
    inside, mid, outside = net.add_host("in"), net.add_host("mid"), net.add_host("out")
    net.connect(inside, "198.18.0.1/24", mid, "198.18.0.2/24")
    net.connect(mid, "198.19.0.2/24", outside, "198.19.0.1/24")
    inside.add_route("0.0.0.0/0", "198.18.0.2")
    outside.add_route("0.0.0.0/0", "198.19.0.2")

    async def main(driver) -> tuple[bytes, bool]:
        api = driver.tcp(mid)
        server = await api.start_server(_serve, "198.18.0.2", 1080)
        if bound:
            server.listener.own_interface_only = True
        reader, writer = await driver.tcp(inside).open_connection("198.18.0.2", 1080)
        got = await reader.read(10)
        writer.close()
        try:
            await driver.tcp(outside).open_connection("198.18.0.2", 1080)
            refused = False
        except ConnectionRefusedError:
            refused = True
        assert api.tcp.counters["listen_wrong_iface"] == (1 if bound else 0)
        return got, refused

    assert run(main, net) == (b"hi", bound)
