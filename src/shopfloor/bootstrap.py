"""The composition root: builds adapters from settings and wires them into services.

The only module that sees both sides (storage/connectors/api and services).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from shopfloor.api.app import create_app
from shopfloor.api.deps import ApiServices
from shopfloor.config import Settings
from shopfloor.connectors.mqtt.broker_process import BrokerProcess
from shopfloor.connectors.mqtt.embedded_broker import EmbeddedBroker
from shopfloor.connectors.sparkplug.commands import SparkplugCommander
from shopfloor.connectors.sparkplug.host import SparkplugHost, SparkplugRouter
from shopfloor.connectors.webhook.sender import HttpxWebhookSender
from shopfloor.domain.assets import Device
from shopfloor.domain.errors import ShopfloorError
from shopfloor.domain.payloads import Limits
from shopfloor.domain.retention import RetentionPolicy
from shopfloor.ports.alarms import AlarmStore
from shopfloor.ports.analytics import AnalyticsModelStore
from shopfloor.ports.backup import Backup
from shopfloor.ports.ingest import RawMessage
from shopfloor.ports.kpi import KpiSource
from shopfloor.ports.kpi_tiles import KpiTileStore
from shopfloor.ports.registry import RegistryRepository
from shopfloor.ports.store import Historian
from shopfloor.services.alarm_monitor import SystemMonitor, broker_check, disk_check, lag_check
from shopfloor.services.alarm_notify import RetryPolicy, WebhookDispatcher
from shopfloor.services.alarm_ops import AlarmOps
from shopfloor.services.alarms import AlarmService
from shopfloor.services.analytics import AnalyticsService, score_periodically
from shopfloor.services.auth import TokenAuthenticator
from shopfloor.services.cache import RegistryCache
from shopfloor.services.clock import SystemClock
from shopfloor.services.devices import DeviceAccessService
from shopfloor.services.export import ExportService
from shopfloor.services.health import HealthService
from shopfloor.services.history import HistoryService
from shopfloor.services.ingest import IngestService
from shopfloor.services.kpi_tiles import TiledKpiSource, keep_closed_shifts, keep_periodically
from shopfloor.services.kpis import KpiService
from shopfloor.services.machine_writes import MachineWriteService
from shopfloor.services.overview import OverviewService
from shopfloor.services.plant import PlantService
from shopfloor.services.registry import RegistryService
from shopfloor.services.retention import RetentionService, run_periodically
from shopfloor.services.sparkplug import SparkplugCommandService
from shopfloor.services.sparkplug_directory import SparkplugDirectoryService
from shopfloor.services.stats import IngestStats
from shopfloor.storage.duckdb.alarms import DuckDBAlarmStore
from shopfloor.storage.duckdb.analytics import DuckDBAnalyticsStore
from shopfloor.storage.duckdb.backup import DuckDBBackup
from shopfloor.storage.duckdb.database import Database
from shopfloor.storage.duckdb.historian import DuckDBHistorian
from shopfloor.storage.duckdb.kpi import DuckDBKpiSource
from shopfloor.storage.duckdb.kpi_tiles import DuckDBKpiTileStore
from shopfloor.storage.duckdb.registry import DuckDBRegistry
from shopfloor.storage.postgres.database import PgDatabase
from shopfloor.web import pages as dashboard

log = logging.getLogger(__name__)
LocalBroker = EmbeddedBroker | BrokerProcess  # the embedded broker, in this process or in a child of its own


@dataclass
class Stores:
    """The store adapters of one installation: DuckDB (embedded) or PostgreSQL (server mode)."""

    repo: RegistryRepository
    historian: Historian
    kpis: KpiSource
    backup: Backup
    ping: Callable[[], object]
    close: Callable[[], None]
    alarms: AlarmStore
    db: Database | None = None  # the DuckDB file, in embedded mode
    pg: PgDatabase | None = None  # the PostgreSQL database, in server mode
    analytics: AnalyticsModelStore | None = None  # analytics models and their trained state
    kpi_tiles: KpiTileStore | None = None  # kept KPI inputs of closed windows


def broker_in_child(settings: Settings) -> bool:
    """Whether the embedded MQTT broker runs in a child process of its own (where it can: POSIX)."""
    return settings.mqtt_broker_process and os.name == "posix"


def duckdb_threads(settings: Settings, cores: int | None = None) -> int | None:
    """How many threads DuckDB works with: ``duckdb_threads`` if set; else one per core less the one
    the broker's child process works on (measured on two cores: DuckDB's second thread cost the
    commits more CPU than it saved, CPU the broker then lacked); None: DuckDB's own default."""
    if settings.duckdb_threads:
        return settings.duckdb_threads
    if settings.broker != "embedded" or not broker_in_child(settings):
        return None
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores - 1)


def open_stores(settings: Settings, clock: SystemClock) -> Stores:
    staleness_us = settings.staleness_s * 1_000_000
    if settings.store == "postgres":
        from shopfloor.storage.postgres.alarms import PostgresAlarmStore
        from shopfloor.storage.postgres.analytics import PostgresAnalyticsStore
        from shopfloor.storage.postgres.backup import PgBackup
        from shopfloor.storage.postgres.historian import PostgresHistorian
        from shopfloor.storage.postgres.kpi import PostgresKpiSource
        from shopfloor.storage.postgres.kpi_tiles import PostgresKpiTileStore
        from shopfloor.storage.postgres.registry import PostgresRegistry

        pg = PgDatabase(settings.database_url, settings.database_schema)

        def ping_pg() -> object:
            with pg.connection() as conn:
                return conn.execute("SELECT 1").fetchall()

        pg_historian = PostgresHistorian(pg, rollup_staleness_us=staleness_us, clock=clock)

        def close_pg() -> None:
            pg_historian.close()
            pg.close()

        return Stores(PostgresRegistry(pg, clock=clock), pg_historian, PostgresKpiSource(pg),
                      PgBackup(pg.dsn, pg.schema, work_dir=settings.data_dir), ping_pg, close_pg,
                      PostgresAlarmStore(pg), pg=pg, analytics=PostgresAnalyticsStore(pg),
                      kpi_tiles=PostgresKpiTileStore(pg))
    db = Database(settings.db_path, threads=duckdb_threads(settings))
    historian = DuckDBHistorian(db, rollup_staleness_us=staleness_us)

    def close_duckdb() -> None:
        historian.close()
        db.close()

    return Stores(DuckDBRegistry(db), historian, DuckDBKpiSource(db), DuckDBBackup(db.path, db),
                  lambda: db.cursor().execute("SELECT 1").fetchall(), close_duckdb, DuckDBAlarmStore(db), db=db,
                  analytics=DuckDBAnalyticsStore(db), kpi_tiles=DuckDBKpiTileStore(db))


@dataclass
class Platform:
    """Everything one shopfloor process runs, wired together."""

    settings: Settings
    stores: Stores
    clock: SystemClock
    stats: IngestStats
    cache: RegistryCache
    registry: RegistryService
    plant: PlantService
    history: HistoryService
    auth: TokenAuthenticator
    export: ExportService
    retention: RetentionService
    kpis: KpiService
    _ingest: IngestService | None = None
    broker: LocalBroker | None = None
    broker_connected: Callable[[], bool] | None = None
    broker_rejects: Callable[[], dict[str, int]] | None = None
    sparkplug_commands: SparkplugCommandService | None = None
    machine_writes: MachineWriteService | None = None
    health: HealthService | None = None
    alarms: AlarmService | None = None  # rules and alarms: only in the process that serves (see run_alarms)
    analytics: AnalyticsService | None = None
    kpi_tiles: TiledKpiSource | None = None  # the KPI service's source when closed windows are kept
    _overview: OverviewService | None = None

    @property
    def repo(self) -> RegistryRepository:
        return self.stores.repo

    def keep_kpi_tiles(self, stopping: Callable[[], bool] = lambda: False) -> int:
        """One pass of the KPI tile keeper (``services/kpi_tiles.keep_closed_shifts``); 0 when tiles are off."""
        if self.kpi_tiles is None:
            return 0
        s = self.settings
        return keep_closed_shifts(self.registry, self.kpis, self.kpi_tiles, self.clock, s.kpi_keep_days,
                                  s.kpi_keep_settle_s, stopping)

    @property
    def historian(self) -> Historian:
        return self.stores.historian

    @property
    def db(self) -> Database:
        """The DuckDB database (embedded mode only)."""
        if self.stores.db is None:
            raise RuntimeError("not an embedded (DuckDB) installation")
        return self.stores.db

    @property
    def ingest(self) -> IngestService:
        """Created on first use, inside the running event loop."""
        if self._ingest is None:
            s = self.settings
            self._ingest = IngestService(self.historian, self.cache, self.clock, self.stats, limits_from(s))
            if self.analytics is not None:
                self.analytics.sink = self._ingest
        return self._ingest

    def api_services(self) -> ApiServices:
        return ApiServices(self.registry, self.plant, self.history, self.auth, self.stats,
                           ready=self._ready, invalidate=self.cache.invalidate, backup=self.stores.backup,
                           export=self.export, health=self._health(),
                           broker_rejects=lambda: self.broker_rejects() if self.broker_rejects else None,
                           ingest=self.ingest, kpis=self.kpis, sparkplug_commands=self.sparkplug_commands,
                           overview=self.overview, analytics=self.analytics, machine_writes=self.machine_writes,
                           alarms=self.alarm_ops())

    def alarm_ops(self) -> AlarmOps | None:
        if self.alarms is None or not self.alarms.opened:
            return None
        return AlarmOps(self.alarms, self.repo, self.historian, self.clock.now_us)

    @property
    def overview(self) -> OverviewService:
        """The dashboard's plant overview (its caches are shared by every request of this process)."""
        if self._overview is None:
            self._overview = OverviewService(self.registry, self.historian, self.kpis, self.clock)
        return self._overview

    def http_app(self) -> FastAPI:
        """The API under /api/v1 and the dashboard under /, in one application."""
        app = create_app(self.api_services())
        dashboard.install(app, self.auth)
        return app

    def _broker_up(self) -> bool:
        if self.broker is not None:
            return self.broker.running
        return self.broker_connected() if self.broker_connected is not None else False

    def _health(self) -> HealthService:
        if self.health is None:
            self.health = HealthService(
                self.clock, ping_database=self.stores.ping, broker_connected=self._broker_up,
                last_commit_us=lambda: self._ingest.last_commit_us if self._ingest else None,
                pending=lambda: self._ingest.pending_messages if self._ingest else 0)
        return self.health

    def _ready(self) -> dict[str, bool]:
        checks = {"store": True}
        try:
            self.stores.ping()
        except Exception:
            checks["store"] = False
        if self.broker is not None or self.broker_connected is not None:
            checks["broker"] = self._broker_up()
        return checks

    def close(self) -> None:
        if self.alarms is not None:
            self.alarms.close()
        if self._overview is not None:
            self._overview.close()
        if self._ingest is not None:
            self._ingest.close()
        if self.health is not None:
            self.health.close()
        self.stores.close()


def limits_from(settings: Settings) -> Limits:
    """What ingest accepts, from the settings (one place for every process that ingests)."""
    return Limits(future_skew_us=settings.future_skew_s * 1_000_000,
                  max_age_us=settings.raw_retention_days * 86_400 * 1_000_000,
                  max_payload_bytes=settings.max_payload_bytes)


def build_platform(settings: Settings) -> Platform:
    clock = SystemClock()
    stores = open_stores(settings, clock)
    stats = IngestStats(clock)
    cache = RegistryCache(stores.repo, clock)
    registry = RegistryService(stores.repo)
    policy = RetentionPolicy(settings.raw_retention_days, settings.rollup_1m_days, settings.rollup_1h_days)
    analytics = (AnalyticsService(registry, stores.historian, stores.analytics, clock)
                 if stores.analytics is not None else None)
    kpi_source: KpiSource = stores.kpis
    tiled = None
    if settings.kpi_tiles and stores.kpi_tiles is not None:
        tiled = TiledKpiSource(stores.kpis, stores.kpi_tiles, stores.historian.last_seq, clock,
                               settings.kpi_keep_settle_s * 1_000_000)
        kpi_source = tiled
    return Platform(settings, stores, clock, stats, cache, registry, PlantService(registry),
                    HistoryService(registry, stores.historian, settings.staleness_s * 1_000_000),
                    TokenAuthenticator(stores.repo), ExportService(registry, stores.historian),
                    RetentionService(stores.repo, stores.historian, clock, policy),
                    KpiService(registry, kpi_source, clock, stores.historian), analytics=analytics,
                    kpi_tiles=tiled)


@contextlib.contextmanager
def open_platform(settings: Settings) -> Iterator[Platform]:
    platform = build_platform(settings)
    try:
        yield platform
    finally:
        platform.close()


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the caller owns Ctrl-C."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


BrokerRunner = Callable[["Platform"], contextlib.AbstractAsyncContextManager[object]]


@contextlib.asynccontextmanager
async def embedded_broker(platform: Platform) -> AsyncIterator[LocalBroker]:
    """The embedded MQTT broker (in a child process unless ``mqtt_broker_process`` is off), committing
    through ingest before it acknowledges."""
    s = platform.settings
    loop = asyncio.get_running_loop()
    offline_tasks: set[asyncio.Task[None]] = set()

    def mark_offline(username: str, topics: list[str]) -> None:
        now = platform.clock.now_us()
        msgs = [RawMessage(username, t, b"offline", now) for t in topics]

        async def submit() -> None:
            try:
                await platform.ingest.submit_messages(msgs)
            except ShopfloorError as exc:
                log.warning("could not record %s offline: %s", username, exc)

        def schedule() -> None:
            task = loop.create_task(submit())
            offline_tasks.add(task)
            task.add_done_callback(offline_tasks.discard)

        loop.call_soon_threadsafe(schedule)

    access = DeviceAccessService(platform.cache, platform.stats, on_offline=mark_offline)
    host = SparkplugHost(SparkplugDirectoryService(platform.repo, platform.cache, platform.clock), platform.ingest,
                         limits=platform.ingest.decoder.limits)
    sink = SparkplugRouter(platform.ingest, host)
    broker: LocalBroker = (
        BrokerProcess(s.mqtt_host, s.mqtt_port, sink, access, max_payload=s.max_payload_bytes)
        if broker_in_child(s) else EmbeddedBroker(s.mqtt_host, s.mqtt_port, sink, access,
                                                     max_payload=s.max_payload_bytes))
    await broker.start()
    platform.broker = broker
    host.set_publisher(broker)
    await host.announce(platform.clock.now_us() // 1000)
    platform.sparkplug_commands = SparkplugCommandService(platform.plant.sparkplug, platform.ingest,
                                                          SparkplugCommander(broker), platform.clock.now_us)
    platform.machine_writes = MachineWriteService(platform.registry, platform.ingest, broker, platform.clock.now_us)

    def kick(device: Device) -> None:
        platform.cache.invalidate()
        loop.call_soon_threadsafe(lambda: loop.create_task(broker.disconnect_client(device.username)))

    platform.registry.on_device_revoked(kick)
    try:
        yield broker
    finally:
        platform.sparkplug_commands = None
        platform.machine_writes = None
        await host.retire()
        await broker.stop()
        platform.broker = None
        await host.drain()
        await asyncio.sleep(0)  # let the last offline notices be scheduled
        if offline_tasks:
            await asyncio.wait(set(offline_tasks), timeout=10)


def build_alarms(platform: Platform) -> AlarmService:
    """The rule engines, following ingest (and, with PostgreSQL, the commits of other processes)."""
    s = platform.settings
    health = platform._health()

    def lag_s() -> float | None:
        return health.ingest().lag_s

    def pending() -> int:
        return health.ingest().pending

    def disk_used() -> float | None:
        try:
            usage = shutil.disk_usage(s.data_dir if s.data_dir.exists() else Path.cwd())
        except OSError:
            return None
        return usage.used / usage.total if usage.total else None

    def broker_state() -> bool | None:
        if platform.broker is None and platform.broker_connected is None:
            return None  # no broker link in this process (yet)
        return health.broker().connected

    def link_down() -> bool:
        return broker_state() is False

    monitor = SystemMonitor([broker_check(broker_state), lag_check(lag_s, pending, health.max_lag_s),
                             disk_check(disk_used, s.alarm_disk_full)])
    return AlarmService(platform.stores.alarms, platform.historian, platform.repo, platform.clock,
                        follow_store=s.store == "postgres", tick_s=s.alarm_tick_s, link_down=link_down,
                        monitor=monitor)


@contextlib.asynccontextmanager
async def run_alarms(platform: Platform) -> AsyncIterator[AlarmService]:
    """Open the rule engines (before ingest commits anything, so every later commit is live), follow
    ingest and the clock, and deliver webhooks, until the block ends."""
    loop = asyncio.get_running_loop()
    service = platform.alarms = build_alarms(platform)
    await loop.run_in_executor(None, service.open)
    platform.ingest.on_commit(service.notify)
    s = platform.settings
    sender = HttpxWebhookSender()
    io = ThreadPoolExecutor(max_workers=2, thread_name_prefix="shopfloor-webhooks")
    dispatcher = WebhookDispatcher(platform.stores.alarms, sender, platform.clock, io,
                                   RetryPolicy(s.alarm_webhook_attempts, s.alarm_webhook_delay_s))

    def wake() -> None:
        loop.call_soon_threadsafe(dispatcher.wake)

    service.on_deliveries = wake
    stop = asyncio.Event()
    tasks = [loop.create_task(service.run(stop)), loop.create_task(dispatcher.run(stop))]
    try:
        yield service
    finally:
        stop.set()
        service.hub.close()
        await asyncio.wait(tasks, timeout=30)
        await sender.aclose()
        io.shutdown(wait=True)


async def serve(platform: Platform, stop: asyncio.Event, started: Callable[[Platform], None] | None = None,
                broker: BrokerRunner = embedded_broker) -> None:
    """Run broker, ingest and API until ``stop`` is set; then shut down in order, losing nothing."""
    s = platform.settings
    loop = asyncio.get_running_loop()
    async with run_alarms(platform), broker(platform):
        app = platform.http_app()
        config = uvicorn.Config(app, host=s.http_host, port=s.http_port, log_level="warning", lifespan="off",
                                access_log=False)
        server = _Server(config)
        server_task = loop.create_task(server.serve())
        try:
            while not server.started:
                if server_task.done():
                    await server_task
                    raise SystemExit(f"the HTTP server could not start on {s.http_host}:{s.http_port} "
                                     "(port in use?); choose another with --http-port")
                await asyncio.sleep(0.02)
            if started is not None:
                started(platform)
            retention = loop.create_task(run_periodically(platform.retention, s.retention_every_s, stop))
            scoring = (loop.create_task(score_periodically(platform.analytics, s.analytics_every_s, stop))
                       if platform.analytics is not None and s.analytics_every_s > 0 else None)
            keeping = (loop.create_task(keep_periodically(platform.keep_kpi_tiles, s.kpi_keep_every_s, stop))
                       if platform.kpi_tiles is not None and s.kpi_keep_days > 0 else None)
            stop_task = loop.create_task(stop.wait())
            await asyncio.wait({server_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            stop_task.cancel()
            if stop.is_set():  # let a retention run in its thread finish before the store closes
                await asyncio.wait({retention}, timeout=60)
            retention.cancel()
            if scoring is not None:
                await asyncio.wait({scoring}, timeout=30)
                scoring.cancel()
            if keeping is not None:  # its thread must be done before the store closes: it stops after a day
                await asyncio.wait({keeping})
        finally:
            if platform.alarms is not None:
                platform.alarms.hub.close()  # end the live streams, or uvicorn waits for them
            server.should_exit = True
            with contextlib.suppress(Exception):
                await server_task
    if platform._ingest is not None:
        await platform._ingest.drain()


def write_secret_file(path: Path, text: str) -> None:
    """Write a secret readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
