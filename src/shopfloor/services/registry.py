"""Registry use cases: tenants, tokens, asset types, the asset tree, devices.

Every method takes the caller's ``TenantContext`` and checks its role here, in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from shopfloor.domain.assets import (
    Asset,
    AssetType,
    Device,
    Level,
    MeasurementDef,
    Series,
    ValueType,
    device_username,
)
from shopfloor.domain.credentials import hash_secret, new_device_secret
from shopfloor.domain.errors import Conflict, InvalidInput, NotFound
from shopfloor.domain.query import zone
from shopfloor.domain.slugs import check_slug
from shopfloor.domain.tenancy import ApiToken, Role, Tenant, TenantContext, hash_token, new_token_secret
from shopfloor.ports.registry import RegistryRepository

PLATFORM = TenantContext(None, None, Role.ADMIN, "platform", platform=True)

DeviceListener = Callable[[Device], None]


@dataclass(frozen=True, slots=True)
class IssuedSecret:
    """A secret shown exactly once, with what it belongs to."""

    id: int
    name: str
    secret: str
    username: str = ""


class RegistryService:
    def __init__(self, repo: RegistryRepository) -> None:
        self.repo = repo
        self._device_listeners: list[DeviceListener] = []

    def on_device_revoked(self, listener: DeviceListener) -> None:
        """Call ``listener`` when a device is disabled, rotated or deleted (to cut its session)."""
        self._device_listeners.append(listener)

    def _revoked(self, device: Device) -> None:
        for listener in self._device_listeners:
            listener(device)

    # -- platform ---------------------------------------------------------------------------
    def is_initialised(self) -> bool:
        return bool(self.repo.list_tokens(None))

    def init_platform(self, token_name: str = "platform-admin") -> IssuedSecret:
        if self.is_initialised():
            raise Conflict("the platform is already initialised; create further admin tokens with "
                           "'shopfloor admin token'")
        return self.issue_platform_token(token_name)

    def issue_platform_token(self, token_name: str) -> IssuedSecret:
        secret = new_token_secret()
        tok = self.repo.create_token(None, token_name, Role.ADMIN, hash_token(secret))
        return IssuedSecret(tok.id, tok.name, secret)

    # -- tenants -----------------------------------------------------------------------------
    def create_tenant(self, ctx: TenantContext, slug: str, name: str = "") -> Tenant:
        ctx.require_platform()
        check_slug(slug, "tenant")
        if self.repo.find_tenant(slug) is not None:
            raise Conflict(f"tenant {slug!r} already exists")
        return self.repo.create_tenant(slug, name or slug)

    def list_tenants(self, ctx: TenantContext) -> list[Tenant]:
        if ctx.platform:
            return self.repo.list_tenants()
        tenant = self.repo.get_tenant(ctx.require_tenant())
        return [tenant] if tenant else []

    def tenant(self, ctx: TenantContext, slug: str) -> Tenant:
        tenant = self.repo.find_tenant(slug)
        if tenant is None or (not ctx.platform and tenant.id != ctx.tenant_id):
            raise NotFound(f"no tenant {slug!r}")
        return tenant

    # -- tokens ------------------------------------------------------------------------------
    def create_token(self, ctx: TenantContext, name: str, role: Role,
                     tenant_slug: str | None = None) -> tuple[ApiToken, str]:
        """A tenant admin creates tokens of its tenant; the platform admin for any tenant."""
        if tenant_slug is not None and ctx.platform:
            tenant_id: int = self.tenant(ctx, tenant_slug).id
        else:
            ctx.require(Role.ADMIN)
            tenant_id = ctx.require_tenant()
            if tenant_slug is not None:
                self.tenant(ctx, tenant_slug)  # NotFound unless it names the caller's own tenant
        if not name.strip():
            raise InvalidInput("a token needs a name")
        secret = new_token_secret()
        tok = self.repo.create_token(tenant_id, name.strip()[:100], role, hash_token(secret))
        return tok, secret

    def list_tokens(self, ctx: TenantContext) -> list[ApiToken]:
        ctx.require(Role.ADMIN)
        return self.repo.list_tokens(None if ctx.platform else ctx.require_tenant())

    def revoke_token(self, ctx: TenantContext, token_id: int) -> None:
        ctx.require(Role.ADMIN)
        self.repo.revoke_token(None if ctx.platform else ctx.require_tenant(), token_id)

    # -- asset types -------------------------------------------------------------------------
    def put_asset_type(self, ctx: TenantContext, name: str, *, description: str = "",
                       attributes: dict[str, Any] | None = None,
                       measurements: Sequence[MeasurementDef] = (), events: Sequence[str] = ()) -> AssetType:
        ctx.require(Role.ENGINEER)
        tid = ctx.require_tenant()
        check_slug(name, "asset type")
        seen: set[str] = set()
        for m in measurements:
            check_slug(m.name, "measurement")
            if m.name in seen:
                raise InvalidInput(f"measurement {m.name!r} is declared twice in type {name!r}")
            seen.add(m.name)
        for e in events:
            check_slug(e, "event type")
        at = self.repo.put_asset_type(AssetType(tid, name, description, dict(attributes or {}),
                                                tuple(measurements), tuple(events)))
        for machine in self.repo.list_assets(tid, level=Level.MACHINE):
            if machine.type_name == name:
                self._ensure_series(tid, machine.id, at)
        return at

    def asset_type(self, ctx: TenantContext, name: str) -> AssetType:
        at = self.repo.get_asset_type(ctx.require_tenant(), name)
        if at is None:
            raise NotFound(f"no asset type {name!r}")
        return at

    def list_asset_types(self, ctx: TenantContext) -> list[AssetType]:
        return self.repo.list_asset_types(ctx.require_tenant())

    def delete_asset_type(self, ctx: TenantContext, name: str) -> None:
        ctx.require(Role.ENGINEER)
        tid = ctx.require_tenant()
        self.asset_type(ctx, name)
        users = [a.path_str for a in self.repo.list_assets(tid) if a.type_name == name]
        if users:
            raise Conflict(f"asset type {name!r} is used by {', '.join(users[:5])}")
        self.repo.delete_asset_type(tid, name)

    # -- assets ------------------------------------------------------------------------------
    def create_asset(self, ctx: TenantContext, level: Level, name: str, *, parent_id: int | None = None,
                     display_name: str = "", type_name: str | None = None,
                     attributes: dict[str, Any] | None = None, timezone: str | None = None) -> Asset:
        ctx.require(Role.ENGINEER)
        tid = ctx.require_tenant()
        check_slug(name, level.value)
        if level is Level.SITE:
            if parent_id is not None:
                raise InvalidInput("a site has no parent")
            zone(timezone or "UTC")
            timezone = timezone or "UTC"
        else:
            if timezone is not None:
                raise InvalidInput("only sites carry a time zone")
            if parent_id is None:
                raise InvalidInput(f"a {level.value} needs a parent_id (a {level.parent_level})")
            parent = self.asset(ctx, parent_id)
            if parent.level is not level.parent_level:
                raise InvalidInput(f"the parent of a {level.value} must be a {level.parent_level}, "
                                   f"not a {parent.level.value}")
        at = None
        if type_name is not None:
            at = self.asset_type(ctx, type_name)
        asset = self.repo.create_asset(tid, parent_id, level, name, display_name=display_name,
                                       type_name=type_name, attributes=attributes, timezone=timezone)
        if at is not None:
            self._ensure_series(tid, asset.id, at)
        return asset

    def update_asset(self, ctx: TenantContext, asset_id: int, *, display_name: str | None = None,
                     type_name: str | None = None, attributes: dict[str, Any] | None = None,
                     timezone: str | None = None) -> Asset:
        ctx.require(Role.ENGINEER)
        tid = ctx.require_tenant()
        asset = self.asset(ctx, asset_id)
        if timezone is not None:
            if asset.level is not Level.SITE:
                raise InvalidInput("only sites carry a time zone")
            zone(timezone)
        at = self.asset_type(ctx, type_name) if type_name is not None else None
        updated = self.repo.update_asset(tid, asset_id, display_name=display_name, type_name=type_name,
                                         attributes=attributes, timezone=timezone)
        if at is not None:
            self._ensure_series(tid, asset_id, at)
        return updated

    def asset(self, ctx: TenantContext, asset_id: int) -> Asset:
        asset = self.repo.get_asset(ctx.require_tenant(), asset_id)
        if asset is None:
            raise NotFound(f"no asset {asset_id}")
        return asset

    def list_assets(self, ctx: TenantContext, level: Level | None = None,
                    parent_id: int | None = None) -> list[Asset]:
        return self.repo.list_assets(ctx.require_tenant(), level=level, parent_id=parent_id)

    def delete_asset(self, ctx: TenantContext, asset_id: int) -> None:
        ctx.require(Role.ENGINEER)
        self.asset(ctx, asset_id)
        self.repo.delete_asset(ctx.require_tenant(), asset_id)

    def site_of(self, ctx: TenantContext, asset: Asset) -> Asset:
        site = self.repo.find_asset(ctx.require_tenant(), asset.path[:1])
        if site is None:
            raise NotFound(f"asset {asset.id} has no site")
        return site

    def series_of(self, ctx: TenantContext, asset_id: int) -> list[Series]:
        self.asset(ctx, asset_id)
        return self.repo.list_series(ctx.require_tenant(), asset_id)

    def series(self, ctx: TenantContext, series_id: int) -> Series:
        s = self.repo.get_series(ctx.require_tenant(), series_id)
        if s is None:
            raise NotFound(f"no series {series_id}")
        return s

    def _ensure_series(self, tenant_id: int, asset_id: int, at: AssetType) -> None:
        for m in at.measurements:
            self.repo.ensure_series(tenant_id, asset_id, m.name, m.unit, m.type)

    # -- devices -----------------------------------------------------------------------------
    def create_device(self, ctx: TenantContext, name: str, asset_ids: Sequence[int], *,
                      gateway: bool = False, description: str = "") -> tuple[Device, str]:
        """Create a device and return it with its secret (shown this once, stored hashed)."""
        ctx.require(Role.ENGINEER)
        tid = ctx.require_tenant()
        check_slug(name, "device")
        assets = [self.asset(ctx, a) for a in asset_ids]
        if not assets:
            raise InvalidInput("a device is bound to at least one asset")
        if len(assets) > 1 and not gateway:
            raise InvalidInput("only a gateway (gateway: true) may publish for several assets")
        if self.repo.find_device(tid, name) is not None:
            raise Conflict(f"device {name!r} already exists")
        slug = self._tenant_slug(ctx)
        secret = new_device_secret()
        device = self.repo.create_device(tid, name, device_username(slug, name), hash_secret(secret),
                                         [a.id for a in assets], gateway=gateway, description=description)
        return device, secret

    def device(self, ctx: TenantContext, device_id: int) -> Device:
        dev = self.repo.get_device(ctx.require_tenant(), device_id)
        if dev is None:
            raise NotFound(f"no device {device_id}")
        return dev

    def list_devices(self, ctx: TenantContext) -> list[Device]:
        return self.repo.list_devices(ctx.require_tenant())

    def rotate_device_secret(self, ctx: TenantContext, device_id: int) -> tuple[Device, str]:
        ctx.require(Role.ENGINEER)
        self.device(ctx, device_id)
        secret = new_device_secret()
        dev = self.repo.update_device(ctx.require_tenant(), device_id, secret_hash=hash_secret(secret))
        self._revoked(dev)
        return dev, secret

    def update_device(self, ctx: TenantContext, device_id: int, *, enabled: bool | None = None,
                      asset_ids: Sequence[int] | None = None, description: str | None = None) -> Device:
        ctx.require(Role.ENGINEER)
        before = self.device(ctx, device_id)
        if asset_ids is not None:
            for a in asset_ids:
                self.asset(ctx, a)
            if not asset_ids or (len(asset_ids) > 1 and not before.gateway):
                raise InvalidInput("a device is bound to one asset (a gateway to one or more)")
        dev = self.repo.update_device(ctx.require_tenant(), device_id, enabled=enabled,
                                      asset_ids=asset_ids, description=description)
        if (before.enabled and not dev.enabled) or (asset_ids is not None):
            self._revoked(dev)
        return dev

    def delete_device(self, ctx: TenantContext, device_id: int) -> None:
        ctx.require(Role.ENGINEER)
        dev = self.device(ctx, device_id)
        self.repo.delete_device(ctx.require_tenant(), device_id)
        self._revoked(dev)

    def device_prefix_paths(self, device: Device) -> list[tuple[str, ...]]:
        out = []
        for aid in device.asset_ids:
            asset = self.repo.get_asset(device.tenant_id, aid)
            if asset is not None:
                out.append(asset.path)
        return out

    def _tenant_slug(self, ctx: TenantContext) -> str:
        if ctx.tenant_slug:
            return ctx.tenant_slug
        tenant = self.repo.get_tenant(ctx.require_tenant())
        if tenant is None:
            raise NotFound("tenant vanished")
        return tenant.slug


def measurement_defs(raw: Sequence[dict[str, Any]]) -> list[MeasurementDef]:
    out = []
    for m in raw:
        try:
            vt = ValueType(m.get("type", "numeric"))
        except ValueError:
            raise InvalidInput(f"measurement {m.get('name')!r}: type must be numeric, boolean or string") from None
        out.append(MeasurementDef(str(m["name"]), str(m.get("unit", "")), vt, str(m.get("description", ""))))
    return out
