"""The relay micro-benchmark script runs, is bounded, and benchmarks valid frames."""

from __future__ import annotations

import pytest

from splice.mapping import make_maps
from tests.splice.frames import device_bytes, parse, ref_sum, tcp_verifies
from tools.bench import relay_micro


def test_rate_stops_at_the_frame_limit() -> None:
    calls = []
    relay_micro.rate(lambda: calls.append(1), seconds=30.0, max_frames=300)
    assert len(calls) == 300


def test_main_prints_every_case(capsys: pytest.CaptureFixture[str]) -> None:
    assert relay_micro.main(["--seconds", "0.05", "--max-frames", "3"]) == 0
    out = capsys.readouterr().out
    for name in ("64 KB super-segment", "ACK, NOP NOP TS", "baseline: re-sum"):
        assert name in out


def test_benchmarked_frames_stay_valid_after_many_rewrites() -> None:
    """The cases rewrite one frame over and over: it must remain a valid segment."""
    m = make_maps(relay_micro._CLIENT, relay_micro._SERVER)[0]
    for name, fn, _ in relay_micro._cases(m):
        if name.startswith("baseline"):
            continue
        for _ in range(5):
            fn()
    skb = relay_micro.build_frame(3000, relay_micro.TcpOptions(timestamp=(1, 2)), True)
    for _ in range(5):
        relay_micro.relay_rewrite(skb, m, True)
    raw = device_bytes(skb)
    ip, _tcp = parse(raw)
    assert ref_sum(raw[14:34]) == 0xFFFF
    assert tcp_verifies(ip.src, ip.dst, raw[34:])
