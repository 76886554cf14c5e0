"""The demo's first start: back-fill the last hours of simulated history through ingest.

On an empty store (no event yet for the demo tenant) the simulated machines are stepped from
``now - hours`` to now at a coarse step (``sim.history``), and what they would have published goes
through the platform's normal ingest path (``MessageSink.submit_messages``, with each machine's
device username, so the device's prefix, the registry, validation and dead letters apply as for
MQTT), in batches, with a progress bar. The timestamps lie in the past, so the data is back-fill,
not live, for everything downstream. The same model objects then go live in the ``Simulator``:
energy counters keep rising, states and work orders carry on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from shopfloor.domain.errors import InvalidInput
from shopfloor.ports.ingest import MessageSink, RawMessage
from shopfloor.ports.store import EventLog
from shopfloor.sim.history import HistoryMessage, HistoryRun
from shopfloor.sim.machine import SimMachine

STEP_S = 20.0  # simulated seconds per history step (see docs/PERFORMANCE.md, "Demo history")
TELEMETRY_BATCH = 15  # telemetry records per message (5 minutes of a machine's telemetry at STEP_S)
BATCH_MESSAGES = 4000  # messages per submit_messages call


@dataclass(frozen=True, slots=True)
class HistoryReport:
    hours: float
    machines: int
    start_ms: int
    end_ms: int
    steps: int
    messages: int
    points: int
    rejected: int  # values or messages ingest refused (dead letters), from the ingest stats
    seconds: float


def store_is_empty(events: EventLog, tenant_id: int) -> bool:
    """True when the tenant has no event yet: the demo's first start (the simulator emits events,
    shift clock-ins and work-order starts, on its very first step)."""
    return not events.events(tenant_id, limit=1)


async def backfill_history(sink: MessageSink, machines: Sequence[tuple[str, SimMachine]], tenant: str,
                           hours: float, *, console: Console | None = None, step_s: float = STEP_S,
                           telemetry_batch: int = TELEMETRY_BATCH, batch: int = BATCH_MESSAGES,
                           now_ms: Callable[[], int] | None = None, rejected: Callable[[], int] | None = None,
                           stop: asyncio.Event | None = None) -> HistoryReport:
    """Step ``machines`` (fresh ``(username, model)`` pairs) through the last ``hours`` up to now and
    submit what they publish to ``sink``; return when everything is committed. With a ``console``,
    a progress bar while it runs and a summary line at the end.

    The run chases the wall clock: it ends at the moment it catches up, with one last short step that
    lands the machines exactly at that moment, ready to go live. ``stop`` ends it early (what was
    submitted is committed first).
    """
    if not hours > 0:
        raise InvalidInput("history hours must be positive")
    clock = now_ms or (lambda: int(time.time() * 1000))
    count_rejected = rejected or (lambda: 0)
    rejected_before = count_rejected()
    t0 = time.perf_counter()
    start_ms = clock() - int(hours * 3_600_000)
    run = HistoryRun(machines, tenant, start_ms, step_s, telemetry_batch=telemetry_batch)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                        TextColumn("{task.fields[messages]:>9,} messages"), TimeRemainingColumn(),
                        console=console, transient=True, disable=console is None)
    in_flight: asyncio.Task[None] | None = None
    with progress:
        task = progress.add_task(f"back-filling {hours:g} h of history", total=clock() - start_ms, messages=0)
        done = False
        while not done and not (stop is not None and stop.is_set()):
            chunk = await asyncio.to_thread(run.advance, clock(), batch)
            if not chunk:  # caught up: land exactly on now
                chunk, done = run.finish(clock()), True
            if in_flight is not None:  # one batch commits while the next one is stepped
                await in_flight
                in_flight = None
            if chunk:
                in_flight = asyncio.create_task(sink.submit_messages(_raw(chunk)))
            progress.update(task, total=max(clock() - start_ms, 1), completed=(run.last_ms or start_ms) - start_ms,
                            messages=run.totals.messages)
        if in_flight is not None:
            await in_flight
    end_ms = run.last_ms or start_ms
    seconds = time.perf_counter() - t0
    report = HistoryReport(hours, len(machines), start_ms, end_ms, run.totals.steps, run.totals.messages,
                           run.totals.points, count_rejected() - rejected_before, seconds)
    if console is not None:
        console.print(f"history: {hours:g} h back-filled for {report.machines} machines "
                      f"({report.messages:,} messages, {report.points:,} points, {report.rejected:,} rejected) "
                      f"in {seconds:.1f} s")
    return report


def _raw(chunk: list[HistoryMessage]) -> list[RawMessage]:
    received = time.time_ns() // 1000
    return [RawMessage(m.username, m.topic, m.payload, received) for m in chunk]
