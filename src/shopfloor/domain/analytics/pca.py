"""Multivariate PCA detector: Hotelling's T² and the Q statistic (SPE), fitted on a normal period.

For a machine with several sensors that move together (pump current, pressure and flow), the
normal period is standardised per sensor and reduced to the principal components that explain
``variance`` of it (or ``n_components``). T² measures how far an observation lies inside the
model plane, in units of each component's normal spread; Q (the squared prediction error) how far
it lies off the plane, i.e. whether the sensors have stopped moving together. Each statistic gets
a control limit from the normal period: its ``limit_quantile`` quantile there.

``update`` collects the first ``fit_rows`` observations and fits on them (or call ``fit``); the
model is then frozen, because it describes the normal period, and ``update`` does nothing.

Score scale: ``r / (1 + r)`` with ``r = max(T²/T²_limit, Q/Q_limit)``, so 0.5 is exactly a
control limit and the default threshold; 0 while not yet fitted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np

from shopfloor.domain.analytics.detector import Observation, State, as_vector, quantile_threshold, register
from shopfloor.domain.errors import InvalidInput

Matrix: TypeAlias = np.ndarray[Any, np.dtype[np.float64]]


class PcaT2QDetector:
    kind = "pca_t2q"

    def __init__(self, n_features: int, *, variance: float = 0.9, n_components: int | None = None,
                 fit_rows: int = 400, limit_quantile: float = 0.99, threshold: float = 0.5) -> None:
        if n_features < 2:
            raise InvalidInput("pca_t2q needs at least two features (use seasonal_median for one)")
        if not 0.0 < variance <= 1.0 or not 0.0 < limit_quantile < 1.0:
            raise InvalidInput("pca_t2q: variance in (0, 1] and limit_quantile in (0, 1)")
        if n_components is not None and not 1 <= n_components <= n_features:
            raise InvalidInput(f"pca_t2q: n_components must be in 1..{n_features}")
        if fit_rows < n_features + 2:
            raise InvalidInput(f"pca_t2q: fit_rows must be at least {n_features + 2}")
        self.n_features = n_features
        self.variance = variance
        self.n_components = n_components
        self.fit_rows = fit_rows
        self.limit_quantile = limit_quantile
        self.threshold = threshold
        self._buffer: list[list[float]] = []
        self.mean: Matrix | None = None
        self.scale: Matrix | None = None
        self.components: Matrix | None = None  # (k, n_features)
        self.eigenvalues: Matrix | None = None  # (k,)
        self.t2_limit = math.nan
        self.q_limit = math.nan

    @property
    def fitted(self) -> bool:
        return self.components is not None

    def fit(self, rows: Sequence[Sequence[float]]) -> PcaT2QDetector:
        """Fit on observations of a normal period (rows of ``n_features`` values)."""
        x = np.asarray([as_vector(r, self.n_features) for r in rows], dtype=float)
        x = x[np.isfinite(x).all(axis=1)]
        if len(x) < self.n_features + 2:
            raise InvalidInput(f"pca_t2q: fitting needs at least {self.n_features + 2} finite rows, got {len(x)}")
        self.mean = x.mean(axis=0)
        std = x.std(axis=0, ddof=1)
        self.scale = np.where(std > 1e-12 * np.maximum(np.abs(self.mean), 1.0), std, 1.0)
        z = (x - self.mean) / self.scale
        _, sing, vt = np.linalg.svd(z, full_matrices=False)
        eig = sing**2 / (len(z) - 1)
        if self.n_components is not None:
            k = self.n_components
        else:
            share = np.cumsum(eig) / max(float(eig.sum()), 1e-300)
            k = int(np.searchsorted(share, self.variance - 1e-12) + 1)
        k = max(1, min(k, self.n_features - 1))  # keep a residual space so Q means something
        self.components, self.eigenvalues = vt[:k], np.maximum(eig[:k], 1e-12)
        t2, q = self._stats(z)
        self.t2_limit = max(float(np.quantile(t2, self.limit_quantile)), 1e-12)
        self.q_limit = max(float(np.quantile(q, self.limit_quantile)), 1e-12)
        self._buffer = []
        return self

    def _stats(self, z: Matrix) -> tuple[Matrix, Matrix]:
        assert self.components is not None and self.eigenvalues is not None
        t = z @ self.components.T
        t2 = (t**2 / self.eigenvalues).sum(axis=1)
        resid = z - t @ self.components
        return t2, (resid**2).sum(axis=1)

    def statistics(self, x: Observation) -> tuple[float, float]:
        """(T², Q) of one observation; NaN while not fitted."""
        vec = as_vector(x, self.n_features)
        if self.mean is None or self.scale is None:
            return math.nan, math.nan
        t2, q = self._stats(((np.asarray(vec) - self.mean) / self.scale)[None, :])
        return float(t2[0]), float(q[0])

    def score(self, ts_us: int, x: Observation) -> float:
        vec = as_vector(x, self.n_features)
        if not all(math.isfinite(v) for v in vec):
            return 1.0
        if not self.fitted:
            return 0.0
        t2, q = self.statistics(vec)
        r = max(t2 / self.t2_limit, q / self.q_limit)
        return r / (1.0 + r)

    def update(self, ts_us: int, x: Observation) -> None:
        if self.fitted:
            return
        vec = as_vector(x, self.n_features)
        if all(math.isfinite(v) for v in vec):
            self._buffer.append(vec)
        if len(self._buffer) >= self.fit_rows:
            self.fit(self._buffer)

    def learn_threshold(self, normal_scores: Sequence[float], quantile: float = 0.99, margin: float = 1.0) -> float:
        self.threshold = quantile_threshold(normal_scores, quantile, margin)
        return self.threshold

    def is_anomaly(self, score: float) -> bool:
        return score >= self.threshold

    def state(self) -> State:
        def arr(a: Matrix | None) -> list[Any] | None:
            return None if a is None else a.tolist()

        return {"kind": self.kind, "n_features": self.n_features, "variance": self.variance,
                "n_components": self.n_components, "fit_rows": self.fit_rows,
                "limit_quantile": self.limit_quantile, "threshold": self.threshold, "buffer": self._buffer,
                "mean": arr(self.mean), "scale": arr(self.scale), "components": arr(self.components),
                "eigenvalues": arr(self.eigenvalues), "t2_limit": self.t2_limit, "q_limit": self.q_limit}

    @classmethod
    def from_state(cls, state: State) -> PcaT2QDetector:
        det = cls(int(state["n_features"]), variance=float(state["variance"]), n_components=state["n_components"],
                  fit_rows=int(state["fit_rows"]), limit_quantile=float(state["limit_quantile"]),
                  threshold=float(state["threshold"]))
        det._buffer = [[float(v) for v in row] for row in state["buffer"]]
        if state["components"] is not None:
            det.mean = np.asarray(state["mean"], dtype=float)
            det.scale = np.asarray(state["scale"], dtype=float)
            det.components = np.asarray(state["components"], dtype=float)
            det.eigenvalues = np.asarray(state["eigenvalues"], dtype=float)
            det.t2_limit, det.q_limit = float(state["t2_limit"]), float(state["q_limit"])
        return det


register(PcaT2QDetector.kind, PcaT2QDetector.from_state)
