"""The plant at a glance, for the dashboard: every machine's live state and its shift KPIs.

States come fresh from the event log (one query per tenant, memoised for ``state_ttl_s``, so many
open dashboards cost one read a second). KPIs of the current shift come per line (a line's report
carries each of its machines) and are computed in the background, at most every ``kpi_ttl_s``
(30 s by default) while someone looks: the overview answers at once with the newest figures it has
(none, the very first time; ``kpis_computed_us`` says how old they are) and never asks the store for
one machine's KPIs per tile per second. Machines not on a line get their own report. A KPI failure
for one line (no calendar, say) leaves that line's tiles without figures and says why, rather than
failing the whole overview.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import msgspec

from shopfloor.domain import kpi_config
from shopfloor.domain.assets import Asset, Level
from shopfloor.domain.errors import ShopfloorError
from shopfloor.domain.kpi.calendar import shift_at
from shopfloor.domain.kpi.formulas import KpiSet
from shopfloor.domain.query import StoredEvent, zone
from shopfloor.domain.tenancy import TenantContext
from shopfloor.domain.timeutil import from_us, to_us
from shopfloor.ports.clock import Clock
from shopfloor.ports.store import EventLog
from shopfloor.services.kpis import GroupResult, KpiReport, KpiService
from shopfloor.services.registry import RegistryService

log = logging.getLogger(__name__)


class MachineState(msgspec.Struct, frozen=True):
    asset_id: int
    state: str | None
    reason: str | None
    since_us: int | None
    online: bool | None


class MachineKpis(msgspec.Struct, frozen=True):
    shift: str  # "2026-11-23/early", or the local day when the site has no calendar
    start_us: int
    oee: float | None
    availability: float | None
    effectiveness: float | None
    quality_ratio: float | None
    good_shift: int
    good_today: int


class MachineTile(msgspec.Struct, frozen=True):
    asset_id: int
    name: str
    display_name: str
    path: str
    site: str
    area: str
    line: str
    live: MachineState
    kpis: MachineKpis | None
    kpi_error: str | None = None


class Overview(msgspec.Struct, frozen=True):
    generated_us: int
    kpis_computed_us: int | None
    machines: list[MachineTile]


class _Memo:
    """A value per key, recomputed when older than its time to live (thread-safe, one computation at a time)."""

    def __init__(self, ttl_s: float, now: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._now = now
        self._lock = threading.Lock()
        self._values: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any, compute: Callable[[], Any]) -> Any:
        with self._lock:
            hit = self._values.get(key)
            if hit is not None and self._now() - hit[0] < self.ttl_s:
                return hit[1]
            value = compute()
            self._values[key] = (self._now(), value)
            return value


_KpiSnapshot = tuple[int | None, dict[int, MachineKpis], dict[int, str]]
_NONE_YET: _KpiSnapshot = (None, {}, {})


class _Refresher:
    """Per key, the newest computed value; a stale one is recomputed in a background thread, one at a time."""

    def __init__(self, ttl_s: float, now: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._now = now
        self._lock = threading.Lock()
        self._values: dict[Any, tuple[float, Any]] = {}
        self._running: dict[Any, threading.Thread] = {}
        self._closed = False

    def get(self, key: Any, compute: Callable[[], Any], default: Any) -> Any:
        with self._lock:
            hit = self._values.get(key)
            fresh = hit is not None and self._now() - hit[0] < self.ttl_s
            if not fresh and key not in self._running and not self._closed:
                t = threading.Thread(target=self._run, args=(key, compute), daemon=True, name=f"overview-kpis-{key}")
                self._running[key] = t
                t.start()
            return hit[1] if hit is not None else default

    def _run(self, key: Any, compute: Callable[[], Any]) -> None:
        try:
            value = compute()
            with self._lock:
                self._values[key] = (self._now(), value)
        except Exception:  # a failed refresh keeps the old figures; the next request tries again
            log.exception("computing the overview's KPIs failed")
        finally:
            with self._lock:
                self._running.pop(key, None)

    def close(self, timeout: float = 60.0) -> None:
        """Start no more refreshes and wait for those running (before the store closes)."""
        with self._lock:
            self._closed = True
            running = list(self._running.values())
        for t in running:
            t.join(timeout)

    def wait(self, key: Any, timeout: float) -> None:
        with self._lock:
            t = self._running.get(key)
        if t is not None:
            t.join(timeout)


class OverviewService:
    def __init__(self, registry: RegistryService, events: EventLog, kpis: KpiService | None, clock: Clock,
                 *, state_ttl_s: float = 1.0, kpi_ttl_s: float = 30.0) -> None:
        self._registry = registry
        self._events = events
        self._kpis = kpis
        self._clock = clock
        self._states = _Memo(state_ttl_s)
        self._kpi_cache = _Refresher(kpi_ttl_s)

    def close(self) -> None:
        self._kpi_cache.close()

    def wait_for_kpis(self, ctx: TenantContext, timeout: float = 60.0) -> None:
        """Wait for a KPI computation in progress (tests, and a CLI that wants figures)."""
        self._kpi_cache.wait(ctx.require_tenant(), timeout)

    # -- live states ---------------------------------------------------------------------------------
    def states(self, ctx: TenantContext) -> dict[int, MachineState]:
        tid = ctx.require_tenant()
        result: dict[int, MachineState] = self._states.get(tid, lambda: self._read_states(tid))
        return result

    def _read_states(self, tenant_id: int) -> dict[int, MachineState]:
        states = self._events.latest_events(tenant_id, "state")
        status = self._events.latest_events(tenant_id, "status")
        out: dict[int, MachineState] = {}
        for aid in set(states) | set(status):
            st: StoredEvent | None = states.get(aid)
            on = status.get(aid)
            reason = st.data.get("reason") if st else None
            out[aid] = MachineState(aid, st.type if st else None, reason if isinstance(reason, str) else None,
                                    st.ts_us if st else None, (on.type == "online") if on else None)
        return out

    # -- the overview --------------------------------------------------------------------------------
    def overview(self, ctx: TenantContext) -> Overview:
        tid = ctx.require_tenant()
        assets = self._registry.list_assets(ctx)
        by_id = {a.id: a for a in assets}
        machines = [a for a in assets if a.level is Level.MACHINE]
        computed, kpis, errors = self._kpi_cache.get(tid, lambda: self._compute_kpis(ctx, by_id, machines), _NONE_YET)
        states = self.states(ctx)
        tiles = []
        for m in sorted(machines, key=lambda a: a.path):
            path = m.path + ("",) * (4 - len(m.path))
            live = states.get(m.id, MachineState(m.id, None, None, None, None))
            tiles.append(MachineTile(m.id, m.name, m.display_name or m.name, m.path_str, path[0], path[1],
                                     path[2] if len(m.path) >= 4 else "", live, kpis.get(m.id), errors.get(m.id)))
        return Overview(self._clock.now_us(), computed, tiles)

    def _compute_kpis(self, ctx: TenantContext, by_id: dict[int, Asset], machines: list[Asset]) -> _KpiSnapshot:
        if self._kpis is None:
            return None, {}, {}
        now = self._clock.now_us()
        targets: dict[int, list[Asset]] = {}  # a line (or a lone machine) → its machines
        for m in machines:
            parent = by_id.get(m.parent_id) if m.parent_id is not None else None
            key = parent.id if parent is not None and parent.level is Level.LINE else m.id
            targets.setdefault(key, []).append(m)
        kpis: dict[int, MachineKpis] = {}
        errors: dict[int, str] = {}
        for target_id, members in targets.items():
            try:
                start, label, has_calendar = self._day_start(ctx, by_id[target_id], now)
                report = self._kpis.kpis(ctx, target_id, start, now, by="shift" if has_calendar else None)
                kpis.update(_tiles(report, members, now, label))
            except ShopfloorError as exc:
                for m in members:
                    errors[m.id] = str(exc)
        return now, kpis, errors

    def _day_start(self, ctx: TenantContext, asset: Asset, now: int) -> tuple[int, str, bool]:
        """The start of the site's local day (or of the current shift, if it began yesterday), the
        local date, and whether the site has a shift calendar (without one the day is the shift)."""
        site = self._registry.site_of(ctx, asset)
        tz = zone(site.timezone or "UTC")
        local = from_us(now).astimezone(tz)
        midnight = datetime(local.year, local.month, local.day, tzinfo=tz)
        start = to_us(midnight)
        cal = kpi_config.site_calendar(site.attributes, site.timezone)
        current = shift_at(cal, now) if cal is not None else None
        if current is not None and current.start < start:
            start = current.start
        if now - start < 1_000_000:  # the first second of a day: look back one
            start = to_us(midnight - timedelta(days=1))
        return start, local.date().isoformat(), cal is not None


def _tiles(report: KpiReport, members: list[Asset], now: int, day: str) -> dict[int, MachineKpis]:
    """Each member machine's figures for the current shift (the group holding ``now``) and the day."""
    if report.by is None:  # no calendar: the whole day is the "shift"
        current: GroupResult | None = report.total
    else:
        current = next((g for g in reversed(report.groups) if g.start_us <= now <= g.end_us), None)
    out: dict[int, MachineKpis] = {}
    day_good = {mr.asset_id: mr.good for mr in report.total.machines}
    if not report.total.machines:  # a machine's own report
        day_good = {members[0].id: _good(report.total.kpis)}
    for m in members:
        if current is None:
            out[m.id] = MachineKpis(day, report.start_us, None, None, None, None, 0, day_good.get(m.id, 0))
            continue
        mine = next((mr for mr in current.machines if mr.asset_id == m.id), None)
        if mine is not None:
            out[m.id] = MachineKpis(current.key or day, current.start_us, mine.oee, mine.availability,
                                    mine.effectiveness, mine.quality_ratio, mine.good, day_good.get(m.id, 0))
        else:
            k = current.kpis
            out[m.id] = MachineKpis(current.key or day, current.start_us, k.value("oee"), k.value("availability"),
                                    k.value("effectiveness"), k.value("quality_ratio"), _good(k),
                                    day_good.get(m.id, 0))
    return out


def _good(k: KpiSet) -> int:
    """Good quantity (GQ), as the quality ratio's inputs carry it."""
    v = k["quality_ratio"].inputs.get("gq") if "quality_ratio" in k else None
    return int(v) if v is not None else 0
