"""The registry contract on DuckDB and on the in-memory fake, plus what only a file can show."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shopfloor.domain.assets import Level, ValueType
from shopfloor.domain.tenancy import Role
from shopfloor.domain.timeutil import from_us
from shopfloor.ports.registry import RegistryRepository
from shopfloor.storage.duckdb.database import Database
from shopfloor.storage.duckdb.registry import DuckDBRegistry
from shopfloor.testing.fakes import FixedClock, InMemoryRegistry
from shopfloor.testing.registry_contract import RegistryContract, make_plant, press_type


class TestDuckDBRegistry(RegistryContract):
    @pytest.fixture
    def registry(self, tmp_path: Path) -> Iterator[RegistryRepository]:
        db = Database(tmp_path / "shopfloor.duckdb")
        yield DuckDBRegistry(db)
        db.close()


class TestInMemoryRegistry(RegistryContract):
    @pytest.fixture
    def registry(self) -> RegistryRepository:
        return InMemoryRegistry()


def test_duckdb_registry_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "shopfloor.duckdb"
    db = Database(path)
    reg = DuckDBRegistry(db)
    p = make_plant(reg)
    t = p.tenant.id
    asset_type = reg.put_asset_type(press_type(t))
    series = reg.ensure_series(t, p.machine.id, "temperature", "degC", ValueType.NUMERIC)
    device = reg.create_device(t, "plc-1", "acme.plc-1", "h", [p.machine.id], gateway=True)
    token = reg.create_token(t, "ci", Role.ADMIN, "h-ci")
    spare = reg.create_asset(t, p.line.id, Level.MACHINE, "spare")
    reg.delete_asset(t, spare.id)
    version = reg.version()
    db.close()

    db = Database(path)
    reg = DuckDBRegistry(db)  # migrating again is a no-op
    try:
        assert reg.version() >= version
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


def _duckdb_with(clock: FixedClock) -> RegistryRepository:
    return DuckDBRegistry(Database(":memory:"), clock=clock)


def _memory_with(clock: FixedClock) -> RegistryRepository:
    return InMemoryRegistry(clock=clock)


@pytest.mark.parametrize("make", [_duckdb_with, _memory_with], ids=["duckdb", "memory"])
def test_timestamps_come_from_the_clock(make: Callable[[FixedClock], RegistryRepository]) -> None:
    clock = FixedClock(1_700_000_000_123_456)
    reg = make(clock)
    tenant = reg.create_tenant("acme", "ACME")
    assert tenant.created_at == from_us(1_700_000_000_123_456)
    assert clock.advance(5_000_000) == 1_700_000_005_123_456
    token = reg.create_token(tenant.id, "ci", Role.VIEWER, "h")
    device = reg.create_device(tenant.id, "plc", "acme.plc", "h", [])
    assert token.created_at == device.created_at == from_us(1_700_000_005_123_456)
