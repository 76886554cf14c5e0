"""History export: raw samples of some series (or of every series of an asset) as CSV or Parquet.

An export is opened in two steps. :meth:`ExportService.open` checks everything the caller asked
for (tenant, ids, window, format) and fails before a byte is sent; the returned :class:`Export`
then produces the file as a stream of byte chunks. Samples are read through the store's ``raw``
query page by page (each page starts just after the last timestamp of the one before: a
series holds one sample per timestamp), the series are merged by timestamp, and the output is
written one chunk of rows at a time, so no export holds more than a few pages in memory, however
long the window.

Columns, in order: ``ts`` (UTC), ``asset_path``, ``measurement``, ``unit``, ``value``, ``text``,
``quality`` (0 good, 1 uncertain, 2 bad). In CSV ``ts`` is RFC 3339 with microseconds and an
absent value or text is an empty field; in Parquet ``ts`` is a UTC timestamp in microseconds,
one row group per chunk.
"""

from __future__ import annotations

import csv
import enum
import heapq
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from shopfloor.domain.assets import Series
from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.records import Sample
from shopfloor.domain.tenancy import TenantContext
from shopfloor.domain.timeutil import from_us
from shopfloor.ports.store import TimeSeriesStore
from shopfloor.services.registry import RegistryService

COLUMNS = ("ts", "asset_path", "measurement", "unit", "value", "text", "quality")
DEFAULT_CHUNK_ROWS = 10_000
MAX_SERIES = 1_000
_MIN_PAGE = 100

PARQUET_SCHEMA = pa.schema([
    pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("asset_path", pa.string(), nullable=False),
    pa.field("measurement", pa.string(), nullable=False),
    pa.field("unit", pa.string(), nullable=False),
    pa.field("value", pa.float64()),
    pa.field("text", pa.string()),
    pa.field("quality", pa.int16(), nullable=False),
])


class ExportFormat(enum.StrEnum):
    CSV = "csv"
    PARQUET = "parquet"

    @property
    def media_type(self) -> str:
        return "text/csv; charset=utf-8" if self is ExportFormat.CSV else "application/vnd.apache.parquet"


@dataclass(frozen=True, slots=True)
class ExportedSeries:
    series: Series
    asset_path: str


@dataclass(frozen=True)
class Export:
    """A checked export, ready to stream: iterate :meth:`chunks` for the file's bytes."""

    format: ExportFormat
    series: tuple[ExportedSeries, ...]
    start_us: int
    end_us: int
    _service: ExportService = field(repr=False)

    @property
    def filename(self) -> str:
        return f"history-{_stamp(self.start_us)}-{_stamp(self.end_us)}.{self.format.value}"

    @property
    def media_type(self) -> str:
        return self.format.media_type

    def rows(self) -> Iterator[list[tuple[Sample, ExportedSeries]]]:
        """The samples in chunks of at most ``chunk_rows``, by timestamp (then in series order)."""
        return self._service.chunks_of(self)

    def chunks(self) -> Iterator[bytes]:
        if self.format is ExportFormat.CSV:
            return _csv_chunks(self.rows())
        return _parquet_chunks(self.rows())


class ExportService:
    def __init__(self, registry: RegistryService, store: TimeSeriesStore, *,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS, max_series: int = MAX_SERIES) -> None:
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be positive")
        self._registry = registry
        self._store = store
        self.chunk_rows = chunk_rows
        self.max_series = max_series

    def open(self, ctx: TenantContext, *, series_ids: Sequence[int] = (), asset_ids: Sequence[int] = (),
             start_us: int, end_us: int, fmt: ExportFormat | str = ExportFormat.CSV) -> Export:
        """Check the request (tenant, ids, window, format) and return the export to stream.

        ``asset_ids`` stand for every series of the asset and of the assets below it (a line
        exports all its machines). Ids of another tenant are ``NotFound``, as if they did not exist.
        """
        try:
            fmt = ExportFormat(fmt)
        except ValueError:
            raise InvalidInput(f"format {fmt!r} is not supported; use csv or parquet") from None
        if end_us <= start_us:
            raise InvalidInput("'to' must be after 'from'")
        if not series_ids and not asset_ids:
            raise InvalidInput("name what to export: one or more series_id, or an asset_id")
        selected = self._select(ctx, series_ids, asset_ids)
        if len(selected) > self.max_series:
            raise InvalidInput(f"that is {len(selected)} series; export at most {self.max_series} at once")
        return Export(fmt, tuple(selected), start_us, end_us, self)

    def chunks_of(self, export: Export) -> Iterator[list[tuple[Sample, ExportedSeries]]]:
        if not export.series:
            return
        page = max(_MIN_PAGE, self.chunk_rows // len(export.series))
        streams = [self._rows(es, export.start_us, export.end_us, page) for es in export.series]
        merged = heapq.merge(*streams, key=_ts_of)  # ties: in series order
        while True:
            chunk = [row for _, row in zip(range(self.chunk_rows), merged, strict=False)]
            if not chunk:
                return
            yield chunk

    def _rows(self, es: ExportedSeries, start_us: int, end_us: int,
              page: int) -> Iterator[tuple[Sample, ExportedSeries]]:
        """One series' samples, read ``page`` at a time: each page starts after the last one's end."""
        lo = start_us
        while lo < end_us:
            samples = self._store.raw(es.series.id, lo, end_us, page)
            for sample in samples:
                yield sample, es
            if len(samples) < page:
                return
            lo = samples[-1].ts_us + 1

    def _select(self, ctx: TenantContext, series_ids: Sequence[int],
                asset_ids: Sequence[int]) -> list[ExportedSeries]:
        paths: dict[int, str] = {}

        def path_of(asset_id: int) -> str:
            if asset_id not in paths:
                paths[asset_id] = self._registry.asset(ctx, asset_id).path_str
            return paths[asset_id]

        out: dict[int, ExportedSeries] = {}
        for sid in series_ids:
            s = self._registry.series(ctx, sid)
            out.setdefault(s.id, ExportedSeries(s, path_of(s.asset_id)))
        if asset_ids:
            everything = self._registry.list_assets(ctx)
            for aid in asset_ids:
                root = self._registry.asset(ctx, aid)
                n = len(root.path)
                for a in everything:
                    if a.path[:n] != root.path:
                        continue
                    paths[a.id] = a.path_str
                    for s in self._registry.series_of(ctx, a.id):
                        out.setdefault(s.id, ExportedSeries(s, a.path_str))
        return sorted(out.values(), key=lambda e: (e.asset_path, e.series.measurement, e.series.id))


# ---- writers --------------------------------------------------------------------------------

def _csv_chunks(chunks: Iterator[list[tuple[Sample, ExportedSeries]]]) -> Iterator[bytes]:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    yield buf.getvalue().encode()
    for chunk in chunks:
        buf.seek(0)
        buf.truncate()
        writer.writerows(
            (_iso(s.ts_us), es.asset_path, es.series.measurement, es.series.unit,
             "" if s.value is None else repr(s.value), "" if s.text is None else s.text, s.quality)
            for s, es in chunk
        )
        yield buf.getvalue().encode()


class _Collector:
    """A write-only file for the Parquet writer: keeps what it is given until it is taken."""

    closed = False

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._pos = 0

    def write(self, data: Any) -> int:
        part = bytes(data)
        self._parts.append(part)
        self._pos += len(part)
        return len(part)

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        return None

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        return None

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def _parquet_chunks(chunks: Iterator[list[tuple[Sample, ExportedSeries]]]) -> Iterator[bytes]:
    sink = _Collector()
    writer = pq.ParquetWriter(sink, PARQUET_SCHEMA, compression="zstd")
    try:
        for chunk in chunks:
            table = pa.table({
                "ts": pa.array([s.ts_us for s, _ in chunk], pa.timestamp("us", tz="UTC")),
                "asset_path": pa.array([es.asset_path for _, es in chunk], pa.string()),
                "measurement": pa.array([es.series.measurement for _, es in chunk], pa.string()),
                "unit": pa.array([es.series.unit for _, es in chunk], pa.string()),
                "value": pa.array([s.value for s, _ in chunk], pa.float64()),
                "text": pa.array([s.text for s, _ in chunk], pa.string()),
                "quality": pa.array([s.quality for s, _ in chunk], pa.int16()),
            }, schema=PARQUET_SCHEMA)
            writer.write_table(table)  # one row group per chunk
            data = sink.take()
            if data:
                yield data
    finally:
        writer.close()
    yield sink.take()


def _ts_of(row: tuple[Sample, ExportedSeries]) -> int:
    return row[0].ts_us


_US_PER_DAY = 86_400_000_000
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


@lru_cache(maxsize=1024)
def _day(days: int) -> str:
    return date.fromordinal(_EPOCH_ORDINAL + days).isoformat()


def _iso(us: int) -> str:
    """RFC 3339 UTC with microseconds; arithmetic and a cached date, as datetime per row is slow."""
    days, rem = divmod(us, _US_PER_DAY)
    seconds, micros = divmod(rem, 1_000_000)
    hours, rem_s = divmod(seconds, 3600)
    minutes, secs = divmod(rem_s, 60)
    return f"{_day(days)}T{hours:02d}:{minutes:02d}:{secs:02d}.{micros:06d}Z"


def _stamp(us: int) -> str:
    return from_us(us).strftime("%Y%m%dT%H%M%SZ")
