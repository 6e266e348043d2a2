"""relay_rewrite: the rewritten frame is a valid segment of the other connection whose
numbers follow docs/splice.md §4/§5, whatever the options, IP options, size and offloads."""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass

import dpkt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splice.mapping import ConnSnapshot, make_maps
from splice.relay import RelayError, relay_rewrite
from stack.gso import segment_tcp4
from stack.skbuff import SkBuff
from stack.wire.vnet import (
    VIRTIO_NET_HDR_F_DATA_VALID,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_TCPV4,
)
from tests.splice.frames import (
    MAC_A,
    MAC_B,
    Opt,
    Segment,
    device_bytes,
    encode_options,
    make_skb,
    parse,
    ref_sum,
    tcp_verifies,
)
from tests.splice.strategies import ACK, CWR, FIN, MASK, PSH, segments, snapshots

SNAP_C = ConnSnapshot(b"\xc6\x12\x00\x02", 1080, b"\xc6\x12\x00\x01", 40000,
                      snd_nxt=0xFFFFFF00, rcv_nxt=0x10, ts_ok=True, ts_recent=5,
                      ts_sent=0xFFFFFFF0, sack_ok=True, snd_wscale=7, rcv_wscale=0, mss=1460)
SNAP_S = ConnSnapshot(b"\xc6\x13\x00\x02", 50000, b"\xc6\x13\x00\x01", 80,
                      snd_nxt=0x7FFFFFFF, rcv_nxt=0xFFFFFFFE, ts_ok=True, ts_recent=1000,
                      ts_sent=0x20, sack_ok=True, snd_wscale=9, rcv_wscale=7, mss=536)


def incoming(a: ConnSnapshot, **kw: object) -> Segment:
    """A segment from a's peer to the proxy on connection a."""
    base = dict(src=a.remote, dst=a.local, sport=a.remote_port, dport=a.local_port,
                seq=a.rcv_nxt, ack=a.snd_nxt, flags=ACK, window=1000)
    base.update(kw)
    return Segment(**base)  # type: ignore[arg-type]


@dataclass
class Expect:
    """What docs/splice.md says a segment from a's peer must look like on b."""

    a: ConnSnapshot
    b: ConnSnapshot

    def seq(self, x: int) -> int:
        return (x - self.a.rcv_nxt + self.b.snd_nxt) & MASK

    def ack(self, x: int) -> int:
        return (x - self.a.snd_nxt + self.b.rcv_nxt) & MASK

    def tsval(self, x: int) -> int:
        return (x - self.a.ts_recent + self.b.ts_sent) & MASK

    def tsecr(self, x: int) -> int:
        return (x - self.a.ts_sent + self.b.ts_recent) & MASK

    def options(self, seg: Segment) -> bytes:
        both_ts = self.a.ts_ok and self.b.ts_ok
        both_sack = self.a.sack_ok and self.b.sack_ok
        out = b""
        for o in seg.options:
            if o.kind == 8 and both_ts:
                ecr = self.tsecr(o.values[1]) if seg.flags & ACK else o.values[1]
                out += Opt(8, (self.tsval(o.values[0]), ecr)).encode()
            elif o.kind == 5 and both_sack:
                out += Opt(5, tuple(self.ack(v) for v in o.values)).encode()
            elif o.kind in (8, 5):
                out += b"\x01" * len(o.encode())  # stripped: same length, all NOPs
            else:
                out += o.encode()
        return out + bytes(-len(out) % 4)

    def window(self, w: int) -> int:
        return min(0xFFFF, (w << (self.a.snd_wscale or 0)) >> (self.b.rcv_wscale or 0))


def check_frame(frame: bytes, b: ConnSnapshot) -> tuple[dpkt.ip.IP, dpkt.tcp.TCP, bytes]:
    """The frame parses, belongs to b's 4-tuple, and both checksums verify."""
    assert frame[:12] == MAC_B + MAC_A  # Ethernet header carried along unchanged
    ip, tcp = parse(frame)
    assert (ip.src, ip.dst, tcp.sport, tcp.dport) == (b.local, b.remote, b.local_port,
                                                      b.remote_port)
    assert ip.hl == 5 and ip.ttl == 64 and ip.p == 6
    assert ip.len == len(frame) - 14
    assert ref_sum(frame[14:34]) == 0xFFFF
    seg = frame[34:]
    assert tcp_verifies(ip.src, ip.dst, seg)
    return ip, tcp, seg


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), c=snapshots(), s=snapshots(), to_server=st.booleans(),
       needs_csum=st.booleans(), gso=st.booleans(), out_offload=st.booleans())
def test_rewrite_follows_the_formulas(data: st.DataObject, c: ConnSnapshot, s: ConnSnapshot,
                                      to_server: bool, needs_csum: bool, gso: bool,
                                      out_offload: bool) -> None:
    a, b = (c, s) if to_server else (s, c)
    m = make_maps(c, s)[0 if to_server else 1]
    seg = data.draw(segments(a.remote, a.local, a.remote_port, a.local_port))
    gso_size = data.draw(st.integers(1, 3000)) if gso else 0
    skb = make_skb(seg, needs_csum=needs_csum, gso_size=gso_size)
    res = relay_rewrite(skb, m, out_offload)
    exp = Expect(a, b)
    assert res.payload_bytes == len(seg.payload)
    frames = res.frames
    # RFC 6691: option bytes beyond the timestamps b's MSS allows for reduce the payload.
    optlen = len(encode_options(seg.options))
    seg_max = max(1, b.mss - max(0, optlen - (12 if b.ts_ok else 0)))
    if out_offload:
        assert frames == [skb]
        _check_offload_state(skb, seg_max, gso_size, len(seg.payload), seg)
        on_wire = [device_bytes(skb)]
    else:
        limit = min(seg_max, gso_size or seg_max)
        for f in frames:
            assert f.vnet_flags == 0 and f.gso_type == 0
            assert len(f) - 34 - 20 - len(encode_options(seg.options)) <= limit
        on_wire = [f.tobytes() for f in frames]
    payload = b""
    seq = exp.seq(seg.seq)
    for i, frame in enumerate(on_wire):
        _ip, tcp, raw = check_frame(frame, b)
        assert tcp.seq == seq
        seq = (seq + len(tcp.data)) & MASK
        assert tcp.ack == (exp.ack(seg.ack) if seg.flags & ACK else seg.ack)
        assert tcp.win == exp.window(seg.window)
        assert tcp.urp == seg.urgent
        last = i == len(on_wire) - 1
        want_flags = seg.flags if last else seg.flags & ~(FIN | PSH)
        assert tcp.flags & ~CWR == want_flags & ~CWR
        assert raw[20:tcp.off * 4] == exp.options(seg)
        payload += tcp.data
    assert payload == seg.payload


def _check_offload_state(skb: SkBuff, out_mss: int, gso_size: int, payload: int,
                         seg: Segment) -> None:
    assert not skb.vnet_flags & VIRTIO_NET_HDR_F_DATA_VALID
    thl = 20 + len(encode_options(seg.options))
    if gso_size:
        assert skb.gso_type == VIRTIO_NET_HDR_GSO_TCPV4
        assert skb.gso_size == min(gso_size, out_mss)
    elif payload > out_mss:
        assert skb.gso_type & ~VIRTIO_NET_HDR_GSO_ECN == VIRTIO_NET_HDR_GSO_TCPV4
        assert skb.gso_size == out_mss
        assert bool(skb.gso_type & VIRTIO_NET_HDR_GSO_ECN) == bool(seg.flags & CWR)
    else:
        assert skb.gso_type == 0
    if skb.gso_type:
        assert skb.vnet_flags & VIRTIO_NET_HDR_F_NEEDS_CSUM
        assert skb.hdr_len == 34 + thl
        # What the device will do with it: every segment valid and within the MSS.
        done = make_copy(skb)
        pieces = segment_tcp4(done)
        assert sum(len(p) - 34 - thl for p in pieces) == payload
        for p in pieces:
            assert len(p) - 34 - thl <= out_mss
            _ip, _tcp = parse(p.tobytes())
            assert tcp_verifies(_ip.src, _ip.dst, p.tobytes()[34:])
    if skb.vnet_flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
        assert (skb.csum_start, skb.csum_offset) == (34, 16)


def make_copy(skb: SkBuff) -> SkBuff:
    """An independent copy of a frame and its offload state."""
    cp = SkBuff.from_bytes(skb.tobytes(), headroom=16)
    cp.copy_vnet_from(skb)
    return cp


# -- examples --------------------------------------------------------------------
def test_common_case_example() -> None:
    """NOP NOP TS, ACK, 100 bytes, client to server: every number checked by hand."""
    seg = incoming(SNAP_C, seq=0x10 + 5, ack=0xFFFFFF00 + 7, window=3, payload=b"x" * 100,
                   options=[Opt(1), Opt(1), Opt(8, (6, 0xFFFFFFF0))])
    skb = make_skb(seg)
    c2s, _ = make_maps(SNAP_C, SNAP_S)
    res = relay_rewrite(skb, c2s, out_offload=True)
    ip, tcp, _ = check_frame(device_bytes(skb), SNAP_S)
    assert tcp.seq == 0x7FFFFFFF + 5
    assert tcp.ack == (0xFFFFFFFE + 7) & MASK == 5
    # 3 << 7 = 384 bytes; the server applies 7: field 3 again.
    assert tcp.win == 3
    ts = tcp.opts[2:]
    assert struct.unpack("!BBII", ts) == (8, 10, 0x20 + 1, 1000)
    assert res.payload_bytes == 100 and res.frames == [skb]
    assert skb.gso_type == 0  # 100 < 536: no split


def test_window_clamped_and_rounded_down() -> None:
    s2c = make_maps(SNAP_C, SNAP_S)[1]
    # server field 1000 << 9 = 512000 bytes; client scale 0: clamp to 65535.
    skb = make_skb(incoming(SNAP_S, window=1000))
    relay_rewrite(skb, s2c, out_offload=True)
    assert parse(skb.tobytes())[1].win == 0xFFFF
    # client field 1 << 7 = 128 bytes; server applies 7 -> 1; field 0 stays 0.
    c2s = make_maps(SNAP_C, SNAP_S)[0]
    for w in (0, 1):
        skb = make_skb(incoming(SNAP_C, window=w))
        relay_rewrite(skb, c2s, out_offload=True)
        assert parse(skb.tobytes())[1].win == w


def test_large_plain_frame_becomes_tso_with_partial_checksum() -> None:
    c2s = make_maps(SNAP_C, SNAP_S)[0]
    seg = incoming(SNAP_C, payload=bytes(range(256)) * 8, flags=ACK | PSH)
    skb = make_skb(seg)
    relay_rewrite(skb, c2s, out_offload=True)
    assert (skb.gso_type, skb.gso_size) == (VIRTIO_NET_HDR_GSO_TCPV4, 536)
    assert skb.vnet_flags == VIRTIO_NET_HDR_F_NEEDS_CSUM
    raw = skb.tobytes()
    # The field holds the pseudo-header sum over the full TCP length, not complemented.
    tcp_len = len(raw) - 34
    want = ref_sum(SNAP_S.local + SNAP_S.remote + b"\x00\x06" + struct.pack("!H", tcp_len))
    assert struct.unpack_from("!H", raw, 34 + 16)[0] == want
    check_frame(device_bytes(skb), SNAP_S)


def test_software_segments_without_offload() -> None:
    c2s = make_maps(SNAP_C, SNAP_S)[0]
    seg = incoming(SNAP_C, payload=b"y" * 1200, flags=ACK | PSH | FIN)
    res = relay_rewrite(make_skb(seg, needs_csum=True), c2s, out_offload=False)
    sizes = [len(parse(f.tobytes())[1].data) for f in res.frames]
    assert sizes == [536, 536, 128]
    flags = [parse(f.tobytes())[1].flags for f in res.frames]
    assert flags == [ACK, ACK, ACK | PSH | FIN]
    for f in res.frames:
        check_frame(f.tobytes(), SNAP_S)


def test_ip_options_stripped_and_padding_trimmed() -> None:
    c2s = make_maps(SNAP_C, SNAP_S)[0]
    seg = incoming(SNAP_C, payload=b"z" * 33, ip_options=b"\x94\x04\x00\x00" * 2, pad=9)
    skb = make_skb(seg, needs_csum=True)
    start = skb.data
    relay_rewrite(skb, c2s, out_offload=True)
    assert skb.data == start + 8
    assert skb.csum_start == 34
    assert len(skb) == 14 + 20 + 20 + 33
    _, tcp, _ = check_frame(device_bytes(skb), SNAP_S)
    assert tcp.data == b"z" * 33


def test_stripped_options_become_nops() -> None:
    c = SNAP_C
    s = dataclasses.replace(SNAP_S, ts_ok=False, sack_ok=False)
    c2s = make_maps(c, s)[0]
    opts = [Opt(8, (1, 2)), Opt(5, (3, 4, 5, 6)), Opt(1), Opt(1)]
    skb = make_skb(incoming(c, options=opts))
    relay_rewrite(skb, c2s, out_offload=False)
    _, tcp, raw = check_frame(skb.tobytes(), s)
    assert raw[20:48] == b"\x01" * 28


# -- bad input -------------------------------------------------------------------
def _good() -> Segment:
    return incoming(SNAP_C, payload=b"p" * 10, options=[Opt(1), Opt(1), Opt(8, (1, 2))])


def _poke(off: int, val: bytes):
    def f(raw: bytearray) -> None:
        raw[off:off + len(val)] = val
    return f


BAD = [
    ("relay_truncated", lambda raw: raw.__delitem__(slice(50, None)), {}),
    ("relay_not_ipv4", _poke(12, b"\x86\xdd"), {}),
    ("relay_ip_bad_header", _poke(14, b"\x65"), {}),
    ("relay_ip_bad_header", _poke(14, b"\x44"), {}),
    ("relay_fragment", _poke(20, b"\x20\x00"), {}),
    ("relay_fragment", _poke(20, b"\x00\x08"), {}),
    ("relay_not_tcp", _poke(23, b"\x11"), {}),
    ("relay_ip_bad_length", _poke(16, b"\x10\x00"), {}),
    ("relay_ip_bad_length", _poke(16, b"\x00\x20"), {}),
    ("relay_tcp_bad_offset", _poke(46, b"\x40"), {}),
    ("relay_tcp_bad_offset", _poke(46, b"\xf0"), {}),
    ("relay_syn", _poke(47, b"\x12"), {}),
    ("relay_bad_option", _poke(56, b"\x08\x09"), {}),
    ("relay_gso_type", None, {"gso_type": 3, "gso_size": 100}),
    ("relay_gso_type", None, {"gso_type": VIRTIO_NET_HDR_GSO_TCPV4, "gso_size": 0}),
    ("relay_csum_offsets", None, {"vnet_flags": 1, "csum_start": 30, "csum_offset": 16}),
]


@pytest.mark.parametrize("reason,mutate,vnet", BAD)
def test_bad_frames_raise_and_stay_unchanged(reason, mutate, vnet) -> None:
    raw = bytearray(_good().frame())
    if mutate:
        mutate(raw)
    skb = SkBuff.from_bytes(raw, headroom=64)
    for k, v in vnet.items():
        setattr(skb, k, v)
    before = (bytes(skb.buf), skb.data, skb.tail, skb.vnet_flags, skb.gso_type,
              skb.gso_size, skb.csum_start)
    with pytest.raises(RelayError) as ei:
        relay_rewrite(skb, make_maps(SNAP_C, SNAP_S)[0], out_offload=True)
    assert ei.value.reason == reason
    assert before == (bytes(skb.buf), skb.data, skb.tail, skb.vnet_flags, skb.gso_type,
                      skb.gso_size, skb.csum_start)


@settings(max_examples=300, deadline=None)
@given(pos=st.integers(0, 75), val=st.integers(0, 255), cut=st.integers(0, 80),
       offload=st.booleans())
def test_corrupt_headers_never_crash(pos: int, val: int, cut: int, offload: bool) -> None:
    """Any single corrupted header byte or truncation: a result or a RelayError."""
    raw = bytearray(_good().frame())
    raw[pos] = val
    del raw[len(raw) - cut:]
    skb = SkBuff.from_bytes(raw, headroom=64)
    try:
        res = relay_rewrite(skb, make_maps(SNAP_C, SNAP_S)[0], offload)
    except RelayError:
        return
    assert res.frames


def test_cwr_on_a_new_super_segment_sets_gso_ecn() -> None:
    c2s = make_maps(SNAP_C, SNAP_S)[0]
    for flags, ecn in ((ACK | CWR, VIRTIO_NET_HDR_GSO_ECN), (ACK, 0)):
        skb = make_skb(incoming(SNAP_C, payload=b"q" * 2000, flags=flags))
        relay_rewrite(skb, c2s, out_offload=True)
        assert skb.gso_type == VIRTIO_NET_HDR_GSO_TCPV4 | ecn


def test_super_segment_without_partial_checksum_is_made_partial() -> None:
    """A GSO frame must reach the device in NEEDS_CSUM form."""
    c2s = make_maps(SNAP_C, SNAP_S)[0]
    skb = make_skb(incoming(SNAP_C, payload=b"g" * 3000))  # full checksum
    skb.gso_type, skb.gso_size = VIRTIO_NET_HDR_GSO_TCPV4, 1000
    relay_rewrite(skb, c2s, out_offload=True)
    assert skb.vnet_flags == VIRTIO_NET_HDR_F_NEEDS_CSUM
    assert (skb.gso_size, skb.csum_start, skb.csum_offset) == (536, 34, 16)
    check_frame(device_bytes(skb), SNAP_S)


@pytest.mark.parametrize("offload", [True, False])
def test_data_valid_is_not_passed_on(offload: bool) -> None:
    c2s = make_maps(SNAP_C, SNAP_S)[0]
    skb = make_skb(incoming(SNAP_C, payload=b"v" * 100))
    skb.vnet_flags = VIRTIO_NET_HDR_F_DATA_VALID
    res = relay_rewrite(skb, c2s, out_offload=offload)
    assert res.frames == [skb] and skb.vnet_flags == 0
    check_frame(skb.tobytes(), SNAP_S)  # complete and valid without any device help


def test_partial_checksum_completed_for_a_device_without_offload() -> None:
    c2s = make_maps(SNAP_C, SNAP_S)[0]
    skb = make_skb(incoming(SNAP_C, payload=b"w" * 300), needs_csum=True)
    res = relay_rewrite(skb, c2s, out_offload=False)
    assert res.frames == [skb]
    assert (skb.vnet_flags, skb.gso_type, skb.csum_start) == (0, 0, 0)
    check_frame(skb.tobytes(), SNAP_S)


@pytest.mark.parametrize("fast", [True, False])
def test_negative_zero_checksum_field(fast: bool) -> None:
    """A checksum sent as 0xFFFF instead of 0 (both verify, RFC 1624 §3) still
    verifies after patching, on the fast and the general path."""
    c2s = make_maps(SNAP_C, SNAP_S)[0]
    opts = [Opt(1), Opt(1), Opt(8, (1, 2))] if fast else [Opt(8, (1, 2)), Opt(1), Opt(1)]
    seg = incoming(SNAP_C, payload=b"\x00\x00", options=opts)
    raw = bytearray(seg.frame())
    tcp_off = 34
    # Choose the payload word that makes the full checksum 0, then store it as 0xFFFF.
    c0 = struct.unpack_from("!H", raw, tcp_off + 16)[0]
    struct.pack_into("!H", raw, len(raw) - 2, c0)
    struct.pack_into("!H", raw, tcp_off + 16, 0)
    assert tcp_verifies(seg.src, seg.dst, bytes(raw[tcp_off:]))
    struct.pack_into("!H", raw, tcp_off + 16, 0xFFFF)
    assert tcp_verifies(seg.src, seg.dst, bytes(raw[tcp_off:]))
    skb = SkBuff.from_bytes(raw, headroom=64)
    relay_rewrite(skb, c2s, out_offload=True)
    check_frame(skb.tobytes(), SNAP_S)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), to_server=st.booleans(), offload=st.booleans(),
       vnet=st.tuples(st.integers(0, 7), st.sampled_from([0, 1, 3, 0x81]),
                      st.integers(0, 0xFFFF), st.integers(0, 200), st.integers(0, 40)),
       hits=st.lists(st.tuples(st.integers(0, 120), st.integers(0, 255)), max_size=4),
       cut=st.integers(0, 40))
def test_fuzzed_frames_give_a_result_or_a_relay_error(
        data: st.DataObject, to_server: bool, offload: bool,
        vnet: tuple[int, int, int, int, int], hits: list[tuple[int, int]], cut: int) -> None:
    """Random segments with corrupted bytes, truncation and arbitrary offload metadata:
    relay_rewrite returns frames that parse, or raises RelayError; nothing else."""
    a = SNAP_C if to_server else SNAP_S
    seg = data.draw(segments(a.remote, a.local, a.remote_port, a.local_port))
    raw = bytearray(seg.frame())
    for pos, val in hits:
        if pos < len(raw):
            raw[pos] = val
    del raw[max(0, len(raw) - cut):]
    skb = SkBuff.from_bytes(raw, headroom=64)
    (skb.vnet_flags, skb.gso_type, skb.gso_size, skb.csum_start,
     skb.csum_offset) = vnet
    try:
        res = relay_rewrite(skb, make_maps(SNAP_C, SNAP_S)[0 if to_server else 1], offload)
    except RelayError:
        return
    assert res.frames
    for f in res.frames:
        parse(device_bytes(f))


def test_extra_options_reduce_the_segment_size() -> None:
    """SACK blocks on a data segment, or NOPs where timestamps were stripped, take
    room the MSS did not leave for them (RFC 6691)."""
    c2s = make_maps(SNAP_C, SNAP_S)[0]  # server: TS agreed, MSS 536 after TS
    opts = [Opt(1), Opt(1), Opt(8, (1, 2)), Opt(1), Opt(1), Opt(5, (1, 2, 3, 4))]
    skb = make_skb(incoming(SNAP_C, payload=b"s" * 1000, options=opts))
    relay_rewrite(skb, c2s, out_offload=True)
    assert skb.gso_size == 536 - 20
    s_no_ts = dataclasses.replace(SNAP_S, ts_ok=False)
    c2s = make_maps(SNAP_C, s_no_ts)[0]
    res = relay_rewrite(make_skb(incoming(SNAP_C, payload=b"t" * 1000,
                                          options=[Opt(1), Opt(1), Opt(8, (1, 2))])),
                        c2s, out_offload=False)
    assert [len(parse(f.tobytes())[1].data) for f in res.frames] == [524, 476]
    for f in res.frames:
        _, _, raw = check_frame(f.tobytes(), s_no_ts)
        assert raw[20:32] == b"\x01" * 12
