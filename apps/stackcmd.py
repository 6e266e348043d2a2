"""`tapsplice run` and `tapsplice router`: the stack on TAP devices in the foreground."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass

from stack.aio import StackDriver
from stack.core import Stack
from stack.iface import Interface
from stack.netdev.faults import FaultModel
from stack.netdev.pcap import PcapTee, PcapWriter
from stack.netdev.tap import TapDevice
from tools.lab import LabConfig

log = logging.getLogger("tapsplice")


@dataclass
class Attachment:
    """One device the stack runs on: TAP name, namespace, address, routes."""

    tap: str
    addr: str
    netns: str | None = None


def lab_attachments(cfg: LabConfig) -> list[Attachment]:
    """The stack's side of the lab: 198.18.0.2 on the client TAP, 198.19.0.2 on the server's."""
    out = []
    for _side, ns, tap, kaddr, gw in cfg.sides():
        plen = kaddr.partition("/")[2] or "24"
        out.append(Attachment(tap, f"{gw}/{plen}", ns))
    return out


def build_stack(attachments: list[Attachment], *, forwarding: bool, offload: bool,
                routes: list[tuple[str, str]] | None = None,
                ) -> tuple[Stack, list[tuple[Interface, TapDevice]]]:
    """Open every device and make a stack with one interface on each."""
    stack = Stack(forwarding=forwarding)
    bound: list[tuple[Interface, TapDevice]] = []
    try:
        for a in attachments:
            dev = TapDevice.open(a.tap, netns=a.netns, offload=offload)
            iface = stack.add_interface(a.tap, a.addr, mtu=dev.mtu, offload=offload)
            bound.append((iface, dev))
        for prefix, via in routes or []:
            stack.add_route(prefix, via)
    except BaseException:
        for _iface, dev in bound:
            dev.close()
        raise
    return stack, bound


def _lab_config(args: argparse.Namespace) -> LabConfig:
    return LabConfig(client_ns=args.client_ns, server_ns=args.server_ns,
                     client_tap=args.client_tap, server_tap=args.server_tap)


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


def summary(stack: Stack, devices: list[tuple[Interface, TapDevice]]) -> dict:
    """Counters of the stack and its devices, for printing at exit."""
    return {
        "stack": dict(sorted(stack.counters.items())),
        "devices": {iface.name: dict(dev.counters) for iface, dev in devices},
        "neighbours": len(stack.neigh),
    }


async def _serve(stack: Stack, devices: list[tuple[Interface, TapDevice]],
                 args: argparse.Namespace) -> None:
    pcap = PcapTee(PcapWriter(args.pcap)) if args.pcap else None
    driver = StackDriver(stack, pcap=pcap, impair=args.impair, seed=args.seed)
    for iface, dev in devices:
        driver.attach(iface, dev)
    driver.start()
    for iface, dev in devices:
        log.info("%s %s/%d mac %s mtu %d offload %s", iface.name,
                 ".".join(map(str, iface.addr)), iface.prefixlen, iface.mac.hex(":"),
                 iface.mtu, "on" if dev.offload else "off")
    if stack.forwarding:
        log.info("forwarding between %d interfaces", len(devices))
    print("ready", flush=True)
    await driver.serve_forever()


def cmd_run(args: argparse.Namespace, forwarding: bool) -> int:
    """Run the stack until SIGINT/SIGTERM; print counters at exit."""
    if args.lab:
        attachments = lab_attachments(_lab_config(args))
    elif args.tap:
        if len(args.addr) != len(args.tap):
            print("give one --addr for each --tap", file=sys.stderr)
            return 2
        attachments = [Attachment(t, a, args.netns)
                       for t, a in zip(args.tap, args.addr, strict=True)]
    else:
        print("give --lab or --tap NAME --addr ADDR/PREFIX", file=sys.stderr)
        return 2
    try:
        stack, devices = build_stack(attachments, forwarding=forwarding,
                                     offload=not args.no_offload, routes=args.route)
    except (OSError, ValueError) as e:
        print(f"cannot attach: {e} (is the lab up? `tapsplice lab up`)", file=sys.stderr)
        return 1
    try:
        import uvloop
        uvloop.run(_serve(stack, devices, args))
    except KeyboardInterrupt:
        pass
    print(json.dumps(summary(stack, devices), indent=1), file=sys.stderr)
    return 0


def add_common(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that runs the stack."""
    lab = LabConfig()
    p.add_argument("--lab", action="store_true",
                   help="attach to the lab's TAPs as 198.18.0.2 and 198.19.0.2")
    p.add_argument("--tap", action="append", default=[], metavar="NAME",
                   help="attach to an existing TAP in the current namespace (repeatable)")
    p.add_argument("--addr", action="append", default=[], metavar="A.B.C.D/N",
                   help="address for the matching --tap")
    p.add_argument("--netns", default=None, help="namespace holding the --tap devices")
    p.add_argument("--route", action="append", default=[], type=_parse_route,
                   metavar="PREFIX=GATEWAY", help="static route (repeatable)")
    p.add_argument("--pcap", metavar="FILE", help="record every frame to a pcap file")
    p.add_argument("--no-offload", action="store_true",
                   help="plain 1,500-byte frames: no vnet header, no TSO, no checksum offload")
    p.add_argument("--impair", type=_impair, default=None, metavar="SPEC",
                   help='fault injection on the stack\'s devices, both directions, e.g. '
                        '"loss=1%%,duplicate=1%%,reorder=2%%,corrupt=0.1%%,delay=1ms"')
    p.add_argument("--seed", type=int, default=0, help="seed of the fault injector")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"])
    for name, default in (("client-ns", lab.client_ns), ("client-tap", lab.client_tap),
                          ("server-ns", lab.server_ns), ("server-tap", lab.server_tap)):
        p.add_argument(f"--{name}", default=default, help=f"lab {name} (default {default})")


def add_parser(subparsers) -> None:
    """Register `run` and `router`."""
    p = subparsers.add_parser(
        "run", help="run the stack: answers ARP and ping",
        description="Run the stack on TAP devices. It answers ARP and ping, and nothing "
                    "else until services are started on it.")
    add_common(p)
    p.set_defaults(func=lambda a: cmd_run(a, forwarding=False))
    p = subparsers.add_parser(
        "router", help="run the stack as an IPv4 router between its devices",
        description="Run the stack with IPv4 forwarding between its interfaces "
                    "(TTL, incremental checksums, ICMP errors, TSO super-segments kept).")
    add_common(p)
    p.set_defaults(func=lambda a: cmd_run(a, forwarding=True))
