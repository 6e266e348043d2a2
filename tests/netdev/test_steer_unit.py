"""The steering program's assembly and hash, without a kernel (stack/netdev/steer.py)."""

from __future__ import annotations

import struct
from collections import Counter

import pytest

from stack.netdev.steer import port_sum_program, queue_of
from stack.workers import merge_summaries

_INSN = struct.Struct("<BBhi")
_EXIT = 0x95


def decode(code: bytes) -> list[tuple[int, int, int, int]]:
    return [_INSN.unpack_from(code, i) for i in range(0, len(code), 8)]


@pytest.mark.parametrize("queues", [1, 2, 3, 16])
def test_every_jump_lands_inside_the_program_and_it_ends_in_exit(queues):
    insns = decode(port_sum_program(queues))
    for i, (op, _regs, off, _imm) in enumerate(insns):
        if op & 0x07 == 0x05 and op != _EXIT:  # BPF_JMP class, not exit
            assert 0 <= i + 1 + off < len(insns), (i, op, off)
    assert insns[-1][0] == _EXIT
    mods = [imm for op, _r, _o, imm in insns if op == 0x97]
    assert mods == [queues]


@pytest.mark.parametrize("queues", [0, 257])
def test_queue_counts_out_of_range_are_refused(queues):
    with pytest.raises(ValueError):
        port_sum_program(queues)


@pytest.mark.parametrize("queues", [2, 3, 4])
def test_linux_even_client_ports_spread_over_every_queue(queues):
    # Linux connects from ports of one parity; a plain sum mod 2 would put them all on
    # one queue.
    counts = Counter(queue_of(port, 1080, queues) for port in range(32768, 61000, 2))
    share = [counts[q] / sum(counts.values()) for q in range(queues)]
    assert min(share) > 0.9 / queues and max(share) < 1.1 / queues


def test_queue_of_is_the_same_for_both_directions():
    assert all(queue_of(a, b, 5) == queue_of(b, a, 5) for a in (80, 1080, 40000)
               for b in (1, 443, 65535))


def test_worker_summaries_add_up():
    a = {"stack": {"rx": 3, "tx": 1}, "connections": 2, "devices": {"t0": {"rx": 1}},
         "name": "x", "ok": True}
    b = {"stack": {"rx": 4, "drop": 1}, "connections": 5, "devices": {"t0": {"rx": 2}},
         "name": "y", "ok": True}
    assert merge_summaries([a, b]) == {
        "stack": {"rx": 7, "tx": 1, "drop": 1}, "connections": 7,
        "devices": {"t0": {"rx": 3}}, "name": "x", "ok": True}
