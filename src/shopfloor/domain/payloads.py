"""Decode and validate JSON messages into samples, events and dead letters.

A whole message is rejected only when it cannot be decoded (or is too large, or outside the
device's prefix, which the caller checks). Everything else is judged value by value: good values
are kept, each bad one becomes a dead letter with its reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from shopfloor.domain.assets import MachineState, ValueType
from shopfloor.domain.records import DeadLetter, EventRecord, IngestBatch, Quality, Reason
from shopfloor.domain.timeutil import MAX_US, MIN_US, TimestampError, parse_ts
from shopfloor.domain.topics import Kind

STANDARD_EVENTS: dict[str, tuple[str, ...]] = {
    "work_order_start": ("order_id",),
    "work_order_end": ("order_id",),
    "clock_in": ("operator",),
    "clock_out": ("operator",),
}
MAX_DETAIL = 300
DEAD_PAYLOAD_BYTES = 4096


class _Telemetry(msgspec.Struct, forbid_unknown_fields=False):
    values: dict[str, Any]
    ts: Any = None
    quality: Any = None


class _State(msgspec.Struct):
    state: Any
    ts: Any = None
    reason: Any = None


class _Count(msgspec.Struct):
    ts: Any = None
    good: Any = None
    reject: Any = None
    rework: Any = None
    mode: Any = "delta"


_TELEMETRY_DEC = msgspec.json.Decoder(_Telemetry | list[_Telemetry])
_STATE_DEC = msgspec.json.Decoder(_State | list[_State])
_COUNT_DEC = msgspec.json.Decoder(_Count | list[_Count])
_ANY_DEC = msgspec.json.Decoder(dict[str, Any] | list[dict[str, Any]])
_STATUS_DEC = msgspec.json.Decoder()
_JSON_DEC = msgspec.json.Decoder()  # any JSON: the slow path, one record at a time


@dataclass(frozen=True, slots=True)
class MeasurementSlot:
    series_id: int
    type: ValueType


@dataclass(frozen=True, slots=True)
class MachineInfo:
    """What validation needs to know about the machine a topic names."""

    tenant_id: int
    asset_id: int
    measurements: dict[str, MeasurementSlot]
    events: frozenset[str] = frozenset()
    #: measurement name -> series id of the numeric ones (the decoder's fast path)
    numeric: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "numeric", {name: slot.series_id for name, slot in self.measurements.items()
                                             if slot.type is ValueType.NUMERIC})


@dataclass(frozen=True, slots=True)
class Limits:
    future_skew_us: int = 5 * 60 * 1_000_000  # five minutes
    max_age_us: int = 30 * 86_400 * 1_000_000  # raw retention by default
    max_payload_bytes: int = 256 * 1024


@dataclass(slots=True)
class Decoder:
    """Turns one message into an ``IngestBatch`` portion. Pure: the caller supplies ``now_us``."""

    limits: Limits = field(default_factory=Limits)

    def decode(self, kind: Kind, data: bytes, machine: MachineInfo, *, device: str, topic: str,
               now_us: int, out: IngestBatch | None = None) -> IngestBatch:
        """The message's samples, events and dead letters, appended to ``out`` (a new batch if None)."""
        if out is None:
            out = IngestBatch()
        ctx = _Ctx(out, machine, device, topic, data, now_us, self.limits)
        if len(data) > self.limits.max_payload_bytes:
            ctx.reject_message(Reason.TOO_LARGE, f"{len(data)} bytes is over the limit of "
                               f"{self.limits.max_payload_bytes}")
            return out
        try:
            if kind is Kind.TELEMETRY:
                _telemetry(ctx, _records(ctx, data, _TELEMETRY_DEC, _Telemetry, Reason.WRONG_TYPE))
            elif kind is Kind.STATE:
                _states(ctx, _records(ctx, data, _STATE_DEC, _State, Reason.INVALID_STATE))
            elif kind is Kind.COUNT:
                _counts(ctx, _records(ctx, data, _COUNT_DEC, _Count, Reason.INVALID_COUNT))
            elif kind is Kind.EVENT:
                _events(ctx, _records(ctx, data, _ANY_DEC, dict[str, Any], Reason.INVALID_EVENT))
            elif kind is Kind.COMMAND_REPLY:
                _replies(ctx, _records(ctx, data, _ANY_DEC, dict[str, Any], Reason.INVALID_EVENT))
            elif kind is Kind.STATUS:
                _status(ctx, data)
            else:
                ctx.reject_message(Reason.UNKNOWN_TOPIC, f"devices do not publish {kind.value!r} messages")
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            ctx.reject_message(Reason.UNDECODABLE, _short(str(exc)))
        return out


def _records(ctx: _Ctx, data: bytes, fast: msgspec.json.Decoder[Any], record_type: Any,
             reason: Reason) -> list[Any]:
    """The message's records. One malformed record is a dead letter of its own, not the message's end.

    The typed decoder is the fast path; only when it refuses the message is each record converted
    alone. Raises (whole message undecodable) only when the bytes are not JSON or not an object or
    a list.
    """
    try:
        return _as_list(fast.decode(data))
    except msgspec.ValidationError:
        decoded = _JSON_DEC.decode(data)
    if not isinstance(decoded, dict | list):
        got = type(decoded).__name__
        raise msgspec.ValidationError(f"expected an object or a list of objects, not {got}")
    good = []
    for i, rec in enumerate(_as_list(decoded)):
        try:
            good.append(msgspec.convert(rec, record_type))
        except msgspec.ValidationError as exc:
            ctx.dead(reason, f"record {i}: {exc}")
    return good


def _as_list(decoded: Any) -> list[Any]:
    return decoded if isinstance(decoded, list) else [decoded]


def _short(text: str) -> str:
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"


@dataclass(slots=True)
class _Ctx:
    out: IngestBatch
    machine: MachineInfo
    device: str
    topic: str
    data: bytes
    now_us: int
    limits: Limits

    def dead(self, reason: Reason, detail: str) -> None:
        self.out.dead_letters.append(
            DeadLetter(self.machine.tenant_id, self.device, self.topic, reason, _short(detail),
                       self.data[:DEAD_PAYLOAD_BYTES], self.now_us)
        )

    def reject_message(self, reason: Reason, detail: str) -> None:
        self.dead(reason, detail)

    def ts(self, raw: Any, what: str | Callable[[], str]) -> int | None:
        """Parse and range-check a record's timestamp; dead-letter ``what`` (or what it returns,
        computed only then) when it is bad."""
        if type(raw) is int and _MIN_MS <= raw <= _MAX_MS:  # epoch ms, the common case
            ts = raw * 1000
        else:
            try:
                ts = self.now_us if raw is None else parse_ts(raw)
            except TimestampError as exc:
                self.dead(Reason.BAD_TIMESTAMP, f"{_label(what)}: {exc}")
                return None
        if not self.now_us - self.limits.max_age_us <= ts <= self.now_us + self.limits.future_skew_us:
            self._out_of_window(ts, what)
            return None
        return ts

    def _out_of_window(self, ts: int, what: str | Callable[[], str]) -> None:
        what = _label(what)
        if ts > self.now_us + self.limits.future_skew_us:
            self.dead(Reason.FUTURE_TIMESTAMP, f"{what}: ts is {(ts - self.now_us) / 1e6:.0f} s in the future "
                      f"(limit {self.limits.future_skew_us / 1e6:.0f} s)")
        else:
            self.dead(Reason.TOO_OLD, f"{what}: ts is older than the retention of "
                      f"{self.limits.max_age_us / 86_400e6:.0f} days")

    def event(self, ts: int, kind: str, type_: str, data: dict[str, Any]) -> None:
        self.out.events.append(EventRecord(self.machine.tenant_id, self.machine.asset_id, ts, kind, type_, data))


_MIN_MS = -(-MIN_US // 1000)  # epoch milliseconds whose microseconds are inside MIN_US..MAX_US
_MAX_MS = MAX_US // 1000


def _label(what: str | Callable[[], str]) -> str:
    return what if isinstance(what, str) else what()


_GOOD = int(Quality.GOOD)
_FLOAT = {float}


def _quality(raw: Any) -> int:
    if raw is None:
        return _GOOD
    if isinstance(raw, str) and raw.lower() in ("good", "uncertain", "bad"):
        return int(Quality[raw.upper()])
    if isinstance(raw, int) and not isinstance(raw, bool) and raw in (0, 1, 2):
        return raw
    return -1


def _telemetry(ctx: _Ctx, records: list[_Telemetry]) -> None:
    samples = ctx.out.samples
    numeric = ctx.machine.numeric
    add_series, add_ts, add_value = samples.series_id.append, samples.ts_us.append, samples.value.append
    add_text, add_quality = samples.text.append, samples.quality.append
    for rec in records:
        ts = ctx.ts(rec.ts, lambda rec=rec: f"telemetry with {len(rec.values)} value(s)")  # type: ignore[misc]
        if ts is None:
            continue
        quality = _quality(rec.quality)
        if quality < 0:
            ctx.dead(Reason.WRONG_TYPE, f"quality {rec.quality!r} is not good, uncertain, bad or 0-2")
            continue
        values = rec.values
        # the whole record at once when every value is a finite float of a numeric measurement:
        # nothing to check per value (a sum is finite only if every term is; one that overflows
        # takes the per-value path, which keeps the finite ones)
        series_ids = list(map(numeric.get, values))
        floats = list(values.values())
        if None not in series_ids and set(map(type, floats)) == _FLOAT and math.isfinite(sum(floats)):
            n = len(floats)
            samples.series_id.extend(series_ids)  # type: ignore[arg-type]  # no None: checked above
            samples.ts_us.extend([ts] * n)
            samples.value.extend(floats)
            samples.text.extend([None] * n)
            samples.quality.extend([quality] * n)
            continue
        for name, raw, series in zip(values, floats, series_ids, strict=True):
            # a finite float for a numeric measurement: nothing to check (x - x is nan for nan and inf)
            if series is not None and type(raw) is float and raw - raw == 0.0:
                add_series(series)
                add_ts(ts)
                add_value(raw)
                add_text(None)
                add_quality(quality)
            else:
                _telemetry_value(ctx, name, raw, ts, quality)


def _telemetry_value(ctx: _Ctx, name: str, raw: Any, ts: int, quality: int) -> None:
    """One value, every case (the fast path in ``_telemetry`` takes finite floats of numeric measurements)."""
    samples = ctx.out.samples
    slot = ctx.machine.measurements.get(name)
    if slot is None:
        ctx.dead(Reason.UNKNOWN_MEASUREMENT, f"{name!r} is not a measurement of this machine's type")
        return
    if slot.type is ValueType.NUMERIC:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            ctx.dead(Reason.WRONG_TYPE, f"{name}: expected a number, got {type(raw).__name__}")
            return
        try:
            value = float(raw)
        except OverflowError:  # an integer literal beyond any double
            value = float("inf")
        if value != value or value in (float("inf"), float("-inf")):
            ctx.dead(Reason.WRONG_TYPE, f"{name}: not a finite number")
            return
        samples.add(slot.series_id, ts, value, None, quality)
    elif slot.type is ValueType.BOOLEAN:
        if not isinstance(raw, bool):
            ctx.dead(Reason.WRONG_TYPE, f"{name}: expected true or false, got {type(raw).__name__}")
            return
        samples.add(slot.series_id, ts, 1.0 if raw else 0.0, None, quality)
    else:
        if not isinstance(raw, str):
            ctx.dead(Reason.WRONG_TYPE, f"{name}: expected a string, got {type(raw).__name__}")
            return
        samples.add(slot.series_id, ts, None, raw[:1024], quality)


_STATES = frozenset(s.value for s in MachineState)


def _states(ctx: _Ctx, records: list[_State]) -> None:
    for rec in records:
        if not isinstance(rec.state, str) or rec.state not in _STATES:
            ctx.dead(Reason.INVALID_STATE, f"state {rec.state!r} is not one of {', '.join(sorted(_STATES))}")
            continue
        if rec.reason is not None and not isinstance(rec.reason, str):
            ctx.dead(Reason.INVALID_STATE, "reason must be a string")
            continue
        ts = ctx.ts(rec.ts, f"state {rec.state}")
        if ts is None:
            continue
        data: dict[str, Any] = {"state": rec.state}
        if rec.reason:
            data["reason"] = rec.reason[:200]
        ctx.event(ts, "state", rec.state, data)


def _counts(ctx: _Ctx, records: list[_Count]) -> None:
    for rec in records:
        if rec.mode not in ("delta", "total"):
            ctx.dead(Reason.INVALID_COUNT, f"mode {rec.mode!r} must be 'delta' or 'total'")
            continue
        data: dict[str, Any] = {"mode": rec.mode}
        bad = None
        for key in ("good", "reject", "rework"):
            raw = getattr(rec, key)
            if raw is None:
                continue
            if isinstance(raw, bool) or not isinstance(raw, int | float) or raw < 0 or raw != int(raw):
                bad = f"{key}={raw!r} must be a whole number ≥ 0"
                break
            data[key] = int(raw)
        if bad is not None:
            ctx.dead(Reason.INVALID_COUNT, bad)
            continue
        if len(data) == 1:
            ctx.dead(Reason.INVALID_COUNT, "a count needs at least one of good, reject, rework")
            continue
        ts = ctx.ts(rec.ts, "count")
        if ts is None:
            continue
        ctx.event(ts, "count", rec.mode, data)


def _events(ctx: _Ctx, records: list[dict[str, Any]]) -> None:
    for rec in records:
        type_ = rec.get("type")
        if not isinstance(type_, str) or not type_:
            ctx.dead(Reason.INVALID_EVENT, "an event needs a 'type' string")
            continue
        required = STANDARD_EVENTS.get(type_)
        if required is None and type_ not in ctx.machine.events:
            ctx.dead(Reason.UNKNOWN_EVENT, f"event type {type_!r} is neither standard "
                     f"({', '.join(STANDARD_EVENTS)}) nor declared by the machine's type")
            continue
        missing = [k for k in (required or ()) if not isinstance(rec.get(k), str) or not rec.get(k)]
        if missing:
            ctx.dead(Reason.INVALID_EVENT, f"{type_} needs {', '.join(missing)} (a string)")
            continue
        ts = ctx.ts(rec.get("ts"), f"event {type_}")
        if ts is None:
            continue
        data = {k: v for k, v in rec.items() if k not in ("ts", "type")}
        ctx.event(ts, "event", type_, data)


def _replies(ctx: _Ctx, records: list[dict[str, Any]]) -> None:
    for rec in records:
        ts = ctx.ts(rec.get("ts"), "command reply")
        if ts is None:
            continue
        status = rec.get("status")
        ctx.event(ts, "command_reply", status if isinstance(status, str) else "reply",
                  {k: v for k, v in rec.items() if k != "ts"})


def _status(ctx: _Ctx, data: bytes) -> None:
    text = data.strip().decode("utf-8", errors="replace")
    status: Any = text
    ts_raw: Any = None
    if text.startswith(("{", '"')):
        decoded = _STATUS_DEC.decode(data)
        if isinstance(decoded, dict):
            status, ts_raw = decoded.get("status"), decoded.get("ts")
        else:
            status = decoded
    if status not in ("online", "offline"):
        ctx.dead(Reason.INVALID_STATUS, "status must be 'online' or 'offline'")
        return
    ts = ctx.ts(ts_raw, f"status {status}")
    if ts is not None:
        ctx.event(ts, "status", status, {"status": status})
