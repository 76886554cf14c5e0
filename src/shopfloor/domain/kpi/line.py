"""Line-level OEE: the OEE of one reference machine, chosen by a configurable rule — never an
average of the machines (an average rewards a fast machine idling behind a slow one).

Rules:
- ``bottleneck`` (default): the machine with the highest ideal cycle time for the period — the
  designed constraint, which sets the line's pace. A machine's cycle time for the period is its
  ideal time divided by its produced quantity (the product-mix weighted cycle time); with no output
  its default ideal cycle time is used. Ties go to the machine further down the line. The lowest
  *actual* throughput is deliberately not the rule: it moves with the very losses OEE measures (a
  starved machine would become "the bottleneck").
- ``last``: the last machine of the line (what leaves the line is what the customer gets).

The result names the rule and the chosen machine, and carries that machine's OEE and factors, so a
reader can always see which machine the line figure is.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import msgspec

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.kpi.formulas import KpiSet, ideal_time
from shopfloor.domain.kpi.models import CycleTimes, PeriodInputs


class LineRule(enum.StrEnum):
    BOTTLENECK = "bottleneck"
    LAST = "last"


class LineMachine(msgspec.Struct, frozen=True):
    """A machine of a line, in flow order (position 0 is the first)."""

    machine: str
    position: int
    inputs: PeriodInputs
    cycle_times: CycleTimes | None
    kpis: KpiSet


class LineOee(msgspec.Struct, frozen=True):
    rule: LineRule
    machine: str | None
    oee: float | None
    availability: float | None
    effectiveness: float | None
    quality_ratio: float | None
    coverage: float | None
    cycle_time_s: float | None = None  # the chosen machine's period cycle time (bottleneck rule)


def period_cycle_time(m: LineMachine) -> float | None:
    """Ideal seconds per unit over the period's product mix, or the default with no output."""
    produced = m.inputs.total_counts.produced
    if produced == 0:
        return m.cycle_times.default if m.cycle_times else None
    ideal = ideal_time(m.inputs.counts, m.cycle_times)
    return None if ideal is None else ideal / produced


def line_oee(machines: Sequence[LineMachine], rule: LineRule = LineRule.BOTTLENECK) -> LineOee:
    if not machines:
        raise InvalidInput("a line needs at least one machine")
    ordered = sorted(machines, key=lambda m: m.position)
    chosen: LineMachine | None
    cycle: float | None = None
    if rule is LineRule.LAST:
        chosen = ordered[-1]
        cycle = period_cycle_time(chosen)
    else:
        chosen = None
        for m in ordered:
            ct = period_cycle_time(m)
            if ct is not None and (cycle is None or ct >= cycle):
                chosen, cycle = m, ct
    if chosen is None:
        return LineOee(rule, None, None, None, None, None, None)
    k = chosen.kpis
    return LineOee(rule, chosen.machine, k.value("oee"), k.value("availability"), k.value("effectiveness"),
                   k.value("quality_ratio"), k["oee"].coverage, cycle)
