"""Anomaly detection, pure computation: streaming detectors, their thresholds and the benchmark scores.

Every detector follows ``Detector`` (``detector.py``): ``score``/``update`` one observation at a time,
``learn_threshold`` from a normal period, ``state()`` as plain data and ``detector_from_state`` back.
numpy is the only dependency beyond the standard library. docs/analytics.md says which to choose.

Remaining useful life: ``rul.py`` (window features and a LightGBM regressor; LightGBM is its extra
dependency) and ``rul_metrics.py`` (RMSE, PHM08). What the platform keeps of a model and how any kind
is trained and applied behind one interface: ``models.py`` and ``scorers.py``
(docs/analytics-platform.md).
"""

from shopfloor.domain.analytics.detector import (
    Detector,
    Observation,
    State,
    detector_from_state,
    quantile_threshold,
    score_and_update,
)
from shopfloor.domain.analytics.ensemble import Ensemble
from shopfloor.domain.analytics.extremes import NewExtremeDetector
from shopfloor.domain.analytics.hst import HalfSpaceTrees
from shopfloor.domain.analytics.pca import PcaT2QDetector
from shopfloor.domain.analytics.seasonal import SeasonalMedianDetector
from shopfloor.domain.analytics.windowed import WindowedGaussianDetector

__all__ = [
    "Detector",
    "Ensemble",
    "HalfSpaceTrees",
    "NewExtremeDetector",
    "Observation",
    "PcaT2QDetector",
    "SeasonalMedianDetector",
    "State",
    "WindowedGaussianDetector",
    "detector_from_state",
    "quantile_threshold",
    "score_and_update",
]
