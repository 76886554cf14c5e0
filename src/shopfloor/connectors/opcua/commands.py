"""The edge agent's handler of value writes the platform sends on a machine's ``.../command`` topic.

A command (JSON)::

    {"id": "c-17", "type": "opcua_write", "by": "alice",
     "writes": [{"measurement": "speed_setpoint", "value": 42.0}]}

Each write names a measurement of the machine (mapped to a ``writable`` node) or, instead, a
``node`` id of the mapping. The reply, for ``.../command/reply``, says per write whether it went
through: ``{"ts": ..., "id": "c-17", "status": "ok" | "error", "results": [...]}``. Nothing here
raises on bad input: the reply carries the reason.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from shopfloor.connectors.opcua.errors import OpcUaWriteError
from shopfloor.connectors.opcua.source import OpcUaSource
from shopfloor.domain.errors import ShopfloorError

log = logging.getLogger(__name__)

WRITE_COMMAND = "opcua_write"
MAX_WRITES = 100


async def handle_command(sources: OpcUaSource | Sequence[OpcUaSource], machine: str,
                         payload: bytes | str) -> dict[str, Any] | None:
    """Execute an ``opcua_write`` command for ``machine`` (its path ``site/area/line/machine``).

    Returns the reply to publish on ``.../command/reply``, or None when the message is another
    kind of command (for another handler)."""
    try:
        cmd = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        return _reply(None, [], f"command is not JSON: {exc}")
    if not isinstance(cmd, dict) or cmd.get("type") != WRITE_COMMAND:
        return None
    cid = cmd.get("id") if isinstance(cmd.get("id"), str | int) else None
    writes = cmd.get("writes")
    if not isinstance(writes, list) or not writes or len(writes) > MAX_WRITES:
        return _reply(cid, [], f"'writes' must be a list of 1 to {MAX_WRITES} writes")
    pool = [sources] if isinstance(sources, OpcUaSource) else list(sources)
    results = []
    for w in writes:
        results.append(await _one(pool, machine, w))
    failed = [r["error"] for r in results if not r["ok"]]
    log.info("opcua_write %s by %s on %s: %d of %d written", cid, cmd.get("by"), machine,
             len(results) - len(failed), len(results))
    return _reply(cid, results, "; ".join(failed) if failed else None)


async def _one(pool: Sequence[OpcUaSource], machine: str, w: Any) -> dict[str, Any]:
    if not isinstance(w, dict) or "value" not in w:
        return {"ok": False, "error": "a write is an object with 'measurement' (or 'node') and 'value'"}
    value = w["value"]
    target = {k: w[k] for k in ("measurement", "node") if k in w}
    if not isinstance(value, bool | int | float | str):
        return {**target, "ok": False, "error": f"value {value!r} is not a number, boolean or string"}
    for source in pool:
        try:
            if isinstance(w.get("node"), str):
                node_id = w["node"]
                source_nodes = {b.node_id: b for link in source.links for b in link.nodes}
                bound = source_nodes.get(node_id)
                if bound is None:
                    continue
                if bound.asset != machine.strip("/"):
                    return {**target, "ok": False, "error": f"node {node_id} belongs to {bound.asset}, not {machine}"}
            elif isinstance(w.get("measurement"), str):
                try:
                    node_id = source.node_for(machine, w["measurement"])
                except OpcUaWriteError:
                    continue
            else:
                return {**target, "ok": False, "error": "a write names a 'measurement' or a 'node'"}
            await source.write(node_id, value)
            return {**target, "node": node_id, "ok": True}
        except ShopfloorError as exc:
            return {**target, "ok": False, "error": exc.message}
        except Exception as exc:  # the server's or the link's trouble goes into the reply
            return {**target, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {**target, "ok": False, "error": f"no OPC UA node of {machine} is mapped to {target}"}


def _reply(cid: Any, results: list[dict[str, Any]], error: str | None) -> dict[str, Any]:
    reply: dict[str, Any] = {"ts": time.time_ns() // 1_000_000, "id": cid, "status": "error" if error else "ok",
                             "results": results}
    if error:
        reply["error"] = error
    return reply
