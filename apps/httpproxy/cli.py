"""`tapsplice http-proxy`: the HTTP forward proxy on the stack's TAP devices."""

from __future__ import annotations

import argparse
import logging
import sys

from apps import proxycli
from apps.httpproxy.policy import HttpPolicy, PolicyError
from apps.httpproxy.server import MODES, HttpProxy
from apps.httpproxy.store import CacheStore
from apps.proxycli import (
    ALLOW_CLIENT_HELP,
    add_client_limits,
    client_limits,
    listen_parser,
    policy_type,
)
from apps.socks.cli import default_destinations
from apps.socks.policy import (
    load_hosts,
    load_users,
    parse_host_mapping,
    parse_network,
    parse_port,
)
from apps.stackcmd import add_common, open_stack, run_command, run_stack
from splice.aio import SpliceApi

log = logging.getLogger("tapsplice.httpproxy")

LAB_LISTEN = ("198.18.0.2", 3128)


_arg = policy_type
parse_listen = listen_parser(LAB_LISTEN[1])


def parse_size(text: str) -> int:
    """A byte count with an optional K, M or G suffix (powers of 1024)."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    scale = units.get(text[-1:].lower(), 1)
    digits = text[:-1] if scale != 1 else text
    if not digits.isdigit():
        raise argparse.ArgumentTypeError(f"bad size {text!r} (e.g. 64M)")
    return int(digits) * scale


def listen_address(args: argparse.Namespace) -> tuple[str, int]:
    """Where to listen: --listen, else the lab's 198.18.0.2:3128, else the first --addr."""
    return proxycli.listen_address(args, LAB_LISTEN)


def policy_from_args(args: argparse.Namespace) -> HttpPolicy:
    """The access policy the options describe (files are read here)."""
    hosts = load_hosts(args.hosts) if args.hosts else {}
    hosts.update(dict(args.host))
    return HttpPolicy(
        allow_clients=tuple(args.allow_client) or None,
        users=load_users(args.users) if args.users else None,
        hosts=hosts,
        max_connections=args.max_connections,
        **client_limits(args),
        handshake_timeout=args.request_timeout,
        connect_timeout=args.connect_timeout,
        connect_ports=frozenset(args.connect_port or [443]),
        keepalive_timeout=args.keepalive_timeout,
        idle_timeout=args.idle_timeout,
        response_timeout=args.response_timeout,
        splice_min=args.splice_min,
    )


def cmd_http_proxy(args: argparse.Namespace) -> int:
    """Run the proxy until interrupted."""
    try:
        policy = policy_from_args(args)
        if args.cache_size > 0:
            # Check the bounds, and recover the shared directory after a crash, once
            # and before any worker starts (the workers then open it as it is); closed
            # here: an SQLite connection must not cross a fork.
            CacheStore(args.cache_size, args.max_object, args.cache_dir,
                       memory_bytes=args.cache_mem).close()
    except (PolicyError, ValueError, OSError) as e:
        print(f"tapsplice http-proxy: {e}", file=sys.stderr)
        return 2
    host, port = listen_address(args)

    def child(seat) -> int:
        cache = make_cache(args, seat)
        net = open_stack(args, seat=seat)
        dests = default_destinations(policy, [iface for iface, _dev in net.devices],
                                     args.route)

        async def setup(net) -> None:
            splice = (SpliceApi.attach(net, idle_timeout=args.idle_timeout)
                      if args.mode == "splice" else None)
            proxy = HttpProxy(net, mode=args.mode, policy=dests, splice=splice, cache=cache)
            await proxy.start(host, port)
            net.drain_hooks.append(proxy.drain)
            log.info("http-proxy (%s mode) on %s:%d; cache %s; CONNECT ports %s; auth %s%s",
                     args.mode, host, port,
                     "off" if cache is None else f"{args.cache_size} bytes"
                     + (f" in {cache.directory}" if args.cache_dir else " in memory"),
                     ",".join(map(str, sorted(dests.connect_ports))),
                     "basic" if dests.auth_required else "none",
                     f"; worker {seat.index + 1} of {seat.count}" if seat else "")

        try:
            run_stack(net, setup, seat)
        finally:
            if cache is not None:
                cache.close()   # the writer thread finishes what is queued
        return 0

    return run_command(args, child)


def make_cache(args: argparse.Namespace, seat) -> CacheStore | None:
    """The cache of one process. With --cache-dir every worker opens the same disk
    store (recovered already by cmd_http_proxy) behind a memory cache of its own,
    and writes to it from a thread of its own (off the event loop); without, each
    worker has a memory cache of --cache-size."""
    if args.cache_size <= 0:
        return None
    return CacheStore(args.cache_size, args.max_object, args.cache_dir,
                      memory_bytes=args.cache_mem, recover=False, background=True)


def _add_cache_options(p: argparse.ArgumentParser) -> None:
    """The cache's bounds and where it lives."""
    p.add_argument("--cache-size", type=parse_size, default=64 << 20, metavar="BYTES",
                   help="cache bound in bytes, K/M/G suffixes (default 64M; 0: no cache); "
                        "with --cache-dir the bound of the store all workers share, "
                        "without it each worker's own memory cache")
    p.add_argument("--max-object", type=parse_size, default=8 << 20, metavar="BYTES",
                   help="largest response stored (default 8M)")
    p.add_argument("--cache-dir", metavar="DIR", default=None,
                   help="keep the cache in DIR across restarts and share it between "
                        "--workers (default: memory only): an SQLite index "
                        "DIR/cache.sqlite3 and one file per body; safe against kill -9")
    p.add_argument("--cache-mem", type=parse_size, default=16 << 20, metavar="BYTES",
                   help="with --cache-dir: each worker's memory cache of bodies in front "
                        "of the shared store (default 16M; 0: none)")


def add_parser(subparsers) -> None:
    """Register `tapsplice http-proxy`."""
    p = subparsers.add_parser(
        "http-proxy", help="run an HTTP forward proxy with a cache on the stack",
        description="An HTTP/1.1 forward proxy (absolute-form requests, CONNECT) with a "
                    "shared RFC 9111 cache and a Squid-format access log. Names are "
                    "resolved from --hosts/--host, then with --dns; unknown names get 502.")
    add_common(p)
    p.add_argument("--listen", type=parse_listen, default=None, metavar="ADDR:PORT",
                   help="listen address (default with --lab: 198.18.0.2:3128)")
    p.add_argument("--mode", choices=MODES, default="splice",
                   help="splice (default): CONNECT tunnels and the last response on a "
                        "connection are spliced both ways; on kept-alive connections "
                        "Content-Length bodies of at least --splice-min bytes are spliced "
                        "one way, then the next request is read; close-delimited "
                        "bodies are spliced up to the origin's FIN; chunked bodies on "
                        "kept-alive connections are copied. copy: everything copied "
                        "through the streams")
    p.add_argument("--splice-min", type=parse_size, default=64 << 10, metavar="BYTES",
                   help="smallest response body spliced one way (default 64K; smaller "
                        "bodies cost less to copy than to splice)")
    _add_cache_options(p)
    p.add_argument("--users", metavar="FILE",
                   help='require Basic Proxy-Authorization; FILE has "user:password" lines')
    p.add_argument("--hosts", metavar="FILE",
                   help="names for URLs (/etc/hosts lines or NAME=ADDRESS)")
    p.add_argument("--host", action="append", default=[], type=_arg(parse_host_mapping),
                   metavar="NAME=ADDR", help="one name (repeatable)")
    p.add_argument("--allow-client", action="append", default=[], type=_arg(parse_network),
                   metavar="NET", help=ALLOW_CLIENT_HELP)
    p.add_argument("--connect-port", action="append", default=[], type=_arg(parse_port),
                   metavar="PORT", help="port CONNECT may reach (repeatable; default 443). "
                   "Given, it replaces the default 443 (add --connect-port 443 to keep "
                   "it); the start-up log line lists the CONNECT ports")
    p.add_argument("--max-connections", type=int, default=256, metavar="N",
                   help="client connections served at once (default 256)")
    add_client_limits(p)
    p.add_argument("--request-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="time a client has to send a request head (default 10)")
    p.add_argument("--keepalive-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="a kept-alive client connection with no request (default 30)")
    p.add_argument("--idle-timeout", type=float, default=900.0, metavar="SECONDS",
                   help="a tunnel or spliced exchange with no segment either way for this "
                        "long is reset on both sides (default 900)")
    p.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="time to connect to the origin (default 10; then 504)")
    p.add_argument("--response-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="time the origin has for its response head and each body read "
                        "(default 30; then 504)")
    p.set_defaults(func=cmd_http_proxy)


def main(argv: list[str] | None = None) -> int:
    """`python -m apps.httpproxy.cli [options]`: the command as `tapsplice http-proxy`."""
    parser = argparse.ArgumentParser(prog="tapsplice")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["http-proxy", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
