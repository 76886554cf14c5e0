"""Reading the historian in ingest order: samples and events committed after a sequence number.

Commits take their number under the ``historian_seq`` row lock, so they become visible in number
order: a reader that sees seq N sees every commit below it. Migration 3 adds BRIN indexes on
``seq`` (rows of a partition arrive roughly in seq order, so a BRIN range is tight and costs ingest
next to nothing).
"""

from __future__ import annotations

import json
from typing import Any

import psycopg

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.query import SampleChanges, StoredEvent
from shopfloor.domain.timeutil import to_us

MIGRATION = """
CREATE INDEX samples_seq ON samples USING brin (seq);
CREATE INDEX events_seq ON events (seq);
"""


def _window(seq: int, upto: int | None, limit: int) -> tuple[str, list[Any]]:
    if limit < 0:
        raise InvalidInput("limit must not be negative")
    where, params = "seq > %s::int8", [seq]
    if upto is not None:
        where += " AND seq <= %s::int8"
        params.append(upto)
    return where, params


def samples_since(conn: psycopg.Connection, seq: int, limit: int, upto: int | None) -> SampleChanges:
    where, params = _window(seq, upto, limit)
    rows = conn.execute(f"SELECT seq, series_id, (extract(epoch FROM ts) * 1000000)::int8, value, text, quality"
                        f" FROM samples WHERE {where} ORDER BY seq, series_id, ts LIMIT %s", [*params, limit]).fetchall()
    if not rows:
        return SampleChanges()
    cols = list(zip(*rows, strict=True))
    return SampleChanges(*(list(c) for c in cols))


def events_since(conn: psycopg.Connection, seq: int, limit: int, upto: int | None) -> list[StoredEvent]:
    where, params = _window(seq, upto, limit)
    rows = conn.execute("SELECT seq, tenant_id, asset_id, ts, kind, type, data::text FROM events"
                        f" WHERE {where} ORDER BY seq, ts, asset_id, kind, type, data::text LIMIT %s",
                        [*params, limit]).fetchall()
    return [StoredEvent(int(r[0]), int(r[1]), int(r[2]), to_us(r[3]), str(r[4]), str(r[5]), json.loads(r[6]))
            for r in rows]
