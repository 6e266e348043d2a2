"""The demo's names part: a real DNS server (dnsmasq) in the server namespace, curl
asking both proxies for a host by name, and a DNS query carried through the SOCKS
proxy's UDP ASSOCIATE by a real SOCKS5 client (PySocks)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from apps.lab import LabConfig
from apps.labdns import DnsServer, DnsServerError
from apps.labproc import ns_cmd
from apps.origin import Origin

NAME = "origin.tapsplice.test"
DNS_ADDR = "198.19.0.1"

#: A SOCKS5 UDP ASSOCIATE client (PySocks) sending a DNS query (dnspython) through
#: the proxy to the lab's DNS server; prints the answer's addresses.
UDP_CLIENT = textwrap.dedent("""
    import socket, sys
    import dns.message, socks
    s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
    s.set_proxy(socks.SOCKS5, "198.18.0.2", 1080)
    s.settimeout(5)
    q = dns.message.make_query(sys.argv[1], "A")
    s.sendto(q.to_wire(), (sys.argv[2], 53))
    data, peer = s.recvfrom(65535)
    r = dns.message.from_wire(data)
    assert r.id == q.id
    print(peer[0], peer[1], " ".join(rr.address for rrset in r.answer for rr in rrset
                                     if rr.rdtype == 1))
""")


def udp_associate_query(cfg: LabConfig, name: str, server: str) -> tuple[bool, str]:
    """Run the UDP ASSOCIATE client in the client namespace: (worked, what it printed)."""
    proc = subprocess.run(ns_cmd(cfg.client_ns, sys.executable, "-c", UDP_CLIENT, name, server),
                          capture_output=True, text=True, timeout=30)
    text = proc.stdout.strip() or proc.stderr.strip()[-500:]
    return proc.returncode == 0, text


def curl(cfg: LabConfig, *args: str) -> subprocess.CompletedProcess[str]:
    """curl in the client namespace with the environment's proxies cleared."""
    argv = ns_cmd(cfg.client_ns, "env", "-u", "http_proxy", "-u", "HTTP_PROXY", "-u",
                  "all_proxy", "-u", "ALL_PROXY", "curl", "-sS", "--max-time", "60", *args)
    return subprocess.run(argv, capture_output=True, text=True, timeout=70)


def names_part(cfg: LabConfig, origin: Origin, tmp: Path, extra: list[str],
               start: Any, stop: Any, say: Any) -> bool:
    """Both proxies fetch by name; the SOCKS proxy carries a DNS query over UDP."""
    ok = True
    f = origin.make_file("demo-name.bin", 4 << 20, random=True)
    try:
        dns = DnsServer(cfg.server_ns, DNS_ADDR, {NAME: "198.19.0.1"})
        dns.start()
    except DnsServerError as e:
        print(f"   the DNS server did not start: {e}")
        return False
    try:
        say(f"names: dnsmasq in {cfg.server_ns} answers for {NAME}; "
            f"tapsplice socks --lab --mode splice --dns {DNS_ADDR}")
        log = tmp / "socks-names.log"
        proc = start(cfg, "socks", ["--mode", "splice", "--dns", DNS_ADDR, *extra], log)
        try:
            out = tmp / "by-name.bin"
            r = curl(cfg, "--fail", "--socks5-hostname", "198.18.0.2:1080", "-o", str(out),
                     origin.url(f, NAME))
            intact = r.returncode == 0 and hashlib.sha256(out.read_bytes()).hexdigest() == f.sha256
            print(f"   curl --socks5-hostname {origin.url(f, NAME)}: "
                  f"{'intact' if intact else r.stderr.strip()}")
            worked, text = udp_associate_query(cfg, NAME, DNS_ADDR)
            print(f"   UDP ASSOCIATE (PySocks): DNS query for {NAME} to {DNS_ADDR}:53 "
                  f"through the proxy: {'answer from ' + text if worked else 'FAILED ' + text}")
            ok &= intact and worked and text.endswith("198.19.0.1")
        finally:
            summary = stop(proc, log)
        dnsc = summary.get("dns", {})
        print(f"   resolver: {dnsc.get('queries', 0)} queries over the stack's UDP, "
              f"{dnsc.get('answers', 0)} answers; splices {summary.get('splice', {}).get('splices', 0)}")
        say(f"names: tapsplice http-proxy --lab --dns {DNS_ADDR}; curl -x by name")
        log = tmp / "http-names.log"
        proc = start(cfg, "http-proxy", ["--dns", DNS_ADDR, *extra], log)
        try:
            r = curl(cfg, "-x", "http://198.18.0.2:3128", "-o", "/dev/null", "-w",
                     "%{http_code}", origin.url(f, NAME))
            r2 = curl(cfg, "-x", "http://198.18.0.2:3128", "-o", "/dev/null", "-w",
                      "%{http_code}", "http://nowhere.tapsplice.test/")
            print(f"   curl -x ... {origin.url(f, NAME)}: {r.stdout}; an unknown name: "
                  f"{r2.stdout}")
            ok &= r.stdout == "200" and r2.stdout == "502"
        finally:
            stop(proc, log)
    finally:
        dns.stop()
    return ok
