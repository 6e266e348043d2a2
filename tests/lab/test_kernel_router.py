"""The kernel-router baseline lab: up, nginx origin, a download that checks out, down."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from apps.labproc import curl_download, netns_exists, ns_cmd, run
from apps.origin import Origin, OriginError
from tools.bench.kernel_lab import (
    KernelLabConfig,
    cleanup_stale,
    kernel_lab_down,
    kernel_lab_exists,
    kernel_lab_up,
)

pytestmark = pytest.mark.lab


@pytest.fixture
def kcfg() -> Iterator[KernelLabConfig]:
    """A twin lab with names unique to this run, removed whatever happens."""
    cfg = KernelLabConfig.unique()
    try:
        yield cfg
    finally:
        kernel_lab_down(cfg)
    assert not kernel_lab_exists(cfg)


def test_random_file_through_kernel_router_matches_sha256(
    kcfg: KernelLabConfig, tmp_path: Path
) -> None:
    kernel_lab_up(kcfg)
    kernel_lab_up(kcfg)  # idempotent: rebuilding an existing lab works
    assert all(netns_exists(ns) for ns in kcfg.namespaces)
    # One routed hop: the reply's TTL is the server's 64 minus the router's one.
    out = run(ns_cmd(kcfg.client_ns, "ping", "-c", "1", "-W", "2", kcfg.server_ip))
    assert "ttl=63" in out
    target = tmp_path / "got.bin"
    with Origin(kcfg.server_ns, addr=kcfg.server_ip) as origin:
        f = origin.make_file("integrity.bin", 4 << 20, random=True)
        got = curl_download(kcfg.client_ns, origin.url(f), timeout=30, output=str(target))
        tmpdir = origin.docroot.parent
    assert got.size == f.size == 4 << 20
    assert hashlib.sha256(target.read_bytes()).hexdigest() == f.sha256
    assert not tmpdir.exists()  # the origin removed its temp directory
    kernel_lab_down(kcfg)
    kernel_lab_down(kcfg)  # idempotent
    assert not kernel_lab_exists(kcfg)


def test_no_forwarding_no_route(kcfg: KernelLabConfig) -> None:
    """The server is reached only through the router namespace's forwarding."""
    kernel_lab_up(kcfg)
    run(ns_cmd(kcfg.router_ns, "sysctl", "-qw", "net.ipv4.ip_forward=0"))
    done = run(ns_cmd(kcfg.client_ns, "ping", "-c", "1", "-W", "1", kcfg.server_ip), check=False)
    assert "1 received" not in done


def test_cleanup_stale_removes_only_dead_owners_labs(kcfg: KernelLabConfig) -> None:
    # A pid above the kernel's pid_max limit (2**22) can never be alive.
    dead = "tk4999999-0-c"
    run(["ip", "netns", "add", dead])
    try:
        kernel_lab_up(kcfg)  # ours: this process is alive
        removed = cleanup_stale()
        assert dead in removed and not netns_exists(dead)
        assert all(netns_exists(ns) for ns in kcfg.namespaces)
    finally:
        run(["ip", "netns", "del", dead], check=False)


def test_origin_in_a_missing_namespace_fails_cleanly() -> None:
    origin = Origin("tk-does-not-exist")
    origin.make_file("f.bin", 10, random=False)
    tmpdir = origin.docroot.parent
    with pytest.raises(OriginError):
        origin.start()
    assert not tmpdir.exists()  # a failed start removes what it made
