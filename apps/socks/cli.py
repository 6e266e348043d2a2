"""`tapsplice socks`: the SOCKS5/SOCKS4a proxy on the stack's TAP devices."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace

from apps import proxycli
from apps.proxycli import (
    ALLOW_CLIENT_HELP,
    add_client_limits,
    client_limits,
    listen_parser,
    policy_type,
)
from apps.socks.policy import (
    P,
    Policy,
    PolicyError,
    attached_networks,
    load_hosts,
    load_users,
    parse_host_mapping,
    parse_network,
    parse_port,
)
from apps.socks.server import MODES, SocksServer
from apps.stackcmd import add_common, open_stack, run_command, run_stack
from splice.aio import SpliceApi

log = logging.getLogger("tapsplice.socks")

LAB_LISTEN = ("198.18.0.2", 1080)


_arg = policy_type
parse_listen = listen_parser(LAB_LISTEN[1])


def listen_address(args: argparse.Namespace) -> tuple[str, int]:
    """Where to listen: --listen, else the lab's 198.18.0.2:1080, else the first --addr."""
    return proxycli.listen_address(args, LAB_LISTEN)


def policy_from_args(args: argparse.Namespace) -> Policy:
    """The access policy the options describe (files are read here)."""
    hosts = load_hosts(args.hosts) if args.hosts else {}
    hosts.update(dict(args.host))
    return Policy(
        allow_clients=tuple(args.allow_client) or None,
        allow_dests=tuple(args.allow_dest) or None,
        allow_ports=frozenset(args.allow_port) or None,
        users=load_users(args.users) if args.users else None,
        hosts=hosts,
        max_connections=args.max_connections,
        **client_limits(args),
        handshake_timeout=args.handshake_timeout,
        connect_timeout=args.connect_timeout,
        idle_timeout=args.idle_timeout,
        udp_idle_timeout=args.udp_idle_timeout,
    )


def default_destinations(policy: P, interfaces: list, routes: list[tuple[str, str]]
                         ) -> P:
    """Without --allow-dest, only the attached subnets and the --route prefixes: the
    proxy reaches what the stack was explicitly connected to, nothing more."""
    if policy.allow_dests is not None:
        return policy
    dests = attached_networks(interfaces) + [parse_network(prefix) for prefix, _via in routes]
    return replace(policy, allow_dests=tuple(dests))


def cmd_socks(args: argparse.Namespace) -> int:
    """Run the proxy until interrupted."""
    try:
        policy = policy_from_args(args)
    except PolicyError as e:
        print(f"tapsplice socks: {e}", file=sys.stderr)
        return 2
    host, port = listen_address(args)

    def child(seat) -> int:
        net = open_stack(args, seat=seat)
        dests = default_destinations(policy, [iface for iface, _dev in net.devices],
                                     args.route)

        async def setup(net) -> None:
            splice = (SpliceApi.attach(net, window_scheme=args.window_scheme,
                                       idle_timeout=args.idle_timeout)
                      if args.mode == "splice" else None)
            server = SocksServer(net, mode=args.mode, policy=dests, splice=splice)
            await server.start(host, port)
            log.info("socks (%s mode) on %s:%d; clients %s; destinations %s; auth %s%s",
                     args.mode, host, port,
                     ", ".join(map(str, server.policy.allow_clients or ())) or "none",
                     ", ".join(map(str, server.policy.allow_dests or ())) or "any",
                     "username/password" if dests.auth_required else "none",
                     f"; worker {seat.index + 1} of {seat.count}" if seat else "")

        run_stack(net, setup, seat)
        return 0

    return run_command(args, child)


def add_parser(subparsers) -> None:
    """Register `tapsplice socks`."""
    p = subparsers.add_parser(
        "socks", help="run a SOCKS5/SOCKS4a proxy on the stack",
        description="A SOCKS5 (RFC 1928, RFC 1929 username/password) and SOCKS4/4a proxy "
                    "on the stack's TAP devices. CONNECT only. Names are resolved from "
                    "--hosts/--host; unknown names get 'host unreachable'.")
    add_common(p)
    p.add_argument("--listen", type=parse_listen, default=None, metavar="ADDR:PORT",
                   help="listen address (default with --lab: 198.18.0.2:1080)")
    p.add_argument("--mode", choices=MODES, default="splice",
                   help="splice (default: the stack relays segments between the two "
                        "connections) or copy (relay through the streams API)")
    p.add_argument("--window-scheme", choices=("rescale", "thesis"), default="rescale",
                   help="splice window mapping: rescale between any scales, rounding down "
                        "(default), or the thesis's receive scale 0 toward the client "
                        "(windows clamped to 64 KB; for comparison)")
    p.add_argument("--users", metavar="FILE",
                   help='require RFC 1929 username/password; FILE has "user:password" '
                        "lines. SOCKS4 requests are refused then (SOCKS4 has no passwords)")
    p.add_argument("--hosts", metavar="FILE",
                   help="names for DOMAINNAME requests (/etc/hosts lines or NAME=ADDRESS)")
    p.add_argument("--host", action="append", default=[], type=_arg(parse_host_mapping),
                   metavar="NAME=ADDR", help="one name (repeatable)")
    p.add_argument("--allow-client", action="append", default=[], type=_arg(parse_network),
                   metavar="NET", help=ALLOW_CLIENT_HELP)
    p.add_argument("--allow-dest", action="append", default=[], type=_arg(parse_network),
                   metavar="NET", help="allowed destination network (repeatable; default: "
                                       "the attached subnets and --route prefixes)")
    p.add_argument("--allow-port", action="append", default=[], type=_arg(parse_port),
                   metavar="PORT", help="allowed destination port (repeatable; default any)")
    p.add_argument("--max-connections", type=int, default=256, metavar="N",
                   help="client connections served at once (default 256)")
    add_client_limits(p)
    p.add_argument("--handshake-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="time a client has for greeting, auth and request (default 10)")
    p.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="time to connect to the destination (default 10)")
    p.add_argument("--idle-timeout", type=float, default=900.0, metavar="SECONDS",
                   help="a session (spliced or copied) with no segment either way for this "
                        "long is reset on both sides (default 900)")
    p.add_argument("--udp-idle-timeout", type=float, default=120.0, metavar="SECONDS",
                   help="a UDP ASSOCIATE relay with no datagram either way for this long "
                        "is ended with its control connection (default 120)")
    p.set_defaults(func=cmd_socks)


def main(argv: list[str] | None = None) -> int:
    """`python -m apps.socks.cli [options]`: the command on its own, as `tapsplice socks`."""
    parser = argparse.ArgumentParser(prog="tapsplice")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["socks", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
