"""Alarms: list and filter, the journal, flood statistics, operator actions, webhooks, and the live
stream (server-sent events) for the dashboard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Body, Query, Request, status
from fastapi.responses import Response, StreamingResponse

from shopfloor.api.deps import Ctx, Services
from shopfloor.api.routers.rules import ops
from shopfloor.api.timeparams import parse_param
from shopfloor.domain.alarms.model import Action, AlarmState, Priority
from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.timeutil import now_us
from shopfloor.ports.alarms import AlarmQuery, Delivery, JournalQuery, Subscription

router = APIRouter(tags=["alarms"])
HEARTBEAT_S = 15.0


def _obj(x: object) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(x)
    return out


@router.get("/alarms")
def list_alarms(
    ctx: Ctx, svc: Services,
    state: Annotated[list[AlarmState] | None, Query(description="one or more states")] = None,
    priority: Annotated[list[Priority] | None, Query(description="one or more priorities")] = None,
    asset_id: Annotated[list[int] | None, Query()] = None,
    rule_id: Annotated[list[int] | None, Query()] = None,
    annunciated: Annotated[bool | None, Query(description="true: only what operators should see now")] = None,
    limit: Annotated[int, Query(ge=0, le=10_000)] = 1000,
) -> list[dict[str, Any]]:
    """Alarm instances of the tenant, most recently changed first."""
    q = AlarmQuery(states=state, priorities=priority, asset_ids=asset_id, rule_ids=rule_id, annunciated=annunciated,
                   limit=limit)
    return [_obj(a) for a in ops(svc).alarms(ctx, q)]


@router.get("/alarms/system")
def system_alarms(ctx: Ctx, svc: Services) -> list[dict[str, Any]]:
    """The platform's own alarms: broker link down (-1), ingest lag (-2), disk nearly full (-3)."""
    return [_obj(a) for a in ops(svc).system_alarms(ctx)]


@router.post("/alarms/system/{rule_id}/acknowledge")
async def ack_system(rule_id: int, ctx: Ctx, svc: Services,
                     body: Annotated[dict[str, Any] | None, Body()] = None) -> dict[str, Any]:
    """Acknowledge a platform alarm (operator)."""
    return _obj(await ops(svc).ack_system(ctx, rule_id, _comment(body)))


@router.get("/alarms/journal")
def journal(
    ctx: Ctx, svc: Services,
    rule_id: int | None = None, asset_id: int | None = None,
    action: Annotated[list[Action] | None, Query()] = None,
    from_: Annotated[str | None, Query(alias="from", description="RFC 3339 or epoch ms")] = None,
    to: Annotated[str | None, Query(description="RFC 3339 or epoch ms")] = None,
    limit: Annotated[int, Query(ge=0, le=10_000)] = 1000,
) -> list[dict[str, Any]]:
    """Every transition and operator action (with its user and comment), oldest first."""
    q = JournalQuery(rule_id=rule_id, asset_id=asset_id, actions=action, limit=limit,
                     start_us=parse_param(from_, "from") if from_ else None,
                     end_us=parse_param(to, "to") if to else None)
    return [_obj(e) for e in ops(svc).journal(ctx, q)]


@router.get("/alarms/flood")
def flood(ctx: Ctx, svc: Services,
          from_: Annotated[str, Query(alias="from", description="RFC 3339 or epoch ms")],
          to: Annotated[str | None, Query(description="RFC 3339 or epoch ms; default now")] = None,
          ) -> list[dict[str, Any]]:
    """ISA-18.2 flood statistics per area: annunciated alarms per 10 minutes, flood windows (> 10)."""
    start = parse_param(from_, "from")
    end = parse_param(to, "to") if to else now_us()
    return [_obj(a) for a in ops(svc).flood(ctx, start, end)]


@router.get("/alarms/stream", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "one event per live transition: `event: <action>`, `data: {entry, alarm}`"}})
async def stream(request: Request, ctx: Ctx, svc: Services) -> StreamingResponse:
    """Server-sent events: every live, annunciated transition of the tenant's alarms as it happens."""
    tid = ctx.require_tenant()
    hub = ops(svc).service.hub

    async def events() -> AsyncIterator[bytes]:
        async with hub.subscribe(tid) as queue:
            yield b": connected\n\n"
            while not await request.is_disconnected():
                try:
                    notice = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
                except TimeoutError:
                    yield b": heartbeat\n\n"
                    continue
                if notice is None:
                    return
                yield b"event: " + notice.event.encode() + b"\ndata: " + msgspec.json.encode(notice) + b"\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


# -- webhooks ----------------------------------------------------------------------------------
def _hook(s: Subscription, with_secret: bool = False) -> dict[str, Any]:
    out = _obj(s)
    if not with_secret:
        out.pop("secret", None)
    return out


@router.get("/alarms/webhooks")
def list_webhooks(ctx: Ctx, svc: Services) -> list[dict[str, Any]]:
    """The tenant's webhook subscriptions (engineer); secrets are shown only when created."""
    return [_hook(s) for s in ops(svc).subscriptions(ctx)]


@router.post("/alarms/webhooks", status_code=status.HTTP_201_CREATED)
async def create_webhook(ctx: Ctx, svc: Services, body: Annotated[dict[str, Any], Body(examples=[
        {"url": "https://example.com/hooks/alarms", "min_priority": "high"}])]) -> dict[str, Any]:
    """Subscribe a URL to live alarm transitions (engineer). The answer holds the signing secret
    (generated unless given): keep it, it is not shown again."""
    url = body.get("url")
    if not isinstance(url, str):
        raise InvalidInput("'url' is required")
    try:
        prio = Priority(body.get("min_priority", "low"))
    except ValueError:
        raise InvalidInput(f"min_priority must be one of {', '.join(p.value for p in Priority)}") from None
    secret = body.get("secret")
    if secret is not None and not isinstance(secret, str):
        raise InvalidInput("'secret' must be a string")
    return _hook(await ops(svc).subscribe(ctx, url, prio, secret), with_secret=True)


@router.delete("/alarms/webhooks/{subscription_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_webhook(subscription_id: int, ctx: Ctx, svc: Services) -> Response:
    """Remove a webhook and its pending deliveries (engineer)."""
    await ops(svc).unsubscribe(ctx, subscription_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/alarms/webhooks/dead-letters")
def dead_letters(ctx: Ctx, svc: Services, limit: Annotated[int, Query(ge=0, le=1000)] = 100) -> list[dict[str, Any]]:
    """Deliveries given up after every retry, newest first, with the last error (engineer)."""
    def row(d: Delivery) -> dict[str, Any]:
        return dict(_obj(d))
    return [row(d) for d in ops(svc).dead_deliveries(ctx, limit)]


# -- operator actions --------------------------------------------------------------------------
def _comment(body: dict[str, Any] | None) -> str:
    comment = (body or {}).get("comment", "")
    if not isinstance(comment, str):
        raise InvalidInput("'comment' must be a string")
    return comment


@router.post("/alarms/{rule_id}/{asset_id}/acknowledge")
async def acknowledge(rule_id: int, asset_id: int, ctx: Ctx, svc: Services,
                      body: Annotated[dict[str, Any] | None, Body(examples=[{"comment": "valve closed"}])] = None
                      ) -> dict[str, Any]:
    """Acknowledge (operator): journalled with the token's name and the comment."""
    return _obj(await ops(svc).act(ctx, Action.ACKNOWLEDGE, rule_id, asset_id, comment=_comment(body)))


@router.post("/alarms/{rule_id}/{asset_id}/shelve")
async def shelve(rule_id: int, asset_id: int, ctx: Ctx, svc: Services,
                 body: Annotated[dict[str, Any], Body(examples=[{"minutes": 30, "comment": "sensor swap"}])]
                 ) -> dict[str, Any]:
    """Shelve for ``minutes`` or ``until`` a time (operator); it unshelves by itself then."""
    if "until" in body:
        until = parse_param(str(body["until"]), "until")
    else:
        minutes = body.get("minutes")
        if not isinstance(minutes, int | float) or isinstance(minutes, bool) or minutes <= 0:
            raise InvalidInput("give 'minutes' (a positive number) or 'until' (RFC 3339)")
        until = now_us() + int(minutes * 60_000_000)
    return _obj(await ops(svc).act(ctx, Action.SHELVE, rule_id, asset_id, comment=_comment(body), until_us=until))


@router.post("/alarms/{rule_id}/{asset_id}/unshelve")
async def unshelve(rule_id: int, asset_id: int, ctx: Ctx, svc: Services,
                   body: Annotated[dict[str, Any] | None, Body()] = None) -> dict[str, Any]:
    """Take an alarm off the shelf before its time (operator)."""
    return _obj(await ops(svc).act(ctx, Action.UNSHELVE, rule_id, asset_id, comment=_comment(body)))


@router.post("/alarms/{rule_id}/{asset_id}/out-of-service")
async def out_of_service(rule_id: int, asset_id: int, ctx: Ctx, svc: Services,
                         body: Annotated[dict[str, Any] | None, Body()] = None) -> dict[str, Any]:
    """Take an alarm out of service (maintenance, a broken sensor) until it is returned (operator)."""
    return _obj(await ops(svc).act(ctx, Action.OUT_OF_SERVICE, rule_id, asset_id, comment=_comment(body)))


@router.post("/alarms/{rule_id}/{asset_id}/return-to-service")
async def return_to_service(rule_id: int, asset_id: int, ctx: Ctx, svc: Services,
                            body: Annotated[dict[str, Any] | None, Body()] = None) -> dict[str, Any]:
    """Return an alarm to service (operator)."""
    return _obj(await ops(svc).act(ctx, Action.RETURN_TO_SERVICE, rule_id, asset_id, comment=_comment(body)))
