"""Hypothesis strategies for splice tests: snapshots near the 2**32 wrap, segments."""

from __future__ import annotations

import random

from hypothesis import strategies as st

from splice.mapping import ConnSnapshot
from tests.splice.frames import Opt, Segment

MASK = 0xFFFFFFFF
ACK, FIN, RST, PSH, URG, ECE, CWR = 0x10, 0x01, 0x04, 0x08, 0x20, 0x40, 0x80

# Sequence-like values: anywhere, or close to either side of the wrap.
seqs = st.one_of(st.integers(0, MASK), st.integers(MASK - 2000, MASK), st.integers(0, 2000))
ports = st.integers(1, 0xFFFF)
addrs = st.builds(lambda a, b, c: bytes((198, 18 + a, b, c)), st.integers(0, 1),
                  st.integers(0, 255), st.integers(1, 254))
wscales = st.none() | st.integers(0, 14)


def snapshots() -> st.SearchStrategy[ConnSnapshot]:
    """Any connection state a splice might start from."""
    return st.builds(ConnSnapshot, local=addrs, local_port=ports, remote=addrs,
                     remote_port=ports, snd_nxt=seqs, rcv_nxt=seqs, ts_ok=st.booleans(),
                     ts_recent=seqs, ts_sent=seqs, sack_ok=st.booleans(),
                     snd_wscale=wscales, rcv_wscale=wscales,
                     mss=st.integers(64, 9000))


@st.composite
def option_lists(draw: st.DrawFn) -> list[Opt]:
    """Options of a non-SYN segment: at most one TS and one SACK (1-4 blocks),
    NOPs, unknown kinds, maybe an MSS, in any order, within 40 bytes."""
    if draw(st.integers(0, 3)) == 0:
        return [Opt(1), Opt(1), Opt(8, (draw(seqs), draw(seqs)))]  # the fast layout
    out: list[Opt] = []
    room = 40
    have_ts = have_sack = False
    for _ in range(draw(st.integers(0, 6))):
        choice = draw(st.sampled_from(["nop", "ts", "sack", "unknown", "mss"]))
        if choice == "nop":
            item = Opt(1)
        elif choice == "ts" and not have_ts:
            item = Opt(8, (draw(seqs), draw(seqs)))
            have_ts = True
        elif choice == "sack" and not have_sack and room >= 10:
            n = draw(st.integers(1, min(4, (room - 2) // 8)))
            item = Opt(5, tuple(draw(seqs) for _ in range(2 * n)))
            have_sack = True
        elif choice == "unknown":
            kind = draw(st.integers(6, 254).filter(lambda k: k != 8))
            item = Opt(kind, data=draw(st.binary(max_size=min(6, max(0, room - 2)))))
        elif choice == "mss":
            item = Opt(2, data=draw(st.binary(min_size=2, max_size=2)))
        else:
            continue
        if len(item.encode()) > room:
            continue
        out.append(item)
        room -= len(item.encode())
    return out


flag_sets = st.builds(lambda ack, rest: (ACK if ack else 0) | rest,
                      st.integers(0, 4).map(lambda x: x != 0),
                      st.sampled_from([0, PSH, FIN, PSH | FIN, RST, URG | PSH, ECE, CWR,
                                       CWR | ECE | PSH]))
ip_option_bytes = st.sampled_from([b"", b"", b"\x01\x01\x01\x00",
                                   b"\x94\x04\x00\x00", b"\x07\x07\x04\x00\x00\x00\x00\x00"])
payload_sizes = st.one_of(st.just(0), st.integers(1, 200), st.integers(500, 3000),
                          st.integers(3000, 9000))


@st.composite
def segments(draw: st.DrawFn, src: bytes, dst: bytes, sport: int, dport: int) -> Segment:
    """A segment on the given 4-tuple with arbitrary numbers, options and payload."""
    size = draw(payload_sizes)
    payload = random.Random(draw(st.integers(0, 1 << 30))).randbytes(size)
    return Segment(src=src, dst=dst, sport=sport, dport=dport, seq=draw(seqs),
                   ack=draw(seqs), flags=draw(flag_sets), window=draw(st.integers(0, 0xFFFF)),
                   urgent=draw(st.integers(0, 0xFFFF)), options=draw(option_lists()),
                   payload=payload, ip_options=draw(ip_option_bytes),
                   pad=draw(st.sampled_from([0, 0, 0, 6])))
