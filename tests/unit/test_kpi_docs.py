"""docs/kpis.md runs: the lighthouse example's inputs are decoded from the page, its figures are
computed by domain/kpi, and the report printed on the page is what the code prints."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import msgspec

from shopfloor.domain.kpi.compare import Comparison, comparison
from shopfloor.domain.kpi.formulas import compute, cost_breakdown
from shopfloor.domain.kpi.models import CostModel, CycleTimes, PeriodInputs

PAGE = Path(__file__).resolve().parents[2] / "docs" / "kpis.md"
SHOWN = ["energy_efficiency", "kwh_per_good_unit", "labour_productivity", "unit_cost", "oee", "availability",
         "effectiveness", "quality_ratio", "teep", "mtbf", "mttr"]


def _block(lang: str, marker: str) -> str:
    blocks = re.findall(rf"```{lang}\n(.*?)```", PAGE.read_text(), re.S)
    found = [b for b in blocks if marker in b]
    assert len(found) == 1, f"one {lang} block with {marker!r} expected in docs/kpis.md"
    return str(found[0])


def lighthouse() -> tuple[dict[str, Any], Comparison]:
    doc = json.loads(_block("json", '"claim"'))
    cost = msgspec.convert(doc["cost_model"], CostModel)
    cycle = msgspec.convert(doc["cycle_times"], CycleTimes)
    base = msgspec.convert(doc["baseline"], PeriodInputs)
    cur = msgspec.convert(doc["current"], PeriodInputs)
    report = comparison(compute(base, cycle, cost), compute(cur, cycle, cost),
                        cost_breakdown(base, cost), cost_breakdown(cur, cost))
    return doc, report


def _f(value: float, digits: int = 4) -> float:
    """Rounded, with -0.0 made 0.0 (so a last-bit difference in a libm cannot flip a printed sign)."""
    return round(value, digits) + 0.0


def render(report: Comparison) -> str:
    lines = [f"{'kpi':<22}{'baseline':>11}{'current':>11}{'change':>10}"]
    for key in SHOWN:
        c = report.changes[key]
        assert c.baseline is not None and c.current is not None and c.change is not None
        lines.append(f"{key:<22}{_f(c.baseline):>11.4f}{_f(c.current):>11.4f}{_f(c.change * 100, 1):>+9.1f}%")
    u = report.unit_cost
    assert u is not None and u.relative is not None
    lines.append("")
    lines.append(f"unit cost {u.baseline:.4f} -> {u.current:.4f} EUR/unit: {u.change:+.4f} ({u.relative * 100:+.1f}%)")
    for name, value in u.effects.items():
        lines.append(f"  {name + ' effect':<22}{_f(value):>+9.4f}{_f(u.relative_effects[name] * 100, 1):>+8.1f}%")
    for name, value in u.detail.items():
        lines.append(f"    {name:<20}{_f(value):>+9.4f}")
    lines.append(f"  {'sum of effects':<22}{sum(u.effects.values()):>+9.4f}")
    assert report.oee is not None
    lines.append("")
    lines.append(f"oee {report.oee.baseline:.4f} -> {report.oee.current:.4f}: {report.oee.change:+.4f}")
    for name, value in report.oee.effects.items():
        lines.append(f"  {name + ' effect':<22}{_f(value):>+9.4f}")
    return "\n".join(lines) + "\n"


def test_the_lighthouse_claim_is_computed_not_typed() -> None:
    doc, report = lighthouse()
    for key, claimed in doc["claim"].items():
        computed = report.changes[key].change
        assert computed is not None and round(computed, 2) == claimed, (key, computed)
    u = report.unit_cost
    assert u is not None
    assert abs(sum(u.effects.values()) - u.change) < 1e-12


def test_the_report_on_the_page_is_what_the_code_prints() -> None:
    _, report = lighthouse()
    assert _block("text", "sum of effects") == render(report)
