"""The historian's tables in PostgreSQL, as numbered migrations (component "historian").

Each entry is one version; ``PgDatabase.migrate`` applies the ones a schema has not seen, in one
transaction under an advisory lock. Never edit a released entry: append a new one. The tables are
described for SQL readers (Grafana, psql) in docs/postgres-schema.md.
"""

from __future__ import annotations

from shopfloor.storage.postgres.changes import MIGRATION as V3_SEQ_INDEXES
from shopfloor.storage.postgres.pg_follower import MIGRATION as V4_ROLLUP_FOLLOWER
from shopfloor.storage.postgres.pg_rollups import MIGRATION as V2_ROLLUPS

V1_BASE = """
CREATE TABLE samples (
    series_id integer NOT NULL,
    ts timestamptz NOT NULL,
    value double precision,
    text text,
    quality smallint NOT NULL,
    seq bigint NOT NULL,
    PRIMARY KEY (series_id, ts)
) PARTITION BY RANGE (ts);
COMMENT ON TABLE samples IS 'Raw samples, one row per (series, ts); partitioned by day (samples_YYYYMMDD_YYYYMMDD)';
COMMENT ON COLUMN samples.quality IS '0 good, 1 uncertain, 2 bad';
COMMENT ON COLUMN samples.seq IS 'ingest sequence number of the commit that stored the row';

CREATE TABLE events (
    seq bigint NOT NULL,
    tenant_id integer NOT NULL,
    asset_id integer NOT NULL,
    ts timestamptz NOT NULL,
    kind text NOT NULL,
    type text NOT NULL,
    data jsonb NOT NULL
);
CREATE UNIQUE INDEX events_identity ON events (tenant_id, asset_id, ts, kind, type, md5(data::text));
CREATE INDEX events_kind ON events (tenant_id, kind, asset_id, ts);
CREATE INDEX events_ts ON events (ts);
COMMENT ON TABLE events IS 'Machine events (state, count, event, status, command_reply); identical events are stored once';

CREATE TABLE dead_letters (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id integer,
    device text NOT NULL,
    topic text NOT NULL,
    reason text NOT NULL,
    detail text NOT NULL,
    payload bytea NOT NULL,
    received_at timestamptz NOT NULL,
    seq bigint NOT NULL
);
CREATE INDEX dead_letters_tenant ON dead_letters (tenant_id, received_at, id);
COMMENT ON TABLE dead_letters IS 'Rejected messages and values, one row per delivery';

CREATE TABLE historian_seq (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    last_seq bigint NOT NULL
);
INSERT INTO historian_seq (last_seq) VALUES (0);
COMMENT ON TABLE historian_seq IS 'The last ingest sequence number; its row lock orders commits';
"""

# V4: the rollup follower's mark (at the last seq: an existing install's rollups are complete,
# kept by its commits until now) and its table of pending commits (empty).
MIGRATIONS: list[str] = [V1_BASE, V2_ROLLUPS, V3_SEQ_INDEXES, V4_ROLLUP_FOLLOWER]
