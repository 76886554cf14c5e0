"""Analytics models in DuckDB: the ``analytics_models`` table (see ``ports.analytics``)."""

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
from shopfloor.storage.duckdb.database import Database

MIGRATIONS: list[str] = [
    """
    CREATE TABLE analytics_models (
        tenant_id BIGINT NOT NULL,
        name VARCHAR NOT NULL,
        asset_type VARCHAR NOT NULL,
        inputs VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        params VARCHAR NOT NULL,
        output VARCHAR NOT NULL,
        description VARCHAR NOT NULL,
        blob BLOB,
        trained VARCHAR,
        progress VARCHAR,
        PRIMARY KEY (tenant_id, name)
    );
    """,
]


class DuckDBAnalyticsStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        db.migrate("analytics", MIGRATIONS)

    def _get(self, tenant_id: int, name: str) -> AnalyticsModel | None:
        row = self._db.cursor().execute(f"SELECT {COLUMNS} FROM analytics_models WHERE tenant_id = ? AND name = ?",
                                        [tenant_id, name]).fetchone()
        return None if row is None else from_row(row)

    def _require(self, tenant_id: int, name: str) -> AnalyticsModel:
        model = self._get(tenant_id, name)
        if model is None:
            raise NotFound(f"no analytics model {name!r}")
        return model

    def put_spec(self, spec: ModelSpec) -> AnalyticsModel:
        with self._db.write_lock:
            self._db.cursor().execute(
                f"INSERT INTO analytics_models ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL) "
                "ON CONFLICT (tenant_id, name) DO UPDATE SET asset_type = excluded.asset_type, inputs = "
                "excluded.inputs, kind = excluded.kind, params = excluded.params, output = excluded.output, "
                "description = excluded.description, blob = NULL, trained = NULL, progress = NULL",
                spec_params(spec))
        return self._require(spec.tenant_id, spec.name)

    def get(self, tenant_id: int, name: str) -> AnalyticsModel | None:
        return self._get(tenant_id, name)

    def list_models(self, tenant_id: int) -> list[AnalyticsModel]:
        rows = self._db.cursor().execute(f"SELECT {COLUMNS} FROM analytics_models WHERE tenant_id = ? ORDER BY name",
                                         [tenant_id]).fetchall()
        return [from_row(r) for r in rows]

    def list_trained(self) -> list[AnalyticsModel]:
        rows = self._db.cursor().execute(f"SELECT {COLUMNS} FROM analytics_models WHERE blob IS NOT NULL "
                                         "ORDER BY tenant_id, name").fetchall()
        return [from_row(r) for r in rows]

    def delete(self, tenant_id: int, name: str) -> None:
        with self._db.write_lock:
            self._require(tenant_id, name)
            self._db.cursor().execute("DELETE FROM analytics_models WHERE tenant_id = ? AND name = ?",
                                      [tenant_id, name])

    def save_trained(self, tenant_id: int, name: str, trained: TrainedState) -> AnalyticsModel:
        with self._db.write_lock:
            self._require(tenant_id, name)
            self._db.cursor().execute("UPDATE analytics_models SET blob = ?, trained = ?, progress = NULL "
                                      "WHERE tenant_id = ? AND name = ?",
                                      [trained.blob, trained_meta(trained), tenant_id, name])
        return self._require(tenant_id, name)

    def save_progress(self, tenant_id: int, name: str, life_from_us: dict[int, int],
                      scored_to_us: dict[int, int]) -> None:
        with self._db.write_lock, self._db.transaction() as tx:
            row = tx.execute("SELECT progress FROM analytics_models WHERE tenant_id = ? AND name = ?",
                             [tenant_id, name]).fetchone()
            if row is None:
                raise NotFound(f"no analytics model {name!r}")
            life, scored = parse_progress(row[0])
            life.update(life_from_us)
            scored.update(scored_to_us)
            tx.execute("UPDATE analytics_models SET progress = ? WHERE tenant_id = ? AND name = ?",
                       [progress_json(life, scored), tenant_id, name])
