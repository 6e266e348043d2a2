"""What a splice pair believes of its two peers, and the defences built on it.

Once an interface relays, the proxy's TCB on it falls silent: its ``rcv_nxt`` and
``snd_una`` stop where the splice found them, while the peers go on end to end. The
relay still sees every segment, so it keeps, per interface, the newest acknowledgement
and window that interface's peer sent (``Side.peer_ack``, ``Side.peer_win``, written by
the relay of each segment). From them follows what each peer expects next, which is
what three defences need:

* RFC 5961 for spliced pairs (:func:`judge_rst`, :func:`judge_syn`): a RST is relayed
  only when its sequence number is exactly what the receiving peer expects; an
  in-window, inexact RST or any SYN is answered with a challenge ACK sent on the
  receiving peer's behalf (within the stack's RFC 5961 §7 rate limit), so a peer that
  really reset answers with an exact RST; anything else is dropped and counted. A
  spoofer who knows only the 4-tuple can no longer end a spliced flow.
* The idle timeout and the drain (:func:`reset_peer`): a pair is ended with a RST to
  both peers whose sequence number each peer accepts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from splice.state import RELAYING, SpliceState
from stack import seq
from stack.tcp import lend
from stack.wire.tcp import ACK, RST

if TYPE_CHECKING:
    from splice.pair import Side
    from stack.tcp.layer import TcpLayer

#: Verdicts of :func:`judge_rst` and :func:`judge_syn`.
RELAY, CHALLENGE, DROP = "relay", "challenge", "drop"
_M16 = 0xFFFF


def acked_by_peer(side: Side) -> int:
    """The newest acknowledgement ``side``'s peer sent (in that connection's space):
    the sequence number the peer expects from the proxy's end next."""
    una = side.tcb.snd_una
    if side.peer_ack is None:
        return una
    return seq.max_seq(side.peer_ack, una)


def offered_by_peer(side: Side) -> int:
    """The receive window (bytes) ``side``'s peer last offered."""
    if side.peer_ack is None:
        return side.tcb.snd_wnd
    return side.peer_win << side.tcb.snd_wscale


def receiver_view(arrived: Side) -> tuple[int, int]:
    """(next sequence number, window in bytes) that the receiver of a segment arriving
    on ``arrived`` expects, in ``arrived``'s receive space.

    When the other interface relays, the receiver is the other peer: what it last
    acknowledged, mapped back (never below the base point: acknowledgements of the
    proxy's own data say nothing about the relayed stream). Otherwise nothing that
    arrived has been relayed yet and the proxy's TCB is the receiver.
    """
    other = arrived.other
    assert other is not None
    tcb = arrived.tcb
    if other.state not in RELAYING or other.out_map is None:
        return tcb.rcv_nxt, max(1, seq.sub(tcb.rcv_adv, tcb.rcv_nxt))
    expected = acked_by_peer(other)
    if seq.lt(expected, other.iss):
        expected = other.iss
    return seq.add(expected, -other.out_map.seq_delta), max(1, offered_by_peer(other))


def judge_rst(arrived: Side, seg_seq: int) -> str:
    """RFC 5961 §3.2 for a RST arriving on ``arrived``: RELAY when its sequence number
    is exactly the one the receiver expects, CHALLENGE when it lies in the receiver's
    window, DROP otherwise."""
    expected, window = receiver_view(arrived)
    if seg_seq == expected or seg_seq == arrived.challenged or seg_seq == sent_by(arrived):
        # Also exact: the answer to our last challenge ACK (its ACK value, which newer
        # ACKs of the receiver may have overtaken on the way), and the sender's SND.NXT
        # as the relay saw it (a peer that aborts with data in flight resets there).
        return RELAY
    return CHALLENGE if seq.in_window(expected, seg_seq, window) else DROP


def judge_syn(arrived: Side, seg_seq: int, tsval: int | None) -> str:
    """RFC 5961 §4.2 for a SYN arriving on ``arrived``: a synchronized pair answers any
    SYN with a challenge ACK. In TIMEWAIT a SYN may open a new connection on the
    4-tuple (RELAY: end the pair, give the SYN to the listener) when it is newer than
    the old one, by sequence number or by timestamp, as a TIME-WAIT TCB allows
    (RFC 9293 §3.10.7.4, RFC 6191; Linux applies the same two tests)."""
    if arrived.state is not SpliceState.TIMEWAIT:
        return CHALLENGE
    expected, _window = receiver_view(arrived)
    if seq.gt(seg_seq, expected):
        return RELAY
    last = arrived.peer_tsval
    if tsval is not None and last is not None and 0 < (tsval - last) & 0xFFFFFFFF < 1 << 31:
        return RELAY
    return CHALLENGE


def send_challenge_ack(tcp: TcpLayer, arrived: Side, now: float) -> bool:
    """The ACK the receiver would send (RFC 5961 §3.2), sent on its behalf to
    ``arrived``'s peer, within the stack-wide challenge ACK limit (§7); False when the
    limit held it back. It carries no timestamp option: the relay does not know the
    receiver's clock, and a segment without one is not subject to PAWS."""
    if not tcp.challenge_ack_allowed(now):
        tcp.count("splice_challenge_ack_ratelimited")
        return False
    ack, _window = receiver_view(arrived)
    other = arrived.other
    assert other is not None
    if other.state in RELAYING and arrived.out_map is not None:
        field = offered_by_peer(other) >> arrived.out_map.win_out_shift
    else:
        field = seq.sub(arrived.tcb.rcv_adv, arrived.tcb.rcv_nxt) >> arrived.tcb.rcv_wscale
    arrived.challenged = ack
    tcp.count("splice_challenge_ack")
    lend.send_on_behalf(arrived.tcb, acked_by_peer(arrived), ack, ACK,
                        min(max(field, 0), _M16), now)
    return True


def reset_peer(tcp: TcpLayer, side: Side, now: float) -> None:
    """End ``side``'s connection with a RST its peer accepts (RFC 5961 §3.2 wants its
    RCV.NXT exactly): from the TCB itself while it still speaks (before relaying);
    else one RST just past the last byte relayed to the peer (its RCV.NXT when nothing
    is lost) and, if different, one at what the peer last acknowledged (its RCV.NXT
    when the newest bytes were lost). The peer takes the exact one and drops or
    challenges the other."""
    tcb = side.tcb
    if side.state not in RELAYING:
        tcb.abort(now)
        return
    reset_candidates(tcp, side, None, now)


def sent_by(arrived: Side) -> int | None:
    """The sequence number just past what ``arrived``'s peer sent and the relay passed
    on (its SND.NXT as far as the relay saw), in ``arrived``'s receive space."""
    other = arrived.other
    end = relayed_end(other)
    if end is None or other.out_map is None:
        return None
    return seq.add(end, -other.out_map.seq_delta)


def relayed_end(side: Side) -> int | None:
    """Just past the last byte (or FIN) relayed out of ``side``, in its connection's
    sequence space: the peer's RCV.NXT once everything relayed has arrived."""
    if side.fin_end is not None:
        return side.fin_end
    if side.sent_end is None or side.out_map is None:
        return None
    return seq.add(side.sent_end, side.out_map.seq_delta)


def reset_candidates(tcp: TcpLayer, side: Side, sent_at: int | None, now: float) -> None:
    """RSTs to ``side``'s (relaying) peer at each sequence number its RCV.NXT may have
    (RFC 5961 §3.2 takes only the exact one; the others are dropped or challenged):
    just past the last byte relayed to it (everything arrived), and what it last
    acknowledged (the newest bytes are still on the way or lost). ``sent_at``: one
    already sent or relayed there."""
    acked = acked_by_peer(side)
    if seq.lt(acked, side.iss):
        acked = side.iss
    end = relayed_end(side)
    targets = [end, acked] if end is not None and end != acked else [acked]
    for at in targets:
        if at != sent_at:
            tcp.count("rst_sent")
            lend.send_on_behalf(side.tcb, at, 0, RST, 0, now)
