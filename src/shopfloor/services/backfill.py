"""Back-fill: messages exactly as they would arrive over MQTT, posted by an API caller (imports from
an existing historian or MES, and tests).

The caller's token fixes the tenant: a topic of another tenant is refused as ``outside_prefix``
and never reaches ingest, like a device publishing outside its prefix. The rest goes through the
ingest service like a message from a trusted broker (``RawMessage(device="")``: the machine comes
from the topic), with the same validation, value by value, dead letters included — and the same
``too_old`` rule: nothing older than the raw retention is taken.

Back-filled history is committed apart from live data and marked so (``RawMessage.live``): rules
evaluate it, alarms and journal record it, but nobody is notified as if it were happening now.

KPIs are computed from stored events on request, so back-filled data shows in the next answer,
for closed shifts too.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import msgspec

from shopfloor.domain.errors import PayloadTooLarge
from shopfloor.domain.records import IngestBatch, Reason
from shopfloor.domain.tenancy import Role, TenantContext
from shopfloor.domain.topics import TopicError, parse_topic
from shopfloor.ports.ingest import MessageSink, RawMessage

MAX_MESSAGES = 10_000
MAX_BYTES = 10 * 1024 * 1024
MAX_ERRORS = 100


@runtime_checkable
class MessageJudge(Protocol):
    """What ingest offers beyond the sink: judging a message without committing it (for the report)."""

    def decode(self, msg: RawMessage) -> tuple[IngestBatch, int | None]: ...


class Rejection(msgspec.Struct, frozen=True):
    index: int  # position in the posted list
    topic: str
    reason: str
    detail: str


class BackfillReport(msgspec.Struct, frozen=True):
    """What became of the posted messages. ``accepted``: messages stored whole; ``rejected``:
    messages with at least one value (or the whole message) refused. ``samples``/``events``: values
    taken (a value already stored is not stored twice). The counts beyond ``received`` and the
    topic checks are None when the ingest behind the API cannot judge messages before committing."""

    received: int
    accepted: int | None
    rejected: int | None
    samples: int | None
    events: int | None
    reasons: dict[str, int]
    errors: list[Rejection]
    errors_truncated: bool = False


def check_caller(ctx: TenantContext) -> int:
    """Back-fill writes a tenant's history: an engineer (or admin) token of that tenant."""
    ctx.require(Role.ENGINEER)
    return ctx.require_tenant()


async def backfill(ctx: TenantContext, messages: list[tuple[str, bytes]], sink: MessageSink,
                   now_us: int) -> BackfillReport:
    """Submit ``(topic, payload)`` messages for the caller's tenant; return after they committed."""
    check_caller(ctx)
    if len(messages) > MAX_MESSAGES:
        raise PayloadTooLarge(f"{len(messages)} messages; post at most {MAX_MESSAGES} per call")
    slug = ctx.tenant_slug or ""
    errors: list[Rejection] = []
    reasons: dict[str, int] = {}
    bad: set[int] = set()

    def reject(index: int, topic: str, reason: Reason, detail: str) -> None:
        bad.add(index)
        reasons[reason.value] = reasons.get(reason.value, 0) + 1
        if len(errors) < MAX_ERRORS:
            errors.append(Rejection(index, topic[:512], reason.value, detail))

    submit: list[RawMessage] = []
    indexes: list[int] = []
    for i, (topic, payload) in enumerate(messages):
        try:
            addr = parse_topic(topic)
        except TopicError as exc:
            reject(i, topic, Reason.UNKNOWN_TOPIC, str(exc))
            continue
        if addr.tenant != slug:
            reject(i, topic, Reason.OUTSIDE_PREFIX, f"this token writes only under shopfloor/v1/{slug}/")
            continue
        submit.append(RawMessage("", topic, payload, now_us, live=False))
        indexes.append(i)
    samples = events = 0
    judged = isinstance(sink, MessageJudge)
    if isinstance(sink, MessageJudge):
        for i, msg in zip(indexes, submit, strict=True):
            batch, _ = sink.decode(msg)
            samples += len(batch.samples)
            events += len(batch.events)
            for d in batch.dead_letters:
                reject(i, msg.topic, d.reason, d.detail)
    if submit:
        await sink.submit_messages(submit)
    return BackfillReport(
        received=len(messages),
        accepted=len(messages) - len(bad) if judged else None,
        rejected=len(bad) if judged else None,
        samples=samples if judged else None,
        events=events if judged else None,
        reasons=dict(sorted(reasons.items())),
        errors=errors,
        errors_truncated=sum(reasons.values()) > len(errors),
    )
