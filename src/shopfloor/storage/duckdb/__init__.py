"""The embedded store: one DuckDB file holds the registry and the historian."""
