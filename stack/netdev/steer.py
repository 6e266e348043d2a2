"""Queue steering for a multiqueue TAP device: which worker reads which frame.

A TAP device created with ``multi_queue`` can be opened several times; each open
attaches one queue, and the kernel picks the queue of every frame it hands to user
space. Left to itself it hashes the flow with a secret seed, and it remembers the
queue a flow was last written on only for a few seconds — after which an idle
connection's next segment may reach a process that has never heard of it. A steering
program (TUNSETSTEERINGEBPF, Linux 4.16) replaces that choice with one the workers can
compute: for TCP and UDP the queue is a hash of the sum of the two ports, mod N
(:func:`queue_of`), the same for both directions of a connection. A worker that opens
a connection picks its own local port so that the hash lands on its own queue
(TcpConfig.port_shard); connections from outside land wherever the peer's port puts
them, and the worker there accepts them.

ICMP errors go where the segment they quote went (the quoted IP header and the first
8 bytes of TCP carry both ports, RFC 792). Everything else — ARP, pings, fragments —
goes to queue 0; the stack's workers share ARP through worker 0 (stack/workers.py).

IPv6 the same way: TCP and UDP by their ports, found after the fixed header and up to
:data:`EXT_WALK` hop-by-hop, routing or destination-options headers (RFC 8200 §4: each
says its length in 8-octet units after the first 8); ICMPv6 errors (types 1-4, RFC 4443
§2.4) by the ports of the packet they quote when TCP or UDP follows its fixed header
directly; fragments (RFC 8200 §4.5), NDP (types 133-137, shared through worker 0 like
ARP) and everything else to queue 0. The extension headers are walked rather than
sent to queue 0 because a segment of a connection that lives in worker 1 would there
reach a worker that never heard of it and be answered with a reset; the bound keeps the
program short and loop-free (the verifier refuses what it cannot bound), and a longer
chain goes to queue 0.

The program is a BPF_PROG_TYPE_SOCKET_FILTER of under 100 instructions, assembled here
and loaded with the bpf(2) system call through ctypes.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import platform
import struct

from stack.portshard import GOLDEN
from stack.portshard import queue_of as queue_of  # the queue this program picks
from stack.wire.fields import (
    ETH_HLEN,
    ETH_TYPE,
    FRAME_IP_PROTO,
    FRAME_IP_VIHL,
    IP_FRAG,
    TCP_DPORT,
    TCP_SPORT,
)
from stack.wire.icmp import ICMP_HLEN

# _IOR('T', 224, int): attach a steering program to the device of this descriptor.
TUNSETSTEERINGEBPF = 0x800454E0
_BPF_PROG_LOAD = 5
_BPF_PROG_TYPE_SOCKET_FILTER = 1
_SYS_BPF = {"x86_64": 321, "aarch64": 280}
_LOG_SIZE = 1 << 16

# Opcodes (linux/bpf.h, linux/bpf_common.h): loads from the packet, 64-bit ALU with
# an immediate (K) or a register (X), jumps, exit.
_LD_ABS_B, _LD_ABS_H = 0x30, 0x28
_LD_IND_B, _LD_IND_H = 0x50, 0x48
_MOV_K, _MOV_X = 0xB7, 0xBF
_ADD_K, _ADD_X, _AND_K, _LSH_K, _MOD_K = 0x07, 0x0F, 0x57, 0x67, 0x97
_MUL32_K, _RSH32_K = 0x24, 0x74  # 32-bit ALU: the result is zero-extended
_JA, _JEQ_K, _JNE_K, _JSET_K = 0x05, 0x15, 0x55, 0x45
_EXIT = 0x95
_INSN = struct.Struct("<BBhi")

_ETH_P_IP = 0x0800
_ETH_P_IPV6 = 0x86DD
_IP6_HLEN = 40
_IP6_NH = 6  # the next-header byte of the IPv6 fixed header
#: Extension headers the IPv6 branch walks before it gives up (queue 0).
EXT_WALK = 3
_IP6_EXT = (0, 43, 60)  # hop-by-hop, routing, destination options: (len + 1) * 8 bytes
_ICMP6_ERRORS = (1, 2, 3, 4)  # unreachable, too big, time exceeded, parameter problem
_SKF_LL_OFF = -0x200000  # linux/filter.h: negative loads from the link-layer header
_ICMP_ERRORS = (3, 4, 11, 12)  # unreachable, source quench, time exceeded, parameter
# The port sum is mixed by Knuth's multiplicative hash (GOLDEN, stack/portshard.py)
# before the modulo, because Linux picks the ports of its connects with one parity
# (even), which would put every connection of a client on one of two queues.


class SteeringError(OSError):
    """The kernel refused the program or the device refused the attachment."""


def _assemble(lines: list[tuple | str]) -> bytes:
    """Assemble ``(op, dst, src, imm, target_label)`` tuples and ``"label"`` strings;
    jump offsets count instructions after the jump."""
    labels: dict[str, int] = {}
    insns: list[tuple] = []
    for line in lines:
        if isinstance(line, str):
            labels[line] = len(insns)
        else:
            insns.append(line)
    out = []
    for i, (op, dst, src, imm, target) in enumerate(insns):
        off = labels[target] - i - 1 if target else 0
        out.append(_INSN.pack(op, (src << 4) | dst, off, imm))
    return b"".join(out)


def port_sum_program(queues: int, *, at_network_header: bool = False) -> bytes:
    """The steering program for ``queues`` queues, as raw eBPF instructions.

    r6 holds the packet (LD_ABS and LD_IND read from it in network byte order), r7
    the offset of the ports minus 14 (the Ethernet header), r8 the first port. A read
    beyond the end of the frame ends the program with 0: a truncated frame goes to
    queue 0.

    ``at_network_header``: the packet starts at its IP header, as in a packet socket's
    fanout hook (stack/netdev/raw.py); the ethertype is then read through SKF_LL_OFF,
    the kernel's window on the link-layer header.
    """
    if not 1 <= queues <= 256:
        raise ValueError(f"queues must be 1..256, not {queues}")
    e = -ETH_HLEN if at_network_header else 0  # where the frame's offsets start
    etype = _SKF_LL_OFF + ETH_TYPE if at_network_header else ETH_TYPE
    quoted = [(_JEQ_K, 0, 0, t, "quoted") for t in _ICMP_ERRORS]
    return _assemble([
        (_MOV_X, 6, 1, 0, None),             # r6 = the packet
        (_LD_ABS_H, 0, 0, etype, None),      # ethertype
        (_JEQ_K, 0, 0, _ETH_P_IPV6, "v6"),
        (_JNE_K, 0, 0, _ETH_P_IP, "zero"),
        (_LD_ABS_B, 0, 0, e + FRAME_IP_VIHL, None),  # version/IHL
        (_AND_K, 0, 0, 0x0F, None),
        (_LSH_K, 0, 0, 2, None),
        (_MOV_X, 7, 0, 0, None),             # r7 = IP header length
        (_LD_ABS_H, 0, 0, e + ETH_HLEN + IP_FRAG, None),  # flags, fragment offset
        (_JSET_K, 0, 0, 0x3FFF, "zero"),     # a fragment: no ports in most of them
        (_LD_ABS_B, 0, 0, e + FRAME_IP_PROTO, None),  # protocol
        (_JEQ_K, 0, 0, 6, "ports"),          # TCP
        (_JEQ_K, 0, 0, 17, "ports"),         # UDP
        (_JNE_K, 0, 0, 1, "zero"),           # not ICMP
        (_LD_IND_B, 0, 7, e + ETH_HLEN, None),   # ICMP type
        *quoted,
        (_JA, 0, 0, 0, "zero"),              # an echo or another ICMP message
        "quoted",
        (_LD_IND_B, 0, 7, e + ETH_HLEN + ICMP_HLEN, None),  # the quoted IP header's version/IHL
        (_AND_K, 0, 0, 0x0F, None),
        (_LSH_K, 0, 0, 2, None),
        (_ADD_X, 7, 0, 0, None),
        (_ADD_K, 7, 0, ICMP_HLEN, None),     # past the ICMP header
        (_JA, 0, 0, 0, "ports"),
        *_ipv6_branch(e),
        "ports",
        (_LD_IND_H, 0, 7, e + ETH_HLEN + TCP_SPORT, None),  # source port
        (_MOV_X, 8, 0, 0, None),
        (_LD_IND_H, 0, 7, e + ETH_HLEN + TCP_DPORT, None),  # destination port
        (_ADD_X, 0, 8, 0, None),
        (_MUL32_K, 0, 0, GOLDEN - (1 << 32), None),  # imm is signed; same low bits
        (_RSH32_K, 0, 0, 16, None),
        (_MOD_K, 0, 0, queues, None),
        (_EXIT, 0, 0, 0, None),
        "zero",
        (_MOV_K, 0, 0, 0, None),
        (_EXIT, 0, 0, 0, None),
    ])


def _ipv6_branch(e: int) -> list[tuple | str]:
    """The IPv6 part of the program (label "v6"): it leaves r7 at the ports (counted
    from the IPv6 header) and jumps to "ports", or jumps to "zero". r9 keeps the next
    header across the loads (LD_ABS/LD_IND clobber r0-r5)."""
    ip = e + ETH_HLEN
    out: list[tuple | str] = [
        "v6",
        (_MOV_K, 7, 0, _IP6_HLEN, None),         # r7 = offset of the header that follows
        (_LD_ABS_B, 0, 0, ip + _IP6_NH, None),   # next header
    ]
    for i in range(EXT_WALK + 1):
        out += [
            (_JEQ_K, 0, 0, 6, "ports"),          # TCP
            (_JEQ_K, 0, 0, 17, "ports"),         # UDP
            (_JEQ_K, 0, 0, 58, "icmp6"),
        ]
        if i == EXT_WALK:
            break
        out += [(_JEQ_K, 0, 0, t, f"ext{i}") for t in _IP6_EXT]
        out += [
            (_JA, 0, 0, 0, "zero"),              # a fragment, no next header, unknown
            f"ext{i}",
            (_LD_IND_B, 0, 7, ip, None),         # the extension header's next header
            (_MOV_X, 9, 0, 0, None),
            (_LD_IND_B, 0, 7, ip + 1, None),     # its length, 8-octet units after 8
            (_ADD_K, 0, 0, 1, None),
            (_LSH_K, 0, 0, 3, None),
            (_ADD_X, 7, 0, 0, None),
            (_MOV_X, 0, 9, 0, None),
        ]
    quoted6 = [(_JEQ_K, 0, 0, t, "quoted6") for t in _ICMP6_ERRORS]
    return out + [
        (_JA, 0, 0, 0, "zero"),                  # a chain longer than the walk
        "icmp6",
        (_LD_IND_B, 0, 7, ip, None),             # ICMPv6 type
        *quoted6,
        (_JA, 0, 0, 0, "zero"),                  # echo, NDP, MLD, ...
        "quoted6",
        # The quoted packet starts after the 8-byte ICMPv6 header; its ports are read
        # when TCP or UDP follows its fixed header (the quote may be cut short there).
        (_LD_IND_B, 0, 7, ip + ICMP_HLEN + _IP6_NH, None),
        (_ADD_K, 7, 0, ICMP_HLEN + _IP6_HLEN, None),
        (_JEQ_K, 0, 0, 6, "ports"),
        (_JEQ_K, 0, 0, 17, "ports"),
        (_JA, 0, 0, 0, "zero"),
    ]


def load_program(code: bytes) -> int:
    """Load a socket-filter program; return its descriptor (SteeringError if refused)."""
    nr = _SYS_BPF.get(platform.machine())
    if nr is None:
        raise SteeringError(errno.ENOSYS, f"bpf(2) number unknown on {platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    insns = ctypes.create_string_buffer(code, len(code))
    license_ = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(_LOG_SIZE)
    # union bpf_attr, BPF_PROG_LOAD: prog_type, insn_cnt, insns, license, log_level,
    # log_size, log_buf, kern_version; the rest zero.
    attr = struct.pack("<IIQQIIQI", _BPF_PROG_TYPE_SOCKET_FILTER, len(code) // 8,
                       ctypes.addressof(insns), ctypes.addressof(license_), 1, _LOG_SIZE,
                       ctypes.addressof(log), 0).ljust(128, b"\0")
    buf = ctypes.create_string_buffer(attr, len(attr))
    fd = libc.syscall(nr, _BPF_PROG_LOAD, buf, len(attr))
    if fd < 0:
        err = ctypes.get_errno()
        text = log.value.decode(errors="replace").strip().splitlines()
        raise SteeringError(err, f"bpf program refused: {os.strerror(err)}"
                                 + (f" ({text[-1]})" if text else ""))
    return fd


def attach_steering(tap_fd: int, queues: int) -> None:
    """Steer the frames of the device behind ``tap_fd`` by port sum over ``queues``."""
    prog = load_program(port_sum_program(queues))
    try:
        fcntl.ioctl(tap_fd, TUNSETSTEERINGEBPF, struct.pack("i", prog))
    except OSError as e:
        raise SteeringError(e.errno, f"TUNSETSTEERINGEBPF: {e.strerror}") from None
    finally:
        os.close(prog)  # the device holds its own reference
