"""The Sparkplug host path alone: 50-metric DDATA by alias through ``SparkplugHost`` into a counting sink.

Run with the project's interpreter: ``.venv/bin/python bench/sparkplug_host.py [--messages N] [--rounds R]``.
No broker and no store: the plant of ``bench/ingest_setup.py`` (10 Sparkplug devices of one edge
node, 50 Double measurements each) in the in-memory registry, the real ``SparkplugDirectoryService``
over it, and ``SparkplugHost.submit_messages`` fed 2,000 messages at a time (the worker's batch),
each batch "committed" by a sink that only counts. In the same run, round after round:

1. bare: protobuf decode, alias → series id, three columns (``bench/ingest_procs.py``'s bare
   pipeline without the broker and DuckDB): the ceiling of any Sparkplug ingest in Python;
2. JSON: the JSON path's per-message work for the same points (50-point telemetry through
   ``domain.payloads.Decoder``, the machine already resolved), for comparison;
3. host: the Sparkplug host, everything it checks (topic, directory, seq, aliases, types, limits),
   its data messages read from the wire bytes by the compiled reader (``host_wire``, compiled
   before the clock starts);
4. protobuf: the same host without the compiled reader (``wire_reader=False``): the fast path
   reads the parsed protobuf message's objects;
5. general: the same host with its NDATA/DDATA fast path switched off (``fast_data=False``): every
   message decoded into the model and through the state machine.

Each figure is points/s, the best of ``--rounds``; the ratios are what to compare across runs.
Writes the "Sparkplug host" section of docs/PERFORMANCE.md (not with ``--no-doc``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import ingest_setup as setup
from perfdoc import write_section
from shopfloor.connectors.sparkplug import sparkplug_b_pb2 as pb
from shopfloor.connectors.sparkplug.host import SparkplugHost
from shopfloor.connectors.sparkplug.host_wire import WIRE
from shopfloor.domain.payloads import Decoder
from shopfloor.domain.records import IngestBatch
from shopfloor.domain.topics import Kind
from shopfloor.ports.ingest import RawMessage
from shopfloor.services.cache import RegistryCache
from shopfloor.services.clock import SystemClock
from shopfloor.services.registry import RegistryService
from shopfloor.services.sparkplug_directory import SparkplugDirectoryService
from shopfloor.testing.fakes import InMemoryRegistry

ROOT = Path(__file__).resolve().parents[1]
BATCH = 2000  # messages per submit_messages, as the Sparkplug worker's batch_max in bench/ingest.py
POINTS = 50


class CountingSink:
    """A ``BatchSink`` that commits nothing and counts what it would."""

    def __init__(self) -> None:
        self.samples = 0
        self.dead = 0
        self.commits = 0

    async def submit(self, batch: IngestBatch) -> int:
        self.samples += len(batch.samples)
        self.dead += len(batch.dead_letters)
        self.commits += 1
        return self.commits


class Bench:
    def __init__(self, messages: int) -> None:
        self.clock = SystemClock()
        self.repo = InMemoryRegistry()
        self.plant = setup.make_plant(RegistryService(self.repo), self.repo)
        self.cache = RegistryCache(self.repo, self.clock)
        self.directory = SparkplugDirectoryService(self.repo, self.cache, self.clock)
        self.count = messages
        base = int(time.time() * 1000) - setup.DATA_SPAN_MS - 60_000
        births, data = setup.spb_messages("gw", messages, base)
        now = time.time_ns() // 1000
        self.births = [RawMessage("", t, p, now) for t, p in births]
        self.data = [RawMessage("", t, p, now) for t, p in data]
        self.json = [(t, p) for t, p in setup.json_messages("json50", messages, base)]

    def bare(self) -> float:
        """protobuf → alias → series id → columns, nothing checked."""
        series = self.plant.series
        by_alias = {k + 1: f"v{k}" for k in range(POINTS)}
        t0 = time.perf_counter()
        sid: list[int] = []
        ts: list[int] = []
        val: list[float] = []
        for msg in self.data:
            parts = msg.topic.split("/")
            machine = f"m{parts[-1][1:]}"
            p = pb.Payload.FromString(msg.payload)
            for m in p.metrics:
                sid.append(series[(machine, by_alias[m.alias])])
                ts.append(m.timestamp * 1000)
                val.append(m.double_value)
        elapsed = time.perf_counter() - t0
        assert len(sid) == self.count * POINTS
        return len(sid) / elapsed

    def json_path(self) -> float:
        """The JSON ingest's per-message validation (routing memoised, as the service does)."""
        decoder = Decoder()
        tid = self.repo.list_tenants()[0].id
        machines = {}
        for i in range(setup.MACHINES):
            info = self.cache.machine(tid, (*setup.LINE, f"m{i}"))
            assert info is not None
            machines[setup.machine_topic(i)] = info
        now = time.time_ns() // 1000
        out = IngestBatch()
        t0 = time.perf_counter()
        for topic, payload in self.json:
            decoder.decode(Kind.TELEMETRY, payload, machines[topic], device=self.plant.device, topic=topic,
                           now_us=now, out=out)
        elapsed = time.perf_counter() - t0
        assert len(out.samples) == self.count * POINTS and not out.dead_letters, len(out.dead_letters)
        return len(out.samples) / elapsed

    def host(self, fast: bool = True, wire: bool = True) -> float:
        sink = CountingSink()
        host = SparkplugHost(self.directory, sink, fast_data=fast, wire_reader=wire)

        async def run() -> float:
            await host.submit_messages(self.births)
            before = sink.samples
            t0 = time.perf_counter()
            for i in range(0, len(self.data), BATCH):
                await host.submit_messages(self.data[i:i + BATCH])
            elapsed = time.perf_counter() - t0
            stored = sink.samples - before
            assert stored == self.count * POINTS and not sink.dead, (stored, sink.dead)
            return stored / elapsed

        return asyncio.run(run())


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--messages", type=int, default=6000, help="50-metric DDATA messages per round")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of each case; the best counts")
    ap.add_argument("--profile", action="store_true", help="cProfile one host round, print the top and exit")
    ap.add_argument("--no-doc", action="store_true", help="print only; leave docs/PERFORMANCE.md alone")
    args = ap.parse_args()
    bench = Bench(args.messages)
    WIRE.start(wait=True)  # compiled (or loaded from numba's cache) before any clock starts
    if args.profile:
        import cProfile
        import pstats

        bench.host()  # warm the directory and caches
        prof = cProfile.Profile()
        prof.runcall(bench.host)
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        return
    cases: dict[str, Callable[[], float]] = {"bare": bench.bare, "json": bench.json_path, "host": bench.host,
                                             "protobuf": lambda: bench.host(wire=False),
                                             "general": lambda: bench.host(fast=False)}
    best = dict.fromkeys(cases, 0.0)
    load0 = os.getloadavg()[0]
    for _ in range(args.rounds):
        for name, case in cases.items():
            best[name] = max(best[name], case())
    load1 = os.getloadavg()[0]
    for name, rate in best.items():
        print(f"{name:8} {rate:12,.0f} points/s  {rate / best['bare']:.2f} of bare")
    print(f"load average {load0:.2f} → {load1:.2f}")
    if args.no_doc:
        return
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    where = f"{platform.node()} · {platform.machine()} · {os.cpu_count()} cores · Python {sys.version.split()[0]}"
    section = "\n".join([
        "## Sparkplug host",
        "",
        f"Measured {stamp} on {where}, load average {load0:.1f} → {load1:.1f}.",
        f"Run: `.venv/bin/python bench/sparkplug_host.py` ({args.messages:,} 50-metric DDATA by alias, "
        f"{BATCH:,} per batch, best of {args.rounds}). No broker, no store: the host's own cost per point.",
        "",
        "| path | points/s | of bare |",
        "|---|---:|---:|",
        f"| bare: protobuf decode, alias → series id, columns | {best['bare']:,.0f} | 1.00 |",
        f"| JSON path: 50-point telemetry through the ingest decoder | {best['json']:,.0f} | "
        f"{best['json'] / best['bare']:.2f} |",
        f"| Sparkplug host: topic, directory, seq, aliases, types, limits (compiled wire reader) | "
        f"{best['host']:,.0f} | {best['host'] / best['bare']:.2f} |",
        f"| the same host without the compiled reader (`wire_reader=False`) | {best['protobuf']:,.0f} | "
        f"{best['protobuf'] / best['bare']:.2f} |",
        f"| the same host, general path only (`fast_data=False`) | {best['general']:,.0f} | "
        f"{best['general'] / best['bare']:.2f} |",
        "",
    ])
    write_section(ROOT / "docs" / "PERFORMANCE.md", "Sparkplug host", section)


if __name__ == "__main__":
    main()
