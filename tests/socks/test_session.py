"""The splice-mode session on the client connection's TCB (apps/socks/session.py).

These tests pin what the state machine is for: each answer leaves in the step its
message arrived (no pure ACK of the greeting or of the request goes out on its own), and
a spliced session runs without a task. The outcomes it shares with the coroutine path
are tested in test_server.py, in both modes.
"""

from __future__ import annotations

import asyncio

import dpkt
import pytest

from apps.socks import protocol as p
from apps.socks.protocol import Address, Rep
from stack.sim import SimNetwork
from tests.socks import harness
from tests.socks.harness import ECHO, ORIGIN, PROXY_C, SOCKS_PORT, World, read_all, simulate


class _Frames:
    """TCP segments the proxy sends to the client: (flags, payload length)."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, int]] = []

    def tx(self, dev_name: str, skb, now: float) -> None:
        eth = dpkt.ethernet.Ethernet(bytes(skb.view()))
        ip = eth.data
        if isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.tcp.TCP):
            tcp = ip.data
            if ip.src == bytes(map(int, PROXY_C.split("."))) and tcp.sport == SOCKS_PORT:
                self.sent.append((tcp.flags, len(tcp.data)))


@pytest.fixture
def frames(monkeypatch) -> _Frames:
    rec = _Frames()
    monkeypatch.setattr(harness, "SimNetwork", lambda seed: SimNetwork(seed, pcap=rec))
    return rec


def test_each_answer_carries_the_ack_of_its_message(frames: _Frames) -> None:
    # SYN-ACK, method selection, reply: the greeting and the request are acknowledged
    # by their answers, never by a pure ACK of their own.
    async def body(w: World):
        reader, writer = await w.client.open_connection(PROXY_C, SOCKS_PORT)
        writer.write(p.Greeting((p.Method.NO_AUTH,)).encode())
        assert (await harness.read_message(reader, p.parse_method_selection)).method == 0
        writer.write(p.Request(p.Command.CONNECT, Address.of(ORIGIN, ECHO)).encode())
        assert (await harness.read_message(reader, p.parse_reply)).rep == Rep.SUCCEEDED
        handshake = list(frames.sent)
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        writer.close()
        await read_all(reader)
        return handshake

    handshake = simulate(body, mode="splice")
    syn_ack = dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK
    assert [(f & syn_ack, n) for f, n in handshake] == [(syn_ack, 0), (dpkt.tcp.TH_ACK, 2),
                                                      (dpkt.tcp.TH_ACK, 10)]


def test_a_spliced_session_runs_without_a_task() -> None:
    def proxy_tasks() -> list[asyncio.Task]:
        return [t for t in asyncio.all_tasks()
                if getattr(t.get_coro(), "__qualname__", "").startswith("SocksServer.")]

    async def body(w: World):
        reader, writer = await w.client.open_connection(PROXY_C, SOCKS_PORT)
        writer.write(p.Greeting((p.Method.NO_AUTH,)).encode())
        assert (await harness.read_message(reader, p.parse_method_selection)).method == 0
        assert not proxy_tasks() and not w.proxy._tasks    # mid-handshake: no task
        writer.write(p.Request(p.Command.CONNECT, Address.of(ORIGIN, ECHO)).encode())
        assert (await harness.read_message(reader, p.parse_reply)).rep == Rep.SUCCEEDED
        assert not proxy_tasks() and not w.proxy._tasks
        writer.write(b"x" * 1000)
        assert await reader.readexactly(1000) == b"x" * 1000
        writer.close()
        await read_all(reader)
        assert await w.until(lambda: w.proxy.active == 0)
        assert w.log.sessions[0].note == "spliced"

    simulate(body, mode="splice")


def test_socks4_is_handed_to_the_coroutine_path_with_what_was_read() -> None:
    async def body(w: World):
        reader, writer = await w.client.open_connection(PROXY_C, SOCKS_PORT)
        req = p.Socks4Request(p.Command.CONNECT, ECHO, ORIGIN, b"me").encode()
        writer.write(req[:3])             # the version byte arrives alone first
        await asyncio.sleep(0.1)
        writer.write(req[3:])
        reply = await harness.read_message(reader, p.parse_socks4_reply)
        assert reply.status == p.Socks4Status.GRANTED
        writer.write(b"four")
        assert await reader.readexactly(4) == b"four"
        writer.close()
        await read_all(reader)
        assert await w.until(lambda: w.proxy.active == 0)
        assert w.log.sessions[0].user == "me"

    simulate(body, mode="splice")
