"""A real DNS server for the lab: dnsmasq (Debian's dnsmasq-base) in a namespace,
with its own command line only — no configuration file, no /etc/hosts, no upstream
servers — answering for the names it is given.

The demo and the lab tests point the stack's ``--dns`` at it, so that names travel
as real DNS over the stack's UDP.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from apps.labproc import CommandError, ns_cmd, run, stop_process

#: The lab's own names live under a reserved TLD (RFC 6761 §6.2: .test).
LAB_DOMAIN = "tapsplice.test"
START_TIMEOUT = 10.0


class DnsServerError(RuntimeError):
    """dnsmasq could not be started or did not listen in time."""


class DnsServer:
    """dnsmasq answering ``records`` (name -> IPv4 address) and ``aliases`` (name ->
    target, as CNAMEs) and every name under ``domains`` on ``addr``:``port`` inside ``netns``. Every other name gets
    NXDOMAIN at once (the server knows no upstream). A context manager."""

    def __init__(self, netns: str, addr: str, records: dict[str, str], *,
                 aliases: dict[str, str] | None = None,
                 domains: dict[str, str] | None = None, port: int = 53,
                 ttl: int = 60) -> None:
        self.netns = netns
        self.addr = addr
        self.port = port
        #: TTL of the answers (dnsmasq gives its own names 0, which nobody caches).
        self.ttl = ttl
        self.records = dict(records)
        self.aliases = dict(aliases or {})
        #: Every name under each of these domains answers with its address.
        self.domains = dict(domains or {})
        self._tmp: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def command(self, tmp: Path) -> list[str]:
        """The dnsmasq command line."""
        cmd = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
               "--no-hosts", "--no-poll", "--bind-interfaces",
               f"--listen-address={self.addr}", f"--port={self.port}",
               f"--pid-file={tmp / 'dnsmasq.pid'}", "--log-queries", "--log-facility=-",
               "--user=root", "--group=root", f"--local=/{LAB_DOMAIN}/",
               f"--local-ttl={self.ttl}"]
        cmd += [f"--host-record={name},{ip}" for name, ip in self.records.items()]
        cmd += [f"--cname={name},{target}" for name, target in self.aliases.items()]
        cmd += [f"--address=/{dom}/{ip}" for dom, ip in self.domains.items()]
        return cmd

    def start(self) -> None:
        """Start dnsmasq and wait (bounded) until it listens on UDP and TCP."""
        if self._proc is not None:
            raise DnsServerError("dnsmasq already started")
        if shutil.which("dnsmasq") is None:
            raise DnsServerError("dnsmasq is not installed (Debian: dnsmasq-base; "
                                 "tools/setup.sh installs it)")
        self._tmp = tmp = Path(tempfile.mkdtemp(prefix="tapsplice-dns-"))
        log = open(tmp / "dnsmasq.log", "wb")
        try:
            self._proc = subprocess.Popen(ns_cmd(self.netns, *self.command(tmp)),
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                          start_new_session=True)
        except OSError as exc:
            raise DnsServerError(f"cannot run dnsmasq: {exc}") from exc
        finally:
            log.close()
        try:
            self._wait_listening()
        except BaseException:
            self.stop()
            raise

    def _wait_listening(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise DnsServerError(f"dnsmasq exited with {self._proc.returncode}: "
                                     f"{self.log_text()[-2000:]}")
            try:
                out = run(ns_cmd(self.netns, "ss", "-Hlun", f"sport = :{self.port}"),
                          timeout=5.0)
            except CommandError as exc:
                raise DnsServerError(str(exc)) from exc
            if out.strip():
                return
            time.sleep(0.05)  # poll interval while dnsmasq binds its sockets
        raise DnsServerError(f"dnsmasq did not listen within {START_TIMEOUT:g}s")

    def log_text(self) -> str:
        """What dnsmasq logged so far (one line per query with --log-queries)."""
        if self._tmp is None or not (self._tmp / "dnsmasq.log").exists():
            return ""
        return (self._tmp / "dnsmasq.log").read_text(errors="replace")

    def queries(self, name: str) -> int:
        """How many queries for ``name`` dnsmasq has logged."""
        return sum(1 for line in self.log_text().splitlines()
                   if "query[" in line and f" {name} from" in line)

    def stop(self) -> None:
        """Stop dnsmasq and remove its temporary directory."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc)
        tmp, self._tmp = self._tmp, None
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    def __enter__(self) -> DnsServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
