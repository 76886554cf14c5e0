"""``DuckDBKpiSource`` beyond the contract: small calls (a copy of their rows) against large ones, and
where each looks for a running-total counter's baseline."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shopfloor.domain.records import EventRecord, IngestBatch
from shopfloor.ports.kpi import KpiRequest, plan
from shopfloor.storage.duckdb import kpi as duck_kpi
from shopfloor.storage.duckdb.database import Database
from shopfloor.storage.duckdb.historian import DuckDBHistorian
from shopfloor.storage.duckdb.kpi import DuckDBKpiSource

H = 3_600_000_000
DAY = 24 * H
LO = 1_711_670_400_000_000  # 2024-03-29 00:00 UTC


@pytest.fixture
def store() -> Iterator[tuple[DuckDBHistorian, Database]]:
    db = Database(":memory:")
    historian = DuckDBHistorian(db)
    yield historian, db
    historian.close()
    db.close()


def total(ts: int, **fields: int) -> EventRecord:
    return EventRecord(1, 51, ts, "count", "total", {"mode": "total", **fields})


def good(source: DuckDBKpiSource) -> int:
    got = source.period_inputs(1, [KpiRequest(51, [(LO, LO + 3 * H)], reports_orders=False)])
    return got[0].counts[""].good


@pytest.mark.parametrize("small", [True, False], ids=["small", "large"])
@pytest.mark.parametrize(("before", "lookback", "want"), [
    (3 * DAY, 7 * DAY, 35),  # older than the copy, inside the lookback: found by the second search
    (8 * DAY, 7 * DAY, 5),  # older than the lookback: a new baseline
    (11 * H, 12 * H, 35),  # a lookback shorter than the copy: looked for in the copy only
    (13 * H, 12 * H, 5),
])
def test_a_total_counters_baseline_is_looked_for_within_the_lookback(
        store: tuple[DuckDBHistorian, Database], monkeypatch: pytest.MonkeyPatch, small: bool, before: int,
        lookback: int, want: int) -> None:
    historian, db = store
    if not small:
        monkeypatch.setattr(duck_kpi, "SMALL_ASSET_DAYS", 0)
    historian.commit(IngestBatch(events=[total(LO - before, good=100), total(LO + H, good=130),
                                         total(LO + 2 * H, good=135)]))
    assert good(DuckDBKpiSource(db, lookback_us=lookback)) == want


def test_a_field_missing_from_the_windows_totals_needs_no_baseline(store: tuple[DuckDBHistorian, Database]) -> None:
    """``reject`` was last reported 3 days before and never in the window; ``good``'s baseline is a day
    and a half old: the answer is the same as the reference's, whichever search found what."""
    historian, db = store
    historian.commit(IngestBatch(events=[total(LO - 3 * DAY, good=1, reject=7), total(LO - 36 * H, good=100),
                                         total(LO + H, good=130), total(LO + 2 * H, good=135)]))
    got = DuckDBKpiSource(db).period_inputs(1, [KpiRequest(51, [(LO, LO + 3 * H)], reports_orders=False)])
    assert (got[0].counts[""].good, got[0].counts[""].reject) == (35, 0)


def test_small_calls_are_a_few_machines_over_a_few_days() -> None:
    def call(machines: int, days: float) -> bool:
        return duck_kpi._small(plan([KpiRequest(a, [(LO, LO + int(days * DAY))]) for a in range(machines)]))

    assert call(6, 1 / 3) and call(1, 30) and call(20, 1)
    assert not call(6, 30) and not call(1000, 1 / 3)
