"""`bench thesis`: options, statistics, result shaping, the client on loopback, the
JSON-line reader, the figures from fake results, and one lab smoke run."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from apps.cli import build_parser
from tests.test_bench_splice import run_bench_cli
from tools.bench import args as argtypes
from tools.bench import thesis_run
from tools.bench.common_report import measure_or_report
from tools.bench.common_run import LabRunner, count_error
from tools.bench.harness import BenchTimeout
from tools.bench.proc import CommandError, read_json_lines, run_json_client, signals_deferred
from tools.bench.splice_load import LoadError
from tools.bench.splice_paths import HTTP_PORT
from tools.bench.thesis import (
    FULL,
    QUICK,
    build_thesis_report,
    load_table,
    output_paths,
    plan_from_args,
    sizes_table,
)
from tools.bench.thesis_client import (
    fetch,
    load_run,
    parse_args,
    parse_head,
    parse_level,
    parse_object,
)
from tools.bench.thesis_plot import plot_load, plot_sizes
from tools.bench.thesis_results import (
    LoadLevel,
    LoadRun,
    PathOutcome,
    SizePoint,
    Timing,
    latency_summary,
    load_run_from_json,
    mean,
    p99,
    path_record,
    percentile,
    timing_from_json,
)
from tools.bench.thesis_run import (
    THESIS_PATHS,
    DanteRoute,
    dante_conf,
    planned_steps,
    repeats_for,
)

REPO = Path(__file__).resolve().parents[1]
STEP = 10.0  # bound on every loopback exchange
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _args(*argv: str):
    return build_parser().parse_args(["bench", "thesis", *argv])


# -- options ---------------------------------------------------------------------------------
def test_defaults_are_the_full_run() -> None:
    plan = plan_from_args(_args())
    assert plan.paths == list(THESIS_PATHS)
    assert plan.sizes == FULL["sizes"] and plan.levels == [1, 16, 64, 256]
    assert plan.repeats == 50 and plan.load_repeats == 3 and plan.load_size == 100 << 10


def test_quick_changes_defaults_but_explicit_values_win() -> None:
    quick = plan_from_args(_args("--quick"))
    assert quick.sizes == QUICK["sizes"] and quick.levels == QUICK["levels"]
    assert quick.repeats == QUICK["repeats"]
    plan = plan_from_args(_args("--quick", "--repeats", "7", "--sizes", "10K", "1K", "1K",
                                "--levels", "64", "2", "--load-seconds", "0.5"))
    assert plan.repeats == 7 and plan.sizes == [1024, 10240] and plan.levels == [2, 64]
    assert plan.load_seconds == 0.5 and plan.load_repeats == 1


def test_repeats_bound_the_load_runs() -> None:
    assert plan_from_args(_args("--repeats", "2")).load_repeats == 2


def test_only_keeps_the_canonical_order() -> None:
    plan = plan_from_args(_args("--only", "dante", "--only", "kernel"))
    assert plan.paths == ["kernel", "dante"]


@pytest.mark.parametrize("argv", [
    ["--only", "squid"], ["--repeats", "0"], ["--repeats", "101"], ["--sizes", "0"],
    ["--sizes", "2G"], ["--levels", "0"], ["--levels", "5000"], ["--load-seconds", "-1"],
    ["--warmup", "11"],
])
def test_bad_options_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        _args(*argv)


def test_output_paths_share_one_timestamp(tmp_path: Path) -> None:
    import datetime as dt

    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    js, sizes, load = output_paths(_args("--plots", str(tmp_path)), when)
    assert js == Path("results/bench-thesis-20260102T030405Z.json")
    assert sizes == tmp_path / "bench-thesis-20260102T030405Z-sizes.png"
    assert load == tmp_path / "bench-thesis-20260102T030405Z-load.png"


def test_repeats_per_size_and_planned_steps() -> None:
    assert repeats_for(1 << 20, 50) == 50 and repeats_for((1 << 20) + 1, 50) == 3
    assert repeats_for(100 << 20, 2) == 2
    plan = plan_from_args(_args("--sizes", "1K", "10M", "--levels", "1", "16",
                                "--repeats", "10", "--only", "kernel", "--only", "splice"))
    assert planned_steps(plan) == 2 * (10 + 3 + 2 * 3)


# -- statistics ------------------------------------------------------------------------------
def test_mean_and_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(100, 0, -1)]
    assert mean(values) == 50.5
    assert p99(values) == 99.0 and percentile(values, 100) == 100.0
    assert percentile(values, 50) == 50.0 and percentile([3.0], 99) == 3.0
    assert p99([float(v) for v in range(1, 1001)]) == 990.0
    # p99 of a small sample is its largest value: one slow request shows.
    assert p99([1.0] * 20 + [9.0]) == 9.0


@pytest.mark.parametrize("call", [lambda: mean([]), lambda: p99([]),
                                  lambda: percentile([1.0], 0), lambda: percentile([1.0], 101)])
def test_statistics_reject_empty_input_and_bad_ranks(call) -> None:
    with pytest.raises(ValueError):
        call()


def test_latency_summary() -> None:
    s = latency_summary([0.3, 0.1, 0.2])
    assert s == {"n": 3, "mean": pytest.approx(0.2), "median": 0.2, "p99": 0.3, "min": 0.1,
                 "max": 0.3}
    assert latency_summary([]) == {"n": 0}


# -- result shaping --------------------------------------------------------------------------
def _run(c: int, ok: int, seconds: float, mean_s: float, p99_s: float, errors: int = 0) -> LoadRun:
    total = latency_summary([mean_s]) | {"mean": mean_s, "p99": p99_s} if ok else {"n": 0}
    return LoadRun(c, ok, errors, seconds, total, total)


def test_size_point_reduces_each_metric() -> None:
    point = SizePoint(1024, [Timing(1.0, 3.0, 4.0), Timing(2.0, 1.0, 3.0), Timing(0.5, 2.0, 2.5)])
    st = point.stats("response")
    assert (st.median, st.min, st.max) == (2.0, 1.0, 3.0)
    assert point.stats("connect").median == 1.0 and point.stats("total").max == 4.0
    assert SizePoint(1).stats() is None
    with pytest.raises(ValueError):
        point.stats("latency")


def test_load_level_reduces_runs_and_skips_empty_ones() -> None:
    level = LoadLevel(16, [_run(16, 100, 2.0, 0.010, 0.030), _run(16, 300, 2.0, 0.020, 0.050),
                           _run(16, 200, 2.0, 0.015, 0.040), _run(16, 0, 2.0, 0, 0, errors=7)])
    rps = level.stats("rps")
    assert (rps.median, rps.min, rps.max) == (100.0, 50.0, 150.0)
    assert level.stats("mean").median == 0.015 and level.stats("p99").max == 0.050
    assert level.errors == 7
    assert LoadLevel(1, [_run(1, 0, 1.0, 0, 0, errors=3)]).stats("mean") is None
    with pytest.raises(ValueError):
        level.stats("median")


def test_path_record_is_json_with_every_sample_and_run() -> None:
    o = PathOutcome("splice", "stack socks splice")
    o.size_point(1024).samples.append(Timing(0.001, 0.002, 0.003))
    o.size_point(1024).errors = 1
    o.level(4).runs.append(_run(4, 10, 1.0, 0.01, 0.02))
    rec = json.loads(json.dumps(path_record(o)))
    assert rec["sizes"][0]["samples"] == [{"connect": 0.001, "response": 0.002, "total": 0.003}]
    assert rec["sizes"][0]["response_seconds"] == {"median": 0.002, "min": 0.002, "max": 0.002}
    assert rec["sizes"][0]["errors"] == 1
    assert rec["load"][0]["rps"]["median"] == 10.0 and len(rec["load"][0]["runs"]) == 1


def test_client_records_are_checked() -> None:
    assert timing_from_json({"connect": 0, "response": 1, "total": 1}) == Timing(0, 1, 1)
    for bad in ({"connect": 0, "response": 1}, {"connect": -1, "response": 1, "total": 1},
                {"connect": "x", "response": 1, "total": 1}):
        with pytest.raises(ValueError):
            timing_from_json(bad)
    run = load_run_from_json(8, {"ok": 5, "errors": 1, "seconds": 0.5, "total": {"n": 5},
                                 "response": {"n": 5}})
    assert run.concurrency == 8 and run.rps == 10.0
    with pytest.raises(ValueError):
        load_run_from_json(8, {"ok": 5})


def _fake_outcomes() -> list[PathOutcome]:
    outcomes = []
    for k, name in enumerate(("kernel", "splice")):
        o = PathOutcome(name, name)
        for size in (1024, 1 << 20, 100 << 20):
            base = size / 1e9 * (k + 1) + 1e-4
            o.size_point(size).samples.extend(
                Timing(1e-4, base * f, base * f + 1e-4) for f in (0.9, 1.0, 1.2))
        for c in (1, 16, 256):
            o.level(c).runs.extend(_run(c, 100 * c, 1.0, 1e-3 * c, 2e-3 * c) for _ in range(2))
        outcomes.append(o)
    outcomes.append(PathOutcome("dante", "dante", unavailable="not installed"))
    return outcomes


def test_tables_show_every_path_and_why_one_is_missing() -> None:
    outcomes = _fake_outcomes()
    console = Console(record=True, width=200)
    console.print(sizes_table(outcomes, [1024, 1 << 20, 100 << 20, 5]))
    console.print(load_table(outcomes, 100 << 10))
    text = console.export_text()
    assert "not installed" in text and "[min-max]" in text
    assert "0.10 [0.09-0.12]" in text  # kernel, 1 KiB, in ms
    assert "25,600" in text  # kernel at 256 clients, req/s


# -- figures ---------------------------------------------------------------------------------
def test_plot_writer_makes_png_files(tmp_path: Path) -> None:
    outcomes = _fake_outcomes()
    sizes = plot_sizes(outcomes, tmp_path / "a" / "sizes.png")
    load = plot_load(outcomes, tmp_path / "load.png", 100 << 10)
    for png in (sizes, load):
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_plot_writer_copes_with_no_results(tmp_path: Path) -> None:
    only_missing = [PathOutcome("dante", "dante", unavailable="not installed")]
    assert plot_sizes(only_missing, tmp_path / "s.png").read_bytes().startswith(PNG_MAGIC)
    assert plot_load(only_missing, tmp_path / "l.png", 1024).read_bytes().startswith(PNG_MAGIC)


def test_report_has_machine_versions_and_both_experiments() -> None:
    plan = plan_from_args(_args("--quick"))
    report = build_thesis_report(plan, _fake_outcomes(), ["bench", "thesis"], {"sizes": "x.png"})
    report = json.loads(json.dumps(report))
    assert report["benchmark"] == "thesis" and report["machine"]["nproc"]
    assert "python" in report["versions"] and "dante" in report["versions"]
    assert [p["name"] for p in report["paths"]] == ["kernel", "splice", "dante"]
    assert report["paths"][2]["unavailable"] == "not installed"
    assert report["parameters"]["sizes"] == QUICK["sizes"] and report["plots"]["sizes"] == "x.png"


# -- Dante ------------------------------------------------------------------------------------
def test_dante_missing_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(thesis_run, "DANTED", str(tmp_path / "danted"))
    assert DanteRoute().unavailable() == "not installed"
    assert thesis_run.tool_paths()["danted"] is None
    (tmp_path / "danted").write_text("")
    assert DanteRoute().unavailable() is None


def test_dante_conf_allows_connect_only_without_authentication() -> None:
    conf = dante_conf("198.18.64.2", "198.19.64.2")
    assert "internal: 198.18.64.2 port = 1080" in conf and "external: 198.19.64.2" in conf
    assert "socksmethod: none" in conf and "command: connect }" in conf


# -- the client on loopback ------------------------------------------------------------------
BODY = 200_000


async def _http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """/ok: BODY bytes; /short: says BODY, sends less and closes; others: 404."""
    head = await reader.readuntil(b"\r\n\r\n")
    path = head.split(b" ")[1]
    if path == b"/ok":
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % BODY + bytes(BODY))
    elif path == b"/short":
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % BODY + bytes(10))
    else:
        writer.write(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    await writer.drain()
    writer.close()


@pytest.fixture
def loopback() -> Iterator[tuple[tuple[str, int], tuple[str, int]]]:
    """An HTTP server and the uvloop SOCKS5 proxy on loopback, in a thread's event loop."""
    from tools.bench import uvsocks

    loop = asyncio.new_event_loop()
    started = threading.Event()
    addrs: list[tuple[str, int]] = []

    async def serve() -> None:
        web = await asyncio.start_server(_http, "127.0.0.1", 0)
        proxy = await uvsocks.SocksProxy(64).start("127.0.0.1", 0)
        addrs.extend([web.sockets[0].getsockname()[:2], proxy.sockets[0].getsockname()[:2]])
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop).result(timeout=STEP)
    assert started.is_set()
    yield addrs[0], addrs[1]
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=STEP)
    assert not thread.is_alive()


def test_parse_head() -> None:
    assert parse_head(b"HTTP/1.1 200 OK\r\nServer: x\r\ncontent-length: 42") == 42
    for bad in (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0", b"HTTP/1.1 200 OK",
                b"HTTP/1.1 200 OK\r\nContent-Length: x", b"HTTP/1.1 200 OK\r\nContent-Length: -1",
                b"garbage"):
        with pytest.raises(LoadError):
            parse_head(bad)


def test_client_options_are_bounded() -> None:
    assert parse_object("1024:/obj-1024.bin:50").repeats == 50
    assert parse_level("256:20000:3") == (256, 20000, 3.0)
    for bad in ("1024:obj:5", "1024:/x", "1024:/x:0", "x:/x:1"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_object(bad)
    for bad in ("0:10:1", "2000:10:1", "4:0:1", "4:10:0", "4:10"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_level(bad)
    with pytest.raises(SystemExit):
        parse_args(["sizes", "--dest", "127.0.0.1:80"])  # no object
    with pytest.raises(SystemExit):
        parse_args(["load", "--dest", "127.0.0.1:80", "--level", "1:1:1", "--repeats", "0"])


def test_fetch_direct_and_through_socks_times_a_checked_body(loopback) -> None:
    web, proxy = loopback
    buf = memoryview(bytearray(1 << 16))
    for via in (None, proxy):
        connect, response, total = fetch(web, via, "/ok", BODY, STEP, buf)
        assert 0 <= connect <= total and 0 < response <= total
        assert total == pytest.approx(connect + response)
    with pytest.raises(LoadError, match="Content-Length"):
        fetch(web, None, "/ok", BODY - 1, STEP, buf)
    with pytest.raises(LoadError, match="closed after 10"):
        fetch(web, proxy, "/short", BODY, STEP, buf)
    with pytest.raises(LoadError, match="status"):
        fetch(web, None, "/missing", 0, STEP, buf)


def test_load_run_counts_checked_requests_and_errors(loopback) -> None:
    web, proxy = loopback
    ok = asyncio.run(load_run(web, proxy, "/ok", BODY, 4, 40, STEP, STEP))
    assert (ok["ok"], ok["errors"]) == (40, 0)
    assert ok["total"]["n"] == 40 and ok["total"]["p99"] >= ok["total"]["mean"] > 0
    assert ok["response"]["max"] <= ok["total"]["max"]
    bad = asyncio.run(load_run(web, None, "/short", BODY, 2, 6, STEP, STEP))
    assert (bad["ok"], bad["errors"]) == (0, 6) and bad["total"] == {"n": 0}


def test_sizes_mode_prints_samples_then_done(loopback) -> None:
    web, proxy = loopback
    argv = [sys.executable, "-m", "tools.bench.thesis_client", "sizes",
            "--dest", f"{web[0]}:{web[1]}", "--proxy", f"{proxy[0]}:{proxy[1]}",
            "--object", f"{BODY}:/ok:3", "--object", f"{BODY}:/short:2", "--warmup", "1"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, timeout=60)
    kinds = [json.loads(line)["kind"] for line in done.stdout.splitlines()]
    # 3 counted samples (the warm-up is not printed), 3 failures (warm-up included), done.
    assert kinds == ["sample"] * 3 + ["error"] * 3 + ["done"], done.stderr


# -- reading the client's lines --------------------------------------------------------------
def _printer(script: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)


def test_read_json_lines_skips_noise_and_splits_partial_writes() -> None:
    script = ("import sys\nw=sys.stdout.write\nw('{\"a\": 1}\\nnoise\\n[1]\\n{\"b\"')\n"
              "sys.stdout.flush()\nw(': 2}\\n{\"c\": 3}')\n")
    proc = _printer(script)
    try:
        got = list(read_json_lines(proc, deadline=1e18))
    finally:
        proc.wait(timeout=STEP)
    assert got == [{"a": 1}, {"b": 2}, {"c": 3}]


def test_read_json_lines_stops_at_the_deadline() -> None:
    proc = _printer("import sys; sys.stdin.read()")
    try:
        with pytest.raises(BenchTimeout):
            next(read_json_lines(proc, deadline=0.0, clock=lambda: 1.0))
    finally:
        proc.kill()
        proc.wait(timeout=STEP)


def test_signals_are_deferred_to_the_end_of_the_block() -> None:
    from tools.bench.proc import sigterm_as_interrupt as _sigterm_as_interrupt

    steps = []
    with _sigterm_as_interrupt():
        with pytest.raises(KeyboardInterrupt):
            with signals_deferred():
                signal.raise_signal(signal.SIGTERM)
                steps.append("teardown finished")
        steps.append("interrupted after")
    assert steps == ["teardown finished", "interrupted after"]
    with _sigterm_as_interrupt():
        with signals_deferred():
            steps.append("no signal")  # nothing pending: nothing raised


def test_json_client_feeds_lines_until_done_and_ignores_what_follows() -> None:
    script = ("import sys\nw=sys.stdout.write\nw('{\"kind\": \"sample\", \"n\": 1}\\n')\n"
              "w('{\"kind\": \"done\"}\\n{\"kind\": \"sample\", \"n\": 2}\\n')\n")
    got: list[dict[str, object]] = []
    run_json_client([sys.executable, "-c", script], got.append, 1e18, lambda: 0.0,
                    "the test client", "a step")
    assert got == [{"kind": "sample", "n": 1}]


def test_json_client_without_done_is_a_command_error_naming_it() -> None:
    script = "import sys; sys.stdout.write('{\"kind\": \"x\"}\\n'); sys.exit(3)"
    got: list[dict[str, object]] = []
    with pytest.raises(CommandError, match="the test client stopped early during a step"):
        run_json_client([sys.executable, "-c", script], got.append, 1e18, lambda: 0.0,
                        "the test client", "a step")
    assert got == [{"kind": "x"}]


def test_json_client_past_the_deadline_is_stopped() -> None:
    with pytest.raises(BenchTimeout, match="the slow client overran"):
        run_json_client([sys.executable, "-c", "import time; time.sleep(60)"], print, 0.0,
                        lambda: 1.0, "the slow client", "a step")


def test_count_error_counts_in_all_and_by_text() -> None:
    point = SizePoint(1024)
    for obj in ({"error": "reset"}, {"error": "reset"}, {}):
        count_error(point, obj)
    assert point.errors == 3 and point.error_kinds == {"reset": 2, "?": 1}


def test_measure_or_report_turns_run_failures_into_none() -> None:
    console = Console(record=True, width=120)
    assert measure_or_report(console, "x", lambda: 7) == 7

    def fails() -> int:
        raise CommandError("ip: exit 1")

    assert measure_or_report(console, "x", fails) is None
    assert "bench x failed: ip: exit 1" in console.export_text()

    def bug() -> int:
        raise ValueError("not a run failure")

    with pytest.raises(ValueError):
        measure_or_report(console, "x", bug)


def test_lab_runner_deadline_and_client_argv() -> None:
    now = [0.0]
    runner = LabRunner(10.0, clock=lambda: now[0])
    assert runner.left("setup") == 10.0
    now[0] = 10.0
    with pytest.raises(BenchTimeout, match="deadline of 10s passed during load"):
        runner.left("load")

    class Lab:
        server_ip = "198.18.1.2"

    class Direct:
        def proxy(self, lab: object) -> None:
            return None

    class Socks(Direct):
        def proxy(self, lab: object) -> tuple[str, int]:
            return ("198.18.0.2", 1080)

    base = ["sizes", "--dest", f"198.18.1.2:{HTTP_PORT}", "--tag", "t"]
    assert runner.base_argv(Lab(), Direct(), "sizes", "--tag", "t") == base
    assert runner.base_argv(Lab(), Socks(), "sizes", "--tag", "t") == [
        *base, "--proxy", "198.18.0.2:1080"]


def test_size_up_to_reads_units_and_keeps_the_limit() -> None:
    parse = argtypes.size_up_to(1 << 30)
    assert parse("64M") == 64 << 20 and parse("1G") == 1 << 30
    with pytest.raises(argparse.ArgumentTypeError, match="at most"):
        parse("2G")


# -- end to end ------------------------------------------------------------------------------
@pytest.mark.lab
def test_bench_thesis_quick_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "thesis.json"
    run_bench_cli(["thesis", "--quick", "--only", "kernel", "--only", "splice",
                   "--levels", "1", "4", "--max-seconds", "90", "--json", str(out),
                   "--plots", str(tmp_path)], timeout=120)
    report = json.loads(out.read_text())
    paths = {p["name"]: p for p in report["paths"]}
    assert set(paths) == {"kernel", "splice"}
    for p in paths.values():
        assert [s["size_bytes"] for s in p["sizes"]] == QUICK["sizes"]
        for s in p["sizes"]:
            assert len(s["samples"]) == QUICK["repeats"] and s["errors"] == 0
            assert s["response_seconds"]["median"] > 0
        assert [lv["concurrency"] for lv in p["load"]] == [1, 4]
        assert all(lv["errors"] == 0 and lv["rps"]["median"] > 0 for lv in p["load"])
    for png in report["plots"].values():
        assert Path(png).read_bytes().startswith(PNG_MAGIC)
    assert set(report["plots"]) == {"sizes", "load"}
