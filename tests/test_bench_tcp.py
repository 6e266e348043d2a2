"""`tapsplice bench tcp`: options, plan, statistics, result shaping, the runner's
sequencing and checks with fake sides, the client's and server's pure parts; and
one lab smoke run end to end."""

from __future__ import annotations

import json
import os
import socket
import threading
from typing import Any

import pytest
from rich.console import Console

from apps.cli import build_parser
from apps.labproc import CommandError, TransferError
from tools.bench import tcp_client, tcp_server
from tools.bench.harness import BenchTimeout
from tools.bench.tcp import (
    DEFAULT_HOLD,
    DEFAULT_LOSS_SIZE,
    DEFAULT_SIZE,
    DEFAULT_TIME_WAIT,
    EXPERIMENTS,
    QUICK,
    Experiment,
    Plan,
    Runner,
    Series,
    build_tcp_report,
    experiment_table,
    mb_per_s,
    resolve_plan,
    select_experiments,
)
from tools.bench.tcp_labs import (
    LinePump,
    LineReader,
    _split,
    client_argv,
    parse_report,
    parse_vmrss,
)


def plan_of(*argv: str) -> Plan:
    args = build_parser().parse_args(["bench", "tcp", *argv])
    assert args.func.__name__ == "cmd_tcp"
    return resolve_plan(args)


# -- options and plan ----------------------------------------------------------
def test_defaults_are_the_full_benchmark() -> None:
    plan = plan_of()
    assert plan.experiments == tuple(EXPERIMENTS)
    assert (plan.size, plan.loss_size, plan.repeats) == (DEFAULT_SIZE, DEFAULT_LOSS_SIZE, 3)
    assert plan.hold == DEFAULT_HOLD
    assert plan.loss_per_mille == 10
    assert plan.time_wait == DEFAULT_TIME_WAIT == 16384


def test_quick_fills_only_what_was_not_given() -> None:
    plan = plan_of("--quick")
    assert (plan.size, plan.loss_size, plan.connections) == (
        QUICK["size"], QUICK["loss_size"], QUICK["connections"])
    assert plan.repeats == 1 and plan.hold == QUICK["hold"]
    assert plan.time_wait == QUICK["time_wait"]
    assert plan_of("--quick", "--time-wait", "77").time_wait == 77
    plan = plan_of("--quick", "--size", "32M", "--repeats", "2", "--hold", "50")
    assert plan.size == 32 << 20 and plan.repeats == 2 and plan.hold == (50,)
    assert plan.loss_size == QUICK["loss_size"]


def test_full_makes_the_lossy_transfers_full_size() -> None:
    assert plan_of("--full", "--size", "512M").loss_size == 512 << 20
    assert plan_of("--full", "--size", "512M", "--loss-size", "64M").loss_size == 64 << 20
    assert plan_of("--size", "512M").loss_size == DEFAULT_LOSS_SIZE


def test_hold_counts_are_sorted_and_unique() -> None:
    assert plan_of("--hold", "10000", "--hold", "1000", "--hold", "1000").hold == (1000, 10000)


def test_only_expands_aliases_in_canonical_order() -> None:
    assert plan_of("--only", "memory", "--only", "bulk").experiments == (
        "bulk-in", "bulk-out", "memory")
    assert select_experiments(["loss"]) == ("loss-in", "loss-out")
    with pytest.raises(ValueError):
        select_experiments(["bulk-sideways"])


@pytest.mark.parametrize("argv", [
    ["--only", "nope"], ["--repeats", "0"], ["--size", "0"], ["--size", "lots"],
    ["--connections", "0"], ["--hold", "-5"], ["--loss-per-mille", "1000"],
    ["--max-seconds", "0"],
])
def test_bad_options_are_rejected(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["bench", "tcp", *argv])
    assert exc.value.code == 2


def test_sample_count_for_the_progress_bar() -> None:
    plan = plan_of("--repeats", "2", "--hold", "10", "--hold", "20")
    # Two paths per experiment (time-wait: record and whole Tcb), except memory (one
    # path per held count).
    assert plan.samples() == 2 * 2 * 6 + 2 * 2


# -- statistics and result shaping -------------------------------------------
def test_mb_per_s_is_decimal_megabytes() -> None:
    assert mb_per_s(500_000_000, 1.0) == pytest.approx(500.0)
    assert mb_per_s(1 << 30, 2.0) == pytest.approx(536.870912)
    with pytest.raises(ValueError):
        mb_per_s(1, 0.0)


def experiment(stack: list[float], kernel: list[float] | None) -> Experiment:
    exp = Experiment("bulk-in", "t", "MB/s")
    exp.series.append(Series("stack", "tapsplice", "1 GiB", values=stack,
                             raw=[{"v": v} for v in stack]))
    if kernel is not None:
        exp.series.append(Series("kernel", "kernel", "1 GiB", values=kernel,
                                 raw=[{"v": v} for v in kernel]))
    return exp


def test_ratio_is_median_over_kernel_median() -> None:
    exp = experiment([100.0, 300.0, 200.0], [400.0, 1000.0, 800.0])
    assert exp.ratio(exp.series[0]) == pytest.approx(0.25)
    assert exp.ratio(exp.series[1]) is None  # the baseline itself
    assert experiment([1.0], None).ratio(Series("stack", "s", "w", values=[1.0])) is None
    assert experiment([1.0], []).ratio(experiment([1.0], []).series[0]) is None


def test_report_keeps_raw_samples_and_reductions() -> None:
    plan = plan_of("--quick")
    exp = experiment([100.0, 300.0, 200.0], [400.0, 1000.0, 800.0])
    report = build_tcp_report(plan, [exp], {"loss_drops": {"x": 3}}, ["bench", "tcp"],
                              machine={"nproc": 2}, software={"python": "3.11"})
    json.dumps(report)  # serialisable
    assert report["benchmark"] == "tcp" and report["baseline"] == "kernel"
    assert report["parameters"]["size"] == plan.size and report["loss_drops"] == {"x": 3}
    (rec,) = report["experiments"]
    stack, kernel = rec["series"]
    assert stack["samples"] == [{"v": 100.0}, {"v": 300.0}, {"v": 200.0}]
    assert (stack["median"], stack["min"], stack["max"]) == (200.0, 100.0, 300.0)
    assert stack["ratio_vs_kernel"] == pytest.approx(0.25)
    assert kernel["ratio_vs_kernel"] is None


def test_table_has_one_row_per_series_and_dashes_without_baseline() -> None:
    exp = experiment([50.0, 25.0, 12.5], [100.0])
    exp.series.append(Series("stack-9", "held", "9", values=[]))
    console = Console(width=200, record=True)
    console.print(experiment_table(exp))
    rows = [line for line in console.export_text().splitlines() if line.startswith("│")]
    assert len(rows) == 3
    assert [c.strip() for c in rows[0].split("│")[3:7]] == ["25.00", "12.50", "50.00", "0.25"]
    assert rows[1].split("│")[6].strip() == "-"  # the kernel is the baseline
    assert [c.strip() for c in rows[2].split("│")[3:7]] == ["-"] * 4


# -- the runner with fake sides ----------------------------------------------
class FakeSide:
    def __init__(self, name: str, counted: int | None = None) -> None:
        self.name, self.label, self.host, self.client_ns = name, name, f"{name}-host", f"{name}-ns"
        self.counted = counted
        self.checks: list[tuple[str, int, int]] = []
        self.restarts = 0

    def check_server(self, service: str, count: int, nbytes: int) -> int | None:
        self.checks.append((service, count, nbytes))
        return self.counted if service == "discard" and nbytes else None

    def restart(self) -> None:
        self.restarts += 1


class FakeClient:
    def __init__(self, short: bool = False) -> None:
        self.calls: list[tuple[str, str]] = []
        self.short = short

    def __call__(self, ns: str, mode: str, host: str, port: int, n: int,
                 timeout: float) -> dict[str, Any]:
        self.calls.append((ns, mode))
        got = n - 1 if self.short else n
        if mode == "send":
            return {"bytes": n, "peer_bytes": got, "seconds": 0.5}
        if mode == "recv":
            return {"bytes": n, "received": got, "seconds": 0.25}
        return {"connections": n, "seconds": 2.0}


def fake_hold(still_short: int = 0):
    def hold(side: Any, n: int, timeout: float) -> dict[str, Any]:
        return {"connections": n, "established": n, "still_established": n - still_short,
                "bytes_per_connection": 2048.0}
    return hold


def runner(plan: Plan, client: Any = None, hold: Any = None, kernel_counted: int | None = None,
           **kw: Any) -> tuple[Runner, FakeSide, FakeSide, list[tuple[str, int | None]]]:
    stack, kernel = FakeSide("stack"), FakeSide("kernel", kernel_counted)
    losses: list[tuple[str, int | None]] = []
    r = Runner(plan, stack, kernel, client or FakeClient(), hold or fake_hold(),
               lambda ns, pm: losses.append((ns, pm)), lambda ns: 7, **kw)
    return r, stack, kernel, losses


def test_runner_alternates_sides_and_computes_rates() -> None:
    plan = plan_of("--only", "bulk-in", "--only", "connections", "--repeats", "2",
                   "--size", "1M", "--connections", "10")
    client = FakeClient()
    r, stack, kernel, _ = runner(plan, client, kernel_counted=1 << 20)
    bulk, conns = r.run()
    assert [c[0] for c in client.calls] == ["stack-ns", "kernel-ns"] * 4
    assert bulk.series[0].values == [pytest.approx((1 << 20) / 0.5 / 1e6)] * 2
    assert all(raw["received_bytes"] == 1 << 20 for s in bulk.series for raw in s.raw)
    assert conns.series[1].values == [5.0, 5.0]
    assert ("discard", 10, 0) in kernel.checks and ("discard", 1, 1 << 20) in stack.checks


def test_runner_prefers_the_servers_own_count() -> None:
    plan = plan_of("--only", "bulk-in", "--repeats", "1", "--size", "1M")
    r, *_ = runner(plan, kernel_counted=(1 << 20) - 5)
    with pytest.raises(TransferError, match="kernel send"):
        r.run()


def test_runner_rejects_short_transfers() -> None:
    plan = plan_of("--only", "bulk-out", "--repeats", "1", "--size", "1M")
    r, *_ = runner(plan, FakeClient(short=True))
    with pytest.raises(TransferError, match="received"):
        r.run()


def test_loss_is_removed_even_when_a_transfer_fails() -> None:
    plan = plan_of("--only", "loss-out", "--repeats", "1", "--loss-size", "1M")
    r, stack, kernel, losses = runner(plan, FakeClient(short=True))
    with pytest.raises(TransferError):
        r.run()
    assert losses == [("stack-ns", 10), ("kernel-ns", 10), ("stack-ns", None), ("kernel-ns", None)]


def test_loss_experiment_records_drops_and_note() -> None:
    plan = plan_of("--only", "loss-in", "--repeats", "1", "--loss-size", "2M",
                   "--loss-per-mille", "20")
    r, _s, _k, losses = runner(plan, kernel_counted=2 << 20)
    (exp,) = r.run()
    assert "2% random loss" in exp.note and "2 MiB" in exp.note
    assert r.loss_drops == {"loss-in/stack": 7, "loss-in/kernel": 7}
    assert losses[-2:] == [("stack-ns", None), ("kernel-ns", None)]


def test_memory_restarts_the_stack_and_checks_every_connection_held() -> None:
    plan = plan_of("--only", "memory", "--repeats", "2", "--hold", "5", "--hold", "7")
    r, stack, _k, _ = runner(plan)
    (exp,) = r.run()
    assert stack.restarts == 4 + 1 and [s.values for s in exp.series] == [[2048.0] * 2] * 2
    r, *_ = runner(plan, hold=fake_hold(still_short=1))
    with pytest.raises(TransferError, match="held 4 of 5"):
        r.run()


def test_time_wait_step_measures_records_against_whole_tcbs() -> None:
    n = 300
    plan = plan_of("--only", "time-wait", "--repeats", "1", "--time-wait", str(n))
    r, *_ = runner(plan)  # the real simulated run, small
    (exp,) = r.run()
    record, tcb = exp.series
    assert (record.name, tcb.name) == ("record", "tcb")
    for ser, kind in ((record, "record"), (tcb, "tcb")):
        (raw,) = ser.raw
        assert raw["kind"] == kind and raw["connections"] == n
        assert raw["bytes_per_connection"] == ser.values[0] > 0
        assert raw["total_bytes"] == pytest.approx(raw["bytes_per_connection"] * n)
        assert raw["bytes_for_16384"] == round(raw["bytes_per_connection"] * 16384)
    # the record is what TIME-WAIT is for: smaller than a whole closed Tcb
    assert record.values[0] < tcb.values[0]
    assert "16,384" not in exp.note and f"{n:,}" in exp.note


def test_time_wait_step_rejects_a_run_that_lost_connections() -> None:
    plan = plan_of("--only", "time-wait", "--repeats", "1", "--time-wait", "10")
    r, *_ = runner(plan, time_wait=lambda n, whole: {"connections": n - 1,
                                                      "bytes_per_connection": 1.0})
    with pytest.raises(TransferError, match="9 of 10 in TIME-WAIT"):
        r.run()


def test_runner_stops_at_the_deadline() -> None:
    plan = plan_of("--only", "bulk-in", "--repeats", "5", "--max-seconds", "10")
    now = [0.0]

    def clock() -> float:
        now[0] += 3.0
        return now[0]

    r, *_ = runner(plan, kernel_counted=plan.size, clock=clock)
    with pytest.raises(BenchTimeout):
        r.run()


# -- the labs' pure helpers --------------------------------------------------
def test_parse_report_takes_the_last_json_line() -> None:
    assert parse_report('{"a": 1}\nnoise\n{"b": 2}\n') == {"b": 2}
    with pytest.raises(TransferError):
        parse_report("Traceback ...\n")
    with pytest.raises(TransferError):
        parse_report('{"broken": \n')


def test_parse_vmrss() -> None:
    status = "Name:\tpython\nVmHWM:\t  9000 kB\nVmRSS:\t  4096 kB\nThreads:\t1\n"
    assert parse_vmrss(status) == 4096 * 1024
    with pytest.raises(ValueError):
        parse_vmrss("Name:\tpython\n")


def test_split_into_client_processes() -> None:
    assert _split(10000, 5000) == [5000, 5000]
    assert _split(12001, 5000) == [5000, 5000, 2001]
    assert _split(3, 5000) == [3]


def test_client_argv_runs_the_client_module_in_the_namespace() -> None:
    argv = client_argv("ns1", "send", "198.18.0.2", 9, 1024, 60.0)
    assert argv[:4] == ["ip", "netns", "exec", "ns1"]
    assert argv[-6:] == ["send", "198.18.0.2", "9", "1024", "--timeout", "60"]
    assert tcp_client.parse_args(argv[argv.index("send"):]).n == 1024


def test_line_reader_splits_times_out_and_sees_eof() -> None:
    r, w = os.pipe()
    with os.fdopen(r, "rb", buffering=0) as rf:
        reader = LineReader(rf)
        os.write(w, b"ready\n{\"a\"")
        assert reader.read_line(1.0) == "ready"
        with pytest.raises(CommandError, match="no line"):
            reader.read_line(0.05)
        os.write(w, b": 1}\n")
        assert reader.read_line(1.0) == '{"a": 1}'
        os.close(w)
        with pytest.raises(CommandError, match="closed"):
            reader.read_line(1.0)


def test_line_pump_keeps_a_chatty_child_from_stalling() -> None:
    r, w = os.pipe()
    lines = [json.dumps({"service": "discard", "bytes": i}) for i in range(5000)]
    with os.fdopen(r, "rb") as rf:
        pump = LinePump(rf)
        writer = threading.Thread(target=lambda: (os.write(w, "\n".join(lines).encode() + b"\n"),
                                                  os.close(w)))
        writer.start()
        # More than a pipe's 64 KiB: the writer finishes before anything is asked for.
        writer.join(timeout=10)
        assert not writer.is_alive()
        assert [pump.read_line(1.0) for _ in lines] == lines
        for _ in range(2):
            with pytest.raises(CommandError, match="closed"):
                pump.read_line(1.0)


# -- the client's arguments and the kernel server's loops ---------------------
@pytest.mark.parametrize("argv", [
    ["fly", "h", "9", "10"], ["send", "h", "0", "10"], ["send", "h", "70000", "10"],
    ["send", "h", "9", "0"], ["send", "h", "9", "ten"], ["hold", "h", "9", "100001"],
    ["send", "h", "9", "10", "--timeout", "0"], ["send", "h", "9"],
])
def test_client_rejects_bad_arguments(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        tcp_client.parse_args(argv)
    assert exc.value.code == 2


def test_client_accepts_each_mode() -> None:
    for mode in ("send", "recv", "conns", "hold"):
        args = tcp_client.parse_args([mode, "198.18.0.2", "19", "100", "--timeout", "5"])
        assert (args.mode, args.port, args.n, args.timeout) == (mode, 19, 100, 5.0)


def test_deadline_check_raises_after_the_end() -> None:
    d = tcp_client.Deadline(-1.0)
    with pytest.raises(tcp_client.ClientError, match="deadline passed during x"):
        d.check("x")
    assert d.left() > 0  # a socket timeout must stay positive
    tcp_client.Deadline(60.0).check("y")


def test_raise_nofile_leaves_a_sufficient_limit_alone() -> None:
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert tcp_client.raise_nofile(1) == soft
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == soft


def test_server_discard_counts_every_byte() -> None:
    a, b = socket.socketpair()
    payload = os.urandom(300_000)

    def send() -> None:
        a.sendall(payload)
        a.close()

    t = threading.Thread(target=send)
    t.start()
    with b:
        b.settimeout(10)
        assert tcp_server.discard_one(b, threading.Event()) == (len(payload), "")
    t.join(timeout=10)


def test_server_chargen_stops_when_the_client_goes() -> None:
    a, b = socket.socketpair()
    got = bytearray()

    def read_then_close() -> None:
        while len(got) < 3 << 20:
            got.extend(a.recv(1 << 16))
        a.close()

    t = threading.Thread(target=read_then_close)
    t.start()
    with b:
        b.settimeout(10)
        sent, error = tcp_server.chargen_one(b, threading.Event())
    t.join(timeout=10)
    # sendall counts whole blocks; the last one may have gone out in part.
    assert error == "" and sent <= len(got) <= sent + len(tcp_server.CHARGEN_BLOCK)
    assert got[:74] == tcp_server.CHARGEN_BLOCK[:74]


# -- end to end in the lab ------------------------------------------------------
@pytest.mark.lab
def test_bench_tcp_quick_run_end_to_end(tmp_path: Any) -> None:
    from apps.cli import main
    from tests.conftest import lab_unavailable_reason

    reason = lab_unavailable_reason()
    if reason:
        pytest.fail(reason)
    out = tmp_path / "tcp.json"
    rc = main(["bench", "tcp", "--quick", "--size", "8M", "--loss-size", "4M",
               "--connections", "100", "--hold", "150", "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert [e["name"] for e in report["experiments"]] == list(EXPERIMENTS)
    for exp in report["experiments"]:
        assert exp["series"], exp["name"]
        for series in exp["series"]:
            assert series["values"] and all(v > 0 for v in series["values"]), series
            for raw in series["samples"]:
                if "bytes" in raw:
                    assert raw["received_bytes"] == raw["bytes"] > 0
                if exp["name"] == "memory":
                    assert raw["still_established"] == raw["established"] == 150
        names = {s["name"] for s in exp["series"]}
        expected = {"memory": {"stack-150"}, "time-wait": {"record", "tcb"}}
        assert names == expected.get(exp["name"], {"stack", "kernel"})
    assert all(p["exit_code"] == 0 for p in report["stack_processes"])
