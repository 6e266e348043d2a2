"""Hypothesis strategies for valid wire values (shared by the tests/wire modules)."""

from __future__ import annotations

from hypothesis import strategies as st

from stack.wire import arp, ethernet, icmp, ipv4, tcp, vnet

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
macs = st.binary(min_size=6, max_size=6)
addrs = st.binary(min_size=4, max_size=4)
payloads = st.binary(max_size=200)

eth_headers = st.builds(ethernet.EthernetHeader, macs, macs, u16)
arp_packets = st.builds(arp.ArpPacket, st.sampled_from([arp.ARP_REQUEST, arp.ARP_REPLY]),
                        macs, addrs, macs, addrs)
vnet_headers = st.builds(vnet.VirtioNetHdr, u8, u8, u16, u16, u16, u16)
icmp_messages = st.builds(icmp.IcmpMessage, u8, u8, u32, payloads)


@st.composite
def ipv4_options(draw: st.DrawFn) -> bytes:
    """Valid option bytes (NOPs and TLVs), zero-padded to a multiple of 4, <= 40 bytes."""
    out = bytearray()
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            item = b"\x01"
        else:
            data = draw(st.binary(max_size=8))
            item = bytes((draw(st.integers(2, 255)), 2 + len(data))) + data
        if len(out) + len(item) > 40:
            break
        out += item
    out += bytes(-len(out) % 4)
    return bytes(out)


ipv4_headers = st.builds(
    ipv4.Ipv4Header, addrs, addrs, u8, ttl=u8, tos=u8, ident=u16, df=st.booleans(),
    mf=st.booleans(), frag_offset=st.integers(0, 0x1FFF).map(lambda x: x * 8),
    options=ipv4_options())


@st.composite
def tcp_options(draw: st.DrawFn) -> tcp.TcpOptions:
    """Canonical TcpOptions whose encoding fits in 40 bytes."""
    opts = tcp.TcpOptions(
        mss=draw(st.none() | u16), wscale=draw(st.none() | u8),
        sack_permitted=draw(st.booleans()), timestamp=draw(st.none() | st.tuples(u32, u32)))
    room = tcp.TCP_MAX_OPTLEN - len(tcp.emit_options(opts))
    if room >= 12 and draw(st.booleans()):
        n = draw(st.integers(1, min(4, (room - 4) // 8)))
        opts.sack_blocks = tuple(draw(st.tuples(u32, u32)) for _ in range(n))
        room -= 4 + 8 * n
    unknown = []
    kinds = st.integers(6, 255).filter(lambda k: k != tcp.OPT_TIMESTAMP)
    while room >= 4 and draw(st.booleans()):
        data = draw(st.binary(max_size=room - 4))
        unknown.append((draw(kinds), data))
        room -= 2 + len(data) + 3  # worst case NOP padding
    opts.unknown = tuple(unknown)
    return opts


@st.composite
def tcp_headers(draw: st.DrawFn) -> tcp.TcpHeader:
    """Canonical TcpHeader: checksum 0 and header_len as emitted."""
    opts = draw(tcp_options())
    return tcp.TcpHeader(draw(u16), draw(u16), draw(u32), draw(u32), draw(u8), draw(u16),
                         draw(u16), 0, opts, tcp.TCP_MIN_HLEN + len(tcp.emit_options(opts)))
