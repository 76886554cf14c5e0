"""The registry contract on PostgreSQL, plus what only a shared server can show: reopening, several
processes (each with its own pool) writing at once, and values only PostgreSQL refuses."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import pytest

from shopfloor.domain.assets import Level, ValueType
from shopfloor.domain.errors import Conflict, InvalidInput, ShopfloorError
from shopfloor.domain.tenancy import Role
from shopfloor.domain.timeutil import from_us
from shopfloor.ports.registry import RegistryRepository
from shopfloor.storage.postgres.database import PgDatabase
from shopfloor.storage.postgres.registry import MIGRATIONS, PostgresRegistry
from shopfloor.testing.fakes import FixedClock
from shopfloor.testing.registry_contract import RegistryContract, make_plant, press_type

T = TypeVar("T")


@pytest.fixture
def two_pools(pg_schema: tuple[str, str]) -> Iterator[tuple[PostgresRegistry, PostgresRegistry]]:
    """Two registries on one schema with separate pools: two processes, as the database sees them."""
    dsn, schema = pg_schema
    first, second = PgDatabase(dsn, schema, max_size=4), PgDatabase(dsn, schema, max_size=4)
    try:
        yield PostgresRegistry(first), PostgresRegistry(second)
    finally:
        first.close()
        second.close()


class TestPostgresRegistry(RegistryContract):
    @pytest.fixture
    def registry(self, pg_schema: tuple[str, str]) -> Iterator[RegistryRepository]:
        dsn, schema = pg_schema
        db = PgDatabase(dsn, schema)
        yield PostgresRegistry(db)
        db.close()


def test_postgres_registry_survives_reopen(pg_schema: tuple[str, str]) -> None:
    dsn, schema = pg_schema
    db = PgDatabase(dsn, schema)
    reg = PostgresRegistry(db)
    p = make_plant(reg)
    t = p.tenant.id
    asset_type = reg.put_asset_type(press_type(t))
    series = reg.ensure_series(t, p.machine.id, "temperature", "degC", ValueType.NUMERIC)
    device = reg.create_device(t, "plc-1", "acme.plc-1", "h", [p.machine.id, p.line.id], gateway=True)
    token = reg.create_token(t, "ci", Role.ADMIN, "h-ci")
    spare = reg.create_asset(t, p.line.id, Level.MACHINE, "spare")
    reg.delete_asset(t, spare.id)
    version = reg.version()
    db.close()

    db = PgDatabase(dsn, schema)
    reg = PostgresRegistry(db)  # migrating again is a no-op
    try:
        assert db.version("registry") == len(MIGRATIONS)
        assert reg.version() == version
        assert reg.get_tenant(t) == p.tenant
        assert reg.list_assets(t) == [p.site, p.area, p.line, p.machine]
        assert reg.find_asset(t, p.machine.path) == p.machine
        assert reg.get_asset_type(t, "press") == asset_type
        assert reg.get_series(t, series.id) == series
        assert reg.get_device(t, device.id) == device
        assert reg.find_token("h-ci") == token

        tenant2 = reg.create_tenant("globex", "Globex")
        machine2 = reg.create_asset(t, p.line.id, Level.MACHINE, "press-02")
        series2 = reg.ensure_series(t, machine2.id, "temperature", "degC", ValueType.NUMERIC)
        device2 = reg.create_device(t, "plc-2", "acme.plc-2", "h", [])
        token2 = reg.create_token(None, "root", Role.ADMIN, "h-root")
        assert tenant2.id > t
        assert machine2.id > spare.id
        assert series2.id > series.id
        assert device2.id > device.id
        assert token2.id > token.id
        assert reg.version() > version
    finally:
        db.close()


def _race(first: Callable[[], T], second: Callable[[], T]) -> list[T | ShopfloorError]:
    """Run both calls at (nearly) the same moment; return each one's result or ShopfloorError."""
    barrier = threading.Barrier(2)

    def run(call: Callable[[], T]) -> T | ShopfloorError:
        barrier.wait()
        try:
            return call()
        except ShopfloorError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(run, [first, second]))


def test_two_processes_creating_the_same_device_make_one(
        two_pools: tuple[PostgresRegistry, PostgresRegistry]) -> None:
    a, b = two_pools
    p = make_plant(a)
    t = p.tenant.id
    for i in range(20):
        name = f"plc-{i}"
        outcomes = _race(partial(a.create_device, t, name, f"acme.{name}", "h-a", [p.machine.id]),
                         partial(b.create_device, t, name, f"acme.{name}", "h-b", [p.line.id]))
        made = [o for o in outcomes if not isinstance(o, ShopfloorError)]
        refused = [o for o in outcomes if isinstance(o, ShopfloorError)]
        assert len(made) == 1 and len(refused) == 1, outcomes
        assert isinstance(refused[0], Conflict)
        assert a.find_device(t, name) == b.find_device(t, name) == made[0]
    assert len(b.list_devices(t)) == 20


_WORKER = """
import json, sys
from shopfloor.domain.errors import Conflict
from shopfloor.storage.postgres.database import PgDatabase
from shopfloor.storage.postgres.registry import MIGRATIONS, PostgresRegistry

dsn, schema, tenant_id, asset_id, seen = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
db = PgDatabase(dsn, schema, max_size=2)
reg = PostgresRegistry(db)
print("ready", flush=True)
sys.stdin.readline()  # start together
made, refused = [], 0
for i in range(30):
    try:
        made.append(reg.create_device(tenant_id, f"plc-{i}", f"acme.plc-{i}", "h", [asset_id]).id)
    except Conflict:
        refused += 1
print(json.dumps({"made": made, "refused": refused, "version_rose": reg.version() > seen}))
db.close()
"""


def test_two_os_processes_creating_the_same_devices_make_each_once(pg_schema: tuple[str, str]) -> None:
    dsn, schema = pg_schema
    db = PgDatabase(dsn, schema)  # creates the schema before the workers start
    try:
        reg = PostgresRegistry(db)
        p = make_plant(reg)
        args = [dsn, schema, str(p.tenant.id), str(p.machine.id), str(reg.version())]
        workers = [subprocess.Popen([sys.executable, "-c", _WORKER, *args], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True) for _ in range(2)]
        for w in workers:
            assert w.stdout is not None and w.stdout.readline().strip() == "ready"
        for w in workers:
            assert w.stdin is not None
            w.stdin.write("go\n")
            w.stdin.flush()
        results = [json.loads(w.communicate(timeout=120)[0]) for w in workers]
        assert all(w.returncode == 0 for w in workers)
        made = [i for r in results for i in r["made"]]
        assert len(made) == len(set(made)) == 30
        assert sum(r["refused"] for r in results) == 30
        assert all(r["version_rose"] for r in results)
        devices = reg.list_devices(p.tenant.id)
        assert sorted(d.id for d in devices) == sorted(made)
        assert all(d.asset_ids == (p.machine.id,) for d in devices)
    finally:
        db.close()


def test_two_processes_race_on_tenants_assets_and_series(
        two_pools: tuple[PostgresRegistry, PostgresRegistry]) -> None:
    a, b = two_pools
    outcomes = _race(lambda: a.create_tenant("acme", "ACME"), lambda: b.create_tenant("acme", "ACME too"))
    assert sorted(type(o).__name__ for o in outcomes) == ["Conflict", "Tenant"]
    tenant = a.find_tenant("acme")
    assert tenant is not None
    t = tenant.id
    site = b.create_asset(t, None, Level.SITE, "berlin")
    areas = _race(lambda: a.create_asset(t, site.id, Level.AREA, "press-shop"),
                  lambda: b.create_asset(t, site.id, Level.AREA, "press-shop"))
    assert sorted(type(o).__name__ for o in areas) == ["Asset", "Conflict"]
    area = a.find_asset(t, ("berlin", "press-shop"))
    assert area is not None
    for i in range(10):
        s1, s2 = _race(partial(a.ensure_series, t, area.id, f"m{i}", "kW", ValueType.NUMERIC),
                       partial(b.ensure_series, t, area.id, f"m{i}", "kW", ValueType.NUMERIC))
        assert s1 == s2
    assert len(a.list_series(t)) == 10


def test_ensure_series_written_meanwhile_by_another_process_bumps_nothing(
        two_pools: tuple[PostgresRegistry, PostgresRegistry], monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = two_pools
    p = make_plant(a)
    t = p.tenant.id
    monkeypatch.setattr(a, "_one", lambda sql, params=(): None)  # a's first read misses ...
    first = b.ensure_series(t, p.machine.id, "temperature", "degC", ValueType.NUMERIC)  # ... b writes
    version = b.version()
    assert a.ensure_series(t, p.machine.id, "temperature", "degC", ValueType.NUMERIC) == first
    assert b.version() == version
    assert b.list_series(t) == [first]


def test_every_process_sees_the_others_writes_in_the_version(
        two_pools: tuple[PostgresRegistry, PostgresRegistry]) -> None:
    a, b = two_pools
    before = b.version()
    tenant = a.create_tenant("acme", "ACME")
    assert b.version() > before  # a write by a is seen by b
    seen = a.version()
    site = b.create_asset(tenant.id, None, Level.SITE, "berlin")
    assert a.version() > seen
    assert a.get_asset(tenant.id, site.id) == site
    with pytest.raises(Conflict):
        b.create_asset(tenant.id, None, Level.SITE, "berlin")
    assert a.version() == b.version()  # a refused write bumps nothing


def test_timestamps_come_from_the_clock(pg_schema: tuple[str, str]) -> None:
    dsn, schema = pg_schema
    db = PgDatabase(dsn, schema)
    try:
        clock = FixedClock(1_700_000_000_123_456)
        reg = PostgresRegistry(db, clock=clock)
        tenant = reg.create_tenant("acme", "ACME")
        assert tenant.created_at == from_us(1_700_000_000_123_456)
        clock.advance(5_000_000)
        token = reg.create_token(tenant.id, "ci", Role.VIEWER, "h")
        device = reg.create_device(tenant.id, "plc", "acme.plc", "h", [])
        assert token.created_at == device.created_at == from_us(1_700_000_005_123_456)
        assert reg.get_device(tenant.id, device.id) == device
    finally:
        db.close()


def test_json_values_round_trip_exactly(pg_schema: tuple[str, str]) -> None:
    dsn, schema = pg_schema
    db = PgDatabase(dsn, schema)
    try:
        reg = PostgresRegistry(db)
        p = make_plant(reg)
        values = {"big": 1e23, "huge": 1.7976931348623157e308, "tiny": 5e-324, "neg": -2.5e20, "one": 1.0,
                  "int": 10**30, "text": "ünï ☃", "list": [1, 2.0, None, True, {"x": []}], "1": "a"}
        stored = reg.update_asset(p.tenant.id, p.machine.id, attributes=values)
        assert stored.attributes == values
        assert all(type(stored.attributes[k]) is type(v) for k, v in values.items())
        int_keys: dict[Any, Any] = {1: "int keys become text"}
        assert reg.update_asset(p.tenant.id, p.machine.id, attributes=int_keys).attributes == {
            "1": "int keys become text"}
    finally:
        db.close()


def test_values_postgresql_cannot_hold_are_invalid_input(pg_schema: tuple[str, str]) -> None:
    dsn, schema = pg_schema
    db = PgDatabase(dsn, schema)
    try:
        reg = PostgresRegistry(db)
        p = make_plant(reg)
        t = p.tenant.id
        version = reg.version()
        with pytest.raises(InvalidInput):
            reg.update_asset(t, p.machine.id, attributes={"nan": float("nan")})
        with pytest.raises(InvalidInput):
            reg.update_asset(t, p.machine.id, attributes={"nul": "a\x00b"})
        with pytest.raises(InvalidInput):
            reg.update_asset(t, p.machine.id, display_name="a\x00b")
        with pytest.raises(InvalidInput):
            reg.create_tenant("bad\x00slug", "Bad")
        with pytest.raises(InvalidInput):  # too long for a btree index entry, not an outage
            reg.create_asset(t, p.line.id, Level.MACHINE, "x" * 10_000 + "".join(map(str, range(3000))))
        assert reg.version() == version
        assert reg.find_tenant("acme\x00") is None
        assert reg.find_device_by_username("acme.\x00") is None
        assert reg.find_asset(t, ("berlin\x00",)) is None
        assert reg.get_asset(t, p.machine.id) == p.machine
    finally:
        db.close()


def test_the_database_refuses_what_the_code_would_refuse(pg_schema: tuple[str, str]) -> None:
    """The constraints hold on their own, for writers that bypass this class (or race it)."""
    import psycopg

    dsn, schema = pg_schema
    db = PgDatabase(dsn, schema)
    try:
        reg = PostgresRegistry(db)
        a = make_plant(reg, "acme")
        b = make_plant(reg, "globex")
        reg.create_device(a.tenant.id, "plc", "acme.plc", "h", [a.machine.id])
        bad: list[tuple[str, list[Any]]] = [
            # a parent in another tenant
            ("INSERT INTO assets (tenant_id, parent_id, level, name, path) VALUES (%s, %s, 'area', 'x', %s)",
             [b.tenant.id, a.site.id, ["berlin", "x"]]),
            # a path that does not end in the name
            ("INSERT INTO assets (tenant_id, parent_id, level, name, path) VALUES (%s, %s, 'area', 'x', %s)",
             [a.tenant.id, a.site.id, ["berlin", "y"]]),
            # a series of another tenant's asset
            ("INSERT INTO series (tenant_id, asset_id, measurement, type) VALUES (%s, %s, 'm', 'numeric')",
             [b.tenant.id, a.machine.id]),
            # deleting an asset bound to a device
            ("DELETE FROM assets WHERE id = %s", [a.machine.id]),
        ]
        for sql, params in bad:
            with pytest.raises(psycopg.errors.IntegrityError), db.connection() as conn:
                conn.execute(sql, params)
    finally:
        db.close()
