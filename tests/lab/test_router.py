"""The stack on real TAPs in the lab: ping, forwarding with curl, offload modes, pcap,
impairment, clean shutdown."""

from __future__ import annotations

import hashlib

import dpkt
import pytest

from apps.labproc import curl_download
from apps.origin import Origin
from tests.lab.stackproc import StackProcess, ping

pytestmark = pytest.mark.lab


@pytest.mark.parametrize("offload", [True, False], ids=["offload", "no-offload"])
def test_router_pings_and_carries_curl(lab, tmp_path, offload):
    extra = [] if offload else ["--no-offload"]
    stack = StackProcess(lab, "router", *extra, "--pcap", str(tmp_path / "r.pcap"),
                         log=tmp_path / "router.log")
    try:
        stack.wait_ready()
        assert ping(lab.client_ns, "198.18.0.2").returncode == 0
        assert ping(lab.server_ns, "198.19.0.2").returncode == 0
        routed = ping(lab.client_ns, "198.19.0.1")
        assert routed.returncode == 0 and "ttl=63" in routed.stdout
        assert ping(lab.client_ns, "198.18.0.2", size=4000).returncode == 0  # fragments
        with Origin(lab.server_ns) as origin:
            f = origin.make_file("r.bin", 8 << 20, random=True)
            out = tmp_path / "r.bin"
            dl = curl_download(lab.client_ns, origin.url(f, "198.19.0.1"), timeout=60,
                               output=str(out))
            assert dl.size == f.size
            assert hashlib.sha256(out.read_bytes()).hexdigest() == f.sha256
    finally:
        summary = stack.stop()
    c = summary["stack"]
    assert c["rx_forwarded"] > 100
    assert c["rx_frames"] == c["rx_arp"] + c["rx_local"] + c["rx_forwarded"] + c["rx_dropped"]
    assert c.get("drop.ipv4_bad_checksum", 0) == 0
    devices = summary["devices"]
    assert devices[lab.server_tap]["rx_bytes"] > f.size  # the download crossed the stack
    if offload:  # the kernel handed over super-segments
        assert devices[lab.server_tap]["rx_frames"] < f.size // 1500
    frames = [buf for _ts, buf in dpkt.pcap.Reader(open(tmp_path / "r.pcap", "rb"))]
    assert len(frames) > 100
    assert any(dpkt.ethernet.Ethernet(b).type == 0x0806 for b in frames)


def test_run_answers_ping_but_does_not_forward(lab, tmp_path):
    stack = StackProcess(lab, "run", log=tmp_path / "run.log")
    try:
        stack.wait_ready()
        assert ping(lab.server_ns, "198.19.0.2").returncode == 0
        assert ping(lab.client_ns, "198.19.0.1", count=1).returncode != 0
    finally:
        summary = stack.stop()
    assert summary["stack"]["drop.ipv4_not_for_us"] >= 1


def test_router_with_impairment_still_delivers_intact(lab, tmp_path):
    stack = StackProcess(lab, "router", "--impair", "loss=1%,duplicate=1%,reorder=2%,"
                         "corrupt=0.1%,delay=1ms", "--seed", "7", log=tmp_path / "i.log")
    try:
        stack.wait_ready()
        with Origin(lab.server_ns) as origin:
            f = origin.make_file("i.bin", 4 << 20, random=True)
            out = tmp_path / "i.bin"
            curl_download(lab.client_ns, origin.url(f, "198.19.0.1"), timeout=120,
                          output=str(out))
            assert hashlib.sha256(out.read_bytes()).hexdigest() == f.sha256
    finally:
        summary = stack.stop()
    assert summary["stack"]["rx_forwarded"] > 100
