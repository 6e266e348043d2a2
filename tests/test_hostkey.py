"""One secret per host (stack/hostkey.py): continuous clocks across stack restarts."""

from __future__ import annotations

import stat
from pathlib import Path

from stack.core import Stack
from stack.hostkey import SECRET_BYTES, host_secret
from stack.tcp.layer import TcpLayer


def test_created_once_private_then_read_back(tmp_path: Path) -> None:
    path = tmp_path / "run" / "secret"
    first = host_secret(path)
    assert first is not None and len(first) == SECRET_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert host_secret(path) == first
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


def test_unusable_place_gives_none(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert host_secret(blocker / "secret") is None
    short = tmp_path / "short"
    short.write_bytes(b"x" * 5)   # not a secret we wrote: not used
    assert host_secret(short) is None


def _layer(secret: bytes | None) -> TcpLayer:
    return TcpLayer(Stack(), secret=secret)


def test_same_secret_same_clocks_and_ports_across_layers() -> None:
    a, b = b"\x01" * 32, b"\x02" * 32
    local, remote = bytes([198, 19, 0, 2]), bytes([198, 19, 0, 1])
    one, again, other = _layer(a), _layer(a), _layer(b)
    assert one.ts_offset_for(local, remote) == again.ts_offset_for(local, remote)
    assert one.ts_offset_for(local, remote) != other.ts_offset_for(local, remote)
    assert one.isn_gen.isn(local, 40000, remote, 80, 5.0) == again.isn_gen.isn(
        local, 40000, remote, 80, 5.0)
    assert one._ephemeral(local, remote, 80) == again._ephemeral(local, remote, 80)
    assert _layer(None).ts_offset_for(local, remote) != _layer(None).ts_offset_for(
        local, remote)
