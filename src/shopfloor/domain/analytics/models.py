"""An analytics model as the platform keeps it: what it computes for which asset type, and its
trained state.

A model belongs to one tenant and one asset type. It reads one or more of the type's measurements
(its *inputs*) and writes one derived measurement (its *output*: ``rul`` for remaining useful life,
``<measurement>_anomaly`` for an anomaly score) on every machine of the type, as an ordinary series
with rollups, so that a rule on the output series raises alarms.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.slugs import check_slug


class ModelKind(enum.StrEnum):
    RUL = "rul"  # remaining useful life (cycles) from degradation signals
    ZSCORE = "zscore"  # anomaly score: the largest |z| of the inputs against a normal period
    # the streaming detectors of docs/analytics.md (scores in [0, 1], threshold learned from normal data)
    SEASONAL_MEDIAN = "seasonal_median"  # one input: median/MAD per time of day
    WINDOWED_GAUSSIAN = "windowed_gaussian"  # one input: recent level against a trailing window
    HALF_SPACE_TREES = "half_space_trees"  # one or more inputs: online isolation
    PCA_T2Q = "pca_t2q"  # two or more inputs: PCA with Hotelling T² and Q, fitted on the normal period


@dataclass(frozen=True, slots=True)
class ModelSpec:
    tenant_id: int
    name: str
    asset_type: str
    inputs: tuple[str, ...]
    kind: ModelKind
    params: dict[str, Any] = field(default_factory=dict)
    output: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        check_slug(self.name, "model")
        check_slug(self.asset_type, "asset type")
        if not self.inputs:
            raise InvalidInput("a model needs at least one input measurement")
        if len(set(self.inputs)) != len(self.inputs):
            raise InvalidInput("a model's input measurements must be distinct")
        for m in self.inputs:
            check_slug(m, "measurement")
        check_slug(self.output, "output measurement")
        if self.output in self.inputs:
            raise InvalidInput(f"the output {self.output!r} cannot also be an input")


def default_output(kind: ModelKind, inputs: tuple[str, ...]) -> str:
    """``rul`` for RUL; ``<input>_anomaly`` for a one-input detector, ``anomaly`` for several."""
    if kind is ModelKind.RUL:
        return "rul"
    return f"{inputs[0]}_anomaly" if len(inputs) == 1 else "anomaly"


@dataclass(frozen=True, slots=True)
class TrainedState:
    """What training produced: the serialised model and how it was made."""

    blob: bytes
    trained_at_us: int
    from_us: int
    to_us: int
    asset_ids: tuple[int, ...]
    rows: int
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AnalyticsModel:
    spec: ModelSpec
    trained: TrainedState | None = None
    # scoring of incoming data: per asset, where its current history starts (a machine's life for
    # RUL) and the newest timestamp scored so far
    life_from_us: dict[int, int] = field(default_factory=dict)
    scored_to_us: dict[int, int] = field(default_factory=dict)
