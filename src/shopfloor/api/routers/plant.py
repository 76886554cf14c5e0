"""The plant file: apply (idempotent bulk provisioning) and export, as YAML or JSON."""

from __future__ import annotations

from typing import Any

import yaml
from fastapi import APIRouter, Request
from fastapi.responses import Response

from shopfloor.api.deps import Ctx, Services
from shopfloor.api.routers.rules import ops
from shopfloor.api.schemas import ApplyOut
from shopfloor.domain.errors import InvalidInput, PayloadTooLarge
from shopfloor.domain.plant import plant_from_obj, plant_to_obj

router = APIRouter(tags=["plant"])
MAX_PLANT_BYTES = 20 * 1024 * 1024


@router.put("/plant", response_model=ApplyOut,
            openapi_extra={"requestBody": {"content": {"application/yaml": {"schema": {"type": "string"}},
                                                       "application/json": {"schema": {"type": "object"}}}}})
async def apply_plant(request: Request, ctx: Ctx, svc: Services) -> ApplyOut:
    """Make the registry match a plant file (YAML or JSON body). New devices' secrets are returned once."""
    body = await request.body()
    if len(body) > MAX_PLANT_BYTES:
        raise PayloadTooLarge(f"plant file over {MAX_PLANT_BYTES // 1024 // 1024} MiB")
    try:
        obj: Any = yaml.safe_load(body.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"plant file is not valid YAML/JSON: {exc}") from None
    except RecursionError:
        raise InvalidInput("plant file is nested too deeply") from None
    spec = plant_from_obj(obj)
    from starlette.concurrency import run_in_threadpool

    if spec.rules:
        ops(svc).check_rules(ctx, spec.rules)  # all or nothing: refuse a bad rule before applying
    result = await run_in_threadpool(svc.plant.apply, ctx, spec)
    svc.invalidate()
    if spec.rules:
        for outcome, n in (await ops(svc).apply_rules(ctx, spec.rules)).items():
            getattr(result, outcome)["rules"] = n
    return ApplyOut(created=result.created, updated=result.updated, unchanged=result.unchanged,
                    device_secrets=[{"id": s.id, "name": s.name, "username": s.username, "secret": s.secret}
                                    for s in result.device_secrets])


@router.get("/plant", responses={200: {"content": {"application/yaml": {}}}})
def export_plant(ctx: Ctx, svc: Services, format: str = "yaml") -> Response:
    """The tenant's plant as a file that ``plant apply`` accepts."""
    obj = plant_to_obj(svc.plant.export(ctx))
    if format == "json":
        import json

        return Response(json.dumps(obj, indent=2), media_type="application/json")
    return Response(yaml.safe_dump(obj, sort_keys=False, allow_unicode=True), media_type="application/yaml")
