"""UDP over IPv6 against hand-made frames: a datagram for a socket (its source as a
4-tuple), the mandatory checksum (RFC 8200 §8.1), a port unreachable quoting the
datagram, and a datagram sent with its flow label, compared whole."""

from __future__ import annotations

import struct

from stack.udp import ANY, ANY6, UdpLayer
from tests.test_core_ipv6 import OWN, PEER, PEER_MAC, Lab6, csum, eth, icmp6
from tests.test_ipv6_tcp_exact import ip6


def udp6(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes,
         checksum: int | None = None) -> bytes:
    body = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    if checksum is None:
        checksum = csum(src + dst + struct.pack("!I3xB", len(body), 17) + body) or 0xFFFF
    return body[:6] + struct.pack("!H", checksum) + body[8:]


class Udp6(Lab6):
    def __init__(self) -> None:
        super().__init__()
        self.udp = UdpLayer(self.stack, rng=self.stack.rng)
        self.stack.register_protocol(17, self.udp)
        self.settle()
        self.learn_peer()

    def send_udp(self, dport: int, payload: bytes, checksum: int | None = None) -> bytes:
        packet = ip6(PEER, OWN, udp6(PEER, OWN, 5353, dport, payload, checksum), nxt=17)
        self.send(eth(self.mac, PEER_MAC, packet))
        return packet


def test_datagram_for_a_socket_and_the_answer():
    lab = Udp6()
    sock = lab.udp.bind(ANY6, 53)
    v4 = lab.udp.bind(ANY, 53)             # the same port in IPv4: no conflict, no datagram
    lab.send_udp(53, b"query")
    assert sock.pop() == (b"query", ("2001:2:0:1::1", 5353, 0, 0)) and v4.pop() is None
    lab.send_udp(53, b"zero", checksum=0)  # no checksum: an error in IPv6
    assert sock.pop() is None and lab.udp.counters["udp6_zero_checksum"] == 1
    lab.udp.sendto(sock, b"answer", (PEER, 5353), lab.net.now)
    lab.net.flush()
    lab.run()
    (frame,) = lab.probe.take()
    label = lab.stack.ip6.flow_label(OWN, PEER, 17, struct.pack("!HH", 53, 5353))
    assert frame == eth(PEER_MAC, lab.mac, ip6(OWN, PEER, udp6(OWN, PEER, 53, 5353, b"answer"),
                                               label, nxt=17))


def test_no_socket_gets_port_unreachable():
    lab = Udp6()
    packet = lab.send_udp(54, b"nobody")
    (err,) = lab.probe.take()
    assert err == eth(PEER_MAC, lab.mac, ip6(OWN, PEER, icmp6(OWN, PEER, 1, 4, bytes(4) + packet),
                                             nxt=58))
    assert lab.udp.counters["udp_no_port"] == 1


def test_a_datagram_over_the_mtu_leaves_in_fragments():
    lab = Udp6()
    sock = lab.udp.bind(ANY6, 53)
    data = bytes(range(256)) * 12
    lab.udp.sendto(sock, data, (PEER, 5353), lab.net.now)
    lab.net.flush()
    lab.run()
    frags = lab.probe.take()
    assert len(frags) == 3 and all(len(f) <= 14 + 1500 for f in frags)
    assert {f[14 + 6] for f in frags} == {44} and len({f[58:62] for f in frags}) == 1
    frags.sort(key=lambda f: struct.unpack("!H", f[56:58])[0] & ~7)
    assert [struct.unpack("!H", f[56:58])[0] & 1 for f in frags] == [1, 1, 0]
    assert b"".join(f[62:] for f in frags) == udp6(OWN, PEER, 53, 5353, data)
    assert frags[0][14:18] != b"\x60\0\0\0"          # the flow label is the flow's
    assert lab.stack.counters["tx6_fragmented"] == 1
