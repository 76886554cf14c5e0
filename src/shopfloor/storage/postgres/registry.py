"""The registry in PostgreSQL: tenants, tokens, asset types, the asset tree, series, devices.

Several processes (API, ingest workers) share it, so the database keeps the rules, not a lock in
one process: ``UNIQUE`` for names, usernames, token hashes and sibling paths; composite foreign keys
``(tenant_id, id)`` so that a parent, a series' asset or a device's asset must belong to the same
tenant; ``ON DELETE RESTRICT`` for an asset with children, an asset bound to a device and an asset
type still in use; ``ON DELETE CASCADE`` for an asset's series and a device's bindings. A violated
constraint becomes ``Conflict`` or ``NotFound`` with a message chosen by the calling method (a
duplicate create from two processes: one row, one ``Conflict``). Explicit checks before a write are
there only where the message needs details the constraint does not carry.

Every write transaction ends by bumping the single row of ``registry_meta``, so ``version()`` is one
indexed read and changes with every committed write of any process; a refused write rolls back and
leaves it alone. The bump is the last statement, so the row lock is held only until the commit and
cannot take part in a deadlock.

A device's assets are rows of ``device_assets`` (with their position, since the order is kept), so
that the database itself refuses to delete a bound asset. Paths are ``text[]`` in the "C" collation,
which sorts them in tree order (a parent before its children, siblings by code point), as do names.
jsonb keeps values, not text: object keys come back in jsonb's order (equal dicts, maybe another
order); floats are written so that they read back as the same floats.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import errors as pgerrors

from shopfloor.domain.assets import Asset, AssetType, Device, Level, MeasurementDef, Series, ValueType
from shopfloor.domain.device_fieldbus import DeviceFieldbus, modbus_section, opcua_section, section_to_obj
from shopfloor.domain.errors import Conflict, InvalidInput, NotFound, ShopfloorError
from shopfloor.domain.sparkplug import Approval, SparkplugNode, seen_to_obj, spec_from_obj, spec_to_obj
from shopfloor.domain.tenancy import ApiToken, Role, Tenant
from shopfloor.domain.timeutil import from_us, now_us
from shopfloor.ports.clock import Clock
from shopfloor.storage.postgres.database import PgDatabase

MIGRATIONS: list[str] = [
    """
    CREATE TABLE registry_meta (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        version bigint NOT NULL
    );
    INSERT INTO registry_meta (singleton, version) VALUES (true, 0);

    CREATE TABLE tenants (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        slug text COLLATE "C" NOT NULL CONSTRAINT tenants_slug_key UNIQUE,
        name text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    );

    CREATE TABLE api_tokens (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        tenant_id bigint CONSTRAINT api_tokens_tenant_fkey REFERENCES tenants,
        name text NOT NULL,
        role text NOT NULL CHECK (role IN ('viewer', 'operator', 'engineer', 'admin')),
        token_hash text NOT NULL CONSTRAINT api_tokens_hash_key UNIQUE,
        created_at timestamptz NOT NULL DEFAULT now(),
        revoked boolean NOT NULL DEFAULT false
    );
    CREATE INDEX api_tokens_tenant_idx ON api_tokens (tenant_id);

    CREATE TABLE asset_types (
        tenant_id bigint NOT NULL CONSTRAINT asset_types_tenant_fkey REFERENCES tenants,
        name text COLLATE "C" NOT NULL,
        description text NOT NULL DEFAULT '',
        attributes jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(attributes) = 'object'),
        measurements jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(measurements) = 'array'),
        events jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(events) = 'array'),
        PRIMARY KEY (tenant_id, name)
    );

    CREATE TABLE assets (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        tenant_id bigint NOT NULL CONSTRAINT assets_tenant_fkey REFERENCES tenants,
        parent_id bigint,
        level text NOT NULL CHECK (level IN ('site', 'area', 'line', 'machine')),
        name text COLLATE "C" NOT NULL,
        path text[] COLLATE "C" NOT NULL,
        display_name text NOT NULL DEFAULT '',
        type_name text COLLATE "C",
        attributes jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(attributes) = 'object'),
        timezone text,
        CONSTRAINT assets_tenant_id_key UNIQUE (tenant_id, id),
        CONSTRAINT assets_path_key UNIQUE (tenant_id, path),
        CONSTRAINT assets_path_check CHECK (path[cardinality(path)] = name
                                            AND (parent_id IS NULL) = (cardinality(path) = 1)),
        CONSTRAINT assets_parent_fkey FOREIGN KEY (tenant_id, parent_id)
            REFERENCES assets (tenant_id, id) ON DELETE RESTRICT,
        CONSTRAINT assets_type_fkey FOREIGN KEY (tenant_id, type_name)
            REFERENCES asset_types (tenant_id, name) ON DELETE RESTRICT
    );
    CREATE INDEX assets_parent_idx ON assets (tenant_id, parent_id);
    CREATE INDEX assets_type_idx ON assets (tenant_id, type_name) WHERE type_name IS NOT NULL;

    CREATE TABLE series (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        tenant_id bigint NOT NULL,
        asset_id bigint NOT NULL,
        measurement text COLLATE "C" NOT NULL,
        unit text NOT NULL DEFAULT '',
        type text NOT NULL CHECK (type IN ('numeric', 'boolean', 'string')),
        CONSTRAINT series_key UNIQUE (tenant_id, asset_id, measurement),
        CONSTRAINT series_asset_fkey FOREIGN KEY (tenant_id, asset_id)
            REFERENCES assets (tenant_id, id) ON DELETE CASCADE
    );

    CREATE TABLE devices (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        tenant_id bigint NOT NULL CONSTRAINT devices_tenant_fkey REFERENCES tenants,
        name text COLLATE "C" NOT NULL,
        username text COLLATE "C" NOT NULL CONSTRAINT devices_username_key UNIQUE,
        secret_hash text NOT NULL,
        enabled boolean NOT NULL DEFAULT true,
        gateway boolean NOT NULL DEFAULT false,
        description text NOT NULL DEFAULT '',
        created_at timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT devices_name_key UNIQUE (tenant_id, name),
        CONSTRAINT devices_tenant_id_key UNIQUE (tenant_id, id)
    );

    CREATE TABLE device_assets (
        device_id bigint NOT NULL,
        tenant_id bigint NOT NULL,
        asset_id bigint NOT NULL,
        position integer NOT NULL,
        PRIMARY KEY (device_id, asset_id),
        CONSTRAINT device_assets_position_key UNIQUE (device_id, position),
        CONSTRAINT device_assets_device_fkey FOREIGN KEY (tenant_id, device_id)
            REFERENCES devices (tenant_id, id) ON DELETE CASCADE,
        CONSTRAINT device_assets_asset_fkey FOREIGN KEY (tenant_id, asset_id)
            REFERENCES assets (tenant_id, id) ON DELETE RESTRICT
    );
    CREATE INDEX device_assets_asset_idx ON device_assets (tenant_id, asset_id);
    """,
    """
    CREATE TABLE sparkplug_nodes (
        device_id bigint PRIMARY KEY,
        tenant_id bigint NOT NULL,
        grp text COLLATE "C" NOT NULL,
        edge_node text COLLATE "C" NOT NULL,
        status text NOT NULL CHECK (status IN ('approved', 'quarantined')),
        mapping jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(mapping) = 'object'),
        seen jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(seen) = 'object'),
        CONSTRAINT sparkplug_nodes_edge_key UNIQUE (grp, edge_node),
        CONSTRAINT sparkplug_nodes_device_fkey FOREIGN KEY (tenant_id, device_id)
            REFERENCES devices (tenant_id, id) ON DELETE CASCADE
    );
    CREATE INDEX sparkplug_nodes_tenant_idx ON sparkplug_nodes (tenant_id);
    COMMENT ON TABLE sparkplug_nodes IS 'Devices acting as Sparkplug B edge nodes: group and edge node id, '
        'approval, and the mapping of Sparkplug devices to machines and metrics to measurements';
    """,
    """
    CREATE TABLE device_fieldbus (
        device_id bigint PRIMARY KEY,
        tenant_id bigint NOT NULL,
        opcua jsonb CHECK (opcua IS NULL OR jsonb_typeof(opcua) = 'object'),
        modbus jsonb CHECK (modbus IS NULL OR jsonb_typeof(modbus) = 'object'),
        CONSTRAINT device_fieldbus_device_fkey FOREIGN KEY (tenant_id, device_id)
            REFERENCES devices (tenant_id, id) ON DELETE CASCADE
    );
    CREATE INDEX device_fieldbus_tenant_idx ON device_fieldbus (tenant_id);
    COMMENT ON TABLE device_fieldbus IS 'Devices read by the edge agent: their OPC UA and Modbus TCP sections '
        'of the plant file (docs/opcua.md, docs/modbus.md)';
    """,
]

_TENANT_COLS = "id, slug, name, created_at"
_TOKEN_COLS = "id, tenant_id, name, role, token_hash, created_at, revoked"
_TYPE_COLS = "tenant_id, name, description, attributes, measurements, events"
_ASSET_COLS = "id, tenant_id, parent_id, level, name, path, display_name, type_name, attributes, timezone"
_SERIES_COLS = "id, tenant_id, asset_id, measurement, unit, type"
_NODE_COLS = "tenant_id, device_id, grp, edge_node, status, mapping, seen"
_FIELDBUS_COLS = "tenant_id, device_id, opcua, modbus"
_DEVICE_SELECT = (
    "SELECT d.id, d.tenant_id, d.name, d.username, d.secret_hash, "
    "ARRAY(SELECT da.asset_id FROM device_assets da WHERE da.device_id = d.id ORDER BY da.position), "
    "d.enabled, d.gateway, d.created_at, d.description FROM devices d"
)

Row = tuple[Any, ...]
Violations = Mapping[str, ShopfloorError]


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _returned(row: Row | None) -> Row:
    if row is None:  # a row just written and read back in the same transaction is always there
        raise RuntimeError("the registry lost a row it had just written")
    return row


def _tenant(r: Row) -> Tenant:
    return Tenant(id=r[0], slug=r[1], name=r[2], created_at=_utc(r[3]))


def _token(r: Row) -> ApiToken:
    return ApiToken(id=r[0], tenant_id=r[1], name=r[2], role=Role(r[3]), token_hash=r[4],
                    created_at=_utc(r[5]), revoked=r[6])


def _asset_type(r: Row) -> AssetType:
    measurements = tuple(
        MeasurementDef(name=m["name"], unit=m["unit"], type=ValueType(m["type"]), description=m["description"])
        for m in r[4]
    )
    return AssetType(tenant_id=r[0], name=r[1], description=r[2], attributes=r[3], measurements=measurements,
                     events=tuple(r[5]))


def _asset(r: Row) -> Asset:
    return Asset(id=r[0], tenant_id=r[1], parent_id=r[2], level=Level(r[3]), name=r[4], path=tuple(r[5]),
                 display_name=r[6], type_name=r[7], attributes=r[8], timezone=r[9])


def _series(r: Row) -> Series:
    return Series(id=r[0], tenant_id=r[1], asset_id=r[2], measurement=r[3], unit=r[4], type=ValueType(r[5]))


def _device(r: Row) -> Device:
    return Device(id=r[0], tenant_id=r[1], name=r[2], username=r[3], secret_hash=r[4], asset_ids=tuple(r[5]),
                  enabled=r[6], gateway=r[7], created_at=_utc(r[8]), description=r[9])


def _node(r: Row) -> SparkplugNode:
    return SparkplugNode(tenant_id=r[0], device_id=r[1], group=r[2], edge_node=r[3], status=Approval(r[4]),
                         mapping=spec_from_obj(r[5]), seen=r[6])


def _fieldbus(r: Row) -> DeviceFieldbus:
    return DeviceFieldbus(tenant_id=r[0], device_id=r[1], opcua=opcua_section(r[2]), modbus=modbus_section(r[3]))


def _json(value: Any) -> str:
    """JSON text for a jsonb column that reads back as an equal Python value.

    jsonb stores numbers as ``numeric`` and prints them without an exponent, so ``1e+23`` would
    come back as the int 10**23; a float that large is written as its exact integer value plus
    ``.0`` instead, which reads back as the same float.
    """
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(_json_key(k))}:{_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_json(v) for v in value) + "]"
    if isinstance(value, float) and math.isfinite(value) and abs(value) >= 1e16:
        return f"{int(value)}.0"
    return json.dumps(value, allow_nan=False)


def _json_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, int | float):  # as json.dumps turns them into keys
        return json.dumps(key, allow_nan=False)
    raise TypeError(f"keys must be strings, not {type(key).__name__}")


def _jsonb(value: Any, what: str) -> str:
    try:
        return _json(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInput(f"{what} must be JSON values (no NaN or infinity): {exc}") from None


def _storable(params: Sequence[Any]) -> bool:
    """False when a text parameter holds NUL, which PostgreSQL text can neither store nor match."""
    return not any(isinstance(p, str) and "\x00" in p for p in params)


class _Tx:
    """One write transaction; ``changed = False`` commits it without bumping the version."""

    def __init__(self, conn: psycopg.Connection[Row]) -> None:
        self.conn = conn
        self.changed = True

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        return self.conn.execute(sql, list(params)).fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.conn.execute(sql, list(params)).fetchall()

    def run(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.conn.execute(sql, list(params))


class PostgresRegistry:
    """``RegistryRepository`` in one PostgreSQL schema, shared by every process that opens it."""

    def __init__(self, db: PgDatabase, *, clock: Clock | None = None) -> None:
        self._db = db
        self._now: Callable[[], int] = clock.now_us if clock is not None else now_us
        db.migrate("registry", MIGRATIONS)

    # -- plumbing ------------------------------------------------------------------------------

    def _stamp(self) -> datetime:
        return from_us(self._now())

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        if not _storable(params):
            return None
        with self._db.connection() as conn:
            row: Row | None = conn.execute(sql, list(params)).fetchone()
            return row

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        if not _storable(params):
            return []
        with self._db.connection() as conn:
            rows: list[Row] = conn.execute(sql, list(params)).fetchall()
            return rows

    @contextmanager
    def _write(self, violations: Violations | None = None) -> Iterator[_Tx]:
        """One transaction that bumps the version as it commits.

        ``violations`` says what a violated constraint (by name) means to the caller.
        """
        with self._db.connection() as conn:  # translated in here: PgDatabase reads OperationalError as an outage
            try:
                tx = _Tx(conn)
                yield tx
                if tx.changed:
                    conn.execute("UPDATE registry_meta SET version = version + 1")
            except pgerrors.IntegrityError as exc:
                raise _translate(exc, violations or {}) from None
            except (psycopg.DataError, pgerrors.ProgramLimitExceeded, UnicodeEncodeError) as exc:
                raise InvalidInput(f"the registry cannot store this value: {_first_line(exc)}") from None

    def _require_assets(self, tx: _Tx, tenant_id: int, asset_ids: Sequence[int]) -> None:
        if not asset_ids:
            return
        missing = tx.one("SELECT x FROM unnest(%s::bigint[]) WITH ORDINALITY AS u(x, n) WHERE NOT EXISTS "
                         "(SELECT 1 FROM assets a WHERE a.tenant_id = %s AND a.id = u.x) ORDER BY n LIMIT 1",
                         [list(asset_ids), tenant_id])
        if missing is not None:
            raise NotFound(f"asset {missing[0]} does not exist in this tenant")

    @staticmethod
    def _bind(tx: _Tx, tenant_id: int, device_id: int, asset_ids: Sequence[int]) -> None:
        tx.run("INSERT INTO device_assets (device_id, tenant_id, asset_id, position) "
               "SELECT %s, %s, u.x, u.n FROM unnest(%s::bigint[]) WITH ORDINALITY AS u(x, n)",
               [device_id, tenant_id, list(asset_ids)])

    # -- tenants -------------------------------------------------------------------------------

    def create_tenant(self, slug: str, name: str) -> Tenant:
        with self._write({"tenants_slug_key": Conflict(f"a tenant named {slug!r} already exists")}) as tx:
            row = tx.one(f"INSERT INTO tenants (slug, name, created_at) VALUES (%s, %s, %s) "
                         f"RETURNING {_TENANT_COLS}", [slug, name, self._stamp()])
        return _tenant(_returned(row))

    def get_tenant(self, tenant_id: int) -> Tenant | None:
        row = self._one(f"SELECT {_TENANT_COLS} FROM tenants WHERE id = %s", [tenant_id])
        return _tenant(row) if row else None

    def find_tenant(self, slug: str) -> Tenant | None:
        row = self._one(f"SELECT {_TENANT_COLS} FROM tenants WHERE slug = %s", [slug])
        return _tenant(row) if row else None

    def list_tenants(self) -> list[Tenant]:
        return [_tenant(r) for r in self._all(f"SELECT {_TENANT_COLS} FROM tenants ORDER BY id")]

    # -- tokens --------------------------------------------------------------------------------

    def create_token(self, tenant_id: int | None, name: str, role: Role, token_hash: str) -> ApiToken:
        violations = {"api_tokens_tenant_fkey": NotFound(f"tenant {tenant_id} does not exist"),
                      "api_tokens_hash_key": Conflict("a token with this hash already exists")}
        with self._write(violations) as tx:
            row = tx.one(f"INSERT INTO api_tokens (tenant_id, name, role, token_hash, created_at) "
                         f"VALUES (%s, %s, %s, %s, %s) RETURNING {_TOKEN_COLS}",
                         [tenant_id, name, role.value, token_hash, self._stamp()])
        return _token(_returned(row))

    def find_token(self, token_hash: str) -> ApiToken | None:
        row = self._one(f"SELECT {_TOKEN_COLS} FROM api_tokens WHERE token_hash = %s AND NOT revoked",
                        [token_hash])
        return _token(row) if row else None

    def list_tokens(self, tenant_id: int | None) -> list[ApiToken]:
        rows = self._all(f"SELECT {_TOKEN_COLS} FROM api_tokens WHERE tenant_id IS NOT DISTINCT FROM %s "
                         f"ORDER BY id", [tenant_id])
        return [_token(r) for r in rows]

    def revoke_token(self, tenant_id: int | None, token_id: int) -> None:
        with self._write() as tx:
            row = tx.one("UPDATE api_tokens SET revoked = true WHERE id = %s "
                         "AND tenant_id IS NOT DISTINCT FROM %s RETURNING id", [token_id, tenant_id])
            if row is None:
                raise NotFound(f"token {token_id} does not exist")

    # -- asset types ---------------------------------------------------------------------------

    def put_asset_type(self, asset_type: AssetType) -> AssetType:
        t = asset_type
        measurements = [{"name": m.name, "unit": m.unit, "type": m.type.value, "description": m.description}
                        for m in t.measurements]
        values = [t.tenant_id, t.name, t.description, _jsonb(t.attributes, "asset type attributes"),
                  _jsonb(measurements, "measurements"), _jsonb(list(t.events), "events")]
        with self._write({"asset_types_tenant_fkey": NotFound(f"tenant {t.tenant_id} does not exist")}) as tx:
            row = tx.one(
                f"INSERT INTO asset_types ({_TYPE_COLS}) VALUES (%s, %s, %s, %s::jsonb, %s::jsonb, %s::jsonb) "
                f"ON CONFLICT (tenant_id, name) DO UPDATE SET description = EXCLUDED.description, "
                f"attributes = EXCLUDED.attributes, measurements = EXCLUDED.measurements, events = EXCLUDED.events "
                f"RETURNING {_TYPE_COLS}", values)
        return _asset_type(_returned(row))

    def get_asset_type(self, tenant_id: int, name: str) -> AssetType | None:
        row = self._one(f"SELECT {_TYPE_COLS} FROM asset_types WHERE tenant_id = %s AND name = %s",
                        [tenant_id, name])
        return _asset_type(row) if row else None

    def list_asset_types(self, tenant_id: int) -> list[AssetType]:
        rows = self._all(f"SELECT {_TYPE_COLS} FROM asset_types WHERE tenant_id = %s ORDER BY name", [tenant_id])
        return [_asset_type(r) for r in rows]

    def delete_asset_type(self, tenant_id: int, name: str) -> None:
        in_use = Conflict(f"asset type {name!r} is still used by assets; change their type first")
        with self._write({"assets_type_fkey": in_use}) as tx:
            row = tx.one("DELETE FROM asset_types WHERE tenant_id = %s AND name = %s RETURNING name",
                         [tenant_id, name])
            if row is None:
                raise NotFound(f"asset type {name!r} does not exist")

    # -- assets --------------------------------------------------------------------------------

    def create_asset(self, tenant_id: int, parent_id: int | None, level: Level, name: str, *,
                     display_name: str = "", type_name: str | None = None,
                     attributes: dict[str, Any] | None = None, timezone: str | None = None) -> Asset:
        attrs = _jsonb(attributes or {}, "attributes")
        violations = {"assets_tenant_fkey": NotFound(f"tenant {tenant_id} does not exist"),
                      "assets_parent_fkey": NotFound(f"parent asset {parent_id} does not exist"),
                      "assets_type_fkey": NotFound(f"asset type {type_name!r} does not exist"),
                      "assets_path_key": Conflict(f"an asset named {name!r} already exists there")}
        with self._write(violations) as tx:
            path = [name]
            if parent_id is not None:
                parent = tx.one("SELECT path FROM assets WHERE tenant_id = %s AND id = %s", [tenant_id, parent_id])
                if parent is None:
                    raise NotFound(f"parent asset {parent_id} does not exist")
                path = [*parent[0], name]
            row = tx.one(
                f"INSERT INTO assets (tenant_id, parent_id, level, name, path, display_name, type_name, "
                f"attributes, timezone) VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s) RETURNING {_ASSET_COLS}",
                [tenant_id, parent_id, level.value, name, path, display_name, type_name, attrs, timezone])
        return _asset(_returned(row))

    def update_asset(self, tenant_id: int, asset_id: int, *, display_name: str | None = None,
                     type_name: str | None = None, attributes: dict[str, Any] | None = None,
                     timezone: str | None = None) -> Asset:
        changes: dict[str, Any] = {"display_name": display_name, "type_name": type_name, "timezone": timezone,
                                   "attributes": None if attributes is None else _jsonb(attributes, "attributes")}
        sets = {col: value for col, value in changes.items() if value is not None}
        key = [tenant_id, asset_id]
        with self._write({"assets_type_fkey": NotFound(f"asset type {type_name!r} does not exist")}) as tx:
            if sets:
                assignments = ", ".join(f"{col} = %s::jsonb" if col == "attributes" else f"{col} = %s"
                                        for col in sets)
                row = tx.one(f"UPDATE assets SET {assignments} WHERE tenant_id = %s AND id = %s "
                             f"RETURNING {_ASSET_COLS}", [*sets.values(), *key])
            else:
                row = tx.one(f"SELECT {_ASSET_COLS} FROM assets WHERE tenant_id = %s AND id = %s", key)
            if row is None:
                raise NotFound(f"asset {asset_id} does not exist")
        return _asset(row)

    def get_asset(self, tenant_id: int, asset_id: int) -> Asset | None:
        row = self._one(f"SELECT {_ASSET_COLS} FROM assets WHERE tenant_id = %s AND id = %s", [tenant_id, asset_id])
        return _asset(row) if row else None

    def find_asset(self, tenant_id: int, path: Sequence[str]) -> Asset | None:
        if not path or not _storable(path):
            return None
        row = self._one(f"SELECT {_ASSET_COLS} FROM assets WHERE tenant_id = %s AND path = %s::text[]",
                        [tenant_id, list(path)])
        return _asset(row) if row else None

    def list_assets(self, tenant_id: int, *, level: Level | None = None,
                    parent_id: int | None = None) -> list[Asset]:
        sql = f"SELECT {_ASSET_COLS} FROM assets WHERE tenant_id = %s"
        params: list[Any] = [tenant_id]
        if level is not None:
            sql += " AND level = %s"
            params.append(level.value)
        if parent_id is not None:
            sql += " AND parent_id = %s"
            params.append(parent_id)
        return [_asset(r) for r in self._all(sql + " ORDER BY path", params)]

    def delete_asset(self, tenant_id: int, asset_id: int) -> None:
        key = [tenant_id, asset_id]
        children = Conflict(f"asset {asset_id} still has child assets; delete them first")
        bound = Conflict(f"asset {asset_id} is bound to devices; unbind them first")
        with self._write({"assets_parent_fkey": children, "device_assets_asset_fkey": bound}) as tx:
            if tx.one("SELECT 1 FROM assets WHERE tenant_id = %s AND parent_id = %s LIMIT 1", key):
                raise children
            names = tx.all("SELECT d.name FROM device_assets da JOIN devices d ON d.id = da.device_id "
                           "WHERE da.tenant_id = %s AND da.asset_id = %s ORDER BY d.name", key)
            if names:
                raise Conflict(f"asset {asset_id} is bound to devices ({', '.join(r[0] for r in names)}); "
                               "unbind them first")
            if tx.one("DELETE FROM assets WHERE tenant_id = %s AND id = %s RETURNING id", key) is None:
                raise NotFound(f"asset {asset_id} does not exist")

    # -- series --------------------------------------------------------------------------------

    def ensure_series(self, tenant_id: int, asset_id: int, measurement: str, unit: str,
                      value_type: ValueType) -> Series:
        """The series for (asset, measurement), created if missing; unit and type updated if changed."""
        select = f"SELECT {_SERIES_COLS} FROM series WHERE tenant_id = %s AND asset_id = %s AND measurement = %s"
        key = [tenant_id, asset_id, measurement]
        row = self._one(select, key)
        if row is not None and row[4] == unit and row[5] == value_type.value:
            return _series(row)  # the hot path: one read, no write
        with self._write({"series_asset_fkey": NotFound(f"asset {asset_id} does not exist")}) as tx:
            row = tx.one(
                f"INSERT INTO series (tenant_id, asset_id, measurement, unit, type) VALUES (%s, %s, %s, %s, %s) "
                f"ON CONFLICT (tenant_id, asset_id, measurement) DO UPDATE "
                f"SET unit = EXCLUDED.unit, type = EXCLUDED.type "
                f"WHERE (series.unit, series.type) IS DISTINCT FROM (EXCLUDED.unit, EXCLUDED.type) "
                f"RETURNING {_SERIES_COLS}", [*key, unit, value_type.value])
            if row is None:  # another process wrote the same just before: nothing changed here
                tx.changed = False
                row = tx.one(select, key)
        return _series(_returned(row))

    def get_series(self, tenant_id: int, series_id: int) -> Series | None:
        row = self._one(f"SELECT {_SERIES_COLS} FROM series WHERE tenant_id = %s AND id = %s",
                        [tenant_id, series_id])
        return _series(row) if row else None

    def list_series(self, tenant_id: int, asset_id: int | None = None) -> list[Series]:
        sql = f"SELECT {_SERIES_COLS} FROM series WHERE tenant_id = %s"
        params: list[Any] = [tenant_id]
        if asset_id is not None:
            sql += " AND asset_id = %s"
            params.append(asset_id)
        return [_series(r) for r in self._all(sql + " ORDER BY id", params)]

    # -- devices -------------------------------------------------------------------------------

    def create_device(self, tenant_id: int, name: str, username: str, secret_hash: str,
                      asset_ids: Sequence[int], *, gateway: bool = False, description: str = "") -> Device:
        ids = list(dict.fromkeys(asset_ids))
        violations = {"devices_tenant_fkey": NotFound(f"tenant {tenant_id} does not exist"),
                      "devices_name_key": Conflict(f"a device named {name!r} already exists"),
                      "devices_username_key": Conflict(f"the broker username {username!r} is already taken"),
                      "device_assets_asset_fkey": NotFound("an asset of this device does not exist in this tenant")}
        with self._write(violations) as tx:
            self._require_assets(tx, tenant_id, ids)
            created = _returned(tx.one(
                "INSERT INTO devices (tenant_id, name, username, secret_hash, gateway, description, created_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                [tenant_id, name, username, secret_hash, gateway, description, self._stamp()]))
            self._bind(tx, tenant_id, created[0], ids)
            row = tx.one(f"{_DEVICE_SELECT} WHERE d.id = %s", [created[0]])
        return _device(_returned(row))

    def update_device(self, tenant_id: int, device_id: int, *, secret_hash: str | None = None,
                      enabled: bool | None = None, asset_ids: Sequence[int] | None = None,
                      description: str | None = None) -> Device:
        changes: dict[str, Any] = {"secret_hash": secret_hash, "enabled": enabled, "description": description}
        sets = {col: value for col, value in changes.items() if value is not None}
        key = [tenant_id, device_id]
        missing = NotFound("an asset of this device does not exist in this tenant")
        with self._write({"device_assets_asset_fkey": missing}) as tx:
            if sets:
                assignments = ", ".join(f"{col} = %s" for col in sets)
                found = tx.one(f"UPDATE devices SET {assignments} WHERE tenant_id = %s AND id = %s RETURNING id",
                               [*sets.values(), *key])
            else:
                found = tx.one("SELECT id FROM devices WHERE tenant_id = %s AND id = %s FOR UPDATE", key)
            if found is None:
                raise NotFound(f"device {device_id} does not exist")
            if asset_ids is not None:
                ids = list(dict.fromkeys(asset_ids))
                self._require_assets(tx, tenant_id, ids)
                tx.run("DELETE FROM device_assets WHERE device_id = %s", [device_id])
                self._bind(tx, tenant_id, device_id, ids)
            row = tx.one(f"{_DEVICE_SELECT} WHERE d.id = %s", [device_id])
        return _device(_returned(row))

    def get_device(self, tenant_id: int, device_id: int) -> Device | None:
        row = self._one(f"{_DEVICE_SELECT} WHERE d.tenant_id = %s AND d.id = %s", [tenant_id, device_id])
        return _device(row) if row else None

    def find_device(self, tenant_id: int, name: str) -> Device | None:
        row = self._one(f"{_DEVICE_SELECT} WHERE d.tenant_id = %s AND d.name = %s", [tenant_id, name])
        return _device(row) if row else None

    def find_device_by_username(self, username: str) -> Device | None:
        row = self._one(f"{_DEVICE_SELECT} WHERE d.username = %s", [username])
        return _device(row) if row else None

    def list_devices(self, tenant_id: int) -> list[Device]:
        rows = self._all(f"{_DEVICE_SELECT} WHERE d.tenant_id = %s ORDER BY d.name", [tenant_id])
        return [_device(r) for r in rows]

    def delete_device(self, tenant_id: int, device_id: int) -> None:
        with self._write() as tx:
            if tx.one("DELETE FROM devices WHERE tenant_id = %s AND id = %s RETURNING id",
                      [tenant_id, device_id]) is None:
                raise NotFound(f"device {device_id} does not exist")

    # -- Sparkplug edge nodes ------------------------------------------------------------------

    def set_sparkplug_node(self, tenant_id: int, device_id: int,
                           node: SparkplugNode | None) -> SparkplugNode | None:
        missing = NotFound(f"device {device_id} does not exist")
        if node is None:
            with self._write() as tx:
                if tx.one("SELECT 1 FROM devices WHERE tenant_id = %s AND id = %s", [tenant_id, device_id]) is None:
                    raise missing
                tx.run("DELETE FROM sparkplug_nodes WHERE tenant_id = %s AND device_id = %s", [tenant_id, device_id])
            return None
        taken = Conflict(f"edge node {node.group}/{node.edge_node} is already another device")
        mapping = _jsonb(spec_to_obj(node.mapping), "a Sparkplug mapping")
        seen = _jsonb(seen_to_obj(node.seen), "what a Sparkplug node declared")
        with self._write({"sparkplug_nodes_device_fkey": missing, "sparkplug_nodes_edge_key": taken}) as tx:
            row = tx.one(
                f"INSERT INTO sparkplug_nodes ({_NODE_COLS}) VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s::jsonb) "
                f"ON CONFLICT (device_id) DO UPDATE SET tenant_id = EXCLUDED.tenant_id, grp = EXCLUDED.grp, "
                f"edge_node = EXCLUDED.edge_node, status = EXCLUDED.status, mapping = EXCLUDED.mapping, "
                f"seen = EXCLUDED.seen RETURNING {_NODE_COLS}",
                [tenant_id, device_id, node.group, node.edge_node, node.status.value, mapping, seen])
        return _node(_returned(row))

    def list_sparkplug_nodes(self, tenant_id: int | None = None) -> list[SparkplugNode]:
        sql = f"SELECT {_NODE_COLS} FROM sparkplug_nodes"
        params: list[Any] = []
        if tenant_id is not None:
            sql += " WHERE tenant_id = %s"
            params.append(tenant_id)
        return [_node(r) for r in self._all(sql + " ORDER BY grp, edge_node", params)]

    # -- field-bus sections --------------------------------------------------------------------

    def set_device_fieldbus(self, tenant_id: int, device_id: int,
                            sections: DeviceFieldbus | None) -> DeviceFieldbus | None:
        missing = NotFound(f"device {device_id} does not exist")
        if sections is None or sections.empty:
            with self._write() as tx:
                if tx.one("SELECT 1 FROM devices WHERE tenant_id = %s AND id = %s", [tenant_id, device_id]) is None:
                    raise missing
                tx.run("DELETE FROM device_fieldbus WHERE tenant_id = %s AND device_id = %s", [tenant_id, device_id])
            return None
        opcua, modbus = (None if section is None else _jsonb(section_to_obj(section), "a field-bus section")
                         for section in (sections.opcua, sections.modbus))
        with self._write({"device_fieldbus_device_fkey": missing}) as tx:
            row = tx.one(
                f"INSERT INTO device_fieldbus ({_FIELDBUS_COLS}) VALUES (%s, %s, %s::jsonb, %s::jsonb) "
                f"ON CONFLICT (device_id) DO UPDATE SET tenant_id = EXCLUDED.tenant_id, opcua = EXCLUDED.opcua, "
                f"modbus = EXCLUDED.modbus RETURNING {_FIELDBUS_COLS}",
                [tenant_id, device_id, opcua, modbus])
        return _fieldbus(_returned(row))

    def list_device_fieldbus(self, tenant_id: int) -> list[DeviceFieldbus]:
        rows = self._all(f"SELECT {_FIELDBUS_COLS} FROM device_fieldbus WHERE tenant_id = %s ORDER BY device_id",
                         [tenant_id])
        return [_fieldbus(r) for r in rows]

    def version(self) -> int:
        """Bumped by every committed write of any process; stored, so it keeps rising across reopens."""
        row = self._one("SELECT version FROM registry_meta")
        return int(row[0]) if row else 0


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _translate(exc: pgerrors.IntegrityError, violations: Violations) -> ShopfloorError:
    """The caller's meaning of a violated constraint, else a generic error of the right kind."""
    known = violations.get(exc.diag.constraint_name or "")
    if known is not None:
        return known
    if isinstance(exc, pgerrors.CheckViolation | pgerrors.NotNullViolation):
        return InvalidInput(f"the registry refused a value: {_first_line(exc)}")
    return Conflict(f"the registry refused the change: {_first_line(exc)}")
