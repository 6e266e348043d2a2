"""Destination names for the proxies: the hosts mapping first, then the stack's DNS
resolver (stack/dns/), with one outcome both proxies turn into their own replies.

SOCKS answers every failure with reply 0x04 (host unreachable); the HTTP proxy
answers an unknown name or failing servers with 502 and a resolver timeout with 504
(RFC 9110 §15.6.3 and §15.6.5: the proxy could not get an answer in time).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from apps.socks.policy import Policy
from apps.socks.protocol import Address
from stack.dns import NameNotFound, ResolverError, ResolverTimeout

#: ``await resolver(name)``: the addresses of ``name`` (stack.aio.TapStack.resolve).
Resolve = Callable[[str], Awaitable[list[str]]]


@dataclass(frozen=True, slots=True)
class Lookup:
    """The outcome of resolving one destination: an address, or why not."""

    ip: str | None
    #: "" (resolved), "unknown" (no such name), "timeout", "failure" (servers failed)
    failure: str = ""
    note: str = ""
    #: Every usable address, ``ip`` first (a name can have several: apps/eyeballs.py).
    addresses: tuple[str, ...] = ()


def resolver_of(api: Any) -> Resolve | None:
    """The stack's resolver, when ``api`` has one (a TapStack: ``net.resolve``)."""
    resolve = getattr(api, "resolve", None)
    return resolve if callable(resolve) else None


async def lookup(address: Address, policy: Policy, resolve: Resolve | None) -> Lookup:
    """The address ``address`` stands for: literals and the hosts mapping (--hosts,
    --host) answer at once; other names go to ``resolve`` (the DNS resolver)."""
    ip = policy.resolve(address)
    if ip is not None:
        return Lookup(ip, addresses=(ip,))
    if resolve is None:
        return Lookup(None, "unknown", f"unknown host name {address.host!r}")
    try:
        addrs = await resolve(address.host)
    except NameNotFound as e:
        return Lookup(None, "unknown", f"unknown host name {address.host!r}: {e.reason}")
    except ResolverTimeout:
        return Lookup(None, "timeout", f"resolving {address.host!r} timed out")
    except ResolverError as e:
        return Lookup(None, "failure", f"resolving {address.host!r} failed: {e.reason}")
    ipv4 = [a for a in addrs if ":" not in a]
    if not ipv4:
        return Lookup(None, "unknown", f"{address.host!r} has no IPv4 address")
    return Lookup(ipv4[0], note=f"resolved {address.host} to {', '.join(ipv4[:4])}"
                  + (f" and {len(ipv4) - 4} more" if len(ipv4) > 4 else ""),
                  addresses=tuple(ipv4))
