"""KPI configuration in the plant file and the registry: sites' calendars and cost models (kept in
reserved attributes, shown as sections), machines' cycle times and energy source, the line rule."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from shopfloor.domain import kpi_config
from shopfloor.domain.assets import Level
from shopfloor.domain.errors import Forbidden, InvalidInput
from shopfloor.domain.kpi.line import LineRule
from shopfloor.domain.kpi.models import CycleTimes
from shopfloor.domain.plant import plant_from_obj, plant_to_obj
from shopfloor.domain.tenancy import Role, TenantContext
from shopfloor.services.plant import PlantService
from shopfloor.services.registry import PLATFORM, RegistryService
from shopfloor.testing.fakes import FixedClock, InMemoryRegistry

PLANT = """
asset_types:
  - name: cell
    attributes: {ideal_cycle_time_s: 18, energy_measurement: energy}
    measurements:
      - {name: energy, unit: kWh}
      - {name: power, unit: kW}
sites:
  - name: berlin
    timezone: Europe/Berlin
    calendar:
      shifts:
        - {name: early, start: "06:00", end: 14:00, weekdays: [1, 2, 3, 4, 5], breaks: [{start: "09:00", end: 9:15}]}
        - {name: late, start: 14:00, end: 22:00, weekdays: [1, 2, 3, 4, 5]}
      holidays: [2026-12-25, "2026-12-26"]
    cost_model:
      currency: EUR
      tariff:
        default_name: off_peak
        default_price: 0.18
        periods: [{name: peak, price: 0.30, start: "08:00", end: 20:00, weekdays: [1, 2, 3, 4, 5]}]
      labour_rate: 38
      overhead_per_hour: 120
      material_cost: {housing-a: 2.2}
    areas:
      - name: assembly
        lines:
          - name: line-1
            attributes: {kpi_line_rule: last}
            machines:
              - {name: cell-1, type: cell, attributes: {ideal_cycle_time_s_by_product: {housing-b: 22}}}
              - {name: cell-2, type: cell, attributes: {energy_measurement: power, energy_kind: power}}
"""


def plant(text: str = PLANT) -> Any:
    return yaml.safe_load(text)


class Setup:
    def __init__(self) -> None:
        self.repo = InMemoryRegistry(clock=FixedClock())
        self.registry = RegistryService(self.repo)
        self.plant = PlantService(self.registry)

    def tenant(self, slug: str, role: Role = Role.ENGINEER) -> TenantContext:
        t = self.repo.find_tenant(slug) or self.registry.create_tenant(PLATFORM, slug)
        return TenantContext(t.id, t.slug, role, f"{slug}-ci")

    def site(self, ctx: TenantContext, name: str = "berlin") -> Any:
        site = self.repo.find_asset(ctx.require_tenant(), (name,))
        assert site is not None
        return site


@pytest.fixture
def s() -> Setup:
    return Setup()


def test_sections_are_decoded_with_the_sites_zone_and_yaml_times_repaired() -> None:
    spec = plant_from_obj(plant())
    site = spec.sites[0]
    assert site.calendar is not None and site.cost_model is not None
    assert site.calendar.timezone == "Europe/Berlin" and site.cost_model.tariff.timezone == "Europe/Berlin"
    early, late = site.calendar.shifts
    # unquoted 14:00 and 9:15 are base-60 numbers to a YAML 1.1 reader; they come back as times
    assert (early.end, early.breaks[0].end, late.start, late.end) == ("14:00", "09:15", "14:00", "22:00")
    assert site.calendar.holidays == ["2026-12-25", "2026-12-26"]
    assert site.cost_model.tariff.periods[0].end == "20:00"
    assert site.cost_model.material_per_unit("housing-a") == 2.2


@pytest.mark.parametrize(("value", "expected"), [(360, "06:00"), (1320, "22:00"), (79_200, "22:00:00"),
                                                 (3_661, "01:01:01"), ("06:00", "06:00"), (5, 5), (True, True)])
def test_base_60_numbers_become_wall_times(value: Any, expected: Any) -> None:
    assert kpi_config._hhmm(value) == expected


def test_apply_stores_sections_in_reserved_attributes_and_is_idempotent(s: Setup) -> None:
    ctx = s.tenant("acme")
    s.plant.apply(ctx, plant_from_obj(plant()))
    site = s.site(ctx)
    assert set(site.attributes) == {kpi_config.CALENDAR, kpi_config.COST_MODEL}
    assert site.attributes[kpi_config.CALENDAR]["timezone"] == "Europe/Berlin"
    version = s.repo.version()
    again = s.plant.apply(ctx, plant_from_obj(plant()))
    assert again.created == {} and again.updated == {}
    assert s.repo.version() == version
    cal = s.plant.site_calendar(ctx, site.id)
    assert cal is not None and [x.name for x in cal.shifts] == ["early", "late"]


def test_export_shows_sections_not_attributes_and_round_trips(s: Setup) -> None:
    ctx = s.tenant("acme")
    s.plant.apply(ctx, plant_from_obj(plant()))
    exported = plant_to_obj(s.plant.export(ctx))
    site = exported["sites"][0]
    assert "attributes" not in site
    assert site["calendar"]["shifts"][1]["start"] == "14:00"
    assert site["cost_model"]["tariff"]["periods"][0]["price"] == 0.3
    other = s.tenant("other")
    s.plant.apply(other, plant_from_obj(yaml.safe_load(yaml.safe_dump(exported))))
    assert plant_to_obj(s.plant.export(other)) == exported
    assert s.plant.apply(ctx, plant_from_obj(exported)).updated == {}


def test_a_file_without_the_sections_keeps_what_is_stored(s: Setup) -> None:
    ctx = s.tenant("acme")
    s.plant.apply(ctx, plant_from_obj(plant()))
    obj = plant()
    del obj["sites"][0]["calendar"], obj["sites"][0]["cost_model"]
    result = s.plant.apply(ctx, plant_from_obj(obj))
    assert result.updated == {}
    site = s.site(ctx)
    assert s.plant.site_calendar(ctx, site.id) is not None
    assert s.plant.site_cost_model(ctx, site.id) is not None


def test_put_replaces_and_none_removes(s: Setup) -> None:
    ctx = s.tenant("acme")
    s.plant.apply(ctx, plant_from_obj(plant()))
    site = s.site(ctx)
    cal = s.plant.put_site_calendar(ctx, site.id, {"shifts": [{"name": "day", "start": "07:00", "end": "15:00"}]})
    assert cal is not None and cal.timezone == "Europe/Berlin" and cal.shifts[0].weekdays == [1, 2, 3, 4, 5, 6, 7]
    assert s.plant.site_calendar(ctx, site.id) == cal
    model = s.plant.put_site_cost_model(ctx, site.id, {"currency": "USD", "labour_rate": 50})
    assert model is not None and model.tariff.timezone == "Europe/Berlin"
    assert s.plant.put_site_calendar(ctx, site.id, None) is None
    assert s.plant.site_calendar(ctx, site.id) is None
    assert kpi_config.CALENDAR not in s.site(ctx).attributes
    assert s.plant.site_cost_model(ctx, site.id) == model


def test_put_checks_role_level_and_content(s: Setup) -> None:
    ctx = s.tenant("acme")
    s.plant.apply(ctx, plant_from_obj(plant()))
    site = s.site(ctx)
    with pytest.raises(Forbidden):
        s.plant.put_site_calendar(s.tenant("acme", Role.VIEWER), site.id, {"shifts": []})
    line = s.registry.list_assets(ctx, Level.LINE)[0]
    with pytest.raises(InvalidInput, match="belong to sites"):
        s.plant.site_calendar(ctx, line.id)
    bad: list[tuple[Any, str]] = [
        ({"timezone": "Mars/Olympus"}, "IANA"),
        ({"holidays": ["25.12.2026"]}, "not a date"),
        ({"shifts": [{"name": "x", "start": "25:00", "end": "06:00"}]}, "local time"),
        ({"shifts": [{"name": "x", "start": "06:00", "end": "14:00", "weekdays": [0]}]}, "weekdays"),
        ({"shifts": [{"name": "x", "start": "06:00"}]}, "end"),
        ({"shift": []}, "unknown field"),
        ([], "expected an object"),
    ]
    for body, message in bad:
        with pytest.raises(InvalidInput, match=message):
            s.plant.put_site_calendar(ctx, site.id, body)
    for body, message in [({"labour_rate": -1}, "negative"), ({"currency": " "}, "currency"),
                          ({"tariff": {"periods": [{"name": "standard", "price": 1, "start": "08:00",
                                                    "end": "09:00"}]}}, "none of them the default"),
                          ({"tariff": {"periods": [{"name": "peak", "price": 1, "start": "08:00", "end": "09:00"},
                                                   {"name": "peak", "price": 2, "start": "18:00", "end": "19:00"}]}},
                           "different prices"),
                          ({"tariff": {"timezone": "nowhere"}}, "IANA")]:
        with pytest.raises(InvalidInput, match=message):
            s.plant.put_site_cost_model(ctx, site.id, body)
    assert s.plant.site_calendar(ctx, site.id) is not None  # nothing was changed by the refusals


@pytest.mark.parametrize(("where", "attributes", "message"), [
    ("machine", {"ideal_cycle_time_s": 0}, "ideal_cycle_time_s must be a positive number"),
    ("machine", {"ideal_cycle_time_s_by_product": {"a": "fast"}}, "ideal_cycle_time_s_by_product.a"),
    ("machine", {"energy_kind": "gas"}, "energy_kind must be counter or power"),
    ("machine", {"energy_measurement": ""}, "energy_measurement"),
    ("machine", {"kpi_work_orders": "yes"}, "kpi_work_orders"),
    ("line", {"kpi_line_rule": "average"}, "kpi_line_rule must be one of bottleneck, last"),
    ("site", {"kpi_calendar": {}}, "write a 'calendar' section"),
])
def test_bad_kpi_attributes_are_refused_before_anything_is_written(s: Setup, where: str,
                                                                   attributes: dict[str, Any], message: str) -> None:
    ctx = s.tenant("acme")
    obj = plant()
    target = {"site": obj["sites"][0], "line": obj["sites"][0]["areas"][0]["lines"][0],
              "machine": obj["sites"][0]["areas"][0]["lines"][0]["machines"][0]}[where]
    target["attributes"] = {**target.get("attributes", {}), **attributes}
    with pytest.raises(InvalidInput, match=message):
        s.plant.apply(ctx, plant_from_obj(obj))
    assert s.registry.list_assets(ctx) == []


@pytest.mark.parametrize(("patch", "message"), [
    ({"calendar": {"timezone": "Nowhere/Land"}}, "plant file: site berlin: calendar: timezone"),
    ({"calendar": {"holidays": ["tomorrow"]}}, "plant file: site berlin: calendar: holiday"),
    ({"calendar": {"shifts": [{"name": "x", "start": "06:00", "end": "14:00", "weekdays": [8]}]}}, "plant file: shift x"),
    ({"cost_model": {"labour_rate": -3}}, "plant file: cost model rates cannot be negative"),
    ({"cost_model": {"tariff": {"periods": [{"name": "p", "price": 1, "start": "8", "end": "9"}]}}},
     "plant file: tariff period p start"),
])
def test_bad_sections_in_the_file_say_where(patch: dict[str, Any], message: str) -> None:
    obj = plant()
    obj["sites"][0].update(patch)
    with pytest.raises(InvalidInput) as info:
        plant_from_obj(obj)
    assert info.value.message.startswith(message), info.value.message


def test_machine_settings_are_read_with_type_defaults() -> None:
    t = {"ideal_cycle_time_s": 18, "energy_measurement": "energy"}
    m = kpi_config.merged(t, {"ideal_cycle_time_s_by_product": {"b": 22}})
    assert kpi_config.cycle_times(m) == CycleTimes(default=18.0, by_product={"b": 22.0})
    assert kpi_config.cycle_times({}) is None
    assert kpi_config.energy_source(m).measurement == "energy"
    assert kpi_config.energy_source({}).kind is None
    assert kpi_config.reports_orders({}) is True
    assert kpi_config.line_rule([{}, {"kpi_line_rule": "last"}, {"kpi_line_rule": "bottleneck"}]) is LineRule.LAST
    assert kpi_config.line_rule([]) is LineRule.BOTTLENECK
    assert kpi_config.energy_kind_of_unit("kWh") == "counter" and kpi_config.energy_kind_of_unit("degC") is None
