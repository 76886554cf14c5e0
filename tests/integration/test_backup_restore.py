"""Backups made while the platform writes, and their restores, for both stores.

What "consistent" means here: the restored store holds every commit up to the backup's ingest
sequence, completely, and nothing after it; and registry and history agree (no sample of a series
the registry does not know). DuckDB: through the running API (POST /admin/backup) while ingest
and registry writes go on. PostgreSQL: pg_dump while the registry and historian commit, pg_restore into a new schema.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
from starlette.exceptions import StarletteDeprecationWarning

from shopfloor.api.app import create_app
from shopfloor.api.deps import ApiServices
from shopfloor.domain.assets import Level, MeasurementDef
from shopfloor.domain.errors import Conflict, InvalidInput
from shopfloor.domain.records import IngestBatch
from shopfloor.domain.tenancy import Role, TenantContext
from shopfloor.domain.timeutil import now_us
from shopfloor.ports.ingest import RawMessage
from shopfloor.services.auth import TokenAuthenticator
from shopfloor.services.cache import RegistryCache
from shopfloor.services.clock import SystemClock
from shopfloor.services.export import ExportService
from shopfloor.services.history import HistoryService
from shopfloor.services.ingest import IngestService
from shopfloor.services.plant import PlantService
from shopfloor.services.registry import PLATFORM, RegistryService
from shopfloor.services.stats import IngestStats
from shopfloor.storage.duckdb.backup import DuckDBBackup
from shopfloor.storage.duckdb.database import Database
from shopfloor.storage.duckdb.historian import DuckDBHistorian
from shopfloor.storage.duckdb.registry import DuckDBRegistry
from shopfloor.storage.postgres.backup import PgBackup
from shopfloor.storage.postgres.database import PgDatabase
from shopfloor.storage.postgres.historian import PostgresHistorian
from shopfloor.storage.postgres.registry import PostgresRegistry
from tests.conftest import need

with warnings.catch_warnings():  # starlette 1.x would rather have httpx2; httpx is what we ship
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration

V1 = "/api/v1"
PRESS = [MeasurementDef("temperature", "degC"), MeasurementDef("power", "kW")]
PRELOAD = 2_000_000  # samples already stored, so the copy takes long enough for writes to overlap it


# ---- DuckDB: a running API with ingest -----------------------------------------------------------


@dataclass
class Server:
    db: Database
    registry: RegistryService
    historian: DuckDBHistorian
    cache: RegistryCache
    stats: IngestStats
    client: TestClient
    root: str
    ctx: TenantContext
    line_id: int
    device: str
    topic: str

    def machine(self, name: str) -> int:
        m = self.registry.create_asset(self.ctx, Level.MACHINE, name, parent_id=self.line_id, type_name="press")
        return m.id


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    db = Database(tmp_path / "live" / "shopfloor.duckdb")
    repo = DuckDBRegistry(db)
    historian = DuckDBHistorian(db)
    clock = SystemClock()
    stats = IngestStats(clock)
    cache = RegistryCache(repo, clock)
    registry = RegistryService(repo)
    services = ApiServices(registry, PlantService(registry), HistoryService(registry, historian),
                           TokenAuthenticator(repo), stats, invalidate=cache.invalidate,
                           backup=DuckDBBackup(db.path, db), export=ExportService(registry, historian))
    client = TestClient(create_app(services), raise_server_exceptions=False)
    root = registry.issue_platform_token("root").secret
    registry.create_tenant(PLATFORM, "acme")
    _, token = registry.create_token(PLATFORM, "eng", Role.ENGINEER, tenant_slug="acme")
    ctx = TokenAuthenticator(repo).context_for(token)
    registry.put_asset_type(ctx, "press", measurements=PRESS)
    site = registry.create_asset(ctx, Level.SITE, "berlin", timezone="Europe/Berlin")
    area = registry.create_asset(ctx, Level.AREA, "press-shop", parent_id=site.id)
    line = registry.create_asset(ctx, Level.LINE, "line-1", parent_id=area.id)
    m1 = registry.create_asset(ctx, Level.MACHINE, "press-01", parent_id=line.id, type_name="press")
    dev, _ = registry.create_device(ctx, "plc-1", [m1.id])
    yield Server(db, registry, historian, cache, stats, client, root, ctx, line.id, dev.username,
                 "shopfloor/v1/acme/berlin/press-shop/line-1/press-01/telemetry")
    client.close()
    historian.close()
    db.close()


def _preload(historian: DuckDBHistorian, series_id: int, n: int) -> None:
    start = now_us() - 20 * 86_400 * 1_000_000
    for lo in range(0, n, 500_000):
        b = IngestBatch()
        b.samples.series_id = [series_id] * min(500_000, n - lo)
        b.samples.ts_us = [start + (lo + i) * 1_000 for i in range(len(b.samples.series_id))]
        b.samples.value = [float(i % 100) for i in range(len(b.samples.series_id))]
        b.samples.text = [None] * len(b.samples.series_id)
        b.samples.quality = [0] * len(b.samples.series_id)
        historian.commit(b)


class Writers:
    """Ingest (MQTT-like messages through the ingest service) and registry writes, until stopped."""

    def __init__(self, s: Server) -> None:
        self.s = s
        self.stop = threading.Event()
        self.commit_times: list[float] = []
        self.machines = 0
        self.errors: list[BaseException] = []
        self._threads = [threading.Thread(target=self._ingest), threading.Thread(target=self._registry)]

    def __enter__(self) -> Writers:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(30)
        assert not self.errors, self.errors

    def _ingest(self) -> None:
        async def run() -> None:
            svc = IngestService(self.s.historian, self.s.cache, SystemClock(), self.s.stats)
            try:
                i = 0
                while not self.stop.is_set():
                    ts = int(time.time() * 1000)
                    msgs = [RawMessage(self.s.device, self.s.topic,
                                       json.dumps({"ts": ts - k, "values": {"temperature": i + k,
                                                                           "power": k}}).encode(),
                                       now_us()) for k in range(50)]
                    await svc.submit_messages(msgs)
                    self.commit_times.append(time.perf_counter())
                    i += 50
                    await asyncio.sleep(0.001)
            finally:
                svc.close()

        try:
            asyncio.run(run())
        except BaseException as exc:  # reported by __exit__
            self.errors.append(exc)

    def _registry(self) -> None:
        try:
            while not self.stop.is_set():
                self.machines += 1
                self.s.machine(f"m-{self.machines:05d}")
                time.sleep(0.002)
        except BaseException as exc:
            self.errors.append(exc)


def _per_seq(con: duckdb.DuckDBPyConnection, upto: int) -> dict[int, int]:
    rows = con.execute("SELECT seq, count(*) FROM samples WHERE seq <= ? GROUP BY seq", [upto]).fetchall()
    return {int(a): int(b) for a, b in rows}


def _assert_consistent_duckdb(restored: Path, live: Database, last_seq: int) -> None:
    con = duckdb.connect(str(restored), read_only=True)
    try:
        assert con.execute("SELECT last_seq FROM historian_seq").fetchall() == [(last_seq,)]
        assert con.execute("SELECT max(seq) FROM samples").fetchall()[0][0] <= last_seq
        # every commit up to last_seq is there, completely; nothing after it
        assert _per_seq(con, 2**62) == _per_seq(live.cursor(), last_seq)
        # registry and history agree: no sample of a series the registry does not know
        orphans = con.execute("SELECT count(*) FROM samples WHERE series_id NOT IN (SELECT id FROM series)")
        assert orphans.fetchall() == [(0,)]
        assert con.execute("SELECT count(*) FROM series WHERE asset_id NOT IN (SELECT id FROM assets)"
                           ).fetchall() == [(0,)]
        # the registry holds a prefix of what the live one holds
        restored_assets = {r[0] for r in con.execute("SELECT id FROM assets").fetchall()}
        live_assets = {r[0] for r in live.cursor().execute("SELECT id FROM assets").fetchall()}
        assert restored_assets <= live_assets
        assert restored_assets == set(range(1, max(restored_assets) + 1))
    finally:
        con.close()


def test_duckdb_backup_through_the_api_while_writing_restores_consistently(server: Server, tmp_path: Path) -> None:
    [m1] = server.registry.list_assets(server.ctx, Level.MACHINE)
    first_series = server.registry.series_of(server.ctx, m1.id)[0].id
    _preload(server.historian, first_series, PRELOAD)
    with Writers(server) as w:
        while len(w.commit_times) < 5 or w.machines < 5:
            time.sleep(0.01)
        t0 = time.perf_counter()
        r = server.client.post(f"{V1}/admin/backup", headers={"Authorization": f"Bearer {server.root}"})
        t1 = time.perf_counter()
        time.sleep(0.1)
    assert r.status_code == 200, r.text
    during = [t for t in w.commit_times if t0 < t < t1]
    assert during, "ingest was blocked while the backup ran"
    print(f"backup {t1 - t0:.2f} s, {len(during)} ingest commits during it")
    last_seq = int(r.headers["x-shopfloor-last-seq"])
    assert server.historian.last_seq() > last_seq  # writing went on after the snapshot
    assert r.headers["x-shopfloor-store"] == "duckdb"
    assert r.headers["x-shopfloor-sha256"] == hashlib.sha256(r.content).hexdigest()
    assert r.headers["content-disposition"].startswith('attachment; filename="shopfloor-')
    assert r.headers["content-disposition"].endswith('.duckdb"')
    assert int(r.headers["content-length"]) == len(r.content)
    assert [p for p in Path(server.db.path).parent.iterdir() if p.name.startswith(".backup-")] == []
    backup = tmp_path / "backup.duckdb"
    backup.write_bytes(r.content)

    target = tmp_path / "restored" / "shopfloor.duckdb"
    info = DuckDBBackup(target).restore_from(backup)
    assert info.last_seq == last_seq and info.kept_aside is None
    _assert_consistent_duckdb(target, server.db, last_seq)

    # the restored file is a working store: it opens, and ingest carries on after the backup's sequence
    db = Database(target)
    try:
        historian = DuckDBHistorian(db)
        registry = RegistryService(DuckDBRegistry(db))
        assert historian.last_seq() == last_seq
        assert [t.slug for t in registry.list_tenants(PLATFORM)] == ["acme"]
        b = IngestBatch()
        b.samples.add(first_series, now_us(), 1.0)
        assert historian.commit(b) == last_seq + 1
        machine = registry.create_asset(server.ctx, Level.MACHINE, "after-restore", parent_id=server.line_id,
                                        type_name="press")
        assert machine.id > max(a.id for a in registry.list_assets(server.ctx) if a.id != machine.id)
    finally:
        db.close()


def test_duckdb_backup_needs_the_platform_admin(server: Server) -> None:
    _, token = server.registry.create_token(PLATFORM, "admin", Role.ADMIN, tenant_slug="acme")
    r = server.client.post(f"{V1}/admin/backup", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403 and r.headers["content-type"].startswith("application/problem+json")
    assert server.client.post(f"{V1}/admin/backup").status_code == 401


def test_backup_not_configured_is_503(tmp_path: Path) -> None:
    db = Database(tmp_path / "shopfloor.duckdb")
    try:
        repo = DuckDBRegistry(db)
        historian = DuckDBHistorian(db)
        registry = RegistryService(repo)
        services = ApiServices(registry, PlantService(registry), HistoryService(registry, historian),
                               TokenAuthenticator(repo), IngestStats(SystemClock()))
        root = registry.issue_platform_token("root").secret
        with TestClient(create_app(services), raise_server_exceptions=False) as client:
            r = client.post(f"{V1}/admin/backup", headers={"Authorization": f"Bearer {root}"})
        assert r.status_code == 503 and r.json()["detail"] == "backups are not configured on this server"
    finally:
        db.close()


def test_duckdb_restore_refuses_a_file_in_use_and_keeps_the_old_one_aside(server: Server, tmp_path: Path) -> None:
    backup = tmp_path / "b.duckdb"
    info = DuckDBBackup(server.db.path, server.db).backup_to(backup)
    assert info.size_bytes == backup.stat().st_size
    with pytest.raises(Conflict, match="exists already"):
        DuckDBBackup(server.db.path, server.db).backup_to(backup)
    busy = DuckDBBackup(server.db.path, server.db)
    with busy._busy, pytest.raises(Conflict, match="running already"):  # as while another request runs
        busy.backup_to(tmp_path / "second.duckdb")
    live = Path(server.db.path)
    with pytest.raises(Conflict, match="stop the server"):
        DuckDBBackup(live).restore_from(backup, replace=True)
    with pytest.raises(Conflict, match="needs the server stopped"):
        DuckDBBackup(live, server.db).restore_from(backup)
    server.historian.close()
    server.db.close()
    with pytest.raises(Conflict, match="--replace"):
        DuckDBBackup(live).restore_from(backup)
    wal = live.with_name(live.name + ".wal")
    wal.write_bytes(b"a log of the old file")  # as after a crash
    done = DuckDBBackup(live).restore_from(backup, replace=True)
    assert done.kept_aside is not None
    kept = Path(done.kept_aside)
    assert kept.exists() and kept.name.startswith("shopfloor.before-restore-") and kept.suffix == ".duckdb"
    assert not wal.exists() and kept.with_name(kept.name + ".wal").read_bytes() == b"a log of the old file"
    assert live.read_bytes() == backup.read_bytes()


def test_duckdb_offline_backup_and_bad_backup_files(tmp_path: Path) -> None:
    db = Database(tmp_path / "live.duckdb")
    DuckDBRegistry(db)
    DuckDBHistorian(db)
    db.close()
    info = DuckDBBackup(tmp_path / "live.duckdb").backup_to(tmp_path / "offline.duckdb")
    assert info.last_seq == 0
    not_ours = tmp_path / "other.duckdb"
    duckdb.connect(str(not_ours)).close()
    for bad, message in ((tmp_path / "missing.duckdb", "no file"), (not_ours, "not a shopfloor database")):
        with pytest.raises(InvalidInput, match=message):
            DuckDBBackup(tmp_path / "x.duckdb").restore_from(bad)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(InvalidInput, match="not a DuckDB database file"):
        DuckDBBackup(tmp_path / "x.duckdb").restore_from(text)


# ---- PostgreSQL: pg_dump while writers commit, pg_restore into a new schema ----------------------

def _pg_commit(historian: PostgresHistorian, series_ids: list[int], rows: int) -> int:
    b = IngestBatch()
    base = now_us()
    for i in range(rows):
        b.samples.add(series_ids[i % len(series_ids)], base + i, float(i))
    return historian.commit(b)


def _pg_counts(dsn: str, schema: str, upto: int) -> dict[int, int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f'SELECT seq, count(*) FROM "{schema}".samples WHERE seq <= %s GROUP BY seq',
                            [upto]).fetchall()
    return {int(a): int(b) for a, b in rows}


@pytest.fixture
def pg_schemas(pg_schema: tuple[str, str]) -> Iterator[tuple[str, str, list[str]]]:
    """(dsn, schema, more): ``more`` collects further schemas this test makes, dropped afterwards."""
    dsn, schema = pg_schema
    more: list[str] = []
    yield dsn, schema, more
    with psycopg.connect(dsn, autocommit=True) as conn:
        for s in more:
            conn.execute(f'DROP SCHEMA IF EXISTS "{s}" CASCADE')


def test_postgres_dump_while_writing_restores_into_a_new_schema(pg_schemas: tuple[str, str, list[str]],
                                                                 tmp_path: Path) -> None:
    dsn, schema, more = pg_schemas
    need(shutil.which("pg_dump") is not None and shutil.which("pg_restore") is not None, "pg_dump and pg_restore")
    db = PgDatabase(dsn, schema)
    repo = PostgresRegistry(db)
    historian = PostgresHistorian(db)
    registry = RegistryService(repo)
    registry.create_tenant(PLATFORM, "acme")
    _, token = registry.create_token(PLATFORM, "eng", Role.ENGINEER, tenant_slug="acme")
    ctx = TokenAuthenticator(repo).context_for(token)
    registry.put_asset_type(ctx, "press", measurements=PRESS)
    site = registry.create_asset(ctx, Level.SITE, "berlin")
    area = registry.create_asset(ctx, Level.AREA, "a", parent_id=site.id)
    line = registry.create_asset(ctx, Level.LINE, "l", parent_id=area.id)
    stop = threading.Event()
    errors: list[BaseException] = []
    series: list[int] = []

    def registry_writer() -> None:
        try:
            n = 0
            while not stop.is_set():
                n += 1
                m = registry.create_asset(ctx, Level.MACHINE, f"m-{n:05d}", parent_id=line.id, type_name="press")
                series.extend(s.id for s in registry.series_of(ctx, m.id))
        except BaseException as exc:
            errors.append(exc)

    def history_writer() -> None:
        try:
            while not stop.is_set():
                if series:
                    _pg_commit(historian, series[-4:], 200)  # samples of the newest series
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=registry_writer), threading.Thread(target=history_writer)]
    for t in threads:
        t.start()
    try:
        while len(series) < 10:
            time.sleep(0.01)
        dump = tmp_path / "backup.dump"
        info = PgBackup(dsn, schema).backup_to(dump)
        time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors
    assert info.store == "postgresql" and info.last_seq is not None and info.size_bytes > 0
    live_seq = _pg_commit(historian, series[:1], 1)
    assert live_seq > info.last_seq + 1  # writing went on after the snapshot
    db.close()

    # a new schema while the original is still there: the dump's own name is taken
    target = f"{schema}_r"
    more.append(target)
    with pytest.raises(Conflict, match="exists in this database"):
        PgBackup(dsn, target).restore_from(dump)
    # moved aside (as an operator would), the dump restores under a new name
    aside = f"{schema}_live"
    more.append(aside)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'ALTER SCHEMA "{schema}" RENAME TO "{aside}"')
    restored = PgBackup(dsn, target).restore_from(dump)
    assert restored.last_seq == info.last_seq

    assert _pg_counts(dsn, target, 2**62) == _pg_counts(dsn, aside, info.last_seq)
    with psycopg.connect(dsn) as conn:
        assert conn.execute(f'SELECT count(*) FROM "{target}".samples WHERE series_id NOT IN '
                            f'(SELECT id FROM "{target}".series)').fetchone() == (0,)
        restored_assets = {r[0] for r in conn.execute(f'SELECT id FROM "{target}".assets').fetchall()}
        live_assets = {r[0] for r in conn.execute(f'SELECT id FROM "{aside}".assets').fetchall()}
        assert restored_assets <= live_assets

    # the restored schema is a working store; its sequences carry on past the restored ids
    rdb = PgDatabase(dsn, target)
    try:
        rregistry = RegistryService(PostgresRegistry(rdb))
        rhistorian = PostgresHistorian(rdb)
        assert rhistorian.last_seq() == info.last_seq
        m = rregistry.create_asset(ctx, Level.MACHINE, "after-restore", parent_id=line.id, type_name="press")
        assert m.id > max(restored_assets)
        assert _pg_commit(rhistorian, [s.id for s in rregistry.series_of(ctx, m.id)], 3) == info.last_seq + 1
        assert rhistorian.count_samples() == sum(_pg_counts(dsn, target, 2**62).values())
    finally:
        rdb.close()


def test_postgres_restore_refuses_data_unless_replace(pg_schemas: tuple[str, str, list[str]],
                                                      tmp_path: Path) -> None:
    dsn, schema, more = pg_schemas
    db = PgDatabase(dsn, schema)
    PostgresHistorian(db)
    registry = RegistryService(PostgresRegistry(db))
    registry.create_tenant(PLATFORM, "acme")
    dump = tmp_path / "b.dump"
    first = PgBackup(dsn, schema).backup_to(dump)
    assert first.last_seq == 0
    registry.create_tenant(PLATFORM, "later")
    db.close()
    with pytest.raises(Conflict, match="holds data"):
        PgBackup(dsn, schema).restore_from(dump)
    done = PgBackup(dsn, schema).restore_from(dump, replace=True)
    assert done.kept_aside is not None and done.kept_aside.startswith(f"{schema}_before_restore_")
    more.append(done.kept_aside)
    with psycopg.connect(dsn) as conn:
        assert conn.execute(f'SELECT slug FROM "{schema}".tenants ORDER BY slug').fetchall() == [("acme",)]
        kept: Any = conn.execute(f'SELECT slug FROM "{done.kept_aside}".tenants ORDER BY slug').fetchall()
        assert kept == [("acme",), ("later",)]
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(InvalidInput, match="not a pg_dump archive"):
        PgBackup(dsn, schema).restore_from(text)
    with pytest.raises(InvalidInput, match="no schema"):
        PgBackup(dsn, f"{schema}_nothing").backup_to(tmp_path / "none.dump")
    assert not (tmp_path / "none.dump").exists()
    busy = PgBackup(dsn, schema)
    with busy._busy, pytest.raises(Conflict, match="running already"):
        busy.backup_to(tmp_path / "second.dump")
