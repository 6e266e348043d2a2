"""Options and help of both proxies for their defaults and abuse limits (no devices)."""

from __future__ import annotations

import argparse

import pytest

from apps.httpproxy import cli as http_cli
from apps.socks import cli as socks_cli

COMMANDS = [("socks", socks_cli), ("http-proxy", http_cli)]


def parse(name: str, module, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tapsplice")
    module.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args([name, *argv])


def help_text(name: str, module, capsys) -> str:
    with pytest.raises(SystemExit):
        parse(name, module, "--help")
    return " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("name,module", COMMANDS)
def test_per_client_limits_are_options(name: str, module) -> None:
    policy = module.policy_from_args(parse(name, module, "--lab", "--max-per-client", "5",
                                           "--max-handshakes-per-client", "2"))
    assert (policy.max_per_client, policy.max_handshakes_per_client) == (5, 2)
    default = module.policy_from_args(parse(name, module, "--lab"))
    assert (default.max_per_client, default.max_handshakes_per_client) == (64, 32)
    small = module.policy_from_args(parse(name, module, "--lab", "--max-connections", "20"))
    assert small.max_per_client == 5      # a quarter of the connection limit


@pytest.mark.parametrize("name,module", COMMANDS)
def test_bad_per_client_limit_exits_2(name: str, module, capsys) -> None:
    args = parse(name, module, "--lab", "--max-per-client", "0")
    assert args.func(args) == 2
    assert "max_per_client" in capsys.readouterr().err


@pytest.mark.parametrize("name,module", COMMANDS)
def test_help_tells_the_client_default(name: str, module, capsys) -> None:
    text = help_text(name, module, capsys)
    assert "the subnet of the interface that owns the listening address" in text
    assert "--max-per-client" in text and "--max-handshakes-per-client" in text


def test_socks_help_says_socks4_is_refused_with_users(capsys) -> None:
    assert "SOCKS4 requests are refused" in help_text("socks", socks_cli, capsys)


def test_http_help_says_connect_port_replaces_443(capsys) -> None:
    assert "replaces the default 443" in help_text("http-proxy", http_cli, capsys)


def test_a_missing_tap_prints_the_lab_hint_once(monkeypatch, capsys) -> None:
    # The device layer's own error already carries the hint (stack/netdev/tap.py).
    from apps import stackcmd
    from stack.netdev import tap

    def missing(*_a, **_kw):
        tap._check_exists("nosuchtap-ts0")   # only looks the name up: nothing is created
        raise AssertionError("the TAP exists?")

    monkeypatch.setattr(stackcmd, "TapStack", missing)
    args = parse("socks", socks_cli, "--tap", "nosuchtap-ts0", "--addr", "198.18.77.2/24")
    with pytest.raises(SystemExit) as e:
        args.func(args)
    message = str(e.value.code)
    assert "nosuchtap-ts0" in message and message.count("is the lab up") == 1, message
