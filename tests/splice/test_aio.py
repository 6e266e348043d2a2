"""splice/aio.py SpliceApi: attaching to a stack, and misuse that changes nothing."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from splice.aio import SpliceApi
from splice.demux import SpliceDemux
from splice.pair import SpliceError
from splice.testing import splice_api
from stack.sim import SimNetwork
from stack.simloop import run, until
from stack.streams import StackStreamReader, TcpTransport
from stack.wire.ipv4 import IPPROTO_TCP, ip_bytes


def test_attach_makes_the_splice_layer_with_its_options_and_tells_the_stack():
    net = SimNetwork(1)
    host = net.add_host("p")

    async def main(driver) -> None:
        api = driver.tcp(host)
        tapstack_like = SimpleNamespace(stack=host, tcp=api.tcp, driver=driver, splicer=None)
        sp = SpliceApi.attach(tapstack_like, window_scheme="thesis", idle_timeout=12.0)
        assert tapstack_like.splicer is sp.splicer            # the stack knows its layer
        assert sp.splicer.window_scheme == "thesis" and sp.splicer.idle_timeout == 12.0
        assert sp.splicer.stack is host and sp.driver is driver
        assert isinstance(host.protocols[IPPROTO_TCP], SpliceDemux)
        with pytest.raises(ValueError, match="already"):
            SpliceApi.attach(tapstack_like)
        with pytest.raises(ValueError, match="window scheme"):
            SpliceApi.attach(SimpleNamespace(tcp=api.tcp, driver=driver),
                             window_scheme="nonsense")

    run(main, net)


def test_the_simulation_kit_makes_one_splice_api_per_host():
    net = SimNetwork(1)
    a, b = net.add_host("a"), net.add_host("b")

    async def main(driver) -> None:
        first = splice_api(driver, a)
        assert splice_api(driver, a) is first
        assert splice_api(driver, b) is not first
        assert first.splicer.stack is a and first.splicer.tcp is driver.tcp(a).tcp

    run(main, net)


# -- misuse of SpliceApi.splice changes nothing ---------------------------------------------

CLIENT, PROXY_C, PROXY_S, ORIGIN = "198.18.0.1", "198.18.0.2", "198.19.0.2", "198.19.0.1"
ECHO, RESET, PORT = 7, 9, 1080


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
    writer.close()


async def _reset(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(0.5)
    writer.transport.abort()


def in_world(body) -> None:
    """``body(w)`` with a client that sent b"hello world" to the proxy, which read
    b"hello" of it (b" world" is buffered in its reader); the origin echoes on ECHO and
    resets what connects to RESET."""
    net = SimNetwork(5)
    c, p, o = net.add_host("client"), net.add_host("proxy"), net.add_host("origin")
    net.connect(c, f"{CLIENT}/24", p, f"{PROXY_C}/24")
    net.connect(p, f"{PROXY_S}/24", o, f"{ORIGIN}/24")
    c.add_route("0.0.0.0/0", PROXY_C)
    o.add_route("0.0.0.0/0", PROXY_S)

    async def main(driver) -> None:
        await driver.tcp(o).start_server(_echo, ORIGIN, ECHO)
        await driver.tcp(o).start_server(_reset, ORIGIN, RESET)
        accepted: asyncio.Queue = asyncio.Queue()
        papi, splice = driver.tcp(p), splice_api(driver, p)
        splice.init_splice(await papi.start_server(
            lambda r, w: accepted.put_nowait((r, w)), PROXY_C, PORT))
        cr, cw = await driver.tcp(c).open_connection(PROXY_C, PORT)
        cw.write(b"hello world")
        r, w = await accepted.get()
        assert await r.readexactly(5) == b"hello"
        assert await until(lambda: r.buffered_size() == 6)
        await body(SimpleNamespace(driver=driver, papi=papi, splice=splice, r=r, w=w,
                                   cr=cr, cw=cw))
        cw.close()

    run(main, net)


async def _client_still_ours(w: SimpleNamespace) -> None:
    """The proxy can still write to the client and read what it buffered."""
    assert w.r.buffered_size() == 6                    # nothing was taken from it
    w.w.write(b"reply")
    assert await w.cr.readexactly(5) == b"reply"
    w.w.transport.resume_reading()                     # open_connection paused it
    assert await w.r.readexactly(6) == b" world"


def test_splicing_connections_not_joined_by_intend_splice_changes_nothing():
    async def body(w: SimpleNamespace) -> None:
        sr, sw = await w.papi.open_connection(ORIGIN, ECHO)     # not intend_splice
        with pytest.raises(SpliceError, match="not joined"):
            await w.splice.splice(w.w, sw, reply_to_client=b"OK")
        await _client_still_ours(w)
        sw.write(b"ping")
        assert await sr.readexactly(4) == b"ping"
        sw.close()

    in_world(body)


def test_splicing_after_the_server_connection_was_reset_changes_nothing():
    async def body(w: SimpleNamespace) -> None:
        sr, sw = await w.splice.open_connection(w.w, ORIGIN, RESET)
        with pytest.raises(ConnectionResetError):
            await sr.read()                               # the origin reset it
        with pytest.raises(SpliceError, match="not joined"):  # the pair is gone
            await w.splice.splice(w.w, sw, reply_to_client=b"OK")
        # The splice layer ended the client too (a pair ends on both sides); the call
        # itself took nothing and detached nothing: the stream reports that reset.
        assert w.r.buffered_size() == 6
        w.w.write(b"x")                                    # not "spliced": no error
        with pytest.raises(ConnectionError):
            await w.r.readexactly(7)

    in_world(body)


def _stream_of(tcb, driver) -> asyncio.StreamWriter:
    """A stream on a TCB still connecting (the primitive intend_splice's server side)."""
    loop = asyncio.get_running_loop()
    reader = StackStreamReader(loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport = TcpTransport(tcb, protocol, driver)
    protocol.connection_made(transport)
    return asyncio.StreamWriter(transport, protocol, reader, loop)


def test_splicing_a_connection_not_yet_established_changes_nothing():
    async def body(w: SimpleNamespace) -> None:
        client = w.w.get_extra_info("tcb")
        server = w.splice.splicer.intend_splice(client, ip_bytes(ORIGIN), ECHO,
                                                w.driver.now())
        sw = _stream_of(server, w.driver)                  # SYN_SENT
        with pytest.raises(SpliceError, match="both must be established"):
            await w.splice.splice(w.w, sw, reply_to_client=b"OK")
        assert w.r.buffered_size() == 6
        w.driver.poke()
        assert await until(lambda: server.state.name == "ESTABLISHED")
        await _spliced_after(w, sw)

    in_world(body)


async def _spliced_after(w: SimpleNamespace, sw: asyncio.StreamWriter) -> None:
    """The misuse changed nothing: the same streams splice, and every byte the proxy
    held goes through (the reply, then b" world" the proxy read but did not use)."""
    pair = await w.splice.splice(w.w, sw, reply_to_client=b"OK")
    assert await w.cr.readexactly(8) == b"OK world"
    w.cw.write(b"more")
    assert await w.cr.readexactly(4) == b"more"
    assert pair.closed is False


def test_a_bad_tap_direction_changes_nothing():
    async def body(w: SimpleNamespace) -> None:
        _sr, sw = await w.splice.open_connection(w.w, ORIGIN, ECHO)
        with pytest.raises(SpliceError, match="tap direction"):
            await w.splice.splice(w.w, sw, reply_to_client=b"OK", tap="sideways")
        assert w.r.buffered_size() == 6
        await _spliced_after(w, sw)

    in_world(body)


def test_a_negative_allowance_changes_nothing():
    """SpliceApi.splice derives n from reply_to_client (never negative); the primitive
    under it refuses n < 0 and leaves the streams as they were."""
    async def body(w: SimpleNamespace) -> None:
        _sr, sw = await w.splice.open_connection(w.w, ORIGIN, ECHO)
        client, server = w.w.get_extra_info("tcb"), sw.get_extra_info("tcb")
        with pytest.raises(SpliceError, match="n must be"):
            w.splice.splicer.splice(client, server, -1, w.driver.now())
        await _spliced_after(w, sw)

    in_world(body)


def test_splicing_twice_changes_nothing():
    async def body(w: SimpleNamespace) -> None:
        _sr, sw = await w.splice.open_connection(w.w, ORIGIN, ECHO)
        await _spliced_after(w, sw)
        with pytest.raises(SpliceError, match="cannot splice"):
            await w.splice.splice(w.w, sw, reply_to_client=b"again")
        w.cw.write(b"still")                               # the pair still relays
        assert await w.cr.readexactly(5) == b"still"
        assert w.splice.splicer.counters["splices"] == 1

    in_world(body)


def test_a_refused_one_way_splice_gives_the_reader_its_bytes_back():
    async def body(w: SimpleNamespace) -> None:
        with pytest.raises(SpliceError, match="same connection"):
            await w.splice.relay(w.w, w.w, 3)             # source and sink alike
        assert w.r.buffered_size() == 6
        assert await w.r.readexactly(6) == b" world"
        w.w.write(b"reply")                                # the stream is ours again
        assert await w.cr.readexactly(5) == b"reply"

    in_world(body)
