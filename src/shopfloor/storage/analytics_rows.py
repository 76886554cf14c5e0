"""Rows of the ``analytics_models`` table, shared by the DuckDB and PostgreSQL stores.

One row per (tenant, model): the configuration in plain columns and JSON text, the trained model
as bytes with its metadata as JSON text, and the scoring progress as JSON text (asset ids as keys).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from shopfloor.domain.analytics.models import AnalyticsModel, ModelKind, ModelSpec, TrainedState

COLUMNS = ("tenant_id, name, asset_type, inputs, kind, params, output, description, "
           "blob, trained, progress")


def spec_params(spec: ModelSpec) -> list[Any]:
    """Values of the first eight columns."""
    return [spec.tenant_id, spec.name, spec.asset_type, json.dumps(list(spec.inputs)), spec.kind.value,
            json.dumps(spec.params), spec.output, spec.description]


def trained_meta(t: TrainedState) -> str:
    return json.dumps({"trained_at_us": t.trained_at_us, "from_us": t.from_us, "to_us": t.to_us,
                       "asset_ids": list(t.asset_ids), "rows": t.rows, "summary": t.summary})


def progress_json(life_from_us: dict[int, int], scored_to_us: dict[int, int]) -> str:
    return json.dumps({"life_from_us": {str(k): v for k, v in life_from_us.items()},
                       "scored_to_us": {str(k): v for k, v in scored_to_us.items()}})


def parse_progress(text: str | None) -> tuple[dict[int, int], dict[int, int]]:
    if not text:
        return {}, {}
    d = json.loads(text)
    return ({int(k): int(v) for k, v in d.get("life_from_us", {}).items()},
            {int(k): int(v) for k, v in d.get("scored_to_us", {}).items()})


def from_row(row: Sequence[Any]) -> AnalyticsModel:
    tenant_id, name, asset_type, inputs, kind, params, output, description, blob, trained, progress = row
    spec = ModelSpec(int(tenant_id), name, asset_type, tuple(json.loads(inputs)), ModelKind(kind),
                     json.loads(params), output, description)
    state = None
    if blob is not None and trained is not None:
        m = json.loads(trained)
        state = TrainedState(bytes(blob), int(m["trained_at_us"]), int(m["from_us"]), int(m["to_us"]),
                             tuple(int(a) for a in m["asset_ids"]), int(m["rows"]), dict(m["summary"]))
    life_from, scored_to = parse_progress(progress)
    return AnalyticsModel(spec, state, life_from, scored_to)
