"""Asset types, the asset tree, series, latest values and history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from shopfloor.api.deps import Ctx, Services
from shopfloor.api.schemas import (
    AssetIn,
    AssetLatestOut,
    AssetOut,
    AssetPatch,
    AssetTypeIn,
    AssetTypeOut,
    BucketOut,
    HistoryOut,
    LatestOut,
    SampleOut,
    SeriesOut,
)
from shopfloor.api.timeparams import iso, parse_param
from shopfloor.domain.assets import Level, ValueType
from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.query import Agg
from shopfloor.domain.timeutil import now_us
from shopfloor.services.registry import measurement_defs

router = APIRouter(tags=["assets"])


@router.get("/asset-types", response_model=list[AssetTypeOut])
def list_asset_types(ctx: Ctx, svc: Services) -> list[AssetTypeOut]:
    return [AssetTypeOut.of(t) for t in svc.registry.list_asset_types(ctx)]


@router.put("/asset-types/{name}", response_model=AssetTypeOut)
def put_asset_type(name: str, body: AssetTypeIn, ctx: Ctx, svc: Services) -> AssetTypeOut:
    """Create or replace an asset type (engineer)."""
    if body.name != name:
        raise InvalidInput(f"the body names type {body.name!r} but the URL {name!r}")
    at = svc.registry.put_asset_type(ctx, name, description=body.description, attributes=body.attributes,
                                     measurements=measurement_defs([m.model_dump() for m in body.measurements]),
                                     events=body.events)
    svc.invalidate()
    return AssetTypeOut.of(at)


@router.get("/asset-types/{name}", response_model=AssetTypeOut)
def get_asset_type(name: str, ctx: Ctx, svc: Services) -> AssetTypeOut:
    return AssetTypeOut.of(svc.registry.asset_type(ctx, name))


@router.delete("/asset-types/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_asset_type(name: str, ctx: Ctx, svc: Services) -> None:
    svc.registry.delete_asset_type(ctx, name)
    svc.invalidate()


@router.get("/assets", response_model=list[AssetOut])
def list_assets(ctx: Ctx, svc: Services, level: Level | None = None,
                parent_id: int | None = None) -> list[AssetOut]:
    """The asset tree, optionally one level (``?level=machine``) or the children of one asset."""
    return [AssetOut.of(a) for a in svc.registry.list_assets(ctx, level, parent_id)]


@router.post("/assets", status_code=status.HTTP_201_CREATED, response_model=AssetOut)
def create_asset(body: AssetIn, ctx: Ctx, svc: Services) -> AssetOut:
    asset = svc.registry.create_asset(ctx, Level(body.level), body.name, parent_id=body.parent_id,
                                      display_name=body.display_name, type_name=body.type,
                                      attributes=body.attributes, timezone=body.timezone)
    svc.invalidate()
    return AssetOut.of(asset)


@router.get("/assets/{asset_id}", response_model=AssetOut)
def get_asset(asset_id: int, ctx: Ctx, svc: Services) -> AssetOut:
    return AssetOut.of(svc.registry.asset(ctx, asset_id))


@router.patch("/assets/{asset_id}", response_model=AssetOut)
def patch_asset(asset_id: int, body: AssetPatch, ctx: Ctx, svc: Services) -> AssetOut:
    asset = svc.registry.update_asset(ctx, asset_id, display_name=body.display_name, type_name=body.type,
                                      attributes=body.attributes, timezone=body.timezone)
    svc.invalidate()
    return AssetOut.of(asset)


@router.delete("/assets/{asset_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_asset(asset_id: int, ctx: Ctx, svc: Services) -> None:
    svc.registry.delete_asset(ctx, asset_id)
    svc.invalidate()


@router.get("/assets/{asset_id}/series", response_model=list[SeriesOut])
def asset_series(asset_id: int, ctx: Ctx, svc: Services) -> list[SeriesOut]:
    return [SeriesOut.of(s) for s in svc.registry.series_of(ctx, asset_id)]


@router.get("/assets/{asset_id}/latest", response_model=AssetLatestOut)
def asset_latest(asset_id: int, ctx: Ctx, svc: Services) -> AssetLatestOut:
    """The newest value of every measurement, the current state and the online status."""
    latest = svc.history.latest(ctx, asset_id)
    values = []
    for lv in latest.values:
        s, v = lv.series, lv.sample
        value: float | str | bool | None = None
        if v is not None:
            if s.type is ValueType.STRING:
                value = v.text
            elif s.type is ValueType.BOOLEAN and v.value is not None:
                value = v.value != 0
            else:
                value = v.value
        values.append(LatestOut(measurement=s.measurement, series_id=s.id, unit=s.unit,
                                ts=iso(v.ts_us) if v else None, value=value,
                                quality=v.quality if v else None))
    st = latest.state
    return AssetLatestOut(asset=AssetOut.of(latest.asset), state=st.type if st else None,
                          state_reason=st.data.get("reason") if st else None,
                          state_since=iso(st.ts_us) if st else None,
                          status=latest.status.type if latest.status else None, values=values)


@router.get("/series/{series_id}/history", response_model=HistoryOut)
def series_history(
    series_id: int, ctx: Ctx, svc: Services,
    from_: Annotated[str | None, Query(alias="from", description="RFC 3339 or epoch ms; default 1 h ago")] = None,
    to: Annotated[str | None, Query(description="RFC 3339 or epoch ms; default now")] = None,
    interval: Annotated[str | None, Query(description="bucket size: 10s, 5m, 1h, 1d, 1w, 1mo; "
                                                      "none for raw samples")] = None,
    agg: Agg = Agg.AVG,
    staleness: Annotated[int | None, Query(ge=1, le=31 * 86400,
                                           description="seconds a value holds for twa")] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> HistoryOut:
    """Raw samples (no ``interval``) or aggregates per bucket; days follow the site's time zone."""
    end = parse_param(to, "to", now_us())
    start = parse_param(from_, "from", end - 3_600_000_000)
    series = SeriesOut.of(svc.registry.series(ctx, series_id))
    if interval is None:
        pts = svc.history.raw(ctx, series_id, start, end, limit)
        return HistoryOut(series=series, agg=None, interval=None,
                          points=[SampleOut(ts=iso(p.ts_us), value=p.value, text=p.text, quality=p.quality)
                                  for p in pts])
    kwargs = {"staleness_us": staleness * 1_000_000} if staleness else {}
    rows = svc.history.aggregate(ctx, series_id, start, end, interval, agg, **kwargs)
    return HistoryOut(series=series, agg=agg.value, interval=interval,
                      buckets=[BucketOut(start=iso(r.start_us), end=iso(r.end_us), value=r.value, count=r.count)
                               for r in rows])
