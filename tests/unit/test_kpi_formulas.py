"""Every KPI, hand-computed from aggregated inputs; None (never NaN) when undefined; coverage."""

from __future__ import annotations

import math

import msgspec
import pytest

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.kpi.formulas import compute, cost_breakdown, downtime_pareto, time_account
from shopfloor.domain.kpi.models import (
    Category,
    CostModel,
    Counts,
    CycleTimes,
    PeriodInputs,
    Tariff,
    TariffPeriod,
    TimeBucket,
)

H = 3600.0
C = Category


def shift_inputs(**extra: object) -> PeriodInputs:
    """One 8-hour shift: 7.5 h scheduled with an order, a 30-minute break.

    run 5 h · setup 0.5 h · unplanned stop 1 h (2 failures) · starved 0.25 h · blocked 0.25 h ·
    idle 0.5 h · break 0.5 h; 900 good, 50 reject, 50 rework; 400 kWh; 16 labour hours.
    """
    fields: dict[str, object] = {
        "time": [TimeBucket(C.RUN, 5 * H), TimeBucket(C.SETUP, 0.5 * H), TimeBucket(C.UNPLANNED_STOP, 1 * H),
                 TimeBucket(C.STARVED, 0.25 * H), TimeBucket(C.BLOCKED, 0.25 * H), TimeBucket(C.IDLE, 0.5 * H),
                 TimeBucket(C.PLANNED_STOP, 0.5 * H, scheduled=False)],
        "counts": {"p": Counts(good=900, reject=50, rework=50)},
        "failures": 2,
        "energy_kwh": {"standard": 400.0},
        "energy_coverage": 1.0,
        "labour_hours": 16.0,
    }
    fields.update(extra)
    return msgspec.convert(fields, PeriodInputs, from_attributes=True)


COST = CostModel(tariff=Tariff(default_price=0.2), labour_rate=40.0, overhead_per_hour=50.0,
                 material_cost={"p": 1.5})


def test_every_kpi_by_hand() -> None:
    k = compute(shift_inputs(), CycleTimes(default=15.0), COST)
    expected = {
        "availability": 5 / 7.5,  # APT / PBT; PBT = 5 + 0.5 + 1 + 0.25 + 0.25 + 0.5
        "effectiveness": (1000 * 15 / H) / 5,  # ideal time 4.1667 h / APT
        "quality_ratio": 0.9,
        "oee": 0.5,  # = good * ideal cycle time / PBT = 900 * 15 s / 7.5 h
        "teep": 0.5 * 7.5 / 8,
        "allocation_efficiency": 6.5 / 7.5,  # AUBT = APT + setup + unplanned stops
        "utilisation_efficiency": 5 / 6.5,
        "throughput_rate": 1000 / 8,  # PQ / AOET (an order open all 8 hours)
        "setup_ratio": 0.5 / 5.5,
        "scrap_ratio": 0.05,
        "rework_ratio": 0.05,
        "mtbf": 2.5,
        "mttr": 0.5,
        "technical_efficiency": 5 / 6,
        "energy_efficiency": 900 / 400,
        "kwh_per_good_unit": 400 / 900,
        "labour_productivity": 900 / 16,
        "unit_cost": (400 * 0.2 + 16 * 40 + 1000 * 1.5 + 7.5 * 50) / 900,
    }
    assert set(k) == set(expected)
    for key, value in expected.items():
        assert k.value(key) == pytest.approx(value), key
        assert k[key].coverage == 1.0, key
    assert k["performance"] is k["effectiveness"] and k["quality"] is k["quality_ratio"]
    assert k["oee"].iso == "OEE index" and k["unit_cost"].unit == "EUR/unit"
    assert k["unit_cost"].inputs == pytest.approx(
        {"energy": 80.0, "labour": 640.0, "material": 1500.0, "overhead": 375.0, "gq": 900})


KEYS = ["availability", "effectiveness", "quality_ratio", "oee", "teep", "allocation_efficiency",
        "utilisation_efficiency", "throughput_rate", "setup_ratio", "scrap_ratio", "rework_ratio", "mtbf", "mttr",
        "technical_efficiency", "energy_efficiency", "kwh_per_good_unit", "labour_productivity", "unit_cost"]


def test_hand_values_to_the_last_bit_and_the_json_of_a_kpi() -> None:
    """The hand case's ratios whose floats are exact (every input a whole number of seconds or units),
    compared with ==; the JSON is the API's: an object per KPI, ``iso`` left out when empty."""
    k = compute(shift_inputs(), CycleTimes(default=15.0), COST)
    assert list(k) == KEYS
    exact = {"availability": 5 / 7.5, "quality_ratio": 0.9, "scrap_ratio": 0.05, "rework_ratio": 0.05,
             "mtbf": 2.5, "mttr": 0.5, "technical_efficiency": 5 / 6, "utilisation_efficiency": 5 / 6.5,
             "energy_efficiency": 2.25, "labour_productivity": 56.25, "throughput_rate": 125.0}
    assert {key: k.value(key) for key in exact} == exact
    assert msgspec.json.decode(msgspec.json.encode(k["availability"])) == {
        "key": "availability", "value": 5 / 7.5, "unit": "1", "formula": "APT / PBT",
        "inputs": {"apt_h": 5.0, "pbt_h": 7.5}, "coverage": 1.0, "iso": "Availability"}
    teep = msgspec.json.decode(msgspec.json.encode(k["teep"]))
    assert list(teep) == ["key", "value", "unit", "formula", "inputs", "coverage"]
    assert list(teep["inputs"]) == ["oee", "loading", "pbt_h", "known_ct_h"] and teep["inputs"]["known_ct_h"] == 8.0
    assert list(msgspec.json.decode(msgspec.json.encode(k))["kpis"]) == KEYS
    # cost_breakdown alone gives what compute's unit cost was made of
    c = cost_breakdown(shift_inputs(), COST)
    assert k["unit_cost"].inputs == {"energy": c.energy, "labour": c.labour, "material": c.material,
                                     "overhead": c.overhead, "gq": 900}
    assert (c.labour, c.material, c.overhead, c.overhead_hours) == (640.0, 1500.0, 375.0, 7.5)


def test_the_time_account() -> None:
    t = time_account(shift_inputs().time)
    assert (t.calendar, t.planned, t.run, t.setup, t.delay, t.planned_stop) == (8 * H, 7.5 * H, 5 * H, 0.5 * H, H, 0.5 * H)
    assert (t.processing, t.busy, t.scheduled, t.with_order, t.repair) == (5.5 * H, 6.5 * H, 7.5 * H, 8 * H, H)
    assert t.coverage == 1.0 and t.loading == 7.5 / 8


def test_runs_outside_planned_time_count_as_run_and_planned() -> None:
    inputs = PeriodInputs(time=[TimeBucket(C.RUN, 2 * H), TimeBucket(C.RUN, 0.5 * H, scheduled=False),
                                TimeBucket(C.RUN, 0.5 * H, with_order=False), TimeBucket(C.IDLE, 1 * H)])
    t = time_account(inputs.time)
    assert (t.run, t.planned) == (3 * H, 4 * H)
    assert compute(inputs).value("availability") == 0.75


def test_planned_stops_and_time_without_orders_are_left_out_of_planned_time() -> None:
    inputs = PeriodInputs(time=[
        TimeBucket(C.RUN, 3 * H), TimeBucket(C.PLANNED_STOP, 1 * H),  # maintenance during the shift
        TimeBucket(C.IDLE, 2 * H, with_order=False),  # nothing to make
        TimeBucket(C.IDLE, 1 * H, scheduled=False, with_order=False),  # off shift
        TimeBucket(C.UNPLANNED_STOP, 1 * H)])
    t = time_account(inputs.time)
    assert (t.planned, t.planned_stop, t.no_order, t.with_order) == (4 * H, 4 * H, 2 * H, 5 * H)
    k = compute(inputs)
    assert k.value("availability") == 0.75
    assert k.value("teep") is None  # no cycle time: no effectiveness, no OEE


def test_unknown_time_is_left_out_and_lowers_coverage() -> None:
    base = shift_inputs()
    missing = shift_inputs(time=[*base.time, TimeBucket(C.UNKNOWN, 2.5 * H),
                                 TimeBucket(C.UNKNOWN, 1 * H, scheduled=False)])
    k = compute(missing, CycleTimes(default=15.0), COST)
    assert k.value("availability") == pytest.approx(5 / 7.5)  # unchanged: unknown is in neither
    assert k["availability"].coverage == pytest.approx(7.5 / 10)  # PBT / (PBT + unknown planned)
    assert k.value("teep") == pytest.approx(0.5 * 7.5 / 8)  # loading uses the known calendar time
    assert k["energy_efficiency"].coverage == pytest.approx(0.75)
    half_energy = shift_inputs(energy_coverage=0.5)
    assert compute(half_energy)["kwh_per_good_unit"].coverage == 0.5
    assert compute(half_energy)["availability"].coverage == 1.0


def test_all_unknown_or_empty_gives_none_not_nan() -> None:
    for inputs in (PeriodInputs(), PeriodInputs(time=[TimeBucket(C.UNKNOWN, H)])):
        k = compute(inputs, CycleTimes(default=1.0), COST)
        for key in k:
            value = k.value(key)
            assert value is None or not math.isnan(value), key
        assert all(k.value(key) is None for key in k if key != "throughput_rate")
    unknown = compute(PeriodInputs(time=[TimeBucket(C.UNKNOWN, H)]))
    # the hour had an order open and nothing was counted: 0 units/h, but with a coverage of 0
    assert unknown.value("throughput_rate") == 0.0 and unknown["throughput_rate"].coverage == 0.0
    assert unknown["availability"].coverage == 0.0
    assert compute(PeriodInputs())["availability"].coverage is None


def test_no_failures_means_no_mtbf_and_no_energy_data_means_no_energy_kpis() -> None:
    k = compute(shift_inputs(failures=0, energy_kwh={}, energy_coverage=None), CycleTimes(default=15.0), COST)
    assert k.value("mtbf") is None and k.value("mttr") is None
    assert k.value("energy_efficiency") is None and k.value("kwh_per_good_unit") is None
    assert k.value("unit_cost") == pytest.approx((16 * 40 + 1000 * 1.5 + 7.5 * 50) / 900)
    assert k["unit_cost"].coverage == 0.0  # the energy part is missing, and the result says so


def test_product_specific_cycle_times_and_a_missing_one() -> None:
    counts = {"small": Counts(good=590, reject=10), "large": Counts(good=195, rework=5)}
    inputs = shift_inputs(counts=counts)
    ct = CycleTimes(default=15.0, by_product={"large": 45.0})
    k = compute(inputs, ct)
    ideal_h = (600 * 15 + 200 * 45) / H  # 5 h
    assert k.value("effectiveness") == pytest.approx(ideal_h / 5)
    # ISO's OEE is A * E * Q = (ideal time of all units / PBT) * (GQ / PQ); with two products of
    # different quality it differs slightly from sum of good * cycle time / PBT, which weighs each
    # product's quality by its own cycle time
    assert k.value("oee") == pytest.approx((600 * 15 + 200 * 45) / (7.5 * H) * 785 / 800)
    assert k.value("oee") != pytest.approx((590 * 15 + 195 * 45) / (7.5 * H))
    assert compute(inputs, CycleTimes(by_product={"small": 15.0})).value("effectiveness") is None
    assert compute(inputs).value("oee") is None


def test_time_of_use_energy_cost_and_cost_breakdown() -> None:
    tariff = Tariff(default_price=0.1, default_name="night", periods=[TariffPeriod("day", 0.3, "06:00", "22:00")])
    cost = CostModel(currency="CHF", tariff=tariff, default_material_cost=2.0)
    c = cost_breakdown(shift_inputs(energy_kwh={"day": 300.0, "night": 100.0}), cost)
    assert (c.energy, c.material, c.labour, c.overhead) == pytest.approx((100.0, 2000.0, 0.0, 0.0))
    assert (c.kwh, c.good, c.produced, c.currency) == (400.0, 900, 1000, "CHF")
    with pytest.raises(InvalidInput, match="tariff period"):
        compute(shift_inputs(energy_kwh={"weekend": 1.0}), None, cost)


def test_downtime_pareto() -> None:
    rows = downtime_pareto({"unplanned_stop/jam": 1800.0, "setup": 600.0, "idle": 3600.0, "blocked": 0.0})
    assert [(r.reason, r.share, r.cumulative) for r in rows] == [
        ("idle", 0.6, 0.6), ("unplanned_stop/jam", 0.3, pytest.approx(0.9)), ("setup", 0.1, pytest.approx(1.0))]
    assert downtime_pareto({}) == []


def test_inputs_are_validated() -> None:
    with pytest.raises(InvalidInput):
        PeriodInputs(time=[TimeBucket(C.RUN, -1.0)])
    with pytest.raises(InvalidInput):
        PeriodInputs(counts={"p": Counts(good=-1)})
    with pytest.raises(InvalidInput):
        CycleTimes(default=0.0)
    with pytest.raises(InvalidInput):
        CostModel(labour_rate=-1.0)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"time": [{"category": "coffee", "seconds": 1}]}, PeriodInputs)
    for encoding in (msgspec.json, msgspec.msgpack):  # the stores' stored inputs are checked as they decode
        with pytest.raises(InvalidInput, match="negative"):
            encoding.decode(encoding.encode({"time": [{"category": "run", "seconds": -1.0}]}), type=PeriodInputs)
        with pytest.raises(InvalidInput, match="negative"):
            encoding.decode(encoding.encode({"counts": {"p": {"good": 1, "reject": -2}}}), type=PeriodInputs)
