"""Testing kit for protocol tests on the simulated network.

- :class:`SimNetwork`, :class:`FaultModel` and :func:`run` (asyncio on virtual time);
- hypothesis strategies: :func:`fault_models`, :func:`tcp_option_sets`,
  :func:`segments`, :func:`app_scripts`;
- :class:`TcpConversation`, a RuleBasedStateMachine for one TCP conversation that
  leaves a pcap of a failing run;
- :func:`check_proxy` to property-test an asyncio proxy;
- :func:`run_script`, the packetdrill-subset runner (stack/testing/packetdrill.py).

The splice layer's part (the splice API on a simulated host, splicing proxies,
``--splice`` scripts) is splice.testing, above this package.

hypothesis is needed for the strategies and the machine (the "test" extra).
"""

from __future__ import annotations

import importlib
from typing import Any

# Loaded on first use: the strategies and the machine need hypothesis (a test
# dependency); the packetdrill runner and replay do not.
_WHERE = {
    "FaultModel": "stack.netdev.faults", "SimNetwork": "stack.sim", "run": "stack.simloop",
    "MemoryCapture": "stack.testing.capture", "artifacts_dir": "stack.testing.capture",
    "TcpConversation": "stack.testing.machine",
    "ScriptFailure": "stack.testing.packetdrill", "run_script": "stack.testing.packetdrill",
    "ProxyContext": "stack.testing.proxy", "ProxyLayer": "stack.testing.proxy",
    "check_proxy": "stack.testing.proxy", "copy_proxy": "stack.testing.proxy",
    "AppAction": "stack.testing.strategies", "GenSegment": "stack.testing.strategies",
    "app_scripts": "stack.testing.strategies", "fault_models": "stack.testing.strategies",
    "segments": "stack.testing.strategies", "tcp_option_sets": "stack.testing.strategies",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    """Import the public names lazily (PEP 562)."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'stack.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
