"""In-memory fakes of the ports, for fast unit tests of services.

Each fake passes the same contract suite as the real implementations (see
``shopfloor.testing.registry_contract``), so a service tested against a fake behaves the same on
DuckDB or PostgreSQL.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections.abc import Callable, Sequence
from typing import Any

from shopfloor.domain.assets import Asset, AssetType, Device, Level, Series, ValueType
from shopfloor.domain.device_fieldbus import DeviceFieldbus
from shopfloor.domain.errors import Conflict, NotFound
from shopfloor.domain.sparkplug import SparkplugNode
from shopfloor.domain.tenancy import ApiToken, Role, Tenant
from shopfloor.domain.timeutil import from_us, now_us
from shopfloor.ports.clock import Clock


class FixedClock:
    """A ``Clock`` that stands still until told to move."""

    def __init__(self, now_us: int = 1_700_000_000_000_000) -> None:
        self._now = now_us

    def now_us(self) -> int:
        return self._now

    def advance(self, us: int) -> int:
        """Move the clock forward by ``us`` microseconds; return the new time."""
        self._now += us
        return self._now

    def set(self, now_us: int) -> None:
        self._now = now_us


class InMemoryRegistry:
    """``RegistryRepository`` in plain dicts. Ids are never reused; stored values are copied in and out."""

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._now: Callable[[], int] = clock.now_us if clock is not None else now_us
        self._lock = threading.RLock()
        self._ids: dict[str, int] = {}
        self._version = 0
        self._tenants: dict[int, Tenant] = {}
        self._tokens: dict[int, ApiToken] = {}
        self._types: dict[tuple[int, str], AssetType] = {}
        self._assets: dict[int, Asset] = {}
        self._series: dict[int, Series] = {}
        self._devices: dict[int, Device] = {}
        self._sparkplug: dict[int, SparkplugNode] = {}  # by device id
        self._fieldbus: dict[int, DeviceFieldbus] = {}  # by device id

    def _next_id(self, kind: str) -> int:
        self._ids[kind] = self._ids.get(kind, 0) + 1
        return self._ids[kind]

    def _changed(self) -> None:
        self._version += 1

    def _require_tenant(self, tenant_id: int) -> None:
        if tenant_id not in self._tenants:
            raise NotFound(f"tenant {tenant_id} does not exist")

    def _require_assets(self, tenant_id: int, asset_ids: Sequence[int]) -> None:
        for asset_id in asset_ids:
            if self.get_asset(tenant_id, asset_id) is None:
                raise NotFound(f"asset {asset_id} does not exist in this tenant")

    # -- tenants -------------------------------------------------------------------------------

    def create_tenant(self, slug: str, name: str) -> Tenant:
        with self._lock:
            if self.find_tenant(slug) is not None:
                raise Conflict(f"a tenant named {slug!r} already exists")
            tenant = Tenant(id=self._next_id("tenant"), slug=slug, name=name, created_at=from_us(self._now()))
            self._tenants[tenant.id] = tenant
            self._changed()
            return tenant

    def get_tenant(self, tenant_id: int) -> Tenant | None:
        with self._lock:
            return self._tenants.get(tenant_id)

    def find_tenant(self, slug: str) -> Tenant | None:
        with self._lock:
            return next((t for t in self._tenants.values() if t.slug == slug), None)

    def list_tenants(self) -> list[Tenant]:
        with self._lock:
            return sorted(self._tenants.values(), key=lambda t: t.id)

    # -- tokens --------------------------------------------------------------------------------

    def create_token(self, tenant_id: int | None, name: str, role: Role, token_hash: str) -> ApiToken:
        with self._lock:
            if tenant_id is not None:
                self._require_tenant(tenant_id)
            if any(t.token_hash == token_hash for t in self._tokens.values()):
                raise Conflict("a token with this hash already exists")
            token = ApiToken(id=self._next_id("token"), tenant_id=tenant_id, name=name, role=role,
                             token_hash=token_hash, created_at=from_us(self._now()))
            self._tokens[token.id] = token
            self._changed()
            return token

    def find_token(self, token_hash: str) -> ApiToken | None:
        with self._lock:
            live = (t for t in self._tokens.values() if t.token_hash == token_hash and not t.revoked)
            return next(live, None)

    def list_tokens(self, tenant_id: int | None) -> list[ApiToken]:
        with self._lock:
            return sorted((t for t in self._tokens.values() if t.tenant_id == tenant_id), key=lambda t: t.id)

    def revoke_token(self, tenant_id: int | None, token_id: int) -> None:
        with self._lock:
            token = self._tokens.get(token_id)
            if token is None or token.tenant_id != tenant_id:
                raise NotFound(f"token {token_id} does not exist")
            self._tokens[token_id] = dataclasses.replace(token, revoked=True)
            self._changed()

    # -- asset types ---------------------------------------------------------------------------

    def put_asset_type(self, asset_type: AssetType) -> AssetType:
        with self._lock:
            self._require_tenant(asset_type.tenant_id)
            stored = copy.deepcopy(asset_type)
            self._types[(asset_type.tenant_id, asset_type.name)] = stored
            self._changed()
            return copy.deepcopy(stored)

    def get_asset_type(self, tenant_id: int, name: str) -> AssetType | None:
        with self._lock:
            return copy.deepcopy(self._types.get((tenant_id, name)))

    def list_asset_types(self, tenant_id: int) -> list[AssetType]:
        with self._lock:
            found = [t for (tid, _), t in self._types.items() if tid == tenant_id]
            return [copy.deepcopy(t) for t in sorted(found, key=lambda t: t.name)]

    def delete_asset_type(self, tenant_id: int, name: str) -> None:
        with self._lock:
            if (tenant_id, name) not in self._types:
                raise NotFound(f"asset type {name!r} does not exist")
            if any(a.tenant_id == tenant_id and a.type_name == name for a in self._assets.values()):
                raise Conflict(f"asset type {name!r} is still used by assets; change their type first")
            del self._types[(tenant_id, name)]
            self._changed()

    # -- assets --------------------------------------------------------------------------------

    def create_asset(self, tenant_id: int, parent_id: int | None, level: Level, name: str, *,
                     display_name: str = "", type_name: str | None = None,
                     attributes: dict[str, Any] | None = None, timezone: str | None = None) -> Asset:
        with self._lock:
            self._require_tenant(tenant_id)
            if parent_id is None:
                path: tuple[str, ...] = (name,)
            else:
                parent = self._assets.get(parent_id)
                if parent is None or parent.tenant_id != tenant_id:
                    raise NotFound(f"parent asset {parent_id} does not exist")
                path = (*parent.path, name)
            if self.find_asset(tenant_id, path) is not None:
                raise Conflict(f"an asset named {name!r} already exists at {'/'.join(path)!r}")
            asset = Asset(id=self._next_id("asset"), tenant_id=tenant_id, parent_id=parent_id, level=level,
                          name=name, path=path, display_name=display_name, type_name=type_name,
                          attributes=copy.deepcopy(attributes or {}), timezone=timezone)
            self._assets[asset.id] = asset
            self._changed()
            return copy.deepcopy(asset)

    def update_asset(self, tenant_id: int, asset_id: int, *, display_name: str | None = None,
                     type_name: str | None = None, attributes: dict[str, Any] | None = None,
                     timezone: str | None = None) -> Asset:
        with self._lock:
            asset = self._own_asset(tenant_id, asset_id)
            asset = dataclasses.replace(
                asset,
                display_name=asset.display_name if display_name is None else display_name,
                type_name=asset.type_name if type_name is None else type_name,
                attributes=asset.attributes if attributes is None else copy.deepcopy(attributes),
                timezone=asset.timezone if timezone is None else timezone,
            )
            self._assets[asset_id] = asset
            self._changed()
            return copy.deepcopy(asset)

    def _own_asset(self, tenant_id: int, asset_id: int) -> Asset:
        asset = self._assets.get(asset_id)
        if asset is None or asset.tenant_id != tenant_id:
            raise NotFound(f"asset {asset_id} does not exist")
        return asset

    def get_asset(self, tenant_id: int, asset_id: int) -> Asset | None:
        with self._lock:
            asset = self._assets.get(asset_id)
            return copy.deepcopy(asset) if asset is not None and asset.tenant_id == tenant_id else None

    def find_asset(self, tenant_id: int, path: Sequence[str]) -> Asset | None:
        with self._lock:
            wanted = tuple(path)
            matches = (a for a in self._assets.values() if a.tenant_id == tenant_id and a.path == wanted)
            found = next(matches, None)
            return copy.deepcopy(found)

    def list_assets(self, tenant_id: int, *, level: Level | None = None,
                    parent_id: int | None = None) -> list[Asset]:
        with self._lock:
            found = [a for a in self._assets.values()
                     if a.tenant_id == tenant_id
                     and (level is None or a.level == level)
                     and (parent_id is None or a.parent_id == parent_id)]
            return [copy.deepcopy(a) for a in sorted(found, key=lambda a: a.path)]

    def delete_asset(self, tenant_id: int, asset_id: int) -> None:
        with self._lock:
            self._own_asset(tenant_id, asset_id)
            if any(a.parent_id == asset_id for a in self._assets.values()):
                raise Conflict(f"asset {asset_id} still has child assets; delete them first")
            bound = sorted(d.name for d in self._devices.values() if asset_id in d.asset_ids)
            if bound:
                names = ", ".join(bound)
                raise Conflict(f"asset {asset_id} is bound to devices ({names}); unbind them first")
            for series_id in [s.id for s in self._series.values() if s.asset_id == asset_id]:
                del self._series[series_id]
            del self._assets[asset_id]
            self._changed()

    # -- series --------------------------------------------------------------------------------

    def ensure_series(self, tenant_id: int, asset_id: int, measurement: str, unit: str,
                      value_type: ValueType) -> Series:
        """The series for (asset, measurement), created if missing; unit and type updated if changed."""
        with self._lock:
            self._own_asset(tenant_id, asset_id)
            found = next((s for s in self._series.values()
                          if s.asset_id == asset_id and s.measurement == measurement), None)
            if found is not None and found.unit == unit and found.type == value_type:
                return found
            if found is None:
                found = Series(id=self._next_id("series"), tenant_id=tenant_id, asset_id=asset_id,
                               measurement=measurement, unit=unit, type=value_type)
            else:
                found = dataclasses.replace(found, unit=unit, type=value_type)
            self._series[found.id] = found
            self._changed()
            return found

    def get_series(self, tenant_id: int, series_id: int) -> Series | None:
        with self._lock:
            series = self._series.get(series_id)
            return series if series is not None and series.tenant_id == tenant_id else None

    def list_series(self, tenant_id: int, asset_id: int | None = None) -> list[Series]:
        with self._lock:
            return sorted((s for s in self._series.values()
                           if s.tenant_id == tenant_id and (asset_id is None or s.asset_id == asset_id)),
                          key=lambda s: s.id)

    # -- devices -------------------------------------------------------------------------------

    def create_device(self, tenant_id: int, name: str, username: str, secret_hash: str,
                      asset_ids: Sequence[int], *, gateway: bool = False, description: str = "") -> Device:
        with self._lock:
            self._require_tenant(tenant_id)
            ids = tuple(dict.fromkeys(asset_ids))
            self._require_assets(tenant_id, ids)
            if self.find_device(tenant_id, name) is not None:
                raise Conflict(f"a device named {name!r} already exists")
            if self.find_device_by_username(username) is not None:
                raise Conflict(f"the broker username {username!r} is already taken")
            device = Device(id=self._next_id("device"), tenant_id=tenant_id, name=name, username=username,
                            secret_hash=secret_hash, asset_ids=ids, gateway=gateway,
                            created_at=from_us(self._now()), description=description)
            self._devices[device.id] = device
            self._changed()
            return device

    def update_device(self, tenant_id: int, device_id: int, *, secret_hash: str | None = None,
                      enabled: bool | None = None, asset_ids: Sequence[int] | None = None,
                      description: str | None = None) -> Device:
        with self._lock:
            device = self.get_device(tenant_id, device_id)
            if device is None:
                raise NotFound(f"device {device_id} does not exist")
            ids = device.asset_ids if asset_ids is None else tuple(dict.fromkeys(asset_ids))
            self._require_assets(tenant_id, ids)
            device = dataclasses.replace(
                device,
                secret_hash=device.secret_hash if secret_hash is None else secret_hash,
                enabled=device.enabled if enabled is None else enabled,
                asset_ids=ids,
                description=device.description if description is None else description,
            )
            self._devices[device_id] = device
            self._changed()
            return device

    def get_device(self, tenant_id: int, device_id: int) -> Device | None:
        with self._lock:
            device = self._devices.get(device_id)
            return device if device is not None and device.tenant_id == tenant_id else None

    def find_device(self, tenant_id: int, name: str) -> Device | None:
        with self._lock:
            matches = (d for d in self._devices.values() if d.tenant_id == tenant_id and d.name == name)
            return next(matches, None)

    def find_device_by_username(self, username: str) -> Device | None:
        with self._lock:
            return next((d for d in self._devices.values() if d.username == username), None)

    def list_devices(self, tenant_id: int) -> list[Device]:
        with self._lock:
            owned = (d for d in self._devices.values() if d.tenant_id == tenant_id)
            return sorted(owned, key=lambda d: d.name)

    def delete_device(self, tenant_id: int, device_id: int) -> None:
        with self._lock:
            if self.get_device(tenant_id, device_id) is None:
                raise NotFound(f"device {device_id} does not exist")
            del self._devices[device_id]
            self._sparkplug.pop(device_id, None)
            self._fieldbus.pop(device_id, None)
            self._changed()

    # -- Sparkplug edge nodes ------------------------------------------------------------------

    def set_sparkplug_node(self, tenant_id: int, device_id: int,
                           node: SparkplugNode | None) -> SparkplugNode | None:
        with self._lock:
            if self.get_device(tenant_id, device_id) is None:
                raise NotFound(f"device {device_id} does not exist")
            if node is None:
                if self._sparkplug.pop(device_id, None) is not None:
                    self._changed()
                return None
            taken = next((n for n in self._sparkplug.values() if n.device_id != device_id
                          and (n.group, n.edge_node) == (node.group, node.edge_node)), None)
            if taken is not None:
                raise Conflict(f"edge node {node.group}/{node.edge_node} is already device {taken.device_id}")
            stored = dataclasses.replace(copy.deepcopy(node), tenant_id=tenant_id, device_id=device_id)
            self._sparkplug[device_id] = stored
            self._changed()
            return copy.deepcopy(stored)

    def list_sparkplug_nodes(self, tenant_id: int | None = None) -> list[SparkplugNode]:
        with self._lock:
            found = [n for n in self._sparkplug.values() if tenant_id is None or n.tenant_id == tenant_id]
            return [copy.deepcopy(n) for n in sorted(found, key=lambda n: (n.group, n.edge_node))]

    # -- field-bus sections --------------------------------------------------------------------

    def set_device_fieldbus(self, tenant_id: int, device_id: int,
                            sections: DeviceFieldbus | None) -> DeviceFieldbus | None:
        with self._lock:
            if self.get_device(tenant_id, device_id) is None:
                raise NotFound(f"device {device_id} does not exist")
            if sections is None or sections.empty:
                if self._fieldbus.pop(device_id, None) is not None:
                    self._changed()
                return None
            stored = dataclasses.replace(sections, tenant_id=tenant_id, device_id=device_id)
            self._fieldbus[device_id] = stored
            self._changed()
            return stored

    def list_device_fieldbus(self, tenant_id: int) -> list[DeviceFieldbus]:
        with self._lock:
            return sorted((f for f in self._fieldbus.values() if f.tenant_id == tenant_id), key=lambda f: f.device_id)

    def version(self) -> int:
        return self._version
