"""`--raw IFACE` on the command line: kinds and addresses in the order given, and the
lab's attachments on a raw-socket lab (without one, TAPs)."""

from __future__ import annotations

import argparse

import pytest

from apps.lab import LabConfig
from apps.stackcmd import add_common, attachments_from, lab_attachments
from stack.aio import Attachment


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_common(p)
    return p.parse_args(list(argv))


def test_tap_and_raw_take_their_addresses_in_the_order_given() -> None:
    args = parse("--raw", "eth1", "--tap", "tap0", "--raw", "mv0", "--netns", "ns",
                 "--addr", "192.0.2.10/24", "--addr", "198.18.0.2/24", "--addr",
                 "198.19.0.2/24")
    assert attachments_from(args) == [
        Attachment("eth1", "192.0.2.10/24", "ns", kind="raw"),
        Attachment("tap0", "198.18.0.2/24", "ns", kind="tap"),
        Attachment("mv0", "198.19.0.2/24", "ns", kind="raw")]
    assert args.raw == ["eth1", "mv0"] and args.tap == ["tap0"]


@pytest.mark.parametrize("argv", [["--raw", "eth1"], ["--raw", "a", "--addr", "1.2.3.4/24",
                                                       "--addr", "1.2.3.5/24"], []])
def test_a_missing_or_extra_address_is_a_usage_error(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        attachments_from(parse(*argv))


def test_a_lab_without_its_stack_namespace_is_a_tap_lab() -> None:
    cfg = LabConfig.unique("nolab")  # never brought up: no raw interfaces anywhere
    got = lab_attachments(cfg)
    assert [(a.tap, a.kind, a.netns) for a in got] == [
        (cfg.client_tap, "tap", cfg.client_ns), (cfg.server_tap, "tap", cfg.server_ns)]
    assert cfg.client_raw == cfg.client_tap + "r" and cfg.stack_ns.endswith("-r")
