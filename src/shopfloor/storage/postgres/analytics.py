"""Analytics models in PostgreSQL: the ``analytics_models`` table (see ``ports.analytics``).

Several processes may score at once; ``save_progress`` merges under the row's lock
(``SELECT ... FOR UPDATE``), so two writers of different assets keep both.
"""

from __future__ import annotations

from shopfloor.domain.analytics.models import AnalyticsModel, ModelSpec, TrainedState
from shopfloor.domain.errors import NotFound
from shopfloor.storage.analytics_rows import (
    COLUMNS,
    from_row,
    parse_progress,
    progress_json,
    spec_params,
    trained_meta,
)
from shopfloor.storage.postgres.database import PgDatabase

MIGRATIONS: list[str] = [
    """
    CREATE TABLE analytics_models (
        tenant_id bigint NOT NULL,
        name text NOT NULL,
        asset_type text NOT NULL,
        inputs text NOT NULL,
        kind text NOT NULL,
        params text NOT NULL,
        output text NOT NULL,
        description text NOT NULL,
        blob bytea,
        trained text,
        progress text,
        PRIMARY KEY (tenant_id, name)
    );
    """,
]


class PostgresAnalyticsStore:
    def __init__(self, db: PgDatabase) -> None:
        self._db = db
        db.migrate("analytics", MIGRATIONS)

    def _get(self, tenant_id: int, name: str) -> AnalyticsModel | None:
        with self._db.connection() as conn:
            row = conn.execute(f"SELECT {COLUMNS} FROM analytics_models WHERE tenant_id = %s AND name = %s",
                               [tenant_id, name]).fetchone()
        return None if row is None else from_row(row)

    def _require(self, tenant_id: int, name: str) -> AnalyticsModel:
        model = self._get(tenant_id, name)
        if model is None:
            raise NotFound(f"no analytics model {name!r}")
        return model

    def put_spec(self, spec: ModelSpec) -> AnalyticsModel:
        with self._db.connection() as conn:
            conn.execute(f"INSERT INTO analytics_models ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, "
                         "NULL, NULL, NULL) ON CONFLICT (tenant_id, name) DO UPDATE SET asset_type = "
                         "excluded.asset_type, inputs = excluded.inputs, kind = excluded.kind, params = "
                         "excluded.params, output = excluded.output, description = excluded.description, "
                         "blob = NULL, trained = NULL, progress = NULL", spec_params(spec))
        return self._require(spec.tenant_id, spec.name)

    def get(self, tenant_id: int, name: str) -> AnalyticsModel | None:
        return self._get(tenant_id, name)

    def list_models(self, tenant_id: int) -> list[AnalyticsModel]:
        with self._db.connection() as conn:
            rows = conn.execute(f"SELECT {COLUMNS} FROM analytics_models WHERE tenant_id = %s ORDER BY name COLLATE \"C\"",
                                [tenant_id]).fetchall()
        return [from_row(r) for r in rows]

    def list_trained(self) -> list[AnalyticsModel]:
        with self._db.connection() as conn:
            rows = conn.execute(f"SELECT {COLUMNS} FROM analytics_models WHERE blob IS NOT NULL "
                                "ORDER BY tenant_id, name COLLATE \"C\"").fetchall()
        return [from_row(r) for r in rows]

    def delete(self, tenant_id: int, name: str) -> None:
        with self._db.connection() as conn:
            cur = conn.execute("DELETE FROM analytics_models WHERE tenant_id = %s AND name = %s", [tenant_id, name])
            if cur.rowcount == 0:
                raise NotFound(f"no analytics model {name!r}")

    def save_trained(self, tenant_id: int, name: str, trained: TrainedState) -> AnalyticsModel:
        with self._db.connection() as conn:
            cur = conn.execute("UPDATE analytics_models SET blob = %s, trained = %s, progress = NULL "
                               "WHERE tenant_id = %s AND name = %s",
                               [trained.blob, trained_meta(trained), tenant_id, name])
            if cur.rowcount == 0:
                raise NotFound(f"no analytics model {name!r}")
        return self._require(tenant_id, name)

    def save_progress(self, tenant_id: int, name: str, life_from_us: dict[int, int],
                      scored_to_us: dict[int, int]) -> None:
        with self._db.connection() as conn:
            row = conn.execute("SELECT progress FROM analytics_models WHERE tenant_id = %s AND name = %s FOR UPDATE",
                               [tenant_id, name]).fetchone()
            if row is None:
                raise NotFound(f"no analytics model {name!r}")
            life, scored = parse_progress(row[0])
            life.update(life_from_us)
            scored.update(scored_to_us)
            conn.execute("UPDATE analytics_models SET progress = %s WHERE tenant_id = %s AND name = %s",
                         [progress_json(life, scored), tenant_id, name])
