"""Ingest end to end: a publisher process → broker → decode → committed in the store, against ceilings.

Run with the project's interpreter: ``.venv/bin/python bench/ingest.py`` (under 10 minutes; needs the
``mosquitto`` binary and PostgreSQL, ``--dsn`` or ``SHOPFLOOR_TEST_PG``). ``--quick`` is a smoke run
with a few hundred messages per figure (the test suite runs it; its figures mean nothing).

Payloads: 1-point JSON messages, 50-point JSON messages (one record, 50 values) and 50-metric
Sparkplug B DDATA (by alias), QoS 1, from a paho publisher in its own process, round robin over 100
machines (Sparkplug: 10 devices of one edge node). A figure is the points committed divided by the
time from the first PUBLISH to the moment the store had committed the last one.

Modes: embedded (our amqtt broker + DuckDB in one process; its PUBACK follows the commit); Mosquitto
+ one ingest process + DuckDB; Mosquitto + PostgreSQL with 1 and 2 ingest worker processes (Sparkplug
is one worker: a group's messages go to one host). Ceilings from the same run: the embedded broker
with a sink that only counts; Mosquitto with a bare paho subscriber that only counts; a bare paho →
msgspec (protobuf for Sparkplug) → Arrow → DuckDB pipeline with none of our checks; bare DuckDB
Arrow append and bare PostgreSQL binary COPY of the same rows, against the historians' ``commit``.

Each figure also records where the CPU went while it was clocked (``ingest_cpu.py``, from /proc):
the machine's busy share and the CPU per message of the broker, the receiving side, PostgreSQL, the
publisher and the rest; the section shows it in a second table.

Writes the "Ingest end to end" section of docs/PERFORMANCE.md (``--doc`` another file, ``--no-doc`` none).
``--store duckdb`` runs only the DuckDB modes, their ceilings and the DuckDB store-only rows; the
section then keeps the PostgreSQL rows it had, marked with the date of the run that measured them.
The store-only rows, for each store: the historian's commit (its rollups follow behind it, see
``storage/duckdb/rollup_follower.py`` and ``storage/postgres/pg_follower.py``), and the commit plus
the rollup follower's catch-ups in one thread (``bench/store_bench.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ingest_cpu as cpu
import ingest_procs as procs
import ingest_setup as setup
from shopfloor.bootstrap import build_platform, embedded_broker
from shopfloor.config import Settings
from shopfloor.connectors.mqtt.broker_process import BrokerProcess
from shopfloor.connectors.mqtt.embedded_broker import EmbeddedBroker
from shopfloor.connectors.sparkplug.host_wire import WIRE
from shopfloor.ports.ingest import RawMessage
from shopfloor.services.devices import DeviceAccessService

ROOT = Path(__file__).resolve().parents[1]
SECTION = "Ingest end to end"
MP = multiprocessing.get_context("spawn")


@dataclass
class Row:
    mode: str
    store: str
    payload: str
    points_s: float
    ceiling: str | None = None  # key of the ceiling row it is judged against
    partial: bool = False
    note: str = ""
    cpu: cpu.CpuSplit | None = None  # where the CPU went in the clocked window (Linux)


@dataclass
class Figure:
    """One clocked measurement: its rate, whether the deadline cut it, and its CPU split."""

    rate: float
    partial: bool
    cpu: cpu.CpuSplit | None = None


@dataclass
class Run:
    counts: dict[str, int]  # messages per payload
    deadline_s: float
    store_rows: int
    dsn: str
    postgres: bool  # False: the DuckDB modes, their ceilings and store-only rows alone
    tmp: Path
    rows: dict[str, Row]
    rounds: int = 3  # alternating rounds of the embedded mode and its ceiling
    notes: list[str] = field(default_factory=list)  # the embedded mode's ratio in each round

    def add(self, key: str, row: Row) -> None:
        self.rows[key] = row
        ratio = ""
        if row.ceiling and row.ceiling in self.rows and self.rows[row.ceiling].points_s:
            ratio = f" ({row.points_s / self.rows[row.ceiling].points_s:.2f} of {row.ceiling})"
        where = ""
        if row.cpu is not None:
            where = f"  [busy {row.cpu.busy:.0%}; µs/msg " + ", ".join(
                f"{role} {row.cpu.per_message_us(role):.1f}" for role in cpu.ROLES if row.cpu.seconds.get(role)) + "]"
        print(f"{key:28} {row.points_s:>12,.0f} points/s{ratio}{' PARTIAL' if row.partial else ''}{where}", flush=True)


_SLOTS = iter(range(1_000_000))
_START_MS = int(time.time() * 1000)


def base_ms() -> int:
    """Each measurement's own minute of the last hour, so no two share a (series, ts)."""
    return _START_MS - 3_600_000 + next(_SLOTS) * 60_000


def messages(kind: str, count: int) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    """(prelude, data) for one measurement. The prelude is committed before the clock starts: the
    Sparkplug births, or one JSON message per machine (so the first look-ups of each topic and
    machine, memoised from then on, are not in a short run's figure)."""
    if kind == "spb50":
        return setup.spb_messages("gw", count, base_ms())
    base = base_ms()
    return setup.json_messages(kind, setup.MACHINES, base - 2_000, 1_000), setup.json_messages(kind, count, base)


def prelude_points(kind: str) -> tuple[int, int]:
    """(messages, points stored) of the prelude: the births store their metrics' first values."""
    if kind == "spb50":
        return 1 + setup.SPB_DEVICES, setup.SPB_DEVICES * 50
    return setup.MACHINES, setup.MACHINES * setup.POINTS[kind]


# -- one measurement: a publisher process against consumers ----------------------------------------

@dataclass
class Consumers:
    counters: list[Any]
    pids: list[int]


@contextmanager
def consumers(targets: list[tuple[Callable[..., None], tuple[Any, ...]]]) -> Iterator[Consumers]:
    """Start each ``target(*args, counter, ready, stop)`` in a process; yield their counters and
    pids once all are ready."""
    stop = MP.Event()
    started = []
    for target, args in targets:
        counter, ready = MP.Value("q", 0, lock=False), MP.Event()
        proc = MP.Process(target=target, args=(*args, counter, ready, stop), daemon=True)
        proc.start()
        started.append((proc, counter, ready))
    try:
        for proc, _, ready in started:
            if not ready.wait(120):
                raise SystemExit(f"consumer {proc.name} did not subscribe")
        yield Consumers([c for _, c, _ in started], [p.pid for p, _, _ in started if p.pid is not None])
    finally:
        stop.set()
        for proc, _, _ in started:
            proc.join(60)
            if proc.is_alive():
                proc.kill()


def publish_and_time(port: int, kind: str, count: int, progress: Callable[[], int], expected: int,
                     deadline_s: float, user: str | None = None, secret: str | None = None,
                     extra: int = 0, roles: dict[int, str] | None = None) -> Figure:
    """Publish ``count`` messages from a process; return the points/s, whether the deadline cut
    it, and the CPU split of the window (``roles``: pid -> role of the bench's processes; this
    process is the receiver unless named). ``progress()`` is the points committed so far (``extra``
    of them from the prelude), polled until ``expected``."""
    prelude, data = messages(kind, count)
    ready, go, result = MP.Event(), MP.Event(), MP.Queue()
    pub = MP.Process(target=procs.publisher, args=(port, user, secret, prelude, data, ready, go, result),
                     kwargs={"timeout_s": deadline_s + 5}, daemon=True)
    pub.start()
    if not ready.wait(60):
        raise SystemExit("publisher did not get ready")
    while progress() < extra:  # the births are committed before the clock starts
        time.sleep(0.01)
    named = {os.getpid(): "receiver", **(roles or {})}
    if pub.pid is not None:
        named[pub.pid] = "publisher"
    before = cpu.snapshot()
    go.set()
    t_go = time.monotonic()
    done = None
    while time.monotonic() - t_go < deadline_s:
        if progress() >= expected + extra:
            done = time.monotonic()
            break
        time.sleep(0.002)
    after = cpu.snapshot()
    got = progress() - extra
    t0, _, _ = result.get(timeout=deadline_s + 30)
    pub.join(30)
    end = done if done is not None else time.monotonic()
    return Figure(got / max(end - t0, 1e-9), done is None, cpu.split(before, after, count, named))


def through_mosquitto(run: Run, kind: str, targets: Callable[[int], list[tuple[Callable[..., None], tuple[Any, ...]]]],
                      per_message: int, extra: int = 0) -> Figure:
    """Fresh Mosquitto, consumers from ``targets(port)`` (the receivers), publisher; points/s."""
    broker = setup.Mosquitto(run.tmp / f"mosquitto-{uuid.uuid4().hex[:6]}")
    try:
        with consumers(targets(broker.port)) as started:
            count = run.counts[kind]
            roles = {broker.proc.pid: "broker", os.getpid(): "other"} | dict.fromkeys(started.pids, "receiver")
            return publish_and_time(broker.port, kind, count,
                                    lambda: sum(c.value for c in started.counters) * per_message,
                                    count * setup.POINTS[kind], run.deadline_s, extra=extra, roles=roles)
    finally:
        broker.stop()


# -- modes -------------------------------------------------------------------------------------------

def duckdb_plant(directory: Path) -> setup.Plant:
    p = build_platform(Settings(data_dir=directory))
    try:
        return setup.make_plant(p.registry, p.repo)
    finally:
        p.close()


class CountingSink:
    """The embedded broker's ceiling: a sink that accepts and counts, nothing else."""

    def __init__(self) -> None:
        self.messages = 0

    async def submit_messages(self, messages: list[RawMessage]) -> None:
        self.messages += len(messages)


def median(figures: list[Figure]) -> Figure:
    """The round with the median rate (marked partial if any round was cut at the deadline)."""
    middle = sorted(figures, key=lambda f: f.rate)[len(figures) // 2]
    return Figure(middle.rate, any(f.partial for f in figures), middle.cpu)


def fresh_dir(run: Run, what: str) -> Path:
    """A copy of the DuckDB plant made once (the registry takes a while to create it)."""
    directory = run.tmp / f"{what}-{uuid.uuid4().hex[:6]}"
    shutil.copytree(run.tmp / "plant", directory)
    return directory


async def embedded(run: Run, plant: setup.Plant, kind: str, ceiling: bool,
                   in_process: bool = False, beside: bool = False) -> Figure:
    """The embedded mode (broker in a child process, or with ``in_process`` in this one), or its
    ceiling: the same broker with a sink that only counts (with ``beside``: while a process copies
    memory on the other core)."""
    p = build_platform(Settings(data_dir=fresh_dir(run, f"embedded-{kind}"), mqtt_port=setup.free_port(),
                                mqtt_broker_process=not in_process))
    try:
        count = run.counts[kind]
        prelude, extra = prelude_points(kind)
        if ceiling:
            sink = CountingSink()  # the same broker as below (in a child process, unless set off)
            kind_of_broker = BrokerProcess if p.settings.mqtt_broker_process else EmbeddedBroker
            broker = kind_of_broker("127.0.0.1", p.settings.mqtt_port, sink, DeviceAccessService(p.cache, p.stats))
            await broker.start()
            try:
                with consumers([(procs.memory_neighbour, ())] if beside else []) as started:
                    roles = {**broker_role(broker), **dict.fromkeys(started.pids, "neighbour")}
                    return await asyncio.to_thread(
                        publish_and_time, broker.bound_port, kind, count,
                        lambda: (sink.messages - prelude) * setup.POINTS[kind], count * setup.POINTS[kind],
                        run.deadline_s, plant.device, plant.secret, roles=roles)
            finally:
                await broker.stop()
        async with embedded_broker(p) as broker:
            return await asyncio.to_thread(publish_and_time, broker.bound_port, kind, count,
                                           lambda: p.stats.points, count * setup.POINTS[kind], run.deadline_s,
                                           plant.device, plant.secret, extra, broker_role(broker))
    finally:
        await p.ingest.drain()
        p.close()


def broker_role(broker: object) -> dict[int, str]:
    """The broker's child process, if it has one (in the other case this process is both)."""
    pid = getattr(broker, "pid", None)
    return {pid: "broker"} if isinstance(pid, int) else {}


def run_all(run: Run, payloads: tuple[str, ...]) -> None:
    plant = duckdb_plant(run.tmp / "plant")
    schema = f"bench_ingest_{uuid.uuid4().hex[:10]}"
    if run.postgres:
        pg_plant(run.dsn, schema)
    try:
        for kind in payloads:
            run_payload(run, plant, schema, kind)
    finally:
        if run.postgres:
            drop_schema(run.dsn, schema)


def figure_row(mode: str, store: str, payload: str, fig: Figure, ceiling: str | None = None) -> Row:
    return Row(mode, store, payload, fig.rate, ceiling, fig.partial, cpu=fig.cpu)


def run_payload(run: Run, plant: setup.Plant, schema: str, kind: str) -> None:
    per = setup.POINTS[kind]
    prelude, extra = prelude_points(kind)
    # the embedded mode and its ceiling, in alternating rounds (the medians are the figures)
    ceilings: list[Figure] = []
    reals: list[Figure] = []
    for _ in range(run.rounds):
        ceilings.append(asyncio.run(embedded(run, plant, kind, ceiling=True)))
        reals.append(asyncio.run(embedded(run, plant, kind, ceiling=False)))
    run.add(f"embedded broker {kind}", figure_row("embedded broker in a child process, counting sink (ceiling)", "-",
                                                  kind, median(ceilings)))
    # the same ceiling while a memory-bound process runs on the other core, as shopfloor's does
    run.add(f"embedded broker beside {kind}", figure_row(
        "the same ceiling, a memory-copying process on the other core", "-", kind,
        asyncio.run(embedded(run, plant, kind, ceiling=True, beside=True)), f"embedded broker {kind}"))
    if run.rounds > 1:
        run.notes.append(f"{kind}: " + ", ".join(f"{r.rate / c.rate:.2f}" for c, r in zip(ceilings, reals, strict=True)))
    if run.postgres:  # the PostgreSQL rows' ceiling
        fig = through_mosquitto(run, kind, lambda port: [(procs.bare_subscriber, (port,))], per, prelude * per)
        run.add(f"mosquitto {kind}", figure_row("Mosquitto, bare subscriber (ceiling)", "-", kind, fig))
    db_path = str(run.tmp / f"bare-{kind}.duckdb")
    fig = through_mosquitto(
        run, kind, lambda port: [(procs.bare_pipeline, (port, kind, plant.series, db_path))], 1,
        0 if kind == "spb50" else extra)  # the bare pipeline skips the births
    run.add(f"bare pipeline {kind}", figure_row("bare paho → decode → Arrow → DuckDB (ceiling)", "DuckDB", kind, fig))
    # the real thing
    run.add(f"embedded {kind}", figure_row("embedded (broker in a child process)", "DuckDB", kind, median(reals),
                                           f"embedded broker {kind}"))
    # the same with the broker inside the platform's process, against that broker's own ceiling
    run.add(f"in-process broker {kind}", figure_row(
        "embedded broker in this process, counting sink (ceiling)", "-", kind,
        asyncio.run(embedded(run, plant, kind, ceiling=True, in_process=True))))
    run.add(f"embedded in-process {kind}", figure_row(
        "embedded, broker in the same process (mqtt_broker_process = false)", "DuckDB", kind,
        asyncio.run(embedded(run, plant, kind, ceiling=False, in_process=True)), f"in-process broker {kind}"))
    directory = str(fresh_dir(run, f"worker-{kind}"))
    fig = through_mosquitto(run, kind, lambda port: [(procs.duckdb_ingest, (directory, port, kind))], 1, extra)
    run.add(f"mosquitto duckdb {kind}", figure_row("Mosquitto + 1 ingest process", "DuckDB", kind, fig,
                                                   f"bare pipeline {kind}"))
    for workers in ((1, 2) if kind != "spb50" else (1,)) if run.postgres else ():
        fig = through_mosquitto(
            run, kind, lambda port, w=workers: [  # type: ignore[misc]
                (procs.pg_ingest, (i, w, run.dsn, schema, port, kind)) for i in range(w)], 1, extra)
        run.add(f"mosquitto pg{workers} {kind}", figure_row(f"Mosquitto + {workers} ingest worker(s)", "PostgreSQL",
                                                            kind, fig, f"mosquitto {kind}"))


def pg_plant(dsn: str, schema: str) -> None:
    from shopfloor.services.registry import RegistryService
    from shopfloor.storage.postgres.database import PgDatabase
    from shopfloor.storage.postgres.historian import PostgresHistorian
    from shopfloor.storage.postgres.registry import PostgresRegistry

    db = PgDatabase(dsn, schema)
    try:
        repo = PostgresRegistry(db)
        PostgresHistorian(db).close()
        setup.make_plant(RegistryService(repo), repo)
    finally:
        db.close()


def drop_schema(dsn: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -- store-only --------------------------------------------------------------------------------------

def store_only(run: Run) -> None:
    from store_bench import duckdb_pair, postgres_pair

    n = run.store_rows
    bare, full, caught_up = duckdb_pair(run.tmp / "store-only", n)
    run.add("bare duckdb append", Row("bare DuckDB Arrow append (ceiling)", "DuckDB", "rows", bare))
    run.add("duckdb commit", Row("store only: historian commit", "DuckDB", "rows", full, "bare duckdb append"))
    run.add("duckdb commit + rollups", Row("store only: historian commit + rollup follower in one thread", "DuckDB",
                                           "rows", caught_up, "bare duckdb append"))
    if not run.postgres:
        return
    bare, full, caught_up = postgres_pair(run.dsn, n)
    run.add("bare pg copy", Row("bare PostgreSQL binary COPY (ceiling)", "PostgreSQL", "rows", bare))
    run.add("pg commit", Row("store only: historian commit", "PostgreSQL", "rows", full, "bare pg copy"))
    run.add("pg commit + rollups", Row("store only: historian commit + rollup follower in one thread", "PostgreSQL",
                                       "rows", caught_up, "bare pg copy"))


# -- the report ---------------------------------------------------------------------------------------

TARGETS = {
    "mosquitto duckdb json50": "≥ 300,000 and ≥ 0.6",
    "mosquitto pg2 json50": "≥ 150,000",
    "mosquitto pg1 json1": "≥ 25,000",
    "mosquitto pg2 json1": "> 1 worker",
    "mosquitto duckdb json1": "≥ 25,000",
    "embedded json1": "≥ 0.8",
    "embedded json50": "≥ 0.8",
    "embedded spb50": "≥ 0.8",
    "duckdb commit": "≥ 0.67 (1.5x)",
    "duckdb commit + rollups": "",
    "pg commit": "≥ 0.67 (1.5x)",
    "pg commit + rollups": "",
}


def machine_line() -> str:
    load = os.getloadavg()[0]
    return (f"{platform.node()} · {platform.machine()} · {os.cpu_count()} cores · Python "
            f"{platform.python_version()} · load average {load:.1f} at the start")


def earlier_postgres_rows(path: Path) -> list[str]:
    """For a ``--store duckdb`` run: the PostgreSQL rows (and their ceiling) of the section now in
    ``path``, marked with the date they were measured, so that the section keeps them."""
    doc = path.read_text() if path.exists() else ""
    marker = f"\n## {SECTION}\n"
    if marker not in doc:
        return []
    text = doc.partition(marker)[2]
    text = text[:text.find("\n## ")] if "\n## " in text else text
    when = next((line.split(" on ")[0].removeprefix("Measured ") for line in text.splitlines()
                 if line.startswith("Measured ")), "an earlier run")
    out = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 7 and (
                cells[1] == "PostgreSQL" or cells[0] == "Mosquitto, bare subscriber (ceiling)"):
            if "earlier run" not in cells[0]:
                cells[0] += f" (earlier run: {when})"
            out.append("| " + " | ".join(cells) + " |")
    return out


def section(run: Run, started: str, load: str, cmd: str, limits: str, carried: list[str] | None = None) -> str:
    lines = [f"## {SECTION}", "", f"Measured {started} on {load}.",
             f"Run: `{cmd}` (one command; figures of one run compare with each other, not across runs).",
             "A figure: points committed ÷ time from the first PUBLISH until the store committed the last. "
             "Messages round robin over 20 machines (Sparkplug: 10 devices of one edge node), QoS 1, "
             f"{', '.join(f'{v:,} {k}' for k, v in run.counts.items())} messages. \"ratio\": of the ceiling named.",
             "", "| mode | store | payload | points/s | ceiling | ratio | target |", "|---|---|---|---:|---|---:|---|"]
    for key, r in run.rows.items():
        ceiling = run.rows.get(r.ceiling) if r.ceiling else None
        ratio = f"{r.points_s / ceiling.points_s:.2f}" if ceiling and ceiling.points_s else "—"
        rate = f"{r.points_s:,.0f}" + (" (cut at the deadline)" if r.partial else "")
        lines.append(f"| {r.mode} | {r.store} | {r.payload} | {rate} | {ceiling.mode if ceiling else '—'} | {ratio} "
                     f"| {TARGETS.get(key, '')} |")
    lines += carried or []
    if run.notes:
        lines += ["", f"The embedded rows are the medians of {run.rounds} alternating rounds (ceiling, then embedded); "
                  "the embedded mode's ratio in each round: " + "; ".join(run.notes) + "."]
    lines += cpu_table(run)
    if limits:
        lines += ["", limits.strip()]
    return "\n".join(lines) + "\n"


def cpu_table(run: Run) -> list[str]:
    """Where the CPU went in each figure's clocked window (none where /proc is missing)."""
    measured = [r for r in run.rows.values() if r.cpu is not None]
    if not measured:
        return []
    cores = measured[0].cpu.cores if measured[0].cpu else 1
    lines = ["", "Where the CPU went in each clocked window (user + system time of each process, from /proc), in "
             f"µs of CPU per message; \"busy\": the whole machine's share of its {cores} cores. broker: Mosquitto, "
             "or the embedded broker's child process (the in-process rows have none: their broker is in the "
             "receiver's process); receiver: shopfloor's ingest process(es), or a ceiling's counting sink, bare "
             "subscriber or bare pipeline; PostgreSQL: its backends; other: the bench's own polling, the "
             "kernel (among others writing back the files of the figure before) and the rest of the box.", "",
             "| mode | store | payload | busy | broker | receiver | PostgreSQL | publisher | neighbour | other |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in measured:
        split = r.cpu
        assert split is not None
        cells = [f"{split.per_message_us(role):,.1f}" if split.seconds.get(role) else "—" for role in cpu.ROLES]
        lines.append(f"| {r.mode} | {r.store} | {r.payload} | {split.busy:.0%} | " + " | ".join(cells) + " |")
    return lines


def write_section(path: Path, title: str, text: str) -> None:
    """Replace the ``## title`` section of ``path`` (or append it); other sections stay as they are."""
    doc = path.read_text() if path.exists() else "# Performance\n"
    marker = f"\n## {title}\n"
    if marker in doc:
        head, _, rest = doc.partition(marker)
        nxt = rest.find("\n## ")
        after = rest[nxt + 1:] if nxt >= 0 else ""
    else:
        head, after = doc, ""
    path.write_text(head.rstrip("\n") + "\n\n" + text + ("\n" + after if after else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: a few hundred messages per figure")
    ap.add_argument("--dsn", default=os.environ.get("SHOPFLOOR_TEST_PG",
                                                    "host=127.0.0.1 port=5432 dbname=test user=postgres"),
                    help="PostgreSQL to measure on (a schema of its own, dropped afterwards)")
    ap.add_argument("--payload", action="append", choices=setup.PAYLOADS, help="only these payloads (repeatable)")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "PERFORMANCE.md", help="the file to write")
    ap.add_argument("--no-doc", action="store_true", help="print only")
    ap.add_argument("--limits", type=Path, default=ROOT / "bench" / "ingest_limits.md",
                    help="a Markdown file whose text goes below the table (what limits it)")
    ap.add_argument("--store", choices=("all", "duckdb"), default="all",
                    help="duckdb: only the DuckDB modes, their ceilings and the DuckDB store-only rows")
    args = ap.parse_args()
    counts = ({"json1": 300, "json50": 100, "spb50": 100} if args.quick
              else {"json1": 80_000, "json50": 32_000, "spb50": 16_000})
    if args.quick:  # a smaller plant: the registry takes about a second per machine
        setup.MACHINES = setup.SPB_DEVICES = 4
    WIRE.start(wait=True)  # the Sparkplug host's compiled reader, ready before any clock starts
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = machine_line()
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        run = Run(counts, 10.0 if args.quick else 20.0, 2_000 if args.quick else 500_000, args.dsn,
                  args.store == "all", Path(tmp), {}, rounds=1 if args.quick else 3)
        t0 = time.monotonic()
        run_all(run, tuple(args.payload or setup.PAYLOADS))
        store_only(run)
        print(f"total {time.monotonic() - t0:.0f} s")
    cmd = ".venv/bin/python bench/ingest.py" + (" --quick" if args.quick else "") + (
        " --store duckdb" if args.store == "duckdb" else "")
    carried = earlier_postgres_rows(args.doc) if args.store == "duckdb" and not args.no_doc else []
    text = section(run, started, load, cmd, args.limits.read_text() if args.limits else "", carried)
    print(text)
    if not args.no_doc:
        write_section(args.doc, SECTION, text)


if __name__ == "__main__":
    main()
