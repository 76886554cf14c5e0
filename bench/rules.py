"""The rule engine on one core: sustained points/s, and point-to-visible-alarm latency at a paced rate.

Run with the project's interpreter::

    .venv/bin/python bench/rules.py [--machines 1000] [--rounds 100] [--rate 50000] [--seconds 10] [--no-docs]

1,000 machines x 10 measurements = 10,000 series (one point per series per second of data time),
a machine-state event every ~2 min per machine and a clock tick per second. Two rule sets:

- "1,000 rules": one rule per machine: 600 threshold (deadband, half with an on-delay), 100 rate of
  change, 100 no data, 100 state duration, 100 expressions over two measurements. Most series are
  watched by no rule (the engine drops those points on a dictionary lookup).
- "templates": 10 rules per asset type (6 threshold, 1 each of the others) expanded to every machine:
  10,000 instances, every series watched.

Throughput: everything fed as fast as it goes, in ingest batches of one data-second (10,000 points).
Latency: points paced at ``--rate`` per second for ``--seconds``, committed to the engine every 100 ms
(as an ingest worker commits), each point stamped with its arrival time; an alarm is visible when the
engine returns it. Latency = then minus the arrival of the point that raised it (threshold rules
without on-delay), so it includes the wait for the batch. The figures go to the "Rules and alarms"
section of docs/PERFORMANCE.md (the rest of the file is left as it is).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import re
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shopfloor.domain.alarms.engine import RuleEngine
from shopfloor.domain.alarms.model import Action
from shopfloor.domain.alarms.rules import Rule, rules_from_obj
from shopfloor.domain.alarms.templates import AssetRef
from shopfloor.domain.records import EventRecord, SampleBatch

S = 1_000_000
MEAS = 10
DOCS = Path(__file__).resolve().parent.parent / "docs" / "PERFORMANCE.md"
STATES = ["running", "running", "running", "idle", "planned_stop", "unplanned_stop"]


def plant(machines: int) -> tuple[list[AssetRef], dict[int, tuple[int, str]]]:
    assets = [AssetRef.of_path(m + 1, f"site/area{m // 100}/line{m // 10}/m{m}", "press") for m in range(machines)]
    series = {(m + 1) * MEAS + k: (m + 1, f"m{k}") for m in range(machines) for k in range(MEAS)}
    return assets, series


def per_machine_rules(machines: int) -> list[Rule]:
    out: list[dict[str, Any]] = []
    for i in range(machines):
        kind = i % 10
        base = {"id": i + 1, "name": f"rule{i}", "asset": i + 1, "suppress_when": ["planned_stop"]}
        if kind < 6:
            out.append({**base, "kind": "threshold", "measurement": f"m{kind}", "high": 80.0, "low": 5.0,
                        "deadband": 2.0, "on_delay_s": 0.0 if kind % 2 else 3.0})
        elif kind == 6:
            out.append({**base, "kind": "rate", "measurement": "m6", "window_s": 10, "max_rise_per_s": 3.0})
        elif kind == 7:
            out.append({**base, "kind": "no_data", "measurement": "m7", "silent_s": 30})
        elif kind == 8:
            out.append({**base, "kind": "state_duration", "state": "unplanned_stop", "longer_than_s": 60})
        else:
            out.append({**base, "kind": "expression", "expression": "m8 > 70 and m9 < 40"})
    return rules_from_obj(out)


def template_rules() -> list[Rule]:
    base = {"asset_type": "press", "suppress_when": ["planned_stop"]}
    objs: list[dict[str, Any]] = [
        {**base, "kind": "threshold", "measurement": f"m{k}", "high": 80.0, "low": 5.0, "deadband": 2.0,
         "on_delay_s": 0.0 if k % 2 else 3.0} for k in range(6)]
    objs += [{**base, "kind": "rate", "measurement": "m6", "window_s": 10, "max_rise_per_s": 3.0},
             {**base, "kind": "no_data", "measurement": "m7", "silent_s": 30},
             {**base, "kind": "state_duration", "state": "unplanned_stop", "longer_than_s": 60},
             {**base, "kind": "expression", "expression": "m8 > 70 and m9 < 40"}]
    return rules_from_obj([{**o, "id": i + 1, "name": f"template{i}"} for i, o in enumerate(objs)])


def rounds(machines: int, n: int, seed: int = 7) -> list[tuple[int, SampleBatch, list[EventRecord]]]:
    """n data-seconds: one point per series each, a few state events; about 1 point in 2,000 spikes."""
    rng = random.Random(seed)
    sids = [(m + 1) * MEAS + k for m in range(machines) for k in range(MEAS)]
    level = {sid: rng.uniform(30, 60) for sid in sids}
    out = []
    for r in range(n):
        ts = (1_800_000_000 + r) * S
        b = SampleBatch()
        for sid in sids:
            v = level[sid] + rng.uniform(-1, 1)
            level[sid] = min(75.0, max(10.0, v))
            b.add(sid, ts, 95.0 if rng.random() < 0.0005 else v)
        events = [EventRecord(1, m + 1, ts, "state", s, {"state": s})
                  for m in rng.sample(range(machines), max(1, machines // 120)) for s in [rng.choice(STATES)]]
        out.append((ts, b, events))
    return out


def throughput(name: str, rules: list[Rule], machines: int, data: list[tuple[int, SampleBatch, list[EventRecord]]]
               ) -> dict[str, Any]:
    assets, series = plant(machines)
    engine = RuleEngine(1, rules, assets, series)
    points = sum(len(b) for _, b, _ in data)
    entries = 0
    gc.collect()
    t0 = time.process_time()
    for ts, batch, events in data:
        entries += len(engine.on_events(events).entries)
        entries += len(engine.on_samples(batch).entries)
        entries += len(engine.on_tick(ts).entries)
    cpu = time.process_time() - t0
    return {"set": name, "instances": len(engine), "points": points, "cpu_s": cpu, "pps": points / cpu,
            "entries": entries}


def latency(rules: list[Rule], machines: int, rate: int, seconds: float) -> dict[str, Any]:
    """Pace points at `rate`/s, commit every 100 ms, time from each raising point's arrival to its alarm."""
    assets, series = plant(machines)
    engine = RuleEngine(1, rules, assets, series)
    sids = list(series)
    rng = random.Random(3)
    interval = 0.1
    per_batch = int(rate * interval)
    lat: list[float] = []
    start = time.time() + 0.05
    behind = 0
    i = 0
    while (i + 1) * interval <= seconds:
        t_end = start + (i + 1) * interval
        b = SampleBatch()
        for j in range(per_batch):  # arrival times spread over the interval
            arrival = start + i * interval + interval * j / per_batch
            sid = sids[(i * per_batch + j) % len(sids)]
            b.add(sid, int(arrival * S), 95.0 if rng.random() < 0.01 else rng.uniform(30, 60))
        wait = t_end - time.time()
        if wait > 0:
            time.sleep(wait)
        else:
            behind += 1
        out = engine.on_samples(b)
        engine.on_samples(_clear(b))
        engine.on_tick(int(time.time() * S))
        seen = time.time()
        for e in out.entries:
            if e.action is Action.ACTIVATE and e.value == 95.0:
                lat.append(seen - e.ts_us / S)
        i += 1
    lat.sort()
    return {"alarms": len(lat), "p50_ms": 1000 * statistics.median(lat) if lat else float("nan"),
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan"),
            "max_ms": 1000 * lat[-1] if lat else float("nan"), "late_batches": behind, "batches": i}


def _clear(b: SampleBatch) -> SampleBatch:
    """The same series back to normal right after, so every spike raises a fresh alarm."""
    c = SampleBatch()
    for sid, ts, v in zip(b.series_id, b.ts_us, b.value, strict=True):
        if v == 95.0:
            c.add(sid, ts + 1, 40.0)
    return c


def machine_line() -> str:
    return f"{platform.node()} · {platform.machine()} · {os.cpu_count()} cores · Python {platform.python_version()}"


def update_docs(results: list[dict[str, Any]], lat: dict[str, Any], args: argparse.Namespace, load: float) -> None:
    text = DOCS.read_text() if DOCS.exists() else "# Performance\n"
    head, _, rest = text.partition("\n## Rules and alarms\n")
    m = re.search(r"^## ", rest, flags=re.M)
    after = rest[m.start():] if m else ""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = "\n".join(f"| {r['set']} | {r['instances']:,} | {r['points']:,} | {r['cpu_s']:.2f} | **{r['pps']:,.0f}** "
                     f"| {r['entries']:,} |" for r in results)
    section = f"""
## Rules and alarms

Measured {when} on {machine_line()} (1-minute load average {load:.1f} at the start: other work
shares these cores). Run: `.venv/bin/python bench/rules.py --machines {args.machines} --rounds {args.rounds}
--rate {args.rate} --seconds {args.seconds:g}`. {args.machines:,} machines x {MEAS} measurements =
{args.machines * MEAS:,} series, one point per series per data-second, fed to `RuleEngine` (pure Python,
one core) in ingest batches of one data-second, with a state event per ~2 min per machine and a clock
tick per second. "1,000 rules": one rule per machine (60 % threshold with deadband, half of them with an
on-delay; 10 % each rate of change, no data, state duration, expression over two measurements); most
series are watched by none. "templates": 10 rules per asset type (the same mix) on every machine, so
every series is watched. Points/s are CPU time of the whole stream (target ≥ 200,000).

| rule set | instances | points | CPU s | points/s | journal entries |
|---|---:|---:|---:|---:|---:|
{rows}

Point-to-visible-alarm latency, "1,000 rules", {args.rate:,} points/s paced for {args.seconds:g} s and
committed to the engine every 100 ms (so up to 100 ms of it is the wait for the batch); measured from
the arrival of the point that crossed a threshold without on-delay to the engine returning the
activation: **p99 {lat['p99_ms']:.0f} ms** (target ≤ 1,000 ms), p50 {lat['p50_ms']:.0f} ms, max
{lat['max_ms']:.0f} ms over {lat['alarms']} alarms; {lat['late_batches']} of {lat['batches']} batches
started late. Storage, the bus and notification are not in this figure yet (the platform branch adds them).
"""
    DOCS.write_text(head.rstrip("\n") + "\n" + section + ("\n" + after if after else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--machines", type=int, default=1000, help="machines, 10 series each")
    parser.add_argument("--rounds", type=int, default=100, help="data-seconds fed in the throughput run")
    parser.add_argument("--rate", type=int, default=50_000, help="points/s in the latency run")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the latency run")
    parser.add_argument("--no-docs", action="store_true", help="print only; leave docs/PERFORMANCE.md alone")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    data = rounds(args.machines, args.rounds)
    results = [throughput(f"{args.machines:,} rules", per_machine_rules(args.machines), args.machines, data),
               throughput("templates", template_rules(), args.machines, data)]
    for r in results:
        print(f"{r['set']}: {r['instances']:,} instances, {r['points']:,} points in {r['cpu_s']:.2f} s CPU = "
              f"{r['pps']:,.0f} points/s, {r['entries']:,} journal entries")
    lat = latency(per_machine_rules(args.machines), args.machines, args.rate, args.seconds)
    print(f"latency at {args.rate:,} points/s: p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, "
          f"max {lat['max_ms']:.1f} ms over {lat['alarms']} alarms; {lat['late_batches']}/{lat['batches']} late")
    if not args.no_docs:
        update_docs(results, lat, args, load)


if __name__ == "__main__":
    main()
