"""check_proxy: a copying proxy passes under loss and reordering; a proxy that loses
bytes is caught and its run captured (splicing proxies: tests/splice/testing/)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stack.netdev.faults import FaultModel
from stack.netdev.pcap import read_pcap
from stack.testing import check_proxy, copy_proxy, fault_models
from stack.testing.capture import ARTIFACTS_ENV
from stack.testing.proxy import ProxyContext, pump

SLOW_OK = settings(max_examples=6, deadline=None, database=None,
                   suppress_health_check=[HealthCheck.too_slow])
LOSSY = FaultModel(loss=0.03, reorder=0.05, delay=0.005)


@SLOW_OK
@given(faults=fault_models(max_loss=0.05, max_corrupt=0.0), data=st.binary(max_size=60_000),
       seed=st.integers(0, 1000))
def test_copy_proxy_under_faults(faults, data, seed):
    run = check_proxy(copy_proxy, data, faults=faults, seed=seed)
    assert run.received == [data]


async def truncating_proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           ctx: ProxyContext) -> None:
    """Forgets the last byte of what the origin sends back."""
    ur, uw = await ctx.open_upstream()

    async def back() -> None:
        got = await ur.read(-1)
        writer.write(got[:-1])
        await writer.drain()
        writer.write_eof()

    await asyncio.gather(pump(reader, uw), back())
    writer.close()


def test_a_broken_proxy_fails_with_a_capture(tmp_path: Path, monkeypatch):
    monkeypatch.setenv(ARTIFACTS_ENV, str(tmp_path))
    with pytest.raises(AssertionError, match="capture in") as e:
        check_proxy(truncating_proxy, b"abc" * 1000, faults=LOSSY, name="broken")
    path = tmp_path / "broken.pcap"
    assert str(path) in str(e.value) and len(read_pcap(path)) > 6
