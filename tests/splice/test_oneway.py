"""One-way splice with a byte budget (splice/oneway.py) on the simulated network.

A toy keep-alive protocol: the client sends "N\\n" on one connection, again and
again; the proxy opens an origin connection per request, forwards "N\\n", reads the
origin's "OK N\\n" line, writes its own head "HEAD N\\n" to the client, and splices the
N-byte body one way; then it reads the client's next request on the same connection.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splice.oneway import Phase, cut
from splice.pair import SpliceError
from splice.testing.sim import splice_api
from stack import seq
from stack.netdev.faults import FaultModel
from stack.netdev.offload import complete_checksum
from stack.sim import SimNetwork
from stack.simloop import run, until
from stack.skbuff import SkBuff
from stack.wire.checksum import ones_sum, pseudo_header_sum
from stack.wire.ipv4 import ip_bytes
from stack.wire.tcp import ACK, FIN, TcpHeader, build_segment, verify_tcp_checksum
from stack.wire.vnet import VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4

CLIENT, PROXY_C, PROXY_S, ORIGIN = "198.18.0.1", "198.18.0.2", "198.19.0.2", "198.19.0.1"


def body_for(n: int, salt: int) -> bytes:
    block = bytes((i * 7 + salt) & 0xFF for i in range(256))
    return (block * (n // 256 + 1))[:n]


class World:
    def __init__(self, driver, hosts) -> None:
        self.driver = driver
        self.c, self.p, self.o = hosts
        self.splice = splice_api(driver, self.p)
        self.splicer = self.splice.splicer
        self.ways: list = []
        self.short_origin = 0      # the origin sends this many bytes fewer than it says
        self.body_delay = 0.0      # the origin thinks this long between head and body

    async def origin(self, reader, writer) -> None:
        line = await reader.readline()
        n, salt = map(int, line.split()[:2])
        writer.write(f"OK {n}\n".encode())
        # The head and the body in separate writes, like a server using sendfile.
        await writer.drain()
        await asyncio.sleep(self.body_delay)
        writer.write(body_for(n - self.short_origin, salt))
        await writer.drain()
        writer.close()

    async def proxy(self, reader, writer) -> None:
        api = self.driver.tcp(self.p)
        while line := await reader.readline():
            o_reader, o_writer = await api.open_connection(ORIGIN, 80)
            o_writer.write(line)
            head = await o_reader.readline()
            n = int(head.split()[1])
            writer.write(b"HEAD " + head[3:])
            to_close = line.split()[2:] == [b"close"]   # the body ends with the origin's FIN
            ow = await self.splice.relay(o_writer, writer, None if to_close else n,
                                         idle_timeout=30)
            self.ways.append(ow)
            o_writer.close()
            if ow.outcome != "done":
                writer.transport.abort()
                return
            if to_close:
                break
        writer.close()

    async def client(self, sizes: list[int]) -> list[bytes]:
        reader, writer = await self.driver.tcp(self.c).open_connection(PROXY_C, 1080)
        got = []
        for i, n in enumerate(sizes):
            writer.write(f"{n} {i}\n".encode())
            head = await reader.readline()
            assert head == f"HEAD {n}\n".encode()
            got.append(await reader.readexactly(n))
        writer.close()
        # The proxy's last relay ends when the client's final ACK reaches it.
        await self.until(lambda: len(self.ways) == len(sizes), timeout=60)
        return got

    async def until(self, predicate, timeout: float = 300.0) -> bool:
        return await until(predicate, timeout)


def simulate(body, *, faults: FaultModel | None = None, seed: int = 1, offload=True):
    net = SimNetwork(seed)
    c, p, o = net.add_host("c"), net.add_host("p"), net.add_host("o")
    f = faults or FaultModel()
    net.connect(c, f"{CLIENT}/24", p, f"{PROXY_C}/24", a_to_b=f, b_to_a=f, offload=offload)
    net.connect(p, f"{PROXY_S}/24", o, f"{ORIGIN}/24", a_to_b=f, b_to_a=f, offload=offload)
    c.add_route("0.0.0.0/0", PROXY_C)
    o.add_route("0.0.0.0/0", PROXY_S)

    async def main(driver):
        w = World(driver, (c, p, o))
        await driver.tcp(o).start_server(w.origin, ORIGIN, 80)
        await driver.tcp(p).start_server(w.proxy, PROXY_C, 1080)
        return await body(w)

    return run(main, net)


def _clean(w: World) -> bool:
    return not w.splicer.oneway.by_tcb and not w.splicer.stack.flows


def test_kept_alive_connection_carries_several_spliced_bodies():
    sizes = [3_000_000, 10, 700_000, 0, 1_500_000]

    async def body(w: World):
        got = await w.client(sizes)
        assert got == [body_for(n, i) for i, n in enumerate(sizes)]
        assert [ow.outcome for ow in w.ways] == ["done"] * len(sizes)
        big = [ow for ow, n in zip(w.ways, sizes, strict=True) if n >= 700_000]
        # The large bodies went through the relay, almost all of them.
        for ow, n in zip(big, [3_000_000, 700_000, 1_500_000], strict=True):
            assert ow.counters["relayed_bytes"] + ow.counters["copied_bytes"] == n
            assert ow.counters["relayed_bytes"] > n * 0.8
        assert w.splicer.counters["copied_payload_bytes"] == 0
        assert w.splicer.counters["oneway_done"] == len(sizes)
        # The client connection's timestamp clock moved past the relayed TSvals at
        # each hand-back, but by little (the peers' clocks tick alike): over five
        # splices, well under what a fixed headroom per splice would add.
        sink = w.ways[0].sink
        moved = seq.sub(sink.ts_offset, sink.layer.ts_offset_for(sink.local, sink.remote))
        assert 0 < moved < 5 * 1_100
        assert await w.until(lambda: _clean(w))

    simulate(body, faults=FaultModel(delay=0.001))


def test_tiny_bodies_are_copied_without_relaying():
    async def body(w: World):
        got = await w.client([5, 100])
        assert got == [body_for(5, 0), body_for(100, 1)]
        assert all(ow.phase is Phase.DONE and not ow.counters["relayed_bytes"]
                   for ow in w.ways)

    simulate(body)


def test_origin_short_of_its_length_ends_short_and_the_client_is_reset():
    async def body(w: World):
        w.short_origin = 1000
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await w.client([400_000])
        assert [ow.outcome for ow in w.ways] == ["short"]
        assert await w.until(lambda: _clean(w))

    simulate(body)


def test_misuse_raises_and_changes_nothing():
    async def body(w: World):
        api_p = w.driver.tcp(w.p)
        reader, writer = await w.driver.tcp(w.c).open_connection(PROXY_C, 1080)
        o_reader, o_writer = await api_p.open_connection(ORIGIN, 80)
        tcb = o_writer.get_extra_info("tcb")
        with pytest.raises(SpliceError):
            await w.splice.relay(o_writer, o_writer, 10)
        with pytest.raises(SpliceError):
            await w.splice.relay(o_writer, o_writer, -1)
        assert tcb.input_hook is None and _clean(w)
        o_writer.write(b"5 0\n")  # still usable
        assert await o_reader.readline() == b"OK 5\n"
        writer.close()
        o_writer.close()

    simulate(body)


@settings(max_examples=16, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000),
       loss=st.sampled_from([0.0, 0.01, 0.03]),
       dup=st.sampled_from([0.0, 0.02]),
       reorder=st.sampled_from([0.0, 0.05]),
       corrupt=st.sampled_from([0.0, 0.01]),
       sizes=st.lists(st.integers(0, 400_000), min_size=1, max_size=4),
       offload=st.booleans())
def test_faults_keep_every_body_intact(seed, loss, dup, reorder, corrupt, sizes, offload):
    """Loss, duplication, reordering and corrupted frames (the checksum drops them,
    wherever they arrive: relay, fast paths or TCP) on both sides of the proxy."""
    faults = FaultModel(loss=loss, duplicate=dup, reorder=reorder, corrupt=corrupt,
                        delay=0.002, reorder_delay=0.003)

    async def body(w: World):
        w.body_delay = 0.05
        got = await w.client(sizes)
        assert got == [body_for(n, i) for i, n in enumerate(sizes)]
        assert [ow.outcome for ow in w.ways] == ["done"] * len(sizes)
        for ow, n in zip(w.ways, sizes, strict=True):
            moved = ow.counters["relayed_bytes"] + ow.counters["copied_bytes"]
            assert moved >= n  # relayed bytes count retransmissions too
            # The head is out long before the body: only a few segments are copied.
            assert ow.counters["copied_bytes"] <= min(n, ow.copy_cap + 65536)
        assert w.splicer.counters["copied_payload_bytes"] == 0
        assert await w.until(lambda: _clean(w))
        assert await w.until(lambda: not w.splicer.tcp.connections, timeout=600)

    simulate(body, faults=faults, seed=seed, offload=offload)


SRC, DST = ip_bytes("198.18.0.1"), ip_bytes("198.18.0.2")


def _segment(text: bytes, flags: int, *, partial: bool, gso: int = 0) -> SkBuff:
    """An Ethernet frame with a TCP segment; ``partial``: the checksum field holds only
    the pseudo-header sum (VIRTIO_NET_HDR_F_NEEDS_CSUM), as the kernel hands it over;
    ``gso``: a super-segment of that segment size."""
    hdr = TcpHeader(1000, 80, 5000, 7000, flags | ACK, 512)
    raw = bytearray(build_segment(SRC, DST, hdr, text))
    ip = bytearray(b"\x45\x00\x00\x00\x00\x00\x40\x00\x40\x06\x00\x00")
    ip[2:4] = (20 + len(raw)).to_bytes(2, "big")
    ip += SRC + DST
    if partial:
        raw[16:18] = pseudo_header_sum(SRC, DST, 6, len(raw)).to_bytes(2, "big")
    skb = SkBuff.from_bytes(bytes(14) + bytes(ip) + bytes(raw), headroom=0)
    if partial:
        skb.vnet_flags, skb.csum_start, skb.csum_offset = VIRTIO_NET_HDR_F_NEEDS_CSUM, 34, 16
    if gso:
        skb.gso_type, skb.gso_size, skb.hdr_len = VIRTIO_NET_HDR_GSO_TCPV4, gso, 54
    skb.network_off = skb.data + 14
    skb.data += 34
    return skb


@pytest.mark.parametrize("partial", [False, True], ids=["full", "partial"])
@pytest.mark.parametrize("keep", [0, 1, 37, 1448, 3000])
def test_cut_shortens_a_segment_with_valid_checksums(keep, partial):
    text = bytes(i & 0xFF for i in range(4000))
    skb = _segment(text, FIN, partial=partial, gso=1448)
    cut(skb, keep, SRC, DST, clear_fin=True)
    ip = skb.network_off
    assert ones_sum(bytes(skb.buf[ip:ip + 20])) == 0xFFFF
    assert int.from_bytes(skb.buf[ip + 2:ip + 4], "big") == 40 + keep
    if partial:   # what the device would do with the partial sum: it must verify
        complete_checksum(skb.buf, ip - 14, skb.tail, 34, 16)
    seg = bytes(skb.buf[skb.data:skb.tail])
    assert len(seg) == 20 + keep and seg[20:] == text[:keep]
    assert not seg[13] & FIN
    assert verify_tcp_checksum(SRC, DST, seg)
    # Still a super-segment only while more than one segment's worth remains.
    assert (skb.gso_type != 0) == (keep > 1448)


def test_client_reset_mid_body_resets_the_origin_and_leaves_nothing():
    async def body(w: World):
        w.body_delay = 0.05
        reader, writer = await w.driver.tcp(w.c).open_connection(PROXY_C, 1080)
        writer.write(b"3000000 0\n")
        assert await reader.readline() == b"HEAD 3000000\n"
        assert len(await reader.readexactly(200_000)) == 200_000
        writer.transport.abort()
        assert await w.until(lambda: len(w.ways) == 1, timeout=60)
        assert w.ways[0].outcome == "reset"
        assert await w.until(lambda: _clean(w))
        assert await w.until(lambda: not w.splicer.tcp.connections, timeout=600)

    simulate(body, faults=FaultModel(delay=0.001))


def test_stalled_client_is_aborted_after_the_idle_timeout():
    async def body(w: World):
        w.body_delay = 0.05
        reader, writer = await w.driver.tcp(w.c).open_connection(PROXY_C, 1080)
        writer.write(b"30000000 0\n")
        assert await reader.readline() == b"HEAD 30000000\n"
        writer.transport.pause_reading()   # the window closes; nothing moves any more
        start = w.driver.now()
        assert await w.until(lambda: bool(w.splicer.oneway.by_tcb), timeout=5)
        # `tapsplice stat` shows it: the snapshot's rows and its splice part.
        from stack.control import _splice_part, connection_row
        (ow,) = {id(x): x for x in w.splicer.oneway.by_tcb.values()}.values()
        sink_row = connection_row(ow.sink, w.splicer)
        assert sink_row["splice"]["role"] == "one-way sink"
        assert sink_row["splice"]["partner"]["remote"] == ORIGIN
        assert connection_row(ow.source, w.splicer)["splice"]["role"] == "one-way source"
        part = _splice_part(w.splicer)
        assert part["one_way_total"] == 1 and part["one_way"][0]["sink"]["remote"] == CLIENT
        assert await w.until(lambda: not w.splicer.oneway.by_tcb, timeout=120)
        assert 30 <= w.driver.now() - start <= 65   # the idle_timeout, polled per period
        assert _clean(w)
        assert await w.until(lambda: not w.splicer.tcp.connections, timeout=600)
        writer.close()

    simulate(body, faults=FaultModel(delay=0.001))


def test_closing_a_lent_stream_waits_for_the_hand_back():
    """close() on a stream whose connection a one-way splice is using sends its FIN
    after the hand-back, never in the middle of the relayed range."""
    async def body(w: World):
        w.body_delay = 0.05
        closed_early = []
        orig = w.splice.relay

        async def relay(src, sink, n, **kw):
            task = asyncio.ensure_future(orig(src, sink, n, **kw))
            await asyncio.sleep(0.06)             # relaying by now
            sink.close()                          # the client connection, lent
            closed_early.append(sink.get_extra_info("tcb").state.name)
            return await task

        w.splice.relay = relay
        reader, writer = await w.driver.tcp(w.c).open_connection(PROXY_C, 1080)
        writer.write(b"2000000 0\n")
        assert await reader.readline() == b"HEAD 2000000\n"
        assert await reader.readexactly(2_000_000) == body_for(2_000_000, 0)
        assert await reader.read() == b""          # then the FIN
        assert closed_early == ["ESTABLISHED"] and w.ways[0].outcome == "done"
        writer.close()

    simulate(body, faults=FaultModel(delay=0.001))


@pytest.mark.parametrize("seed,loss", [(1, 0.0), (2, 0.02), (3, 0.02)])
def test_up_to_the_fin_the_fin_is_relayed_and_the_connection_ends(seed, loss):
    """budget None: the body has no length, it ends with the origin's FIN — relayed
    to the client, after which the client connection's sending side is closed."""
    async def body(w: World):
        w.body_delay = 0.05
        reader, writer = await w.driver.tcp(w.c).open_connection(PROXY_C, 1080)
        writer.write(b"100000 0\n")                       # first a budgeted one
        assert await reader.readline() == b"HEAD 100000\n"
        assert await reader.readexactly(100_000) == body_for(100_000, 0)
        writer.write(b"700000 1 close\n")
        assert await reader.readline() == b"HEAD 700000\n"
        assert await reader.read() == body_for(700_000, 1)  # then the end of stream
        assert await w.until(lambda: len(w.ways) == 2, timeout=60)  # the FIN's ACK
        first, last = w.ways
        assert (first.outcome, last.outcome) == ("done", "done")
        assert last.counters["relayed_bytes"] > 500_000
        sink = last.sink
        assert sink.state.name in ("FIN_WAIT_2", "TIME_WAIT", "CLOSED")
        writer.close()
        assert await w.until(lambda: _clean(w))
        assert await w.until(lambda: not w.splicer.tcp.connections, timeout=600)
        assert w.splicer.counters["copied_payload_bytes"] == 0

    simulate(body, faults=FaultModel(loss=loss, delay=0.001), seed=seed, offload=False)
