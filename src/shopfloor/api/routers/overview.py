"""The plant overview (every machine's live state and shift KPIs) and its live stream of states."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from shopfloor.api.deps import Ctx, Services
from shopfloor.api.errors import problem
from shopfloor.services.overview import MachineState

router = APIRouter(tags=["overview"])
_NOT_CONFIGURED = "the overview is not configured on this server"
STREAM_PERIOD_S = 1.0  # states are pushed at most once a second
HEARTBEAT_S = 5.0  # with no change, a heartbeat tells the page the stream is alive


@router.get("/overview", responses={200: {"content": {"application/json": {}},
                                          "description": "Every machine: live state, online status, shift KPIs"}})
def get_overview(ctx: Ctx, svc: Services) -> Response:
    """Every machine of the tenant as a tile: its live state and online status, and OEE with its
    three factors for the current shift and good parts today (KPIs at most 30 s old)."""
    if svc.overview is None:
        return problem(503, "Not available", _NOT_CONFIGURED)
    return Response(msgspec.json.encode(svc.overview.overview(ctx)), media_type="application/json")


@router.get("/stream/states", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "Server-Sent Events: `states` (all machines) then changes"}})
async def stream_states(request: Request, ctx: Ctx, svc: Services) -> Response:
    """Server-Sent Events: first a `states` event with every machine's state, then a `states`
    event with the machines whose state or online status changed, at most once a second, and a
    `heartbeat` event after 5 s without a change."""
    overview = svc.overview
    if overview is None:
        return problem(503, "Not available", _NOT_CONFIGURED)

    async def events() -> AsyncIterator[bytes]:
        last: dict[int, MachineState] = {}
        idle = 0.0
        while not await request.is_disconnected():
            now = await run_in_threadpool(overview.states, ctx)
            changed = [s for aid, s in now.items() if last.get(aid) != s]
            last = now
            if changed:
                idle = 0.0
                yield b"event: states\ndata: " + msgspec.json.encode(changed) + b"\n\n"
            else:
                idle += STREAM_PERIOD_S
                if idle >= HEARTBEAT_S:
                    idle = 0.0
                    yield b"event: heartbeat\ndata: {}\n\n"
            await asyncio.sleep(STREAM_PERIOD_S)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
