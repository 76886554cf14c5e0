"""Binary COPY of a commit's rows, with the staging-table retry for duplicates.

The fast path COPYs straight into the target table, whose unique key rejects a duplicate. Only when
that happens (a redelivered message, or the same key twice in one batch) is the COPY rolled back to
a savepoint and the batch written again through a temporary staging table with
``INSERT .. SELECT DISTINCT ON (key) .. ORDER BY key, position .. ON CONFLICT DO NOTHING``: stored
rows win, and within the batch the first occurrence wins.

Timestamps travel as epoch microseconds: two small binary dumpers, registered on the COPY cursor
for the ``timestamptz`` and ``jsonb`` type oids, write an ``int`` straight into PostgreSQL's binary
``timestamptz`` (microseconds since 2000-01-01) and a canonical JSON ``str`` into ``jsonb``, so no
``datetime`` or dict is built per row.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from itertools import count, repeat
from typing import Any

import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format

PG_EPOCH_OFFSET_US = 946_684_800_000_000  # 2000-01-01 - 1970-01-01
TIMESTAMPTZ_OID = 1184
JSONB_OID = 3802
_INT8 = struct.Struct(">q")


class EpochUs(int):
    """Marker type under which the timestamptz dumper is registered (COPY picks dumpers by oid)."""


class JsonText(str):
    """Marker type under which the jsonb dumper is registered."""


class _EpochUsDumper(Dumper):
    format = Format.BINARY
    oid = TIMESTAMPTZ_OID

    def dump(self, obj: Any) -> bytes:
        return _INT8.pack(obj - PG_EPOCH_OFFSET_US)


class _JsonTextDumper(Dumper):
    format = Format.BINARY
    oid = JSONB_OID

    def dump(self, obj: Any) -> bytes:
        return b"\x01" + str.encode(obj)


def copy_cursor(conn: psycopg.Connection) -> psycopg.Cursor[Any]:
    """A cursor whose binary COPY takes epoch microseconds for timestamptz and JSON text for jsonb."""
    cur = conn.cursor()
    cur.adapters.register_dumper(EpochUs, _EpochUsDumper)
    cur.adapters.register_dumper(JsonText, _JsonTextDumper)
    return cur


SAMPLE_COLUMNS = ("series_id", "ts", "value", "text", "quality")
SAMPLE_TYPES = ["int4", "timestamptz", "float8", "text", "int2"]
EVENT_COLUMNS = ("tenant_id", "asset_id", "ts", "kind", "type", "data")
EVENT_TYPES = ["int4", "int4", "timestamptz", "text", "text", "jsonb"]
DEAD_LETTER_COLUMNS = ("tenant_id", "device", "topic", "reason", "detail", "payload", "received_at")
DEAD_LETTER_TYPES = ["int4", "text", "text", "text", "text", "bytea", "timestamptz"]


def _copy(cur: psycopg.Cursor[Any], table: str, columns: Sequence[str], types: list[str],
          rows: Iterable[Sequence[Any]]) -> None:
    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)


def write_idempotent(conn: psycopg.Connection, table: str, columns: Sequence[str], types: list[str],
                     data: Sequence[Sequence[Any]], seq: int, key: str,
                     returning: str = "1") -> list[tuple[Any, ...]] | None:
    """COPY the columns ``data`` (plus ``seq``) into ``table``; on a unique violation retry via staging.

    ``key`` is the unique key as an expression list: the ON CONFLICT target and the DISTINCT ON key.
    Returns None when the fast path stored every row, else ``returning`` of the rows the staging
    path stored (none, for a pure redelivery). Must run inside a transaction (it uses a savepoint).
    """
    cur = copy_cursor(conn)
    try:
        with conn.transaction():
            _copy(cur, table, [*columns, "seq"], [*types, "int8"], zip(*data, repeat(seq)))
        return None
    except psycopg.errors.UniqueViolation:
        pass
    stage = f"_sf_stage_{table}"
    cols = ", ".join(columns)
    # the staging table takes the target's column types, whatever later migrations make them
    cur.execute(f"CREATE TEMP TABLE {stage} ON COMMIT DROP AS"
                f" SELECT {cols}, 0::int8 AS i FROM {table} WITH NO DATA")
    _copy(cur, stage, [*columns, "i"], [*types, "int8"], zip(*data, count()))
    cur.execute(
        f"INSERT INTO {table} ({cols}, seq)"
        f" SELECT DISTINCT ON ({key}) {cols}, %s::int8 FROM {stage} ORDER BY {key}, i"
        f" ON CONFLICT ({key}) DO NOTHING RETURNING {returning}", [seq])
    stored = cur.fetchall()
    cur.execute(f"DROP TABLE {stage}")
    return stored


def write_all(conn: psycopg.Connection, table: str, columns: Sequence[str], types: list[str],
              data: Sequence[Sequence[Any]], seq: int) -> None:
    """COPY rows that have no unique key (dead letters record every delivery)."""
    _copy(copy_cursor(conn), table, [*columns, "seq"], [*types, "int8"], zip(*data, repeat(seq)))
