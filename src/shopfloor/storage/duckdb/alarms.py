"""The alarm store in DuckDB (component "alarms"), in the shared database file.

Alarm instances have no primary key: ``save`` replaces an instance by DELETE + INSERT (DuckDB's key
checks refuse a delete and re-insert of one key within a transaction). Writes take the store's own
lock, not the database's ``write_lock``: they touch no table of the historian, and DuckDB lets
transactions on different tables commit side by side, so rules never queue behind an ingest commit.
Ids come from sequences. See ``shopfloor.ports.alarms`` for the semantics.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import duckdb

from shopfloor.domain.alarms.model import Alarm, JournalEntry, Priority
from shopfloor.domain.errors import Conflict, NotFound, StoreUnavailable
from shopfloor.ports.alarms import (
    AlarmQuery,
    Checkpoint,
    Delivery,
    JournalQuery,
    NewDelivery,
    RuleRecord,
    Subscription,
)
from shopfloor.storage.alarm_docs import (
    alarm_from,
    alarm_row,
    alarm_where,
    check_limit,
    entry_from,
    entry_row,
    journal_where,
)
from shopfloor.storage.duckdb.database import Database

T = TypeVar("T")

MIGRATIONS: list[str] = [
    """
    CREATE SEQUENCE alarm_rule_ids START 1;
    CREATE TABLE alarm_rules (
        id BIGINT PRIMARY KEY, tenant_id INTEGER NOT NULL, name VARCHAR NOT NULL, enabled BOOLEAN NOT NULL,
        source VARCHAR NOT NULL, spec JSON NOT NULL, created_us BIGINT NOT NULL, updated_us BIGINT NOT NULL
    );
    CREATE TABLE alarms (
        tenant_id INTEGER NOT NULL, rule_id BIGINT NOT NULL, asset_id INTEGER NOT NULL, state VARCHAR NOT NULL,
        priority VARCHAR NOT NULL, annunciated BOOLEAN NOT NULL, updated_us BIGINT NOT NULL, doc JSON NOT NULL
    );
    CREATE SEQUENCE alarm_journal_ids START 1;
    CREATE TABLE alarm_journal (
        id BIGINT NOT NULL, tenant_id INTEGER NOT NULL, rule_id BIGINT NOT NULL, asset_id INTEGER NOT NULL,
        ts BIGINT NOT NULL, action VARCHAR NOT NULL, user_name VARCHAR, live BOOLEAN NOT NULL, doc JSON NOT NULL
    );
    CREATE TABLE alarm_checkpoint (seq BIGINT NOT NULL, state BLOB NOT NULL, clock_us BIGINT NOT NULL);
    CREATE SEQUENCE alarm_webhook_ids START 1;
    CREATE TABLE alarm_webhooks (
        id BIGINT PRIMARY KEY, tenant_id INTEGER NOT NULL, url VARCHAR NOT NULL, secret VARCHAR NOT NULL,
        min_priority VARCHAR NOT NULL, enabled BOOLEAN NOT NULL, created_us BIGINT NOT NULL
    );
    CREATE SEQUENCE alarm_delivery_ids START 1;
    CREATE TABLE alarm_deliveries (
        id BIGINT NOT NULL, subscription_id BIGINT NOT NULL, tenant_id INTEGER NOT NULL, body VARCHAR NOT NULL,
        attempts INTEGER NOT NULL, due_us BIGINT NOT NULL, last_error VARCHAR NOT NULL, created_us BIGINT NOT NULL,
        dead BOOLEAN NOT NULL
    );
    """,
]

_RULE_COLS = "id, tenant_id, name, spec::VARCHAR, enabled, source, created_us, updated_us"
_HOOK_COLS = "id, tenant_id, url, secret, min_priority, enabled, created_us"
_DELIVERY_COLS = "id, subscription_id, tenant_id, body, attempts, due_us, last_error, created_us, dead"


class DuckDBAlarmStore:
    """``shopfloor.ports.alarms.AlarmStore`` on a shared :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = threading.RLock()
        db.migrate("alarms", MIGRATIONS)

    # -- rules ------------------------------------------------------------------------------
    def create_rule(self, tenant_id: int, name: str, spec: dict[str, Any], *, enabled: bool = True,
                    source: str = "api", now_us: int = 0) -> RuleRecord:
        def work(cur: duckdb.DuckDBPyConnection) -> RuleRecord:
            self._name_free(cur, tenant_id, name, None)
            row = cur.execute(
                "INSERT INTO alarm_rules VALUES (nextval('alarm_rule_ids'), ?, ?, ?, ?, ?, ?, ?)"
                f" RETURNING {_RULE_COLS}",
                [tenant_id, name, enabled, source, json.dumps(spec), now_us, now_us]).fetchall()[0]
            return _rule(row)
        return self._write(work)

    def update_rule(self, rule: RuleRecord) -> RuleRecord:
        def work(cur: duckdb.DuckDBPyConnection) -> RuleRecord:
            self._name_free(cur, rule.tenant_id, rule.name, rule.id)
            rows = cur.execute(
                "UPDATE alarm_rules SET name = ?, spec = ?, enabled = ?, source = ?, updated_us = ?"
                f" WHERE tenant_id = ? AND id = ? RETURNING {_RULE_COLS}",
                [rule.name, json.dumps(rule.spec), rule.enabled, rule.source, rule.updated_us, rule.tenant_id,
                 rule.id]).fetchall()
            if not rows:
                raise NotFound(f"no rule {rule.id}")
            return _rule(rows[0])
        return self._write(work)

    @staticmethod
    def _name_free(cur: duckdb.DuckDBPyConnection, tenant_id: int, name: str, rule_id: int | None) -> None:
        rows = cur.execute("SELECT id FROM alarm_rules WHERE tenant_id = ? AND name = ?", [tenant_id, name]).fetchall()
        if rows and int(rows[0][0]) != rule_id:
            raise Conflict(f"a rule named {name!r} already exists (id {rows[0][0]})")

    def delete_rule(self, tenant_id: int, rule_id: int) -> bool:
        def work(cur: duckdb.DuckDBPyConnection) -> bool:
            cur.execute("DELETE FROM alarms WHERE tenant_id = ? AND rule_id = ?", [tenant_id, rule_id])
            rows = cur.execute("DELETE FROM alarm_rules WHERE tenant_id = ? AND id = ? RETURNING id",
                               [tenant_id, rule_id]).fetchall()
            return bool(rows)
        return self._write(work)

    def get_rule(self, tenant_id: int, rule_id: int) -> RuleRecord | None:
        rows = self._read(f"SELECT {_RULE_COLS} FROM alarm_rules WHERE tenant_id = ? AND id = ?", [tenant_id, rule_id])
        return _rule(rows[0]) if rows else None

    def rules(self, tenant_id: int | None = None) -> list[RuleRecord]:
        if tenant_id is None:
            return [_rule(r) for r in self._read(f"SELECT {_RULE_COLS} FROM alarm_rules ORDER BY id", [])]
        return [_rule(r) for r in self._read(f"SELECT {_RULE_COLS} FROM alarm_rules WHERE tenant_id = ? ORDER BY id",
                                             [tenant_id])]

    # -- alarms and journal -----------------------------------------------------------------
    def get_alarm(self, tenant_id: int, rule_id: int, asset_id: int) -> Alarm | None:
        rows = self._read("SELECT doc::VARCHAR FROM alarms WHERE tenant_id = ? AND rule_id = ? AND asset_id = ?",
                          [tenant_id, rule_id, asset_id])
        return alarm_from(rows[0][0]) if rows else None

    def alarms(self, tenant_id: int | None, query: AlarmQuery | None = None) -> list[Alarm]:
        q = query or AlarmQuery()
        where, params = alarm_where(tenant_id, q)
        rows = self._read(f"SELECT doc::VARCHAR FROM alarms WHERE {' AND '.join(where)}"
                          " ORDER BY updated_us DESC, tenant_id, rule_id, asset_id LIMIT ?",
                          [*params, check_limit(q.limit)])
        return [alarm_from(r[0]) for r in rows]

    def journal(self, tenant_id: int, query: JournalQuery | None = None) -> list[JournalEntry]:
        q = query or JournalQuery()
        where, params = journal_where(tenant_id, q)
        rows = self._read(f"SELECT * FROM (SELECT id, doc::VARCHAR FROM alarm_journal WHERE {' AND '.join(where)}"
                          " ORDER BY id DESC LIMIT ?) ORDER BY id", [*params, check_limit(q.limit)])
        return [entry_from(r[1]) for r in rows]

    def save(self, alarms: Sequence[Alarm], entries: Sequence[JournalEntry],
             deliveries: Sequence[NewDelivery] = (), checkpoint: Checkpoint | None = None) -> None:
        def work(cur: duckdb.DuckDBPyConnection) -> None:
            # whole lists per statement: DuckDB's executemany costs milliseconds per row
            if alarms:
                rows = [alarm_row(a) for a in alarms]
                cols = list(zip(*rows, strict=True))
                cur.execute("DELETE FROM alarms USING (SELECT unnest(?::INTEGER[]) AS t, unnest(?::BIGINT[]) AS r,"
                            " unnest(?::INTEGER[]) AS a) k WHERE alarms.tenant_id = k.t AND alarms.rule_id = k.r"
                            " AND alarms.asset_id = k.a", [list(c) for c in cols[:3]])
                cur.execute("INSERT INTO alarms SELECT unnest(?::INTEGER[]), unnest(?::BIGINT[]), unnest(?::INTEGER[]),"
                            " unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::BOOLEAN[]), unnest(?::BIGINT[]),"
                            " unnest(?::VARCHAR[])::JSON", [list(c) for c in cols])
            if entries:
                cols = list(zip(*[entry_row(e) for e in entries], strict=True))
                cur.execute("INSERT INTO alarm_journal SELECT nextval('alarm_journal_ids'), t, r, a, ts, act, u, l, d::JSON"
                            " FROM (SELECT unnest(range(?)) AS i, unnest(?::INTEGER[]) AS t, unnest(?::BIGINT[]) AS r,"
                            " unnest(?::INTEGER[]) AS a, unnest(?::BIGINT[]) AS ts, unnest(?::VARCHAR[]) AS act,"
                            " unnest(?::VARCHAR[]) AS u, unnest(?::BOOLEAN[]) AS l, unnest(?::VARCHAR[]) AS d) ORDER BY i",
                            [len(entries), *[list(c) for c in cols]])
            if deliveries:
                cur.execute("INSERT INTO alarm_deliveries SELECT nextval('alarm_delivery_ids'), s, t, b, 0, d, '', d, false"
                            " FROM (SELECT unnest(range(?)) AS i, unnest(?::BIGINT[]) AS s, unnest(?::INTEGER[]) AS t,"
                            " unnest(?::VARCHAR[]) AS b, unnest(?::BIGINT[]) AS d) ORDER BY i",
                            [len(deliveries), [d.subscription_id for d in deliveries], [d.tenant_id for d in deliveries],
                             [d.body for d in deliveries], [d.due_us for d in deliveries]])
            if checkpoint is not None:
                row = [checkpoint.seq, checkpoint.state, checkpoint.clock_us]
                if not cur.execute("UPDATE alarm_checkpoint SET seq = ?, state = ?, clock_us = ? RETURNING seq",
                                   row).fetchall():
                    cur.execute("INSERT INTO alarm_checkpoint VALUES (?, ?, ?)", row)
        self._write(work)

    def checkpoint(self) -> Checkpoint | None:
        rows = self._read("SELECT seq, state, clock_us FROM alarm_checkpoint", [])
        return Checkpoint(seq=int(rows[0][0]), state=bytes(rows[0][1]), clock_us=int(rows[0][2])) if rows else None

    # -- webhooks ---------------------------------------------------------------------------
    def add_subscription(self, tenant_id: int, url: str, secret: str, *, min_priority: Priority = Priority.LOW,
                         now_us: int = 0) -> Subscription:
        def work(cur: duckdb.DuckDBPyConnection) -> Subscription:
            row = cur.execute("INSERT INTO alarm_webhooks VALUES (nextval('alarm_webhook_ids'), ?, ?, ?, ?, true, ?)"
                              f" RETURNING {_HOOK_COLS}",
                              [tenant_id, url, secret, min_priority.value, now_us]).fetchall()[0]
            return _hook(row)
        return self._write(work)

    def subscriptions(self, tenant_id: int | None = None) -> list[Subscription]:
        if tenant_id is None:
            return [_hook(r) for r in self._read(f"SELECT {_HOOK_COLS} FROM alarm_webhooks ORDER BY id", [])]
        return [_hook(r) for r in self._read(f"SELECT {_HOOK_COLS} FROM alarm_webhooks WHERE tenant_id = ?"
                                             " ORDER BY id", [tenant_id])]

    def delete_subscription(self, tenant_id: int, subscription_id: int) -> bool:
        def work(cur: duckdb.DuckDBPyConnection) -> bool:
            rows = cur.execute("DELETE FROM alarm_webhooks WHERE tenant_id = ? AND id = ? RETURNING id",
                               [tenant_id, subscription_id]).fetchall()
            cur.execute("DELETE FROM alarm_deliveries WHERE subscription_id = ? AND NOT dead", [subscription_id])
            return bool(rows)
        return self._write(work)

    def due_deliveries(self, now_us: int, limit: int = 100) -> list[Delivery]:
        rows = self._read(f"SELECT {_DELIVERY_COLS} FROM alarm_deliveries WHERE NOT dead AND due_us <= ?"
                          " ORDER BY due_us, id LIMIT ?", [now_us, check_limit(limit)])
        return [_delivery(r) for r in rows]

    def delivery_succeeded(self, delivery_id: int) -> None:
        self._write(lambda cur: cur.execute("DELETE FROM alarm_deliveries WHERE id = ?", [delivery_id]))

    def delivery_failed(self, delivery_id: int, error: str, retry_at_us: int | None) -> None:
        self._write(lambda cur: cur.execute(
            "UPDATE alarm_deliveries SET attempts = attempts + 1, last_error = ?, due_us = coalesce(?, due_us),"
            " dead = ? WHERE id = ?", [error[:1000], retry_at_us, retry_at_us is None, delivery_id]))

    def dead_deliveries(self, tenant_id: int, limit: int = 100) -> list[Delivery]:
        rows = self._read(f"SELECT {_DELIVERY_COLS} FROM alarm_deliveries WHERE dead AND tenant_id = ?"
                          " ORDER BY id DESC LIMIT ?", [tenant_id, check_limit(limit)])
        return [_delivery(r) for r in rows]

    def close(self) -> None:
        """The ``Database`` stays open: its creator closes it."""

    # -- plumbing ---------------------------------------------------------------------------
    def _read(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        try:
            return self._db.cursor().execute(sql, params).fetchall()
        except duckdb.Error as exc:
            raise StoreUnavailable(f"alarm store query failed: {exc}") from exc

    def _write(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        with self._lock:
            try:
                with self._db.transaction() as cur:
                    return work(cur)
            except duckdb.Error as exc:
                raise StoreUnavailable(f"alarm store write failed: {exc}") from exc


def _rule(r: tuple[Any, ...]) -> RuleRecord:
    return RuleRecord(id=int(r[0]), tenant_id=int(r[1]), name=str(r[2]), spec=json.loads(r[3]), enabled=bool(r[4]),
                      source=str(r[5]), created_us=int(r[6]), updated_us=int(r[7]))


def _hook(r: tuple[Any, ...]) -> Subscription:
    return Subscription(id=int(r[0]), tenant_id=int(r[1]), url=str(r[2]), secret=str(r[3]),
                        min_priority=Priority(r[4]), enabled=bool(r[5]), created_us=int(r[6]))


def _delivery(r: tuple[Any, ...]) -> Delivery:
    return Delivery(id=int(r[0]), subscription_id=int(r[1]), tenant_id=int(r[2]), body=str(r[3]), attempts=int(r[4]),
                    due_us=int(r[5]), last_error=str(r[6]), created_us=int(r[7]), dead=bool(r[8]))
