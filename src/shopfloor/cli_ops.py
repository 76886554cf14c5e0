"""Operations commands of the ``shopfloor`` CLI (backup, restore, export): registered by ``cli``.

``backup`` and ``export`` ask a running server over its API (with DuckDB only the server may open
the file; with PostgreSQL the server holds the connection settings). ``restore`` works on the
store directly, and needs the servers stopped: it replaces what they serve.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console

from shopfloor.client import ApiClient, client_from_settings
from shopfloor.config import load_settings
from shopfloor.domain.errors import ShopfloorError

console = Console(stderr=True)  # stdout may carry an export

Url = Annotated[str | None, typer.Option("--url", help="Server URL [env SHOPFLOOR_URL, default http://127.0.0.1:8000]")]
Token = Annotated[str | None, typer.Option("--token", help="API token [env SHOPFLOOR_TOKEN]")]
CHUNK = 1 << 20
BACKUP_TIMEOUT = httpx.Timeout(30.0, read=3600.0)  # the server makes the whole backup before the first byte
EXPORT_TIMEOUT = httpx.Timeout(30.0, read=600.0)


api_client = client_from_settings  # the API client of a command (tests replace this)


def register(app: typer.Typer) -> None:
    """Add the operations commands to the main CLI."""
    app.command("backup")(backup)
    app.command("restore")(restore)
    app.command("export")(export)


# -- backup ----------------------------------------------------------------------------------------
def backup(
    output: Annotated[Path | None, typer.Option("-o", "--output",
                                                help="File or folder to write [default: the server's file "
                                                     "name, in this folder]")] = None,
    url: Url = None, token: Token = None,
) -> None:
    """A consistent backup of the running server's store (platform admin), written here.

    The server keeps ingesting while it copies. DuckDB gives a database file, PostgreSQL a pg_dump
    archive; the file is checked against the server's SHA-256 before it is kept.
    """
    client = api_client(url, token)
    with _download(client, "POST", "/admin/backup", BACKUP_TIMEOUT) as r:
        dest = _destination(output, _filename(r, "shopfloor-backup"))
        digest, size = _save(r.iter_bytes(CHUNK), dest, check_sha256=r.headers.get("x-shopfloor-sha256"),
                             expected_size=r.headers.get("content-length"))
    seq = r.headers.get("x-shopfloor-last-seq")
    store = r.headers.get("x-shopfloor-store", "?")
    console.print(f"backup of the {store} store written to {dest} ({_size(size)}, sha256 {digest[:16]}…"
                  + (f", up to ingest commit {seq})" if seq else ")"), highlight=False, soft_wrap=True)


# -- restore ---------------------------------------------------------------------------------------
def restore(
    file: Annotated[Path, typer.Argument(help="A backup from 'shopfloor backup' (.duckdb or .dump)",
                                         exists=True, dir_okay=False, readable=True)],
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="DuckDB: folder of the database "
                                                                     "[default: .shopfloor]")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="A shopfloor.toml settings file.")] = None,
    pg_dsn: Annotated[str | None, typer.Option("--pg-dsn", envvar="SHOPFLOOR_PG_DSN",
                                               help="PostgreSQL: connection string of the target database "
                                                    "[default: the database_url setting]")] = None,
    pg_schema: Annotated[str | None, typer.Option("--pg-schema", envvar="SHOPFLOOR_PG_SCHEMA",
                                                  help="PostgreSQL: schema to restore into (empty or absent) "
                                                       "[default: the database_schema setting]")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Keep the current data aside (renamed, not "
                                                            "deleted) and restore in its place")] = False,
) -> None:
    """Restore a backup into the store. Stop the server(s) first: this replaces what they serve.

    DuckDB: the database file in the data folder is replaced (with --replace the old file is kept as
    shopfloor.before-restore-<time>.duckdb). PostgreSQL: pg_restore into an empty schema (with
    --replace an existing one is renamed <schema>_before_restore_<time>).
    """
    # storage adapters, straight from the entry point: a restore needs no services, only a stopped store
    from shopfloor.storage.duckdb.backup import DuckDBBackup, is_duckdb_file
    from shopfloor.storage.postgres.backup import PgBackup, is_pg_dump

    if is_duckdb_file(file):
        settings = load_settings(config, data_dir=data_dir)
        info = DuckDBBackup(settings.db_path).restore_from(file, replace=replace)
        where = str(info.path)
    elif is_pg_dump(file):
        settings = load_settings(config)
        pg_dsn = pg_dsn or settings.database_url
        pg_schema = pg_schema or settings.database_schema
        info = PgBackup(pg_dsn, pg_schema).restore_from(file, replace=replace)
        where = f"schema {pg_schema}"
    else:
        raise ShopfloorError(f"{file} is neither a DuckDB backup nor a pg_dump archive")
    console.print(f"restored {file} into {where}"
                  + (f" (up to ingest commit {info.last_seq})" if info.last_seq is not None else ""),
                  highlight=False, soft_wrap=True)
    if info.kept_aside:
        console.print(f"the data it replaced is kept as {info.kept_aside}", highlight=False, soft_wrap=True)


# -- export ----------------------------------------------------------------------------------------
def export(
    series_id: Annotated[list[int] | None, typer.Option("--series-id", help="A series to export (repeat for "
                                                                           "more)")] = None,
    asset_id: Annotated[list[int] | None, typer.Option("--asset-id", help="Every series of this asset and "
                                                                         "the assets below it (repeatable)")] = None,
    from_: Annotated[str | None, typer.Option("--from", help="RFC 3339 or epoch ms [default: 1 h ago]")] = None,
    to: Annotated[str | None, typer.Option(help="RFC 3339 or epoch ms [default: now]")] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet")] = "csv",
    output: Annotated[Path | None, typer.Option("-o", "--output",
                                                help="File or folder to write [default: stdout for csv, the "
                                                     "server's file name for parquet]")] = None,
    url: Url = None, token: Token = None,
) -> None:
    """Raw history as CSV or Parquet (ts, asset_path, measurement, unit, value, text, quality)."""
    if not series_id and not asset_id:
        raise ShopfloorError("name what to export: --series-id or --asset-id (repeatable)")
    params: dict[str, Any] = {"series_id": series_id or [], "asset_id": asset_id or [], "format": fmt}
    params.update({k: v for k, v in (("from", from_), ("to", to)) if v})
    client = api_client(url, token)
    with _download(client, "GET", "/export", EXPORT_TIMEOUT, params=params) as r:
        if output is None and fmt == "csv":
            out = sys.stdout.buffer
            for chunk in r.iter_bytes(CHUNK):
                out.write(chunk)
            out.flush()
            return
        dest = _destination(output, _filename(r, f"history.{fmt}"))
        _, size = _save(r.iter_bytes(CHUNK), dest)
    console.print(f"history written to {dest} ({_size(size)})", highlight=False, soft_wrap=True)


# -- plumbing --------------------------------------------------------------------------------------
@contextmanager
def _download(client: ApiClient, method: str, path: str, timeout: httpx.Timeout,
              params: dict[str, Any] | None = None) -> Iterator[httpx.Response]:
    answered = False
    try:
        with client.http.stream(method, path, params=params, timeout=timeout) as r:
            answered = True
            if r.status_code >= 400:
                r.read()
                try:
                    detail = r.json().get("detail", r.text)
                except ValueError:
                    detail = r.text
                raise ShopfloorError(f"{r.status_code}: {detail}")
            yield r
    except httpx.HTTPError as exc:
        if answered:
            raise ShopfloorError(f"the transfer from {client.url} broke off: {exc}") from None
        raise ShopfloorError(f"cannot reach {client.url}: {exc} (is 'shopfloor serve' running?)") from None


def _filename(r: httpx.Response, default: str) -> str:
    m = re.search(r'filename="([^"/\\]+)"', r.headers.get("content-disposition", ""))
    name = m.group(1) if m else default
    return name if name not in (".", "..") else default


def _destination(output: Path | None, name: str) -> Path:
    dest = Path(name) if output is None else (output / name if output.is_dir() else output)
    if not dest.parent.is_dir():
        raise ShopfloorError(f"there is no folder {dest.parent}; create it first")
    if dest.exists():
        raise ShopfloorError(f"{dest} exists; choose another --output")
    return dest


def _save(chunks: Iterator[bytes], dest: Path, *, check_sha256: str | None = None,
          expected_size: str | None = None) -> tuple[str, int]:
    """Write to ``dest`` through a ``.part`` file; keep it only if it is complete and matches."""
    part = dest.with_name(dest.name + ".part")
    h = hashlib.sha256()
    size = 0
    try:
        with part.open("wb") as f:
            for chunk in chunks:
                f.write(chunk)
                h.update(chunk)
                size += len(chunk)
        if expected_size is not None and size != int(expected_size):
            raise ShopfloorError(f"the transfer broke off: {size} of {expected_size} bytes arrived")
        if check_sha256 is not None and h.hexdigest() != check_sha256:
            raise ShopfloorError("the file that arrived does not match the server's SHA-256; try again")
        part.replace(dest)
    finally:
        part.unlink(missing_ok=True)
    return h.hexdigest(), size


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"
