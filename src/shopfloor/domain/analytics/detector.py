"""The streaming detector protocol shared by every anomaly detector, and its state registry.

A detector sees one observation at a time: ``score(ts_us, x)`` says how unusual ``x`` is at
``ts_us`` without learning from it, ``update(ts_us, x)`` learns from it. ``x`` is a feature vector
(a sequence of floats; univariate detectors also take a plain float). Scores are in [0, 1], higher
is more unusual; each detector documents what its scale means. ``learn_threshold`` sets the alarm
threshold from the scores of a normal period; ``is_anomaly`` compares a score with it.

``state()`` returns plain data (dicts, lists, floats, ints, strings) that ``json`` or ``msgspec``
encode as they are; ``detector_from_state`` rebuilds the same detector, which then scores exactly
as the original would.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from shopfloor.domain.errors import InvalidInput

Observation = float | Sequence[float]
State = dict[str, Any]


@runtime_checkable
class Detector(Protocol):
    """What rules, the platform and the benchmarks rely on."""

    kind: str
    threshold: float

    def score(self, ts_us: int, x: Observation) -> float:
        """How unusual ``x`` is at ``ts_us``, in [0, 1]; does not learn from it."""
        ...

    def update(self, ts_us: int, x: Observation) -> None:
        """Learn from ``x`` (observations arrive in time order)."""
        ...

    def learn_threshold(self, normal_scores: Sequence[float]) -> float:
        """Set and return the alarm threshold from the scores of a normal period."""
        ...

    def is_anomaly(self, score: float) -> bool:
        """Whether ``score`` is at or above the threshold."""
        ...

    def state(self) -> State:
        """Everything needed to rebuild this detector, as plain data with a ``kind`` key."""
        ...


def score_and_update(detector: Detector, ts_us: int, x: Observation) -> float:
    """The usual streaming step (prequential): score the observation first, then learn from it."""
    s = detector.score(ts_us, x)
    detector.update(ts_us, x)
    return s


def quantile_threshold(normal_scores: Sequence[float], quantile: float, margin: float) -> float:
    """``margin`` times the ``quantile`` of the normal scores, capped at 1; the rule detectors share."""
    if not 0.0 < quantile <= 1.0:
        raise InvalidInput(f"quantile must be in (0, 1], got {quantile}")
    finite = sorted(s for s in normal_scores if math.isfinite(s))
    if not finite:
        raise InvalidInput("learn_threshold needs at least one finite score from a normal period")
    pos = quantile * (len(finite) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(finite) - 1)
    q = finite[lo] + (finite[hi] - finite[lo]) * (pos - lo)
    return min(1.0, q * margin)


def as_vector(x: Observation, n: int | None = None) -> list[float]:
    """``x`` as a list of floats, checked for length ``n`` when given."""
    vec = [float(x)] if isinstance(x, int | float) else [float(v) for v in x]
    if n is not None and len(vec) != n:
        raise InvalidInput(f"expected {n} feature(s), got {len(vec)}")
    return vec


def as_scalar(x: Observation) -> float:
    """The single value of a univariate observation."""
    if isinstance(x, int | float):
        return float(x)
    if len(x) != 1:
        raise InvalidInput(f"this detector takes one value, got {len(x)}")
    return float(x[0])


_KINDS: dict[str, Callable[[State], Detector]] = {}


def register(kind: str, loader: Callable[[State], Detector]) -> None:
    """Make ``detector_from_state`` know how to rebuild detectors of ``kind``."""
    _KINDS[kind] = loader


def detector_from_state(state: State) -> Detector:
    """Rebuild a detector from what its ``state()`` returned."""
    kind = state.get("kind")
    if not isinstance(kind, str) or kind not in _KINDS:
        raise InvalidInput(f"unknown detector kind {kind!r}; known: {', '.join(sorted(_KINDS))}")
    return _KINDS[kind](state)
