"""The simulated machine: deterministic, physically plausible, and every payload is one ingest accepts."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from datetime import datetime
from typing import Any

import pytest

from shopfloor.domain.assets import MachineState, ValueType
from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.payloads import Decoder, MachineInfo, MeasurementSlot
from shopfloor.domain.plant import AssetTypeSpec, MachineSpec, PlantSpec
from shopfloor.domain.topics import Kind
from shopfloor.sim import default_plant, machine
from shopfloor.sim.machine import MachineProfile, Message, SimMachine, build_profile, plant_profiles

SHANGHAI_0605 = int(datetime.fromisoformat("2024-06-03T06:05:00+08:00").timestamp() * 1000)


def _infos(plant: PlantSpec) -> dict[str, MachineInfo]:
    """A MachineInfo per asset type, as the registry would build it from the plant file."""
    ids = itertools.count(1)
    return {
        t.name: MachineInfo(
            tenant_id=1, asset_id=next(ids),
            measurements={m.name: MeasurementSlot(next(ids), ValueType(m.type)) for m in t.measurements},
            events=frozenset(t.events),
        )
        for t in plant.asset_types
    }


def _run(m: SimMachine, start_ms: int, steps: int, dt: float) -> list[tuple[int, Message]]:
    out: list[tuple[int, Message]] = []
    for i in range(steps):
        ts = start_ms + int(i * dt * 1000)
        out.extend((ts, msg) for msg in m.step(ts, dt))
    return out


def _records(payload: Any) -> list[dict[str, Any]]:
    return payload if isinstance(payload, list) else [payload]


@pytest.fixture(scope="module")
def profiles() -> list[MachineProfile]:
    return plant_profiles(default_plant())


@pytest.fixture(scope="module")
def day(profiles: list[MachineProfile]) -> dict[str, list[tuple[int, Message]]]:
    """A simulated day of every machine of the default plant, 30 s steps."""
    return {p.name: _run(SimMachine(p, seed=7), SHANGHAI_0605, 24 * 120, 30.0) for p in profiles}


def test_every_payload_decodes_without_dead_letters(profiles: list[MachineProfile],
                                                    day: dict[str, list[tuple[int, Message]]]) -> None:
    infos = _infos(default_plant())
    decoder = Decoder()
    kinds: Counter[Kind] = Counter()
    for p in profiles:
        assert p.type_name is not None
        info = infos[p.type_name]
        hour = _run(SimMachine(p, seed=3), SHANGHAI_0605, 3600, 1.0)
        for ts, msg in day[p.name] + hour:
            data = json.dumps(msg.payload).encode()
            batch = decoder.decode(msg.kind, data, info, device="plc", topic="t", now_us=ts * 1000)
            assert batch.dead_letters == [], (p.name, msg)
            assert len(batch.samples) + len(batch.events) > 0
            kinds[msg.kind] += 1
    assert {Kind.TELEMETRY, Kind.STATE, Kind.COUNT, Kind.EVENT} <= set(kinds)


def test_counts_follow_the_ideal_cycle_time(profiles: list[MachineProfile]) -> None:
    for p in profiles:
        m = SimMachine(p, seed=11)
        msgs = _run(m, SHANGHAI_0605, 3600, 1.0)  # 06:05-07:05: no break in this hour
        good = sum(r["good"] for _, msg in msgs if msg.kind is Kind.COUNT for r in _records(msg.payload))
        reject = sum(r["reject"] for _, msg in msgs if msg.kind is Kind.COUNT for r in _records(msg.payload))
        assert (good, reject) == (m.stats.good, m.stats.reject)
        running = m.stats.state_seconds.get(MachineState.RUNNING, 0.0)
        assert running > 1800, p.name
        ideal = running / p.ideal_cycle_time_s
        assert 0.8 * ideal - 1 <= good + reject <= ideal + 1, (p.name, good + reject, ideal)
        assert reject < 0.1 * (good + reject) + 2


def test_energy_counter_is_monotonic_and_the_integral_of_power(profiles: list[MachineProfile]) -> None:
    for p in profiles[:3]:
        dt = 1.0
        msgs = _run(SimMachine(p, seed=5), SHANGHAI_0605, 3 * 3600, dt)
        tele = [msg.payload["values"] for _, msg in msgs if msg.kind is Kind.TELEMETRY]
        assert len(tele) == 3 * 3600
        for prev, cur in itertools.pairwise(tele):
            assert cur["energy"] >= prev["energy"]
            assert cur["energy"] - prev["energy"] == pytest.approx(cur["power"] * dt / 3600, abs=2e-6)
        total = sum(v["power"] for v in tele[1:]) * dt / 3600
        assert tele[-1]["energy"] - tele[0]["energy"] == pytest.approx(total, abs=1e-4)
        assert all(0 <= v["power"] <= 1.2 * p.rated_power_kw for v in tele)


def test_the_day_shows_every_state_and_plausible_reasons(day: dict[str, list[tuple[int, Message]]]) -> None:
    seen: Counter[tuple[str, str | None]] = Counter()
    for msgs in day.values():
        for _, msg in msgs:
            if msg.kind is Kind.STATE:
                seen[(msg.payload["state"], msg.payload.get("reason"))] += 1
    assert {s for s, _ in seen} == {s.value for s in MachineState}
    unplanned = {r for s, r in seen if s == MachineState.UNPLANNED_STOP}
    assert {"jam", "tool_break"} <= unplanned
    assert unplanned <= {"jam", "tool_break", "overheat", "sensor_fault"}
    assert {r for s, r in seen if s == MachineState.PLANNED_STOP} == {"break"}
    assert {r for s, r in seen if s == MachineState.SETUP} == {"changeover"}


def test_breaks_are_planned_stops_in_site_local_time(profiles: list[MachineProfile]) -> None:
    m = SimMachine(profiles[0], seed=1)
    ten = int(datetime.fromisoformat("2024-06-03T10:00:00+08:00").timestamp() * 1000)
    msgs = _run(m, ten - 60_000, 120, 1.0)
    states = [(ts, msg.payload) for ts, msg in msgs if msg.kind is Kind.STATE]
    assert states[-1][1] == {"ts": ten, "state": "planned_stop", "reason": "break"}
    m.step(ten + 31 * 60_000, 1830.0)
    assert m.state != MachineState.PLANNED_STOP


def test_shift_changes_clock_operators_out_and_in(profiles: list[MachineProfile],
                                                  day: dict[str, list[tuple[int, Message]]]) -> None:
    for p in profiles:
        events = [r for _, msg in day[p.name] if msg.kind is Kind.EVENT for r in _records(msg.payload)]
        ins = [e for e in events if e["type"] == "clock_in"]
        outs = [e for e in events if e["type"] == "clock_out"]
        assert len(ins) == 4 * p.labour_per_shift  # the shift at the start, then 14:00, 22:00, 06:00
        assert len(outs) == 3 * p.labour_per_shift
        for e in outs:
            local_s = (e["ts"] // 1000 + 8 * 3600) % 86_400  # Asia/Shanghai is UTC+8
            assert local_s // 3600 in (6, 14, 22) and local_s % 3600 < 30
        first_crew = {e["operator"] for e in ins[: p.labour_per_shift]}
        assert {e["operator"] for e in outs[: p.labour_per_shift]} == first_crew


def test_work_orders_alternate_with_setups(profiles: list[MachineProfile],
                                           day: dict[str, list[tuple[int, Message]]]) -> None:
    for p in profiles:
        msgs = day[p.name]
        events = [r for _, msg in msgs if msg.kind is Kind.EVENT for r in _records(msg.payload)
                  if r["type"].startswith("work_order")]
        assert [e["type"] for e in events] == ["work_order_start", "work_order_end"] * (len(events) // 2) + \
            ["work_order_start"] * (len(events) % 2)
        assert len(events) >= 3, p.name
        ids = [e["order_id"] for e in events if e["type"] == "work_order_start"]
        assert len(set(ids)) == len(ids)
        assert all(e["product"].startswith("KFR-") for e in events)
        for end in (e for e in events if e["type"] == "work_order_end"):
            states = [msg.payload for ts, msg in msgs if msg.kind is Kind.STATE and ts == end["ts"]]
            assert states and states[0]["state"] in ("setup", "planned_stop")


def test_temperature_has_inertia_and_vibration_grows_with_wear(profiles: list[MachineProfile],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine, "_MEAN_S", dict.fromkeys(machine._MEAN_S, 1e15))
    m = SimMachine(profiles[0], seed=2)
    msgs = _run(m, SHANGHAI_0605, 10 * 3600, 1.0)
    temps, running_vib = [], []
    state = None
    for _, msg in msgs:
        if msg.kind is Kind.STATE:
            state = msg.payload["state"]
        elif msg.kind is Kind.TELEMETRY:
            temps.append(msg.payload["values"]["temperature"])
            if state == "running":
                running_vib.append(msg.payload["values"]["vibration"])
    assert max(abs(b - a) for a, b in itertools.pairwise(temps)) < 1.0
    first, last = running_vib[:1800], running_vib[-1800:]
    assert sum(last) / len(last) > 1.4 * sum(first) / len(first)


def test_same_seed_same_messages_other_seed_other_messages(profiles: list[MachineProfile]) -> None:
    def run(seed: int) -> list[tuple[int, Message]]:
        return _run(SimMachine(profiles[3], seed=seed), SHANGHAI_0605, 600, 1.0)

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_large_steps_still_produce_valid_messages(profiles: list[MachineProfile]) -> None:
    m = SimMachine(profiles[1], seed=4)
    msgs = _run(m, SHANGHAI_0605, 48, 1800.0)  # a day in half-hour steps (speed 1800)
    assert sum(1 for _, msg in msgs if msg.kind is Kind.TELEMETRY) == 48
    assert m.stats.good > 0
    with pytest.raises(ValueError):
        m.step(SHANGHAI_0605, -1.0)


def test_profile_validation() -> None:
    path = ("s", "a", "l", "m")
    t = AssetTypeSpec(name="t", attributes={"ideal_cycle_time_s": 10, "rated_power_kw": 5})
    assert build_profile(path, MachineSpec(name="m", attributes={"rated_power_kw": 7}), t).rated_power_kw == 7
    with pytest.raises(InvalidInput, match="ideal_cycle_time_s"):
        build_profile(path, MachineSpec(name="m", attributes={"ideal_cycle_time_s": 0}), t)
    with pytest.raises(InvalidInput, match="time zone"):
        build_profile(path, MachineSpec(name="m"), t, "Mars/Olympus")
    untyped = SimMachine(build_profile(path, MachineSpec(name="m"), None), seed=0)
    assert [msg.kind for msg in untyped.step(SHANGHAI_0605, 1.0)] == [Kind.EVENT, Kind.STATE]
    bad = default_plant()
    bad.sites[0].areas[0].lines[0].machines[0].type = "nope"
    with pytest.raises(InvalidInput, match="unknown asset type"):
        plant_profiles(bad)
