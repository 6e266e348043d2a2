"""Shared test fixtures and the rules for lab and soak tests.

* ``@pytest.mark.lab`` tests need root, iproute2 and /dev/net/tun. Outside CI they
  are skipped with the reason when those are missing; with ``CI=true`` they run
  anyway and fail, because a lab test must never pass silently by skipping.
* ``@pytest.mark.soak`` tests run only with ``--soak``.
* The ``lab`` fixture builds a lab with unique names, yields its
  :class:`apps.lab.LabConfig` and removes it afterwards, also on failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from apps.lab import LabConfig, cleanup_stale, lab_down, lab_up


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", default=False,
                     help="also run long tests marked soak")


def _in_ci() -> bool:
    return os.environ.get("CI") == "true"


def lab_unavailable_reason() -> str | None:
    """Why lab tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "lab tests need root (network namespaces and TAP devices)"
    if shutil.which("ip") is None:
        return "lab tests need iproute2 (`ip`)"
    if not os.path.exists("/dev/net/tun"):
        return "lab tests need /dev/net/tun"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    soak = config.getoption("--soak")
    lab_reason = lab_unavailable_reason()
    for item in items:
        if "soak" in item.keywords and not soak:
            item.add_marker(pytest.mark.skip(reason="soak test: run with --soak"))
        # In CI a lab test runs regardless and fails on its own (see the lab fixture).
        if "lab" in item.keywords and lab_reason and not _in_ci():
            item.add_marker(pytest.mark.skip(reason=lab_reason))


@pytest.fixture(scope="session")
def _lab_stale_cleanup() -> None:
    """Once per session: remove test namespaces left behind by crashed runs."""
    if lab_unavailable_reason() is None:
        cleanup_stale()


@pytest.fixture
def lab(_lab_stale_cleanup: None) -> Iterator[LabConfig]:
    """A fresh lab (both namespaces and TAPs) with names unique to this test."""
    reason = lab_unavailable_reason()
    if reason:
        pytest.fail(f"CI=true and {reason}" if _in_ci() else reason)
    cfg = LabConfig.unique()
    try:
        lab_up(cfg)
        yield cfg
    finally:
        lab_down(cfg)
