"""The KPI service over the registry and the DuckDB historian, with the reference KPI source and with
DuckDB's SQL one: hand-computed figures for a machine (whole window, by shift, day, product, order),
a line under both rules, the lighthouse comparison, and what is refused."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from shopfloor.domain.assets import Asset, Level, MeasurementDef
from shopfloor.domain.errors import InvalidInput, NotFound
from shopfloor.domain.kpi.calendar import scheduled, spans_by_label, tariff_spans
from shopfloor.domain.kpi.formulas import compute
from shopfloor.domain.kpi.line import LineRule
from shopfloor.domain.kpi.models import CostModel, CycleTimes, ShiftCalendar
from shopfloor.domain.kpi.reference import from_records, period_inputs
from shopfloor.domain.records import EventRecord, IngestBatch
from shopfloor.domain.tenancy import Role, TenantContext
from shopfloor.domain.timeutil import parse_ts
from shopfloor.services.kpis import Grouping, KpiService
from shopfloor.services.plant import PlantService
from shopfloor.services.registry import PLATFORM, RegistryService
from shopfloor.storage.duckdb.database import Database
from shopfloor.storage.duckdb.historian import DuckDBHistorian
from shopfloor.storage.duckdb.kpi import DuckDBKpiSource
from shopfloor.storage.duckdb.registry import DuckDBRegistry
from shopfloor.testing.fakes import FixedClock
from shopfloor.testing.kpi_reference_source import ReferenceKpiSource

H = 3_600_000_000
MONDAY = parse_ts("2026-11-23T00:00:00Z")  # a Monday


def at(hours: float, day: int = 0) -> int:
    return MONDAY + day * 24 * H + round(hours * H)


CALENDAR = {"shifts": [
    {"name": "early", "start": "06:00", "end": "14:00", "weekdays": [1, 2, 3, 4, 5],
     "breaks": [{"start": "10:00", "end": "10:30"}]},
    {"name": "late", "start": "14:00", "end": "22:00", "weekdays": [1, 2, 3, 4, 5]},
]}
COST = {"currency": "EUR", "tariff": {"default_price": 0.2}, "labour_rate": 40, "overhead_per_hour": 100,
        "material_cost": {"A": 2.0, "B": 3.0}}


@dataclass
class World:
    registry: RegistryService
    plant: PlantService
    historian: DuckDBHistorian
    service: KpiService
    ctx: TenantContext
    site: Asset
    line: Asset
    machines: dict[str, Asset]

    def commit(self, machine: str, *records: tuple[float, str, str, dict[str, Any]], day: int = 0) -> None:
        m = self.machines[machine]
        batch = IngestBatch(events=[EventRecord(m.tenant_id, m.id, at(h, day), kind, type_, data)
                                    for h, kind, type_, data in records])
        self.historian.commit(batch)

    def readings(self, machine: str, measurement: str, points: list[tuple[float, float]], day: int = 0) -> None:
        series = {s.measurement: s.id for s in self.registry.series_of(self.ctx, self.machines[machine].id)}
        batch = IngestBatch()
        for h, v in points:
            batch.samples.add(series[measurement], at(h, day), v)
        self.historian.commit(batch)


def state(h: float, name: str, reason: str | None = None) -> tuple[float, str, str, dict[str, Any]]:
    return (h, "state", name, {"state": name, **({"reason": reason} if reason else {})})


def count(h: float, **units: int) -> tuple[float, str, str, dict[str, Any]]:
    return (h, "count", "delta", {"mode": "delta", **units})


def event(h: float, type_: str, **data: Any) -> tuple[float, str, str, dict[str, Any]]:
    return (h, "event", type_, data)


@pytest.fixture(params=["reference", "duckdb"])
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    db = Database(":memory:")
    repo = DuckDBRegistry(db)
    historian = DuckDBHistorian(db)
    registry = RegistryService(repo)
    tenant = registry.create_tenant(PLATFORM, "acme")
    ctx = TenantContext(tenant.id, "acme", Role.ENGINEER, "ci")
    registry.put_asset_type(ctx, "cell", attributes={"ideal_cycle_time_s": 60},
                            measurements=[MeasurementDef("energy", "kWh"), MeasurementDef("power", "kW"),
                                          MeasurementDef("temperature", "degC")])
    site = registry.create_asset(ctx, Level.SITE, "berlin", timezone="UTC")
    area = registry.create_asset(ctx, Level.AREA, "assembly", parent_id=site.id)
    line = registry.create_asset(ctx, Level.LINE, "line-1", parent_id=area.id)
    machines = {
        "cell-1": registry.create_asset(ctx, Level.MACHINE, "cell-1", parent_id=line.id, type_name="cell",
                                        attributes={"ideal_cycle_time_s_by_product": {"B": 30}}),
        "cell-2": registry.create_asset(ctx, Level.MACHINE, "cell-2", parent_id=line.id, type_name="cell",
                                        attributes={"ideal_cycle_time_s": 90, "energy_measurement": "power"}),
    }
    plant = PlantService(registry)
    plant.put_site_calendar(ctx, site.id, CALENDAR)
    plant.put_site_cost_model(ctx, site.id, COST)
    site = registry.asset(ctx, site.id)
    source = ReferenceKpiSource(historian, historian) if request.param == "reference" else DuckDBKpiSource(db)
    service = KpiService(registry, source, FixedClock(at(24)), historian)
    viewer = TenantContext(tenant.id, "acme", Role.VIEWER, "viewer")
    yield World(registry, plant, historian, service, viewer, site, line, machines)
    historian.close()
    db.close()


def monday(w: World) -> None:
    """cell-1 on Monday: order O1 (A) from 05:00, O2 (B) from 14:00; a jam, a changeover, idle."""
    w.commit("cell-1",
             event(5, "work_order_start", order_id="O1", product="A"),
             state(6, "running"), state(8, "unplanned_stop", "jam"), state(9, "running"),
             state(12, "setup"), state(12.5, "running"),
             count(7, good=60, reject=5), count(11, good=40),
             event(14, "work_order_end", order_id="O1"), event(14, "work_order_start", order_id="O2", product="B"),
             count(15, good=120, rework=10), count(17.5, good=80),
             state(18, "idle"), state(22, "planned_stop"),
             event(6, "clock_in", operator="ann"), event(14, "clock_out", operator="ann"),
             event(14, "clock_in", operator="bob"), event(22, "clock_out", operator="bob"))
    w.readings("cell-1", "energy", [(6, 1000.0), (14, 1080.0), (22, 1140.0)])


def test_a_machine_over_two_shifts_by_hand(world: World) -> None:
    monday(world)
    r = world.service.kpis(world.ctx, world.machines["cell-1"].id, at(6), at(22))
    k = r.total.kpis
    # run 2 + 3 + 5.5 h (the run in the 10:00 break counts as run and planned), jam 1 h, setup 0.5 h, idle 4 h
    assert k.value("availability") == pytest.approx(10.5 / 16)
    # ideal: A 105 units * 60 s, B 210 units * 30 s (the product override) = 3.5 h over 10.5 h run
    assert k.value("performance") == k.value("effectiveness") == pytest.approx(3.5 / 10.5)
    assert k.value("quality") == pytest.approx(300 / 315)
    assert k.value("oee") == pytest.approx(10.5 / 16 * 3.5 / 10.5 * 300 / 315)
    assert k.value("mtbf") == pytest.approx(10.5) and k.value("mttr") == pytest.approx(1.0)
    assert k.value("setup_ratio") == pytest.approx(0.5 / 11)
    assert k.value("rework_ratio") == pytest.approx(10 / 315) and k.value("scrap_ratio") == pytest.approx(5 / 315)
    assert k.value("energy_efficiency") == pytest.approx(300 / 140)
    assert k.value("kwh_per_good_unit") == pytest.approx(140 / 300)
    assert k.value("labour_productivity") == pytest.approx(300 / 16)
    # energy 140 kWh * 0.2 + labour 16 h * 40 + material 105 * 2 + 210 * 3 + overhead 15.5 scheduled h * 100
    assert r.total.cost is not None
    assert (r.total.cost.energy, r.total.cost.labour, r.total.cost.material, r.total.cost.overhead) == \
        pytest.approx((28.0, 640.0, 840.0, 1550.0))
    assert k.value("unit_cost") == pytest.approx(3058 / 300)
    assert r.currency == "EUR" and r.total.coverage == pytest.approx(1.0)
    assert [(p.reason, p.seconds) for p in r.total.downtime] == [("idle", 4 * 3600), ("unplanned_stop/jam", 3600),
                                                                  ("setup", 1800)]
    assert r.asset.path == "berlin/assembly/line-1/cell-1" and r.groups == []


def test_the_service_agrees_with_the_reference_on_the_raw_events(world: World) -> None:
    monday(world)
    m = world.machines["cell-1"]
    stored = world.historian.events(m.tenant_id, asset_ids=[m.id], limit=10_000)
    records = [EventRecord(e.tenant_id, e.asset_id, e.ts_us, e.kind, e.type, e.data) for e in stored]
    readings = [(s.ts_us, s.value) for s in world.historian.raw(
        next(s.id for s in world.registry.series_of(world.ctx, m.id) if s.measurement == "energy"), 0, at(48))
        if s.value is not None]
    cal = world.plant.site_calendar(world.ctx, world.site.id)
    cost = world.plant.site_cost_model(world.ctx, world.site.id)
    assert isinstance(cal, ShiftCalendar) and isinstance(cost, CostModel)
    start, end = at(3), at(23)
    expected = compute(period_inputs(from_records(records, readings), start, end, cal, cost.tariff),
                       CycleTimes(60, {"B": 30}), cost)
    got = world.service.kpis(world.ctx, m.path_str, start, end).total.kpis
    for key in expected:
        assert got.value(key) == pytest.approx(expected.value(key)), key
    # and what the service hands the source is the calendar and tariff expanded for the window
    assert scheduled(cal, start, end) == [(at(6), at(10)), (at(10.5), at(22))]
    assert spans_by_label(tariff_spans(cost.tariff, start, end)) == [(start, end, "standard")]


def test_by_shift_day_product_and_order(world: World) -> None:
    monday(world)
    m = world.machines["cell-1"].id
    shifts = world.service.kpis(world.ctx, m, at(0), at(24), by="shift")
    assert [(g.key, g.start_us, g.end_us) for g in shifts.groups] == [
        ("2026-11-23/early", at(6), at(14)), ("2026-11-23/late", at(14), at(22))]
    early, late = shifts.groups
    assert early.kpis.value("availability") == pytest.approx(6.5 / 8)
    assert late.kpis.value("availability") == pytest.approx(0.5)
    assert (early.kpis.value("quality_ratio"), late.kpis.value("quality_ratio")) == pytest.approx((100 / 105, 200 / 210))
    assert early.kpis.value("labour_productivity") == pytest.approx(100 / 8)
    days = world.service.kpis(world.ctx, m, at(6), at(12, day=1), by=Grouping.DAY)
    assert [(g.key, g.start_us, g.end_us) for g in days.groups] == [("2026-11-23", at(6), at(24)),
                                                                     ("2026-11-24", at(24), at(36))]
    products = world.service.kpis(world.ctx, m, at(6), at(22), by="product")
    assert [(g.key, g.windows) for g in products.groups] == [("A", [(at(6), at(14))]), ("B", [(at(14), at(22))])]
    assert products.groups[0].kpis["quality_ratio"].inputs == {"gq": 100, "pq": 105}
    orders = world.service.kpis(world.ctx, m, at(0), at(23), by="order")
    assert [(g.key, g.label) for g in orders.groups] == [("O1", "O1 (A)"), ("O2", "O2 (B)"), ("", "(no order)")]
    gap = orders.groups[2]
    assert gap.windows == [(at(0), at(5))]  # O2 is still open at 23:00
    assert gap.kpis.value("availability") is None  # no planned time without an order
    # the groups' counts add up to the whole window's
    assert sum(g.kpis["quality_ratio"].inputs["pq"] or 0 for g in orders.groups) == 315


def test_a_day_across_the_autumn_clock_change_has_25_hours(world: World) -> None:
    engineer = TenantContext(world.site.tenant_id, "acme", Role.ENGINEER, "e")
    world.registry.update_asset(engineer, world.site.id, timezone="Europe/Berlin")
    start, end = parse_ts("2026-10-24T22:00:00Z"), parse_ts("2026-10-26T23:00:00Z")
    days = world.service.kpis(world.ctx, world.machines["cell-1"].id, start, end, by="day")
    assert [(g.key, (g.end_us - g.start_us) / H) for g in days.groups] == [("2026-10-25", 25.0), ("2026-10-26", 24.0)]


def test_energy_from_power_samples(world: World) -> None:
    world.commit("cell-2", state(6, "running"))
    world.readings("cell-2", "power", [(6 + i / 12, 6.0) for i in range(12 * 16)])  # 6 kW every 5 minutes
    world.commit("cell-2", count(21, good=96))
    k = world.service.kpis(world.ctx, world.machines["cell-2"].id, at(6), at(22)).total.kpis
    assert k["energy_efficiency"].inputs["kwh"] == pytest.approx(96.0)
    assert k.value("energy_efficiency") == pytest.approx(1.0) and k["energy_efficiency"].coverage == pytest.approx(1.0)


def test_a_line_follows_its_rule(world: World) -> None:
    monday(world)
    world.commit("cell-2", event(5, "work_order_start", order_id="O9", product="A"),
                 state(6, "running"), state(20, "idle"), count(19, good=280, reject=20))
    world.readings("cell-2", "power", [(6 + i / 12, 3.0) for i in range(12 * 16)])
    r = world.service.kpis(world.ctx, world.line.id, at(6), at(22))
    line = r.total.line
    # bottleneck: cell-2 has the highest ideal cycle time (90 s against cell-1's mix of 60 s and 30 s)
    assert line is not None and line.rule is LineRule.BOTTLENECK and line.machine == "cell-2"
    assert line.cycle_time_s == pytest.approx(90.0)
    assert r.total.kpis.value("oee") == pytest.approx(line.oee)
    assert line.oee == pytest.approx(14 / 16 * (300 * 90 / 3600) / 14 * 280 / 300)
    # energy and labour are the whole line's, per good unit of the reference machine
    assert r.total.kpis.value("energy_efficiency") == pytest.approx(280 / (140 + 48))
    assert r.total.kpis.value("labour_productivity") == pytest.approx(280 / 16)
    assert [(x.machine, x.position) for x in r.total.machines] == [("cell-1", 0), ("cell-2", 1)]
    # the last machine by line_position, when the line says "last"
    engineer = TenantContext(world.ctx.tenant_id, "acme", Role.ENGINEER, "e")
    world.registry.update_asset(engineer, world.line.id, attributes={"kpi_line_rule": "last"})
    world.registry.update_asset(engineer, world.machines["cell-1"].id,
                                attributes={"ideal_cycle_time_s_by_product": {"B": 30}, "line_position": 2})
    world.registry.update_asset(engineer, world.machines["cell-2"].id,
                                attributes={"ideal_cycle_time_s": 90, "energy_measurement": "power", "line_position": 1})
    last = world.service.kpis(world.ctx, world.line.path_str, at(6), at(22)).total
    assert last.line is not None and (last.line.rule, last.line.machine) == (LineRule.LAST, "cell-1")
    assert last.kpis.value("oee") == pytest.approx(10.5 / 16 * 3.5 / 10.5 * 300 / 315)


def test_compare_two_days_explains_the_changes_exactly(world: World) -> None:
    monday(world)
    world.commit("cell-1",
                 state(6, "running"), state(20, "idle"), state(22, "planned_stop"),
                 count(10, good=150, reject=2), count(13, good=0, reject=1),
                 event(6, "clock_in", operator="ann"), event(22, "clock_out", operator="ann"), day=1)
    world.readings("cell-1", "energy", [(6, 2000.0), (22, 2120.0)], day=1)
    report = world.service.compare(world.ctx, world.machines["cell-1"].id, (at(6), at(22)), (at(6, 1), at(22, 1)))
    c = report.comparison
    assert c.changes["availability"].current == pytest.approx(14 / 16)
    assert c.changes["energy_efficiency"].change == pytest.approx((150 / 120) / (300 / 140) - 1)
    u = c.unit_cost
    assert u is not None and sum(u.effects.values()) == pytest.approx(u.change, abs=1e-12)
    assert c.oee is not None and sum(c.oee.effects.values()) == pytest.approx(c.oee.change, abs=1e-12)
    assert report.baseline.kpis.value("unit_cost") == pytest.approx(3058 / 300)


def test_what_is_refused(world: World) -> None:
    m = world.machines["cell-1"].id
    other = world.registry.create_tenant(PLATFORM, "rival")
    rival = TenantContext(other.id, "rival", Role.ADMIN, "rival")
    with pytest.raises(NotFound):
        world.service.kpis(rival, m, at(6), at(22))
    with pytest.raises(NotFound):
        world.service.kpis(world.ctx, "berlin/nowhere", at(6), at(22))
    with pytest.raises(InvalidInput, match="machines and lines"):
        world.service.kpis(world.ctx, world.site.id, at(6), at(22))
    with pytest.raises(InvalidInput, match="by='week'"):
        world.service.kpis(world.ctx, m, at(6), at(22), by="week")
    with pytest.raises(InvalidInput, match="end after"):
        world.service.kpis(world.ctx, m, at(22), at(6))
    with pytest.raises(InvalidInput, match="longer than"):
        world.service.kpis(world.ctx, m, at(0), at(0, day=500))
    with pytest.raises(InvalidInput, match="per machine"):
        world.service.kpis(world.ctx, world.line.id, at(6), at(22), by="order")
    engineer = TenantContext(world.ctx.tenant_id, "acme", Role.ENGINEER, "e")
    world.plant.put_site_calendar(engineer, world.site.id, None)
    with pytest.raises(InvalidInput, match="no shift calendar"):
        world.service.kpis(world.ctx, m, at(6), at(22), by="shift")
    world.registry.update_asset(engineer, m, attributes={"energy_measurement": "temperature"})
    with pytest.raises(InvalidInput, match="energy_kind"):
        world.service.kpis(world.ctx, m, at(6), at(22))
    world.registry.update_asset(engineer, m, attributes={"energy_measurement": "nope"})
    with pytest.raises(InvalidInput, match="not one of its numeric measurements"):
        world.service.kpis(world.ctx, m, at(6), at(22))


def test_labour_in_shifts_only_leaves_breaks_out(world: World) -> None:
    monday(world)
    engineer = TenantContext(world.ctx.tenant_id, "acme", Role.ENGINEER, "e")
    site = world.registry.asset(engineer, world.site.id)
    world.registry.update_asset(engineer, site.id, attributes={**site.attributes, "kpi_labour_in_shifts_only": True})
    k = world.service.kpis(world.ctx, world.machines["cell-1"].id, at(6), at(22)).total.kpis
    assert k["labour_productivity"].inputs["labour_h"] == pytest.approx(15.5)  # the 10:00 break is out
    world.registry.update_asset(engineer, site.id, attributes={**site.attributes, "kpi_labour_in_shifts_only": 1})
    with pytest.raises(InvalidInput, match="kpi_labour_in_shifts_only"):
        world.service.kpis(world.ctx, world.machines["cell-1"].id, at(6), at(22))


def test_without_calendar_or_cost_model_every_moment_is_scheduled_and_there_is_no_unit_cost(world: World) -> None:
    monday(world)
    engineer = TenantContext(world.ctx.tenant_id, "acme", Role.ENGINEER, "e")
    world.plant.put_site_calendar(engineer, world.site.id, None)
    world.plant.put_site_cost_model(engineer, world.site.id, None)
    r = world.service.kpis(world.ctx, world.machines["cell-1"].id, at(6), at(22))
    assert "unit_cost" not in r.total.kpis and r.total.cost is None and r.currency is None
    assert r.total.kpis.value("availability") == pytest.approx(10.5 / 16)
