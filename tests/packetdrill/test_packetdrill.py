"""The packetdrill-subset scripts of this directory, and the runner's own behaviour:
mismatches, extra packets and unsupported syntax fail with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splice.testing import run_script
from stack.netdev.pcap import read_pcap
from stack.testing import packetdrill
from stack.testing.packetdrill import ScriptFailure
from stack.testing.pd_parse import KNOWN_OPTIONS, ScriptSyntaxError, parse_script

HERE = Path(__file__).parent
SCRIPTS = sorted(HERE.glob("*.pkt"))

HANDSHAKE = """\
0     socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
+0    bind(3, ..., ...) = 0
+0    listen(3, 1) = 0
+0    < S 0:0(0) win 65535 <mss 1460,sackOK,TS val 100 ecr 0,nop,wscale 7>
+0    > S. 0:0(0) ack 1 <mss 1460,sackOK,TS val 100 ecr 100,nop,wscale 7>
+.1   < . 1:1(0) ack 1 win 512 <nop,nop,TS val 200 ecr 100>
+0    accept(3, ..., ...) = 4
"""


def run_text(text: str, name: str = "inline.pkt", **kw):
    return run_script(name, text=text, **kw)


def test_there_are_enough_scripts():
    assert len(SCRIPTS) >= 12


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_script(path: Path):
    result = run_script(path)
    assert result.events == len(parse_script(path.read_text(), options=(
        *KNOWN_OPTIONS, "splice")).events)


def test_paws_drop_is_counted():
    result = run_script(HERE / "timestamps_paws.pkt")
    assert any("paws" in k for k, v in result.counters.items() if v), result.counters


def test_wrong_ack_names_line_expected_and_actual():
    text = HANDSHAKE.replace("> S. 0:0(0) ack 1 <", "> S. 0:0(0) ack 2 <")
    with pytest.raises(ScriptFailure) as e:
        run_text(text)
    msg = str(e.value)
    assert "inline.pkt:5:" in msg and "(ack)" in msg
    assert "script: > S. 0:0(0) ack 2" in msg and "actual: > S. 0:0(0) ack 1 win" in msg


def test_wrong_options_and_flags_are_reported():
    text = HANDSHAKE.replace("nop,wscale 7>\n+.1", "nop,wscale 6>\n+.1").replace(
        "> S. 0:0(0)", "> S 0:0(0)")
    with pytest.raises(ScriptFailure, match=r"\(flags, options\)"):
        run_text(text)


def test_timestamp_anchor_then_mismatch():
    # The SYN-ACK's TS val anchors (100 at t=0); at t=0.15 the stack's clock reads 250.
    ok = HANDSHAKE + "+.05  write(4, ..., 10) = 10\n+0 > P. 1:11(10) ack 1 " \
                     "<nop,nop,TS val 250 ecr 200>\n"
    run_text(ok)
    with pytest.raises(ScriptFailure, match="options"):
        run_text(ok.replace("TS val 250 ecr 200", "TS val 270 ecr 200"))
    run_text(ok.replace("TS val 250 ecr 200", "TS val * ecr 200"))


def test_unexpected_packet_fails():
    text = HANDSHAKE + "+0    write(4, ..., 10) = 10\n+1    read(4, ..., 10) = -1 EAGAIN\n"
    with pytest.raises(ScriptFailure, match=r"inline.pkt:9: unexpected packet at t=0.1000"):
        run_text(text)


def test_packet_sent_after_the_last_line_within_tolerance_fails():
    with pytest.raises(ScriptFailure, match="unexpected packet"):
        run_text(HANDSHAKE + "+0    write(4, ..., 10) = 10\n")


def test_missing_packet_fails():
    text = HANDSHAKE + "+0    > . 1:1(0) ack 1\n"
    with pytest.raises(ScriptFailure, match="nothing was sent"):
        run_text(text)


def test_packet_outside_its_time_window_fails():
    text = HANDSHAKE.replace("+0    > S. 0:0(0)", "+.5   > S. 0:0(0)")
    with pytest.raises(ScriptFailure, match="too early"):
        run_text(text)
    ranged = HANDSHAKE.replace("+0    > S. 0:0(0)", "~+.5  > S. 0:0(0)")
    run_text(ranged)


def test_call_result_mismatch():
    with pytest.raises(ScriptFailure, match=r"accept\(\) returned 4, the script expects 5"):
        run_text(HANDSHAKE.replace("accept(3, ..., ...) = 4", "accept(3, ..., ...) = 5"))


@pytest.mark.parametrize("line, what", [
    ("+0 getpeername(3, ..., ...) = 0", "call getpeername()"),
    ("+0 setsockopt(3, SOL_SOCKET, SO_LINGER, [1], 4) = 0", "setsockopt SO_LINGER"),
    ("+0 socket(..., SOCK_DGRAM, IPPROTO_UDP) = 3", r"socket\(\) other than SOCK_STREAM"),
])
def test_unsupported_calls_are_refused(line: str, what: str):
    with pytest.raises(ScriptFailure, match=f"unsupported in this runner: {what}"):
        run_text(HANDSHAKE + line + "\n")


@pytest.mark.parametrize("line, what", [
    ("+0 `sysctl -q net.ipv4.tcp_sack=0`", "shell commands"),
    ("0.1...0.2 read(4, ..., 10) = 10", "blocking call times"),
    ("+0 < . 1:1(0) ack 1 win 1 <md5 abc>", "TCP option"),
    ("+0 < . 1:1(0) ack 1 urg 5", "packet field 'urg'"),
])
def test_unsupported_syntax_is_refused(line: str, what: str):
    with pytest.raises(ScriptSyntaxError, match=f"unsupported in this runner: {what}"):
        parse_script(HANDSHAKE + line + "\n", "x.pkt")


@pytest.mark.parametrize("line", [
    "+0 < . 1:10(5) ack 1", "+0 < X 1:1(0)", "banana", "+0 > . 1:1(0) ack 1 <mss>",
    "0.2~0.1 < . 1:1(0) ack 1",
])
def test_syntax_errors_name_the_line(line: str):
    with pytest.raises(ScriptSyntaxError, match=r"x.pkt:8: "):
        parse_script(HANDSHAKE + line + "\n", "x.pkt")


def test_run_writes_a_pcap(tmp_path: Path):
    path = tmp_path / "run.pcap"
    run_script(HERE / "passive_open.pkt", pcap=path)
    frames = read_pcap(path)
    # SYN, SYN-ACK, ACK, data, ACK at least, all on the virtual clock from t=1000.
    assert len(frames) >= 5 and frames[0][0] == pytest.approx(1000.0)


def test_config_option_changes_the_stack():
    # MSL of 1 s: TIME-WAIT lasts 2 s, so a late ACK at +2.1 meets no connection.
    text = "--config=msl=1.0\n" + HANDSHAKE + """\
+0    close(4) = 0
+0    > FP. 1:1(0) ack 1 <nop,nop,TS val 200 ecr 200>
+.1   < F. 1:1(0) ack 2 win 512 <nop,nop,TS val 300 ecr 200>
+0    > . 2:2(0) ack 2 <nop,nop,TS val 300 ecr 300>
+2.1  < . 2:2(0) ack 2 win 512 <nop,nop,TS val 400 ecr 300>
+0    > R 2:2(0) win 0
"""
    run_text(text)
    with pytest.raises(ScriptFailure, match="nothing was sent"):
        run_text(text.replace("--config=msl=1.0", "--config=msl=30"))


def test_so_error_value_is_checked():
    with pytest.raises(ScriptFailure, match="SO_ERROR is 0, the script expects 111"):
        run_text(HANDSHAKE + "+0 getsockopt(4, SOL_SOCKET, SO_ERROR, [111], [4]) = 0\n")


def test_server_side_and_splice_calls_need_the_splice_option():
    with pytest.raises(ScriptFailure, match="no server side"):
        run_text(HANDSHAKE + "+0 server < . 1:1(0) ack 1 win 1\n")
    with pytest.raises(ScriptFailure, match="need the --splice option"):
        run_text(HANDSHAKE + "+0 init_splice(3) = 0\n")


def test_the_stacks_own_runner_refuses_splice_scripts_and_runs_the_others():
    splice_scripts = [p for p in SCRIPTS if "--splice" in p.read_text()]
    assert splice_scripts
    with pytest.raises(ScriptSyntaxError, match="unsupported in this runner: option "
                                                "--splice"):
        packetdrill.run_script(splice_scripts[0])
    plain = next(p for p in SCRIPTS if p not in splice_scripts)
    assert packetdrill.run_script(plain).extension_counters == {}
    with pytest.raises(ScriptFailure, match="unsupported in this runner: call init_splice"):
        packetdrill.run_script("x.pkt", text=HANDSHAKE + "+0 init_splice(3) = 0\n")


@pytest.mark.parametrize("option", [
    "--config=nonsense=1", "--config=msl=-1", "--config=msl=nan",
    "--config=ephemeral_ports=1", "--tolerance_usecs=abc",
])
def test_bad_options_are_syntax_errors(option: str):
    with pytest.raises(ScriptSyntaxError, match="bad option"):
        run_text(option + "\n" + HANDSHAKE)


MUTATIONS = st.sampled_from([
    "+0", "+.1", "*", "~+1", "< . 1:1(0) ack 1 win 1", "> R 0:0(0)", "S.", "ack 99999",
    "<nop,nop,TS val 1 ecr 2>", "<sack 1:2>", "read(4, ..., 5) = 5", "close(3) = 0",
    "write(4, ..., 70000) = 70000", "accept(3, ..., ...) = 9", "win 70000", "mss 99999",
    "1:70000(69999)", "(", ")", "=", "-1", "EAGAIN", "server", "<...>", "..."])


@settings(max_examples=150, deadline=None, database=None)
@given(base=st.sampled_from(SCRIPTS), line=st.integers(0, 60), cut=st.integers(0, 80),
       insert=MUTATIONS, extra=st.lists(MUTATIONS, max_size=3))
def test_mutated_scripts_fail_cleanly(base: Path, line: int, cut: int, insert: str,
                                      extra: list[str]):
    """Whatever a script says, the runner passes it or raises one of its two errors."""
    lines = base.read_text().splitlines()
    i = min(line, len(lines) - 1)
    lines[i] = lines[i][:cut] + " " + insert + " " + " ".join(extra)
    try:
        run_text("\n".join(lines) + "\n")
    except (ScriptFailure, ScriptSyntaxError):
        pass
