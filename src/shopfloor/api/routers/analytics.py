"""Analytics models: configure per asset type, train from stored history, score into series."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, status
from pydantic import BaseModel, ConfigDict, Field

from shopfloor.api.deps import Ctx, Services
from shopfloor.api.timeparams import iso, parse_param
from shopfloor.domain.analytics.models import AnalyticsModel
from shopfloor.domain.errors import ShopfloorError
from shopfloor.services.analytics import AnalyticsService, ScoreReport

router = APIRouter(tags=["analytics"])


class Unavailable(ShopfloorError):
    status = 503
    title = "Not available"


class ModelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    asset_type: str = Field(description="the asset type whose machines the model serves")
    inputs: list[str] = Field(description="numeric measurements of the type, in the model's column order")
    kind: str = Field(description="'rul' (remaining useful life) or 'zscore' (anomaly score)")
    params: dict[str, Any] = Field(default_factory=dict, description="settings of the kind (see docs/analytics-platform.md)")
    output: str | None = Field(None, description="the measurement the model writes [default: 'rul', or '<input>_anomaly']")
    description: str = ""


class TrainIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: str = Field(alias="from", description="start of the training period: RFC 3339 or epoch ms")
    to: str = Field(description="end of the training period (for RUL: the failure)")
    assets: list[int] | None = Field(None, description="machine ids [default: every machine of the type]")


class ScoreIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: str = Field(alias="from", description="start (for RUL: when the machine's current life began)")
    to: str | None = Field(None, description="end [default: now]")
    assets: list[int] | None = Field(None, description="machine ids [default: every machine of the type]")
    follow: bool = Field(True, description="keep scoring these machines' new data from 'from' on")


def _service(svc: Services) -> AnalyticsService:
    if svc.analytics is None:
        raise Unavailable("analytics is not configured on this server")
    return svc.analytics


def model_json(m: AnalyticsModel) -> dict[str, Any]:
    s = m.spec
    out: dict[str, Any] = {"name": s.name, "asset_type": s.asset_type, "inputs": list(s.inputs),
                           "kind": s.kind.value, "params": s.params, "output": s.output,
                           "description": s.description, "trained": None,
                           "following": {str(a): iso(t) for a, t in sorted(m.life_from_us.items())},
                           "scored_to": {str(a): iso(t) for a, t in sorted(m.scored_to_us.items())}}
    if m.trained is not None:
        t = m.trained
        out["trained"] = {"at": iso(t.trained_at_us), "from": iso(t.from_us), "to": iso(t.to_us),
                          "assets": list(t.asset_ids), "rows": t.rows, "bytes": len(t.blob), "summary": t.summary}
    return out


def report_json(r: ScoreReport) -> dict[str, Any]:
    return {"model": r.model, "output": r.output, "written": r.written,
            "assets": [{"asset_id": a.asset_id, "path": a.path, "rows": a.rows, "written": a.written,
                        "last_ts": None if a.last_ts_us is None else iso(a.last_ts_us), "last_value": a.last_value}
                       for a in r.assets]}


@router.get("/analytics/models")
def list_models(ctx: Ctx, svc: Services) -> list[dict[str, Any]]:
    """The tenant's analytics models, with their trained state."""
    return [model_json(m) for m in _service(svc).list_models(ctx)]


@router.put("/analytics/models/{name}")
def put_model(name: str, body: ModelIn, ctx: Ctx, svc: Services) -> dict[str, Any]:
    """Create or replace a model (engineer). Replacing drops its trained state. The output
    measurement is added to the asset type, so every machine of the type gets the series."""
    m = _service(svc).configure(ctx, name, asset_type=body.asset_type, inputs=body.inputs, kind=body.kind,
                                params=body.params, output=body.output, description=body.description)
    svc.invalidate()
    return model_json(m)


@router.get("/analytics/models/{name}")
def get_model(name: str, ctx: Ctx, svc: Services) -> dict[str, Any]:
    return model_json(_service(svc).model(ctx, name))


@router.delete("/analytics/models/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_model(name: str, ctx: Ctx, svc: Services) -> None:
    """Delete a model (its output series and their data stay)."""
    _service(svc).delete(ctx, name)


@router.post("/analytics/models/{name}/train")
def train_model(name: str, body: Annotated[TrainIn, Body()], ctx: Ctx, svc: Services) -> dict[str, Any]:
    """Train from the stored history of [from, to) (engineer). For RUL each machine's period is one
    life that ends in failure at 'to'; for a detector it is normal operation."""
    start, end = parse_param(body.from_, "from"), parse_param(body.to, "to")
    return model_json(_service(svc).train(ctx, name, start, end, body.assets))


@router.post("/analytics/models/{name}/score")
async def score_model(name: str, body: Annotated[ScoreIn, Body()], ctx: Ctx, svc: Services) -> dict[str, Any]:
    """Score [from, to) and store the outputs as the model's output series (engineer); with
    'follow', the server keeps scoring new data of these machines."""
    start = parse_param(body.from_, "from")
    end = parse_param(body.to, "to") if body.to else None
    report = await _service(svc).score(ctx, name, start, end, body.assets, body.follow)
    return report_json(report)
