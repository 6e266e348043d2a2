"""TCP over the core across a router: path MTU discovery end to end (RFC 1191)."""

from __future__ import annotations

import asyncio

from stack.sim import SimNetwork
from stack.simloop import run


def test_path_mtu_discovery_through_a_router_with_a_smaller_mtu():
    net = SimNetwork(seed=3)
    a, r, b = net.add_host("a"), net.add_host("r", forwarding=True), net.add_host("b")
    net.connect(a, "198.18.0.1/24", r, "198.18.0.2/24", offload=False)
    net.connect(r, "198.19.0.2/24", b, "198.19.0.1/24", offload=False)
    a.add_route("0.0.0.0/0", "198.18.0.2")
    b.add_route("0.0.0.0/0", "198.19.0.2")
    r.interfaces[1].mtu = 1280  # the router's way to b is narrower than both ends think
    data = bytes(range(256)) * 2000

    async def main(driver):
        got = bytearray()

        async def sink(reader, writer):
            got.extend(await reader.read(-1))
            writer.close()

        await driver.tcp(b).start_server(sink, "198.19.0.1", 9)
        reader, writer = await driver.tcp(a).open_connection("198.19.0.1", 9)
        writer.write(data)
        await writer.drain()
        writer.write_eof()
        await reader.read(-1)
        await asyncio.sleep(1)
        return bytes(got), writer.get_extra_info("tcp_info")

    got, info = run(main, net)
    assert got == data
    assert r.counters["drop.ipv4_frag_needed"] >= 1          # the router said so
    assert r.counters["icmp_sent_3_4"] >= 1
    assert info["mss"] <= 1280 - 40 - 12                     # and the sender listened
