"""splice/aio.py SpliceApi: attaching to a stack, and misuse that changes nothing."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from splice.aio import SpliceApi
from splice.splicer import SpliceDemux
from splice.testing import splice_api
from stack.sim import SimNetwork
from stack.simloop import run
from stack.wire.ipv4 import IPPROTO_TCP


def test_attach_makes_the_splice_layer_with_its_options_and_tells_the_stack():
    net = SimNetwork(1)
    host = net.add_host("p")

    async def main(driver) -> None:
        api = driver.tcp(host)
        tapstack_like = SimpleNamespace(stack=host, tcp=api.tcp, driver=driver, splicer=None)
        sp = SpliceApi.attach(tapstack_like, window_scheme="thesis", idle_timeout=12.0)
        assert tapstack_like.splicer is sp.splicer            # the stack knows its layer
        assert sp.splicer.window_scheme == "thesis" and sp.splicer.idle_timeout == 12.0
        assert sp.splicer.stack is host and sp.driver is driver
        assert isinstance(host.protocols[IPPROTO_TCP], SpliceDemux)
        with pytest.raises(ValueError, match="already"):
            SpliceApi.attach(tapstack_like)
        with pytest.raises(ValueError, match="window scheme"):
            SpliceApi.attach(SimpleNamespace(tcp=api.tcp, driver=driver),
                             window_scheme="nonsense")

    run(main, net)


def test_the_simulation_kit_makes_one_splice_api_per_host():
    net = SimNetwork(1)
    a, b = net.add_host("a"), net.add_host("b")

    async def main(driver) -> None:
        first = splice_api(driver, a)
        assert splice_api(driver, a) is first
        assert splice_api(driver, b) is not first
        assert first.splicer.stack is a and first.splicer.tcp is driver.tcp(a).tcp

    run(main, net)
