"""The kit's strategies generate valid things: models the link accepts, options the
codec round-trips, segments that parse and verify, application scripts that obey
their own rules."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from stack.netdev.faults import FaultModel
from stack.testing.strategies import (
    AppAction,
    app_scripts,
    fault_models,
    segments,
    tcp_option_sets,
)
from stack.wire.tcp import RST, SYN, TcpHeader, emit_options, parse_options, verify_tcp_checksum

SRC, DST = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])


@given(fault_models(max_loss=0.2, max_delay=0.1))
def test_fault_models_are_valid_and_bounded(model: FaultModel):
    assert 0 <= model.loss <= 0.2 and 0 <= model.duplicate <= 0.05
    assert 0 <= model.reorder <= 0.1 and 0 <= model.corrupt <= 0.02
    assert 0 <= model.jitter <= model.delay / 4 + 1e-12 and model.delay <= 0.1
    # The text form (the CLI's --impair, 6 significant digits) parses back.
    again = FaultModel.parse(str(model))
    assert abs(again.loss - model.loss) <= 1e-6 and abs(again.delay - model.delay) <= 1e-6


@given(fault_models(max_loss=0, max_reorder=0, max_duplicate=0, max_corrupt=0, max_delay=0))
def test_fault_models_can_be_clean(model: FaultModel):
    assert model.is_clean


@given(st.booleans().flatmap(lambda syn: st.tuples(st.just(syn), tcp_option_sets(syn=syn))))
def test_option_sets_round_trip_through_the_codec(case):
    syn, opts = case
    raw = emit_options(opts)
    assert len(raw) <= 40 and len(raw) % 4 == 0
    back = parse_options(raw)
    assert back == opts
    if not syn:
        assert opts.mss is None and opts.wscale is None and not opts.sack_permitted
    else:
        assert not opts.sack_blocks
        assert opts.wscale is None or 0 <= opts.wscale <= 14


@given(segments(sport=5000, max_payload=300))
def test_segments_parse_and_verify(gen):
    raw = gen.tcp_bytes(SRC, DST)
    assert verify_tcp_checksum(SRC, DST, raw)
    hdr = TcpHeader.parse(raw)
    assert hdr.sport == 5000 and hdr.flags == gen.hdr.flags
    assert (hdr.seq, hdr.ack, hdr.window) == (gen.hdr.seq, gen.hdr.ack, gen.hdr.window)
    assert hdr.options == gen.hdr.options
    assert raw[hdr.header_len:] == gen.payload
    if gen.hdr.flags & (SYN | RST):
        assert gen.payload == b""
    frame = gen.frame(SRC, DST, b"\x02" * 6, b"\x04" * 6)
    assert frame[12:14] == b"\x08\x00" and frame[34:] == raw


@settings(max_examples=300)
@given(app_scripts(max_total=200_000))
def test_app_scripts_obey_their_rules(steps: tuple[AppAction, ...]):
    kinds = [s.kind for s in steps]
    assert kinds.count("shutdown") <= 1 and kinds.count("close") <= 1
    if "close" in kinds:
        assert kinds[-1] == "close"
    if "shutdown" in kinds:
        assert "write" not in kinds[kinds.index("shutdown"):]
    assert sum(s.n for s in steps if s.kind == "write") <= 200_000
    assert all(s.n > 0 for s in steps if s.kind in ("write", "read", "wait"))
