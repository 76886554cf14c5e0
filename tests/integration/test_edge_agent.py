"""The edge agent against a Mosquitto of the test's own and the real platform ingest (a worker process
committing to PostgreSQL): the broker stops under load and comes back, the agent restarts, the buffer
fills up. Samples are counted in PostgreSQL: each exactly once, stored in the order they were read."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from shopfloor.connectors.edge.agent import EdgeAgent
from shopfloor.connectors.edge.buffer import DiskBuffer
from shopfloor.connectors.edge.link import LinkSettings
from shopfloor.connectors.mqtt.worker_main import Supervisor, WorkerSettings
from shopfloor.domain.fieldbus import Reading, ReadingSink
from tests.integration.test_ingest_workers import Mosquitto, broker  # noqa: F401  (the fixture)
from tests.integration.worker_entry import WorkerTarget, make_plant

pytestmark = pytest.mark.integration

MACHINES = ("acme-site/shop/line-1/m1", "acme-site/shop/line-1/m2")
TOPICS = tuple(f"shopfloor/v1/acme/{m}/telemetry" for m in MACHINES)
BASE_US = (int(time.time()) - 3600) * 1_000_000


class CountingSource:
    """Reading i of machine ``MACHINES[i % 2]``: temperature = i at BASE + i ms; ``rate`` per second."""

    name = "counter"

    def __init__(self, start: int, count: int, rate: float, batch: int = 10) -> None:
        self.start, self.count, self.rate, self.batch = start, count, rate, batch
        self.done = asyncio.Event()
        self.sent = 0

    def points(self) -> list[tuple[str, str]]:
        return [(m, "temperature") for m in MACHINES]

    def writable(self, asset: str, measurement: str) -> bool:
        return False

    async def run(self, sink: ReadingSink) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for first in range(self.start, self.start + self.count, self.batch):
            last = min(first + self.batch, self.start + self.count)
            await sink([Reading(MACHINES[i % 2], "temperature", BASE_US + i * 1000, float(i)) for i in range(first, last)])
            self.sent = last - self.start
            delay = t0 + self.sent / self.rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        self.done.set()
        await asyncio.Event().wait()

    async def write(self, asset: str, measurement: str, value: float | bool | str) -> None:
        raise AssertionError("not writable")

    def counters(self) -> dict[str, dict[str, object]]:
        return {"counter": {"sent": self.sent}}


@dataclass
class Platform:
    broker: Mosquitto
    dsn: str
    schema: str
    state: Path

    def start_broker(self) -> None:
        """Start the broker and wait for the worker to subscribe again: Mosquitto does not queue for a
        shared subscription restored from its persistence file until the worker is back."""
        (self.state / "ingest-0").unlink(missing_ok=True)
        self.broker.start()
        _wait_file(self.state / "ingest-0")

    def stored(self) -> list[tuple[float, int, int]]:
        """(value, ts µs, ingest seq) of every stored temperature sample, by ts."""
        with psycopg.connect(self.dsn) as conn:
            rows = conn.execute(f'SELECT value, (extract(epoch FROM ts) * 1000000)::int8, seq '
                                f'FROM "{self.schema}".samples ORDER BY ts, series_id').fetchall()
        return [(float(v), int(t), int(s)) for v, t, s in rows]

    def wait_stored(self, n: int, timeout: float = 60.0) -> list[tuple[float, int, int]]:
        deadline = time.monotonic() + timeout
        rows = self.stored()
        while len(rows) < n and time.monotonic() < deadline:
            time.sleep(0.3)
            rows = self.stored()
        time.sleep(0.5)  # anything more (a duplicate) would show now
        return self.stored()


@pytest.fixture
def platform(broker: Mosquitto, pg_schema: tuple[str, str], tmp_path: Path) -> Iterator[Platform]:  # noqa: F811
    dsn, schema = pg_schema
    make_plant(dsn, schema, TOPICS)
    state = tmp_path / "workers"
    state.mkdir()
    settings = WorkerSettings(port=broker.port, batch_max=500, pipeline=1)
    with Supervisor(1, WorkerTarget(settings, dsn, schema, str(state)), restart_delay_s=0.2, stop_timeout_s=15):
        _wait_file(state / "ingest-0")
        yield Platform(broker, dsn, schema, state)


def _wait_file(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, "the ingest worker did not subscribe"
        time.sleep(0.05)


def _agent(platform: Platform, buffer: Path, source: CountingSource, max_bytes: int = 50_000_000,
           port: int | None = None) -> EdgeAgent:
    link = LinkSettings("127.0.0.1", port or platform.broker.port, "edge-test", window=50)
    return EdgeAgent("acme", [source], DiskBuffer(buffer, max_bytes), link, max_records=5)


@contextlib.asynccontextmanager
async def _running(agent: EdgeAgent) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop, drain_s=30))
    try:
        yield stop
    finally:
        stop.set()
        await task
        agent.buffer.close()


async def _until(condition: Callable[[], bool], within_s: float = 60.0) -> None:
    for _ in range(int(within_s / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)


def _check_exactly_once_in_order(rows: Sequence[tuple[float, int, int]], values: range) -> None:
    assert len(rows) == len(values), f"{len(rows)} stored, {len(values)} expected"
    assert [v for v, _, _ in rows] == [float(i) for i in values]  # each once, none missing
    assert all(t == BASE_US + int(v) * 1000 for v, t, _ in rows)
    for machine in range(len(MACHINES)):  # MQTT orders messages per topic: each machine's in order
        seqs = [s for v, _, s in rows if int(v) % len(MACHINES) == machine]
        assert seqs == sorted(seqs), f"a later sample of {MACHINES[machine]} was committed before an earlier one"


async def test_broker_down_under_load_every_sample_arrives_once_in_order(platform: Platform,
                                                                         tmp_path: Path) -> None:
    source = CountingSource(0, 6000, rate=600)
    agent = _agent(platform, tmp_path / "edge.sqlite", source)
    async with _running(agent):
        await _until(lambda: source.sent >= 1500)
        await asyncio.to_thread(platform.broker.stop)
        sent_at_stop = source.sent
        await asyncio.sleep(3.0)
        assert source.sent > sent_at_stop + 1000  # the source kept going into the buffer
        assert len(agent.buffer) > 100
        await asyncio.to_thread(platform.start_broker)
        await source.done.wait()
        await _until(lambda: not len(agent.buffer))
        assert len(agent.buffer) == 0
        assert agent.link is not None and agent.link.connects >= 2
    rows = await asyncio.to_thread(platform.wait_stored, 6000)
    _check_exactly_once_in_order(rows, range(6000))
    assert agent.buffer.dropped == 0


async def test_the_buffer_survives_an_agent_restart(platform: Platform, tmp_path: Path) -> None:
    buffer = tmp_path / "edge.sqlite"
    offline = _agent(platform, buffer, CountingSource(0, 1000, rate=5000))
    await asyncio.to_thread(platform.broker.stop)
    async with _running(offline) as stop:
        source = offline.sources[0]
        assert isinstance(source, CountingSource)
        await source.done.wait()
        stop.set()
    assert DiskBuffer(buffer, 50_000_000).__len__() == 200  # 1000 readings, 5 per message
    await asyncio.to_thread(platform.start_broker)
    again = _agent(platform, buffer, CountingSource(1000, 500, rate=5000))
    async with _running(again):
        second = again.sources[0]
        assert isinstance(second, CountingSource)
        await second.done.wait()
        await _until(lambda: not len(again.buffer))
    rows = await asyncio.to_thread(platform.wait_stored, 1500)
    _check_exactly_once_in_order(rows, range(1500))


async def test_a_full_buffer_drops_the_oldest_and_counts_them(platform: Platform, tmp_path: Path) -> None:
    buffer = tmp_path / "edge.sqlite"
    await asyncio.to_thread(platform.broker.stop)
    agent = _agent(platform, buffer, CountingSource(0, 3000, rate=20000), max_bytes=64 * 1024)
    async with _running(agent) as stop:
        source = agent.sources[0]
        assert isinstance(source, CountingSource)
        await source.done.wait()
        stop.set()
    kept = DiskBuffer(buffer, 64 * 1024)
    dropped, left = kept.dropped, len(kept)
    assert dropped > 0 and dropped + left == 600 and kept.size_bytes <= 64 * 1024
    kept.close()
    await asyncio.to_thread(platform.start_broker)
    again = _agent(platform, buffer, CountingSource(3000, 0, rate=1), max_bytes=64 * 1024)
    async with _running(again):
        await _until(lambda: not len(again.buffer))
        assert again.buffer.dropped == dropped  # the counter is kept in the file
    rows = await asyncio.to_thread(platform.wait_stored, left * 5)
    _check_exactly_once_in_order(rows, range(dropped * 5, 3000))  # the newest survive, contiguous
