"""Factory KPIs and the lighthouse comparison; the sites' shift calendars and cost models they use."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Body, Query, status
from fastapi.responses import JSONResponse, Response

from shopfloor.api.deps import Ctx, Services
from shopfloor.api.errors import problem
from shopfloor.api.timeparams import iso, parse_param
from shopfloor.domain.errors import NotFound
from shopfloor.domain.kpi.formulas import ALIASES, KpiSet
from shopfloor.domain.kpi_config import calendar_to_obj, cost_model_to_obj
from shopfloor.services.kpis import ComparisonReport, Grouping, GroupResult, KpiReport

router = APIRouter(tags=["kpis"])

AssetParam = Annotated[str, Query(description="a machine or line: its id, or its path site/area/line[/machine]")]
TimeParam = Annotated[str, Query(description="RFC 3339 or epoch ms")]
_NOT_CONFIGURED = "KPIs are not configured on this server"
_JSON: dict[str, Any] = {"content": {"application/json": {}}}


@router.get("/kpis", responses={200: {"description": "Every KPI of the asset over the window, and per group with "
                                                     "``by``: see docs/kpis.md", **_JSON}})
def get_kpis(
    ctx: Ctx, svc: Services, asset: AssetParam,
    from_: Annotated[str, Query(alias="from", description="RFC 3339 or epoch ms")],
    to: Annotated[str | None, Query(description="RFC 3339 or epoch ms; default now")] = None,
    by: Annotated[Grouping | None, Query(description="group by shift, day, product or order")] = None,
) -> Response:
    """KPIs of a machine or a line over [from, to): availability, effectiveness (performance),
    quality ratio (quality), OEE, TEEP, the ISO 22400-2 set, downtime by reason, energy, labour and
    unit cost, each with its formula, inputs and coverage."""
    if svc.kpis is None:
        return problem(503, "Not available", _NOT_CONFIGURED)
    start = parse_param(from_, "from")
    end = parse_param(to, "to") if to else None
    return JSONResponse(report_json(svc.kpis.kpis(ctx, asset, start, end, by)))


@router.get("/kpis/compare", responses={200: {"description": "Baseline vs current: changes and contributions", **_JSON}})
def compare_kpis(
    ctx: Ctx, svc: Services, asset: AssetParam, baseline_from: TimeParam, baseline_to: TimeParam,
    current_from: TimeParam, current_to: TimeParam,
) -> Response:
    """The lighthouse comparison: every KPI's change (current / baseline - 1), and the exact LMDI
    contributions to the changes of unit cost (energy, labour, material, overhead, scrap), OEE (its
    factors), energy efficiency and labour productivity."""
    if svc.kpis is None:
        return problem(503, "Not available", _NOT_CONFIGURED)
    baseline = (parse_param(baseline_from, "baseline_from"), parse_param(baseline_to, "baseline_to"))
    current = (parse_param(current_from, "current_from"), parse_param(current_to, "current_to"))
    return JSONResponse(comparison_json(svc.kpis.compare(ctx, asset, baseline, current)))


# -- site configuration ----------------------------------------------------------------------------
@router.get("/sites/{site_id}/calendar")
def get_calendar(site_id: int, ctx: Ctx, svc: Services) -> dict[str, Any]:
    """The site's shift calendar (shifts with breaks, holidays, its IANA zone)."""
    cal = svc.plant.site_calendar(ctx, site_id)
    if cal is None:
        raise NotFound(f"site {site_id} has no shift calendar: every moment counts as scheduled")
    return calendar_to_obj(cal)


@router.put("/sites/{site_id}/calendar")
def put_calendar(site_id: int, body: Annotated[dict[str, Any], Body(examples=[{
        "timezone": "Europe/Berlin", "holidays": ["2026-12-25"],
        "shifts": [{"name": "early", "start": "06:00", "end": "14:00", "weekdays": [1, 2, 3, 4, 5],
                    "breaks": [{"start": "09:00", "end": "09:15"}]}]}])],
                 ctx: Ctx, svc: Services) -> dict[str, Any]:
    """Replace the site's shift calendar (engineer); the site's zone unless it names one."""
    cal = svc.plant.put_site_calendar(ctx, site_id, body)
    svc.invalidate()
    return calendar_to_obj(cal) if cal is not None else {}


@router.delete("/sites/{site_id}/calendar", status_code=status.HTTP_204_NO_CONTENT)
def delete_calendar(site_id: int, ctx: Ctx, svc: Services) -> None:
    """Remove the site's calendar (engineer): every moment then counts as scheduled."""
    svc.plant.put_site_calendar(ctx, site_id, None)
    svc.invalidate()


@router.get("/sites/{site_id}/cost-model")
def get_cost_model(site_id: int, ctx: Ctx, svc: Services) -> dict[str, Any]:
    """The site's cost model: time-of-use energy tariff, labour rate, material cost, overhead."""
    model = svc.plant.site_cost_model(ctx, site_id)
    if model is None:
        raise NotFound(f"site {site_id} has no cost model: unit cost is not computed")
    return cost_model_to_obj(model)


@router.put("/sites/{site_id}/cost-model")
def put_cost_model(site_id: int, body: Annotated[dict[str, Any], Body(examples=[{
        "currency": "EUR", "labour_rate": 38.0, "overhead_per_hour": 120.0, "material_cost": {"housing-a": 2.2},
        "tariff": {"default_name": "off_peak", "default_price": 0.18,
                   "periods": [{"name": "peak", "price": 0.3, "start": "08:00", "end": "20:00",
                                "weekdays": [1, 2, 3, 4, 5]}]}}])],
                   ctx: Ctx, svc: Services) -> dict[str, Any]:
    """Replace the site's cost model (engineer); the tariff takes the site's zone unless it names one."""
    model = svc.plant.put_site_cost_model(ctx, site_id, body)
    svc.invalidate()
    return cost_model_to_obj(model) if model is not None else {}


@router.delete("/sites/{site_id}/cost-model", status_code=status.HTTP_204_NO_CONTENT)
def delete_cost_model(site_id: int, ctx: Ctx, svc: Services) -> None:
    """Remove the site's cost model (engineer)."""
    svc.plant.put_site_cost_model(ctx, site_id, None)
    svc.invalidate()


# -- JSON ------------------------------------------------------------------------------------------
def kpis_json(kpis: KpiSet) -> dict[str, Any]:
    """Every KPI by key, with the aliases (``performance``, ``quality``) as keys of their own."""
    out: dict[str, Any] = {key: msgspec.to_builtins(k) for key, k in kpis.kpis.items()}
    for alias, key in ALIASES.items():
        if key in out:
            out[alias] = out[key]
    return out


def group_json(g: GroupResult) -> dict[str, Any]:
    out: dict[str, Any] = {"from": iso(g.start_us), "to": iso(g.end_us), "coverage": g.coverage,
                           "kpis": kpis_json(g.kpis), "downtime": msgspec.to_builtins(g.downtime)}
    if len(g.windows) > 1:
        out["windows"] = [[iso(a), iso(b)] for a, b in g.windows]
    if g.cost is not None:
        out["cost"] = {**msgspec.to_builtins(g.cost), "total": g.cost.total, "unit_cost": g.cost.unit_cost}
    if g.line is not None:
        out["line"] = msgspec.to_builtins(g.line)
        out["machines"] = msgspec.to_builtins(g.machines)
    return out


def report_json(r: KpiReport) -> dict[str, Any]:
    return {
        "asset": msgspec.to_builtins(r.asset), "by": r.by.value if r.by else None, "currency": r.currency,
        **group_json(r.total),
        "groups": [{"key": g.key, "label": g.label, **group_json(g)} for g in r.groups],
    }


def comparison_json(r: ComparisonReport) -> dict[str, Any]:
    c = r.comparison
    return {
        "asset": msgspec.to_builtins(r.asset), "currency": r.currency,
        "baseline": group_json(r.baseline), "current": group_json(r.current),
        "changes": msgspec.to_builtins(c.changes),
        "unit_cost": msgspec.to_builtins(c.unit_cost), "oee": msgspec.to_builtins(c.oee),
        "energy_efficiency": msgspec.to_builtins(c.energy_efficiency),
        "labour_productivity": msgspec.to_builtins(c.labour_productivity),
    }
