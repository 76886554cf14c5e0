"""The Sparkplug host's compiled reader for the commonest data message: Float/Double by alias.

:func:`host_fast.read_floats` reads a parsed protobuf message through upb's Python objects: about
ten attribute reads per metric, each ~90 ns, with the loop around them roughly 2 µs per metric,
which for 50-metric messages was most of the host's time. This module reads the same messages
from their wire bytes in a function compiled by numba (protobuf's wire format: varints, fixed
32/64-bit values and length-delimited fields), straight into three arrays.

It is deliberately narrow. It takes a payload only when everything in it is what a data message of
Float/Double measurements sent by alias carries: payload fields timestamp, metrics and seq, each at
most once; per metric alias, timestamp, datatype (0, Float or Double), is_historical, is_transient
and one float or double value, each at most once, with wire types as the .proto declares them. A
name, properties, metadata, is_null, any other field, a repeated field, an alias the plan does not
hold, a value or timestamp ``read_floats`` would refuse, or bytes that do not parse: the reader
says "not mine" (``None``) and the caller goes on exactly as before (upb parses the message and
``read_floats`` / ``read_rows`` / the general path judge it). So what it returns equals what
``read_floats`` returns for the same payload, which the tests check on generated and on mutated
payloads.

The functions compile on first use (a second or two; numba caches the machine code next to this
file, so later processes load it in a fraction of that). :class:`WireReader` compiles them in a
background thread and answers ``None`` until they are ready, so no message waits for the
compiler.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

_log = logging.getLogger(__name__)

_FLOAT, _DOUBLE = 9, 10  # DataType codes
_NO_SEQ = -1  # _header: no seq field
_NOT_MINE = -2  # _header / _read: the payload is not one this reader takes
_MAX_TS_MS = 1 << 53  # beyond this ts * 1000 could overflow; such payloads go the general way


def _varint_py(buf: Any, pos: int, end: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it; position -1 when it runs past ``end`` or
    holds more than 63 bits (not this reader's)."""
    value = 0
    shift = 0
    while True:
        if pos >= end or shift > 56:
            return 0, -1
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, pos


_varint: Any = _varint_py  # compiled (and inlined) before the two functions below are compiled


def _header_py(buf: Any) -> int:
    """The payload's seq (0 … 2**63-1), ``_NO_SEQ`` when it has none, ``_NOT_MINE`` when the payload
    holds any top-level field other than timestamp (1), metrics (2) and seq (3), one of them twice
    (metrics aside), with another wire type or a tag of more than one byte, or does not parse."""
    n = buf.shape[0]
    pos = 0
    seq = _NO_SEQ
    seen = 0
    while pos < n:
        tag = buf[pos]
        if tag != 0x08 and tag != 0x12 and tag != 0x18:  # timestamp (1), metrics (2), seq (3)
            return _NOT_MINE
        value, pos = _varint(buf, pos + 1, n)
        if pos < 0:
            return _NOT_MINE
        if tag == 0x12:  # length-delimited
            if value > n - pos:
                return _NOT_MINE
            pos += value
            continue
        bit = 1 << (tag >> 3)
        if seen & bit:
            return _NOT_MINE
        seen |= bit
        if tag == 0x18:
            seq = value
    return seq


def _read_py(buf: Any, aliases: Any, series: Any, scales: Any, offsets: Any, now_us: int, latest_us: int,
             earliest_us: int, out_series: Any, out_ts: Any, out_value: Any) -> int:
    """The rows of a payload ``_header`` took, into the ``out_*`` arrays (at least len(buf) // 2
    long); returns how many, or ``_NOT_MINE``. ``aliases`` is sorted; ``series``, ``scales`` and
    ``offsets`` run parallel to it (the plan's Float/Double measurements of numeric series)."""
    n = buf.shape[0]
    count = aliases.shape[0]
    # the payload's timestamp first: a metric without one takes it, wherever it stands
    payload_ts = -1
    pos = 0
    while pos < n:
        tag = buf[pos]
        value, pos = _varint(buf, pos + 1, n)
        if tag == 0x12:
            pos += value  # a metric: later
        elif tag == 0x08:
            payload_ts = value
    rows = 0
    pos = 0
    while pos < n:
        tag = buf[pos]
        value, pos = _varint(buf, pos + 1, n)
        if tag != 0x12:
            continue  # timestamp or seq
        end = pos + value
        seen = 0
        alias = 0
        ts_ms = 0
        code = 0
        transient = False
        raw = 0.0
        while pos < end:
            tag = buf[pos]
            pos += 1
            if tag >= 0x80:
                return _NOT_MINE  # a field over 15 (or a malformed tag)
            field = tag >> 3
            bit = 1 << field
            if seen & bit:
                return _NOT_MINE
            seen |= bit
            if tag == 0x65:  # float_value (12), fixed32
                if end - pos < 4 or seen & (1 << 13):
                    return _NOT_MINE
                raw = float(buf[pos:pos + 4].view(np.float32)[0])
                pos += 4
            elif tag == 0x69:  # double_value (13), fixed64
                if end - pos < 8 or seen & (1 << 12):
                    return _NOT_MINE
                raw = buf[pos:pos + 8].view(np.float64)[0]
                pos += 8
            elif tag == 0x10 or tag == 0x18 or tag == 0x20 or tag == 0x28 or tag == 0x30:
                # alias (2), timestamp (3), datatype (4), is_historical (5), is_transient (6): varints
                value, pos = _varint(buf, pos, end)
                if pos < 0:
                    return _NOT_MINE
                if field == 2:
                    alias = value
                elif field == 3:
                    if value >= _MAX_TS_MS:
                        return _NOT_MINE
                    ts_ms = value
                elif field == 4:
                    code = value
                elif field == 6:
                    transient = value != 0
            else:
                return _NOT_MINE  # name, is_null, metadata, properties, another value, another wire type
        if not seen & (1 << 2) or not seen & ((1 << 12) | (1 << 13)):
            return _NOT_MINE  # found by name or not at all, or no value: read_floats judges it
        if code != 0 and code != _FLOAT and code != _DOUBLE:
            return _NOT_MINE
        # the plan's entry for the alias (binary search)
        lo = 0
        hi = count
        while lo < hi:
            mid = (lo + hi) >> 1
            if aliases[mid] < alias:
                lo = mid + 1
            else:
                hi = mid
        if lo == count or aliases[lo] != alias:
            return _NOT_MINE
        if transient:
            continue
        if seen & (1 << 3):
            ts = ts_ms * 1000
        elif payload_ts >= 0:
            if payload_ts >= _MAX_TS_MS:
                return _NOT_MINE
            ts = payload_ts * 1000
        else:
            ts = now_us
        value_out = raw * scales[lo] + offsets[lo]
        if ts > latest_us or ts < earliest_us or not np.isfinite(value_out):
            return _NOT_MINE
        out_series[rows] = series[lo]
        out_ts[rows] = ts
        out_value[rows] = value_out
        rows += 1
    return rows


@dataclass(frozen=True, slots=True)
class WirePlan:
    """A plan's Float/Double measurements by alias, as sorted arrays for the compiled reader."""

    aliases: Any  # int64, sorted (int64, not uint64: numba compares uint64 with int64 as floats)
    series: Any  # int64
    scales: Any  # float64
    offsets: Any  # float64


def wire_plan(floats_by_alias: Mapping[int, tuple[int, float, float]]) -> WirePlan | None:
    """The arrays for ``floats_by_alias`` (alias -> (series id, scale, offset)); None when an alias
    does not fit 63 bits (then the reader is not used for that plan: it reads no larger alias)."""
    keys = sorted(floats_by_alias)
    if keys and (keys[0] < 0 or keys[-1] >= 1 << 63):
        return None
    entries = [floats_by_alias[k] for k in keys]
    return WirePlan(np.array(keys, dtype=np.int64), np.array([e[0] for e in entries], dtype=np.int64),
                    np.array([e[1] for e in entries], dtype=np.float64),
                    np.array([e[2] for e in entries], dtype=np.float64))


class WireReader:
    """The compiled reader, once compiled; ``None`` answers until then (see module docs)."""

    def __init__(self) -> None:
        self._header: Any = None
        self._read: Any = None
        self._started = False
        self._lock = threading.Lock()
        self._compiling = threading.Lock()  # one compilation; a waiting start() waits for it
        self._scratch = threading.local()  # the output arrays of floats(), per thread (copied out)

    def start(self, *, wait: bool = False) -> None:
        """Compile in a background thread (``wait``: here, and return when it is done)."""
        if wait:
            self._compile()
            return
        with self._lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._compile, name="sparkplug-wire-compile", daemon=True).start()

    @property
    def ready(self) -> bool:
        return self._read is not None

    def _compile(self) -> None:
        with self._compiling:
            if self._read is None:
                self._compile_now()

    def _compile_now(self) -> None:
        try:
            import numba

            global _varint
            _varint = numba.njit(cache=True, nogil=True, inline="always")(_varint_py)
            jit = numba.njit(cache=True, nogil=True)
            header, read = jit(_header_py), jit(_read_py)
            buf = np.frombuffer(b"\x18\x01", dtype=np.uint8)  # compile now, not at the first message
            ints, floats = np.zeros(1, np.int64), np.zeros(1, np.float64)
            header(buf)
            read(buf, ints, ints, floats, floats, 0, 0, 0, ints, ints, floats)
        except Exception:  # no numba on this platform, or it failed: the upb path stays
            _log.warning("the compiled Sparkplug reader is not available; data messages are read via "
                         "protobuf objects", exc_info=True)
            return
        self._header, self._read = header, read

    def seq(self, payload: bytes) -> int | None:
        """The payload's seq if the reader may take it (``-1``: it has none); None: not mine, or
        not compiled yet."""
        opened = self.open(payload)
        return None if opened is None else opened.seq

    def open(self, payload: bytes) -> Opened | None:
        """The payload checked once for :meth:`floats` (its seq, ``-1`` if it has none); None: not
        mine, or not compiled yet."""
        header = self._header
        if header is None:
            return None
        buf = _bytes(payload)
        seq = int(header(buf))
        return None if seq == _NOT_MINE else Opened(buf, seq)

    def floats(self, payload: bytes | Opened, plan: WirePlan, now_us: int, latest_us: int,
               earliest_us: int) -> tuple[list[int], list[int], list[float]] | None:
        """What ``read_floats`` returns for the same payload and plan, or None when the reader does
        not take the payload (a payload ``seq`` said was not mine must not come here). ``payload``
        may be what :meth:`open` returned for it (then it is not checked again)."""
        read = self._read
        if read is None:
            return None
        if isinstance(payload, Opened):
            buf = payload.buf
        else:
            buf = _bytes(payload)
            if self._header(buf) == _NOT_MINE:  # _read trusts the layout _header checked
                return None
        size = len(buf) // 2 + 1
        out = getattr(self._scratch, "out", None)
        if out is None or len(out[0]) < size:  # each thread's own, grown to the largest payload
            out = self._scratch.out = (np.empty(size, np.int64), np.empty(size, np.int64), np.empty(size, np.float64))
        out_series, out_ts, out_value = out
        rows = read(buf, plan.aliases, plan.series, plan.scales, plan.offsets, now_us, latest_us, earliest_us,
                    out_series, out_ts, out_value)
        if rows < 0:
            return None
        return out_series[:rows].tolist(), out_ts[:rows].tolist(), out_value[:rows].tolist()


@dataclass(frozen=True, slots=True)
class Opened:
    """A payload :meth:`WireReader.open` checked: its bytes as the compiled functions take them, and its seq."""

    buf: Any
    seq: int


def _bytes(payload: bytes) -> Any:
    """The payload as a read-only uint8 array: the one array type the functions were compiled for
    (a bytearray would be writable, and numba would stop to compile another version)."""
    if type(payload) is not bytes:
        payload = bytes(payload)
    return np.frombuffer(payload, dtype=np.uint8)


#: The process's one reader (compiled once, shared by every host).
WIRE = WireReader()
