"""Simulated history: stepping machines through a past window, and submitting it in batches."""

from __future__ import annotations

import asyncio
import json
import re
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import pytest

from shopfloor.config import Settings
from shopfloor.demo_history import backfill_history
from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.topics import parse_topic
from shopfloor.sim import default_plant
from shopfloor.sim.history import HistoryRun
from shopfloor.sim.machine import SimMachine, plant_profiles
from shopfloor.testing.recording_sink import RecordingSink

NOW_MS = int(datetime.fromisoformat("2026-12-01T12:00:00+00:00").timestamp() * 1000)
HOUR_MS = 3_600_000


def _machines(n: int | None = None) -> list[tuple[str, SimMachine]]:
    profiles = plant_profiles(default_plant())[:n]
    return [(f"acme.plc-{p.name}", SimMachine(p, seed=7)) for p in profiles]


def _ts(payload: bytes) -> list[int]:
    obj = json.loads(payload)
    items = obj if isinstance(obj, list) else [obj]
    return [int(i["ts"]) for i in items]


def test_a_run_steps_every_machine_from_start_and_lands_exactly_on_the_end() -> None:
    machines = _machines(3)
    start = NOW_MS - 2 * HOUR_MS
    run = HistoryRun(machines, "acme", start, step_s=30)
    out = []
    while chunk := run.advance(NOW_MS - 1, max_messages=500):
        assert len(chunk) < 500 + 3 * 5, "a chunk ends at the step that reaches max_messages"
        out.extend(chunk)
    assert run.last_ms is not None and NOW_MS - 30_000 <= run.last_ms < NOW_MS
    out.extend(run.finish(NOW_MS))
    assert run.last_ms == NOW_MS
    assert all(m.sim_s == NOW_MS / 1000 for _, m in machines), "the models stand exactly at the end"
    assert run.finish(NOW_MS) == [], "finishing twice takes no second step"
    assert run.totals.steps == 2 * 120 + 1
    assert run.totals.messages == len(out)
    stamps = [t for m in out for t in _ts(m.payload)]
    assert min(stamps) == start and max(stamps) == NOW_MS
    users = {u for u, _ in machines}
    for m in out:
        addr = parse_topic(m.topic)
        assert addr.tenant == "acme"
        assert m.username == f"acme.plc-{addr.path[3]}" and m.username in users


def test_energy_rises_through_the_history_and_on_into_live_steps() -> None:
    machines = _machines(2)
    run = HistoryRun(machines, "acme", NOW_MS - HOUR_MS, step_s=20)
    out = []
    while chunk := run.advance(NOW_MS, 1000):
        out.extend(chunk)
    out.extend(run.finish(NOW_MS))
    energy: dict[str, list[float]] = defaultdict(list)
    for m in out:
        if m.topic.endswith("/telemetry"):
            values = json.loads(m.payload)["values"]
            if "energy" in values:
                energy[parse_topic(m.topic).path[3]].append(values["energy"])
    assert len(energy) == 2 and all(len(v) == 181 for v in energy.values())
    handover = {name: values[-1] for name, values in energy.items()}
    for _, model in machines:  # the live simulator steps the same objects on, a second at a time
        for i in range(1, 4):
            for msg in model.step(NOW_MS + i * 1000, 1.0):
                if msg.kind.value == "telemetry":
                    energy[model.profile.name].append(msg.payload["values"]["energy"])
    for name, values in energy.items():
        assert len(values) == 184
        assert values == sorted(values), "an energy counter never goes back"
        assert values[0] < handover[name] < values[-1], "it rises through the history and on when live"


def test_a_run_refuses_machines_that_already_ran_and_a_step_that_is_not_positive() -> None:
    machines = _machines(1)
    with pytest.raises(InvalidInput):
        HistoryRun(machines, "acme", NOW_MS, step_s=0)
    machines[0][1].step(NOW_MS, 0.0)
    with pytest.raises(InvalidInput, match="not been stepped"):
        HistoryRun(machines, "acme", NOW_MS - HOUR_MS, step_s=10)


async def test_backfill_submits_the_window_in_batches_and_returns_when_committed() -> None:
    sink = RecordingSink(commit_delay=0.001)
    machines = _machines(4)
    report = await backfill_history(sink, machines, "acme", 3, step_s=30, batch=300, now_ms=lambda: NOW_MS)
    assert sink.messages == sink.arrivals, "everything submitted was committed"
    assert len(sink.messages) == report.messages > 0
    assert sink.calls >= report.messages // 330 and sink.max_in_flight == 1
    assert report.start_ms == NOW_MS - 3 * HOUR_MS and report.end_ms == NOW_MS
    assert report.steps == 3 * 120 + 1
    stamps = [t for m in sink.messages for t in _ts(m.payload)]
    assert min(stamps) == report.start_ms and max(stamps) == NOW_MS
    assert all(m.received_us >= NOW_MS * 1000 for m in sink.messages), "received now, stamped in the past"
    assert {m.device for m in sink.messages} == {u for u, _ in machines}


async def test_backfill_stops_between_batches_when_asked() -> None:
    sink = RecordingSink()
    stop = asyncio.Event()
    calls = 0
    real = sink.submit_messages

    async def submit_then_stop(messages: list) -> None:  # type: ignore[type-arg]
        nonlocal calls
        calls += 1
        if calls == 2:
            stop.set()
        await real(messages)

    sink.submit_messages = submit_then_stop  # type: ignore[method-assign]
    report = await backfill_history(sink, _machines(2), "acme", 24, step_s=30, batch=200,
                                    now_ms=lambda: NOW_MS, stop=stop)
    assert report.end_ms < NOW_MS - 20 * HOUR_MS, "stopped early"
    assert len(sink.messages) == report.messages, "what was stepped was committed"


async def test_backfill_refuses_no_hours() -> None:
    with pytest.raises(InvalidInput):
        await backfill_history(RecordingSink(), _machines(1), "acme", 0, now_ms=lambda: NOW_MS)


SIMULATOR_MD = Path(__file__).resolve().parents[2] / "docs" / "simulator.md"


def test_the_simulator_page_examples_run(monkeypatch: pytest.MonkeyPatch) -> None:
    text = SIMULATOR_MD.read_text()
    section = text[text.index("## The demo's history"):]
    python = re.findall(r"```python\n(.*?)```", section, re.S)
    assert python, "docs/simulator.md shows HistoryRun"
    exec(compile(python[0], "docs/simulator.md", "exec"), {})
    bash = re.findall(r"```bash\n(.*?)```", section, re.S)[0]
    for hours in re.findall(r"SHOPFLOOR_DEMO_HISTORY_HOURS=(\d+)", bash):
        monkeypatch.setenv("SHOPFLOOR_DEMO_HISTORY_HOURS", hours)
        assert Settings().demo_history_hours == int(hours)
    assert Settings.model_fields["demo_history_hours"].default == 48
    assert "default **48**" in section


def test_batched_telemetry_carries_the_same_records_in_fewer_messages() -> None:
    def history(batch: int) -> tuple[list[tuple[str, dict]], int]:  # type: ignore[type-arg]
        run = HistoryRun(_machines(3), "acme", NOW_MS - HOUR_MS, step_s=20, telemetry_batch=batch)
        out = []
        while chunk := run.advance(NOW_MS, 100):
            out.extend(chunk)
        out.extend(run.finish(NOW_MS))
        records = []
        for m in out:
            obj = json.loads(m.payload)
            for r in obj if isinstance(obj, list) else [obj]:
                records.append((m.topic, r))
        assert run.totals.messages == len(out)
        return sorted(records, key=lambda tr: (tr[0], tr[1]["ts"], json.dumps(tr[1]))), len(out)

    single, n_single = history(1)
    batched, n_batched = history(7)
    assert batched == single, "every record, telemetry held back at the end included"
    assert n_batched < n_single * 0.5
    with pytest.raises(InvalidInput):
        HistoryRun(_machines(1), "acme", NOW_MS, step_s=20, telemetry_batch=0)
