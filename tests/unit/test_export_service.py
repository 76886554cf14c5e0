"""History export over the in-memory registry and a paging fake store: CSV and Parquet content,
chunked and lazy reading, tenant isolation, and the checks made before a byte is sent."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shopfloor.domain.assets import Level, MeasurementDef, ValueType
from shopfloor.domain.errors import Forbidden, InvalidInput, NotFound
from shopfloor.domain.records import Quality, Sample
from shopfloor.domain.tenancy import Role, TenantContext
from shopfloor.domain.timeutil import MAX_US, MIN_US, from_us, parse_ts
from shopfloor.services.export import COLUMNS, ExportFormat, ExportService, _iso
from shopfloor.services.registry import PLATFORM, RegistryService
from shopfloor.testing.fakes import InMemoryRegistry

T0 = parse_ts("2026-11-23T08:00:00Z")
S = 1_000_000
PRESS = [MeasurementDef("temperature", "degC"), MeasurementDef("running", "", ValueType.BOOLEAN),
         MeasurementDef("recipe", "", ValueType.STRING)]


@dataclass
class PagingStore:
    """Only what export reads: ``raw``, answered from sorted lists; every call is recorded."""

    samples: dict[int, list[Sample]] = field(default_factory=dict)
    calls: list[tuple[int, int, int, int]] = field(default_factory=list)

    def add(self, series_id: int, ts_us: int, value: float | None, text: str | None = None,
            quality: int = Quality.GOOD) -> None:
        rows = self.samples.setdefault(series_id, [])
        rows.append(Sample(series_id, ts_us, value, text, int(quality)))
        rows.sort(key=lambda s: s.ts_us)

    def raw(self, series_id: int, start_us: int, end_us: int, limit: int = 10_000) -> list[Sample]:
        self.calls.append((series_id, start_us, end_us, limit))
        return [s for s in self.samples.get(series_id, []) if start_us <= s.ts_us < end_us][:limit]


@dataclass
class Plant:
    ctx: TenantContext
    line: int
    machines: list[int]
    series: dict[tuple[str, str], int]  # (machine name, measurement) -> id


@dataclass
class World:
    registry: RegistryService
    store: PagingStore

    def service(self, chunk_rows: int = 10_000, max_series: int = 1_000) -> ExportService:
        return ExportService(self.registry, self.store, chunk_rows=chunk_rows, max_series=max_series)

    def plant(self, slug: str, machines: Sequence[str] = ("press-01", "press-02")) -> Plant:
        self.registry.create_tenant(PLATFORM, slug)
        tenant = self.registry.repo.find_tenant(slug)
        assert tenant is not None
        ctx = TenantContext(tenant.id, slug, Role.ENGINEER, f"{slug}-engineer")
        self.registry.put_asset_type(ctx, "press", measurements=PRESS)
        site = self.registry.create_asset(ctx, Level.SITE, "berlin", timezone="Europe/Berlin")
        area = self.registry.create_asset(ctx, Level.AREA, "press-shop", parent_id=site.id)
        line = self.registry.create_asset(ctx, Level.LINE, "line-1", parent_id=area.id)
        ids, series = [], {}
        for name in machines:
            m = self.registry.create_asset(ctx, Level.MACHINE, name, parent_id=line.id, type_name="press")
            ids.append(m.id)
            for s in self.registry.series_of(ctx, m.id):
                series[(name, s.measurement)] = s.id
        return Plant(TenantContext(tenant.id, slug, Role.VIEWER, f"{slug}-viewer"), line.id, ids, series)


@pytest.fixture
def world() -> World:
    return World(RegistryService(InMemoryRegistry()), PagingStore())


def _csv(chunks: list[bytes]) -> list[list[str]]:
    return list(csv.reader(io.StringIO(b"".join(chunks).decode())))


def test_csv_has_the_columns_and_one_row_per_sample_by_time(world: World) -> None:
    p = world.plant("acme")
    temp, run, recipe = (p.series[("press-01", m)] for m in ("temperature", "running", "recipe"))
    world.store.add(temp, T0 + 2 * S, 21.5)
    world.store.add(temp, T0, 20.25, quality=Quality.UNCERTAIN)
    world.store.add(run, T0 + 1 * S + 7, 1.0)
    world.store.add(recipe, T0 + 1 * S + 7, None, 'A-7, "fast"')
    world.store.add(temp, T0 + 3 * S, None, quality=Quality.BAD)
    world.store.add(temp, T0 + 99 * S, 30.0)  # outside the window
    export = world.service().open(p.ctx, series_ids=[temp, run, recipe], start_us=T0, end_us=T0 + 60 * S)
    assert export.filename == "history-20261123T080000Z-20261123T080100Z.csv"
    assert export.media_type.startswith("text/csv")
    rows = _csv(list(export.chunks()))
    path = "berlin/press-shop/line-1/press-01"
    assert rows == [
        list(COLUMNS),
        ["2026-11-23T08:00:00.000000Z", path, "temperature", "degC", "20.25", "", "1"],
        # same timestamp: series in export order (asset path, then measurement)
        ["2026-11-23T08:00:01.000007Z", path, "recipe", "", "", 'A-7, "fast"', "0"],
        ["2026-11-23T08:00:01.000007Z", path, "running", "", "1.0", "", "0"],
        ["2026-11-23T08:00:02.000000Z", path, "temperature", "degC", "21.5", "", "0"],
        ["2026-11-23T08:00:03.000000Z", path, "temperature", "degC", "", "", "2"],
    ]
    assert COLUMNS == ("ts", "asset_path", "measurement", "unit", "value", "text", "quality")


def test_parquet_round_trips_with_one_row_group_per_chunk(world: World) -> None:
    p = world.plant("acme")
    temp, recipe = p.series[("press-01", "temperature")], p.series[("press-02", "recipe")]
    for i in range(250):
        world.store.add(temp, T0 + i * S, i / 4)
    world.store.add(recipe, T0 + 5 * S + 1, None, "B-2")
    export = world.service(chunk_rows=100).open(p.ctx, series_ids=[recipe, temp], start_us=T0,
                                                end_us=T0 + 3600 * S, fmt="parquet")
    assert export.format is ExportFormat.PARQUET and export.filename.endswith(".parquet")
    parts = list(export.chunks())
    assert len(parts) >= 3  # streamed: something after each row group, then the footer
    assert parts[0].startswith(b"PAR1") and parts[-1].endswith(b"PAR1")
    f = pq.ParquetFile(io.BytesIO(b"".join(parts)))
    assert f.metadata.num_rows == 251 and f.metadata.num_row_groups == 3
    table = f.read()
    assert table.column_names == list(COLUMNS)
    assert str(table.schema.field("ts").type) == "timestamp[us, tz=UTC]"
    rows = table.to_pylist()
    assert [r["ts"].timestamp() for r in rows] == sorted(r["ts"].timestamp() for r in rows)
    [b2] = [r for r in rows if r["measurement"] == "recipe"]
    assert b2["asset_path"] == "berlin/press-shop/line-1/press-02" and b2["text"] == "B-2"
    assert b2["value"] is None and b2["ts"].microsecond == 1
    temps = [r["value"] for r in rows if r["measurement"] == "temperature"]
    assert temps == [i / 4 for i in range(250)]
    assert {r["unit"] for r in rows if r["measurement"] == "temperature"} == {"degC"}


def test_reading_is_paged_and_lazy(world: World) -> None:
    p = world.plant("acme")
    a, b = p.series[("press-01", "temperature")], p.series[("press-02", "temperature")]
    for i in range(1_000):
        world.store.add(a, T0 + i * S, float(i))
        world.store.add(b, T0 + i * S + 500_000, float(-i))
    service = world.service(chunk_rows=300)  # pages of 150 per series
    export = service.open(p.ctx, series_ids=[a, b], start_us=T0, end_us=T0 + 10_000 * S)
    chunks = export.chunks()
    next(chunks)  # the header
    next(chunks)  # the first 300 rows
    assert 2 <= len(world.store.calls) <= 6, world.store.calls  # not the whole history
    rest = list(chunks)
    assert len(rest) == 6  # 2000 rows in chunks of 300: 6 more after the first
    assert all(limit == 150 for _, _, _, limit in world.store.calls)
    # each page starts right after the last timestamp of the page before
    by_series = [c for c in world.store.calls if c[0] == a]
    assert [c[1] for c in by_series[:3]] == [T0, T0 + 149 * S + 1, T0 + 299 * S + 1]
    rows = _csv([b"", *rest])
    assert len(rows) == 2_000 - 300
    assert all(r[1].endswith(("press-01", "press-02")) for r in rows)


def test_an_asset_exports_its_series_and_those_below_it(world: World) -> None:
    p = world.plant("acme", machines=("press-01", "press-02", "press-03"))
    for (_, measurement), sid in p.series.items():
        world.store.add(sid, T0, 1.0 if measurement != "recipe" else None, "r" if measurement == "recipe" else None)
    service = world.service()
    line = service.open(p.ctx, asset_ids=[p.line], start_us=T0, end_us=T0 + S)
    assert [(e.asset_path.rsplit("/", 1)[1], e.series.measurement) for e in line.series] == [
        (m, x) for m in ("press-01", "press-02", "press-03") for x in ("recipe", "running", "temperature")
    ]
    assert len(_csv(list(line.chunks()))) == 1 + 9
    one = service.open(p.ctx, asset_ids=[p.machines[1]], series_ids=[p.series[("press-02", "running")]],
                       start_us=T0, end_us=T0 + S)
    assert len(one.series) == 3  # no duplicates


def test_one_tenant_cannot_export_anothers_history(world: World) -> None:
    acme = world.plant("acme")
    globex = world.plant("globex")
    theirs = globex.series[("press-01", "temperature")]
    world.store.add(theirs, T0, 99.0)
    service = world.service()
    with pytest.raises(NotFound):
        service.open(acme.ctx, series_ids=[theirs], start_us=T0, end_us=T0 + S)
    with pytest.raises(NotFound):
        service.open(acme.ctx, asset_ids=[globex.line], start_us=T0, end_us=T0 + S)
    with pytest.raises(NotFound):  # one foreign id spoils the whole request
        service.open(acme.ctx, series_ids=[acme.series[("press-01", "temperature")], theirs],
                     start_us=T0, end_us=T0 + S)
    with pytest.raises(Forbidden):  # the platform token has no tenant data
        service.open(PLATFORM, series_ids=[theirs], start_us=T0, end_us=T0 + S)
    export = service.open(acme.ctx, asset_ids=[acme.line], start_us=T0, end_us=T0 + S)
    assert {e.series.tenant_id for e in export.series} == {acme.ctx.tenant_id}
    assert _csv(list(export.chunks())) == [list(COLUMNS)]
    assert all(c[0] != theirs for c in world.store.calls)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"series_ids": [1], "start_us": T0, "end_us": T0}, "'to' must be after 'from'"),
    ({"start_us": T0, "end_us": T0 + S}, "name what to export"),
    ({"series_ids": [1], "start_us": T0, "end_us": T0 + S, "fmt": "xlsx"}, "csv or parquet"),
])
def test_bad_requests_fail_before_streaming(world: World, kwargs: dict[str, object], message: str) -> None:
    p = world.plant("acme")
    if "series_ids" in kwargs:
        kwargs["series_ids"] = [p.series[("press-01", "temperature")]]
    with pytest.raises(InvalidInput, match=message):
        world.service().open(p.ctx, **kwargs)  # type: ignore[arg-type]
    assert world.store.calls == []


def test_too_many_series_is_refused(world: World) -> None:
    p = world.plant("acme")
    with pytest.raises(InvalidInput, match="at most 5"):
        world.service(max_series=5).open(p.ctx, asset_ids=[p.line], start_us=T0, end_us=T0 + S)


def test_an_empty_window_is_a_header_or_an_empty_parquet_file(world: World) -> None:
    p = world.plant("acme")
    sid = p.series[("press-01", "temperature")]
    service = world.service()
    assert _csv(list(service.open(p.ctx, series_ids=[sid], start_us=T0, end_us=T0 + S).chunks())) == [list(COLUMNS)]
    data = b"".join(service.open(p.ctx, series_ids=[sid], start_us=T0, end_us=T0 + S, fmt="parquet").chunks())
    table = pq.read_table(io.BytesIO(data))
    assert table.num_rows == 0 and table.column_names == list(COLUMNS)


@given(st.integers(min_value=MIN_US, max_value=MAX_US))
def test_csv_timestamps_are_rfc3339_utc_with_microseconds(us: int) -> None:
    assert _iso(us) == from_us(us).isoformat(timespec="microseconds").replace("+00:00", "Z")
