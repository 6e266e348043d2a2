"""Micro-benchmark of the splice relay rewrite (splice/relay.py), pure CPU, no network.

    python -m tools.bench.relay_micro [--seconds 1.0] [--max-frames 200000]

Each case rewrites the same frame in place over and over (the rewrite keeps a frame
valid, so repeating it measures the steady state) and reports frames/s. Baselines run
in the same invocation: the bare loop (calling a no-op with the same arguments) and a
full one's-complement sum of a 64 KB segment, the work an implementation that re-summed
the payload would do per super-segment. Every case is bounded by both a frame count
and a time limit.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from splice.mapping import ConnSnapshot, DirectionMap, make_maps
from splice.relay import relay_rewrite
from stack.skbuff import SkBuff
from stack.wire.checksum import ones_sum, pseudo_header_sum
from stack.wire.ethernet import EthernetHeader
from stack.wire.ipv4 import IPPROTO_TCP, Ipv4Header
from stack.wire.tcp import ACK, PSH, TcpHeader, TcpOptions, build_segment
from stack.wire.vnet import VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4

_CLIENT = ConnSnapshot(bytes((198, 18, 0, 2)), 1080, bytes((198, 18, 0, 1)), 40000,
                       snd_nxt=0xFFFFFF00, rcv_nxt=0x10, ts_ok=True, ts_recent=5,
                       ts_sent=0xFFFFFFF0, sack_ok=True, snd_wscale=7, rcv_wscale=7,
                       mss=1448)
_SERVER = ConnSnapshot(bytes((198, 19, 0, 2)), 50000, bytes((198, 19, 0, 1)), 80,
                       snd_nxt=0x7FFFFFFF, rcv_nxt=0xFFFFFFFE, ts_ok=True, ts_recent=1000,
                       ts_sent=0x20, sack_ok=True, snd_wscale=7, rcv_wscale=7, mss=1448)


def build_frame(payload_len: int, opts: TcpOptions, partial: bool) -> SkBuff:
    """A client->proxy frame; ``partial``: NEEDS_CSUM + TSO as a TAP hands it over."""
    a = _CLIENT
    tcp = TcpHeader(a.remote_port, a.local_port, 0x10, 0xFFFFFF00, ACK | PSH, 512,
                    options=opts)
    seg = bytearray(build_segment(a.remote, a.local, tcp, bytes(payload_len)))
    ip = Ipv4Header(a.remote, a.local, IPPROTO_TCP, df=True).to_bytes(len(seg))
    eth = EthernetHeader(b"\x02\0\0\0\0\2", b"\x02\0\0\0\0\1", 0x0800).to_bytes()
    skb = SkBuff.from_bytes(eth + ip + seg, headroom=64)
    if partial:
        t = len(eth) + len(ip)
        psum = pseudo_header_sum(a.remote, a.local, IPPROTO_TCP, len(seg))
        skb.buf[skb.data + t + 16:skb.data + t + 18] = psum.to_bytes(2, "big")
        skb.vnet_flags = VIRTIO_NET_HDR_F_NEEDS_CSUM
        skb.csum_start, skb.csum_offset = t, 16
        if payload_len > a.mss:
            skb.gso_type, skb.gso_size = VIRTIO_NET_HDR_GSO_TCPV4, a.mss
            skb.hdr_len = t + len(tcp.to_bytes())
    return skb


def rate(fn: Callable[[], object], seconds: float, max_frames: int) -> float:
    """Calls per second of ``fn``, over at most ``max_frames`` calls and ``seconds``."""
    done = 0
    batch = 256
    start = time.perf_counter()
    deadline = start + seconds
    while done < max_frames:
        for _ in range(min(batch, max_frames - done)):
            fn()
        done += min(batch, max_frames - done)
        if time.perf_counter() >= deadline:
            break
    return done / (time.perf_counter() - start)


def _cases(m: DirectionMap) -> list[tuple[str, Callable[[], object], int]]:
    ts = TcpOptions(timestamp=(1, 2))
    sack = TcpOptions(timestamp=(1, 2), sack_blocks=((3, 4), (5, 6), (7, 8)))
    big = build_frame(65000, ts, partial=True)
    ack = build_frame(0, ts, partial=False)
    plain = build_frame(0, TcpOptions(), partial=False)
    sack_ack = build_frame(0, sack, partial=False)
    full = build_frame(65000, ts, partial=False)
    big_view = memoryview(big.buf)[big.data + 34:big.tail]

    def nop(skb: SkBuff, mm: DirectionMap, off: bool) -> None:
        return None

    return [
        ("baseline: empty call", lambda: nop(ack, m, True), 0),
        ("baseline: re-sum a 64 KB segment", lambda: ones_sum(big_view), 65000),
        ("64 KB super-segment, NEEDS_CSUM, TS", lambda: relay_rewrite(big, m, True), 65000),
        ("64 KB plain frame -> TSO, TS", lambda: _reset_rewrite(full, m), 65000),
        ("ACK, NOP NOP TS (fast path)", lambda: relay_rewrite(ack, m, True), 0),
        ("ACK, no options (fast path)", lambda: relay_rewrite(plain, m, True), 0),
        ("ACK, TS + 3 SACK blocks (option walk)", lambda: relay_rewrite(sack_ack, m, True), 0),
    ]


def _reset_rewrite(skb: SkBuff, m: DirectionMap) -> None:
    # The conversion to TSO is one-off per frame: undo the offload state so each call
    # converts again (the frame bytes stay valid either way).
    skb.clear_vnet()
    relay_rewrite(skb, m, True)


def main(argv: list[str] | None = None) -> int:
    """Run every case and print frames/s (and Gbit/s of payload for the large ones)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=1.0, help="time limit per case")
    p.add_argument("--max-frames", type=int, default=200_000, help="frame limit per case")
    args = p.parse_args(argv)
    seconds = min(max(args.seconds, 0.05), 30.0)
    max_frames = min(max(args.max_frames, 1), 10_000_000)
    m = make_maps(_CLIENT, _SERVER)[0]
    print(f"{'case':42} {'frames/s':>12} {'payload Gbit/s':>15}")
    for name, fn, payload in _cases(m):
        r = rate(fn, seconds, max_frames)
        gbit = f"{r * payload * 8 / 1e9:15.1f}" if payload else f"{'':15}"
        print(f"{name:42} {r:12,.0f} {gbit}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
