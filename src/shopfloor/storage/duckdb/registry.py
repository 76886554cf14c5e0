"""The registry in DuckDB: tenants, tokens, asset types, the asset tree, series, devices.

Writes take ``db.write_lock`` and run in one transaction each, which also bumps the stored
registry version. Integrity between tables (a parent exists, nothing still hangs off a deleted
asset) is checked in code under that lock rather than with DuckDB foreign keys, whose limits
(no updates of referenced rows) do not suit this schema.

An asset's path (slugs from its site down) is stored on create; assets are never renamed or
moved, so it stays right. ``UNIQUE (tenant_id, path)`` is the sibling-name rule, sites included
(a plain ``UNIQUE (tenant_id, parent_id, name)`` would let two sites share a name, since the
parent is NULL).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import duckdb

from shopfloor.domain.assets import Asset, AssetType, Device, Level, MeasurementDef, Series, ValueType
from shopfloor.domain.device_fieldbus import DeviceFieldbus, modbus_section, opcua_section, section_to_obj
from shopfloor.domain.errors import Conflict, NotFound
from shopfloor.domain.sparkplug import Approval, SparkplugNode, seen_to_obj, spec_from_obj, spec_to_obj
from shopfloor.domain.tenancy import ApiToken, Role, Tenant
from shopfloor.domain.timeutil import from_us, now_us
from shopfloor.ports.clock import Clock
from shopfloor.storage.duckdb.database import Database

MIGRATIONS: list[str] = [
    """
    CREATE SEQUENCE tenants_id_seq START 1;
    CREATE SEQUENCE api_tokens_id_seq START 1;
    CREATE SEQUENCE assets_id_seq START 1;
    CREATE SEQUENCE series_id_seq START 1;
    CREATE SEQUENCE devices_id_seq START 1;
    CREATE TABLE registry_meta (version BIGINT NOT NULL);
    INSERT INTO registry_meta VALUES (0);
    CREATE TABLE tenants (
        id BIGINT PRIMARY KEY DEFAULT nextval('tenants_id_seq'),
        slug VARCHAR NOT NULL UNIQUE,
        name VARCHAR NOT NULL,
        created_us BIGINT NOT NULL
    );
    CREATE TABLE api_tokens (
        id BIGINT PRIMARY KEY DEFAULT nextval('api_tokens_id_seq'),
        tenant_id BIGINT,
        name VARCHAR NOT NULL,
        role VARCHAR NOT NULL,
        token_hash VARCHAR NOT NULL UNIQUE,
        created_us BIGINT NOT NULL,
        revoked BOOLEAN NOT NULL DEFAULT false
    );
    CREATE TABLE asset_types (
        tenant_id BIGINT NOT NULL,
        name VARCHAR NOT NULL,
        description VARCHAR NOT NULL,
        attributes JSON NOT NULL,
        measurements JSON NOT NULL,
        events JSON NOT NULL,
        PRIMARY KEY (tenant_id, name)
    );
    CREATE TABLE assets (
        id BIGINT PRIMARY KEY DEFAULT nextval('assets_id_seq'),
        tenant_id BIGINT NOT NULL,
        parent_id BIGINT,
        level VARCHAR NOT NULL,
        name VARCHAR NOT NULL,
        path VARCHAR NOT NULL,
        display_name VARCHAR NOT NULL,
        type_name VARCHAR,
        attributes JSON NOT NULL,
        timezone VARCHAR,
        UNIQUE (tenant_id, path)
    );
    CREATE TABLE series (
        id BIGINT PRIMARY KEY DEFAULT nextval('series_id_seq'),
        tenant_id BIGINT NOT NULL,
        asset_id BIGINT NOT NULL,
        measurement VARCHAR NOT NULL,
        unit VARCHAR NOT NULL,
        type VARCHAR NOT NULL,
        UNIQUE (asset_id, measurement)
    );
    CREATE TABLE devices (
        id BIGINT PRIMARY KEY DEFAULT nextval('devices_id_seq'),
        tenant_id BIGINT NOT NULL,
        name VARCHAR NOT NULL,
        username VARCHAR NOT NULL UNIQUE,
        secret_hash VARCHAR NOT NULL,
        enabled BOOLEAN NOT NULL,
        gateway BOOLEAN NOT NULL,
        asset_ids BIGINT[] NOT NULL,
        description VARCHAR NOT NULL,
        created_us BIGINT NOT NULL,
        UNIQUE (tenant_id, name)
    );
    """,
    """
    CREATE TABLE sparkplug_nodes (
        device_id BIGINT PRIMARY KEY,
        tenant_id BIGINT NOT NULL,
        grp VARCHAR NOT NULL,
        edge_node VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        mapping JSON NOT NULL,
        seen JSON NOT NULL,
        UNIQUE (grp, edge_node)
    );
    """,
    """
    CREATE TABLE device_fieldbus (
        device_id BIGINT PRIMARY KEY,
        tenant_id BIGINT NOT NULL,
        opcua JSON,
        modbus JSON
    );
    """,
]

_TENANT_COLS = "id, slug, name, created_us"
_TOKEN_COLS = "id, tenant_id, name, role, token_hash, created_us, revoked"
_TYPE_COLS = "tenant_id, name, description, attributes, measurements, events"
_ASSET_COLS = "id, tenant_id, parent_id, level, name, path, display_name, type_name, attributes, timezone"
_SERIES_COLS = "id, tenant_id, asset_id, measurement, unit, type"
_NODE_COLS = "tenant_id, device_id, grp, edge_node, status, mapping, seen"
_FIELDBUS_COLS = "tenant_id, device_id, opcua, modbus"
_DEVICE_COLS = ("id, tenant_id, name, username, secret_hash, asset_ids, enabled, gateway, created_us, "
                "description")

Row = tuple[Any, ...]
Cursor = duckdb.DuckDBPyConnection


def _returned(row: Row | None) -> Row:
    if row is None:  # a row just written and read back in the same transaction is always there
        raise RuntimeError("the registry lost a row it had just written")
    return row


def _tenant(r: Row) -> Tenant:
    return Tenant(id=r[0], slug=r[1], name=r[2], created_at=from_us(r[3]))


def _token(r: Row) -> ApiToken:
    return ApiToken(id=r[0], tenant_id=r[1], name=r[2], role=Role(r[3]), token_hash=r[4],
                    created_at=from_us(r[5]), revoked=r[6])


def _asset_type(r: Row) -> AssetType:
    measurements = tuple(
        MeasurementDef(name=m["name"], unit=m["unit"], type=ValueType(m["type"]),
                       description=m["description"])
        for m in json.loads(r[4])
    )
    return AssetType(tenant_id=r[0], name=r[1], description=r[2], attributes=json.loads(r[3]),
                     measurements=measurements, events=tuple(json.loads(r[5])))


def _asset(r: Row) -> Asset:
    return Asset(id=r[0], tenant_id=r[1], parent_id=r[2], level=Level(r[3]), name=r[4],
                 path=tuple(r[5].split("/")), display_name=r[6], type_name=r[7],
                 attributes=json.loads(r[8]), timezone=r[9])


def _series(r: Row) -> Series:
    return Series(id=r[0], tenant_id=r[1], asset_id=r[2], measurement=r[3], unit=r[4], type=ValueType(r[5]))


def _device(r: Row) -> Device:
    return Device(id=r[0], tenant_id=r[1], name=r[2], username=r[3], secret_hash=r[4],
                  asset_ids=tuple(r[5]), enabled=r[6], gateway=r[7], created_at=from_us(r[8]),
                  description=r[9])


def _node(r: Row) -> SparkplugNode:
    return SparkplugNode(tenant_id=r[0], device_id=r[1], group=r[2], edge_node=r[3], status=Approval(r[4]),
                         mapping=spec_from_obj(json.loads(r[5])), seen=json.loads(r[6]))


def _fieldbus(r: Row) -> DeviceFieldbus:
    return DeviceFieldbus(tenant_id=r[0], device_id=r[1],
                          opcua=opcua_section(None if r[2] is None else json.loads(r[2])),
                          modbus=modbus_section(None if r[3] is None else json.loads(r[3])))


def _json_or_null(obj: Any) -> str | None:
    return None if obj is None else json.dumps(obj, allow_nan=False)


class DuckDBRegistry:
    """``RegistryRepository`` over a shared ``Database``; safe to call from several threads."""

    def __init__(self, db: Database, *, clock: Clock | None = None) -> None:
        self._db = db
        self._now: Callable[[], int] = clock.now_us if clock is not None else now_us
        db.migrate("registry", MIGRATIONS)
        row = self._one("SELECT version FROM registry_meta")
        self._version = int(row[0]) if row else 0

    # -- plumbing ------------------------------------------------------------------------------

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        return self._db.cursor().execute(sql, list(params)).fetchone()

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._db.cursor().execute(sql, list(params)).fetchall()

    @contextmanager
    def _write(self) -> Iterator[Cursor]:
        """One write transaction under the write lock; bumps the version when it commits."""
        row: Row | None = None
        with self._db.write_lock:
            try:
                with self._db.transaction() as tx:
                    yield tx
                    row = tx.execute("UPDATE registry_meta SET version = version + 1 RETURNING version"
                                     ).fetchone()
            except duckdb.ConstraintException as exc:
                raise Conflict(f"the registry refused a duplicate: {exc}") from None
            if row is not None:
                self._version = int(row[0])

    @staticmethod
    def _exists(tx: Cursor, sql: str, params: Sequence[Any]) -> bool:
        return tx.execute(sql, list(params)).fetchone() is not None

    def _require_tenant(self, tx: Cursor, tenant_id: int) -> None:
        if not self._exists(tx, "SELECT 1 FROM tenants WHERE id = ?", [tenant_id]):
            raise NotFound(f"tenant {tenant_id} does not exist")

    def _require_assets(self, tx: Cursor, tenant_id: int, asset_ids: Sequence[int]) -> None:
        for asset_id in asset_ids:
            if not self._has_asset(tx, tenant_id, asset_id):
                raise NotFound(f"asset {asset_id} does not exist in this tenant")

    def _has_asset(self, tx: Cursor, tenant_id: int, asset_id: int) -> bool:
        return self._exists(tx, "SELECT 1 FROM assets WHERE tenant_id = ? AND id = ?", [tenant_id, asset_id])

    # -- tenants -------------------------------------------------------------------------------

    def create_tenant(self, slug: str, name: str) -> Tenant:
        with self._write() as tx:
            if self._exists(tx, "SELECT 1 FROM tenants WHERE slug = ?", [slug]):
                raise Conflict(f"a tenant named {slug!r} already exists")
            row = tx.execute(f"INSERT INTO tenants (slug, name, created_us) VALUES (?, ?, ?) "
                             f"RETURNING {_TENANT_COLS}", [slug, name, self._now()]).fetchone()
        return _tenant(_returned(row))

    def get_tenant(self, tenant_id: int) -> Tenant | None:
        row = self._one(f"SELECT {_TENANT_COLS} FROM tenants WHERE id = ?", [tenant_id])
        return _tenant(row) if row else None

    def find_tenant(self, slug: str) -> Tenant | None:
        row = self._one(f"SELECT {_TENANT_COLS} FROM tenants WHERE slug = ?", [slug])
        return _tenant(row) if row else None

    def list_tenants(self) -> list[Tenant]:
        return [_tenant(r) for r in self._all(f"SELECT {_TENANT_COLS} FROM tenants ORDER BY id")]

    # -- tokens --------------------------------------------------------------------------------

    def create_token(self, tenant_id: int | None, name: str, role: Role, token_hash: str) -> ApiToken:
        with self._write() as tx:
            if tenant_id is not None:
                self._require_tenant(tx, tenant_id)
            if self._exists(tx, "SELECT 1 FROM api_tokens WHERE token_hash = ?", [token_hash]):
                raise Conflict("a token with this hash already exists")
            row = tx.execute(
                f"INSERT INTO api_tokens (tenant_id, name, role, token_hash, created_us) "
                f"VALUES (?, ?, ?, ?, ?) RETURNING {_TOKEN_COLS}",
                [tenant_id, name, role.value, token_hash, self._now()],
            ).fetchone()
        return _token(_returned(row))

    def find_token(self, token_hash: str) -> ApiToken | None:
        row = self._one(f"SELECT {_TOKEN_COLS} FROM api_tokens WHERE token_hash = ? AND NOT revoked",
                        [token_hash])
        return _token(row) if row else None

    def list_tokens(self, tenant_id: int | None) -> list[ApiToken]:
        rows = self._all(f"SELECT {_TOKEN_COLS} FROM api_tokens WHERE tenant_id IS NOT DISTINCT FROM ? "
                         f"ORDER BY id", [tenant_id])
        return [_token(r) for r in rows]

    def revoke_token(self, tenant_id: int | None, token_id: int) -> None:
        with self._write() as tx:
            where = "id = ? AND tenant_id IS NOT DISTINCT FROM ?"
            if not self._exists(tx, f"SELECT 1 FROM api_tokens WHERE {where}", [token_id, tenant_id]):
                raise NotFound(f"token {token_id} does not exist")
            tx.execute(f"UPDATE api_tokens SET revoked = true WHERE {where}", [token_id, tenant_id])

    # -- asset types ---------------------------------------------------------------------------

    def put_asset_type(self, asset_type: AssetType) -> AssetType:
        t = asset_type
        measurements = json.dumps([
            {"name": m.name, "unit": m.unit, "type": m.type.value, "description": m.description}
            for m in t.measurements
        ])
        values = [t.description, json.dumps(t.attributes), measurements, json.dumps(list(t.events))]
        with self._write() as tx:
            self._require_tenant(tx, t.tenant_id)
            key = [t.tenant_id, t.name]
            if self._exists(tx, "SELECT 1 FROM asset_types WHERE tenant_id = ? AND name = ?", key):
                tx.execute("UPDATE asset_types SET description = ?, attributes = ?, measurements = ?, "
                           "events = ? WHERE tenant_id = ? AND name = ?", values + key)
            else:
                tx.execute(f"INSERT INTO asset_types ({_TYPE_COLS}) VALUES (?, ?, ?, ?, ?, ?)", key + values)
            row = tx.execute(f"SELECT {_TYPE_COLS} FROM asset_types WHERE tenant_id = ? AND name = ?",
                             key).fetchone()
        return _asset_type(_returned(row))

    def get_asset_type(self, tenant_id: int, name: str) -> AssetType | None:
        row = self._one(f"SELECT {_TYPE_COLS} FROM asset_types WHERE tenant_id = ? AND name = ?",
                        [tenant_id, name])
        return _asset_type(row) if row else None

    def list_asset_types(self, tenant_id: int) -> list[AssetType]:
        rows = self._all(f"SELECT {_TYPE_COLS} FROM asset_types WHERE tenant_id = ? ORDER BY name",
                         [tenant_id])
        return [_asset_type(r) for r in rows]

    def delete_asset_type(self, tenant_id: int, name: str) -> None:
        key = [tenant_id, name]
        with self._write() as tx:
            if not self._exists(tx, "SELECT 1 FROM asset_types WHERE tenant_id = ? AND name = ?", key):
                raise NotFound(f"asset type {name!r} does not exist")
            if self._exists(tx, "SELECT 1 FROM assets WHERE tenant_id = ? AND type_name = ?", key):
                raise Conflict(f"asset type {name!r} is still used by assets; change their type first")
            tx.execute("DELETE FROM asset_types WHERE tenant_id = ? AND name = ?", key)

    # -- assets --------------------------------------------------------------------------------

    def create_asset(self, tenant_id: int, parent_id: int | None, level: Level, name: str, *,
                     display_name: str = "", type_name: str | None = None,
                     attributes: dict[str, Any] | None = None, timezone: str | None = None) -> Asset:
        with self._write() as tx:
            self._require_tenant(tx, tenant_id)
            if parent_id is None:
                path = name
            else:
                parent = tx.execute("SELECT path FROM assets WHERE tenant_id = ? AND id = ?",
                                    [tenant_id, parent_id]).fetchone()
                if parent is None:
                    raise NotFound(f"parent asset {parent_id} does not exist")
                path = f"{parent[0]}/{name}"
            if self._exists(tx, "SELECT 1 FROM assets WHERE tenant_id = ? AND path = ?", [tenant_id, path]):
                raise Conflict(f"an asset named {name!r} already exists at {path!r}")
            row = tx.execute(
                f"INSERT INTO assets (tenant_id, parent_id, level, name, path, display_name, type_name, "
                f"attributes, timezone) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {_ASSET_COLS}",
                [tenant_id, parent_id, level.value, name, path, display_name, type_name,
                 json.dumps(attributes or {}), timezone],
            ).fetchone()
        return _asset(_returned(row))

    def update_asset(self, tenant_id: int, asset_id: int, *, display_name: str | None = None,
                     type_name: str | None = None, attributes: dict[str, Any] | None = None,
                     timezone: str | None = None) -> Asset:
        changes: dict[str, Any] = {"display_name": display_name, "type_name": type_name,
                                   "timezone": timezone,
                                   "attributes": None if attributes is None else json.dumps(attributes)}
        sets = {col: value for col, value in changes.items() if value is not None}
        with self._write() as tx:
            if not self._has_asset(tx, tenant_id, asset_id):
                raise NotFound(f"asset {asset_id} does not exist")
            if sets:
                assignments = ", ".join(f"{col} = ?" for col in sets)
                tx.execute(f"UPDATE assets SET {assignments} WHERE tenant_id = ? AND id = ?",
                           [*sets.values(), tenant_id, asset_id])
            row = tx.execute(f"SELECT {_ASSET_COLS} FROM assets WHERE tenant_id = ? AND id = ?",
                             [tenant_id, asset_id]).fetchone()
        return _asset(_returned(row))

    def get_asset(self, tenant_id: int, asset_id: int) -> Asset | None:
        row = self._one(f"SELECT {_ASSET_COLS} FROM assets WHERE tenant_id = ? AND id = ?",
                        [tenant_id, asset_id])
        return _asset(row) if row else None

    def find_asset(self, tenant_id: int, path: Sequence[str]) -> Asset | None:
        if not path:
            return None
        row = self._one(f"SELECT {_ASSET_COLS} FROM assets WHERE tenant_id = ? AND path = ?",
                        [tenant_id, "/".join(path)])
        return _asset(row) if row else None

    def list_assets(self, tenant_id: int, *, level: Level | None = None,
                    parent_id: int | None = None) -> list[Asset]:
        sql = f"SELECT {_ASSET_COLS} FROM assets WHERE tenant_id = ?"
        params: list[Any] = [tenant_id]
        if level is not None:
            sql += " AND level = ?"
            params.append(level.value)
        if parent_id is not None:
            sql += " AND parent_id = ?"
            params.append(parent_id)
        return sorted((_asset(r) for r in self._all(sql, params)), key=lambda a: a.path)

    def delete_asset(self, tenant_id: int, asset_id: int) -> None:
        key = [tenant_id, asset_id]
        with self._write() as tx:
            if not self._exists(tx, "SELECT 1 FROM assets WHERE tenant_id = ? AND id = ?", key):
                raise NotFound(f"asset {asset_id} does not exist")
            if self._exists(tx, "SELECT 1 FROM assets WHERE tenant_id = ? AND parent_id = ?", key):
                raise Conflict(f"asset {asset_id} still has child assets; delete them first")
            bound = tx.execute("SELECT name FROM devices WHERE tenant_id = ? AND list_contains(asset_ids, ?) "
                               "ORDER BY name", key).fetchall()
            if bound:
                names = ", ".join(r[0] for r in bound)
                raise Conflict(f"asset {asset_id} is bound to devices ({names}); unbind them first")
            tx.execute("DELETE FROM series WHERE tenant_id = ? AND asset_id = ?", key)
            tx.execute("DELETE FROM assets WHERE tenant_id = ? AND id = ?", key)

    # -- series --------------------------------------------------------------------------------

    def ensure_series(self, tenant_id: int, asset_id: int, measurement: str, unit: str,
                      value_type: ValueType) -> Series:
        """The series for (asset, measurement), created if missing; unit and type updated if changed."""
        select = f"SELECT {_SERIES_COLS} FROM series WHERE tenant_id = ? AND asset_id = ? AND measurement = ?"
        key = [tenant_id, asset_id, measurement]
        row = self._one(select, key)
        if row is not None and row[4] == unit and row[5] == value_type.value:
            return _series(row)  # the hot path: no lock, no write
        with self._write() as tx:
            if not self._has_asset(tx, tenant_id, asset_id):
                raise NotFound(f"asset {asset_id} does not exist")
            row = tx.execute(select, key).fetchone()
            if row is None:
                tx.execute("INSERT INTO series (tenant_id, asset_id, measurement, unit, type) "
                           "VALUES (?, ?, ?, ?, ?)", [*key, unit, value_type.value])
            else:
                tx.execute("UPDATE series SET unit = ?, type = ? WHERE id = ?",
                           [unit, value_type.value, row[0]])
            row = tx.execute(select, key).fetchone()
        return _series(_returned(row))

    def get_series(self, tenant_id: int, series_id: int) -> Series | None:
        row = self._one(f"SELECT {_SERIES_COLS} FROM series WHERE tenant_id = ? AND id = ?",
                        [tenant_id, series_id])
        return _series(row) if row else None

    def list_series(self, tenant_id: int, asset_id: int | None = None) -> list[Series]:
        sql = f"SELECT {_SERIES_COLS} FROM series WHERE tenant_id = ?"
        params: list[Any] = [tenant_id]
        if asset_id is not None:
            sql += " AND asset_id = ?"
            params.append(asset_id)
        return [_series(r) for r in self._all(sql + " ORDER BY id", params)]

    # -- devices -------------------------------------------------------------------------------

    def create_device(self, tenant_id: int, name: str, username: str, secret_hash: str,
                      asset_ids: Sequence[int], *, gateway: bool = False, description: str = "") -> Device:
        ids = list(dict.fromkeys(asset_ids))
        with self._write() as tx:
            self._require_tenant(tx, tenant_id)
            self._require_assets(tx, tenant_id, ids)
            if self._exists(tx, "SELECT 1 FROM devices WHERE tenant_id = ? AND name = ?", [tenant_id, name]):
                raise Conflict(f"a device named {name!r} already exists")
            if self._exists(tx, "SELECT 1 FROM devices WHERE username = ?", [username]):
                raise Conflict(f"the broker username {username!r} is already taken")
            row = tx.execute(
                f"INSERT INTO devices (tenant_id, name, username, secret_hash, enabled, gateway, asset_ids, "
                f"description, created_us) VALUES (?, ?, ?, ?, true, ?, ?, ?, ?) RETURNING {_DEVICE_COLS}",
                [tenant_id, name, username, secret_hash, gateway, ids, description, self._now()],
            ).fetchone()
        return _device(_returned(row))

    def update_device(self, tenant_id: int, device_id: int, *, secret_hash: str | None = None,
                      enabled: bool | None = None, asset_ids: Sequence[int] | None = None,
                      description: str | None = None) -> Device:
        changes: dict[str, Any] = {"secret_hash": secret_hash, "enabled": enabled, "description": description,
                                   "asset_ids": None if asset_ids is None else list(dict.fromkeys(asset_ids))}
        sets = {col: value for col, value in changes.items() if value is not None}
        key = [tenant_id, device_id]
        with self._write() as tx:
            if not self._exists(tx, "SELECT 1 FROM devices WHERE tenant_id = ? AND id = ?", key):
                raise NotFound(f"device {device_id} does not exist")
            if "asset_ids" in sets:
                self._require_assets(tx, tenant_id, sets["asset_ids"])
            if sets:
                assignments = ", ".join(f"{col} = ?" for col in sets)
                tx.execute(f"UPDATE devices SET {assignments} WHERE tenant_id = ? AND id = ?",
                           [*sets.values(), *key])
            row = tx.execute(f"SELECT {_DEVICE_COLS} FROM devices WHERE tenant_id = ? AND id = ?",
                             key).fetchone()
        return _device(_returned(row))

    def get_device(self, tenant_id: int, device_id: int) -> Device | None:
        row = self._one(f"SELECT {_DEVICE_COLS} FROM devices WHERE tenant_id = ? AND id = ?",
                        [tenant_id, device_id])
        return _device(row) if row else None

    def find_device(self, tenant_id: int, name: str) -> Device | None:
        row = self._one(f"SELECT {_DEVICE_COLS} FROM devices WHERE tenant_id = ? AND name = ?",
                        [tenant_id, name])
        return _device(row) if row else None

    def find_device_by_username(self, username: str) -> Device | None:
        row = self._one(f"SELECT {_DEVICE_COLS} FROM devices WHERE username = ?", [username])
        return _device(row) if row else None

    def list_devices(self, tenant_id: int) -> list[Device]:
        rows = self._all(f"SELECT {_DEVICE_COLS} FROM devices WHERE tenant_id = ? ORDER BY name", [tenant_id])
        return [_device(r) for r in rows]

    def delete_device(self, tenant_id: int, device_id: int) -> None:
        key = [tenant_id, device_id]
        with self._write() as tx:
            if not self._exists(tx, "SELECT 1 FROM devices WHERE tenant_id = ? AND id = ?", key):
                raise NotFound(f"device {device_id} does not exist")
            tx.execute("DELETE FROM sparkplug_nodes WHERE tenant_id = ? AND device_id = ?", key)
            tx.execute("DELETE FROM device_fieldbus WHERE tenant_id = ? AND device_id = ?", key)
            tx.execute("DELETE FROM devices WHERE tenant_id = ? AND id = ?", key)

    # -- Sparkplug edge nodes ------------------------------------------------------------------

    def set_sparkplug_node(self, tenant_id: int, device_id: int,
                           node: SparkplugNode | None) -> SparkplugNode | None:
        key = [tenant_id, device_id]
        with self._write() as tx:
            if not self._exists(tx, "SELECT 1 FROM devices WHERE tenant_id = ? AND id = ?", key):
                raise NotFound(f"device {device_id} does not exist")
            if node is not None:
                taken = tx.execute("SELECT device_id FROM sparkplug_nodes WHERE grp = ? AND edge_node = ? "
                                   "AND device_id <> ?", [node.group, node.edge_node, device_id]).fetchone()
                if taken is not None:
                    raise Conflict(f"edge node {node.group}/{node.edge_node} is already device {taken[0]}")
            tx.execute("DELETE FROM sparkplug_nodes WHERE device_id = ?", [device_id])
            if node is None:
                return None
            tx.execute(f"INSERT INTO sparkplug_nodes ({_NODE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       [*key, node.group, node.edge_node, node.status.value, json.dumps(spec_to_obj(node.mapping)),
                        json.dumps(seen_to_obj(node.seen))])
            row = tx.execute(f"SELECT {_NODE_COLS} FROM sparkplug_nodes WHERE device_id = ?", [device_id]).fetchone()
        return _node(_returned(row))

    def list_sparkplug_nodes(self, tenant_id: int | None = None) -> list[SparkplugNode]:
        rows = self._all(f"SELECT {_NODE_COLS} FROM sparkplug_nodes WHERE ? IS NULL OR tenant_id = ? "
                         "ORDER BY grp, edge_node", [tenant_id, tenant_id])
        return [_node(r) for r in rows]

    # -- field-bus sections --------------------------------------------------------------------

    def set_device_fieldbus(self, tenant_id: int, device_id: int,
                            sections: DeviceFieldbus | None) -> DeviceFieldbus | None:
        key = [tenant_id, device_id]
        with self._write() as tx:
            if not self._exists(tx, "SELECT 1 FROM devices WHERE tenant_id = ? AND id = ?", key):
                raise NotFound(f"device {device_id} does not exist")
            tx.execute("DELETE FROM device_fieldbus WHERE device_id = ?", [device_id])
            if sections is None or sections.empty:
                return None
            tx.execute(f"INSERT INTO device_fieldbus ({_FIELDBUS_COLS}) VALUES (?, ?, ?, ?)",
                       [*key, _json_or_null(section_to_obj(sections.opcua)),
                        _json_or_null(section_to_obj(sections.modbus))])
            row = tx.execute(f"SELECT {_FIELDBUS_COLS} FROM device_fieldbus WHERE device_id = ?",
                             [device_id]).fetchone()
        return _fieldbus(_returned(row))

    def list_device_fieldbus(self, tenant_id: int) -> list[DeviceFieldbus]:
        rows = self._all(f"SELECT {_FIELDBUS_COLS} FROM device_fieldbus WHERE tenant_id = ? ORDER BY device_id",
                         [tenant_id])
        return [_fieldbus(r) for r in rows]

    def version(self) -> int:
        """Bumped by every committed write; stored, so it keeps rising across reopens."""
        return self._version
