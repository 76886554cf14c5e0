"""The alarm records every part shares: an instance per (rule, asset), and its journal.

States follow ISA-18.2: normal, active-unacknowledged, active-acknowledged and
cleared-unacknowledged (a cleared and acknowledged alarm returns to normal). Shelving,
suppression by design and out-of-service are flags beside the state: the state machine keeps
tracking the condition while an alarm is shelved, but a shelved, suppressed or out-of-service alarm
is not annunciated (no notification, not in the default console view).
Times are epoch microseconds UTC.
"""

from __future__ import annotations

import enum

import msgspec


class AlarmState(enum.StrEnum):
    NORMAL = "normal"
    ACTIVE_UNACK = "active_unacknowledged"
    ACTIVE_ACK = "active_acknowledged"
    CLEARED_UNACK = "cleared_unacknowledged"


class Priority(enum.StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Action(enum.StrEnum):
    """What a journal entry records."""

    ACTIVATE = "activate"  # the condition became true (from normal or cleared-unacknowledged)
    CLEAR = "clear"  # the condition returned to normal
    ACKNOWLEDGE = "acknowledge"
    SHELVE = "shelve"
    UNSHELVE = "unshelve"  # by a user, or automatically when the shelf time ran out
    SUPPRESS = "suppress"  # suppressed by design (e.g. the machine is in a planned stop)
    UNSUPPRESS = "unsuppress"
    OUT_OF_SERVICE = "out_of_service"
    RETURN_TO_SERVICE = "return_to_service"


class Alarm(msgspec.Struct, kw_only=True):
    """The one instance of a rule on an asset; it lives on through re-alarms."""

    tenant_id: int
    rule_id: int
    asset_id: int
    state: AlarmState = AlarmState.NORMAL
    priority: Priority = Priority.MEDIUM
    message: str = ""
    value: float | None = None  # the value that last changed the condition, where there is one
    active_since_us: int | None = None  # when the condition last became true
    cleared_us: int | None = None  # when it last returned to normal
    acked_by: str | None = None
    acked_us: int | None = None
    shelved_until_us: int | None = None  # None: not shelved
    shelved_by: str | None = None
    suppressed: bool = False
    out_of_service: bool = False
    comms_fault: bool = False  # raised by a no-data rule while the broker or link was down: not a process alarm
    activations: int = 0  # how often the condition became true over the instance's life
    updated_us: int = 0

    @property
    def annunciated(self) -> bool:
        """Whether operators should hear about it now (active or unacknowledged, and not hidden)."""
        hidden = self.shelved_until_us is not None or self.suppressed or self.out_of_service
        return self.state is not AlarmState.NORMAL and not hidden


class JournalEntry(msgspec.Struct, kw_only=True):
    """One transition or operator action on an alarm, kept for ever (or by retention)."""

    tenant_id: int
    rule_id: int
    asset_id: int
    ts_us: int
    action: Action
    from_state: AlarmState
    to_state: AlarmState
    user: str | None = None  # None for the rule engine
    comment: str = ""
    value: float | None = None
    live: bool = True  # False while replaying or back-filling history: never notified
    hidden: bool = False  # the alarm was shelved, suppressed or out of service after this entry: not notified
