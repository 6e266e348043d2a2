"""Reaching the origin: its addresses (both families), the access check, the connect,
and which exchanges the stack may splice.

The splice relays IPv4 connections only so far (splice/ keys flows by 4-byte
addresses, and ``stack.core.flow_key`` refuses 16-byte ones): an exchange with an
IPv6 end, client or origin, is copied through the streams. :func:`splice_family` is
the one place that says so; the CONNECT tunnel, the last-response splice
(apps/httpproxy/spliced.py) and the one-way body splices all ask
:func:`spliceable_pair`.

A name with addresses of both families is tried per RFC 8305 §4, the client
connection's family first: an IPv4 client keeps getting an IPv4 origin it can be
spliced with, an IPv6 client an IPv6 one.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from apps.eyeballs import ATTEMPT_DELAY, MAX_ATTEMPTS, connect_first, interleave
from apps.httpproxy.conn import BufferedStream
from apps.httpproxy.parser import uri_host
from apps.names import lookup
from apps.socks.policy import api_interfaces
from apps.socks.protocol import Address

if TYPE_CHECKING:
    from apps.httpproxy.accesslog import Entry
    from apps.httpproxy.server import HttpProxy


def splice_family(ip: str) -> bool:
    """Whether a connection with an end at ``ip`` can take part in a splice: IPv4
    only until the splice speaks IPv6 (splice/ keys flows by 4-byte addresses)."""
    return ":" not in ip


def spliceable_pair(a: str, b: str) -> bool:
    """Whether connections whose peers are ``a`` and ``b`` may be spliced together
    (both ways, or one way for a body)."""
    return splice_family(a) and splice_family(b)


def peer_ip(writer: asyncio.StreamWriter) -> str:
    """The peer address of a stream ("" if it has none): IPv6 peernames are
    4-tuples, as asyncio's."""
    peer = writer.get_extra_info("peername")
    return str(peer[0]) if peer else ""


def speaks_ipv6(api: Any) -> bool:
    """Whether the stack behind ``api`` has an interface with IPv6 on (then names
    are resolved to AAAA records too)."""
    return any(getattr(iface, "ipv6", False) for iface in api_interfaces(api))


async def destinations(proxy: HttpProxy, client: BufferedStream, host: str, port: int,
                       entry: Entry) -> list[str] | None:
    """The allowed addresses of ``host``, in the order to try them (the client's
    family first, RFC 8305 §4); on failure answer the client (502/504/403) and return
    None."""
    found = await lookup(Address.of(host, port), proxy.policy, proxy.resolve,
                         ipv6=proxy.ipv6)
    if found.ip is None:
        # An unknown name or failing servers: 502; no answer in time: 504.
        await proxy._error(client, entry, 504 if found.failure == "timeout" else 502,
                           found.note)
        return None
    ips = [ip for ip in found.addresses if proxy.policy.destination_allowed(ip, port)]
    if not ips:
        entry.code = "TCP_DENIED"
        await proxy._error(client, entry, 403, "destination not allowed")
        return None
    return interleave(ips, prefer_ipv6=not splice_family(entry.client))


def splice_candidates(client: BufferedStream, ips: list[str]) -> list[str]:
    """The addresses among ``ips`` the client connection may be spliced with."""
    own = peer_ip(client.writer)
    return [ip for ip in ips if spliceable_pair(own, ip)]


async def connect(proxy: HttpProxy, client: BufferedStream, ips: list[str], host: str,
                  port: int, entry: Entry, splice: bool) -> BufferedStream | None:
    """Connect to the first of ``ips`` that answers; on failure answer the client
    (502/504) and return None. ``splice``: with intend_splice (docs/splice.md §1.2),
    one attempt at a time; otherwise raced, and mirrored (for a one-way splice
    later) where the pair could be spliced."""
    own = peer_ip(client.writer)
    relay = not splice and proxy._relay_ready(client.writer)

    def attempt(ip: str) -> Any:
        if splice:
            # intend_splice: the server SYN carries the client's options
            return proxy.splice.open_connection(client.writer, ip, port)
        if relay and spliceable_pair(own, ip):
            # The same options, so that a body can be spliced one way later.
            return proxy.splice.open_mirrored(client.writer, ip, port)
        return proxy.api.open_connection(ip, port)

    entry.peer = ips[0]
    where = f"{uri_host(host)}:{port}"
    try:
        async with asyncio.timeout(proxy.policy.connect_timeout):
            if len(ips) == 1:
                pair = await attempt(ips[0])
            else:
                # A name with several addresses: the first that answers
                # (apps/eyeballs.py); one at a time when splicing (§1.2).
                share = max(proxy.policy.connect_timeout / min(len(ips), MAX_ATTEMPTS), 2.0)
                entry.peer, pair = await connect_first(
                    ips, attempt, discard=lambda c: c[1].transport.abort(),
                    stagger=None if splice else ATTEMPT_DELAY, attempt_timeout=share)
    except TimeoutError:
        await proxy._error(client, entry, 504, f"connect to {where} timed out")
        return None
    except OSError as e:
        await proxy._error(client, entry, 502, f"connect to {where}: {e}")
        return None
    return BufferedStream(*pair)
