"""The backup, restore and export commands: against the real API app (in-process, through the
ApiClient's transport), and against a mock transport for what a server should never send."""

from __future__ import annotations

import csv
import hashlib
import io
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from shopfloor import cli_ops
from shopfloor.api.app import create_app
from shopfloor.api.deps import ApiServices
from shopfloor.cli import app
from shopfloor.client import ApiClient
from shopfloor.domain.assets import Level, MeasurementDef
from shopfloor.domain.errors import Conflict, ShopfloorError
from shopfloor.domain.records import IngestBatch
from shopfloor.domain.tenancy import Role
from shopfloor.domain.timeutil import parse_ts
from shopfloor.services.auth import TokenAuthenticator
from shopfloor.services.clock import SystemClock
from shopfloor.services.export import COLUMNS, ExportService
from shopfloor.services.history import HistoryService
from shopfloor.services.plant import PlantService
from shopfloor.services.registry import PLATFORM, RegistryService
from shopfloor.services.stats import IngestStats
from shopfloor.storage.duckdb.backup import DuckDBBackup
from shopfloor.storage.duckdb.database import Database
from shopfloor.storage.duckdb.historian import DuckDBHistorian
from shopfloor.storage.duckdb.registry import DuckDBRegistry
from shopfloor.storage.postgres.backup import PgBackup
from shopfloor.storage.postgres.database import PgDatabase
from shopfloor.storage.postgres.registry import PostgresRegistry
from tests.conftest import need

with warnings.catch_warnings():
    from starlette.exceptions import StarletteDeprecationWarning

    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration

T0 = parse_ts("2026-11-23T08:00:00Z")
S = 1_000_000


@dataclass
class Cli:
    runner: CliRunner
    root: str
    viewer: str
    series: int
    line: int
    db: Database
    historian: DuckDBHistorian

    def run(self, *args: str) -> tuple[int, str, str, BaseException | None]:
        r = self.runner.invoke(app, list(args))
        return r.exit_code, r.stdout, r.stderr, r.exception


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    db = Database(tmp_path / "live" / "shopfloor.duckdb")
    repo = DuckDBRegistry(db)
    historian = DuckDBHistorian(db)
    registry = RegistryService(repo)
    services = ApiServices(registry, PlantService(registry), HistoryService(registry, historian),
                           TokenAuthenticator(repo), IngestStats(SystemClock()),
                           backup=DuckDBBackup(db.path, db), export=ExportService(registry, historian))
    api = create_app(services)

    def client(url: str | None, token: str | None) -> ApiClient:
        c = ApiClient(url or "http://testserver", token)
        c.http.close()
        c.http = TestClient(api, base_url="http://testserver/api/v1",
                            headers={"Authorization": f"Bearer {token}"}, raise_server_exceptions=False)
        return c

    monkeypatch.setattr(cli_ops, "api_client", client)
    monkeypatch.chdir(tmp_path)
    root = registry.issue_platform_token("root").secret
    registry.create_tenant(PLATFORM, "acme")
    _, eng = registry.create_token(PLATFORM, "eng", Role.ENGINEER, tenant_slug="acme")
    _, viewer = registry.create_token(PLATFORM, "viewer", Role.VIEWER, tenant_slug="acme")
    ctx = TokenAuthenticator(repo).context_for(eng)
    registry.put_asset_type(ctx, "press", measurements=[MeasurementDef("temperature", "degC")])
    site = registry.create_asset(ctx, Level.SITE, "berlin")
    area = registry.create_asset(ctx, Level.AREA, "a", parent_id=site.id)
    line = registry.create_asset(ctx, Level.LINE, "l", parent_id=area.id)
    m = registry.create_asset(ctx, Level.MACHINE, "press-01", parent_id=line.id, type_name="press")
    [series] = registry.series_of(ctx, m.id)
    b = IngestBatch()
    for i in range(100):
        b.samples.add(series.id, T0 + i * S, float(i))
    historian.commit(b)
    yield Cli(CliRunner(), root, viewer, series.id, line.id, db, historian)
    historian.close()
    db.close()


def test_backup_then_restore_into_another_data_folder(cli: Cli, tmp_path: Path) -> None:
    code, _, err, exc = cli.run("backup", "--token", cli.root, "-o", str(tmp_path))
    assert code == 0, (err, exc)
    [made] = list(tmp_path.glob("shopfloor-*.duckdb"))
    assert "backup of the duckdb store written to" in err and "up to ingest commit 1" in err
    assert not list(tmp_path.glob("*.part"))
    code, _, err, exc = cli.run("restore", str(made), "--data-dir", str(tmp_path / "restored"))
    assert code == 0, (err, exc)
    assert "(up to ingest commit 1)" in err
    db = Database(tmp_path / "restored" / "shopfloor.duckdb")
    try:
        assert DuckDBHistorian(db).count_samples([cli.series]) == 100
        assert [t.slug for t in RegistryService(DuckDBRegistry(db)).list_tenants(PLATFORM)] == ["acme"]
    finally:
        db.close()
    # again: the folder now holds a database, which --replace keeps aside
    code, _, _, exc = cli.run("restore", str(made), "--data-dir", str(tmp_path / "restored"))
    assert isinstance(exc, Conflict) and "--replace" in exc.message
    code, _, err, exc = cli.run("restore", str(made), "--data-dir", str(tmp_path / "restored"), "--replace")
    assert code == 0, (err, exc)
    assert "kept as" in err and "shopfloor.before-restore-" in err


def test_backup_refusals(cli: Cli, tmp_path: Path) -> None:
    _, _, _, exc = cli.run("backup", "--token", cli.viewer)
    assert isinstance(exc, ShopfloorError) and exc.message.startswith("403: ")
    (tmp_path / "taken.duckdb").write_text("mine")
    _, _, _, exc = cli.run("backup", "--token", cli.root, "-o", str(tmp_path / "taken.duckdb"))
    assert isinstance(exc, ShopfloorError) and "exists" in exc.message
    assert (tmp_path / "taken.duckdb").read_text() == "mine"
    _, _, _, exc = cli.run("restore", str(tmp_path / "taken.duckdb"), "--data-dir", str(tmp_path / "live"))
    assert isinstance(exc, ShopfloorError) and "neither a DuckDB backup nor a pg_dump archive" in exc.message
    # the live database is open (here: in this process, as it would be in the server's)
    good = tmp_path / "good.duckdb"
    DuckDBBackup(cli.db.path, cli.db).backup_to(good)
    _, _, _, exc = cli.run("restore", str(good), "--data-dir", str(tmp_path / "live"), "--replace")
    assert isinstance(exc, Conflict) and "stop the server" in exc.message


def test_export_csv_to_stdout_and_parquet_to_a_folder(cli: Cli, tmp_path: Path) -> None:
    window = ["--from", "2026-11-23T08:00:00Z", "--to", "2026-11-23T08:01:00Z"]
    code, out, err, exc = cli.run("export", "--series-id", str(cli.series), *window, "--token", cli.viewer)
    assert code == 0, (err, exc)
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == list(COLUMNS) and len(rows) == 61
    assert rows[1][:5] == ["2026-11-23T08:00:00.000000Z", "berlin/a/l/press-01", "temperature", "degC", "0.0"]
    code, _, err, exc = cli.run("export", "--asset-id", str(cli.line), *window, "--format", "parquet",
                                "-o", str(tmp_path), "--token", cli.viewer)
    assert code == 0, (err, exc)
    [made] = list(tmp_path.glob("history-*.parquet"))
    assert made.name == "history-20261123T080000Z-20261123T080100Z.parquet"
    assert pq.read_table(made).num_rows == 60
    code, _, _, exc = cli.run("export", *window, "--token", cli.viewer)
    assert isinstance(exc, ShopfloorError) and "--series-id or --asset-id" in exc.message
    code, _, _, exc = cli.run("export", "--series-id", "999", "--token", cli.viewer)
    assert isinstance(exc, ShopfloorError) and exc.message == "404: no series 999"


def _mock(handler: Callable[[httpx.Request], httpx.Response]) -> Callable[[str | None, str | None], ApiClient]:
    def client(url: str | None, token: str | None) -> ApiClient:
        c = ApiClient("http://mock", token)
        c.http.close()
        c.http = httpx.Client(base_url="http://mock/api/v1", transport=httpx.MockTransport(handler))
        return c

    return client


def test_a_damaged_or_cut_backup_is_not_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    body = b"DUCK" * 1000
    good = hashlib.sha256(body).hexdigest()
    runner = CliRunner()
    for headers, message in (({"x-shopfloor-sha256": "0" * 64}, "does not match the server's SHA-256"),
                             ({"x-shopfloor-sha256": good, "content-length": str(len(body) + 10)},
                              "broke off")):
        def handler(_: httpx.Request, headers: dict[str, str] = headers) -> httpx.Response:
            return httpx.Response(200, content=body, headers={
                "content-disposition": 'attachment; filename="shopfloor-x.duckdb"', **headers})

        monkeypatch.setattr(cli_ops, "api_client", _mock(handler))
        r = runner.invoke(app, ["backup", "--token", "sft_x"])
        assert isinstance(r.exception, ShopfloorError) and message in r.exception.message
        assert list(tmp_path.iterdir()) == []


def test_a_server_that_cannot_be_reached(monkeypatch: pytest.MonkeyPatch) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    monkeypatch.setattr(cli_ops, "api_client", _mock(handler))
    r = CliRunner().invoke(app, ["export", "--series-id", "1", "--token", "sft_x"])
    assert isinstance(r.exception, ShopfloorError) and "cannot reach http://mock" in r.exception.message


def test_restore_a_postgres_dump(pg_schema: tuple[str, str], tmp_path: Path) -> None:
    need(shutil.which("pg_restore") is not None, "pg_restore")
    dsn, schema = pg_schema
    db = PgDatabase(dsn, schema)
    RegistryService(PostgresRegistry(db)).create_tenant(PLATFORM, "acme")
    db.close()
    dump = tmp_path / "b.dump"
    PgBackup(dsn, schema).backup_to(dump)
    runner = CliRunner()
    # without --pg-dsn the database_url setting is the target (here one that does not exist)
    r = runner.invoke(app, ["restore", str(dump), "--pg-schema", schema],
                      env={"SHOPFLOOR_PG_DSN": "", "SHOPFLOOR_DATABASE_URL": "host=127.0.0.1 dbname=no_such_db"})
    assert isinstance(r.exception, ShopfloorError) and "no_such_db" in r.exception.message
    r = runner.invoke(app, ["restore", str(dump)],
                      env={"SHOPFLOOR_DATABASE_URL": dsn, "SHOPFLOOR_DATABASE_SCHEMA": schema})
    assert isinstance(r.exception, Conflict) and "holds data" in r.exception.message
    r = runner.invoke(app, ["restore", str(dump), "--pg-dsn", dsn, "--pg-schema", schema, "--replace"])
    assert r.exit_code == 0, (r.stderr, r.exception)
    kept = r.stderr.split("kept as ")[1].split()[0]
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute(f'SELECT slug FROM "{schema}".tenants').fetchall() == [("acme",)]
        conn.execute(f'DROP SCHEMA "{kept}" CASCADE')


class _Cut(httpx.SyncByteStream):
    def __iter__(self) -> Iterator[bytes]:
        yield b"PAR1" * 100
        raise httpx.ReadError("connection reset")


def test_a_transfer_cut_midway_leaves_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)

    def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Cut(),
                              headers={"content-disposition": 'attachment; filename="history-x.parquet"'})

    monkeypatch.setattr(cli_ops, "api_client", _mock(handler))
    r = CliRunner().invoke(app, ["export", "--series-id", "1", "--format", "parquet", "--token", "sft_x"])
    assert isinstance(r.exception, ShopfloorError)
    assert r.exception.message == "the transfer from http://mock broke off: connection reset"
    assert list(tmp_path.iterdir()) == []
