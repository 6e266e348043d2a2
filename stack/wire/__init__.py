"""Stateless packet codecs and checksums.

Modules are imported by name (``from stack.wire import tcp``); only the common
error type is re-exported here.
"""

from stack.wire.errors import WireError

__all__ = ["WireError"]
