"""`tapsplice bench udp`: UDP echo datagrams/s and resolver lookups/s, each beside a
kernel baseline measured in the same run.

- echo: a closed-loop client (uvloop, ``--window`` datagrams in flight, 64-byte
  payloads) in the lab's client namespace against the stack's UDP echo (`tapsplice
  serve`, 198.18.0.2:7), then the same client in the kernel twin lab's client
  namespace against a uvloop UDP echo on kernel sockets behind the kernel router.
- dns: `net.resolve()` of a TapStack run by this process on the lab's TAPs against
  dnsmasq in the server namespace: distinct names (every lookup a query over the
  stack's UDP) and one name (every lookup but the first from the cache); the baseline
  is dnspython's asyncio resolver on kernel sockets in the server namespace asking the
  same dnsmasq for distinct names.

Every load is bounded by ``--seconds`` or its lookup count and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from apps.lab import LabConfig, lab_down, lab_up
from apps.labdns import DnsServer
from apps.labproc import ns_cmd, stop_process, wait_until
from tools.bench.kernel_lab import KernelLab, KernelLabConfig

#: The closed-loop UDP echo client: prints datagrams echoed per second.
ECHO_CLIENT = textwrap.dedent("""
    import asyncio, sys, time, uvloop
    host, port, window, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    class P(asyncio.DatagramProtocol):
        def __init__(self): self.n = 0; self.t = None
        def connection_made(self, t): self.t = t
        def datagram_received(self, d, a):
            self.n += 1; self.t.sendto(d)
    async def main():
        loop = asyncio.get_running_loop()
        t, p = await loop.create_datagram_endpoint(P, remote_addr=(host, port))
        for _ in range(window): t.sendto(b"x" * 64)
        await asyncio.sleep(0.5); n0, t0 = p.n, time.monotonic()
        await asyncio.sleep(seconds)
        print((p.n - n0) / (time.monotonic() - t0)); t.close()
    uvloop.run(main())
""")

#: A uvloop UDP echo on kernel sockets (the baseline server), bounded in time.
KERNEL_ECHO = textwrap.dedent("""
    import asyncio, sys, uvloop
    class E(asyncio.DatagramProtocol):
        def connection_made(self, t): self.t = t
        def datagram_received(self, d, a): self.t.sendto(d, a)
    async def main():
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(E, local_addr=(sys.argv[1], 7))
        print("ready", flush=True); await asyncio.sleep(float(sys.argv[2]))
    uvloop.run(main())
""")

#: dnspython's asyncio resolver on kernel sockets: lookups/s of distinct names.
KERNEL_RESOLVER = textwrap.dedent("""
    import asyncio, sys, time, dns.asyncresolver
    server, count, conc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    r = dns.asyncresolver.Resolver(configure=False); r.nameservers = [server]
    r.cache = None
    async def main():
        sem = asyncio.Semaphore(conc)
        async def one(i):
            async with sem:
                await r.resolve(f"n{i}.bench.tapsplice.test", "A")
        t0 = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(count)))
        print(count / (time.monotonic() - t0))
    asyncio.run(main())
""")


def _echo_rate(ns: str, host: str, window: int, seconds: float) -> float:
    proc = subprocess.run(ns_cmd(ns, sys.executable, "-c", ECHO_CLIENT, host, "7",
                                 str(window), str(seconds)),
                          capture_output=True, text=True, timeout=seconds + 30)
    if proc.returncode != 0:
        raise RuntimeError(f"echo client failed: {proc.stderr[-800:]}")
    return float(proc.stdout.split()[-1])


def _stack_echo(cfg: LabConfig, window: int, seconds: float, log: Path) -> float:
    argv = [sys.executable, "-m", "apps.cli", "serve", "--lab", "--client-ns", cfg.client_ns,
            "--client-tap", cfg.client_tap, "--server-ns", cfg.server_ns,
            "--server-tap", cfg.server_tap, "--log-level", "warning"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        if not wait_until(ns_cmd(cfg.client_ns, "ping", "-c", "1", "-W", "1", "198.18.0.2"),
                          timeout=30):
            raise RuntimeError(f"the stack did not come up: {log.read_text()[-800:]}")
        return _echo_rate(cfg.client_ns, "198.18.0.2", window, seconds)
    finally:
        stop_process(proc)


def _kernel_echo(window: int, seconds: float) -> float:
    with KernelLab(KernelLabConfig.unique()) as kcfg:
        server = subprocess.Popen(ns_cmd(kcfg.namespaces[2], sys.executable, "-c", KERNEL_ECHO,
                                         kcfg.server_ip, str(seconds + 20)),
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            server.stdout.readline()
            return _echo_rate(kcfg.namespaces[0], kcfg.server_ip, window, seconds)
        finally:
            server.terminate()
            server.wait(timeout=10)


async def _stack_lookups(cfg: LabConfig, count: int, conc: int) -> dict[str, float]:
    from apps.stackcmd import lab_attachments
    from stack.aio import TapStack
    from stack.dns import ResolverConfig
    net = TapStack(lab_attachments(cfg))
    net.start()
    try:
        net.configure_resolver([("198.19.0.1", 53)], config=ResolverConfig(cache_size=count + 10))
        await net.resolve("warm.bench.tapsplice.test")  # ARP and the first exchange
        sem = asyncio.Semaphore(conc)

        async def run(names: list[str]) -> float:
            async def one(name: str) -> None:
                async with sem:
                    await net.resolve(name)
            t0 = time.monotonic()
            await asyncio.gather(*(one(n) for n in names))
            return len(names) / (time.monotonic() - t0)
        uncached = await run([f"s{i}.bench.tapsplice.test" for i in range(count)])
        cached = await run(["warm.bench.tapsplice.test"] * (count * 10))
        return {"uncached": uncached, "cached": cached}
    finally:
        net.close()


def _kernel_lookups(cfg: LabConfig, count: int, conc: int) -> float:
    proc = subprocess.run(ns_cmd(cfg.server_ns, sys.executable, "-c", KERNEL_RESOLVER,
                                 "198.19.0.1", str(count), str(conc)),
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"kernel resolver failed: {proc.stderr[-800:]}")
    return float(proc.stdout.split()[-1])


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement, in one lab; the figures (rates per second, medians)."""
    cfg = LabConfig.unique("ub")
    results: dict[str, list[float]] = {k: [] for k in (
        "echo_stack", "echo_kernel", "dns_uncached", "dns_cached", "dns_kernel")}
    lab_up(cfg)
    try:
        with DnsServer(cfg.server_ns, "198.19.0.1", {},
                       domains={"bench.tapsplice.test": "198.19.0.1"}):
            for _ in range(args.repeats):
                results["echo_stack"].append(
                    _stack_echo(cfg, args.window, args.seconds, Path(args.log)))
                results["echo_kernel"].append(_kernel_echo(args.window, args.seconds))
                got = asyncio.run(_stack_lookups(cfg, args.lookups, args.concurrency))
                results["dns_uncached"].append(got["uncached"])
                results["dns_cached"].append(got["cached"])
                results["dns_kernel"].append(_kernel_lookups(cfg, args.lookups,
                                                             args.concurrency))
    finally:
        lab_down(cfg)
    return {k: sorted(v)[len(v) // 2] for k, v in results.items()} | {"samples": results}


def cmd_udp(args: argparse.Namespace) -> int:
    """Run and print the table."""
    fig = run_bench(args)
    t = Table(title=f"UDP and names ({args.repeats} repeats, medians)")
    t.add_column("measure")
    t.add_column("the stack", justify="right")
    t.add_column("kernel baseline", justify="right")
    t.add_row(f"UDP echo, datagrams/s ({args.window} in flight)",
              f"{fig['echo_stack']:,.0f}", f"{fig['echo_kernel']:,.0f}")
    t.add_row(f"lookups/s, uncached ({args.concurrency} at once)",
              f"{fig['dns_uncached']:,.0f}", f"{fig['dns_kernel']:,.0f}")
    t.add_row("lookups/s, cached", f"{fig['dns_cached']:,.0f}", "-")
    Console().print(t)
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=1))
    return 0


def add_udp_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``tapsplice bench udp``."""
    p = sub.add_parser("udp", help="UDP echo datagrams/s and resolver lookups/s vs the kernel",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=3.0, help="seconds per echo sample")
    p.add_argument("--window", type=int, default=32, help="echo datagrams in flight")
    p.add_argument("--lookups", type=int, default=2000, help="names per lookup sample")
    p.add_argument("--concurrency", type=int, default=32, help="lookups at once")
    p.add_argument("--repeats", type=int, default=3, help="samples of each")
    p.add_argument("--log", default="/tmp/tapsplice-bench-udp.log", help="the stack's log")
    p.add_argument("--json", default=None, help="write the figures here")
    p.set_defaults(func=cmd_udp)
    return p
