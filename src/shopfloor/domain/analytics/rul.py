"""Remaining useful life from degradation signals: window features and a gradient-boosted model.

A *life* is the history of one machine from a fresh start to its failure: a 2-D array, one row per
cycle (oldest first), one column per signal. Its remaining useful life (RUL) after row ``i`` of a
life of ``n`` rows is ``n - 1 - i`` cycles (0 at the last cycle before failure, as in NASA's
C-MAPSS data). Training caps the target at ``RulConfig.cap`` (a machine far from failure looks
healthy, and nobody can tell 300 from 200 cycles left); predictions are at most about the cap.

Features after each cycle, per signal, over the cycles seen so far (shorter histories use what
there is): the mean of the last ``short_window`` cycles, the mean, standard deviation and
least-squares slope of the last ``window`` cycles, and the short mean minus the mean of the first
``baseline`` cycles (how far the machine has drifted from its own start); plus the number of cycles
seen. The regressor is LightGBM (CPU, deterministic with a fixed seed); a trained model serialises to
bytes (a JSON envelope holding LightGBM's own text format, no pickle) and back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, cast

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

from shopfloor.domain.errors import InvalidInput

FloatArray = npt.NDArray[np.float64]
FORMAT = "shopfloor-rul/1"
PER_SIGNAL = ("short_mean", "mean", "std", "slope", "drift")


@dataclass(frozen=True, slots=True)
class RulConfig:
    """Feature windows and regressor settings. The defaults are the benchmark configuration."""

    window: int = 30
    short_window: int = 5
    baseline: int = 10
    cap: float = 125.0
    rounds: int = 500
    learning_rate: float = 0.03
    leaves: int = 15
    min_leaf: int = 40
    feature_fraction: float = 0.8
    seed: int = 0
    threads: int = 1  # OpenMP threads; more than one is much slower on a busy machine

    def __post_init__(self) -> None:
        for name in ("window", "short_window", "baseline", "rounds", "leaves", "min_leaf", "threads"):
            if getattr(self, name) < 1:
                raise InvalidInput(f"RUL setting '{name}' must be at least 1")
        if self.window < 2:
            raise InvalidInput("RUL setting 'window' must be at least 2 (a slope needs two cycles)")
        if self.cap <= 0:
            raise InvalidInput("RUL setting 'cap' must be positive")
        if not 0 < self.learning_rate <= 1:
            raise InvalidInput("RUL setting 'learning_rate' must be in (0, 1]")
        if not 0 < self.feature_fraction <= 1:
            raise InvalidInput("RUL setting 'feature_fraction' must be in (0, 1]")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RulConfig:
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise InvalidInput(f"unknown RUL setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidInput(f"RUL setting '{key}' must be a number, not {value!r}")
            values[key] = float(value) if known[key] == "float" else int(value)
            if known[key] == "int" and values[key] != value:
                raise InvalidInput(f"RUL setting '{key}' must be a whole number, not {value!r}")
        return cls(**values)


def _check_life(history: FloatArray | Sequence[Sequence[float]], n_signals: int | None = None) -> FloatArray:
    x = np.asarray(history, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise InvalidInput(f"a history must be a non-empty 2-D array (cycles x signals), not shape {x.shape}")
    if n_signals is not None and x.shape[1] != n_signals:
        raise InvalidInput(f"the model expects {n_signals} signal(s), the history has {x.shape[1]}")
    if not np.isfinite(x).all():
        raise InvalidInput("a history holds a missing or non-finite value; fill or drop those cycles first")
    return x


def _window_sums(c: FloatArray, w: int) -> tuple[FloatArray, FloatArray]:
    """Sum of the rows in the trailing window ending at each row (at most w rows), and the count."""
    n = c.shape[0]
    cs = np.concatenate([np.zeros((1, *c.shape[1:])), np.cumsum(c, axis=0)], axis=0)
    hi = np.arange(1, n + 1)
    lo = np.maximum(hi - w, 0)
    return cs[hi] - cs[lo], (hi - lo).astype(np.float64)


def feature_names(signals: Sequence[str]) -> list[str]:
    return [f"{s}__{k}" for s in signals for k in PER_SIGNAL] + ["cycles"]


def features(history: FloatArray | Sequence[Sequence[float]], config: RulConfig) -> FloatArray:
    """One feature row after every cycle of ``history`` (cycles x signals), in ``feature_names`` order."""
    x = _check_life(history)
    n, k = x.shape
    x = x - x[0]  # centred on the first cycle: the running sums stay precise on long histories
    t = np.arange(n, dtype=np.float64)[:, None]
    short_sum, short_n = _window_sums(x, config.short_window)
    short_mean = short_sum / short_n[:, None]
    sx, m = _window_sums(x, config.window)
    sxx, _ = _window_sums(x * x, config.window)
    stx, _ = _window_sums(t * x, config.window)
    st, _ = _window_sums(t[:, 0], config.window)
    stt, _ = _window_sums(t[:, 0] ** 2, config.window)
    mean = sx / m[:, None]
    std = np.sqrt(np.maximum(sxx / m[:, None] - mean**2, 0.0))
    denom = (m * stt - st**2)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(denom > 0, (m[:, None] * stx - st[:, None] * sx) / np.where(denom > 0, denom, 1.0), 0.0)
    base_sum, base_n = _window_sums(x, n)  # expanding sums, then frozen after `baseline` cycles
    b = min(config.baseline, n)
    baseline = np.where((np.arange(n) < b)[:, None], base_sum / base_n[:, None], base_sum[b - 1] / b)
    drift = short_mean - baseline
    per_signal = np.stack([short_mean, mean, std, slope, drift], axis=2)  # n x k x 5
    cycles = np.arange(1, n + 1, dtype=np.float64)[:, None]
    return cast(FloatArray, np.hstack([per_signal.reshape(n, k * len(PER_SIGNAL)), cycles]))


def targets(n_cycles: int, cap: float) -> FloatArray:
    """The capped RUL after each cycle of a life of ``n_cycles`` cycles that ends in failure."""
    return cast(FloatArray, np.minimum(np.arange(n_cycles - 1, -1, -1, dtype=np.float64), cap))


def training_set(lives: Sequence[FloatArray | Sequence[Sequence[float]]],
                 config: RulConfig) -> tuple[FloatArray, FloatArray]:
    """Features and capped targets of every cycle of every life (each life ends in failure)."""
    if not lives:
        raise InvalidInput("no lives to train on")
    xs, ys = [], []
    width = None
    for life in lives:
        arr = _check_life(life, width)
        width = arr.shape[1]
        xs.append(features(arr, config))
        ys.append(targets(arr.shape[0], config.cap))
    return np.vstack(xs), np.concatenate(ys)


class RulModel:
    """A trained RUL regressor for a fixed list of signals."""

    def __init__(self, signals: Sequence[str], config: RulConfig, booster: Any) -> None:
        self.signals = tuple(signals)
        self.config = config
        self._booster = booster

    @classmethod
    def fit(cls, lives: Sequence[FloatArray | Sequence[Sequence[float]]], signals: Sequence[str],
            config: RulConfig | None = None) -> RulModel:
        """Train on run-to-failure lives (each a cycles x signals array ending at failure)."""
        config = config or RulConfig()
        if len(set(signals)) != len(signals) or not signals:
            raise InvalidInput("a RUL model needs one or more distinct signal names")
        x, y = training_set(lives, config)
        if x.shape[1] != len(feature_names(signals)):
            raise InvalidInput(f"{len(signals)} signal name(s) for histories of {(x.shape[1] - 1) // len(PER_SIGNAL)} signal(s)")
        if x.shape[0] < 2 * config.min_leaf:
            raise InvalidInput(f"too little history to train on: {x.shape[0]} cycles, need at least {2 * config.min_leaf}")
        params = {
            "objective": "regression",
            "learning_rate": config.learning_rate,
            "num_leaves": config.leaves,
            "min_data_in_leaf": config.min_leaf,
            "feature_fraction": config.feature_fraction,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "lambda_l2": 1.0,
            "seed": config.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": config.threads,
            "verbosity": -1,
        }
        data = lgb.Dataset(x, label=y, feature_name=[_safe(n) for n in feature_names(signals)],
                           free_raw_data=True)
        booster = lgb.train(params, data, num_boost_round=config.rounds)
        return cls(signals, config, booster)

    def predict(self, history: FloatArray | Sequence[Sequence[float]]) -> FloatArray:
        """The predicted RUL (cycles, >= 0) after every cycle of ``history``."""
        x = _check_life(history, len(self.signals))
        raw = np.asarray(self._booster.predict(features(x, self.config), num_threads=self.config.threads),
                         dtype=np.float64)
        return cast(FloatArray, np.maximum(raw, 0.0))

    def predict_last(self, history: FloatArray | Sequence[Sequence[float]]) -> float:
        """The predicted RUL after the last cycle of ``history``."""
        return float(self.predict(history)[-1])

    def to_bytes(self) -> bytes:
        envelope = {"format": FORMAT, "signals": list(self.signals), "config": self.config.to_dict(),
                    "booster": self._booster.model_to_string()}
        return json.dumps(envelope).encode()

    @classmethod
    def from_bytes(cls, blob: bytes) -> RulModel:
        try:
            envelope = json.loads(blob)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidInput(f"not a serialised RUL model: {exc}") from exc
        if not isinstance(envelope, dict) or envelope.get("format") != FORMAT:
            raise InvalidInput(f"not a serialised RUL model (format {FORMAT!r} expected)")
        try:
            booster = lgb.Booster(model_str=str(envelope["booster"]))
        except lgb.basic.LightGBMError as exc:
            raise InvalidInput(f"corrupt RUL model: {exc}") from exc
        return cls(list(envelope["signals"]), RulConfig.from_dict(envelope["config"]), booster)


def _safe(name: str) -> str:
    """LightGBM refuses some characters in feature names (JSON specials)."""
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in name)
