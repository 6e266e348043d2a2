"""Port and timestamp choices that let a peer's TIME-WAIT be reused safely."""

from __future__ import annotations

import random

from harness import B, Capture

from stack.tcp.layer import TcpLayer
from stack.tcp.options import tsval

C = bytes([198, 19, 0, 9])


def test_timestamp_clock_is_one_per_peer_and_differs_between_peers():
    layer = TcpLayer(Capture(), rng=random.Random(3))
    a1 = layer.connect(B, 80, 10.0)
    a2 = layer.connect(B, 81, 10.0)
    other = layer.connect(C, 80, 10.0)
    # Same peer: one monotonic clock, whatever the ports (RFC 7323 §5.4).
    assert a1.ts_offset == a2.ts_offset
    assert tsval(a2, 11.0) - tsval(a1, 10.0) == 1000
    assert other.ts_offset != a1.ts_offset


def test_ephemeral_ports_toward_one_destination_are_used_in_turn():
    layer = TcpLayer(Capture(), rng=random.Random(4))
    ports = []
    for _ in range(50):
        tcb = layer.connect(B, 80, 0.0)
        ports.append(tcb.local_port)
        tcb.abort(0.0)  # gone at once: a random choice could pick it again
    # RFC 6056 Algorithm 3: no port comes back before the range is used up.
    assert len(set(ports)) == 50
    lo, hi = layer.config.ephemeral_ports
    assert all(lo <= p <= hi for p in ports)


def test_state_changes_are_traced_at_debug_level(caplog):
    import logging

    from stack.tcp.state import Event

    layer = TcpLayer(Capture(), rng=random.Random(5))
    tcb = layer.connect(B, 80, 0.0)
    tcb.apply(Event.SYN_ACK_RCVD)  # as if the handshake had completed
    with caplog.at_level(logging.DEBUG, logger="tapsplice.tcp"):
        tcb.shutdown_write(1.0)
    assert any("ESTABLISHED -close-> FIN_WAIT_1" in r.getMessage() for r in caplog.records)
