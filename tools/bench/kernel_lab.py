"""The kernel-router baseline: client, router and server namespaces over veth pairs.

The twin of the stack's lab, with the Linux kernel forwarding in the router
namespace instead of tapsplice, so the benchmark can put the stack's figures
beside the kernel's on the same machine in the same run. Addresses are taken
from the RFC 2544 benchmarking range (198.18.0.0/15), in subnets distinct from
the stack's lab. Everything lives in namespaces created here; the root
namespace is never touched (veth pairs are created inside a namespace and
their peer moved straight into another).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from dataclasses import dataclass
from types import TracebackType

from tools.bench.proc import CommandError, netns_exists, ns_cmd, run

log = logging.getLogger(__name__)

# Interface names are fixed: each namespace has its own name space for links.
CLIENT_IF = "eth0"
SERVER_IF = "eth0"
ROUTER_CLIENT_IF = "rc0"
ROUTER_SERVER_IF = "rs0"

# Namespaces of unique twin labs: tk<pid>-<n>-<c|r|s>; the pid tells whether
# the process that made them is still alive (see cleanup_stale).
UNIQUE_NS_RE = re.compile(r"^tk(?P<pid>\d+)-\d+-[crs]$")
_counter = itertools.count()


@dataclass(frozen=True)
class KernelLabConfig:
    """Names, addresses and MTU of the kernel-router twin lab."""

    client_ns: str = "tkc"
    router_ns: str = "tkr"
    server_ns: str = "tks"
    client_addr: str = "198.18.64.1/24"
    router_client_addr: str = "198.18.64.2/24"
    router_server_addr: str = "198.19.64.2/24"
    server_addr: str = "198.19.64.1/24"
    mtu: int = 1500

    @classmethod
    def with_prefix(cls, prefix: str, mtu: int = 1500) -> KernelLabConfig:
        """A config whose namespaces are ``PREFIX-c``, ``PREFIX-r``, ``PREFIX-s``."""
        return cls(f"{prefix}-c", f"{prefix}-r", f"{prefix}-s", mtu=mtu)

    @classmethod
    def unique(cls, mtu: int = 1500) -> KernelLabConfig:
        """A config with names unique to this process and call (for tests and runs)."""
        return cls.with_prefix(f"tk{os.getpid()}-{next(_counter)}", mtu=mtu)

    @property
    def namespaces(self) -> tuple[str, str, str]:
        """The three namespaces, client first."""
        return (self.client_ns, self.router_ns, self.server_ns)

    @property
    def server_ip(self) -> str:
        """The server's address without prefix length."""
        return self.server_addr.split("/")[0]

    @property
    def client_ip(self) -> str:
        """The client's address without prefix length."""
        return self.client_addr.split("/")[0]


def _ip(netns: str, *args: str) -> None:
    run(["ip", "-n", netns, *args])


def _link_pair(end_ns: str, end_if: str, router_ns: str, router_if: str, mtu: int) -> None:
    """A veth pair with one end in ``end_ns`` and its peer in ``router_ns``."""
    _ip(end_ns, "link", "add", end_if, "mtu", str(mtu), "type", "veth",
        "peer", "name", router_if, "mtu", str(mtu), "netns", router_ns)  # fmt: skip


def _address_and_up(netns: str, ifname: str, addr: str) -> None:
    _ip(netns, "addr", "add", addr, "dev", ifname)
    _ip(netns, "link", "set", ifname, "up")


def kernel_lab_up(cfg: KernelLabConfig) -> None:
    """Build the twin lab; an existing one of the same names is rebuilt.

    On any failure the partial lab is removed before the error propagates.
    """
    kernel_lab_down(cfg)
    try:
        for ns in cfg.namespaces:
            run(["ip", "netns", "add", ns])
            _ip(ns, "link", "set", "lo", "up")
        _link_pair(cfg.client_ns, CLIENT_IF, cfg.router_ns, ROUTER_CLIENT_IF, cfg.mtu)
        _link_pair(cfg.server_ns, SERVER_IF, cfg.router_ns, ROUTER_SERVER_IF, cfg.mtu)
        _address_and_up(cfg.client_ns, CLIENT_IF, cfg.client_addr)
        _address_and_up(cfg.server_ns, SERVER_IF, cfg.server_addr)
        _address_and_up(cfg.router_ns, ROUTER_CLIENT_IF, cfg.router_client_addr)
        _address_and_up(cfg.router_ns, ROUTER_SERVER_IF, cfg.router_server_addr)
        # The sysctl is per namespace: forwarding is on only in the router.
        run(ns_cmd(cfg.router_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"))
        _ip(cfg.client_ns, "route", "add", "default", "via", cfg.router_client_addr.split("/")[0])
        _ip(cfg.server_ns, "route", "add", "default", "via", cfg.router_server_addr.split("/")[0])
    except BaseException:
        kernel_lab_down(cfg)
        raise
    log.debug("kernel lab up: %s", ", ".join(cfg.namespaces))


def kernel_lab_down(cfg: KernelLabConfig) -> None:
    """Remove the twin lab's namespaces (and with them the veths); idempotent."""
    errors = []
    for ns in cfg.namespaces:
        if not netns_exists(ns):
            continue
        try:
            run(["ip", "netns", "del", ns])
        except CommandError as exc:
            errors.append(str(exc))
    if errors:
        raise CommandError("; ".join(errors))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


def cleanup_stale() -> list[str]:
    """Delete unique twin-lab namespaces whose creating process is gone."""
    try:
        names = sorted(os.listdir("/run/netns"))
    except FileNotFoundError:
        return []
    removed = []
    for ns in names:
        m = UNIQUE_NS_RE.match(ns)
        if m is None or _pid_alive(int(m.group("pid"))):
            continue
        run(["ip", "netns", "del", ns], check=False)
        removed.append(ns)
    return removed


def kernel_lab_exists(cfg: KernelLabConfig) -> bool:
    """Whether any of the twin lab's namespaces exists."""
    return any(netns_exists(ns) for ns in cfg.namespaces)


class KernelLab:
    """Context manager: the twin lab is up inside the block, removed after it."""

    def __init__(self, cfg: KernelLabConfig | None = None) -> None:
        self.cfg = cfg or KernelLabConfig()

    def __enter__(self) -> KernelLabConfig:
        kernel_lab_up(self.cfg)
        return self.cfg

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        kernel_lab_down(self.cfg)
