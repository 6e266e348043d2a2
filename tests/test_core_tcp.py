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


def test_streams_send_a_short_write_without_waiting_for_an_ack():
    """Like asyncio's own TCP transports (TCP_NODELAY): a head, then a short body in a
    second write, both leave at once — the peer's delayed ACK of the head (40 ms)
    must not hold the body back (Nagle, RFC 1122 §4.2.3.4)."""
    from stack.netdev.faults import FaultModel

    net = SimNetwork(5)
    a, b = net.add_host("a"), net.add_host("b")
    link = FaultModel(delay=0.001)
    net.connect(a, "198.18.0.1/24", b, "198.18.0.2/24", a_to_b=link, b_to_a=link)

    async def main(driver):
        async def serve(reader, writer):
            await reader.readline()
            assert writer.get_extra_info("tcb").nodelay
            writer.write(b"HEAD\n")
            await asyncio.sleep(0.0005)   # the head is out, unacknowledged
            writer.write(b"body\n")
            await writer.drain()

        await driver.tcp(b).start_server(serve, "198.18.0.2", 80)
        reader, writer = await driver.tcp(a).open_connection("198.18.0.2", 80)
        for _ in range(3):  # past the peer's quick-ACK start
            writer.write(b"x" * 10)
            await asyncio.sleep(0.05)
        writer.write(b"go\n")
        start = asyncio.get_running_loop().time()
        assert await reader.readline() == b"HEAD\n"
        assert await reader.readline() == b"body\n"
        return asyncio.get_running_loop().time() - start

    assert run(main, net) < 0.01


def test_readexactly_beyond_the_reader_limit_of_data_already_arrived():
    """StreamReader pauses the transport above twice its limit and resumes it from
    inside its wait: the bytes handed over then must still wake the reader, even when
    nothing more arrives (the body of a response on a kept-alive connection)."""
    net = SimNetwork(6)
    a, b = net.add_host("a"), net.add_host("b")
    net.connect(a, "198.18.0.1/24", b, "198.18.0.2/24")

    async def main(driver):
        done = asyncio.Event()

        async def serve(reader, writer):
            writer.write(bytes(range(200)) * 1500)   # 300,000 bytes, then silence
            await done.wait()
            writer.close()

        await driver.tcp(b).start_server(serve, "198.18.0.2", 80)
        reader, writer = await driver.tcp(a).open_connection("198.18.0.2", 80)
        await asyncio.sleep(1.0)                     # all of it arrives first
        got = await asyncio.wait_for(reader.readexactly(300_000), 5.0)
        done.set()
        writer.close()
        return got

    assert run(main, net) == bytes(range(200)) * 1500


def test_a_reader_with_a_small_limit_never_sees_a_false_end_of_stream():
    """Reading pauses and resumes the transport over and over (limit 4 KiB): every
    byte arrives and read() returns b"" only at the real end."""
    net = SimNetwork(7)
    a, b = net.add_host("a"), net.add_host("b")
    net.connect(a, "198.18.0.1/24", b, "198.18.0.2/24")
    data = bytes(range(251)) * 8000              # ~2 MB

    async def main(driver):
        async def serve(reader, writer):
            writer.write(data)
            await writer.drain()
            writer.close()

        await driver.tcp(b).start_server(serve, "198.18.0.2", 80)
        reader, writer = await driver.tcp(a).open_connection("198.18.0.2", 80, limit=4096)
        got = bytearray()
        while chunk := await reader.read(1000):
            got += chunk
            while reader.buffered_size():        # drain what is there in the same turn
                got += await reader.read(1000)
        writer.close()
        return bytes(got)

    assert run(main, net) == data


def _frag_needed(stack_mac: bytes, spoofed_src: str, tcb, seg_seq: int, mtu: int) -> bytes:
    """An ICMP "fragmentation needed" from anywhere, quoting a segment of ``tcb``."""
    import dpkt

    from stack.wire.ipv4 import ip_bytes

    quoted_tcp = dpkt.tcp.TCP(sport=tcb.local_port, dport=tcb.remote_port, seq=seg_seq,
                              flags=dpkt.tcp.TH_ACK)
    quoted = dpkt.ip.IP(src=tcb.local, dst=tcb.remote, p=6, data=quoted_tcp, len=40)
    icmp = dpkt.icmp.ICMP(type=3, code=4,
                          data=dpkt.icmp.ICMP.Unreach(mtu=mtu, data=bytes(quoted)[:28]))
    outer = dpkt.ip.IP(src=ip_bytes(spoofed_src), dst=tcb.local, p=1, data=icmp)
    outer.len = 20 + len(bytes(icmp))
    return bytes(dpkt.ethernet.Ethernet(dst=stack_mac, src=b"\x02\0\0\0\0\x99",
                                        type=0x0800, data=outer))


def test_spoofed_frag_needed_is_checked_against_the_flight_and_floored():
    """RFC 5927 §4.1: an ICMP error must quote a sequence number in flight; a
    "fragmentation needed" with MTU 68 is taken as the 552 floor (as Linux)."""
    from stack.skbuff import SkBuff

    net = SimNetwork(seed=4)
    a, b = net.add_host("a"), net.add_host("b")
    net.connect(a, "198.18.0.1/24", b, "198.18.0.2/24", offload=False)

    async def main(driver):
        async def hold(reader, writer):
            await reader.read(-1)

        await driver.tcp(b).start_server(hold, "198.18.0.2", 80)
        reader, writer = await driver.tcp(a).open_connection("198.18.0.2", 80)
        tcb = writer.get_extra_info("tcb")
        layer = driver.tcp(a).tcp
        iface = a.interfaces[0]
        mss = tcb.mss
        for wrong in (tcb.snd_nxt, (tcb.snd_una - 1000) & 0xFFFFFFFF):
            frame = _frag_needed(iface.mac, "198.19.77.7", tcb, wrong, 68)
            a.receive_frame(iface, SkBuff.from_bytes(frame), driver.now())
        assert tcb.mss == mss and layer.counters["icmp_out_of_window"] == 2
        writer.write(b"x" * 50_000)  # data in flight, so a quote can be right
        frame = _frag_needed(iface.mac, "198.19.77.7", tcb, tcb.snd_una, 68)
        a.receive_frame(iface, SkBuff.from_bytes(frame), driver.now())
        mss_after = tcb.mss
        await writer.drain()
        writer.close()
        return mss, mss_after, layer.counters["icmp_pmtu_clamped"]

    mss, mss_after, clamped = run(main, net)
    assert mss == 1460 - 12
    assert mss_after == 552 - 40 - 12 and clamped == 1
