"""make_maps and map_window: the docs/splice.md §4/§5 base points, modes and window rules,
and round trips through both directions across the 2**32 wrap."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splice.mapping import (
    SACK_MAP,
    SACK_STRIP,
    TS_MAP,
    TS_STRIP,
    ConnSnapshot,
    DirectionMap,
    make_maps,
    map_window,
)
from splice.relay import relay_rewrite
from tests.splice.frames import Opt, Segment, make_skb, parse
from tests.splice.strategies import ACK, MASK, seqs, snapshots

C = ConnSnapshot(b"\xc6\x12\x00\x02", 1080, b"\xc6\x12\x00\x01", 40000, snd_nxt=100,
                 rcv_nxt=0xFFFFFFF0, ts_ok=True, ts_recent=7, ts_sent=0xFFFFFFFF,
                 sack_ok=True, snd_wscale=7, rcv_wscale=0, mss=1460)
S = ConnSnapshot(b"\xc6\x13\x00\x02", 50000, b"\xc6\x13\x00\x01", 80, snd_nxt=0xFFFFFF00,
                 rcv_nxt=3, ts_ok=True, ts_recent=0x80000000, ts_sent=1, sack_ok=True,
                 snd_wscale=None, rcv_wscale=7, mss=536)


def test_base_points_map_onto_each_other() -> None:
    """At splice time the next expected byte of one side is the next sent on the other."""
    c2s, s2c = make_maps(C, S)
    assert (C.rcv_nxt + c2s.seq_delta) & MASK == S.snd_nxt
    assert (C.snd_nxt + c2s.ack_delta) & MASK == S.rcv_nxt
    assert (S.rcv_nxt + s2c.seq_delta) & MASK == C.snd_nxt
    assert (S.snd_nxt + s2c.ack_delta) & MASK == C.rcv_nxt
    assert (C.ts_recent + c2s.tsval_delta) & MASK == S.ts_sent
    assert (C.ts_sent + c2s.tsecr_delta) & MASK == S.ts_recent
    assert (c2s.src, c2s.dst, c2s.sport, c2s.dport) == (S.local, S.remote, 50000, 80)
    assert (s2c.src, s2c.dst, s2c.sport, s2c.dport) == (C.local, C.remote, 1080, 40000)
    assert (c2s.win_in_shift, c2s.win_out_shift, c2s.out_mss) == (7, 7, 536)
    assert (s2c.win_in_shift, s2c.win_out_shift, s2c.out_mss) == (0, 0, 1460)
    # Both MSS values already leave room for the timestamp option.
    assert c2s.out_opt_room == s2c.out_opt_room == 12
    assert c2s.ts_mode == s2c.ts_mode == TS_MAP
    assert c2s.sack_mode == s2c.sack_mode == SACK_MAP


def test_option_room_follows_the_outgoing_connections_timestamps() -> None:
    c2s, s2c = make_maps(C, dataclasses.replace(S, ts_ok=False))
    assert (c2s.out_opt_room, s2c.out_opt_room) == (0, 12)


@pytest.mark.parametrize("c_ts,s_ts,mode", [(True, True, TS_MAP), (True, False, TS_STRIP),
                                            (False, True, TS_STRIP),
                                            (False, False, TS_STRIP)])
def test_timestamp_mode(c_ts: bool, s_ts: bool, mode: int) -> None:
    c2s, s2c = make_maps(dataclasses.replace(C, ts_ok=c_ts), dataclasses.replace(S, ts_ok=s_ts))
    assert c2s.ts_mode == s2c.ts_mode == mode


@pytest.mark.parametrize("c_sack,s_sack,mode", [(True, True, SACK_MAP),
                                                (True, False, SACK_STRIP),
                                                (False, True, SACK_STRIP)])
def test_sack_mode(c_sack: bool, s_sack: bool, mode: int) -> None:
    c2s, s2c = make_maps(dataclasses.replace(C, sack_ok=c_sack),
                         dataclasses.replace(S, sack_ok=s_sack))
    assert c2s.sack_mode == s2c.sack_mode == mode


@pytest.mark.parametrize("change", [{"snd_wscale": 15}, {"rcv_wscale": -1}, {"mss": 0},
                                    {"local": b"\x01\x02"}, {"local_port": 70000}])
def test_bad_snapshot_is_a_value_error(change: dict) -> None:
    with pytest.raises(ValueError):
        make_maps(C, dataclasses.replace(S, **change))


def _map(in_shift: int, out_shift: int) -> DirectionMap:
    c2s, _ = make_maps(dataclasses.replace(C, snd_wscale=in_shift),
                       dataclasses.replace(S, rcv_wscale=out_shift))
    return c2s


@settings(max_examples=500, deadline=None)
@given(field=st.integers(0, 0xFFFF), in_shift=st.integers(0, 14), out_shift=st.integers(0, 14))
def test_window_never_overstates_and_is_the_largest_that_does_not(
        field: int, in_shift: int, out_shift: int) -> None:
    m = _map(in_shift, out_shift)
    out = map_window(field, m)
    advertised = field << in_shift
    assert 0 <= out <= 0xFFFF
    assert out << out_shift <= advertised
    # Rounded down, not further: one more unit would overstate (unless clamped).
    assert out == 0xFFFF or (out + 1) << out_shift > advertised


def test_window_examples() -> None:
    assert map_window(1000, _map(7, 0)) == 0xFFFF  # 128000 bytes, unscaled peer: clamp
    assert map_window(3, _map(0, 2)) == 0  # 3 bytes in units of 4: round down to 0
    assert map_window(5, _map(3, 3)) == 5  # same scale: unchanged
    assert map_window(0xFFFF, _map(0, 0)) == 0xFFFF


# -- round trips through real frames ------------------------------------------
def _from_peer(a: ConnSnapshot, **kw: object) -> Segment:
    base = dict(src=a.remote, dst=a.local, sport=a.remote_port, dport=a.local_port,
                seq=0, ack=0, flags=ACK, window=100)
    base.update(kw)
    return Segment(**base)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(c=snapshots(), s=snapshots(), seq=seqs, tsval=seqs, n=st.integers(0, 1400),
       hole=st.integers(1, 1 << 20))
def test_round_trip_acknowledges_what_was_sent(c: ConnSnapshot, s: ConnSnapshot, seq: int,
                                               tsval: int, n: int, hole: int) -> None:
    """The client sends n bytes at seq with TSval; the server acknowledges them, echoes
    the timestamp and SACKs a later block: the client sees its own numbers back."""
    c = dataclasses.replace(c, ts_ok=True, sack_ok=True, mss=9000)
    s = dataclasses.replace(s, ts_ok=True, sack_ok=True, mss=9000)
    c2s, s2c = make_maps(c, s)
    up = make_skb(_from_peer(c, seq=seq, payload=b"u" * n,
                             options=[Opt(1), Opt(1), Opt(8, (tsval, 0))]))
    relay_rewrite(up, c2s, out_offload=True)
    _, t_up = parse(up.tobytes())
    seen_ts = int.from_bytes(t_up.opts[4:8], "big")
    end = (t_up.seq + n) & MASK
    sack = ((end + hole) & MASK, (end + 2 * hole) & MASK)
    down = make_skb(_from_peer(s, ack=end, options=[
        Opt(1), Opt(1), Opt(8, (5, seen_ts)), Opt(1), Opt(1), Opt(5, sack)]))
    relay_rewrite(down, s2c, out_offload=True)
    _, t_down = parse(down.tobytes())
    assert t_down.ack == (seq + n) & MASK
    assert int.from_bytes(t_down.opts[8:12], "big") == tsval
    left = int.from_bytes(t_down.opts[16:20], "big")
    right = int.from_bytes(t_down.opts[20:24], "big")
    assert (left, right) == ((seq + n + hole) & MASK, (seq + n + 2 * hole) & MASK)


@given(c=snapshots(), s=snapshots())
def test_deltas_cancel_across_directions(c: ConnSnapshot, s: ConnSnapshot) -> None:
    """Data numbers going one way and the acknowledgements coming back are inverse maps."""
    c2s, s2c = make_maps(c, s)
    assert (c2s.seq_delta + s2c.ack_delta) & MASK == 0
    assert (s2c.seq_delta + c2s.ack_delta) & MASK == 0
    if c.ts_ok and s.ts_ok:
        assert (c2s.tsval_delta + s2c.tsecr_delta) & MASK == 0
        assert (s2c.tsval_delta + c2s.tsecr_delta) & MASK == 0
