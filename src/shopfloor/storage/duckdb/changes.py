"""Reading the historian in ingest order: samples and events committed after a sequence number.

DuckDB appends rows in commit order, so each row group's zone map on ``seq`` prunes everything a
consumer has already seen; no index is needed.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb
import pyarrow as pa

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.query import SampleChanges, StoredEvent


def _window(seq: int, upto: int | None, limit: int) -> tuple[str, list[Any]]:
    if limit < 0:
        raise InvalidInput("limit must not be negative")
    where, params = "seq > ?", [seq]
    if upto is not None:
        where += " AND seq <= ?"
        params.append(upto)
    return where, params


def samples_since(cur: duckdb.DuckDBPyConnection, seq: int, limit: int, upto: int | None) -> SampleChanges:
    where, params = _window(seq, upto, limit)
    t: pa.Table = cur.sql(f"SELECT seq, series_id, ts, value, text, quality FROM samples WHERE {where}"
                          " ORDER BY seq, series_id, ts LIMIT ?", params=[*params, limit]).to_arrow_table()
    return SampleChanges(*(t.column(i).to_pylist() for i in range(6)))


def events_since(cur: duckdb.DuckDBPyConnection, seq: int, limit: int, upto: int | None) -> list[StoredEvent]:
    where, params = _window(seq, upto, limit)
    rows = cur.execute("SELECT seq, tenant_id, asset_id, ts, kind, type, data::VARCHAR FROM events"
                       f" WHERE {where} ORDER BY seq, ts, asset_id, kind, type, data LIMIT ?",
                       [*params, limit]).fetchall()
    return [StoredEvent(int(r[0]), int(r[1]), int(r[2]), int(r[3]), str(r[4]), str(r[5]), json.loads(r[6]))
            for r in rows]
