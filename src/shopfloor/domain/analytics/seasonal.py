"""Robust seasonal baseline: median and MAD per time-of-day slot, learned online.

For a measurement whose normal level depends on the time of day (a compressor that works harder in
the afternoon, a line that idles at night), each slot of the period (``period_s``, a day by default,
cut into ``slot_s`` slots) keeps its last ``window`` values. An observation is compared with its own
slot: the robust z-score ``|x - median| / (1.4826 · MAD)`` (the scale is kept at least a tenth of
the slot's standard deviation, so a slot of nearly constant values does not make every change
infinite). With ``period_s == slot_s`` there is one
slot and it is a plain rolling median/MAD detector.

Score scale: ``z / (z + 3)``, so 0.5 means three robust standard deviations from the slot's median,
0.75 nine. Until a slot holds ``min_count`` values it scores 0 (it is still learning).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from shopfloor.domain.analytics.detector import Observation, State, as_scalar, quantile_threshold, register
from shopfloor.domain.errors import InvalidInput

_MAD_TO_SIGMA = 1.4826
_US = 1_000_000


def z_to_score(z: float, half: float = 3.0) -> float:
    """Map a non-negative z-score to [0, 1): ``half`` maps to 0.5."""
    if math.isnan(z):
        return 0.0
    if math.isinf(z):
        return 1.0
    return z / (z + half)


def _median(values: Sequence[float]) -> float:
    s = sorted(values)
    n = len(s)
    mid = n // 2
    return s[mid] if n % 2 else 0.5 * (s[mid - 1] + s[mid])


class SeasonalMedianDetector:
    """Median/MAD per time-of-day slot; see the module docstring."""

    kind = "seasonal_median"

    def __init__(self, *, period_s: int = 86_400, slot_s: int = 3_600, window: int = 32, min_count: int = 8,
                 min_scale: float = 1e-9, utc_offset_s: int = 0, threshold: float = 0.7) -> None:
        if slot_s <= 0 or period_s <= 0 or period_s % slot_s:
            raise InvalidInput("slot_s must be positive and divide period_s")
        if window < 3 or not 1 <= min_count <= window:
            raise InvalidInput("window must be >= 3 and 1 <= min_count <= window")
        self.period_s = period_s
        self.slot_s = slot_s
        self.window = window
        self.min_count = min_count
        self.min_scale = min_scale
        self.utc_offset_s = utc_offset_s
        self.threshold = threshold
        self._slots: list[deque[float]] = [deque(maxlen=window) for _ in range(period_s // slot_s)]

    def _slot(self, ts_us: int) -> deque[float]:
        sec = ts_us // _US + self.utc_offset_s
        return self._slots[(sec % self.period_s) // self.slot_s]

    def baseline(self, ts_us: int) -> tuple[float, float] | None:
        """(median, robust sigma) of the slot of ``ts_us``, or None while it is still learning."""
        values = self._slot(ts_us)
        if len(values) < self.min_count:
            return None
        med = _median(values)
        mad = _median([abs(v - med) for v in values])
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        return med, max(_MAD_TO_SIGMA * mad, 0.1 * std, self.min_scale, 1e-6 * abs(med))

    def zscore(self, ts_us: int, x: Observation) -> float:
        """The robust z-score of ``x`` in its slot (0 while learning)."""
        value = as_scalar(x)
        if not math.isfinite(value):
            return math.inf
        base = self.baseline(ts_us)
        if base is None:
            return 0.0
        return abs(value - base[0]) / base[1]

    def score(self, ts_us: int, x: Observation) -> float:
        return z_to_score(self.zscore(ts_us, x))

    def update(self, ts_us: int, x: Observation) -> None:
        value = as_scalar(x)
        if math.isfinite(value):
            self._slot(ts_us).append(value)

    def learn_threshold(self, normal_scores: Sequence[float], quantile: float = 0.999, margin: float = 1.1) -> float:
        self.threshold = quantile_threshold(normal_scores, quantile, margin)
        return self.threshold

    def is_anomaly(self, score: float) -> bool:
        return score >= self.threshold

    def state(self) -> State:
        return {"kind": self.kind, "period_s": self.period_s, "slot_s": self.slot_s, "window": self.window,
                "min_count": self.min_count, "min_scale": self.min_scale, "utc_offset_s": self.utc_offset_s,
                "threshold": self.threshold, "slots": [list(s) for s in self._slots]}

    @classmethod
    def from_state(cls, state: State) -> SeasonalMedianDetector:
        det = cls(period_s=int(state["period_s"]), slot_s=int(state["slot_s"]), window=int(state["window"]),
                  min_count=int(state["min_count"]), min_scale=float(state["min_scale"]),
                  utc_offset_s=int(state["utc_offset_s"]), threshold=float(state["threshold"]))
        slots = state["slots"]
        if len(slots) != len(det._slots):
            raise InvalidInput("seasonal_median state: slot count does not match period_s / slot_s")
        for dq, values in zip(det._slots, slots, strict=True):
            dq.extend(float(v) for v in values)
        return det


register(SeasonalMedianDetector.kind, SeasonalMedianDetector.from_state)
