"""Command-line pieces shared by the proxies (`tapsplice socks`, `tapsplice http-proxy`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TypedDict

from apps.socks.policy import PolicyError, parse_network, parse_port


def policy_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type from one of the policy parsers (PolicyError -> usage error)."""
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except PolicyError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    convert.__name__ = parse.__name__
    return convert


def listen_parser(default_port: int) -> Callable[[str], tuple[str, int]]:
    """An argparse type for ``ADDR:PORT`` (or ``ADDR`` and ``default_port``)."""
    def parse_listen(text: str) -> tuple[str, int]:
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = text, str(default_port)
        try:
            network = parse_network(host)
            if network.num_addresses != 1 or network.version != 4:
                raise PolicyError(f"{host!r} is not one IPv4 address")
            return str(network.network_address), parse_port(port)
        except PolicyError as e:
            raise argparse.ArgumentTypeError(f"--listen {text!r}: {e}") from None
    parse_listen.__doc__ = f"``ADDR:PORT`` (or ``ADDR``, port {default_port}) as (address, port)."
    return parse_listen


def listen_address(args: argparse.Namespace, lab: tuple[str, int]) -> tuple[str, int]:
    """Where to listen: --listen, else ``lab`` with --lab, else the first --addr."""
    if args.listen is not None:
        return args.listen
    if args.lab or not args.addr:
        return lab
    return args.addr[0].partition("/")[0], lab[1]


#: --allow-client's help, the same in both proxies.
ALLOW_CLIENT_HELP = ("allowed client network (repeatable; default: the subnet of the interface "
                     "that owns the listening address; connections are accepted only "
                     "through that interface)")


def add_client_limits(p: argparse.ArgumentParser) -> None:
    """--max-per-client and --max-handshakes-per-client (apps/clientslots.py)."""
    p.add_argument("--max-per-client", type=int, default=None, metavar="N",
                   help="connections one client address may hold at once (default: a "
                        "quarter of --max-connections, 64 of 256); more are refused at once")
    p.add_argument("--max-handshakes-per-client", type=int, default=32, metavar="N",
                   help="connections of one client address still in their handshake or "
                        "first request (default 32); more are refused at once")


class ClientLimits(TypedDict):
    """The Policy fields of the per-client options (apps/socks/policy.py)."""

    max_per_client: int | None
    max_handshakes_per_client: int


def client_limits(args: argparse.Namespace) -> ClientLimits:
    """The Policy fields of the per-client options."""
    return {"max_per_client": args.max_per_client,
            "max_handshakes_per_client": args.max_handshakes_per_client}
