"""Replay: a recorded simulation fed back into a fresh stack gives the same answers;
the CLI prints them with the counters; bad input is a clear error."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from apps.cli import main as cli_main
from stack.core import Stack
from stack.netdev.pcap import PcapTee, PcapWriter, read_pcap
from stack.sim import SimNetwork
from stack.tcp.api import TcpState
from stack.tcp.layer import TcpLayer
from stack.testing.replay import describe, discard_listener, replay
from stack.wire.ipv4 import IPPROTO_TCP, ip_bytes

CLIENT, SERVER = "198.18.0.1", "198.18.0.2"
SEED = 7


def tcp_of(frame: bytes) -> bytes:
    ihl = (frame[14] & 15) * 4
    return frame[14 + ihl:]


def record(path: Path, payload: bytes) -> None:
    """Client uploads ``payload`` to a discarding server; every frame is captured."""
    tee = PcapTee(PcapWriter(path))
    net = SimNetwork(3, pcap=tee)
    c = net.add_host("c")
    s = net.hosts["s"] = Stack(rng=random.Random(SEED))  # what replay --seed 7 builds
    net.connect(c, f"{CLIENT}/24", s, f"{SERVER}/24", offload=False)
    client = TcpLayer(c, rng=c.rng)
    c.register_protocol(IPPROTO_TCP, client)
    server = TcpLayer(s, rng=s.rng)
    s.register_protocol(IPPROTO_TCP, server)
    discard_listener(server, b"\0\0\0\0", 80)
    net.start()
    tcb = client.connect(ip_bytes(SERVER), 80, net.now)
    net.flush()
    sent = 0
    for _ in range(1000):
        if sent < len(payload):
            sent += tcb.send(payload[sent:], net.now) if tcb.state is TcpState.ESTABLISHED else 0
            if sent == len(payload):
                tcb.shutdown_write(net.now)
            net.flush()
        if not net.step():
            break
    net.run(300.0)
    tee.close()
    assert sent == len(payload) and tcb.state in (TcpState.TIME_WAIT, TcpState.CLOSED)


def test_replay_of_a_recorded_simulation_gives_the_same_answers(tmp_path: Path):
    path = tmp_path / "run.pcap"
    record(path, bytes(range(256)) * 200)
    frames = read_pcap(path)
    server = ip_bytes(SERVER)
    original = [(t, tcp_of(f)) for t, f in frames
                if f[12:14] == b"\x08\x00" and f[26:30] == server]
    result = replay(frames, [f"{SERVER}/24"], listen=[80], seed=SEED, linger=300.0)
    replayed = [(t, tcp_of(f)) for t, _dev, f in result.sent if f[12:14] == b"\x08\x00"]
    assert len(original) >= 5  # SYN-ACK, ACKs, window updates, FIN
    assert replayed == original
    assert result.accepted == 1 and result.bytes_read == 256 * 200
    assert result.tcp_counters["segs_in"] == result.fed - result.stack_counters.get("rx_arp", 0)


def test_replay_with_another_seed_diverges(tmp_path: Path):
    path = tmp_path / "run.pcap"
    record(path, b"x" * 5000)
    result = replay(read_pcap(path), [f"{SERVER}/24"], listen=[80], seed=SEED + 1)
    # A different ISN: the client's acknowledgements of the original one are refused.
    assert result.tcp_counters.get("rst_sent", 0) > 0 or result.accepted == 0


def test_cli_prints_frames_and_counters(tmp_path: Path, capsys):
    path = tmp_path / "run.pcap"
    out = tmp_path / "out.pcap"
    record(path, b"y" * 3000)
    code = cli_main(["replay", str(path), "--addr", f"{SERVER}/24", "--listen", "80",
                     "--seed", str(SEED), "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert f"TCP {SERVER}:80 > {CLIENT}:" in text and "[S.]" in text
    assert "tcp counters:" in text and "segs_in" in text
    assert "read 3000 bytes" in text
    assert len(read_pcap(out)) == text.count(" eth0 > ")


def test_cli_refuses_bad_input(tmp_path: Path, capsys):
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a pcap at all")
    assert cli_main(["replay", str(bad), "--addr", "198.18.0.2/24"]) == 2
    assert "cannot read" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["replay", str(bad), "--addr", "banana"])


def test_describe_handles_odd_frames():
    assert describe(b"\x00" * 5).startswith("runt")
    assert "ethertype 0x86dd" in describe(b"\x00" * 12 + b"\x86\xdd" + b"\x00" * 40)
