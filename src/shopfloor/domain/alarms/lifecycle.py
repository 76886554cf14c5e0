"""The ISA-18.2 alarm state machine, as pure functions.

Every function takes an ``Alarm`` and returns a ``Step``: the new alarm (the input is never
changed) and the journal entries of what happened, in order. Nothing happens (an empty journal, the
same alarm) when a condition report does not change the state, so the rule engine may report a
condition as often as it likes.

States (``AlarmState``)::

    normal --condition true--> active_unacknowledged --ack--> active_acknowledged
       ^                         |        ^                      |
       |                  condition false  condition true         | condition false
       |                         v        | (re-alarm, same       v
       +-------ack------- cleared_unacknowledged  instance)    normal

Shelving, suppression by design and out-of-service are flags beside the state: the condition is
still tracked and journalled, but the alarm is not annunciated; journal entries written while one
of them holds carry ``hidden=True``, so nobody is notified of them. Timed shelving ends by itself:
``expire_shelf`` (called with the clock) unshelves at exactly the shelf's end time, whenever it is
called after it, so the journal does not depend on how often the clock ticks.

``live=False`` (replay after a restart, back-filled history, a backtest) passes through to every
journal entry: such entries are recorded but never notified as if they were live.
Times are epoch microseconds UTC.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from shopfloor.domain.alarms.model import Action, Alarm, AlarmState, JournalEntry, Priority
from shopfloor.domain.errors import Conflict, InvalidInput

MAX_SHELVE_US = 7 * 24 * 3600 * 1_000_000  # ISA-18.2: shelving is always time-limited
MAX_USER_CHARS = 200
MAX_COMMENT_CHARS = 2000

PRIORITY_RANK: dict[Priority, int] = {Priority.LOW: 0, Priority.MEDIUM: 1, Priority.HIGH: 2, Priority.CRITICAL: 3}


class Step(NamedTuple):
    """The alarm after a transition and the journal entries that record it (maybe none)."""

    alarm: Alarm
    entries: list[JournalEntry]


def new_alarm(tenant_id: int, rule_id: int, asset_id: int, *, priority: Priority = Priority.MEDIUM,
              message: str = "", ts_us: int = 0) -> Alarm:
    """The one instance of a rule on an asset, in the normal state."""
    return Alarm(tenant_id=tenant_id, rule_id=rule_id, asset_id=asset_id, priority=priority, message=message,
                 updated_us=ts_us)


def is_hidden(alarm: Alarm) -> bool:
    """Shelved, suppressed by design or out of service: tracked, but not annunciated."""
    return alarm.shelved_until_us is not None or alarm.suppressed or alarm.out_of_service


def priority_rank(priority: Priority) -> int:
    """Orders priorities: low 0 < medium 1 < high 2 < critical 3."""
    return PRIORITY_RANK[priority]


def _entry(before: Alarm, after: Alarm, action: Action, ts_us: int, *, live: bool, user: str | None = None,
           comment: str = "", value: float | None = None, hidden: bool | None = None) -> JournalEntry:
    return JournalEntry(tenant_id=after.tenant_id, rule_id=after.rule_id, asset_id=after.asset_id, ts_us=ts_us,
                        action=action, from_state=before.state, to_state=after.state, user=user, comment=comment,
                        value=value, live=live, hidden=is_hidden(after) if hidden is None else hidden)


def _check_user(user: str, comment: str) -> None:
    if not isinstance(user, str) or not user.strip():
        raise InvalidInput("an operator action needs the user who takes it")
    if len(user) > MAX_USER_CHARS:
        raise InvalidInput(f"user names are at most {MAX_USER_CHARS} characters")
    if len(comment) > MAX_COMMENT_CHARS:
        raise InvalidInput(f"comments are at most {MAX_COMMENT_CHARS} characters")


def condition(alarm: Alarm, active: bool, ts_us: int, *, value: float | None = None, message: str | None = None,
              priority: Priority | None = None, live: bool = True) -> Step:
    """The rule reports its condition at ``ts_us``: true (out of limits) or false (back to normal).

    True from normal or cleared-unacknowledged activates (the latter is a re-alarm of the same
    instance: ``activations`` counts up, the acknowledgement is forgotten); true while active changes
    nothing. False from active-unacknowledged leaves it cleared-unacknowledged (the operator still has
    to see it); false from active-acknowledged returns to normal.
    """
    state = alarm.state
    if active:
        if state in (AlarmState.ACTIVE_UNACK, AlarmState.ACTIVE_ACK):
            return Step(alarm, [])
        after = msgspec.structs.replace(
            alarm, state=AlarmState.ACTIVE_UNACK, value=value, active_since_us=ts_us, acked_by=None, acked_us=None,
            activations=alarm.activations + 1, updated_us=ts_us,
            message=alarm.message if message is None else message,
            priority=alarm.priority if priority is None else priority)
        return Step(after, [_entry(alarm, after, Action.ACTIVATE, ts_us, live=live, value=value,
                                   comment=after.message)])
    if state is AlarmState.ACTIVE_UNACK:
        to = AlarmState.CLEARED_UNACK
    elif state is AlarmState.ACTIVE_ACK:
        to = AlarmState.NORMAL
    else:
        return Step(alarm, [])
    after = msgspec.structs.replace(alarm, state=to, value=value, cleared_us=ts_us, updated_us=ts_us)
    return Step(after, [_entry(alarm, after, Action.CLEAR, ts_us, live=live, value=value)])


def acknowledge(alarm: Alarm, user: str, ts_us: int, *, comment: str = "", live: bool = True) -> Step:
    """An operator has seen the alarm: active-unacknowledged → active-acknowledged,
    cleared-unacknowledged → normal. Anything else has nothing to acknowledge (``Conflict``)."""
    _check_user(user, comment)
    if alarm.state is AlarmState.ACTIVE_UNACK:
        to = AlarmState.ACTIVE_ACK
    elif alarm.state is AlarmState.CLEARED_UNACK:
        to = AlarmState.NORMAL
    else:
        raise Conflict(f"alarm of rule {alarm.rule_id} on asset {alarm.asset_id} is {alarm.state.value}: "
                       "nothing to acknowledge")
    after = msgspec.structs.replace(alarm, state=to, acked_by=user, acked_us=ts_us, updated_us=ts_us)
    return Step(after, [_entry(alarm, after, Action.ACKNOWLEDGE, ts_us, live=live, user=user, comment=comment)])


def shelve(alarm: Alarm, until_us: int, user: str, ts_us: int, *, comment: str = "", live: bool = True,
           max_us: int = MAX_SHELVE_US) -> Step:
    """Hide the alarm until ``until_us`` (at most ``max_us`` ahead); shelving again moves the end.

    Not for an alarm out of service (it is hidden already, and return to service is the way back).
    """
    _check_user(user, comment)
    if alarm.out_of_service:
        raise Conflict(f"alarm of rule {alarm.rule_id} on asset {alarm.asset_id} is out of service: cannot shelve it")
    if until_us <= ts_us:
        raise InvalidInput("a shelf must end in the future")
    if until_us - ts_us > max_us:
        raise InvalidInput(f"alarms may be shelved for at most {max_us // 3_600_000_000} hours")
    after = msgspec.structs.replace(alarm, shelved_until_us=until_us, shelved_by=user, updated_us=ts_us)
    return Step(after, [_entry(alarm, after, Action.SHELVE, ts_us, live=live, user=user, comment=comment)])


def unshelve(alarm: Alarm, user: str, ts_us: int, *, comment: str = "", live: bool = True) -> Step:
    """An operator takes the alarm off the shelf before its time is up."""
    _check_user(user, comment)
    if alarm.shelved_until_us is None:
        raise Conflict(f"alarm of rule {alarm.rule_id} on asset {alarm.asset_id} is not shelved")
    after = msgspec.structs.replace(alarm, shelved_until_us=None, shelved_by=None, updated_us=ts_us)
    return Step(after, [_entry(alarm, after, Action.UNSHELVE, ts_us, live=live, user=user, comment=comment)])


def expire_shelf(alarm: Alarm, now_us: int, *, live: bool = True) -> Step:
    """Auto-unshelve once ``now_us`` has reached the shelf's end; the entry is dated at that end."""
    until = alarm.shelved_until_us
    if until is None or now_us < until:
        return Step(alarm, [])
    after = msgspec.structs.replace(alarm, shelved_until_us=None, shelved_by=None, updated_us=until)
    return Step(after, [_entry(alarm, after, Action.UNSHELVE, until, live=live, comment="shelf time expired")])


def suppress(alarm: Alarm, ts_us: int, *, comment: str = "", live: bool = True) -> Step:
    """Suppressed by design (e.g. the machine is in a planned stop). Idempotent."""
    if alarm.suppressed:
        return Step(alarm, [])
    after = msgspec.structs.replace(alarm, suppressed=True, updated_us=ts_us)
    return Step(after, [_entry(alarm, after, Action.SUPPRESS, ts_us, live=live, comment=comment)])


def unsuppress(alarm: Alarm, ts_us: int, *, comment: str = "", live: bool = True) -> Step:
    """The design condition has ended. Idempotent. The entry is hidden only if something else still hides the
    alarm, so an alarm that stayed active during the suppression is annunciated now."""
    if not alarm.suppressed:
        return Step(alarm, [])
    after = msgspec.structs.replace(alarm, suppressed=False, updated_us=ts_us)
    return Step(after, [_entry(alarm, after, Action.UNSUPPRESS, ts_us, live=live, comment=comment)])


def remove_from_service(alarm: Alarm, user: str, ts_us: int, *, comment: str = "", live: bool = True) -> Step:
    """Out of service (maintenance, a broken sensor): hidden until returned; ends any shelving."""
    _check_user(user, comment)
    if alarm.out_of_service:
        raise Conflict(f"alarm of rule {alarm.rule_id} on asset {alarm.asset_id} is already out of service")
    after = msgspec.structs.replace(alarm, out_of_service=True, shelved_until_us=None, shelved_by=None,
                                    updated_us=ts_us)
    return Step(after, [_entry(alarm, after, Action.OUT_OF_SERVICE, ts_us, live=live, user=user, comment=comment)])


def return_to_service(alarm: Alarm, user: str, ts_us: int, *, comment: str = "", live: bool = True) -> Step:
    """Back in service; whatever the condition did meanwhile is in the state, and shows now."""
    _check_user(user, comment)
    if not alarm.out_of_service:
        raise Conflict(f"alarm of rule {alarm.rule_id} on asset {alarm.asset_id} is not out of service")
    after = msgspec.structs.replace(alarm, out_of_service=False, updated_us=ts_us)
    return Step(after, [_entry(alarm, after, Action.RETURN_TO_SERVICE, ts_us, live=live, user=user,
                               comment=comment)])
