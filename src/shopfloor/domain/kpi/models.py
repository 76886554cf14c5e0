"""Typed inputs of the KPI maths: categories, calendars, tariffs, cost models, cycle times, and the
aggregated per-group inputs (``PeriodInputs``) that the SQL layer hands to ``formulas``.

All structs are msgspec structs, so the plant YAML, the API and the docs' worked example decode
straight into them (``msgspec.convert(obj, CostModel)``). Times are integer epoch microseconds,
durations in ``PeriodInputs`` are seconds, money is in the cost model's currency.
"""

from __future__ import annotations

import enum
from datetime import time

import msgspec

from shopfloor.domain.errors import InvalidInput

ALL_WEEKDAYS = (1, 2, 3, 4, 5, 6, 7)  # ISO weekdays: 1 = Monday … 7 = Sunday
NO_PRODUCT = ""  # the product key of counts made while no work order (or no product) was known


class Category(enum.StrEnum):
    """What a machine is doing at a moment, as the KPIs see it. ``unknown``: no state known."""

    RUN = "run"
    PLANNED_STOP = "planned_stop"
    SETUP = "setup"
    STARVED = "starved"
    BLOCKED = "blocked"
    IDLE = "idle"
    UNPLANNED_STOP = "unplanned_stop"
    UNKNOWN = "unknown"


# the machine states of the core issue (domain.assets.MachineState values) → categories
_STATE_TO_CATEGORY = {
    "running": Category.RUN,
    "idle": Category.IDLE,
    "setup": Category.SETUP,
    "starved": Category.STARVED,
    "blocked": Category.BLOCKED,
    "planned_stop": Category.PLANNED_STOP,
    "unplanned_stop": Category.UNPLANNED_STOP,
}


def category_of(state: str | None) -> Category:
    """The category of a state event's ``state``: a machine state, a category name, or None/unknown."""
    if state is None:
        return Category.UNKNOWN
    found = _STATE_TO_CATEGORY.get(state)
    if found is not None:
        return found
    try:
        return Category(state)
    except ValueError:
        raise InvalidInput(f"state {state!r} is not a machine state or KPI category") from None


def local_time(text: str, what: str) -> time:
    """A wall-clock time ``HH:MM`` or ``HH:MM:SS`` (no offset: the zone is the calendar's)."""
    try:
        parsed = time.fromisoformat(text)
    except (TypeError, ValueError):
        raise InvalidInput(f"{what}: {text!r} is not a local time like 06:00") from None
    if parsed.tzinfo is not None:
        raise InvalidInput(f"{what}: {text!r} carries an offset; local times take the calendar's zone")
    return parsed


def _check_weekdays(days: list[int], what: str) -> None:
    bad = [d for d in days if d not in ALL_WEEKDAYS]
    if bad:
        raise InvalidInput(f"{what}: weekdays are 1 (Monday) to 7 (Sunday), not {bad}")


class Break(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A planned stop inside a shift, in local wall-clock time (an end ≤ start crosses midnight)."""

    start: str
    end: str

    def __post_init__(self) -> None:
        local_time(self.start, "break start")
        local_time(self.end, "break end")


class Shift(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A shift worked on the given weekdays (of its start), ``start``-``end`` local time.

    An end at or before the start means the shift ends the next day (22:00-06:00; 06:00-06:00 is a
    24-hour day shift, 23 or 25 real hours on a daylight-saving day).
    """

    name: str
    start: str
    end: str
    weekdays: list[int] = msgspec.field(default_factory=lambda: list(ALL_WEEKDAYS))
    breaks: list[Break] = []

    def __post_init__(self) -> None:
        local_time(self.start, f"shift {self.name} start")
        local_time(self.end, f"shift {self.name} end")
        _check_weekdays(self.weekdays, f"shift {self.name}")


class ShiftCalendar(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A site's working time: shifts with breaks, and holidays (local dates, ``YYYY-MM-DD``) on which
    no shift starts. Everything is read in ``timezone`` (IANA)."""

    timezone: str = "UTC"
    shifts: list[Shift] = []
    holidays: list[str] = []


class TariffPeriod(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A time-of-use period: ``price`` per kWh from ``start`` to ``end`` local time on ``weekdays``."""

    name: str
    price: float
    start: str
    end: str
    weekdays: list[int] = msgspec.field(default_factory=lambda: list(ALL_WEEKDAYS))

    def __post_init__(self) -> None:
        local_time(self.start, f"tariff period {self.name} start")
        local_time(self.end, f"tariff period {self.name} end")
        _check_weekdays(self.weekdays, f"tariff period {self.name}")
        if self.price < 0:
            raise InvalidInput(f"tariff period {self.name}: a price per kWh cannot be negative")


class Tariff(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An energy tariff: time-of-use periods (the first listed wins where they overlap) and the
    price of all other time (``default_name``)."""

    timezone: str = "UTC"
    default_price: float = 0.0
    default_name: str = "standard"
    periods: list[TariffPeriod] = []

    def price(self, period: str) -> float:
        if period == self.default_name:
            return self.default_price
        for p in self.periods:
            if p.name == period:
                return p.price
        raise InvalidInput(f"energy was reported for tariff period {period!r}, which the tariff does not have")


class CostModel(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A site's cost model. Labour is charged per clocked-in hour, overhead per scheduled (shift)
    hour, material per produced unit (PQ: good, reject and rework alike, each consumed material when
    it was made), energy per kWh at the tariff's time-of-use price."""

    currency: str = "EUR"
    tariff: Tariff = Tariff()
    labour_rate: float = 0.0  # per labour hour
    overhead_per_hour: float = 0.0  # per scheduled hour
    material_cost: dict[str, float] = {}  # per unit, by product
    default_material_cost: float = 0.0  # per unit, for products not listed

    def __post_init__(self) -> None:
        rates = [self.labour_rate, self.overhead_per_hour, self.default_material_cost,
                 *self.material_cost.values()]
        if any(r < 0 for r in rates):
            raise InvalidInput("cost model rates cannot be negative")

    def material_per_unit(self, product: str) -> float:
        return self.material_cost.get(product, self.default_material_cost)


class CycleTimes(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A machine's ideal cycle time in seconds per unit, with per-product overrides."""

    default: float | None = None
    by_product: dict[str, float] = {}

    def __post_init__(self) -> None:
        values = [v for v in (self.default, *self.by_product.values()) if v is not None]
        if any(not v > 0 for v in values):
            raise InvalidInput("an ideal cycle time must be a positive number of seconds")

    def for_product(self, product: str) -> float | None:
        return self.by_product.get(product, self.default)


class Counts(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """Units counted: good, reject (scrap) and rework. Rework is not good."""

    good: int = 0
    reject: int = 0
    rework: int = 0

    @property
    def produced(self) -> int:
        """ISO 22400-2 produced quantity (PQ): everything the unit made, good or not."""
        return self.good + self.reject + self.rework

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.good + other.good, self.reject + other.reject, self.rework + other.rework)


class TimeBucket(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """Seconds of one state category, split by whether the calendar scheduled work (inside a shift,
    not on a break or holiday) and whether a work order was open. The buckets of a group partition
    its window: they sum to its calendar time.

    ``gc=False`` here and on ``Counts``, ``PeriodInputs``: they hold numbers, strings and containers of
    those, so they can never be part of a reference cycle; untracked, the month's 70,000 groups (and
    their ~800,000 buckets) cost the cyclic garbage collector nothing."""

    category: Category
    seconds: float
    scheduled: bool = True
    with_order: bool = True


class PeriodInputs(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """Everything ``formulas`` needs for one group (asset * period, shift, day, product or order).

    This is the contract with the SQL layer: it sums durations, counts and energy; the domain
    decides what counts as planned time and computes every ratio.
    """

    time: list[TimeBucket] = []
    counts: dict[str, Counts] = {}  # by product; NO_PRODUCT for counts made without a known product
    failures: int = 0  # unplanned-stop episodes that began in the window
    downtime_by_reason: dict[str, float] = {}  # seconds of availability losses by reason
    energy_kwh: dict[str, float] = {}  # by tariff period name
    energy_coverage: float | None = None  # share of the window the energy data covers; None: no data
    labour_hours: float = 0.0

    def __post_init__(self) -> None:  # runs for every decoded group: plain loops, no generators
        for b in self.time:
            if b.seconds < 0:
                raise InvalidInput("a duration cannot be negative")
        if self.failures < 0 or self.labour_hours < 0:
            raise InvalidInput("failures and labour hours cannot be negative")
        for c in self.counts.values():
            if c.good < 0 or c.reject < 0 or c.rework < 0:
                raise InvalidInput("counts cannot be negative")

    @property
    def total_counts(self) -> Counts:
        good = reject = rework = 0  # the sums ``Counts.__add__`` makes, without a struct per product
        for c in self.counts.values():
            good += c.good
            reject += c.reject
            rework += c.rework
        return Counts(good, reject, rework)

    @property
    def kwh(self) -> float:
        return sum(self.energy_kwh.values())


_NO_COUNTS = Counts()


def combine(parts: list[PeriodInputs]) -> PeriodInputs:
    """The inputs of a group made of disjoint groups (shifts → a day, machines' days → a month).

    Everything adds up; energy coverage is weighted by each part's calendar time.
    """
    time: dict[tuple[Category, bool, bool], float] = {}
    counts: dict[str, Counts] = {}
    reasons: dict[str, float] = {}
    kwh: dict[str, float] = {}
    covered = window = 0.0
    has_energy = False
    for p in parts:
        span = sum([b.seconds for b in p.time])
        window += span
        for b in p.time:
            key = (b.category, b.scheduled, b.with_order)
            time[key] = time.get(key, 0.0) + b.seconds
        for product, c in p.counts.items():
            counts[product] = counts.get(product, _NO_COUNTS) + c
        for reason, s in p.downtime_by_reason.items():
            reasons[reason] = reasons.get(reason, 0.0) + s
        for period, e in p.energy_kwh.items():
            kwh[period] = kwh.get(period, 0.0) + e
        if p.energy_coverage is not None or p.energy_kwh:
            has_energy = True
            covered += span * (1.0 if p.energy_coverage is None else p.energy_coverage)
    return PeriodInputs(
        time=[TimeBucket(c, s, sch, o) for (c, sch, o), s in sorted(time.items())],
        counts=dict(sorted(counts.items())),
        failures=sum([p.failures for p in parts]),
        downtime_by_reason=dict(sorted(reasons.items())),
        energy_kwh=dict(sorted(kwh.items())),
        energy_coverage=(covered / window if window else None) if has_energy else None,
        labour_hours=sum([p.labour_hours for p in parts]),
    )
