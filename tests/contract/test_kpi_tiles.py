"""KPI tiles on both stores: the KPI contract answered from tiles, and which late rows drop which tiles.

``TestDuckDBTiled`` / ``TestPostgresTiled`` run the whole KPI contract (``testing/kpi_contract.py``)
with every question asked twice through a ``TiledKpiSource``: the second answer comes from the tiles
the first one kept and must equal the reference just the same. ``TestTiles*`` check the keeping
rules on one machine's day of three shifts: what is kept, what a late event, a late energy reading or
a row committed while tiles were computed drops, and what the keys tell apart.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

from shopfloor.domain.kpi.models import PeriodInputs
from shopfloor.domain.records import EventRecord, IngestBatch
from shopfloor.ports.kpi import EnergyKind, EnergySeries, KpiRequest, KpiSource
from shopfloor.ports.kpi_tiles import KpiTileStore, ReadingProbe, Tile
from shopfloor.ports.store import Historian
from shopfloor.services.kpi_tiles import TiledKpiSource
from shopfloor.storage.duckdb.database import Database
from shopfloor.storage.duckdb.historian import DuckDBHistorian
from shopfloor.storage.duckdb.kpi import DuckDBKpiSource
from shopfloor.storage.duckdb.kpi_tiles import DuckDBKpiTileStore
from shopfloor.storage.postgres.database import PgDatabase
from shopfloor.storage.postgres.historian import PostgresHistorian
from shopfloor.storage.postgres.kpi import PostgresKpiSource
from shopfloor.storage.postgres.kpi_tiles import PostgresKpiTileStore
from shopfloor.testing.fakes import FixedClock
from shopfloor.testing.kpi_contract import KpiContract, KpiStore

S = 1_000_000
MIN = 60 * S
H = 60 * MIN
DAY0 = 1_767_225_600 * S  # 2026-01-01T00:00Z
TENANT = 1
ASSET = 7
SERIES = 70
SHIFTS = [(DAY0 + 6 * H, DAY0 + 14 * H), (DAY0 + 14 * H, DAY0 + 22 * H), (DAY0 + 22 * H, DAY0 + 30 * H)]


class _Twice:
    """Asks every question twice; the second answer (from tiles, where kept) is the one returned."""

    def __init__(self, tiled: TiledKpiSource) -> None:
        self.tiled = tiled

    def period_inputs(self, tenant_id: int, requests: Sequence[KpiRequest]) -> list[PeriodInputs]:
        first = self.tiled.period_inputs(tenant_id, requests)
        second = self.tiled.period_inputs(tenant_id, requests)
        assert second == first
        return second


class TestDuckDBTiled(KpiContract):
    @pytest.fixture
    def kpi_store(self) -> Iterator[KpiStore]:
        db = Database(":memory:")
        historian = DuckDBHistorian(db)
        tiled = TiledKpiSource(DuckDBKpiSource(db), DuckDBKpiTileStore(db), historian.last_seq, FixedClock(2**61))
        yield historian, _Twice(tiled)
        historian.close()
        db.close()


class TestPostgresTiled(KpiContract):
    @pytest.fixture
    def kpi_store(self, pg_schema: tuple[str, str]) -> Iterator[KpiStore]:
        db = PgDatabase(*pg_schema, max_size=4)
        historian = PostgresHistorian(db)
        tiled = TiledKpiSource(PostgresKpiSource(db), PostgresKpiTileStore(db), historian.last_seq,
                               FixedClock(2**61))
        yield historian, _Twice(tiled)
        historian.close()
        db.close()


@dataclass
class World:
    historian: Historian
    raw: KpiSource
    store: KpiTileStore
    tiled: TiledKpiSource
    clock: FixedClock

    def state(self, ts: int, name: str) -> None:
        self.historian.commit(IngestBatch(events=[EventRecord(TENANT, ASSET, ts, "state", name, {"state": name})]))

    def reading(self, ts: int, kwh: float) -> None:
        batch = IngestBatch()
        batch.samples.add(SERIES, ts, kwh)
        self.historian.commit(batch)

    def ask(self, *requests: KpiRequest) -> list[PeriodInputs]:
        got = self.tiled.period_inputs(TENANT, requests)
        assert got == self.raw.period_inputs(TENANT, requests)
        return got


def request(energy: EnergySeries | None = EnergySeries(SERIES), windows: Sequence[tuple[int, int]] = SHIFTS,
            **kw: object) -> KpiRequest:
    return KpiRequest(ASSET, windows, energy=energy, **kw)  # type: ignore[arg-type]


def day(world: World) -> None:
    """A state change every 50 minutes, a kWh reading every 10 minutes, over 30 hours."""
    batch = IngestBatch()
    for i in range(30 * 6 + 1):
        batch.samples.add(SERIES, DAY0 + i * 10 * MIN, 100.0 + 2.5 * i)
    world.historian.commit(batch)
    names = ("running", "idle", "running", "setup", "running", "unplanned_stop")
    world.historian.commit(IngestBatch(events=[EventRecord(TENANT, ASSET, DAY0 + i * 50 * MIN, "state", names[i % 6],
                                                           {"state": names[i % 6]}) for i in range(36)]))


class TileCases:
    """The keeping rules; subclasses give the ``world`` fixture (an empty store)."""

    def test_closed_windows_are_kept_and_read_back(self, world: World) -> None:
        day(world)
        first = world.ask(request())
        assert world.tiled.last_hits == 0 and world.store.count(TENANT) == 3
        assert world.ask(request()) == first and world.tiled.last_hits == 3

    def test_an_open_window_is_computed_every_time_and_not_kept(self, world: World) -> None:
        day(world)
        world.clock.set(SHIFTS[2][0] + H)  # inside the night shift
        world.ask(request())
        assert world.store.count(TENANT) == 2
        world.ask(request())
        assert world.tiled.last_hits == 2

    def test_a_late_event_drops_the_windows_ending_after_it(self, world: World) -> None:
        day(world)
        world.ask(request())
        world.state(SHIFTS[1][0] + 3 * H + 7 * S, "blocked")  # inside the late shift, until the change at 17:30
        got = world.ask(request())
        assert world.tiled.last_hits == 1  # the early shift, which ended before it
        assert sum(b.seconds for b in got[1].time if b.category == "blocked") == 30 * 60 - 7
        world.ask(request())
        assert world.tiled.last_hits == 3

    def test_rows_after_a_window_leave_it_kept(self, world: World) -> None:
        day(world)
        world.ask(request(windows=SHIFTS[:2]))
        world.state(SHIFTS[1][1] + 5 * MIN, "idle")  # after both windows (the night shift is not asked for)
        world.reading(SHIFTS[1][1] + 5 * MIN, 175.1)  # after the reading that ends the late shift
        world.ask(request(windows=SHIFTS[:2]))
        assert world.tiled.last_hits == 2

    def test_a_late_reading_before_the_one_that_ends_a_window_drops_it(self, world: World) -> None:
        day(world)
        world.ask(request())
        world.reading(SHIFTS[0][1] - 5 * MIN, 140.0)  # between the early shift's last two readings
        world.ask(request())
        assert world.tiled.last_hits == 0  # the early shift, and the later ones (the reading is before their ends)

    def test_a_counter_without_a_reading_after_the_window_is_kept_once_it_reports(self, world: World) -> None:
        day(world)
        late = [(DAY0 + 30 * H + 5 * MIN, DAY0 + 31 * H)]  # after the last reading
        world.ask(request(windows=late))
        assert world.store.count(TENANT) == 0  # its energy is still open
        power = EnergySeries(SERIES, EnergyKind.POWER, 15 * MIN)  # a power sample holds forward only: kept
        world.ask(request(energy=power, windows=late))
        assert world.store.count(TENANT) == 1
        world.reading(DAY0 + 50 * H, 300.0)  # the meter reports again, long after
        got = world.ask(request(windows=late))
        assert world.tiled.last_hits == 0 and got[0].kwh > 0
        world.ask(request(windows=late))
        assert world.tiled.last_hits == 1

    def test_the_first_reading_after_a_window_is_found_near_and_far(self, world: World) -> None:
        day(world)
        world.reading(DAY0 + 100 * H, 900.0)
        probes = [ReadingProbe(SERIES, DAY0 + 6 * H), ReadingProbe(SERIES, DAY0 + 6 * H + 1),
                  ReadingProbe(SERIES, DAY0 + 31 * H), ReadingProbe(SERIES, DAY0 + 101 * H),
                  ReadingProbe(SERIES + 1, DAY0)]
        assert world.store.first_readings(probes) == [DAY0 + 6 * H, DAY0 + 6 * H + 10 * MIN, DAY0 + 100 * H,
                                                      None, None]

    def test_the_key_tells_calendars_tariffs_and_settings_apart(self, world: World) -> None:
        day(world)
        world.ask(request())
        variants = [
            request(scheduled=[(DAY0 + 6 * H, DAY0 + 22 * H)]),
            request(tariff=[(DAY0, DAY0 + 12 * H, "peak"), (DAY0 + 12 * H, DAY0 + 31 * H, "off_peak")]),
            request(energy=None),
            request(energy=EnergySeries(SERIES, EnergyKind.POWER, 15 * MIN)),
            request(reports_orders=False),
        ]
        for v in variants:
            world.ask(v)
            assert world.tiled.last_hits == 0, v
        # one calendar expanded over a shorter or a longer frame: the same spans inside each window
        world.ask(request(scheduled=[(DAY0 + 6 * H, DAY0 + 30 * H)]))
        world.ask(request(scheduled=[(DAY0, DAY0 + 40 * H)]))
        assert world.tiled.last_hits == 3

    def test_tiles_computed_before_a_late_row_are_not_kept(self, world: World) -> None:
        """A late row committed while tiles were being computed: the store checks it against them."""
        day(world)
        seq = world.historian.last_seq()
        computed = world.raw.period_inputs(TENANT, [request()])
        world.state(SHIFTS[1][0] + H, "blocked")
        world.store.refresh(TENANT, world.historian.last_seq())  # someone looked in the meantime
        _, keys = world.tiled._keys([request()], world.clock.now_us())
        tiles = [Tile(k, k.w1 + 10 * MIN, msgspec.msgpack.encode(c)) for k, c in zip(keys, computed, strict=True)]
        assert world.store.store(TENANT, tiles, seq) == 1  # only the early shift
        assert [b is not None for b in world.store.lookup(TENANT, keys)] == [True, False, False]

    def test_other_tenants_rows_and_tiles_are_their_own(self, world: World) -> None:
        day(world)
        world.ask(request())
        world.historian.commit(IngestBatch(events=[EventRecord(TENANT + 1, ASSET, SHIFTS[0][0], "state", "idle",
                                                               {"state": "idle"})]))
        world.ask(request())
        assert world.tiled.last_hits == 3
        assert world.store.lookup(TENANT + 1, world.tiled._keys([request()], world.clock.now_us())[1]) == [None] * 3
        assert world.store.clear(TENANT) == 3 and world.store.count(TENANT) == 0


def _world(historian: Historian, raw: KpiSource, store: KpiTileStore) -> World:
    clock = FixedClock(DAY0 + 40 * H)
    return World(historian, raw, store, TiledKpiSource(raw, store, historian.last_seq, clock), clock)


class TestTilesDuckDB(TileCases):
    @pytest.fixture
    def world(self) -> Iterator[World]:
        db = Database(":memory:")
        historian = DuckDBHistorian(db)
        yield _world(historian, DuckDBKpiSource(db), DuckDBKpiTileStore(db))
        historian.close()
        db.close()


class TestTilesPostgres(TileCases):
    @pytest.fixture
    def world(self, pg_schema: tuple[str, str]) -> Iterator[World]:
        db = PgDatabase(*pg_schema, max_size=4)
        historian = PostgresHistorian(db)
        yield _world(historian, PostgresKpiSource(db), PostgresKpiTileStore(db))
        historian.close()
        db.close()


def _docs_example() -> list[tuple[str, list[str]]]:
    """The worked example of docs/kpis.md, "Kept shifts": (late row, shifts it drops)."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "kpis.md").read_text()
    block = text.split("## Kept shifts", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    rows = []
    for line in block.splitlines()[1:]:
        row, drops = re.split(r"\s{2,}", line.strip())
        rows.append((row, [] if drops == "-" else drops.split()))
    return rows


@pytest.mark.parametrize(("row", "drops"), _docs_example())
def test_the_documented_example(row: str, drops: list[str]) -> None:
    db = Database(":memory:")
    historian = DuckDBHistorian(db)
    try:
        world = _world(historian, DuckDBKpiSource(db), DuckDBKpiTileStore(db))
        day(world)
        world.ask(request())
        m = re.fullmatch(r"(state (\w+)|kWh reading) at (\d\d):(\d\d)(?::(\d\d))?( next day)?", row)
        assert m is not None, row
        ts = DAY0 + (int(m[3]) + (24 if m[6] else 0)) * H + int(m[4]) * MIN + int(m[5] or 0) * S
        if m[2]:
            world.state(ts, m[2])
        else:
            world.reading(ts, 141.0)
        world.store.refresh(TENANT, historian.last_seq())
        _, keys = world.tiled._keys([request()], world.clock.now_us())
        kept = world.store.lookup(TENANT, keys)
        assert [name for name, b in zip(("early", "late", "night"), kept, strict=True) if b is None] == drops
    finally:
        historian.close()
        db.close()
