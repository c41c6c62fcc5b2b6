"""Fuzzing the expression compiler: arbitrary text only ever compiles or raises ExpressionError;
expressions from a grammar of what users write compile, and evaluating them over JSON-like
records raises only ordinary exceptions and returns only plain data; escape attempts are
refused at compile time; results that would hang the worker or exhaust its memory are refused
per record (processor/expression_guards.py)."""

from __future__ import annotations

import os
import time
import types
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.errors import ExpressionError
from processor.expression_guards import MAX_INT_BITS, MAX_ITEMS
from processor.expressions import SAFE_BUILTINS, compile_expression
from processor.operators.fusion import Fused
from processor.operators.stateless import MapValue

# constant-folding hints such as "str indices must be integers" are compile-time warnings
pytestmark = pytest.mark.filterwarnings("ignore::SyntaxWarning")
# a deeper run: EXPRESSION_FUZZ_EXAMPLES=20000 pytest tests/unit/test_expression_fuzz.py
FUZZ = settings(max_examples=int(os.environ.get("EXPRESSION_FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# -- (a) arbitrary text -------------------------------------------------------------------------

TOKENS = ["value", "key", "timestamp", "[", "]", "(", ")", "{", "}", ".", ",", ":", "'", '"',
          "*", "**", "+", "-", "/", "//", "%", "<<", ">>", "&", "|", "^", "~", "<", ">", "==",
          "!=", " and ", " or ", " not ", " if ", " else ", " for ", " in ", " is ", " lambda ",
          ":=", "__class__", "__import__", "f'", "{0}", "\\", "\n", "\x00", "0", "1e9", "j",
          "yield", "await", "*value", "**value", "@", ";", "#", "...", "get", "format"]
python_ish = st.lists(st.sampled_from(TOKENS), max_size=25).map("".join)


@FUZZ
@given(st.one_of(st.text(max_size=80), python_ish))
def test_arbitrary_text_compiles_or_raises_expression_error(source: str):
    try:
        fn = compile_expression(source)
    except ExpressionError:
        return
    assert callable(fn)


@pytest.mark.parametrize("source", [
    "-" * 10_000 + "1", "not " * 5_000 + "1", "(" * 300 + "1" + ")" * 300, "a." * 10_000 + "b",
    "1+" * 50_000 + "1", "*value", "**value", "value\x00", "(yield)", "await value",
])
def test_pathological_text_raises_expression_error(source: str):
    with pytest.raises(ExpressionError):
        compile_expression(source)


# -- (b) valid expressions over JSON-like values ------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=4),
    max_leaves=12,
)
literals = (st.integers(-1000, 10**6).map(str) | st.floats(-1e6, 1e6).map(repr)
            | st.text("abcxyz -", max_size=5).map(repr)
            | st.sampled_from(["True", "False", "None", "[]", "{}", "''"]))
names = st.sampled_from(["key", "value", "timestamp"])
# an f-string wraps a name only: before Python 3.12 its expressions cannot reuse its quote
atoms = names | literals | names.map(lambda n: f"f'{{{n}!r:>4}}-{{{n}}}'")
BINARY = ["+", "-", "*", "/", "//", "%", "**", "<<", ">>", "&", "|", "^",
          "==", "!=", "<", "<=", ">", ">=", "in", "not in", "is", "is not", "and", "or"]
CALLS = ["len", "str", "int", "float", "abs", "bool", "sorted", "sum", "min", "max", "list",
         "tuple", "set", "round", "any", "all", "reversed", "enumerate"]
METHODS = [".get({})", ".lower()", ".upper()", ".strip()", ".split({})", ".items()", ".keys()",
           ".values()", ".startswith({})", ".count({})", ".index({})", ".replace({}, {})"]


def _extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    pair = st.tuples(inner, inner)
    return st.one_of(
        st.tuples(inner, st.sampled_from(BINARY), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(st.sampled_from(["-", "+", "~", "not "]), inner).map(lambda t: f"({t[0]}{t[1]})"),
        pair.map(lambda t: f"({t[0]})[{t[1]}]"),
        st.tuples(inner, st.sampled_from(METHODS), literals, literals).map(
            lambda t: f"({t[0]}){t[1].format(t[2], t[3])}"),
        st.tuples(st.sampled_from(CALLS), inner).map(lambda t: f"{t[0]}({t[1]})"),
        st.tuples(inner, inner, inner).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
        pair.map(lambda t: f"[{t[0]}, {t[1]}]"),
        pair.map(lambda t: f"{{{t[0]}: {t[1]}}}"),
        inner.map(lambda e: f"[x for x in ({e}) if x]"),
        inner.map(lambda e: f"{{k: v for k, v in dict({e}).items()}}"),
        pair.map(lambda t: f"({t[0]})[{t[1]}:]"),
        inner.map(lambda e: f"math.floor({e})"),
    )


expressions = st.recursive(atoms, _extend, max_leaves=8)

_PLAIN = (type(None), bool, int, float, complex, str, bytes, list, tuple, dict, set,
          frozenset, range, slice, reversed, enumerate, zip,
          type({}.items()), type({}.keys()), type({}.values()))
_DANGEROUS = (types.ModuleType, types.FunctionType, types.FrameType, types.CodeType,
              types.TracebackType, types.GeneratorType, type)


def _only_plain_data(obj: Any, depth: int = 0) -> bool:
    """Results are data: never a module, function, frame, code object or class."""
    if isinstance(obj, _DANGEROUS) or not isinstance(obj, _PLAIN):
        return False
    if depth < 4 and isinstance(obj, list | tuple | set | frozenset):
        return all(_only_plain_data(x, depth + 1) for x in obj)
    if depth < 4 and isinstance(obj, dict):
        return all(_only_plain_data(k, depth + 1) and _only_plain_data(v, depth + 1)
                   for k, v in obj.items())
    return True


@FUZZ
@given(expressions, json_values, json_values, st.integers(0, 2**41))
def test_grammar_expressions_compile_and_fail_only_with_ordinary_exceptions(
        source: str, key: Any, value: Any, timestamp: int):
    builtins_before = dict(SAFE_BUILTINS)
    fn = compile_expression(source)  # the grammar only writes valid, allowed expressions
    try:
        result = fn(key, value, timestamp)
    except Exception:  # TypeError, KeyError, ValueError (limits), ZeroDivisionError, ...
        result = None
    # BaseException (SystemExit, KeyboardInterrupt, GeneratorExit) propagates and fails here
    assert _only_plain_data(result), (source, type(result))
    assert builtins_before == SAFE_BUILTINS


@FUZZ
@given(st.lists(expressions, min_size=2, max_size=3), json_values)
def test_fused_steps_see_the_same_guards(sources: list[str], value: Any):
    """Fused steps are compiled again from each step's checked source: the guarded calls must
    survive that round trip and give the results of the steps run one by one."""
    ops = [MapValue(f"s{i}", compile_expression(s)) for i, s in enumerate(sources)]
    batch = [(None, value, 0, 0)]

    def one_by_one() -> Any:
        out = batch
        for op in ops:
            out = [(k, op.fn(k, v, t), t, o) for k, v, t, o in out]
        return out

    try:
        expected: Any = one_by_one()
    except Exception as exc:
        expected = type(exc)
    try:
        got: Any = Fused(ops)._fused(batch)
    except Exception as exc:
        got = type(exc)
    assert repr(got) == repr(expected)  # repr: a NaN result equals itself


# -- (c) escapes are refused at compile time ----------------------------------------------------

ESCAPES = [
    "__import__('os').system('id')",
    "value.__class__.__mro__[1].__subclasses__()",
    "().__class__.__base__.__subclasses__()",
    "key.__init__.__globals__",
    "(lambda: 0).__code__",
    "lambda: __import__('os')",
    "sorted(value, key=lambda v: v.__class__)",
    "getattr(value, '__class__')",
    "vars(value)", "globals()", "locals()", "type(value)", "dir()", "eval('1')", "exec('1')",
    "open('/etc/passwd').read()", "breakpoint()", "compile('1', 'x', 'eval')",
    "'{0.__class__}'.format(value)",
    "'{0.__class__}'.format_map(value)",
    "str.format('{0.__class__}', value)",
    "f'{value.__class__}'",
    "f'{value:{value.__class__}}'",
    "(x for x in value).gi_frame.f_back.f_globals",
    "(x for x in value).gi_code",
    "[x for x in value][0].__dict__",
    "[__builtins__ for _ in [1]]",
    "[x for __builtins__ in [1] for x in __builtins__]",
    "[0 for math.pi in [3]]",
    "[0 for value['x'] in [3]]",
    "[0 for key.attr in [3]]",
    "(v := value)",
    "[y := 1 for x in value]",
    "math.__loader__",
    "math.__dict__",
    "str.mro()",
    "value._private",
    "__processor_pow(2, 3)",
    "__builtins__['open']",
    "await value", "(yield value)",
]


@pytest.mark.parametrize("source", ESCAPES)
def test_escape_attempts_are_rejected_at_compile_time(source: str):
    with pytest.raises(ExpressionError):
        compile_expression(source)


DUNDERS = ["__class__", "__globals__", "__builtins__", "__subclasses__", "__mro__", "__dict__",
           "__code__", "__init__", "__getattribute__", "__reduce_ex__", "__self__", "__func__",
           "__module__", "__base__", "__closure__", "_private", "format", "format_map",
           "gi_frame", "f_back", "f_globals", "tb_frame", "mro"]


@FUZZ
@given(expressions, st.sampled_from(DUNDERS), st.booleans())
def test_denied_attributes_are_rejected_on_any_expression(base: str, attr: str, call: bool):
    with pytest.raises(ExpressionError, match="not allowed"):
        compile_expression(f"({base}).{attr}" + ("()" if call else ""))


# -- resource exhaustion: refused per record, quickly -------------------------------------------


@pytest.mark.parametrize(("source", "value"), [
    ("value['x'] ** value['y']", {"x": 10, "y": 10**12}),
    ("2 ** value", 10**9),
    ("'a' * 10**12", None),
    ("value * 10**9", "abc"),
    ("[value] * (10**8)", 1),
    ("10**9 * b'x'", None),
    ("1 << value", 10**12),
    ("list(range(value))", 10**9),
    ("sum(range(10**15))", None),
    ("math.factorial(value)", 10**7),
    ("math.comb(value, value // 2)", 10**7),
    ("[x * 1000 for x in value]", ["abcdef" * 1000]),
])
def test_huge_results_raise_value_error_quickly(source: str, value: Any):
    fn = compile_expression(source)
    started = time.monotonic()
    with pytest.raises(ValueError, match="expression limit"):
        fn(None, value, 0)
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(("source", "value", "expected"), [
    ("value ** 2", 12, 144),
    ("2 ** value", 64, 2**64),
    ("value * 1000", 1.5, 1500.0),
    ("value * 3", "ab", "ababab"),
    ("'-' * value", 40, "-" * 40),
    ("1 << value", 62, 2**62),
    ("len(list(range(value)))", MAX_ITEMS, MAX_ITEMS),
    ("math.factorial(value) > 0", 1000, True),
    ("(2 ** value).bit_length()", MAX_INT_BITS, MAX_INT_BITS + 1),
])
def test_results_within_the_limits_are_computed(source: str, value: Any, expected: Any):
    assert compile_expression(source)(None, value, 0) == expected
