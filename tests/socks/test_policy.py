"""Access rules, users and hosts files."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from apps.socks import policy as pol
from apps.socks.policy import Policy, PolicyError
from apps.socks.protocol import Address, Atyp


def net(text: str):
    return ipaddress.ip_network(text)


def test_clients_default_to_attached_subnets() -> None:
    class Iface:
        network = net("198.18.0.0/24")

    p = Policy().with_default_clients(pol.attached_networks([Iface()]))
    assert p.client_allowed("198.18.0.1")
    assert not p.client_allowed("198.19.0.1")
    assert not p.client_allowed("not an address")
    # Explicit rules win over the default.
    q = Policy(allow_clients=(net("10.0.0.0/8"),)).with_default_clients([net("198.18.0.0/24")])
    assert q.client_allowed("10.1.2.3") and not q.client_allowed("198.18.0.1")


def test_no_client_networks_allows_nobody() -> None:
    assert not Policy().client_allowed("198.18.0.1")


def test_destinations_and_ports() -> None:
    p = Policy(allow_dests=(net("198.19.0.0/24"),), allow_ports=frozenset({80, 443}))
    assert p.destination_allowed("198.19.0.1", 80)
    assert not p.destination_allowed("198.19.0.1", 22)
    assert not p.destination_allowed("198.18.0.1", 80)
    assert not p.destination_allowed("::1", 80)
    assert Policy().destination_allowed("203.0.113.9", 1)


def test_authenticate() -> None:
    p = Policy(users={"alice": "s3cret:with colon", "bob": "x"})
    assert p.auth_required
    assert p.authenticate(b"alice", b"s3cret:with colon")
    assert not p.authenticate(b"alice", b"s3cret")
    assert not p.authenticate(b"carol", b"x")
    assert not p.authenticate(b"\xff", b"x")
    assert not Policy().auth_required and Policy().authenticate(b"any", b"thing")


def test_resolve() -> None:
    p = Policy(hosts={"origin.test": "198.19.0.1"})
    assert p.resolve(Address.of("198.19.0.9", 80)) == "198.19.0.9"
    assert p.resolve(Address(Atyp.DOMAINNAME, "ORIGIN.test.", 80)) == "198.19.0.1"
    assert p.resolve(Address(Atyp.DOMAINNAME, "198.19.0.7", 80)) == "198.19.0.7"
    assert p.resolve(Address(Atyp.DOMAINNAME, "unknown.test", 80)) is None


def test_users_file(tmp_path: Path) -> None:
    f = tmp_path / "users"
    f.write_text("# comment\n\nalice:pa#ss word\n  # indented comment\nbob:b:c\n")
    assert pol.load_users(f) == {"alice": "pa#ss word", "bob": "b:c"}


@pytest.mark.parametrize("text", ["nocolon\n", ":pw\n", "u:\n", "u:a\nu:b\n",
                                  "u:" + "x" * 256 + "\n"])
def test_bad_users_file(tmp_path: Path, text: str) -> None:
    f = tmp_path / "users"
    f.write_text(text)
    with pytest.raises(PolicyError, match=str(f)):
        pol.load_users(f)


def test_missing_and_oversized_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyError):
        pol.load_users(tmp_path / "absent")
    big = tmp_path / "big"
    big.write_bytes(b"u:p\n" * (pol.MAX_FILE_BYTES // 4 + 1))
    with pytest.raises(PolicyError, match="bytes"):
        pol.load_users(big)
    many = tmp_path / "many"
    many.write_text("".join(f"u{i}:p\n" for i in range(pol.MAX_ENTRIES + 1)))
    with pytest.raises(PolicyError, match="entries"):
        pol.load_users(many)


def test_hosts_file(tmp_path: Path) -> None:
    f = tmp_path / "hosts"
    f.write_text("198.19.0.1 origin.test www.origin.test  # the origin\n"
                 "# comment\nAlias.Test=198.19.0.5\n2001:db8::1 v6.test\n")
    assert pol.load_hosts(f) == {"origin.test": "198.19.0.1", "www.origin.test": "198.19.0.1",
                                 "alias.test": "198.19.0.5", "v6.test": "2001:db8::1"}


@pytest.mark.parametrize("text", ["198.19.0.1\n", "notanip name\n", "name=notanip\n"])
def test_bad_hosts_file(tmp_path: Path, text: str) -> None:
    f = tmp_path / "hosts"
    f.write_text(text)
    with pytest.raises(PolicyError):
        pol.load_hosts(f)


def test_parsers() -> None:
    assert pol.parse_host_mapping("a.test=198.19.0.1") == ("a.test", "198.19.0.1")
    assert pol.parse_network("198.18.0.7/24") == net("198.18.0.0/24")
    assert pol.parse_port("1080") == 1080
    for bad in (lambda: pol.parse_host_mapping("a.test"), lambda: pol.parse_network("x/99"),
                lambda: pol.parse_port("0"), lambda: pol.parse_port("http")):
        with pytest.raises(PolicyError):
            bad()


@pytest.mark.parametrize("kw", [{"max_connections": 0}, {"handshake_timeout": 0},
                                {"connect_timeout": -1}, {"allow_ports": frozenset({0})},
                                {"hosts": {"a": "b"}}])
def test_policy_validates(kw: dict) -> None:
    with pytest.raises(PolicyError):
        Policy(**kw)


def test_unknown_user_and_wrong_password_do_the_same_comparison(monkeypatch) -> None:
    # Constant time: every attempt compares two digests of one fixed length, whatever
    # the user (known or not) and the lengths of the passwords; no early return.
    import apps.socks.policy as policy_module

    seen: list[tuple[int, int]] = []
    real = policy_module.hmac.compare_digest

    def spy(a, b):
        seen.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(policy_module.hmac, "compare_digest", spy)
    p = Policy(users={"alice": "a much longer stored password", "bob": "x"})
    for user, password in ((b"alice", b"short"), (b"carol", b"short"), (b"bob", b""),
                           (b"\xff", b"y" * 300), (b"alice", b"a much longer stored password")):
        p.authenticate(user, password)
    assert len(seen) == 5 and len(set(seen)) == 1
    assert seen[0][0] == seen[0][1]


def test_per_client_default_is_a_quarter_of_the_connection_limit() -> None:
    # One client address can never take every slot, whatever --max-connections is.
    assert Policy().max_per_client == 64
    assert Policy(max_connections=16).max_per_client == 4
    assert Policy(max_connections=2).max_per_client == 1
    assert Policy(max_connections=16, max_per_client=10).max_per_client == 10
    with pytest.raises(PolicyError):
        Policy(max_per_client=0)
