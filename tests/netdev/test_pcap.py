"""pcap files: written by PcapWriter/PcapTee, read back by dpkt (and tshark if present)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import dpkt
import pytest
from netdev_frames import partial_udp_frame, udp_checksum_ok, udp_frame

from stack.netdev.offload import VIRTIO_NET_HDR_F_NEEDS_CSUM
from stack.netdev.pcap import PcapTee, PcapWriter, read_pcap
from stack.skbuff import SkBuff


def test_round_trip_with_dpkt(tmp_path: Path) -> None:
    path = tmp_path / "t.pcap"
    frames = [udp_frame(bytes([i]) * (10 + i * 100)) for i in range(5)]
    with PcapWriter(path) as w:
        for i, f in enumerate(frames):
            w.write(f, 1000.0 + i * 0.25)
    got = read_pcap(path)
    assert [f for _t, f in got] == frames
    assert [t for t, _f in got] == pytest.approx([1000.0, 1000.25, 1000.5, 1000.75, 1001.0])
    with open(path, "rb") as fh:
        reader = dpkt.pcap.Reader(fh)
        assert reader.datalink() == dpkt.pcap.DLT_EN10MB
        udp = dpkt.ethernet.Ethernet(next(iter(reader))[1]).data.data
        assert isinstance(udp, dpkt.udp.UDP) and udp.dport == 2000


def test_snaplen_cuts_but_keeps_original_length(tmp_path: Path) -> None:
    path = tmp_path / "cut.pcap"
    frame = udp_frame(bytes(500))
    with PcapWriter(path, snaplen=64) as w:
        w.write(frame, 1.0)
    with open(path, "rb") as fh:
        raw = fh.read()
    # 24-byte file header, then ts_sec, ts_usec, incl_len, orig_len
    incl, orig = int.from_bytes(raw[32:36], "little"), int.from_bytes(raw[36:40], "little")
    assert (incl, orig) == (64, len(frame))
    assert read_pcap(path) == [(1.0, frame[:64])]


def test_tee_records_both_directions_and_completes_partial_checksums(tmp_path: Path) -> None:
    path = tmp_path / "tee.pcap"
    partial = SkBuff.from_bytes(partial_udp_frame(b"offloaded"), headroom=16)
    partial.vnet_flags = VIRTIO_NET_HDR_F_NEEDS_CSUM
    partial.csum_start, partial.csum_offset = 34, 6
    plain = SkBuff.from_bytes(udp_frame(b"plain"))
    with PcapTee(PcapWriter(path)) as tee:
        tee.rx("tap0", partial, 5.0)
        tee.tx("tap1", plain, 5.5)
    assert tee.writer.frames == 2
    with pytest.raises(ValueError):  # leaving the tee closed its file
        tee.rx("tap0", plain, 6.0)
    assert tee.counts == {("tap0", "rx"): 1, ("tap1", "tx"): 1}
    (t0, f0), (t1, f1) = read_pcap(path)
    assert udp_checksum_ok(f0) and f0 == udp_frame(b"offloaded")
    assert partial.tobytes() == partial_udp_frame(b"offloaded")  # the skb is untouched
    assert f1 == udp_frame(b"plain") and (t0, t1) == (5.0, 5.5)


def test_write_after_close_is_an_error(tmp_path: Path) -> None:
    w = PcapWriter(tmp_path / "c.pcap")
    w.close()
    w.close()
    with pytest.raises(ValueError):
        w.write(b"x" * 60, 0.0)


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_tshark_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "ts.pcap"
    with PcapWriter(path) as w:
        for i in range(3):
            w.write(udp_frame(bytes(20), sport=4000 + i), float(i))
    out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "udp.srcport"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.split() == ["4000", "4001", "4002"]
