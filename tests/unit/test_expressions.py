"""Expressions: compiled once, evaluated over (key, value, timestamp), and sandboxed."""

from __future__ import annotations

import math

import pytest

from processor.errors import ExpressionError
from processor.expressions import compile_expression, load_callable, parse_expression


def ev(source: str, key=None, value=None, timestamp: int = 0):
    return compile_expression(source)(key, value, timestamp)


# -- evaluation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "key", "value", "ts", "expected"),
    [
        ("key", "k1", None, 0, "k1"),
        ("value['amount'] * 2", None, {"amount": 21}, 0, 42),
        ("timestamp // 1000", None, None, 1_700_000_123_456, 1_700_000_123),
        ("value['a'] > 1 and value['s'] != 'x'", None, {"a": 2, "s": "y"}, 0, True),
        ("value['a'] > 1 and value['s'] != 'x'", None, {"a": 2, "s": "x"}, 0, False),
        ("not value.get('test', False)", None, {}, 0, True),
        ("value['country'].upper()", None, {"country": "de"}, 0, "DE"),
        ("key + ':' + str(value)", "k", 7, 0, "k:7"),
        ("round(value / 3, 2)", None, 10, 0, 3.33),
        ("math.floor(value)", None, 2.7, 0, 2),
        ("'big' if value > 10 else 'small'", None, 11, 0, "big"),
        ("value[1:3]", None, [0, 1, 2, 3], 0, [1, 2]),
        ("len(value) + sum(value) + max(value) + min(value)", None, [1, 2, 3], 0, 3 + 6 + 3 + 1),
        ("sorted(value, reverse=True)", None, [2, 3, 1], 0, [3, 2, 1]),
        ("f'{key}-{value}'", "a", 1, 0, "a-1"),
        ("value is None", None, None, 0, True),
        ("'x' in value", None, {"x": 1}, 0, True),
        ("[*value, 4]", None, [1, 2], 0, [1, 2, 4]),
        ("(value & 6) | 1", None, 7, 0, 7),
    ],
)
def test_evaluates_over_key_value_timestamp(source, key, value, ts, expected):
    assert ev(source, key, value, ts) == expected


def test_compiled_function_is_reusable_across_records():
    fn = compile_expression("value['n'] + timestamp")
    assert [fn(None, {"n": i}, 100) for i in range(3)] == [100, 101, 102]


def test_comprehensions_work():
    assert ev("[x * 2 for x in value if x > 1]", value=[1, 2, 3]) == [4, 6]
    assert ev("{k: v + 1 for k, v in value.items()}", value={"a": 1, "b": 2}) == {"a": 2, "b": 3}
    assert ev("{x % 3 for x in value}", value=[1, 2, 3, 4]) == {0, 1, 2}
    assert ev("sum(x for x in value)", value=[1, 2, 3]) == 6
    assert ev("[(i, x) for i, x in enumerate(value)]", value="ab") == [(0, "a"), (1, "b")]
    assert ev("[y for x in value for y in x]", value=[[1], [2, 3]]) == [1, 2, 3]


def test_surrounding_whitespace_is_ignored():
    assert ev("  value + 1  ", value=1) == 2


# -- safety ----------------------------------------------------------------------------------


def rejected(source: str) -> str:
    with pytest.raises(ExpressionError) as info:
        compile_expression(source)
    return str(info.value)


def test_rejects_import_statement_and_dunder_import():
    assert "syntax error" in rejected("import os")
    assert "'__import__' is not allowed" in rejected("__import__('os')")


@pytest.mark.parametrize("source", ["__builtins__", "__name__", "[__x for __x in value]"])
def test_rejects_dunder_names(source):
    assert "is not allowed" in rejected(source)


@pytest.mark.parametrize(
    ("source", "attr"),
    [
        ("value.__class__", "__class__"),
        ("().__class__.__bases__[0].__subclasses__()", "__subclasses__"),
        ("value._private", "_private"),
        ("(x for x in value).gi_frame", "gi_frame"),
        ("str.mro()", "mro"),
    ],
)
def test_rejects_dunder_and_private_attributes(source, attr):
    assert f"attribute {attr!r} is not allowed" in rejected(source)


def test_rejects_format_which_reaches_attributes_through_the_format_string():
    msg = rejected('"{0.__class__}".format(value)')
    assert "attribute 'format' is not allowed" in msg
    assert "attribute 'format_map' is not allowed" in rejected("'{x}'.format_map(value)")


def test_rejects_lambda():
    assert "Lambda is not allowed" in rejected("lambda: 1")
    assert "Lambda is not allowed" in rejected("sorted(value, key=lambda x: x)")


@pytest.mark.parametrize("name", ["open", "eval", "exec", "getattr", "compile", "globals", "type", "vars"])
def test_rejects_unknown_names(name):
    msg = rejected(f"{name}('x')")
    assert f"unknown name {name!r}" in msg
    assert "available: key, value, timestamp" in msg


def test_rejects_walrus():
    assert "NamedExpr is not allowed" in rejected("(y := value)")


def test_rejects_assignment_through_comprehension_targets():
    # `for math.pi in ...` would overwrite attributes of the process-wide math module
    assert "not allowed" in rejected("[0 for math.pi in [3]]")
    assert "not allowed" in rejected("[0 for value['x'] in [3]]")
    assert math.pi == pytest.approx(3.14159, abs=1e-5)


def test_reports_syntax_errors_with_reason():
    msg = rejected("value[")
    assert msg.startswith("syntax error:")
    assert "column" in msg
    assert rejected("value +").startswith("syntax error:")


@pytest.mark.parametrize("source", ["", "   ", None, 42])
def test_rejects_empty_or_non_string(source):
    with pytest.raises(ExpressionError, match="non-empty string"):
        parse_expression(source)


def test_runtime_builtins_are_only_the_safe_ones():
    # even a name that passes the static check (a comprehension variable re-used outside
    # its comprehension) cannot reach the real builtins at run time
    fn = compile_expression("[1 for open in []] or open('/etc/passwd')")
    with pytest.raises(NameError):
        fn(None, None, 0)


# -- load_callable ---------------------------------------------------------------------------


def test_load_callable_resolves_module_function_and_dotted_attribute():
    import os.path

    assert load_callable("os.path:join") is os.path.join
    assert load_callable("math:floor") is math.floor
    assert load_callable("collections:OrderedDict.fromkeys")(["a"]) == {"a": None}


@pytest.mark.parametrize("ref", ["no_colon_here", "a:b:c", "", 42])
def test_load_callable_rejects_malformed_reference(ref):
    with pytest.raises(ExpressionError, match=r"must look like 'package\.module:function'"):
        load_callable(ref)


def test_load_callable_missing_module():
    with pytest.raises(ExpressionError, match="cannot import module 'no_such_module_xyz'"):
        load_callable("no_such_module_xyz:fn")


def test_load_callable_missing_attribute():
    with pytest.raises(ExpressionError, match="module 'math' has no attribute 'nope'"):
        load_callable("math:nope")


def test_load_callable_rejects_non_callable():
    with pytest.raises(ExpressionError, match="is not callable"):
        load_callable("math:pi")
