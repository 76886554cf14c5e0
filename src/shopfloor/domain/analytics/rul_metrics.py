"""Scoring a remaining-useful-life prediction: RMSE and the PHM08 challenge score.

PHM08 (Saxena et al., 2008) punishes late predictions (predicted RUL above the truth, d > 0) more
than early ones: each engine adds ``exp(-d/13) - 1`` when early and ``exp(d/10) - 1`` when late,
where ``d = predicted - true``. Lower is better for both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from shopfloor.domain.errors import InvalidInput


def _pairs(true: Sequence[float], predicted: Sequence[float]) -> list[tuple[float, float]]:
    if len(true) != len(predicted):
        raise InvalidInput(f"{len(true)} true values but {len(predicted)} predictions")
    if not true:
        raise InvalidInput("nothing to score")
    return [(float(t), float(p)) for t, p in zip(true, predicted, strict=True)]


def rmse(true: Sequence[float], predicted: Sequence[float]) -> float:
    """Root mean squared error of the predictions."""
    pairs = _pairs(true, predicted)
    return math.sqrt(sum((p - t) ** 2 for t, p in pairs) / len(pairs))


def phm08_term(true: float, predicted: float) -> float:
    """One engine's share of the PHM08 score."""
    d = predicted - true
    return math.exp(-d / 13.0) - 1.0 if d < 0 else math.exp(d / 10.0) - 1.0


def phm08_score(true: Sequence[float], predicted: Sequence[float]) -> float:
    """The PHM08 score: the sum of every engine's term (not a mean)."""
    return sum(phm08_term(t, p) for t, p in _pairs(true, predicted))
