"""A small, safe dimension algebra for tensor shapes such as `[B, n, d_model]` or `(H // P) * (W // P)`.

Canonical form: a `Dim` is a polynomial with integer coefficients, stored as a sorted tuple of
`(monomial, coeff)` pairs with every coefficient nonzero. A monomial is a sorted tuple of
`(atom, power)` pairs; an atom is a symbol name (`str`) or an opaque `FloorDiv(num, den)` /
`Mod(num, den)` term standing for a quotient or remainder that cannot be simplified exactly.
Because the atoms' own `num`/`den` are canonical Dims, and every constructor normalizes
(expand products, merge like terms, drop zeros, reduce exact divisions, normalize signs and
common factors of opaque terms), structurally equal forms mean equal expressions:
`3*T // 3 == T`, `(a + b)*2 == 2*a + 2*b`, `(4*T + 2) // 2 == 2*T + 1`.

Opaque terms assume integer symbols and a nonzero denominator (e.g. `(2*n) // n == 2`).
`/` is exact division: like `//` when exact; for two constants that do not divide it is an error,
and for symbolic operands it falls back to the opaque `FloorDiv` atom.

Text is parsed by our own tokenizer and precedence-climbing parser: never `eval`.
"""
from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass
from math import gcd
from typing import Mapping, Union

MAX_TEXT = 200
MAX_DEPTH = 32
MAX_LITERAL = 10**15
MAX_VALUE = 10**18
MAX_TERMS = 4096  # bounds the cost of expanding products like `(a + b + c)*(a + b + c)*...`


class DimError(ValueError):
    """A dimension error; `offset` is the 0-based character offset in the source text, if known."""

    def __init__(self, message: str, offset: int | None = None):
        super().__init__(message)
        self.message = message
        self.offset = offset


@dataclass(frozen=True)
class FloorDiv:
    num: "Dim"
    den: "Dim"

    def __str__(self) -> str:
        return f"{self.num._operand_str()} // {self.den._divisor_str()}"


@dataclass(frozen=True)
class Mod:
    num: "Dim"
    den: "Dim"

    def __str__(self) -> str:
        return f"{self.num._operand_str()} % {self.den._divisor_str()}"


Atom = Union[str, FloorDiv, Mod]


def _atom_key(atom: Atom) -> tuple:
    # A total, structural order: symbols first (by name), then quotients, then remainders.
    if isinstance(atom, str):
        return (0, atom)
    return (1 if isinstance(atom, FloorDiv) else 2, atom.num._key, atom.den._key)


def _mono_key(mono: tuple) -> tuple:
    # Storage order is also print order: higher total degree first, then by atom name/structure.
    return (-sum(p for _, p in mono), tuple((_atom_key(a), p) for a, p in mono))


def _mono_mul(m1: tuple, m2: tuple) -> tuple:
    powers = dict(m1)
    for atom, p in m2:
        powers[atom] = powers.get(atom, 0) + p
    return tuple(sorted(powers.items(), key=lambda ap: _atom_key(ap[0])))


def _binop(fn):
    """Build (op, reflected op) from `fn(Dim, Dim)`, coercing ints and rejecting other types."""

    def op(self, other):
        other = _coerce(other)
        return NotImplemented if other is NotImplemented else fn(self, other)

    def rop(self, other):
        other = _coerce(other)
        return NotImplemented if other is NotImplemented else fn(other, self)

    return op, rop


def _combine(pairs) -> "Dim":
    """Sum (monomial, coeff) pairs, merging like terms."""
    terms: dict = {}
    for m, c in pairs:
        terms[m] = terms.get(m, 0) + c
    return Dim(terms)


class Dim:
    """An immutable, hashable dimension expression in canonical polynomial form."""

    __slots__ = ("_terms", "_key", "_hash", "_const", "_syms")

    def __init__(self, terms: Mapping[tuple, int] | None = None):
        terms = {m: c for m, c in (terms or {}).items() if c}
        for c in terms.values():
            if abs(c) > MAX_VALUE:
                raise DimError(f"value `{c}` is too large (limit 10^18)")
        if len(terms) > MAX_TERMS:
            raise DimError(f"expression is too complex (more than {MAX_TERMS} terms)")
        keyed = sorted(((_mono_key(m), m, c) for m, c in terms.items()), key=lambda t: t[0])
        self._terms = tuple((m, c) for _, m, c in keyed)
        self._key = tuple((k, c) for k, _, c in keyed)
        self._hash = self._syms = None
        self._const = all(not m for m, _ in self._terms)

    # -- construction -------------------------------------------------------------------------
    # Dims are immutable, so constants and symbols are interned: a large graph names the same few
    # thousand times, and building one costs a sort.
    @classmethod
    def const(cls, value: int) -> "Dim":
        if isinstance(value, bool) or not isinstance(value, int):
            raise DimError(f"expected an integer, got {type(value).__name__} `{value!r}`")
        d = _INTERNED.get(value) if cls is Dim else None
        if d is None:
            d = cls({(): value})
            if cls is Dim:
                _intern(value, d)
        return d

    @classmethod
    def sym(cls, name: str) -> "Dim":
        d = _INTERNED.get(name) if cls is Dim else None
        if d is None:
            d = cls({((name, 1),): 1})
            if cls is Dim:
                _intern(name, d)
        return d

    # -- inspection ---------------------------------------------------------------------------
    @property
    def is_const(self) -> bool:
        return self._const

    @property
    def value(self) -> int:
        if not self.is_const:
            names = ", ".join(f"`{s}`" for s in sorted(self.symbols))
            raise DimError(f"`{self}` is not a concrete value: unbound {names}")
        return self._terms[0][1] if self._terms else 0

    @property
    def symbols(self) -> frozenset:
        if self._syms is None:
            self._syms = self._symbols()
        return self._syms

    def _symbols(self) -> frozenset:
        out: set = set()
        for mono, _ in self._terms:
            for atom, _p in mono:
                out |= {atom} if isinstance(atom, str) else atom.num.symbols | atom.den.symbols
        return frozenset(out)

    def _content(self) -> int:
        """gcd of all coefficients (0 for the zero Dim)."""
        return gcd(*(c for _, c in self._terms))

    def _scaled_down(self, g: int) -> "Dim":
        return Dim({m: c // g for m, c in self._terms})

    # -- arithmetic (operators are generated by `_binop` below; ints are accepted on either side) --
    __add__, __radd__ = _binop(lambda a, b: _combine(a._terms + b._terms))
    __sub__, __rsub__ = _binop(lambda a, b: a + (-b))
    __mul__, __rmul__ = _binop(lambda a, b: _combine(
        (_mono_mul(m1, m2), c1 * c2) for m1, c1 in a._terms for m2, c2 in b._terms))
    __floordiv__, __rfloordiv__ = _binop(lambda a, b: _divide(a, b, FloorDiv))
    __mod__, __rmod__ = _binop(lambda a, b: _divide(a, b, Mod))
    __truediv__, __rtruediv__ = _binop(lambda a, b: a.exact_div(b))

    def __neg__(self) -> "Dim":
        return Dim({m: -c for m, c in self._terms})

    def exact_div(self, other: "Dim | int") -> "Dim":
        """`/`: exact division. Concrete and not divisible is an error; symbolic falls back to `//`."""
        other = _coerce(other)
        if other is NotImplemented:
            raise DimError(f"cannot divide `{self}` by a non-integer")
        if other == 0:
            raise DimError(f"`{self._operand_str()} / 0`: division by zero")
        if self.is_const and other.is_const and self.value % other.value:
            a, b = self.value, other.value
            raise DimError(f"`{a} / {b}` is not exact: {a} is not divisible by {b}")
        return self // other

    def quotient(self, other: "Dim | int") -> "Dim | None":
        """The Dim q with `q * other == self` exactly (integer coefficients; opaque terms as variables),
        or None. Polynomial division by leading terms in graded order: the remainder is 0 iff `other`
        divides `self`. `4*B*T` by `B` is `4*T`; `B*n*D + B*D` by `B*n + B` is `D`."""
        other = _coerce(other)
        if other is NotImplemented or not other._terms:
            return None
        atoms = sorted({a for d in (self, other) for m, _ in d._terms for a, _ in m}, key=_atom_key)

        def lead(d: Dim) -> tuple:
            return max(d._terms, key=lambda t: (sum(p for _, p in t[0]), [dict(t[0]).get(a, 0) for a in atoms]))

        (m_den, c_den), q, rest = lead(other), Dim(), self
        for _ in range(MAX_TERMS):
            if not rest._terms:
                return q
            m, c = lead(rest)
            powers, den = dict(m), dict(m_den)
            if c % c_den or any(powers.get(a, 0) < p for a, p in den.items()):
                return None
            mono = tuple((a, p - den.get(a, 0)) for a, p in m if p > den.get(a, 0))
            term = Dim({mono: c // c_den})
            q, rest = q + term, rest - term * other
        return None

    def monomials(self) -> list[tuple[int, tuple[tuple["Atom", int], ...]]]:
        """The terms as (coefficient, ((atom, power), ...)): a symbol is its name; `FloorDiv` / `Mod` carry
        `num` and `den` Dims. For backends that compute a size at run time from its parts."""
        return [(c, m) for m, c in self._terms]

    # -- substitution -------------------------------------------------------------------------
    def subs(self, mapping: Mapping[str, "int | Dim"]) -> "Dim":
        """Substitute symbols and re-canonicalize (opaque atoms fold once their symbols are bound)."""
        env = {}
        for name, v in mapping.items():
            env[name] = _coerce(v)
            if env[name] is NotImplemented:
                raise DimError(f"cannot bind `{name}` to {type(v).__name__} `{v!r}`")
        return self._subs(env)

    def _subs(self, env: dict) -> "Dim":
        # Pure, and the same shapes are bound to the same sizes in every layer: remembered per
        # (expression, the values of its own symbols).
        if self._const:
            return self
        key = (self,) + tuple([(n, env[n]) for n in sorted(self.symbols) if n in env])
        hit = _SUBS.get(key)
        if hit is None:
            hit = self._subs_uncached(env)
            if len(_SUBS) >= _CACHE_LIMIT:
                _SUBS.clear()
            _SUBS[key] = hit
        return hit

    def _subs_uncached(self, env: dict) -> "Dim":
        total = Dim()
        for mono, coeff in self._terms:
            term = Dim.const(coeff)
            for atom, p in mono:
                if isinstance(atom, str):
                    factor = env.get(atom, Dim.sym(atom))
                else:
                    factor = _divide(atom.num._subs(env), atom.den._subs(env), type(atom))
                for _ in range(p):
                    term = term * factor
            total = total + term
        return total

    def evaluate(self, mapping: Mapping[str, "int | Dim"]) -> int:
        missing = self.symbols - set(mapping)
        if missing:
            names = ", ".join(f"`{s}`" for s in sorted(missing))
            raise DimError(f"cannot evaluate `{self}`: unbound {names}")
        return self.subs(mapping).value

    # -- comparison, conversion, printing -----------------------------------------------------
    def __eq__(self, other):
        other = _coerce(other)
        return other if other is NotImplemented else self._terms == other._terms

    def __hash__(self) -> int:
        # Constants hash like ints so that `Dim.const(3) == 3` is consistent with hashing.
        if self._hash is None:
            self._hash = hash(self.value) if self.is_const else hash(self._terms)
        return self._hash

    def __bool__(self) -> bool:
        return bool(self._terms)  # structurally nonzero, consistent with `==`

    def __int__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f"Dim({str(self)!r})"

    def __str__(self) -> str:
        if not self._terms:
            return "0"
        parts = []
        for i, (mono, coeff) in enumerate(self._terms):
            body, bare_opaque = _format_monomial(mono, abs(coeff))
            if i == 0:
                # `-a // b` would parse as `(-a) // b`, so a negated lone quotient needs parentheses.
                parts.append(("-" + (f"({body})" if bare_opaque else body)) if coeff < 0 else body)
            else:
                parts.append((" - " if coeff < 0 else " + ") + body)
        return "".join(parts)

    def _operand_str(self) -> str:
        """Form as left operand of `//`/`%`: sums need parentheses, products do not (left-assoc)."""
        return f"({self})" if len(self._terms) > 1 else str(self)

    def _divisor_str(self) -> str:
        """Form as right operand of `//`/`%`: only a bare symbol or non-negative constant is safe."""
        s = str(self)
        return s if s.isidentifier() or s.isdigit() else f"({s})"


_INTERNED: dict = {}     # int or symbol name -> its Dim
_PARSED: dict = {}       # (text, values of the names it reads) -> Dim
_SUBS: dict = {}         # (Dim, bound values of its symbols) -> Dim
_CACHE_LIMIT = 65_536    # entries per cache; a full cache starts over (bounded memory for any input)


def _intern(key, dim: "Dim") -> None:
    if len(_INTERNED) >= _CACHE_LIMIT:
        _INTERNED.clear()
    _INTERNED[key] = dim


def _format_monomial(mono: tuple, coeff: int) -> tuple[str, bool]:
    factors = [str(coeff)] if coeff != 1 or not mono else []
    alone = len(mono) == 1 and mono[0][1] == 1 and not factors
    for atom, p in mono:
        s = str(atom)
        if not isinstance(atom, str) and not alone:
            s = f"({s})"  # `c*a // b` would parse as `(c*a) // b`
        factors.extend([s] * p)
    return "*".join(factors), alone and not isinstance(mono[0][0], str)


def _coerce(x):
    if isinstance(x, Dim):
        return x
    if isinstance(x, int) and not isinstance(x, bool):
        return Dim.const(x)
    return NotImplemented


def _divide(num: Dim, den: Dim, kind: type) -> Dim:
    """Canonical `num // den` (kind=FloorDiv) or `num % den` (kind=Mod)."""
    op = "//" if kind is FloorDiv else "%"
    if not den._terms:
        raise DimError(f"`{num._operand_str()} {op} 0`: {'division' if kind is FloorDiv else 'modulo'} by zero")
    if num.is_const and den.is_const:
        return Dim.const(num.value // den.value if kind is FloorDiv else num.value % den.value)
    # Make the denominator's leading coefficient positive:
    # x // -y == (-x) // y and x % -y == -((-x) % y).
    sign = 1
    if den._terms[0][1] < 0:
        num, den, sign = -num, -den, (1 if kind is FloorDiv else -1)
    # Cancel a common positive factor: (g*x) // (g*y) == x // y and (g*x) % (g*y) == g*(x % y).
    g = gcd(num._content(), den._content())
    scale = g if kind is Mod else 1
    num, den = num._scaled_down(g), den._scaled_down(g)
    if den == 1:  # exact: every coefficient was divisible
        return num if kind is FloorDiv else Dim()
    k = _integer_ratio(num, den)
    if k is not None:  # num == k*den exactly (assumes den != 0)
        return Dim.const(k) if kind is FloorDiv else Dim()
    if den.is_const and all(c % den.value == 0 for m, c in num._terms if m):
        # only the constant term c is left over: (d*x + c) // d == x + c // d, (d*x + c) % d == c % d
        c, d = dict(num._terms).get((), 0), den.value
        return (num - c) // d + c // d if kind is FloorDiv else Dim.const(c % d) * (sign * scale)
    return Dim({((kind(num, den), 1),): 1}) * (sign * scale)


def _integer_ratio(num: Dim, den: Dim) -> int | None:
    if not num._terms:
        return 0
    if [m for m, _ in num._terms] != [m for m, _ in den._terms]:
        return None
    c_num, c_den = num._terms[0][1], den._terms[0][1]
    if c_num % c_den:
        return None
    k = c_num // c_den
    return k if all(a == k * b for (_, a), (_, b) in zip(num._terms, den._terms)) else None


# -- parsing ------------------------------------------------------------------------------------
# One token per match; `[A-Za-z]` and `[0-9]` are ASCII-only, so any other character falls through.
# An integer swallows trailing name characters so that `0x10` or `2n` is reported as one bad literal.
_TOKEN = re.compile(r"[ \t\r\n]*(?:(?P<int>[0-9][A-Za-z0-9_]*)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
                    r"|(?P<op>\*\*|//|[-+*/%()])|(?P<end>\Z))")
_EXPLAIN = {
    ".": "attribute access is not allowed in dimension expressions",
    "[": "subscripts are not allowed in dimension expressions",
    "'": "strings are not allowed in dimension expressions",
    '"': "strings are not allowed in dimension expressions",
}


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    """Tokens are (kind, text, offset) with kind in {"int", "name", "op", "end"}."""
    tokens, i = [], 0
    while not tokens or tokens[-1][0] != "end":
        m = _TOKEN.match(text, i)
        if m is None:  # not a token: skip the whitespace, report the char
            j = i + len(text[i:]) - len(text[i:].lstrip(" \t\r\n"))
            call = next(((f, p) for f, p in zip(tokens, tokens[1:]) if f[0] == "name" and p[1] == "("), None)
            if call is not None:  # `max(a, b)`: name the real problem, not the comma
                raise DimError(f"unexpected `(` after `{call[0][1]}`: function calls are not allowed in "
                               "dimension expressions", call[1][2])
            why = _EXPLAIN.get(text[j], "not allowed in dimension expressions")
            raise DimError(f"unexpected `{text[j]}`: {why}", j)
        kind, word, start = m.lastgroup, m.group(m.lastgroup), m.start(m.lastgroup)
        if kind == "int" and not word.isdigit():
            raise DimError(f"invalid integer `{word}`: only decimal integers are allowed", start)
        if kind == "int" and int(word) > MAX_LITERAL:
            raise DimError(f"integer `{word}` is too large (limit 10^15)", start)
        if kind == "name" and word.startswith("__"):
            raise DimError(f"`{word}` is not allowed: names starting with `__` are reserved", start)
        if word == "**":
            raise DimError("`**` is not allowed: use `*`", start)
        tokens.append((kind, word, start))
        i = m.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list, env: Mapping[str, int] | None = None):
        self.tokens = tokens
        self.pos = 0
        self.env = env or {}

    def peek(self):
        return self.tokens[self.pos]

    def take(self):
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def parse(self) -> Dim:
        result = self.expr(0)
        kind, tok, off = self.peek()
        if tok == ")":
            raise DimError("unmatched `)`", off)
        if kind != "end":  # e.g. `a b`, `2 n`, `f(x)`
            prev = self.tokens[self.pos - 1][1]
            why = "function calls are not allowed in dimension expressions" if tok == "(" else "expected an operator"
            raise DimError(f"unexpected `{tok}` after `{prev}`: {why}", off)
        return result

    def expr(self, depth: int) -> Dim:
        left = self.term(depth)
        while self.peek()[1] in ("+", "-"):
            _, op, off = self.take()
            left = _apply(op, left, self.term(depth), off)
        return left

    def term(self, depth: int) -> Dim:
        left = self.unary(depth)
        while self.peek()[1] in ("*", "//", "/", "%"):
            _, op, off = self.take()
            left = _apply(op, left, self.unary(depth), off)
        return left

    def unary(self, depth: int) -> Dim:
        kind, tok, off = self.take()
        if tok in ("-", "(") and depth >= MAX_DEPTH:
            raise DimError(f"expression is nested too deeply (limit {MAX_DEPTH})", off)
        if tok == "-":
            return -self.unary(depth + 1)
        if kind == "int":
            return Dim.const(int(tok))
        if kind == "name":
            # Bound at parse time so that `/` sees constants (`d_model / 3` must be exact) and
            # a failing operation (`d // (h - 4)`) is reported at its operator.
            return Dim.const(self.env[tok]) if tok in self.env else Dim.sym(tok)
        if tok == "(":
            inner = self.expr(depth + 1)
            if self.peek()[1] != ")":
                if self.peek()[0] == "end":
                    raise DimError("unclosed `(`: expected `)`", off)
                return inner  # let parse() report the unexpected token after the group
            self.take()
            return inner
        if kind == "end":
            raise DimError("unexpected end of expression", off)
        raise DimError(f"unexpected `{tok}`: expected a number, a name or `(`", off)


_BINARY = {"+": Dim.__add__, "-": Dim.__sub__, "*": Dim.__mul__, "//": Dim.__floordiv__,
           "%": Dim.__mod__, "/": Dim.exact_div}


def _apply(op: str, a: Dim, b: Dim, offset: int) -> Dim:
    try:
        return _BINARY[op](a, b)
    except DimError as e:  # point the caret at the operator that failed
        raise DimError(e.message, offset if e.offset is None else e.offset) from None


def parse(text: str, env: Mapping[str, int] | None = None) -> Dim:
    """Parse a dimension expression such as `(H // P) * (W // P)` into its canonical `Dim`.

    Names found in `env` are replaced by their values while parsing; the others stay symbolic."""
    if not isinstance(text, str):
        raise DimError(f"expected a string, got {type(text).__name__}")
    if len(text) > MAX_TEXT:
        raise DimError(f"expression is too long ({len(text)} chars, limit {MAX_TEXT})", MAX_TEXT)
    # Parsing is pure: the same text with the same values of the names it reads is the same Dim.
    # (Failures are not cached: they are rare, and each carries its own offset.)
    tokens = _TOKENS.get(text)
    if tokens is None:
        tokens = _tokenize(text)
        if len(_TOKENS) >= _CACHE_LIMIT:
            _TOKENS.clear()
        _TOKENS[text] = tokens
    env = env or {}
    key = (text,) + tuple((type(v), v) for v in (env.get(w, _UNBOUND) for k, w, _ in tokens if k == "name"))
    try:
        dim = _PARSED.get(key)
    except TypeError:   # an unhashable value in env: parse without the cache
        return _Parser(tokens, env).parse()
    if dim is None:
        dim = _Parser(tokens, env).parse()
        if len(_PARSED) >= _CACHE_LIMIT:
            _PARSED.clear()
        _PARSED[key] = dim
    return dim


_TOKENS: dict = {}       # text -> its tokens
_UNBOUND = object()


def parse_with(text_or_int: "str | int | Dim", env: Mapping[str, int]) -> Dim:
    """Parse (or accept an int/Dim) and bind the names found in `env`; other names stay symbolic."""
    if isinstance(text_or_int, bool):
        raise DimError(f"expected a dimension, got bool `{text_or_int}`")
    if isinstance(text_or_int, int):
        dim = Dim.const(text_or_int)
    elif isinstance(text_or_int, Dim):
        dim = text_or_int
    elif isinstance(text_or_int, str):
        dim = parse(text_or_int, env)
    else:
        raise DimError(f"expected a dimension, got {type(text_or_int).__name__} `{text_or_int!r}`")
    return dim.subs({k: v for k, v in env.items() if k in dim.symbols})


# ---------------------------------------------------------------- real-valued attributes

_REAL_OPS = {"Add": lambda a, b: a + b, "Sub": lambda a, b: a - b, "Mult": lambda a, b: a * b,
             "Div": lambda a, b: a / b, "FloorDiv": lambda a, b: a // b, "Pow": lambda a, b: a ** b}


def number(text: str, env: Mapping[str, float]) -> float:
    """Evaluate a real-valued attribute such as `d_model ** -0.5` or `1 / (2 * layers) ** 0.5` over numeric
    params: + - * / // ** on numbers and names, in float arithmetic. Python's parser builds the tree (so
    precedence is Python's); only those nodes are walked, nothing is executed."""
    if len(text) > MAX_TEXT:
        raise DimError(f"expression is too long ({len(text)} chars, limit {MAX_TEXT})", MAX_TEXT)
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as e:
        raise DimError("not an arithmetic expression", max(0, (e.offset or 1) - 1)) from None
    shift = len(text) - len(text.lstrip())

    def walk(node, depth: int = 0) -> float:
        at = shift + getattr(node, "col_offset", 0)
        if depth > MAX_DEPTH:
            raise DimError("expression is nested too deeply", at)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return float(node.value)
        if isinstance(node, ast.Name):
            if node.id not in env:
                raise DimError(f"`{node.id}` is not a numeric param", at)
            return float(env[node.id])
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = walk(node.operand, depth + 1)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op).__name__ in _REAL_OPS:
            a, b = walk(node.left, depth + 1), walk(node.right, depth + 1)
            try:
                v = _REAL_OPS[type(node.op).__name__](a, b)
            except ZeroDivisionError:
                raise DimError("division by zero", at) from None
            except OverflowError:
                raise DimError("the value overflows", at) from None
            if isinstance(v, complex) or not math.isfinite(v):
                raise DimError("the value is not a finite real number", at)
            return v
        raise DimError("only numbers, param names, + - * / // ** and parentheses are allowed", at)

    return walk(tree)
