"""The contract every ``AlarmStore`` must pass (DuckDB and PostgreSQL).

Subclass ``AlarmStoreContract`` in a test module with an ``alarm_store`` fixture giving a new,
empty store per test. What it fixes beyond the port's docstrings: rule names are unique per tenant;
one alarm instance per (tenant, rule, asset), replaced by ``save``; the journal keeps write order
and the newest ``limit``; ``save`` is all or nothing (a failing part leaves no alarm, entry,
delivery or checkpoint behind); deliveries come due, count attempts, and die when given up.
"""

from __future__ import annotations

import msgspec
import pytest

from shopfloor.domain.alarms.model import Action, Alarm, AlarmState, JournalEntry, Priority
from shopfloor.domain.errors import Conflict, InvalidInput, NotFound, ShopfloorError
from shopfloor.ports.alarms import AlarmQuery, AlarmStore, Checkpoint, JournalQuery, NewDelivery

T0 = 1_700_000_000_000_000
SPEC = {"kind": "threshold", "measurement": "temperature", "high": 80.0}


def alarm(rule: int, asset: int, state: AlarmState = AlarmState.ACTIVE_UNACK, tenant: int = 1, ts: int = T0,
          **kw: object) -> Alarm:
    return Alarm(tenant_id=tenant, rule_id=rule, asset_id=asset, state=state, updated_us=ts, **kw)  # type: ignore[arg-type]


def entry(rule: int, asset: int, action: Action, ts: int, tenant: int = 1, user: str | None = None) -> JournalEntry:
    return JournalEntry(tenant_id=tenant, rule_id=rule, asset_id=asset, ts_us=ts, action=action,
                        from_state=AlarmState.NORMAL, to_state=AlarmState.ACTIVE_UNACK, user=user)


class AlarmStoreContract:
    def test_rules_crud_per_tenant(self, alarm_store: AlarmStore) -> None:
        r1 = alarm_store.create_rule(1, "hot", SPEC, now_us=T0)
        r2 = alarm_store.create_rule(2, "hot", SPEC, enabled=False, source="plant", now_us=T0)
        assert r1.id != r2.id and r1.spec == SPEC and r1.enabled and r1.source == "api"
        with pytest.raises(Conflict):
            alarm_store.create_rule(1, "hot", SPEC)
        assert [r.id for r in alarm_store.rules(1)] == [r1.id]
        assert [r.id for r in alarm_store.rules()] == [r1.id, r2.id]
        assert alarm_store.get_rule(2, r1.id) is None  # another tenant's rule is invisible
        changed = msgspec.structs.replace(r1, spec={**SPEC, "high": 90.0}, enabled=False, updated_us=T0 + 1)
        assert alarm_store.update_rule(changed).spec["high"] == 90.0
        got = alarm_store.get_rule(1, r1.id)
        assert got is not None and not got.enabled and got.updated_us == T0 + 1
        other = alarm_store.create_rule(1, "cold", SPEC)
        with pytest.raises(Conflict):
            alarm_store.update_rule(msgspec.structs.replace(other, name="hot"))
        with pytest.raises(NotFound):
            alarm_store.update_rule(msgspec.structs.replace(r1, tenant_id=2, name="other"))
        alarm_store.save([alarm(r1.id, 10)], [])
        assert alarm_store.delete_rule(1, r1.id) and not alarm_store.delete_rule(1, r1.id)
        assert alarm_store.get_alarm(1, r1.id, 10) is None

    def test_one_instance_per_rule_and_asset(self, alarm_store: AlarmStore) -> None:
        alarm_store.save([alarm(1, 10), alarm(1, 11, AlarmState.NORMAL, ts=T0 + 5)], [])
        alarm_store.save([alarm(1, 10, AlarmState.ACTIVE_ACK, ts=T0 + 9, acked_by="ann", activations=2)], [])
        got = alarm_store.get_alarm(1, 1, 10)
        assert got is not None and got.state is AlarmState.ACTIVE_ACK and got.acked_by == "ann" and got.activations == 2
        assert [(a.asset_id, a.state) for a in alarm_store.alarms(1)] == [
            (10, AlarmState.ACTIVE_ACK), (11, AlarmState.NORMAL)]  # most recently changed first
        assert alarm_store.alarms(2) == [] and len(alarm_store.alarms(None)) == 2

    def test_alarm_filters(self, alarm_store: AlarmStore) -> None:
        alarm_store.save([
            alarm(1, 10, priority=Priority.HIGH), alarm(2, 10, AlarmState.NORMAL),
            alarm(1, 11, AlarmState.CLEARED_UNACK, shelved_until_us=T0 + 60_000_000),
            alarm(3, 12, AlarmState.ACTIVE_ACK, tenant=2)], [])
        def keys(q: AlarmQuery, tenant: int | None = 1) -> set[tuple[int, int]]:
            return {(a.rule_id, a.asset_id) for a in alarm_store.alarms(tenant, q)}
        assert keys(AlarmQuery(states=[AlarmState.ACTIVE_UNACK, AlarmState.CLEARED_UNACK])) == {(1, 10), (1, 11)}
        assert keys(AlarmQuery(priorities=[Priority.HIGH])) == {(1, 10)}
        assert keys(AlarmQuery(asset_ids=[10])) == {(1, 10), (2, 10)}
        assert keys(AlarmQuery(rule_ids=[2, 3])) == {(2, 10)}
        assert keys(AlarmQuery(annunciated=True)) == {(1, 10)}  # normal and shelved are not
        assert keys(AlarmQuery(states=[])) == set()
        assert keys(AlarmQuery(annunciated=True), None) == {(1, 10), (3, 12)}
        assert len(alarm_store.alarms(1, AlarmQuery(limit=2))) == 2
        with pytest.raises(InvalidInput):
            alarm_store.alarms(1, AlarmQuery(limit=-1))

    def test_journal_order_filters_and_limit(self, alarm_store: AlarmStore) -> None:
        entries = [entry(1, 10, Action.ACTIVATE, T0 + 2), entry(1, 10, Action.ACKNOWLEDGE, T0 + 1, user="ann"),
                   entry(2, 11, Action.ACTIVATE, T0 + 3), entry(1, 10, Action.ACTIVATE, T0, tenant=2)]
        alarm_store.save([], entries[:2])
        alarm_store.save([], entries[2:])
        assert alarm_store.journal(1) == entries[:3]  # write order, not time order
        assert alarm_store.journal(1, JournalQuery(limit=2)) == entries[1:3]
        assert alarm_store.journal(1, JournalQuery(rule_id=1)) == entries[:2]
        assert alarm_store.journal(1, JournalQuery(asset_id=11)) == entries[2:3]
        assert alarm_store.journal(1, JournalQuery(actions=[Action.ACKNOWLEDGE]))[0].user == "ann"
        assert alarm_store.journal(1, JournalQuery(start_us=T0 + 2, end_us=T0 + 3)) == entries[:1]
        assert alarm_store.journal(2) == entries[3:]

    def test_save_is_atomic_with_the_checkpoint(self, alarm_store: AlarmStore) -> None:
        assert alarm_store.checkpoint() is None
        hook = alarm_store.add_subscription(1, "http://127.0.0.1:9/hook", "s3cret", now_us=T0)
        alarm_store.save([alarm(1, 10)], [entry(1, 10, Action.ACTIVATE, T0)],
                         [NewDelivery(subscription_id=hook.id, tenant_id=1, body="{}", due_us=T0)],
                         Checkpoint(seq=7, state=b"\x00state", clock_us=T0))
        cp = alarm_store.checkpoint()
        assert cp is not None and (cp.seq, cp.state, cp.clock_us) == (7, b"\x00state", T0)
        alarm_store.save([], [], checkpoint=Checkpoint(seq=9, state=b""))
        cp = alarm_store.checkpoint()
        assert cp is not None and cp.seq == 9 and cp.state == b""
        bad = entry(5, 50, Action.CLEAR, 2**70)  # a time no BIGINT holds: the store refuses the whole call
        with pytest.raises(ShopfloorError):
            alarm_store.save([alarm(5, 50)], [entry(5, 50, Action.ACTIVATE, T0), bad],
                             [NewDelivery(subscription_id=hook.id, tenant_id=1, body="{}", due_us=T0)],
                             Checkpoint(seq=10, state=b"x"))
        assert alarm_store.get_alarm(1, 5, 50) is None
        assert len(alarm_store.journal(1)) == 1 and len(alarm_store.due_deliveries(T0)) == 1
        cp = alarm_store.checkpoint()
        assert cp is not None and cp.seq == 9

    def test_deliveries_come_due_retry_and_die(self, alarm_store: AlarmStore) -> None:
        hook = alarm_store.add_subscription(1, "http://127.0.0.1:9/hook", "s3cret", min_priority=Priority.HIGH,
                                            now_us=T0)
        assert alarm_store.subscriptions(1)[0].min_priority is Priority.HIGH and alarm_store.subscriptions(2) == []
        alarm_store.save([], [], [NewDelivery(subscription_id=hook.id, tenant_id=1, body='{"n":1}', due_us=T0),
                                  NewDelivery(subscription_id=hook.id, tenant_id=1, body='{"n":2}', due_us=T0 + 5)])
        assert [d.body for d in alarm_store.due_deliveries(T0)] == ['{"n":1}']
        first, second = alarm_store.due_deliveries(T0 + 5)
        alarm_store.delivery_failed(first.id, "HTTP 500", T0 + 100)
        assert [d.id for d in alarm_store.due_deliveries(T0 + 99)] == [second.id]
        again = alarm_store.due_deliveries(T0 + 100)  # oldest due first: the second, then the retried one
        assert [d.id for d in again] == [second.id, first.id]
        again = again[1:]
        assert again[0].attempts == 1 and again[0].last_error == "HTTP 500"
        alarm_store.delivery_succeeded(second.id)
        alarm_store.delivery_failed(first.id, "connection refused", None)
        assert alarm_store.due_deliveries(T0 + 10**9) == []
        dead = alarm_store.dead_deliveries(1)
        assert [(d.id, d.attempts, d.dead, d.last_error) for d in dead] == [(first.id, 2, True, "connection refused")]
        assert alarm_store.dead_deliveries(2) == []
        alarm_store.save([], [], [NewDelivery(subscription_id=hook.id, tenant_id=1, body="{}", due_us=T0)])
        assert alarm_store.delete_subscription(1, hook.id) and not alarm_store.delete_subscription(1, hook.id)
        assert alarm_store.due_deliveries(T0 + 10**9) == [] and len(alarm_store.dead_deliveries(1)) == 1
