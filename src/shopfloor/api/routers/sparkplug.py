"""Sparkplug B edge nodes: bindings and their mapping, quarantine approval, NCMD/DCMD commands."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field

from shopfloor.api.deps import ApiServices, Ctx, Services
from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.sparkplug import Approval, SparkplugNode, spec_from_obj, spec_to_obj, tenant_group
from shopfloor.ports.sparkplug import MetricWrite
from shopfloor.services.sparkplug import CommandsUnavailable, SparkplugCommandService

router = APIRouter(tags=["sparkplug"])


class MetricMapIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    measurement: str
    scale: float = 1.0
    offset: float = 0.0


class SparkplugMappingIn(BaseModel):
    """The plant file's ``sparkplug`` section of a device (see docs/sparkplug.md)."""

    model_config = ConfigDict(extra="forbid")

    edge_node: str | None = Field(None, description="Its Sparkplug edge node id [default: the device's name]")
    group: str | None = Field(None, description="Its group id: the tenant's slug or '{slug}.{suffix}'")
    node: str | None = Field(None, description="Machine path of the edge node's own metrics")
    devices: dict[str, str] = Field(default_factory=dict, description="Sparkplug device id -> machine path")
    metrics: dict[str, str | MetricMapIn | None] = Field(
        default_factory=dict, description="Metric name -> measurement (or {measurement, scale, offset}; "
                                          "null: left out)")


class SparkplugNodeOut(BaseModel):
    device_id: int
    group: str
    edge_node: str
    status: str
    mapping: dict[str, Any]
    seen: dict[str, list[str]] = Field(description="What its births declared: '' (node) or device id -> metric names")

    @classmethod
    def of(cls, node: SparkplugNode) -> SparkplugNodeOut:
        return cls(device_id=node.device_id, group=node.group, edge_node=node.edge_node, status=node.status.value,
                   mapping=spec_to_obj(node.mapping), seen=node.seen)


class SparkplugNodesOut(BaseModel):
    group: str = Field(description="The tenant's own group id (an edge node may also use '{group}.{suffix}')")
    nodes: list[SparkplugNodeOut]


class MetricWriteIn(BaseModel):
    name: str = Field(min_length=1, max_length=500)
    value: bool | int | float | str
    datatype: str | None = Field(None, description="Int8 … UInt64, Float, Double, Boolean, String, Text, "
                                                   "DateTime [default: from the value]")


class SparkplugCommandIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: str | None = Field(None, description="A Sparkplug device of the edge node (DCMD); none: the node (NCMD)")
    metrics: list[MetricWriteIn] = Field(min_length=1, max_length=100)


def _mapping(body: SparkplugMappingIn | None) -> Any:
    return None if body is None else spec_from_obj(body.model_dump(exclude_unset=True), "sparkplug")


@router.get("/sparkplug/nodes", response_model=SparkplugNodesOut)
def list_nodes(ctx: Ctx, svc: Services, status: str | None = None) -> SparkplugNodesOut:
    """The tenant's edge nodes (``status=quarantined``: those waiting for an engineer)."""
    try:
        wanted = Approval(status) if status is not None else None
    except ValueError:
        raise InvalidInput(f"status must be 'approved' or 'quarantined', not {status!r}") from None
    bindings = svc.plant.sparkplug
    return SparkplugNodesOut(group=tenant_group(bindings.tenant_slug(ctx)),
                             nodes=[SparkplugNodeOut.of(n) for n in bindings.nodes(ctx, wanted)])


@router.get("/devices/{device_id}/sparkplug", response_model=SparkplugNodeOut)
def get_node(device_id: int, ctx: Ctx, svc: Services) -> SparkplugNodeOut:
    return SparkplugNodeOut.of(svc.plant.sparkplug.node(ctx, device_id))


@router.put("/devices/{device_id}/sparkplug", response_model=SparkplugNodeOut)
def put_node(device_id: int, body: SparkplugMappingIn, ctx: Ctx, svc: Services) -> SparkplugNodeOut:
    """Make the device an approved edge node with this mapping (engineer)."""
    node, _ = svc.plant.sparkplug.put(ctx, device_id, _mapping(body))
    svc.invalidate()
    return SparkplugNodeOut.of(node)


@router.post("/devices/{device_id}/sparkplug/approve", response_model=SparkplugNodeOut)
def approve_node(device_id: int, ctx: Ctx, svc: Services, body: SparkplugMappingIn | None = None) -> SparkplugNodeOut:
    """Approve a quarantined edge node, with its mapping if given (engineer). The host asks it for a
    rebirth at its next message, and stores from then on."""
    node = svc.plant.sparkplug.approve(ctx, device_id, _mapping(body))
    svc.invalidate()
    return SparkplugNodeOut.of(node)


@router.delete("/devices/{device_id}/sparkplug", status_code=status.HTTP_204_NO_CONTENT)
def delete_node(device_id: int, ctx: Ctx, svc: Services) -> None:
    """The device is no longer an edge node (rejects a quarantined one; engineer)."""
    svc.plant.sparkplug.remove(ctx, device_id)
    svc.invalidate()


def _commands(svc: ApiServices) -> SparkplugCommandService:
    if svc.sparkplug_commands is None:
        raise CommandsUnavailable("Sparkplug commands are not wired in this server")
    return svc.sparkplug_commands


@router.post("/devices/{device_id}/sparkplug/command", status_code=status.HTTP_202_ACCEPTED)
async def command(device_id: int, body: SparkplugCommandIn, ctx: Ctx, svc: Services) -> dict[str, Any]:
    """Write metrics of the edge node (NCMD) or of one of its devices (DCMD). Engineers only; an audit
    event (kind ``command``, type ``sparkplug_write``) is stored before the command is published."""
    commands = _commands(svc)
    writes = [MetricWrite(m.name, m.value, m.datatype) for m in body.metrics]
    return await commands.command(ctx, device_id, body.device, writes)

