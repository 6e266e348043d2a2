"""`bench http`: options and plan, the client's response parsing (bad input -> a typed
error), the client against a loopback server, tables and figure from fake results,
and one lab smoke run."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from apps.cli import build_parser
from tests.test_bench_splice import run_bench_cli
from tools.bench.http import (
    QUICK,
    build_http_report,
    hits_table,
    plan_from_args,
    shared_table,
    sizes_table,
    tap_table,
)
from tools.bench.http_client import (
    Fetcher,
    HttpClientError,
    ObjectSpec,
    build_request,
    hit_paths,
    parse_args,
    parse_object,
    parse_response_head,
    run_object,
)
from tools.bench.http_plot import plot_sizes
from tools.bench.http_run import (
    BEHAVIOURS,
    HTTP_PATHS,
    ONE_CLIENT_ADDRESS,
    SHARED_PATHS,
    HitRun,
    HttpRunner,
    Series,
    make_http_routes,
    planned_steps,
)

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STEP = 20.0
SHA_ZERO = "0" * 64


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["bench", "http", *argv])


# -- options and plan ------------------------------------------------------------------------
def test_quick_plan_is_small_and_full_plan_has_every_size() -> None:
    quick = plan_from_args(_args("--quick"))
    assert quick.sizes == QUICK["sizes"] and quick.paths == list(HTTP_PATHS)
    assert quick.routes() == [*HTTP_PATHS, "splice-notap", *SHARED_PATHS]
    full = plan_from_args(_args())
    assert full.sizes == [1 << 10, 10 << 10, 100 << 10, 1 << 20, 10 << 20, 100 << 20]
    assert full.repeats == 30 and full.hit_concurrency == 64 and full.hit_count > 0
    # The tap's object must be storable under the proxy's default --max-object (8 MiB).
    assert 0 < full.tap_size < 8 << 20


def test_only_and_repeats_restrict_the_plan() -> None:
    plan = plan_from_args(_args("--only", "kernel", "--only", "copy", "--repeats", "7",
                                "--sizes", "4K", "1K", "4K"))
    assert plan.paths == ["kernel", "copy"] and plan.sizes == [1024, 4096]
    assert plan.repeats == 7 and plan.routes() == ["kernel", "copy"]  # no splice: no tap run
    assert [r.name for r in make_http_routes(plan.routes())] == ["kernel", "copy"]
    for bad in (["--only", "squid"], ["--repeats", "0"], ["--sizes", "0"]):
        with pytest.raises(SystemExit):
            _args(*bad)


def test_planned_steps_count_every_request_and_hit_run() -> None:
    plan = plan_from_args(_args("--quick", "--only", "splice"))
    # 2 behaviours x (3 + 1 checked) x 2 sizes; 1 hit run; tap: 2 routes x 2 x (2 + 1).
    assert planned_steps(plan) == 2 * 4 * 2 + 1 + 2 * 2 * 3
    kernel = plan_from_args(_args("--quick", "--only", "kernel"))
    assert planned_steps(kernel) == 2 * 4 * 2


def test_proxy_routes_pass_their_options() -> None:
    routes = {r.name: r for r in make_http_routes(["copy", "splice-min0", "splice-notap"])}
    assert routes["copy"].options == [*ONE_CLIENT_ADDRESS, "--mode", "copy"]
    assert routes["splice-min0"].options[-2:] == ["--splice-min", "0"]
    assert routes["splice-notap"].options[-2:] == ["--cache-size", "0"]
    assert routes["copy"].proxy(None) == ("198.18.0.2", 3128)


def test_shared_store_routes_get_a_cache_dir_each_and_two_workers(tmp_path: Path) -> None:
    class Lab:
        logdir = tmp_path

        def stack_argv(self, command: str, *extra: str) -> list[str]:
            return [command, *extra]

    one, two = (r._service(Lab()).argv for r in make_http_routes(list(SHARED_PATHS)))
    assert one[-2:] == ["--cache-dir", str(tmp_path / "cache-disk")] and "--workers" not in one
    assert two[-4:] == ["--workers", "2", "--cache-dir", str(tmp_path / "cache-disk-workers")]
    plan = plan_from_args(_args("--quick", "--only", "disk-workers"))
    assert plan.paths == [] and plan.routes() == ["disk-workers"] and plan.shared_keys > 1
    assert planned_steps(plan) == len(QUICK["hit_sizes"])


def test_hit_load_goes_round_its_keys() -> None:
    obj = ObjectSpec(10, "/o", 1, SHA_ZERO)
    assert hit_paths(obj, 1, "t") == ["/o"]
    assert hit_paths(obj, 3, "t") == ["/o?k=t-0", "/o?k=t-1", "/o?k=t-2"]


def test_shared_table_compares_workers_with_one_process() -> None:
    runs = [HitRun("disk", 1024, 4000, 4000, 0, 2.0, {}, True),
            HitRun("disk-workers", 1024, 6000, 5994, 0, 2.0, {}, True)]
    console = Console(record=True, width=220)
    console.print(shared_table(runs))
    text = console.export_text()
    assert "1.50x" in text and "99.9%" in text and "2 workers" in text


# -- the client's parsing --------------------------------------------------------------------
def test_parse_response_head_reads_length_persistence_and_age() -> None:
    head = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\nAge: 3")
    assert (head.length, head.keep_alive, head.from_cache) == (42, True, True)
    head = parse_response_head(b"HTTP/1.1 200 OK\r\ncontent-length:7\r\nConnection: Close")
    assert (head.length, head.keep_alive, head.from_cache) == (7, False, False)
    assert not parse_response_head(b"HTTP/1.0 200 OK\r\nContent-Length: 1").keep_alive
    assert parse_response_head(
        b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive").keep_alive
    # The same length twice is one length (RFC 9112 §6.3 allows the duplicate).
    assert parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
                               b"Content-Length: 5").length == 5


@pytest.mark.parametrize("head, match", [
    (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0", "status 404"),
    (b"HTTP/1.1 200 OK", "no Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6", "conflicting"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1", "bad Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1e3", "bad Content-Length"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked", "Transfer-Encoding"),
    (b"HTTP/1.1 200 OK\r\nno colon here", "bad header line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length : 5", "bad header line"),
    (b"SSH-2.0-OpenSSH", "bad status line"),
    (b"", "bad status line"),
    (b"HTTP/1.1 abc OK", "bad status line"),
])
def test_parse_response_head_rejects_bad_input(head: bytes, match: str) -> None:
    with pytest.raises(HttpClientError, match=match):
        parse_response_head(head)


def test_requests_are_absolute_form_for_the_proxy_only() -> None:
    proxied = build_request(("198.19.0.1", 80), "/a.bin?r=x-1", True, True)
    assert proxied.startswith(b"GET http://198.19.0.1/a.bin?r=x-1 HTTP/1.1\r\n")
    assert b"Host: 198.19.0.1\r\n" in proxied and b"Connection: keep-alive" in proxied
    direct = build_request(("198.19.0.1", 8080), "/a.bin", False, False)
    assert direct.startswith(b"GET /a.bin HTTP/1.1\r\nHost: 198.19.0.1:8080\r\n")
    assert direct.endswith(b"Connection: close\r\n\r\n")


def test_every_request_has_a_unique_query() -> None:
    f = Fetcher(("198.19.0.1", 80), ("198.18.0.2", 3128), True, "ab12", 1.0)
    first, second = f.request("/x"), f.request("/x")
    assert first != second and b"?r=ab12-1 " in first and b"?r=ab12-2 " in second
    assert b"?" not in f.request("/x", unique=False).split(b" ")[1]


def test_client_options_are_bounded() -> None:
    spec = parse_object(f"1024:/obj.bin:5:{'A' * 64}")
    assert spec == ObjectSpec(1024, "/obj.bin", 5, "a" * 64)
    for bad in ("1024:/x:5", f"1024:x:5:{SHA_ZERO}", f"1024:/x:0:{SHA_ZERO}",
                "1024:/x:5:abc", f"x:/x:1:{SHA_ZERO}", f"1:/x?q:1:{SHA_ZERO}"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_object(bad)
    obj = f"1:/x:1:{SHA_ZERO}"
    for bad in (["sizes", "--dest", "127.0.0.1:80"],  # no object
                ["hits", "--dest", "127.0.0.1:80", "--object", obj],  # hits without a proxy
                ["sizes", "--dest", "127.0.0.1:80", "--object", obj, "--tag", "a-b"],
                ["sizes", "--dest", "127.0.0.1:80", "--object", obj, "--concurrency", "0"],
                ["sizes", "--dest", "127.0.0.1:80", "--object", obj, "--seconds", "nan"]):
        with pytest.raises(SystemExit):
            parse_args(bad)


# -- the client against a loopback server ----------------------------------------------------
BODY = bytes(range(256)) * 400
BODY_SHA = hashlib.sha256(BODY).hexdigest()


class Origin:
    """Keep-alive HTTP/1.1 on loopback: /ok sends BODY, /short less than it says."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[bytes] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head)
                target = head.split(b" ")[1]
                close = b"Connection: close" in head
                extra = b"Connection: close\r\n" if close else b""
                if target.startswith(b"/cached"):
                    writer.write(b"HTTP/1.1 200 OK\r\nAge: 5\r\nContent-Length: %d\r\n\r\n"
                                 % len(BODY) + BODY)
                elif target.startswith(b"/short"):
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY)
                                 + BODY[:10])
                    close = True
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n"
                                 % (len(BODY), extra) + BODY)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
def origin() -> Iterator[tuple[Origin, tuple[str, int]]]:
    """The loopback origin in a thread's event loop, and its address."""
    loop = asyncio.new_event_loop()
    server = Origin()
    addrs: list[tuple[str, int]] = []

    servers: list[asyncio.Server] = []

    async def start() -> None:
        servers.append(await asyncio.start_server(server.serve, "127.0.0.1", 0))
        addrs.append(servers[0].sockets[0].getsockname()[:2])

    async def shutdown() -> None:
        servers[0].close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=STEP)
    yield server, addrs[0]
    asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=STEP)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=STEP)
    assert not thread.is_alive()


def _objects(f: Fetcher, *objects: ObjectSpec) -> None:
    """Run ``objects`` in turn on one event loop, then drop the connection on it."""
    async def go() -> None:
        try:
            for obj in objects:
                await run_object(f, obj, 1e18)
        finally:
            f.drop()
    asyncio.run(go())


def _lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.mark.parametrize("keep_alive, connections", [(True, 1), (False, 4)])
def test_one_connection_per_object_when_kept_alive(origin, capsys, keep_alive: bool,
                                                   connections: int) -> None:
    server, addr = origin
    f = Fetcher(addr, None, keep_alive, "t1", STEP)
    _objects(f, ObjectSpec(len(BODY), "/ok", 3, BODY_SHA))
    lines = _lines(capsys)
    assert lines[0] == {"kind": "verified", "size": len(BODY), "ok": True}
    assert [line["kind"] for line in lines[1:]] == ["sample"] * 3
    assert all(0 < float(line["seconds"]) < STEP for line in lines[1:])
    assert server.connections == connections
    targets = [h.split(b" ")[1] for h in server.requests]
    assert targets == [b"/ok?r=t1-%d" % i for i in range(1, 5)]  # origin-form, all unique


def test_wrong_hash_and_short_body_are_reported(origin, capsys) -> None:
    server, addr = origin
    f = Fetcher(addr, None, True, "t2", STEP)
    _objects(f, ObjectSpec(len(BODY), "/ok", 1, SHA_ZERO),
             ObjectSpec(len(BODY), "/short", 2, BODY_SHA),
             ObjectSpec(len(BODY) - 1, "/ok", 1, BODY_SHA),
             ObjectSpec(len(BODY), "/cached", 1, BODY_SHA))
    lines = _lines(capsys)
    assert lines[0]["kind"] == "verified" and lines[0]["ok"] is False
    assert lines[1]["kind"] == "sample"
    assert [line["kind"] for line in lines[2:5]] == ["error"] * 3
    assert "closed after 10 of" in str(lines[2]["error"])
    assert all("Content-Length" in str(line["error"]) for line in lines[5:7])
    # A hit where a miss was asked for is not a sample.
    assert lines[7:] == [{"kind": "verified", "size": len(BODY), "ok": True},
                         {"kind": "error", "size": len(BODY),
                          "error": "served from the cache (Age)"}]


def test_client_process_prints_samples_then_done(origin) -> None:
    _server, addr = origin
    argv = [sys.executable, "-m", "tools.bench.http_client", "sizes",
            "--dest", f"{addr[0]}:{addr[1]}", "--behaviour", "close",
            "--object", f"{len(BODY)}:/ok:2:{BODY_SHA}", "--tag", "p1"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, timeout=60)
    kinds = [json.loads(line)["kind"] for line in done.stdout.splitlines()]
    assert kinds == ["verified", "sample", "sample", "done"], done.stderr


# -- tables, report and figure from fake results ---------------------------------------------
def _fake_runner() -> HttpRunner:
    runner = HttpRunner(plan_from_args(_args("--quick")))
    for k, path in enumerate(HTTP_PATHS):
        for behaviour in BEHAVIOURS:
            for size in QUICK["sizes"]:
                s = Series("sizes", path, behaviour, size, verified=True)
                base = size / 1e9 * (k + 1) + 1e-4
                s.samples.extend(base * f for f in (0.9, 1.0, 1.2))
                runner.series.append(s)
    tap = Series("tap", "splice", "keep-alive", 8_000_000, [0.016, 0.032, 0.064], verified=True)
    runner.series.append(tap)
    runner.series.append(Series("tap", "splice-notap", "close", 8_000_000, [], errors=2))
    runner.hits.append(HitRun("copy", 1024, 3000, 3000, 0, 1.5, {}))
    return runner


def test_series_reduce_to_time_and_rate() -> None:
    s = Series("tap", "splice", "close", 1_000_000, [0.004, 0.001, 0.002])
    st = s.stats()
    assert st is not None and (st.median, st.min, st.max) == (0.002, 0.001, 0.004)
    rate = s.gbit()
    assert rate is not None and rate.median == pytest.approx(4.0)
    assert (rate.min, rate.max) == (pytest.approx(2.0), pytest.approx(8.0))
    assert Series("tap", "splice", "close", 1).gbit() is None
    assert HitRun("copy", 1, 10, 9, 0, 2.0, {}).rps == 5.0
    assert HitRun("copy", 1, 10, 9, 0, 0.0, {}).rps == 0.0


def test_tables_show_every_series_and_failures() -> None:
    runner = _fake_runner()
    console = Console(record=True, width=220)
    console.print(sizes_table(runner.series, QUICK["sizes"]))
    console.print(hits_table(runner.hits))
    console.print(tap_table(runner.series))
    text = console.export_text()
    assert text.count("keep-alive") >= len(HTTP_PATHS) and "--splice-min 0" in text
    assert "0.10 [0.09-0.12]" in text  # kernel, 1 KiB, ms
    assert "2,000" in text  # hits per second
    assert "2 failed" in text and "(no tap)" in text
    assert "2.00 [1.00-4.00]" in text  # 8 MB in 16..64 ms, Gbit/s


def test_report_has_every_sample_and_path(tmp_path: Path) -> None:
    runner = _fake_runner()
    report = json.loads(json.dumps(build_http_report(runner.plan, runner, ["bench", "http"],
                                                     {"sizes": "x.png"})))
    assert report["benchmark"] == "http" and report["machine"]["nproc"]
    assert [p["name"] for p in report["paths"]] == [*HTTP_PATHS, "splice-notap"]
    first = report["series"][0]
    assert len(first["samples_seconds"]) == 3 and first["sha256_verified"] is True
    assert report["hits"][0]["rps"] == 2000.0
    png = plot_sizes(runner.series, tmp_path / "d" / "sizes.png")
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    assert plot_sizes([], tmp_path / "empty.png").read_bytes().startswith(PNG_MAGIC)


# -- end to end ------------------------------------------------------------------------------
@pytest.mark.lab
def test_bench_http_quick_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "http.json"
    run_bench_cli(["http", "--quick", "--max-seconds", "110", "--json", str(out),
                   "--plots", str(tmp_path)], timeout=140)
    report = json.loads(out.read_text())
    sizes = [s for s in report["series"] if s["experiment"] == "sizes"]
    got = {(s["path"], s["behaviour"], s["size_bytes"]) for s in sizes}
    assert got == {(p, b, z) for p in HTTP_PATHS for b in BEHAVIOURS for z in QUICK["sizes"]}
    tap = {(s["path"], s["behaviour"]) for s in report["series"] if s["experiment"] == "tap"}
    assert tap == {(p, b) for p in ("splice", "splice-notap") for b in BEHAVIOURS}
    for s in report["series"]:
        assert s["errors"] == 0 and s["sha256_verified"] is True, s
        assert s["samples_seconds"] and min(s["samples_seconds"]) > 0
    assert {h["path"] for h in report["hits"]} == {"copy", "splice", *SHARED_PATHS}
    assert all(h["ok"] > 0 and h["hits"] == h["ok"] and h["errors"] == 0
               for h in report["hits"])
    # The proxy spliced: both ways for "close", one way for kept-alive bodies.
    spliced = report["proxy_counters"]["splice"]["splice"]
    assert spliced["splices"] > 0 and spliced["oneway_done"] > 0
    assert "splice" not in report["proxy_counters"]["copy"] or \
        not report["proxy_counters"]["copy"]["splice"]
    assert Path(report["plots"]["sizes"]).read_bytes().startswith(PNG_MAGIC)
