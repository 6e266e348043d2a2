"""The asyncio driver (stack/aio.py StackDriver): a read batch ends even when a
protocol handler raises, so later sends go out at once."""

from __future__ import annotations

import asyncio
import os

import dpkt
import pytest

from stack.aio import StackDriver
from stack.core import Stack
from stack.skbuff import SkBuff
from stack.streams import TcpApi
from stack.tcp.layer import TcpLayer
from stack.wire.ipv4 import IPPROTO_TCP, ip_bytes
from tests.test_sim import BOOM_PROTO, PEER_MAC, Boom, RaisingHandler, boom_frame

STACK_IP, PEER_IP = "198.18.0.2", "198.18.0.1"


class FakeDevice:
    """A TapDevice stand-in: frames to read are queued by the test, frames written are
    kept. Its descriptor (a pipe nobody writes) is never readable: the test calls the
    driver's read callback itself."""

    batch = 8

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        self.inbox: list[bytes] = []
        self.sent: list[bytes] = []

    def fileno(self) -> int:
        return self._r

    def read_batch(self) -> list[SkBuff]:
        out, self.inbox = self.inbox, []
        return [SkBuff.from_bytes(f, headroom=64) for f in out]

    def write(self, skb: SkBuff) -> None:
        self.sent.append(skb.tobytes())

    def backlog_len(self) -> int:
        return 0

    def close(self) -> None:
        for fd in (self._r, self._w):
            os.close(fd)


def _tcp_frame(mac: bytes, seq: int, ack: int, flags: int, data: bytes = b"") -> bytes:
    seg = dpkt.tcp.TCP(sport=40000, dport=80, seq=seq, ack=ack, flags=flags, win=65535,
                       data=data)
    pkt = dpkt.ip.IP(src=ip_bytes(PEER_IP), dst=ip_bytes(STACK_IP), p=6, ttl=64, data=seg)
    pkt.len = 20 + len(bytes(seg))
    return bytes(dpkt.ethernet.Ethernet(dst=mac, src=PEER_MAC, type=0x0800, data=pkt))


def _segments(dev: FakeDevice) -> list[dpkt.tcp.TCP]:
    out = []
    for f in dev.sent:
        e = dpkt.ethernet.Ethernet(f)
        if e.type == 0x0800 and e.data.p == 6:
            out.append(e.data.data)
    dev.sent.clear()
    return out


async def _established():
    stack = Stack()
    iface = stack.add_interface("tap0", f"{STACK_IP}/24", mtu=1500, offload=False)
    tcp = TcpLayer(stack)
    stack.register_protocol(IPPROTO_TCP, tcp)
    stack.register_protocol(BOOM_PROTO, RaisingHandler())
    dev = FakeDevice()
    driver = StackDriver(stack)
    driver.attach(iface, dev)
    driver.start()
    stack.neigh.update(iface, ip_bytes(PEER_IP), PEER_MAC, driver.now(), create=True)
    writers: list[asyncio.StreamWriter] = []
    await TcpApi(tcp, driver).start_server(lambda _r, w: writers.append(w), STACK_IP, 80)
    dev.inbox.append(_tcp_frame(iface.mac, 1000, 0, dpkt.tcp.TH_SYN))
    driver._on_readable(iface, dev)
    (synack,) = _segments(dev)
    dev.inbox.append(_tcp_frame(iface.mac, 1001, synack.seq + 1, dpkt.tcp.TH_ACK))
    driver._on_readable(iface, dev)
    assert len(writers) == 1
    return driver, iface, dev, tcp, writers[0]


def test_a_raising_handler_does_not_leave_the_read_batch_open():
    async def main() -> None:
        driver, iface, dev, tcp, writer = await _established()
        dev.inbox.append(boom_frame(iface.mac, PEER_IP, STACK_IP))
        with pytest.raises(Boom):
            driver._on_readable(iface, dev)
        assert not tcp.batching
        _segments(dev)
        writer.write(b"hi")                       # no await: it must leave now
        assert [s.data for s in _segments(dev)] == [b"hi"]
        driver.close()

    asyncio.run(main())
