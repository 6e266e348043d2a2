"""Hypothesis strategies for protocol tests on the simulated network.

- :func:`fault_models` — link impairments (loss, duplication, reordering, corruption,
  delay, jitter) within bounds that keep a run short;
- :func:`tcp_option_sets` — option sets the wire codec can emit (at most 40 bytes);
- :func:`segments` — whole TCP segments (header, options, payload) with a correct
  checksum, as :class:`GenSegment`;
- :func:`app_scripts` — what an application does on one connection: writes, reads,
  a half-close, a close, as a tuple of :class:`AppAction`.

Everything generated is valid by construction; the tests in tests/testing check it.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from stack.netdev.faults import FaultModel
from stack.wire.ethernet import EthernetHeader
from stack.wire.ipv4 import Ipv4Header
from stack.wire.tcp import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    URG,
    TcpHeader,
    TcpOptions,
    build_segment,
)

__all__ = ["AppAction", "GenSegment", "app_scripts", "fault_models", "segments",
           "tcp_option_sets", "seq_numbers"]

MASK = 0xFFFFFFFF
#: Sequence-like numbers: anywhere, and often close to either side of the 2**32 wrap.
seq_numbers = st.one_of(st.integers(0, MASK), st.integers(MASK - 4096, MASK),
                        st.integers(0, 4096))
_probability = st.sampled_from([0.0, 0.0, 0.001, 0.01, 0.03])


def fault_models(*, max_loss: float = 0.1, max_reorder: float = 0.1,
                 max_duplicate: float = 0.05, max_corrupt: float = 0.02,
                 max_delay: float = 0.05, jitter: bool = True) -> st.SearchStrategy[FaultModel]:
    """FaultModels with each probability at most its ``max_*`` (often exactly 0) and a
    one-way delay up to ``max_delay`` seconds (jitter at most a quarter of it).

    Corruption hits every frame, ARP included, and ARP has no checksum: a corrupted
    ARP can point a neighbour entry at a wrong MAC until it is resolved again. Pass
    ``max_corrupt=0`` where a test cannot tolerate such an outage.
    """

    def prob(top: float) -> st.SearchStrategy[float]:
        if top <= 0:
            return st.just(0.0)
        return st.one_of(st.just(0.0), st.floats(0.0, top, allow_nan=False))

    @st.composite
    def build(draw: st.DrawFn) -> FaultModel:
        delay = draw(st.floats(0.0, max_delay, allow_nan=False)) if max_delay > 0 else 0.0
        jit = draw(st.floats(0.0, delay / 4, allow_nan=False)) if jitter and delay else 0.0
        reorder = draw(prob(max_reorder))
        hold = draw(st.sampled_from([0.001, 0.005, 0.02])) if reorder else 0.001
        return FaultModel(loss=draw(prob(max_loss)), duplicate=draw(prob(max_duplicate)),
                          reorder=reorder, corrupt=draw(prob(max_corrupt)),
                          delay=delay, jitter=jit, reorder_delay=hold)
    return build()


@st.composite
def tcp_option_sets(draw: st.DrawFn, *, syn: bool | None = None) -> TcpOptions:
    """TcpOptions that :func:`~stack.wire.tcp.emit_options` encodes in 40 bytes.

    ``syn=True``: what a SYN may carry (MSS, window scale 0-14, SACK-permitted,
    timestamps); ``syn=False``: what other segments carry (timestamps, 1-4 SACK
    blocks, as many as fit); None: either.
    """
    if syn is None:
        syn = draw(st.booleans())
    opts = TcpOptions()
    if draw(st.booleans()):
        opts.timestamp = (draw(seq_numbers), 0 if syn else draw(seq_numbers))
    if syn:
        if draw(st.booleans()):
            opts.mss = draw(st.integers(64, 65535))
        if draw(st.booleans()):
            opts.wscale = draw(st.integers(0, 14))
        opts.sack_permitted = draw(st.booleans())
        return opts
    room = (40 - (12 if opts.timestamp else 0) - 4) // 8
    n = draw(st.integers(0, min(4, room)))
    blocks = []
    for _ in range(n):
        left = draw(seq_numbers)
        blocks.append((left, (left + draw(st.integers(1, 1 << 20))) & MASK))
    opts.sack_blocks = tuple(blocks)
    return opts


@dataclass(frozen=True)
class GenSegment:
    """A generated TCP segment: header (checksum computed on output) and payload."""

    hdr: TcpHeader
    payload: bytes

    def tcp_bytes(self, src: bytes, dst: bytes) -> bytes:
        """Header + payload with the checksum for the (src, dst) pseudo-header."""
        return build_segment(src, dst, self.hdr, self.payload)

    def frame(self, src: bytes, dst: bytes, src_mac: bytes, dst_mac: bytes) -> bytes:
        """The whole Ethernet/IPv4/TCP frame."""
        seg = self.tcp_bytes(src, dst)
        eth = EthernetHeader(dst_mac, src_mac, 0x0800).to_bytes()
        return eth + Ipv4Header(src, dst, 6).to_bytes(len(seg)) + seg


_FLAG_SETS = [ACK, ACK | PSH, ACK | FIN, ACK | FIN | PSH, SYN, SYN | ACK, RST, RST | ACK,
              ACK | URG]


@st.composite
def segments(draw: st.DrawFn, *, sport: int | None = None, dport: int | None = None,
             max_payload: int = 1460, flags: st.SearchStrategy[int] | None = None
             ) -> GenSegment:
    """Well-formed segments: plausible flag combinations (or ``flags``), any sequence
    and acknowledgement numbers, options fitting the flags, payload up to
    ``max_payload`` bytes (none on a SYN or RST)."""
    f = draw(flags if flags is not None else st.sampled_from(_FLAG_SETS))
    opts = draw(tcp_option_sets(syn=bool(f & SYN)))
    payload = b"" if f & (SYN | RST) else draw(st.binary(max_size=max_payload))
    hdr = TcpHeader(
        sport if sport is not None else draw(st.integers(1, 65535)),
        dport if dport is not None else draw(st.integers(1, 65535)),
        draw(seq_numbers), draw(seq_numbers) if f & ACK else 0, f,
        draw(st.integers(0, 65535)),
        draw(st.integers(0, max(len(payload), 1))) if f & URG else 0,
        options=opts)
    return GenSegment(hdr, payload)


@dataclass(frozen=True)
class AppAction:
    """One application step: "write" (``n`` bytes), "read" (up to ``n``),
    "wait" (``n`` milliseconds of virtual time), "shutdown" (half-close), "close"."""

    kind: str
    n: int = 0


_KINDS = ("write", "read", "wait")


@st.composite
def app_scripts(draw: st.DrawFn, *, max_steps: int = 12, max_write: int = 64 << 10,
                max_total: int = 1 << 20) -> tuple[AppAction, ...]:
    """A valid sequence of application steps on one connection: nothing is written
    after a shutdown or close, at most one shutdown, a close (if any) comes last, and
    the writes add up to at most ``max_total`` bytes."""
    steps: list[AppAction] = []
    total = 0
    shut = False
    for _ in range(draw(st.integers(0, max_steps))):
        kind = draw(st.sampled_from(_KINDS if not shut else ("read", "wait")))
        if kind == "write":
            n = draw(st.integers(1, max(1, min(max_write, max_total - total))))
            if total + n > max_total:
                continue
            total += n
        else:
            n = draw(st.integers(1, 1 << 16)) if kind == "read" else draw(st.integers(1, 500))
        steps.append(AppAction(kind, n))
        if not shut and draw(st.integers(0, 7)) == 0:
            steps.append(AppAction("shutdown"))
            shut = True
    if draw(st.booleans()):
        steps.append(AppAction("close"))
    return tuple(steps)
