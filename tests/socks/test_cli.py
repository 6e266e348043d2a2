"""`tapsplice socks` option handling (no devices are opened here)."""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path

import pytest

from apps.socks import cli


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tapsplice")
    cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["socks", *argv])


def test_splice_mode_is_the_default() -> None:
    assert parse("--lab").mode == "splice"
    assert parse("--lab", "--mode", "copy").mode == "copy"


def test_listen_defaults_and_option() -> None:
    assert cli.listen_address(parse("--lab")) == ("198.18.0.2", 1080)
    assert cli.listen_address(parse("--tap", "t0", "--addr", "198.18.5.2/24")) == (
        "198.18.5.2", 1080)
    assert cli.listen_address(parse("--lab", "--listen", "198.18.0.2:9050")) == (
        "198.18.0.2", 9050)


@pytest.mark.parametrize("bad", ["--listen=nowhere:1", "--listen=198.18.0.2:0",
                                 "--listen=198.18.0.0/24:1", "--host=noequals",
                                 "--allow-port=70000", "--allow-client=x/1", "--mode=zero"])
def test_bad_options_are_usage_errors(bad: str) -> None:
    with pytest.raises(SystemExit) as e:
        parse("--lab", bad)
    assert e.value.code == 2


def test_policy_from_options(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("# who\nalice:pw\n")
    hosts = tmp_path / "hosts"
    hosts.write_text("198.19.0.1 origin.test\n")
    args = parse("--lab", "--mode", "copy", "--users", str(users), "--hosts", str(hosts),
                 "--host", "other.test=198.19.0.9", "--allow-client", "198.18.0.0/24",
                 "--allow-dest", "198.19.0.0/24", "--allow-port", "80", "--allow-port", "443",
                 "--max-connections", "7", "--handshake-timeout", "2.5")
    policy = cli.policy_from_args(args)
    assert policy.users == {"alice": "pw"}
    assert policy.hosts == {"origin.test": "198.19.0.1", "other.test": "198.19.0.9"}
    assert policy.allow_clients == (ipaddress.ip_network("198.18.0.0/24"),)
    assert policy.allow_ports == frozenset({80, 443})
    assert (policy.max_connections, policy.handshake_timeout) == (7, 2.5)
    # Explicit destinations are kept as given.
    assert cli.default_destinations(policy, [], []).allow_dests == (
        ipaddress.ip_network("198.19.0.0/24"),)


def test_destinations_default_to_attached_subnets_and_routes() -> None:
    class Iface:
        network = ipaddress.ip_network("198.19.0.0/24")

    policy = cli.policy_from_args(parse("--lab", "--mode", "copy"))
    assert policy.allow_dests is None and policy.users is None
    got = cli.default_destinations(policy, [Iface()], [("198.19.8.0/22", "198.19.0.1")])
    assert got.allow_dests == (ipaddress.ip_network("198.19.0.0/24"),
                               ipaddress.ip_network("198.19.8.0/22"))


def test_bad_files_exit_2_before_any_device_is_opened(tmp_path: Path, capsys) -> None:
    args = parse("--lab", "--mode", "copy", "--users", str(tmp_path / "absent"))
    assert args.func(args) == 2
    assert "absent" in capsys.readouterr().err
    args = parse("--lab", "--mode", "copy", "--max-connections", "0")
    assert args.func(args) == 2
