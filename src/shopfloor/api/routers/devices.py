"""Devices: credentials shown once, rotation, enable/disable, status."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from shopfloor.api.deps import ApiServices, Ctx, Services
from shopfloor.api.schemas import DeviceCreated, DeviceIn, DeviceOut, DevicePatch
from shopfloor.api.timeparams import iso
from shopfloor.domain.assets import Device
from shopfloor.domain.device_fieldbus import section_to_obj
from shopfloor.domain.sparkplug import spec_to_obj

router = APIRouter(tags=["devices"])


def _out(svc: ApiServices, d: Device) -> DeviceOut:
    ts = svc.stats.tenant(d.tenant_id)
    last = ts.last_seen_us.get(d.username)
    rejects = sum(n for (dev, _), n in ts.rejects.items() if dev == d.username)
    return DeviceOut.of(d, online=d.username in svc.stats.online, last_message=iso(last) if last else None,
                        rejects=rejects)


@router.get("/devices", response_model=list[DeviceOut])
def list_devices(ctx: Ctx, svc: Services) -> list[DeviceOut]:
    return [_out(svc, d) for d in svc.registry.list_devices(ctx)]


@router.post("/devices", status_code=status.HTTP_201_CREATED, response_model=DeviceCreated)
def create_device(body: DeviceIn, ctx: Ctx, svc: Services) -> DeviceCreated:
    """Create a device; the response carries its MQTT username and secret, shown this once."""
    dev, secret = svc.registry.create_device(ctx, body.name, body.asset_ids, gateway=body.gateway,
                                             description=body.description)
    svc.invalidate()
    return DeviceCreated(**_out(svc, dev).model_dump(), secret=secret)


class DeviceFieldbusOut(BaseModel):
    device_id: int
    device: str = Field(description="The device's name")
    assets: list[str] = Field(description="Its machines' (or line's) asset paths")
    opcua: dict[str, Any] | None = Field(description="Its OPC UA section as in the plant file (docs/opcua.md)")
    modbus: dict[str, Any] | None = Field(description="Its Modbus TCP section as in the plant file (docs/modbus.md)")
    sparkplug: dict[str, Any] | None = Field(None, description="Its approved Sparkplug binding, group and edge node "
                                                               "id written out (docs/sparkplug.md)")


@router.get("/devices/{device_id}/fieldbus", response_model=DeviceFieldbusOut)
def get_device_fieldbus(device_id: int, ctx: Ctx, svc: Services) -> DeviceFieldbusOut:
    """The device's OPC UA and Modbus sections, for an edge agent that takes its sources from the
    platform (engineer role). Secrets stay as the plant file gave them: a ``password_env`` is a name."""
    dev, assets, sections = svc.plant.device_fieldbus(ctx, device_id)
    node = svc.plant.sparkplug.stored(dev)
    binding = spec_to_obj(node.mapping.with_ids(node.group, node.edge_node)) if node and node.approved else None
    return DeviceFieldbusOut(device_id=dev.id, device=dev.name, assets=assets,
                             opcua=section_to_obj(sections.opcua if sections else None),
                             modbus=section_to_obj(sections.modbus if sections else None), sparkplug=binding)


@router.get("/devices/{device_id}", response_model=DeviceOut)
def get_device(device_id: int, ctx: Ctx, svc: Services) -> DeviceOut:
    return _out(svc, svc.registry.device(ctx, device_id))


@router.patch("/devices/{device_id}", response_model=DeviceOut)
def patch_device(device_id: int, body: DevicePatch, ctx: Ctx, svc: Services) -> DeviceOut:
    """Enable or disable (a disabled device's live session is cut), rebind, describe."""
    dev = svc.registry.update_device(ctx, device_id, enabled=body.enabled, asset_ids=body.asset_ids,
                                     description=body.description)
    svc.invalidate()
    return _out(svc, dev)


@router.post("/devices/{device_id}/rotate-secret", response_model=DeviceCreated)
def rotate_secret(device_id: int, ctx: Ctx, svc: Services) -> DeviceCreated:
    """A new secret; the old one stops working and the device's live session is cut."""
    dev, secret = svc.registry.rotate_device_secret(ctx, device_id)
    svc.invalidate()
    return DeviceCreated(**_out(svc, dev).model_dump(), secret=secret)


@router.delete("/devices/{device_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_device(device_id: int, ctx: Ctx, svc: Services) -> None:
    svc.registry.delete_device(ctx, device_id)
    svc.invalidate()
