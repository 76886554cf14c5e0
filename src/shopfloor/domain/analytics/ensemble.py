"""Combining and post-processing detectors: calibrated ensembles, smoothing, alarm suppression.

``Ensemble`` feeds every observation to each member detector and turns each member's score into
its rank among that member's last ``history`` scores (a score higher than 99 % of what the member
said recently becomes 0.99), so members with different scales become comparable, and so do
measurements with different noise. Each member's part is multiplied by its weight (1 unless
``weights`` says otherwise; a weight of 0.999 puts a member just below another that reports exactly
1) and the parts are combined (``max``: any member is surprised; ``mean``: they agree). Then,
optionally:

* ``smooth``: the mean of the last ``smooth`` combined scores (long anomalies, noisy sensors);
* ``suppress``: a combined score is reported only when it is higher than every score of the
  ``suppress`` observations before it, and as 0 otherwise, so one event raises one alarm, at its
  start, whatever the threshold.

With ``calibrate=False`` the members' own scores are combined as they are. Score scale: [0, 1];
with calibration, the combined rank. State: the members' states, the recent scores and settings.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Sequence
from typing import Literal

from shopfloor.domain.analytics.detector import (
    Detector,
    Observation,
    State,
    detector_from_state,
    quantile_threshold,
    register,
)
from shopfloor.domain.errors import InvalidInput

Combine = Literal["max", "mean"]


class _Ranker:
    """Rank of a value among the last ``size`` values (a sorted list beside a FIFO)."""

    def __init__(self, size: int, values: Sequence[float] = ()) -> None:
        self.size = size
        self.fifo: deque[float] = deque()
        self.sorted: list[float] = []
        for v in values:
            self.add(v)

    def rank(self, value: float) -> float:
        if not self.sorted:
            return 0.0
        return bisect.bisect_left(self.sorted, value) / len(self.sorted)

    def add(self, value: float) -> None:
        self.fifo.append(value)
        bisect.insort(self.sorted, value)
        if len(self.fifo) > self.size:
            old = self.fifo.popleft()
            del self.sorted[bisect.bisect_left(self.sorted, old)]


class Ensemble:
    kind = "ensemble"

    def __init__(self, members: Sequence[Detector], *, combine: Combine = "max", calibrate: bool = True,
                 history: int = 5000, min_history: int = 100, smooth: int = 1, suppress: int = 0,
                 weights: Sequence[float] | None = None, threshold: float = 0.99) -> None:
        if not members:
            raise InvalidInput("an ensemble needs at least one member detector")
        if combine not in ("max", "mean"):
            raise InvalidInput(f"combine must be 'max' or 'mean', got {combine!r}")
        if history < 1 or not 0 <= min_history <= history or smooth < 1 or suppress < 0:
            raise InvalidInput("ensemble: history >= 1, 0 <= min_history <= history, smooth >= 1, suppress >= 0")
        self.weights = [1.0] * len(members) if weights is None else [float(w) for w in weights]
        if len(self.weights) != len(members) or not all(0.0 < w <= 1.0 for w in self.weights):
            raise InvalidInput("ensemble: one weight per member, each in (0, 1]")
        self.members = list(members)
        self.combine: Combine = combine
        self.calibrate = calibrate
        self.history = history
        self.min_history = min_history
        self.smooth = smooth
        self.suppress = suppress
        self.threshold = threshold
        self._rankers = [_Ranker(history) for _ in self.members]
        self._combined: deque[float] = deque(maxlen=max(smooth - 1, 1))
        self._recent: deque[float] = deque(maxlen=max(suppress, 1))
        self._cache: tuple[int, tuple[float, ...], list[float], float, float, float] | None = None

    def _evaluate(self, ts_us: int, x: Observation) -> tuple[list[float], float, float, float]:
        """(member scores, combined, combined and smoothed, reported score)."""
        key = (float(x),) if isinstance(x, int | float) else tuple(float(v) for v in x)
        if self._cache is not None and self._cache[0] == ts_us and self._cache[1] == key:
            return self._cache[2], self._cache[3], self._cache[4], self._cache[5]
        raw = [m.score(ts_us, x) for m in self.members]
        if self.calibrate:
            parts = [r.rank(s) if len(r.fifo) >= self.min_history else 0.0
                     for r, s in zip(self._rankers, raw, strict=True)]
        else:
            parts = raw
        parts = [w * p for w, p in zip(self.weights, parts, strict=True)]
        combined = max(parts) if self.combine == "max" else sum(parts) / len(parts)
        value = combined
        if self.smooth > 1:
            value = (sum(self._combined) + combined) / (len(self._combined) + 1)
        reported = value
        if self.suppress and self._recent and max(self._recent) >= value:
            reported = 0.0
        self._cache = (ts_us, key, raw, combined, value, reported)
        return raw, combined, value, reported

    def score(self, ts_us: int, x: Observation) -> float:
        return self._evaluate(ts_us, x)[3]

    def update(self, ts_us: int, x: Observation) -> None:
        raw, combined, value, _ = self._evaluate(ts_us, x)
        for member, ranker, s in zip(self.members, self._rankers, raw, strict=True):
            if math.isfinite(s):
                ranker.add(s)
            member.update(ts_us, x)
        if self.smooth > 1:
            self._combined.append(combined)
        if self.suppress:
            self._recent.append(value)
        self._cache = None

    def learn_threshold(self, normal_scores: Sequence[float], quantile: float = 1.0, margin: float = 1.0) -> float:
        self.threshold = quantile_threshold(normal_scores, quantile, margin)
        return self.threshold

    def is_anomaly(self, score: float) -> bool:
        return score >= self.threshold

    def state(self) -> State:
        return {"kind": self.kind, "members": [m.state() for m in self.members], "combine": self.combine,
                "calibrate": self.calibrate, "history": self.history, "min_history": self.min_history,
                "smooth": self.smooth, "suppress": self.suppress, "weights": self.weights, "threshold": self.threshold,
                "ranks": [list(r.fifo) for r in self._rankers], "combined": list(self._combined),
                "reported": list(self._recent)}

    @classmethod
    def from_state(cls, state: State) -> Ensemble:
        combine = state["combine"]
        if combine not in ("max", "mean"):
            raise InvalidInput(f"ensemble state: combine must be 'max' or 'mean', got {combine!r}")
        ens = cls([detector_from_state(m) for m in state["members"]], combine=combine,
                  calibrate=bool(state["calibrate"]), history=int(state["history"]),
                  min_history=int(state["min_history"]), smooth=int(state["smooth"]),
                  suppress=int(state["suppress"]), weights=[float(w) for w in state.get("weights") or []] or None,
                  threshold=float(state["threshold"]))
        ens._rankers = [_Ranker(ens.history, [float(v) for v in values]) for values in state["ranks"]]
        ens._combined.extend(float(v) for v in state["combined"])
        ens._recent.extend(float(v) for v in state["reported"])
        return ens


register(Ensemble.kind, Ensemble.from_state)
