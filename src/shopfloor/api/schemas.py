"""API request and response bodies (separate from the domain model on purpose)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shopfloor.domain.assets import Asset, AssetType, Device, Series
from shopfloor.domain.tenancy import ApiToken, Role, Tenant


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Slug = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="lower-case letters, digits, '-', '_'")


class TenantIn(Strict):
    slug: str = Slug
    name: str = Field("", max_length=200)


class TenantOut(BaseModel):
    id: int
    slug: str
    name: str
    created_at: str

    @classmethod
    def of(cls, t: Tenant) -> TenantOut:
        return cls(id=t.id, slug=t.slug, name=t.name, created_at=t.created_at.isoformat())


class TokenIn(Strict):
    name: str = Field(min_length=1, max_length=100)
    role: Role = Role.VIEWER


class TokenOut(BaseModel):
    id: int
    name: str
    role: Role
    tenant_id: int | None
    created_at: str
    revoked: bool

    @classmethod
    def of(cls, t: ApiToken) -> TokenOut:
        return cls(id=t.id, name=t.name, role=t.role, tenant_id=t.tenant_id,
                   created_at=t.created_at.isoformat(), revoked=t.revoked)


class TokenCreated(TokenOut):
    token: str = Field(description="The secret. Shown only now; store it safely.")


class MeasurementIO(Strict):
    name: str = Slug
    unit: str = Field("", max_length=40)
    type: Literal["numeric", "boolean", "string"] = "numeric"
    description: str = Field("", max_length=500)


class AssetTypeIn(Strict):
    name: str = Slug
    description: str = Field("", max_length=500)
    attributes: dict[str, Any] = {}
    measurements: list[MeasurementIO] = Field([], max_length=500)
    events: list[str] = Field([], max_length=200)


class AssetTypeOut(AssetTypeIn):
    model_config = ConfigDict(extra="ignore")

    @classmethod
    def of(cls, t: AssetType) -> AssetTypeOut:
        return cls(name=t.name, description=t.description, attributes=t.attributes,
                   measurements=[MeasurementIO(name=m.name, unit=m.unit, type=m.type.value,
                                               description=m.description) for m in t.measurements],
                   events=list(t.events))


class AssetIn(Strict):
    level: Literal["site", "area", "line", "machine"]
    name: str = Slug
    parent_id: int | None = None
    display_name: str = Field("", max_length=200)
    type: str | None = None
    attributes: dict[str, Any] = {}
    timezone: str | None = Field(None, description="IANA time zone; sites only", max_length=64)


class AssetPatch(Strict):
    display_name: str | None = Field(None, max_length=200)
    type: str | None = None
    attributes: dict[str, Any] | None = None
    timezone: str | None = Field(None, max_length=64)


class AssetOut(BaseModel):
    id: int
    level: str
    name: str
    path: str
    parent_id: int | None
    display_name: str
    type: str | None
    attributes: dict[str, Any]
    timezone: str | None

    @classmethod
    def of(cls, a: Asset) -> AssetOut:
        return cls(id=a.id, level=a.level.value, name=a.name, path=a.path_str, parent_id=a.parent_id,
                   display_name=a.display_name or a.name, type=a.type_name, attributes=a.attributes,
                   timezone=a.timezone)


class SeriesOut(BaseModel):
    id: int
    asset_id: int
    measurement: str
    unit: str
    type: str

    @classmethod
    def of(cls, s: Series) -> SeriesOut:
        return cls(id=s.id, asset_id=s.asset_id, measurement=s.measurement, unit=s.unit, type=s.type.value)


class DeviceIn(Strict):
    name: str = Slug
    asset_ids: list[int] = Field(min_length=1, max_length=10_000)
    gateway: bool = False
    description: str = Field("", max_length=500)


class DevicePatch(Strict):
    enabled: bool | None = None
    asset_ids: list[int] | None = Field(None, min_length=1, max_length=10_000)
    description: str | None = Field(None, max_length=500)


class DeviceOut(BaseModel):
    id: int
    name: str
    username: str
    asset_ids: list[int]
    enabled: bool
    gateway: bool
    description: str
    online: bool = False
    last_message: str | None = None
    rejects: int = 0

    @classmethod
    def of(cls, d: Device, **extra: Any) -> DeviceOut:
        return cls(id=d.id, name=d.name, username=d.username, asset_ids=list(d.asset_ids), enabled=d.enabled,
                   gateway=d.gateway, description=d.description, **extra)


class DeviceCreated(DeviceOut):
    secret: str = Field(description="The MQTT password. Shown only now; store it on the device.")


class SampleOut(BaseModel):
    ts: str
    value: float | None
    text: str | None = None
    quality: int


class LatestOut(BaseModel):
    measurement: str
    series_id: int
    unit: str
    ts: str | None
    value: float | str | bool | None
    quality: int | None


class AssetLatestOut(BaseModel):
    asset: AssetOut
    state: str | None
    state_reason: str | None
    state_since: str | None
    status: str | None
    values: list[LatestOut]


class BucketOut(BaseModel):
    start: str
    end: str
    value: float | None
    count: int


class HistoryOut(BaseModel):
    series: SeriesOut
    agg: str | None
    interval: str | None
    points: list[SampleOut] | None = None
    buckets: list[BucketOut] | None = None


class EventOut(BaseModel):
    seq: int
    asset_id: int
    ts: str
    kind: str
    type: str
    data: dict[str, Any]


class DeadLetterOut(BaseModel):
    id: int
    device: str
    topic: str
    reason: str
    detail: str
    received_at: str
    payload: str = Field(description="The first bytes of the message, as text (undecodable bytes replaced).")


class StatsOut(BaseModel):
    messages_per_s: float
    points_per_s: float
    messages_total: int
    points_total: int
    rejected_total: int
    devices_online: int
    rejects: list[dict[str, Any]]


class ApplyOut(BaseModel):
    created: dict[str, int]
    updated: dict[str, int]
    unchanged: dict[str, int]
    device_secrets: list[dict[str, Any]]
