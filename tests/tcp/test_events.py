"""Event flushing (TcpLayer.flush_events): FIFO, each object queued once, and a
flush bounded by ``max_events`` with the rest kept, in order, and counted."""

from __future__ import annotations

import random

from harness import B, Capture

from stack.tcp.api import TcpConfig
from stack.tcp.layer import TcpLayer


def layer_with(n: int, max_events: int = 1024):
    layer = TcpLayer(Capture(), config=TcpConfig(max_events=max_events), rng=random.Random(3))
    fired: list[tuple[int, str]] = []
    tcbs = []
    for i in range(n):
        tcb = layer.connect(B, 80, 0.0, sport=1000 + i)
        tcb.on_event = lambda t, ev: fired.append((t.local_port, ev))
        tcbs.append(tcb)
    return layer, tcbs, fired


def test_each_connection_is_queued_once_and_fired_in_order():
    layer, tcbs, fired = layer_with(3)
    for tcb in (tcbs[1], tcbs[0], tcbs[1], tcbs[2], tcbs[0]):
        tcb.post("readable")
        tcb.post("writable")
    assert layer.events_pending() == 3
    layer.flush_events()
    assert fired == [(1001, "readable"), (1001, "writable"), (1000, "readable"),
                     (1000, "writable"), (1002, "readable"), (1002, "writable")]
    assert layer.events_pending() == 0 and layer.counters["events_deferred"] == 0


def test_past_max_events_the_rest_waits_for_the_next_flush_and_is_counted():
    layer, tcbs, fired = layer_with(5, max_events=2)
    for tcb in tcbs:
        tcb.post("readable")
    layer.flush_events()
    assert [port for port, _ in fired] == [1000, 1001]
    assert layer.events_pending() == 3 and layer.counters["events_deferred"] == 3
    layer.flush_events()
    assert [port for port, _ in fired] == [1000, 1001, 1002, 1003]
    assert layer.counters["events_deferred"] == 4
    layer.flush_events()
    assert [port for port, _ in fired] == [1000, 1001, 1002, 1003, 1004]
    assert layer.events_pending() == 0 and layer.counters["events_deferred"] == 4


def test_a_callback_that_keeps_posting_cannot_hold_the_caller():
    layer, (tcb,), _ = layer_with(1, max_events=10)
    calls = []

    def again(t, ev):
        calls.append(ev)
        t.post(ev)  # queued again while firing

    tcb.on_event = again
    tcb.post("readable")
    layer.flush_events()
    assert len(calls) == 10 and layer.events_pending() == 1
    assert layer.counters["events_deferred"] == 1


def test_the_pending_queue_is_bounded_by_the_tables():
    layer, tcbs, _ = layer_with(50, max_events=1)
    for _ in range(20):
        for tcb in tcbs:
            tcb.post("readable")
            tcb.post("writable")
    assert layer.events_pending() == 50
