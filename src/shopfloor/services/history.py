"""Reading the historian for one tenant: latest values, series history, events, dead letters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shopfloor.domain.assets import Asset, Series
from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.query import Agg, AggRow, StoredDeadLetter, StoredEvent, buckets, parse_interval
from shopfloor.domain.records import Sample
from shopfloor.domain.tenancy import TenantContext
from shopfloor.ports.store import Historian
from shopfloor.services.registry import RegistryService

DEFAULT_STALENESS_US = 300 * 1_000_000


@dataclass(frozen=True, slots=True)
class LatestValue:
    series: Series
    sample: Sample | None


@dataclass(frozen=True, slots=True)
class AssetLatest:
    asset: Asset
    values: list[LatestValue]
    state: StoredEvent | None
    status: StoredEvent | None


class HistoryService:
    def __init__(self, registry: RegistryService, store: Historian,
                 default_staleness_us: int = DEFAULT_STALENESS_US) -> None:
        self._registry = registry
        self._store = store
        self.default_staleness_us = default_staleness_us

    def latest(self, ctx: TenantContext, asset_id: int) -> AssetLatest:
        asset = self._registry.asset(ctx, asset_id)
        series = self._registry.series_of(ctx, asset_id)
        samples = self._store.latest([s.id for s in series])
        tid = ctx.require_tenant()
        state = self._store.latest_events(tid, "state", [asset_id]).get(asset_id)
        status = self._store.latest_events(tid, "status", [asset_id]).get(asset_id)
        return AssetLatest(asset, [LatestValue(s, samples.get(s.id)) for s in series], state, status)

    def raw(self, ctx: TenantContext, series_id: int, start_us: int, end_us: int,
            limit: int = 10_000) -> list[Sample]:
        self._registry.series(ctx, series_id)
        _check_window(start_us, end_us)
        return self._store.raw(series_id, start_us, end_us, limit)

    def aggregate(self, ctx: TenantContext, series_id: int, start_us: int, end_us: int, interval: str,
                  agg: Agg, staleness_us: int | None = None) -> list[AggRow]:
        series = self._registry.series(ctx, series_id)
        _check_window(start_us, end_us)
        staleness_us = staleness_us or self.default_staleness_us
        if staleness_us <= 0:
            raise InvalidInput("staleness must be positive")
        site = self._registry.site_of(ctx, self._registry.asset(ctx, series.asset_id))
        bounds = buckets(start_us, end_us, parse_interval(interval), site.timezone)
        return self._store.aggregate(series_id, bounds, agg, staleness_us)

    def events(self, ctx: TenantContext, *, asset_ids: list[int] | None = None, kinds: list[str] | None = None,
               start_us: int | None = None, end_us: int | None = None, limit: int = 1000) -> list[StoredEvent]:
        for a in asset_ids or []:
            self._registry.asset(ctx, a)
        return self._store.events(ctx.require_tenant(), asset_ids=asset_ids, kinds=kinds, start_us=start_us,
                                  end_us=end_us, limit=limit)

    def dead_letters(self, ctx: TenantContext, *, reason: str | None = None, device: str | None = None,
                     limit: int = 100) -> list[StoredDeadLetter]:
        return self._store.dead_letters(ctx.require_tenant(), reason=reason, device=device, limit=limit)

    def dead_letter_counts(self, ctx: TenantContext) -> list[dict[str, Any]]:
        return [{"device": d, "reason": r, "count": c}
                for d, r, c in self._store.dead_letter_counts(ctx.require_tenant())]


def _check_window(start_us: int, end_us: int) -> None:
    if end_us <= start_us:
        raise InvalidInput("'to' must be after 'from'")
