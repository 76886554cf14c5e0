"""Hot-path lookups over the registry: device by broker username, machine by topic path.

Entries are dropped whenever the registry's version changes; the version is read at most every
``check_every_us`` (so a change is seen within that time) or at once after ``invalidate()``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from shopfloor.domain.assets import Asset, Device, Level
from shopfloor.domain.payloads import MachineInfo, MeasurementSlot
from shopfloor.domain.sparkplug import device_grants, node_grant
from shopfloor.domain.topics import asset_prefix
from shopfloor.ports.clock import Clock
from shopfloor.ports.registry import RegistryRepository


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    device: Device
    tenant_slug: str
    prefixes: tuple[str, ...]  # its assets' topic prefixes, and its Sparkplug edge node (domain.sparkplug.node_grant)


class RegistryCache:
    def __init__(self, repo: RegistryRepository, clock: Clock, check_every_us: int = 500_000) -> None:
        self._repo = repo
        self._clock = clock
        self._check_every_us = check_every_us
        self._lock = threading.Lock()
        self._version = -1
        self._checked_at = -(10**18)
        self._devices: dict[str, DeviceInfo | None] = {}
        self._machines: dict[tuple[int, tuple[str, ...]], MachineInfo | None] = {}
        self._tenants: dict[str, int | None] = {}
        self._publishers: dict[tuple[int, tuple[str, ...]], str] = {}

    def invalidate(self) -> None:
        with self._lock:
            self._checked_at = -(10**18)

    def _fresh(self) -> None:
        now = self._clock.now_us()
        if now - self._checked_at < self._check_every_us:
            return
        version = self._repo.version()
        with self._lock:
            self._checked_at = now
            if version != self._version:
                self._version = version
                self._devices.clear()
                self._machines.clear()
                self._tenants.clear()
                self._publishers.clear()

    def generation(self) -> int:
        """The registry version the cached answers belong to (checked as every look-up checks it):
        a caller that memoises answers of its own drops them when this changes."""
        self._fresh()
        return self._version

    def device(self, username: str) -> DeviceInfo | None:
        self._fresh()
        if username in self._devices:
            return self._devices[username]
        info = None
        dev = self._repo.find_device_by_username(username)
        if dev is not None:
            tenant = self._repo.get_tenant(dev.tenant_id)
            if tenant is not None:
                prefixes = []
                for aid in dev.asset_ids:
                    asset = self._repo.get_asset(dev.tenant_id, aid)
                    if asset is not None:
                        prefixes.append(asset_prefix(tenant.slug, asset.path))
                node = next((n for n in self._repo.list_sparkplug_nodes(dev.tenant_id) if n.device_id == dev.id),
                            None)
                prefixes += [node_grant(g, e) for g, e in device_grants(tenant.slug, dev.name, node)]
                info = DeviceInfo(dev, tenant.slug, tuple(prefixes))
        with self._lock:
            self._devices[username] = info
        return info

    def machine(self, tenant_id: int, path: tuple[str, ...]) -> MachineInfo | None:
        self._fresh()
        key = (tenant_id, path)
        if key in self._machines:
            return self._machines[key]
        info = None
        asset = self._repo.find_asset(tenant_id, path)
        if asset is not None and asset.level is Level.MACHINE:
            slots = {s.measurement: MeasurementSlot(s.id, s.type)
                     for s in self._repo.list_series(tenant_id, asset.id)}
            events: frozenset[str] = frozenset()
            if asset.type_name:
                at = self._repo.get_asset_type(tenant_id, asset.type_name)
                if at is not None:
                    events = frozenset(at.events)
                    declared = {m.name for m in at.measurements}
                    slots = {k: v for k, v in slots.items() if k in declared}
            info = MachineInfo(tenant_id, asset.id, slots, events)
        with self._lock:
            self._machines[key] = info
        return info

    def tenant_id(self, slug: str) -> int | None:
        self._fresh()
        if slug in self._tenants:
            return self._tenants[slug]
        tenant = self._repo.find_tenant(slug)
        tid = tenant.id if tenant is not None else None
        with self._lock:
            if len(self._tenants) < 100_000:
                self._tenants[slug] = tid
        return tid

    def publisher(self, tenant_id: int, path: tuple[str, ...]) -> str:
        """The username of the enabled device whose prefix covers ``path`` (the most specific), or ""."""
        self._fresh()
        key = (tenant_id, path)
        if key in self._publishers:
            return self._publishers[key]
        best, best_len = "", -1
        for dev in self._repo.list_devices(tenant_id):
            if not dev.enabled:
                continue
            for aid in dev.asset_ids:
                asset = self._repo.get_asset(tenant_id, aid)
                if asset is not None and path[: len(asset.path)] == asset.path and len(asset.path) > best_len:
                    best, best_len = dev.username, len(asset.path)
        with self._lock:
            self._publishers[key] = best
        return best

    def machine_paths_under(self, tenant_id: int, path: tuple[str, ...]) -> list[tuple[str, ...]]:
        """Paths of the machines at or below the asset at ``path`` (for a gateway bound to a line)."""
        asset = self._repo.find_asset(tenant_id, path)
        if asset is None:
            return []
        if asset.level is Level.MACHINE:
            return [asset.path]
        return [a.path for a in self._repo.list_assets(tenant_id, level=Level.MACHINE)
                if a.path[: len(path)] == path]

    def asset(self, tenant_id: int, asset_id: int) -> Asset | None:
        return self._repo.get_asset(tenant_id, asset_id)
