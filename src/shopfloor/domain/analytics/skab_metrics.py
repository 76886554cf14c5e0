"""SKAB's point-wise metrics: F1, false alarm rate FP/(FP+TN) and missing alarm rate FN/(FN+TP)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shopfloor.domain.errors import InvalidInput


@dataclass(frozen=True)
class BinaryMetrics:
    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp else 0.0

    @property
    def far(self) -> float:
        """False alarm rate, FP / (FP + TN), as a fraction."""
        return self.fp / (self.fp + self.tn) if self.fp + self.tn else 0.0

    @property
    def mar(self) -> float:
        """Missing alarm rate, FN / (FN + TP), as a fraction."""
        return self.fn / (self.fn + self.tp) if self.fn + self.tp else 0.0


def binary_metrics(truth: Sequence[bool | int | float], predicted: Sequence[bool | int | float]) -> BinaryMetrics:
    """Count the confusion matrix of two equally long 0/1 sequences."""
    if len(truth) != len(predicted):
        raise InvalidInput(f"{len(truth)} labels but {len(predicted)} predictions")
    tp = fp = tn = fn = 0
    for t, p in zip(truth, predicted, strict=True):
        if p:
            if t:
                tp += 1
            else:
                fp += 1
        elif t:
            fn += 1
        else:
            tn += 1
    return BinaryMetrics(tp, fp, tn, fn)
