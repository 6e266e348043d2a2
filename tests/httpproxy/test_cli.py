"""`tapsplice http-proxy` option handling (no devices are opened here)."""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path

import pytest

from apps.cli import build_parser
from apps.httpproxy import cli


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tapsplice")
    cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["http-proxy", *argv])


def test_registered_in_tapsplice_with_splice_default() -> None:
    args = build_parser().parse_args(["http-proxy", "--lab"])
    assert args.func is cli.cmd_http_proxy and args.mode == "splice"
    assert cli.listen_address(args) == ("198.18.0.2", 3128)
    assert cli.listen_address(parse("--lab", "--listen", "198.18.0.2:8080")) == (
        "198.18.0.2", 8080)


def test_help_says_what_splice_mode_splices(capsys) -> None:
    with pytest.raises(SystemExit):
        parse("--help")
    text = " ".join(capsys.readouterr().out.split())
    assert "CONNECT tunnels and the last response on a connection are spliced" in text
    assert "spliced one way" in text and "--splice-min" in text
    assert parse("--splice-min", "1M").splice_min == 1 << 20


@pytest.mark.parametrize("text,size", [("0", 0), ("512", 512), ("64K", 65536),
                                       ("8m", 8 << 20), ("1G", 1 << 30)])
def test_sizes(text: str, size: int) -> None:
    assert cli.parse_size(text) == size


@pytest.mark.parametrize("bad", ["--listen=nowhere:1", "--host=noequals", "--cache-size=lots",
                                 "--connect-port=0", "--allow-client=x/1", "--mode=zero"])
def test_bad_options_are_usage_errors(bad: str) -> None:
    with pytest.raises(SystemExit) as e:
        parse("--lab", bad)
    assert e.value.code == 2


def test_policy_from_options(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("alice:pw\n")
    hosts = tmp_path / "hosts"
    hosts.write_text("198.19.0.1 origin.test\n")
    args = parse("--lab", "--users", str(users), "--hosts", str(hosts),
                 "--host", "other.test=198.19.0.9", "--allow-client", "198.18.0.0/24",
                 "--connect-port", "443", "--connect-port", "8443", "--request-timeout", "3",
                 "--response-timeout", "4", "--keepalive-timeout", "5", "--connect-timeout", "6",
                 "--idle-timeout", "7")
    policy = cli.policy_from_args(args)
    assert policy.users == {"alice": "pw"}
    assert policy.hosts == {"origin.test": "198.19.0.1", "other.test": "198.19.0.9"}
    assert policy.allow_clients == (ipaddress.ip_network("198.18.0.0/24"),)
    assert policy.connect_ports == frozenset({443, 8443})
    assert (policy.handshake_timeout, policy.response_timeout, policy.keepalive_timeout,
            policy.connect_timeout, policy.idle_timeout) == (3, 4, 5, 6, 7)
    assert cli.policy_from_args(parse("--lab")).connect_ports == frozenset({443})


def test_bad_files_exit_2(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "users"
    bad.write_text("no colon here\n")
    assert cli.cmd_http_proxy(parse("--lab", "--users", str(bad))) == 2
    assert "expected user:password" in capsys.readouterr().err
