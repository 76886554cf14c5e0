"""The compiled wire reader (``host_wire``) against ``read_floats`` on the parsed message: for any
payload, plain, odd, truncated or with bytes changed, the reader either says "not mine" or returns
exactly what ``read_floats`` returns; it never reads outside the payload, and it takes the plain
Float/Double-by-alias messages."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from shopfloor.connectors.sparkplug.host_fast import parse_message, read_floats
from shopfloor.connectors.sparkplug.host_wire import WIRE, WireReader, wire_plan
from tests.unit import sparkplug_wire as w
from tests.unit.test_sparkplug_host_fast import DEVICE_METRICS, FLOATS, NOW_MS, metrics, press2_plan

NOW = NOW_MS * 1000
LATEST, EARLIEST = NOW + 300_000_000, NOW - 86_400_000_000


@pytest.fixture(scope="module", autouse=True)
def compiled() -> None:
    WIRE.start(wait=True)
    assert WIRE.ready


def same_as_read_floats(payload: bytes) -> object:
    """What the reader returns for ``payload``, checked against the parsed message's seq and
    ``read_floats`` wherever the reader takes it."""
    plan = press2_plan()
    assert plan.wire is not None
    message = parse_message(payload)
    seq = WIRE.seq(payload)
    if seq is not None and message is not None:  # (a metric's inner bytes are read by floats)
        assert seq == (message.seq if message.HasField("seq") else -1)
    got = WIRE.floats(payload, plan.wire, NOW, LATEST, EARLIEST)
    opened = WIRE.open(payload)  # the host's way: checked once, then read
    assert (opened is None) == (seq is None) and (opened is None or opened.seq == seq)
    if opened is not None:
        assert repr(WIRE.floats(opened, plan.wire, NOW, LATEST, EARLIEST)) == repr(got)
    if got is not None:
        assert seq is not None and message is not None
        assert repr(got) == repr(read_floats(message, plan, NOW, LATEST, EARLIEST))
    return got


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    defs = draw(st.sampled_from([FLOATS, FLOATS, DEVICE_METRICS]))
    body = b"".join(draw(st.lists(metrics(defs), max_size=8)))
    head = [w.uint(w.P_SEQ, draw(st.sampled_from([0, 3, 255, 2**40])))] if draw(st.integers(0, 9)) else []
    if draw(st.booleans()):
        head.append(w.uint(w.P_TIMESTAMP, draw(st.sampled_from([NOW_MS, NOW_MS - 5, NOW_MS + 3_600_000, 0, 2**60]))))
    parts = [*head, body]
    if draw(st.integers(0, 9)) == 0:
        parts.append(draw(st.sampled_from([w.text(w.P_UUID, "u"), w.blob(w.P_BODY, b"x"), head[0] if head else b""])))
    return b"".join(draw(st.permutations(parts)))


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads())
def test_the_reader_returns_what_read_floats_returns_or_leaves_the_payload(payload: bytes) -> None:
    event("taken" if same_as_read_floats(payload) is not None else "left")


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads(), st.data())
def test_changed_and_cut_bytes_never_fool_the_reader(payload: bytes, data: st.DataObject) -> None:
    buf = bytearray(payload)
    for _ in range(data.draw(st.integers(1, 3))):
        how = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        at = data.draw(st.integers(0, len(buf)))
        if how == "cut":
            del buf[at:]
        elif how == "insert":
            buf[at:at] = bytes([data.draw(st.integers(0, 255))])
        elif at < len(buf):
            buf[at] = data.draw(st.integers(0, 255))
    event("taken" if same_as_read_floats(bytes(buf)) is not None else "left")


def test_the_reader_takes_plain_float_messages_and_leaves_the_rest() -> None:
    plan = press2_plan()
    assert plan.wire is not None
    target = plan.target
    force, temperature = (target.metrics[n] for n in ("force", "temperature"))
    assert force is not None and temperature is not None
    head = w.uint(w.P_SEQ, 3) + w.uint(w.P_TIMESTAMP, NOW_MS)
    plain = (w.metric(w.uint(w.M_ALIAS, 10), w.f64(w.M_DOUBLE, 2.5), w.uint(w.M_DATATYPE, w.DOUBLE)),
             w.metric(w.uint(w.M_ALIAS, 13), w.f32(w.M_FLOAT, 0.5), w.uint(w.M_TIMESTAMP, NOW_MS - 1000)),
             w.metric(w.uint(w.M_ALIAS, 10), w.f64(w.M_DOUBLE, 1.0), w.boolean(w.M_IS_TRANSIENT, True)))
    assert WIRE.seq(w.payload(head, *plain)) == 3
    assert same_as_read_floats(w.payload(head, *plain)) == (
        [force.series_id, temperature.series_id], [NOW, NOW - 1_000_000], [2.5, 0.5])
    assert same_as_read_floats(w.payload(w.uint(w.P_SEQ, 3), plain[0])) == (
        [force.series_id], [NOW], [2.5])  # no timestamp anywhere: the time it was received
    assert WIRE.seq(w.payload(plain[0])) == -1  # no seq: the caller's general path says so
    as_bytearray = bytearray(w.payload(head, *plain))
    assert WIRE.seq(as_bytearray) == 3  # type: ignore[arg-type]
    assert WIRE.floats(as_bytearray, plan.wire, NOW, LATEST, EARLIEST) == (  # type: ignore[arg-type]
        [force.series_id, temperature.series_id], [NOW, NOW - 1_000_000], [2.5, 0.5])
    left = {
        "by name": w.metric(w.text(w.M_NAME, "force"), w.f64(w.M_DOUBLE, 1.0)),
        "name and alias": w.metric(w.uint(w.M_ALIAS, 10), w.text(w.M_NAME, "force"), w.f64(w.M_DOUBLE, 1.0)),
        "a Boolean": w.metric(w.uint(w.M_ALIAS, 11), w.boolean(w.M_BOOLEAN, True)),
        "not a measurement of a numeric series": w.metric(w.uint(w.M_ALIAS, 16), w.f64(w.M_DOUBLE, 1.0)),
        "unknown alias": w.metric(w.uint(w.M_ALIAS, 99), w.f64(w.M_DOUBLE, 1.0)),
        "NaN": w.metric(w.uint(w.M_ALIAS, 10), w.f64(w.M_DOUBLE, math.nan)),
        "in the future": w.metric(w.uint(w.M_ALIAS, 10), w.f64(w.M_DOUBLE, 1.0),
                                  w.uint(w.M_TIMESTAMP, NOW_MS + 3_600_000)),
        "null": w.metric(w.uint(w.M_ALIAS, 10), w.boolean(w.M_IS_NULL, True)),
        "no value": w.metric(w.uint(w.M_ALIAS, 10)),
        "two values": w.metric(w.uint(w.M_ALIAS, 10), w.f64(w.M_DOUBLE, 1.0), w.f32(w.M_FLOAT, 1.0)),
        "alias twice": w.metric(w.uint(w.M_ALIAS, 10), w.uint(w.M_ALIAS, 10), w.f64(w.M_DOUBLE, 1.0)),
        "an Int32 datatype": w.metric(w.uint(w.M_ALIAS, 10), w.f64(w.M_DOUBLE, 1.0), w.uint(w.M_DATATYPE, w.INT32)),
        "metadata": w.metric(w.uint(w.M_ALIAS, 10), w.f64(w.M_DOUBLE, 1.0), w.message(w.M_METADATA)),
    }
    for what, metric in left.items():
        assert same_as_read_floats(w.payload(head, plain[0], metric)) is None, what
    assert WIRE.seq(w.payload(head, w.text(w.P_UUID, "u"), plain[0])) is None  # a uuid: not the reader's
    assert WIRE.seq(w.payload(head, head, plain[0])) is None  # seq twice
    assert WIRE.seq(b"\x12\x05\x10") is None  # cut short


def test_a_reader_not_compiled_yet_takes_nothing() -> None:
    reader = WireReader()
    plan = press2_plan()
    assert plan.wire is not None
    payload = w.payload(w.uint(w.P_SEQ, 3), w.metric(w.uint(w.M_ALIAS, 10), w.f64(w.M_DOUBLE, 2.5)))
    assert not reader.ready
    assert reader.seq(payload) is None
    assert reader.floats(payload, plan.wire, NOW, LATEST, EARLIEST) is None


def test_large_aliases_are_told_apart_to_the_last_bit() -> None:
    assert wire_plan({2**63: (1, 1.0, 0.0)}) is None  # beyond what the reader reads: not used
    plan = wire_plan({2**62 + 1: (11, 2.0, 0.5), 2**62: (10, 1.0, 0.0), 3: (2, 1.0, 0.0)})
    assert plan is not None and plan.aliases.tolist() == [3, 2**62, 2**62 + 1] and plan.series.tolist() == [2, 10, 11]
    payload = w.payload(w.uint(w.P_SEQ, 3), w.metric(w.uint(w.M_ALIAS, 2**62 + 1), w.f64(w.M_DOUBLE, 2.0)),
                        w.metric(w.uint(w.M_ALIAS, 2**62), w.f64(w.M_DOUBLE, 2.0)))
    assert WIRE.floats(payload, plan, NOW, LATEST, EARLIEST) == ([11, 10], [NOW, NOW], [4.5, 2.0])
    missing = w.payload(w.uint(w.P_SEQ, 3), w.metric(w.uint(w.M_ALIAS, 2**62 + 2), w.f64(w.M_DOUBLE, 2.0)))
    assert WIRE.floats(missing, plan, NOW, LATEST, EARLIEST) is None
