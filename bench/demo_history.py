"""The demo's first-start history: how long back-filling it takes, by history step.

Run with the project's interpreter::

    .venv/bin/python bench/demo_history.py [--hours 48] [--runs 20:1,10:15,20:15,30:15] [--no-write]

For each run (history step in simulated seconds : telemetry records per message): a fresh embedded platform (DuckDB in a temporary folder) with the demo tenant and
the default plant (12 machines), then exactly what ``shopfloor demo`` does on its first start:
``backfill_history`` of ``--hours`` through the ingest service, with the demo's batch size. Measured:
wall seconds and CPU seconds of the whole process (stepping the models, JSON encoding, ingest's
decoding and validation, DuckDB commits), and, separately, CPU seconds of stepping and encoding
alone (``HistoryRun`` without ingest). Figures go to the "Demo history" section of
docs/PERFORMANCE.md (the rest of the file is left as it is).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from ingest_embedded import write_section  # noqa: E402
from shopfloor.bootstrap import build_platform  # noqa: E402
from shopfloor.config import Settings  # noqa: E402
from shopfloor.demo import DEMO_TENANT, _demo_token, load_plant  # noqa: E402
from shopfloor.demo_history import BATCH_MESSAGES, STEP_S, TELEMETRY_BATCH, backfill_history  # noqa: E402
from shopfloor.sim.history import HistoryRun  # noqa: E402
from shopfloor.sim.publisher import Simulator  # noqa: E402


def stepping_only(hours: float, step_s: float, telemetry_batch: int) -> float:
    """CPU seconds to step and encode the history, without ingest."""
    sim = Simulator(load_plant(None), DEMO_TENANT, {}, "127.0.0.1", 1)
    end = int(time.time() * 1000)
    run = HistoryRun(sim.publishers(), DEMO_TENANT, end - int(hours * 3_600_000), step_s,
                     telemetry_batch=telemetry_batch)
    c0 = time.process_time()
    while run.advance(end, BATCH_MESSAGES):
        pass
    run.finish(end)
    return time.process_time() - c0


async def one(hours: float, step_s: float, telemetry_batch: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        p = build_platform(Settings(data_dir=Path(tmp), mqtt_port=1, http_port=1))
        try:
            ctx = p.auth.context_for(_demo_token(p))
            spec = load_plant(None)
            p.plant.apply(ctx, spec)
            sim = Simulator(spec, DEMO_TENANT, {}, "127.0.0.1", 1)
            tid = ctx.require_tenant()
            c0, t0 = time.process_time(), time.perf_counter()
            report = await backfill_history(p.ingest, sim.publishers(), DEMO_TENANT, hours, step_s=step_s,
                                            telemetry_batch=telemetry_batch, rejected=lambda: p.stats.tenant(tid).rejected)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            await p.ingest.drain()
        finally:
            p.close()
    return {"step": step_s, "batch": telemetry_batch, "machines": report.machines, "messages": report.messages, "points": report.points,
            "rejected": report.rejected, "wall": wall, "cpu": cpu, "stepping": stepping_only(hours, step_s, telemetry_batch)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=48.0, help="hours of history (the demo's default: 48)")
    ap.add_argument("--runs", default="20:1,10:15,20:15,30:15",
                    help="runs to compare, each STEP:BATCH (history step in simulated seconds : telemetry "
                         "records per message)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/PERFORMANCE.md alone")
    args = ap.parse_args()
    runs = [(float(a), int(b)) for a, _, b in (r.partition(":") for r in args.runs.split(","))]
    rows = [asyncio.run(one(args.hours, step, batch)) for step, batch in runs]
    base = next((r for r in rows if (r["step"], r["batch"]) == (STEP_S, TELEMETRY_BATCH)), rows[0])
    machine = f"{platform.node()} · {platform.machine()} · {os.cpu_count()} cores · Python {platform.python_version()}"
    lines = ["## Demo history", "",
             f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine}; load average "
             f"{os.getloadavg()[0]:.1f} at the end (a shared box: wall time is what the demo's user waits, "
             "CPU time is the cost; compare within this run).",
             f"Run: `.venv/bin/python bench/demo_history.py --hours {args.hours:g}`. The first start of "
             f"`shopfloor demo` back-fills {args.hours:g} h for the default plant's 12 machines through ingest "
             f"(batches of {BATCH_MESSAGES:,} messages); the demo uses a {STEP_S:g} s step and "
             f"{TELEMETRY_BATCH} telemetry records per message.", "",
             "| step | records/msg | messages | points | rejected | wall s | CPU s | of which stepping + JSON | "
             "CPU vs the demo's |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['step']:g} s | {r['batch']:.0f} | {r['messages']:,.0f} | {r['points']:,.0f} | {r['rejected']:,.0f} | "
                     f"{r['wall']:.1f} | {r['cpu']:.1f} | {r['stepping']:.1f} | {r['cpu'] / base['cpu']:.2f}x |")
    section = "\n".join(lines) + "\n"
    print(section)
    if not args.no_write:
        write_section(ROOT / "docs" / "PERFORMANCE.md", "Demo history", section)


if __name__ == "__main__":
    main()
