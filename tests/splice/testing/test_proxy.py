"""splice.testing.check_proxy: splicing proxies pass under loss and reordering; the
kit's ProxyLayer hook adds the splice API to the proxy host."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splice.testing import SpliceProxyContext, check_proxy, splice_proxy
from stack.netdev.faults import FaultModel
from stack.testing import check_proxy as plain_check_proxy
from stack.testing import fault_models
from stack.testing.proxy import copy_proxy

SLOW_OK = settings(max_examples=6, deadline=None, database=None,
                   suppress_health_check=[HealthCheck.too_slow])
LOSSY = FaultModel(loss=0.03, reorder=0.05, delay=0.005)


@SLOW_OK
@given(faults=fault_models(max_loss=0.05, max_corrupt=0.0), data=st.binary(max_size=60_000),
       seed=st.integers(0, 1000))
def test_splice_proxy_under_faults(faults, data, seed):
    run = check_proxy(splice_proxy, data, faults=faults, seed=seed, splice=True)
    assert run.received == [data]
    # Spliced (and torn down after TIMEWAIT), or copied when the client had already
    # half-closed before the proxy could intend the splice (docs/splice.md §1).
    sc = run.splice_counters
    assert sc.get("splices", 0) == sc.get("closed", 0) <= 1


def test_two_clients_through_a_splicing_proxy():
    data = bytes(range(256)) * 800
    run = check_proxy(splice_proxy, data, faults=LOSSY, splice=True, clients=2)
    assert run.received == [data, data]
    assert run.splice_counters["splices"] == run.splice_counters["closed"] == 2


def test_without_splice_the_context_has_no_splice_api_and_copying_works():
    seen: list = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ctx) -> None:
        seen.append(ctx)
        await copy_proxy(reader, writer, ctx)

    run = check_proxy(proxy, b"abc" * 100)
    assert run.received == [b"abc" * 100] and run.splice_counters == {}
    assert not isinstance(seen[0], SpliceProxyContext)
    assert plain_check_proxy(copy_proxy, b"xyz").layer_counters == {}
