"""A Modbus TCP device's register map (the plant file's ``modbus`` section), its decoding and read plan.

A device is polled at ``host:port`` as unit ``unit``. Its registers sit in polling groups, each
read every ``interval_s``. A register names a table (``holding``, ``input``, ``coil``,
``discrete``), an address (0-based, as on the wire), a type, the byte and word order, a scale and
offset, and the machine measurement it feeds (``asset`` path ``site/area/line/machine`` and
``measurement``).

Values are decoded from raw 16-bit register words by the pure functions here (``decode_words``,
``encode_value``), not by the protocol library. ``plan_reads`` merges registers of one table that
are contiguous (or at most ``max_gap`` registers apart) into one request within Modbus's limits:
125 registers or 2000 bits per read.

Byte and word order: the value's big-endian bytes ``A B C D`` (a float32 or int32) lie in two
registers as ``AB CD`` with ``byte_order: big, word_order: big`` (the Modbus default), ``CD AB``
with word order little, ``BA DC`` with byte order little, ``DC BA`` with both little. Strings are
characters in register order, the first of each pair in the high byte (byte order big) or the low
byte (little); word order does not apply to them.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import msgspec

from shopfloor.domain.errors import InvalidInput

Table = Literal["holding", "input", "coil", "discrete"]
ValueKind = Literal["int16", "uint16", "int32", "uint32", "float32", "float64", "string", "bool"]
Order = Literal["big", "little"]

MAX_READ_REGISTERS = 125  # function codes 3 and 4
MAX_READ_BITS = 2000  # function codes 1 and 2
MAX_STRING_BYTES = 2 * MAX_READ_REGISTERS
BIT_TABLES = frozenset({"coil", "discrete"})
WRITABLE_TABLES = frozenset({"holding", "coil"})

#: struct format (big-endian) and register count of each numeric type
_FORMATS: dict[str, tuple[str, int]] = {
    "int16": (">h", 1), "uint16": (">H", 1), "int32": (">i", 2), "uint32": (">I", 2),
    "float32": (">f", 2), "float64": (">d", 4),
}
_INT_RANGES: dict[str, tuple[int, int]] = {
    "int16": (-(2**15), 2**15 - 1), "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1), "uint32": (0, 2**32 - 1),
}


class RegisterSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, frozen=True):
    """One value of the device: where it lies, how to decode it, which measurement it feeds."""

    measurement: str
    address: int
    table: Table = "holding"
    type: ValueKind = "uint16"  # coils and discrete inputs: bool
    length: int = 0  # string: its length in bytes (two per register)
    byte_order: Order = "big"
    word_order: Order = "big"
    scale: float = 1.0  # numeric value = raw * scale + offset
    offset: float = 0.0
    asset: str = ""  # machine path; default: the device's ``asset``
    writable: bool = False  # commands may write it (holding registers and coils only)


class PollGroup(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, frozen=True):
    """Registers read together every ``interval_s`` seconds."""

    registers: list[RegisterSpec]
    name: str = "default"
    interval_s: float = 1.0


class ModbusSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, frozen=True):
    """How to poll one Modbus TCP device (unit) and what its registers mean."""

    host: str
    groups: list[PollGroup]
    port: int = 502
    unit: int = 1
    timeout_s: float = 1.0  # per request
    retries: int = 1  # further attempts after a timeout
    max_gap: int = 0  # registers (or bits) a merged read may skip between two wanted ones
    asset: str = ""  # the machine of registers that name none
    name: str = ""  # for counters and logs; default host:port/unit

    @property
    def label(self) -> str:
        return self.name or f"{self.host}:{self.port}/{self.unit}"


def register_count(reg: RegisterSpec) -> int:
    """Registers (or bits, for coils and discrete inputs) the value occupies."""
    if reg.type == "bool":
        return 1
    if reg.type == "string":
        return (reg.length + 1) // 2
    return _FORMATS[reg.type][1]


def asset_of(reg: RegisterSpec, spec: ModbusSpec) -> str:
    return reg.asset or spec.asset


def registers_of(spec: ModbusSpec) -> list[RegisterSpec]:
    return [r for g in spec.groups for r in g.registers]


# -- decoding and encoding ---------------------------------------------------------------------------

def _swap(word: int) -> int:
    return ((word & 0xFF) << 8) | (word >> 8)


def words_to_bytes(words: Sequence[int], byte_order: Order, word_order: Order) -> bytes:
    """The value's bytes in big-endian order from its registers as they lie on the device."""
    ordered = list(words) if word_order == "big" else list(reversed(words))
    if byte_order == "little":
        ordered = [_swap(w) for w in ordered]
    return b"".join(w.to_bytes(2, "big") for w in ordered)


def bytes_to_words(data: bytes, byte_order: Order, word_order: Order) -> list[int]:
    """The inverse of ``words_to_bytes``: registers to write for the big-endian bytes ``data``."""
    words = [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]
    if byte_order == "little":
        words = [_swap(w) for w in words]
    return words if word_order == "big" else list(reversed(words))


def decode_raw(words: Sequence[int], kind: str, byte_order: Order = "big", word_order: Order = "big",
               length: int = 0) -> int | float | str:
    """A register value before scaling: an int, a float or a string."""
    if kind == "string":
        data = words_to_bytes(words, byte_order, "big")[:length]
        return data.split(b"\x00", 1)[0].decode("utf-8", errors="replace")
    fmt, count = _FORMATS[kind]
    if len(words) != count:
        raise ValueError(f"{kind} takes {count} register(s), got {len(words)}")
    value: int | float = struct.unpack(fmt, words_to_bytes(words, byte_order, word_order))[0]
    return value


def decode_register(reg: RegisterSpec, words: Sequence[int]) -> float | str:
    """The measurement's value from the register's words: scaled numbers, or a string.

    Raises ``ValueError`` for a float that is not finite (NaN or infinity), which has no place in
    telemetry.
    """
    raw = decode_raw(words, reg.type, reg.byte_order, reg.word_order, reg.length)
    if isinstance(raw, str):
        return raw
    value = raw * reg.scale + reg.offset
    if not math.isfinite(value):
        raise ValueError(f"{reg.measurement}: not a finite number")
    return float(value)


def encode_raw(value: int | float | str, kind: str, byte_order: Order = "big", word_order: Order = "big",
               length: int = 0) -> list[int]:
    """Register words holding ``value`` (the inverse of ``decode_raw``); ValueError when it does not fit."""
    if kind == "string":
        if not isinstance(value, str):
            raise ValueError("expected a string")
        data = value.encode("utf-8")
        if len(data) > length:
            raise ValueError(f"{len(data)} bytes do not fit in {length}")
        data = data.ljust(2 * ((length + 1) // 2), b"\x00")
        return bytes_to_words(data, byte_order, "big")
    fmt, _ = _FORMATS[kind]
    if kind in _INT_RANGES:
        lo, hi = _INT_RANGES[kind]
        if isinstance(value, str) or not float(value).is_integer() or not lo <= value <= hi:
            raise ValueError(f"{value!r} is not an {kind} ({lo}..{hi})")
        value = int(value)
    elif isinstance(value, str) or not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number")
    try:
        data = struct.pack(fmt, value)
    except (struct.error, OverflowError) as exc:
        raise ValueError(f"{value!r} does not fit a {kind}: {exc}") from None
    return bytes_to_words(data, byte_order, word_order)


def encode_register(reg: RegisterSpec, value: float | bool | str) -> list[int]:
    """Words to write so that the register reads back as ``value`` (scale and offset undone)."""
    if reg.type == "string":
        if not isinstance(value, str):
            raise ValueError(f"{reg.measurement}: expected a string")
        return encode_raw(value, "string", reg.byte_order, reg.word_order, reg.length)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{reg.measurement}: expected a number")
    raw: float = (value - reg.offset) / reg.scale
    if reg.type in _INT_RANGES:
        rounded = round(raw)
        if abs(rounded - raw) > 1e-6 * max(1.0, abs(raw)):
            raise ValueError(f"{reg.measurement}: {value!r} is not a multiple of the scale {reg.scale}")
        return encode_raw(rounded, reg.type, reg.byte_order, reg.word_order)
    return encode_raw(raw, reg.type, reg.byte_order, reg.word_order)


def decode_request(request: ReadRequest, words: Sequence[int]) -> list[float | bool | str | None]:
    """The values of a read's registers, in ``request.items`` order; None where a value does not
    decode (a float that is not finite). Same results as ``decode_register`` item by item, with a
    fast path for numbers in the default byte and word order."""
    if request.table in BIT_TABLES:
        return [bool(words[offset]) for _, offset in request.items]
    data = _WORDS.get(len(words)) or struct.Struct(f">{len(words)}H")
    packed = data.pack(*words)
    out: list[float | bool | str | None] = []
    for reg, offset in request.items:
        fast = _STRUCTS.get(reg.type) if reg.byte_order == "big" and reg.word_order == "big" else None
        if fast is not None:
            value = fast.unpack_from(packed, 2 * offset)[0] * reg.scale + reg.offset
            out.append(float(value) if math.isfinite(value) else None)
            continue
        try:
            out.append(decode_register(reg, words[offset:offset + register_count(reg)]))
        except ValueError:
            out.append(None)
    return out


def compile_request(request: ReadRequest) -> Callable[[Sequence[int]], list[float | bool | str | None]]:
    """A decoder of ``request``'s response, made once per read plan: the same results as
    ``decode_request``, with one ``struct`` unpack for a whole read of numbers in the default order."""
    if request.table in BIT_TABLES:
        offsets = [offset for _, offset in request.items]
        return lambda words: [bool(words[o]) for o in offsets]
    fmt, end = [">"], 0
    for reg, offset in request.items:
        if reg.type not in _STRUCTS or reg.byte_order != "big" or reg.word_order != "big" or offset < end:
            return lambda words: decode_request(request, words)
        if offset > end:
            fmt.append(f"{2 * (offset - end)}x")
        fmt.append(_FORMATS[reg.type][0][1:])
        end = offset + register_count(reg)
    whole = struct.Struct("".join(fmt))
    words_fmt = _WORDS[request.count]
    plain = all(r.scale == 1.0 and r.offset == 0.0 for r, _ in request.items)
    scales = [(r.scale, r.offset) for r, _ in request.items]
    floats = any(r.type.startswith("float") for r, _ in request.items)

    def decode(words: Sequence[int]) -> list[float | bool | str | None]:
        raw = whole.unpack_from(words_fmt.pack(*words))
        values: list[float] = ([float(v) for v in raw] if plain
                               else [v * s + o for v, (s, o) in zip(raw, scales, strict=True)])
        if floats or not plain:
            return [v if math.isfinite(v) else None for v in values]
        return list(values)

    return decode


_STRUCTS = {kind: struct.Struct(fmt) for kind, (fmt, _) in _FORMATS.items()}
_WORDS = {n: struct.Struct(f">{n}H") for n in range(1, MAX_READ_REGISTERS + 1)}


# -- the read planner ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One Modbus read: ``count`` registers (or bits) of ``table`` from ``address``; ``items`` are
    the registers it serves with their offset into the response."""

    table: str
    address: int
    count: int
    items: tuple[tuple[RegisterSpec, int], ...]


def plan_reads(registers: Iterable[RegisterSpec], max_gap: int = 0) -> list[ReadRequest]:
    """Merge registers into as few reads as the limits allow.

    Registers of one table whose ranges overlap, touch or are at most ``max_gap`` apart share a
    read while the read stays within 125 registers (2000 bits). Requests come out ordered by table
    and address.
    """
    out: list[ReadRequest] = []
    by_table: dict[str, list[RegisterSpec]] = {}
    for reg in registers:
        by_table.setdefault(reg.table, []).append(reg)
    for table in sorted(by_table):
        limit = MAX_READ_BITS if table in BIT_TABLES else MAX_READ_REGISTERS
        regs = sorted(by_table[table], key=lambda r: (r.address, register_count(r)))
        start = end = -1
        members: list[RegisterSpec] = []
        for reg in regs:
            n = register_count(reg)
            if members and reg.address - end <= max_gap and max(end, reg.address + n) - start <= limit:
                members.append(reg)
                end = max(end, reg.address + n)
                continue
            if members:
                out.append(_request(table, start, end, members))
            start, end, members = reg.address, reg.address + n, [reg]
        if members:
            out.append(_request(table, start, end, members))
    return out


def _request(table: str, start: int, end: int, members: list[RegisterSpec]) -> ReadRequest:
    return ReadRequest(table, start, end - start, tuple((r, r.address - start) for r in members))


# -- validation ---------------------------------------------------------------------------------------

def modbus_from_obj(obj: object, where: str = "modbus") -> ModbusSpec:
    """Read and check a ``modbus`` section (JSON values); raises ``InvalidInput`` naming ``where``."""
    try:
        spec = msgspec.convert(obj, ModbusSpec)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"{where}: {exc}") from None
    check_modbus(spec, where)
    return spec


def check_modbus(spec: ModbusSpec, where: str, default_asset: str = "") -> None:
    """Everything about the map that can be checked without the registry; ``InvalidInput`` otherwise.

    ``default_asset`` stands in for an empty ``asset`` (the plant file's device binds one machine).
    """
    if not spec.host:
        raise InvalidInput(f"{where}: host is empty")
    if not 1 <= spec.port <= 65535:
        raise InvalidInput(f"{where}: port {spec.port} is not 1..65535")
    if not 0 <= spec.unit <= 255:
        raise InvalidInput(f"{where}: unit {spec.unit} is not 0..255")
    if not (math.isfinite(spec.timeout_s) and spec.timeout_s > 0):
        raise InvalidInput(f"{where}: timeout_s must be a positive number of seconds")
    if not 0 <= spec.retries <= 10:
        raise InvalidInput(f"{where}: retries {spec.retries} is not 0..10")
    if not 0 <= spec.max_gap <= MAX_READ_REGISTERS:
        raise InvalidInput(f"{where}: max_gap {spec.max_gap} is not 0..{MAX_READ_REGISTERS}")
    if not spec.groups:
        raise InvalidInput(f"{where}: no polling groups")
    seen: dict[tuple[str, str], str] = {}
    names: set[str] = set()
    for group in spec.groups:
        gw = f"{where}: group {group.name!r}"
        if group.name in names:
            raise InvalidInput(f"{gw}: the name is used twice")
        names.add(group.name)
        if not (math.isfinite(group.interval_s) and 0.01 <= group.interval_s <= 86_400):
            raise InvalidInput(f"{gw}: interval_s must be 0.01..86400 seconds")
        if not group.registers:
            raise InvalidInput(f"{gw}: no registers")
        for reg in group.registers:
            asset = reg.asset or spec.asset or default_asset
            rw = f"{gw}: register {reg.measurement!r} at {reg.table} {reg.address}"
            _check_register(reg, rw)
            if len([p for p in asset.split("/") if p]) != 4:
                raise InvalidInput(f"{rw}: asset {asset!r} is not a machine path site/area/line/machine"
                                   if asset else f"{rw}: no asset (set the register's or the device's 'asset')")
            key = (asset, reg.measurement)
            if key in seen:
                raise InvalidInput(f"{rw}: {asset} {reg.measurement} is already fed by {seen[key]}")
            seen[key] = f"{reg.table} {reg.address}"


def _check_register(reg: RegisterSpec, where: str) -> None:
    if not reg.measurement:
        raise InvalidInput(f"{where}: measurement is empty")
    bits = reg.table in BIT_TABLES
    if bits != (reg.type == "bool"):
        raise InvalidInput(f"{where}: coils and discrete inputs are bool; registers are int16, uint16, int32, "
                           f"uint32, float32, float64 or string, not {reg.type}")
    if reg.type == "string" and not 1 <= reg.length <= MAX_STRING_BYTES:
        raise InvalidInput(f"{where}: a string needs a length of 1..{MAX_STRING_BYTES} bytes")
    if reg.type != "string" and reg.length:
        raise InvalidInput(f"{where}: length applies to strings only")
    if not reg.address >= 0 or reg.address + register_count(reg) > 65536:
        raise InvalidInput(f"{where}: the address must be 0..65535 and the value end by 65535")
    if not (math.isfinite(reg.scale) and math.isfinite(reg.offset)) or reg.scale == 0:
        raise InvalidInput(f"{where}: scale must be a finite non-zero number and offset finite")
    if reg.writable and reg.table not in WRITABLE_TABLES:
        raise InvalidInput(f"{where}: only holding registers and coils can be written")
