"""stack/portshard.py: the one port-shard hash that steering and TCP share."""

from __future__ import annotations

import ast
from pathlib import Path

from stack.netdev import steer
from stack.portshard import queue_of

ROOT = Path(__file__).resolve().parents[1]


def test_steering_and_tcp_use_the_same_function():
    assert steer.queue_of is queue_of


def test_tcp_imports_nothing_from_the_device_layer():
    tree = ast.parse((ROOT / "stack/tcp/layer.py").read_text())
    modules = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    modules += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in modules if m and m.startswith("stack.netdev")]


def test_the_hash_spreads_even_ports_and_is_symmetric():
    assert {queue_of(p, 1080, 4) for p in range(40000, 40400, 2)} == {0, 1, 2, 3}
    assert all(queue_of(a, b, 7) == queue_of(b, a, 7) for a in (80, 443) for b in (1, 9999))
