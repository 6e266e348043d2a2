"""`tapsplice stat`: connections, splices and counters of a running stack, like `ss -tni`.

It asks the stack's control socket (stack/control.py) for a snapshot. Filters are
applied by the stack, so the cap on the number of connections in one answer counts
only the connections asked for.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from stack.control import ControlError, find_socket, find_sockets, query
from stack.tcp.api import TcpState

#: Shortest --watch interval: a refresh costs the stack a snapshot.
MIN_WATCH = 0.2
#: Refreshes of one --watch run (about a day at one a second).
MAX_REFRESHES = 100_000


def parse_state(text: str) -> str:
    """A TCP state name (`established`, `time-wait`, `SYN_SENT`...) as TcpState names it."""
    name = text.strip().upper().replace("-", "_")
    valid = [s.name for s in TcpState]
    if name not in valid:
        raise argparse.ArgumentTypeError(
            f"unknown state {text!r}; one of {', '.join(s.lower() for s in valid)}")
    return name


def parse_addr(text: str) -> tuple[str | None, int | None]:
    """``A.B.C.D``, ``A.B.C.D:PORT`` or ``:PORT`` -> (address or None, port or None)."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = text, ""
    addr = host or None
    if addr is not None:
        try:
            socket.inet_pton(socket.AF_INET, addr)
        except OSError:
            raise argparse.ArgumentTypeError(f"{host!r} is not an IPv4 address") from None
    port = None
    if port_text:
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise argparse.ArgumentTypeError(f"{port_text!r} is not a port number")
        port = int(port_text)
    if addr is None and port is None:
        raise argparse.ArgumentTypeError("give A.B.C.D, A.B.C.D:PORT or :PORT")
    return addr, port


def build_request(args: argparse.Namespace) -> dict[str, Any]:
    """The snapshot request for the command line's filters."""
    req: dict[str, Any] = {"cmd": "snapshot"}
    if args.state:
        req["state"] = args.state
    if args.addr:
        addr, port = args.addr
        if addr is not None:
            req["addr"] = addr
        if port is not None:
            req["port"] = port
    if args.limit is not None:
        req["limit"] = args.limit
    return req


# -- rendering -----------------------------------------------------------------------

def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def _ep(d: dict[str, Any], which: str) -> str:
    return f"{d[which]}:{d[which + '_port']}"


def _splice_text(row: dict[str, Any]) -> str:
    sp = row.get("splice")
    if not sp:
        return ""
    partner = sp.get("partner")
    to = f" <-> {_ep(partner, 'local')}-{_ep(partner, 'remote')}" if partner else ""
    return f"{sp['role']} {sp['state']}{to}"


def _details(c: dict[str, Any]) -> str:
    opts = c.get("options", {})
    flags = [name for name in ("timestamps", "sack") if opts.get(name)]
    if opts.get("wscale"):
        flags.append(f"wscale:{opts.get('snd_wscale')},{opts.get('rcv_wscale')}")
    return (f"rtt:{_ms(c['rtt'])}/{_ms(c['rttvar'])} rto:{_ms(c['rto'])} mss:{c['mss']} "
            f"cwnd:{c['cwnd']} ssthresh:{c['ssthresh']} snd_wnd:{c['snd_wnd']} "
            f"rcv_wnd:{c['rcv_wnd']} bytes_out:{c['bytes_out']} bytes_in:{c['bytes_in']} "
            f"unacked:{c['unacked']} retrans:{c['retransmits']}/{c['total_retrans']} "
            + " ".join(flags))


def connection_lines(snap: dict[str, Any]) -> list[str]:
    """Listeners and connections, one line each plus an indented detail line for a
    connection (the layout of `ss -tni`; times in milliseconds)."""
    lines = [_title(snap), f"{'State':<12} {'Local Address:Port':<21} {'Peer Address:Port':<21}"]
    for lst in snap.get("listeners", []):
        lines.append(f"{'LISTEN':<12} {_ep(lst, 'local'):<21} {'*:*':<21} "
                     f"accept:{lst['accept_queue']}/{lst['backlog']} syn:{lst['syn_queue']}")
    for c in snap.get("connections", []):
        lines.append(f"{c['state']:<12} {_ep(c, 'local'):<21} {_ep(c, 'remote'):<21}")
        lines.append("\t " + _details(c))
        if c.get("splice"):
            lines.append("\t splice " + _splice_text(c))
    return lines


def _title(snap: dict[str, Any]) -> str:
    shown = len(snap.get("connections", []))
    text = (f"stack pid {snap.get('pid')}: {shown} of {snap.get('connections_matched')} "
            f"matching connections ({snap.get('connections_total')} in all)")
    if snap.get("truncated"):
        text += " [truncated]"
    sp = snap.get("splice", {})
    if sp.get("enabled"):
        text += f", {sp.get('pairs_total', 0)} splice pairs"
    return text


def counters_tables(snap: dict[str, Any]) -> list[Table]:
    """Stack counters: drops by reason, ARP, TCP, devices, splice, copied bytes."""
    c = snap["counters"]
    tables = []
    groups: list[tuple[str, dict[str, Any]]] = [
        ("drops by reason", c.get("drops", {})),
        ("stack", {k: v for k, v in c.get("stack", {}).items() if not k.startswith("drop.")}),
        ("tcp", c.get("tcp", {})),
        ("splice", snap.get("splice", {}).get("counters", {})),
    ]
    if "udp" in c:
        groups.append((f"udp ({c.get('udp_sockets', 0)} sockets)", c["udp"]))
    if "dns" in c:
        groups.append((f"dns ({c.get('dns_cache_entries', 0)} cached)", c["dns"]))
    groups += [(f"device {name}", dc) for name, dc in c.get("devices", {}).items()]
    for title, values in groups:
        t = Table(title=title, title_justify="left", box=None, show_header=False)
        t.add_column("counter")
        t.add_column("value", justify="right")
        for k, v in values.items():
            t.add_row(k, str(v))
        if not values:
            t.add_row("(none)", "")
        tables.append(t)
    t = Table(title="neighbours", title_justify="left", box=None)
    for col in ("ip", "iface", "state", "mac", "pending"):
        t.add_column(col)
    for n in c.get("neighbours", []):
        t.add_row(n["ip"], n["iface"], n["state"], n["mac"] or "-", str(n["pending"]))
    tables.append(t)
    return tables


def render(console: Console, snap: dict[str, Any], counters: bool) -> None:
    """Print one snapshot."""
    if counters:
        for t in counters_tables(snap):
            console.print(t)
        console.print(f"copied payload bytes: {snap['counters'].get('copied_payload_bytes', 0)}")
    else:
        for line in connection_lines(snap):
            console.print(line, markup=False, highlight=False, soft_wrap=True)


def emit_json(snap: dict[str, Any], counters: bool) -> str:
    """The --json output: the whole snapshot, or with --counters its counters part."""
    if counters:
        snap = {"counters": snap["counters"], "splice": snap.get("splice", {}).get("counters")}
    return json.dumps(snap, indent=1, sort_keys=True)


# -- a Prometheus endpoint ------------------------------------------------------------------

class _MetricsHandler(BaseHTTPRequestHandler):
    """GET /metrics: the stack's counters, read through its control socket per scrape."""

    control: Path = Path()
    timeout = 5  # seconds a scraper may take to send its request (socket timeout)

    def do_GET(self) -> None:  # noqa: N802 - the http.server protocol
        """Answer one scrape."""
        if self.path.split("?", 1)[0] != "/metrics":
            return self._send(404, "only /metrics here\n")
        try:
            text = query(self.control, {"cmd": "metrics"})["metrics"]
        except (ControlError, KeyError) as e:
            return self._send(503, f"the stack did not answer: {e}\n")
        self._send(200, text)

    def _send(self, code: int, text: str) -> None:
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        """Scrapes are not logged."""


def metrics_server(control: Path, host: str, port: int) -> HTTPServer:
    """An HTTP server (one request at a time) exposing ``/metrics`` of the stack at
    ``control``; the caller runs ``serve_forever()`` and ``server_close()``."""
    handler = type("MetricsHandler", (_MetricsHandler,), {"control": control})
    return HTTPServer((host, port), handler)


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` for --metrics."""
    addr, port = parse_addr(text)
    if port is None:
        raise argparse.ArgumentTypeError("--metrics needs ADDR:PORT, e.g. 127.0.0.1:9650")
    return addr or "127.0.0.1", port


def _serve_metrics(path: Path, listen: tuple[str, int]) -> int:
    query(path, {"cmd": "ping"})  # fail now, not at the first scrape, if no stack is there
    try:
        server = metrics_server(path, *listen)
    except OSError as e:
        print(f"tapsplice stat: cannot listen on {listen[0]}:{listen[1]}: {e}", file=sys.stderr)
        return 1
    print(f"serving http://{listen[0]}:{server.server_address[1]}/metrics", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


# -- the command -----------------------------------------------------------------------

def cmd_stat(args: argparse.Namespace) -> int:
    """Run `tapsplice stat`."""
    console = Console()
    if args.all and (args.control or args.metrics):
        print("tapsplice stat: --all asks every stack; it takes neither --control nor "
              "--metrics", file=sys.stderr)
        return 2
    try:
        if args.all:
            paths = find_sockets()
        else:
            paths = [Path(args.control) if args.control else find_socket()]
        if args.metrics:
            return _serve_metrics(paths[0], args.metrics)
        request = build_request(args)
        refreshes = MAX_REFRESHES if args.watch else 1
        for i in range(refreshes):
            snaps = [(path, query(path, request)) for path in paths]
            if args.watch and not args.json:
                console.clear()
            for path, snap in snaps:
                if args.json:
                    text = emit_json(snap, args.counters)
                    if args.all:  # one line per stack, saying which
                        text = json.dumps({"control": str(path), **json.loads(text)})
                    print(text, flush=True)
                else:
                    if args.all:
                        console.print(f"[bold]stack at {path}[/bold]", soft_wrap=True)
                    render(console, snap, args.counters)
            if i + 1 < refreshes:
                time.sleep(args.watch)  # the pace of --watch, bounded by MAX_REFRESHES
    except ControlError as e:
        print(f"tapsplice stat: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


def _watch(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not MIN_WATCH <= v <= 3600:
        raise argparse.ArgumentTypeError(f"--watch takes {MIN_WATCH} to 3600 seconds")
    return v


def add_parser(subparsers) -> None:
    """Register `stat`."""
    p = subparsers.add_parser(
        "stat", help="show connections, splices and counters of a running stack",
        description="Ask a running stack (through its control socket) for its TCP "
                    "connections, listeners, splice pairs and counters.")
    p.add_argument("--control", metavar="PATH", default=None,
                   help="the stack's control socket (default: the only one in "
                        "/run/tapsplice)")
    p.add_argument("--all", action="store_true",
                   help="every running stack in /run/tapsplice, one after another (the "
                        "workers of a stack run with --workers each have a socket)")
    p.add_argument("--state", type=parse_state, default=None,
                   help="only connections in this TCP state (e.g. established, time-wait)")
    p.add_argument("--addr", type=parse_addr, default=None, metavar="A.B.C.D[:PORT]",
                   help="only connections with this address (and port) at either end")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="at most N connections (the stack caps it too)")
    p.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    p.add_argument("--watch", type=_watch, default=None, metavar="SECONDS",
                   help="refresh every SECONDS until Ctrl-C")
    p.add_argument("--counters", action="store_true",
                   help="show stack counters (drops by reason, ARP, TCP, devices, splice)")
    p.add_argument("--metrics", type=parse_listen, default=None, metavar="ADDR:PORT",
                   help="instead of printing, serve the counters for Prometheus at "
                        "http://ADDR:PORT/metrics until Ctrl-C")
    p.set_defaults(func=cmd_stat)
