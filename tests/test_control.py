"""The control socket (stack/control.py) and `tapsplice stat` (apps/stat.py) on a
simulated proxy: a plain connection, a spliced pair and a TIME-WAIT connection."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import uvloop

from apps.cli import main as cli_main
from splice.testing.sim import splice_api
from stack.control import (
    MAX_REQUEST,
    ControlError,
    ControlServer,
    aquery,
    find_socket,
    find_sockets,
    query,
)
from stack.sim import SimNetwork
from stack.simloop import run

CLIENT, PROXY_C, PROXY_S, ORIGIN = "198.18.0.1", "198.18.0.2", "198.19.0.2", "198.19.0.1"
ECHO, SPLICE = 7, 1080


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _until(pred: Callable[[], bool], timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred() and loop.time() < end:
        await asyncio.sleep(0.25)  # virtual time
    assert pred()


async def _build(driver, px, c) -> tuple[SimpleNamespace, dict[str, int]]:
    """On the proxy: an echo connection from the client (ESTABLISHED), a client
    connection spliced to the origin's echo, and a closed one to the origin (TIME-WAIT)."""
    papi, splice = driver.tcp(px), splice_api(driver, px)
    await papi.start_server(_echo, PROXY_C, ECHO)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(1)
        _sr, sw = await splice.open_connection(writer, ORIGIN, ECHO)
        await splice.splice(writer, sw, reply_to_client=b"ok")

    splice.init_splice(await papi.start_server(handle, PROXY_C, SPLICE))
    capi = driver.tcp(c)
    r1, w1 = await capi.open_connection(PROXY_C, ECHO)
    w1.write(b"hello")
    assert await r1.readexactly(5) == b"hello"
    r2, w2 = await capi.open_connection(PROXY_C, SPLICE)
    w2.write(b"x")
    assert await r2.readexactly(2) == b"ok"
    w2.write(b"through")
    assert await r2.readexactly(7) == b"through"
    r3, w3 = await papi.open_connection(ORIGIN, ECHO)
    w3.write_eof()
    assert await r3.read() == b""
    w3.close()
    conns = papi.tcp.connections
    await _until(lambda: any(t.state.name == "TIME_WAIT" for t in conns.values()))
    await _until(lambda: all(t.snd_una == t.snd_nxt for t in conns.values()))  # all acked
    dev = SimpleNamespace(counters={"tx_backlogged": 3, "tx_dropped_backlog_full": 1})
    udp = driver.udp(px)
    transport, _ = await udp.create_datagram_endpoint(asyncio.DatagramProtocol)
    transport.sendto(b"d", (ORIGIN, 9))
    resolver = SimpleNamespace(stats=lambda: {"counters": {"cache_hit": 2, "sent": 1},
                                              "cache_entries": 1})
    view = SimpleNamespace(stack=px, tcp=papi.tcp, splicer=splice.splicer,
                           devices=[(px.interfaces[0], dev)], udp=udp.layer,
                           resolver=resolver,
                           streams=(r1, w1, r2, w2))  # held: a collected stream closes
    ports = {"echo": w1.get_extra_info("sockname")[1],
             "spliced": w2.get_extra_info("sockname")[1]}
    return view, ports


def in_world(body: Callable[[SimpleNamespace, dict[str, int]], Awaitable[Any]]) -> Any:
    """Run ``body(view, client_ports)`` in the simulated world's event loop."""
    net = SimNetwork(3)
    c, px, o = net.add_host("client"), net.add_host("proxy"), net.add_host("origin")
    net.connect(c, f"{CLIENT}/24", px, f"{PROXY_C}/24")
    net.connect(px, f"{PROXY_S}/24", o, f"{ORIGIN}/24")
    c.add_route("0.0.0.0/0", PROXY_C)
    o.add_route("0.0.0.0/0", PROXY_S)

    async def main(driver) -> Any:
        await driver.tcp(o).start_server(_echo, ORIGIN, ECHO)
        view, ports = await _build(driver, px, c)
        return await body(view, ports)

    return run(main, net)


def with_server(path: Path, requests: list[Any], **kw: Any) -> tuple[list[dict], dict]:
    """Answers to ``requests`` from a control server on ``path`` in the world."""
    async def body(view: SimpleNamespace, ports: dict[str, int]) -> tuple[list[dict], dict]:
        async with ControlServer(view, path, **kw):
            return [await aquery(path, r) for r in requests], ports
    return in_world(body)


def _by_port(snap: dict, port: int) -> dict:
    rows = [r for r in snap["connections"] if port in (r["local_port"], r["remote_port"])]
    assert len(rows) == 1, rows
    return rows[0]


# -- the snapshot ---------------------------------------------------------------------------

def test_snapshot_lists_states_splice_partners_and_counters(tmp_path: Path) -> None:
    (snap,), ports = with_server(tmp_path / "c.sock", [{"cmd": "snapshot"}])
    assert snap["connections_total"] == len(snap["connections"]) == 4
    assert snap["truncated"] is False
    states = sorted(r["state"] for r in snap["connections"])
    assert states == ["ESTABLISHED", "ESTABLISHED", "ESTABLISHED", "TIME_WAIT"]

    plain = _by_port(snap, ports["echo"])
    assert (plain["local"], plain["local_port"], plain["remote"]) == (PROXY_C, ECHO, CLIENT)
    assert plain["splice"] is None
    assert plain["bytes_in"] == 5 and plain["bytes_out"] == 5
    assert plain["rto"] > 0 and plain["cwnd"] > 0 and plain["rcv_wnd"] > 0

    client_side = _by_port(snap, ports["spliced"])
    sp = client_side["splice"]
    assert sp["role"] == "client" and sp["state"] == "spliced"
    partner = sp["partner"]
    assert (partner["remote"], partner["remote_port"], partner["local"]) == (
        ORIGIN, ECHO, PROXY_S)
    server_side = _by_port(snap, partner["local_port"])
    assert server_side["state"] == "ESTABLISHED"
    assert server_side["splice"]["role"] == "server"
    assert server_side["splice"]["partner"] == {
        "local": PROXY_C, "local_port": SPLICE, "remote": CLIENT,
        "remote_port": ports["spliced"]}

    assert {(lst["local"], lst["local_port"]) for lst in snap["listeners"]} == {
        (PROXY_C, ECHO), (PROXY_C, SPLICE)}
    assert snap["splice"]["pairs_total"] == 1
    pair = snap["splice"]["pairs"][0]
    assert pair["client"]["remote_port"] == ports["spliced"]
    assert pair["server"]["remote"] == ORIGIN
    assert snap["splice"]["counters"]["splices"] == 1
    counters = snap["counters"]
    assert counters["copied_payload_bytes"] == 0
    assert counters["devices"]["eth0" if "eth0" in counters["devices"] else
                               next(iter(counters["devices"]))]["tx_backlogged"] == 3
    assert counters["neighbours_total"] == len(counters["neighbours"]) >= 2
    assert {n["ip"] for n in counters["neighbours"]} >= {CLIENT, ORIGIN}
    assert counters["tcp"]["segs_in"] > 0
    assert counters["arp"].get("rx_arp", 0) > 0
    assert all(f"drop.{k}" in counters["stack"] for k in counters["drops"])


def test_filters_by_state_address_and_port(tmp_path: Path) -> None:
    reqs = [{"cmd": "snapshot", "state": "time-wait"},
            {"cmd": "snapshot", "state": "ESTABLISHED", "addr": ORIGIN},
            {"cmd": "snapshot", "port": ECHO},
            {"cmd": "snapshot", "addr": CLIENT, "port": SPLICE},
            {"cmd": "snapshot", "state": "LISTEN"},
            {"cmd": "snapshot", "addr": "198.18.0.99"}]
    (tw, est_origin, echo, spliced, listen, nobody), ports = with_server(
        tmp_path / "c.sock", reqs)
    assert [r["state"] for r in tw["connections"]] == ["TIME_WAIT"]
    assert tw["listeners"] == [] and tw["connections_total"] == 4
    assert [(r["remote"], r["state"]) for r in est_origin["connections"]] == [
        (ORIGIN, "ESTABLISHED")]
    assert est_origin["connections"][0]["splice"]["role"] == "server"
    # port 7: the client's echo connection, the spliced server side, the TIME-WAIT one
    assert len(echo["connections"]) == echo["connections_matched"] == 3
    assert [lst["local_port"] for lst in echo["listeners"]] == [ECHO]
    assert [r["remote_port"] for r in spliced["connections"]] == [ports["spliced"]]
    assert listen["connections"] == [] and len(listen["listeners"]) == 2
    assert nobody["connections"] == [] and nobody["connections_matched"] == 0


def test_limit_truncates_and_says_so(tmp_path: Path) -> None:
    (one, capped), _ = with_server(tmp_path / "c.sock", [
        {"cmd": "snapshot", "limit": 1}, {"cmd": "snapshot"}], max_connections=2)
    assert len(one["connections"]) == 1 and one["truncated"] is True
    assert one["connections_matched"] == 4
    # the server's own cap wins over a larger (absent) request limit
    assert len(capped["connections"]) == 2 and capped["truncated"] is True


def test_metrics_text(tmp_path: Path) -> None:
    (ans,), _ = with_server(tmp_path / "c.sock", [{"cmd": "metrics"}])
    lines = ans["metrics"].splitlines()
    assert 'tapsplice_connections{state="ESTABLISHED"} 3' in lines
    assert 'tapsplice_connections{state="TIME_WAIT"} 1' in lines
    assert "tapsplice_splice_pairs 1" in lines
    assert "tapsplice_copied_payload_bytes_total 0" in lines
    assert any(line.startswith('tapsplice_device_events_total{device="') and
               'event="tx_backlogged"} 3' in line for line in lines)
    assert "# TYPE tapsplice_drops_total counter" in lines
    assert 'tapsplice_udp_events_total{event="tx_datagrams"} 1' in lines
    assert "tapsplice_udp_sockets 1" in lines
    assert 'tapsplice_dns_events_total{event="cache_hit"} 2' in lines
    assert "tapsplice_dns_cache_entries 1" in lines
    for line in lines:  # every sample line is "name{labels} number"
        if not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


# -- bad requests ------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    b"garbage\n", b"[1, 2]\n", b'{"cmd": "reboot"}\n', b'{"nocmd": 1}\n',
    b'{"cmd": "snapshot", "port": "7"}\n', b'{"cmd": "snapshot", "port": 70000}\n',
    b'{"cmd": "snapshot", "limit": true}\n', b'{"cmd": "snapshot", "limit": -1}\n',
    b'{"cmd": "snapshot", "addr": "1.2.3"}\n', b'{"cmd": "snapshot", "addr": 7}\n',
    b'{"cmd": "snapshot", "state": 3}\n', b'{"cmd": "snapshot", "bogus": 1}\n',
    b'{"cmd": "metrics", "state": "LISTEN"}\n', b"\xff\xfe\n",
    b'{"cmd": "' + b"x" * MAX_REQUEST + b'"}\n', b"[" * 4000 + b"\n", b"\n",
])
def test_bad_request_gets_an_error_and_is_closed(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "c.sock"

    async def body(view: SimpleNamespace, _ports: dict) -> tuple[dict, bytes, dict]:
        async with ControlServer(view, path) as server:
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(raw)
            answer = json.loads(await reader.readline())
            rest = await reader.read()  # EOF: the server closed the connection
            writer.close()
            after = await aquery(path, {"cmd": "ping"})  # and still serves others
            return answer, rest, dict(server.counters, after=after)

    answer, rest, counters = in_world(body)
    assert set(answer) == {"error"} and answer["error"]
    assert rest == b""
    assert counters["errors"] == 1
    assert counters["after"] == {"pong": os.getpid()}


def test_silent_client_times_out_and_busy_server_refuses(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"

    async def body(view: SimpleNamespace, _ports: dict) -> tuple[dict, dict, dict]:
        async with ControlServer(view, path, max_clients=1, timeout=2.0) as server:
            reader, writer = await asyncio.open_unix_connection(str(path))
            await asyncio.sleep(0)  # let the server take the silent client
            busy = await aquery(path, {"cmd": "ping"})
            silent = json.loads(await reader.readline())  # after 2 s of virtual time
            writer.close()
            return busy, silent, dict(server.counters)

    busy, silent, counters = in_world(body)
    assert "busy" in busy["error"]
    assert "within 2 s" in silent["error"]
    assert counters["busy"] == 1 and counters["timeouts"] == 1


def test_vanishing_client_and_request_ended_by_eof(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"

    async def body(view: SimpleNamespace, _ports: dict) -> tuple[dict, dict]:
        async with ControlServer(view, path):
            _r, w = await asyncio.open_unix_connection(str(path))
            w.close()  # gone before sending anything
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(b'{"cmd": "ping"}')  # no newline: the half-close ends the line
            writer.write_eof()
            answer = json.loads(await reader.readline())
            writer.close()
            return answer, await aquery(path, {"cmd": "ping"})

    answer, after = in_world(body)
    assert answer == after == {"pong": os.getpid()}


# -- the socket file ------------------------------------------------------------------------

def test_socket_is_0600_and_removed_on_close(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"

    async def body(view: SimpleNamespace, _ports: dict) -> int:
        async with ControlServer(view, path):
            st = os.stat(path)
            assert stat.S_ISSOCK(st.st_mode)
            return stat.S_IMODE(st.st_mode)

    assert in_world(body) == 0o600
    assert not path.exists()


def test_stale_socket_is_replaced_and_a_live_one_is_not(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # bound, never listening: what a killed stack leaves
    stale.close()
    other = tmp_path / "plain"
    other.write_text("not a socket")

    async def body(view: SimpleNamespace, _ports: dict) -> tuple[dict, str, str]:
        async with ControlServer(view, path):
            pong = await aquery(path, {"cmd": "ping"})
            with pytest.raises(ControlError) as live:
                async with ControlServer(view, path):
                    pass
            with pytest.raises(ControlError) as not_sock:
                async with ControlServer(view, other):
                    pass
            return pong, str(live.value), str(not_sock.value)

    pong, live, not_sock = in_world(body)
    assert pong == {"pong": os.getpid()}
    assert "in use" in live
    assert "not a socket" in not_sock
    assert other.read_text() == "not a socket"


def test_default_path_failure_is_not_fatal(tmp_path: Path, monkeypatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setattr("stack.control.CONTROL_DIR", blocker / "sub")
    server = ControlServer(SimpleNamespace(), None)
    assert server.open() is False
    server.close()


# -- the client side -------------------------------------------------------------------------

def test_find_socket(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="no running stack"):
        find_socket(tmp_path)
    (tmp_path / "999999999.sock").write_text("")  # no such process
    with pytest.raises(ControlError, match="no running stack"):
        find_socket(tmp_path)
    mine = tmp_path / f"{os.getpid()}.sock"
    mine.write_text("")
    assert find_socket(tmp_path) == mine
    (tmp_path / "1.sock").write_text("")  # init is always alive
    with pytest.raises(ControlError, match="several stacks"):
        find_socket(tmp_path)
    assert find_sockets(tmp_path) == sorted([mine, tmp_path / "1.sock"])


def test_query_errors(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="no control socket"):
        query(tmp_path / "missing.sock", {"cmd": "ping"})
    path = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()
    with pytest.raises(ControlError, match="stale"):
        query(path, {"cmd": "ping"})


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[Path]:
    """The world's proxy served on a control socket by a uvloop loop in a thread (what
    `tapsplice stat` talks to), after the simulation stopped."""
    view, _ports = in_world(lambda view, ports: _const((view, ports)))
    path = tmp_path / "live.sock"
    loop = uvloop.new_event_loop()
    ready = threading.Event()
    holder: dict[str, ControlServer] = {}

    def serve() -> None:
        async def start() -> None:
            holder["s"] = ControlServer(view, path)
            await holder["s"].serve()
            ready.set()
        loop.run_until_complete(start())
        loop.run_forever()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    assert ready.wait(10)
    try:
        yield path
    finally:
        loop.call_soon_threadsafe(holder["s"].close)
        loop.call_soon_threadsafe(loop.stop)
        t.join(10)
        loop.close()
    assert not path.exists()


async def _const(value: Any) -> Any:
    return value


def test_stat_json_and_filters(live_server: Path, capsys) -> None:
    assert cli_main(["stat", "--control", str(live_server), "--json"]) == 0
    snap = json.loads(capsys.readouterr().out)
    assert len(snap["connections"]) == 4
    assert cli_main(["stat", "--control", str(live_server), "--json",
                     "--state", "established", "--addr", f"{ORIGIN}:{ECHO}"]) == 0
    rows = json.loads(capsys.readouterr().out)["connections"]
    assert [(r["remote"], r["remote_port"], r["state"]) for r in rows] == [
        (ORIGIN, ECHO, "ESTABLISHED")]
    assert cli_main(["stat", "--control", str(live_server), "--json", "--counters"]) == 0
    counters = json.loads(capsys.readouterr().out)
    assert set(counters) == {"counters", "splice"} and counters["splice"]["splices"] == 1


def test_stat_tables(live_server: Path, capsys) -> None:
    assert cli_main(["stat", "--control", str(live_server), "--addr", f":{SPLICE}"]) == 0
    out = capsys.readouterr().out
    assert f"{PROXY_C}:{SPLICE}" in out and "ESTABLISHED" in out
    assert "client spliced" in out and f"{ORIGIN}:{ECHO}" in out
    assert "TIME_WAIT" not in out
    assert cli_main(["stat", "--control", str(live_server), "--counters"]) == 0
    out = capsys.readouterr().out
    assert "drops by reason" in out and "tx_backlogged" in out
    assert "copied payload bytes: 0" in out
    assert "udp (1 sockets)" in out and "tx_datagrams" in out
    assert "dns (1 cached)" in out and "cache_hit" in out


def test_stat_all_asks_every_running_stack(live_server: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("stack.control.CONTROL_DIR", live_server.parent)
    (live_server.parent / "999999999.sock").write_text("")  # a stack that is gone
    assert cli_main(["stat"]) == 0  # the only live one
    capsys.readouterr()
    assert cli_main(["stat", "--all", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["control"] for line in lines] == [str(live_server)]
    assert len(json.loads(lines[0])["connections"]) == 4
    assert cli_main(["stat", "--all"]) == 0
    assert f"stack at {live_server}" in capsys.readouterr().out
    assert cli_main(["stat", "--all", "--control", str(live_server)]) == 2


def test_stat_without_a_stack(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("stack.control.CONTROL_DIR", tmp_path)
    assert cli_main(["stat"]) == 1
    assert "no running stack" in capsys.readouterr().err
    assert cli_main(["stat", "--control", str(tmp_path / "x.sock")]) == 1
    assert "no control socket" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--state", "bogus"], ["--addr", "1.2.3.4:99999"],
                                  ["--addr", "host"], ["--watch", "0"]])
def test_stat_rejects_bad_options(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli_main(["stat", *argv])
    assert e.value.code == 2


def test_stat_watch_refreshes_until_interrupted(live_server: Path, capsys,
                                                monkeypatch) -> None:
    pauses: list[float] = []

    def fake_sleep(seconds: float) -> None:  # stands in for the user's Ctrl-C
        pauses.append(seconds)
        if len(pauses) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr("apps.stat.time.sleep", fake_sleep)
    assert cli_main(["stat", "--control", str(live_server), "--json", "--watch", "0.5"]) == 0
    out = capsys.readouterr().out
    assert pauses == [0.5, 0.5]
    snaps = [json.loads(chunk) for chunk in out.replace("}\n{", "}\0{").split("\0")]
    assert len(snaps) == 2 and all(len(s["connections"]) == 4 for s in snaps)


def test_metrics_endpoint(live_server: Path) -> None:
    from urllib.error import HTTPError
    from urllib.request import urlopen

    from apps.stat import metrics_server

    server = metrics_server(live_server, "127.0.0.1", 0)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with urlopen(f"{base}/metrics", timeout=10) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = r.read().decode()
        assert 'tapsplice_connections{state="TIME_WAIT"} 1' in text.splitlines()
        with pytest.raises(HTTPError) as e:
            urlopen(f"{base}/other", timeout=10)
        assert e.value.code == 404
        dead = metrics_server(live_server.with_name("none.sock"), "127.0.0.1", 0)
        td = threading.Thread(target=dead.serve_forever, daemon=True)
        td.start()
        try:
            with pytest.raises(HTTPError) as e:
                urlopen(f"http://127.0.0.1:{dead.server_address[1]}/metrics", timeout=10)
            assert e.value.code == 503
        finally:
            dead.shutdown()
            dead.server_close()
    finally:
        server.shutdown()
        server.server_close()
        t.join(10)
