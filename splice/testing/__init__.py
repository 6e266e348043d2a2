"""The splice layer's part of the testing kit (the rest is stack.testing).

- :func:`splice_api`: the splice API of a host on the simulated network;
- :func:`check_proxy` (stack.testing's, plus ``splice=True``), :func:`splice_proxy`,
  :class:`SpliceProxyContext`: property-test a splicing asyncio proxy;
- :func:`run_script`: the packetdrill-subset runner with the splice calls
  (``--splice`` scripts: ``init_splice``, ``intend_splice``, ``splice``).
"""

from __future__ import annotations

import importlib
from typing import Any

# Loaded on first use, as stack.testing's names are.
_WHERE = {
    "splice_api": "splice.testing.sim",
    "SpliceLayer": "splice.testing.proxy", "SpliceProxyContext": "splice.testing.proxy",
    "SpliceProxyRun": "splice.testing.proxy", "check_proxy": "splice.testing.proxy",
    "splice_proxy": "splice.testing.proxy",
    "SpliceCalls": "splice.testing.packetdrill", "SpliceScriptResult":
    "splice.testing.packetdrill", "run_script": "splice.testing.packetdrill",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    """Import the public names lazily (PEP 562)."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'splice.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
