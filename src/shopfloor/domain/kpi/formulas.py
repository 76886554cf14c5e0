"""Every KPI ratio, computed here and nowhere else (docs/kpis.md explains each one).

Input: ``PeriodInputs`` (durations by category * schedule * order, counts by product, failures,
kWh by tariff period, labour hours) plus the machine's ideal cycle times and the site's cost model.
Output: a ``KpiSet`` of ``Kpi`` results, each with its value (None, never NaN, when undefined: a
zero denominator, a missing cycle time), unit, formula, inputs and coverage.

The time model (ISO 22400-2 element names in brackets), from the buckets:
- calendar time CT: all buckets; unknown time U: category ``unknown`` (excluded from everything).
- planned busy time [PBT] = known time that is scheduled, has an open order and is not a
  ``planned_stop`` — plus every run, wherever it falls (a run in a break or without an order is both
  run time and planned time). Everything else known is planned-stop time (breaks, off-shift,
  holidays, the ``planned_stop`` state, time without orders).
- actual production time [APT] = all run time. Setup [ASUT], starved, blocked, idle and unplanned
  stops [ADET] count when inside PBT; they are its availability losses, so PBT = APT + losses.
- unit processing time [AUPT] = APT + ASUT; unit busy time [AUBT] = AUPT + ADET.
- order execution time [AOET] = all time with an open order (the whole window when the machine does
  not report orders). Repair time [TTR] = all unplanned-stop time; failures [FE] = episodes begun.
- scheduled (operating) time [POT] = all time inside the calendar's working shifts.
- coverage = PBT / (PBT + unknown time that was scheduled with an order); when that is 0, the known
  share of the window.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import msgspec

from shopfloor.domain.kpi.energy import energy_cost
from shopfloor.domain.kpi.models import Category, CostModel, Counts, CycleTimes, PeriodInputs, TimeBucket

ALIASES = {"performance": "effectiveness", "quality": "quality_ratio"}
HOUR = 3600.0


class Kpi(msgspec.Struct, frozen=True, omit_defaults=True):
    key: str
    value: float | None
    unit: str
    formula: str
    inputs: dict[str, float | None]
    coverage: float | None
    iso: str = ""  # the ISO 22400-2 name, when the KPI is one of its set


class KpiSet(msgspec.Struct, frozen=True):
    kpis: dict[str, Kpi]

    def __getitem__(self, key: str) -> Kpi:
        return self.kpis[ALIASES.get(key, key)]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and ALIASES.get(key, key) in self.kpis

    def value(self, key: str) -> float | None:
        return self[key].value

    def __iter__(self) -> Iterator[str]:
        return iter(self.kpis)

    def __len__(self) -> int:
        return len(self.kpis)


def ratio(num: float | None, den: float | None) -> float | None:
    """num / den, or None when either is None, the denominator is 0, or the result is not finite."""
    if num is None or den is None or den == 0:
        return None
    out = num / den
    return out if math.isfinite(out) else None


def product(*factors: float | None) -> float | None:
    out = 1.0
    for f in factors:
        if f is None:
            return None
        out *= f
    return out


def min_coverage(*covs: float | None) -> float | None:
    known = [c for c in covs if c is not None]
    return min(known) if len(known) == len(covs) and known else None


@dataclass(frozen=True, slots=True)
class TimeAccount:
    """Seconds of each ISO 22400-2 time element, from the buckets (see the module docstring)."""

    calendar: float = 0.0
    unknown: float = 0.0
    unknown_planned: float = 0.0
    planned: float = 0.0  # PBT
    run: float = 0.0  # APT
    setup: float = 0.0  # ASUT
    delay: float = 0.0  # ADET: unplanned stops inside PBT
    starved: float = 0.0
    blocked: float = 0.0
    idle: float = 0.0
    planned_stop: float = 0.0
    no_order: float = 0.0  # known, scheduled, no open order (and not running)
    scheduled: float = 0.0  # POT
    with_order: float = 0.0  # AOET
    repair: float = 0.0  # TTR

    @property
    def processing(self) -> float:  # AUPT
        return self.run + self.setup

    @property
    def busy(self) -> float:  # AUBT
        return self.run + self.setup + self.delay

    @property
    def coverage(self) -> float | None:
        if self.planned + self.unknown_planned > 0:
            return self.planned / (self.planned + self.unknown_planned)
        return ratio(self.calendar - self.unknown, self.calendar)

    @property
    def loading(self) -> float | None:
        """PBT / known calendar time: the share of the time the machine was planned to work."""
        return ratio(self.planned, self.calendar - self.unknown)


def time_account(buckets: Iterable[TimeBucket]) -> TimeAccount:
    acc = {k: 0.0 for k in TimeAccount.__dataclass_fields__}
    losses = {Category.SETUP: "setup", Category.UNPLANNED_STOP: "delay", Category.STARVED: "starved",
              Category.BLOCKED: "blocked", Category.IDLE: "idle"}
    for b in buckets:
        s = b.seconds
        acc["calendar"] += s
        acc["scheduled"] += s if b.scheduled else 0.0
        acc["with_order"] += s if b.with_order else 0.0
        if b.category is Category.UNPLANNED_STOP:
            acc["repair"] += s
        if b.category is Category.UNKNOWN:
            acc["unknown"] += s
            acc["unknown_planned"] += s if b.scheduled and b.with_order else 0.0
        elif b.category is Category.RUN:
            acc["run"] += s
            acc["planned"] += s
        elif b.scheduled and b.with_order and b.category is not Category.PLANNED_STOP:
            acc["planned"] += s
            acc[losses[b.category]] += s
        else:
            acc["planned_stop"] += s
            acc["no_order"] += s if b.scheduled and not b.with_order else 0.0
    return TimeAccount(**acc)


def ideal_time(counts: Mapping[str, Counts], cycle_times: CycleTimes | None) -> float | None:
    """Σ ideal cycle time(product) * produced units(product), in seconds; None if one is missing."""
    out = 0.0
    for product_key, c in counts.items():
        if c.produced == 0:
            continue
        ict = cycle_times.for_product(product_key) if cycle_times else None
        if ict is None:
            return None
        out += ict * c.produced
    return out


class CostBreakdown(msgspec.Struct, frozen=True):
    """A period's costs and the quantities they are spread over (input of the LMDI decomposition)."""

    energy: float
    labour: float
    material: float
    overhead: float
    kwh: float
    labour_hours: float
    overhead_hours: float
    good: int
    produced: int
    currency: str = "EUR"

    @property
    def total(self) -> float:
        return self.energy + self.labour + self.material + self.overhead

    @property
    def unit_cost(self) -> float | None:
        return ratio(self.total, self.good)


def cost_breakdown(inputs: PeriodInputs, cost: CostModel) -> CostBreakdown:
    t = time_account(inputs.time)
    material = sum(cost.material_per_unit(p) * c.produced for p, c in inputs.counts.items())
    n = inputs.total_counts
    return CostBreakdown(
        energy=energy_cost(inputs.energy_kwh, cost.tariff),
        labour=cost.labour_rate * inputs.labour_hours,
        material=material,
        overhead=cost.overhead_per_hour * t.scheduled / HOUR,
        kwh=inputs.kwh, labour_hours=inputs.labour_hours, overhead_hours=t.scheduled / HOUR,
        good=n.good, produced=n.produced, currency=cost.currency,
    )


def compute(inputs: PeriodInputs, cycle_times: CycleTimes | None = None, cost: CostModel | None = None) -> KpiSet:
    """All KPIs of one group. Without cycle times effectiveness/OEE/TEEP are None; without a cost
    model the cost KPIs are left out."""
    t = time_account(inputs.time)
    n = inputs.total_counts
    cov = t.coverage
    energy_cov = inputs.energy_coverage if inputs.energy_coverage is not None else (1.0 if inputs.energy_kwh else None)
    e_cov = min_coverage(cov, energy_cov)
    ideal = ideal_time(inputs.counts, cycle_times)
    out: dict[str, Kpi] = {}

    def put(key: str, value: float | None, unit: str, formula: str, ins: dict[str, float | None],
            coverage: float | None = cov, iso: str = "") -> None:
        out[key] = Kpi(key, value, unit, formula, ins, coverage, iso)

    h: dict[str, float | None] = {"apt_h": t.run / HOUR, "pbt_h": t.planned / HOUR}
    availability = ratio(t.run, t.planned)
    effectiveness = ratio(ideal, t.run)
    quality = ratio(n.good, n.produced)
    oee = product(availability, effectiveness, quality)
    put("availability", availability, "1", "APT / PBT", h, iso="Availability")
    put("effectiveness", effectiveness, "1", "Σ(ideal cycle time * PQ) / APT",
        {"ideal_time_h": None if ideal is None else ideal / HOUR, "apt_h": t.run / HOUR}, iso="Effectiveness")
    put("quality_ratio", quality, "1", "GQ / PQ", {"gq": n.good, "pq": n.produced}, iso="Quality ratio")
    put("oee", oee, "1", "availability * effectiveness * quality_ratio",
        {"availability": availability, "effectiveness": effectiveness, "quality_ratio": quality}, iso="OEE index")
    put("teep", product(oee, t.loading), "1", "oee * PBT / (CT - unknown)",
        {"oee": oee, "loading": t.loading, "pbt_h": t.planned / HOUR, "known_ct_h": (t.calendar - t.unknown) / HOUR})
    put("allocation_efficiency", ratio(t.busy, t.planned), "1", "AUBT / PBT",
        {"aubt_h": t.busy / HOUR, "pbt_h": t.planned / HOUR}, iso="Allocation efficiency")
    put("utilisation_efficiency", ratio(t.run, t.busy), "1", "APT / AUBT",
        {"apt_h": t.run / HOUR, "aubt_h": t.busy / HOUR}, iso="Utilization efficiency")
    put("throughput_rate", ratio(n.produced, t.with_order / HOUR), "units/h", "PQ / AOET",
        {"pq": n.produced, "aoet_h": t.with_order / HOUR}, iso="Throughput rate")
    put("setup_ratio", ratio(t.setup, t.processing), "1", "ASUT / AUPT",
        {"asut_h": t.setup / HOUR, "aupt_h": t.processing / HOUR}, iso="Setup rate")
    put("scrap_ratio", ratio(n.reject, n.produced), "1", "SQ / PQ", {"sq": n.reject, "pq": n.produced},
        iso="Scrap ratio")
    put("rework_ratio", ratio(n.rework, n.produced), "1", "RQ / PQ", {"rq": n.rework, "pq": n.produced},
        iso="Rework ratio")
    put("mtbf", ratio(t.run / HOUR, inputs.failures), "h", "APT / FE",
        {"apt_h": t.run / HOUR, "fe": inputs.failures}, iso="Mean operating time between failures")
    put("mttr", ratio(t.repair / HOUR, inputs.failures), "h", "TTR / FE",
        {"ttr_h": t.repair / HOUR, "fe": inputs.failures}, iso="Mean time to restoration")
    put("technical_efficiency", ratio(t.run, t.run + t.delay), "1", "APT / (APT + ADET)",
        {"apt_h": t.run / HOUR, "adet_h": t.delay / HOUR}, iso="Technical efficiency")
    kwh = inputs.kwh if energy_cov is not None else None
    put("energy_efficiency", ratio(n.good, kwh), "units/kWh", "GQ / kWh", {"gq": n.good, "kwh": kwh}, e_cov)
    put("kwh_per_good_unit", ratio(kwh, n.good), "kWh/unit", "kWh / GQ", {"kwh": kwh, "gq": n.good}, e_cov)
    put("labour_productivity", ratio(n.good, inputs.labour_hours), "units/h", "GQ / labour hours",
        {"gq": n.good, "labour_h": inputs.labour_hours})
    if cost is not None:
        c = cost_breakdown(inputs, cost)
        put("unit_cost", c.unit_cost, f"{cost.currency}/unit", "(energy + labour + material + overhead) / GQ",
            {"energy": c.energy, "labour": c.labour, "material": c.material, "overhead": c.overhead,
             "gq": c.good}, min_coverage(cov, energy_cov if energy_cov is not None else 0.0))
    return KpiSet(out)


class ParetoRow(msgspec.Struct, frozen=True):
    reason: str
    seconds: float
    share: float
    cumulative: float


def downtime_pareto(downtime_by_reason: Mapping[str, float]) -> list[ParetoRow]:
    """Losses by reason, largest first, with each one's share and the running share."""
    rows = sorted(((r, s) for r, s in downtime_by_reason.items() if s > 0), key=lambda x: (-x[1], x[0]))
    whole = sum(s for _, s in rows)
    out, running = [], 0.0
    for reason, seconds in rows:
        running += seconds
        out.append(ParetoRow(reason, seconds, seconds / whole, running / whole))
    return out
