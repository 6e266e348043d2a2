"""UDP on the stack (stack/udp.py) and its asyncio face (stack/udpapi.py), on the
simulated link with virtual time."""

from __future__ import annotations

import asyncio
import errno

import dpkt
import pytest

from stack.portshard import queue_of
from stack.sim import SimNetwork
from stack.simloop import run, until
from stack.skbuff import SkBuff
from stack.udp import UdpConfig, UdpError, UdpLayer
from stack.wire.ipv4 import ip_bytes

A, B = "198.18.0.1", "198.18.0.2"


def _net(seed: int = 1, **link) -> tuple[SimNetwork, object, object]:
    net = SimNetwork(seed)
    a, b = net.add_host("a"), net.add_host("b")
    net.connect(a, f"{A}/24", b, f"{B}/24", **link)
    return net, a, b


class Recorder(asyncio.DatagramProtocol):
    """Keeps every callback it gets, in order."""

    def __init__(self) -> None:
        self.got: list[tuple[bytes, tuple[str, int]]] = []
        self.errors: list[OSError] = []
        self.lost: list[object] = []
        self.transport = None
        self.arrived = asyncio.Event()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.append((data, addr))
        self.arrived.set()

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)
        self.arrived.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)


class Echo(Recorder):
    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        super().datagram_received(data, addr)
        self.transport.sendto(data, addr)


@pytest.mark.parametrize("offload", [True, False])
def test_datagrams_go_both_ways_with_their_addresses(offload):
    net, a, b = _net(offload=offload)

    async def main(driver):
        st, server = await driver.udp(b).create_datagram_endpoint(Echo, local_addr=(B, 7))
        ct, client = await driver.udp(a).create_datagram_endpoint(
            Recorder, remote_addr=(B, 7))
        sport = ct.get_extra_info("sockname")[1]
        for payload in (b"one", b"", b"x" * 1400):
            ct.sendto(payload)
        await until(lambda: len(client.got) == 3, 5)
        return server.got, client.got, sport, ct.get_extra_info("peername")

    sgot, cgot, sport, peer = run(main, net)
    assert sgot == [(b"one", (A, sport)), (b"", (A, sport)), (b"x" * 1400, (A, sport))]
    assert cgot == [(b"one", (B, 7)), (b"", (B, 7)), (b"x" * 1400, (B, 7))]
    assert peer == (B, 7)
    assert 32768 <= sport <= 60999


def test_a_datagram_larger_than_the_mtu_is_fragmented_and_reassembled():
    net, a, b = _net(mtu=1500)
    big = bytes(range(256)) * 24  # 6,144 bytes: five fragments

    async def main(driver):
        _st, server = await driver.udp(b).create_datagram_endpoint(
            Recorder, local_addr=(B, 9))
        ct, _c = await driver.udp(a).create_datagram_endpoint(Recorder, remote_addr=(B, 9))
        ct.sendto(big)
        await until(lambda: server.got, 5)
        return server.got

    (got,) = run(main, net)
    assert got[0] == big


def test_a_closed_port_answers_port_unreachable_and_a_connected_endpoint_hears_it():
    net, a, b = _net()

    async def main(driver):
        driver.udp(b)  # UDP on b, no socket on port 9999
        ct, client = await driver.udp(a).create_datagram_endpoint(
            Recorder, remote_addr=(B, 9999))
        ct.sendto(b"anyone?")
        await until(lambda: client.errors, 5)
        return client.errors

    (err,) = run(main, net)
    assert isinstance(err, ConnectionRefusedError)
    assert err.errno == errno.ECONNREFUSED
    assert b.counters["icmp_sent_3_3"] == 1


def test_an_unconnected_endpoint_never_hears_of_icmp_errors():
    # Linux without IP_RECVERR: a forged error cannot disturb a server's socket.
    net, a, b = _net()

    async def main(driver):
        driver.udp(b)
        ut, client = await driver.udp(a).create_datagram_endpoint(
            Recorder, local_addr=(A, 5000))
        ut.sendto(b"anyone?", (B, 9999))
        await asyncio.sleep(1)
        return client.errors, driver.udp(a).layer.counters

    errors, counters = run(main, net)
    assert errors == []
    assert counters["icmp_error_no_socket"] == 1


def test_a_flood_at_a_closed_port_earns_rate_limited_icmp_only():
    net, a, b = _net()

    async def main(driver):
        driver.udp(b)
        ut, _ = await driver.udp(a).create_datagram_endpoint(Recorder, local_addr=(A, 5000))
        ut.sendto(b"first", (B, 9999))  # resolves the neighbour (its queue holds few)
        await asyncio.sleep(2)
        for _ in range(499):
            ut.sendto(b"flood", (B, 9999))
        await asyncio.sleep(0.5)

    run(main, net)
    sent = b.counters["icmp_sent_3_3"]
    assert 0 < sent <= 60  # the core's bucket: a burst of 50, 100/s after it
    assert b.counters["icmp_error_ratelimited"] == 500 - sent
    assert net.hosts["b"].protocols[17].counters["udp_no_port"] == 500


def test_the_receive_queue_is_bounded_and_drops_are_counted():
    layer = UdpLayer(_FakeIp(), config=UdpConfig(rcvqueue_max=8, rcvbuf=1 << 20))
    sock = layer.bind(ip_bytes(B), 53)
    for i in range(20):
        assert layer.input(_datagram(A, B, 4000, 53, b"q%d" % i), ip_bytes(A), ip_bytes(B),
                           0.0)
    assert len(sock.receive_queue) == 8
    assert layer.counters["rcvbuf_errors"] == 12
    assert sock.pop() == (b"q0", (A, 4000))
    # ... and by bytes: 256 bytes of overhead per datagram count against rcvbuf
    layer2 = UdpLayer(_FakeIp(), config=UdpConfig(rcvqueue_max=1000, rcvbuf=4096))
    s2 = layer2.bind(ip_bytes(B), 53)
    for _ in range(40):
        layer2.input(_datagram(A, B, 4000, 53, b""), ip_bytes(A), ip_bytes(B), 0.0)
    assert len(s2.receive_queue) == 16
    assert s2.queued_bytes == 16 * 256


def test_a_bad_checksum_is_dropped_and_counted_but_a_zero_checksum_is_taken():
    layer = UdpLayer(_FakeIp())
    sock = layer.bind(ip_bytes(B), 53)
    bad = bytearray(_datagram(A, B, 4000, 53, b"data").tobytes())
    bad[6] ^= 0xFF
    assert layer.input(SkBuff.from_bytes(bytes(bad)), ip_bytes(A), ip_bytes(B), 0.0)
    assert layer.counters["udp_bad_checksum"] == 1
    none = bytearray(bad)
    none[6:8] = b"\0\0"  # RFC 768: no checksum computed
    layer.input(SkBuff.from_bytes(bytes(none)), ip_bytes(A), ip_bytes(B), 0.0)
    assert sock.pop() == (b"data", (A, 4000))
    assert layer.input(SkBuff.from_bytes(b"\0\1\0"), ip_bytes(A), ip_bytes(B), 0.0)
    assert layer.counters["udp_truncated"] == 1


def test_the_most_specific_socket_gets_the_datagram():
    layer = UdpLayer(_FakeIp())
    wild = layer.bind(port=53)
    with pytest.raises(UdpError) as e:
        layer.bind(ip_bytes(B), 53)
    assert e.value.errno == errno.EADDRINUSE
    layer.close(wild)
    bound = layer.bind(ip_bytes(B), 53)
    with pytest.raises(UdpError):
        layer.bind(port=53)
    layer.close(bound)
    conn = layer.bind(ip_bytes(B), 6000, remote=(ip_bytes(A), 53))
    layer.input(_datagram(A, B, 53, 6000, b"from the peer"), ip_bytes(A), ip_bytes(B), 0.0)
    layer.input(_datagram("198.18.0.9", B, 53, 6000, b"spoof"), ip_bytes("198.18.0.9"),
                ip_bytes(B), 0.0)
    assert list(conn.receive_queue) == [(b"from the peer", (A, 53))]
    assert layer.counters["udp_no_port"] == 1


def test_ephemeral_ports_are_random_and_on_the_workers_queue():
    layer = UdpLayer(_FakeIp(), config=UdpConfig(port_shard=(2, 4)))
    ports = [layer.bind(remote=(ip_bytes(A), 53)).local_port for _ in range(200)]
    assert len(set(ports)) == 200
    assert all(queue_of(p, 53, 4) == 2 for p in ports)
    # not a counter: consecutive ports differ by more than the shard step most of the time
    steps = [abs(x - y) for x, y in zip(ports, ports[1:], strict=False)]
    assert sum(s > 100 for s in steps) > 150


def test_the_socket_table_is_bounded():
    layer = UdpLayer(_FakeIp(), config=UdpConfig(max_sockets=3))
    socks = [layer.bind() for _ in range(3)]
    with pytest.raises(UdpError) as e:
        layer.bind()
    assert e.value.errno == errno.EMFILE
    layer.close(socks[0])
    layer.bind()


def test_broadcasts_reach_only_sockets_that_asked_and_earn_no_icmp():
    net, a, b = _net()

    async def main(driver):
        _t1, plain = await driver.udp(b).create_datagram_endpoint(Recorder, local_addr=("", 68))
        ct, _ = await driver.udp(a).create_datagram_endpoint(
            Recorder, local_addr=("0.0.0.0", 67), allow_broadcast=True)
        ct.sendto(b"hello all", ("255.255.255.255", 68))
        await asyncio.sleep(0.5)
        got_plain = list(plain.got)
        _t1.close()
        _t2, keen = await driver.udp(b).create_datagram_endpoint(
            Recorder, local_addr=("", 68), allow_broadcast=True)
        ct.sendto(b"hello again", ("255.255.255.255", 68))
        await until(lambda: keen.got, 5)
        return got_plain, keen.got

    got_plain, got_keen = run(main, net)
    assert got_plain == []
    assert got_keen == [(b"hello again", (A, 67))]
    assert b.counters["icmp_sent_3_3"] == 0


def test_sendto_follows_asyncio_semantics():
    net, a, b = _net()

    async def main(driver):
        ct, client = await driver.udp(a).create_datagram_endpoint(
            Recorder, remote_addr=(B, 7))
        with pytest.raises(TypeError):
            ct.sendto("text")
        with pytest.raises(ValueError):
            ct.sendto(b"x", (B, 8))
        ct.sendto(b"x", (B, 7))  # the peer itself is fine
        ut, other = await driver.udp(a).create_datagram_endpoint(Recorder)
        ut.sendto(b"x" * 70000, (B, 7))  # too long: reported, not raised
        ut.sendto(b"x", ("name.example", 7))
        ct.close()
        assert ct.is_closing()
        ct.sendto(b"after close")  # ignored
        await asyncio.sleep(0)
        return client.lost, [e.errno for e in other.errors]

    lost, errs = run(main, net)
    assert lost == [None]
    assert errs == [errno.EMSGSIZE, errno.EINVAL]


def test_an_exception_in_a_protocol_callback_does_not_stop_the_stack():
    net, a, b = _net()

    class Broken(Recorder):
        def datagram_received(self, data, addr):
            super().datagram_received(data, addr)
            raise RuntimeError("bug in the application")

    async def main(driver):
        reports: list = []
        asyncio.get_running_loop().set_exception_handler(lambda _l, ctx: reports.append(ctx))
        _st, server = await driver.udp(b).create_datagram_endpoint(Broken, local_addr=(B, 7))
        ct, _ = await driver.udp(a).create_datagram_endpoint(Recorder, remote_addr=(B, 7))
        ct.sendto(b"1")
        ct.sendto(b"2")
        await until(lambda: len(server.got) == 2, 5)
        return len(server.got), reports

    n, reports = run(main, net)
    assert n == 2
    assert [type(r["exception"]) for r in reports] == [RuntimeError, RuntimeError]


# -- helpers -----------------------------------------------------------------------------
class _Route:
    src = ip_bytes(B)
    offload = False
    mtu = 1500


class _FakeIp:
    """The IP layer as UdpLayer sees it, for tests of the layer alone."""

    by_addr = {ip_bytes(B): object()}

    def route(self, dst):
        return _Route()

    def ip_output(self, *a, **kw):
        return True


def _datagram(src: str, dst: str, sport: int, dport: int, payload: bytes) -> SkBuff:
    u = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    u.ulen = 8 + len(payload)
    ip = dpkt.ip.IP(src=ip_bytes(src), dst=ip_bytes(dst), p=17, data=u)
    ip.len = 20 + len(bytes(u))
    raw = bytes(ip)  # dpkt fills in the UDP checksum over the pseudo-header
    return SkBuff.from_bytes(raw[20:])


def test_the_udp_services_echo_discard_and_chargen():
    from apps.services import CHARGEN_BLOCK, start_services

    net, a, b = _net()

    class Both:  # what start_services takes: a TapStack's TCP and UDP faces
        def __init__(self, driver, stack):
            self.start_server = driver.tcp(stack).start_server
            self.create_server = driver.tcp(stack).create_server
            self.create_datagram_endpoint = driver.udp(stack).create_datagram_endpoint

    async def main(driver):
        await start_services(Both(driver, b), [B])
        out = {}
        for port in (7, 9, 19):
            t, p = await driver.udp(a).create_datagram_endpoint(Recorder, remote_addr=(B, port))
            for i in range(3):
                t.sendto(b"ping %d" % i)
            await asyncio.sleep(0.5)
            out[port] = p
        # chargen's rate limit: a burst of 300 requests gets at most 100+ answers
        t, flood = await driver.udp(a).create_datagram_endpoint(Recorder, remote_addr=(B, 19))
        for _ in range(300):
            t.sendto(b"")
        await asyncio.sleep(0.5)
        return out, flood

    out, flood = run(main, net)
    assert [d for d, _ in out[7].got] == [b"ping 0", b"ping 1", b"ping 2"]
    assert out[9].got == []
    replies = [d for d, _ in out[19].got]
    assert len(replies) == 3
    for r in replies:
        assert len(r) <= 512 and r in CHARGEN_BLOCK
    assert 90 <= len(flood.got) <= 160
