"""SOCKS codecs: exact bytes, incremental parsing, bounds, round trips and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apps.socks import protocol as p
from apps.socks.protocol import Address, Atyp, Rep, SocksError

# -- exact bytes (RFC 1928 / 1929 / SOCKS4 layouts) ----------------------------------------


def test_greeting_bytes_and_parse() -> None:
    assert p.Greeting((0, 2)).encode() == b"\x05\x02\x00\x02"
    assert p.parse_greeting(b"\x05\x02\x00\x02rest") == (p.Greeting((0, 2)), 4)


def test_request_ipv4_bytes() -> None:
    req = p.Request(p.Command.CONNECT, Address.of("198.19.0.1", 80))
    assert req.encode() == b"\x05\x01\x00\x01\xc6\x13\x00\x01\x00\x50"


def test_request_domain_bytes() -> None:
    req = p.Request(p.Command.CONNECT, Address.of("origin.test", 443))
    assert req.encode() == b"\x05\x01\x00\x03\x0borigin.test\x01\xbb"
    assert p.parse_request(req.encode()) == (req, len(req.encode()))


def test_request_ipv6_parse() -> None:
    raw = b"\x05\x01\x00\x04" + bytes(15) + b"\x01" + b"\x00\x16"
    req, n = p.parse_request(raw)
    assert n == len(raw)
    assert req.address == Address(Atyp.IPV6, "::1", 22)


def test_reply_bytes() -> None:
    rep = p.Reply(Rep.SUCCEEDED, Address.of("198.19.0.2", 40000))
    assert rep.encode() == b"\x05\x00\x00\x01\xc6\x13\x00\x02\x9c\x40"
    assert p.Reply(Rep.HOST_UNREACHABLE).encode() == b"\x05\x04\x00\x01" + bytes(6)


def test_userpass_bytes() -> None:
    raw = p.UserPassRequest(b"alice", b"pw").encode()
    assert raw == b"\x01\x05alice\x02pw"
    assert p.parse_userpass_request(raw) == (p.UserPassRequest(b"alice", b"pw"), len(raw))
    assert p.UserPassResponse(1).encode() == b"\x01\x01"
    assert not p.parse_userpass_response(b"\x01\x01")[0].ok


def test_socks4_request_bytes() -> None:
    raw = p.Socks4Request(1, 80, "198.19.0.1", b"bob").encode()
    assert raw == b"\x04\x01\x00\x50\xc6\x13\x00\x01bob\x00"
    req, n = p.parse_socks4_request(raw)
    assert n == len(raw) and req.hostname is None and req.address == Address.of("198.19.0.1", 80)


def test_socks4a_request_bytes() -> None:
    raw = b"\x04\x01\x00\x50\x00\x00\x00\x07\x00origin.test\x00"
    req, n = p.parse_socks4_request(raw + b"payload")
    assert n == len(raw)
    assert req.hostname == "origin.test" and req.ip == "0.0.0.7"
    assert req.address == Address(Atyp.DOMAINNAME, "origin.test", 80)
    assert req.encode() == raw


def test_socks4_reply_bytes() -> None:
    assert p.Socks4Reply(p.Socks4Status.GRANTED).encode() == b"\x00\x5a" + bytes(6)
    assert p.parse_socks4_reply(b"\x00\x5b\x00\x50\x01\x02\x03\x04") == (
        p.Socks4Reply(0x5B, 80, "1.2.3.4"), 8)


# -- incremental parsing: every strict prefix needs more ---------------------------------

MESSAGES = [
    (p.parse_greeting, p.Greeting((0, 1, 2)).encode()),
    (p.parse_method_selection, p.MethodSelection(2).encode()),
    (p.parse_userpass_request, p.UserPassRequest(b"u" * 255, b"p" * 255).encode()),
    (p.parse_userpass_response, p.UserPassResponse(0).encode()),
    (p.parse_request, p.Request(1, Address.of("a" * 255, 1)).encode()),
    (p.parse_request, p.Request(1, Address.of("2001:db8::1", 1)).encode()),
    (p.parse_reply, p.Reply(0, Address.of("198.18.0.2", 1080)).encode()),
    (p.parse_socks4_request, p.Socks4Request(1, 1, "0.0.0.1", b"u" * 255, "n" * 255).encode()),
    (p.parse_socks4_reply, p.Socks4Reply(0x5A).encode()),
]


@pytest.mark.parametrize("parse,raw", MESSAGES)
def test_prefixes_need_more(parse, raw: bytes) -> None:
    for i in range(len(raw)):
        assert parse(raw[:i]) is None, i
    msg, n = parse(raw + b"\xff\xff")
    assert n == len(raw)
    assert msg.encode() == raw


def test_longest_message_fits_the_bound() -> None:
    assert max(len(raw) for _parse, raw in MESSAGES) <= p.MAX_MESSAGE


# -- typed errors -----------------------------------------------------------------------


@pytest.mark.parametrize("parse,raw,reason", [
    (p.parse_greeting, b"\x04\x01\x00", "bad_version"),
    (p.parse_greeting, b"\x05\x00", "bad_nmethods"),
    (p.parse_request, b"\x04\x01\x00\x01", "bad_version"),
    (p.parse_request, b"\x05\x01\x00\x02\x00", "bad_atyp"),
    (p.parse_request, b"\x05\x01\x00\x03\x00\x00\x50", "bad_name"),
    (p.parse_request, b"\x05\x01\x00\x03\x03a b\x00\x50", "bad_name"),
    (p.parse_userpass_request, b"\x05\x01a\x01b", "bad_version"),
    (p.parse_userpass_request, b"\x01\x00\x01b", "bad_credentials"),
    (p.parse_userpass_request, b"\x01\x01a\x00", "bad_credentials"),
    (p.parse_socks4_request, b"\x05", "bad_version"),
    (p.parse_socks4_request, b"\x04\x01\x00\x50\x01\x02\x03\x04" + b"u" * 256, "userid_too_long"),
    (p.parse_socks4_request, b"\x04\x01\x00\x50\x00\x00\x00\x01\x00" + b"n" * 256,
     "name_too_long"),
    (p.parse_socks4_reply, b"\x04\x5a" + bytes(6), "bad_version"),
])
def test_bad_input_raises_typed_error(parse, raw: bytes, reason: str) -> None:
    with pytest.raises(SocksError) as e:
        parse(raw)
    assert e.value.reason == reason


def test_unknown_atyp_asks_for_address_type_not_supported() -> None:
    with pytest.raises(SocksError) as e:
        p.parse_request(b"\x05\x01\x00\x09")
    assert e.value.reply == Rep.ADDRESS_TYPE_NOT_SUPPORTED


def test_unknown_command_is_parsed_for_the_server_to_refuse() -> None:
    req, _ = p.parse_request(b"\x05\x09\x00\x01\x01\x02\x03\x04\x00\x01")
    assert req.command == 9


@pytest.mark.parametrize("make", [
    lambda: p.UserPassRequest(b"", b"x").encode(),
    lambda: p.UserPassRequest(b"x", b"y" * 256).encode(),
    lambda: p.Greeting(()).encode(),
    lambda: Address(Atyp.DOMAINNAME, "x" * 256, 1),
    lambda: Address(Atyp.DOMAINNAME, "caf\u00e9", 1),
    lambda: Address(Atyp.IPV4, "::1", 1),
    lambda: Address(Atyp.IPV4, "1.2.3.4", 70000),
    lambda: p.Socks4Request(1, 80, "0.0.0.5"),
    lambda: p.Socks4Request(1, 80, "1.2.3.4", hostname="x"),
    lambda: p.Socks4Request(1, 80, "1.2.3.4", b"a\0b"),
])
def test_encoders_reject_what_the_wire_cannot_carry(make) -> None:
    with pytest.raises(SocksError):
        make()


def test_detect_version() -> None:
    assert p.detect_version(b"") is None
    assert p.detect_version(b"\x05") == 5
    assert p.detect_version(b"\x04") == 4
    with pytest.raises(SocksError):
        p.detect_version(b"GET / HTTP/1.1")


def test_error_pickles_with_reason_and_reply() -> None:
    import pickle

    e = pickle.loads(pickle.dumps(SocksError("bad_atyp", "x", reply=8)))
    assert (e.reason, e.detail, e.reply) == ("bad_atyp", "x", 8)


# -- properties -------------------------------------------------------------------------

names = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1,
                max_size=255)
ports = st.integers(0, 0xFFFF)
addresses = st.one_of(
    st.builds(lambda a, port: Address(Atyp.IPV4, str(a), port), st.ip_addresses(v=4), ports),
    st.builds(lambda a, port: Address(Atyp.IPV6, str(a), port), st.ip_addresses(v=6), ports),
    st.builds(lambda n, port: Address(Atyp.DOMAINNAME, n, port), names, ports),
)
fields = st.binary(min_size=1, max_size=255)
messages = st.one_of(
    st.builds(p.Greeting, st.lists(st.integers(0, 255), min_size=1, max_size=255).map(tuple)),
    st.builds(p.UserPassRequest, fields, fields),
    st.builds(p.Request, st.integers(0, 255), addresses),
    st.builds(p.Reply, st.integers(0, 255), addresses),
    st.builds(lambda c, port, a, u: p.Socks4Request(c, port, str(a), u), st.integers(0, 255),
              ports, st.ip_addresses(v=4).filter(lambda a: int(a) > 255 or int(a) == 0),
              st.binary(max_size=255).map(lambda b: b.replace(b"\0", b"x"))),
    st.builds(lambda c, port, x, u, n: p.Socks4Request(c, port, f"0.0.0.{x}", u, n),
              st.integers(0, 255), ports, st.integers(1, 255),
              st.binary(max_size=255).map(lambda b: b.replace(b"\0", b"x")), names),
)
PARSERS = {p.Greeting: p.parse_greeting, p.UserPassRequest: p.parse_userpass_request,
           p.Request: p.parse_request, p.Reply: p.parse_reply,
           p.Socks4Request: p.parse_socks4_request}


@given(messages, st.binary(max_size=16))
def test_round_trip(msg, trailer: bytes) -> None:
    raw = msg.encode()
    assert PARSERS[type(msg)](raw + trailer) == (msg, len(raw))


ALL_PARSERS = [p.parse_greeting, p.parse_method_selection, p.parse_userpass_request,
               p.parse_userpass_response, p.parse_request, p.parse_reply,
               p.parse_socks4_request, p.parse_socks4_reply, p.detect_version]


@given(st.binary(max_size=600))
def test_arbitrary_bytes_give_a_result_or_a_socks_error(raw: bytes) -> None:
    for parse in ALL_PARSERS:
        try:
            got = parse(raw)
        except SocksError:
            continue
        if isinstance(got, tuple):
            msg, n = got
            assert 0 < n <= len(raw)
            assert msg.encode() == raw[:n] or parse is p.parse_request or parse is p.parse_reply


@given(st.binary(min_size=4, max_size=300))
def test_request_with_nonzero_reserved_byte_still_round_trips_the_rest(raw: bytes) -> None:
    raw = b"\x05\x01" + raw
    try:
        got = p.parse_request(raw)
    except SocksError:
        return
    if got is not None:
        req, n = got
        assert req.encode()[3:] == raw[3:n]
