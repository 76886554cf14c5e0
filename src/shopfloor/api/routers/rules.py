"""Alarm rules per tenant: list, read, create, replace, delete (engineers edit; anyone reads)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Body, Query, status
from fastapi.responses import Response

from shopfloor.api.deps import Ctx, Services
from shopfloor.api.timeparams import parse_param
from shopfloor.domain.errors import ShopfloorError
from shopfloor.domain.timeutil import now_us
from shopfloor.services.alarm_ops import AlarmOps, rule_json

router = APIRouter(tags=["alarms"])

_EXAMPLE = {"name": "press too hot", "kind": "threshold", "asset_type": "press", "measurement": "temperature",
            "high": 80.0, "deadband": 2.0, "on_delay_s": 5, "priority": "high",
            "suppress_when": ["planned_stop"]}


class NotConfigured(ShopfloorError):
    status = 503
    title = "Not available"


def ops(svc: Any) -> AlarmOps:
    if svc.alarms is None:
        raise NotConfigured("rules and alarms do not run in this process")
    found: AlarmOps = svc.alarms
    return found


@router.get("/rules")
def list_rules(ctx: Ctx, svc: Services) -> list[dict[str, Any]]:
    """The tenant's rules, each with its id, name, kind, target and limits (docs/alarms.md)."""
    return [rule_json(r) for r in ops(svc).rules(ctx)]


@router.get("/rules/{ref}")
def get_rule(ref: str, ctx: Ctx, svc: Services) -> dict[str, Any]:
    """One rule, by id or by name."""
    return rule_json(ops(svc).rule(ctx, ref))


@router.post("/rules", status_code=status.HTTP_201_CREATED)
async def create_rule(body: Annotated[dict[str, Any], Body(examples=[_EXAMPLE])], ctx: Ctx,
                      svc: Services) -> dict[str, Any]:
    """Create a rule (engineer). It runs from the next ingest commit on; ``asset_type`` makes it a
    template for every machine of that type, new ones included."""
    return rule_json(await ops(svc).create_rule(ctx, body))


@router.put("/rules/{ref}")
async def replace_rule(ref: str, body: Annotated[dict[str, Any], Body(examples=[_EXAMPLE])], ctx: Ctx,
                       svc: Services) -> dict[str, Any]:
    """Replace a rule (engineer); its alarms stay, and evaluation starts again from them."""
    return rule_json(await ops(svc).update_rule(ctx, ref, body))


@router.post("/rules/{ref}/backtest")
def backtest_rule(ref: str, ctx: Ctx, svc: Services,
                  from_: Annotated[str, Query(alias="from", description="RFC 3339 or epoch ms")],
                  to: Annotated[str | None, Query(description="RFC 3339 or epoch ms; default now")] = None,
                  ) -> dict[str, Any]:
    """Replay stored history through the rule (enabled for the run) and list the alarms it would
    have raised, per asset with activation and clear times: to tune it before enabling it. Nothing
    is stored or notified."""
    start = parse_param(from_, "from")
    end = parse_param(to, "to") if to else now_us()
    out: dict[str, Any] = msgspec.to_builtins(ops(svc).backtest(ctx, ref, start, end))
    return out


@router.delete("/rules/{ref}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_rule(ref: str, ctx: Ctx, svc: Services) -> Response:
    """Delete a rule and its alarm instances (engineer); their journal stays."""
    await ops(svc).delete_rule(ctx, ref)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
