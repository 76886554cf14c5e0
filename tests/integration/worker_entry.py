"""What the ingest-worker tests run: the plant they ingest into, and each worker process's entry.

A worker commits through the real server-mode stack: ``IngestService`` over ``PostgresRegistry`` and
``PostgresHistorian`` in one schema, with an empty device ("trusted topic": the broker already
checked the publisher). Each committed batch is also counted in a file per worker process, so a
test can tell which worker (and which incarnation of it) stored what.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from shopfloor.connectors.mqtt.worker_main import WorkerSettings, retire_worker, run_worker
from shopfloor.domain.assets import Level, MeasurementDef
from shopfloor.domain.tenancy import Role
from shopfloor.domain.topics import parse_topic
from shopfloor.ports.ingest import MessageSink, RawMessage
from shopfloor.services.auth import TokenAuthenticator
from shopfloor.services.cache import RegistryCache
from shopfloor.services.clock import SystemClock
from shopfloor.services.ingest import IngestService
from shopfloor.services.registry import PLATFORM, RegistryService
from shopfloor.services.stats import IngestStats
from shopfloor.storage.postgres.database import PgDatabase
from shopfloor.storage.postgres.historian import PostgresHistorian
from shopfloor.storage.postgres.registry import PostgresRegistry


def make_plant(dsn: str, schema: str, topics: Sequence[str]) -> dict[str, int]:
    """Tenant, asset type and one machine per telemetry topic; returns topic -> temperature series id."""
    db = PgDatabase(dsn, schema)
    try:
        repo = PostgresRegistry(db)
        PostgresHistorian(db).close()  # migrate once, before the workers start
        reg = RegistryService(repo)
        addrs = [parse_topic(t) for t in topics]
        reg.create_tenant(PLATFORM, addrs[0].tenant)
        _, token = reg.create_token(PLATFORM, "test", Role.ADMIN, tenant_slug=addrs[0].tenant)
        ctx = TokenAuthenticator(repo).context_for(token)
        reg.put_asset_type(ctx, "press", measurements=[MeasurementDef("temperature", "degC")])
        site, area, line, _ = addrs[0].path
        site_id = reg.create_asset(ctx, Level.SITE, site, timezone="UTC").id
        area_id = reg.create_asset(ctx, Level.AREA, area, parent_id=site_id).id
        line_id = reg.create_asset(ctx, Level.LINE, line, parent_id=area_id).id
        series = {}
        for topic, addr in zip(topics, addrs, strict=True):
            machine = reg.create_asset(ctx, Level.MACHINE, addr.path[3], parent_id=line_id, type_name="press")
            series[topic] = reg.series_of(ctx, machine.id)[0].id
        return series
    finally:
        db.close()


class CountingSink:
    """Passes batches on; after each commit appends its size to this process's count file."""

    def __init__(self, inner: MessageSink, counts: Path) -> None:
        self._inner = inner
        self._counts = counts

    async def submit_messages(self, messages: list[RawMessage]) -> None:
        await self._inner.submit_messages(messages)
        with self._counts.open("a") as f:
            f.write(f"{len(messages)}\n")


@asynccontextmanager
async def ingest_sink(dsn: str, schema: str, counts: Path) -> AsyncIterator[MessageSink]:
    db = PgDatabase(dsn, schema, max_size=4, timeout=5.0)
    try:
        repo = PostgresRegistry(db)
        historian = PostgresHistorian(db)
        clock = SystemClock()
        service = IngestService(historian, RegistryCache(repo, clock), clock, IngestStats(clock))
        try:
            yield CountingSink(service, counts)
        finally:
            await service.drain()
            service.close()
            historian.close()
    finally:
        db.close()


@dataclass(frozen=True)
class WorkerTarget:
    """The supervisor's per-process target (picklable): ``target(index)`` runs worker ``index``."""

    settings: WorkerSettings
    dsn: str
    schema: str
    state_dir: str  # ``ingest-{i}`` appears when worker i has subscribed; ``counts-{i}-{pid}`` per process
    retire: bool = False  # retire worker ``index`` instead of running it

    def __call__(self, index: int) -> None:
        state = Path(self.state_dir)
        counts = state / f"counts-{index}-{os.getpid()}"
        if self.retire:
            retire_worker(index, self.settings, lambda: ingest_sink(self.dsn, self.schema, counts), quiet_s=1.0)
            return

        def subscribed() -> None:
            (state / f"ingest-{index}").write_text(str(os.getpid()))

        run_worker(index, self.settings, lambda: ingest_sink(self.dsn, self.schema, counts),
                   on_subscribed=subscribed)
