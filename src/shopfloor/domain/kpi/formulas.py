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

from collections.abc import Iterable, Iterator, Mapping
from math import isfinite

import msgspec

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.kpi.energy import energy_cost
from shopfloor.domain.kpi.models import Category, CostModel, Counts, CycleTimes, PeriodInputs, TimeBucket

ALIASES = {"performance": "effectiveness", "quality": "quality_ratio"}
HOUR = 3600.0


class Kpi(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    key: str
    value: float | None
    unit: str
    formula: str
    inputs: dict[str, float | None]
    coverage: float | None
    iso: str = ""  # the ISO 22400-2 name, when the KPI is one of its set


class KpiSet(msgspec.Struct, frozen=True, gc=False):
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
    return out if isfinite(out) else None


def product(*factors: float | None) -> float | None:
    out = 1.0
    for f in factors:
        if f is None:
            return None
        out *= f
    return out


def min_coverage(*covs: float | None) -> float | None:
    """The smallest coverage (the first of equal ones, as ``min``), or None when one is None."""
    out: float | None = None
    for c in covs:
        if c is None:
            return None
        if out is None or c < out:
            out = c
    return out


class TimeAccount(msgspec.Struct, frozen=True, gc=False):
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


# the categories as plain module globals: reading ``Category.RUN`` goes through the enum's metaclass
# each time, which costs more than the rest of a bucket's bookkeeping
_RUN, _UNKNOWN, _PLANNED_STOP = Category.RUN, Category.UNKNOWN, Category.PLANNED_STOP
_SETUP, _UNPLANNED_STOP, _STARVED, _BLOCKED, _IDLE = (
    Category.SETUP, Category.UNPLANNED_STOP, Category.STARVED, Category.BLOCKED, Category.IDLE)


def time_account(buckets: Iterable[TimeBucket]) -> TimeAccount:
    """Every time element in one pass over the buckets (the rules of the module docstring); each
    element adds its buckets' seconds in bucket order."""
    calendar = unknown = unknown_planned = planned = run = setup = delay = starved = blocked = idle = 0.0
    planned_stop = no_order = scheduled = with_order = repair = 0.0
    for b in buckets:
        s = b.seconds
        c = b.category
        in_shift = b.scheduled
        ordered = b.with_order
        calendar += s
        if in_shift:
            scheduled += s
        if ordered:
            with_order += s
        if c is _UNPLANNED_STOP:
            repair += s
        if c is _UNKNOWN:
            unknown += s
            if in_shift and ordered:
                unknown_planned += s
        elif c is _RUN:
            run += s
            planned += s
        elif in_shift and ordered and c is not _PLANNED_STOP:  # an availability loss
            planned += s
            if c is _UNPLANNED_STOP:
                delay += s
            elif c is _SETUP:
                setup += s
            elif c is _STARVED:
                starved += s
            elif c is _BLOCKED:
                blocked += s
            elif c is _IDLE:
                idle += s
            else:
                raise InvalidInput(f"{c!r} is not a KPI category")
        else:
            planned_stop += s
            if in_shift and not ordered:
                no_order += s
    return TimeAccount(calendar, unknown, unknown_planned, planned, run, setup, delay, starved, blocked, idle,
                       planned_stop, no_order, scheduled, with_order, repair)


def ideal_time(counts: Mapping[str, Counts], cycle_times: CycleTimes | None) -> float | None:
    """Σ ideal cycle time(product) * produced units(product), in seconds; None if one is missing."""
    out = 0.0
    for product_key, c in counts.items():
        produced = c.produced
        if produced == 0:
            continue
        ict = cycle_times.for_product(product_key) if cycle_times else None
        if ict is None:
            return None
        out += ict * produced
    return out


class CostBreakdown(msgspec.Struct, frozen=True, gc=False):
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
    """Energy at the tariff's prices, labour per clocked hour, material per produced unit, overhead
    per scheduled hour."""
    return _cost_breakdown(inputs, cost, time_account(inputs.time).scheduled, inputs.total_counts, inputs.kwh)


def _cost_breakdown(inputs: PeriodInputs, cost: CostModel, scheduled: float, n: Counts, kwh: float) -> CostBreakdown:
    """``cost_breakdown`` given the period's scheduled seconds, total counts and kWh."""
    material = sum([cost.material_per_unit(p) * c.produced for p, c in inputs.counts.items()])
    energy = energy_cost(inputs.energy_kwh, cost.tariff)
    overhead_hours = scheduled / HOUR
    return CostBreakdown(energy, cost.labour_rate * inputs.labour_hours, material,
                         cost.overhead_per_hour * scheduled / HOUR, kwh, inputs.labour_hours, overhead_hours,
                         n.good, n.produced, cost.currency)


def compute(inputs: PeriodInputs, cycle_times: CycleTimes | None = None, cost: CostModel | None = None) -> KpiSet:
    """All KPIs of one group. Without cycle times effectiveness/OEE/TEEP are None; without a cost
    model the cost KPIs are left out."""
    t = time_account(inputs.time)
    n = inputs.total_counts
    good, produced = n.good, n.produced
    run, planned, setup, delay, failures = t.run, t.planned, t.setup, t.delay, inputs.failures
    busy, processing = t.busy, t.processing
    cov = t.coverage
    loading = t.loading
    energy_cov = inputs.energy_coverage if inputs.energy_coverage is not None else (1.0 if inputs.energy_kwh else None)
    e_cov = min_coverage(cov, energy_cov)
    ideal = ideal_time(inputs.counts, cycle_times)
    apt_h, pbt_h, aubt_h = run / HOUR, planned / HOUR, busy / HOUR

    availability = ratio(run, planned)
    effectiveness = ratio(ideal, run)
    quality = ratio(good, produced)
    oee = product(availability, effectiveness, quality)
    all_kwh = inputs.kwh
    kwh = all_kwh if energy_cov is not None else None
    out = {
        "availability": Kpi("availability", availability, "1", "APT / PBT", {"apt_h": apt_h, "pbt_h": pbt_h},
                            cov, "Availability"),
        "effectiveness": Kpi("effectiveness", effectiveness, "1", "Σ(ideal cycle time * PQ) / APT",
                             {"ideal_time_h": None if ideal is None else ideal / HOUR, "apt_h": apt_h}, cov,
                             "Effectiveness"),
        "quality_ratio": Kpi("quality_ratio", quality, "1", "GQ / PQ", {"gq": good, "pq": produced}, cov,
                             "Quality ratio"),
        "oee": Kpi("oee", oee, "1", "availability * effectiveness * quality_ratio",
                   {"availability": availability, "effectiveness": effectiveness, "quality_ratio": quality}, cov,
                   "OEE index"),
        "teep": Kpi("teep", product(oee, loading), "1", "oee * PBT / (CT - unknown)",
                    {"oee": oee, "loading": loading, "pbt_h": pbt_h, "known_ct_h": (t.calendar - t.unknown) / HOUR},
                    cov),
        "allocation_efficiency": Kpi("allocation_efficiency", ratio(busy, planned), "1", "AUBT / PBT",
                                     {"aubt_h": aubt_h, "pbt_h": pbt_h}, cov, "Allocation efficiency"),
        "utilisation_efficiency": Kpi("utilisation_efficiency", ratio(run, busy), "1", "APT / AUBT",
                                      {"apt_h": apt_h, "aubt_h": aubt_h}, cov, "Utilization efficiency"),
        "throughput_rate": Kpi("throughput_rate", ratio(produced, t.with_order / HOUR), "units/h", "PQ / AOET",
                               {"pq": produced, "aoet_h": t.with_order / HOUR}, cov, "Throughput rate"),
        "setup_ratio": Kpi("setup_ratio", ratio(setup, processing), "1", "ASUT / AUPT",
                           {"asut_h": setup / HOUR, "aupt_h": processing / HOUR}, cov, "Setup rate"),
        "scrap_ratio": Kpi("scrap_ratio", ratio(n.reject, produced), "1", "SQ / PQ", {"sq": n.reject, "pq": produced},
                           cov, "Scrap ratio"),
        "rework_ratio": Kpi("rework_ratio", ratio(n.rework, produced), "1", "RQ / PQ",
                            {"rq": n.rework, "pq": produced}, cov, "Rework ratio"),
        "mtbf": Kpi("mtbf", ratio(apt_h, failures), "h", "APT / FE", {"apt_h": apt_h, "fe": failures}, cov,
                    "Mean operating time between failures"),
        "mttr": Kpi("mttr", ratio(t.repair / HOUR, failures), "h", "TTR / FE",
                    {"ttr_h": t.repair / HOUR, "fe": failures}, cov, "Mean time to restoration"),
        "technical_efficiency": Kpi("technical_efficiency", ratio(run, run + delay), "1", "APT / (APT + ADET)",
                                    {"apt_h": apt_h, "adet_h": delay / HOUR}, cov, "Technical efficiency"),
        "energy_efficiency": Kpi("energy_efficiency", ratio(good, kwh), "units/kWh", "GQ / kWh",
                                 {"gq": good, "kwh": kwh}, e_cov),
        "kwh_per_good_unit": Kpi("kwh_per_good_unit", ratio(kwh, good), "kWh/unit", "kWh / GQ",
                                 {"kwh": kwh, "gq": good}, e_cov),
        "labour_productivity": Kpi("labour_productivity", ratio(good, inputs.labour_hours), "units/h",
                                   "GQ / labour hours", {"gq": good, "labour_h": inputs.labour_hours}, cov),
    }
    if cost is not None:
        c = _cost_breakdown(inputs, cost, t.scheduled, n, all_kwh)
        out["unit_cost"] = Kpi(
            "unit_cost", c.unit_cost, f"{cost.currency}/unit", "(energy + labour + material + overhead) / GQ",
            {"energy": c.energy, "labour": c.labour, "material": c.material, "overhead": c.overhead, "gq": c.good},
            min_coverage(cov, energy_cov if energy_cov is not None else 0.0))
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
