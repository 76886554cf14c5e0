"""Baseline vs current: the change of each KPI, and exact decompositions of the changes.

A change is ``current / baseline - 1`` (None when either is undefined or the baseline is 0).

The decompositions are additive LMDI-I (logarithmic mean Divisia index; Ang 2004, "Decomposition
analysis for policymaking in energy", Energy Policy 32; zero values by their analytical limit, Ang &
Liu 2007). With the logarithmic mean L(a, b) = (a - b) / ln(a / b), L(a, a) = a, one has exactly
L(a, b) · ln(a / b) = a - b, which makes the parts sum to the whole with no residual:

- a product V = Π xₖ (OEE = A * E * Q): ΔV = Σₖ L(V¹, V⁰) · ln(xₖ¹ / xₖ⁰).
- unit cost u = (energy + labour + material + overhead) / G. Write each component per good unit as
  cₖ = Kₖ / G = (Kₖ / P) · (P / G) = aₖ · s, with P the produced quantity (good + reject + rework)
  and s = P / G = 1 / quality ratio the scrap factor. Then

      Δu = Σₖ L(cₖ¹, cₖ⁰) · ln(aₖ¹ / aₖ⁰)  +  Σₖ L(cₖ¹, cₖ⁰) · ln(s¹ / s⁰)
           └ energy, labour, material, overhead effects ┘   └────── scrap effect ──────┘

  The energy effect splits further into intensity (kWh / P) and price (energy cost / kWh), labour into
  hours per unit (h / P) and rate, overhead into scheduled hours per unit and rate — same weights, so
  the details sum to their effect. A component that is zero in one period only (nothing to take a
  logarithm of) gets its whole change cₖ¹ - cₖ⁰ as its own effect, under its quantity factor: that is
  the LMDI limit as the zero is approached, and it keeps the sum exact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import msgspec

from shopfloor.domain.kpi.formulas import CostBreakdown, KpiSet, ratio


class Change(msgspec.Struct, frozen=True):
    key: str
    unit: str
    baseline: float | None
    current: float | None
    change: float | None  # current / baseline - 1


def change(baseline: float | None, current: float | None) -> float | None:
    r = ratio(current, baseline)
    return None if r is None else r - 1.0


def compare(baseline: KpiSet, current: KpiSet) -> dict[str, Change]:
    """The change of every KPI present in both sets."""
    out = {}
    for key in baseline.kpis:
        if key in current:
            b, c = baseline[key], current[key]
            out[key] = Change(key, b.unit, b.value, c.value, change(b.value, c.value))
    return out


def ln_ratio(new: float, old: float) -> float:
    """ln(new / old) for positive numbers, accurate also when they are close."""
    if abs(new - old) < 0.5 * old:
        return math.log1p((new - old) / old)
    return math.log(new) - math.log(old)


def logmean(a: float, b: float) -> float:
    """The logarithmic mean of two positive numbers."""
    if a == b:
        return a
    return (a - b) / ln_ratio(a, b)


class ProductDecomposition(msgspec.Struct, frozen=True):
    baseline: float
    current: float
    change: float  # current - baseline
    effects: dict[str, float]  # sums to change


def decompose_product(baseline: Mapping[str, float | None], current: Mapping[str, float | None]
                      ) -> ProductDecomposition | None:
    """LMDI of V = Π factors; None unless every factor is positive in both periods."""
    keys = list(baseline)
    b_vals, c_vals = [baseline[k] for k in keys], [current.get(k) for k in keys]
    if set(current) != set(keys) or any(v is None or not v > 0 for v in (*b_vals, *c_vals)):
        return None
    v0 = math.prod(v for v in b_vals if v is not None)
    v1 = math.prod(v for v in c_vals if v is not None)
    w = logmean(v1, v0)
    effects = {k: w * ln_ratio(float(current[k] or 0), float(baseline[k] or 0)) for k in keys}
    return ProductDecomposition(v0, v1, v1 - v0, effects)


class UnitCostDecomposition(msgspec.Struct, frozen=True):
    baseline: float
    current: float
    change: float  # current - baseline, currency per good unit
    relative: float | None  # current / baseline - 1 (None for a zero baseline)
    effects: dict[str, float]  # energy, labour, material, overhead, scrap: they sum to change
    relative_effects: dict[str, float]  # effects / baseline: they sum to relative (empty without it)
    detail: dict[str, float]  # energy_intensity + energy_price = energy, and so on


_SPLIT = {  # component → (quantity factor, its quantity, price factor)
    "energy": ("energy_intensity", "kwh", "energy_price"),
    "labour": ("labour_hours", "labour_hours", "labour_rate"),
    "overhead": ("overhead_hours", "overhead_hours", "overhead_rate"),
    "material": ("material", "", ""),
}


def decompose_unit_cost(baseline: CostBreakdown, current: CostBreakdown) -> UnitCostDecomposition | None:
    """Exact LMDI split of the unit-cost change (see the module docstring). None when a period has
    no good units (its unit cost is undefined)."""
    u0, u1 = baseline.unit_cost, current.unit_cost
    if u0 is None or u1 is None or baseline.produced < baseline.good or current.produced < current.good:
        return None
    scrap_log = ln_ratio(current.produced / current.good, baseline.produced / baseline.good)
    effects = {"energy": 0.0, "labour": 0.0, "material": 0.0, "overhead": 0.0, "scrap": 0.0}
    detail: dict[str, float] = {}
    for comp, (qty_factor, qty_field, price_factor) in _SPLIT.items():
        k0, k1 = float(getattr(baseline, comp)), float(getattr(current, comp))
        c0, c1 = k0 / baseline.good, k1 / current.good
        detail.setdefault(qty_factor, 0.0)
        if price_factor:
            detail.setdefault(price_factor, 0.0)
        if c0 == 0.0 and c1 == 0.0:
            continue
        if c0 == 0.0 or c1 == 0.0:  # the LMDI limit: the whole change is the component's own
            effects[comp] += c1 - c0
            detail[qty_factor] += c1 - c0
            continue
        w = logmean(c1, c0)
        own = w * ln_ratio(k1 / current.produced, k0 / baseline.produced)
        effects[comp] += own
        effects["scrap"] += w * scrap_log
        q0 = float(getattr(baseline, qty_field)) if qty_field else 0.0
        q1 = float(getattr(current, qty_field)) if qty_field else 0.0
        if price_factor and q0 > 0 and q1 > 0:
            qty = w * ln_ratio(q1 / current.produced, q0 / baseline.produced)
            detail[qty_factor] += qty
            detail[price_factor] += own - qty
        else:
            detail[qty_factor] += own
    relative = {k: v / u0 for k, v in effects.items()} if u0 > 0 else {}
    return UnitCostDecomposition(u0, u1, u1 - u0, change(u0, u1), effects, relative, detail)


class Comparison(msgspec.Struct, frozen=True):
    """The lighthouse report: every KPI's change, and the contributions that explain the headline ones."""

    changes: dict[str, Change]
    unit_cost: UnitCostDecomposition | None
    oee: ProductDecomposition | None
    energy_efficiency: ProductDecomposition | None
    labour_productivity: ProductDecomposition | None


def _quality_times(kpis: KpiSet, per: str) -> dict[str, float | None]:
    """GQ / X = (GQ / PQ) * (PQ / X): quality ratio and produced units per X."""
    q = kpis.value("quality_ratio")
    v = kpis.value(per)
    return {"quality_ratio": q, "produced_per_input": None if v is None or not q else v / q}


def comparison(baseline: KpiSet, current: KpiSet, cost_baseline: CostBreakdown | None = None,
               cost_current: CostBreakdown | None = None) -> Comparison:
    def oee_factors(k: KpiSet) -> dict[str, float | None]:
        return {f: k.value(f) for f in ("availability", "effectiveness", "quality_ratio")}

    unit = None
    if cost_baseline is not None and cost_current is not None:
        unit = decompose_unit_cost(cost_baseline, cost_current)
    return Comparison(
        compare(baseline, current), unit,
        decompose_product(oee_factors(baseline), oee_factors(current)),
        decompose_product(_quality_times(baseline, "energy_efficiency"), _quality_times(current, "energy_efficiency")),
        decompose_product(_quality_times(baseline, "labour_productivity"),
                          _quality_times(current, "labour_productivity")),
    )
