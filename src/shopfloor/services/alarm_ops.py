"""What callers may do with rules and alarms, tenant-scoped and by role: viewers read, operators
acknowledge, shelve and take alarms out of service, engineers edit rules and webhooks.

Used by the API and the CLI; every write of alarm state goes through ``AlarmService`` (its rules
thread), so the engine, the store and the journal never disagree. Acknowledgements and shelving are
journalled with the caller's token name as the user.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import msgspec

from shopfloor.domain.alarms import lifecycle as lc
from shopfloor.domain.alarms.engine import Output, RuleEngine
from shopfloor.domain.alarms.flood import AreaFlood, flood_stats
from shopfloor.domain.alarms.model import Action, Alarm, JournalEntry, Priority
from shopfloor.domain.alarms.rules import rule_from_obj
from shopfloor.domain.alarms.templates import AssetRef
from shopfloor.domain.errors import InvalidInput, NotFound
from shopfloor.domain.tenancy import Role, TenantContext
from shopfloor.ports.alarms import AlarmQuery, Delivery, JournalQuery, RuleRecord, Subscription
from shopfloor.ports.registry import RegistryRepository
from shopfloor.ports.store import Historian
from shopfloor.services.alarm_backtest import BacktestReport, backtest
from shopfloor.services.alarm_catalog import Catalog, spec_with, spec_without_identity
from shopfloor.services.alarm_monitor import SYSTEM_TENANT
from shopfloor.services.alarms import AlarmService

MAX_JOURNAL_SPAN_US = 31 * 86_400 * 1_000_000


def rule_json(rec: RuleRecord) -> dict[str, Any]:
    return {**spec_with(rec.spec, rec.id, rec.name, rec.enabled), "source": rec.source}


class AlarmOps:
    def __init__(self, service: AlarmService, registry: RegistryRepository, historian: Historian,
                 now_us: Callable[[], int]) -> None:
        self.service = service
        self._historian = historian
        self.store = service.store
        self._registry = registry
        self._now = now_us

    # -- rules --------------------------------------------------------------------------------
    def rules(self, ctx: TenantContext) -> list[RuleRecord]:
        return self.store.rules(ctx.require_tenant())

    def rule(self, ctx: TenantContext, ref: str | int) -> RuleRecord:
        """A rule by id or by name."""
        tid = ctx.require_tenant()
        if isinstance(ref, int) or str(ref).isdigit():
            found = self.store.get_rule(tid, int(ref))
        else:
            found = next((r for r in self.store.rules(tid) if r.name == ref), None)
        if found is None:
            raise NotFound(f"no rule {ref!r}")
        return found

    async def create_rule(self, ctx: TenantContext, obj: dict[str, Any], source: str = "api") -> RuleRecord:
        ctx.require(Role.ENGINEER)
        tid = ctx.require_tenant()
        name, enabled = _identity(obj)
        rule_from_obj(spec_with(obj, 1, name, enabled))  # refuse a bad rule before storing it (id: any)
        rec = self.store.create_rule(tid, name, spec_without_identity(obj), enabled=enabled, source=source,
                                     now_us=self._now())
        await self.service.call(self.service.reload)
        return rec

    def check_rules(self, ctx: TenantContext, objs: list[dict[str, Any]]) -> None:
        """Validate the ``rules:`` of a plant file (engineer): each valid, names unique."""
        ctx.require(Role.ENGINEER)
        seen: set[str] = set()
        for obj in objs:
            if not isinstance(obj, dict):
                raise InvalidInput("plant file: rules: each rule is a mapping")
            name, enabled = _identity(obj)
            if name in seen:
                raise InvalidInput(f"plant file: rules: {name!r} appears twice")
            seen.add(name)
            rule_from_obj(spec_with(obj, 1, name, enabled))

    async def apply_rules(self, ctx: TenantContext, objs: list[dict[str, Any]]) -> dict[str, int]:
        """Make the tenant's rules contain the plant file's, matched by name (none are deleted);
        returns counts of created, updated and unchanged."""
        self.check_rules(ctx, objs)
        tid = ctx.require_tenant()
        existing = {r.name: r for r in self.store.rules(tid)}
        counts: dict[str, int] = {}
        for obj in objs:
            name, enabled = _identity(obj)
            spec = spec_without_identity(obj)
            old = existing.get(name)
            if old is None:
                self.store.create_rule(tid, name, spec, enabled=enabled, source="plant", now_us=self._now())
                outcome = "created"
            elif (old.spec, old.enabled, old.source) == (spec, enabled, "plant"):
                outcome = "unchanged"
            else:
                self.store.update_rule(msgspec.structs.replace(old, spec=spec, enabled=enabled, source="plant",
                                                               updated_us=self._now()))
                outcome = "updated"
            counts[outcome] = counts.get(outcome, 0) + 1
        if counts.keys() - {"unchanged"}:
            await self.service.call(self.service.reload)
        return counts

    async def update_rule(self, ctx: TenantContext, ref: str | int, obj: dict[str, Any]) -> RuleRecord:
        ctx.require(Role.ENGINEER)
        old = self.rule(ctx, ref)
        name, enabled = _identity(obj)
        rule_from_obj(spec_with(obj, old.id, name, enabled))
        rec = self.store.update_rule(msgspec.structs.replace(old, name=name, enabled=enabled,
                                                             spec=spec_without_identity(obj), updated_us=self._now()))
        await self.service.call(self.service.reload)
        return rec

    async def delete_rule(self, ctx: TenantContext, ref: str | int) -> None:
        ctx.require(Role.ENGINEER)
        rec = self.rule(ctx, ref)
        self.store.delete_rule(rec.tenant_id, rec.id)
        await self.service.call(self.service.reload)

    def backtest(self, ctx: TenantContext, ref: str | int, start_us: int, end_us: int) -> BacktestReport:
        """The alarms rule ``ref`` would have raised over [start, end): nothing stored or notified."""
        rec = self.rule(ctx, ref)
        catalog = Catalog(self._registry, self.store)
        catalog.load()
        return backtest(rec, catalog, self._historian, self._historian, start_us, end_us)

    # -- alarms and journal ---------------------------------------------------------------------
    def alarms(self, ctx: TenantContext, query: AlarmQuery | None = None) -> list[Alarm]:
        return self.store.alarms(ctx.require_tenant(), query)

    def system_alarms(self, ctx: TenantContext) -> list[Alarm]:
        """The platform's own alarms (broker, ingest lag, disk): any caller may see them."""
        return self.store.alarms(SYSTEM_TENANT, AlarmQuery(limit=100))

    def alarm(self, ctx: TenantContext, rule_id: int, asset_id: int) -> Alarm:
        found = self.store.get_alarm(ctx.require_tenant(), rule_id, asset_id)
        if found is None:
            raise NotFound(f"no alarm of rule {rule_id} on asset {asset_id}")
        return found

    def journal(self, ctx: TenantContext, query: JournalQuery | None = None) -> list[JournalEntry]:
        return self.store.journal(ctx.require_tenant(), query)

    def flood(self, ctx: TenantContext, start_us: int, end_us: int) -> list[AreaFlood]:
        """ISA-18.2 flood statistics per area over [start, end) (at most 31 days)."""
        tid = ctx.require_tenant()
        if end_us <= start_us:
            raise InvalidInput("'to' must be after 'from'")
        if end_us - start_us > MAX_JOURNAL_SPAN_US:
            raise InvalidInput("flood statistics cover at most 31 days per call")
        entries = self.store.journal(tid, JournalQuery(actions=[Action.ACTIVATE], start_us=start_us, end_us=end_us,
                                                       limit=100_000))
        area_of = {a.id: AssetRef.of_path(a.id, a.path_str).area for a in self._registry.list_assets(tid)
                   if len(a.path) >= 2}  # a site is in no area
        return flood_stats(entries, area_of, start_us, end_us)

    async def act(self, ctx: TenantContext, action: Action, rule_id: int, asset_id: int, *, comment: str = "",
                  until_us: int | None = None) -> Alarm:
        """acknowledge, shelve (until ``until_us``), unshelve, out_of_service, return_to_service."""
        ctx.require(Role.OPERATOR)
        tid = ctx.require_tenant()
        user = ctx.token_name
        now = self._now()

        def run(eng: RuleEngine) -> Output:
            if action is Action.ACKNOWLEDGE:
                return eng.acknowledge(rule_id, asset_id, user, now, comment)
            if action is Action.SHELVE:
                if until_us is None:
                    raise InvalidInput("shelving needs 'until' (or 'minutes')")
                return eng.shelve(rule_id, asset_id, until_us, user, now, comment)
            if action is Action.UNSHELVE:
                return eng.unshelve(rule_id, asset_id, user, now, comment)
            if action is Action.OUT_OF_SERVICE:
                return eng.remove_from_service(rule_id, asset_id, user, now, comment)
            if action is Action.RETURN_TO_SERVICE:
                return eng.return_to_service(rule_id, asset_id, user, now, comment)
            raise InvalidInput(f"{action.value} is not an operator action")

        await self.service.call(self.service.apply, tid, run)
        return self.alarm(ctx, rule_id, asset_id)

    async def ack_system(self, ctx: TenantContext, rule_id: int, comment: str = "") -> Alarm:
        """Acknowledge a platform alarm (an admin or platform token's operator)."""
        ctx.require(Role.OPERATOR)
        monitor = self.service.monitor
        if monitor is None:
            raise NotFound("this process does not monitor itself")
        now = self._now()
        out = await self.service.call(monitor.act, rule_id,
                                      lambda a: lc.acknowledge(a, ctx.token_name, now, comment=comment))
        await self.service.call(self.service.persist, [out])
        return monitor.alarms[rule_id]

    # -- webhooks -------------------------------------------------------------------------------
    def subscriptions(self, ctx: TenantContext) -> list[Subscription]:
        ctx.require(Role.ENGINEER)
        return self.store.subscriptions(ctx.require_tenant())

    async def subscribe(self, ctx: TenantContext, url: str, min_priority: Priority = Priority.LOW,
                        secret: str | None = None) -> Subscription:
        ctx.require(Role.ENGINEER)
        tid = ctx.require_tenant()
        check_webhook_url(url)
        if secret is not None and len(secret) < 16:
            raise InvalidInput("a webhook secret needs at least 16 characters (leave it out to get one generated)")
        sub = self.store.add_subscription(tid, url, secret or secrets.token_urlsafe(32), min_priority=min_priority,
                                          now_us=self._now())
        await self.service.call(self.service.reload)
        return sub

    async def unsubscribe(self, ctx: TenantContext, subscription_id: int) -> None:
        ctx.require(Role.ENGINEER)
        if not self.store.delete_subscription(ctx.require_tenant(), subscription_id):
            raise NotFound(f"no webhook {subscription_id}")
        await self.service.call(self.service.reload)

    def dead_deliveries(self, ctx: TenantContext, limit: int = 100) -> list[Delivery]:
        ctx.require(Role.ENGINEER)
        return self.store.dead_deliveries(ctx.require_tenant(), limit)


def _identity(obj: dict[str, Any]) -> tuple[str, bool]:
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("a rule needs a 'name'")
    enabled = obj.get("enabled", True)
    if not isinstance(enabled, bool):
        raise InvalidInput("'enabled' must be true or false")
    return name.strip(), enabled


def check_webhook_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"webhook url {url!r} must be an http(s) URL with a host")
    if len(url) > 2000:
        raise InvalidInput("webhook urls are at most 2000 characters")
