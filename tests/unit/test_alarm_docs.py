"""docs/alarms.md: every YAML example is a valid rule list, and the worked example comes out as written."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from shopfloor.domain.alarms.engine import RuleEngine
from shopfloor.domain.alarms.rules import Threshold, rules_from_obj
from shopfloor.domain.alarms.templates import AssetRef
from shopfloor.domain.records import SampleBatch

PAGE = Path(__file__).resolve().parents[2] / "docs" / "alarms.md"
S = 1_000_000


def _rules() -> list[object]:
    blocks = re.findall(r"```yaml\n(.*?)```", PAGE.read_text(), re.S)
    assert blocks
    return [r for b in blocks for r in rules_from_obj(yaml.safe_load(b))]


def test_every_yaml_example_parses() -> None:
    rules = _rules()
    assert {type(r).__name__ for r in rules} == {"Threshold", "RateOfChange", "NoData", "StateDuration",
                                                 "ExpressionRule", "Learned"}


def test_the_worked_example() -> None:
    rule = next(r for r in _rules() if isinstance(r, Threshold))
    text = PAGE.read_text()
    table = re.search(r"\| t \(s\) \|(.*)\|\n\|[-| ]+\|\n\| value \|(.*)\|", text)
    assert table
    times = [float(x) for x in table.group(1).split("|")]
    values = [float(x) for x in table.group(2).split("|")]
    press = AssetRef.of_path(1, "plant1/assembly/line1/press-01", "press")
    engine = RuleEngine(1, [rule], [press], {1: (1, "spindle_temp")})
    b = SampleBatch()
    for t, v in zip(times, values, strict=True):
        b.add(1, round(t * S), v)
    entries = engine.on_samples(b).entries
    assert [(e.action.value, e.ts_us / S, e.value) for e in entries][:1] == [("activate", 11.0, 83.0)]
    assert "activate the alarm at 11 s" in text and "with the value 83" in text
    assert entries[0].comment == "plant1/assembly/line1/press-01: spindle at 83.0 °C (limit 80)"
    cleared = [e.ts_us / S for e in entries if e.action.value == "clear"]
    assert cleared == [18.0] and "clear\nit at 18 s" in text
