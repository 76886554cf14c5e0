"""The alarm service's plumbing with fakes: reading whole commits page by page (a commit bigger than
a page is read whole), the live stream's tenant filter and overflow, webhook fan-out by priority,
the retry back-off, and the self-monitoring checks."""

from __future__ import annotations

import asyncio

from shopfloor.domain.alarms.model import Action, Alarm, AlarmState, JournalEntry, Priority
from shopfloor.domain.query import SampleChanges, StoredEvent
from shopfloor.ports.alarms import Subscription
from shopfloor.services.alarm_monitor import BROKER_DOWN, DISK_FULL, SystemMonitor, broker_check, disk_check
from shopfloor.services.alarm_notify import AlarmHub, Notice, RetryPolicy, deliveries_for, notifies, sign, verify
from shopfloor.services.alarms import AlarmService


class Changes:
    """An in-memory ChangeSource: ``commits[i]`` is the number of samples of commit i + 1."""

    def __init__(self, commits: list[int]) -> None:
        self.samples = [(seq, sid, seq * 1000 + sid, float(sid), None, 0)
                        for seq, n in enumerate(commits, start=1) for sid in range(n)]

    def last_seq(self) -> int:
        return max((s[0] for s in self.samples), default=0)

    def samples_since(self, seq: int, limit: int, upto: int | None = None) -> SampleChanges:
        rows = [s for s in self.samples if s[0] > seq and (upto is None or s[0] <= upto)][:limit]
        return SampleChanges(*(list(c) for c in zip(*rows, strict=True))) if rows else SampleChanges()

    def events_since(self, seq: int, limit: int, upto: int | None = None) -> list[StoredEvent]:
        return []


def _service(changes: Changes, page: int) -> AlarmService:
    svc = AlarmService.__new__(AlarmService)
    svc._changes = changes
    svc.read_rows = page
    return svc


def test_reading_takes_whole_commits_and_a_big_commit_whole() -> None:
    changes = Changes([3, 3, 10, 2])
    svc = _service(changes, page=4)
    seen: list[tuple[int, int]] = []
    after = 0
    while after < changes.last_seq():
        samples, events, bound = svc._read(after, changes.last_seq())
        assert bound > after and events == []
        assert all(after < s <= bound for s in samples.seq)
        seen += list(zip(samples.seq, samples.series_id, strict=True))
        after = bound
    assert seen == [(s[0], s[1]) for s in changes.samples]  # each sample once, in order


def test_reading_stops_at_upto() -> None:
    changes = Changes([2, 2, 2])
    samples, _, bound = _service(changes, page=100)._read(0, 2)
    assert bound == 2 and set(samples.seq) == {1, 2}


def _notice(tenant: int, priority: Priority = Priority.HIGH, live: bool = True, hidden: bool = False) -> Notice:
    alarm = Alarm(tenant_id=tenant, rule_id=1, asset_id=2, state=AlarmState.ACTIVE_UNACK, priority=priority)
    entry = JournalEntry(tenant_id=tenant, rule_id=1, asset_id=2, ts_us=5, action=Action.ACTIVATE,
                         from_state=AlarmState.NORMAL, to_state=AlarmState.ACTIVE_UNACK, live=live, hidden=hidden)
    return Notice(event="activate", entry=entry, alarm=alarm)


def test_only_live_visible_entries_notify() -> None:
    assert notifies(_notice(1).entry)
    assert not notifies(_notice(1, live=False).entry)
    assert not notifies(_notice(1, hidden=True).entry)


async def test_hub_filters_by_tenant_and_drops_the_oldest_when_full() -> None:
    hub = AlarmHub(queue_size=2)
    hub.bind(asyncio.get_running_loop())
    async with hub.subscribe(1) as mine, hub.subscribe(None) as everyone:
        hub.publish([_notice(1), _notice(2), _notice(1, Priority.LOW)])
        await asyncio.sleep(0.01)
        assert [n.alarm.tenant_id for n in [mine.get_nowait(), mine.get_nowait()]] == [1, 1]
        got = [everyone.get_nowait(), everyone.get_nowait()]
        assert [(n.alarm.tenant_id, n.alarm.priority) for n in got] == [(2, Priority.HIGH), (1, Priority.LOW)]
        assert hub.subscribers == 2
    assert hub.subscribers == 0


def test_webhooks_fan_out_by_tenant_and_priority() -> None:
    subs = [Subscription(id=1, tenant_id=1, url="http://a", secret="s", min_priority=Priority.HIGH),
            Subscription(id=2, tenant_id=1, url="http://b", secret="s", min_priority=Priority.LOW),
            Subscription(id=3, tenant_id=2, url="http://c", secret="s"),
            Subscription(id=4, tenant_id=1, url="http://d", secret="s", enabled=False)]
    out = deliveries_for([_notice(1, Priority.MEDIUM), _notice(1, Priority.CRITICAL)], subs, now_us=9)
    assert sorted((d.subscription_id, d.due_us) for d in out) == [(1, 9), (2, 9), (2, 9)]


def test_signature_and_back_off() -> None:
    sig = sign("secret-secret-secret", 1700000000, b"{}")
    assert sig.startswith("sha256=") and verify("secret-secret-secret", "1700000000", b"{}", sig)
    assert not verify("secret-secret-secret", "1700000001", b"{}", sig)
    assert not verify("secret-secret-secret", "x", b"{}", sig)
    p = RetryPolicy(max_attempts=5, base_delay_s=1.0, max_delay_s=5.0)
    assert [p.delay_us(n) // 1_000_000 for n in range(1, 6)] == [1, 2, 4, 5, 5]


def test_self_monitoring_raises_and_clears() -> None:
    up = {"broker": True, "disk": 0.5}
    monitor = SystemMonitor([broker_check(lambda: up["broker"]), disk_check(lambda: up["disk"], 0.9)])
    assert monitor.check(1).entries == []  # all well: no instance changes
    up.update(broker=False, disk=0.95)
    out = monitor.check(2)
    assert sorted((e.rule_id, e.action) for e in out.entries) == [(DISK_FULL, Action.ACTIVATE),
                                                                  (BROKER_DOWN, Action.ACTIVATE)]
    assert monitor.alarms[DISK_FULL].value == 95.0 and monitor.alarms[BROKER_DOWN].tenant_id == 0
    assert monitor.check(3).entries == []  # still down: nothing new
    up.update(broker=True)
    assert [(e.rule_id, e.to_state) for e in monitor.check(4).entries] == [(BROKER_DOWN, AlarmState.CLEARED_UNACK)]


def test_a_process_without_broker_says_nothing() -> None:
    monitor = SystemMonitor([broker_check(lambda: None)])
    assert monitor.check(1).entries == [] and monitor.alarms == {}


def test_commits_are_split_by_tenant_in_order() -> None:
    from shopfloor.services.alarms import _split

    cols = SampleChanges(seq=[1, 1, 1, 2, 2], series_id=[10, 20, 11, 10, 99], ts_us=[1, 2, 3, 4, 5],
                         value=[1.0, 2.0, 3.0, 4.0, 5.0], text=[None] * 5, quality=[0] * 5)
    parts = sorted((seq, tid, b.series_id, b.value) for seq, tid, b in _split(cols, {10: 1, 11: 1, 20: 2}))
    assert parts == [(1, 1, [10, 11], [1.0, 3.0]), (1, 2, [20], [2.0]), (2, 1, [10], [4.0])]  # 99: no tenant
