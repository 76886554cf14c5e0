"""The alarm store: rules, alarm instances, their journal, the rule engine's checkpoint, webhook
subscriptions and the outbox of webhook deliveries. Implemented by DuckDB and PostgreSQL.

All calls are synchronous and thread-safe; services run them off the event loop. Times are epoch
microseconds UTC. Alarms and journal entries are stored whole (as JSON of the domain structs) beside
the columns the filters use, so fields the domain adds later need no migration.

The one call that matters for "no alarm missed, none raised twice" is ``save``: the alarms and
journal entries an evaluation produced, the webhook deliveries they cause, and the engine's state
with the last ingest sequence number it has processed go into ONE transaction. After a crash the
engine resumes from that checkpoint, and re-evaluates exactly what the lost work had seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import msgspec

from shopfloor.domain.alarms.model import Action, Alarm, AlarmState, JournalEntry, Priority


class RuleRecord(msgspec.Struct, kw_only=True):
    """A stored rule: the spec is the JSON the domain's rule parser reads (kind, target, limits)."""

    id: int
    tenant_id: int
    name: str
    spec: dict[str, Any]
    enabled: bool = True
    source: str = "api"  # "api", or "plant" when the plant file's ``rules:`` section owns it
    created_us: int = 0
    updated_us: int = 0


class Checkpoint(msgspec.Struct, kw_only=True):
    """Where the rule engine stands: the last ingest sequence processed and its state then."""

    seq: int
    state: bytes = b""
    clock_us: int = 0  # the last clock tick the state has seen


class Subscription(msgspec.Struct, kw_only=True):
    """A webhook: alarm notifications of a tenant at or above ``min_priority``, signed with ``secret``."""

    id: int
    tenant_id: int
    url: str
    secret: str
    min_priority: Priority = Priority.LOW
    enabled: bool = True
    created_us: int = 0


class NewDelivery(msgspec.Struct, kw_only=True):
    subscription_id: int
    tenant_id: int
    body: str  # the JSON that is sent (and signed) as is
    due_us: int


class Delivery(msgspec.Struct, kw_only=True):
    """One notification to one webhook, until it is delivered (then deleted) or given up (dead)."""

    id: int
    subscription_id: int
    tenant_id: int
    body: str
    attempts: int = 0
    due_us: int = 0
    last_error: str = ""
    created_us: int = 0
    dead: bool = False


class AlarmQuery(msgspec.Struct, kw_only=True):
    """Filters of ``AlarmStore.alarms``; None means any. ``annunciated``: only the ones operators
    should hear about now (not normal, not shelved/suppressed/out of service)."""

    states: Sequence[AlarmState] | None = None
    priorities: Sequence[Priority] | None = None
    asset_ids: Sequence[int] | None = None
    rule_ids: Sequence[int] | None = None
    annunciated: bool | None = None
    limit: int = 1000


class JournalQuery(msgspec.Struct, kw_only=True):
    rule_id: int | None = None
    asset_id: int | None = None
    actions: Sequence[Action] | None = None
    start_us: int | None = None
    end_us: int | None = None
    limit: int = 1000


class AlarmStore(Protocol):
    # -- rules ------------------------------------------------------------------------------
    def create_rule(self, tenant_id: int, name: str, spec: dict[str, Any], *, enabled: bool = True,
                    source: str = "api", now_us: int = 0) -> RuleRecord:
        """Raises ``Conflict`` when the tenant has a rule of that name."""
        ...

    def update_rule(self, rule: RuleRecord) -> RuleRecord:
        """Replace name, spec, enabled and source of rule ``rule.id`` of ``rule.tenant_id``
        (``NotFound`` / ``Conflict`` on a name taken)."""
        ...

    def delete_rule(self, tenant_id: int, rule_id: int) -> bool:
        """Remove the rule with its alarm instances (their journal stays)."""
        ...

    def get_rule(self, tenant_id: int, rule_id: int) -> RuleRecord | None: ...

    def rules(self, tenant_id: int | None = None) -> list[RuleRecord]:
        """The rules of a tenant (of every tenant with None), by id."""
        ...

    # -- alarms and journal -----------------------------------------------------------------
    def get_alarm(self, tenant_id: int, rule_id: int, asset_id: int) -> Alarm | None: ...

    def alarms(self, tenant_id: int | None, query: AlarmQuery | None = None) -> list[Alarm]:
        """Alarm instances, most recently changed first (every tenant's with None)."""
        ...

    def journal(self, tenant_id: int, query: JournalQuery | None = None) -> list[JournalEntry]:
        """The newest ``limit`` matching entries, oldest first, in the order they were written."""
        ...

    def save(self, alarms: Sequence[Alarm], entries: Sequence[JournalEntry],
             deliveries: Sequence[NewDelivery] = (), checkpoint: Checkpoint | None = None) -> None:
        """Upsert ``alarms`` (one per tenant, rule and asset), append ``entries``, queue
        ``deliveries`` and (if given) replace the engine checkpoint - all in one transaction."""
        ...

    def checkpoint(self) -> Checkpoint | None:
        """The engine's last checkpoint; None before the first."""
        ...

    # -- webhooks ---------------------------------------------------------------------------
    def add_subscription(self, tenant_id: int, url: str, secret: str, *, min_priority: Priority = Priority.LOW,
                         now_us: int = 0) -> Subscription: ...

    def subscriptions(self, tenant_id: int | None = None) -> list[Subscription]: ...

    def delete_subscription(self, tenant_id: int, subscription_id: int) -> bool:
        """Remove the webhook and its pending deliveries (dead ones stay for the record)."""
        ...

    def due_deliveries(self, now_us: int, limit: int = 100) -> list[Delivery]:
        """Pending (not dead) deliveries due at ``now_us``, oldest due first."""
        ...

    def delivery_succeeded(self, delivery_id: int) -> None: ...

    def delivery_failed(self, delivery_id: int, error: str, retry_at_us: int | None) -> None:
        """Count an attempt; try again at ``retry_at_us``, or with None give up (dead-letter it)."""
        ...

    def dead_deliveries(self, tenant_id: int, limit: int = 100) -> list[Delivery]:
        """Deliveries given up, newest first."""
        ...

    def close(self) -> None: ...
