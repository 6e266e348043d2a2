"""TCP Tap: in-order reassembly of a relayed direction, bounded, and through a splice."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from splice.tap import Tap
from tests.splice.test_splicer import ORIGIN, World, exchange, simulate


@given(data=st.binary(min_size=0, max_size=3000), start=st.integers(0, 2**32 - 1),
       cuts=st.lists(st.integers(1, 300), max_size=40), order=st.randoms(),
       dups=st.integers(0, 5))
def test_any_order_duplicates_and_overlaps_give_the_stream(data, start, cuts, order, dups):
    pieces = []
    pos = 0
    for c in cuts:
        if pos >= len(data):
            break
        pieces.append((pos, data[pos:pos + c]))
        pos += c
    if pos < len(data):
        pieces.append((pos, data[pos:]))
    # overlapping re-sends: a piece spanning two neighbours
    for i in range(min(dups, max(0, len(pieces) - 1))):
        a, b = pieces[i][0], pieces[i + 1][0] + len(pieces[i + 1][1])
        pieces.append((a, data[a:b]))
    order.shuffle(pieces)
    got = bytearray()
    ends = []
    tap = Tap(start, limit=1 << 20, on_data=got.extend, on_end=ends.append)
    for off, chunk in pieces:
        tap.feed((start + off) % 2**32, chunk)
    tap.feed((start + len(data)) % 2**32, b"", fin=True)
    assert bytes(got) == data
    assert ends == [True] and tap.pending_bytes == 0


def test_a_hole_with_too_much_above_it_gives_up_without_raising():
    ends = []
    tap = Tap(0, limit=1000, on_end=ends.append)
    tap.feed(500, b"x" * 600)
    tap.feed(1100, b"y" * 600)        # 1,200 bytes held above a hole: over the limit
    assert tap.truncated and ends == [False] and tap.pending_bytes == 0
    tap.feed(0, b"z" * 500)           # later bytes are ignored, nothing breaks
    assert tap.delivered == 0


def test_tap_through_a_splice_copies_the_server_direction():
    banner = b"220 hello from the origin\r\n"
    body = bytes(range(256)) * 3000

    async def origin(reader, writer):
        writer.write(banner)         # arrives before splice(): handed over at the seam
        await writer.drain()
        await reader.read(-1)
        writer.write(body)
        await writer.drain()
        writer.write_eof()

    async def test(w: World):
        copies = []

        async def tapping_proxy(reader, writer) -> None:
            host, port = (await reader.readline()).split()
            _sr, sw = await w.splice.open_connection(writer, host.decode(), int(port))
            await asyncio.sleep(0.2)  # let the banner reach the proxy first
            pair = await w.splice.splice(writer, sw, reply_to_client=b"OK\n", tap="s2c")
            copies.append(asyncio.ensure_future(pair.tap_reader.read(-1)))
            await w.splice.wait_closed(pair)

        server = await w.driver.tcp(w.p).start_server(tapping_proxy, "198.18.0.2", 1081)
        w.splice.init_splice(server)
        reader, writer = await w.driver.tcp(w.c).open_connection("198.18.0.2", 1081)
        writer.write(f"{ORIGIN} 80\n".encode())
        assert await reader.readexactly(3) == b"OK\n"
        assert await exchange(reader, writer, b"request") == banner + body
        assert await copies[0] == banner + body  # the tap saw exactly what the client got
        assert w.splicer.counters["copied_payload_bytes"] == 0  # the relay copied nothing

    simulate(test, origin_handler=origin)


def test_a_tap_with_a_total_limit_gives_up_and_the_relay_goes_on():
    body = bytes(range(256)) * 4000   # ~1 MB, the tap wants at most 100 KB

    async def origin(reader, writer):
        await reader.read(-1)
        writer.write(body)
        await writer.drain()
        writer.write_eof()

    async def test(w: World):
        results = []

        async def proxy(reader, writer) -> None:
            host, port = (await reader.readline()).split()
            _sr, sw = await w.splice.open_connection(writer, host.decode(), int(port))
            pair = await w.splice.splice(writer, sw, reply_to_client=b"OK\n", tap="s2c",
                                         tap_total=100_000)
            try:
                await pair.tap_reader.read(-1)
                results.append("complete")
            except ConnectionError:
                results.append("gave up")

        server = await w.driver.tcp(w.p).start_server(proxy, "198.18.0.2", 1082)
        w.splice.init_splice(server)
        reader, writer = await w.driver.tcp(w.c).open_connection("198.18.0.2", 1082)
        writer.write(f"{ORIGIN} 80\n".encode())
        assert await reader.readexactly(3) == b"OK\n"
        assert await exchange(reader, writer, b"go") == body   # the relay is unaffected
        assert results == ["gave up"]

    simulate(test, origin_handler=origin)
