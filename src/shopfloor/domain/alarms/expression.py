"""A small, safe expression language for rules over several measurements of one asset.

Numbers, measurement names, ``+ - * /``, comparisons ``< <= > >= == !=``, ``and or not``,
parentheses and the functions ``abs``, ``min``, ``max``. Measurement names are written as they are
(``temperature``), or in backticks when they hold a ``-`` or start with a digit (`` `flow-in` ``).
The result must be a condition (a comparison, or ``and``/``or``/``not`` of them)::

    temperature > 80 and abs(current - 5.5) > 2 or max(vib_x, vib_y) >= 7.1

The text is read by our own tokenizer and recursive-descent parser into closures; nothing is ever
handed to Python's ``eval``/``exec``. Types are checked when parsing (no ``1 and 2``, no
``temperature`` alone as a condition), sizes are bounded (length, tokens, nesting), and every
rejection says where and why. A division by zero, or an operation giving no finite number, makes
the whole expression *undefined* for that sample (``evaluate`` returns ``None``): the alarm's
condition does not change on it.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from shopfloor.domain.errors import InvalidInput

MAX_CHARS = 1000
MAX_TOKENS = 300
MAX_DEPTH = 32
MAX_NAMES = 16
MAX_ARGS = 16

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<quoted>`[A-Za-z0-9_-]{1,63}`)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><=|>=|==|!=|[-+*/(),<>])
""", re.X)
_KEYWORDS = frozenset({"and", "or", "not"})
_FUNCTIONS = frozenset({"abs", "min", "max"})
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
}

Values = Mapping[str, float]
_Fn = Callable[[Values], Any]  # a number or a condition; _Parser.want checks which before combining
_Node = tuple[str, _Fn]  # ("num" | "bool", function of the values)


class _Undefined(Exception):
    """A division by zero or a non-finite result: the expression has no value for these inputs."""


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # num, name, quoted, op, kw, end
    text: str
    pos: int


@dataclass(frozen=True, slots=True)
class Expression:
    """A parsed condition: the measurements it reads and a function of their latest values."""

    source: str
    names: tuple[str, ...]
    _fn: _Fn

    def evaluate(self, values: Values) -> bool | None:
        """True or false, or None when a name has no value yet or the arithmetic is undefined."""
        for n in self.names:
            if n not in values:
                return None
        try:
            return bool(self._fn(values))
        except _Undefined:
            return None


def _fail(source: str, pos: int, why: str) -> InvalidInput:
    return InvalidInput(f"expression {source[:80]!r}: {why} at position {pos + 1}")


def tokenize(source: str) -> list[_Tok]:
    if not isinstance(source, str):
        raise InvalidInput("an expression must be a string")
    if len(source) > MAX_CHARS:
        raise InvalidInput(f"expressions are at most {MAX_CHARS} characters (this one has {len(source)})")
    toks: list[_Tok] = []
    pos = 0
    while pos < len(source):
        m = _TOKEN.match(source, pos)
        if m is None:
            raise _fail(source, pos, f"unexpected character {source[pos]!r}")
        kind = m.lastgroup or ""
        text = m.group()
        if kind != "ws":
            if kind == "name" and text in _KEYWORDS:
                kind = "kw"
            elif kind == "quoted":
                kind, text = "name", text[1:-1]
            toks.append(_Tok(kind, text, pos))
            if len(toks) > MAX_TOKENS:
                raise InvalidInput(f"expressions are at most {MAX_TOKENS} tokens long")
        pos = m.end()
    toks.append(_Tok("end", "", len(source)))
    return toks


def _finite(x: float) -> float:
    if math.isfinite(x):
        return x
    raise _Undefined


def _div(a: float, b: float) -> float:
    if b == 0:
        raise _Undefined
    return _finite(a / b)


def _or(a: _Fn, b: _Fn) -> _Fn:
    return lambda v: bool(a(v)) or bool(b(v))


def _and(a: _Fn, b: _Fn) -> _Fn:
    return lambda v: bool(a(v)) and bool(b(v))


def _not(a: _Fn) -> _Fn:
    return lambda v: not a(v)


def _cmp(op: Callable[[float, float], bool], a: _Fn, b: _Fn) -> _Fn:
    return lambda v: op(a(v), b(v))


def _arith(op: Callable[[float, float], float], a: _Fn, b: _Fn) -> _Fn:
    return lambda v: _finite(op(a(v), b(v)))


def _neg(a: _Fn) -> _Fn:
    return lambda v: -a(v)


def _abs(a: _Fn) -> _Fn:
    return lambda v: abs(a(v))


def _const(x: float) -> _Fn:
    return lambda v: x


def _name(name: str) -> _Fn:
    return lambda v: v[name]


def _pick(pick: Callable[[list[float]], float], fs: tuple[_Fn, ...]) -> _Fn:
    return lambda v: pick([f(v) for f in fs])


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.toks = tokenize(source)
        self.i = 0
        self.depth = 0
        self.names: dict[str, None] = {}

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def expect(self, text: str) -> None:
        t = self.take()
        if t.text != text or t.kind not in ("op", "kw"):
            raise _fail(self.source, t.pos, f"expected {text!r} but found {t.text or 'the end'!r}")

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _fail(self.source, self.tok.pos, f"nested deeper than {MAX_DEPTH} levels")

    # each level returns ("num", fn) or ("bool", fn)
    def parse(self) -> _Fn:
        kind, fn = self.or_()
        t = self.tok
        if t.kind != "end":
            raise _fail(self.source, t.pos, f"unexpected {t.text!r}")
        if kind != "bool":
            raise InvalidInput(f"expression {self.source[:80]!r}: the result must be a condition (a comparison such "
                               "as 'temperature > 80', or and/or/not of them), not a number")
        return fn

    def want(self, kind: str, got: _Node, pos: int, what: str) -> None:
        if got[0] != kind:
            need = "a condition" if kind == "bool" else "a number"
            raise _fail(self.source, pos, f"{what} needs {need}")

    def or_(self) -> _Node:
        pos = self.tok.pos
        left = self.and_()
        while self.tok.kind == "kw" and self.tok.text == "or":
            op = self.take()
            right = self.and_()
            self.want("bool", left, pos, "'or'")
            self.want("bool", right, op.pos, "'or'")
            lf, rf = left[1], right[1]
            left = ("bool", _or(lf, rf))
        return left

    def and_(self) -> _Node:
        pos = self.tok.pos
        left = self.not_()
        while self.tok.kind == "kw" and self.tok.text == "and":
            op = self.take()
            right = self.not_()
            self.want("bool", left, pos, "'and'")
            self.want("bool", right, op.pos, "'and'")
            lf, rf = left[1], right[1]
            left = ("bool", _and(lf, rf))
        return left

    def not_(self) -> _Node:
        if self.tok.kind == "kw" and self.tok.text == "not":
            op = self.take()
            self.enter()
            inner = self.not_()
            self.depth -= 1
            self.want("bool", inner, op.pos, "'not'")
            f = inner[1]
            return ("bool", _not(f))
        return self.compare()

    def compare(self) -> _Node:
        pos = self.tok.pos
        left = self.sum_()
        if self.tok.kind == "op" and self.tok.text in _COMPARE:
            op = self.take()
            right = self.sum_()
            self.want("num", left, pos, f"{op.text!r}")
            self.want("num", right, op.pos, f"{op.text!r}")
            if self.tok.kind == "op" and self.tok.text in _COMPARE:
                raise _fail(self.source, self.tok.pos, "comparisons do not chain: write 'a < b and b < c'")
            cmp = _COMPARE[op.text]
            lf, rf = left[1], right[1]
            return ("bool", _cmp(cmp, lf, rf))
        return left

    def sum_(self) -> _Node:
        pos = self.tok.pos
        left = self.term()
        while self.tok.kind == "op" and self.tok.text in "+-":
            op = self.take()
            right = self.term()
            self.want("num", left, pos, f"{op.text!r}")
            self.want("num", right, op.pos, f"{op.text!r}")
            lf, rf = left[1], right[1]
            left = ("num", _arith(operator.add if op.text == "+" else operator.sub, lf, rf))
        return left

    def term(self) -> _Node:
        pos = self.tok.pos
        left = self.unary()
        while self.tok.kind == "op" and self.tok.text in "*/":
            op = self.take()
            right = self.unary()
            self.want("num", left, pos, f"{op.text!r}")
            self.want("num", right, op.pos, f"{op.text!r}")
            lf, rf = left[1], right[1]
            left = ("num", _arith(operator.mul if op.text == "*" else _div, lf, rf))
        return left

    def unary(self) -> _Node:
        if self.tok.kind == "op" and self.tok.text in "+-":
            op = self.take()
            self.enter()
            inner = self.unary()
            self.depth -= 1
            self.want("num", inner, op.pos, f"unary {op.text!r}")
            f = inner[1]
            return inner if op.text == "+" else ("num", _neg(f))
        return self.atom()

    def atom(self) -> _Node:
        t = self.take()
        if t.kind == "num":
            try:
                x = float(t.text)
            except ValueError:  # pragma: no cover - the token pattern admits only valid numbers
                raise _fail(self.source, t.pos, f"bad number {t.text!r}") from None
            if not math.isfinite(x):
                raise _fail(self.source, t.pos, f"number {t.text!r} is too large")
            return ("num", _const(x))
        if t.kind == "op" and t.text == "(":
            self.enter()
            inner = self.or_()
            self.depth -= 1
            self.expect(")")
            return inner
        if t.kind == "name" and self.tok.kind == "op" and self.tok.text == "(":
            return self.call(t)
        if t.kind == "name":
            self.names[t.text] = None
            if len(self.names) > MAX_NAMES:
                raise _fail(self.source, t.pos, f"an expression reads at most {MAX_NAMES} measurements")
            name = t.text
            return ("num", _name(name))
        if t.kind == "end":
            raise _fail(self.source, t.pos, "the expression ends too early")
        raise _fail(self.source, t.pos, f"unexpected {t.text!r}")

    def call(self, t: _Tok) -> _Node:
        if t.text not in _FUNCTIONS:
            raise _fail(self.source, t.pos, f"unknown function {t.text!r} (there are: abs, min, max)")
        self.expect("(")
        self.enter()
        args: list[_Fn] = []
        while True:
            pos = self.tok.pos
            arg = self.or_()
            self.want("num", arg, pos, f"{t.text}()")
            args.append(arg[1])
            if len(args) > MAX_ARGS:
                raise _fail(self.source, pos, f"{t.text}() takes at most {MAX_ARGS} arguments")
            if self.tok.kind == "op" and self.tok.text == ",":
                self.take()
                continue
            break
        self.expect(")")
        self.depth -= 1
        if t.text == "abs":
            if len(args) != 1:
                raise _fail(self.source, t.pos, "abs() takes one argument")
            f = args[0]
            return ("num", _abs(f))
        if len(args) < 2:
            raise _fail(self.source, t.pos, f"{t.text}() takes two or more arguments")
        pick = min if t.text == "min" else max
        fs = tuple(args)
        return ("num", _pick(pick, fs))


def parse_expression(source: str) -> Expression:
    """Parse and type-check ``source``; ``InvalidInput`` says what is wrong and where."""
    p = _Parser(source)
    fn = p.parse()
    if not p.names:
        raise InvalidInput(f"expression {source[:80]!r} reads no measurement")
    return Expression(source, tuple(p.names), fn)
