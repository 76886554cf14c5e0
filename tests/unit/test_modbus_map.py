"""The register map: decoding against struct.pack (hypothesis), encoding round trips, the read planner
and validation."""

from __future__ import annotations

import itertools
import math
import struct

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.modbus_map import (
    MAX_READ_BITS,
    MAX_READ_REGISTERS,
    ModbusSpec,
    PollGroup,
    RegisterSpec,
    check_modbus,
    compile_request,
    decode_raw,
    decode_register,
    decode_request,
    encode_raw,
    encode_register,
    modbus_from_obj,
    plan_reads,
    register_count,
)

FORMATS = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "float32": "f", "float64": "d"}
ORDERS = st.sampled_from(["big", "little"])


def _device_words(kind: str, value: float, byte_order: str, word_order: str) -> list[int]:
    """The oracle: how a device lays out ``value``, built from struct's own big-endian words."""
    packed = struct.pack(">" + FORMATS[kind], value)
    words = list(struct.unpack(f">{len(packed) // 2}H", packed))  # AB CD: the Modbus default
    if word_order == "little":
        words.reverse()  # CD AB
    if byte_order == "little":
        words = [int.from_bytes(w.to_bytes(2, "big")[::-1], "big") for w in words]  # BA DC
    return words


def _values(kind: str) -> st.SearchStrategy[float]:
    if kind == "float32":
        return st.floats(width=32, allow_nan=False)
    if kind == "float64":
        return st.floats(allow_nan=False)
    bits = int(kind.removeprefix("u").removeprefix("int"))
    lo, hi = (0, 2**bits - 1) if kind.startswith("u") else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return st.integers(lo, hi)  # type: ignore[return-value]


@st.composite
def _typed_values(draw: st.DrawFn) -> tuple[str, float]:
    kind = draw(st.sampled_from(sorted(FORMATS)))
    return kind, draw(_values(kind))


@given(_typed_values(), ORDERS, ORDERS)
def test_decoding_matches_struct_for_every_type_and_order(tv: tuple[str, float], bo: str, wo: str) -> None:
    kind, value = tv
    words = _device_words(kind, value, bo, wo)
    assert len(words) == register_count(RegisterSpec("m", 0, type=kind))  # type: ignore[arg-type]
    assert decode_raw(words, kind, bo, wo) == value  # type: ignore[arg-type]
    if math.isfinite(value):  # infinities are decoded (and then refused as telemetry), never written
        assert encode_raw(value, kind, bo, wo) == words  # type: ignore[arg-type]
    else:
        with pytest.raises(ValueError):
            encode_raw(value, kind, bo, wo)  # type: ignore[arg-type]


def test_known_layouts_of_a_float32() -> None:
    # 123.456 as float32 is 0x42F6E979: the four layouts PLC manuals call ABCD, CDAB, BADC, DCBA
    assert decode_raw([0x42F6, 0xE979], "float32") == pytest.approx(123.456, rel=1e-6)
    assert decode_raw([0xE979, 0x42F6], "float32", "big", "little") == pytest.approx(123.456, rel=1e-6)
    assert decode_raw([0xF642, 0x79E9], "float32", "little", "big") == pytest.approx(123.456, rel=1e-6)
    assert decode_raw([0x79E9, 0xF642], "float32", "little", "little") == pytest.approx(123.456, rel=1e-6)


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20), ORDERS)
def test_strings_round_trip(text: str, bo: str) -> None:
    reg = RegisterSpec("program", 0, type="string", length=20, byte_order=bo)  # type: ignore[arg-type]
    words = encode_register(reg, text)
    assert len(words) == 10
    assert decode_register(reg, words) == text
    packed = b"".join(w.to_bytes(2, "big" if bo == "big" else "little") for w in words)
    assert packed.rstrip(b"\x00") == text.encode()


@given(st.integers(-32768, 32767), st.sampled_from([0.1, 0.5, 2.0, -1.0]), st.sampled_from([0.0, -40.0, 7.5]))
def test_scale_and_offset_apply_and_invert(raw: int, scale: float, offset: float) -> None:
    reg = RegisterSpec("t", 0, type="int16", scale=scale, offset=offset)
    value = decode_register(reg, encode_raw(raw, "int16"))
    assert value == pytest.approx(raw * scale + offset)
    assert decode_raw(encode_register(reg, value), "int16") == raw


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValueError):
        decode_register(RegisterSpec("t", 0, type="float32"), [0x7FC0, 0x0000])  # NaN
    with pytest.raises(ValueError):
        encode_register(RegisterSpec("t", 0, type="uint16"), 70_000)
    with pytest.raises(ValueError):
        encode_register(RegisterSpec("t", 0, type="int16", scale=0.1), 1.234)  # not a multiple of 0.1
    with pytest.raises(ValueError):
        encode_register(RegisterSpec("t", 0, type="int16"), "7")
    with pytest.raises(ValueError):
        encode_register(RegisterSpec("s", 0, type="string", length=2), "abc")


def _reg(address: int, kind: str = "uint16", table: str = "holding", length: int = 0) -> RegisterSpec:
    return RegisterSpec(f"m{table}{address}", address, table=table, type=kind, length=length)  # type: ignore[arg-type]


def test_planner_merges_contiguous_registers_per_table() -> None:
    regs = [_reg(0), _reg(1, "float32"), _reg(3), _reg(10), _reg(0, "uint16", "input"), _reg(5, "bool", "coil"),
            _reg(6, "bool", "coil")]
    plan = plan_reads(regs)
    assert [(r.table, r.address, r.count) for r in plan] == [
        ("coil", 5, 2), ("holding", 0, 4), ("holding", 10, 1), ("input", 0, 1)]
    assert [(reg.address, off) for reg, off in plan[1].items] == [(0, 0), (1, 1), (3, 3)]
    # with a gap of up to 6 the lone register at 10 joins the first read
    assert [(r.address, r.count) for r in plan_reads(regs[:4], max_gap=6)] == [(0, 11)]


def test_planner_keeps_overlapping_registers_in_one_read() -> None:
    plan = plan_reads([_reg(0, "uint32"), _reg(1, "uint16")])
    assert [(r.address, r.count, len(r.items)) for r in plan] == [(0, 2, 2)]


@given(st.lists(st.tuples(st.integers(0, 3000), st.sampled_from(["uint16", "float64", "int32", "string"])),
                min_size=1, max_size=200), st.integers(0, 20))
def test_planner_serves_every_register_within_limits(specs: list[tuple[int, str]], gap: int) -> None:
    regs = [_reg(a, k, length=30 if k == "string" else 0) for a, k in specs]
    bits = [_reg(a, "bool", "coil") for a, _ in specs]
    plan = plan_reads(regs + bits, max_gap=gap)
    served = []
    for req in plan:
        assert req.count <= (MAX_READ_BITS if req.table == "coil" else MAX_READ_REGISTERS)
        for reg, off in req.items:
            assert reg.address == req.address + off
            assert off + register_count(reg) <= req.count
            served.append(reg)
    assert sorted(served, key=id) == sorted(regs + bits, key=id)
    for a, b in itertools.pairwise(plan):  # merged as far as the gap and the limit allow
        if a.table == b.table:
            assert b.address > a.address + a.count + gap or b.address + b.count - a.address > MAX_READ_REGISTERS \
                or a.table == "coil"


def _spec(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {"host": "10.0.0.5", "asset": "s/a/l/m",
                               "groups": [{"name": "fast", "interval_s": 0.5, "registers": [
                                   {"measurement": "temperature", "address": 0, "type": "int16", "scale": 0.1}]}]}
    base.update(kw)
    return base


def test_spec_reads_from_yaml_values() -> None:
    spec = modbus_from_obj(_spec())
    assert spec.groups[0].registers[0].scale == 0.1 and spec.label == "10.0.0.5:502/1"
    assert msgspec.to_builtins(spec)["groups"][0]["name"] == "fast"


@pytest.mark.parametrize(("change", "message"), [
    ({"port": 0}, "port 0"),
    ({"groups": []}, "no polling groups"),
    ({"asset": ""}, "no asset"),
    ({"asset": "s/a/l"}, "not a machine path"),
    ({"groups": [{"registers": [{"measurement": "t", "address": 0, "table": "coil", "type": "int16"}]}]}, "bool"),
    ({"groups": [{"registers": [{"measurement": "t", "address": 0, "type": "string"}]}]}, "length"),
    ({"groups": [{"registers": [{"measurement": "t", "address": 65535, "type": "int32"}]}]}, "65535"),
    ({"groups": [{"registers": [{"measurement": "t", "address": 0, "scale": 0}]}]}, "scale"),
    ({"groups": [{"registers": [{"measurement": "t", "address": 0, "table": "input", "writable": True}]}]},
     "written"),
    ({"groups": [{"registers": [{"measurement": "t", "address": 0}, {"measurement": "t", "address": 4}]}]},
     "already fed"),
    ({"groups": [{"interval_s": 0, "registers": [{"measurement": "t", "address": 0}]}]}, "interval_s"),
    ({"colour": "red"}, "unknown field"),
    ({"groups": [{"registers": [{"measurement": "t", "address": 0, "type": "int8"}]}]}, "int8"),
])
def test_bad_maps_are_refused_with_a_reason(change: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        modbus_from_obj(_spec(**change), "device 'plc'")


def test_default_asset_stands_in() -> None:
    spec = ModbusSpec("h", [PollGroup([RegisterSpec("t", 0)])])
    check_modbus(spec, "x", default_asset="s/a/l/m")
    with pytest.raises(InvalidInput):
        check_modbus(spec, "x")


@given(st.lists(st.tuples(st.sampled_from(sorted(FORMATS)), ORDERS, ORDERS), min_size=1, max_size=12),
       st.data())
def test_the_fast_request_decoder_agrees_with_the_register_decoder(
        layout: list[tuple[str, str, str]], data: st.DataObject) -> None:
    regs, words_on_device, address = [], [], 0
    for i, (kind, bo, wo) in enumerate(layout):
        reg = RegisterSpec(f"m{i}", address, type=kind, byte_order=bo, word_order=wo, scale=0.5)  # type: ignore[arg-type]
        value = data.draw(_values(kind))
        words_on_device += _device_words(kind, value, bo, wo)
        regs.append(reg)
        address += register_count(reg)
    [request] = plan_reads(regs)
    fast = decode_request(request, words_on_device)
    assert compile_request(request)(words_on_device) == fast
    for (reg, off), got in zip(request.items, fast, strict=True):
        try:
            want: object = decode_register(reg, words_on_device[off:off + register_count(reg)])
        except ValueError:
            want = None
        assert got == want
    coils = plan_reads([RegisterSpec("c", 3, table="coil", type="bool")])[0]
    assert decode_request(coils, [1]) == [True] == compile_request(coils)([1])


@given(st.lists(st.tuples(st.integers(0, 40), st.sampled_from(sorted(FORMATS)), st.sampled_from([1.0, 0.1, -2.0]),
                          st.sampled_from([0.0, 5.0])), min_size=1, max_size=20),
       st.lists(st.integers(0, 65535), min_size=125, max_size=125))
def test_a_compiled_read_with_gaps_decodes_like_the_reference(
        specs: list[tuple[int, str, float, float]], words_on_device: list[int]) -> None:
    regs = [RegisterSpec(f"m{i}", a, type=k, scale=sc, offset=of)  # type: ignore[arg-type]
            for i, (a, k, sc, of) in enumerate(specs)]
    for request in plan_reads(regs, max_gap=10):
        chunk = words_on_device[:request.count]
        assert compile_request(request)(chunk) == decode_request(request, chunk)
