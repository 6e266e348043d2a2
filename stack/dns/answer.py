"""What a validated response means for one (name, type) lookup.

The response has already passed the RFC 5452 checks in :mod:`stack.dns.exchange`;
here only the records on the CNAME chain that starts at the question name are used
(nothing else in the message is believed or cached, RFC 5452 §6 / RFC 2181 §5.4.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from stack.dns.config import ResolverConfig


@dataclass(frozen=True)
class Positive:
    """Addresses of the asked type; ``ttl`` is the smallest TTL on the chain, capped."""

    addresses: tuple[str, ...]
    ttl: float


@dataclass(frozen=True)
class Negative:
    """NXDOMAIN (``nxdomain``) or NODATA; ``ttl`` None when no SOA came with it."""

    nxdomain: bool
    ttl: float | None
    name: dns.name.Name


@dataclass(frozen=True)
class Alias:
    """The answer stopped at a CNAME: ``target`` has to be asked for next."""

    target: dns.name.Name
    hops: int
    ttl: float


@dataclass(frozen=True)
class Failed:
    """No definite answer: every try timed out (``timeout``) or failed (``reason``)."""

    timeout: bool
    reason: str


@dataclass(frozen=True)
class ServerFailure:
    """This server could not answer (its rcode); the next one is tried."""

    rcode: str


Outcome = Positive | Negative | Alias | Failed
"""The result of one (name, type) lookup, as cached and shared between waiters."""

FAILURE_RCODES = frozenset(
    {dns.rcode.SERVFAIL, dns.rcode.REFUSED, dns.rcode.NOTIMP, dns.rcode.FORMERR}
)
"""Answers that say nothing about the name, only about the server (RFC 1035 §4.1.1)."""


class ChainError(Exception):
    """The answer's CNAME chain loops or is longer than ``max_cname``."""


def negative_ttl(msg: dns.message.Message, cap: float) -> float | None:
    """RFC 2308 §5: a negative answer lives min(SOA TTL, SOA MINIMUM), here also at
    most ``cap``; None when the authority section carries no SOA (§5: not cached)."""
    for rrset in msg.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset) > 0:
            soa = rrset[0]
            return float(min(rrset.ttl, soa.minimum, cap))
    return None


def _follow(msg: dns.message.Message, qname: dns.name.Name, rdtype: int,
            max_cname: int) -> tuple[dns.name.Name, dns.rrset.RRset | None, list[int], int]:
    """Walk CNAMEs from ``qname`` within the answer section (RFC 1034 §3.6.2).

    Returns the chain's last name, its RRset of ``rdtype`` if present, the CNAME TTLs
    and the number of CNAMEs followed.
    """
    current, seen = qname, {qname}
    ttls: list[int] = []
    while True:
        found = msg.get_rrset(msg.answer, current, dns.rdataclass.IN,
                              dns.rdatatype.RdataType(rdtype))
        if found is not None and len(found) > 0:
            return current, found, ttls, len(ttls)
        cname = msg.get_rrset(msg.answer, current, dns.rdataclass.IN, dns.rdatatype.CNAME)
        if cname is None or len(cname) == 0:
            return current, None, ttls, len(ttls)
        target = cname[0].target
        if target in seen:
            raise ChainError(f"CNAME loop at {target}")
        if len(ttls) + 1 > max_cname:
            raise ChainError(f"CNAME chain longer than {max_cname}")
        seen.add(target)
        ttls.append(cname.ttl)
        current = target


def _addresses(rrset: dns.rrset.RRset, limit: int) -> tuple[str, ...]:
    out: list[str] = []
    for rdata in rrset:
        text = rdata.to_text()
        if text not in out:
            out.append(text)
        if len(out) >= limit:
            break
    return tuple(out)


def classify(msg: dns.message.Message, qname: dns.name.Name, rdtype: int,
             config: ResolverConfig) -> Outcome | ServerFailure:
    """The meaning of a validated response to the question (``qname``, ``rdtype``)."""
    rcode = msg.rcode()
    if rcode in FAILURE_RCODES or rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        return ServerFailure(dns.rcode.to_text(rcode))
    last, found, ttls, hops = _follow(msg, qname, rdtype, config.max_cname)
    chain_ttl = float(min(ttls, default=config.max_ttl))
    if rcode == dns.rcode.NXDOMAIN:
        # RFC 2308 §2.1: NXDOMAIN is about the end of the chain, hence also the name asked.
        ttl = negative_ttl(msg, config.max_negative_ttl)
        return Negative(True, None if ttl is None else min(ttl, chain_ttl), last)
    if found is not None:
        ttl = min(float(found.ttl), chain_ttl, config.max_ttl)
        return Positive(_addresses(found, config.max_addresses), ttl)
    ttl = negative_ttl(msg, config.max_negative_ttl)
    if hops == 0 or ttl is not None:
        # RFC 2308 §2.2: no data and (after any CNAMEs) an SOA: NODATA for the chain's end.
        return Negative(False, None if ttl is None else min(ttl, chain_ttl), last)
    # The chain stops at a CNAME and nothing says its target is empty: ask for it.
    return Alias(last, hops, min(chain_ttl, config.max_ttl))
