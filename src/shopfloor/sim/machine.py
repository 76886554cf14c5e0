"""A simulated machine: a seeded random process stepped through simulated time.

Pure: no I/O and no wall clock. ``SimMachine.step(ts_ms, dt_s)`` advances the machine by ``dt_s``
simulated seconds and returns the messages a real controller would publish at ``ts_ms`` (epoch
milliseconds), as ``Message(kind, payload)`` with JSON-able payloads in the shapes ingest accepts.

What it models: a state machine (running most of the time; idle, starved, blocked now and then;
setup at each work-order change; unplanned stops for jams, tool breaks and overheating; planned
stops for breaks), parts at the ideal cycle time (slower in some periods) with a reject rate that
grows with wear, power by state, a cumulative kWh counter integrated from that power, temperature
with thermal inertia, vibration with slow wear and fault spikes, work orders and operator clock-in
and clock-out at shift changes. The shift calendar runs on the site's local time.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shopfloor.domain.assets import MachineState, ValueType
from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.plant import AssetTypeSpec, MachineSpec, PlantSpec
from shopfloor.domain.topics import Kind

PRODUCTS = ("KFR-26GW", "KFR-35GW", "KFR-50GW", "KFR-26GW/BP", "KFR-35GW/BP", "KFR-50LW/BP", "KFR-72LW/BP")

RUNNING, IDLE, SETUP = MachineState.RUNNING.value, MachineState.IDLE.value, MachineState.SETUP.value
STARVED, BLOCKED = MachineState.STARVED.value, MachineState.BLOCKED.value
PLANNED_STOP, UNPLANNED_STOP = MachineState.PLANNED_STOP.value, MachineState.UNPLANNED_STOP.value

# Shift calendar (local time): three 8 h shifts from 06:00, a four-crew rotation, and breaks given
# as (offset into the shift, duration) in seconds.
SHIFT_START_S = 6 * 3600
SHIFT_S = 8 * 3600
CREWS = "abcd"
BREAKS = ((2 * 3600, 600), (4 * 3600, 1800), (6 * 3600 + 1200, 600))

# Mean running seconds between random happenings, and the duration range (s) of each stop.
_MEAN_S = {
    "jam": 90 * 60.0,
    "tool_break": 14 * 3600.0,  # divided by (1 + 3 * wear)
    "sensor_fault": 30 * 3600.0,
    "starved": 60 * 60.0,
    "blocked": 80 * 60.0,
    "idle": 3 * 3600.0,
    "cooling_fault": 24 * 3600.0,
    "slow": 40 * 60.0,
    "spike": 30 * 60.0,
}
_DURATION_S = {
    "jam": (60.0, 360.0),
    "tool_break": (600.0, 1800.0),
    "sensor_fault": (300.0, 1200.0),
    "overheat": (900.0, 1800.0),
    "starved": (60.0, 300.0),
    "blocked": (60.0, 240.0),
    "idle": (120.0, 600.0),
    "setup": (600.0, 1500.0),
}
_STOP_STATE = {"jam": UNPLANNED_STOP, "tool_break": UNPLANNED_STOP, "sensor_fault": UNPLANNED_STOP,
               "starved": STARVED, "blocked": BLOCKED, "idle": IDLE}
_STATE_REASON = {"starved": "no_material", "blocked": "downstream_full", "idle": "waiting_operator"}
_POWER_FRACTION = {RUNNING: 0.8, IDLE: 0.25, STARVED: 0.25, BLOCKED: 0.25, SETUP: 0.15,
                   UNPLANNED_STOP: 0.1, PLANNED_STOP: 0.05}
_TIMED = frozenset({IDLE, STARVED, BLOCKED, SETUP, UNPLANNED_STOP})

WEAR_PER_RUNNING_S = 0.1 / 3600  # vibration grows ~10 % per running hour until a tool change
TEMP_TAU_S = 900.0
ZONE_TAU_S = 300.0  # heated zones (moulds, brazing) follow their set point faster
TEMP_RISE_FULL = 30.0  # degC over ambient at rated power
COOLING_FAULT_RISE = 35.0
OVERHEAT_LIMIT = 24.0 + TEMP_RISE_FULL + 18.0
BASE_REJECT = 0.012

# Process values: set points when running; names ending in "_temperature" are heated zones.
SETPOINTS = {"pressure": 160.0, "injection_pressure": 950.0, "test_pressure": 42.0, "mould_temperature": 55.0,
             "braze_temperature": 640.0, "gas_flow": 3.2, "screw_torque": 4.5, "strap_tension": 300.0}
BASE_VIBRATION = 1.8


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT message to publish on the machine's ``kind`` topic."""

    kind: Kind
    payload: Any


@dataclass(frozen=True, slots=True)
class MachineProfile:
    """What the simulation needs to know about one machine of the plant."""

    path: tuple[str, str, str, str]
    type_name: str | None = None
    ideal_cycle_time_s: float = 30.0
    rated_power_kw: float = 10.0
    labour_per_shift: int = 1
    measurements: tuple[tuple[str, ValueType], ...] = ()
    events: frozenset[str] = frozenset()
    timezone: str = "UTC"

    @property
    def name(self) -> str:
        return self.path[3]


def _positive(attrs: dict[str, Any], key: str, default: float, where: str) -> float:
    raw = attrs.get(key, default)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not raw > 0 or math.isinf(raw):
        raise InvalidInput(f"{where}: attribute {key} must be a positive number, got {raw!r}")
    return float(raw)


def build_profile(path: tuple[str, str, str, str], machine: MachineSpec, type_: AssetTypeSpec | None,
                  timezone: str = "UTC") -> MachineProfile:
    """A profile from the plant file: the machine's attributes override its type's."""
    where = "machine " + "/".join(path)
    attrs = {**(type_.attributes if type_ else {}), **machine.attributes}
    try:
        measurements = tuple((m.name, ValueType(m.type)) for m in (type_.measurements if type_ else ()))
    except ValueError as exc:
        raise InvalidInput(f"{where}: {exc}") from None
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"{where}: unknown time zone {timezone!r}") from None
    return MachineProfile(
        path=path,
        type_name=type_.name if type_ else None,
        ideal_cycle_time_s=_positive(attrs, "ideal_cycle_time_s", 30.0, where),
        rated_power_kw=_positive(attrs, "rated_power_kw", 10.0, where),
        labour_per_shift=int(_positive(attrs, "labour_per_shift", 1, where)),
        measurements=measurements,
        events=frozenset(type_.events if type_ else ()),
        timezone=timezone,
    )


def plant_profiles(plant: PlantSpec) -> list[MachineProfile]:
    """One profile per machine of the plant, in plant-file order."""
    types = {t.name: t for t in plant.asset_types}
    out = []
    for site in plant.sites:
        for area in site.areas:
            for line in area.lines:
                for m in line.machines:
                    path = (site.name, area.name, line.name, m.name)
                    type_ = None
                    if m.type is not None:
                        type_ = types.get(m.type)
                        if type_ is None:
                            raise InvalidInput(f"machine {'/'.join(path)}: unknown asset type {m.type!r}")
                    out.append(build_profile(path, m, type_, site.timezone))
    return out


@dataclass(slots=True)
class MachineStats:
    """Running totals, for tests and the simulator's report."""

    good: int = 0
    reject: int = 0
    orders_completed: int = 0
    state_seconds: dict[str, float] = field(default_factory=dict)


class SimMachine:
    """One simulated machine. Deterministic for a given profile, seed and sequence of steps."""

    def __init__(self, profile: MachineProfile, seed: int = 0) -> None:
        self.profile = profile
        self.rng = random.Random(f"{seed}:{'/'.join(profile.path)}")
        r = self.rng.random
        self._zone = ZoneInfo(profile.timezone)
        self._offset_s = 0.0
        self._offset_valid_until = -math.inf
        self.sim_s: float | None = None  # simulated clock, epoch seconds
        self.state = RUNNING
        self.reason: str | None = None
        self.state_left_s = math.inf
        self.order: dict[str, Any] | None = None
        self.order_seq = 0
        self.shift_id: int | None = None
        self.operators: list[str] = []
        self.progress = r()
        self.slow = 1.0
        self.slow_left_s = 0.0
        self.cooling_fault = False
        self.wear = 0.3 * r()
        self.spike_gain = 1.0
        self.spike_left_s = 0.0
        self.power = 0.0
        self.energy_kwh = 5_000.0 + 75_000.0 * r()
        self.ambient = 24.0
        self.temperature = self.ambient + TEMP_RISE_FULL * 0.8
        self.process: dict[str, float] = {}
        self.last_cycle_s = profile.ideal_cycle_time_s
        self.last_rejected = False
        self._zone_alpha = 0.0
        self.stats = MachineStats()
        self._program_code = "".join(w[:1] for w in (profile.type_name or "machine").split("_")).upper()
        self.product = PRODUCTS[0]
        self._gens = [(name, self._generator(name, vtype)) for name, vtype in profile.measurements]

    # ---- the step -------------------------------------------------------------------------------
    def step(self, ts_ms: int, dt_s: float) -> list[Message]:
        """Advance ``dt_s`` simulated seconds and return the messages to publish at ``ts_ms``."""
        if dt_s < 0:
            raise ValueError("dt_s must not be negative")
        events: list[dict[str, Any]] = []
        first = self.sim_s is None
        if self.sim_s is None:
            self.sim_s = ts_ms / 1000.0
            before: tuple[str, str | None] | None = None
        else:
            self.sim_s += dt_s
            before = (self.state, self.reason)
        local_s = self._local_seconds(self.sim_s)
        self.ambient = 24.0 + 4.0 * math.sin((local_s % 86_400 - 9 * 3600) * (2 * math.pi / 86_400))

        if first:
            self._shift_change(local_s, ts_ms, events)
            self._start_order(ts_ms, events)
            if _in_break(local_s):
                self._set(PLANNED_STOP, "break")
        good, reject = self._elapse(dt_s)
        if self.order is not None and self.order["good"] >= self.order["quantity"]:
            self._end_order(self.order, ts_ms, events)
        if not first:
            self._shift_change(local_s, ts_ms, events)
        self._transitions(local_s, ts_ms, dt_s, events)

        out: list[Message] = []
        if good or reject:
            out.append(Message(Kind.COUNT, {"ts": ts_ms, "good": good, "reject": reject, "mode": "delta"}))
        if events:
            out.append(Message(Kind.EVENT, events[0] if len(events) == 1 else events))
        if (self.state, self.reason) != before:
            state: dict[str, Any] = {"ts": ts_ms, "state": self.state}
            if self.reason:
                state["reason"] = self.reason
            out.append(Message(Kind.STATE, state))
        if self._gens:
            out.append(Message(Kind.TELEMETRY, {"ts": ts_ms, "values": {n: g() for n, g in self._gens}}))
        return out

    def _elapse(self, dt: float) -> tuple[int, int]:
        """Physics and production over the interval just elapsed, spent in the current state."""
        p = self.profile
        r = self.rng.random
        st = self.state
        running = st == RUNNING
        secs = self.stats.state_seconds
        secs[st] = secs.get(st, 0.0) + dt
        if st in _TIMED:
            self.state_left_s -= dt
        frac = 0.8 + 0.1 * (2 * r() - 1) if running else _POWER_FRACTION[st]
        if running:
            frac *= 1 + 0.1 * self.wear
        self.power = round(p.rated_power_kw * frac * (1 + 0.02 * (2 * r() - 1)), 3)
        self.energy_kwh += self.power * dt / 3600.0
        alpha = 1.0 - math.exp(-dt / TEMP_TAU_S)
        self._zone_alpha = 1.0 - math.exp(-dt / ZONE_TAU_S)
        target = self.ambient + TEMP_RISE_FULL * self.power / p.rated_power_kw
        if self.cooling_fault:
            target += COOLING_FAULT_RISE
        self.temperature += (target - self.temperature) * alpha
        if self.spike_left_s > 0:
            self.spike_left_s -= dt
            if self.spike_left_s <= 0:
                self.spike_gain = 1.0
        if self.slow_left_s > 0:
            self.slow_left_s -= dt
            if self.slow_left_s <= 0:
                self.slow = 1.0
        if not running:
            return 0, 0
        self.wear += dt * WEAR_PER_RUNNING_S
        cycle = p.ideal_cycle_time_s * self.slow
        self.progress += dt / cycle
        n = int(self.progress)
        if not n:
            return 0, 0
        self.progress -= n
        self.last_cycle_s = cycle * (1 + 0.03 * (2 * r() - 1))
        reject_p = BASE_REJECT * (1 + 2 * self.wear) * (4.0 if self.spike_gain > 1 else 1.0)
        reject = sum(1 for _ in range(n) if r() < reject_p)
        good = n - reject
        self.last_rejected = r() < reject / n
        self.stats.good += good
        self.stats.reject += reject
        if self.order is not None:
            self.order["good"] += good
            self.order["reject"] += reject
        return good, reject

    def _transitions(self, local_s: float, ts_ms: int, dt: float, events: list[dict[str, Any]]) -> None:
        if _in_break(local_s):
            if self.state != PLANNED_STOP:
                self._set(PLANNED_STOP, "break")
            return
        if self.state == PLANNED_STOP:
            self._resume(ts_ms, events)
            return
        if self.state in _TIMED and self.state_left_s <= 0:
            if self.reason == "tool_break":
                self.wear = 0.05 * self.rng.random()
                if "tool_change" in self.profile.events:
                    events.append({"ts": ts_ms, "type": "tool_change", "reason": "tool_break"})
            elif self.reason == "overheat":
                self.cooling_fault = False
            self._resume(ts_ms, events)
            return
        if self.state != RUNNING:
            return
        if self.temperature > OVERHEAT_LIMIT:
            self._set(UNPLANNED_STOP, "overheat", self._duration("overheat"))
            return
        self._hazards(dt)

    def _hazards(self, dt: float) -> None:
        """At most one random happening per step, drawn with a single uniform number."""
        rates = (
            ("jam", 1 / _MEAN_S["jam"]),
            ("tool_break", (1 + 3 * self.wear) / _MEAN_S["tool_break"]),
            ("sensor_fault", 1 / _MEAN_S["sensor_fault"]),
            ("starved", 1 / _MEAN_S["starved"]),
            ("blocked", 1 / _MEAN_S["blocked"]),
            ("idle", 1 / _MEAN_S["idle"]),
            ("cooling_fault", 1 / _MEAN_S["cooling_fault"]),
            ("slow", 1 / _MEAN_S["slow"]),
            ("spike", 1 / _MEAN_S["spike"]),
        )
        total = sum(rate for _, rate in rates)
        u = self.rng.random()
        if u >= dt * total:
            return
        u = u / dt if dt * total < 1 else u * total  # uniform in [0, total)
        what = rates[-1][0]
        for name, rate in rates:
            if u < rate:
                what = name
                break
            u -= rate
        r = self.rng.random
        if what in _STOP_STATE:
            self._set(_STOP_STATE[what], _STATE_REASON.get(what, what), self._duration(what))
        elif what == "cooling_fault":
            self.cooling_fault = True
        elif what == "slow":
            self.slow = 1.1 + 0.4 * r()
            self.slow_left_s = 180 + 540 * r()
        else:
            self.spike_gain = 3 + 3 * r()
            self.spike_left_s = 5 + 25 * r()

    # ---- helpers --------------------------------------------------------------------------------
    def _set(self, state: str, reason: str | None = None, duration: float = math.inf) -> None:
        self.state, self.reason, self.state_left_s = state, reason, duration

    def _duration(self, what: str) -> float:
        lo, hi = _DURATION_S[what]
        return lo + (hi - lo) * self.rng.random()

    def _resume(self, ts_ms: int, events: list[dict[str, Any]]) -> None:
        """Leave a stop: start the next order after a setup, or go back to running."""
        if self.state == SETUP:
            self._start_order(ts_ms, events)
            self._set(RUNNING)
        elif self.order is None:
            self._set(SETUP, "changeover", self._duration("setup"))
        else:
            self._set(RUNNING)

    def _start_order(self, ts_ms: int, events: list[dict[str, Any]]) -> None:
        r = self.rng.random
        self.order_seq += 1
        hours = 1.5 + 2.5 * r()
        quantity = max(10, int(hours * 3600 / self.profile.ideal_cycle_time_s) // 10 * 10)
        product = self.product = PRODUCTS[int(r() * len(PRODUCTS))]
        order_id = f"WO-{self.profile.name}-{self.order_seq:04d}"
        self.order = {"order_id": order_id, "product": product, "quantity": quantity, "good": 0, "reject": 0}
        events.append({"ts": ts_ms, "type": "work_order_start", "order_id": order_id, "product": product,
                       "quantity": quantity})

    def _end_order(self, o: dict[str, Any], ts_ms: int, events: list[dict[str, Any]]) -> None:
        events.append({"ts": ts_ms, "type": "work_order_end", "order_id": o["order_id"],
                       "product": o["product"], "good": o["good"], "reject": o["reject"]})
        self.order = None
        self.stats.orders_completed += 1
        self._set(SETUP, "changeover", self._duration("setup"))

    def _shift_change(self, local_s: float, ts_ms: int, events: list[dict[str, Any]]) -> None:
        shift = int((local_s - SHIFT_START_S) // SHIFT_S)
        if shift == self.shift_id:
            return
        for op in self.operators:
            events.append({"ts": ts_ms, "type": "clock_out", "operator": op})
        crew = CREWS[shift % len(CREWS)]
        name, labour = self.profile.name, self.profile.labour_per_shift
        self.operators = [f"op-{name}-{crew}{i + 1}" for i in range(labour)]
        for op in self.operators:
            events.append({"ts": ts_ms, "type": "clock_in", "operator": op, "crew": crew})
        self.shift_id = shift

    def _local_seconds(self, utc_s: float) -> float:
        if utc_s >= self._offset_valid_until or utc_s < self._offset_valid_until - 900:
            offset = self._zone.utcoffset(datetime.fromtimestamp(utc_s, UTC))
            self._offset_s = offset.total_seconds() if offset is not None else 0.0
            self._offset_valid_until = utc_s + 900
        return utc_s + self._offset_s

    # ---- telemetry values -----------------------------------------------------------------------
    def _generator(self, name: str, vtype: ValueType) -> Callable[[], Any]:
        if vtype is ValueType.BOOLEAN:
            return self._door_open
        if vtype is ValueType.STRING:
            return self._program
        fixed: dict[str, Callable[[], Any]] = {
            "power": lambda: self.power,
            "energy": lambda: round(self.energy_kwh, 6),
            "temperature": lambda: round(self.temperature + 0.3 * (2 * self.rng.random() - 1), 2),
            "vibration": self._vibration,
            "leak_rate": self._leak_rate,
            "cycle_time": lambda: round(self.last_cycle_s, 2),
        }
        if name in fixed:
            return fixed[name]
        setpoint = SETPOINTS.get(name, 10.0 + zlib.crc32(name.encode()) % 90)
        if name.endswith("_temperature"):
            return lambda: self._heated(name, setpoint)
        return lambda: self._process(setpoint)

    def _vibration(self) -> float:
        noise = 1 + 0.08 * (2 * self.rng.random() - 1)
        if self.state == RUNNING:
            return round(BASE_VIBRATION * (1 + self.wear) * self.spike_gain * noise, 3)
        return round(0.15 * noise, 3)

    def _leak_rate(self) -> float:
        r = self.rng.random()
        return round(4.0 + 5.0 * r if self.last_rejected else 0.1 + 1.2 * r * r, 3)

    def _heated(self, name: str, setpoint: float) -> float:
        """A heated zone: follows its set point with inertia, cools to ambient in planned stops."""
        value = self.process.get(name, setpoint)
        target = self.ambient if self.state == PLANNED_STOP else setpoint
        value += (target - value) * self._zone_alpha
        self.process[name] = value
        return round(value * (1 + 0.002 * (2 * self.rng.random() - 1)), 2)

    def _process(self, setpoint: float) -> float:
        r = self.rng.random()
        if self.state == RUNNING:
            return round(setpoint * (1 + 0.015 * (2 * r - 1)) * (1 + 0.03 * self.wear), 3)
        return round(setpoint * 0.05 * (1 + r), 3)

    def _door_open(self) -> bool:
        return self.state in (SETUP, UNPLANNED_STOP)

    def _program(self) -> str:
        return f"{self._program_code}-{self.product}"


def _in_break(local_s: float) -> bool:
    offset = (local_s - SHIFT_START_S) % SHIFT_S
    return any(start <= offset < start + length for start, length in BREAKS)
