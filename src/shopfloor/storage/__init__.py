"""Store adapters: DuckDB (embedded) and PostgreSQL (server mode)."""
