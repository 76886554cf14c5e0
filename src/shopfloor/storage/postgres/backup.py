"""Backup and restore of the PostgreSQL store: ``pg_dump``/``pg_restore`` of the installation's schema.

A backup is ``pg_dump --schema=<schema> --format=custom``. It runs while servers keep writing:
pg_dump reads from one snapshot. We export that snapshot ourselves (``pg_export_snapshot``) and
hand it to pg_dump, so the ingest sequence we report is read from exactly the state the dump
holds.

A restore is ``pg_restore --single-transaction`` (all or nothing) into an empty schema. The dump
names the schema it came from; when the target has another name, the dump is restored under its
own name (which must then be free in this database) and renamed. Servers using the target
schema must be stopped first. With ``replace`` an existing, non-empty target schema is renamed
aside (``<schema>_before_restore_<time>``), never dropped.

The client tools come from ``bin_dir`` or the ``PATH``; they must be at least as new as the server.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from shopfloor.domain.errors import Conflict, InvalidInput, StoreUnavailable
from shopfloor.domain.timeutil import now_us
from shopfloor.ports.backup import BackupInfo
from shopfloor.storage.postgres.database import _safe

_MAGIC = b"PGDMP"
_SCHEMA_ENTRY = re.compile(r"^\d+; \d+ \d+ SCHEMA - (\S+) ", re.M)


class PgBackup:
    """``shopfloor.ports.backup.Backup`` for one installation's schema in a PostgreSQL database."""

    store = "postgresql"
    suffix = ".dump"

    def __init__(self, dsn: str, schema: str, *, bin_dir: str | Path | None = None,
                 work_dir: Path | None = None) -> None:
        self.dsn = dsn
        self.schema = schema
        self.bin_dir = Path(bin_dir) if bin_dir else None
        self.work_dir = work_dir or Path(tempfile.gettempdir())
        self._busy = threading.Lock()

    # ---- backup ----------------------------------------------------------------------------

    def backup_to(self, path: Path) -> BackupInfo:
        path = Path(path)
        if path.exists():
            raise Conflict(f"{path} exists already; a backup never overwrites a file")
        path.parent.mkdir(parents=True, exist_ok=True)
        pg_dump = self._tool("pg_dump")
        if not self._busy.acquire(blocking=False):
            raise Conflict("a backup of this schema is running already; wait for it to finish")
        try:
            with self._connect() as conn:
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                conn.read_only = True
                with conn.transaction():
                    if not _schema_exists(conn, self.schema):
                        raise InvalidInput(f"there is no schema {self.schema!r} in this database")
                    row = conn.execute("SELECT pg_export_snapshot()").fetchone()
                    snapshot = str(row[0]) if row else ""
                    last_seq = _last_seq(conn, self.schema)
                    # the snapshot lives as long as this transaction: pg_dump runs inside it
                    _run([pg_dump, f"--dbname={self._conninfo()}", f"--schema={self.schema}", "--format=custom",
                          f"--snapshot={snapshot}", f"--file={path}"], "pg_dump", self._env())
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        finally:
            self._busy.release()
        return BackupInfo(self.store, path, path.stat().st_size, last_seq, now_us())

    # ---- restore ---------------------------------------------------------------------------

    def restore_from(self, path: Path, *, replace: bool = False) -> BackupInfo:
        path = Path(path)
        source = self.dumped_schema(path)
        target = self.schema
        pg_restore = self._tool("pg_restore")
        kept: str | None = None
        with self._connect() as conn:
            conn.autocommit = True
            occupied = _schema_exists(conn, target) and _schema_objects(conn, target) > 0
            if occupied and not replace:
                raise Conflict(f"schema {target!r} holds data; restore into an empty schema, or with "
                               "replace (--replace) to keep it aside under another name")
            if source != target and _schema_exists(conn, source):
                raise Conflict(f"the backup is of schema {source!r}, which exists in this database; "
                               f"pg_restore can only recreate it under that name before renaming it to "
                               f"{target!r}: restore into another database, or move {source!r} aside first")
            if occupied:
                kept = _aside_name(target)
                conn.execute(sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(sql.Identifier(target),
                                                                             sql.Identifier(kept)))
            elif _schema_exists(conn, target):  # empty, e.g. made by a server that started on it
                conn.execute(sql.SQL("DROP SCHEMA {}").format(sql.Identifier(target)))
        try:
            _run([pg_restore, f"--dbname={self._conninfo()}", "--no-owner", "--no-privileges", "--exit-on-error",
                  "--single-transaction", str(path)], "pg_restore", self._env())
        except BaseException:
            if kept is not None:
                self._put_back(kept, target)
            raise
        with self._connect() as conn:
            conn.autocommit = True
            if source != target:
                conn.execute(sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(sql.Identifier(source),
                                                                             sql.Identifier(target)))
            last_seq = _last_seq(conn, target)
        return BackupInfo(self.store, path, path.stat().st_size, last_seq, now_us(), kept_aside=kept)

    def dumped_schema(self, path: Path) -> str:
        """The schema a pg_dump archive at ``path`` holds (``InvalidInput`` if it is not one)."""
        if not is_pg_dump(path):
            raise InvalidInput(f"{path} is not a pg_dump archive in custom format (a DuckDB backup is "
                               "restored with the server stopped, into its data folder)")
        listing = _run([self._tool("pg_restore"), "--list", str(path)], "pg_restore --list")
        schemas = _SCHEMA_ENTRY.findall(listing)
        if len(schemas) != 1:
            raise InvalidInput(f"{path} holds {len(schemas)} schemas; a shopfloor backup holds exactly one")
        return str(schemas[0])

    # ---- plumbing --------------------------------------------------------------------------

    def _put_back(self, kept: str, target: str) -> None:
        with self._connect() as conn:
            conn.autocommit = True
            if not _schema_exists(conn, target):
                conn.execute(sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(sql.Identifier(kept),
                                                                             sql.Identifier(target)))

    def _conninfo(self) -> str:
        """The DSN without its password, for the command line (``ps`` shows it to every user)."""
        params = conninfo_to_dict(self.dsn)
        params.pop("password", None)
        return make_conninfo("", **params)

    def _env(self) -> dict[str, str]:
        """The environment of pg_dump/pg_restore: ours, plus the password if the DSN has one."""
        env = dict(os.environ)
        password = conninfo_to_dict(self.dsn).get("password")
        if password:
            env["PGPASSWORD"] = str(password)
        return env

    def _connect(self) -> psycopg.Connection:
        try:
            return psycopg.connect(self.dsn, connect_timeout=10)
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"cannot reach PostgreSQL at {_safe(self.dsn)}: {exc}".strip()) from None

    def _tool(self, name: str) -> str:
        if self.bin_dir is not None:
            candidate = self.bin_dir / name
            if candidate.is_file():
                return str(candidate)
            raise StoreUnavailable(f"{name} is not in {self.bin_dir}")
        found = shutil.which(name)
        if found is None:
            raise StoreUnavailable(f"{name} is not on the PATH; install the PostgreSQL client tools "
                                   "(as new as the server, e.g. postgresql-client-15)")
        return found


def is_pg_dump(path: Path) -> bool:
    try:
        with Path(path).open("rb") as f:
            return f.read(len(_MAGIC)) == _MAGIC
    except OSError:
        return False


def _run(argv: list[str], what: str, env: dict[str, str] | None = None) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)  # noqa: S603 (our argv)
    except OSError as exc:
        raise StoreUnavailable(f"{what} could not start: {exc}") from None
    if done.returncode != 0:
        detail = _safe(done.stderr.strip())[-2000:] or f"exit status {done.returncode}"
        raise StoreUnavailable(f"{what} failed: {detail}")
    return done.stdout


def _schema_exists(conn: psycopg.Connection, schema: str) -> bool:
    row = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", [schema]).fetchone()
    return bool(row and row[0])


def _schema_objects(conn: psycopg.Connection, schema: str) -> int:
    """Tables, sequences, views, indexes and functions in ``schema``."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM pg_class c WHERE c.relnamespace = n.oid)"
        " + (SELECT count(*) FROM pg_proc p WHERE p.pronamespace = n.oid)"
        " FROM pg_namespace n WHERE n.nspname = %s", [schema]).fetchone()
    return int(row[0]) if row else 0


def _last_seq(conn: psycopg.Connection, schema: str) -> int | None:
    """The ingest sequence recorded in ``historian_seq`` (None when the schema has no historian)."""
    row = conn.execute("SELECT to_regclass(%s)", [f'"{schema}".historian_seq']).fetchone()
    if not row or row[0] is None:
        return None
    query = sql.SQL("SELECT max(last_seq) FROM {}.historian_seq").format(sql.Identifier(schema))
    seq = conn.execute(query).fetchone()
    return None if not seq or seq[0] is None else int(seq[0])


def _aside_name(schema: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    return f"{schema[:40]}_before_restore_{stamp}"
