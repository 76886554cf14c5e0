"""The KPI query port: the store sums raw events and samples into ``PeriodInputs`` per group.

A group is one asset over one window ``[start, end)`` (epoch µs). The store only sums (durations,
counts, energy, labour hours, see ``domain/kpi/models.PeriodInputs`` and docs/kpis.md); every ratio
is computed by ``domain/kpi/formulas``. ``domain/kpi/reference.period_inputs`` is the oracle: on the
same stored events a store's answer equals it (counts exactly, durations within 1e-6 s).

The shift calendar and the tariff are expanded to UTC spans by the caller
(``domain/kpi/calendar.scheduled`` and ``tariff_spans``) and passed in; the store never reads a
time zone. One call may carry thousands of requests (every shift of a month for every machine):
an implementation answers it in one or a few SQL round trips, never one per group.

Events read (as ingest stores them): ``state`` records and ``offline`` ``status`` records (the
state timeline), ``count`` records, ``work_order_start``/``work_order_end`` and
``clock_in``/``clock_out`` ``event`` records. Energy comes from one numeric series per asset: a
cumulative kWh counter, or power samples in kW held up to ``staleness_us`` (bad quality ends a
hold; bad counter readings are skipped).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.kpi.models import PeriodInputs

Span = tuple[int, int]  # half-open [start, end), epoch µs
LabelledSpan = tuple[int, int, str]  # a span and the tariff period it belongs to


class EnergyKind(enum.StrEnum):
    COUNTER = "counter"  # cumulative kWh readings (a drop is a meter reset)
    POWER = "power"  # kW samples, each held until the next one for at most ``staleness_us``


@dataclass(frozen=True, slots=True)
class EnergySeries:
    series_id: int
    kind: EnergyKind = EnergyKind.COUNTER
    staleness_us: int = 300 * 1_000_000  # power: the longest a sample holds

    def __post_init__(self) -> None:
        if self.staleness_us <= 0:
            raise InvalidInput("energy staleness must be a positive number of microseconds")


@dataclass(frozen=True, slots=True)
class KpiRequest:
    """One asset, its windows, and what the caller expanded for them.

    - ``windows``: any number of half-open windows (shifts, days ...); they may touch or overlap.
    - ``scheduled``: the calendar's working spans (``calendar.scheduled``), merged, covering at least
      the windows; ``None`` means no calendar: every moment is scheduled.
    - ``tariff``: labelled spans (``calendar.spans_by_label(calendar.tariff_spans(...))``) that
      partition each window; ``None`` means one period named ``"standard"``.
    - ``energy``: the asset's energy series, or ``None`` (then ``energy_kwh`` is empty and
      ``energy_coverage`` None).
    - ``reports_orders``: False for a machine that reports no work orders (all its time is with an
      order, every count has product ``""``).
    - ``labour_scheduled_only``: count clocked-in time only inside ``scheduled``.

    Share one ``scheduled`` / ``tariff`` tuple between the requests of a site: implementations send
    each distinct one to the database once.
    """

    asset_id: int
    windows: Sequence[Span]
    scheduled: Sequence[Span] | None = None
    tariff: Sequence[LabelledSpan] | None = None
    energy: EnergySeries | None = None
    reports_orders: bool = True
    labour_scheduled_only: bool = False

    def __post_init__(self) -> None:
        if any(e <= s for s, e in self.windows):
            raise InvalidInput("a KPI window must end after it starts")


class KpiSource(Protocol):
    def period_inputs(self, tenant_id: int, requests: Sequence[KpiRequest]) -> list[PeriodInputs]:
        """``PeriodInputs`` of every (request, window): flat, in request order and, within a
        request, in window order (``len == sum(len(r.windows) for r in requests)``).

        Raises ``InvalidInput`` for malformed requests and ``StoreUnavailable`` when the store fails.
        """
        ...
