"""Events, dead letters and ingest statistics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from shopfloor.api.deps import Ctx, Services
from shopfloor.api.schemas import DeadLetterOut, EventOut, StatsOut
from shopfloor.api.timeparams import iso, parse_param

router = APIRouter(tags=["data"])


@router.get("/events", response_model=list[EventOut])
def list_events(
    ctx: Ctx, svc: Services,
    asset_id: Annotated[list[int] | None, Query(description="one or more assets")] = None,
    kind: Annotated[list[str] | None, Query(description="state, count, event, status, command_reply")] = None,
    from_: Annotated[str | None, Query(alias="from")] = None,
    to: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
) -> list[EventOut]:
    """Machine events oldest first (the newest ``limit`` of the window)."""
    start = parse_param(from_, "from") if from_ else None
    end = parse_param(to, "to") if to else None
    events = svc.history.events(ctx, asset_ids=asset_id, kinds=kind, start_us=start, end_us=end, limit=limit)
    return [EventOut(seq=e.seq, asset_id=e.asset_id, ts=iso(e.ts_us), kind=e.kind, type=e.type, data=e.data)
            for e in events]


@router.get("/dead-letters", response_model=list[DeadLetterOut])
def list_dead_letters(
    ctx: Ctx, svc: Services, reason: str | None = None, device: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[DeadLetterOut]:
    """Rejected messages and values, newest first, with the reason."""
    return [DeadLetterOut(id=d.id, device=d.device, topic=d.topic, reason=d.reason, detail=d.detail,
                          received_at=iso(d.received_us), payload=d.payload.decode("utf-8", "replace"))
            for d in svc.history.dead_letters(ctx, reason=reason, device=device, limit=limit)]


@router.get("/ingest/stats", response_model=StatsOut)
def ingest_stats(ctx: Ctx, svc: Services) -> StatsOut:
    """Rates over the last seconds, totals since start, rejects by device and reason (all time)."""
    tid = ctx.require_tenant()
    mps, pps = svc.stats.rates(tid)
    ts = svc.stats.tenant(tid)
    return StatsOut(messages_per_s=round(mps, 2), points_per_s=round(pps, 2), messages_total=ts.messages,
                    points_total=ts.points, rejected_total=ts.rejected,
                    devices_online=svc.stats.online_count(tid),
                    rejects=svc.history.dead_letter_counts(ctx))
