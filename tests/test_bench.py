"""Benchmark harness: statistics, JSON shape, sizes, the CLI and origin files (no root)."""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest

from apps.labproc import TransferError, parse_curl_output
from apps.origin import Origin
from tools.bench import main as bench_main
from tools.bench.harness import (
    BenchTimeout,
    PathResult,
    Sample,
    build_report,
    default_json_path,
    format_size,
    machine_info,
    parse_size,
    ratio,
    run_paths,
    summarize,
    write_json,
)
from tools.bench.router import check_download, transfer_timeout


class FakePath:
    """A BenchPath whose transfers take the seconds it is given, in order."""

    def __init__(self, name: str, seconds: list[float], size: int = 125_000_000,
                 fail_at: int | None = None) -> None:  # fmt: skip
        self.name, self.label, self.size, self.note = name, f"path {name}", size, ""
        self.seconds = list(seconds)
        self.fail_at = fail_at
        self.calls: list[str] = []

    def start(self) -> None:
        self.calls.append("start")

    def run_transfer(self) -> Sample:
        n = self.calls.count("transfer")
        self.calls.append("transfer")
        if n == self.fail_at:
            raise TransferError("short download")
        return Sample(self.size, self.seconds[n])

    def stop(self) -> None:
        self.calls.append("stop")


def test_sample_throughput_is_bits_over_seconds() -> None:
    assert Sample(125_000_000, 1.0).gbit_per_s == pytest.approx(1.0)
    assert Sample(125_000_000, 0.5).gbit_per_s == pytest.approx(2.0)


def test_summarize_median_min_max() -> None:
    st = summarize([3.0, 1.0, 2.0])
    assert (st.median, st.min, st.max) == (2.0, 1.0, 3.0)
    assert summarize([1.0, 4.0, 2.0, 3.0]).median == 2.5
    with pytest.raises(ValueError):
        summarize([])


def test_ratio_against_baseline() -> None:
    base = PathResult("kernel", "k", 1, samples=[Sample(125_000_000, 1.0)])
    fast = PathResult("stack", "s", 1, samples=[Sample(125_000_000, 0.5)])
    assert ratio(fast, base) == pytest.approx(2.0)
    assert ratio(fast, None) is None
    assert ratio(fast, PathResult("kernel", "k", 1)) is None


def test_run_paths_excludes_warmup_and_orders_start_stop() -> None:
    a = FakePath("a", [9.0, 1.0, 0.5, 0.25])
    seen: list[tuple[str, int]] = []
    results = run_paths([a], repeats=3, max_seconds=60, warmup=1,
                        on_sample=lambda p, i, s: seen.append((p.name, i)))  # fmt: skip
    assert a.calls == ["start", "transfer", "transfer", "transfer", "transfer", "stop"]
    assert [s.seconds for s in results[0].warmup] == [9.0]
    assert [s.seconds for s in results[0].samples] == [1.0, 0.5, 0.25]
    assert seen == [("a", 0), ("a", 1), ("a", 2)]
    assert results[0].stats().median == pytest.approx(2.0)


def test_run_paths_stops_a_path_whose_transfer_fails() -> None:
    a = FakePath("a", [1.0, 1.0], fail_at=1)
    b = FakePath("b", [1.0, 1.0])
    with pytest.raises(TransferError):
        run_paths([a, b], repeats=2, max_seconds=60)
    assert a.calls[-1] == "stop"
    assert b.calls == []


def test_run_paths_deadline_raises_and_stops() -> None:
    ticks = iter([0.0, 1.0, 100.0, 200.0])
    a = FakePath("a", [1.0] * 5)
    with pytest.raises(BenchTimeout):
        run_paths([a], repeats=5, max_seconds=50, clock=lambda: next(ticks))
    assert a.calls == ["start", "transfer", "stop"]


@pytest.mark.parametrize("repeats", [0, -1, 101])
def test_run_paths_rejects_unbounded_repeats(repeats: int) -> None:
    with pytest.raises(ValueError):
        run_paths([FakePath("a", [1.0])], repeats=repeats, max_seconds=1)


def test_report_json_shape(tmp_path: Path) -> None:
    kernel = PathResult("kernel", "kernel router", 100,
                        samples=[Sample(100, 1e-6), Sample(100, 2e-6)],
                        warmup=[Sample(100, 1e-3)])  # fmt: skip
    stack = PathResult("stack", "tapsplice", 100, note="n", samples=[Sample(100, 4e-6)])
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    report = build_report("router", [stack, kernel], "kernel", {"repeats": 2},
                          machine={"nproc": 2}, software={"python": "3.11"}, created=when)  # fmt: skip
    out = write_json(tmp_path / "deep" / "r.json", report)
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "router" and doc["baseline"] == "kernel"
    assert doc["created"] == "2026-01-02T03:04:05+00:00"
    assert doc["machine"] == {"nproc": 2} and doc["versions"] == {"python": "3.11"}
    by_name = {p["name"]: p for p in doc["paths"]}
    k, s = by_name["kernel"], by_name["stack"]
    assert [x["seconds"] for x in k["samples"]] == [1e-6, 2e-6]
    assert [x["seconds"] for x in k["warmup_samples"]] == [1e-3]
    assert k["median_gbit_per_s"] == pytest.approx((0.8 + 0.4) / 2)
    assert (k["min_gbit_per_s"], k["max_gbit_per_s"]) == (pytest.approx(0.4), pytest.approx(0.8))
    assert k["ratio_vs_baseline"] == pytest.approx(1.0)
    assert s["ratio_vs_baseline"] == pytest.approx(0.2 / 0.6)
    assert s["note"] == "n" and s["size_bytes"] == 100
    assert not list(out.parent.glob("*.tmp"))


def test_default_json_path_is_timestamped_under_results() -> None:
    when = dt.datetime(2026, 11, 27, 17, 5, 9, tzinfo=dt.UTC)
    assert default_json_path("router", when) == Path("results/bench-router-20261127T170509Z.json")


def test_machine_info_has_the_fields() -> None:
    info = machine_info()
    assert {"nproc", "memory_bytes", "kernel", "cpu_model"} <= info.keys()
    assert info["nproc"] >= 1 and info["memory_bytes"] > 0


@pytest.mark.parametrize(("text", "size"), [
    ("1G", 1 << 30), ("200M", 200 << 20), ("512k", 512 << 10), ("4096", 4096),
    ("1.5G", 3 << 29), ("2GiB", 2 << 30),
])  # fmt: skip
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "-1G", "1X", "G", "1 G B x"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_format_size() -> None:
    assert format_size(1 << 30) == "1 GiB"
    assert format_size(200 << 20) == "200 MiB"
    assert format_size(3 << 29) == "1.5 GiB"
    assert format_size(100) == "100 B"


def test_parse_curl_output() -> None:
    d = parse_curl_output("1073741824 0.512345")
    assert (d.size, d.seconds) == (1 << 30, 0.512345)
    for bad in ("", "abc 1", "1 2 3", "100 0"):
        with pytest.raises(TransferError):
            parse_curl_output(bad)


def test_check_download_rejects_wrong_size() -> None:
    assert check_download(10, 10, 0.5) == Sample(10, 0.5)
    with pytest.raises(TransferError):
        check_download(9, 10, 0.5)


def test_transfer_timeout_grows_with_size_and_has_a_floor() -> None:
    assert transfer_timeout(1) == transfer_timeout(1000) > 0
    assert transfer_timeout(100 << 30) > transfer_timeout(1 << 30)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tapsplice")
    bench_main.add_parser(parser.add_subparsers(dest="command"))
    return parser


def test_cli_router_defaults_and_validation() -> None:
    args = _parser().parse_args(["bench", "router"])
    assert args.size == 1 << 30 and args.repeats == 5 and not args.no_offload_too
    assert args.func is bench_main.cmd_router
    args = _parser().parse_args(["bench", "router", "--size", "2M", "--no-offload-too"])
    assert args.size == 2 << 20 and args.no_offload_too
    for bad in (["--size", "lots"], ["--repeats", "0"], ["--repeats", "1000"], ["--mtu", "100"]):
        with pytest.raises(SystemExit):
            _parser().parse_args(["bench", "router", *bad])
    with pytest.raises(SystemExit):
        _parser().parse_args(["bench"])


def test_results_table_has_a_row_per_path() -> None:
    kernel = PathResult("kernel", "kernel", 1, samples=[Sample(1, 1.0)])
    stack = PathResult("stack", "stack", 1, note="smaller", samples=[Sample(1, 2.0)])
    table = bench_main.results_table([stack, kernel], "kernel")
    assert table.row_count == 2
    assert [c.header for c in table.columns][-1] == "note"


def test_origin_files_sparse_and_random() -> None:
    origin = Origin("unused-ns", port=8080)
    try:
        sparse = origin.make_file("big.bin", 10 << 20, random=False)
        assert sparse.path.stat().st_size == 10 << 20 and sparse.sha256 is None
        # Sparse: (almost) no blocks allocated for 10 MiB of zeros.
        assert sparse.path.stat().st_blocks * 512 < 1 << 20
        rnd = origin.make_file("r.bin", 100_000, random=True)
        assert rnd.sha256 == hashlib.sha256(rnd.path.read_bytes()).hexdigest()
        again = origin.make_file("r2.bin", 100_000, random=True, seed=None)
        assert again.sha256 != rnd.sha256  # seed follows the name
        same = origin.make_file("r2.bin", 100_000, random=True)
        assert same.sha256 == again.sha256
        assert origin.url(rnd, "198.19.0.1") == "http://198.19.0.1:8080/r.bin"
        for bad in ("", "a/b", "..", "."):
            with pytest.raises(ValueError):
                origin.make_file(bad, 1, random=False)
        with pytest.raises(ValueError):
            origin.make_file("neg", -1, random=False)
        docroot = origin.docroot
    finally:
        origin.stop()
    assert not docroot.exists()


def test_stack_router_argv_names_the_lab_and_offload() -> None:
    from apps.lab import LabConfig
    from tools.bench.router import StackRouterPath

    lab = LabConfig.unique("bench")
    fast = StackRouterPath(1 << 20, True, lab_cfg=lab).router_argv()
    slow = StackRouterPath(1 << 20, False, lab_cfg=lab).router_argv()
    assert fast[1:4] == ["-m", "apps.cli", "router"] and "--lab" in fast
    assert fast[fast.index("--client-ns") + 1] == lab.client_ns
    assert fast[fast.index("--server-tap") + 1] == lab.server_tap
    assert "--no-offload" not in fast and slow[-1] == "--no-offload"


def test_router_paths_kernel_last_same_mtu_and_smaller_no_offload() -> None:
    args = _parser().parse_args(["bench", "router", "--no-offload-too", "--mtu", "9000",
                                 "--no-offload-size", "50M"])  # fmt: skip
    paths = bench_main.router_paths(args)
    assert [p.name for p in paths] == ["stack", "stack-raw", "stack-no-offload", "kernel"]
    assert [p.size for p in paths] == [1 << 30, 1 << 30, 50 << 20, 1 << 30]
    assert "50 MiB" in paths[2].note and paths[0].note == ""
    assert paths[0].lab.mtu == 9000 and paths[1].lab.mtu == 9000 and paths[3].cfg.mtu == 9000
    assert paths[1].raw and paths[1].lab.stack_ns != paths[0].lab.stack_ns
    raw_argv = paths[1].router_argv()
    assert raw_argv[raw_argv.index("--stack-ns") + 1] == paths[1].lab.stack_ns
    only = bench_main.router_paths(_parser().parse_args(["bench", "router", "--kernel-only"]))
    assert [p.name for p in only] == ["kernel"]
