"""Rule specifications: what to watch on which assets, and when that is an alarm.

A rule is data (per tenant, from the API or the plant YAML), one msgspec struct per kind, told apart
by its ``kind`` field:

- ``threshold``: a measurement above ``high`` or below ``low``; it clears only once the value is back
  inside by ``deadband``; ``on_delay_s``/``off_delay_s`` ask the condition to hold that long first.
- ``rate``: a measurement rising faster than ``max_rise_per_s`` or falling faster than
  ``max_fall_per_s``, measured over the last ``window_s`` seconds.
- ``no_data``: a measurement (or, without one, the whole asset) silent for ``silent_s`` seconds;
  evaluated on clock ticks. While the service reports the broker or link down, it is raised as a
  communications fault (``Alarm.comms_fault``), not a process alarm.
- ``state_duration``: the machine in ``state`` (e.g. ``unplanned_stop``) for longer than
  ``longer_than_s``.
- ``expression``: a condition over several measurements of one asset, in the small language of
  ``expression.py``.
- ``learned``: a score series (an anomaly score, a remaining-useful-life estimate) written by a
  detector, above ``above`` or below ``below``. Detectors plug in by writing their scores as a
  measurement of the asset (see ``ScoreSource``).

A rule watches one asset (``asset``: an id, or a path ``site/area/line/machine``) or is a template
for every machine of an asset type (``asset_type``), new ones included (``templates.py``). While the
machine is in one of the ``suppress_when`` states the alarm is suppressed by design.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, Protocol

import msgspec

from shopfloor.domain.alarms.expression import Expression, parse_expression
from shopfloor.domain.alarms.model import Priority
from shopfloor.domain.assets import MachineState
from shopfloor.domain.errors import InvalidInput

MAX_DELAY_S = 7 * 24 * 3600.0
MAX_NAME_CHARS = 200
MAX_MESSAGE_CHARS = 500
MAX_RULES = 100_000
_STATES = frozenset(s.value for s in MachineState)
_FIELD = re.compile(r"\{([a-z_]+)(?::([<>^]?[+-]?\d{0,2}(?:\.\d{1,2})?[efg%]?))?\}")
MESSAGE_FIELDS = frozenset({"rule", "asset", "measurement", "value", "limit", "state", "duration_s"})


class _Rule(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True, tag_field="kind"):
    id: int
    name: str
    asset: int | str | None = None  # one asset: its id, or its path "site/area/line/machine"
    asset_type: str | None = None  # or: a template for every machine of this type
    priority: Priority = Priority.MEDIUM
    message: str = ""  # "{asset} {measurement} at {value:.1f} (limit {limit})"; empty: a default
    enabled: bool = True
    suppress_when: list[str] = []  # machine states that suppress the alarm by design, e.g. planned_stop


class Threshold(_Rule, tag="threshold"):
    measurement: str
    high: float | None = None
    low: float | None = None
    deadband: float = 0.0
    on_delay_s: float = 0.0
    off_delay_s: float = 0.0


class RateOfChange(_Rule, tag="rate"):
    measurement: str
    window_s: float
    max_rise_per_s: float | None = None
    max_fall_per_s: float | None = None  # a positive number: falling faster than this
    on_delay_s: float = 0.0
    off_delay_s: float = 0.0


class NoData(_Rule, tag="no_data"):
    silent_s: float
    measurement: str | None = None  # None: any measurement of the asset (the device is silent)


class StateDuration(_Rule, tag="state_duration"):
    state: str
    longer_than_s: float


class ExpressionRule(_Rule, tag="expression"):
    expression: str
    on_delay_s: float = 0.0
    off_delay_s: float = 0.0


class Learned(_Rule, tag="learned"):
    score: str  # the measurement that holds the detector's scores
    above: float | None = None  # e.g. an anomaly score above 0.9
    below: float | None = None  # e.g. remaining useful life below 48 (hours)
    deadband: float = 0.0
    on_delay_s: float = 0.0
    off_delay_s: float = 0.0
    detector: str = ""  # which detector writes the scores (for people; the engine reads `score`)


Rule = Threshold | RateOfChange | NoData | StateDuration | ExpressionRule | Learned


class ScoreSource(Protocol):
    """A learned detector as the rules see it: it turns an asset's measurements into a score series.

    The analytics side runs detectors and writes ``name`` as a measurement of the asset (through
    ingest, so scores are stored, replayed and sequence-numbered like any data); a ``learned``
    rule then compares that series against its limits.
    """

    @property
    def name(self) -> str: ...

    def update(self, asset_id: int, ts_us: int, values: dict[str, float]) -> float | None: ...


def measurements(rule: Rule) -> tuple[str, ...]:
    """The measurements a rule reads (none for a state rule; none for a silent-device rule: all)."""
    if isinstance(rule, Threshold | RateOfChange):
        return (rule.measurement,)
    if isinstance(rule, Learned):
        return (rule.score,)
    if isinstance(rule, NoData):
        return () if rule.measurement is None else (rule.measurement,)
    if isinstance(rule, ExpressionRule):
        return compiled(rule).names
    return ()


_COMPILED: dict[str, Expression] = {}


def compiled(rule: ExpressionRule) -> Expression:
    """The parsed expression of a rule (parsed once per distinct text)."""
    expr = _COMPILED.get(rule.expression)
    if expr is None:
        expr = parse_expression(rule.expression)
        if len(_COMPILED) < 10_000:
            _COMPILED[rule.expression] = expr
    return expr


def rule_from_obj(obj: Any) -> Rule:
    """Validate one rule (parsed YAML/JSON) with a readable error."""
    try:
        rule: Rule = msgspec.convert(obj, Rule)
    except msgspec.ValidationError as exc:
        name = obj.get("name") if isinstance(obj, dict) else None
        raise InvalidInput(f"rule {name or ''}: {exc}".replace("rule : ", "rule: ")) from None
    check_rule(rule)
    return rule


def rules_from_obj(obj: Any) -> list[Rule]:
    """A list of rules; ids must be unique."""
    if not isinstance(obj, list):
        raise InvalidInput("rules: expected a list of rules")
    if len(obj) > MAX_RULES:
        raise InvalidInput(f"rules: at most {MAX_RULES} rules")
    rules = [rule_from_obj(o) for o in obj]
    seen: set[int] = set()
    for r in rules:
        if r.id in seen:
            raise InvalidInput(f"rule {r.name}: id {r.id} is used twice")
        seen.add(r.id)
    return rules


def _seconds(rule: Rule, what: str, value: float, *, positive: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (positive and value == 0) or value > MAX_DELAY_S:
        lower = "above 0" if positive else "0 or more"
        raise InvalidInput(f"rule {rule.name}: {what} must be {lower} and at most {MAX_DELAY_S:.0f} seconds")


def _finite(rule: Rule, what: str, value: float | None) -> None:
    if value is not None and not math.isfinite(value):
        raise InvalidInput(f"rule {rule.name}: {what} must be a finite number")


def check_rule(rule: Rule) -> None:
    """The checks a struct cannot express; ``InvalidInput`` names the rule and the field."""
    if rule.id <= 0:
        raise InvalidInput(f"rule {rule.name}: id must be positive")
    if not rule.name.strip() or len(rule.name) > MAX_NAME_CHARS:
        raise InvalidInput(f"rule {rule.id}: name must have 1 to {MAX_NAME_CHARS} characters")
    if (rule.asset is None) == (rule.asset_type is None):
        raise InvalidInput(f"rule {rule.name}: give either asset (an id or a path) or asset_type (a template)")
    if isinstance(rule.asset, str) and not 0 < len(rule.asset) <= 300:
        raise InvalidInput(f"rule {rule.name}: asset path must have 1 to 300 characters")
    for s in rule.suppress_when:
        if s not in _STATES:
            raise InvalidInput(f"rule {rule.name}: suppress_when {s!r} is not one of {', '.join(sorted(_STATES))}")
    check_message(rule)
    for what in ("on_delay_s", "off_delay_s"):
        if hasattr(rule, what):
            _seconds(rule, what, getattr(rule, what))
    if isinstance(rule, Threshold | Learned):
        hi, lo = (rule.high, rule.low) if isinstance(rule, Threshold) else (rule.above, rule.below)
        names = ("high", "low") if isinstance(rule, Threshold) else ("above", "below")
        if hi is None and lo is None:
            raise InvalidInput(f"rule {rule.name}: give {names[0]} or {names[1]} (or both)")
        _finite(rule, names[0], hi)
        _finite(rule, names[1], lo)
        _finite(rule, "deadband", rule.deadband)
        if rule.deadband < 0:
            raise InvalidInput(f"rule {rule.name}: deadband must be 0 or more")
        if hi is not None and lo is not None and lo >= hi:
            raise InvalidInput(f"rule {rule.name}: {names[1]} ({lo}) must be below {names[0]} ({hi})")
    elif isinstance(rule, RateOfChange):
        _seconds(rule, "window_s", rule.window_s, positive=True)
        if rule.max_rise_per_s is None and rule.max_fall_per_s is None:
            raise InvalidInput(f"rule {rule.name}: give max_rise_per_s or max_fall_per_s (or both)")
        for what, v in (("max_rise_per_s", rule.max_rise_per_s), ("max_fall_per_s", rule.max_fall_per_s)):
            _finite(rule, what, v)
            if v is not None and v <= 0:
                raise InvalidInput(f"rule {rule.name}: {what} must be above 0 (a speed; the sign is in the name)")
    elif isinstance(rule, NoData):
        _seconds(rule, "silent_s", rule.silent_s, positive=True)
    elif isinstance(rule, StateDuration):
        if rule.state not in _STATES:
            raise InvalidInput(f"rule {rule.name}: state {rule.state!r} is not one of {', '.join(sorted(_STATES))}")
        _seconds(rule, "longer_than_s", rule.longer_than_s)
    elif isinstance(rule, ExpressionRule):
        try:
            compiled(rule)
        except InvalidInput as exc:
            raise InvalidInput(f"rule {rule.name}: {exc.message}") from None


def check_message(rule: Rule) -> None:
    """A message template may use only {rule} {asset} {measurement} {value} {limit} {state} {duration_s},
    with a plain number format ({value:.1f}); no attribute access, no indexing."""
    msg = rule.message
    if len(msg) > MAX_MESSAGE_CHARS:
        raise InvalidInput(f"rule {rule.name}: message is at most {MAX_MESSAGE_CHARS} characters")
    rest = _FIELD.sub("", msg)
    if "{" in rest or "}" in rest:
        raise InvalidInput(f"rule {rule.name}: message fields are {{name}} or {{name:.1f}}, with name one of "
                           f"{', '.join(sorted(MESSAGE_FIELDS))}")
    for m in _FIELD.finditer(msg):
        if m.group(1) not in MESSAGE_FIELDS:
            raise InvalidInput(f"rule {rule.name}: unknown message field {{{m.group(1)}}} (there are: "
                               f"{', '.join(sorted(MESSAGE_FIELDS))})")


def render_message(template: str, fields: dict[str, object]) -> str:
    """Fill a checked template; a field without a value, or a format that does not fit it, shows as '-'."""

    def one(m: re.Match[str]) -> str:
        value = fields.get(m.group(1))
        if value is None:
            return "-"
        spec = m.group(2)
        if not spec:
            return f"{value:.6g}" if isinstance(value, float) else str(value)
        try:
            return format(value, spec)
        except (TypeError, ValueError):
            return str(value)

    return _FIELD.sub(one, template)


DEFAULT_MESSAGES: dict[type, str] = {
    Threshold: "{rule}: {measurement} {value} beyond {limit}",
    RateOfChange: "{rule}: {measurement} changing at {value}/s, beyond {limit}/s",
    NoData: "{rule}: no data from {measurement} for {duration_s} s",
    StateDuration: "{rule}: {state} for more than {duration_s} s",
    ExpressionRule: "{rule}: condition met",
    Learned: "{rule}: {measurement} score {value} beyond {limit}",
}


def message_template(rule: Rule) -> str:
    return rule.message or DEFAULT_MESSAGES[type(rule)]


def by_id(rules: Sequence[Rule]) -> dict[int, Rule]:
    return {r.id: r for r in rules}
