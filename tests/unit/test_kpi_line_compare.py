"""Line OEE by rule; changes; exact LMDI decompositions of unit cost and OEE."""

from __future__ import annotations

import math

import pytest

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.kpi.compare import (
    change,
    compare,
    comparison,
    decompose_product,
    decompose_unit_cost,
    logmean,
)
from shopfloor.domain.kpi.formulas import CostBreakdown, compute
from shopfloor.domain.kpi.line import LineMachine, LineRule, line_oee, period_cycle_time
from shopfloor.domain.kpi.models import Category, Counts, CycleTimes, PeriodInputs, TimeBucket

H = 3600.0


def machine(name: str, position: int, run_h: float, counts: dict[str, Counts], ct: CycleTimes | None) -> LineMachine:
    inputs = PeriodInputs(time=[TimeBucket(Category.RUN, run_h * H), TimeBucket(Category.IDLE, (8 - run_h) * H)],
                          counts=counts)
    return LineMachine(name, position, inputs, ct, compute(inputs, ct))


LINE = [
    machine("press", 0, 7.0, {"a": Counts(good=1000)}, CycleTimes(default=20.0)),
    machine("weld", 1, 6.0, {"a": Counts(good=950, reject=50)}, CycleTimes(default=25.0)),
    machine("pack", 2, 4.0, {"a": Counts(good=950)}, CycleTimes(default=10.0)),
]


def test_the_bottleneck_rule_takes_the_highest_ideal_cycle_time() -> None:
    result = line_oee(LINE)
    assert result.rule is LineRule.BOTTLENECK and result.machine == "weld" and result.cycle_time_s == 25.0
    assert result.oee == pytest.approx(950 * 25 / (8 * H))
    assert result.availability == 0.75 and result.quality_ratio == 0.95


def test_the_last_rule_takes_the_last_machine_in_flow_order() -> None:
    result = line_oee(list(reversed(LINE)), LineRule.LAST)
    assert result.machine == "pack" and result.oee == pytest.approx(950 * 10 / (8 * H))


def test_the_bottleneck_follows_the_product_mix_and_ties_go_downstream() -> None:
    mix = machine("cnc", 3, 6.0, {"a": Counts(good=300), "b": Counts(good=100)},
                  CycleTimes(default=20.0, by_product={"b": 40.0}))
    assert period_cycle_time(mix) == pytest.approx(25.0)  # (300 * 20 + 100 * 40) / 400
    assert line_oee([*LINE, mix]).machine == "cnc"  # ties with weld at 25 s: the later machine
    idle = machine("spare", 4, 0.0, {}, CycleTimes(default=30.0))  # no output: its default cycle time
    assert line_oee([*LINE, idle]).machine == "spare"


def test_a_line_without_cycle_times_has_no_bottleneck() -> None:
    bare = [machine("x", 0, 4.0, {"a": Counts(good=1)}, None)]
    result = line_oee(bare)
    assert result.machine is None and result.oee is None
    assert line_oee(bare, LineRule.LAST).machine == "x"
    with pytest.raises(InvalidInput):
        line_oee([])


def test_change_is_current_over_baseline_minus_one() -> None:
    assert change(2.0, 2.66) == pytest.approx(0.33)
    assert change(0.0, 1.0) is None and change(None, 1.0) is None and change(1.0, None) is None
    base, cur = LINE[1].kpis, LINE[0].kpis
    changes = compare(base, cur)
    assert changes["availability"].change == pytest.approx(7 / 6 - 1)
    assert changes["availability"].unit == "1"


def test_logmean() -> None:
    assert logmean(2.0, 2.0) == 2.0
    assert logmean(4.0, 1.0) == pytest.approx(3 / math.log(4))
    assert logmean(1.0 + 1e-15, 1.0) == pytest.approx(1.0)


def cost(energy: float, labour: float, material: float, overhead: float, good: int, produced: int,
         kwh: float = 100.0, hours: float = 10.0, overhead_hours: float = 8.0) -> CostBreakdown:
    return CostBreakdown(energy, labour, material, overhead, kwh, hours, overhead_hours, good, produced)


def test_unit_cost_change_from_energy_only_is_all_energy() -> None:
    d = decompose_unit_cost(cost(100, 400, 1000, 500, 1000, 1000), cost(50, 400, 1000, 500, 1000, 1000, kwh=50))
    assert d is not None
    assert d.change == pytest.approx(-0.05) and d.relative == pytest.approx(-0.05 / 2.0)
    assert d.effects == pytest.approx({"energy": -0.05, "labour": 0, "material": 0, "overhead": 0, "scrap": 0})
    assert d.detail["energy_intensity"] == pytest.approx(-0.05) and d.detail["energy_price"] == pytest.approx(0)


def test_unit_cost_change_from_scrap_only_is_all_scrap() -> None:
    # same cost per produced unit; fewer of the produced units are scrap
    d = decompose_unit_cost(cost(100, 400, 1000, 500, 800, 1000), cost(100, 400, 1000, 500, 1000, 1000))
    assert d is not None
    assert d.change == pytest.approx(2.0 - 2.5)
    assert d.effects["scrap"] == pytest.approx(-0.5)
    assert sum(abs(d.effects[k]) for k in ("energy", "labour", "material", "overhead")) == pytest.approx(0, abs=1e-12)


def test_a_component_zero_in_one_period_gets_its_whole_change() -> None:
    d = decompose_unit_cost(cost(100, 0, 1000, 500, 1000, 1100, hours=0), cost(100, 300, 1000, 500, 1000, 1050))
    assert d is not None
    assert d.effects["labour"] == pytest.approx(0.3)
    assert sum(d.effects.values()) == pytest.approx(d.change, abs=1e-12)
    assert sum(d.relative_effects.values()) == pytest.approx(d.relative, abs=1e-12)
    assert sum(d.detail.values()) + d.effects["scrap"] == pytest.approx(d.change, abs=1e-12)


def test_unit_cost_without_good_units_cannot_be_decomposed() -> None:
    assert decompose_unit_cost(cost(1, 1, 1, 1, 0, 10), cost(1, 1, 1, 1, 5, 10)) is None


def test_oee_change_splits_exactly_into_its_factors() -> None:
    d = decompose_product({"a": 0.6, "e": 0.8, "q": 0.9}, {"a": 0.75, "e": 0.8, "q": 0.96})
    assert d is not None
    assert d.change == pytest.approx(0.75 * 0.8 * 0.96 - 0.6 * 0.8 * 0.9)
    assert sum(d.effects.values()) == pytest.approx(d.change, abs=1e-15)
    assert d.effects["e"] == 0.0 and d.effects["a"] > d.effects["q"] > 0
    assert decompose_product({"a": 0.0}, {"a": 0.5}) is None
    assert decompose_product({"a": 0.5}, {"b": 0.5}) is None


def test_comparison_puts_it_together() -> None:
    report = comparison(LINE[1].kpis, LINE[0].kpis)
    assert report.unit_cost is None  # no cost model
    assert report.oee is not None
    assert sum(report.oee.effects.values()) == pytest.approx(report.oee.change)
    assert report.energy_efficiency is None  # no energy data
