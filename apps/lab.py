"""The lab of DESIGN.md: two network namespaces, each with a persistent TAP.

``tapsplice lab up`` builds them with iproute2 (``ip netns``, ``ip tuntap``):

* client side ``tsc``: TAP ``tsc0``, 198.18.0.1/24, default route via 198.18.0.2;
  2001:2:0:1::1/64, default route via 2001:2:0:1::2;
* server side ``tss``: TAP ``tss0``, 198.19.0.1/24, default route via 198.19.0.2;
  2001:2:0:2::1/64, default route via 2001:2:0:2::2 (IPv6 without DAD: ``nodad``).

The stack attaches to both TAPs (stack/netdev/tap.py) as the two gateways. Every
address is in 198.18.0.0/15 (RFC 2544's benchmarking range) or 2001:2::/48 (RFC
5180's) and nothing is ever configured in the root namespace; kernel sysctls
(net.ipv4.tcp_*) are left alone.

``tapsplice lab up --raw`` builds the same two sides over veth pairs instead: the
kernel ends keep the names and the addresses of both families above, and their
peers (``tsc0r``, ``tss0r``) live in a third namespace ``tsr`` where the stack
attaches to them with packet sockets (stack/netdev/raw.py). The host side there is kept quiet: no
addresses, IPv6 off on both, and an nftables netdev ingress chain that drops every
frame before the kernel's own processing (it runs after the packet taps, so the
stack still sees them all).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
from dataclasses import asdict, dataclass, replace
from typing import Any

#: Namespace names made by :meth:`LabConfig.unique`; the pid lets a later run tell
#: a crashed run's leftovers from a live run's namespaces.
UNIQUE_NS_RE = re.compile(r"^tsx-(?:[a-z0-9]+-)?(?P<pid>\d+)-\d+-[csr]$")
_counter = itertools.count()
_IP_TIMEOUT = 30.0


class LabError(RuntimeError):
    """An iproute2 command of the lab failed."""


@dataclass(frozen=True)
class LabConfig:
    """Names, addresses and MTU of one lab (both sides)."""

    client_ns: str = "tsc"
    server_ns: str = "tss"
    client_tap: str = "tsc0"
    server_tap: str = "tss0"
    client_addr: str = "198.18.0.1/24"
    server_addr: str = "198.19.0.1/24"
    client_gw: str = "198.18.0.2"
    server_gw: str = "198.19.0.2"
    #: IPv6 (RFC 5180's benchmarking range): the kernels' addresses, the stack's.
    client_addr6: str = "2001:2:0:1::1/64"
    server_addr6: str = "2001:2:0:2::1/64"
    client_gw6: str = "2001:2:0:1::2/64"
    server_gw6: str = "2001:2:0:2::2/64"
    mtu: int = 1500
    #: The namespace of the stack's veth ends in a raw-socket lab (``lab up --raw``).
    stack_ns: str = "tsr"

    @classmethod
    def unique(cls, tag: str | None = None) -> LabConfig:
        """A lab with namespace names unique to this process (for tests).

        Addresses stay the defaults: each lab lives in its own namespaces. TAP
        names are short (<= 15 characters, IFNAMSIZ) and only need to be unique
        inside their namespace.
        """
        if tag is not None and not re.fullmatch(r"[a-z0-9]{1,8}", tag):
            raise ValueError("tag must be 1-8 lowercase letters or digits")
        n = next(_counter)
        mid = f"{tag}-" if tag else ""
        base = f"tsx-{mid}{os.getpid()}-{n}"
        short = f"t{os.getpid() % 1000}{n % 1000}"
        return cls(client_ns=f"{base}-c", server_ns=f"{base}-s",
                   client_tap=f"{short}c0", server_tap=f"{short}s0", stack_ns=f"{base}-r")

    def sides(self) -> list[tuple[str, str, str, str, str]]:
        """(side, namespace, tap, address, gateway) for the client and the server."""
        return [("client", self.client_ns, self.client_tap, self.client_addr, self.client_gw),
                ("server", self.server_ns, self.server_tap, self.server_addr, self.server_gw)]

    def gateways6(self) -> list[str]:
        """The stack's IPv6 addresses (with their prefix), client side first."""
        return [self.client_gw6, self.server_gw6]

    def raw_name(self, tap: str) -> str:
        """The stack's veth end (in ``stack_ns``) of the kernel end ``tap``."""
        return f"{tap}r"

    @property
    def client_raw(self) -> str:
        """The stack's client-side veth end in a raw-socket lab."""
        return self.raw_name(self.client_tap)

    @property
    def server_raw(self) -> str:
        """The stack's server-side veth end in a raw-socket lab."""
        return self.raw_name(self.server_tap)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True,
                          timeout=_IP_TIMEOUT, check=False)
    if check and proc.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def _ip_json(*args: str) -> list[dict[str, Any]]:
    proc = _ip("-j", *args, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return []
    return json.loads(proc.stdout)


def list_netns() -> list[str]:
    """Names of the network namespaces iproute2 knows."""
    return [entry["name"] for entry in _ip_json("netns", "list")]


def _link_exists(ns: str, dev: str) -> bool:
    return _ip("-n", ns, "link", "show", "dev", dev, check=False).returncode == 0


def _side_up(ns: str, tap: str, addr: str, gw: str, mtu: int,
             v6: tuple[str, str] | None = None) -> None:
    if ns not in list_netns():
        _ip("netns", "add", ns)
    if not _link_exists(ns, tap):
        # Persistent, with vnet_hdr allowed: the stack attaches later (DESIGN.md, lab);
        # multi_queue so that several workers can each attach a queue (--workers).
        _ip("-n", ns, "tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr",
            "multi_queue")
    _ip("-n", ns, "link", "set", "lo", "up")
    _ip("-n", ns, "link", "set", "dev", tap, "mtu", str(mtu), "up")
    _ip("-n", ns, "addr", "replace", addr, "dev", tap)
    # The TAP has no carrier until the stack attaches; onlink accepts the gateway anyway.
    _ip("-n", ns, "route", "replace", "default", "via", gw, "dev", tap, "onlink")
    if v6 is not None:
        # nodad: the address is usable at once (the stack is the only other node).
        _ip("-n", ns, "addr", "replace", v6[0], "dev", tap, "nodad")
        _ip("-n", ns, "-6", "route", "replace", "default", "via", v6[1].partition("/")[0],
            "dev", tap, "onlink")


def _link_kind(ns: str, dev: str) -> str | None:
    """"tun", "veth", ... for an existing link; None when there is none."""
    links = _ip_json("-n", ns, "-d", "link", "show", "dev", dev)
    if not links:
        return None
    return str(links[0].get("linkinfo", {}).get("info_kind", ""))


def lab_up(cfg: LabConfig, raw: bool | None = None) -> None:
    """Create both namespaces and TAPs and configure them (idempotent); ``raw``: veth
    pairs to the stack's namespace instead of TAPs (see the module docstring). None:
    the kind that is up already (so `tapsplice demo` runs on `lab up --raw`), TAPs
    when none is."""
    if raw is None:
        raw = lab_is_raw(cfg)
    names = (cfg.client_tap, cfg.server_tap, cfg.client_raw, cfg.server_raw)
    if any(len(n) > 15 for n in (names if raw else names[:2])):
        raise ValueError("interface names are limited to 15 characters")
    v6s = [(cfg.client_addr6, cfg.client_gw6), (cfg.server_addr6, cfg.server_gw6)]
    for (_side, ns, tap, addr, gw), v6 in zip(cfg.sides(), v6s, strict=True):
        want = "veth" if raw else "tun"
        kind = _link_kind(ns, tap) if ns in list_netns() else None
        if kind is not None and kind != want:
            other = "a TAP" if kind == "tun" else "a raw-socket (veth)"
            raise LabError(f"{ns}/{tap} is {other} lab already: `tapsplice lab down` first")
        if raw:
            _raw_side_up(cfg, ns, tap)
        _side_up(ns, tap, addr, gw, cfg.mtu, v6)
    if raw:
        quiet_host_side(cfg.stack_ns, [cfg.client_raw, cfg.server_raw])


def _raw_side_up(cfg: LabConfig, ns: str, tap: str) -> None:
    """The veth pair of one side, made inside the stack's namespace with its peer
    moved straight into the side's namespace (nothing passes the root namespace)."""
    for name in (cfg.stack_ns, ns):
        if name not in list_netns():
            _ip("netns", "add", name)
    end = cfg.raw_name(tap)
    if not _link_exists(cfg.stack_ns, end):
        _ip("-n", cfg.stack_ns, "link", "add", end, "mtu", str(cfg.mtu), "type", "veth",
            "peer", "name", tap, "netns", ns)
    _ip("-n", cfg.stack_ns, "link", "set", "lo", "up")
    _ip("-n", cfg.stack_ns, "link", "set", "dev", end, "mtu", str(cfg.mtu), "up")


#: The nftables table that keeps the kernel of the stack's namespace off its raw
#: interfaces (a netdev ingress chain per interface).
QUIET_TABLE = "tsraw"


def quiet_host_side(ns: str, ifaces: list[str]) -> None:
    """Keep the kernel in ``ns`` from answering for the stack on ``ifaces``: IPv6 off
    on them (no link-local address, no router or neighbour solicitations) and every
    frame they receive dropped at netdev ingress, which runs after the packet taps:
    the stack's sockets see each frame, the kernel's ARP, IP and ICMP none."""
    for dev in ifaces:
        _sysctl(ns, f"net.ipv6.conf.{dev}.disable_ipv6", "1")
    chains = "".join(
        f"  chain in_{i} {{ type filter hook ingress device \"{dev}\" priority 0; "
        "counter drop; }\n" for i, dev in enumerate(ifaces))
    # Declared, deleted and defined in one transaction: a second `lab up` replaces the
    # table instead of adding its rules again.
    ruleset = (f"table netdev {QUIET_TABLE}\ndelete table netdev {QUIET_TABLE}\n"
               f"table netdev {QUIET_TABLE} {{\n{chains}}}\n")
    proc = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=ruleset,
                          capture_output=True, text=True, timeout=_IP_TIMEOUT, check=False)
    if proc.returncode != 0:
        raise LabError(f"nft in {ns}: {proc.stderr.strip() or proc.returncode}")


def _sysctl(ns: str, key: str, value: str) -> None:
    proc = subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}={value}"],
                          capture_output=True, text=True, timeout=_IP_TIMEOUT, check=False)
    if proc.returncode != 0:
        raise LabError(f"sysctl {key} in {ns}: {proc.stderr.strip() or proc.returncode}")


def lab_is_raw(cfg: LabConfig) -> bool:
    """Whether the lab up is the raw-socket one (the stack's veth ends exist)."""
    return (os.path.exists(os.path.join("/run/netns", cfg.stack_ns))
            and _link_exists(cfg.stack_ns, cfg.client_raw))


def lab_down(cfg: LabConfig) -> None:
    """Remove both TAPs and namespaces, and the raw lab's veths and namespace
    (idempotent)."""
    present = list_netns()
    for _side, ns, tap, _addr, _gw in cfg.sides():
        if ns not in present:
            continue
        if _link_kind(ns, tap) == "tun":
            _ip("-n", ns, "tuntap", "del", "dev", tap, "mode", "tap", check=False)
        _ip("netns", "del", ns)
    if cfg.stack_ns in present:
        _ip("netns", "del", cfg.stack_ns)  # its veth ends (and any peers left) go too


def _side_status(ns: str, tap: str, present: list[str]) -> dict[str, Any]:
    st: dict[str, Any] = {"netns": ns, "tap": tap, "exists": ns in present,
                          "tap_exists": False, "state": None, "mtu": None,
                          "addresses": [], "routes": []}
    if not st["exists"]:
        return st
    links = _ip_json("-n", ns, "addr", "show", "dev", tap)
    if links:
        link = links[0]
        st["tap_exists"] = True
        st["state"] = link.get("operstate")
        st["flags"] = link.get("flags", [])
        st["mtu"] = link.get("mtu")
        st["mac"] = link.get("address")
        st["addresses"] = [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])
                           if a.get("family") == "inet"]
    for r in _ip_json("-n", ns, "route", "show"):
        st["routes"].append(" ".join(x for x in (r.get("dst"), "via" if r.get("gateway")
                                     else None, r.get("gateway"), "dev", r.get("dev")) if x))
    return st


def lab_status(cfg: LabConfig) -> dict[str, Any]:
    """What exists of the lab: per side namespace, TAP, state, addresses, routes."""
    present = list_netns()
    out: dict[str, Any] = {side: _side_status(ns, tap, present)
                           for side, ns, tap, _a, _g in cfg.sides()}
    out["up"] = all(out[s]["tap_exists"] and out[s]["addresses"] for s in ("client", "server"))
    out["raw"] = lab_is_raw(cfg)
    if out["raw"]:
        out["stack"] = {"netns": cfg.stack_ns, "interfaces": [
            _side_status(cfg.stack_ns, dev, [cfg.stack_ns])
            for dev in (cfg.client_raw, cfg.server_raw)]}
        out["up"] = out["up"] and all(d["tap_exists"] for d in out["stack"]["interfaces"])
    return out


def cleanup_stale() -> list[str]:
    """Delete namespaces left by :meth:`LabConfig.unique` labs of dead processes."""
    removed = []
    for ns in list_netns():
        m = UNIQUE_NS_RE.match(ns)
        if m is None or _pid_alive(int(m.group("pid"))):
            continue
        _ip("netns", "del", ns, check=False)
        removed.append(ns)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_in_ns(ns: str, *cmd: str, **kw: Any) -> subprocess.CompletedProcess[Any]:
    """Run ``cmd`` inside namespace ``ns`` (``ip netns exec``); a 60 s timeout by default."""
    kw.setdefault("timeout", 60.0)
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], check=kw.pop("check", False), **kw)


def popen_in_ns(ns: str, *cmd: str, **kw: Any) -> subprocess.Popen[Any]:
    """Start ``cmd`` inside namespace ``ns`` without waiting for it."""
    return subprocess.Popen(["ip", "netns", "exec", ns, *cmd], **kw)


# -- command line ------------------------------------------------------------
def _cmd_up(args: argparse.Namespace) -> int:
    cfg = replace(LabConfig(), mtu=args.mtu)
    try:
        lab_up(cfg, raw=args.raw)
    except LabError as exc:
        print(f"lab up failed: {exc}")
        return 1
    print(f"lab up: {cfg.client_ns}/{cfg.client_tap} {cfg.client_addr} via {cfg.client_gw}; "
          f"{cfg.server_ns}/{cfg.server_tap} {cfg.server_addr} via {cfg.server_gw}")
    if args.raw:
        print(f"raw sockets: the stack attaches in {cfg.stack_ns} to {cfg.client_raw} and "
              f"{cfg.server_raw} (veth peers; no addresses, IPv6 off, nftables ingress drop)")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    try:
        lab_down(LabConfig())
    except LabError as exc:
        print(f"lab down failed: {exc}")
        return 1
    print("lab down")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    cfg = LabConfig()
    st = lab_status(cfg)
    if args.json:
        print(json.dumps({"config": asdict(cfg), **st}, indent=2))
        return 0 if st["up"] else 1
    for side in ("client", "server"):
        s = st[side]
        if not s["exists"]:
            print(f"{side}: namespace {s['netns']} missing")
            continue
        print(f"{side}: netns {s['netns']} tap {s['tap']} state {s['state']} mtu {s['mtu']} "
              f"addr {', '.join(s['addresses']) or '-'}")
        for r in s["routes"]:
            print(f"    route {r}")
    if st["raw"]:
        for d in st["stack"]["interfaces"]:
            print(f"stack (raw sockets): netns {d['netns']} veth {d['tap']} state "
                  f"{d['state']} addr {', '.join(d['addresses']) or '-'}")
    return 0 if st["up"] else 1


def _mtu(text: str) -> int:
    value = int(text)
    if not 576 <= value <= 65521:  # IPv4 minimum datagram (RFC 791); tun's maximum
        raise argparse.ArgumentTypeError("MTU must be between 576 and 65521")
    return value


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``tapsplice lab up|down|status``."""
    p = subparsers.add_parser("lab", help="build or remove the two-namespace lab",
                              description="The lab: namespaces tsc and tss joined only "
                              "through the stack's two TAP devices (needs root).")
    sub = p.add_subparsers(dest="lab_command", metavar="ACTION")
    sub.required = True
    up = sub.add_parser("up", help="create namespaces and TAPs (idempotent)")
    up.add_argument("--mtu", type=_mtu, default=1500,
                    help="MTU of both TAPs, 576..65521 (default 1500)")
    up.add_argument("--raw", action="store_true",
                    help="veth pairs instead of TAPs: the stack's ends in namespace tsr, "
                         "for raw sockets (every command's --lab then uses them)")
    up.set_defaults(func=_cmd_up)
    down = sub.add_parser("down", help="remove namespaces and TAPs (idempotent)")
    down.set_defaults(func=_cmd_down)
    status = sub.add_parser("status", help="show what exists; exit 1 unless the lab is up")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=_cmd_status)
    return p
