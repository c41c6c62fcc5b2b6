"""Generated hot-path code: a traceback through it shows the generated source line."""

from __future__ import annotations

import linecache
import traceback

import orjson
import pytest

from processor.codegen import compile_generated, define
from processor.expressions import compile_expression
from processor.operators.aggregate import compile_aggregation, parse_field
from processor.operators.fusion import Fused
from processor.operators.stateless import Filter, MapValue
from processor.runtime.tasks.decode import batch_decoder


def _traceback_of(call) -> str:
    try:
        call()
    except Exception:
        return traceback.format_exc()
    raise AssertionError("the call did not fail")


def test_a_failing_generated_function_shows_its_line():
    source = "def _f(x):\n    y = x + 1\n    return 10 // (y - y)\n"
    f = define(source, "test ratio", {}, "_f")
    text = _traceback_of(lambda: f(3))
    assert "return 10 // (y - y)" in text
    assert "<test ratio #" in text


def test_the_same_source_reuses_one_cache_entry_and_another_gets_its_own():
    a = compile_generated("x = 1\n", "same")
    b = compile_generated("x = 1\n", "same")
    c = compile_generated("x = 2\n", "same")
    assert a.co_filename == b.co_filename != c.co_filename
    assert linecache.getline(c.co_filename, 1) == "x = 2\n"
    linecache.checkcache()  # no file behind the name: the entry stays
    assert linecache.getline(c.co_filename, 1) == "x = 2\n"


def test_an_eval_mode_source_shows_its_line():
    fn = eval(compile_generated("lambda v: [1 // x for x in v]", "test lambda", "eval"), {})
    assert "lambda v: [1 // x for x in v]" in _traceback_of(lambda: fn([1, 0]))


def test_a_failing_aggregate_update_shows_the_generated_field_code():
    agg = compile_aggregation([parse_field("total", "sum(value['amount'])")])
    state = agg.new_state()
    text = _traceback_of(lambda: agg.update(state, "k", {"amount": "x"}, 0))
    assert "x if x is not None else s[0]" in text


def test_a_failing_fused_loop_shows_the_inlined_expression():
    ops = [Filter("f", compile_expression("value['a'] > 0")),
           MapValue("m", compile_expression("10 // value['a']"))]
    fused = Fused(ops)
    text = _traceback_of(lambda: fused._fused([("k", {"a": "s"}, 0, 0)]))
    assert "if not (" in text and "continue" in text


def test_the_batch_decoder_shows_its_comprehension():
    decode = batch_decoder("string", "json", "ts", "ms")

    class Msg:
        def key(self) -> bytes:
            return b"k"

        def value(self) -> bytes:
            return orjson.dumps({"no_ts": 1})

        def offset(self) -> int:
            return 0

        def timestamp(self) -> tuple[int, int]:
            return (1, 0)

    text = _traceback_of(lambda: decode([Msg()]))
    assert "lambda messages: [(" in text


@pytest.mark.parametrize("label", ["emit orders", "fused a + b"])
def test_labels_name_the_file(label):
    assert compile_generated("pass\n", label).co_filename.startswith(f"<{label} #")
