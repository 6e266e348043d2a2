"""The TCP conversation machine: a clean stack passes, an injected bug is found, and
the failing run leaves a pcap of its frames."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from stack.netdev.pcap import read_pcap
from stack.testing.machine import TcpConversation
from stack.wire.vnet import VIRTIO_NET_HDR_F_DATA_VALID

# No "explain" phase: replaying every step variation of a failing conversation costs
# tens of seconds and adds nothing these tests check.
FAST = settings(max_examples=25, stateful_step_count=10, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow],
                phases=(Phase.generate, Phase.shrink))


class CleanConversation(TcpConversation):
    pass


class CorruptingConversation(TcpConversation):
    """The server's TCP takes one payload byte wrong after the checksum check: the
    kind of bug a reassembly slip would be."""

    def make_layer(self, name, stack):
        layer = super().make_layer(name, stack)
        if name == "server":
            real = layer.input
            seen = [0]

            def buggy(skb, src, dst, now):
                data = skb.view()
                hlen = (data[12] >> 4) * 4
                if len(data) > hlen:
                    seen[0] += 1
                    if seen[0] == 2:
                        skb.vnet_flags |= VIRTIO_NET_HDR_F_DATA_VALID
                        skb.buf[skb.data + hlen] ^= 0x01
                real(skb, src, dst, now)
            layer.input = buggy
            stack.register_protocol(6, layer)
        return layer


def test_clean_stack_passes_and_writes_nothing(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(CleanConversation, "artifacts_dir", str(tmp_path))
    run_state_machine_as_test(CleanConversation, settings=FAST)
    assert not list(tmp_path.iterdir())


def test_injected_bug_is_found_and_its_run_captured(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(CorruptingConversation, "artifacts_dir", str(tmp_path))
    with pytest.raises(AssertionError, match="first difference"):
        run_state_machine_as_test(CorruptingConversation,
                                  settings=settings(FAST, max_examples=50,
                                                    report_multiple_bugs=False))
    path = tmp_path / "CorruptingConversation.pcap"
    assert CorruptingConversation.last_pcap == path and path.exists()
    frames = read_pcap(path)
    # The capture holds the handshake (a SYN from the client) and data segments.
    assert any(f[14 + 20 + 13] & 0x02 for _, f in frames if len(f) >= 54)
    assert any(len(f) > 14 + 20 + 20 + 12 for _, f in frames)
