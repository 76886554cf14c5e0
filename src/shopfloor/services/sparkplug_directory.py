"""Who an edge node is: the registry-backed ``SparkplugDirectory`` the Sparkplug host asks.

Answers are cached and dropped whenever the registry's version changes (read at most every
``check_every_us``), so an approval, a new mapping or a disabled device is seen within that time.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

from shopfloor.domain.assets import Device
from shopfloor.domain.sparkplug import (
    Approval,
    MetricMap,
    SparkplugNode,
    SparkplugSpec,
    group_tenant,
    machine_path,
    tenant_group,
)
from shopfloor.ports.clock import Clock
from shopfloor.ports.registry import RegistryRepository
from shopfloor.ports.sparkplug import MachineTarget, MetricTarget, NodeBinding, Resolution
from shopfloor.services.cache import RegistryCache

MAX_SEEN_KEYS = 200
MAX_SEEN_NAMES = 1000


class SparkplugDirectoryService:
    """Implements ``ports.sparkplug.SparkplugDirectory`` over the registry."""

    def __init__(self, repo: RegistryRepository, cache: RegistryCache, clock: Clock,
                 check_every_us: int = 500_000) -> None:
        self._repo = repo
        self._cache = cache
        self._clock = clock
        self._check_every_us = check_every_us
        self._lock = threading.Lock()
        self._version = -1
        self._checked_at = -(10**18)
        self._nodes: dict[tuple[str, str], SparkplugNode] | None = None
        self._answers: dict[tuple[str, str, str | None], Resolution] = {}

    def invalidate(self) -> None:
        with self._lock:
            self._checked_at = -(10**18)

    def _fresh(self) -> dict[tuple[str, str], SparkplugNode]:
        now = self._clock.now_us()
        with self._lock:
            nodes = self._nodes
            if nodes is not None and now - self._checked_at < self._check_every_us:
                return nodes
        version = self._repo.version()
        with self._lock:
            self._checked_at = now
            if version != self._version or self._nodes is None:
                self._version = version
                self._nodes = {(n.group, n.edge_node): n for n in self._repo.list_sparkplug_nodes()}
                self._answers.clear()
            return self._nodes

    # -- the port ---------------------------------------------------------------------------------
    def resolve(self, group: str, edge_node: str, username: str | None = None) -> Resolution:
        nodes = self._fresh()
        key = (group, edge_node, username or None)
        with self._lock:
            known = self._answers.get(key)
        if known is not None:
            return known
        answer = self._resolve(nodes, group, edge_node, username or None)
        with self._lock:
            if len(self._answers) < 100_000:
                self._answers[key] = answer
        return answer

    def _resolve(self, nodes: Mapping[tuple[str, str], SparkplugNode], group: str, edge_node: str,
                 username: str | None) -> Resolution:
        slug = group_tenant(group)
        tid = self._cache.tenant_id(slug)
        who = username or ""
        if tid is None:
            return Resolution(None, None, who, reason=f"no tenant owns Sparkplug group {group!r}")
        node = nodes.get((group, edge_node))
        if node is not None and node.tenant_id == tid:
            device = self._repo.get_device(tid, node.device_id)
            if device is None:
                return Resolution(None, tid, who, reason=f"edge node {group}/{edge_node} has no device")
            if username is not None and device.username != username:
                return Resolution(None, tid, who, reason=f"{username!r} may not publish as edge node "
                                                         f"{group}/{edge_node} (device {device.name!r} is)")
            if not device.enabled:
                return Resolution(None, tid, device.username, reason=f"device {device.name!r} is disabled")
            return Resolution(self._binding(node, device), tid, device.username)
        if group == tenant_group(slug):
            device = self._repo.find_device(tid, edge_node)
            taken = device is not None and any(n.device_id == device.id for n in nodes.values())
            if (device is not None and device.enabled and not taken
                    and (username is None or device.username == username)):
                return Resolution(None, tid, device.username, enrolable=True,
                                  reason=f"edge node {group}/{edge_node} is not registered yet")
        return Resolution(None, tid, who, reason=f"no device of tenant {slug!r} is edge node {group}/{edge_node}")

    def groups(self) -> set[str]:
        nodes = self._fresh()
        return {tenant_group(t.slug) for t in self._repo.list_tenants()} | {g for g, _ in nodes}

    def enrol(self, group: str, edge_node: str, seen: Mapping[str, Sequence[str]]) -> NodeBinding | None:
        answer = self.resolve(group, edge_node)
        clipped = {k: sorted(set(v))[:MAX_SEEN_NAMES] for k, v in list(seen.items())[:MAX_SEEN_KEYS]}
        if answer.binding is not None:
            if answer.binding.approved:
                return answer.binding
            nodes = self._fresh()
            node = nodes.get((group, edge_node))
            if node is None or node.seen == {**node.seen, **clipped}:
                return answer.binding
            merged = {**node.seen, **clipped}
            stored = self._repo.set_sparkplug_node(node.tenant_id, node.device_id,
                                                   SparkplugNode(node.tenant_id, node.device_id, group, edge_node,
                                                                 Approval.QUARANTINED, node.mapping, merged))
        elif answer.enrolable and answer.tenant_id is not None:
            device = self._repo.find_device(answer.tenant_id, edge_node)
            if device is None:
                return None
            stored = self._repo.set_sparkplug_node(
                answer.tenant_id, device.id,
                SparkplugNode(answer.tenant_id, device.id, group, edge_node, Approval.QUARANTINED,
                              SparkplugSpec(), clipped))
        else:
            return None
        self.invalidate()
        self._cache.invalidate()  # the device's broker rights now come from its binding
        if stored is None:
            return None
        device = self._repo.get_device(stored.tenant_id, stored.device_id)
        return self._binding(stored, device) if device is not None else None

    # -- building a binding -----------------------------------------------------------------------
    def _binding(self, node: SparkplugNode, device: Device) -> NodeBinding:
        spec = node.mapping
        machines = {}
        for sp_device, path in spec.devices.items():
            target = self._machine(node.tenant_id, path, spec)
            if target is not None:
                machines[sp_device] = target
        node_machine = self._machine(node.tenant_id, spec.node, spec) if spec.node else None
        ignored = frozenset(name for name in spec.metrics if spec.metric_map(name) is None)
        return NodeBinding(node.tenant_id, node.device_id, device.username, node.group, node.edge_node,
                           node.approved, node_machine, machines, ignored)

    def _machine(self, tenant_id: int, path: str, spec: SparkplugSpec) -> MachineTarget | None:
        info = self._cache.machine(tenant_id, machine_path(path))
        if info is None:
            return None
        metrics: dict[str, MetricTarget | None] = {
            name: MetricTarget(slot.series_id, slot.type, MetricMap(name))
            for name, slot in info.measurements.items()
        }
        for name in spec.metrics:
            mapping = spec.metric_map(name)
            if mapping is None:
                metrics[name] = None
                continue
            slot = info.measurements.get(mapping.measurement)
            if slot is None:
                metrics.pop(name, None)  # mapped to what this machine does not measure
            else:
                metrics[name] = MetricTarget(slot.series_id, slot.type, mapping)
        return MachineTarget(info.asset_id, "/".join(machine_path(path)), metrics)
