"""The retention job: drop raw samples and rollups older than their asset type's policy allows.

Every series belongs to an asset; the asset's type may override the default policy with the
attributes ``retention_raw_days``, ``retention_rollup_1m_days`` and ``retention_rollup_1h_days``
(see ``domain.retention``). ``RetentionService.apply`` groups a tenant's series by the policy that
applies to them and, per group, asks the store to drop raw samples and each rollup level older
than the group's cutoffs. A type whose retention attributes are malformed is skipped (nothing of
it is deleted) and named in the report: guessing could delete what someone meant to keep.

Events are not per series and the store keeps them in one table for all tenants, so they follow
the default raw cutoff, and only in a run over all tenants (``tenant_id=None``).

Series that no longer exist in the registry (their asset was deleted) are not touched.
``run_periodically`` runs ``apply`` at once and then every ``every_s`` seconds until stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass

from shopfloor.domain.assets import AssetType
from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.retention import RetentionPolicy
from shopfloor.ports.clock import Clock
from shopfloor.ports.registry import RegistryRepository
from shopfloor.ports.store import Historian

log = logging.getLogger(__name__)

ROLLUP_LEVELS = ("1m", "1h")


@dataclass(frozen=True, slots=True)
class RetentionGroup:
    """The series of one tenant that share a policy, and what was dropped for them."""

    tenant_id: int
    asset_types: tuple[str | None, ...]  # None: assets without a type
    policy: RetentionPolicy
    cutoffs: dict[str, int]  # "raw", "1m", "1h": oldest timestamp kept
    series: int
    deleted: dict[str, int]  # "raw", "1m", "1h": samples and rollup rows dropped


@dataclass(frozen=True, slots=True)
class SkippedType:
    tenant_id: int
    asset_type: str
    reason: str


@dataclass(frozen=True, slots=True)
class RetentionReport:
    now_us: int
    groups: tuple[RetentionGroup, ...]
    skipped: tuple[SkippedType, ...]
    events_deleted: int | None  # None: events were not considered (a run for one tenant)

    def deleted(self, level: str) -> int:
        """Rows dropped at ``level`` ("raw", "1m", "1h") over all groups."""
        return sum(g.deleted[level] for g in self.groups)

    def summary(self) -> str:
        parts = [f"{self.deleted(level)} {name}" for level, name in
                 (("raw", "raw samples"), ("1m", "1-minute rollups"), ("1h", "1-hour rollups"))]
        if self.events_deleted is not None:
            parts.append(f"{self.events_deleted} events")
        text = "retention dropped " + ", ".join(parts)
        if self.skipped:
            text += "; skipped asset types: " + ", ".join(
                f"{s.asset_type} (tenant {s.tenant_id}: {s.reason})" for s in self.skipped)
        return text


class RetentionService:
    def __init__(self, registry_repo: RegistryRepository, store: Historian, clock: Clock,
                 default_policy: RetentionPolicy) -> None:
        self._repo = registry_repo
        self._store = store
        self._clock = clock
        self.default_policy = default_policy

    def apply(self, tenant_id: int | None = None) -> RetentionReport:
        """Apply retention to one tenant, or to all (and then to events too)."""
        now = self._clock.now_us()
        tenants = [t.id for t in self._repo.list_tenants()] if tenant_id is None else [tenant_id]
        groups: list[RetentionGroup] = []
        skipped: list[SkippedType] = []
        for tid in tenants:
            found, problems = self._groups(tid)
            skipped.extend(problems)
            for (policy, types), series_ids in found.items():
                groups.append(self._apply_group(tid, types, policy, series_ids, now))
        events = None
        if tenant_id is None:
            events = self._store.delete_events_before(self.default_policy.cutoffs(now)["raw"])
        return RetentionReport(now, tuple(groups), tuple(skipped), events)

    def policy_for(self, asset_type: AssetType | None) -> RetentionPolicy:
        """The policy of an asset type (the default where the type does not override it).
        Raises ``InvalidInput`` for malformed retention attributes."""
        if asset_type is None:
            return self.default_policy
        return self.default_policy.override(asset_type.attributes)

    def _groups(self, tenant_id: int) -> tuple[dict[tuple[RetentionPolicy, tuple[str | None, ...]], list[int]],
                                               list[SkippedType]]:
        """The tenant's series ids grouped by policy (with the asset types that share it)."""
        policies: dict[str | None, RetentionPolicy] = {None: self.default_policy}
        skipped: list[SkippedType] = []
        for asset_type in self._repo.list_asset_types(tenant_id):
            try:
                policies[asset_type.name] = self.policy_for(asset_type)
            except InvalidInput as exc:
                skipped.append(SkippedType(tenant_id, asset_type.name, str(exc)))
        broken = {s.asset_type for s in skipped}
        type_of = {a.id: a.type_name for a in self._repo.list_assets(tenant_id)}
        by_policy: dict[RetentionPolicy, dict[str | None, list[int]]] = defaultdict(lambda: defaultdict(list))
        for series in self._repo.list_series(tenant_id):
            type_name = type_of.get(series.asset_id)
            if type_name in broken:
                continue  # its retention attributes are malformed: leave its data alone
            if type_name not in policies:
                type_name = None  # a type name without a stored type: the default applies
            by_policy[policies[type_name]][type_name].append(series.id)
        out: dict[tuple[RetentionPolicy, tuple[str | None, ...]], list[int]] = {}
        for policy, per_type in by_policy.items():
            names = tuple(sorted(per_type, key=lambda n: (n is not None, n or "")))
            out[(policy, names)] = sorted(sid for ids in per_type.values() for sid in ids)
        return out, skipped

    def _apply_group(self, tenant_id: int, types: tuple[str | None, ...], policy: RetentionPolicy,
                     series_ids: list[int], now_us: int) -> RetentionGroup:
        cutoffs = policy.cutoffs(now_us)
        deleted = {"raw": self._store.delete_before(cutoffs["raw"], series_ids)}
        for level in ROLLUP_LEVELS:
            deleted[level] = self._store.delete_rollups_before(level, cutoffs[level], series_ids)
        return RetentionGroup(tenant_id, types, policy, cutoffs, len(series_ids), deleted)


async def run_periodically(service: RetentionService, every_s: float, stop: asyncio.Event) -> int:
    """Run ``service.apply()`` now and then every ``every_s`` seconds until ``stop`` is set; return
    how many runs completed. A failed run is logged and the next one comes at its time."""
    if every_s <= 0:
        raise InvalidInput("the retention interval must be a positive number of seconds")
    runs = 0
    while not stop.is_set():
        try:
            report = await asyncio.to_thread(service.apply)
        except Exception:
            log.exception("retention run failed; trying again in %s s", every_s)
        else:
            runs += 1
            log.info("%s", report.summary())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every_s)
    return runs
