"""Value writes to a machine's measurements from the platform: authorised, logged, then sent.

An engineer asks to write measurements of a machine (a setpoint a PLC holds on an OPC UA node, for
instance). The write is logged first, as an audit event (kind ``command``, type ``opcua_write``)
naming the token and every value, and only then published as a JSON command on the machine's
``shopfloor/v1/{tenant}/{site}/{area}/{line}/{machine}/command`` topic. The edge agent executes it
through the OPC UA connector (``connectors.opcua.handle_command``) and answers on
``.../command/reply``, which is stored like any command reply.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from shopfloor.domain.assets import Level, ValueType
from shopfloor.domain.errors import InvalidInput, ShopfloorError
from shopfloor.domain.records import EventRecord, IngestBatch
from shopfloor.domain.tenancy import Role, TenantContext
from shopfloor.domain.topics import Kind, TopicAddress
from shopfloor.ports.ingest import BatchSink
from shopfloor.ports.sparkplug import Publisher
from shopfloor.services.registry import RegistryService

log = logging.getLogger(__name__)

COMMAND_KIND = "command"
WRITE_TYPE = "opcua_write"  # what connectors.opcua.handle_command executes
MAX_WRITES = 100
COMMAND_QOS = 1


class WritesUnavailable(ShopfloorError):
    status = 503
    title = "Machine writes unavailable"


@dataclass(frozen=True, slots=True)
class MeasurementWrite:
    measurement: str
    value: bool | int | float | str


class MachineWriteService:
    def __init__(self, registry: RegistryService, audit: BatchSink, publisher: Publisher | None,
                 now_us: Callable[[], int]) -> None:
        self.registry = registry
        self._audit = audit
        self._publisher = publisher
        self._now_us = now_us

    async def write(self, ctx: TenantContext, asset_id: int, writes: Sequence[MeasurementWrite]) -> dict[str, Any]:
        """Log and send the writes to machine ``asset_id``; returns what was logged, with the topic."""
        ctx.require(Role.ENGINEER)
        machine = self.registry.asset(ctx, asset_id)
        if machine.level is not Level.MACHINE:
            raise InvalidInput(f"asset {asset_id} is a {machine.level.value}; values are written to machines")
        if not writes or len(writes) > MAX_WRITES:
            raise InvalidInput(f"a write request holds 1 to {MAX_WRITES} values")
        tid = ctx.require_tenant()
        atype = self.registry.repo.get_asset_type(tid, machine.type_name) if machine.type_name else None
        for w in writes:
            m = atype.measurement(w.measurement) if atype is not None else None
            if m is None:
                raise InvalidInput(f"machine {machine.path_str} has no measurement {w.measurement!r}")
            _check_type(w, m.type)
        if self._publisher is None:
            raise WritesUnavailable("this process cannot reach the machines' broker")
        slug = ctx.tenant_slug or self._slug(tid)
        path = tuple(machine.path)
        if len(path) != 4:
            raise InvalidInput(f"machine {machine.path_str} is not at site/area/line/machine")
        topic = TopicAddress(slug, (path[0], path[1], path[2], path[3]), Kind.COMMAND).topic()
        now = self._now_us()
        cid = f"w-{now}-{secrets.token_hex(4)}"
        data: dict[str, Any] = {"id": cid, "by": ctx.token_name, "topic": topic,
                                "writes": [{"measurement": w.measurement, "value": w.value} for w in writes]}
        await self._audit.submit(IngestBatch(events=[EventRecord(tid, machine.id, now, COMMAND_KIND, WRITE_TYPE,
                                                                 data)]))
        command = {"id": cid, "type": WRITE_TYPE, "by": ctx.token_name, "ts": now // 1000, "writes": data["writes"]}
        try:
            await self._publisher.publish(topic, json.dumps(command).encode(), COMMAND_QOS, False)
        except ShopfloorError as exc:
            raise WritesUnavailable(f"{topic}: {exc.message}") from None
        except Exception as exc:
            raise WritesUnavailable(f"{topic}: the broker did not take the command: {exc}") from None
        log.info("opcua_write %s by %s to %s: %d value(s)", cid, ctx.token_name, topic, len(writes))
        return {**data, "asset_id": machine.id, "ts_us": now}

    def _slug(self, tenant_id: int) -> str:
        tenant = self.registry.repo.get_tenant(tenant_id)
        if tenant is None:
            raise InvalidInput("tenant vanished")
        return tenant.slug


def _check_type(w: MeasurementWrite, vtype: ValueType) -> None:
    ok = {ValueType.NUMERIC: isinstance(w.value, int | float) and not isinstance(w.value, bool),
          ValueType.BOOLEAN: isinstance(w.value, bool), ValueType.STRING: isinstance(w.value, str)}[vtype]
    if not ok:
        raise InvalidInput(f"measurement {w.measurement!r} is {vtype.value}; {w.value!r} is not")
