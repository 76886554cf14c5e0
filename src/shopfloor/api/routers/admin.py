"""Platform administration over the API: a consistent backup of the whole store.

The backup is made by the server (with DuckDB it is the only process that may open the file)
into a scratch folder next to the data, then streamed to the caller and deleted: a backup kept
on the server's own disk would be lost with that disk, and the caller decides where backups live.
The response carries the backup's size, SHA-256 and ingest sequence in headers, so the client
can check what it stored before it trusts it.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from fastapi import APIRouter
from fastapi.responses import Response, StreamingResponse

from shopfloor.api.deps import Ctx, Services
from shopfloor.api.errors import problem
from shopfloor.domain.timeutil import from_us

router = APIRouter(tags=["admin"])

CHUNK = 1 << 20
_FILE: dict[int | str, dict[str, Any]] = {200: {"description": "The backup file, streamed.", "content": {"application/octet-stream": {}}}}


@router.post("/admin/backup", response_class=StreamingResponse, responses=_FILE)
def backup(ctx: Ctx, svc: Services) -> Response:
    """A consistent backup of registry and history, made while the server keeps running (platform admin).

    DuckDB: a copy of the database file; PostgreSQL: a ``pg_dump`` archive of the schema. Headers:
    ``X-Shopfloor-Store``, ``X-Shopfloor-Last-Seq`` (the last ingest commit it holds),
    ``X-Shopfloor-Sha256``. Restore with ``shopfloor restore``.
    """
    ctx.require_platform()
    if svc.backup is None:
        return problem(503, "Not available", "backups are not configured on this server")
    store = svc.backup
    store.work_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".backup-", dir=store.work_dir))
    f: BinaryIO | None = None
    try:
        info = store.backup_to(scratch / "backup")
        name = f"shopfloor-{from_us(info.created_us).strftime('%Y%m%dT%H%M%SZ')}{store.suffix}"
        f = info.path.open("rb")
        digest = _sha256(f)
    except BaseException:
        if f is not None:
            f.close()
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    # the open file keeps its bytes; the folder goes now, so nothing is left behind if the caller
    # disconnects (where the system refuses to delete an open file, it goes after streaming)
    shutil.rmtree(scratch, ignore_errors=True)
    headers = {
        "Content-Disposition": f'attachment; filename="{name}"',
        "Content-Length": str(info.size_bytes),
        "X-Shopfloor-Store": info.store,
        "X-Shopfloor-Sha256": digest,
    }
    if info.last_seq is not None:
        headers["X-Shopfloor-Last-Seq"] = str(info.last_seq)
    return StreamingResponse(_stream(f, scratch), media_type="application/octet-stream", headers=headers)


def _sha256(f: BinaryIO) -> str:
    h = hashlib.sha256()
    while chunk := f.read(CHUNK):
        h.update(chunk)
    f.seek(0)
    return h.hexdigest()


def _stream(f: BinaryIO, scratch: Path) -> Iterator[bytes]:
    try:
        while chunk := f.read(CHUNK):
            yield chunk
    finally:
        f.close()
        shutil.rmtree(scratch, ignore_errors=True)
