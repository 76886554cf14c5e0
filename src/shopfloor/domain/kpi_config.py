"""KPI configuration as the registry keeps it: in asset attributes, under reserved keys.

No registry schema is needed for it. A site's shift calendar and cost model are stored as JSON in
the site's attributes (``kpi_calendar``, ``kpi_cost_model``); the plant file and the API show them
as sections of their own and decode them into ``domain.kpi`` models here. Machines (and their
asset types, whose attributes are the machines' defaults) carry their ideal cycle times and energy
source; lines, areas or sites the line-OEE rule. docs/kpis.md lists every key.

Everything is validated here, with messages that name the key and what it must be.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import msgspec

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.kpi.line import LineRule
from shopfloor.domain.kpi.models import CostModel, CycleTimes, ShiftCalendar
from shopfloor.domain.query import zone

# sites: the calendar and the cost model (shown as sections, not as attributes)
CALENDAR = "kpi_calendar"
COST_MODEL = "kpi_cost_model"
SECTIONS = {CALENDAR: "calendar", COST_MODEL: "cost_model"}
# machines (or their asset type)
CYCLE_TIME = "ideal_cycle_time_s"
CYCLE_TIMES_BY_PRODUCT = "ideal_cycle_time_s_by_product"
ENERGY_MEASUREMENT = "energy_measurement"
ENERGY_KIND = "energy_kind"
ENERGY_STALENESS = "energy_staleness_s"
WORK_ORDERS = "kpi_work_orders"
LINE_POSITION = "line_position"
# lines (or the area or site above them)
LINE_RULE = "kpi_line_rule"
# sites: count clocked-in time only inside working shifts (ISO 22400-2 attendance excludes breaks)
LABOUR_IN_SHIFTS = "kpi_labour_in_shifts_only"

ENERGY_KINDS = ("counter", "power")
DEFAULT_ENERGY_STALENESS_S = 300.0
MAX_SHIFTS = 100
MAX_HOLIDAYS = 10_000
MAX_TARIFF_PERIODS = 100


# -- decoding sections ---------------------------------------------------------------------------
def _hhmm(value: Any) -> Any:
    """A YAML 1.1 reader turns an unquoted ``22:00`` into 1320 (base 60): turn it back.

    Only whole numbers that such a reading of a valid wall time gives are changed: HH:MM with HH
    from 1 to 23 gives less than 1440, HH:MM:SS with HH ≥ 1 from 3600 up (a leading 0 is not read
    as base 60, so ``06:00`` stays a string)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return value
    if 60 <= value < 1440:
        h, m = divmod(value, 60)
        return f"{h:02d}:{m:02d}"
    if 3600 <= value < 86_400:
        h, rest = divmod(value, 3600)
        m, s = divmod(rest, 60)
        return f"{h:02d}:{m:02d}:{s:02d}"
    return value


def _fix_times(items: Any) -> Any:
    if not isinstance(items, list):
        return items
    out = []
    for item in items:
        if isinstance(item, dict):
            item = {**item, **{k: _hhmm(item[k]) for k in ("start", "end") if k in item}}
            if "breaks" in item:
                item["breaks"] = _fix_times(item["breaks"])
        out.append(item)
    return out


def prepare_calendar(obj: Any, default_timezone: str) -> Any:
    """A calendar section as written, before decoding: the site's zone where none is given, and
    wall times that YAML read as numbers made times again."""
    if not isinstance(obj, dict):
        return obj
    out = dict(obj)
    out.setdefault("timezone", default_timezone)
    if "shifts" in out:
        out["shifts"] = _fix_times(out["shifts"])
    return out


def prepare_cost_model(obj: Any, default_timezone: str) -> Any:
    """A cost-model section as written, before decoding (see ``prepare_calendar``)."""
    if not isinstance(obj, dict):
        return obj
    out = dict(obj)
    tariff = out.get("tariff", {})
    if isinstance(tariff, dict):
        tariff = dict(tariff)
        tariff.setdefault("timezone", default_timezone)
        if "periods" in tariff:
            tariff["periods"] = _fix_times(tariff["periods"])
        out["tariff"] = tariff
    return out


def _convert(obj: Any, kind: type[Any], what: str) -> Any:
    if not isinstance(obj, dict):
        raise InvalidInput(f"{what}: expected an object, not {type(obj).__name__}")
    try:
        return msgspec.convert(obj, kind)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"{what}: {exc}") from None
    except InvalidInput as exc:
        raise InvalidInput(f"{what}: {exc.message}") from None


def decode_calendar(obj: Any, default_timezone: str, what: str = "calendar") -> ShiftCalendar:
    """A shift calendar from JSON (API body, plant file section or stored attribute), checked."""
    cal: ShiftCalendar = _convert(prepare_calendar(obj, default_timezone), ShiftCalendar, what)
    check_calendar(cal, what)
    return cal


def decode_cost_model(obj: Any, default_timezone: str, what: str = "cost model") -> CostModel:
    """A cost model from JSON (API body, plant file section or stored attribute), checked."""
    model: CostModel = _convert(prepare_cost_model(obj, default_timezone), CostModel, what)
    check_cost_model(model, what)
    return model


def check_calendar(cal: ShiftCalendar, what: str = "calendar") -> None:
    """What the struct's own checks leave: the zone, the holidays, sizes."""
    try:
        zone(cal.timezone)
    except InvalidInput as exc:
        raise InvalidInput(f"{what}: timezone {exc.message}") from None
    if len(cal.shifts) > MAX_SHIFTS or len(cal.holidays) > MAX_HOLIDAYS:
        raise InvalidInput(f"{what}: at most {MAX_SHIFTS} shifts and {MAX_HOLIDAYS} holidays")
    for s in cal.shifts:
        if not s.name.strip():
            raise InvalidInput(f"{what}: every shift needs a name")
        if not s.weekdays:
            raise InvalidInput(f"{what}: shift {s.name} has no weekdays (leave them out for every day)")
    for text in cal.holidays:
        try:
            date.fromisoformat(text)
        except ValueError:
            raise InvalidInput(f"{what}: holiday {text!r} is not a date like 2026-12-25") from None


def check_cost_model(model: CostModel, what: str = "cost model") -> None:
    t = model.tariff
    try:
        zone(t.timezone)
    except InvalidInput as exc:
        raise InvalidInput(f"{what}: tariff timezone {exc.message}") from None
    if not model.currency.strip():
        raise InvalidInput(f"{what}: currency must not be empty")
    if len(t.periods) > MAX_TARIFF_PERIODS:
        raise InvalidInput(f"{what}: at most {MAX_TARIFF_PERIODS} tariff periods")
    prices: dict[str, float] = {}
    for period in t.periods:
        if not period.name.strip() or period.name == t.default_name:
            raise InvalidInput(f"{what}: tariff periods need names, none of them the default {t.default_name!r}")
        if prices.setdefault(period.name, period.price) != period.price:
            raise InvalidInput(f"{what}: tariff periods named {period.name!r} have different prices; a name "
                               "may cover several time ranges, at one price")
    rates = [t.default_price, model.labour_rate, model.overhead_per_hour, model.default_material_cost,
             *model.material_cost.values(), *prices.values()]
    if any(not math.isfinite(r) or r < 0 for r in rates):
        raise InvalidInput(f"{what}: prices and rates must be finite and not negative")


def calendar_to_obj(cal: ShiftCalendar) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(cal)
    return out


def cost_model_to_obj(model: CostModel) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(model)
    return out


# -- reading what is stored ---------------------------------------------------------------------
def site_calendar(attributes: Mapping[str, Any], site_timezone: str | None) -> ShiftCalendar | None:
    raw = attributes.get(CALENDAR)
    return None if raw is None else decode_calendar(raw, site_timezone or "UTC", f"stored {CALENDAR}")


def site_cost_model(attributes: Mapping[str, Any], site_timezone: str | None) -> CostModel | None:
    raw = attributes.get(COST_MODEL)
    return None if raw is None else decode_cost_model(raw, site_timezone or "UTC", f"stored {COST_MODEL}")


def merged(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes with later layers winning (asset type defaults, then the machine's own)."""
    out: dict[str, Any] = {}
    for layer in layers:
        out.update(layer)
    return out


def _positive(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise InvalidInput(f"{what} must be a positive number, not {value!r}")
    return float(value)


def cycle_times(attributes: Mapping[str, Any], what: str = "machine") -> CycleTimes | None:
    """``ideal_cycle_time_s`` and ``ideal_cycle_time_s_by_product``; None when neither is set."""
    default = attributes.get(CYCLE_TIME)
    by_product = attributes.get(CYCLE_TIMES_BY_PRODUCT) or {}
    if default is None and not by_product:
        return None
    if not isinstance(by_product, dict):
        raise InvalidInput(f"{what}: {CYCLE_TIMES_BY_PRODUCT} must map products to seconds")
    return CycleTimes(
        default=None if default is None else _positive(default, f"{what}: {CYCLE_TIME}"),
        by_product={str(p): _positive(v, f"{what}: {CYCLE_TIMES_BY_PRODUCT}.{p}") for p, v in by_product.items()},
    )


def reports_orders(attributes: Mapping[str, Any], what: str = "machine") -> bool:
    value = attributes.get(WORK_ORDERS, True)
    if not isinstance(value, bool):
        raise InvalidInput(f"{what}: {WORK_ORDERS} must be true or false")
    return value


def labour_in_shifts_only(attributes: Mapping[str, Any], what: str = "site") -> bool:
    value = attributes.get(LABOUR_IN_SHIFTS, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"{what}: {LABOUR_IN_SHIFTS} must be true or false")
    return value


def line_position(attributes: Mapping[str, Any], what: str = "machine") -> float | None:
    value = attributes.get(LINE_POSITION)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{what}: {LINE_POSITION} must be a number")
    return float(value)


def line_rule(chain: Sequence[Mapping[str, Any]], what: str = "line") -> LineRule:
    """The rule of the nearest of line, area, site (give them in that order) that sets one."""
    for attributes in chain:
        value = attributes.get(LINE_RULE)
        if value is None:
            continue
        try:
            return LineRule(value)
        except ValueError:
            raise InvalidInput(f"{what}: {LINE_RULE} must be one of "
                               f"{', '.join(r.value for r in LineRule)}, not {value!r}") from None
    return LineRule.BOTTLENECK


@dataclass(frozen=True, slots=True)
class EnergySource:
    """Which measurement carries a machine's energy: None for "find it by unit"."""

    measurement: str | None = None
    kind: str | None = None  # counter | power; None: from the unit (kWh → counter, kW → power)
    staleness_s: float = DEFAULT_ENERGY_STALENESS_S


def energy_source(attributes: Mapping[str, Any], what: str = "machine") -> EnergySource:
    measurement = attributes.get(ENERGY_MEASUREMENT)
    kind = attributes.get(ENERGY_KIND)
    staleness = attributes.get(ENERGY_STALENESS, DEFAULT_ENERGY_STALENESS_S)
    if measurement is not None and (not isinstance(measurement, str) or not measurement):
        raise InvalidInput(f"{what}: {ENERGY_MEASUREMENT} must name a measurement")
    if kind is not None and kind not in ENERGY_KINDS:
        raise InvalidInput(f"{what}: {ENERGY_KIND} must be {' or '.join(ENERGY_KINDS)}, not {kind!r}")
    return EnergySource(measurement, kind, _positive(staleness, f"{what}: {ENERGY_STALENESS}"))


def energy_kind_of_unit(unit: str) -> str | None:
    return {"kwh": "counter", "kw": "power"}.get(unit.strip().lower())


def check_attributes(attributes: Mapping[str, Any], what: str) -> None:
    """Validate the KPI keys among an asset's (or asset type's) attributes."""
    if CYCLE_TIME in attributes or CYCLE_TIMES_BY_PRODUCT in attributes:
        cycle_times(attributes, what)
    reports_orders(attributes, what)
    labour_in_shifts_only(attributes, what)
    line_position(attributes, what)
    line_rule([attributes], what)
    energy_source(attributes, what)
