"""The JSON topic tree and the prefix rules a device publishes under."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopfloor.domain.topics import (
    ROOT,
    UPLINK_KINDS,
    Kind,
    TopicAddress,
    TopicError,
    asset_prefix,
    filter_within,
    parse_topic,
    topic_within,
)

BASE = "shopfloor/v1/acme/berlin/press-shop/line-1/press-01"


@pytest.mark.parametrize("kind", list(Kind))
def test_every_kind_parses_and_round_trips(kind: Kind) -> None:
    addr = parse_topic(f"{BASE}/{kind.value}")
    assert addr == TopicAddress("acme", ("berlin", "press-shop", "line-1", "press-01"), kind)
    assert addr.topic() == f"{BASE}/{kind.value}"
    assert addr.machine_prefix == BASE


def test_command_reply_is_a_two_level_kind() -> None:
    assert parse_topic(f"{BASE}/command/reply").kind is Kind.COMMAND_REPLY
    assert parse_topic(f"{BASE}/command").kind is Kind.COMMAND


def test_uplink_kinds_are_what_devices_send() -> None:
    assert Kind.COMMAND not in UPLINK_KINDS
    assert set(Kind) - UPLINK_KINDS == {Kind.COMMAND}


@pytest.mark.parametrize("topic", [
    "",
    "shopfloor",
    f"{BASE}",  # no kind
    "shopfloor/v2/acme/berlin/press-shop/line-1/press-01/telemetry",
    "factory/v1/acme/berlin/press-shop/line-1/press-01/telemetry",
    "shopfloor/v1/acme/berlin/press-shop/line-1/telemetry",  # a line is not a machine
    f"{BASE}/telemetrie",
    f"{BASE}/telemetry/extra",
    f"{BASE}/command/replies",
    f"{BASE}/",
    "shopfloor/v1//berlin/press-shop/line-1/press-01/telemetry",
    "shopfloor/v1/acme/berlin//line-1/press-01/telemetry",
    "shopfloor/v1/acme/berlin/press-shop/line-1//telemetry",
])
def test_not_our_topics(topic: str) -> None:
    with pytest.raises(TopicError):
        parse_topic(topic)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="/a+#\x00é1v", max_size=30)
       | st.lists(st.sampled_from(["shopfloor", "v1", "acme", "", "x", "state", "command", "reply"]),
                  max_size=10).map("/".join))
def test_parse_topic_raises_only_topic_error(topic: str) -> None:
    try:
        addr = parse_topic(topic)
    except TopicError:
        return
    assert addr.topic() == topic


def test_asset_prefix() -> None:
    assert asset_prefix("acme", ("berlin", "press-shop", "line-1", "press-01")) == BASE
    assert asset_prefix("acme", ("berlin", "press-shop", "line-1")) == f"{ROOT}/acme/berlin/press-shop/line-1"


def test_topic_within_is_by_whole_levels() -> None:
    machine = (BASE,)
    assert topic_within(f"{BASE}/telemetry", machine)
    assert topic_within(f"{BASE}/command/reply", machine)
    assert not topic_within(f"{BASE}0/telemetry", machine)  # press-010 is not press-01
    assert not topic_within(BASE, machine)
    assert not topic_within("shopfloor/v1/globex/berlin/press-shop/line-1/press-01/telemetry", machine)
    assert not topic_within(f"{BASE}/telemetry", ())


def test_a_line_prefix_covers_its_machines() -> None:
    line = (asset_prefix("acme", ("berlin", "press-shop", "line-1")),)
    assert topic_within(f"{BASE}/state", line)
    assert topic_within("shopfloor/v1/acme/berlin/press-shop/line-1/press-02/state", line)
    assert not topic_within("shopfloor/v1/acme/berlin/press-shop/line-10/press-02/state", line)
    two = (BASE, "shopfloor/v1/acme/berlin/press-shop/line-2/oven")
    assert topic_within("shopfloor/v1/acme/berlin/press-shop/line-2/oven/count", two)


def test_subscription_filters() -> None:
    assert filter_within(f"{BASE}/command", (BASE,))
    assert filter_within(f"{BASE}/#", (BASE,))
    assert not filter_within("shopfloor/v1/acme/#", (BASE,))
    assert not filter_within("#", (BASE,))
    assert not filter_within("shopfloor/v1/+/berlin/press-shop/line-1/press-01/command", (BASE,))
    assert not filter_within(f"{BASE}0/#", (BASE,))
