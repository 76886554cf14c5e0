"""A detector's decisions raise alarms in the running platform: a model trained from stored history
scores new data into a series, and a `learned` rule on that series raises (and journals) an alarm."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from shopfloor.bootstrap import run_alarms
from shopfloor.domain.alarms.model import AlarmState
from shopfloor.ports.alarms import AlarmQuery
from shopfloor.services.registry import PLATFORM
from tests.integration.alarm_helpers import make_plant, settings_for, telemetry, wait_for

pytestmark = pytest.mark.integration
S = 1_000_000


async def test_an_anomaly_score_above_its_learned_threshold_raises_an_alarm(tmp_path: Path) -> None:
    plant = make_plant(settings_for("duckdb", tmp_path, None))
    p, ctx = plant.platform, plant.ctx
    try:
        async with run_alarms(p):
            ops = p.alarm_ops()
            assert ops is not None and p.analytics is not None
            press = next(a for a in p.registry.list_assets(ctx) if a.name == "press-01")
            now_ms = int(time.time() * 1000)
            rng = np.random.default_rng(7)
            normal = [float(v) for v in 60 + rng.normal(0, 0.5, 600)]
            await p.ingest.submit_messages(telemetry("press-01", normal, start_ms=now_ms - 1_200_000, live=False))

            p.analytics.configure(ctx, "oil-watch", asset_type="press", inputs=["temperature"], kind="zscore")
            trained = p.analytics.train(ctx, "oil-watch", (now_ms - 1_200_000) * 1000, (now_ms - 600_000) * 1000,
                                        [press.id])
            assert trained.trained is not None
            threshold = float(trained.trained.summary["threshold"])
            await ops.apply_rules(ctx, [{"name": "oil anomaly", "kind": "learned", "asset_type": "press",
                                         "score": "temperature_anomaly", "above": threshold, "priority": "high"}])

            # live data: normal, then the oil runs hot
            odd = normal[:20] + [v + 15 for v in normal[20:40]]
            await p.ingest.submit_messages(telemetry("press-01", odd, start_ms=now_ms - 40_000))
            report = await p.analytics.score(ctx, "oil-watch", (now_ms - 40_000) * 1000, asset_ids=[press.id])
            assert report.written == 40

            def raised() -> list:
                return [a for a in ops.alarms(ctx, AlarmQuery(asset_ids=[press.id]))
                        if a.state is AlarmState.ACTIVE_UNACK]

            alarms = await wait_for(raised, within_s=15, what="the learned rule's alarm")
            assert len(alarms) == 1 and alarms[0].value is not None and alarms[0].value > threshold
            journal = ops.journal(ctx, None)
            activations = [e for e in journal if e.action.value == "activate" and e.asset_id == press.id]
            assert len(activations) == 1
            assert activations[0].ts_us >= (now_ms - 20_000) * 1000  # raised by the hot part, not before it
            assert p.registry.tenant(PLATFORM, "acme").id == alarms[0].tenant_id
    finally:
        p.close()
