"""Tests for graphformer.base.dims: parsing, canonical equality, errors with offsets, and properties."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from graphformer.base.dims import Dim, DimError, FloorDiv, Mod, parse, parse_with

a, b, c, n, T = (Dim.sym(s) for s in "abcnT")

# (text, equivalent text) pairs that must canonicalize to the same Dim.
EQUAL = [
    ("3 * T // 3", "T"),
    ("(a + b) * 2", "2*a + 2*b"),
    ("n + 1 - 1", "n"),
    ("2*T//2", "T"),
    ("(6*T)//3", "2*T"),
    ("(4*T + 2)//2", "2*T + 1"),
    ("(2*n)//n", "2"),
    ("6 / 3 * n", "2*n"),
    ("(6*n) / 3", "2*n"),
    ("3 * T", "T + T + T"),
    ("a*b", "b*a"),
    ("(a - b)*(a + b)", "a*a - b*b"),
    ("-(-n)", "n"),
    ("7 // 2", "3"),
    ("-7 // 2", "-4"),
    ("7 % 3", "1"),
    ("-7 % 3", "2"),
    ("(4*n) % 2", "0"),
    ("(2*n) % n", "0"),
    ("n // 1", "n"),
    ("(2*n + 2) // 4", "(n + 1) // 2"),
    # a constant left over after an exact part: a strided conv's (2*S - 1) // 2 + 1 frames is S
    ("(2*S - 1) // 2 + 1", "S"),
    ("(6*a + 3*b + 7) // 3", "2*a + b + 2"),
    ("(2*S - 1) % 2", "1"),
    ("(-2*S + 1) // -2", "S - 1"),
    ("(2*S + 1) % -2", "-1"),
    ("(H // P) * (W // P)", "(W // P) * (H // P)"),
    ("d_model // heads * heads", "heads * (d_model // heads)"),
    ("  n\t+ 1 ", "1 + n"),
    ("0 * a + b - b", "0"),
]


@pytest.mark.parametrize("left,right", EQUAL)
def test_canonical_equality(left, right):
    assert parse(left) == parse(right)
    assert hash(parse(left)) == hash(parse(right))


# (text, expected str form)
PRINTED = [
    ("3*T", "3*T"),
    ("1 + n", "n + 1"),
    ("d_model // heads", "d_model // heads"),
    ("n*B", "B*n"),
    ("(a + b) * 2", "2*a + 2*b"),
    ("n - 1", "n - 1"),
    ("1 - n", "-n + 1"),
    ("B * n * d_model", "B*d_model*n"),
    ("(H // P) * (W // P)", "(H // P)*(W // P)"),
    ("(n + 2) // 2", "(n + 2) // 2"),
    ("n // (a + b)", "n // (a + b)"),
    ("-(a // b)", "-(a // b)"),
    ("a % 4", "a % 4"),
    ("a*a + a + 1", "a*a + a + 1"),
    ("0", "0"),
    ("-5", "-5"),
]


@pytest.mark.parametrize("text,expected", PRINTED)
def test_str(text, expected):
    d = parse(text)
    assert str(d) == expected
    assert repr(d) == f"Dim({expected!r})"
    assert parse(str(d)) == d


def test_python_operators_and_ints():
    assert 3 * T // 3 == T
    assert (a + b) * 2 == 2 * a + 2 * b
    assert n + 1 - 1 == n
    assert 10 - n == -n + 10
    assert 12 // Dim.const(5) == 2 and 12 % Dim.const(5) == 2
    assert (6 * n).exact_div(3) == 2 * n and (6 * n) / 3 == 2 * n
    assert Dim.const(3) == 3 and 3 == Dim.const(3) and hash(Dim.const(3)) == hash(3)
    assert int(Dim.const(7)) == 7 and Dim.const(7).value == 7
    assert Dim.const(3) != "3" and n != 0
    assert not parse("n - n") and parse("n")
    assert {parse("2*n"): 1}[n + n] == 1


def test_opaque_atoms_and_properties():
    d = parse("d_model // heads + n % 3")
    assert not d.is_const
    assert d.symbols == frozenset({"d_model", "heads", "n"})
    atoms = {atom for mono, _ in d._terms for atom, _ in mono}
    assert FloorDiv(Dim.sym("d_model"), Dim.sym("heads")) in atoms
    assert Mod(n, Dim.const(3)) in atoms
    assert parse("7").is_const and parse("7").symbols == frozenset()
    with pytest.raises(DimError, match="not a concrete value"):
        d.value
    with pytest.raises(DimError):
        int(d)
    assert parse("n // x").exact_div(1) == parse("n // x")
    assert parse("n / x") == parse("n // x")  # symbolic, not exact: opaque quotient


def test_subs_and_evaluate():
    d = parse("(H // P) * (W // P) + 1")
    assert d.subs({"P": 16}) == parse("(H // 16) * (W // 16) + 1")
    assert d.subs({"H": 224, "W": 224, "P": 16}) == 197
    assert d.evaluate({"H": 224, "W": 224, "P": 16}) == 197
    assert parse("n + m").subs({"n": parse("2*m")}) == parse("3*m")
    with pytest.raises(DimError, match="unbound `H`, `W`"):
        d.evaluate({"P": 16})
    with pytest.raises(DimError, match="by zero"):
        parse("n // k").subs({"k": 0})
    with pytest.raises(DimError):
        parse("n").subs({"n": 1.5})


def test_parse_with():
    assert parse_with("d_model // heads", {"d_model": 512, "heads": 8}) == 64
    assert parse_with("B * d", {"d": 64, "unused": 3}) == parse("64*B")
    assert parse_with(5, {}) == 5
    assert parse_with(Dim.sym("x"), {"x": 2}) == 2
    for bad in (True, 1.0, None, [1]):
        with pytest.raises(DimError):
            parse_with(bad, {})


# (text, message fragment, offset)
ERRORS = [
    ("f(x)", "unexpected `(` after `f`: function calls are not allowed", 1),
    ("n + foo (x)", "unexpected `(` after `foo`: function calls", 8),
    ("a.b", "unexpected `.`: attribute access", 1),
    ("__import__", "`__import__` is not allowed", 0),
    ("n + __class__", "`__class__` is not allowed", 4),
    ("a ** 2", "`**` is not allowed: use `*`", 2),
    ("2 ** 99999", "`**` is not allowed", 2),
    ("(a + b", "unclosed `(`", 0),
    ("a + b)", "unmatched `)`", 5),
    ("((a)", "unclosed `(`", 0),
    ("", "unexpected end of expression", 0),
    ("   ", "unexpected end of expression", 3),
    ("n +", "unexpected end of expression", 3),
    ("n * * 2", "unexpected `*`", 4),
    ("+n", "unexpected `+`", 0),
    ("a b", "unexpected `b` after `a`: expected an operator", 2),
    ("99999999999999999", "integer `99999999999999999` is too large (limit 10^15)", 0),
    ("n + 1000000000000001", "is too large (limit 10^15)", 4),
    ("1000000000000000 * 1000000000000000", "too large (limit 10^18)", 17),
    ("1/0", "by zero", 1),
    ("n // 0", "by zero", 2),
    ("n % (a - a)", "by zero", 2),
    ("7/2", "`7 / 2` is not exact: 7 is not divisible by 2", 1),
    ("0x10", "invalid integer `0x10`", 0),
    ("x[0]", "unexpected `[`: subscripts", 1),
    ("'a'", "unexpected `'`: strings", 0),
    ("n + é", "unexpected `é`", 4),
    ("n ＋ 1", "unexpected `＋`", 2),
    ("a, b", "unexpected `,`", 1),
    ("lambda: 1", "unexpected `:`", 6),
]


@pytest.mark.parametrize("text,message,offset", ERRORS)
def test_errors(text, message, offset):
    with pytest.raises(DimError) as info:
        parse(text)
    assert message in info.value.message
    assert info.value.offset == offset
    assert str(info.value) == info.value.message


def test_limits():
    with pytest.raises(DimError, match="too long") as info:
        parse("n + " * 50 + "1")
    assert info.value.offset == 200
    parse("n" + " + n" * 49)  # 197 chars is fine
    assert parse("(" * 32 + "n" + ")" * 32) == n
    with pytest.raises(DimError, match="nested too deeply") as info:
        parse("(" * 100 + "n" + ")" * 99)  # 200 chars: within the length limit
    assert info.value.offset == 32
    with pytest.raises(DimError, match="nested too deeply"):
        parse("-" * 100 + "n")
    with pytest.raises(DimError, match="too complex"):
        parse("(a+b+c+d+e+f+g+h+i+j+k+l+m)" + "*(a+b+c+d+e+f+g+h+i+j+k+l+m)" * 4)
    with pytest.raises(DimError, match="10\\^18"):
        Dim.const(10**19)


# -- property tests: random expression trees over {a, b, c} ------------------------------------
# A tree is an int, a symbol name, or (op, left, right); `//` only by a positive constant.
leaves = st.one_of(st.integers(-5, 5), st.sampled_from(["a", "b", "c"]))
trees = st.recursive(
    leaves,
    lambda sub: st.one_of(
        st.tuples(st.sampled_from(["+", "-", "*"]), sub, sub),
        st.tuples(st.just("//"), sub, st.integers(1, 6)),
    ),
    max_leaves=10,
)
bindings = st.fixed_dictionaries({s: st.integers(1, 10) for s in "abc"})


def eval_tree(tree, env):
    """Direct Python-integer evaluation of the tree (no eval)."""
    if isinstance(tree, int):
        return tree
    if isinstance(tree, str):
        return env[tree]
    op, left, right = tree
    x, y = eval_tree(left, env), eval_tree(right, env)
    if op == "+":
        return x + y
    if op == "-":
        return x - y
    return x * y if op == "*" else x // y


def build_dim(tree):
    if isinstance(tree, int):
        return Dim.const(tree)
    if isinstance(tree, str):
        return Dim.sym(tree)
    op, left, right = tree
    x, y = build_dim(left), build_dim(right)
    return {"+": x.__add__, "-": x.__sub__, "*": x.__mul__, "//": x.__floordiv__}[op](y)


def tree_text(tree):
    if isinstance(tree, int):
        return f"({tree})" if tree < 0 else str(tree)
    if isinstance(tree, str):
        return tree
    op, left, right = tree
    return f"({tree_text(left)} {op} {tree_text(right)})"


@settings(max_examples=300, deadline=None)
@given(trees, bindings)
def test_evaluate_matches_direct(tree, env):
    d = build_dim(tree)
    assert d.evaluate(env) == eval_tree(tree, env)


@settings(max_examples=300, deadline=None)
@given(trees)
def test_str_round_trip(tree):
    d = build_dim(tree)
    assert parse(str(d)) == d
    assert parse(repr(d)[5:-2]) == d


@settings(max_examples=300, deadline=None)
@given(trees, bindings)
def test_subs_all_symbols_is_const(tree, env):
    d = build_dim(tree)
    s = d.subs(env)
    assert s.is_const and s == eval_tree(tree, env)


@settings(max_examples=300, deadline=None)
@given(trees)
def test_parse_of_tree_text_matches_build(tree):
    text = tree_text(tree)
    if len(text) <= 200:
        assert parse(text) == build_dim(tree)
