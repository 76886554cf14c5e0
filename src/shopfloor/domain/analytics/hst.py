"""Half-Space Trees (Tan, Ting and Liu, 2011): an online isolation-style detector, in numpy.

Each of ``n_trees`` random trees halves the feature space ``height`` times, each split on a random
feature at the middle of the node's range. A tree counts how many of the last ``window_size``
observations fell into each node (the reference mass); an observation in a node that held little
mass, high in the tree, is unusual. Masses are counted over a window and swapped in when the window
is full, so the model follows slow drift and forgets old behaviour.

Features are scaled to [0, 1] by limits: given, or taken from the first ``window_size`` observations
(with a 10 % margin). That first window is also the first reference mass; it scores 0.

Score scale: ``1 - mean over trees of log2(1 + m · 2^d) / log2(1 + window_size · 2^height)``,
where ``m`` is the reference mass of the deepest node reached with at least ``size_limit`` mass and
``d`` its depth: 0 for a point where the whole window sat in one leaf, 1 for a point in empty space.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from shopfloor.domain.analytics.detector import Observation, State, as_vector, quantile_threshold, register
from shopfloor.domain.errors import InvalidInput


class HalfSpaceTrees:
    kind = "half_space_trees"

    def __init__(self, n_features: int = 1, *, n_trees: int = 25, height: int = 10, window_size: int = 250,
                 seed: int = 42, limits: Sequence[tuple[float, float]] | None = None, threshold: float = 0.8) -> None:
        if n_features < 1 or n_trees < 1 or not 1 <= height <= 20 or window_size < 2:
            raise InvalidInput("half_space_trees: n_features, n_trees >= 1, 1 <= height <= 20, window_size >= 2")
        if limits is not None and len(limits) != n_features:
            raise InvalidInput(f"half_space_trees: {len(limits)} limits for {n_features} features")
        self.n_features = n_features
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.size_limit = max(1.0, 0.1 * window_size)
        self.seed = seed
        self.threshold = threshold
        self._lo: np.ndarray[Any, np.dtype[np.float64]] | None = None
        self._span: np.ndarray[Any, np.dtype[np.float64]] | None = None
        self._buffer: list[list[float]] = []
        n_nodes = 2 ** (height + 1) - 1
        self._feat = np.zeros((n_trees, n_nodes), dtype=np.int64)
        self._split = np.zeros((n_trees, n_nodes))
        self._ref = np.zeros((n_trees, n_nodes))
        self._latest = np.zeros((n_trees, n_nodes))
        self._count = 0  # observations counted into the latest window
        self._ready = False
        self._build_trees()
        if limits is not None:
            self._set_limits([lo for lo, _ in limits], [hi for _, hi in limits])

    def _build_trees(self) -> None:
        rng = np.random.default_rng(self.seed)
        n_internal = 2 ** self.height - 1
        for t in range(self.n_trees):
            s = rng.uniform(0.0, 1.0, self.n_features)
            half = 2.0 * np.maximum(s, 1.0 - s)
            lo = np.empty((2 * n_internal + 1, self.n_features))
            hi = np.empty_like(lo)
            lo[0], hi[0] = s - half, s + half
            feats = rng.integers(0, self.n_features, n_internal)
            for node in range(n_internal):
                q = int(feats[node])
                mid = 0.5 * (lo[node, q] + hi[node, q])
                self._feat[t, node], self._split[t, node] = q, mid
                left, right = 2 * node + 1, 2 * node + 2
                lo[left], hi[left], lo[right], hi[right] = lo[node], hi[node], lo[node], hi[node]
                hi[left, q] = mid
                lo[right, q] = mid

    def _set_limits(self, lo: Sequence[float], hi: Sequence[float]) -> None:
        lo_a, hi_a = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
        span = hi_a - lo_a
        pad = np.where(span > 0, 0.1 * span, 0.5 * np.maximum(np.abs(lo_a), 1.0))
        self._lo = lo_a - pad
        self._span = span + 2 * pad

    def _scaled(self, vec: list[float]) -> np.ndarray[Any, np.dtype[np.float64]]:
        assert self._lo is not None and self._span is not None
        out: np.ndarray[Any, np.dtype[np.float64]] = (np.asarray(vec) - self._lo) / self._span
        return out

    def _path(self, z: np.ndarray[Any, np.dtype[np.float64]]) -> np.ndarray[Any, np.dtype[np.int64]]:
        """Node index per tree and depth: shape (height + 1, n_trees)."""
        rows = np.arange(self.n_trees)
        node = np.zeros(self.n_trees, dtype=np.int64)
        path = np.empty((self.height + 1, self.n_trees), dtype=np.int64)
        path[0] = node
        for d in range(self.height):
            go_right = z[self._feat[rows, node]] >= self._split[rows, node]
            node = 2 * node + 1 + go_right
            path[d + 1] = node
        return path

    def score(self, ts_us: int, x: Observation) -> float:
        vec = as_vector(x, self.n_features)
        if not all(math.isfinite(v) for v in vec):
            return 1.0
        if not self._ready:
            return 0.0
        path = self._path(self._scaled(vec))
        mass = self._ref[np.arange(self.n_trees)[None, :], path]  # (height + 1, n_trees)
        enough = mass >= self.size_limit
        depth = np.where(enough.any(axis=0), enough.shape[0] - 1 - np.argmax(enough[::-1], axis=0), 0)
        m = mass[depth, np.arange(self.n_trees)]
        raw = np.log2(1.0 + m * 2.0 ** depth) / math.log2(1.0 + self.window_size * 2.0 ** self.height)
        return float(np.clip(1.0 - raw.mean(), 0.0, 1.0))

    def update(self, ts_us: int, x: Observation) -> None:
        vec = as_vector(x, self.n_features)
        if not all(math.isfinite(v) for v in vec):
            return
        if self._lo is None:
            self._buffer.append(vec)
            if len(self._buffer) < self.window_size:
                return
            arr = np.asarray(self._buffer)
            self._set_limits(list(arr.min(axis=0)), list(arr.max(axis=0)))
            pending, self._buffer = self._buffer, []
            for v in pending:
                self._count_in(v)
            return
        self._count_in(vec)

    def _count_in(self, vec: list[float]) -> None:
        path = self._path(self._scaled(vec))
        np.add.at(self._latest, (np.broadcast_to(np.arange(self.n_trees), path.shape), path), 1.0)
        self._count += 1
        if self._count >= self.window_size:
            self._ref, self._latest = self._latest, np.zeros_like(self._latest)
            self._count = 0
            self._ready = True

    def learn_threshold(self, normal_scores: Sequence[float], quantile: float = 0.99, margin: float = 1.05) -> float:
        self.threshold = quantile_threshold(normal_scores, quantile, margin)
        return self.threshold

    def is_anomaly(self, score: float) -> bool:
        return score >= self.threshold

    def state(self) -> State:
        limits = None
        if self._lo is not None and self._span is not None:
            limits = [[float(a), float(a + s)] for a, s in zip(self._lo, self._span, strict=True)]
        return {"kind": self.kind, "n_features": self.n_features, "n_trees": self.n_trees, "height": self.height,
                "window_size": self.window_size, "seed": self.seed, "threshold": self.threshold,
                "scaled_limits": limits, "buffer": self._buffer, "count": self._count, "ready": self._ready,
                "ref": _sparse(self._ref), "latest": _sparse(self._latest)}

    @classmethod
    def from_state(cls, state: State) -> HalfSpaceTrees:
        det = cls(int(state["n_features"]), n_trees=int(state["n_trees"]), height=int(state["height"]),
                  window_size=int(state["window_size"]), seed=int(state["seed"]), threshold=float(state["threshold"]))
        if state["scaled_limits"] is not None:  # already padded: set as they are
            det._lo = np.asarray([lo for lo, _ in state["scaled_limits"]], dtype=float)
            det._span = np.asarray([hi - lo for lo, hi in state["scaled_limits"]], dtype=float)
        det._buffer = [[float(v) for v in row] for row in state["buffer"]]
        det._count, det._ready = int(state["count"]), bool(state["ready"])
        det._ref = _dense(state["ref"], det._ref.shape)
        det._latest = _dense(state["latest"], det._latest.shape)
        return det


def _sparse(a: np.ndarray[Any, np.dtype[np.float64]]) -> list[list[int]]:
    """Non-zero masses as [tree, node, mass] triples (most nodes are empty)."""
    t, n = np.nonzero(a)
    return [[int(i), int(j), int(a[i, j])] for i, j in zip(t, n, strict=True)]


def _dense(triples: Sequence[Sequence[int]], shape: tuple[int, ...]) -> np.ndarray[Any, np.dtype[np.float64]]:
    a = np.zeros(shape)
    for t, n, m in triples:
        a[int(t), int(n)] = float(m)
    return a


register(HalfSpaceTrees.kind, HalfSpaceTrees.from_state)
