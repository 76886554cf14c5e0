"""Backup and restore of the DuckDB store (registry and historian share one file).

DuckDB lets one process open the file, so a backup of a running installation is made by that
process: :meth:`DuckDBBackup.backup_to` attaches a new database file and copies everything into it
with ``COPY FROM DATABASE``, inside one read transaction. The transaction's snapshot is taken while
``write_lock`` is held (so no commit is half-way), then the lock is released: ingest and API
writes carry on during the copy, and the copy holds every commit up to the snapshot and nothing
after it. Sequences are not transactional in DuckDB, so a copied sequence may be ahead of the
copied rows; that only leaves gaps in future ids, never a reused one.

A restore replaces the file and so needs the server stopped: :meth:`DuckDBBackup.restore_from`
refuses while another process holds the file. It copies the backup next to the database, moves
the current file (and its write-ahead log, which belongs to it) aside, then renames the copy into
place: at every moment the database path holds either the old or the restored database.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import threading
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from shopfloor.domain.errors import Conflict, InvalidInput, StoreUnavailable
from shopfloor.domain.timeutil import now_us
from shopfloor.ports.backup import BackupInfo
from shopfloor.storage.duckdb.database import Database

_MAGIC_OFFSET, _MAGIC = 8, b"DUCK"
_REQUIRED_TABLES = ("schema_migrations",)


class DuckDBBackup:
    """``shopfloor.ports.backup.Backup`` for the DuckDB file at ``path``.

    Give ``db`` when this process has the file open (the server): backups are then made through
    it. Without ``db`` a backup opens the file itself (server stopped), and a restore is possible.
    """

    store = "duckdb"
    suffix = ".duckdb"

    def __init__(self, path: str | Path, db: Database | None = None) -> None:
        self.path = Path(path)
        self.db = db
        memory = str(path) == ":memory:"
        self.work_dir = Path(tempfile.gettempdir()) if memory else self.path.parent
        self._busy = threading.Lock()

    # ---- backup ----------------------------------------------------------------------------

    def backup_to(self, path: Path) -> BackupInfo:
        path = Path(path)
        if path.exists():
            raise Conflict(f"{path} exists already; a backup never overwrites a file")
        if not self._busy.acquire(blocking=False):
            raise Conflict("a backup of this database is running already; wait for it to finish")
        try:
            if self.db is not None:
                last_seq = _copy_database(self.db, path)
            else:
                if not self.path.exists():
                    raise InvalidInput(f"there is no database at {self.path}")
                db = Database(self.path)
                try:
                    last_seq = _copy_database(db, path)
                finally:
                    db.close()
        finally:
            self._busy.release()
        return BackupInfo(self.store, path, path.stat().st_size, last_seq, now_us())

    # ---- restore ---------------------------------------------------------------------------

    def restore_from(self, path: Path, *, replace: bool = False) -> BackupInfo:
        path = Path(path)
        if self.db is not None:
            raise Conflict("the database is open in this process; a restore needs the server stopped")
        if str(self.path) == ":memory:":
            raise InvalidInput("an in-memory database cannot be restored into")
        last_seq = inspect_backup(path)
        target = self.path
        wal = _wal(target)
        if target.exists():
            _check_not_in_use(target)
            if not replace:
                raise Conflict(f"{target} exists; restore with replace (--replace) to keep it aside "
                               "and put the backup in its place")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f"{target.name}.restoring-{secrets.token_hex(4)}")
        try:
            with path.open("rb") as src, staging.open("xb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
                dst.flush()
                os.fsync(dst.fileno())
            kept: Path | None = None
            if target.exists() or wal.exists():
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
                kept = target.with_name(f"{target.stem}.before-restore-{stamp}{target.suffix}")
                if target.exists():
                    os.replace(target, kept)
                if wal.exists():  # the log belongs to the old file: replayed onto the new one it would corrupt it
                    os.replace(wal, _wal(kept))
            os.replace(staging, target)
            _fsync_dir(target.parent)
        finally:
            staging.unlink(missing_ok=True)
        return BackupInfo(self.store, target, target.stat().st_size, last_seq, now_us(),
                          kept_aside=str(kept) if kept else None)


def is_duckdb_file(path: Path) -> bool:
    try:
        with Path(path).open("rb") as f:
            head = f.read(_MAGIC_OFFSET + len(_MAGIC))
    except OSError:
        return False
    return head[_MAGIC_OFFSET:] == _MAGIC


def inspect_backup(path: Path) -> int | None:
    """Check that ``path`` is a shopfloor DuckDB database; return its last ingest sequence."""
    if not Path(path).is_file():
        raise InvalidInput(f"there is no file {path}")
    if not is_duckdb_file(path):
        raise InvalidInput(f"{path} is not a DuckDB database file (a PostgreSQL backup is restored into "
                           "PostgreSQL)")
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        raise InvalidInput(f"{path} cannot be opened as a DuckDB database: {exc}") from None
    try:
        tables = {str(r[0]) for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        missing = [t for t in _REQUIRED_TABLES if t not in tables]
        if missing:
            raise InvalidInput(f"{path} is a DuckDB file but not a shopfloor database (no {', '.join(missing)})")
        if "historian_seq" not in tables:
            return None
        rows = con.execute("SELECT max(last_seq) FROM historian_seq").fetchall()
        return None if not rows or rows[0][0] is None else int(rows[0][0])
    finally:
        con.close()


def _copy_database(db: Database, path: Path) -> int | None:
    """Copy everything of ``db`` into a new file at ``path`` from one snapshot; return its last_seq."""
    path.parent.mkdir(parents=True, exist_ok=True)
    alias = f"_sf_backup_{secrets.token_hex(6)}"
    cur = db.cursor()
    try:
        cur.execute(f"ATTACH {_literal(str(path))} AS {alias}")
    except duckdb.Error as exc:
        raise StoreUnavailable(f"cannot create the backup file {path}: {exc}") from None
    try:
        try:
            with db.write_lock:  # no commit is half-way while the snapshot is taken
                cur.begin()
                name = str(cur.execute("SELECT current_database()").fetchall()[0][0])
                last_seq = _last_seq(cur)
            cur.execute(f"COPY FROM DATABASE {_ident(name)} TO {alias}")
            cur.commit()
        except BaseException:
            _quietly(cur, "ROLLBACK")
            raise
        finally:
            _quietly(cur, f"DETACH {alias}")
    except duckdb.Error as exc:
        path.unlink(missing_ok=True)
        _wal(path).unlink(missing_ok=True)
        raise StoreUnavailable(f"the backup failed: {exc}") from None
    except BaseException:
        path.unlink(missing_ok=True)
        _wal(path).unlink(missing_ok=True)
        raise
    if _wal(path).exists():  # DETACH checkpoints; if it could not, fold the log in now
        con = duckdb.connect(str(path))
        try:
            con.execute("CHECKPOINT")
        finally:
            con.close()
    with path.open("rb") as f:
        os.fsync(f.fileno())
    return last_seq


def _last_seq(cur: duckdb.DuckDBPyConnection) -> int | None:
    rows = cur.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'historian_seq' "
                       "AND database_name = current_database()").fetchall()
    if not rows or not rows[0][0]:
        return None
    seq = cur.execute("SELECT max(last_seq) FROM historian_seq").fetchall()
    return None if not seq or seq[0][0] is None else int(seq[0][0])


def _check_not_in_use(target: Path) -> None:
    try:
        con = duckdb.connect(str(target), read_only=True)
    except (duckdb.IOException, duckdb.ConnectionException) as exc:
        # IOException: another process holds the lock; ConnectionException: this process has it open
        if isinstance(exc, duckdb.ConnectionException) or "lock" in str(exc).lower():
            raise Conflict(f"{target} is in use by a running shopfloor (DuckDB allows one process per file); "
                           "stop the server, then restore") from None
        raise StoreUnavailable(f"cannot open {target}: {exc}") from None
    except duckdb.Error as exc:
        raise StoreUnavailable(f"cannot open {target}: {exc}") from None
    con.close()


def _quietly(cur: duckdb.DuckDBPyConnection, sql: str) -> None:
    with suppress(duckdb.Error):
        cur.execute(sql)


def _wal(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'
