"""A small interpreter of the eBPF subset the steering program uses
(stack/netdev/steer.py), to run it on frames without a kernel.

It follows the kernel's semantics for socket filters: LD_ABS and LD_IND read the
packet in network byte order and end the program with 0 when the read goes past
its end (kernel/bpf/core.c, ``___bpf_prog_run``); offsets at SKF_LL_OFF and above
read the link-layer header of a packet that starts at its network header.
"""

from __future__ import annotations

import struct

_INSN = struct.Struct("<BBhi")
_SKF_LL_OFF = -0x200000
_M64 = (1 << 64) - 1
_M32 = (1 << 32) - 1
_SIZES = {0x30: 1, 0x28: 2, 0x50: 1, 0x48: 2}


def run(code: bytes, packet: bytes, link_header: bytes = b"", *, limit: int = 4096) -> int:
    """The program's return value for ``packet`` (``link_header``: what SKF_LL_OFF
    sees, for a packet that starts at its network header)."""
    insns = [_INSN.unpack_from(code, i) for i in range(0, len(code), 8)]
    r = [0] * 11
    pc = 0
    for _ in range(limit):
        op, regs, off, imm = insns[pc]
        dst, src = regs & 0x0F, regs >> 4
        pc += 1
        if op in _SIZES:
            at = imm + (r[src] if op in (0x50, 0x48) else 0)
            at = at - (1 << 32) if at >= 1 << 31 else at
            size = _SIZES[op]
            if at >= 0:
                data, base = packet, at
            elif at >= _SKF_LL_OFF:
                data, base = link_header, at - _SKF_LL_OFF
            else:
                return 0
            if base < 0 or base + size > len(data):
                return 0
            r[0] = int.from_bytes(data[base:base + size], "big")
            for i in range(1, 6):
                r[i] = 0    # clobbered, as after a helper call
            continue
        k = imm & _M64
        if op == 0xB7:
            r[dst] = k
        elif op == 0xBF:
            r[dst] = r[src]
        elif op == 0x07:
            r[dst] = (r[dst] + k) & _M64
        elif op == 0x0F:
            r[dst] = (r[dst] + r[src]) & _M64
        elif op == 0x57:
            r[dst] &= k
        elif op == 0x67:
            r[dst] = (r[dst] << imm) & _M64
        elif op == 0x97:
            r[dst] %= k
        elif op == 0x24:
            r[dst] = (r[dst] * (imm & _M32)) & _M32
        elif op == 0x74:
            r[dst] = (r[dst] & _M32) >> imm
        elif op == 0x05:
            pc += off
        elif op in (0x15, 0x55, 0x45):
            taken = {0x15: r[dst] == k, 0x55: r[dst] != k, 0x45: bool(r[dst] & k)}[op]
            if taken:
                pc += off
        elif op == 0x95:
            return r[0]
        else:
            raise ValueError(f"opcode {op:#x} not interpreted")
    raise RuntimeError("the program did not end")
