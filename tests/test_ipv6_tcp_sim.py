"""TCP over IPv6 on the simulated network, end to end through an IPv6 router:
routing, Neighbor Discovery, forwarding, path MTU discovery from Packet Too Big."""

from __future__ import annotations

import asyncio

from stack.sim import SimNetwork
from stack.simloop import run


def _three(offload: bool = True, mtu2: int = 1500):
    net = SimNetwork(seed=7)
    a, r, b = net.add_host("a"), net.add_host("r", forwarding=True), net.add_host("b")
    net.connect(a, "198.18.0.1/24", r, "198.18.0.2/24", offload=offload)
    net.connect(r, "198.19.0.2/24", b, "198.19.0.1/24", offload=offload)
    r.interfaces[1].mtu = mtu2
    now = net.now
    a.ip6.add_address(a.interfaces[0], "2001:2:0:1::1/64", now)
    r.ip6.add_address(r.interfaces[0], "2001:2:0:1::2/64", now)
    r.ip6.add_address(r.interfaces[1], "2001:2:0:2::2/64", now)
    b.ip6.add_address(b.interfaces[0], "2001:2:0:2::1/64", now)
    net.run(3.0)    # DAD
    a.ip6.add_route("default", "2001:2:0:1::2")
    b.ip6.add_route("default", "2001:2:0:2::2")
    return net, a, r, b


def _transfer(net, a, b, data: bytes):
    async def main(driver):
        got = bytearray()
        seen = []

        async def sink(reader, writer):
            seen.append(writer.get_extra_info("peername"))
            got.extend(await reader.read(-1))
            writer.write(b"done")
            writer.close()

        server = await driver.tcp(b).start_server(sink, "::", 9)
        reader, writer = await driver.tcp(a).open_connection("2001:2:0:2::1", 9)
        writer.write(data)
        await writer.drain()
        writer.write_eof()
        answer = await reader.read(-1)
        info = writer.get_extra_info("tcp_info")
        names = (writer.get_extra_info("sockname"), server.address, seen[0])
        await asyncio.sleep(1)
        return bytes(got), answer, info, names

    return run(main, net)


def test_tcp_over_ipv6_through_a_router():
    net, a, r, b = _three()
    data = bytes(range(256)) * 4000
    got, answer, info, names = _transfer(net, a, b, data)
    assert got == data and answer == b"done"
    sockname, address, peer = names
    assert sockname[0] == "2001:2:0:1::1" and sockname[2:] == (0, 0)
    assert address == ("::", 9, 0, 0)
    assert peer == ("2001:2:0:1::1", sockname[1], 0, 0)
    assert info["mss"] == 1500 - 60 - 12
    assert r.counters["rx_forwarded"] > 0
    assert r.counters["drop.ipv6_packet_too_big"] == 0


def test_pmtud_from_packet_too_big_through_a_router():
    net, a, r, b = _three(offload=False, mtu2=1280)
    data = bytes(range(256)) * 2000
    got, answer, info, _ = _transfer(net, a, b, data)
    assert got == data and answer == b"done"
    assert r.counters["drop.ipv6_packet_too_big"] >= 1
    assert r.counters["icmp6_sent_2_0"] >= 1
    assert a.protocols[6].counters["icmp_frag_needed"] >= 1
    assert info["mss"] == 1280 - 60 - 12


def test_udp_over_ipv6_through_a_router():
    net, a, r, b = _three()

    async def main(driver):
        got = []

        class Echo(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                self.transport = transport

            def datagram_received(self, data, addr):
                got.append(addr)
                self.transport.sendto(data.upper(), addr)

        class Client(asyncio.DatagramProtocol):
            def __init__(self):
                self.answer = asyncio.get_running_loop().create_future()
                self.errors = []

            def datagram_received(self, data, addr):
                self.answer.set_result((data, addr))

            def error_received(self, exc):
                self.errors.append(exc)

        await driver.udp(b).create_datagram_endpoint(Echo, local_addr=("::", 7))
        t, c = await driver.udp(a).create_datagram_endpoint(
            Client, remote_addr=("2001:2:0:2::1", 7))
        t.sendto(b"ping")
        data, addr = await asyncio.wait_for(c.answer, 1)
        sockname = t.get_extra_info("sockname")
        t2, c2 = await driver.udp(a).create_datagram_endpoint(
            Client, remote_addr=("2001:2:0:2::1", 8))
        t2.sendto(b"nobody")
        await asyncio.sleep(0.1)
        return data, addr, got, sockname, c2.errors

    data, addr, got, sockname, errors = run(main, net)
    assert data == b"PING" and addr == ("2001:2:0:2::1", 7, 0, 0)
    assert got == [("2001:2:0:1::1", sockname[1], 0, 0)]
    assert [e.errno for e in errors] == [111]        # port unreachable: ECONNREFUSED
