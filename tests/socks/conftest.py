"""Run the SOCKS server tests in both relay modes."""

from __future__ import annotations

import pytest

from tests.socks import harness


@pytest.fixture(autouse=True, params=["copy", "splice"])
def relay_mode(request):
    """Every test that does not pick a mode runs with each (simulate() default)."""
    harness.DEFAULT_MODE["mode"] = request.param
    yield request.param
    harness.DEFAULT_MODE["mode"] = "copy"
