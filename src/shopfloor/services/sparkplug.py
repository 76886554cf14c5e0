"""Sparkplug use cases: edge-node bindings (plant file, API), quarantine approval, and commands.

* ``SparkplugBindings``: an engineer binds a device as an edge node with a mapping (group id of
  the tenant, machine paths that exist), approves a quarantined node, or removes a binding.
* ``SparkplugCommandService``: an NCMD/DCMD write, authorised (engineer), logged as an audit event
  in the event log before it is sent, and sent through the ``SparkplugCommands`` port.

The host-facing directory (who an edge node is) is ``services.sparkplug_directory``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from shopfloor.domain.assets import Device, Level
from shopfloor.domain.errors import Conflict, InvalidInput, NotFound, ShopfloorError
from shopfloor.domain.records import EventRecord, IngestBatch
from shopfloor.domain.sparkplug import (
    Approval,
    SparkplugNode,
    SparkplugSpec,
    check_edge_node_id,
    check_group,
    check_spec,
    machine_path,
    tenant_group,
)
from shopfloor.domain.tenancy import Role, TenantContext
from shopfloor.ports.ingest import BatchSink
from shopfloor.ports.sparkplug import MetricWrite, SparkplugCommands
from shopfloor.services.registry import RegistryService

log = logging.getLogger(__name__)

MAX_WRITES = 100
COMMAND_KIND = "command"
COMMAND_TYPE = "sparkplug_write"


class CommandsUnavailable(ShopfloorError):
    status = 503
    title = "Sparkplug commands unavailable"


class SparkplugBindings:
    """Edge-node bindings of the caller's tenant; every write needs the engineer role."""

    def __init__(self, registry: RegistryService) -> None:
        self.registry = registry

    def tenant_slug(self, ctx: TenantContext) -> str:
        if ctx.tenant_slug:
            return ctx.tenant_slug
        tenant = self.registry.repo.get_tenant(ctx.require_tenant())
        if tenant is None:
            raise NotFound("tenant vanished")
        return tenant.slug

    def nodes(self, ctx: TenantContext, status: Approval | None = None) -> list[SparkplugNode]:
        nodes = self.registry.repo.list_sparkplug_nodes(ctx.require_tenant())
        return [n for n in nodes if status is None or n.status is status]

    def node(self, ctx: TenantContext, device_id: int) -> SparkplugNode:
        device = self.registry.device(ctx, device_id)
        found = self.stored(device)
        if found is None:
            raise NotFound(f"device {device.name!r} is not a Sparkplug edge node")
        return found

    def stored(self, device: Device) -> SparkplugNode | None:
        nodes = self.registry.repo.list_sparkplug_nodes(device.tenant_id)
        return next((n for n in nodes if n.device_id == device.id), None)

    def build(self, ctx: TenantContext, device: Device, spec: SparkplugSpec,
              status: Approval = Approval.APPROVED, seen: dict[str, list[str]] | None = None) -> SparkplugNode:
        """The binding ``spec`` describes for ``device``, checked against the tenant's registry."""
        where = f"device {device.name!r}: sparkplug"
        check_spec(spec, where)
        slug = self.tenant_slug(ctx)
        group = check_group(spec.group or tenant_group(slug), slug, where)
        edge_node = check_edge_node_id(spec.edge_node or device.name, where)
        tid = ctx.require_tenant()
        for what, path in [("node", spec.node), *((f"device {d!r}", p) for d, p in spec.devices.items())]:
            if path is None:
                continue
            asset = self.registry.repo.find_asset(tid, machine_path(path))
            if asset is None or asset.level is not Level.MACHINE:
                raise InvalidInput(f"{where}: {what}: no machine at {path!r}")
        return SparkplugNode(tid, device.id, group, edge_node, status, spec.with_ids(group, edge_node), dict(seen or {}))

    def put(self, ctx: TenantContext, device_id: int, spec: SparkplugSpec) -> tuple[SparkplugNode, bool]:
        """Bind (or re-bind) the device as an approved edge node with this mapping; also whether
        anything changed (what the device's births declared is kept)."""
        ctx.require(Role.ENGINEER)
        device = self.registry.device(ctx, device_id)
        current = self.stored(device)
        node = self.build(ctx, device, spec, seen=current.seen if current is not None else None)
        if current == node:
            return current, False
        return self._save(ctx, node), True

    def approve(self, ctx: TenantContext, device_id: int, spec: SparkplugSpec | None = None) -> SparkplugNode:
        """Approve a quarantined node (keeping its group and edge node id), with a mapping if given."""
        ctx.require(Role.ENGINEER)
        current = self.node(ctx, device_id)
        device = self.registry.device(ctx, device_id)
        mapping = spec if spec is not None else current.mapping
        mapping = mapping.with_ids(mapping.group or current.group, mapping.edge_node or current.edge_node)
        node = self.build(ctx, device, mapping, Approval.APPROVED, current.seen)
        return self._save(ctx, node)

    def remove(self, ctx: TenantContext, device_id: int) -> None:
        """The device is no longer an edge node (a quarantined one is rejected this way; if it
        keeps publishing, it is quarantined again)."""
        ctx.require(Role.ENGINEER)
        self.node(ctx, device_id)
        self.registry.repo.set_sparkplug_node(ctx.require_tenant(), device_id, None)

    def _save(self, ctx: TenantContext, node: SparkplugNode) -> SparkplugNode:
        try:
            stored = self.registry.repo.set_sparkplug_node(ctx.require_tenant(), node.device_id, node)
        except Conflict:
            raise Conflict(f"edge node {node.group}/{node.edge_node} is already another device") from None
        if stored is None:  # set returns the stored node for a node
            raise NotFound(f"device {node.device_id} vanished")
        return stored


class SparkplugCommandService:
    """NCMD/DCMD writes to metrics: engineer role, audit event first, then the publish."""

    def __init__(self, bindings: SparkplugBindings, audit: BatchSink, commands: SparkplugCommands | None,
                 now_us: Callable[[], int]) -> None:
        self.bindings = bindings
        self._audit = audit
        self._commands = commands
        self._now_us = now_us

    async def command(self, ctx: TenantContext, device_id: int, device: str | None,
                      writes: Sequence[MetricWrite]) -> dict[str, Any]:
        """Send the writes to the edge node ``device_id`` (``device``: one of its Sparkplug devices).

        The audit event (kind ``command``, type ``sparkplug_write``) names the token, the node,
        the device and every write; it is committed before anything is published, so nothing is
        sent unlogged. Returns what was logged, with the topic.
        """
        ctx.require(Role.ENGINEER)
        node = self.bindings.node(ctx, device_id)
        if not node.approved:
            raise Conflict(f"edge node {node.group}/{node.edge_node} is in quarantine; approve it first")
        if not writes:
            raise InvalidInput("a command writes at least one metric")
        if len(writes) > MAX_WRITES:
            raise InvalidInput(f"a command writes at most {MAX_WRITES} metrics")
        if device is not None and (not device or any(c in device for c in "+/#")):
            raise InvalidInput(f"Sparkplug device id {device!r} must be non-empty, without + / #")
        for w in writes:
            if not w.name:
                raise InvalidInput("a metric write needs a name")
        if self._commands is None:
            raise CommandsUnavailable("this process cannot reach the edge nodes' broker")
        asset_id = self._asset_of(ctx, node, device)
        now = self._now_us()
        data: dict[str, Any] = {
            "by": ctx.token_name, "group": node.group, "edge_node": node.edge_node, "device": device,
            "registry_device_id": device_id,
            "metrics": [{"name": w.name, "value": w.value, **({"datatype": w.datatype} if w.datatype else {})}
                        for w in writes],
        }
        await self._audit.submit(IngestBatch(events=[EventRecord(node.tenant_id, asset_id, now, COMMAND_KIND,
                                                                 COMMAND_TYPE, data)]))
        topic = await self._commands.send(node.group, node.edge_node, device, writes)
        log.info("Sparkplug command by %s to %s: %d metric(s)", ctx.token_name, topic, len(writes))
        return {**data, "topic": topic, "asset_id": asset_id, "ts_us": now}

    def _asset_of(self, ctx: TenantContext, node: SparkplugNode, device: str | None) -> int:
        """The machine the audit event belongs to: the mapped machine, else the device's first asset."""
        path = node.mapping.devices.get(device) if device is not None else node.mapping.node
        if path is not None:
            asset = self.bindings.registry.repo.find_asset(node.tenant_id, machine_path(path))
            if asset is not None:
                return asset.id
        registered = self.bindings.registry.device(ctx, node.device_id)
        if not registered.asset_ids:
            raise InvalidInput(f"device {registered.name!r} is bound to no asset to log the command against")
        return registered.asset_ids[0]
