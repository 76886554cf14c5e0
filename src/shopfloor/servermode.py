"""Server mode wiring: Mosquitto kept in step with the registry, and ingest worker processes.

``shopfloor serve`` with ``broker = "mosquitto"`` runs the API and manages Mosquitto (its password
and ACL files generated from the registry, reloaded on every change); ``shopfloor ingest --workers N``
runs N worker processes on a shared subscription, committing to PostgreSQL before acknowledging.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from shopfloor.bootstrap import Platform, limits_from, write_secret_file
from shopfloor.config import Settings
from shopfloor.connectors.mosquitto import BrokerOptions, LogWatch, MosquittoManager, ServiceUser
from shopfloor.connectors.mosquitto.config import INGEST_READ, INGEST_WRITE, SPARKPLUG_READ, SPARKPLUG_WRITE
from shopfloor.connectors.mqtt.worker_main import WorkerSettings, retire_worker, run_worker, run_workers
from shopfloor.connectors.sparkplug.commands import SparkplugCommander
from shopfloor.connectors.sparkplug.host import SparkplugHost
from shopfloor.connectors.sparkplug.publisher import MqttPublisher
from shopfloor.connectors.sparkplug.worker import HostParts, SparkplugWorkerSettings, run_sparkplug_worker
from shopfloor.domain.errors import InvalidInput
from shopfloor.ports.ingest import MessageSink
from shopfloor.services.cache import RegistryCache
from shopfloor.services.clock import SystemClock
from shopfloor.services.ingest import IngestService
from shopfloor.services.machine_writes import MachineWriteService
from shopfloor.services.sparkplug import SparkplugCommandService
from shopfloor.services.sparkplug_directory import SparkplugDirectoryService
from shopfloor.services.stats import IngestStats
from shopfloor.storage.postgres.database import PgDatabase
from shopfloor.storage.postgres.historian import PostgresHistorian
from shopfloor.storage.postgres.registry import PostgresRegistry

log = logging.getLogger(__name__)


def mosquitto_dir(settings: Settings) -> Path:
    return settings.mosquitto_dir or settings.data_dir / "mosquitto"


def service_password(settings: Settings) -> str:
    """The ingest service user's MQTT password: from the settings, else generated once and kept."""
    if settings.mqtt_service_password is not None:
        return settings.mqtt_service_password.get_secret_value()
    path = settings.data_dir / "mqtt-service-password"
    if path.exists():
        return path.read_text().strip()
    password = secrets.token_urlsafe(24)
    write_secret_file(path, password)
    return password


def make_manager(platform: Platform) -> MosquittoManager:
    s = platform.settings
    svc = ServiceUser.from_password(s.mqtt_service_user, service_password(s),
                                    read=INGEST_READ + SPARKPLUG_READ, write=INGEST_WRITE + SPARKPLUG_WRITE)
    return MosquittoManager.for_registry(
        platform.repo, mosquitto_dir(s), service_users=[svc],
        options=BrokerOptions(port=s.mqtt_port, host=s.mqtt_host), binary=s.mosquitto_binary,
        pid_file=s.mosquitto_pid_file)


@contextlib.asynccontextmanager
async def mosquitto_running(platform: Platform) -> AsyncIterator[MosquittoManager]:
    """Start (or adopt) Mosquitto, keep its files in step with the registry, count its rejects."""
    s = platform.settings
    manager = make_manager(platform)
    if s.mosquitto_manage:
        await asyncio.to_thread(manager.start)
    else:
        manager.sync()
    logs: LogWatch = manager.log_watch()
    tasks = [asyncio.create_task(manager.watch(platform.repo, every_s=1.0)),
             asyncio.create_task(logs.run(every_s=1.0))]
    if s.mosquitto_manage:
        platform.broker_connected = lambda: manager.running
    else:
        platform.broker_connected = lambda: manager.pid is not None
    platform.broker_rejects = lambda: logs.rejects().by_kind
    publisher = MqttPublisher(s.mqtt_host, s.mqtt_port, s.mqtt_service_user, service_password(s),
                              client_id="shopfloor-api-commands")
    await publisher.start()
    platform.sparkplug_commands = SparkplugCommandService(platform.plant.sparkplug, platform.ingest,
                                                          SparkplugCommander(publisher), platform.clock.now_us)
    platform.machine_writes = MachineWriteService(platform.registry, platform.ingest, publisher, platform.clock.now_us)
    try:
        yield manager
    finally:
        platform.sparkplug_commands = None
        platform.machine_writes = None
        with contextlib.suppress(Exception):
            await publisher.stop()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        platform.broker_connected = None
        if s.mosquitto_manage:
            await asyncio.to_thread(manager.stop)


# -- ingest workers ------------------------------------------------------------------------------
def worker_settings(settings: Settings) -> WorkerSettings:
    return WorkerSettings(host=settings.mqtt_host, port=settings.mqtt_port, username=settings.mqtt_service_user,
                          password=service_password(settings))


@dataclass
class _PgIngest:
    repo: PostgresRegistry
    cache: RegistryCache
    clock: SystemClock
    service: IngestService


@contextlib.asynccontextmanager
async def _pg_ingest(settings: Settings) -> AsyncIterator[_PgIngest]:
    """A worker process's path to PostgreSQL: registry, historian and the ingest service, closed in order."""
    db = PgDatabase(settings.database_url, settings.database_schema, max_size=4, timeout=5.0)
    try:
        repo = PostgresRegistry(db)
        clock = SystemClock()
        historian = PostgresHistorian(db, rollup_staleness_us=settings.staleness_s * 1_000_000, clock=clock)
        cache = RegistryCache(repo, clock)
        service = IngestService(historian, cache, clock, IngestStats(clock), limits_from(settings))
        try:
            yield _PgIngest(repo, cache, clock, service)
        finally:
            await service.drain()
            service.close()
            historian.close()
    finally:
        db.close()


@contextlib.asynccontextmanager
async def ingest_sink(settings: Settings) -> AsyncIterator[MessageSink]:
    """One JSON worker's sink."""
    async with _pg_ingest(settings) as stack:
        yield stack.service


def sparkplug_settings(settings: Settings) -> SparkplugWorkerSettings:
    return SparkplugWorkerSettings(host=settings.mqtt_host, port=settings.mqtt_port,
                                   username=settings.mqtt_service_user, password=service_password(settings))


@contextlib.asynccontextmanager
async def sparkplug_host(settings: Settings, host_id: str) -> AsyncIterator[HostParts]:
    """One Sparkplug worker's host application over PostgreSQL (its groups come from the registry)."""
    async with _pg_ingest(settings) as stack:
        directory = SparkplugDirectoryService(stack.repo, stack.cache, stack.clock)
        host = SparkplugHost(directory, stack.service, host_id=host_id, limits=stack.service.decoder.limits)
        try:
            yield HostParts(host, directory.groups)
        finally:
            await host.drain()


def any_worker(settings: Settings, workers: int, index: int) -> None:
    """Processes 0..workers-1 ingest JSON on the shared subscription; the next ``workers`` own
    Sparkplug groups (a stable hash of the group id picks the owner)."""
    if index < workers:
        ingest_worker(settings, index)
    else:
        run_sparkplug_worker(index - workers, workers, sparkplug_settings(settings),
                             functools.partial(sparkplug_host, settings))


def _check(settings: Settings) -> None:
    if settings.store != "postgres":
        raise InvalidInput("ingest workers need the PostgreSQL store (store = \"postgres\"): DuckDB allows "
                           "one process per file")


def ingest_worker(settings: Settings, index: int) -> None:
    """The body of worker process ``index`` (picklable through functools.partial)."""
    run_worker(index, worker_settings(settings), functools.partial(ingest_sink, settings))


def run_ingest(settings: Settings, workers: int) -> int:
    """Run ``workers`` supervised worker processes until SIGINT/SIGTERM; return the exit code."""
    _check(settings)
    target: Callable[[int], object] = functools.partial(any_worker, settings, workers)
    return run_workers(2 * workers, target)


def retire(settings: Settings, index: int) -> None:
    """Take worker ``index`` out of the share group for good, committing what its session holds."""
    _check(settings)
    retire_worker(index, worker_settings(settings), functools.partial(ingest_sink, settings))
