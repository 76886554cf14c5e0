"""Shared test helpers: free ports, and 'skip here, fail in CI' for missing servers."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def need(condition: bool, what: str) -> None:
    """Skip when ``what`` is missing on a laptop; fail in CI, where it must be there."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI but missing")
    pytest.skip(f"{what} is not available here")


PG_DSN = os.environ.get("SHOPFLOOR_TEST_PG", "host=127.0.0.1 port=5432 dbname=test user=postgres")


def pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_DSN, connect_timeout=3):
            return True
    except Exception:
        return False


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, str]]:
    """(dsn, schema): a fresh PostgreSQL schema for one test, dropped afterwards."""
    import uuid

    import psycopg

    need(pg_available(), f"PostgreSQL at {PG_DSN}")
    schema = f"t_{uuid.uuid4().hex[:16]}"
    yield PG_DSN, schema
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
