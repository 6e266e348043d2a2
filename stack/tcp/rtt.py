"""Round-trip time estimation and the retransmission timeout (RFC 6298).

Pure state: the caller measures a round-trip time (obeying Karn's algorithm,
RFC 6298 §3: never from a retransmitted segment unless timestamps disambiguate
it) and feeds it to :meth:`RttEstimator.sample`. No clock is read here.
"""

from __future__ import annotations

import math

#: RFC 6298 §2 constants.
ALPHA = 1.0 / 8.0
BETA = 1.0 / 4.0
K = 4

#: Length of the min_rtt window: seconds when samples carry ``now``, samples otherwise.
MIN_RTT_WINDOW = 300.0
MIN_RTT_WINDOW_SAMPLES = 1000
#: Bound on the monotonic queue that tracks the windowed minimum.
MIN_RTT_SLOTS = 64


class RttEstimator:
    """SRTT, RTTVAR and RTO as RFC 6298 §2 defines them, plus exponential backoff.

    Before the first sample ``srtt`` and ``rttvar`` are 0.0 and ``has_sample`` is
    False; ``rto`` is ``initial_rto`` (RFC 6298 §2.1). ``rto`` always includes
    the current backoff and always lies in ``[min_rto, max_rto]``.
    """

    __slots__ = (
        "min_rto", "max_rto", "initial_rto", "granularity",
        "srtt", "rttvar", "has_sample", "samples", "rejected",
        "_base_rto", "_backoffs", "_min_q", "_count",
    )

    def __init__(self, min_rto: float = 0.2, max_rto: float = 120.0,
                 initial_rto: float = 1.0, granularity: float = 0.001) -> None:
        for name, value in (("min_rto", min_rto), ("max_rto", max_rto),
                            ("initial_rto", initial_rto), ("granularity", granularity)):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")
        if min_rto <= 0 or min_rto > max_rto:
            raise ValueError(f"need 0 < min_rto <= max_rto, got {min_rto!r}, {max_rto!r}")
        self.min_rto = min_rto
        self.max_rto = max_rto
        self.initial_rto = initial_rto
        self.granularity = granularity
        self.srtt = 0.0
        self.rttvar = 0.0
        self.has_sample = False
        self.samples = 0
        #: Samples refused as nonsense (negative, NaN, infinite): a counted drop.
        self.rejected = 0
        self._base_rto = self._clamp(initial_rto)
        self._backoffs = 0
        # (key, rtt) pairs with strictly increasing rtt: the front is the minimum.
        # A short list (bounded by MIN_RTT_SLOTS), made on the first sample: a deque
        # costs over 600 bytes even when empty, a lot for an idle connection.
        self._min_q: list[tuple[float, float]] | None = None
        self._count = 0

    def _clamp(self, rto: float) -> float:
        return min(max(rto, self.min_rto), self.max_rto)

    @property
    def rto(self) -> float:
        """The retransmission timeout to arm now, backoff included (seconds)."""
        # RFC 6298 §5.5 doubles per expiry; 2**backoffs is capped so it cannot overflow.
        return self._clamp(self._base_rto * (1 << min(self._backoffs, 30)))

    @rto.setter
    def rto(self, value: float) -> None:
        """Force the base RTO (e.g. 3 s after a lost SYN, RFC 6298 §5.7); clears backoff."""
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"RTO must be a finite non-negative number, got {value!r}")
        self._base_rto = self._clamp(value)
        self._backoffs = 0

    @property
    def backoffs(self) -> int:
        """How many times the timer has been backed off since the last reset."""
        return self._backoffs

    @property
    def min_rtt(self) -> float | None:
        """The smallest sample within the recent window, or None before any sample."""
        q = self._min_q
        return q[0][1] if q else None

    def sample(self, rtt: float, now: float | None = None) -> None:
        """Take one round-trip measurement ``rtt`` (seconds).

        ``now`` is optional and only used to age the min_rtt window in time;
        without it the window is counted in samples.
        """
        if not isinstance(rtt, (int, float)) or not math.isfinite(rtt) or rtt < 0:
            self.rejected += 1
            return
        rtt = float(rtt)
        if self.has_sample:
            # RFC 6298 §2.3: RTTVAR uses the SRTT from before this update.
            self.rttvar = (1 - BETA) * self.rttvar + BETA * abs(self.srtt - rtt)
            self.srtt = (1 - ALPHA) * self.srtt + ALPHA * rtt
        else:
            # RFC 6298 §2.2: the first measurement sets SRTT and RTTVAR directly.
            self.srtt = rtt
            self.rttvar = rtt / 2
            self.has_sample = True
        self.samples += 1
        self._base_rto = self._clamp(self.srtt + max(self.granularity, K * self.rttvar))
        self._track_min(rtt, now)

    def _track_min(self, rtt: float, now: float | None) -> None:
        self._count += 1
        if now is not None and math.isfinite(now):
            key, window = float(now), MIN_RTT_WINDOW
        else:
            key, window = float(self._count), float(MIN_RTT_WINDOW_SAMPLES)
        q = self._min_q
        if q is None:
            q = self._min_q = []
        if q and key < q[-1][0]:
            # The key kind changed or time went backwards: start the window afresh.
            q.clear()
        while q and q[-1][1] >= rtt:
            q.pop()
        q.append((key, rtt))
        while q[0][0] < key - window:
            del q[0]
        if len(q) > MIN_RTT_SLOTS:
            # Keep the bound: forget the second-smallest, the minimum stays exact
            # until it ages out.
            del q[1]

    def backoff(self) -> None:
        """Double the RTO after a retransmission timeout (RFC 6298 §5.5), capped at max_rto."""
        if self._base_rto * (1 << min(self._backoffs, 30)) < self.max_rto:
            self._backoffs += 1

    def reset_backoff(self) -> None:
        """Return to the computed RTO (new data acknowledged, RFC 6298 §5.7 note)."""
        self._backoffs = 0
