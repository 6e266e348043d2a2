"""What a device tells the driver about its link (kept free of device imports, so
the driver can catch it without loading pytun or opening sockets)."""

from __future__ import annotations


class DeviceGone(OSError):
    """The interface under a device was deleted (or moved to another namespace): the
    device can never carry a frame again (stack/netdev/raw.py raises it)."""
