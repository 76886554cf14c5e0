"""The alarm store in PostgreSQL (component "alarms"), in the installation's schema.

The same port and contract as DuckDB's (``shopfloor.ports.alarms``). Alarm instances are keyed by
(tenant, rule, asset) and upserted; documents are ``jsonb``; the engine checkpoint is one row.
Several API processes may acknowledge while the serve process evaluates: each ``save`` is one
transaction, and the serve process is the only one that runs rules.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg

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
from shopfloor.storage.postgres.database import PgDatabase

T = TypeVar("T")

MIGRATIONS: list[str] = [
    """
    CREATE TABLE alarm_rules (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, tenant_id integer NOT NULL, name text NOT NULL,
        enabled boolean NOT NULL, source text NOT NULL, spec jsonb NOT NULL, created_us bigint NOT NULL,
        updated_us bigint NOT NULL, UNIQUE (tenant_id, name)
    );
    COMMENT ON TABLE alarm_rules IS 'Alarm rules per tenant; spec is the rule as JSON (docs/alarms.md)';
    CREATE TABLE alarms (
        tenant_id integer NOT NULL, rule_id bigint NOT NULL, asset_id integer NOT NULL, state text NOT NULL,
        priority text NOT NULL, annunciated boolean NOT NULL, updated_us bigint NOT NULL, doc jsonb NOT NULL,
        PRIMARY KEY (tenant_id, rule_id, asset_id)
    );
    CREATE INDEX alarms_recent ON alarms (tenant_id, updated_us DESC);
    COMMENT ON TABLE alarms IS 'One alarm instance per rule and asset (ISA-18.2 state in doc)';
    CREATE TABLE alarm_journal (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, tenant_id integer NOT NULL, rule_id bigint NOT NULL,
        asset_id integer NOT NULL, ts bigint NOT NULL, action text NOT NULL, user_name text, live boolean NOT NULL,
        doc jsonb NOT NULL
    );
    CREATE INDEX alarm_journal_tenant ON alarm_journal (tenant_id, id);
    COMMENT ON TABLE alarm_journal IS 'Every transition and operator action on an alarm, in order';
    CREATE TABLE alarm_checkpoint (
        one boolean PRIMARY KEY DEFAULT true CHECK (one), seq bigint NOT NULL, state bytea NOT NULL,
        clock_us bigint NOT NULL
    );
    CREATE TABLE alarm_webhooks (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, tenant_id integer NOT NULL, url text NOT NULL,
        secret text NOT NULL, min_priority text NOT NULL, enabled boolean NOT NULL, created_us bigint NOT NULL
    );
    CREATE TABLE alarm_deliveries (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, subscription_id bigint NOT NULL,
        tenant_id integer NOT NULL, body text NOT NULL, attempts integer NOT NULL, due_us bigint NOT NULL,
        last_error text NOT NULL, created_us bigint NOT NULL, dead boolean NOT NULL
    );
    CREATE INDEX alarm_deliveries_due ON alarm_deliveries (due_us, id) WHERE NOT dead;
    COMMENT ON TABLE alarm_deliveries IS 'Outbox of webhook notifications; dead = given up after the retries';
    """,
]

_RULE_COLS = "id, tenant_id, name, spec::text, enabled, source, created_us, updated_us"
_HOOK_COLS = "id, tenant_id, url, secret, min_priority, enabled, created_us"
_DELIVERY_COLS = "id, subscription_id, tenant_id, body, attempts, due_us, last_error, created_us, dead"


def _pg(sql: str) -> str:
    return sql.replace("?", "%s")


class PostgresAlarmStore:
    """``shopfloor.ports.alarms.AlarmStore`` on a shared :class:`PgDatabase`."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db
        try:
            db.migrate("alarms", MIGRATIONS)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"could not migrate the alarm tables: {exc}") from exc

    # -- rules ------------------------------------------------------------------------------
    def create_rule(self, tenant_id: int, name: str, spec: dict[str, Any], *, enabled: bool = True,
                    source: str = "api", now_us: int = 0) -> RuleRecord:
        def work(conn: psycopg.Connection) -> RuleRecord:
            row = conn.execute(
                "INSERT INTO alarm_rules (tenant_id, name, enabled, source, spec, created_us, updated_us)"
                f" VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s) RETURNING {_RULE_COLS}",
                [tenant_id, name, enabled, source, json.dumps(spec), now_us, now_us]).fetchone()
            assert row is not None
            return _rule(row)
        return self._tx(work, name)

    def update_rule(self, rule: RuleRecord) -> RuleRecord:
        def work(conn: psycopg.Connection) -> RuleRecord:
            row = conn.execute(
                "UPDATE alarm_rules SET name = %s, spec = %s::jsonb, enabled = %s, source = %s, updated_us = %s"
                f" WHERE tenant_id = %s AND id = %s RETURNING {_RULE_COLS}",
                [rule.name, json.dumps(rule.spec), rule.enabled, rule.source, rule.updated_us, rule.tenant_id,
                 rule.id]).fetchone()
            if row is None:
                raise NotFound(f"no rule {rule.id}")
            return _rule(row)
        return self._tx(work, rule.name)

    def delete_rule(self, tenant_id: int, rule_id: int) -> bool:
        def work(conn: psycopg.Connection) -> bool:
            conn.execute("DELETE FROM alarms WHERE tenant_id = %s AND rule_id = %s", [tenant_id, rule_id])
            return conn.execute("DELETE FROM alarm_rules WHERE tenant_id = %s AND id = %s RETURNING id",
                                [tenant_id, rule_id]).fetchone() is not None
        return self._tx(work)

    def get_rule(self, tenant_id: int, rule_id: int) -> RuleRecord | None:
        rows = self._read(f"SELECT {_RULE_COLS} FROM alarm_rules WHERE tenant_id = %s AND id = %s", [tenant_id, rule_id])
        return _rule(rows[0]) if rows else None

    def rules(self, tenant_id: int | None = None) -> list[RuleRecord]:
        if tenant_id is None:
            return [_rule(r) for r in self._read(f"SELECT {_RULE_COLS} FROM alarm_rules ORDER BY id", [])]
        return [_rule(r) for r in self._read(f"SELECT {_RULE_COLS} FROM alarm_rules WHERE tenant_id = %s ORDER BY id",
                                             [tenant_id])]

    # -- alarms and journal -----------------------------------------------------------------
    def get_alarm(self, tenant_id: int, rule_id: int, asset_id: int) -> Alarm | None:
        rows = self._read("SELECT doc::text FROM alarms WHERE tenant_id = %s AND rule_id = %s AND asset_id = %s",
                          [tenant_id, rule_id, asset_id])
        return alarm_from(rows[0][0]) if rows else None

    def alarms(self, tenant_id: int | None, query: AlarmQuery | None = None) -> list[Alarm]:
        q = query or AlarmQuery()
        where, params = alarm_where(tenant_id, q)
        rows = self._read(_pg(f"SELECT doc::text FROM alarms WHERE {' AND '.join(where)}"
                              " ORDER BY updated_us DESC, tenant_id, rule_id, asset_id LIMIT ?"),
                          [*params, check_limit(q.limit)])
        return [alarm_from(r[0]) for r in rows]

    def journal(self, tenant_id: int, query: JournalQuery | None = None) -> list[JournalEntry]:
        q = query or JournalQuery()
        where, params = journal_where(tenant_id, q)
        rows = self._read(_pg(f"SELECT * FROM (SELECT id, doc::text FROM alarm_journal WHERE {' AND '.join(where)}"
                              " ORDER BY id DESC LIMIT ?) j ORDER BY id"), [*params, check_limit(q.limit)])
        return [entry_from(r[1]) for r in rows]

    def save(self, alarms: Sequence[Alarm], entries: Sequence[JournalEntry],
             deliveries: Sequence[NewDelivery] = (), checkpoint: Checkpoint | None = None) -> None:
        def work(conn: psycopg.Connection) -> None:
            with conn.cursor() as cur:
                if alarms:
                    cur.executemany(
                        "INSERT INTO alarms VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb)"
                        " ON CONFLICT (tenant_id, rule_id, asset_id) DO UPDATE SET state = excluded.state,"
                        " priority = excluded.priority, annunciated = excluded.annunciated,"
                        " updated_us = excluded.updated_us, doc = excluded.doc", [alarm_row(a) for a in alarms])
                if entries:
                    cur.executemany("INSERT INTO alarm_journal (tenant_id, rule_id, asset_id, ts, action, user_name,"
                                    " live, doc) VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb)",
                                    [entry_row(e) for e in entries])
                if deliveries:
                    cur.executemany("INSERT INTO alarm_deliveries (subscription_id, tenant_id, body, attempts, due_us,"
                                    " last_error, created_us, dead) VALUES (%s, %s, %s, 0, %s, '', %s, false)",
                                    [[d.subscription_id, d.tenant_id, d.body, d.due_us, d.due_us] for d in deliveries])
                if checkpoint is not None:
                    cur.execute("INSERT INTO alarm_checkpoint (one, seq, state, clock_us) VALUES (true, %s, %s, %s)"
                                " ON CONFLICT (one) DO UPDATE SET seq = excluded.seq, state = excluded.state,"
                                " clock_us = excluded.clock_us",
                                [checkpoint.seq, checkpoint.state, checkpoint.clock_us])
        self._tx(work)

    def checkpoint(self) -> Checkpoint | None:
        rows = self._read("SELECT seq, state, clock_us FROM alarm_checkpoint", [])
        return Checkpoint(seq=int(rows[0][0]), state=bytes(rows[0][1]), clock_us=int(rows[0][2])) if rows else None

    # -- webhooks ---------------------------------------------------------------------------
    def add_subscription(self, tenant_id: int, url: str, secret: str, *, min_priority: Priority = Priority.LOW,
                         now_us: int = 0) -> Subscription:
        def work(conn: psycopg.Connection) -> Subscription:
            row = conn.execute("INSERT INTO alarm_webhooks (tenant_id, url, secret, min_priority, enabled, created_us)"
                               f" VALUES (%s, %s, %s, %s, true, %s) RETURNING {_HOOK_COLS}",
                               [tenant_id, url, secret, min_priority.value, now_us]).fetchone()
            assert row is not None
            return _hook(row)
        return self._tx(work)

    def subscriptions(self, tenant_id: int | None = None) -> list[Subscription]:
        if tenant_id is None:
            return [_hook(r) for r in self._read(f"SELECT {_HOOK_COLS} FROM alarm_webhooks ORDER BY id", [])]
        return [_hook(r) for r in self._read(f"SELECT {_HOOK_COLS} FROM alarm_webhooks WHERE tenant_id = %s"
                                             " ORDER BY id", [tenant_id])]

    def delete_subscription(self, tenant_id: int, subscription_id: int) -> bool:
        def work(conn: psycopg.Connection) -> bool:
            found = conn.execute("DELETE FROM alarm_webhooks WHERE tenant_id = %s AND id = %s RETURNING id",
                                 [tenant_id, subscription_id]).fetchone() is not None
            conn.execute("DELETE FROM alarm_deliveries WHERE subscription_id = %s AND NOT dead", [subscription_id])
            return found
        return self._tx(work)

    def due_deliveries(self, now_us: int, limit: int = 100) -> list[Delivery]:
        rows = self._read(f"SELECT {_DELIVERY_COLS} FROM alarm_deliveries WHERE NOT dead AND due_us <= %s"
                          " ORDER BY due_us, id LIMIT %s", [now_us, check_limit(limit)])
        return [_delivery(r) for r in rows]

    def delivery_succeeded(self, delivery_id: int) -> None:
        self._tx(lambda conn: conn.execute("DELETE FROM alarm_deliveries WHERE id = %s", [delivery_id]))

    def delivery_failed(self, delivery_id: int, error: str, retry_at_us: int | None) -> None:
        self._tx(lambda conn: conn.execute(
            "UPDATE alarm_deliveries SET attempts = attempts + 1, last_error = %s,"
            " due_us = coalesce(%s::int8, due_us), dead = %s WHERE id = %s",
            [error[:1000], retry_at_us, retry_at_us is None, delivery_id]))

    def dead_deliveries(self, tenant_id: int, limit: int = 100) -> list[Delivery]:
        rows = self._read(f"SELECT {_DELIVERY_COLS} FROM alarm_deliveries WHERE dead AND tenant_id = %s"
                          " ORDER BY id DESC LIMIT %s", [tenant_id, check_limit(limit)])
        return [_delivery(r) for r in rows]

    def close(self) -> None:
        """The ``PgDatabase`` stays open: its creator closes it."""

    # -- plumbing ---------------------------------------------------------------------------
    def _read(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        return self._tx(lambda conn: conn.execute(sql, params).fetchall())

    def _tx(self, work: Callable[[psycopg.Connection], T], name: str | None = None) -> T:
        try:
            with self._db.connection() as conn:
                return work(conn)
        except psycopg.errors.UniqueViolation:
            raise Conflict(f"a rule named {name!r} already exists") from None
        except psycopg.Error as exc:
            raise StoreUnavailable(f"alarm store query failed: {exc}") from exc


def _rule(r: Sequence[Any]) -> RuleRecord:
    return RuleRecord(id=int(r[0]), tenant_id=int(r[1]), name=str(r[2]), spec=json.loads(r[3]), enabled=bool(r[4]),
                      source=str(r[5]), created_us=int(r[6]), updated_us=int(r[7]))


def _hook(r: Sequence[Any]) -> Subscription:
    return Subscription(id=int(r[0]), tenant_id=int(r[1]), url=str(r[2]), secret=str(r[3]),
                        min_priority=Priority(r[4]), enabled=bool(r[5]), created_us=int(r[6]))


def _delivery(r: Sequence[Any]) -> Delivery:
    return Delivery(id=int(r[0]), subscription_id=int(r[1]), tenant_id=int(r[2]), body=str(r[3]), attempts=int(r[4]),
                    due_us=int(r[5]), last_error=str(r[6]), created_us=int(r[7]), dead=bool(r[8]))
