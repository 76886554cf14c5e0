"""Decoding and validating device messages: every kind, value-by-value rejection, fuzzing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shopfloor.domain.assets import ValueType
from shopfloor.domain.payloads import (
    DEAD_PAYLOAD_BYTES,
    MAX_DETAIL,
    Decoder,
    Limits,
    MachineInfo,
    MeasurementSlot,
)
from shopfloor.domain.records import IngestBatch, Quality, Reason
from shopfloor.domain.timeutil import from_us, to_us
from shopfloor.domain.topics import Kind

NOW_US = 1_700_000_000_000_000
NOW = from_us(NOW_US)
NOW_MS = NOW_US // 1000
TENANT, ASSET = 7, 42
TEMP, RUNNING, RECIPE = 101, 102, 103

MACHINE = MachineInfo(
    tenant_id=TENANT,
    asset_id=ASSET,
    measurements={
        "temperature": MeasurementSlot(TEMP, ValueType.NUMERIC),
        "running": MeasurementSlot(RUNNING, ValueType.BOOLEAN),
        "recipe": MeasurementSlot(RECIPE, ValueType.STRING),
    },
    events=frozenset({"tool_change"}),
)


def decode(kind: Kind, payload: Any, *, raw: bool = False, limits: Limits | None = None) -> IngestBatch:
    data = payload if raw else json.dumps(payload).encode()
    return Decoder(limits or Limits()).decode(kind, data, MACHINE, device="acme.plc-1",
                                              topic="shopfloor/v1/acme/s/a/l/m/" + kind.value, now_us=NOW_US)


def reasons(batch: IngestBatch) -> list[Reason]:
    return [d.reason for d in batch.dead_letters]


def iso(dt: datetime) -> str:
    return dt.isoformat()


# -- telemetry -------------------------------------------------------------------------------


def test_telemetry_one_object_with_every_value_type() -> None:
    ts = NOW - timedelta(seconds=10)
    out = decode(Kind.TELEMETRY, {"ts": iso(ts), "values": {"temperature": 71.5, "running": True,
                                                           "recipe": "A-12"}})
    assert out.dead_letters == []
    rows = sorted(zip(out.samples.series_id, out.samples.ts_us, out.samples.value, out.samples.text,
                      out.samples.quality, strict=True))
    t = to_us(ts)
    assert rows == [(TEMP, t, 71.5, None, Quality.GOOD), (RUNNING, t, 1.0, None, Quality.GOOD),
                    (RECIPE, t, None, "A-12", Quality.GOOD)]


def test_telemetry_list_epoch_ms_and_quality() -> None:
    out = decode(Kind.TELEMETRY, [
        {"ts": NOW_MS - 2000, "values": {"temperature": 1}},
        {"ts": NOW_MS - 1000, "values": {"temperature": 2}, "quality": "uncertain"},
        {"ts": NOW_MS, "values": {"temperature": 3, "running": False}, "quality": 2},
    ])
    assert out.dead_letters == []
    assert out.samples.series_id == [TEMP, TEMP, TEMP, RUNNING]
    assert out.samples.ts_us == [NOW_US - 2_000_000, NOW_US - 1_000_000, NOW_US, NOW_US]
    assert out.samples.value == [1.0, 2.0, 3.0, 0.0]
    assert out.samples.quality == [Quality.GOOD, Quality.UNCERTAIN, Quality.BAD, Quality.BAD]


def test_telemetry_without_ts_takes_the_receive_time() -> None:
    out = decode(Kind.TELEMETRY, {"values": {"temperature": 20}})
    assert out.samples.ts_us == [NOW_US]


@pytest.mark.parametrize(("values", "reason"), [
    ({"pressure": 3.0}, Reason.UNKNOWN_MEASUREMENT),
    ({"temperature": "hot"}, Reason.WRONG_TYPE),
    ({"temperature": True}, Reason.WRONG_TYPE),  # a bool is not a number
    ({"temperature": None}, Reason.WRONG_TYPE),
    ({"temperature": [1]}, Reason.WRONG_TYPE),
    ({"running": 1}, Reason.WRONG_TYPE),  # a number is not a bool
    ({"running": "true"}, Reason.WRONG_TYPE),
    ({"recipe": 12}, Reason.WRONG_TYPE),
])
def test_bad_values_are_rejected_one_by_one(values: dict[str, Any], reason: Reason) -> None:
    companion = {"recipe": "ok"} if "recipe" not in values else {"temperature": 5}
    out = decode(Kind.TELEMETRY, {"ts": NOW_MS, "values": {**values, **companion}})
    assert reasons(out) == [reason]
    # the good value next to it is kept
    assert len(out.samples) == 1
    dl = out.dead_letters[0]
    assert dl.tenant_id == TENANT and dl.device == "acme.plc-1" and dl.topic.endswith("/telemetry")
    assert dl.received_us == NOW_US and dl.detail


@pytest.mark.parametrize("bad", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_non_finite_numbers_never_become_samples(bad: bytes) -> None:
    # JSON has no NaN or infinity; some devices send them anyway. The parser refuses them.
    out = decode(Kind.TELEMETRY, b'{"values": {"temperature": ' + bad + b', "recipe": "x"}}', raw=True)
    assert reasons(out) == [Reason.UNDECODABLE]
    assert len(out.samples) == 0


def test_non_finite_floats_are_wrong_type_for_the_validator() -> None:
    # the validator itself, in case a transport hands over floats that did not come from strict JSON
    from shopfloor.domain import payloads

    for bad in (float("nan"), float("inf"), float("-inf")):
        out = IngestBatch()
        ctx = payloads._Ctx(out, MACHINE, "d", "t", b"", NOW_US, Limits())
        payloads._telemetry(ctx, [payloads._Telemetry(values={"temperature": bad, "recipe": "x"})])
        assert reasons(out) == [Reason.WRONG_TYPE]
        assert out.samples.series_id == [RECIPE]


def test_an_integer_beyond_any_double_is_a_dead_letter_not_a_crash() -> None:
    big = b"1" + b"0" * 400
    out = decode(Kind.TELEMETRY, b'{"values": {"temperature": ' + big + b', "recipe": "x"}}', raw=True)
    assert reasons(out) == [Reason.WRONG_TYPE]
    assert "not a finite number" in out.dead_letters[0].detail
    assert out.samples.series_id == [RECIPE]


@given(st.dictionaries(st.sampled_from(["temperature", "running", "recipe", "other"]),
                       st.one_of(st.floats(), st.integers(), st.booleans(), st.text("ab", max_size=3), st.none())))
def test_the_fast_path_keeps_what_the_rules_say(values: dict[str, Any]) -> None:
    """Finite floats of numeric measurements take a fast path; the result is the per-value rules'."""
    from shopfloor.domain import payloads

    out = IngestBatch()
    ctx = payloads._Ctx(out, MACHINE, "d", "t", b"", NOW_US, Limits())
    payloads._telemetry(ctx, [payloads._Telemetry(values=values, ts=NOW_MS)])
    expect = IngestBatch()
    ectx = payloads._Ctx(expect, MACHINE, "d", "t", b"", NOW_US, Limits())
    for name, raw in values.items():
        payloads._telemetry_value(ectx, name, raw, NOW_MS * 1000, 0)
    assert out.samples == expect.samples
    assert reasons(out) == reasons(expect)
    assert all(type(q) is int for q in out.samples.quality)


WIDE = MachineInfo(TENANT, ASSET, {**MACHINE.measurements,
                                    **{f"v{i}": MeasurementSlot(200 + i, ValueType.NUMERIC) for i in range(4)}})


@given(st.dictionaries(st.sampled_from(["v0", "v1", "v2", "v3", "temperature", "running", "other"]),
                       st.one_of(st.floats(), st.floats(allow_nan=False, allow_infinity=False),
                                 st.sampled_from([1.7e308, -1.7e308]), st.integers(), st.booleans()),
                       max_size=7),
       st.sampled_from([None, "good", "uncertain", 2]))
def test_a_record_of_finite_floats_at_once_is_what_the_rules_give(values: dict[str, Any], quality: Any) -> None:
    """A record whose values are all finite floats of numeric measurements is taken whole; any other
    (a nan, an integer, a sum that overflows, an unknown name) value by value. Same samples either way."""
    from shopfloor.domain import payloads

    out = IngestBatch()
    payloads._telemetry(payloads._Ctx(out, WIDE, "d", "t", b"", NOW_US, Limits()),
                        [payloads._Telemetry(values=values, ts=NOW_MS, quality=quality)])
    expect = IngestBatch()
    ectx = payloads._Ctx(expect, WIDE, "d", "t", b"", NOW_US, Limits())
    for name, raw in values.items():
        payloads._telemetry_value(ectx, name, raw, NOW_MS * 1000, payloads._quality(quality))
    assert out.samples == expect.samples
    assert reasons(out) == reasons(expect)


def test_a_record_whose_sum_overflows_keeps_its_finite_values() -> None:
    from shopfloor.domain import payloads

    out = IngestBatch()
    payloads._telemetry(payloads._Ctx(out, WIDE, "d", "t", b"", NOW_US, Limits()),
                        [payloads._Telemetry(values={"v0": 1.7e308, "v1": 1.7e308, "v2": 0.5}, ts=NOW_MS)])
    assert out.samples.value == [1.7e308, 1.7e308, 0.5]
    assert out.samples.series_id == [200, 201, 202]
    assert out.dead_letters == []


def test_bad_quality_rejects_that_record_only() -> None:
    out = decode(Kind.TELEMETRY, [{"values": {"temperature": 1}, "quality": "excellent"},
                                  {"values": {"temperature": 2}, "quality": True},
                                  {"values": {"temperature": 3}, "quality": 7},
                                  {"values": {"temperature": 4}}])
    assert reasons(out) == [Reason.WRONG_TYPE] * 3
    assert out.samples.value == [4.0]


@pytest.mark.parametrize(("ts", "reason"), [
    ("yesterday", Reason.BAD_TIMESTAMP),
    ("2023-11-14T22:13:20", Reason.BAD_TIMESTAMP),  # naive: no offset
    ("2023-11-14", Reason.BAD_TIMESTAMP),
    (True, Reason.BAD_TIMESTAMP),
    ([1], Reason.BAD_TIMESTAMP),
    ({"s": 1}, Reason.BAD_TIMESTAMP),
    (1e300, Reason.BAD_TIMESTAMP),
    (-(2**52), Reason.BAD_TIMESTAMP),  # year -140000: no calendar shows it
    ("0001-01-01T00:00:00Z", Reason.BAD_TIMESTAMP),
    ("9999-12-31T23:59:59+00:00", Reason.BAD_TIMESTAMP),
    ("2023-11-14T22:13:20+25:00", Reason.BAD_TIMESTAMP),
    (iso(NOW + timedelta(minutes=6)), Reason.FUTURE_TIMESTAMP),
    (NOW_MS + 6 * 60_000, Reason.FUTURE_TIMESTAMP),
    (iso(NOW - timedelta(days=31)), Reason.TOO_OLD),
    (0, Reason.TOO_OLD),
])
def test_bad_timestamps(ts: Any, reason: Reason) -> None:
    out = decode(Kind.TELEMETRY, [{"ts": ts, "values": {"temperature": 1}}, {"values": {"temperature": 2}}])
    assert reasons(out) == [reason]
    assert out.samples.value == [2.0]


def test_timestamps_inside_the_limits_are_kept() -> None:
    out = decode(Kind.TELEMETRY, [
        {"ts": iso(NOW + timedelta(minutes=4)), "values": {"temperature": 1}},
        {"ts": iso(NOW - timedelta(days=29)), "values": {"temperature": 2}},
        {"ts": "2023-11-15T00:13:20.5+02:00", "values": {"temperature": 3}},
    ])
    assert out.dead_letters == []
    assert out.samples.ts_us[2] == to_us(datetime(2023, 11, 14, 22, 13, 20, 500_000, tzinfo=UTC))


def test_limits_are_configurable() -> None:
    tight = Limits(future_skew_us=1_000_000, max_age_us=60_000_000)
    out = decode(Kind.TELEMETRY, [{"ts": NOW_MS + 2000, "values": {"temperature": 1}},
                                  {"ts": NOW_MS - 61_000, "values": {"temperature": 1}}], limits=tight)
    assert reasons(out) == [Reason.FUTURE_TIMESTAMP, Reason.TOO_OLD]


def test_long_strings_are_truncated() -> None:
    out = decode(Kind.TELEMETRY, {"values": {"recipe": "x" * 5000}})
    assert out.samples.text[0] is not None and 0 < len(out.samples.text[0]) < 5000


# -- state -----------------------------------------------------------------------------------


def test_state_object_and_list() -> None:
    one = decode(Kind.STATE, {"ts": NOW_MS, "state": "unplanned_stop", "reason": "jam"})
    assert one.dead_letters == []
    [ev] = one.events
    assert (ev.tenant_id, ev.asset_id, ev.ts_us, ev.kind, ev.type) == (TENANT, ASSET, NOW_US, "state",
                                                                       "unplanned_stop")
    assert ev.data == {"state": "unplanned_stop", "reason": "jam"}
    many = decode(Kind.STATE, [{"state": "running"}, {"state": "idle"}])
    assert [e.type for e in many.events] == ["running", "idle"]


@pytest.mark.parametrize("state", ["exploding", "RUNNING", "", 3, None, True, ["running"]])
def test_invalid_state(state: Any) -> None:
    out = decode(Kind.STATE, [{"state": state}, {"state": "idle"}])
    assert reasons(out) == [Reason.INVALID_STATE]
    assert [e.type for e in out.events] == ["idle"]


def test_state_reason_must_be_text_and_ts_is_checked() -> None:
    out = decode(Kind.STATE, [{"state": "idle", "reason": 5}, {"state": "idle", "ts": "nope"}])
    assert reasons(out) == [Reason.INVALID_STATE, Reason.BAD_TIMESTAMP]
    assert out.events == []


# -- count -----------------------------------------------------------------------------------


def test_counts_delta_and_total() -> None:
    out = decode(Kind.COUNT, [{"ts": NOW_MS, "good": 5, "reject": 1},
                              {"good": 1000.0, "rework": 0, "mode": "total"}])
    assert out.dead_letters == []
    assert [(e.kind, e.type, e.data) for e in out.events] == [
        ("count", "delta", {"mode": "delta", "good": 5, "reject": 1}),
        ("count", "total", {"mode": "total", "good": 1000, "rework": 0}),
    ]


@pytest.mark.parametrize("count", [
    {"good": -1}, {"reject": 1.5}, {"good": "3"}, {"good": True}, {"good": [1]},
    {}, {"mode": "absolute", "good": 1}, {"good": None, "reject": None},
])
def test_invalid_counts(count: dict[str, Any]) -> None:
    out = decode(Kind.COUNT, [count, {"good": 1}])
    assert reasons(out) == [Reason.INVALID_COUNT]
    assert [e.data.get("good") for e in out.events] == [1]


# -- events ----------------------------------------------------------------------------------


def test_standard_and_declared_events() -> None:
    out = decode(Kind.EVENT, [
        {"type": "work_order_start", "order_id": "WO-1", "ts": NOW_MS, "qty": 100},
        {"type": "clock_in", "operator": "kim"},
        {"type": "tool_change", "tool": 7},
    ])
    assert out.dead_letters == []
    assert [(e.kind, e.type, e.data) for e in out.events] == [
        ("event", "work_order_start", {"order_id": "WO-1", "qty": 100}),
        ("event", "clock_in", {"operator": "kim"}),
        ("event", "tool_change", {"tool": 7}),
    ]
    assert out.events[0].ts_us == NOW_US


@pytest.mark.parametrize(("event", "reason"), [
    ({"type": "lunch"}, Reason.UNKNOWN_EVENT),
    ({"type": "work_order_start"}, Reason.INVALID_EVENT),  # missing order_id
    ({"type": "work_order_end", "order_id": 5}, Reason.INVALID_EVENT),
    ({"type": "work_order_end", "order_id": ""}, Reason.INVALID_EVENT),
    ({"type": "clock_out"}, Reason.INVALID_EVENT),
    ({"order_id": "WO-1"}, Reason.INVALID_EVENT),  # no type
    ({"type": 3}, Reason.INVALID_EVENT),
    ({"type": "tool_change", "ts": "soon"}, Reason.BAD_TIMESTAMP),
])
def test_invalid_events(event: dict[str, Any], reason: Reason) -> None:
    out = decode(Kind.EVENT, [event, {"type": "tool_change"}])
    assert reasons(out) == [reason]
    assert [e.type for e in out.events] == ["tool_change"]


# -- status and command replies ----------------------------------------------------------------


@pytest.mark.parametrize(("payload", "status"), [
    (b"online", "online"), (b" offline\n", "offline"), (b'"online"', "online"),
    (b'{"status": "offline", "ts": %d}' % NOW_MS, "offline"),
])
def test_status(payload: bytes, status: str) -> None:
    out = decode(Kind.STATUS, payload, raw=True)
    assert out.dead_letters == []
    [ev] = out.events
    assert (ev.kind, ev.type, ev.data, ev.ts_us) == ("status", status, {"status": status}, NOW_US)


@pytest.mark.parametrize("payload", [b"sleeping", b"", b'{"status": 1}', b"[1, 2]", b'{"state": "online"}'])
def test_invalid_status(payload: bytes) -> None:
    out = decode(Kind.STATUS, payload, raw=True)
    assert reasons(out) == [Reason.INVALID_STATUS]
    assert out.events == []


def test_command_replies() -> None:
    out = decode(Kind.COMMAND_REPLY, [{"id": "c1", "status": "ok", "ts": NOW_MS}, {"id": "c2"}])
    assert out.dead_letters == []
    assert [(e.kind, e.type, e.data) for e in out.events] == [
        ("command_reply", "ok", {"id": "c1", "status": "ok"}),
        ("command_reply", "reply", {"id": "c2"}),
    ]


def test_devices_do_not_publish_commands() -> None:
    out = decode(Kind.COMMAND, {"set": 1})
    assert reasons(out) == [Reason.UNKNOWN_TOPIC]


# -- whole-message rejection ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", [Kind.TELEMETRY, Kind.STATE, Kind.COUNT, Kind.EVENT, Kind.COMMAND_REPLY])
@pytest.mark.parametrize("payload", [b"", b"{", b"\xff\xfe", b"not json", b"42", b'"text"', b"null"])
def test_undecodable_messages_are_one_dead_letter(kind: Kind, payload: bytes) -> None:
    out = decode(kind, payload, raw=True)
    assert reasons(out) == [Reason.UNDECODABLE]
    assert out.dead_letters[0].payload == payload
    assert len(out.samples) == 0 and out.events == []


def test_too_large_is_rejected_before_decoding() -> None:
    limits = Limits(max_payload_bytes=100)
    big = json.dumps({"values": {"temperature": 1}, "pad": "x" * 200}).encode()
    out = decode(Kind.TELEMETRY, big, raw=True, limits=limits)
    assert reasons(out) == [Reason.TOO_LARGE]
    assert len(out.samples) == 0
    assert "100" in out.dead_letters[0].detail


def test_dead_letter_payload_and_detail_are_bounded() -> None:
    payload = json.dumps({"values": {"p" * 1000: 1}, "pad": "x" * 10_000}).encode()
    out = decode(Kind.TELEMETRY, payload, raw=True)
    [dl] = out.dead_letters
    assert dl.reason is Reason.UNKNOWN_MEASUREMENT
    assert dl.payload == payload[:DEAD_PAYLOAD_BYTES]
    assert len(dl.detail) <= MAX_DETAIL


@pytest.mark.parametrize(("kind", "records", "reason"), [
    (Kind.TELEMETRY, [{"values": {"temperature": 1}}, {"values": 5}, {"ts": NOW_MS}], Reason.WRONG_TYPE),
    (Kind.TELEMETRY, [{"values": {"temperature": 1}}, "x"], Reason.WRONG_TYPE),
    (Kind.STATE, [{"state": "idle"}, {"ts": NOW_MS}], Reason.INVALID_STATE),
    (Kind.STATE, [{"state": "idle"}, 7], Reason.INVALID_STATE),
    (Kind.COUNT, [{"good": 1}, [1, 2]], Reason.INVALID_COUNT),
    (Kind.EVENT, [{"type": "tool_change"}, 5], Reason.INVALID_EVENT),
    (Kind.COMMAND_REPLY, [{"id": "c1"}, None], Reason.INVALID_EVENT),
])
def test_one_malformed_record_does_not_sink_the_others(kind: Kind, records: list[Any],
                                                       reason: Reason) -> None:
    out = decode(kind, records)
    bad = len(records) - 1
    assert reasons(out) == [reason] * bad
    assert len(out.samples) + len(out.events) == 1


# -- fuzzing -----------------------------------------------------------------------------------

UPLINK = [Kind.TELEMETRY, Kind.STATE, Kind.COUNT, Kind.EVENT, Kind.STATUS, Kind.COMMAND_REPLY, Kind.COMMAND]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_invariants(out: IngestBatch) -> None:
    n = len(out.samples)
    assert len(out.samples.ts_us) == len(out.samples.value) == len(out.samples.text) == n
    for v in out.samples.value:
        assert v is None or (v == v and abs(v) != float("inf"))
    for ts in out.samples.ts_us:
        assert NOW_US - Limits().max_age_us <= ts <= NOW_US + Limits().future_skew_us
    for d in out.dead_letters:
        assert isinstance(d.reason, Reason) and len(d.detail) <= MAX_DETAIL


@FUZZ
@given(kind=st.sampled_from(UPLINK), data=st.binary(max_size=512))
def test_random_bytes_never_raise(kind: Kind, data: bytes) -> None:
    out = Decoder().decode(kind, data, MACHINE, device="d", topic="t", now_us=NOW_US)
    _check_invariants(out)
    if kind not in (Kind.STATUS, Kind.COMMAND) and not _is_json(data):
        assert reasons(out) == [Reason.UNDECODABLE]


def _is_json(data: bytes) -> bool:
    def no_constants(name: str) -> None:
        raise ValueError(name)

    try:
        json.loads(data.decode("utf-8"), parse_constant=no_constants)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError included
        return False
    return True


json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
                | st.sampled_from(["running", "idle", "online", "work_order_start", "tool_change",
                                   iso(NOW), "temperature", "running", "recipe", "good", "total"])
                | st.integers(min_value=NOW_MS - 10**8, max_value=NOW_MS + 10**6))
keys = st.sampled_from(["ts", "values", "state", "reason", "good", "reject", "rework", "mode", "type",
                        "order_id", "operator", "status", "quality", "temperature", "running",
                        "recipe"]) | st.text(max_size=8)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(keys, inner, max_size=6), max_leaves=25)


@FUZZ
@given(kind=st.sampled_from(UPLINK), doc=json_values)
def test_random_json_structures_never_raise(kind: Kind, doc: Any) -> None:
    data = json.dumps(doc).encode()
    out = Decoder().decode(kind, data, MACHINE, device="d", topic="t", now_us=NOW_US)
    _check_invariants(out)
    if not isinstance(doc, dict | list) and kind not in (Kind.STATUS, Kind.COMMAND):
        assert reasons(out) == [Reason.UNDECODABLE]  # valid JSON, but not a message


@FUZZ
@given(records=st.lists(st.dictionaries(st.sampled_from(["ts", "values", "quality"]),
                                        json_values, max_size=3), max_size=5))
def test_random_telemetry_records_never_raise(records: list[dict[str, Any]]) -> None:
    out = decode(Kind.TELEMETRY, records)
    _check_invariants(out)


@pytest.mark.parametrize(("kind", "record"), [
    (Kind.TELEMETRY, {"ts": NOW_MS, "values": {"temperature": 1, "running": False}}),
    (Kind.STATE, {"ts": NOW_MS, "state": "setup"}),
    (Kind.COUNT, {"ts": NOW_MS, "good": 3}),
    (Kind.EVENT, {"ts": NOW_MS, "type": "clock_out", "operator": "kim"}),
    (Kind.COMMAND_REPLY, {"ts": NOW_MS, "id": "c9", "status": "failed"}),
    (Kind.TELEMETRY, {"values": {"temperature": "x"}}),
    (Kind.STATE, {"state": "dancing"}),
])
def test_one_object_is_a_list_of_one(kind: Kind, record: dict[str, Any]) -> None:
    one, listed = decode(kind, record), decode(kind, [record])
    assert one.samples == listed.samples and one.events == listed.events
    assert reasons(one) == reasons(listed)
    assert len(one) == (len(record.get("values", {})) if kind is Kind.TELEMETRY else 1)
