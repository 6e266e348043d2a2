"""One secret per host for the stack's keyed hashes, shared by its processes.

RFC 6528 ISNs, the RFC 7323 timestamp clock offset per address pair and the RFC 6056
ephemeral-port offsets are keyed hashes. With a fresh random key in every process, a
restarted proxy looks to its peers like a different host: it reuses the ports of its
predecessor (Algorithm 3 starts its counter at 0), whose connections a server may
still hold in TIME-WAIT, and its timestamps and sequence numbers jump at random, so
the server's RFC 6191 check (newer timestamps or a higher ISN) refuses about half of
those SYNs — each costing a 1-second SYN retransmission. Linux keeps its keys for the
life of the boot; the stack keeps one in ``/run/tapsplice/secret`` (a tmpfs: also
gone at reboot), so that a new process continues the clocks of the last one.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

SECRET_PATH = Path("/run/tapsplice/secret")
SECRET_BYTES = 32


def host_secret(path: Path = SECRET_PATH) -> bytes | None:
    """The host's secret, created (mode 0600, in a 0700 directory) on first use;
    None when it can be neither read nor created (then each process draws its own)."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = _create(path)
    except OSError:
        return None
    return data if len(data) == SECRET_BYTES else None


def _create(path: Path) -> bytes:
    """Write a new secret atomically; if another process won the race, use theirs."""
    data = secrets.token_bytes(SECRET_BYTES)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)          # fails if the secret appeared meanwhile
    except FileExistsError:
        data = path.read_bytes()
    finally:
        tmp.unlink(missing_ok=True)
    return data
