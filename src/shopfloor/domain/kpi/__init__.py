"""KPI maths, pure: every formula of docs/kpis.md exists once, here.

The SQL layer (DuckDB, PostgreSQL) sums durations, counts and energy per group into
``PeriodInputs``; ``formulas.compute`` turns them into KPIs; ``compare`` explains changes between two
periods; ``line`` picks a line's reference machine. ``reference`` does the summing in Python from raw
events — the oracle the SQL must match. ``calendar`` expands shift calendars and tariffs to UTC.
"""

from shopfloor.domain.kpi.compare import Comparison, comparison, decompose_unit_cost
from shopfloor.domain.kpi.formulas import CostBreakdown, Kpi, KpiSet, compute, cost_breakdown, downtime_pareto
from shopfloor.domain.kpi.line import LineMachine, LineOee, LineRule, line_oee
from shopfloor.domain.kpi.models import (
    Category,
    CostModel,
    Counts,
    CycleTimes,
    PeriodInputs,
    ShiftCalendar,
    Tariff,
    TimeBucket,
    combine,
)

__all__ = [
    "Category",
    "Comparison",
    "CostBreakdown",
    "CostModel",
    "Counts",
    "CycleTimes",
    "Kpi",
    "KpiSet",
    "LineMachine",
    "LineOee",
    "LineRule",
    "PeriodInputs",
    "ShiftCalendar",
    "Tariff",
    "TimeBucket",
    "combine",
    "comparison",
    "compute",
    "cost_breakdown",
    "decompose_unit_cost",
    "downtime_pareto",
    "line_oee",
]
