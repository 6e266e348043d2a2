"""ICMP for the stack: echo replies and error messages with RFC 1812 restraint (and
RFC 4443's for ICMPv6), and the token bucket both rate-limit their errors with."""

from __future__ import annotations

from stack.wire import icmp as wicmp

#: Sources that must never receive an ICMP error (RFC 1812 §4.3.2.7).
_BAD_FIRST_OCTETS = {0, 127}


def may_send_error(src: bytes, dst_is_broadcast: bool, is_icmp_error: bool,
                   frag_offset: int) -> bool:
    """RFC 1812 §4.3.2.7 / RFC 1122 §3.2.2: no ICMP error about an ICMP error, about a
    datagram sent to a broadcast or multicast address, about a non-initial fragment,
    or to a source that is not a unicast address."""
    if is_icmp_error or dst_is_broadcast or frag_offset:
        return False
    if src[0] in _BAD_FIRST_OCTETS or src[0] >= 224 or src == b"\xff\xff\xff\xff":
        return False
    return True


class TokenBucket:
    """Rate limit for generated ICMP errors (RFC 1812 §4.3.2.8)."""

    def __init__(self, rate: float = 100.0, burst: float = 50.0) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp: float | None = None

    def take(self, now: float) -> bool:
        """Spend one token if there is one."""
        if self.stamp is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def echo_reply(request: wicmp.IcmpMessage) -> bytes:
    """The reply to an echo request: same identifier, sequence and data (RFC 792)."""
    return wicmp.IcmpMessage(wicmp.ECHO_REPLY, 0, request.rest, request.payload).to_bytes()


def error(type_: int, code: int, original: bytes | memoryview, mtu: int = 0) -> bytes:
    """An ICMP error quoting ``original`` (its IP header and leading payload)."""
    rest = mtu & 0xFFFF if (type_, code) == (wicmp.DEST_UNREACH, wicmp.UNREACH_NEEDFRAG) else 0
    return wicmp.IcmpMessage(type_, code, rest, wicmp.error_payload(original)).to_bytes()


def may_send_error6(src: bytes, to_multicast: bool, is_icmp_error: bool,
                    multicast_exception: bool = False) -> bool:
    """RFC 4443 §2.4 (e): no ICMPv6 error about an ICMPv6 error, or about a packet
    sent to a multicast group (by IPv6 or link-layer address) unless it is a Packet
    Too Big or a Parameter Problem about an option that asks for one
    (``multicast_exception``), or to a source that names no single node (the
    unspecified or a multicast address)."""
    if is_icmp_error or (to_multicast and not multicast_exception):
        return False
    return src != bytes(16) and src[0] != 0xFF
