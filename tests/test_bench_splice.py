"""`bench splice`: options, statistics shaping, the transfer checks, the uvloop SOCKS5
proxy and the kernel-socket servers on loopback, and one end-to-end lab run."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from apps.cli import build_parser
from apps.labproc import TransferError
from tools.bench import splice_load, splice_servers, uvsocks
from tools.bench.harness import PathResult, Sample
from tools.bench.splice import (
    ALL_PARTS,
    build_splice_report,
    path_ratios,
    plan_from_args,
    splice_drops,
    targets,
)
from tools.bench.splice_paths import (
    ALL_ROUTES,
    MicrosocksRoute,
    check_transfer,
    curl_argv,
    parse_curl,
    summary_from_log,
)
from tools.bench.splice_run import (
    Outcome,
    Plan,
    parse_json_line,
    planned_steps,
    process_tree_cpu,
)

REPO = Path(__file__).resolve().parents[1]
STEP = 10.0  # bound on every loopback exchange


def _args(*argv: str):
    return build_parser().parse_args(["bench", "splice", *argv])


# -- options ---------------------------------------------------------------------------------
def test_defaults_are_the_full_run() -> None:
    plan = plan_from_args(_args())
    assert (plan.size, plan.repeats, plan.warmup, plan.pairs) == (1 << 30, 3, 1, 10_000)
    assert plan.routes == list(ALL_ROUTES) and plan.rps and plan.memory


def test_quick_changes_defaults_but_explicit_values_win() -> None:
    plan = plan_from_args(_args("--quick", "--size", "4M", "--pairs", "7"))
    assert plan.size == 4 << 20 and plan.pairs == 7
    assert plan.repeats == 1 and plan.warmup == 0
    assert plan.rps_duration < 10.0


def test_only_selects_parts() -> None:
    plan = plan_from_args(_args("--only", "kernel", "--only", "memory"))
    assert plan.routes == ["kernel"] and plan.memory and not plan.rps
    assert planned_steps(plan) == 2 * 3 + 1


@pytest.mark.parametrize("argv", [["--only", "nonsense"], ["--repeats", "0"],
                                  ["--pairs", "0"], ["--pairs", "1000000"], ["--size", "0"],
                                  ["--size", "lots"], ["--concurrency", "0"]])
def test_bad_options_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        _args(*argv)


def test_every_part_has_a_name() -> None:
    assert set(ALL_ROUTES) < set(ALL_PARTS) and {"rps", "memory"} < set(ALL_PARTS)


# -- statistics shaping ----------------------------------------------------------------------
def _result(name: str, gbits: list[float], size: int = 1 << 20) -> PathResult:
    route, direction = name.rsplit("-", 1)
    r = PathResult(name, route, size, direction)
    r.samples = [Sample(size, size * 8 / (g * 1e9)) for g in gbits]
    return r


def test_ratios_per_direction() -> None:
    results = [_result("splice-download", [6.0, 5.0, 7.0]), _result("copy-download", [1.0]),
               _result("kernel-download", [3.0]), _result("uvsocks-download", [2.0]),
               _result("splice-upload", [4.0]), _result("kernel-upload", [8.0])]
    down = path_ratios(results, results[0])
    assert down["vs_kernel"] == pytest.approx(2.0)
    assert down["vs_uvsocks"] == pytest.approx(3.0)
    assert down["splice_vs_copy"] == pytest.approx(6.0)
    up = path_ratios(results, results[4])
    assert up["vs_kernel"] == pytest.approx(0.5)
    assert up["vs_uvsocks"] is None and up["splice_vs_copy"] is None
    # Only splice rows get the splice/copy ratio.
    assert path_ratios(results, results[2])["splice_vs_copy"] is None


def test_targets_met_not_met_and_not_measured() -> None:
    out = Outcome(transfers=[_result("splice-download", [6.0]), _result("copy-download", [3.0]),
                             _result("kernel-download", [5.0])],
                  rps={"splice": {"rps": 1500.0}, "splice-workers": {"rps": 2500.0}},
                  memory={"delta_bytes": 150e6, "pairs_held": 10})
    rows = {row["target"]: row["met"] for row in targets(out)}
    assert rows["splice download vs_kernel >= 1x"] is True
    assert rows["splice download splice_vs_copy >= 3x"] is False
    assert rows["splice download vs_uvsocks >= 1.5x"] is None
    assert rows["splice upload vs_kernel >= 1x"] is None
    assert rows["splice req/s >= 2000 (one process)"] is False
    assert rows["splice req/s >= 2000 (2 workers)"] is True
    assert rows["idle pairs memory <= 100 MB"] is False


def test_report_is_json_with_raw_samples_and_ratios() -> None:
    out = Outcome(transfers=[_result("splice-upload", [2.0, 4.0]),
                             _result("kernel-upload", [2.0])],
                  unavailable={"microsocks": "not installed"})
    plan = Plan(routes=["splice", "kernel"], size=1 << 20, repeats=2, warmup=0,
                rps=False, memory=False)
    report = json.loads(json.dumps(build_splice_report(plan, out, ["x"])))
    first = report["paths"][0]
    assert first["route"] == "splice" and first["direction"] == "upload"
    assert len(first["samples"]) == 2 and first["median_gbit_per_s"] == pytest.approx(3.0)
    assert first["vs_kernel"] == pytest.approx(1.5)
    assert report["unavailable"] == {"microsocks": "not installed"}
    assert report["parameters"]["size"] == 1 << 20


def test_splice_drops_only_from_a_stack_summary() -> None:
    summary = {"splice": {"splices": 3, "drop.relay_syn": 4, "drop.other": 0}}
    assert splice_drops(summary) == {"relay_syn": 4}
    assert splice_drops({"accepted": 2}) == {} and splice_drops({"splice": None}) == {}


# -- transfer checks -------------------------------------------------------------------------
def test_parse_curl_body_and_counts() -> None:
    got = parse_curl("1048576\n\n0 1048576 0.25")
    assert (got.downloaded, got.uploaded, got.seconds) == (0, 1048576, 0.25)
    assert got.body.strip() == "1048576"
    for bad in ("", "1 2", "a b c", "1 2 0"):
        with pytest.raises(TransferError):
            parse_curl(bad)


def test_check_transfer_compares_every_count() -> None:
    size = 4096
    assert check_transfer("download", parse_curl(f"\n{size} 0 0.5"), size).size == size
    with pytest.raises(TransferError):
        check_transfer("download", parse_curl(f"\n{size - 1} 0 0.5"), size)
    assert check_transfer("upload", parse_curl(f"{size}\n\n7 {size} 0.5"), size).size == size
    with pytest.raises(TransferError, match="sink received"):
        check_transfer("upload", parse_curl(f"{size - 10}\n\n7 {size} 0.5"), size)
    with pytest.raises(TransferError, match="curl uploaded"):
        check_transfer("upload", parse_curl(f"{size}\n\n7 {size - 1} 0.5"), size)
    with pytest.raises(TransferError, match="not a count"):
        check_transfer("upload", parse_curl(f"oops\n\n7 {size} 0.5"), size)


def test_curl_argv_keeps_socks_on_and_the_environment_out() -> None:
    argv = curl_argv("ns", "http://198.19.0.1/x", ["--socks5", "198.18.0.2:1080"], 30.0,
                     upload=Path("/tmp/u"))
    assert "--noproxy" not in argv and "env" in argv and "-i" in argv
    assert argv[argv.index("-T") + 1] == "/tmp/u" and "Expect:" in argv
    assert "-T" not in curl_argv("ns", "http://a/b", [], 30.0)


def test_process_tree_cpu_counts_the_children_of_a_process() -> None:
    # A shell whose child burns CPU: the parent itself stays almost idle.
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass\n" \
           "time.sleep(30)"
    parent = subprocess.Popen(["sh", "-c", f"{sys.executable} -c '{burn}'; true"],
                              start_new_session=True)
    try:
        deadline = 100
        while process_tree_cpu(parent.pid) < 0.45 and deadline:
            deadline -= 1
            threading.Event().wait(0.1)   # polling a figure of another process
        assert process_tree_cpu(parent.pid) >= 0.45
        assert process_tree_cpu(os.getpid()) > 0
    finally:
        os.killpg(parent.pid, signal.SIGKILL)   # the shell and its child
        parent.wait()


def test_summary_and_json_line_parsing() -> None:
    assert parse_json_line('noise\n{"ok": 3}\n') == {"ok": 3}
    with pytest.raises(Exception, match="no JSON"):
        parse_json_line("nothing here")


def test_summary_from_log(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text('ready\nwarning: x\n{\n "splice": {"splices": 2}\n}\n')
    assert summary_from_log(log) == {"splice": {"splices": 2}}
    log.write_text("ready\n")
    assert summary_from_log(log) == {}


def test_microsocks_reported_missing_when_not_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert MicrosocksRoute().unavailable() == "not installed"


# -- SOCKS5 parsing --------------------------------------------------------------------------
def test_parse_greeting() -> None:
    assert uvsocks.parse_greeting(b"\x05") is None
    assert uvsocks.parse_greeting(b"\x05\x02\x00") is None
    assert uvsocks.parse_greeting(b"\x05\x02\x00\x02rest") == (4, frozenset({0, 2}))
    for bad in (b"\x04\x01\x00", b"\x05\x00"):
        with pytest.raises(uvsocks.SocksProtocolError):
            uvsocks.parse_greeting(bad)


def test_parse_request_address_types() -> None:
    v4 = b"\x05\x01\x00\x01\xc6\x13\x00\x01\x00\x50"
    assert uvsocks.parse_request(v4) == (10, uvsocks.Request(1, "198.19.0.1", 80))
    assert uvsocks.parse_request(v4[:9]) is None
    name = b"\x05\x01\x00\x03\x07example\x01\xbb"
    assert uvsocks.parse_request(name) == (len(name), uvsocks.Request(1, "example", 443))
    v6 = b"\x05\x01\x00\x04" + bytes(15) + b"\x01" + b"\x00\x16"
    assert uvsocks.parse_request(v6)[1].host == "::1"
    with pytest.raises(uvsocks.SocksProtocolError) as err:
        uvsocks.parse_request(b"\x05\x01\x00\x09\x00\x00")
    assert err.value.reply == uvsocks.REP_ADDRESS_TYPE_NOT_SUPPORTED
    for bad in (b"\x05\x01\x01\x01" + bytes(6), b"\x05\x01\x00\x03\x00\x00\x00",
                b"\x04\x01\x00\x01" + bytes(6), b"\x05\x01\x00\x03\x01\xff\x00\x00"):
        with pytest.raises(uvsocks.SocksProtocolError):
            uvsocks.parse_request(bad)


def test_encode_reply() -> None:
    assert uvsocks.encode_reply(0, ("10.0.0.1", 1080)) == b"\x05\x00\x00\x01\x0a\x00\x00\x01\x04\x38"
    assert uvsocks.encode_reply(5)[:4] == b"\x05\x05\x00\x01"
    assert uvsocks.encode_reply(0, ("::1", 1))[3] == uvsocks.ATYP_IPV6


def test_parse_listen() -> None:
    assert uvsocks.parse_listen("198.18.64.2:1080") == ("198.18.64.2", 1080)
    for bad in ("1080", "host:1080", "1.2.3.4:0", "1.2.3.4:70000", ":80"):
        with pytest.raises(ValueError):
            uvsocks.parse_listen(bad)


# -- the uvloop proxy on loopback ------------------------------------------------------------
async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _with_proxy(body, max_connections: int = 16):
    async with asyncio.timeout(STEP):
        echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
        proxy = uvsocks.SocksProxy(max_connections)
        server = await proxy.start("127.0.0.1", 0)
        try:
            paddr = server.sockets[0].getsockname()[:2]
            eaddr = echo.sockets[0].getsockname()[:2]
            return await body(paddr, eaddr, proxy)
        finally:
            server.close()
            echo.close()


def test_proxy_relays_both_ways_and_passes_the_half_close() -> None:
    payload = os.urandom(3 << 20)

    async def body(paddr, eaddr, proxy):
        reader, writer = await splice_load.socks_connect(paddr, eaddr)
        writer.write(payload)
        writer.write_eof()  # the echo server sees EOF only if the proxy passed the FIN on
        got = await reader.read(-1)
        writer.close()
        return got, proxy.counters

    got, counters = asyncio.run(_with_proxy(body))
    assert got == payload
    assert counters["connected"] == 1 and counters["relayed_bytes"] == 2 * len(payload)


@pytest.mark.parametrize("early", [b"early", os.urandom(1 << 20)])
def test_proxy_passes_bytes_sent_before_the_reply(early: bytes) -> None:
    async def body(paddr, eaddr, proxy):
        reader, writer = await asyncio.open_connection(*paddr)
        # Greeting, request and data in one write: more than a handshake's worth,
        # and for the large case more than the proxy buffers before pausing.
        writer.write(b"\x05\x01\x00" + splice_load.socks_request(*eaddr) + early)
        await reader.readexactly(2 + 10)
        got = await reader.readexactly(len(early))
        writer.close()
        return got

    assert asyncio.run(_with_proxy(body)) == early


def _raw_exchange(send: bytes, want: int):
    async def body(paddr, eaddr, proxy):
        reader, writer = await asyncio.open_connection(*paddr)
        writer.write(send)
        got = b""
        while len(got) < want and (chunk := await reader.read(want - len(got))):
            got += chunk
        rest = await reader.read(100)  # the proxy closes after a refusal
        writer.close()
        return got, rest, proxy.counters

    return asyncio.run(_with_proxy(body))


def test_proxy_refuses_other_commands_methods_and_versions() -> None:
    bind = b"\x05\x01\x00" + b"\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50"
    got, rest, _ = _raw_exchange(bind, 12)
    assert got[:2] == b"\x05\x00" and got[3] == uvsocks.REP_COMMAND_NOT_SUPPORTED and rest == b""
    got, rest, _ = _raw_exchange(b"\x05\x01\x02", 2)
    assert got == b"\x05\xff" and rest == b""
    got, rest, counters = _raw_exchange(b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00", 10)
    assert got == b"" and counters["failed"] == 1


def test_proxy_answers_refused_for_a_closed_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connect is refused
        got, _rest, _ = _raw_exchange(b"\x05\x01\x00" + splice_load.socks_request(
            "127.0.0.1", port), 12)
    assert got[:2] == b"\x05\x00" and got[3] == uvsocks.REP_CONNECTION_REFUSED


def test_proxy_table_is_bounded() -> None:
    async def body(paddr, eaddr, proxy):
        first = await splice_load.socks_connect(paddr, eaddr)
        reader, writer = await asyncio.open_connection(*paddr)
        writer.write(b"\x05\x01\x00")
        got = await reader.read(10)
        writer.close()
        first[1].close()
        return got, proxy.counters["over_limit"]

    assert asyncio.run(_with_proxy(body, max_connections=1)) == (b"", 1)


# -- load client and servers on loopback -----------------------------------------------------
def test_check_http_response() -> None:
    splice_load.check_http_response(b"HTTP/1.1 200 OK\r\nX: y\r\n\r\n" + bytes(5), 5)
    for bad in (b"HTTP/1.1 404 NF\r\n\r\n12345", b"HTTP/1.1 200 OK\r\n\r\n1234",
                b"HTTP/1.1 200 OK\r\n"):
        with pytest.raises(splice_load.LoadError):
            splice_load.check_http_response(bad, 5)


def test_rps_loop_through_the_proxy_counts_checked_requests() -> None:
    body_bytes = os.urandom(1024)

    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 1024\r\n\r\n" + body_bytes)
        await writer.drain()
        writer.close()

    async def main():
        async with asyncio.timeout(STEP):
            web = await asyncio.start_server(http, "127.0.0.1", 0)
            proxy = uvsocks.SocksProxy(64)
            server = await proxy.start("127.0.0.1", 0)
            try:
                return await splice_load.run_rps(
                    server.sockets[0].getsockname()[:2], web.sockets[0].getsockname()[:2],
                    "/x", 1024, concurrency=4, count=30, duration=STEP)
            finally:
                server.close()
                web.close()

    res = asyncio.run(main())
    assert (res.ok, res.errors) == (30, 0) and res.rps > 0


@pytest.fixture
def serving() -> Iterator:
    """Run a splice_servers loop on a loopback listener in a thread; stop it after."""
    threads: list[tuple[threading.Thread, threading.Event, socket.socket]] = []

    def start(kind: str, limit: int) -> tuple[tuple[str, int], Counter]:
        listener = socket.create_server(("127.0.0.1", 0))
        stop = threading.Event()
        counters: Counter[str] = Counter()
        fn = splice_servers.serve_sink if kind == "sink" else splice_servers.serve_hold
        t = threading.Thread(target=fn, args=(listener, stop, limit, counters), daemon=True)
        t.start()
        threads.append((t, stop, listener))
        return listener.getsockname(), counters

    yield start
    for t, stop, listener in threads:
        stop.set()
        t.join(timeout=STEP)
        listener.close()
        assert not t.is_alive()


def _http_upload(addr, body: bytes, length: int | None = None) -> bytes:
    with socket.create_connection(addr, timeout=STEP) as s:
        head = f"PUT /u HTTP/1.1\r\nHost: x\r\nContent-Length: {length or len(body)}\r\n\r\n"
        s.sendall(head.encode() + body)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return data


def test_sink_counts_the_body(serving) -> None:
    addr, counters = serving("sink", 4)
    reply = _http_upload(addr, bytes(5 << 20))
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"\r\n\r\n5242880\n")
    # A body that ends early is reported as what arrived, not as complete.
    assert _http_upload(addr, bytes(100), length=1000).endswith(b"\r\n\r\n100\n")
    with socket.create_connection(addr, timeout=STEP) as s:
        s.sendall(b"PUT /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400")


def test_request_head_parsing() -> None:
    assert splice_servers.parse_request_head(b"PUT / HTTP/1.1\r\ncontent-length: 12") == 12
    for bad in (b"garbage", b"PUT / HTTP/1.1", b"PUT / HTTP/1.1\r\nContent-Length: x",
                b"PUT / HTTP/1.1\r\nContent-Length: -1"):
        with pytest.raises(splice_servers.HttpRequestError):
            splice_servers.parse_request_head(bad)


def test_hold_keeps_up_to_its_limit(serving) -> None:
    addr, counters = serving("hold", 2)
    socks = [socket.create_connection(addr, timeout=STEP) for _ in range(3)]
    try:
        # The third is over the limit: the holder closes it, so recv sees EOF.
        assert socks[2].recv(10) == b""
        socks[0].settimeout(0.2)
        with pytest.raises(TimeoutError):
            socks[0].recv(10)  # still open and idle
    finally:
        for s in socks:
            s.close()
    assert counters["accepted"] == 3 and counters["over_limit"] == 1


# -- end to end ------------------------------------------------------------------------------
def bench_namespaces(pid: int) -> list[str]:
    """The network namespaces the bench process ``pid`` named (its labs' names carry it)."""
    names = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    return [n for n in names if n.startswith(f"tk{pid}-") or f"-{pid}-" in n]


def run_bench_cli(args: list[str], timeout: float) -> None:
    """Run `tapsplice bench ARGS` within ``timeout`` seconds: exit 0, no namespace left.

    On a timeout the command gets SIGTERM, so its finally blocks remove the labs.
    """
    argv = [sys.executable, "-m", "apps.cli", "bench", *args]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        text, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.communicate(timeout=60)
    assert proc.returncode == 0, text.decode(errors="replace")[-3000:]
    assert bench_namespaces(proc.pid) == []


@pytest.mark.lab
def test_bench_splice_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "splice.json"
    size, pairs = 8 << 20, 200
    run_bench_cli(["splice", "--quick", "--size", "8M", "--pairs", str(pairs),
                   "--rps-duration", "1", "--max-seconds", "120", "--json", str(out)],
                  timeout=150)
    report = json.loads(out.read_text())
    routes = {p["route"]: p for p in report["paths"] if p["direction"] == "download"}
    expected = set(ALL_ROUTES) - set(report["unavailable"])
    assert set(routes) == expected and {"splice", "copy", "kernel", "uvsocks"} <= expected
    for path in report["paths"]:
        assert path["median_gbit_per_s"] > 0
        assert path["samples"] and all(s["bytes"] == size for s in path["samples"])
    assert {p["direction"] for p in report["paths"]} == {"download", "upload"}
    for name in ("splice", "splice-workers", "uvsocks"):
        rps = report["rps"][name]
        assert rps["ok"] > 0 and rps["errors"] == 0 and rps["rps"] > 0
        assert rps["cpu_ms_per_request"] > 0   # the proxy's own CPU (its workers' too)
    mem = report["memory"]
    assert mem["pairs_held"] == pairs and mem["stack_splices"] >= pairs
    assert mem["rss_after_bytes"] > 0 and mem["bytes_per_pair"] is not None
    spliced = report["process_summaries"]["splice"]["splice"]
    assert spliced["splices"] >= 1 and spliced.get("copied_payload_bytes", 0) == 0
    workers = report["process_summaries"]["splice-workers"]
    assert workers["splice"]["splices"] >= 1 and len(workers["workers"]) == 2
