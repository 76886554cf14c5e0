"""docs/alarms-api.md: the rule examples parse, the plant file's rules: section is valid, and the
receiver's signature check accepts what the dispatcher signs (and nothing else)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import yaml

from shopfloor.domain.alarms.rules import Threshold, rule_from_obj
from shopfloor.domain.plant import plant_from_obj
from shopfloor.services.alarm_catalog import spec_with
from shopfloor.services.alarm_notify import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

PAGE = Path(__file__).resolve().parents[2] / "docs" / "alarms-api.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", PAGE.read_text(), re.S)


def test_the_api_rule_example_parses() -> None:
    obj = json.loads(_blocks("json")[0])
    rule = rule_from_obj(spec_with(obj, 1, obj["name"], True))
    assert isinstance(rule, Threshold) and rule.high == 80 and rule.suppress_when == ["planned_stop"]


def test_the_plant_file_rules_are_valid() -> None:
    spec = plant_from_obj(yaml.safe_load(_blocks("yaml")[0]))
    kinds = [type(rule_from_obj(spec_with(r, 1, r["name"], True))).__name__ for r in spec.rules]
    assert kinds == ["Threshold", "NoData", "StateDuration"]


def test_the_receiver_example_verifies_our_signature() -> None:
    scope: dict[str, Any] = {}
    exec(compile(_blocks("python")[0], str(PAGE), "exec"), scope)  # the page's own code
    verify = scope["verify"]
    secret, body = "a-very-secret-secret", b'{"event":"activate"}'
    now = int(time.time())
    headers = {TIMESTAMP_HEADER: str(now), SIGNATURE_HEADER: sign(secret, now, body)}
    assert verify(secret, headers, body)
    assert not verify(secret, headers, body + b" ")
    assert not verify("another-secret-entirely", headers, body)
    old = now - 3600
    assert not verify(secret, {TIMESTAMP_HEADER: str(old), SIGNATURE_HEADER: sign(secret, old, body)}, body)
