"""The crash test: a process running rules is killed (SIGKILL) between the commit of a hot reading
and its evaluation; after a restart the alarm is raised exactly once, and a second restart does
not raise it again."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from shopfloor.bootstrap import run_alarms
from shopfloor.domain.alarms.model import Action, AlarmState
from tests.integration.alarm_helpers import make_plant, settings_for, wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("store", ["duckdb", "postgres"])
async def test_killed_between_commit_and_evaluation(store: str, tmp_path: Path,
                                                    request: pytest.FixtureRequest) -> None:
    args = [store, str(tmp_path)]
    pg: tuple[str, str] | None = None
    if store == "postgres":
        pg = request.getfixturevalue("pg_schema")
        args += list(pg)
    proc = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "tests.integration.alarm_crash_proc", *args], cwd=ROOT,
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    assert proc.stdout.startswith("evaluated ") and "still alive" not in proc.stdout
    evaluated = int(proc.stdout.split()[1])

    for restart in range(2):
        plant = make_plant(settings_for(store, tmp_path, pg, alarm_tick_s=0.2))
        p = plant.platform
        try:
            assert p.historian.last_seq() > evaluated  # the hot reading was committed before the kill
            last = p.historian.last_seq()
            async with run_alarms(p) as service:
                await wait_for(lambda: service.seq == last, what="replay")  # noqa: B023 - awaited here
                ops = p.alarm_ops()
                assert ops is not None
                alarms = ops.alarms(plant.ctx)
                assert [(a.state, a.activations, a.value) for a in alarms] == [(AlarmState.ACTIVE_UNACK, 1, 95.0)]
                journal = ops.journal(plant.ctx)
                assert [(e.action, e.value, e.live) for e in journal] == [(Action.ACTIVATE, 95.0, False)], restart
        finally:
            p.close()
