"""An nginx origin server inside a network namespace, for benchmarks and lab tests.

nginx runs with its own configuration, pid file and temp paths in a private
temporary directory, never the system's, so it cannot collide with a system
nginx or with another origin. Big benchmark files are sparse (created with
truncate, no disk or CPU cost); integrity files are seeded random bytes whose
sha256 is computed while writing them.
"""

from __future__ import annotations

import hashlib
import os
import random as _random
import shutil
import subprocess
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from apps.labproc import CommandError, ns_cmd, run, stop_process

# Bounds: how long nginx may take to listen, and the largest file we will make.
START_TIMEOUT = 10.0
MAX_FILE_SIZE = 64 << 30
_CHUNK = 1 << 20


class OriginError(RuntimeError):
    """nginx could not be configured, started, or did not listen in time."""


@dataclass(frozen=True)
class OriginFile:
    """A file served by an :class:`Origin`; ``sha256`` is None for sparse files."""

    name: str
    path: Path
    size: int
    sha256: str | None

    @property
    def url_path(self) -> str:
        """The path part of the URL that serves this file."""
        return "/" + self.name


def _nginx_conf(tmp: Path, docroot: Path, addr: str, port: int) -> str:
    """The nginx configuration text for one origin."""
    user = "user root root;\n" if os.geteuid() == 0 else ""
    temp = "".join(
        f"    {kind}_temp_path {tmp / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"{user}worker_processes 1;\n"
        f"pid {tmp / 'nginx.pid'};\n"
        f"error_log {tmp / 'error.log'} warn;\n"
        "events { worker_connections 4096; }\n"
        "http {\n"
        "    access_log off;\n"
        "    sendfile on;\n"
        "    tcp_nopush on;\n"
        "    keepalive_timeout 30s;\n"
        "    keepalive_requests 1000;\n"
        "    default_type application/octet-stream;\n"
        f"{temp}"
        "    server {\n"
        f"        listen {addr}:{port};\n"
        f"        root {docroot};\n"
        "        location / { }\n"
        "    }\n"
        "}\n"
    )


class Origin:
    """nginx serving a temporary document root inside network namespace ``netns``.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. With
    ``root`` given, files are made there and it is left in place on stop;
    otherwise a document root is created in the temp directory and removed.
    """

    def __init__(
        self, netns: str, addr: str = "0.0.0.0", port: int = 80, root: Path | None = None
    ) -> None:
        if not 0 < port < 65536:
            raise ValueError(f"port out of range: {port}")
        self.netns = netns
        self.addr = addr
        self.port = port
        self._root = root
        self._tmp: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def docroot(self) -> Path:
        """The directory nginx serves (created on first use)."""
        if self._root is not None:
            self._root.mkdir(parents=True, exist_ok=True)
            return self._root
        www = self._tmpdir() / "www"
        www.mkdir(exist_ok=True)
        return www

    def _tmpdir(self) -> Path:
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="tapsplice-origin-"))
            # nginx workers and the namespace's processes must be able to read it.
            self._tmp.chmod(0o755)
        return self._tmp

    def make_file(self, name: str, size: int, random: bool, seed: int | None = None) -> OriginFile:
        """Create ``name`` of ``size`` bytes in the document root.

        ``random=False`` makes a sparse file of zero bytes (truncate: cheap even
        for gigabytes). ``random=True`` writes seeded pseudo-random bytes (seed
        defaults to one derived from the name, so runs are repeatable) and
        records their sha256.
        """
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"bad file name: {name!r}")
        if not 0 <= size <= MAX_FILE_SIZE:
            raise ValueError(f"file size out of range: {size}")
        path = self.docroot / name
        if not random:
            with open(path, "wb") as f:
                f.truncate(size)
            path.chmod(0o644)
            return OriginFile(name, path, size, None)
        rng = _random.Random(zlib.crc32(name.encode()) if seed is None else seed)
        digest = hashlib.sha256()
        with open(path, "wb") as f:
            left = size
            while left > 0:
                chunk = rng.randbytes(min(left, _CHUNK))
                digest.update(chunk)
                f.write(chunk)
                left -= len(chunk)
        path.chmod(0o644)
        return OriginFile(name, path, size, digest.hexdigest())

    def url(self, file: OriginFile, host: str | None = None) -> str:
        """The http URL of ``file`` as seen from a client that reaches ``host``."""
        return f"http://{host or self.addr}:{self.port}{file.url_path}"

    def start(self) -> None:
        """Start nginx in the namespace and wait (bounded) until it listens."""
        if self._proc is not None:
            raise OriginError("origin already started")
        tmp = self._tmpdir()
        conf = tmp / "nginx.conf"
        conf.write_text(_nginx_conf(tmp, self.docroot, self.addr, self.port))
        log = open(tmp / "stderr.log", "wb")
        cmd = ns_cmd(
            self.netns, "nginx", "-p", str(tmp), "-e", str(tmp / "error.log"),
            "-c", str(conf), "-g", "daemon off;",
        )  # fmt: skip
        try:
            # Own session: a Ctrl-C at the terminal reaches us, and we stop
            # nginx in order, instead of it dying under a running download.
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        except OSError as exc:
            raise OriginError(f"cannot run nginx: {exc}") from exc
        finally:
            log.close()
        try:
            self._wait_listening()
        except BaseException:
            self.stop()
            raise

    def _listening(self) -> bool:
        out = run(ns_cmd(self.netns, "ss", "-Hltn", f"sport = :{self.port}"), timeout=5.0)
        return bool(out.strip())

    def _wait_listening(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise OriginError(f"nginx exited with {self._proc.returncode}: {self._log_tail()}")
            try:
                if self._listening():
                    return
            except CommandError as exc:
                raise OriginError(str(exc)) from exc
            time.sleep(0.05)  # poll interval while nginx binds its socket
        raise OriginError(f"nginx did not listen within {START_TIMEOUT:g}s: {self._log_tail()}")

    def _log_tail(self) -> str:
        if self._tmp is None:
            return ""
        text = ""
        for name in ("stderr.log", "error.log"):
            p = self._tmp / name
            if p.exists():
                text += p.read_text(errors="replace")[-2000:]
        return text.strip()

    def stop(self) -> None:
        """Stop nginx (SIGTERM, then SIGKILL to its group) and remove the temp dir."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc)
        tmp, self._tmp = self._tmp, None
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    def __enter__(self) -> Origin:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
