"""Train, serialise and apply a model of any kind behind one interface: history in, one value per
row out (the remaining useful life, or an anomaly score).

A *history* is a 2-D array, one row per time step (a cycle), one column per input measurement, in
the order of the model's inputs. RUL trains on histories that each end in a failure; a detector
trains on histories of normal operation. The anomaly kinds are the streaming detectors of this
package (``Detector``: trained prequentially on the normal period, threshold learned from its scores,
state kept as JSON); ``zscore`` is a minimal one of our own.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, cast

import numpy as np
import numpy.typing as npt

from shopfloor.domain.analytics.detector import Detector, detector_from_state, score_and_update
from shopfloor.domain.analytics.hst import HalfSpaceTrees
from shopfloor.domain.analytics.models import ModelKind
from shopfloor.domain.analytics.pca import PcaT2QDetector
from shopfloor.domain.analytics.rul import RulConfig, RulModel
from shopfloor.domain.analytics.seasonal import SeasonalMedianDetector
from shopfloor.domain.analytics.windowed import WindowedGaussianDetector
from shopfloor.domain.errors import InvalidInput

FloatArray = npt.NDArray[np.float64]


class Scorer(Protocol):
    def score_history(self, history: FloatArray, ts_us: Sequence[int] | None = None) -> FloatArray:
        """One output value per row of ``history`` (taken at ``ts_us``, when the kind needs time)."""
        ...

    def to_bytes(self) -> bytes: ...

    def summary(self) -> dict[str, Any]:
        """What the API shows about the trained model (a learned threshold, sizes)."""
        ...


class ZScoreDetector:
    """A simple stand-in anomaly detector with a streaming API: ``update`` learns a normal row
    (running mean and variance per input, Welford), ``score`` returns the largest absolute z-score
    of a row. ``threshold`` is a quantile of the scores of the normal period it learned."""

    def __init__(self, n_inputs: int, quantile: float = 0.995) -> None:
        if not 0.5 <= quantile < 1:
            raise InvalidInput("zscore parameter 'quantile' must be in [0.5, 1)")
        self.n = 0
        self.quantile = quantile
        self.mean = [0.0] * n_inputs
        self.m2 = [0.0] * n_inputs
        self.threshold: float | None = None

    def update(self, row: Sequence[float]) -> None:
        self.n += 1
        for i, v in enumerate(row):
            d = v - self.mean[i]
            self.mean[i] += d / self.n
            self.m2[i] += d * (v - self.mean[i])

    def score(self, row: Sequence[float]) -> float:
        if self.n < 2:
            return 0.0
        worst = 0.0
        for i, v in enumerate(row):
            std = math.sqrt(self.m2[i] / (self.n - 1))
            z = abs(v - self.mean[i]) / std if std > 0 else (0.0 if v == self.mean[i] else math.inf)
            worst = max(worst, z)
        return worst

    def score_history(self, history: FloatArray, ts_us: Sequence[int] | None = None) -> FloatArray:
        return np.array([min(self.score(row), 1e6) for row in history.tolist()], dtype=np.float64)

    def to_bytes(self) -> bytes:
        return json.dumps({"format": "shopfloor-zscore/1", "n": self.n, "quantile": self.quantile,
                           "mean": self.mean, "m2": self.m2, "threshold": self.threshold}).encode()

    @classmethod
    def from_bytes(cls, blob: bytes) -> ZScoreDetector:
        try:
            d = json.loads(blob)
            det = cls(len(d["mean"]), float(d["quantile"]))
            det.n, det.mean, det.m2 = int(d["n"]), [float(v) for v in d["mean"]], [float(v) for v in d["m2"]]
            det.threshold = None if d["threshold"] is None else float(d["threshold"])
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInput(f"not a serialised zscore detector: {exc}") from exc
        return det

    def summary(self) -> dict[str, Any]:
        return {"rows": self.n, "threshold": self.threshold, "quantile": self.quantile}


class RulScorer:
    def __init__(self, model: RulModel) -> None:
        self.model = model

    def score_history(self, history: FloatArray, ts_us: Sequence[int] | None = None) -> FloatArray:
        return self.model.predict(history)

    def to_bytes(self) -> bytes:
        return self.model.to_bytes()

    def summary(self) -> dict[str, Any]:
        return {"config": self.model.config.to_dict(), "unit": "cycles"}


class DetectorScorer:
    """A streaming detector of ``shopfloor.domain.analytics`` behind the scorer interface. Scoring is
    prequential (score a row, then learn from it), starting each time from the trained state."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector

    def score_history(self, history: FloatArray, ts_us: Sequence[int] | None = None) -> FloatArray:
        det = detector_from_state(self.detector.state())  # the trained state stays as it is
        stamps = list(ts_us) if ts_us is not None else list(range(len(history)))
        rows = history.tolist()
        return np.array([score_and_update(det, int(t), r[0] if len(r) == 1 else r) for t, r in zip(stamps, rows, strict=True)],
                        dtype=np.float64)

    def to_bytes(self) -> bytes:
        return json.dumps(self.detector.state()).encode()

    def summary(self) -> dict[str, Any]:
        return {"detector": self.detector.kind, "threshold": self.detector.threshold}


def _build_detector(kind: ModelKind, params: Mapping[str, Any], n_inputs: int) -> Detector:
    if kind in (ModelKind.SEASONAL_MEDIAN, ModelKind.WINDOWED_GAUSSIAN) and n_inputs != 1:
        raise InvalidInput(f"a {kind.value} model takes exactly one input, not {n_inputs}")
    if kind is ModelKind.PCA_T2Q and n_inputs < 2:
        raise InvalidInput("a pca_t2q model needs two or more inputs")
    try:
        if kind is ModelKind.SEASONAL_MEDIAN:
            return SeasonalMedianDetector(**params)
        if kind is ModelKind.WINDOWED_GAUSSIAN:
            return WindowedGaussianDetector(**params)
        if kind is ModelKind.HALF_SPACE_TREES:
            return HalfSpaceTrees(n_inputs, **params)
        return PcaT2QDetector(n_inputs, **params)
    except TypeError as exc:
        raise InvalidInput(f"bad {kind.value} parameters: {exc}") from None


def _train_detector(kind: ModelKind, params: Mapping[str, Any], histories: Sequence[FloatArray],
                    stamps: Sequence[Sequence[int]] | None) -> DetectorScorer:
    det = _build_detector(kind, params, histories[0].shape[1])
    if sum(len(h) for h in histories) < 10:
        raise InvalidInput("too little normal history to train on: need at least 10 rows")
    if isinstance(det, PcaT2QDetector):
        det.fit(np.vstack(histories).tolist())
    scores: list[float] = []
    for i, h in enumerate(histories):
        ts = list(stamps[i]) if stamps is not None else list(range(len(h)))
        rows = h.tolist()
        out = [score_and_update(det, int(t), r[0] if len(r) == 1 else r) for t, r in zip(ts, rows, strict=True)]
        scores.extend(out[len(out) // 4:])  # past the warm-up of each machine
    det.learn_threshold(scores)
    return DetectorScorer(det)


def _check(histories: Sequence[FloatArray], width: int) -> None:
    if not histories:
        raise InvalidInput("no history to train on")
    for h in histories:
        if h.ndim != 2 or h.shape[1] != width:
            raise InvalidInput(f"each history needs {width} column(s), one per input")


def train(kind: ModelKind, params: Mapping[str, Any], histories: Sequence[FloatArray],
          inputs: Sequence[str], stamps: Sequence[Sequence[int]] | None = None) -> Scorer:
    """Train a model of ``kind`` (with its ``params``) on ``histories`` (rows taken at ``stamps``)."""
    _check(histories, len(inputs))
    validate_params(kind, params, len(inputs))
    if kind is ModelKind.RUL:
        return RulScorer(RulModel.fit(histories, inputs, RulConfig.from_dict(params)))
    if kind is not ModelKind.ZSCORE:
        return _train_detector(kind, params, histories, stamps)
    det = ZScoreDetector(len(inputs), float(params.get("quantile", 0.995)))
    rows = np.vstack(histories)
    if rows.shape[0] < 10:
        raise InvalidInput(f"too little normal history to train on: {rows.shape[0]} rows, need 10")
    for row in rows.tolist():
        det.update(row)
    det.threshold = float(np.quantile(det.score_history(rows), det.quantile))
    return det


def validate_params(kind: ModelKind, params: Mapping[str, Any], n_inputs: int) -> None:
    """Refuse parameters (and numbers of inputs) a model of ``kind`` would refuse at training."""
    if kind is ModelKind.RUL:
        RulConfig.from_dict(params)
        return
    if kind is not ModelKind.ZSCORE:
        _build_detector(kind, params, n_inputs)
        return
    unknown = sorted(set(params) - {"quantile"})
    if unknown:
        raise InvalidInput(f"unknown zscore parameter(s): {', '.join(unknown)}; known: quantile")
    q = params.get("quantile", 0.995)
    if isinstance(q, bool) or not isinstance(q, int | float):
        raise InvalidInput("zscore parameter 'quantile' must be a number")
    ZScoreDetector(1, float(q))


def load(kind: ModelKind, blob: bytes) -> Scorer:
    if kind is ModelKind.RUL:
        return RulScorer(RulModel.from_bytes(blob))
    if kind is not ModelKind.ZSCORE:
        try:
            state = json.loads(blob)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidInput(f"not a serialised {kind.value} detector: {exc}") from exc
        return DetectorScorer(detector_from_state(state))
    return cast(Scorer, ZScoreDetector.from_bytes(blob))
