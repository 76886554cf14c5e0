"""Backtest: replay stored history through one rule and list the alarms it would have raised.

Nothing is stored or notified: a fresh ``RuleEngine`` with only that rule (enabled for the run)
reads the raw samples of the series it watches and the machine-state events of its assets over
[start, end), in time order, with clock ticks between the data (at most ``MAX_TICKS`` of them, at
least one per second of data time when the window allows), and a last tick at ``end``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

import msgspec

from shopfloor.domain.alarms.engine import RuleEngine
from shopfloor.domain.alarms.model import Action, JournalEntry
from shopfloor.domain.alarms.rules import measurements
from shopfloor.domain.alarms.templates import expand
from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.records import EventRecord, IngestBatch
from shopfloor.ports.alarms import RuleRecord
from shopfloor.ports.store import EventLog, TimeSeriesStore
from shopfloor.services.alarm_catalog import Catalog, rule_of

MAX_POINTS = 5_000_000
MAX_TICKS = 100_000
PAGE = 10_000
S = 1_000_000
_Item = EventRecord | tuple[int, float | None, int]  # an event, or (series id, value, quality)


class BacktestAlarm(msgspec.Struct, kw_only=True):
    asset_id: int
    asset: str
    activated_us: int
    cleared_us: int | None
    value: float | None
    message: str


class BacktestReport(msgspec.Struct, kw_only=True):
    rule_id: int
    rule: str
    start_us: int
    end_us: int
    assets: int  # instances the rule ran on
    points: int
    events: int
    alarms: list[BacktestAlarm]
    unresolved: list[str]


def backtest(record: RuleRecord, catalog: Catalog, series: TimeSeriesStore,
             events: EventLog, start_us: int, end_us: int) -> BacktestReport:
    if end_us <= start_us:
        raise InvalidInput("'to' must be after 'from'")
    rule = msgspec.structs.replace(rule_of(record), enabled=True)
    tid = record.tenant_id
    cat = catalog.tenants.get(tid)
    if cat is None:
        raise InvalidInput("the tenant has no assets to backtest on")
    bound = expand([rule], cat.assets)
    names = set(measurements(rule))
    asset_ids = {a.id for _, a in bound.bound}
    paths = {a.id: a.path for _, a in bound.bound}
    watched = [sid for sid, (aid, m) in cat.series.items() if aid in asset_ids and (not names or m in names)]
    engine = RuleEngine(tid, [rule], cat.assets, {sid: cat.series[sid] for sid in watched})
    stream: Iterator[tuple[int, _Item]] = heapq.merge(_samples(series, watched, start_us, end_us),
                         _events(events, tid, sorted(asset_ids), start_us, end_us), key=lambda x: x[0])
    tick_us = max(S, (end_us - start_us) // MAX_TICKS)
    entries: list[JournalEntry] = []
    batch = IngestBatch()
    next_tick = start_us + tick_us
    points = n_events = 0
    for ts, item in stream:
        if ts >= next_tick:
            entries += engine.on_ingest(batch, live=False).entries
            batch = IngestBatch()
            entries += engine.on_tick(ts, live=False).entries
            next_tick = ts - (ts - start_us) % tick_us + tick_us
        if isinstance(item, EventRecord):
            batch.events.append(item)
            n_events += 1
            entries += engine.on_ingest(batch, live=False).entries  # events and samples keep their order
            batch = IngestBatch()
        else:
            sid, value, quality = item
            batch.samples.add(sid, ts, value, None, quality)
            points += 1
            if points > MAX_POINTS:
                raise InvalidInput(f"more than {MAX_POINTS:,} points in the window: backtest a shorter one")
    entries += engine.on_ingest(batch, live=False).entries
    entries += engine.on_tick(end_us, live=False).entries
    return BacktestReport(rule_id=record.id, rule=record.name, start_us=start_us, end_us=end_us,
                          assets=len(bound.bound), points=points, events=n_events,
                          alarms=_alarms(entries, paths), unresolved=[why for _, why in bound.unresolved])


def _alarms(entries: list[JournalEntry], paths: dict[int, str]) -> list[BacktestAlarm]:
    out: list[BacktestAlarm] = []
    open_: dict[int, BacktestAlarm] = {}
    for e in entries:
        if e.action is Action.ACTIVATE:
            a = BacktestAlarm(asset_id=e.asset_id, asset=paths.get(e.asset_id, ""), activated_us=e.ts_us,
                              cleared_us=None, value=e.value, message=e.comment)
            out.append(a)
            open_[e.asset_id] = a
        elif e.action is Action.CLEAR and e.asset_id in open_:
            open_.pop(e.asset_id).cleared_us = e.ts_us
    return out


def _samples(store: TimeSeriesStore, series_ids: list[int], start_us: int,
             end_us: int) -> Iterator[tuple[int, _Item]]:
    def one(sid: int) -> Iterator[tuple[int, _Item]]:
        lo = start_us
        while True:
            page = store.raw(sid, lo, end_us, PAGE)
            for s in page:
                yield s.ts_us, (sid, s.value, s.quality)
            if len(page) < PAGE:
                return
            lo = page[-1].ts_us + 1
    return heapq.merge(*(one(sid) for sid in series_ids), key=lambda x: x[0])


def _events(log: EventLog, tenant_id: int, asset_ids: list[int], start_us: int,
            end_us: int) -> Iterator[tuple[int, _Item]]:
    if not asset_ids:
        return
    got = log.events(tenant_id, asset_ids=asset_ids, kinds=["state"], start_us=start_us, end_us=end_us,
                     limit=100_000)
    for e in got:
        yield e.ts_us, EventRecord(e.tenant_id, e.asset_id, e.ts_us, e.kind, e.type, e.data)
