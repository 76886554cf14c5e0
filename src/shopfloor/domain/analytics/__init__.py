"""Anomaly detection, pure computation: streaming detectors, their thresholds and the benchmark scores.

Every detector follows ``Detector`` (``detector.py``): ``score``/``update`` one observation at a time,
``learn_threshold`` from a normal period, ``state()`` as plain data and ``detector_from_state`` back.
numpy is the only dependency beyond the standard library. docs/analytics.md says which to choose.
"""

from shopfloor.domain.analytics.detector import (
    Detector,
    Observation,
    State,
    detector_from_state,
    quantile_threshold,
    score_and_update,
)
from shopfloor.domain.analytics.seasonal import SeasonalMedianDetector

__all__ = [
    "Detector",
    "Observation",
    "SeasonalMedianDetector",
    "State",
    "detector_from_state",
    "quantile_threshold",
    "score_and_update",
]
