"""Fused expression steps behave exactly like the steps run one by one."""

from __future__ import annotations

import random

import pytest

from processor.expressions import compile_expression
from processor.operators import Filter, KeyBy, MapValue, PythonStep, StepFailed
from processor.operators.fusion import Fused, fuse


def steps():
    return [
        Filter("s0", compile_expression("value['amount'] > 10")),
        MapValue("s1", compile_expression("dict(value, amount=value['amount'] * 2)")),
        KeyBy("s2", compile_expression("value['user'] + '-' + str(timestamp % 3)")),
        Filter("s3", compile_expression("key[-1] != '0' or value['amount'] > 100")),
    ]


def run(ops, batch):
    for op in ops:
        batch = op.process(batch)
    return batch


def test_fused_equals_step_by_step_on_random_batches():
    rng = random.Random(3)
    batch = [(f"k{i}", {"user": f"u{rng.randrange(9)}", "amount": rng.randrange(200)},
              rng.randrange(10_000), i) for i in range(2_000)]
    fused = fuse(steps())
    assert len(fused) == 1 and isinstance(fused[0], Fused)
    assert run(fused, batch) == run(steps(), batch)


def test_python_steps_split_fusion_runs():
    py = PythonStep("py", lambda k, v: [(k, v)])
    ops = fuse([*steps()[:2], py, *steps()[2:]])
    assert [type(o) for o in ops] == [Fused, PythonStep, Fused]


def test_single_expression_step_is_not_wrapped():
    (op,) = fuse(steps()[:1])
    assert isinstance(op, Filter)


def test_failure_names_the_failing_step_and_record():
    fused = fuse(steps())[0]
    good = ("a", {"user": "u1", "amount": 50}, 1, 10)
    bad = ("b", {"user": None, "amount": 50}, 1, 11)  # None + str fails in key_by (s2)
    with pytest.raises(StepFailed) as info:
        fused.process([good, bad])
    assert info.value.step == "s2"
    assert info.value.record[3] == 11
