"""A sans-I/O DHCPv4 client: RFC 2131 state machine, RFC 2132 options.

The client never reads a clock and never does I/O. Every entry point takes ``now``;
what to send is left in ``outbox`` (``drain()`` takes it), what happened is left in
``events`` (Bound, Renewed, Lost), when to be woken is ``next_deadline()``.

Wire format. The fixed 236-byte BOOTP header and the magic cookie are packed and
unpacked with ``dpkt.dhcp.DHCP``. The option walk is done here (``parse_options``):
dpkt's walk silently accepts an option whose length runs past the end of the message
and raises IndexError on a lone code byte, and this client must reject both.

Decisions, for the integrator and the operator:

- Replies are accepted from 240 bytes (header + cookie) up to ``max_message_size - 28``
  bytes (the size advertised in option 57, less the IP and UDP headers, RFC 2132 §9.10);
  shorter is ``dhcp_truncated``, longer ``dhcp_too_long``.
- Options must be well formed: each length inside the message, the list ends with
  option 255, only pad (0) after it. Repeated options are concatenated (RFC 3396).
  Option overload (52, RFC 2132 §9.3) is honoured: the ``file`` and then ``sname``
  fields are walked as further option areas. Any fault drops the whole message
  (``dhcp_bad_option``).
- An OFFER or ACK is dropped (counted) without a server identifier (54,
  ``dhcp_no_server_id``), without a subnet mask (1, ``dhcp_no_mask``: no classful guess),
  with a mask that is not contiguous or has a prefix outside 1..30 (``dhcp_bad_mask``),
  with a yiaddr that is not a unicast host address of that subnet (``dhcp_bad_yiaddr``:
  0/8, 127/8, 224/4 multicast, 240/4 reserved including 255.255.255.255, the network or
  broadcast address), without a lease time (51, ``dhcp_no_lease_time``) or with one
  shorter than ``min_lease`` (default 10 s, ``dhcp_bad_lease_time``; no clamping: a
  server that hands out 0-second leases is broken, not slow).
- Optional facts are dropped one by one, never the whole message: routers outside
  the subnet (``dhcp_router_ignored``), DNS servers that are not unicast or past the
  third (``dhcp_dns_ignored``), an MTU outside 576..9000 (``dhcp_bad_mtu``), a domain
  that is not a plain host name of at most 253 characters (``dhcp_bad_domain``).
  T1/T2 that do not satisfy 0 < T1 < T2 < lease fall back to 0.5 and 0.875 of the
  lease (RFC 2131 §4.4.5), counted ``dhcp_bad_t1t2``. An infinite lease (0xFFFFFFFF)
  has lease_time, t1 and t2 all ``math.inf``: it is never renewed.
- ``Lease.obtained`` is the time the first REQUEST of the exchange that got the ACK
  was sent (RFC 2131 §4.4.1 counts from "the time at which the original request was
  sent"); retransmissions share the xid, so this is the safe lower bound.
- The ACK in REQUESTING must carry the address requested (``dhcp_ack_mismatch``).
  ARP probing of the address (RFC 2131 §4.4.1) is the caller's: on conflict call
  ``decline(now)``, which sends DHCPDECLINE and restarts after 10 s (§3.1 step 5).
- INIT-REBOOT is not implemented: every start begins with a DISCOVER.
"""

from __future__ import annotations

import collections
import enum
import math
import random
import re
import struct
from dataclasses import dataclass

import dpkt
import dpkt.dhcp as dd

CLIENT_PORT = 68
SERVER_PORT = 67
ZERO = b"\x00\x00\x00\x00"
BROADCAST = b"\xff\xff\xff\xff"
BROADCAST_FLAG = 0x8000        # RFC 2131 §2 figure 2
BOOTP_MIN_LEN = 300            # RFC 1542 §2.1: relays may drop shorter requests
HEADER_LEN = 240               # 236-byte BOOTP header + 4-byte magic cookie
INFINITE = 0xFFFFFFFF          # RFC 2132 §9.2
PARAMETER_REQUEST_LIST = bytes([1, 3, 6, 15, 26, 51, 54, 58, 59])

OPT_PAD, OPT_END, OPT_OVERLOAD = 0, 255, 52

_DOMAIN_RE = re.compile(rb"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_.])?\.?")
_PARSE_ERRORS = (dpkt.UnpackError, dpkt.NeedData, struct.error, ValueError, IndexError)


@dataclass(frozen=True, slots=True)
class DhcpConfig:
    """Timers and limits of the client; the defaults are RFC 2131's."""

    initial_retransmit: float = 4.0   # §4.1: first retransmission after 4 s ...
    max_retransmit: float = 64.0      # ... doubling up to 64 s
    jitter: float = 1.0               # ... each randomized by uniform(-1, +1)
    request_retries: int = 4          # REQUESTING: retransmissions before back to INIT
    min_retransmit: float = 60.0      # §4.4.5: RENEWING/REBINDING minimum wait
    min_lease: float = 10.0           # shorter leases are refused
    nak_backoff: float = 2.0          # pause before a new DISCOVER after a NAK
    decline_backoff: float = 10.0     # §3.1 step 5: at least ten seconds after DECLINE
    max_message_size: int = 1500      # option 57 (RFC 2132 §9.10), IP datagram size
    max_events: int = 64
    max_outbox: int = 16


@dataclass(frozen=True, slots=True)
class Lease:
    """A validated lease; times are relative to ``obtained`` (seconds)."""

    addr: bytes
    prefixlen: int
    router: bytes | None
    dns: tuple[bytes, ...]
    server_id: bytes
    lease_time: float
    t1: float
    t2: float
    obtained: float
    mtu: int | None = None
    domain: str | None = None

    @property
    def expires(self) -> float:
        """Absolute time the lease ends."""
        return self.obtained + self.lease_time


@dataclass(frozen=True, slots=True)
class DhcpSend:
    """A UDP datagram to send from port 68 to port 67.

    ``dst`` 255.255.255.255 goes to the Ethernet broadcast address; any other ``dst``
    is the server, reached by the ordinary route and neighbour lookup.
    """

    payload: bytes
    src: bytes
    dst: bytes


@dataclass(frozen=True, slots=True)
class Bound:
    """A lease was obtained: configure the address, route and resolvers."""

    lease: Lease


@dataclass(frozen=True, slots=True)
class Renewed:
    """The lease was extended (same address); times may have changed."""

    lease: Lease


@dataclass(frozen=True, slots=True)
class Lost:
    """The lease ended: stop using the address (reason: expired, nak, declined, ...)."""

    lease: Lease
    reason: str


DhcpEvent = Bound | Renewed | Lost


class DhcpState(enum.Enum):
    """RFC 2131 figure 5 client states (without INIT-REBOOT), plus RELEASED."""

    INIT = "init"
    SELECTING = "selecting"
    REQUESTING = "requesting"
    BOUND = "bound"
    RENEWING = "renewing"
    REBINDING = "rebinding"
    RELEASED = "released"


_S = DhcpState
# The only transitions there are (RFC 2131 figure 5); _set_state refuses any other.
TRANSITIONS: dict[DhcpState, frozenset[DhcpState]] = {
    _S.INIT: frozenset({_S.SELECTING, _S.RELEASED}),
    _S.SELECTING: frozenset({_S.REQUESTING, _S.RELEASED}),
    _S.REQUESTING: frozenset({_S.BOUND, _S.INIT, _S.RELEASED}),
    _S.BOUND: frozenset({_S.RENEWING, _S.REBINDING, _S.INIT, _S.RELEASED}),
    _S.RENEWING: frozenset({_S.BOUND, _S.REBINDING, _S.INIT, _S.RELEASED}),
    _S.REBINDING: frozenset({_S.BOUND, _S.INIT, _S.RELEASED}),
    _S.RELEASED: frozenset({_S.INIT}),
}


class DhcpDropped(Exception):
    """A received message is refused; ``reason`` is the counter name."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DhcpMessage:
    """A parsed BOOTP/DHCP message: the header fields the client uses and its options."""

    op: int
    xid: int
    chaddr: bytes
    yiaddr: bytes
    msg_type: int
    options: dict[int, bytes]


# ---------------------------------------------------------------- wire

def parse_options(area: bytes, options: dict[int, bytes], *, need_end: bool = True) -> None:
    """Walk one option area (RFC 2132 §2) into ``options``, concatenating repeats.

    Raises DhcpDropped("dhcp_bad_option") for a length past the end, a missing end
    option, or anything but pad after the end.
    """
    i, n = 0, len(area)
    while i < n:
        code = area[i]
        if code == OPT_PAD:
            i += 1
            continue
        if code == OPT_END:
            if area[i + 1:].strip(b"\x00"):
                raise DhcpDropped("dhcp_bad_option")
            return
        if i + 1 >= n or i + 2 + area[i + 1] > n:
            raise DhcpDropped("dhcp_bad_option")
        length = area[i + 1]
        # RFC 3396 §7: an option that appears more than once is one long option.
        options[code] = options.get(code, b"") + area[i + 2:i + 2 + length]
        i += 2 + length
    if need_end:
        raise DhcpDropped("dhcp_bad_option")


def _overloaded(raw: bytes, options: dict[int, bytes]) -> None:
    """RFC 2132 §9.3: option 52 says ``file`` (1), ``sname`` (2) or both (3) hold options."""
    value = options.pop(OPT_OVERLOAD, None)
    if value is None:
        return
    if len(value) != 1 or value[0] not in (1, 2, 3):
        raise DhcpDropped("dhcp_bad_option")
    # RFC 2131 §4.1: the options field first, then 'file', then 'sname'.
    if value[0] & 1:
        parse_options(raw[108:236], options)
    if value[0] & 2:
        parse_options(raw[44:108], options)
    options.pop(OPT_OVERLOAD, None)


def parse_message(payload: bytes | memoryview, max_len: int) -> DhcpMessage:
    """Parse a UDP payload that arrived on port 68; raises DhcpDropped with the reason."""
    if len(payload) < HEADER_LEN:
        raise DhcpDropped("dhcp_truncated")
    if len(payload) > max_len:
        raise DhcpDropped("dhcp_too_long")
    raw = bytes(payload)
    try:
        # Only the fixed part goes to dpkt; the options are walked by parse_options.
        hdr = dd.DHCP(raw[:HEADER_LEN])
    except _PARSE_ERRORS as e:
        raise DhcpDropped("dhcp_malformed") from e
    if hdr.magic != dd.DHCP_MAGIC:
        raise DhcpDropped("dhcp_bad_cookie")
    if hdr.op != dd.DHCP_OP_REPLY:
        raise DhcpDropped("dhcp_not_reply")
    options: dict[int, bytes] = {}
    parse_options(raw[HEADER_LEN:], options)
    _overloaded(raw, options)
    mtype = options.get(dd.DHCP_OPT_MSGTYPE, b"")
    if len(mtype) != 1:
        raise DhcpDropped("dhcp_no_msg_type")
    chaddr = raw[28:28 + hdr.hln] if hdr.hrd == 1 else b""
    return DhcpMessage(op=hdr.op, xid=hdr.xid, chaddr=chaddr, yiaddr=raw[16:20],
                       msg_type=mtype[0], options=options)


def build_message(msg_type: int, xid: int, mac: bytes, options: list[tuple[int, bytes]], *,
                  secs: int = 0, flags: int = 0, ciaddr: bytes = ZERO) -> bytes:
    """A BOOTREQUEST carrying DHCP message ``msg_type`` and ``options`` (53 is added)."""
    pkt = dd.DHCP(op=dd.DHCP_OP_REQUEST, hrd=1, hln=len(mac), hops=0, xid=xid,
                  secs=min(max(secs, 0), 0xFFFF), flags=flags,
                  ciaddr=int.from_bytes(ciaddr, "big"), chaddr=mac.ljust(16, b"\x00"),
                  opts=[(dd.DHCP_OPT_MSGTYPE, bytes([msg_type])), *options])
    return bytes(pkt).ljust(BOOTP_MIN_LEN, b"\x00")


# ---------------------------------------------------------------- validation

def is_unicast(addr: int) -> bool:
    """Not 0/8 ("this network"), 127/8, 224/4 multicast or 240/4 (RFC 1122 §3.2.1.3)."""
    first = addr >> 24
    return first not in (0, 127) and first < 224


def prefix_from_mask(mask: bytes) -> int | None:
    """The prefix length of a contiguous 4-byte mask in 1..30, else None."""
    if len(mask) != 4:
        return None
    m = int.from_bytes(mask, "big")
    host = ~m & 0xFFFFFFFF
    if host & (host + 1):          # the host bits are not one run of ones at the bottom
        return None
    plen = 32 - host.bit_length()
    return plen if 1 <= plen <= 30 else None


def _u32(options: dict[int, bytes], code: int) -> int | None:
    value = options.get(code)
    return int.from_bytes(value, "big") if value is not None and len(value) == 4 else None


def _times(options: dict[int, bytes], counters: collections.Counter[str],
           min_lease: float) -> tuple[float, float, float]:
    """(lease, t1, t2) from options 51, 58, 59 (RFC 2132 §9.2, §9.11, §9.12)."""
    raw = _u32(options, dd.DHCP_OPT_LEASE_SEC)
    if raw is None:
        raise DhcpDropped("dhcp_no_lease_time")
    if raw == INFINITE:
        return math.inf, math.inf, math.inf
    if raw < min_lease:
        raise DhcpDropped("dhcp_bad_lease_time")
    lease = float(raw)
    t1_raw, t2_raw = _u32(options, dd.DHCP_OPT_RENEWTIME), _u32(options, dd.DHCP_OPT_REBINDTIME)
    t1 = float(t1_raw) if t1_raw is not None else 0.5 * lease
    t2 = float(t2_raw) if t2_raw is not None else 0.875 * lease
    if not 0 < t1 < t2 < lease:
        counters["dhcp_bad_t1t2"] += 1
        t1, t2 = 0.5 * lease, 0.875 * lease
    return lease, t1, t2


def _addresses(value: bytes | None) -> list[int]:
    if not value or len(value) % 4:
        return []
    return [int.from_bytes(value[i:i + 4], "big") for i in range(0, len(value), 4)]


def _router(options: dict[int, bytes], addr: int, plen: int,
            counters: collections.Counter[str]) -> bytes | None:
    """The first router of option 3 that is a host of the leased subnet (RFC 2132 §3.5)."""
    mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
    net, bcast = addr & mask, (addr & mask) | (~mask & 0xFFFFFFFF)
    chosen: bytes | None = None
    for r in _addresses(options.get(dd.DHCP_OPT_ROUTER)):
        inside = (r & mask) == net and r not in (net, bcast, addr) and is_unicast(r)
        if chosen is None and inside:
            chosen = r.to_bytes(4, "big")
        else:
            counters["dhcp_router_ignored"] += 1
    return chosen


def _dns(options: dict[int, bytes], counters: collections.Counter[str]) -> tuple[bytes, ...]:
    """At most three unicast resolvers from option 6 (RFC 2132 §3.8)."""
    kept: list[bytes] = []
    for d in _addresses(options.get(dd.DHCP_OPT_DNS_SVRS)):
        if len(kept) < 3 and is_unicast(d):
            kept.append(d.to_bytes(4, "big"))
        else:
            counters["dhcp_dns_ignored"] += 1
    return tuple(kept)


def _extras(options: dict[int, bytes],
            counters: collections.Counter[str]) -> tuple[int | None, str | None]:
    """Interface MTU (option 26, RFC 2132 §5.1) and domain name (option 15, §3.17)."""
    mtu: int | None = None
    raw_mtu = options.get(dd.DHCP_OPT_MTUSIZE)
    if raw_mtu is not None:
        value = int.from_bytes(raw_mtu, "big") if len(raw_mtu) == 2 else 0
        if 576 <= value <= 9000:
            mtu = value
        else:
            counters["dhcp_bad_mtu"] += 1
    domain: str | None = None
    raw_domain = options.get(dd.DHCP_OPT_DOMAIN)
    if raw_domain is not None:
        # Some servers NUL-terminate strings, which RFC 2132 §2 says they should not.
        name = raw_domain.rstrip(b"\x00")
        if len(name) <= 253 and _DOMAIN_RE.fullmatch(name):
            domain = name.decode("ascii")
        else:
            counters["dhcp_bad_domain"] += 1
    return mtu, domain


def lease_from_message(msg: DhcpMessage, obtained: float, config: DhcpConfig,
                       counters: collections.Counter[str]) -> Lease:
    """Validate an OFFER or ACK into a Lease; raises DhcpDropped with the reason."""
    opts = msg.options
    server = _u32(opts, dd.DHCP_OPT_SERVER_ID)
    if server is None:
        raise DhcpDropped("dhcp_no_server_id")
    if not is_unicast(server):
        raise DhcpDropped("dhcp_bad_server_id")
    if dd.DHCP_OPT_NETMASK not in opts:
        raise DhcpDropped("dhcp_no_mask")
    plen = prefix_from_mask(opts[dd.DHCP_OPT_NETMASK])
    if plen is None:
        raise DhcpDropped("dhcp_bad_mask")
    addr = int.from_bytes(msg.yiaddr, "big")
    host = addr & (0xFFFFFFFF >> plen)
    if not is_unicast(addr) or host in (0, 0xFFFFFFFF >> plen):
        raise DhcpDropped("dhcp_bad_yiaddr")
    lease_time, t1, t2 = _times(opts, counters, config.min_lease)
    mtu, domain = _extras(opts, counters)
    return Lease(addr=msg.yiaddr, prefixlen=plen, router=_router(opts, addr, plen, counters),
                 dns=_dns(opts, counters), server_id=server.to_bytes(4, "big"),
                 lease_time=lease_time, t1=t1, t2=t2, obtained=obtained, mtu=mtu,
                 domain=domain)


# ---------------------------------------------------------------- the client

class DhcpClient:
    """The DHCPv4 client state machine of one interface (RFC 2131 §4.4).

    Entry points: ``start``, ``receive``, ``on_timer``, ``release``, ``decline``. After
    each, send what ``drain()`` returns and wake the client at ``next_deadline()``.
    """

    def __init__(self, mac: bytes, rng: random.Random, *, hostname: str | None = None,
                 client_id: bytes | None = None, config: DhcpConfig | None = None) -> None:
        if len(mac) != 6:
            raise ValueError("mac must be 6 bytes")
        self.mac = bytes(mac)
        self.rng = rng
        self.config = config if config is not None else DhcpConfig()
        # RFC 2132 §9.14: type 1 (Ethernet) followed by the hardware address.
        self.client_id = client_id if client_id is not None else b"\x01" + self.mac
        if not 2 <= len(self.client_id) <= 255:
            raise ValueError("client_id must be 2..255 bytes")
        self.hostname = hostname.encode("ascii") if hostname is not None else None
        if self.hostname is not None and not 1 <= len(self.hostname) <= 255:
            raise ValueError("hostname must be 1..255 ASCII characters")
        self.state = DhcpState.INIT
        self.lease: Lease | None = None
        self.outbox: list[DhcpSend] = []
        self.events: collections.deque[DhcpEvent] = collections.deque(
            maxlen=self.config.max_events)
        self.counters: collections.Counter[str] = collections.Counter()
        self._deadline: float | None = None
        self._xid = 0
        self._attempt = 0               # transmissions so far in this exchange, minus one
        self._exchange_start = 0.0      # when this exchange began ('secs', §4.4.1 times)
        self._secs = 0
        self._offered: bytes = ZERO     # REQUESTING: the address asked for (option 50)
        self._server: bytes = ZERO      # REQUESTING: the chosen server (option 54)

    # -------------------------------------------------------- public entry points

    def start(self, now: float) -> None:
        """Begin acquiring a lease: broadcast a DISCOVER and go to SELECTING."""
        if self.state not in (DhcpState.INIT, DhcpState.RELEASED):
            raise RuntimeError(f"start() in {self.state.name}")
        if self.state is DhcpState.RELEASED:
            self._set_state(DhcpState.INIT)
        self._begin_discover(now)

    def receive(self, payload: bytes | memoryview, now: float) -> None:
        """A UDP payload that arrived on port 68, from any source."""
        try:
            msg = parse_message(payload, self.config.max_message_size - 28)
            self._dispatch(msg, now)
        except DhcpDropped as drop:
            self.counters[drop.reason] += 1
        except _PARSE_ERRORS:
            # Defence in depth: parsing is bounded above, but a message must never raise.
            self.counters["dhcp_malformed"] += 1

    def next_deadline(self) -> float | None:
        """When ``on_timer`` wants to be called next, or None."""
        return self._deadline

    def on_timer(self, now: float) -> None:
        """Retransmit, renew, rebind or expire, whichever is due at ``now``."""
        if self._deadline is None or now < self._deadline:
            return
        st = self.state
        if st is DhcpState.INIT:
            self._begin_discover(now)
        elif st is DhcpState.SELECTING:
            self._attempt += 1
            self._send_discover(now)
        elif st is DhcpState.REQUESTING:
            if self._attempt >= self.config.request_retries:
                self.counters["dhcp_request_timeout"] += 1
                self._set_state(DhcpState.INIT)
                self._begin_discover(now)
            else:
                self._attempt += 1
                self._send_select_request(now)
        elif st in (DhcpState.BOUND, DhcpState.RENEWING, DhcpState.REBINDING):
            self._lease_timer(now)

    def release(self, now: float) -> None:
        """Give the lease back (DHCPRELEASE, RFC 2131 §4.4.6) and go to RELEASED."""
        lease = self.lease
        if lease is not None and self.state in (DhcpState.BOUND, DhcpState.RENEWING,
                                                DhcpState.REBINDING):
            opts = [(dd.DHCP_OPT_CLIENT_ID, self.client_id),
                    (dd.DHCP_OPT_SERVER_ID, lease.server_id)]
            # §4.4.6: a new xid, ciaddr = the address; sent unicast to the server.
            self._xid = self.rng.getrandbits(32)
            self._queue(build_message(dd.DHCPRELEASE, self._xid, self.mac, opts,
                                      ciaddr=lease.addr), lease.addr, lease.server_id)
            self._lose(lease, "released")
        self.lease = None
        if self.state is not DhcpState.RELEASED:
            self._set_state(DhcpState.RELEASED)
        self._deadline = None

    def decline(self, now: float) -> None:
        """The bound address is in use (ARP conflict): DHCPDECLINE, then start over."""
        lease = self.lease
        if lease is None or self.state is not DhcpState.BOUND:
            raise RuntimeError(f"decline() in {self.state.name}")
        # RFC 2131 §4.4.1 / table 5: 50 and 54 present, ciaddr 0, broadcast.
        opts = [(dd.DHCP_OPT_CLIENT_ID, self.client_id), (dd.DHCP_OPT_REQ_IP, lease.addr),
                (dd.DHCP_OPT_SERVER_ID, lease.server_id)]
        self._queue(build_message(dd.DHCPDECLINE, self._xid, self.mac, opts), ZERO, BROADCAST)
        self._lose(lease, "declined")
        self._set_state(DhcpState.INIT)
        self._deadline = now + self.config.decline_backoff

    def drain(self) -> list[DhcpSend]:
        """Return and clear the datagrams waiting to be sent."""
        out, self.outbox = self.outbox, []
        return out

    # -------------------------------------------------------- state and sending

    def _set_state(self, new: DhcpState) -> None:
        if new not in TRANSITIONS[self.state]:
            raise RuntimeError(f"DHCP client: {self.state.name} -> {new.name}")
        self.state = new

    def _queue(self, payload: bytes, src: bytes, dst: bytes) -> None:
        if len(self.outbox) >= self.config.max_outbox:
            del self.outbox[0]
            self.counters["dhcp_outbox_overflow"] += 1
        self.outbox.append(DhcpSend(payload=payload, src=src, dst=dst))

    def _backoff(self) -> float:
        """RFC 2131 §4.1: 4 s, doubling to 64 s, randomized by uniform(-1, +1)."""
        cfg = self.config
        base = min(cfg.initial_retransmit * 2 ** min(self._attempt, 16), cfg.max_retransmit)
        return base + self.rng.uniform(-cfg.jitter, cfg.jitter)

    def _common_options(self) -> list[tuple[int, bytes]]:
        opts = [(dd.DHCP_OPT_CLIENT_ID, self.client_id),
                (dd.DHCP_OPT_MAXMSGSIZE, self.config.max_message_size.to_bytes(2, "big"))]
        if self.hostname is not None:
            opts.append((dd.DHCP_OPT_HOSTNAME, self.hostname))
        opts.append((dd.DHCP_OPT_PARAM_REQ, PARAMETER_REQUEST_LIST))
        return opts

    def _new_exchange(self, now: float) -> None:
        self._xid = self.rng.getrandbits(32)
        self._attempt = 0
        self._exchange_start = now

    def _begin_discover(self, now: float) -> None:
        self._new_exchange(now)
        self.lease = None
        self._set_state(DhcpState.SELECTING)
        self._send_discover(now)

    def _send_discover(self, now: float) -> None:
        # 'secs' counts from the first DISCOVER (RFC 2131 table 5); REQUEST copies it.
        self._secs = int(now - self._exchange_start)
        payload = build_message(dd.DHCPDISCOVER, self._xid, self.mac, self._common_options(),
                                secs=self._secs, flags=BROADCAST_FLAG)
        self._queue(payload, ZERO, BROADCAST)
        self._deadline = now + self._backoff()

    def _send_select_request(self, now: float) -> None:
        # RFC 2131 §4.4.1 / §4.3.2: 50 and 54 set, ciaddr 0, same xid and secs, broadcast.
        opts = [(dd.DHCP_OPT_REQ_IP, self._offered), (dd.DHCP_OPT_SERVER_ID, self._server),
                *self._common_options()]
        payload = build_message(dd.DHCPREQUEST, self._xid, self.mac, opts, secs=self._secs,
                                flags=BROADCAST_FLAG)
        self._queue(payload, ZERO, BROADCAST)
        self._deadline = now + self._backoff()

    def _send_extend_request(self, lease: Lease, now: float, dst: bytes) -> None:
        # RFC 2131 §4.3.2 RENEWING/REBINDING: ciaddr set, no 50 or 54.
        payload = build_message(dd.DHCPREQUEST, self._xid, self.mac, self._common_options(),
                                secs=int(now - self._exchange_start), ciaddr=lease.addr)
        self._queue(payload, lease.addr, dst)

    def _lease_timer(self, now: float) -> None:
        """BOUND -> RENEWING at T1 -> REBINDING at T2 -> expiry (RFC 2131 §4.4.5)."""
        lease = self.lease
        assert lease is not None
        t1, t2, end = (lease.obtained + lease.t1, lease.obtained + lease.t2, lease.expires)
        mrt = self.config.min_retransmit
        if now >= end:
            self._lose(lease, "expired")
            self._set_state(DhcpState.INIT)
            self._begin_discover(now)
        elif now >= t2:
            if self.state is not DhcpState.REBINDING:
                self._new_exchange(now)
                self._set_state(DhcpState.REBINDING)
            self._send_extend_request(lease, now, BROADCAST)
            # Wait half the remaining lease, at least min_retransmit, never past expiry.
            self._deadline = min(now + max(mrt, (end - now) / 2), end)
        elif now >= t1:
            if self.state is DhcpState.BOUND:
                self._new_exchange(now)
                self._set_state(DhcpState.RENEWING)
            self._send_extend_request(lease, now, lease.server_id)
            self._deadline = min(now + max(mrt, (t2 - now) / 2), t2)
        else:
            self._deadline = t1

    def _lose(self, lease: Lease, reason: str) -> None:
        self.events.append(Lost(lease, reason))
        self.lease = None

    def _enter_bound(self, lease: Lease) -> None:
        self.lease = lease
        if self.state is not DhcpState.BOUND:
            self._set_state(DhcpState.BOUND)
        t1 = lease.obtained + lease.t1
        self._deadline = t1 if math.isfinite(t1) else None

    # -------------------------------------------------------- receiving

    def _dispatch(self, msg: DhcpMessage, now: float) -> None:
        st = self.state
        if st not in (DhcpState.SELECTING, DhcpState.REQUESTING, DhcpState.RENEWING,
                      DhcpState.REBINDING):
            raise DhcpDropped("dhcp_not_waiting")
        if msg.xid != self._xid:
            raise DhcpDropped("dhcp_bad_xid")
        if msg.chaddr != self.mac:
            raise DhcpDropped("dhcp_bad_chaddr")
        if st is DhcpState.SELECTING:
            self._on_offer(msg, now)
        elif msg.msg_type == dd.DHCPOFFER:
            raise DhcpDropped("dhcp_extra_offer")
        elif msg.msg_type == dd.DHCPACK:
            self._on_ack(msg)
        elif msg.msg_type == dd.DHCPNAK:
            self._on_nak(msg, now)
        else:
            raise DhcpDropped("dhcp_unexpected_type")

    def _on_offer(self, msg: DhcpMessage, now: float) -> None:
        if msg.msg_type != dd.DHCPOFFER:
            raise DhcpDropped("dhcp_unexpected_type")
        offer = lease_from_message(msg, now, self.config, self.counters)
        # RFC 2131 §4.4.1: the client may take the first acceptable offer.
        self._offered, self._server = offer.addr, offer.server_id
        self._attempt = 0
        self._exchange_start = now      # §4.4.1: lease times count from this REQUEST
        self._set_state(DhcpState.REQUESTING)
        self._send_select_request(now)

    def _check_server(self, msg: DhcpMessage) -> None:
        """Where a server was chosen, only it may answer (§4.4.1, §4.4.5)."""
        if self.state is DhcpState.REBINDING:
            return
        expected = self._server if self.state is DhcpState.REQUESTING else (
            self.lease.server_id if self.lease is not None else ZERO)
        if msg.options.get(dd.DHCP_OPT_SERVER_ID) != expected:
            raise DhcpDropped("dhcp_bad_server")

    def _on_ack(self, msg: DhcpMessage) -> None:
        self._check_server(msg)
        new = lease_from_message(msg, self._exchange_start, self.config, self.counters)
        old = self.lease
        if self.state is DhcpState.REQUESTING:
            if new.addr != self._offered:
                raise DhcpDropped("dhcp_ack_mismatch")
            self._enter_bound(new)
            self.events.append(Bound(new))
        elif old is not None and new.addr == old.addr:
            self._enter_bound(new)
            self.events.append(Renewed(new))
        else:
            # §4.4.5 extends the lease it has; a different address is a new lease.
            if old is not None:
                self._lose(old, "address_changed")
            self._enter_bound(new)
            self.events.append(Bound(new))

    def _on_nak(self, msg: DhcpMessage, now: float) -> None:
        self._check_server(msg)
        self.counters["dhcp_nak"] += 1
        if self.lease is not None:
            # §4.4.5: on DHCPNAK the client stops using the address and returns to INIT.
            self._lose(self.lease, "nak")
        self._set_state(DhcpState.INIT)
        self._deadline = now + self.config.nak_backoff
