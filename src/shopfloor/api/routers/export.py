"""History export: CSV or Parquet, streamed while it is read."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse

from shopfloor.api.deps import Ctx, Services
from shopfloor.api.errors import problem
from shopfloor.api.timeparams import parse_param
from shopfloor.domain.timeutil import now_us
from shopfloor.services.export import COLUMNS, ExportFormat

router = APIRouter(tags=["data"])

_FILES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": f"The file, streamed; columns {', '.join(COLUMNS)}.",
        "content": {"text/csv": {}, "application/vnd.apache.parquet": {}},
    },
}


@router.get("/export", response_class=StreamingResponse, responses=_FILES)
def export_history(
    ctx: Ctx, svc: Services,
    series_id: Annotated[list[int] | None, Query(description="one or more series")] = None,
    asset_id: Annotated[list[int] | None, Query(description="every series of these assets and "
                                                            "of the assets below them")] = None,
    from_: Annotated[str | None, Query(alias="from", description="RFC 3339 or epoch ms; default 1 h ago")] = None,
    to: Annotated[str | None, Query(description="RFC 3339 or epoch ms; default now")] = None,
    fmt: Annotated[ExportFormat, Query(alias="format", description="csv or parquet")] = ExportFormat.CSV,
) -> Response:
    """Raw history of series (or of whole assets) over a window, oldest first, as a file download.

    Everything asked for is checked before the download starts; then samples are read and sent
    chunk by chunk, so a long window does not need the server's memory.
    """
    if svc.export is None:
        return problem(503, "Not available", "history export is not configured on this server")
    end = parse_param(to, "to", now_us())
    start = parse_param(from_, "from", end - 3_600_000_000)
    export = svc.export.open(ctx, series_ids=series_id or [], asset_ids=asset_id or [], start_us=start,
                             end_us=end, fmt=fmt)
    return StreamingResponse(export.chunks(), media_type=export.media_type,
                             headers={"Content-Disposition": f'attachment; filename="{export.filename}"'})
