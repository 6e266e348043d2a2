"""Congestion control: NewReno (RFC 5681, RFC 6582, RFC 3465) and CUBIC (RFC 9438).

Pure state machines in bytes. The TCP core calls ``on_ack`` for every ACK that
advances snd_una outside loss recovery, ``on_enter_recovery`` on fast
retransmit, ``on_exit_recovery`` when recovery ends, ``on_rto`` when the
retransmission timer fires and ``on_idle_restart`` before sending after an idle
period longer than the RTO. Nothing here reads a clock: ``now`` is passed in.
"""

from __future__ import annotations

import math

#: RFC 5681 §3.1: the initial ssthresh "MAY be arbitrarily high".
INITIAL_SSTHRESH = 1 << 30
#: RFC 3465 §2.2: limit of the slow-start increase per ACK, in segments.
ABC_L = 2
#: Upper bound on cwnd: the largest window TCP can advertise (RFC 7323 §2.3).
MAX_CWND = 1 << 30


class UnknownCongestionControl(ValueError):
    """The requested congestion control algorithm does not exist."""


def rfc5681_initial_window(mss: int) -> int:
    """The initial window in bytes for a given SMSS (RFC 5681 §3.1, equation 1)."""
    if mss > 2190:
        return 2 * mss
    if mss > 1095:
        return 3 * mss
    return 4 * mss


def _check_mss(mss: int) -> int:
    if not isinstance(mss, int) or isinstance(mss, bool) or mss <= 0:
        raise ValueError(f"MSS must be a positive int, got {mss!r}")
    return mss


def _nonneg(n: int | float) -> int:
    """Caller-supplied byte counts: NaN, negative or non-numbers count as 0."""
    if isinstance(n, float):
        return int(n) if math.isfinite(n) and n > 0 else 0
    return n if isinstance(n, int) and n > 0 else 0


class CongestionControl:
    """Common state and the Reno rules; subclasses change avoidance and decrease.

    ``cwnd`` and ``ssthresh`` are in bytes. ``cwnd`` never drops below one MSS.
    """

    __slots__ = ("mss", "_fixed_iw", "cwnd", "ssthresh", "bytes_acked", "in_recovery",
                 "_rto_streak", "_last_event")

    #: Name used by :func:`make_congestion_control`.
    name = "reno"
    #: Multiplicative decrease factor on a congestion event.
    beta = 0.5

    def __init__(self, mss: int, now: float, *, initial_window: int | None = None) -> None:
        self.mss = _check_mss(mss)
        self._fixed_iw = initial_window
        self.cwnd = self.initial_window
        self.ssthresh = INITIAL_SSTHRESH
        #: RFC 3465 §2.1 byte counter for congestion avoidance.
        self.bytes_acked = 0
        self.in_recovery = False
        self._rto_streak = 0
        self._last_event = now

    @property
    def initial_window(self) -> int:
        """IW in bytes: the configured one, else RFC 5681's, never below one MSS."""
        if self._fixed_iw is not None:
            return max(self._fixed_iw, self.mss)
        return rfc5681_initial_window(self.mss)

    @property
    def in_slow_start(self) -> bool:
        """RFC 5681 §3.1: slow start while cwnd < ssthresh."""
        return self.cwnd < self.ssthresh

    def on_ack(self, acked: int, rtt: float | None, inflight: int, now: float) -> None:
        """New data acknowledged outside recovery: grow cwnd."""
        acked = _nonneg(acked)
        if acked == 0:
            return
        self._rto_streak = 0
        if self.cwnd < self.ssthresh:
            # RFC 3465 §2.2: count bytes, at most L*SMSS per ACK; stop at ssthresh
            # and hand what is left of this ACK to congestion avoidance.
            inc = min(acked, ABC_L * self.mss)
            room = self.ssthresh - self.cwnd
            self.cwnd += min(inc, room)
            acked = acked - room if inc >= room else 0
        if acked > 0:
            self._avoid(acked, rtt, _nonneg(inflight), now)
        self.cwnd = min(self.cwnd, MAX_CWND)

    def _avoid(self, acked: int, rtt: float | None, inflight: int, now: float) -> None:
        # RFC 3465 §2.1 / RFC 5681 §3.1: one SMSS per cwnd of acknowledged bytes.
        self.bytes_acked += acked
        if self.bytes_acked >= self.cwnd:
            self.bytes_acked -= self.cwnd
            self.cwnd += self.mss
        self.bytes_acked = min(self.bytes_acked, self.cwnd)

    def _decreased_ssthresh(self, inflight: int) -> int:
        return max(min(int(_nonneg(inflight) * self.beta), MAX_CWND), 2 * self.mss)

    def on_enter_recovery(self, inflight: int, now: float) -> None:
        """Fast retransmit: ssthresh = max(FlightSize*beta, 2*SMSS), cwnd = ssthresh.

        RFC 5681 §3.2 step 2 (equation 4) with beta 1/2; the pipe-based recovery
        of RFC 6675 replaces the dupack inflation of cwnd.
        """
        self.ssthresh = self._decreased_ssthresh(inflight)
        self.cwnd = self.ssthresh
        self.bytes_acked = 0
        self.in_recovery = True
        self._last_event = now

    def on_exit_recovery(self, now: float) -> None:
        """Recovery ended by a full ACK: deflate to ssthresh (RFC 6582 §3.2 step 3, option 2)."""
        if self.in_recovery:
            self.cwnd = max(self.ssthresh, self.mss)
            self.in_recovery = False
        self.bytes_acked = 0

    def on_rto(self, inflight: int, now: float) -> None:
        """Retransmission timeout: ssthresh per RFC 5681 equation 4, cwnd = loss window.

        RFC 5681 §3.1 (implementation note): when the same data times out again,
        ssthresh is held rather than recomputed from a flight that has collapsed.
        """
        if self._rto_streak == 0:
            self.ssthresh = self._decreased_ssthresh(inflight)
        self._rto_streak += 1
        self.cwnd = self.mss
        self.bytes_acked = 0
        self.in_recovery = False
        self._last_event = now

    def on_idle_restart(self, now: float) -> None:
        """Restart after idle longer than an RTO: cwnd = min(IW, cwnd) (RFC 5681 §4.1)."""
        self.cwnd = max(min(self.initial_window, self.cwnd), self.mss)
        self.bytes_acked = 0

    def set_mss(self, mss: int) -> None:
        """The path MSS changed: keep the windows in bytes but honour their floors."""
        self.mss = _check_mss(mss)
        self.cwnd = max(self.cwnd, self.mss)
        self.ssthresh = max(self.ssthresh, 2 * self.mss)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(mss={self.mss}, cwnd={self.cwnd}, "
                f"ssthresh={self.ssthresh})")


class NewReno(CongestionControl):
    """RFC 5681 slow start and congestion avoidance with RFC 6582's recovery windows."""

    __slots__ = ()

    name = "newreno"


#: RFC 9438 §4.1 / §5: C and beta_cubic.
CUBIC_C = 0.4
CUBIC_BETA = 0.7
#: RFC 9438 §4.3: alpha_cubic = 3 * (1 - beta) / (1 + beta).
CUBIC_ALPHA = 3.0 * (1.0 - CUBIC_BETA) / (1.0 + CUBIC_BETA)
#: Bounds that keep the cubic in floating-point range whatever the inputs are.
CUBIC_MAX_RTT = 120.0
CUBIC_MAX_T = 1e5


class Cubic(CongestionControl):
    """CUBIC (RFC 9438): cubic window growth, Reno-friendly region, fast convergence.

    The curve is computed in segments (RFC 9438 §4.1 defines W in MSS-sized
    segments) and converted to bytes with the current MSS.
    """

    __slots__ = ("fast_convergence", "w_max", "k", "t_epoch", "cwnd_epoch", "w_est",
                 "cwnd_prior", "alpha", "_after_rto", "_rtt", "_frac")

    name = "cubic"
    beta = CUBIC_BETA

    def __init__(self, mss: int, now: float, *, initial_window: int | None = None,
                 fast_convergence: bool = True) -> None:
        super().__init__(mss, now, initial_window=initial_window)
        self.fast_convergence = fast_convergence
        #: Window before the last reduction, in segments (0: no congestion event yet).
        self.w_max = 0.0
        #: Seconds the curve takes to return to w_max from the epoch start.
        self.k = 0.0
        #: Start of the current congestion avoidance stage, or None before it starts.
        self.t_epoch: float | None = None
        self.cwnd_epoch = 0.0
        #: Reno-friendly estimate (RFC 9438 §4.3), in segments.
        self.w_est = 0.0
        #: cwnd when ssthresh was last set, in segments (RFC 9438 §4.6 cwnd_prior).
        self.cwnd_prior = 0.0
        self.alpha = CUBIC_ALPHA
        self._after_rto = False
        self._rtt = 0.0
        self._frac = 0.0  # sub-byte remainder of the per-ACK increase

    def w_cubic(self, t: float) -> float:
        """RFC 9438 §4.2 equation 1: W_cubic(t) = C*(t-K)**3 + W_max, in segments."""
        d = min(max(t - self.k, -CUBIC_MAX_T), CUBIC_MAX_T)
        return CUBIC_C * d ** 3 + self.w_max

    def _start_epoch(self, now: float) -> None:
        self.t_epoch = now
        self.cwnd_epoch = self.cwnd / self.mss
        self.w_est = self.cwnd_epoch
        self._frac = 0.0
        if self._after_rto or self.w_max <= self.cwnd_epoch:
            # RFC 9438 §4.8: after a timeout K = 0 and W_max = cwnd at the start of
            # this stage; the same when there was never a reduction (or cwnd already
            # passed W_max) so that the curve starts in its convex part.
            self.w_max = self.cwnd_epoch
            self.k = 0.0
            self._after_rto = False
        else:
            # RFC 9438 §4.2 equation 2, with cwnd_epoch in segments.
            self.k = ((self.w_max - self.cwnd_epoch) / CUBIC_C) ** (1.0 / 3.0)

    def _avoid(self, acked: int, rtt: float | None, inflight: int, now: float) -> None:
        if rtt is not None and math.isfinite(rtt) and rtt > 0:
            self._rtt = min(rtt, CUBIC_MAX_RTT)
        if self.t_epoch is None or now < self.t_epoch:
            self._start_epoch(now)
        t = now - self.t_epoch  # type: ignore[operator]  # _start_epoch set it if None
        cwnd = self.cwnd / self.mss
        segs = acked / self.mss
        # RFC 9438 §4.3: once W_est reaches cwnd_prior, grow it at Reno's rate.
        if self.w_est >= self.cwnd_prior:
            self.alpha = 1.0
        self.w_est += self.alpha * segs / cwnd
        if self.w_cubic(t) < self.w_est:
            new = max(cwnd, self.w_est)  # Reno-friendly region: cwnd = W_est
        else:
            # RFC 9438 §4.2: aim at W_cubic(t + RTT), clamped to [cwnd, 1.5*cwnd],
            # and move (target - cwnd)/cwnd per acknowledged segment.
            target = min(max(self.w_cubic(t + self._rtt), cwnd), 1.5 * cwnd)
            # A stretch ACK covering more than a window must not overshoot target.
            new = min(cwnd + (target - cwnd) / cwnd * segs, target)
        grow = (new - cwnd) * self.mss + self._frac
        whole = int(grow)
        self._frac = grow - whole
        self.cwnd += whole

    def on_enter_recovery(self, inflight: int, now: float) -> None:
        """Congestion event: fast convergence (RFC 9438 §4.7) then decrease (§4.6)."""
        cwnd = self.cwnd / self.mss
        if self.fast_convergence and cwnd < self.w_max:
            self.w_max = cwnd * (1.0 + CUBIC_BETA) / 2.0
        else:
            self.w_max = cwnd
        self.cwnd_prior = cwnd
        self._reset_epoch()
        super().on_enter_recovery(inflight, now)

    def on_rto(self, inflight: int, now: float) -> None:
        """Timeout: Reno's loss window, ssthresh from beta_cubic (RFC 9438 §4.8)."""
        if self._rto_streak == 0:
            self.cwnd_prior = self.cwnd / self.mss
        self._after_rto = True
        self._reset_epoch()
        super().on_rto(inflight, now)

    def on_idle_restart(self, now: float) -> None:
        """Restart window (RFC 5681 §4.1); the curve restarts from the current cwnd."""
        super().on_idle_restart(now)
        self._reset_epoch()

    def set_mss(self, mss: int) -> None:
        """Change the MSS; the curve is restarted so its units stay consistent."""
        super().set_mss(mss)
        self._reset_epoch()

    def _reset_epoch(self) -> None:
        self.t_epoch = None
        self.alpha = CUBIC_ALPHA
        self._frac = 0.0


#: Algorithms by name.
CONGESTION_CONTROLS: dict[str, type[CongestionControl]] = {
    "newreno": NewReno,
    "cubic": Cubic,
}


def make_congestion_control(name: str, mss: int, now: float) -> CongestionControl:
    """A new instance of the algorithm called ``name`` (see CONGESTION_CONTROLS)."""
    try:
        cls = CONGESTION_CONTROLS[name.lower()]
    except (KeyError, AttributeError):
        raise UnknownCongestionControl(
            f"unknown congestion control {name!r}; known: {sorted(CONGESTION_CONTROLS)}"
        ) from None
    return cls(mss, now)
