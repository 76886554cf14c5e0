"""What both alarm stores share: alarms and journal entries as JSON documents, and the SQL
conditions of the alarm and journal filters (written with ``?`` placeholders; PostgreSQL swaps
them for ``%s``)."""

from __future__ import annotations

from typing import Any

import msgspec

from shopfloor.domain.alarms.model import Alarm, JournalEntry
from shopfloor.domain.errors import InvalidInput
from shopfloor.ports.alarms import AlarmQuery, JournalQuery

MAX_LIMIT = 100_000
_alarm_dec = msgspec.json.Decoder(Alarm)
_entry_dec = msgspec.json.Decoder(JournalEntry)


def alarm_doc(alarm: Alarm) -> str:
    return msgspec.json.encode(alarm).decode()


def entry_doc(entry: JournalEntry) -> str:
    return msgspec.json.encode(entry).decode()


def alarm_from(doc: str | bytes) -> Alarm:
    return _alarm_dec.decode(doc)


def entry_from(doc: str | bytes) -> JournalEntry:
    return _entry_dec.decode(doc)


def check_limit(limit: int) -> int:
    if limit < 0 or limit > MAX_LIMIT:
        raise InvalidInput(f"limit must be between 0 and {MAX_LIMIT}")
    return limit


def alarm_row(alarm: Alarm) -> list[Any]:
    """(tenant_id, rule_id, asset_id, state, priority, annunciated, updated_us, doc)."""
    return [alarm.tenant_id, alarm.rule_id, alarm.asset_id, alarm.state.value, alarm.priority.value,
            alarm.annunciated, alarm.updated_us, alarm_doc(alarm)]


def entry_row(entry: JournalEntry) -> list[Any]:
    """(tenant_id, rule_id, asset_id, ts, action, user_name, live, doc)."""
    return [entry.tenant_id, entry.rule_id, entry.asset_id, entry.ts_us, entry.action.value, entry.user,
            entry.live, entry_doc(entry)]


def alarm_where(tenant_id: int | None, q: AlarmQuery) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if tenant_id is not None:
        where.append("tenant_id = ?")
        params.append(tenant_id)
    for column, values in (("state", q.states), ("priority", q.priorities)):
        if values is not None:
            where.append(f"{column} IN ({', '.join('?' for _ in values) or 'NULL'})")
            params.extend(str(v) for v in values)
    for column, ids in (("asset_id", q.asset_ids), ("rule_id", q.rule_ids)):
        if ids is not None:
            where.append(f"{column} IN ({', '.join('?' for _ in ids) or 'NULL'})")
            params.extend(int(i) for i in ids)
    if q.annunciated is not None:
        where.append("annunciated = ?")
        params.append(q.annunciated)
    return where or ["TRUE"], params


def journal_where(tenant_id: int, q: JournalQuery) -> tuple[list[str], list[Any]]:
    where: list[str] = ["tenant_id = ?"]
    params: list[Any] = [tenant_id]
    for column, value in (("rule_id", q.rule_id), ("asset_id", q.asset_id)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if q.actions is not None:
        where.append(f"action IN ({', '.join('?' for _ in q.actions) or 'NULL'})")
        params.extend(str(a) for a in q.actions)
    if q.start_us is not None:
        where.append("ts >= ?")
        params.append(q.start_us)
    if q.end_us is not None:
        where.append("ts < ?")
        params.append(q.end_us)
    return where, params
