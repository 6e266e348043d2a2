"""The SOCKS server on the simulated network (client, proxy, origin), in copy mode and in
splice mode: every test runs in both unless it names its mode."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.socks import protocol as p
from apps.socks.policy import Policy
from apps.socks.protocol import Address, Atyp, Rep
from tests.socks.harness import (
    CLIENT,
    CLIENT2,
    ECHO,
    ENDINGS,
    ORIGIN,
    PROXY_C,
    PROXY_S,
    REPORT,
    RESET,
    SILENT,
    SOCKS_PORT,
    World,
    read_all,
    read_message,
    simulate,
    socks5,
)


def nets(*texts: str) -> tuple:
    return tuple(ipaddress.ip_network(t) for t in texts)


async def echo_once(w: World, dest: Address, payload: bytes = b"hello", **kw) -> tuple:
    reader, writer, (sel, auth, reply) = await socks5(w, dest, **kw)
    echoed = None
    if reply is not None and reply.rep == Rep.SUCCEEDED:
        writer.write(payload)
        writer.write_eof()
        echoed = await read_all(reader)
    writer.close()
    return sel, auth, reply, echoed


def test_connect_by_ipv4_relays_and_logs() -> None:
    async def body(w: World):
        sel, auth, reply, echoed = await echo_once(w, Address.of(ORIGIN, ECHO), b"x" * 5000)
        assert sel.method == p.Method.NO_AUTH and auth is None
        assert reply.rep == Rep.SUCCEEDED
        # BND.ADDR is the proxy's address on the origin's side (RFC 1928 §6).
        assert reply.bound.host == PROXY_S and reply.bound.port != 0
        assert echoed == b"x" * 5000
        assert await w.until(lambda: w.proxy.active == 0 and w.log.sessions)
        (s,) = w.log.sessions
        assert (s.client.split(":")[0], s.version, s.user, s.dest, s.rep) == (
            CLIENT, 5, "-", f"{ORIGIN}:{ECHO}", 0)
        assert (s.up, s.down) == (5000, 5000)
        assert "rep=0x00 up=5000 down=5000" in s.line()
        assert await w.until(lambda: w.proxy_connections() == 0)

    simulate(body)


def test_connect_by_name_and_early_data() -> None:
    policy = Policy(hosts={"origin.test": ORIGIN})

    async def body(w: World):
        reader, writer, (_s, _a, reply) = await socks5(
            w, Address(Atyp.DOMAINNAME, "Origin.Test", ECHO), early=b"early bytes")
        assert reply.rep == Rep.SUCCEEDED
        writer.write_eof()
        assert await read_all(reader) == b"early bytes"
        writer.close()
        assert await w.until(lambda: bool(w.log.sessions))
        assert w.log.sessions[0].dest == f"Origin.Test:{ECHO}"

    simulate(body, policy=policy)


@pytest.mark.parametrize("dest,rep", [
    (Address(Atyp.DOMAINNAME, "nowhere.test", ECHO), Rep.HOST_UNREACHABLE),
    (Address.of(ORIGIN, 4444), Rep.CONNECTION_REFUSED),
    (Address.of("198.19.0.99", ECHO), Rep.TTL_EXPIRED),       # nobody answers ARP
    (Address.of("198.19.77.1", ECHO), Rep.NETWORK_UNREACHABLE),  # no route in the proxy
    (Address.of("2001:db8::1", ECHO), Rep.ADDRESS_TYPE_NOT_SUPPORTED),
])
def test_connect_failures_are_answered(dest: Address, rep: int) -> None:
    policy = Policy(connect_timeout=3.0)

    async def body(w: World):
        t0 = w.now
        reader, writer, (_s, _a, reply) = await socks5(w, dest)
        assert reply.rep == rep
        assert await read_all(reader) == b""          # and the proxy closed
        assert w.now - t0 < policy.connect_timeout + 1
        writer.close()
        assert await w.until(lambda: w.proxy.active == 0 and w.proxy_connections() == 0)
        assert w.log.sessions[0].rep == rep

    simulate(body, policy=policy)


@pytest.mark.parametrize("command", [p.Command.BIND, 0x7F])
def test_other_commands_are_not_supported(command: int) -> None:
    async def body(w: World):
        _r, writer, (_s, _a, reply) = await socks5(w, Address.of(ORIGIN, ECHO), command=command)
        assert reply.rep == Rep.COMMAND_NOT_SUPPORTED
        writer.close()

    simulate(body)


def test_unknown_address_type_is_answered() -> None:
    async def body(w: World):
        reader, writer = await w.client.open_connection(PROXY_C, SOCKS_PORT)
        writer.write(p.Greeting((0,)).encode() + b"\x05\x01\x00\x09\x01\x02")
        assert (await read_message(reader, p.parse_method_selection)).method == 0
        reply = await read_message(reader, p.parse_reply)
        assert reply.rep == Rep.ADDRESS_TYPE_NOT_SUPPORTED
        assert await read_all(reader) == b""
        writer.close()

    simulate(body)


@pytest.mark.parametrize("policy", [
    Policy(allow_dests=nets("198.19.0.128/25")),
    Policy(allow_ports=frozenset({80})),
])
def test_destination_policy_denies(policy: Policy) -> None:
    async def body(w: World):
        _r, writer, (_s, _a, reply) = await socks5(w, Address.of(ORIGIN, ECHO))
        assert reply.rep == Rep.NOT_ALLOWED
        writer.close()
        # Nothing was sent to the origin: no connection was ever opened from the proxy.
        assert not any(t.remote_port == ECHO for t in w.proxy_api.tcp.connections.values())

    simulate(body, policy=policy)


def test_client_not_allowed_is_closed_without_reply() -> None:
    async def body(w: World):
        reader, writer = await w.client.open_connection(PROXY_C, SOCKS_PORT)
        writer.write(p.Greeting((0,)).encode())
        assert await read_all(reader) == b""
        writer.close()
        assert await w.until(lambda: bool(w.log.sessions))
        assert w.log.sessions[0].note == "client not allowed"

    simulate(body, policy=Policy(allow_clients=nets("10.0.0.0/8")))


USERS = Policy(users={"alice": "wonderland"})


def test_auth_success() -> None:
    async def body(w: World):
        sel, auth, reply, echoed = await echo_once(
            w, Address.of(ORIGIN, ECHO), methods=(0, 2), creds=(b"alice", b"wonderland"))
        assert sel.method == p.Method.USERPASS and auth.ok and reply.rep == Rep.SUCCEEDED
        assert echoed == b"hello"
        assert await w.until(lambda: bool(w.log.sessions))
        assert w.log.sessions[0].user == "alice"

    simulate(body, policy=USERS)


@pytest.mark.parametrize("creds", [(b"alice", b"wrong"), (b"mallory", b"wonderland")])
def test_auth_failure_closes(creds: tuple[bytes, bytes]) -> None:
    async def body(w: World):
        reader, writer, (sel, auth, reply) = await socks5(
            w, Address.of(ORIGIN, ECHO), methods=(2,), creds=creds)
        assert sel.method == p.Method.USERPASS and not auth.ok and reply is None
        assert await read_all(reader) == b""   # RFC 1929 §2: the server closes
        writer.close()
        assert await w.until(lambda: bool(w.log.sessions))
        assert w.proxy.counters["auth_failed"] == 1

    simulate(body, policy=USERS)


def test_no_acceptable_method() -> None:
    async def body(w: World):
        _r, writer, (sel, _a, reply) = await socks5(w, Address.of(ORIGIN, ECHO), methods=(0,))
        assert sel.method == p.Method.NO_ACCEPTABLE and reply is None
        writer.close()

    simulate(body, policy=USERS)


def test_socks4_and_socks4a() -> None:
    policy = Policy(hosts={"origin.test": ORIGIN})

    async def body(w: World):
        for req in (p.Socks4Request(1, ECHO, ORIGIN, b"bob"),
                    p.Socks4Request(1, ECHO, "0.0.0.1", b"", "origin.test"),
                    p.Socks4Request(1, ECHO, "0.0.0.1", b"", "unknown.test"),
                    p.Socks4Request(2, ECHO, ORIGIN, b"")):
            reader, writer = await w.client.open_connection(PROXY_C, SOCKS_PORT)
            writer.write(req.encode() + b"ping")
            reply = await read_message(reader, p.parse_socks4_reply)
            ok = req.command == 1 and req.hostname != "unknown.test"
            assert reply.status == (p.Socks4Status.GRANTED if ok else p.Socks4Status.REJECTED)
            writer.write_eof()
            assert await read_all(reader) == (b"ping" if ok else b"")
            writer.close()
        assert await w.until(lambda: len(w.log.sessions) == 4)
        # A spliced session ends (and is logged) after its TIMEWAIT: compare as sets.
        # The log shows what the client received: SOCKS4 has only granted/rejected.
        assert sorted(s.rep for s in w.log.sessions) == [0x5A, 0x5A, 0x5B, 0x5B]
        assert sorted(s.note for s in w.log.sessions if s.rep == 0x5B) == [
            "command 2", "unknown host name 'unknown.test'"]
        bob = [s for s in w.log.sessions if s.user == "bob"]
        assert len(bob) == 1 and bob[0].version == 4

    simulate(body, policy=policy)


def test_socks4_refused_when_passwords_are_required() -> None:
    async def body(w: World):
        reader, writer = await w.client.open_connection(PROXY_C, SOCKS_PORT)
        writer.write(p.Socks4Request(1, ECHO, ORIGIN, b"alice").encode())
        reply = await read_message(reader, p.parse_socks4_reply)
        assert reply.status == p.Socks4Status.REJECTED
        writer.close()

    simulate(body, policy=USERS)


@pytest.mark.parametrize("sent", [b"", b"\x05\x02\x00", b"GET / HTTP/1.1\r\n"])
def test_stalled_or_bad_client_is_dropped_on_time(sent: bytes) -> None:
    policy = Policy(handshake_timeout=5.0)

    async def body(w: World):
        reader, writer = await w.client.open_connection(PROXY_C, SOCKS_PORT)
        t0 = w.now
        writer.write(sent)
        assert await read_all(reader) == b""
        elapsed = w.now - t0
        if sent.startswith(b"GET"):
            assert elapsed < 1.0                      # garbage: dropped at once
        else:
            assert 5.0 <= elapsed < 6.0               # stalled: dropped at the timeout
        writer.close()
        assert await w.until(lambda: w.proxy.active == 0 and w.proxy_connections() == 0)
        note = w.log.sessions[0].note
        assert note == "handshake timeout" or note.startswith("bad request")

    simulate(body, policy=policy)


def test_connection_limit() -> None:
    policy = Policy(max_connections=1, handshake_timeout=50.0)

    async def body(w: World):
        _r1, w1 = await w.client.open_connection(PROXY_C, SOCKS_PORT)  # holds the slot
        assert await w.until(lambda: w.proxy.active == 1)
        r2, w2 = await w.client.open_connection(PROXY_C, SOCKS_PORT)
        t0 = w.now
        assert await read_all(r2) == b""
        assert w.now - t0 < 1.0
        assert w.proxy.counters["over_limit"] == 1
        w1.close()
        w2.close()
        assert await w.until(lambda: w.proxy.active == 0)
        _r, w3, (_s, _a, reply) = await socks5(w, Address.of(ORIGIN, ECHO))
        assert reply.rep == Rep.SUCCEEDED                  # the slot is free again
        w3.close()

    simulate(body, policy=policy)


def test_half_close_is_relayed() -> None:
    async def body(w: World):
        reader, writer, (_s, _a, reply) = await socks5(w, Address.of(ORIGIN, REPORT))
        assert reply.rep == Rep.SUCCEEDED
        writer.write(b"a" * 1234)
        writer.write_eof()  # the origin answers only once it sees our FIN
        assert await read_all(reader) == b"got 1234"
        writer.close()
        assert await w.until(lambda: w.proxy.active == 0 and w.proxy_connections() == 0)
        s = w.log.sessions[0]
        assert (s.up, s.down, s.note) == (1234, 8, "spliced" if w.splicer else "")

    simulate(body)


def test_origin_reset_reaches_client_as_reset() -> None:
    async def body(w: World):
        reader, writer, (_s, _a, reply) = await socks5(w, Address.of(ORIGIN, RESET))
        assert reply.rep == Rep.SUCCEEDED
        writer.write(b"boom")
        with pytest.raises(ConnectionResetError):
            await read_all(reader)
        assert await w.until(lambda: w.proxy.active == 0 and w.proxy_connections() == 0)

    simulate(body)


def test_client_reset_reaches_origin_and_frees_everything() -> None:
    async def body(w: World):
        reader, writer, (_s, _a, reply) = await socks5(w, Address.of(ORIGIN, SILENT))
        assert reply.rep == Rep.SUCCEEDED
        writer.write(b"data")
        assert await w.until(lambda: w.log.sessions == [] and any(
            t.remote_port == SILENT for t in w.proxy_api.tcp.connections.values()))
        writer.transport.abort()
        assert await w.until(lambda: w.proxy.active == 0 and w.proxy_connections() == 0)
        # The origin's side was reset too, not closed with a FIN or left open.
        assert await w.until(lambda: bool(ENDINGS))
        assert ENDINGS == ["reset"]
        note = w.log.sessions[0].note
        assert note == "spliced, reset" if w.splicer else note.startswith("error")

    simulate(body)


def pattern(n: int, seed: int) -> bytes:
    block = bytes((i * 7 + seed) & 0xFF for i in range(4096))
    return (block * (n // len(block) + 1))[:n]


@pytest.mark.parametrize("size", [256 * 1024, 4 << 20])
def test_large_transfer_both_ways(size: int) -> None:
    data = pattern(size, 3)

    async def body(w: World):
        reader, writer, (_s, _a, reply) = await socks5(w, Address.of(ORIGIN, ECHO))
        assert reply.rep == Rep.SUCCEEDED

        async def send() -> None:
            for i in range(0, size, 100_000):
                writer.write(data[i:i + 100_000])
                await writer.drain()
            writer.write_eof()

        sender = asyncio.ensure_future(send())
        got = await read_all(reader)
        await sender
        assert len(got) == size and got == data
        writer.close()
        assert await w.until(lambda: bool(w.log.sessions))
        s = w.log.sessions[0]
        assert (s.up, s.down) == (size, size)

    simulate(body)


def test_splice_mode_relays_without_copies_and_tears_down() -> None:
    size = 3 << 20
    data = bytes(range(251)) * (size // 251)

    async def body(w: World):
        reader, writer, (_s, _a, reply) = await socks5(w, Address.of(ORIGIN, ECHO))
        assert reply.rep == Rep.SUCCEEDED
        sent_before = w.proxy_api.tcp.counters["segs_out"]

        async def send() -> None:
            writer.write(data)
            await writer.drain()
            writer.write_eof()

        sender = asyncio.ensure_future(send())
        got = await read_all(reader)
        await sender
        assert got == data
        sp = w.splicer.counters
        assert sp["splices"] == 1 and sp["copied_payload_bytes"] == 0
        assert sp["flow_path_segments"] > 0  # steady state skipped IP and TCP entirely
        # The proxy's own TCP sent nothing for the relayed megabytes (at most the ACK
        # it owed at splice time): the stack relayed the peers' segments.
        assert w.proxy_api.tcp.counters["segs_out"] - sent_before <= 2
        writer.close()
        assert await w.until(lambda: sp["closed"] == 1 and w.proxy_connections() == 0)
        s = w.log.sessions[0]
        assert (s.up, s.down) == (len(data), len(data)) and s.note == "spliced"

    simulate(body, mode="splice")


def test_bad_mode() -> None:
    from apps.socks.server import SocksServer

    with pytest.raises(ValueError):
        SocksServer(object(), mode="zero-copy")


FUZZ_POLICY = Policy(handshake_timeout=2.0, connect_timeout=2.0,
                     hosts={"origin.test": ORIGIN})
valid_prefix = st.sampled_from([
    b"",
    p.Greeting((0,)).encode(),
    p.Greeting((0,)).encode() + p.Request(1, Address.of(ORIGIN, ECHO)).encode(),
    p.Socks4Request(1, ECHO, "0.0.0.1", b"", "origin.test").encode(),
    b"\x04", b"\x05",
])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_prefix, st.binary(max_size=600), st.booleans())
def test_arbitrary_client_bytes_end_cleanly(prefix: bytes, raw: bytes, eof: bool) -> None:
    async def body(w: World):
        reader, writer = await w.client.open_connection(PROXY_C, SOCKS_PORT)
        writer.write(prefix + raw)
        if eof:
            writer.write_eof()
        try:
            # A valid CONNECT to the echo service stays open until we close: bounded.
            async with asyncio.timeout(30):
                await read_all(reader)
        except (ConnectionResetError, TimeoutError):
            pass
        writer.close()
        assert await w.until(lambda: w.proxy.active == 0 and w.proxy_connections() == 0)
        (s,) = w.log.sessions
        assert not s.note.startswith("internal"), s.note

    simulate(body, policy=FUZZ_POLICY)


# -- proxy defaults and abuse ------------------------------------------------------------

def test_client_text_is_escaped_in_the_access_log() -> None:
    evil = b"bob\n1.2.3.4:5 socks5 user=root \x1b[2J\\ \xc3\xa9"

    async def body(w: World):
        reader, writer = await w.client.open_connection(PROXY_C, SOCKS_PORT)
        writer.write(p.Socks4Request(1, ECHO, "0.0.0.1", evil, "unknown.test").encode())
        assert (await read_message(reader, p.parse_socks4_reply)) is not None
        writer.close()
        await socks5(w, Address.of(ORIGIN, ECHO), methods=(2,), creds=(evil, b"nope"))
        assert await w.until(lambda: len(w.log.sessions) == 2)
        for s in w.log.sessions:
            line = s.line()
            assert all(0x20 <= ord(c) < 0x7f for c in line), line
            assert "user=bob\\x0a1.2.3.4:5\\x20socks5\\x20user=root\\x20\\x1b[2J\\\\" in line
            assert "\\xc3\\xa9" in line

    simulate(body, policy=Policy(users={"alice": "wonderland"}, hosts={}))


def test_socks4_log_shows_the_status_the_client_received() -> None:
    policy = Policy(hosts={"origin.test": ORIGIN})

    async def body(w: World):
        for name in ("origin.test", "unknown.test"):
            reader, writer = await w.client.open_connection(PROXY_C, SOCKS_PORT)
            writer.write(p.Socks4Request(1, ECHO, "0.0.0.1", b"", name).encode())
            await read_message(reader, p.parse_socks4_reply)
            writer.close()
        assert await w.until(lambda: len(w.log.sessions) == 2)
        lines = sorted(s.line() for s in w.log.sessions)
        assert "rep=0x5a" in lines[0] and "unknown.test" not in lines[0]
        assert "rep=0x5b" in lines[1] and "unknown host name" in lines[1]

    simulate(body, policy=policy)


def test_repeated_auth_failures_back_off_per_client_address(caplog) -> None:
    # Three wrong passwords are free; then the address waits 1 s, 2 s, 4 s ... after its
    # last failure, and an attempt inside that window is refused without being checked.
    policy = Policy(users={"alice": "wonderland"},
                    allow_clients=nets("198.18.0.0/16"))
    good, bad = (b"alice", b"wonderland"), (b"alice", b"guess")

    async def body(w: World):
        async def attempt(creds, client=None) -> bool:
            _r, writer, (_s, auth, reply) = await socks5(
                w, Address.of(ORIGIN, ECHO), methods=(2,), creds=creds, client=client)
            writer.close()
            return auth.ok and reply.rep == Rep.SUCCEEDED

        for _ in range(3):
            assert not await attempt(bad)
        assert not await attempt(good)        # the right password, refused: too soon
        assert await attempt(good, w.client2)   # another address is not affected
        assert w.proxy.counters["auth_throttled"] == 1
        assert w.proxy.counters["auth_failed"] == 3
        t0 = w.now
        await w.until(lambda: w.now - t0 >= 1.0)   # the back-off after three failures
        assert await attempt(good)
        assert await w.until(lambda: len(w.log.sessions) == 6)
        notes = [s.note for s in w.log.sessions if s.client.startswith(CLIENT + ":")]
        assert notes.count("authentication failed") == 3
        assert notes.count("authentication throttled") == 1
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"
                    and "authentication failed" in r.getMessage()]
        assert len(warnings) == 3 and all(CLIENT in m for m in warnings)
        assert not any(CLIENT2 in m for m in warnings)

    simulate(body, policy=policy, clients=2)


async def ended_at_once(w: World, reader: asyncio.StreamReader) -> bool:
    """Whether the proxy ends this connection (FIN or RST) within a second."""
    t0 = w.now
    try:
        await read_all(reader)
    except ConnectionError:
        pass
    return w.now - t0 < 1.0


def test_one_address_in_many_handshakes_does_not_block_another() -> None:
    # 20 one-byte handshakes from one address: only 8 may be in progress, the rest are
    # refused at once; a second address still gets a slot of the 16.
    policy = Policy(max_connections=16, max_per_client=16, max_handshakes_per_client=8,
                    handshake_timeout=50.0, allow_clients=nets("198.18.0.0/16"))

    async def body(w: World):
        conns = []
        for _ in range(20):
            reader, writer = await w.client.open_connection(PROXY_C, SOCKS_PORT)
            writer.write(b"\x05")
            conns.append((reader, writer))
        assert await w.until(lambda: w.proxy.counters["accepted"] == 20)
        assert w.proxy.active == 8 and w.proxy.counters["handshake_limit"] == 12
        assert all([await ended_at_once(w, r) for r, _w in conns[8:]])
        _r, w2, (_s, _a, reply) = await socks5(w, Address.of(ORIGIN, ECHO), client=w.client2)
        assert reply.rep == Rep.SUCCEEDED
        w2.close()
        for _r, writer in conns:
            writer.close()
        assert await w.until(lambda: w.proxy.active == 0 and not w.proxy.slots.connections)

    simulate(body, policy=policy, clients=2)


def test_connections_per_client_address_are_bounded() -> None:
    policy = Policy(max_per_client=3, allow_clients=nets("198.18.0.0/16"))

    async def body(w: World):
        sessions = []
        for _ in range(3):
            reader, writer, (_s, _a, reply) = await socks5(w, Address.of(ORIGIN, SILENT))
            assert reply.rep == Rep.SUCCEEDED
            sessions.append(writer)
        reader, writer = await w.client.open_connection(PROXY_C, SOCKS_PORT)
        assert await ended_at_once(w, reader)
        writer.close()
        assert w.proxy.counters["per_client_limit"] == 1
        _r, w2, (_s, _a, reply) = await socks5(w, Address.of(ORIGIN, ECHO), client=w.client2)
        assert reply.rep == Rep.SUCCEEDED
        w2.close()
        for writer in sessions:
            writer.close()
        assert await w.until(lambda: w.proxy.active == 0)
        _r, w3, (_s, _a, reply) = await socks5(w, Address.of(ORIGIN, ECHO))
        assert reply.rep == Rep.SUCCEEDED           # the slots are free again
        w3.close()

    simulate(body, policy=policy, clients=2)


@pytest.mark.parametrize("allow", [None, nets("198.18.0.0/15")])
def test_only_the_listening_interfaces_side_may_use_the_proxy(allow) -> None:
    # The proxy listens on 198.18.0.2 (client side). A host on the server side
    # (198.19.0.1) is refused at its SYN, even when --allow-client would cover it.
    async def body(w: World):
        with pytest.raises(ConnectionRefusedError):
            await w.origin.open_connection(PROXY_C, SOCKS_PORT)
        assert w.proxy_api.tcp.counters["listen_wrong_iface"] == 1
        assert w.proxy.counters["accepted"] == 0
        if allow is None:
            assert w.proxy.policy.allow_clients == nets("198.18.0.0/24")
        _r, writer, (_s, _a, reply) = await socks5(w, Address.of(ORIGIN, ECHO))
        assert reply.rep == Rep.SUCCEEDED
        writer.close()

    simulate(body, policy=Policy(allow_clients=allow))


def _handler_tasks(name: str) -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks()
            if getattr(t.get_coro(), "__qualname__", "") == name and not t.done()]


def test_a_cancelled_handler_ends_cancelled_and_releases_everything() -> None:
    async def body(w: World):
        reader, writer, (_s, _a, reply) = await socks5(w, Address.of(ORIGIN, SILENT))
        assert reply.rep == Rep.SUCCEEDED
        assert await w.until(lambda: any(
            t.remote_port == SILENT for t in w.proxy_api.tcp.connections.values()))
        (task,) = _handler_tasks("SocksServer.handle")
        task.cancel()
        await asyncio.wait([task])
        assert task.cancelled()                     # not swallowed: it ends as cancelled
        assert w.proxy.active == 0 and not w.proxy.slots.connections
        assert await w.until(lambda: w.proxy_connections() == 0 and bool(ENDINGS))
        assert ENDINGS == ["reset"]                 # the origin's side was reset
        with pytest.raises(ConnectionResetError):   # and so was the client's
            await read_all(reader)
        assert w.log.sessions[0].note == "cancelled"
        writer.close()

    simulate(body, mode="copy")


def _resolver(*addrs: str):
    async def resolve(_name: str) -> list[str]:
        return list(addrs)
    return resolve


def test_a_name_with_a_dead_first_address_connects_to_the_next(relay_mode):
    async def body(w: World):
        w.proxy.resolve = _resolver("198.19.0.77", ORIGIN)   # nobody has .77
        t0 = w.now
        reader, writer, (_s, _a, reply) = await socks5(w, Address.of("multi.test", ECHO))
        assert reply.rep == Rep.SUCCEEDED
        took = w.now - t0
        # Copy mode races the next address 250 ms later (RFC 8305 §5); splice mode waits
        # for the first to fail or use up its share of the connect timeout.
        assert took < 1.0 if relay_mode == "copy" else took <= 5.5, took
        writer.write(b"hello")
        assert await reader.readexactly(5) == b"hello"
        writer.close()
        assert await w.until(lambda: w.proxy.active == 0)
        if relay_mode == "copy":   # the losing attempt was cancelled, nothing left behind
            assert await w.until(lambda: w.proxy_connections() == 0)

    simulate(body)


def test_a_name_whose_addresses_all_fail_is_answered_with_every_reason():
    async def body(w: World):
        # Both refuse at once: the origin and the client host, on a closed port.
        w.proxy.resolve = _resolver(ORIGIN, CLIENT)
        _r, w1, (_s, _a, reply) = await socks5(w, Address.of("closed.test", 4444))
        assert reply.rep == Rep.CONNECTION_REFUSED
        # Nobody at either address: the connect timeout ends it.
        w.proxy.resolve = _resolver("198.19.0.77", "198.19.0.78")
        _r, w2, (_s, _a, reply) = await socks5(w, Address.of("dead.test", ECHO))
        assert reply.rep == Rep.TTL_EXPIRED
        w1.close()
        w2.close()
        assert await w.until(lambda: len(w.log.sessions) == 2)
        assert [s.note for s in w.log.sessions] == [
            f"every address failed: {ORIGIN}: connection refused; {CLIENT}: connection refused",
            "connect timeout (2 addresses)"]
        assert await w.until(lambda: w.proxy_connections() == 0)   # no attempt left behind

    simulate(body)
