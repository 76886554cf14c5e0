"""Factory KPIs for a machine or a line, over any window, whole or by shift, day, product or order;
and the lighthouse comparison of two periods.

The store sums (``KpiSource``: durations, counts, energy, labour per window); every ratio comes from
``domain/kpi``. The configuration is read from the registry on each call: the site's shift calendar
and cost model, each machine's cycle times and energy series, the line rule (``domain.kpi_config``).
Closed windows may be answered from kept tiles (``services/kpi_tiles.py``, when the platform gives
this service a ``TiledKpiSource``); late or back-filled data drops the tiles it touches, so it is in
the next answer, closed shifts included.

A line's KPIs are those of its reference machine (``domain/kpi/line``: the bottleneck, or the last
machine, by the ``kpi_line_rule`` attribute of the line, its area or its site), with the energy and
labour hours of all the line's machines, so energy efficiency, labour productivity and unit cost are
per good unit of the reference machine.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import msgspec

from shopfloor.domain import kpi_config
from shopfloor.domain.assets import Asset, Level, ValueType
from shopfloor.domain.errors import InvalidInput, NotFound, ShopfloorError
from shopfloor.domain.kpi.calendar import Span, scheduled, shift_instances, spans_by_label, subtract, tariff_spans
from shopfloor.domain.kpi.compare import Comparison, comparison
from shopfloor.domain.kpi.formulas import CostBreakdown, KpiSet, ParetoRow, compute, cost_breakdown, downtime_pareto
from shopfloor.domain.kpi.line import LineMachine, LineOee, LineRule, line_oee, period_cycle_time
from shopfloor.domain.kpi.models import CostModel, CycleTimes, PeriodInputs, ShiftCalendar, combine
from shopfloor.domain.kpi.timeline import OrderEvent, OrderSpan, order_spans
from shopfloor.domain.query import Interval, StoredEvent, buckets, zone
from shopfloor.domain.tenancy import TenantContext
from shopfloor.domain.timeutil import from_us
from shopfloor.ports.clock import Clock
from shopfloor.ports.kpi import EnergyKind, EnergySeries, KpiRequest, KpiSource, LabelledSpan, paused_gc
from shopfloor.ports.store import EventLog
from shopfloor.services.registry import RegistryService

US = 1_000_000
MAX_SPAN_US = 400 * 86_400 * US  # one question covers at most this much time
MAX_GROUPS = 10_000
MAX_ORDER_EVENTS = 200_000
ORDER_TYPES = ("work_order_start", "work_order_end")


class Grouping(enum.StrEnum):
    SHIFT = "shift"
    DAY = "day"
    PRODUCT = "product"
    ORDER = "order"


class AssetRef(msgspec.Struct, frozen=True):
    id: int
    name: str
    path: str
    level: str


class MachineResult(msgspec.Struct, frozen=True):
    """One machine of a line in one group: the figures the line rule chose from."""

    machine: str
    asset_id: int
    position: int
    oee: float | None
    availability: float | None
    effectiveness: float | None
    quality_ratio: float | None
    cycle_time_s: float | None
    good: int
    produced: int
    coverage: float | None


class GroupResult(msgspec.Struct, frozen=True):
    key: str  # "" for the whole window; a shift "2026-11-23/early", a day, a product, an order id
    label: str
    start_us: int
    end_us: int
    windows: list[tuple[int, int]]  # what the group is made of (a product's orders, say)
    kpis: KpiSet
    coverage: float | None
    downtime: list[ParetoRow]
    cost: CostBreakdown | None
    line: LineOee | None = None
    machines: list[MachineResult] = []


class KpiReport(msgspec.Struct, frozen=True):
    asset: AssetRef
    start_us: int
    end_us: int
    by: Grouping | None
    currency: str | None
    total: GroupResult
    groups: list[GroupResult]


class ComparisonReport(msgspec.Struct, frozen=True):
    asset: AssetRef
    currency: str | None
    baseline: GroupResult
    current: GroupResult
    comparison: Comparison


@dataclass(frozen=True, slots=True)
class _Machine:
    asset: Asset
    cycle_times: CycleTimes | None
    energy: EnergySeries | None
    reports_orders: bool


@dataclass(frozen=True, slots=True)
class _Target:
    asset: Asset
    machines: list[_Machine]  # one for a machine; a line's in flow order
    rule: LineRule | None  # None: a machine
    calendar: ShiftCalendar | None
    cost: CostModel | None
    timezone: str
    labour_in_shifts_only: bool = False

    @property
    def ref(self) -> AssetRef:
        return AssetRef(self.asset.id, self.asset.name, self.asset.path_str, self.asset.level.value)


@dataclass(frozen=True, slots=True)
class _Group:
    key: str
    label: str
    windows: list[Span]


class KpiService:
    def __init__(self, registry: RegistryService, source: KpiSource, clock: Clock,
                 events: EventLog | None = None) -> None:
        self._registry = registry
        self._source = source
        self._clock = clock
        self._events = events

    # -- the questions -----------------------------------------------------------------------------
    def kpis(self, ctx: TenantContext, asset: int | str, start_us: int, end_us: int | None = None,
             by: Grouping | str | None = None) -> KpiReport:
        """Every KPI of a machine or line over [start, end) (end: now), and per group with ``by``."""
        end = self._clock.now_us() if end_us is None else end_us
        _check_span(start_us, end, "the window")
        grouping = _grouping(by)
        target = self._target(ctx, asset)
        groups = self._groups(ctx, target, start_us, end, grouping)
        parts = [w for g in groups for w in g.windows]
        if _disjoint(parts):  # the whole window is its groups and the gaps between them (kept windows, often)
            windows = [*parts, *subtract([(start_us, end)], parts)]
            whole = list(range(len(windows)))
            i = 0
        else:  # overlapping groups (shifts that overlap): the whole window on its own
            windows = [(start_us, end), *parts]
            whole = [0]
            i = 1
        per_machine = self._fetch(ctx, target, [(start_us, end, windows)])[0]
        with paused_gc():  # up to MAX_GROUPS results of small acyclic structs
            total = self._evaluate(target, _Group("", "whole window", [(start_us, end)]), per_machine, whole)
            results = []
            for g in groups:
                idx = list(range(i, i + len(g.windows)))
                i += len(g.windows)
                results.append(self._evaluate(target, g, per_machine, idx))
        return KpiReport(target.ref, start_us, end, grouping, target.cost.currency if target.cost else None,
                         total, results)

    def compare(self, ctx: TenantContext, asset: int | str, baseline: tuple[int, int],
                current: tuple[int, int]) -> ComparisonReport:
        """Baseline vs current: the change of every KPI and the LMDI contributions that explain it."""
        _check_span(*baseline, "the baseline")
        _check_span(*current, "the current period")
        target = self._target(ctx, asset)
        fetched = self._fetch(ctx, target, [(*baseline, [baseline]), (*current, [current])])
        b = self._evaluate(target, _Group("baseline", "baseline", [baseline]), fetched[0], [0])
        c = self._evaluate(target, _Group("current", "current", [current]), fetched[1], [0])
        report = comparison(b.kpis, c.kpis, b.cost, c.cost)
        return ComparisonReport(target.ref, target.cost.currency if target.cost else None, b, c, report)

    def closed_shift_requests(self, ctx: TenantContext, start_us: int, end_us: int,
                              ended_by_us: int) -> list[KpiRequest]:
        """For every site with a shift calendar, each of its machines' whole shifts that start in
        [start, end) and end by ``ended_by``: what the KPI tile keeper keeps. A machine whose KPI
        settings are wrong is left out (its KPIs are computed, and the error shown, when asked for)."""
        by_site: dict[str, list[Asset]] = {}
        for m in self._registry.list_assets(ctx, Level.MACHINE):
            by_site.setdefault(m.path[0], []).append(m)
        out: list[KpiRequest] = []
        for machines in by_site.values():
            try:
                _, cal, cost, _, in_shifts = self._site(ctx, machines[0])
            except ShopfloorError:  # a site's settings are wrong: its KPIs say so when asked for
                continue
            if cal is None:
                continue
            shifts = [(i.start, i.end) for i in shift_instances(cal, start_us, end_us)
                      if start_us <= i.start < end_us and i.end <= ended_by_us]
            if not shifts:
                continue
            lo, hi = shifts[0][0], max(e for _, e in shifts)
            work = tuple(scheduled(cal, lo, hi))
            tariff = tuple(spans_by_label(tariff_spans(cost.tariff, lo, hi))) if cost is not None else None
            for m in machines:
                try:
                    setting = self._machine(ctx, m)
                except ShopfloorError:
                    continue
                out.append(KpiRequest(m.id, shifts, work, tariff, setting.energy, setting.reports_orders,
                                      in_shifts))
        return out

    # -- configuration -----------------------------------------------------------------------------
    def _asset(self, ctx: TenantContext, asset: int | str) -> Asset:
        if isinstance(asset, int):
            return self._registry.asset(ctx, asset)
        text = asset.strip()
        if text.isascii() and text.isdigit():
            return self._registry.asset(ctx, int(text))
        path = tuple(p for p in text.split("/") if p)
        found = self._registry.repo.find_asset(ctx.require_tenant(), path) if path else None
        if found is None:
            raise NotFound(f"no asset {asset!r} (give an id or a path like site/area/line/machine)")
        return found

    def _site(self, ctx: TenantContext, a: Asset) -> tuple[Asset, ShiftCalendar | None, CostModel | None, str, bool]:
        """The site of ``a``: itself, its calendar, cost model, time zone and labour rule."""
        site = self._registry.site_of(ctx, a)
        cal = kpi_config.site_calendar(site.attributes, site.timezone)
        cost = kpi_config.site_cost_model(site.attributes, site.timezone)
        in_shifts = kpi_config.labour_in_shifts_only(site.attributes, f"site {site.path_str}")
        return site, cal, cost, site.timezone or "UTC", in_shifts

    def _target(self, ctx: TenantContext, asset: int | str) -> _Target:
        a = self._asset(ctx, asset)
        site, cal, cost, tz, in_shifts = self._site(ctx, a)
        if a.level is Level.MACHINE:
            return _Target(a, [self._machine(ctx, a)], None, cal, cost, tz, in_shifts)
        if a.level is not Level.LINE:
            raise InvalidInput(f"{a.path_str} is a {a.level.value}; KPIs are computed for machines and lines")
        machines = self._registry.list_assets(ctx, Level.MACHINE, parent_id=a.id)
        if not machines:
            raise InvalidInput(f"line {a.path_str} has no machines")
        settings = [self._machine(ctx, m) for m in machines]
        positions = {m.asset.id: kpi_config.line_position(m.asset.attributes, m.asset.path_str) for m in settings}
        settings.sort(key=lambda m: (positions[m.asset.id] is None, positions[m.asset.id] or 0.0, m.asset.name))
        area = self._registry.asset(ctx, a.parent_id) if a.parent_id is not None else None
        chain = [a.attributes, *([area.attributes] if area else []), site.attributes]
        return _Target(a, settings, kpi_config.line_rule(chain, f"line {a.path_str}"), cal, cost, tz, in_shifts)

    def _machine(self, ctx: TenantContext, m: Asset) -> _Machine:
        type_attributes = self._registry.asset_type(ctx, m.type_name).attributes if m.type_name else {}
        attributes = kpi_config.merged(type_attributes, m.attributes)
        what = f"machine {m.path_str}"
        return _Machine(m, kpi_config.cycle_times(attributes, what), self._energy(ctx, m, attributes),
                        kpi_config.reports_orders(attributes, what))

    def _energy(self, ctx: TenantContext, m: Asset, attributes: dict[str, object]) -> EnergySeries | None:
        what = f"machine {m.path_str}"
        source = kpi_config.energy_source(attributes, what)
        series = [s for s in self._registry.series_of(ctx, m.id) if s.type is ValueType.NUMERIC]
        if source.measurement is not None:
            chosen = next((s for s in series if s.measurement == source.measurement), None)
            if chosen is None:
                raise InvalidInput(f"{what}: {kpi_config.ENERGY_MEASUREMENT} {source.measurement!r} is not one of "
                                   f"its numeric measurements ({', '.join(s.measurement for s in series) or 'none'})")
        else:  # by unit: a kWh counter first, else kW power; "energy"/"power" by name before others
            chosen = None
            for unit_kind, name in (("counter", "energy"), ("power", "power")):
                found = [s for s in series if kpi_config.energy_kind_of_unit(s.unit) == unit_kind]
                found.sort(key=lambda s: (s.measurement != name, s.measurement))
                if found:
                    chosen = found[0]
                    break
            if chosen is None:
                return None
        kind = source.kind or kpi_config.energy_kind_of_unit(chosen.unit)
        if kind is None:
            raise InvalidInput(f"{what}: the unit of {chosen.measurement!r} is {chosen.unit!r}; set "
                               f"{kpi_config.ENERGY_KIND} to counter (kWh) or power (kW)")
        return EnergySeries(chosen.id, EnergyKind(kind), round(source.staleness_s * US))

    # -- groups ------------------------------------------------------------------------------------
    def _groups(self, ctx: TenantContext, target: _Target, start: int, end: int,
                grouping: Grouping | None) -> list[_Group]:
        if grouping is None:
            return []
        out: list[_Group]
        if grouping is Grouping.SHIFT:
            if target.calendar is None:
                raise InvalidInput(f"the site of {target.asset.path_str} has no shift calendar; by=shift needs one "
                                   "(PUT /api/v1/sites/{id}/calendar or the plant file's calendar section)")
            out = []
            for inst in shift_instances(target.calendar, start, end):
                a, b = max(inst.start, start), min(inst.end, end)
                if b > a:
                    day = inst.day.isoformat()
                    out.append(_Group(f"{day}/{inst.name}", f"{day} {inst.name}", [(a, b)]))
        elif grouping is Grouping.DAY:
            out = []
            for a, b in buckets(start, end, Interval(1, "d"), target.timezone):
                a, b = max(a, start), min(b, end)
                if b > a:
                    day = _local_day(a, target.timezone)
                    out.append(_Group(day, day, [(a, b)]))
        else:
            if target.rule is not None:
                raise InvalidInput(f"by={grouping.value} is per machine: each machine of a line runs its own "
                                   "orders; ask for one of the line's machines")
            out = self._order_groups(ctx, target.machines[0].asset, start, end, grouping)
        if len(out) > MAX_GROUPS:
            raise InvalidInput(f"that is {len(out)} groups, more than {MAX_GROUPS}; choose a shorter window")
        return out

    def _order_groups(self, ctx: TenantContext, machine: Asset, start: int, end: int,
                      grouping: Grouping) -> list[_Group]:
        spans = self._order_spans(ctx.require_tenant(), machine.id, start, end)
        groups: dict[str, _Group] = {}
        for o in spans:
            key = o.order_id if grouping is Grouping.ORDER else o.product
            label = (f"{o.order_id} ({o.product or 'no product'})" if grouping is Grouping.ORDER
                     else o.product or "(no product)")
            groups.setdefault(key, _Group(key, label, [])).windows.append((o.start, o.end))
        gaps = subtract([(start, end)], [(o.start, o.end) for o in spans])
        out = list(groups.values())
        if gaps:
            out.append(_Group("", "(no order)", gaps))
        return out

    def _order_spans(self, tenant_id: int, asset_id: int, start: int, end: int) -> list[OrderSpan]:
        log = self._events
        if log is None:
            raise InvalidInput("grouping by order or product needs the event log, which this server has not "
                               "given the KPI service")
        inside = log.events(tenant_id, asset_ids=[asset_id], kinds=["event"], start_us=start, end_us=end,
                                     limit=MAX_ORDER_EVENTS)
        if len(inside) >= MAX_ORDER_EVENTS:
            raise InvalidInput(f"more than {MAX_ORDER_EVENTS} events in the window; choose a shorter one")
        stored = [*_last_order_event(log, tenant_id, asset_id, start), *inside]
        events = [OrderEvent(e.ts_us, "start" if e.type == ORDER_TYPES[0] else "end", str(e.data.get("order_id", "")),
                             p if isinstance(p := e.data.get("product"), str) else None)
                  for e in stored if e.type in ORDER_TYPES]
        return order_spans(events, start, end)

    # -- summing and computing ---------------------------------------------------------------------
    def _fetch(self, ctx: TenantContext, target: _Target,
               frames: Sequence[tuple[int, int, list[Span]]]) -> list[dict[int, list[PeriodInputs]]]:
        """One source call: for each frame (its span and windows), each machine's inputs per window."""
        requests: list[KpiRequest] = []
        for start, end, windows in frames:
            work, tariff = _expanded(target, start, end)
            for m in target.machines:
                requests.append(KpiRequest(m.asset.id, tuple(windows), work, tariff, m.energy, m.reports_orders,
                                           target.labour_in_shifts_only and work is not None))
        flat = self._source.period_inputs(ctx.require_tenant(), requests)
        expected = sum(len(r.windows) for r in requests)
        if len(flat) != expected:
            raise ShopfloorError(f"the KPI source answered {len(flat)} windows for {expected}")  # a broken adapter
        out: list[dict[int, list[PeriodInputs]]] = []
        i = 0
        for _, _, windows in frames:
            per: dict[int, list[PeriodInputs]] = {}
            for m in target.machines:
                per[m.asset.id] = flat[i:i + len(windows)]
                i += len(windows)
            out.append(per)
        return out

    def _evaluate(self, target: _Target, group: _Group, per_machine: dict[int, list[PeriodInputs]],
                  indexes: list[int]) -> GroupResult:
        inputs = {m.asset.id: _combined([per_machine[m.asset.id][i] for i in indexes]) for m in target.machines}
        windows = sorted(group.windows)
        start, end = windows[0][0], max(e for _, e in windows)
        if target.rule is None:
            m = target.machines[0]
            return _result(group, start, end, inputs[m.asset.id], m.cycle_times, target.cost)
        line: list[LineMachine] = []
        for position, m in enumerate(target.machines):
            kpis = compute(inputs[m.asset.id], m.cycle_times, None)
            line.append(LineMachine(m.asset.name, position, inputs[m.asset.id], m.cycle_times, kpis))
        chosen_oee = line_oee(line, target.rule)
        ref = next((x for x in line if x.machine == chosen_oee.machine), line[-1])  # no cycle times: the last
        ref_setup = target.machines[ref.position]
        line_inputs = _line_inputs(ref.inputs, list(inputs.values()))
        machines = [MachineResult(x.machine, target.machines[x.position].asset.id, x.position, x.kpis.value("oee"),
                                  x.kpis.value("availability"), x.kpis.value("effectiveness"),
                                  x.kpis.value("quality_ratio"), period_cycle_time(x),
                                  x.inputs.total_counts.good, x.inputs.total_counts.produced,
                                  x.kpis["availability"].coverage)
                    for x in line]
        base = _result(group, start, end, line_inputs, ref_setup.cycle_times, target.cost)
        return GroupResult(base.key, base.label, base.start_us, base.end_us, base.windows, base.kpis, base.coverage,
                           base.downtime, base.cost, chosen_oee, machines)


def _expanded(target: _Target, start: int, end: int) -> tuple[tuple[Span, ...] | None,
                                                             tuple[LabelledSpan, ...] | None]:
    """The calendar's working spans and the tariff's labelled spans over [start, end), once per call."""
    cal, cost = target.calendar, target.cost
    work = tuple(scheduled(cal, start, end)) if cal is not None else None
    tariff = tuple(spans_by_label(tariff_spans(cost.tariff, start, end))) if cost is not None else None
    return work, tariff


def _last_order_event(log: EventLog, tenant_id: int, asset_id: int, before: int, page: int = 1000,
                      pages: int = 50) -> list[StoredEvent]:
    """The last work-order event before ``before`` (it says which order was open then), paging back."""
    cursor = before
    for _ in range(pages):
        found = log.events(tenant_id, asset_ids=[asset_id], kinds=["event"], end_us=cursor, limit=page)
        for e in reversed(found):
            if e.type in ORDER_TYPES:
                return [e]
        if len(found) < page:
            return []
        cursor = found[0].ts_us
    return []


def _result(group: _Group, start: int, end: int, inputs: PeriodInputs, cycle_times: CycleTimes | None,
            cost: CostModel | None) -> GroupResult:
    kpis = compute(inputs, cycle_times, cost)
    return GroupResult(group.key, group.label, start, end, sorted(group.windows), kpis,
                       kpis["availability"].coverage, downtime_pareto(inputs.downtime_by_reason),
                       cost_breakdown(inputs, cost) if cost is not None else None)


def _disjoint(spans: list[Span]) -> bool:
    ordered = sorted(spans)
    return all(a[1] <= b[0] for a, b in pairwise(ordered))


def _combined(parts: list[PeriodInputs]) -> PeriodInputs:
    return parts[0] if len(parts) == 1 else combine(parts)


def _line_inputs(ref: PeriodInputs, machines: list[PeriodInputs]) -> PeriodInputs:
    """The reference machine's time and counts with every machine's energy and labour."""
    kwh: dict[str, float] = {}
    for p in machines:
        for period, e in p.energy_kwh.items():
            kwh[period] = kwh.get(period, 0.0) + e
    covs = [p.energy_coverage for p in machines]
    coverage = None if all(c is None for c in covs) else min(0.0 if c is None else c for c in covs)
    return PeriodInputs(time=ref.time, counts=ref.counts, failures=ref.failures,
                        downtime_by_reason=ref.downtime_by_reason, energy_kwh=dict(sorted(kwh.items())),
                        energy_coverage=coverage, labour_hours=sum(p.labour_hours for p in machines))


def _grouping(by: Grouping | str | None) -> Grouping | None:
    if by is None or by == "":
        return None
    try:
        return Grouping(by)
    except ValueError:
        raise InvalidInput(f"by={by!r}: group by one of {', '.join(g.value for g in Grouping)}") from None


def _check_span(start: int, end: int, what: str) -> None:
    if end <= start:
        raise InvalidInput(f"{what} must end after it starts")
    if end - start > MAX_SPAN_US:
        raise InvalidInput(f"{what} is longer than {MAX_SPAN_US // (86_400 * US)} days")


def _local_day(us: int, tz: str) -> str:
    return from_us(us).astimezone(zone(tz)).date().isoformat()
