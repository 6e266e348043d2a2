"""`tapsplice run` and `tapsplice router`: the stack on TAP devices (or, with --raw,
on existing interfaces through packet sockets) in the foreground."""

from __future__ import annotations

import argparse
import contextlib
import gc
import ipaddress
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop

from apps.lab import LabConfig, lab_is_raw
from apps.services import start_services
from stack.aio import DEFAULT_DRAIN, DHCP, Attachment, TapStack
from stack.control import ControlError
from stack.dns import ResolverConfig
from stack.netdev.faults import FaultModel
from stack.netdev.pcap import PcapTee, PcapWriter
from stack.netdev.taplock import TapBusyError
from stack.wire.ipv4 import ip_str
from stack.workers import MAX_WORKERS, STOP_GRACE, Seat, open_seats, run_workers

log = logging.getLogger("tapsplice")


def lab_attachments(cfg: LabConfig) -> list[Attachment]:
    """The stack's side of the lab: 198.18.0.2 on the client TAP, 198.19.0.2 on the
    server's; in a raw-socket lab (`lab up --raw`) the same addresses on the stack's
    veth ends in its own namespace, through packet sockets."""
    raw = lab_is_raw(cfg)
    out = []
    for (_side, ns, tap, kaddr, gw), gw6 in zip(cfg.sides(), cfg.gateways6(), strict=True):
        plen = kaddr.partition("/")[2] or "24"
        # Both families: 2001:2:0:1::2 and 2001:2:0:2::2 too (on raw sockets the
        # stack's IPv6 is its own; the host side's stays off).
        if raw:
            out.append(Attachment(cfg.raw_name(tap), f"{gw}/{plen}", cfg.stack_ns,
                                  kind="raw", addr6=(gw6,)))
        else:
            out.append(Attachment(tap, f"{gw}/{plen}", ns, addr6=(gw6,)))
    return out


def _lab_config(args: argparse.Namespace) -> LabConfig:
    return LabConfig(client_ns=args.client_ns, server_ns=args.server_ns,
                     client_tap=args.client_tap, server_tap=args.server_tap,
                     stack_ns=args.stack_ns)


class _DeviceOption(argparse.Action):
    """--tap and --raw: each name goes to its own list and, with its kind, to
    ``devices``, whose order the --addr options follow."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        getattr(namespace, self.dest).append(values)
        namespace.devices = [*getattr(namespace, "devices", []), (self.dest, values)]


def _parse_route(text: str) -> tuple[str, str]:
    prefix, sep, via = text.partition("=")
    if not sep:
        prefix, sep, via = text.partition(" via ")
    if not sep or not via.strip():
        raise argparse.ArgumentTypeError(f"route {text!r}: expected PREFIX=GATEWAY")
    return prefix.strip(), via.strip()


def _impair(text: str) -> FaultModel:
    try:
        return FaultModel.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"seconds: 0..86400, not {text!r}")
    return value


def _dns_server(text: str) -> tuple[str, int]:
    """``ADDR`` or ``ADDR:PORT`` of a DNS server (port 53 by default)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, "53"
    try:
        ipaddress.IPv4Address(host)
        number = int(port)
        if not 0 < number < 65536:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"--dns {text!r}: expected ADDR or ADDR:PORT "
                                         "(an IPv4 address)") from None
    return host, number


def _workers(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"workers: 1..{MAX_WORKERS}, not {text!r}")
    return n


def attachments_from(args: argparse.Namespace) -> list[Attachment]:
    """The devices named on the command line (--lab, or --tap/--raw each with its
    --addr, in the order given)."""
    if args.lab:
        return lab_attachments(_lab_config(args))
    devices = getattr(args, "devices", [])
    if not devices:
        raise SystemExit("give --lab, or --tap NAME / --raw IFACE with --addr "
                         "ADDR/PREFIX|dhcp")
    if len(args.addr) != len(devices):
        raise SystemExit("give one --addr for each --tap and --raw, in the same order")
    out = []
    for (kind, name), text in zip(devices, args.addr, strict=True):
        addr, addr6 = split_addr(text)
        out.append(Attachment(name, addr, args.netns, kind=kind, addr6=addr6))
    return out


def split_addr(text: str) -> tuple[str, tuple[str, ...]]:
    """One --addr: an IPv4 address (or "dhcp") and IPv6 ones (or "auto": SLAAC),
    comma-separated, e.g. "198.18.0.2/24,2001:2:0:1::2/64"; without an IPv4 one the
    interface speaks IPv6 only ("0.0.0.0/32")."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    v6 = tuple(p for p in parts if ":" in p or p == "auto")
    v4 = [p for p in parts if p not in v6]
    if len(v4) > 1 or not parts:
        raise SystemExit(f"--addr {text!r}: at most one IPv4 address (or dhcp) per device")
    for p in v6:
        if p != "auto":
            try:
                ipaddress.IPv6Interface(p)
            except ValueError:
                raise SystemExit(f"--addr {text!r}: {p!r} is not an IPv6 address") from None
    return (v4[0] if v4 else "0.0.0.0/32"), v6


def warn_host_side(attachments: list[Attachment]) -> None:
    """Warn about every address the host has on a raw interface: the kernel there
    answers ARP, pings and stray segments (with RSTs) for the stack's traffic."""
    from stack.netdev.netns import enter_netns
    from stack.netdev.raw import interface_addresses

    for a in attachments:
        if a.kind != "raw":
            continue
        try:
            with enter_netns(a.netns) if a.netns else contextlib.nullcontext():
                addrs = interface_addresses(a.tap)
        except OSError:
            continue  # the open reports a missing namespace or interface
        if addrs:
            log.warning("raw interface %s has host addresses (%s): the kernel will answer "
                        "for the stack there; remove them, set disable_ipv6 and drop its "
                        "frames at netdev ingress (README, raw sockets)", a.tap,
                        ", ".join(addrs))


def open_stack(args: argparse.Namespace, forwarding: bool = False,
               seat: Seat | None = None) -> TapStack:
    """A TapStack on the devices and with the options of the command line (on the
    queues of ``seat`` when it is one of several workers)."""
    pcap = PcapTee(PcapWriter(args.pcap)) if args.pcap else None
    control = getattr(args, "control", None) or True
    if seat is not None and seat.index and control is not True:
        control = f"{control}.{seat.index}"  # one control socket per worker
    attachments = attachments_from(args)
    if seat is None or seat.index == 0:
        warn_host_side(attachments)
    try:
        net = TapStack(attachments, forwarding=forwarding,
                       offload=not args.no_offload, routes=args.route, pcap=pcap,
                       impair=args.impair, seed=args.seed, control=control, seat=seat)
        net.drain_period = args.drain
        if args.dns:
            net.configure_resolver(args.dns, config=ResolverConfig(deadline=args.dns_timeout))
        return net
    except TapBusyError as e:  # another stack has the TAP: say so, and nothing else
        raise SystemExit(f"cannot attach: {e}") from None
    except (OSError, ValueError) as e:
        # The device layer's error may carry the hint already (a missing TAP): once.
        hint = "" if "is the lab up" in str(e) else " (is the lab up? `tapsplice lab up`)"
        raise SystemExit(f"cannot attach: {e}{hint}") from e


#: Cyclic garbage collector thresholds for the stack's processes (see tune_gc).
GC_THRESHOLDS = (20_000, 50, 100)


def tune_gc() -> None:
    """Make the cyclic garbage collector run rarely, as a server with many long-lived
    objects wants.

    A proxy holds tens of thousands of connections (spliced pairs stay in TIMEWAIT for
    2*MSL), and with the interpreter's default thresholds (700, 10, 10) a full
    collection walks all of them every few thousand allocations: measured on the
    requests-per-second load of `bench splice`, 1.3 s of 10 s went to collections of
    up to 160 ms each. With these thresholds and the startup objects frozen, 0.16 s.
    Garbage cycles still get collected, just in larger, rarer passes.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run_command(args: argparse.Namespace, child: Callable[[Seat | None], int]) -> int:
    """Run ``child`` here, or with ``--workers N`` in N worker processes, each on its
    own queue of every device (stack/workers.py)."""
    if args.workers == 1:
        return child(None)
    if DHCP in args.addr:
        raise SystemExit("--addr dhcp needs a single process: the workers would have to "
                         "share one lease (run without --workers)")
    if args.pcap:
        raise SystemExit("--pcap records one process: use it without --workers")
    try:
        seats = open_seats(attachments_from(args), args.workers, offload=not args.no_offload)
    except TapBusyError as e:
        raise SystemExit(f"cannot attach {args.workers} workers: {e}") from None
    except (OSError, ValueError) as e:
        raise SystemExit(f"cannot attach {args.workers} workers: {e} (the TAPs must be "
                         "multi_queue devices, as `tapsplice lab up` makes them)") from e
    # The supervisor kills workers that outlive the drain by its own grace period.
    return run_workers(seats, child, grace=args.drain + STOP_GRACE)


def run_stack(net: TapStack, setup: Callable[[TapStack], Awaitable[None]] | None = None,
              seat: Seat | None = None) -> None:
    """Run ``net`` (after ``setup``) until SIGINT/SIGTERM; print its counters at exit
    (a worker reports them, and its readiness, to the supervisor instead)."""
    async def main() -> None:
        net.start()
        for iface, dev in net.devices:
            log.info("%s %s/%d mac %s mtu %d offload %s", iface.name,
                     ip_str(iface.addr), iface.prefixlen, iface.mac.hex(":"),
                     iface.mtu, "on" if dev.offload else "off")
            six = [f"{ipaddress.IPv6Address(a.addr)}/{a.prefixlen}"
                   for a in net.stack.ip6.addresses.for_iface(iface)]
            if six:
                log.info("%s IPv6 %s (tentative until DAD passes)", iface.name, " ".join(six))
        if setup is not None:
            await setup(net)
        tune_gc()
        if seat is None:  # a worker's serve_forever() tells its supervisor instead
            print("ready", flush=True)
        await net.serve_forever()

    try:
        uvloop.run(main())
    except KeyboardInterrupt:
        pass
    except (ControlError, OSError) as e:
        # e.g. --control on a path that cannot be bound: say so, no traceback
        net.close()
        raise SystemExit(f"tapsplice: {e}") from None
    finally:
        net.close()  # a worker's close() reports its counters to the supervisor
    if seat is None:
        print(json.dumps(net.summary(), indent=1), file=sys.stderr)
    if net.driver.lost:  # a raw interface disappeared: say so, exit non-zero
        raise SystemExit(f"tapsplice: {'; '.join(net.driver.lost)}")


def cmd_run(args: argparse.Namespace, forwarding: bool) -> int:
    """`run` and `router`."""
    def child(seat: Seat | None) -> int:
        run_stack(open_stack(args, forwarding, seat), seat=seat)
        return 0
    return run_command(args, child)


def cmd_serve(args: argparse.Namespace) -> int:
    """`serve`: echo, discard and chargen on every address of the stack. With an
    interface on DHCP the services listen on 0.0.0.0 (every address, the lease's
    included, whenever it comes) instead of on each address."""
    async def setup(net: TapStack) -> None:
        if net.dhcp_ifaces:
            addrs = ["0.0.0.0"]
        else:
            addrs = [ip_str(iface.addr) for iface, _dev in net.devices if iface.configured]
        if any(iface.ipv6 for iface, _dev in net.devices):
            addrs.append("::")      # every IPv6 address, tentative ones once DAD passes
        await start_services(net, addrs)
        log.info("echo (7), discard (9), chargen (19), TCP and UDP, on %s", ", ".join(addrs))

    def child(seat: Seat | None) -> int:
        run_stack(open_stack(args, seat=seat), setup, seat)
        return 0
    return run_command(args, child)


def add_common(p: argparse.ArgumentParser, workers: bool = True) -> None:
    """Options shared by every command that runs the stack (``workers``: the command
    can run as several worker processes)."""
    lab = LabConfig()
    p.add_argument("--lab", action="store_true",
                   help="attach to the lab's TAPs as 198.18.0.2 and 198.19.0.2 (after "
                        "`lab up --raw`: to its veth ends in tsr, through raw sockets)")
    p.add_argument("--tap", action=_DeviceOption, default=[], metavar="NAME",
                   help="attach to an existing TAP in the current namespace (repeatable)")
    p.add_argument("--addr", action="append", default=[], metavar="A.B.C.D/N|dhcp[,IPV6/N|auto]",
                   help="address for the matching --tap, or \"dhcp\": address, default "
                        "route and DNS servers (unless --dns) from a DHCP lease, given "
                        "back at stop; one interface, no --workers. IPv6 addresses "
                        "follow after commas (\"auto\": SLAAC from router "
                        "advertisements); not with --workers yet")
    p.add_argument("--raw", action=_DeviceOption, default=[], metavar="IFACE",
                   help="attach to an existing interface (a veth, a macvlan, a NIC) through "
                        "a packet socket, as the interface's MAC (repeatable; the host "
                        "should have no address on it)")
    p.add_argument("--netns", default=None,
                   help="namespace holding the --tap devices and --raw interfaces")
    p.add_argument("--route", action="append", default=[], type=_parse_route,
                   metavar="PREFIX=GATEWAY", help="static route, IPv4 or IPv6 (repeatable)")
    p.add_argument("--dns", action="append", default=[], type=_dns_server,
                   metavar="ADDR[:PORT]",
                   help="DNS server for names (repeatable, tried in order; queries go over "
                        "the stack's own UDP, TCP for truncated answers)")
    p.add_argument("--dns-timeout", type=_seconds, default=5.0, metavar="SECONDS",
                   help="how long one name may take to resolve, retries across the "
                        "servers included (default 5)")
    p.add_argument("--pcap", metavar="FILE", help="record every frame to a pcap file")
    p.add_argument("--no-offload", action="store_true",
                   help="plain 1,500-byte frames: no vnet header, no TSO, no checksum offload")
    p.add_argument("--impair", type=_impair, default=None, metavar="SPEC",
                   help='fault injection on the stack\'s devices, both directions, e.g. '
                        '"loss=1%%,duplicate=1%%,reorder=2%%,corrupt=0.1%%,delay=1ms"')
    p.add_argument("--seed", type=int, default=0, help="seed of the fault injector")
    p.add_argument("--drain", type=_seconds, default=DEFAULT_DRAIN, metavar="SECONDS",
                   help="on SIGTERM/SIGINT: refuse new connections at once, let running "
                        "sessions finish for this long, then reset what remains on both "
                        f"sides (default {DEFAULT_DRAIN:g}); a second signal stops at once")
    p.add_argument("--control", metavar="PATH", default=None,
                   help="control socket for `tapsplice stat` (default "
                        "/run/tapsplice/<pid>.sock)")
    if workers:
        p.add_argument("--workers", type=_workers, default=1, metavar="N",
                       help="worker processes, each on its own queue of every TAP, with "
                            "connections spread by port (the TAPs must be multi_queue, "
                            "as `tapsplice lab up` makes them); default 1")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"])
    for name, default in (("client-ns", lab.client_ns), ("client-tap", lab.client_tap),
                          ("server-ns", lab.server_ns), ("server-tap", lab.server_tap),
                          ("stack-ns", lab.stack_ns)):
        p.add_argument(f"--{name}", default=default, help=f"lab {name} (default {default})")


def add_parser(subparsers) -> None:
    """Register `run` and `router`."""
    p = subparsers.add_parser(
        "run", help="run the stack: answers ARP and ping (and NDP and ping6)",
        description="Run the stack on TAP devices. It answers ARP, NDP, ping and ping6, and nothing "
                    "else until services are started on it.")
    add_common(p)
    p.set_defaults(func=lambda a: cmd_run(a, forwarding=False))
    p = subparsers.add_parser(
        "router", help="run the stack as an IPv4 and IPv6 router between its devices",
        description="Run the stack with IPv4 and IPv6 forwarding between its interfaces "
                    "(TTL and hop limit, incremental checksums, ICMP and ICMPv6 errors, "
                    "Packet Too Big rather than IPv6 fragments, TSO super-segments kept).")
    add_common(p)
    p.set_defaults(func=lambda a: cmd_run(a, forwarding=True))
    p = subparsers.add_parser(
        "serve", help="run the stack with echo, discard and chargen services",
        description="Run the stack with echo (port 7, RFC 862), discard (9, RFC 863) and "
                    "chargen (19, RFC 864), over TCP and UDP, on every address of the stack.")
    add_common(p)
    p.set_defaults(func=cmd_serve)
