"""Rules and alarms on the real stores (DuckDB and PostgreSQL): live data raises an alarm once,
acknowledgement is journalled with its user, webhooks are signed and retried against a real HTTP
receiver, back-filled history never notifies, a restart replays without raising twice."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from shopfloor.bootstrap import run_alarms
from shopfloor.domain.alarms.model import Action, AlarmState
from shopfloor.domain.plant import plant_from_obj
from shopfloor.ports.alarms import JournalQuery
from shopfloor.services.alarm_notify import SIGNATURE_HEADER, TIMESTAMP_HEADER
from tests.integration.alarm_helpers import (
    HOT_RULE,
    PLANT,
    make_plant,
    settings_for,
    telemetry,
    wait_for,
    webhook_receiver,
)

pytestmark = pytest.mark.integration


@pytest.fixture(params=["duckdb", "postgres"])
def store(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def pg(store: str, request: pytest.FixtureRequest) -> tuple[str, str] | None:
    if store != "postgres":
        return None
    got: tuple[str, str] = request.getfixturevalue("pg_schema")
    return got


async def test_live_alarm_ack_and_signed_webhook_with_retries(store: str, pg: tuple[str, str] | None,
                                                             tmp_path: Path) -> None:
    plant = make_plant(settings_for(store, tmp_path, pg, alarm_tick_s=0.2, alarm_webhook_delay_s=0.1))
    p = plant.platform
    try:
        with webhook_receiver(fail_first=2) as receiver:
            async with run_alarms(p):
                ops = p.alarm_ops()
                assert ops is not None
                rule = await ops.create_rule(plant.ctx, dict(HOT_RULE))
                hook = await ops.subscribe(plant.ctx, receiver.url, secret="a-very-secret-secret")
                await p.ingest.submit_messages(telemetry("press-01", [70.0, 85.0, 90.0, 79.0, 75.0]))
                await p.ingest.submit_messages(telemetry("press-02", [60.0]))
                press1 = p.repo.find_asset(plant.ctx.tenant_id or 0, ["plant", "hall", "line-1", "press-01"])
                assert press1 is not None

                def cleared_unack() -> bool:
                    a = ops.store.get_alarm(press1.tenant_id, rule.id, press1.id)
                    return a is not None and a.state is AlarmState.CLEARED_UNACK
                await wait_for(cleared_unack, what="the alarm to activate and clear")
                alarm = ops.alarm(plant.ctx, rule.id, press1.id)
                assert alarm.activations == 1 and alarm.value == 75.0
                op_ctx = p.auth.context_for(plant.operator)
                acked = await ops.act(op_ctx, Action.ACKNOWLEDGE, rule.id, press1.id, comment="cooling restored")
                assert acked.state is AlarmState.NORMAL and acked.acked_by == "oscar"
                journal = ops.journal(plant.ctx, JournalQuery(rule_id=rule.id))
                assert [(e.action, e.live, e.user) for e in journal] == [
                    (Action.ACTIVATE, True, None), (Action.CLEAR, True, None), (Action.ACKNOWLEDGE, True, "oscar")]
                assert journal[-1].comment == "cooling restored"
                await wait_for(lambda: len(receiver.received) == 3, what="three webhook deliveries")
        assert receiver.attempts == 5  # two failures, retried with back-off, then the three notices
        events = []
        for headers, body in receiver.received:
            ts = headers[TIMESTAMP_HEADER]
            mac = hmac.new(hook.secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
            assert headers[SIGNATURE_HEADER] == "sha256=" + mac
            events.append(json.loads(body)["event"])
        assert sorted(events) == ["acknowledge", "activate", "clear"]
        assert p.stores.alarms.due_deliveries(2**62) == [] and p.stores.alarms.dead_deliveries(1) == []
    finally:
        p.close()


async def test_undeliverable_webhook_is_dead_lettered(store: str, pg: tuple[str, str] | None, tmp_path: Path) -> None:
    plant = make_plant(settings_for(store, tmp_path, pg, alarm_tick_s=0.2, alarm_webhook_delay_s=0.05,
                                    alarm_webhook_attempts=3))
    p = plant.platform
    try:
        with webhook_receiver(fail_first=100) as receiver:
            async with run_alarms(p):
                ops = p.alarm_ops()
                assert ops is not None
                await ops.create_rule(plant.ctx, dict(HOT_RULE))
                await ops.subscribe(plant.ctx, receiver.url)
                await p.ingest.submit_messages(telemetry("press-01", [95.0]))
                dead = await wait_for(lambda: ops.dead_deliveries(plant.ctx), what="a dead-lettered delivery")
        assert receiver.attempts == 3
        assert dead[0].attempts == 3 and dead[0].last_error.startswith("HTTP 500")
        assert json.loads(dead[0].body)["event"] == "activate"
    finally:
        p.close()


async def test_backfill_is_evaluated_but_never_notifies(store: str, pg: tuple[str, str] | None,
                                                        tmp_path: Path) -> None:
    plant = make_plant(settings_for(store, tmp_path, pg, alarm_tick_s=0.2))
    p = plant.platform
    try:
        with webhook_receiver() as receiver:
            async with run_alarms(p) as service:
                ops = p.alarm_ops()
                assert ops is not None
                rule = await ops.create_rule(plant.ctx, dict(HOT_RULE))
                await ops.subscribe(plant.ctx, receiver.url)
                async with service.hub.subscribe(plant.ctx.tenant_id) as stream:
                    # recent history, back-filled: evaluated, journalled, but not live
                    await p.ingest.submit_messages(telemetry("press-02", [50.0, 99.0, 40.0], live=False))
                    await wait_for(lambda: len(ops.journal(plant.ctx)) == 2, what="the back-filled journal")
                    assert stream.empty()
                entries = ops.journal(plant.ctx, JournalQuery(rule_id=rule.id))
                assert [(e.action, e.live) for e in entries] == [(Action.ACTIVATE, False), (Action.CLEAR, False)]
                assert service.seq == p.historian.last_seq()
        assert receiver.attempts == 0 and p.stores.alarms.due_deliveries(2**62) == []
    finally:
        p.close()


async def test_restart_resumes_from_the_checkpoint(store: str, pg: tuple[str, str] | None, tmp_path: Path) -> None:
    settings = settings_for(store, tmp_path, pg, alarm_tick_s=0.2)
    plant = make_plant(settings)
    p = plant.platform
    try:
        async with run_alarms(p) as service:
            ops = p.alarm_ops()
            assert ops is not None
            rule = await ops.create_rule(plant.ctx, dict(HOT_RULE))
            await p.ingest.submit_messages(telemetry("press-01", [90.0]))
            await wait_for(lambda: service.seq == p.historian.last_seq(), what="evaluation")
        # committed while rules were not running (as after a crash between commit and evaluation)
        await p.ingest.submit_messages(telemetry("press-02", [91.0]))
    finally:
        p.close()
    plant = make_plant(settings)
    p = plant.platform
    try:
        async with run_alarms(p) as service:
            await wait_for(lambda: service.seq == p.historian.last_seq(), what="replay")
            ops = p.alarm_ops()
            assert ops is not None
            entries = ops.journal(plant.ctx, JournalQuery(rule_id=rule.id))
            assert [(e.action, e.asset_id, e.live) for e in entries] == [
                (Action.ACTIVATE, entries[0].asset_id, True), (Action.ACTIVATE, entries[1].asset_id, False)]
            assert entries[0].asset_id != entries[1].asset_id
            assert all(a.activations == 1 for a in ops.alarms(plant.ctx))
    finally:
        p.close()


async def test_a_template_reaches_a_machine_added_while_running(store: str, pg: tuple[str, str] | None,
                                                                tmp_path: Path) -> None:
    plant = make_plant(settings_for(store, tmp_path, pg, alarm_tick_s=0.2))
    p = plant.platform
    try:
        async with run_alarms(p) as service:
            ops = p.alarm_ops()
            assert ops is not None
            rule = await ops.create_rule(plant.ctx, dict(HOT_RULE))
            bigger = json.loads(json.dumps(PLANT))
            bigger["sites"][0]["areas"][0]["lines"][0]["machines"].append({"name": "press-03", "type": "press"})
            bigger["devices"][0]["assets"].append("plant/hall/line-1/press-03")
            p.plant.apply(plant.ctx, plant_from_obj(bigger))
            p.cache.invalidate()
            await p.ingest.submit_messages(telemetry("press-03", [88.0]))
            await wait_for(lambda: service.seq == p.historian.last_seq(), what="evaluation")
            press3 = p.repo.find_asset(plant.ctx.require_tenant(), ["plant", "hall", "line-1", "press-03"])
            assert press3 is not None
            alarm = ops.alarm(plant.ctx, rule.id, press3.id)
            assert alarm.state is AlarmState.ACTIVE_UNACK and alarm.value == 88.0
    finally:
        p.close()
