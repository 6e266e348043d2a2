"""`tapsplice demo`: the lab, the stack in it, real traffic, and what the stack did.

Brings the lab up (or reuses it), then:

1. the splicing SOCKS5 proxy (`tapsplice socks --lab`): curl in the client namespace
   downloads a random file from nginx in the server namespace through it, the sha256
   is checked, and the stack's splice counters are shown (splices, bytes relayed,
   payload bytes copied = 0); the same download through the proxy in copy mode gives
   the spliced-versus-copy speed; then the proxy as two worker processes carrying a few
   thousand short sessions, with the splices each worker made;
2. the HTTP proxy with its cache (`tapsplice http-proxy --lab`): a miss then a hit,
   several large objects on one kept-alive connection (each body spliced one way, then
   the next request read by the proxy) followed by a hit, and a large response spliced
   both ways (Connection: close);
   between them, names: dnsmasq in the server namespace as the lab's DNS server, curl
   --socks5-hostname and curl -x fetching by name (resolved by the stack over its own
   UDP), and a DNS query carried by the SOCKS proxy's UDP ASSOCIATE (PySocks);
3. the stack as a router (`tapsplice router --lab`): ping from both sides, and a download
   routed through it.

Everything it started is stopped at the end; the lab is removed again unless it was
there before (or --keep-lab is given).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from apps.demo_names import names_part
from apps.lab import LabConfig, lab_down, lab_up, list_netns
from apps.labproc import CommandError, curl_download, ns_cmd, stop_process, wait_ready, wait_until
from apps.origin import Origin

STEP_TIMEOUT = 30.0
REPO = Path(__file__).resolve().parents[1]


def _say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _ping(ns: str, addr: str) -> bool:
    proc = subprocess.run(ns_cmd(ns, "ping", "-c", "2", "-i", "0.2", "-W", "1", addr),
                          capture_output=True, text=True, timeout=STEP_TIMEOUT)
    last = [line for line in proc.stdout.splitlines() if "packets transmitted" in line]
    print(f"   ping {addr} from {ns}: {last[0] if last else proc.stderr.strip()}")
    return proc.returncode == 0


def _start_stack(cfg: LabConfig, command: str, extra: list[str], log: Path):
    """Run `tapsplice COMMAND --lab` in the background; wait until it answers ping."""
    argv = [sys.executable, "-m", "apps.cli", command, "--lab",
            "--client-ns", cfg.client_ns, "--client-tap", cfg.client_tap,
            "--server-ns", cfg.server_ns, "--server-tap", cfg.server_tap, *extra]
    out = open(log, "wb")
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    ok = wait_until(ns_cmd(cfg.client_ns, "ping", "-c", "1", "-W", "1", "198.18.0.2"),
                    timeout=STEP_TIMEOUT)
    if not ok:
        stop_process(proc)
        raise RuntimeError(f"the stack did not come up; log:\n{log.read_text()[-2000:]}")
    return proc


def _stop_stack(proc, log: Path) -> dict:
    stop_process(proc)
    text = log.read_text()
    start = text.find("{\n")
    try:
        return json.loads(text[start:]) if start >= 0 else {}
    except ValueError:
        return {}


#: Timed downloads per mode for the splice-versus-copy line, after one untimed one.
WARM_RUNS = 3


def _download(cfg: LabConfig, origin: Origin, f, tmp: Path, via: list[str],
              quiet: bool = False) -> tuple[bool, float]:
    out = tmp / "download.bin"
    # --noproxy would switch off --socks5 too: the environment's proxies are cleared
    # by giving curl an explicit (or no) proxy instead.
    argv = ns_cmd(cfg.client_ns, "env", "-u", "http_proxy", "-u", "https_proxy", "-u",
                  "all_proxy", "-u", "HTTP_PROXY", "-u", "HTTPS_PROXY", "-u", "ALL_PROXY",
                  "curl", "-sS", "--fail", *via,
                  "--max-time", "120", "-o", str(out), "-w", "%{size_download} %{time_total}",
                  origin.url(f, "198.19.0.1"))
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=130)
    if proc.returncode != 0:
        print(f"   curl failed: {proc.stderr.strip()}")
        return False, 0.0
    size, seconds = proc.stdout.split()
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    out.unlink()
    intact = digest == f.sha256 and int(size) == f.size
    gbit = int(size) * 8 / float(seconds) / 1e9
    if quiet:
        return intact, gbit
    print(f"   curl {' '.join(via) or '(direct)'}: {int(size)} bytes in {float(seconds):.3f} s "
          f"= {gbit:.2f} Gbit/s, sha256 {'matches' if intact else 'DIFFERS'}")
    return intact, gbit


def _socks_part(cfg: LabConfig, origin: Origin, f, tmp: Path, extra: list[str]) -> bool:
    ok = True
    speeds = {}
    for mode in ("splice", "copy"):
        _say(f"SOCKS5 proxy on the stack, {mode} mode (tapsplice socks --lab --mode {mode})")
        log = tmp / f"socks-{mode}.log"
        proc = _start_stack(cfg, "socks", ["--mode", mode, *extra], log)
        try:
            via = ["--socks5", "198.18.0.2:1080"]
            intact, _cold = _download(cfg, origin, f, tmp, via)
            # The first transfer on a fresh machine also pays for cold caches and the
            # kernels' first windows: the comparison takes the median of warm ones.
            warm = [_download(cfg, origin, f, tmp, via, quiet=True) for _ in range(WARM_RUNS)]
            ok &= intact and all(good for good, _ in warm)
            speeds[mode] = statistics.median(gbit for _, gbit in warm)
        finally:
            summary = _stop_stack(proc, log)
        for line in log.read_text().splitlines():
            if "tapsplice.socks.access" in line:
                print("   access:", line.split("access: ", 1)[-1])
        if mode == "splice":
            sp = summary.get("splice", {})
            tcp = summary.get("tcp", {})
            copied = sp.get("copied_payload_bytes", 0)
            print(f"   splices {sp.get('splices', 0)}, the proxy's own TCP sent "
                  f"{tcp.get('segs_out', 0)} segments; payload bytes copied by the stack "
                  f"for spliced flows: {copied}")
            ok &= sp.get("splices", 0) >= 1 and copied == 0
    if speeds.get("copy"):
        print(f"   spliced {speeds['splice']:.2f} Gbit/s vs copy {speeds['copy']:.2f} Gbit/s "
              f"(median of {WARM_RUNS} warm downloads each, after the first): "
              f"{speeds['splice'] / speeds['copy']:.1f}x")
    return ok


def _workers_part(cfg: LabConfig, origin: Origin, tmp: Path, extra: list[str]) -> bool:
    """Many short SOCKS sessions through two worker processes (README, workers)."""
    _say("SOCKS5 proxy as two worker processes (tapsplice socks --lab --workers 2)")
    small = origin.make_file("demo-small.bin", 1024, random=True)
    log = tmp / "socks-workers.log"
    proc = _start_stack(cfg, "socks", ["--workers", "2", *extra], log)
    try:
        try:
            wait_ready(proc, log, STEP_TIMEOUT)  # the supervisor's: every worker, not just 0
        except CommandError as e:
            print(f"   the workers did not start: {e}")
            return False
        load = subprocess.run(ns_cmd(cfg.client_ns, sys.executable, "-m",
                                     "tools.bench.splice_load", "rps", "--proxy",
                                     "198.18.0.2:1080", "--dest", "198.19.0.1:80",
                                     "--path", small.url_path, "--expect", str(small.size),
                                     "--concurrency", "32", "--count", "3000",
                                     "--duration", "3"),
                              capture_output=True, text=True, timeout=60, cwd=REPO)
    finally:
        summary = _stop_stack(proc, log)
    try:
        res = json.loads(load.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        print(f"   the load client failed: {load.stderr.strip()[-1500:]}")
        return False
    per = [w.get("splices") or 0 for w in summary.get("workers", [])]
    print(f"   {res['ok']} SOCKS sessions (CONNECT, GET of 1 KiB, close) in "
          f"{res['seconds']:.1f} s = {res['rps']:.0f}/s, {res['errors']} errors; "
          f"spliced by worker 0 and 1: {' and '.join(map(str, per))}")
    copied = summary.get("splice", {}).get("copied_payload_bytes", 0)
    return res["errors"] == 0 and res["ok"] > 0 and len(per) == 2 and min(per) > 0 \
        and copied == 0


def _curl(cfg: LabConfig, *args: str) -> subprocess.CompletedProcess:
    argv = ns_cmd(cfg.client_ns, "env", "-u", "http_proxy", "-u", "HTTP_PROXY", "curl", "-sS",
                  "--fail", "--max-time", "120", "-x", "http://198.18.0.2:3128", *args)
    return subprocess.run(argv, capture_output=True, text=True, timeout=130)


def _http_part(cfg: LabConfig, tmp: Path, extra: list[str]) -> bool:
    _say("HTTP proxy on the stack with its cache (tapsplice http-proxy --lab)")
    log = tmp / "http.log"
    proc = _start_stack(cfg, "http-proxy", ["--log-level", "info", *extra], log)
    ok = True
    try:
        with Origin(cfg.server_ns) as origin:
            small = origin.make_file("page.bin", 1 << 20, random=True)
            big = origin.make_file("big.bin", 256 << 20, random=False)
            day_ago = time.time() - 86400   # Last-Modified a day ago: heuristically fresh
            os.utime(small.path, (day_ago, day_ago))
            url, big_url = origin.url(small, "198.19.0.1"), origin.url(big, "198.19.0.1")
            for what in ("miss", "hit"):
                r = _curl(cfg, "-o", str(tmp / "page"), url)
                intact = r.returncode == 0 and hashlib.sha256(
                    (tmp / "page").read_bytes()).hexdigest() == small.sha256
                ok &= intact
                print(f"   GET {url} ({what} expected): {'intact' if intact else r.stderr}")
            assert small.sha256 is not None  # a random file's digest is always computed
            ok &= _kept_alive(cfg, origin, tmp, url, small.sha256)
            r = _curl(cfg, "-H", "Connection: close", "-o", "/dev/null", "-w",
                      "%{size_download} %{time_total}", big_url)
            ok &= r.returncode == 0
            if r.returncode == 0:
                size, secs = r.stdout.split()
                print(f"   GET {big_url} with Connection: close (the response is spliced): "
                      f"{int(size)} bytes, {int(size) * 8 / float(secs) / 1e9:.2f} Gbit/s")
    finally:
        summary = _stop_stack(proc, log)
    for line in log.read_text().splitlines():
        if "tapsplice.httpproxy.access" in line:
            print("   access:", line.split("access: ", 1)[-1])
    sp = summary.get("splice", {})
    one, both = sp.get("oneway_done", 0), sp.get("splices", 0)
    print(f"   stack: {one} bod{'y' if one == 1 else 'ies'} spliced one way, {both} "
          f"response{'' if both == 1 else 's'} spliced both ways, payload bytes copied by "
          f"the stack for spliced flows: {sp.get('copied_payload_bytes', 0)}")
    return ok


def _kept_alive(cfg: LabConfig, origin: Origin, tmp: Path, page_url: str,
                page_sha: str) -> bool:
    """Several large objects and a cached page on ONE kept-alive client connection:
    each body is spliced one way (docs/splice.md §7), then the proxy reads the next request."""
    files = [origin.make_file(f"ka{i}.bin", size, random=True)
             for i, size in enumerate((64 << 20, 16 << 20, 2 << 20))]
    urls = [origin.url(f, "198.19.0.1") for f in files] + [page_url]
    shas = [f.sha256 for f in files] + [page_sha]
    outs = [tmp / f"ka{i}" for i in range(len(urls))]
    r = _curl(cfg, *[a for o in outs for a in ("-o", str(o))], "-w",
              "%{num_connects} %{size_download} %{time_total}\n", *urls)
    if r.returncode != 0:
        print(f"   kept-alive connection failed: {r.stderr}")
        return False
    rows = [line.split() for line in r.stdout.splitlines()]
    ok = len(rows) == len(urls) and [row[0] for row in rows] == ["1"] + ["0"] * (len(urls) - 1)
    print(f"   {len(urls)} GETs on one kept-alive connection (new connections per request: "
          f"{[row[0] for row in rows]}):")
    for out, sha, row, u in zip(outs, shas, rows, urls, strict=False):
        intact = hashlib.sha256(out.read_bytes()).hexdigest() == sha
        ok &= intact
        size, secs = int(row[1]), float(row[2])
        print(f"     {u}: {size} bytes, {'intact' if intact else 'CORRUPT'}, "
              f"{size * 8 / max(secs, 1e-9) / 1e9:.2f} Gbit/s")
    return ok


def _router_part(cfg: LabConfig, size: int, tmp: Path, extra: list[str]) -> bool:
    _say("the stack as a router between tsc and tss (tapsplice router --lab)")
    log = tmp / "router.log"
    proc = _start_stack(cfg, "router", extra, log)
    ok = True
    try:
        ok &= _ping(cfg.client_ns, "198.18.0.2")
        ok &= _ping(cfg.server_ns, "198.19.0.2")
        ok &= _ping(cfg.client_ns, "198.19.0.1")
        with Origin(cfg.server_ns) as origin:
            f = origin.make_file("demo.bin", size, random=True)
            out = tmp / "download.bin"
            url = origin.url(f, "198.19.0.1")
            dl = curl_download(cfg.client_ns, url, timeout=120, output=str(out))
            digest = hashlib.sha256(out.read_bytes()).hexdigest()
            intact = digest == f.sha256 and dl.size == size
            ok &= intact
            print(f"   curl {url} from tsc: {dl.size} bytes in {dl.seconds:.3f} s "
                  f"({dl.size * 8 / dl.seconds / 1e9:.2f} Gbit/s), sha256 "
                  f"{'matches' if intact else 'DIFFERS'}")
    finally:
        summary = _stop_stack(proc, log)
    c = summary.get("stack", {})
    drops = {k[5:]: v for k, v in c.items() if k.startswith("drop.")}
    print(f"   stack: {c.get('rx_frames', 0)} frames in, {c.get('rx_forwarded', 0)} forwarded, "
          f"{c.get('rx_local', 0)} for itself, {c.get('rx_arp', 0)} ARP, "
          f"{c.get('icmp_echo_replies', 0)} echo replies, dropped {drops or 'none'}")
    for name, d in summary.get("devices", {}).items():
        print(f"   {name}: rx {d.get('rx_frames')} frames / {d.get('rx_bytes')} bytes, "
              f"tx {d.get('tx_frames')} frames / {d.get('tx_bytes')} bytes")
    return ok


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo; exit code 0 when every step worked."""
    cfg = LabConfig()
    existed = cfg.client_ns in list_netns()
    _say(f"lab: {cfg.client_ns} (198.18.0.1/24) <-> stack <-> {cfg.server_ns} (198.19.0.1/24)")
    lab_up(cfg)
    extra = ["--no-offload"] if args.no_offload else []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tapsplice-demo-") as tmp:
        try:
            with Origin(cfg.server_ns) as origin:
                f = origin.make_file("demo-socks.bin", args.socks_size, random=True)
                ok = _socks_part(cfg, origin, f, Path(tmp), extra)
                ok &= _workers_part(cfg, origin, Path(tmp), extra)
                ok &= names_part(cfg, origin, Path(tmp), extra, _start_stack, _stop_stack,
                                 _say)
            ok &= _http_part(cfg, Path(tmp), extra)
            ok &= _router_part(cfg, args.size, Path(tmp), extra)
        finally:
            if not existed and not args.keep_lab:
                lab_down(cfg)
    _say(f"demo {'passed' if ok else 'FAILED'} in {time.monotonic() - t0:.1f} s")
    return 0 if ok else 1


def add_parser(subparsers) -> None:
    """Register `demo`."""
    p = subparsers.add_parser("demo", help="run the lab demo with real traffic",
                              description=__doc__)
    p.add_argument("--size", type=int, default=64 << 20,
                   help="download size through the router, bytes")
    p.add_argument("--socks-size", type=int, default=512 << 20,
                   help="download size through the SOCKS proxy, bytes")
    p.add_argument("--no-offload", action="store_true", help="run the stack without offloads")
    p.add_argument("--keep-lab", action="store_true", help="leave the lab up afterwards")
    p.add_argument("--log-level", default="warning")
    p.set_defaults(func=cmd_demo)
