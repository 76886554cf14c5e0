"""The server-mode store: PostgreSQL holds the registry and the historian (time-partitioned)."""
