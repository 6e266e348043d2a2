"""The splice API of a host on the simulated network (stack/simloop.py).

::

    from splice.testing import splice_api

    async def main(driver):
        splice = splice_api(driver, proxy_host)   # made on first use, then the same
        server = await driver.tcp(proxy_host).start_server(handle, "198.18.0.2", 1080)
        splice.init_splice(server)
"""

from __future__ import annotations

import weakref
from typing import Any

from splice.aio import SpliceApi
from stack.core import Stack
from stack.simloop import SimDriver

# driver -> id(stack) -> its splice API (one splice layer per host and run).
_APIS: weakref.WeakKeyDictionary[SimDriver, dict[int, SpliceApi]] = \
    weakref.WeakKeyDictionary()


def splice_api(driver: SimDriver, stack: Stack, **options: Any) -> SpliceApi:
    """The asyncio splice API of ``stack`` under ``driver`` (TCP is attached first if
    needed), made on first use with ``options`` (SpliceApi.attach); later calls return
    the same one."""
    apis = _APIS.setdefault(driver, {})
    api = apis.get(id(stack))
    if api is None:
        api = apis[id(stack)] = SpliceApi.attach(driver.tcp(stack), **options)
    return api
