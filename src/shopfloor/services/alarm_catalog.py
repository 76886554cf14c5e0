"""What the rule engines are configured with: each tenant's rules (from the alarm store) and its
assets and series (from the registry), and which tenant a series belongs to.

Samples carry only a series id; ``tenant_of`` answers from a map that is rebuilt when a series
id it has never seen turns up (a new machine, a new measurement).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shopfloor.domain.alarms.rules import Rule, rule_from_obj
from shopfloor.domain.alarms.templates import AssetRef
from shopfloor.domain.errors import ShopfloorError
from shopfloor.ports.alarms import AlarmStore, RuleRecord
from shopfloor.ports.registry import RegistryRepository

log = logging.getLogger(__name__)


def rule_of(record: RuleRecord) -> Rule:
    """The domain rule of a stored one (id, name and enabled live beside the spec)."""
    return rule_from_obj(spec_with(record.spec, record.id, record.name, record.enabled))


def spec_with(spec: Mapping[str, Any], rule_id: int, name: str, enabled: bool) -> dict[str, Any]:
    return {**{k: v for k, v in spec.items() if k not in ("id", "name", "enabled")}, "id": rule_id, "name": name,
            "enabled": enabled}


def spec_without_identity(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What the store keeps as the spec: the rule without id, name and enabled."""
    return {k: v for k, v in obj.items() if k not in ("id", "name", "enabled")}


@dataclass(slots=True)
class TenantCatalog:
    rules: list[Rule] = field(default_factory=list)
    assets: list[AssetRef] = field(default_factory=list)
    series: dict[int, tuple[int, str]] = field(default_factory=dict)  # series id -> (asset id, measurement)
    broken: list[str] = field(default_factory=list)  # stored rules that no longer parse, with why


class Catalog:
    def __init__(self, registry: RegistryRepository, store: AlarmStore) -> None:
        self._registry = registry
        self._store = store
        self.tenants: dict[int, TenantCatalog] = {}
        self.series_tenant: dict[int, int] = {}  # series id -> tenant id

    def load(self) -> None:
        """Read everything again (rules edited, assets or series added)."""
        tenants: dict[int, TenantCatalog] = {}
        series_tenant: dict[int, int] = {}
        records: dict[int, list[RuleRecord]] = {}
        for rec in self._store.rules():
            records.setdefault(rec.tenant_id, []).append(rec)
        for tenant in self._registry.list_tenants():
            cat = TenantCatalog()
            for a in self._registry.list_assets(tenant.id):
                cat.assets.append(AssetRef.of_path(a.id, a.path_str, a.type_name))
            for s in self._registry.list_series(tenant.id):
                cat.series[s.id] = (s.asset_id, s.measurement)
                series_tenant[s.id] = tenant.id
            for rec in records.get(tenant.id, []):
                try:
                    cat.rules.append(rule_of(rec))
                except ShopfloorError as exc:
                    cat.broken.append(f"rule {rec.id} ({rec.name}): {exc.message}")
                    log.warning("tenant %d: rule %d is not evaluated: %s", tenant.id, rec.id, exc.message)
            tenants[tenant.id] = cat
        self.tenants, self.series_tenant = tenants, series_tenant

    def tenant_of(self, series_id: int) -> int | None:
        return self.series_tenant.get(series_id)

    def knows(self, series_id: int) -> bool:
        return series_id in self.series_tenant
