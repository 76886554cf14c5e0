"""Value writes to a machine's measurements (OPC UA nodes behind an edge agent): engineers, audited."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field

from shopfloor.api.deps import Ctx, Services
from shopfloor.services.machine_writes import MeasurementWrite, WritesUnavailable

router = APIRouter(tags=["machine writes"])


class MeasurementWriteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    measurement: str = Field(min_length=1, max_length=200, description="A measurement of the machine's type")
    value: bool | int | float | str = Field(description="In the measurement's units (the edge undoes scale/offset)")


class MachineWriteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    writes: list[MeasurementWriteIn] = Field(min_length=1, max_length=100)


@router.post("/assets/{asset_id}/write", status_code=status.HTTP_202_ACCEPTED)
async def write(asset_id: int, body: MachineWriteIn, ctx: Ctx, svc: Services) -> dict[str, Any]:
    """Write measurements of a machine (engineers only). An audit event (kind ``command``, type
    ``opcua_write``) is stored before the command goes out on the machine's ``.../command`` topic;
    the edge agent's reply arrives on ``.../command/reply``."""
    if svc.machine_writes is None:
        raise WritesUnavailable("machine writes are not wired in this server")
    return await svc.machine_writes.write(ctx, asset_id, [MeasurementWrite(w.measurement, w.value)
                                                          for w in body.writes])
