"""Windowed Gaussian on a short mean: has the recent level left the range of the last ``window`` values?

The mean of the last ``short`` observations (the current one included) is compared with the mean
and standard deviation of the ``window`` observations before them:
``z = |short mean - mean| / (std / sqrt(short))``. With ``short = 1`` it is the classic windowed
Gaussian (a spike detector); a larger ``short`` finds level shifts and drifts that single points
hide in noise. Score scale as the seasonal baseline: ``z / (z + 3)``; 0 until ``min_count`` values.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from shopfloor.domain.analytics.detector import Observation, State, as_scalar, quantile_threshold, register
from shopfloor.domain.analytics.seasonal import z_to_score
from shopfloor.domain.errors import InvalidInput


class WindowedGaussianDetector:
    kind = "windowed_gaussian"

    def __init__(self, *, window: int = 400, short: int = 1, min_count: int = 10, threshold: float = 0.7) -> None:
        if window < 2 or short < 1 or not 2 <= min_count <= window:
            raise InvalidInput("windowed_gaussian: window >= 2, short >= 1, 2 <= min_count <= window")
        self.window = window
        self.short = short
        self.min_count = min_count
        self.threshold = threshold
        self._values: deque[float] = deque(maxlen=window + short - 1)

    def zscore(self, x: Observation) -> float:
        value = as_scalar(x)
        if not math.isfinite(value):
            return math.inf
        vals = list(self._values)
        recent = vals[len(vals) - (self.short - 1):] if self.short > 1 else []
        ref = vals[: len(vals) - len(recent)][-self.window:]
        if len(ref) < self.min_count:
            return 0.0
        mean = sum(ref) / len(ref)
        std = math.sqrt(max(sum((v - mean) ** 2 for v in ref) / len(ref), 0.0))
        level = (sum(recent) + value) / (len(recent) + 1)
        scale = max(std / math.sqrt(len(recent) + 1), 1e-9 * max(abs(mean), 1.0))
        return abs(level - mean) / scale

    def score(self, ts_us: int, x: Observation) -> float:
        return z_to_score(self.zscore(x))

    def update(self, ts_us: int, x: Observation) -> None:
        value = as_scalar(x)
        if math.isfinite(value):
            self._values.append(value)

    def learn_threshold(self, normal_scores: Sequence[float], quantile: float = 0.999, margin: float = 1.1) -> float:
        self.threshold = quantile_threshold(normal_scores, quantile, margin)
        return self.threshold

    def is_anomaly(self, score: float) -> bool:
        return score >= self.threshold

    def state(self) -> State:
        return {"kind": self.kind, "window": self.window, "short": self.short, "min_count": self.min_count,
                "threshold": self.threshold, "values": list(self._values)}

    @classmethod
    def from_state(cls, state: State) -> WindowedGaussianDetector:
        det = cls(window=int(state["window"]), short=int(state["short"]), min_count=int(state["min_count"]),
                  threshold=float(state["threshold"]))
        det._values.extend(float(v) for v in state["values"])
        return det


register(WindowedGaussianDetector.kind, WindowedGaussianDetector.from_state)
