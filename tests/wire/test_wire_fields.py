"""stack/wire/fields.py: the offsets name the right bytes, the helpers agree with the
codecs, and the modules that read headers in place write no literal offsets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stack.core import flow_key
from stack.skbuff import SkBuff
from stack.wire import fields as f
from stack.wire.ethernet import EthernetHeader
from stack.wire.ipv4 import IPPROTO_TCP, Ipv4Header, endpoint_str, ip_str
from stack.wire.tcp import ACK, ECE, PSH, TcpHeader, TcpOptions, build_segment
from stack.wire.vnet import VNET, VnetFields, restore_vnet, save_vnet

ROOT = Path(__file__).resolve().parents[2]

#: Modules whose header reads and writes go through stack/wire/fields.py.
CONVERTED = [
    "stack/aio.py",
    "stack/core.py",
    "stack/frag.py",
    "stack/gso.py",
    "stack/netdev/faults.py",
    "stack/netdev/memory.py",
    "stack/netdev/netns.py",
    "stack/netdev/offload.py",
    "stack/netdev/pcap.py",
    "stack/netdev/steer.py",
    "stack/netdev/tap.py",
    "stack/netdev/taplock.py",
    "stack/workers.py",
    "splice/oneway.py",
    "splice/relay.py",
    "splice/splicer.py",
]

# A literal TCP/IP header offset: a variable plus one of the offsets of a field
# (Ethernet, IPv4 or TCP, or their sums) used as an index, a slice bound or a
# struct offset (``buf[t + 13]``, ``unpack_from(buf, ip + 10)``), or a slice that
# starts at one (``data[12:14]``).
_OFFSETS = "2|3|4|5|6|7|8|9|10|11|12|13|14|15|16|17|18|19|20|22|23|24|26|30|34|38"
LITERAL_OFFSET = re.compile(
    rf"[\w\])]\s*\+\s*(?:{_OFFSETS})\s*[\]:,)]"
    rf"|\[\s*(?:{_OFFSETS})\s*:")


def _code_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, code without its comment) of every line of ``path``."""
    return [(i, line.split("#", 1)[0])
            for i, line in enumerate(path.read_text().splitlines(), 1)]


@pytest.mark.parametrize("sample", [
    "flags = buf[t + 13]",
    "_L.unpack_from(buf, t + 8)[0]",
    "_H.pack_into(buf, ip + 10, c)",
    "src = bytes(mv[d + 12:d + 16])",
    "etype = data[12:14]",
    "win = buf[skb.data + 14] << 8",
])
def test_the_pattern_finds_literal_offsets(sample: str) -> None:
    assert LITERAL_OFFSET.search(sample)


@pytest.mark.parametrize("sample", [
    "flags = buf[t + TCP_FLAGS]",
    "_L.unpack_from(buf, t + TCP_ACK)[0]",
    "self._ident = (self._ident + 1) & 0xFFFF",
    "buf[opt:opt + _TS_OPT_LEN] = _NOPS[:_TS_OPT_LEN]",
])
def test_the_pattern_spares_named_offsets(sample: str) -> None:
    assert not LITERAL_OFFSET.search(sample)


@pytest.mark.parametrize("module", CONVERTED)
def test_no_literal_header_offsets_outside_wire(module: str) -> None:
    path = ROOT / module
    found = [f"{module}:{i}: {code.strip()}" for i, code in _code_lines(path)
             if LITERAL_OFFSET.search(code)]
    assert found == []


def _frame(opts: TcpOptions | None = None) -> tuple[bytes, TcpHeader, Ipv4Header]:
    src, dst = bytes((198, 18, 0, 1)), bytes((198, 19, 0, 1))
    tcp = TcpHeader(40000, 80, 0x01020304, 0x0A0B0C0D, ACK | PSH | ECE, 0x1234,
                    urgent=0x0BAD, options=opts or TcpOptions())
    seg = build_segment(src, dst, tcp, b"payload")
    ip = Ipv4Header(src, dst, IPPROTO_TCP, ttl=61, ident=0x4242, df=True)
    eth = EthernetHeader(b"\x02\0\0\0\0\2", b"\x02\0\0\0\0\1", 0x0800)
    return eth.to_bytes() + ip.to_bytes(len(seg)) + seg, tcp, ip


def test_offsets_name_the_fields_the_codecs_write() -> None:
    frame, tcp, ip = _frame()
    b, t = frame, f.FRAME_TCP
    assert b[f.ETH_DST:f.ETH_SRC] == b"\x02\0\0\0\0\2"
    assert b[f.ETH_SRC:f.ETH_TYPE] == b"\x02\0\0\0\0\1"
    assert f.U16.unpack_from(b, f.ETH_TYPE)[0] == 0x0800
    p = f.FRAME_IP
    assert b[p + f.IP_VIHL] == f.IP_VIHL_NO_OPTIONS == b[f.FRAME_IP_VIHL]
    assert f.U16.unpack_from(b, p + f.IP_TOTLEN)[0] == len(frame) - f.ETH_HLEN
    assert f.U16.unpack_from(b, p + f.IP_IDENT)[0] == 0x4242
    assert f.U16.unpack_from(b, p + f.IP_FRAG)[0] == f.IP_FLAG_DF
    assert b[p + f.IP_TTL] == 61
    assert b[p + f.IP_PROTO] == IPPROTO_TCP == b[f.FRAME_IP_PROTO]
    assert b[p + f.IP_SRC:p + f.IP_DST] == ip.src
    assert b[p + f.IP_DST:p + f.IP_MIN_HLEN] == ip.dst == b[f.FRAME_IP_DST:f.FRAME_TCP]
    assert f.U16.unpack_from(b, t + f.TCP_SPORT)[0] == tcp.sport
    assert f.U16.unpack_from(b, t + f.TCP_DPORT)[0] == tcp.dport
    assert f.tcp_seq(b, t) == tcp.seq and f.tcp_ack(b, t) == tcp.ack
    assert f.TCP_PORTS_SEQ_ACK.unpack_from(b, t) == (tcp.sport, tcp.dport, tcp.seq, tcp.ack)
    assert b[t + f.TCP_FLAGS] == tcp.flags
    assert f.tcp_window(b, t) == tcp.window and f.TCP_WINDOW == f.TCP_WIN
    assert f.U16.unpack_from(b, t + f.TCP_URP)[0] == tcp.urgent
    assert f.ip_header_len(b, p) == f.IP_MIN_HLEN
    assert f.tcp_header_len(b, t) == f.TCP_MIN_HLEN == f.TCP_OPTIONS


def test_header_lengths_follow_ihl_and_data_offset() -> None:
    frame, _tcp, _ip = _frame(TcpOptions(timestamp=(1, 2)))
    assert f.tcp_header_len(frame, f.FRAME_TCP) == 32
    opt = Ipv4Header(b"\1\2\3\4", b"\5\6\7\x08", IPPROTO_TCP, options=b"\x01\x01\x01\x01")
    assert f.ip_header_len(opt.to_bytes(0), 0) == 24


def test_the_flow_key_is_the_frame_bytes_the_core_looks_up() -> None:
    frame, tcp, ip = _frame()
    key = frame[f.FRAME_FLOW_KEY:f.FRAME_FLOW_KEY_END]
    assert f.flow_key(ip.src, ip.dst, tcp.sport, tcp.dport) == key

    class Conn:  # the receiving end of that segment, as a TCB names it
        local, local_port, remote, remote_port = ip.dst, tcp.dport, ip.src, tcp.sport

    assert flow_key(Conn()) == key


def test_vnet_save_restore_round_trip_in_vnet_order() -> None:
    skb = SkBuff(64)
    skb.vnet_flags, skb.gso_type, skb.hdr_len = 1, 0x81, 66
    skb.gso_size, skb.csum_start, skb.csum_offset = 1448, 34, 16
    saved: VnetFields = save_vnet(skb)
    assert VNET.unpack(VNET.pack(*saved)) == saved == (1, 0x81, 66, 1448, 34, 16)
    other = SkBuff(64)
    restore_vnet(other, saved)
    assert save_vnet(other) == saved
    other.clear_vnet()
    restore_vnet(other, VNET.unpack(VNET.pack(*saved)))
    assert save_vnet(other) == saved


def test_addresses_format_one_way() -> None:
    assert ip_str(bytes((198, 18, 0, 2))) == "198.18.0.2"
    assert endpoint_str(bytes((198, 18, 0, 2)), 1080) == "198.18.0.2:1080"
