"""The backup port: a consistent copy of a whole store (registry and historian), and its restore.

Implemented by ``storage.duckdb.backup`` (a copy of the database file, made by the process that
holds it open) and ``storage.postgres.backup`` (``pg_dump``/``pg_restore`` of the installation's
schema). Calls are synchronous and may take long; callers run them off the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True, slots=True)
class BackupInfo:
    """What a backup file holds."""

    store: str  # "duckdb" or "postgresql"
    path: Path
    size_bytes: int
    last_seq: int | None  # the ingest sequence the backup is consistent at (None: no historian)
    created_us: int  # epoch microseconds (UTC)
    kept_aside: str | None = None  # after a restore with ``replace``: where the data it replaced went


class Backup(Protocol):
    store: str  # "duckdb" or "postgresql"
    suffix: str  # file name suffix of a backup: ".duckdb" or ".dump"
    work_dir: Path  # a folder with room for one backup (the server's data folder or a temp folder)

    def backup_to(self, path: Path) -> BackupInfo:
        """Write a consistent backup to ``path`` (which must not exist) while the store keeps working.

        The backup holds every commit up to one point and nothing after it: registry and
        historian agree with each other. Raises ``Conflict`` when another backup is running and
        ``StoreUnavailable`` when the store cannot be read.
        """
        ...

    def restore_from(self, path: Path, *, replace: bool = False) -> BackupInfo:
        """Make the store hold exactly what the backup at ``path`` holds.

        Refuses (``Conflict``) when the store is in use, or already holds data and ``replace`` is
        false; with ``replace`` the current data is kept aside (a renamed file or schema, named in
        ``BackupInfo.kept_aside``), never deleted. Raises ``InvalidInput`` when ``path`` is not a
        backup of this kind of store.
        """
        ...
