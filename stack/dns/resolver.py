"""The stub resolver: hosts mapping, cache, in-flight sharing, retries over servers.

A ``resolve()`` call goes: IP literal -> hosts mapping -> per kind (A, AAAA, in
parallel) a chain of (name, type) lookups, each answered from the cache, joined to an
identical lookup already on the network, or sent to the servers in order (RFC 1035
§7.2) with a per-try timeout, ``attempts`` rounds and one overall deadline.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import random
from typing import Any

import dns.message
import dns.name
import dns.rdatatype

from stack.dns import exchange
from stack.dns.answer import (
    Alias,
    ChainError,
    Failed,
    Negative,
    Outcome,
    Positive,
    ServerFailure,
    classify,
)
from stack.dns.cache import TtlCache
from stack.dns.config import ResolverConfig
from stack.dns.errors import NameNotFound, ResolverError, ResolverFailure, ResolverTimeout
from stack.dns.exchange import Address, DatagramNet, Status
from stack.dns.names import KIND_FAMILY, HostsTable, literal, parse_name

log = logging.getLogger("tapsplice.dns")

Key = tuple[dns.name.Name, dns.rdatatype.RdataType]


def _check_servers(servers: list[tuple[str, int]]) -> list[Address]:
    out: list[Address] = []
    for host, port in servers:
        if not 0 < int(port) < 65536:
            raise ValueError(f"bad DNS server port {port!r}")
        out.append((str(ipaddress.ip_address(host)), int(port)))
    return out


def _check_kinds(kinds: tuple[str, ...]) -> tuple[str, ...]:
    if not kinds or any(kind not in KIND_FAMILY for kind in kinds):
        raise ValueError(f"kinds must be a non-empty choice of A and AAAA, not {kinds!r}")
    # IPv4 first, then IPv6, whatever order they were asked in.
    return tuple(kind for kind in ("A", "AAAA") if kind in kinds)


class Resolver:
    """A DNS stub resolver over the stack's datagram and stream API (``net``)."""

    def __init__(self, net: DatagramNet, servers: list[tuple[str, int]], *,
                 hosts: dict[str, str] | None = None,
                 config: ResolverConfig | None = None,
                 rng: random.Random | None = None) -> None:
        self.net = net
        self.config = config or ResolverConfig()
        self.counters: collections.Counter[str] = collections.Counter()
        # RFC 5452 §9.2: query IDs must be unpredictable; tests pass a seeded rng.
        self._rng = rng if rng is not None else random.SystemRandom()
        self._hosts = HostsTable(hosts)
        self._servers = _check_servers(servers)
        self._cache: TtlCache[Key, Outcome] = TtlCache(self.config.cache_size)
        self._inflight: dict[Key, tuple[asyncio.Task[Outcome], float]] = {}
        self._slots = asyncio.Semaphore(self.config.max_inflight)

    @property
    def servers(self) -> list[tuple[str, int]]:
        """The servers, in the order they are tried. Assigning a new list (DHCP) is
        safe at any time: each lookup copies the list when it starts."""
        return self._servers

    @servers.setter
    def servers(self, servers: list[tuple[str, int]]) -> None:
        self._servers = _check_servers(servers)

    def stats(self) -> dict[str, Any]:
        """Counters and current sizes, for the control socket and tests."""
        return {
            "counters": dict(self.counters),
            "cache_entries": len(self._cache),
            "inflight": len(self._inflight),
            "servers": list(self._servers),
        }

    def flush(self) -> None:
        """Forget every cached answer."""
        self._cache.clear()

    async def resolve(self, name: str, *, kinds: tuple[str, ...] = ("A",)) -> list[str]:
        """Addresses of ``name`` as text, IPv4 first then IPv6 when "AAAA" is in
        ``kinds``; raises a :class:`~stack.dns.errors.ResolverError` subclass."""
        kinds = _check_kinds(kinds)
        addr = literal(name)
        if addr is not None:
            return [addr]
        from_hosts = self._hosts.lookup(name, kinds)
        if from_hosts:
            self.counters["hosts_hit"] += 1
            return from_hosts
        qname = parse_name(name)
        if not self._servers:
            raise NameNotFound(name, "not in the hosts mapping and no DNS server configured")
        deadline = asyncio.get_running_loop().time() + self.config.deadline
        if len(kinds) == 1:
            return await self._resolve_kind(name, qname, kinds[0], deadline)
        results = await asyncio.gather(
            *(self._resolve_kind(name, qname, kind, deadline) for kind in kinds),
            return_exceptions=True)
        return _combine(results)

    async def _resolve_kind(self, host: str, qname: dns.name.Name, kind: str,
                            deadline: float) -> list[str]:
        rdtype = dns.rdatatype.from_text(kind)
        budget, current, seen = self.config.max_cname, qname, {qname}
        while True:
            outcome = await self._lookup(current, rdtype, deadline)
            if isinstance(outcome, Positive):
                return list(outcome.addresses)
            if isinstance(outcome, Negative):
                what = "NXDOMAIN" if outcome.nxdomain else f"no {kind} record (NODATA)"
                raise NameNotFound(host, f"{what} for {outcome.name}", nxdomain=outcome.nxdomain)
            if isinstance(outcome, Failed):
                cls = ResolverTimeout if outcome.timeout else ResolverFailure
                raise cls(host, outcome.reason)
            budget -= outcome.hops
            if outcome.target in seen:
                raise ResolverFailure(host, f"CNAME loop at {outcome.target}")
            if budget < 0:
                raise ResolverFailure(host, f"CNAME chain longer than {self.config.max_cname}")
            seen.add(outcome.target)
            current = outcome.target

    async def _lookup(self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType,
                      deadline: float) -> Outcome:
        """One (name, type): from the cache, shared with an identical lookup in
        flight, or from the servers; the wait never outlasts ``deadline``."""
        loop = asyncio.get_running_loop()
        key: Key = (qname, rdtype)
        cached = self._cache.get(key, loop.time())
        if cached is not None:
            self.counters["negative_hit" if isinstance(cached, Negative) else "cache_hit"] += 1
            return cached
        self.counters["cache_miss"] += 1
        entry = self._inflight.get(key)
        if entry is None:
            task = loop.create_task(self._fetch(key, deadline))
            self._inflight[key] = entry = (task, deadline)
            task.add_done_callback(lambda done: self._forget(key, done))
        else:
            self.counters["inflight_shared"] += 1
        task, task_deadline = entry
        # The shared lookup keeps going for the others if this waiter gives up.
        if deadline >= task_deadline:
            return await asyncio.shield(task)
        try:
            async with asyncio.timeout_at(deadline):
                return await asyncio.shield(task)
        except TimeoutError:
            return Failed(True, "deadline passed waiting for a shared lookup")

    def _forget(self, key: Key, task: asyncio.Task[Outcome]) -> None:
        if self._inflight.get(key, (None, 0.0))[0] is task:
            del self._inflight[key]

    async def _fetch(self, key: Key, deadline: float) -> Outcome:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        except TimeoutError:
            self.counters["inflight_full"] += 1
            return Failed(True, f"deadline passed waiting for one of {self.config.max_inflight}"
                                " query slots")
        try:
            outcome = await self._ask_servers(key, deadline)
        finally:
            self._slots.release()
        if isinstance(outcome, Positive | Alias):
            self._cache.put(key, outcome, outcome.ttl, loop.time())
        elif isinstance(outcome, Negative) and outcome.ttl is not None:
            # RFC 2308 §5; without an SOA there is no TTL to trust, so it is not cached.
            self._cache.put(key, outcome, outcome.ttl, loop.time())
        return outcome

    async def _ask_servers(self, key: Key, deadline: float) -> Outcome:
        """Servers in order, ``attempts`` rounds (RFC 1035 §7.2), until one answers
        definitely; Failed when the deadline passes or every try failed."""
        loop = asyncio.get_running_loop()
        servers = list(self._servers)  # a replacement list (DHCP) takes effect next lookup
        timed_out, failures = False, []
        for _round in range(self.config.attempts):
            for server in servers:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return Failed(True, "deadline passed without an answer")
                reply = await self._try_server(server, key, deadline)
                if reply is Status.TIMEOUT:
                    timed_out = True
                    continue
                if isinstance(reply, Status):
                    failures.append(f"{server[0]}:{server[1]} {reply.value}")
                    continue
                outcome = self._meaning(reply, key, server)
                if isinstance(outcome, ServerFailure):
                    failures.append(f"{server[0]}:{server[1]} {outcome.rcode}")
                    continue
                return outcome
        if timed_out:
            return Failed(True, "no answer from " + ", ".join(f"{h}:{p}" for h, p in servers))
        return Failed(False, "every server failed: " + "; ".join(failures))

    def _meaning(self, reply: dns.message.Message, key: Key,
                 server: Address) -> Outcome | ServerFailure:
        try:
            outcome = classify(reply, key[0], key[1], self.config)
        except ChainError as exc:
            self.counters["cname_error"] += 1
            return Failed(False, str(exc))
        if isinstance(outcome, ServerFailure):
            self.counters["rcode." + outcome.rcode] += 1
        elif isinstance(outcome, Negative):
            self.counters["nxdomain" if outcome.nxdomain else "nodata"] += 1
        else:
            self.counters["answers"] += 1
        log.debug("answer from %s:%d for %s/%s: %s", server[0], server[1], key[0],
                  dns.rdatatype.to_text(key[1]), outcome)
        return outcome

    async def _try_server(self, server: Address, key: Key, deadline: float) -> exchange.Reply:
        """One try: UDP, then TCP if the UDP answer was truncated (RFC 7766 §5)."""
        loop = asyncio.get_running_loop()
        cfg = self.config
        query = dns.message.make_query(
            key[0], key[1], use_edns=0, payload=cfg.edns_payload,
            id=self._rng.getrandbits(16))
        self.counters["queries"] += 1
        log.debug("query id %d %s/%s to %s:%d", query.id, key[0],
                  dns.rdatatype.to_text(key[1]), server[0], server[1])
        budget = min(cfg.timeout, deadline - loop.time())
        reply = await exchange.udp_exchange(self.net, server, query, budget,
                                            max(cfg.edns_payload, 512), self._drop)
        if reply is Status.TRUNCATED:
            self.counters["tcp_fallback"] += 1
            budget = min(cfg.timeout, deadline - loop.time())
            if budget <= 0:
                reply = Status.TIMEOUT
            else:
                reply = await exchange.tcp_exchange(self.net, server, query, budget, self._drop)
        if reply is Status.TIMEOUT:
            self.counters["timeout"] += 1
        elif reply is Status.UNREACHABLE:
            self.counters["unreachable"] += 1
        return reply

    def _drop(self, reason: str) -> None:
        self.counters["drop." + reason] += 1
        log.debug("dropped a datagram: %s", reason)


# When neither kind has an address, the most telling error wins: NXDOMAIN is about the
# name itself, a timeout or failure leaves open what a NODATA for one kind does not.
def _rank(exc: BaseException) -> int:
    if isinstance(exc, NameNotFound):
        return 0 if exc.nxdomain else 3
    return 1 if isinstance(exc, ResolverTimeout) else 2


def _combine(results: list[list[str] | BaseException]) -> list[str]:
    addresses = [addr for result in results if isinstance(result, list) for addr in result]
    if addresses:
        return addresses
    errors = [result for result in results if isinstance(result, BaseException)]
    for exc in errors:
        if not isinstance(exc, ResolverError):
            raise exc
    raise min(errors, key=_rank)
