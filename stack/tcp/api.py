"""Shared TCP types: the IP-layer interface, configuration, states and errors.

The TCP code is sans-I/O: it talks to the IP layer only through :class:`IpService`
and takes the current time as an argument of every entry point.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from stack.skbuff import SkBuff

#: Headroom that TCP leaves in front of the TCP header of every outgoing buffer,
#: enough for virtio_net_hdr + Ethernet + IPv4 with options.
MAX_HEADER = 128

#: IP protocol number of TCP.
IPPROTO_TCP = 6

#: The lowest ``TcpConfig.mss_min`` allowed (Linux's TCP_MIN_SND_MSS, the lower bound
#: of its tcp_min_snd_mss): below it headers outweigh any payload.
MSS_MIN_LIMIT = 48


@dataclass(slots=True, frozen=True)
class RouteInfo:
    """What TCP needs to know about the route towards a destination."""

    src: bytes      # our IPv4 address on the outgoing interface
    mtu: int        # interface MTU (MSS = mtu - 40)
    offload: bool   # device takes TSO super-segments and finishes checksums


class IpService(Protocol):
    """The IP layer as TCP sees it."""

    def route(self, dst: bytes) -> RouteInfo | None:
        """The route towards ``dst``, or None when unreachable."""
        ...

    def ip_output(self, src: bytes, dst: bytes, proto: int, skb: SkBuff, now: float, *,
                  df: bool = True) -> bool:
        """Send ``skb`` (data at the TCP header), with DF unless ``df`` is False; False
        when it could not be queued."""
        ...


@dataclass(slots=True)
class TcpConfig:
    """Tunables of one TcpLayer (names follow Linux's net.ipv4.tcp_* where one exists)."""

    mss_default: int = 1460          # RFC 9293 §3.7.1: used when the route gives no MTU
    # floor of a peer-advertised MSS (48..65495): RFC 9293 §3.7.1's default of 536 =
    # the 576-byte datagram every IPv4 host must accept (RFC 1122 §3.3.2) less 40 bytes
    # of headers, so no real peer needs less, while an MSS of 0 or 1 turns each byte
    # into a segment (Linux's floor, tcp_min_snd_mss, is 48 and cannot go lower)
    mss_min: int = 536
    rcvbuf: int = 4 << 20            # receive buffer when autotuning is off
    rcvbuf_initial: int = 256 << 10  # autotuning starts here ...
    rcvbuf_max: int = 6 << 20        # ... and grows up to here (Linux tcp_rmem[2])
    rcvbuf_autotune: bool = True
    sndbuf: int = 4 << 20
    msl: float = 30.0                # TIME_WAIT lasts 2 * msl
    fin_timeout: float = 60.0        # FIN_WAIT_2 lifetime of a closed (orphaned) connection
    syn_retries: int = 6
    synack_retries: int = 5
    retries2: int = 15
    min_rto: float = 0.2
    max_rto: float = 120.0
    initial_rto: float = 1.0         # RFC 6298 §2.1
    delack_max: float = 0.2
    delack_min: float = 0.04
    keepalive: bool = False
    keepalive_idle: float = 7200.0
    keepalive_intvl: float = 75.0
    keepalive_probes: int = 9
    timestamps: bool = True
    sack: bool = True
    window_scaling: bool = True
    congestion: str = "cubic"
    syn_backlog: int = 256
    accept_backlog: int = 128
    syncookies: bool = True
    ooo_max_bytes: int = 4 << 20     # bound of each out_of_order_queue (bytes)
    ooo_max_segments: int = 4096     # ... and of its number of buffers
    nodelay: bool = False
    max_connections: int = 65536     # bound of the connection table (TIME_WAIT included)
    # bound of connections in TIME-WAIT (small records, stack/tcp/timewait.py): past it
    # the oldest one ends early, as Linux does past tcp_max_tw_buckets (otherwise 1,000
    # closes/s would fill the table in a minute); counted as time_wait_recycled
    max_time_wait: int = 16384
    ephemeral_ports: tuple[int, int] = (32768, 60999)
    # (index, count): local ports of active opens are only those whose sum with the
    # remote port is index mod count, the queue of this worker (stack/netdev/steer.py)
    port_shard: tuple[int, int] = (0, 1)
    challenge_ack_limit: int = 1000  # per second, RFC 5961 §7
    tso_max: int = 65535 - 40 - 60   # largest super-segment payload (64 KB - headers)
    # connections (or listeners) whose events one flush fires; past it the rest stay
    # queued in order for the next flush, counted as events_deferred. The queue itself
    # holds each connection or listener at most once, so the tables bound it.
    max_events: int = 1024
    tlp: bool = True                 # tail loss probes (RFC 8985 §7)
    # floor of the probe timeout (seconds): Linux arms 2*SRTT + 2 jiffies (2 ms at
    # HZ=1000); the event loop's clock has 1 ms steps
    tlp_min: float = 0.002

    def __post_init__(self) -> None:
        if not MSS_MIN_LIMIT <= self.mss_min <= 65495:
            raise ValueError(f"mss_min must be {MSS_MIN_LIMIT}..65495, got {self.mss_min}")


class TcpState(enum.Enum):
    """Connection states, RFC 9293 §3.3.2."""

    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"


class TcpError(OSError):
    """Base of every error the TCP layer reports to its users."""


class TcpRefused(TcpError, ConnectionRefusedError):
    """The peer answered our SYN with a RST, or ICMP said port/protocol unreachable."""


class TcpReset(TcpError, ConnectionResetError):
    """The peer reset an established connection."""


class TcpAborted(TcpError, ConnectionAbortedError):
    """The connection was aborted locally."""


class TcpTimeout(TcpError, TimeoutError):
    """Retransmissions (or keepalive probes) ran out without an answer."""


class TcpStateError(TcpError, BrokenPipeError):
    """An operation that the connection's state does not allow (send after shutdown...)."""


class TcpAddressError(TcpError):
    """No route, no free ephemeral port, address in use or a full table."""
