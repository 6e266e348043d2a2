"""RFC 5961 for spliced pairs (splice/guard.py): the challenge ACK limit, and which
SYNs may reopen the 4-tuple of a pair in TIMEWAIT. The scripts splice_rst_spoofed,
splice_syn_challenge and splice_idle_timeout in tests/packetdrill cover the rest."""

from __future__ import annotations

import pytest

from splice.testing import run_script
from stack.tcp.api import TcpConfig
from stack.testing.packetdrill import ScriptFailure

SPLICED = """\
--splice
0     socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
+0    bind(3, ..., ...) = 0
+0    listen(3, 1) = 0
+0    init_splice(3) = 0
+0    client < S 1000:1000(0) win 65535 <mss 1460{copt}>
+0    client > S. 0:0(0) ack 1001 <mss 1460{sopt}>
+.1   client < . 1001:1001(0) ack 1 win 65535{aopt}
+0    accept(3, ..., ...) = 4
+0    intend_splice(4, ...) = 5
+0    server > S 0:0(0) <mss 1460{syn2}>
+.05  server < S. 7000:7000(0) ack 1 win 65535 <mss 1460{synack2}>
+0    server > . 1:1(0) ack 7001{aopt2}
+0    splice(4, 5, 0) = 0
"""
PLAIN = SPLICED.format(copt="", sopt="", aopt="", syn2="", synack2="", aopt2="")


def test_challenge_acks_of_spliced_pairs_share_the_stack_wide_limit():
    # RFC 5961 §7: with a limit of one per second the second in-window RST of the
    # same second is not answered (counted), the next second's is.
    text = PLAIN + """\
+.1   client < R 2000:2000(0) win 0
+0    client > . 1:1(0) ack 1001 win 65535
+.1   client < R 3000:3000(0) win 0
+.9   client < R 4000:4000(0) win 0
+0    client > . 1:1(0) ack 1001 win 65535
"""
    result = run_script("limit.pkt", text=text, config=TcpConfig(challenge_ack_limit=1))
    assert result.counters["splice_challenge_ack"] == 2
    assert result.counters["splice_challenge_ack_ratelimited"] == 1
    # Without the limit the same script fails: the second RST is answered too.
    with pytest.raises(ScriptFailure, match="unexpected packet"):
        run_script("limit.pkt", text=text, config=TcpConfig(challenge_ack_limit=10))


def _in_timewait(opts: dict[str, str]) -> str:
    # The server closes first, the client last: the pair waits in TIMEWAIT.
    return SPLICED.format(**opts) + """\
+.1   server < F. 7001:7001(0) ack 1 win 65535{ts1}
+0    client > F. 1:1(0) ack 1001 win 65535{ts1o}
+.05  client < F. 1001:1001(0) ack 2 win 65535{ts2}
+0    server > F. 1:1(0) ack 7002 win 65535{ts2o}
+.05  server < . 7002:7002(0) ack 2 win 65535{ts3}
+0    client > . 2:2(0) ack 1002 win 65535{ts3o}
"""


NO_TS = {k: "" for k in ("copt", "sopt", "aopt", "syn2", "synack2", "aopt2")}
NO_TS_TAIL = {k: "" for k in ("ts1", "ts1o", "ts2", "ts2o", "ts3", "ts3o")}


def test_old_syn_on_a_pair_in_timewait_gets_an_ack_a_newer_one_reopens():
    base = _in_timewait(NO_TS).format(**NO_TS_TAIL)
    old = base + """\
+1    client < S 900:900(0) win 65535 <mss 1460>
+0    client > . 2:2(0) ack 1002 win 65535
"""
    result = run_script("old_syn.pkt", text=old)
    assert result.splice_counters["syn_challenge"] == 1
    assert result.splice_counters.get("timewait_reopened", 0) == 0
    newer = base + """\
+1    client < S 90000:90000(0) win 65535 <mss 1460>
+0    client > S. 0:0(0) ack 90001 <mss 1460>
"""
    result = run_script("new_syn.pkt", text=newer)
    assert result.splice_counters["timewait_reopened"] == 1


def test_syn_with_a_newer_timestamp_reopens_even_below_the_old_sequence():
    ts = {"copt": ",nop,nop,TS val 100 ecr 0", "sopt": ",nop,nop,TS val 100 ecr 100",
          "aopt": " <nop,nop,TS val 110 ecr 100>", "syn2": ",nop,nop,TS val 5000 ecr 0",
          "synack2": ",nop,nop,TS val 500 ecr 5000", "aopt2": " <nop,nop,TS val * ecr 500>"}
    tail = {"ts1": " <nop,nop,TS val 600 ecr 5000>", "ts1o": " <nop,nop,TS val * ecr *>",
            "ts2": " <nop,nop,TS val 200 ecr 100>", "ts2o": " <nop,nop,TS val * ecr *>",
            "ts3": " <nop,nop,TS val 610 ecr 5000>", "ts3o": " <nop,nop,TS val * ecr *>"}
    base = _in_timewait(ts).format(**tail)
    stale = base + """\
+1    client < S 900:900(0) win 65535 <mss 1460,nop,nop,TS val 150 ecr 0>
+0    client > . 2:2(0) ack 1002 win 65535
"""
    result = run_script("stale_ts.pkt", text=stale)
    assert result.splice_counters["syn_challenge"] == 1
    fresh = base + """\
+1    client < S 900:900(0) win 65535 <mss 1460,nop,nop,TS val 1200 ecr 0>
+0    client > S. 0:0(0) ack 901 <mss 1460,nop,nop,TS val * ecr 1200>
"""
    result = run_script("fresh_ts.pkt", text=fresh)
    assert result.splice_counters["timewait_reopened"] == 1


def test_a_reset_at_the_senders_snd_nxt_is_relayed_at_once_with_the_other_candidate():
    # The server aborts with data in flight: its RST at its SND.NXT (the end of what the
    # relay passed on) is exact too. It is relayed at once; the client may not have all
    # of that data yet, so a second RST goes at what it acknowledged.
    text = PLAIN + """\
+.1   client < P. 1001:1011(10) ack 1 win 65535
+0    server > P. 1:11(10) ack 7001 win 65535
+.05  server < P. 7001:7101(100) ack 11 win 65535
+0    client > P. 1:101(100) ack 1011 win 65535
+.01  server < R 7101:7101(0) win 0
+0    client > R 101:101(0) win 0
+0    client > R 1:1(0) win 0
"""
    result = run_script("snd_nxt.pkt", text=text)
    assert result.splice_counters.get("rst_challenge", 0) == 0


def test_the_answer_to_a_challenge_ack_ends_the_pair_even_when_acks_overtook_it():
    # An in-window RST that is neither what the client expects nor the server's SND.NXT
    # gets a challenge ACK; the client's ACK of the data passes before the server's
    # exact answer arrives. That answer is relayed, moved up to what the client now
    # expects (else the client would drop it as old).
    text = PLAIN + """\
+.1   client < P. 1001:1011(10) ack 1 win 65535
+0    server > P. 1:11(10) ack 7001 win 65535
+.05  server < P. 7001:7101(100) ack 11 win 65535
+0    client > P. 1:101(100) ack 1011 win 65535
+.01  server < R 7050:7050(0) win 0
+0    server > . 11:11(0) ack 7001 win 65535
+.01  client < . 1011:1011(0) ack 101 win 65535
+0    server > . 11:11(0) ack 7101 win 65535
+.01  server < R 7001:7001(0) win 0
+0    client > R 101:101(0) win 0
"""
    result = run_script("overtaken.pkt", text=text)
    assert result.splice_counters["rst_challenge"] == 1
