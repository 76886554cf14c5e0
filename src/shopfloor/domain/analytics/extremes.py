"""New-extreme detector: has the measurement left the range it has ever had?

The simplest contextual test, and on service metrics one of the strongest (Numenta's NAB detector
calls it a "spatial anomaly"): keep the lowest and highest value seen so far; an observation above
``max + tolerance · (max - min)`` or below ``min - tolerance · (max - min)`` is new. A spike, a
step to a level never reached, or a drift out of the usual band is caught at its first row, whatever
the noise, because no model of the series is needed. Anything inside the range goes unseen, so it
is meant to be combined with a graded detector (``Ensemble`` with ``combine="max"``).

With ``short > 1`` the detector watches the mean of the last ``short`` values (the current one
included) against the range of such means so far: a sustained move to a new level, which single
noisy values hide because the noise has already stretched their range.

After a new extreme the detector rests for ``rest`` observations (scores 0 then): a ramp that keeps
setting records is one event, not one alarm per row. Until ``min_count`` values are seen it scores 0
(the range is still being learned).

Score scale: 1.0 for a new extreme, 0.0 otherwise; the threshold (default 0.5) only separates them.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from shopfloor.domain.analytics.detector import Observation, State, as_scalar, quantile_threshold, register
from shopfloor.domain.errors import InvalidInput


class NewExtremeDetector:
    """An observation outside the widened range seen so far scores 1; see the module docstring."""

    kind = "new_extreme"

    def __init__(self, *, tolerance: float = 0.01, rest: int = 100, short: int = 1, min_count: int = 10,
                 threshold: float = 0.5) -> None:
        if not math.isfinite(tolerance) or tolerance < 0.0 or rest < 0 or short < 1 or min_count < 2:
            raise InvalidInput("new_extreme: tolerance >= 0, rest >= 0, short >= 1, min_count >= 2")
        self.tolerance = tolerance
        self.short = short
        self.rest = rest
        self.min_count = min_count
        self.threshold = threshold
        self._low = math.inf
        self._high = -math.inf
        self._count = 0
        self._resting = 0
        self._recent: deque[float] = deque(maxlen=max(short - 1, 1))

    def level(self, x: Observation) -> float:
        """The value watched: ``x``, or with ``short > 1`` the mean of it and the values before it."""
        value = as_scalar(x)
        if self.short == 1 or not math.isfinite(value):
            return value
        return (sum(self._recent) + value) / (len(self._recent) + 1)

    def is_new_extreme(self, x: Observation) -> bool:
        """Whether ``x`` lies outside the widened range (ignoring the rest period and ``min_count``)."""
        value = self.level(x)
        if not math.isfinite(value) or self._count == 0 or self._high <= self._low:
            return False
        margin = self.tolerance * (self._high - self._low)
        return value > self._high + margin or value < self._low - margin

    def score(self, ts_us: int, x: Observation) -> float:
        if self._count < self.min_count or self._resting > 0:
            return 0.0
        return 1.0 if self.is_new_extreme(x) else 0.0

    def update(self, ts_us: int, x: Observation) -> None:
        value = self.level(x)
        if not math.isfinite(value):
            return
        if self.score(ts_us, x) == 1.0:
            self._resting = self.rest
        elif self._resting > 0:
            self._resting -= 1
        if self.short > 1:
            self._recent.append(as_scalar(x))
        self._low = min(self._low, value)
        self._high = max(self._high, value)
        self._count += 1

    def learn_threshold(self, normal_scores: Sequence[float], quantile: float = 1.0, margin: float = 1.0) -> float:
        """Scores are 0 or 1: the threshold is the normal period's highest score, at least 0.5."""
        self.threshold = max(0.5, quantile_threshold(normal_scores, quantile, margin))
        return self.threshold

    def is_anomaly(self, score: float) -> bool:
        return score >= self.threshold

    def state(self) -> State:
        return {"kind": self.kind, "tolerance": self.tolerance, "rest": self.rest, "short": self.short,
                "min_count": self.min_count, "threshold": self.threshold, "count": self._count,
                "resting": self._resting, "recent": list(self._recent) if self.short > 1 else [],
                "low": self._low if self._count else None, "high": self._high if self._count else None}

    @classmethod
    def from_state(cls, state: State) -> NewExtremeDetector:
        det = cls(tolerance=float(state["tolerance"]), rest=int(state["rest"]), short=int(state["short"]),
                  min_count=int(state["min_count"]), threshold=float(state["threshold"]))
        det._recent.extend(float(v) for v in state["recent"])
        det._count = int(state["count"])
        det._resting = int(state["resting"])
        if det._count:
            det._low, det._high = float(state["low"]), float(state["high"])
        return det


register(NewExtremeDetector.kind, NewExtremeDetector.from_state)
