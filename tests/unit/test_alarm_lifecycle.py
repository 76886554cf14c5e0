"""The ISA-18.2 state machine: worked transitions, and a hypothesis model of every sequence of them."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from shopfloor.domain.alarms import lifecycle as lc
from shopfloor.domain.alarms.model import Action, Alarm, AlarmState, JournalEntry, Priority
from shopfloor.domain.errors import Conflict, InvalidInput

S = 1_000_000


def fresh() -> Alarm:
    return lc.new_alarm(1, 7, 42, priority=Priority.HIGH, message="hot")


def test_activate_ack_clear_returns_to_normal() -> None:
    a, e1 = lc.condition(fresh(), True, 10 * S, value=91.0)
    assert a.state is AlarmState.ACTIVE_UNACK and a.annunciated and a.activations == 1 and a.value == 91.0
    assert [e.action for e in e1] == [Action.ACTIVATE] and e1[0].from_state is AlarmState.NORMAL
    a, e2 = lc.acknowledge(a, "ann", 11 * S, comment="on it")
    assert a.state is AlarmState.ACTIVE_ACK and a.acked_by == "ann"
    assert e2[0].user == "ann" and e2[0].comment == "on it"
    a, e3 = lc.condition(a, False, 12 * S, value=70.0)
    assert a.state is AlarmState.NORMAL and e3[0].action is Action.CLEAR and a.cleared_us == 12 * S


def test_clear_before_ack_waits_for_the_operator() -> None:
    a, _ = lc.condition(fresh(), True, 1 * S)
    a, _ = lc.condition(a, False, 2 * S)
    assert a.state is AlarmState.CLEARED_UNACK and a.annunciated
    a, e = lc.acknowledge(a, "bob", 3 * S)
    assert a.state is AlarmState.NORMAL and e[0].to_state is AlarmState.NORMAL


def test_realarm_while_cleared_unacknowledged_reactivates_the_same_instance() -> None:
    a, _ = lc.condition(fresh(), True, 1 * S)
    a, _ = lc.condition(a, False, 2 * S)
    a, e = lc.condition(a, True, 3 * S, value=99.0)
    assert a.state is AlarmState.ACTIVE_UNACK and a.activations == 2 and a.active_since_us == 3 * S
    assert e[0].from_state is AlarmState.CLEARED_UNACK and (a.rule_id, a.asset_id) == (7, 42)


def test_repeated_reports_change_nothing() -> None:
    a, _ = lc.condition(fresh(), True, 1 * S)
    same, entries = lc.condition(a, True, 2 * S)
    assert same is a and entries == []
    n, entries = lc.condition(fresh(), False, 2 * S)
    assert entries == [] and n.state is AlarmState.NORMAL


def test_nothing_to_acknowledge_and_bad_users_are_clear_errors() -> None:
    with pytest.raises(Conflict, match="nothing to acknowledge"):
        lc.acknowledge(fresh(), "ann", 1)
    a, _ = lc.condition(fresh(), True, 1)
    with pytest.raises(InvalidInput, match="user"):
        lc.acknowledge(a, "  ", 2)
    with pytest.raises(InvalidInput, match="at most"):
        lc.acknowledge(a, "x" * 500, 2)


def test_timed_shelving_hides_and_expires_at_its_end_time() -> None:
    a, _ = lc.condition(fresh(), True, 1 * S)
    a, e = lc.shelve(a, 61 * S, "ann", 1 * S, comment="known, fixing")
    assert not a.annunciated and e[0].hidden and e[0].action is Action.SHELVE
    same, none = lc.expire_shelf(a, 60 * S)
    assert same is a and none == []
    a, e = lc.expire_shelf(a, 500 * S)  # however late the clock comes, the entry is dated at the shelf's end
    assert a.annunciated and e[0].ts_us == 61 * S and e[0].user is None and not e[0].hidden
    with pytest.raises(InvalidInput, match="future"):
        lc.shelve(a, 1 * S, "ann", 2 * S)
    with pytest.raises(InvalidInput, match="at most"):
        lc.shelve(a, 2 * S + lc.MAX_SHELVE_US + 1, "ann", 2 * S)
    with pytest.raises(Conflict, match="not shelved"):
        lc.unshelve(a, "ann", 3 * S)


def test_suppression_by_design_tracks_the_condition_but_hides_it() -> None:
    a, _ = lc.suppress(fresh(), 1 * S, comment="planned_stop")
    a, e = lc.condition(a, True, 2 * S)
    assert a.state is AlarmState.ACTIVE_UNACK and not a.annunciated and e[0].hidden
    a, e = lc.unsuppress(a, 3 * S)
    assert a.annunciated and not e[0].hidden  # still active after the stop: the operator hears of it now
    assert lc.unsuppress(a, 4 * S).entries == []


def test_out_of_service_ends_shelving_and_blocks_it() -> None:
    a, _ = lc.shelve(fresh(), 100 * S, "ann", 1 * S)
    a, _ = lc.remove_from_service(a, "ann", 2 * S, comment="sensor replaced")
    assert a.out_of_service and a.shelved_until_us is None
    with pytest.raises(Conflict, match="out of service"):
        lc.shelve(a, 50 * S, "ann", 3 * S)
    with pytest.raises(Conflict):
        lc.remove_from_service(a, "ann", 3 * S)
    a, e = lc.return_to_service(a, "ann", 4 * S)
    assert not a.out_of_service and e[0].action is Action.RETURN_TO_SERVICE


def test_live_flag_threads_through() -> None:
    a, e = lc.condition(fresh(), True, 1, live=False)
    assert e[0].live is False
    assert lc.acknowledge(a, "ann", 2, live=False).entries[0].live is False


TRANSITIONS = {  # the ISA-18.2 state table: (state, event) -> state
    (AlarmState.NORMAL, "true"): AlarmState.ACTIVE_UNACK,
    (AlarmState.NORMAL, "false"): AlarmState.NORMAL,
    (AlarmState.ACTIVE_UNACK, "true"): AlarmState.ACTIVE_UNACK,
    (AlarmState.ACTIVE_UNACK, "false"): AlarmState.CLEARED_UNACK,
    (AlarmState.ACTIVE_UNACK, "ack"): AlarmState.ACTIVE_ACK,
    (AlarmState.ACTIVE_ACK, "true"): AlarmState.ACTIVE_ACK,
    (AlarmState.ACTIVE_ACK, "false"): AlarmState.NORMAL,
    (AlarmState.CLEARED_UNACK, "true"): AlarmState.ACTIVE_UNACK,
    (AlarmState.CLEARED_UNACK, "false"): AlarmState.CLEARED_UNACK,
    (AlarmState.CLEARED_UNACK, "ack"): AlarmState.NORMAL,
}


class AlarmMachine(RuleBasedStateMachine):
    """Random sequences of conditions, operator actions and clock ticks against a tiny model."""

    def __init__(self) -> None:
        super().__init__()
        self.alarm = fresh()
        self.journal: list[JournalEntry] = []
        self.now = 0
        self.state = AlarmState.NORMAL
        self.shelf_end: int | None = None
        self.suppressed = False
        self.oos = False
        self.activations = 0

    @initialize()
    def start(self) -> None:
        assert self.alarm.state is AlarmState.NORMAL

    def _apply(self, step: lc.Step) -> None:
        before = self.alarm
        for e in step.entries:
            assert e.ts_us >= before.updated_us or e.action is Action.UNSHELVE
            assert (e.rule_id, e.asset_id, e.tenant_id) == (7, 42, 1)
        if step.entries:
            assert step.entries[0].from_state is before.state
            assert step.entries[-1].to_state is step.alarm.state
        else:
            assert step.alarm == before
        self.alarm = step.alarm
        self.journal.extend(step.entries)

    def _advance(self, dt: int) -> None:
        self.now += dt
        if self.shelf_end is not None and self.now >= self.shelf_end:
            self._apply(lc.expire_shelf(self.alarm, self.now))
            self.shelf_end = None

    @rule(active=st.booleans(), dt=st.integers(0, 50))
    def report(self, active: bool, dt: int) -> None:
        self._advance(dt)
        n = len(self.journal)
        self._apply(lc.condition(self.alarm, active, self.now, value=1.0 if active else 0.0))
        expected = TRANSITIONS[(self.state, "true" if active else "false")]
        if expected is AlarmState.ACTIVE_UNACK and self.state is not AlarmState.ACTIVE_UNACK:
            self.activations += 1
        changed = expected is not self.state
        assert len(self.journal) == n + (1 if changed else 0)
        self.state = expected

    @rule(dt=st.integers(0, 50))
    def ack(self, dt: int) -> None:
        self._advance(dt)
        if (self.state, "ack") in TRANSITIONS:
            self._apply(lc.acknowledge(self.alarm, "op", self.now, comment="seen"))
            self.state = TRANSITIONS[(self.state, "ack")]
            assert self.journal[-1].user == "op" and self.journal[-1].action is Action.ACKNOWLEDGE
        else:
            with pytest.raises(Conflict):
                lc.acknowledge(self.alarm, "op", self.now)

    @rule(length=st.integers(1, 200))
    def shelve(self, length: int) -> None:
        if self.oos:
            with pytest.raises(Conflict):
                lc.shelve(self.alarm, self.now + length, "op", self.now)
            return
        self._apply(lc.shelve(self.alarm, self.now + length, "op", self.now))
        self.shelf_end = self.now + length

    @precondition(lambda self: self.shelf_end is not None)
    @rule()
    def unshelve(self) -> None:
        self._apply(lc.unshelve(self.alarm, "op", self.now))
        self.shelf_end = None

    @rule(on=st.booleans())
    def design_suppression(self, on: bool) -> None:
        self._apply(lc.suppress(self.alarm, self.now) if on else lc.unsuppress(self.alarm, self.now))
        self.suppressed = on

    @rule()
    def toggle_service(self) -> None:
        if self.oos:
            self._apply(lc.return_to_service(self.alarm, "op", self.now))
        else:
            self._apply(lc.remove_from_service(self.alarm, "op", self.now))
            self.shelf_end = None
        self.oos = not self.oos

    @rule(dt=st.integers(0, 300))
    def tick(self, dt: int) -> None:
        self._advance(dt)

    @invariant()
    def matches_model(self) -> None:
        a = self.alarm
        assert a.state is self.state
        assert a.activations == self.activations
        assert a.shelved_until_us == self.shelf_end
        assert a.suppressed is self.suppressed and a.out_of_service is self.oos
        hidden = self.shelf_end is not None or self.suppressed or self.oos
        assert a.annunciated == (not hidden and self.state is not AlarmState.NORMAL)
        if self.journal:
            assert self.journal[-1].hidden == hidden
        # the journal replays to the same state: every entry chains to the next
        for prev, nxt in zip(self.journal, self.journal[1:], strict=False):
            assert prev.to_state is nxt.from_state
        acts = sum(1 for e in self.journal if e.action is Action.ACTIVATE)
        assert acts == a.activations


TestAlarmMachine = AlarmMachine.TestCase
TestAlarmMachine.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
