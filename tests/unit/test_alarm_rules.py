"""Rule specs and the expression language: what is accepted, what is refused and how it says so."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopfloor.domain.alarms.expression import MAX_CHARS, parse_expression
from shopfloor.domain.alarms.rules import (
    ExpressionRule,
    NoData,
    Threshold,
    measurements,
    render_message,
    rule_from_obj,
    rules_from_obj,
)
from shopfloor.domain.alarms.templates import AssetRef, expand
from shopfloor.domain.errors import InvalidInput


def test_expression_reads_names_and_evaluates() -> None:
    e = parse_expression("temperature > 80 and abs(current - 5.5) > 2 or max(vib_x, `vib-y`) >= 7.1")
    assert e.names == ("temperature", "current", "vib_x", "vib-y")
    base = {"temperature": 70.0, "current": 5.0, "vib_x": 1.0, "vib-y": 2.0}
    assert e.evaluate(base) is False
    assert e.evaluate({**base, "temperature": 81.0, "current": 8.0}) is True
    assert e.evaluate({**base, "vib-y": 7.1}) is True
    assert e.evaluate({"temperature": 99.0}) is None  # not every name has a value yet


def test_precedence_and_arithmetic() -> None:
    assert parse_expression("a + 2 * 3 == 7").evaluate({"a": 1.0}) is True
    assert parse_expression("(a + 2) * 3 == 9").evaluate({"a": 1.0}) is True
    assert parse_expression("-a - -2 == 1").evaluate({"a": 1.0}) is True
    assert parse_expression("not a > 1 and min(a, 3, 0.5) < 1").evaluate({"a": 1.0}) is True
    assert parse_expression("a / 4 >= .25e0").evaluate({"a": 1.0}) is True


def test_division_by_zero_is_undefined_not_a_crash() -> None:
    e = parse_expression("a / b > 1")
    assert e.evaluate({"a": 1.0, "b": 0.0}) is None
    assert e.evaluate({"a": 1e308, "b": 1e-308}) is None  # overflow to infinity: undefined too


@pytest.mark.parametrize(("text", "why"), [
    ('__import__("os").system("rm -rf /") > 0', "unexpected character"),
    ("a.__class__ > 1", "unexpected character '.'"),
    ("a[0] > 1", "unexpected character '['"),
    ("a ** 99 > 1", "unexpected '*'"),
    ("eval(a) > 1", "unknown function 'eval'"),
    ("lambda: 1", "unexpected character ':'"),
    ("a", "must be a condition"),
    ("1 and 2", "'and' needs a condition"),
    ("not a", "'not' needs a condition"),
    ("(a > 1) + 2 > 0", "'+' needs a number"),
    ("a < b < c", "do not chain"),
    ("a >", "ends too early"),
    ("a > 1)", "unexpected ')'"),
    ("abs(a, b) > 1", "abs() takes one argument"),
    ("max(a) > 1", "two or more arguments"),
    ("1 > 0", "reads no measurement"),
    ("1e999 > a", "too large"),
    ("(" * 40 + "a > 1" + ")" * 40, "nested deeper"),
    ("-" * 40 + "a > 1", "nested deeper"),
    ("a > 1 or " * 200 + "a > 1", "at most"),
    ("x" * (MAX_CHARS + 1), "at most"),
])
def test_hostile_or_wrong_expressions_are_refused_with_a_reason(text: str, why: str) -> None:
    with pytest.raises(InvalidInput, match=None) as info:
        parse_expression(text)
    assert why in info.value.message


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab01 .+-*/()<>=!,`_andortmxs", max_size=60))
def test_any_text_parses_or_is_refused_cleanly(text: str) -> None:
    try:
        e = parse_expression(text)
    except InvalidInput as exc:
        assert exc.message
        return
    assert e.evaluate(dict.fromkeys(e.names, 1.0)) in (True, False, None)


def test_rule_kinds_parse_from_plain_objects() -> None:
    rules = rules_from_obj([
        {"kind": "threshold", "id": 1, "name": "hot", "asset_type": "press", "measurement": "temp", "high": 80},
        {"kind": "no_data", "id": 2, "name": "quiet", "asset": "plant/a/l/m", "silent_s": 60},
        {"kind": "expression", "id": 3, "name": "x", "asset": 5, "expression": "p > 1 and q < 2"},
    ])
    assert isinstance(rules[0], Threshold) and isinstance(rules[1], NoData) and isinstance(rules[2], ExpressionRule)
    assert measurements(rules[2]) == ("p", "q") and measurements(rules[1]) == ()


@pytest.mark.parametrize(("obj", "why"), [
    ({"kind": "threshold", "id": 1, "name": "a", "asset": 1, "measurement": "t"}, "give high or low"),
    ({"kind": "threshold", "id": 1, "name": "a", "asset": 1, "measurement": "t", "high": 1, "low": 2}, "must be below"),
    ({"kind": "threshold", "id": 1, "name": "a", "asset": 1, "measurement": "t", "high": 1, "deadband": -1},
     "deadband"),
    ({"kind": "threshold", "id": 1, "name": "a", "measurement": "t", "high": 1}, "either asset"),
    ({"kind": "threshold", "id": 1, "name": "a", "asset": 1, "asset_type": "p", "measurement": "t", "high": 1},
     "either asset"),
    ({"kind": "threshold", "id": 1, "name": "a", "asset": 1, "measurement": "t", "high": 1, "on_delay_s": -1},
     "on_delay_s"),
    ({"kind": "threshold", "id": 1, "name": "a", "asset": 1, "measurement": "t", "high": 1, "colour": "red"},
     "unknown field"),
    ({"kind": "siren", "id": 1, "name": "a", "asset": 1}, "Invalid value 'siren'"),
    ({"kind": "rate", "id": 1, "name": "a", "asset": 1, "measurement": "t", "window_s": 0, "max_rise_per_s": 1},
     "window_s"),
    ({"kind": "rate", "id": 1, "name": "a", "asset": 1, "measurement": "t", "window_s": 5, "max_fall_per_s": -1},
     "above 0"),
    ({"kind": "state_duration", "id": 1, "name": "a", "asset": 1, "state": "napping", "longer_than_s": 5},
     "not one of"),
    ({"kind": "expression", "id": 1, "name": "a", "asset": 1, "expression": "open('/etc/passwd')"}, "rule a:"),
    ({"kind": "learned", "id": 1, "name": "a", "asset": 1, "score": "s"}, "give above or below"),
    ({"kind": "no_data", "id": 1, "name": "a", "asset": 1, "silent_s": 5, "suppress_when": ["lunch"]}, "lunch"),
    ({"kind": "no_data", "id": 1, "name": "a", "asset": 1, "silent_s": 5, "message": "{value.__class__}"},
     "message fields"),
    ({"kind": "no_data", "id": 1, "name": "a", "asset": 1, "silent_s": 5, "message": "{secret}"},
     "unknown message field"),
])
def test_bad_rules_are_refused_with_a_reason(obj: dict[str, object], why: str) -> None:
    with pytest.raises(InvalidInput) as info:
        rule_from_obj(obj)
    assert why in info.value.message


def test_duplicate_ids_are_refused() -> None:
    r = {"kind": "no_data", "id": 1, "name": "a", "asset": 1, "silent_s": 5}
    with pytest.raises(InvalidInput, match="used twice"):
        rules_from_obj([r, r])


def test_messages_render_only_known_fields() -> None:
    assert render_message("{asset}: {value:.1f} > {limit}", {"asset": "m1", "value": 81.26, "limit": 80.0}) == \
        "m1: 81.3 > 80"
    assert render_message("{value:.1f} {state}", {"value": None}) == "- -"


def test_templates_expand_to_every_machine_of_the_type_and_new_ones() -> None:
    rules = rules_from_obj([
        {"kind": "threshold", "id": 1, "name": "hot", "asset_type": "press", "measurement": "t", "high": 1},
        {"kind": "threshold", "id": 2, "name": "one", "asset": "s/a/l/m9", "measurement": "t", "high": 1},
        {"kind": "threshold", "id": 3, "name": "off", "asset_type": "press", "measurement": "t", "high": 1,
         "enabled": False},
    ])
    assets = [AssetRef.of_path(2, "s/a/l/m2", "press"), AssetRef.of_path(1, "s/a/l/m1", "press"),
              AssetRef.of_path(3, "s/a/l/m3", "oven")]
    ex = expand(rules, assets)
    assert [(r.id, a.id) for r, a in ex.bound] == [(1, 1), (1, 2)]
    assert [why for _, why in ex.unresolved] == ["rule one: no asset 's/a/l/m9'"]
    ex = expand(rules, [*assets, AssetRef.of_path(9, "s/a/l/m9", "press")])
    assert [(r.id, a.id) for r, a in ex.bound] == [(1, 1), (1, 2), (1, 9), (2, 9)]
    assert assets[0].area == "s/a"
