"""One Modbus device: its polling groups read on their intervals, decoded into readings, with counters.

Nothing a device does can crash the poller: a timeout, a lost connection, an exception response
or a value that does not decode becomes a reading of bad quality (value None) for the registers
it touched, and a count in ``DeviceCounters`` under the cause (``timeout``, ``connect_error``,
``exception_illegal_data_address``, ``decode_error``, ...). A dead device is reconnected with
back-off (doubling from 0.5 s to 30 s) while its groups keep reporting bad quality.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from shopfloor.connectors.modbus.errors import (
    ModbusError,
    ModbusLinkError,
    ModbusTimeout,
    ModbusWriteRefused,
)
from shopfloor.connectors.modbus.transport import Transport
from shopfloor.domain.fieldbus import Reading, ReadingSink
from shopfloor.domain.modbus_map import (
    ModbusSpec,
    ReadRequest,
    RegisterSpec,
    compile_request,
    encode_register,
    plan_reads,
)
from shopfloor.domain.records import Quality

_log = logging.getLogger(__name__)

BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0


@dataclass(slots=True)
class DeviceCounters:
    """What one device's polling has done so far."""

    polls: int = 0  # group polls run
    requests: int = 0  # read requests sent
    values: int = 0  # good readings produced
    bad_values: int = 0  # readings of bad quality produced
    retries: int = 0  # requests repeated after a timeout (inside the transport)
    overruns: int = 0  # poll ticks skipped because the previous poll ran late
    connects: int = 0  # successful connections
    writes: int = 0
    failures: Counter[str] = field(default_factory=Counter)  # by cause
    last_error: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"polls": self.polls, "requests": self.requests, "values": self.values,
                "bad_values": self.bad_values, "retries": self.retries, "overruns": self.overruns,
                "connects": self.connects, "writes": self.writes, "failures": dict(self.failures),
                "last_error": self.last_error}


class ModbusDevice:
    """Polls one device (``ModbusSpec``) through a ``Transport``; ``default_asset`` stands in for a
    register's and the spec's empty ``asset``."""

    def __init__(self, spec: ModbusSpec, transport: Transport, *, default_asset: str = "",
                 clock: Callable[[], float] = time.time) -> None:
        self.spec = spec
        self.transport = transport
        self.counters = DeviceCounters()
        self._clock = clock
        self._assets = {id(r): r.asset or spec.asset or default_asset for g in spec.groups for r in g.registers}
        self._plans: list[list[ReadRequest]] = [plan_reads(g.registers, spec.max_gap) for g in spec.groups]
        self._decoders = {id(r): compile_request(r) for plan in self._plans for r in plan}
        self._connect_lock = asyncio.Lock()
        self._down_until = 0.0
        self._backoff = BACKOFF_MIN_S

    @property
    def label(self) -> str:
        return self.spec.label

    def asset_of(self, reg: RegisterSpec) -> str:
        return self._assets[id(reg)]

    def requests_per_poll(self) -> list[int]:
        return [len(p) for p in self._plans]

    async def run(self, sink: ReadingSink) -> None:
        """Poll every group on its interval until cancelled."""
        try:
            async with asyncio.TaskGroup() as tg:
                for index in range(len(self.spec.groups)):
                    tg.create_task(self._group_loop(index, sink), name=f"modbus {self.label} group {index}")
        finally:
            with contextlib.suppress(ModbusError):
                await self.transport.close()

    async def _group_loop(self, index: int, sink: ReadingSink) -> None:
        interval = self.spec.groups[index].interval_s
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        me = asyncio.current_task()
        while True:
            if me is not None and me.cancelling():
                # asyncio.wait_for (inside pymodbus) can swallow a cancellation on Python 3.11
                raise asyncio.CancelledError
            readings = await self.poll(index)
            if readings:
                await sink(readings)
            next_at += interval
            now = loop.time()
            if now > next_at:  # late: skip the ticks we missed rather than bursting to catch up
                missed = int((now - next_at) // interval) + 1
                self.counters.overruns += missed
                next_at += missed * interval
            await asyncio.sleep(next_at - now)

    async def poll(self, index: int) -> list[Reading]:
        """Read group ``index`` once; every register yields one reading, good or bad."""
        c = self.counters
        c.polls += 1
        out: list[Reading] = []
        failed: ModbusError | None = None
        if not await self._ensure_connected():
            failed = ModbusLinkError(c.last_error or f"{self.label}: not connected")
        for request in self._plans[index]:
            if failed is None:
                try:
                    words = await self._read(request)
                except (ModbusLinkError, ModbusTimeout) as exc:  # the rest of this poll would fare the same
                    failed = exc
                    self._failed(exc, request)
                except ModbusError as exc:  # an exception response: only this request's registers
                    self._failed(exc, request)
                    out.extend(self._bad(request))
                    continue
                else:
                    out.extend(self._decode(request, words))
                    continue
            out.extend(self._bad(request))
        return out

    async def _read(self, request: ReadRequest) -> list[int]:
        self.counters.requests += 1
        before = self.transport.retries_used
        try:
            return await self.transport.read(request.table, request.address, request.count)
        finally:
            self.counters.retries += self.transport.retries_used - before

    def _decode(self, request: ReadRequest, words: list[int]) -> list[Reading]:
        ts_us = int(self._clock() * 1_000_000)
        out = []
        bad = 0
        assets = self._assets
        for (reg, _), value in zip(request.items, self._decoders[id(request)](words), strict=True):
            if value is None:
                self.counters.failures["decode_error"] += 1
                self.counters.last_error = f"{self.label}: {reg.measurement} is not a finite number"
                bad += 1
                out.append(Reading(assets[id(reg)], reg.measurement, ts_us, None, Quality.BAD))
                continue
            out.append(Reading(assets[id(reg)], reg.measurement, ts_us, value, Quality.GOOD))
        self.counters.values += len(out) - bad
        self.counters.bad_values += bad
        return out

    def _bad(self, request: ReadRequest) -> list[Reading]:
        ts_us = int(self._clock() * 1_000_000)
        self.counters.bad_values += len(request.items)
        return [Reading(self.asset_of(reg), reg.measurement, ts_us, None, Quality.BAD) for reg, _ in request.items]

    def _failed(self, exc: ModbusError, request: ReadRequest | None) -> None:
        self.counters.failures[exc.counter] += 1
        self.counters.last_error = exc.message
        if isinstance(exc, ModbusLinkError):
            self._down_until = time.monotonic() + self._backoff
        _log.debug("modbus %s: %s", self.label, exc.message)

    async def _ensure_connected(self) -> bool:
        if self.transport.connected:
            return True
        async with self._connect_lock:
            if self.transport.connected:
                return True
            if time.monotonic() < self._down_until:
                return False
            try:
                await self.transport.connect()
            except ModbusLinkError as exc:
                self._failed(exc, None)
                self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)
                return False
            self.counters.connects += 1
            self._backoff = BACKOFF_MIN_S
            return True

    async def write(self, reg: RegisterSpec, value: float | bool | str) -> None:
        """Write ``value`` to ``reg`` (holding register or coil marked writable); ``ModbusError`` on failure."""
        if not reg.writable:
            raise ModbusWriteRefused(f"{self.label}: {reg.measurement} is not writable (set 'writable: true')")
        if reg.table == "coil":
            if not isinstance(value, bool) and value not in (0, 1):
                raise ModbusWriteRefused(f"{self.label}: {reg.measurement} is a coil: write true or false")
            words: Sequence[int] = [1 if value else 0]
        else:
            try:
                words = encode_register(reg, value)
            except ValueError as exc:
                raise ModbusWriteRefused(f"{self.label}: {exc}") from None
        if not await self._ensure_connected():
            raise ModbusLinkError(f"{self.label}: not connected ({self.counters.last_error})")
        try:
            await self.transport.write(reg.table, reg.address, words)
        except ModbusError as exc:
            self._failed(exc, None)
            raise
        self.counters.writes += 1
