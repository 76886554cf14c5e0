"""Back-fill: POST a list of messages exactly as they would arrive over MQTT."""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from shopfloor.api.deps import Ctx, Services
from shopfloor.api.errors import problem
from shopfloor.domain.errors import InvalidInput, PayloadTooLarge
from shopfloor.domain.timeutil import now_us
from shopfloor.services.backfill import MAX_BYTES, MAX_MESSAGES, backfill, check_caller

router = APIRouter(tags=["data"])


class _Message(msgspec.Struct, forbid_unknown_fields=True):
    topic: str
    payload: Any


_DECODER = msgspec.json.Decoder(list[_Message])
_EXAMPLE = [{"topic": "shopfloor/v1/acme/berlin/assembly/line-1/cell-1/state",
             "payload": {"ts": "2026-11-23T06:00:00Z", "state": "running"}},
            {"topic": "shopfloor/v1/acme/berlin/assembly/line-1/cell-1/status", "payload": "offline"}]


@router.post(
    "/messages",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"type": "array", "maxItems": MAX_MESSAGES, "items": {
            "type": "object", "required": ["topic", "payload"],
            "properties": {"topic": {"type": "string"},
                           "payload": {"description": "a JSON object or list, or a string (sent as is)"}}}},
        "example": _EXAMPLE}}}},
    responses={200: {"description": "What became of each message: accepted and rejected counts, the reasons, "
                                    "and the first rejections with their index"},
               413: {"description": f"more than {MAX_MESSAGES} messages or {MAX_BYTES // 1024 // 1024} MiB"},
               503: {"description": "back-fill is not configured on this server"}},
)
async def post_messages(request: Request, ctx: Ctx, svc: Services) -> Response:
    """Back-fill (engineer): messages as they would arrive over MQTT, each ``{"topic", "payload"}``.

    The token fixes the tenant: a topic of another tenant is rejected (``outside_prefix``). The rest
    is validated like MQTT traffic (dead letters included; ``too_old`` beyond the raw retention) and
    committed before the answer. KPIs, computed from stored events, include it at once.
    """
    if svc.ingest is None:
        return problem(503, "Not available", "back-fill is not configured on this server")
    check_caller(ctx)
    body = await _body(request)
    try:
        items = _DECODER.decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"expected a list of {{\"topic\": ..., \"payload\": ...}} objects: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"the body is not JSON: {exc}") from None
    except RecursionError:
        raise InvalidInput("the body is nested too deeply") from None
    if len(items) > MAX_MESSAGES:
        raise PayloadTooLarge(f"{len(items)} messages; post at most {MAX_MESSAGES} per call")
    try:
        messages = [(m.topic, _payload(i, m.payload)) for i, m in enumerate(items)]
    except RecursionError:
        raise InvalidInput("a payload is nested too deeply") from None
    report = await backfill(ctx, messages, svc.ingest, now_us())
    return JSONResponse(msgspec.to_builtins(report))


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_BYTES:
        raise PayloadTooLarge(f"the body is over {MAX_BYTES // 1024 // 1024} MiB; post fewer messages per call")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BYTES:
            raise PayloadTooLarge(f"the body is over {MAX_BYTES // 1024 // 1024} MiB; post fewer messages per call")
        chunks.append(chunk)
    return b"".join(chunks)


def _payload(index: int, payload: Any) -> bytes:
    if isinstance(payload, str):
        return payload.encode("utf-8", "surrogatepass")
    if isinstance(payload, dict | list):
        return msgspec.json.encode(payload)
    raise InvalidInput(f"messages[{index}].payload must be a JSON object, a list or a string, "
                       f"not {type(payload).__name__}")
