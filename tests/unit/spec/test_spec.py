"""Topology YAML: validation, and error messages that point at file, line and field."""

from __future__ import annotations

import pytest

from processor.cli import main
from processor.errors import SpecError, SpecErrors
from processor.graph import build_topology
from processor.spec import load_spec, load_spec_text
from processor.spec.steps import AggregateStep, FilterStep, MapStep, ToStep
from tests.paths import REPO

TOPOLOGIES = sorted(p for p in (REPO / "topologies").glob("*.yaml")
                    if not p.name.endswith(".test.yaml"))  # test files: processor test

# Line numbers are part of the assertions below: keep this text's layout stable.
BASE = """\
name: t
sources:
  orders:
    topic: orders
sinks:
  out:
    topic: out
pipelines:
  - from: orders
    steps:
      - filter: "value['a'] > 1"
      - to: out
"""
#       line 1: name, 4: topic, 9: from, 11: filter, 12: to


def errors_of(text: str, *, build: bool = True) -> list[SpecError]:
    with pytest.raises(SpecErrors) as info:
        loaded = load_spec_text(text, file="t.yaml")
        if build:
            build_topology(loaded)
    errs = info.value.errors
    assert errs, "SpecErrors without errors"
    assert all(isinstance(e, SpecError) and e.file == "t.yaml" for e in errs)
    return errs


def only_error(text: str) -> SpecError:
    errs = errors_of(text)
    assert len(errs) == 1, [e.render() for e in errs]
    return errs[0]


def line_of(text: str, needle: str) -> int:
    """1-based line of the only line containing `needle`."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(hits) == 1, (needle, hits)
    return hits[0]


# -- valid topologies ------------------------------------------------------------------------


def test_topologies_directory_is_not_empty():
    assert len(TOPOLOGIES) >= 2


@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda p: p.name)
def test_shipped_topologies_validate_and_build(path):
    loaded = load_spec(path)
    assert loaded.file == str(path)
    topo = build_topology(loaded)
    assert topo.name == loaded.spec.name
    assert topo.subtopologies
    assert all(chain for sub in topo.subtopologies for chain in sub.chains)


def test_base_spec_is_valid_and_typed():
    loaded = load_spec_text(BASE, file="t.yaml")
    spec = loaded.spec
    assert spec.name == "t"
    assert spec.sources["orders"].topic == "orders"
    assert spec.sources["orders"].key.format == "string"
    assert spec.sources["orders"].value.format == "json"
    pipeline = spec.pipelines[0]
    assert pipeline.from_ == "orders"
    assert isinstance(pipeline.steps[0], FilterStep)
    assert isinstance(pipeline.steps[1], ToStep)
    assert pipeline.steps[1].to == "out"
    assert loaded.lines.line_of(("pipelines", 0, "steps", 0, "filter")) == 11


def test_aggregate_shorthand_collects_output_fields():
    text = BASE.replace("      - to: out", "      - aggregate:\n          store: s\n          n: count()\n"
                                             "          emit: every_record\n      - to: out")
    step = load_spec_text(text).spec.pipelines[0].steps[1]
    assert isinstance(step, AggregateStep)
    assert step.aggregate.store == "s"
    assert step.aggregate.emit == "every_record"
    assert step.aggregate.fields == {"n": "count()"}


def test_map_accepts_expression_fields_projection_and_python_ref():
    text = BASE.replace(
        "      - to: out",
        "      - map: value['a']\n      - map: {fields: {x: key}}\n      - map: {python: 'math:floor'}\n"
        "      - to: out",
    )
    steps = load_spec_text(text).spec.pipelines[0].steps
    assert all(isinstance(s, MapStep) for s in steps[1:4])
    assert steps[1].map == "value['a']"
    assert steps[2].map.fields == {"x": "key"}
    assert steps[3].map.python == "math:floor"


# -- errors with file, line, path ------------------------------------------------------------


def test_unknown_step_kind():
    text = BASE.replace("      - to: out", "      - frobnicate: 1")
    err = only_error(text)
    assert (err.line, err.path) == (12, "pipelines[0].steps[1]")
    assert ("one of: filter, map, flat_map, key_by, window, aggregate, process, python, join, "
            "interval_join, reconcile, pattern, branch, to") in err.message


def test_step_with_two_kinds_is_rejected():
    text = BASE.replace("      - to: out", "      - to: out\n        filter: 'True'")
    err = only_error(text)
    assert (err.line, err.path) == (12, "pipelines[0].steps[1]")
    assert "a step is a mapping with exactly one of:" in err.message


def test_unknown_field():
    text = BASE.replace("    topic: orders", "    topic: orders\n    colour: red")
    err = only_error(text)
    assert (err.line, err.path, err.message) == (5, "sources.orders.colour", "unknown field")


def test_bad_format():
    text = BASE.replace("    topic: orders", "    topic: orders\n    value: {format: xml}")
    err = only_error(text)
    assert (err.line, err.path) == (5, "sources.orders.value.format")
    assert "unknown format 'xml'" in err.message
    assert "json, string, bytes" in err.message


def test_missing_from():
    text = BASE.replace("  - from: orders\n", "  - name: p\n")
    err = only_error(text)
    assert (err.line, err.path, err.message) == (9, "pipelines[0].from", "required field is missing")


def test_unknown_source_in_from():
    err = only_error(BASE.replace("from: orders", "from: nope"))
    assert (err.line, err.path) == (9, "pipelines[0].from")
    assert err.message == "unknown source 'nope' (sources: orders)"


def test_unknown_sink_name_in_to():
    err = only_error(BASE.replace("to: out", "to: nope"))
    assert (err.line, err.path) == (12, "pipelines[0].steps[1].to")
    assert "unknown sink 'nope' (sinks: out)" in err.message


def test_invalid_expression_in_filter_points_at_the_filter_line():
    text = BASE.replace("      - filter: \"value['a'] > 1\"",
                        "      - map: value\n      - filter: \"value.__class__\"")
    err = only_error(text)
    assert err.line == line_of(text, "filter:") == 12
    assert err.path == "pipelines[0].steps[1].filter"
    assert "invalid expression 'value.__class__'" in err.message
    assert "'__class__' is not allowed" in err.message


def test_syntax_error_in_expression():
    err = only_error(BASE.replace("value['a'] > 1", "value['a' >"))
    assert (err.line, err.path) == (11, "pipelines[0].steps[0].filter")
    assert "syntax error" in err.message


def test_invalid_expression_in_map_fields_names_the_field():
    text = BASE.replace("      - to: out", "      - map:\n          fields:\n            ok: key\n"
                                             "            bad: open('x')\n      - to: out")
    err = only_error(text)
    assert err.line == line_of(text, "bad:")
    assert err.path == "pipelines[0].steps[1].map.fields.bad"
    assert "unknown name 'open'" in err.message


def test_bad_aggregate_function():
    text = BASE.replace("      - to: out", "      - key_by: value['u']\n      - aggregate:\n"
                                             "          n: count()\n          m: median(value['x'])")
    err = only_error(text)
    assert err.line == line_of(text, "median")
    assert err.path == "pipelines[0].steps[2].aggregate.m"
    assert "aggregate field must be one of count(...), sum(...)" in err.message
    assert "median" in err.message


def test_aggregate_argument_errors():
    text = BASE.replace("      - to: out", "      - aggregate:\n          a: sum()\n"
                                             "          b: max(open(1))")
    errs = errors_of(text)
    by_path = {e.path: e for e in errs}
    assert set(by_path) == {"pipelines[0].steps[1].aggregate.a", "pipelines[0].steps[1].aggregate.b"}
    assert by_path["pipelines[0].steps[1].aggregate.a"].line == line_of(text, "a: sum()")
    assert "takes exactly one expression argument" in by_path["pipelines[0].steps[1].aggregate.a"].message
    assert by_path["pipelines[0].steps[1].aggregate.b"].line == line_of(text, "b: max")
    assert "unknown name 'open'" in by_path["pipelines[0].steps[1].aggregate.b"].message


def test_bad_python_reducer_field_points_at_its_line():
    text = BASE.replace("      - to: out", "      - aggregate:\n          n: count()\n"
                                             "          r: {python: 'math:floor', initial: 0, extra: 1}")
    err = only_error(text)
    assert err.line == line_of(text, "r: {python")
    assert (err.path, err.message) == ("pipelines[0].steps[1].aggregate.r.extra", "unknown field")


def test_bad_aggregate_emit():
    text = BASE.replace("      - to: out", "      - aggregate:\n          emit: sometimes\n"
                                             "          n: count()")
    err = only_error(text)
    assert (err.line, err.path) == (line_of(text, "emit:"), "pipelines[0].steps[1].aggregate.emit")
    assert "'on_checkpoint' or 'every_record'" in err.message


def test_duplicate_store_names():
    agg = "      - aggregate:\n          store: s\n          n: count()\n"
    text = BASE.replace("      - to: out\n", agg + agg)
    err = only_error(text)
    assert err.line == 16  # the second `store: s`
    assert err.path == "pipelines[0].steps[2].aggregate.store"
    assert err.message == "store name 's' is used twice"


def test_duplicate_store_names_across_pipelines():
    text = BASE + ("      - aggregate: {store: s, n: count()}\n"
                   "  - from: orders\n    steps:\n      - aggregate: {store: s, n: count()}\n")
    err = only_error(text)
    assert err.path == "pipelines[1].steps[0].aggregate.store"
    assert err.line == len(text.splitlines())


def test_duplicate_yaml_keys():
    text = BASE.replace("    topic: orders", "    topic: orders\n    topic: orders2")
    err = only_error(text)
    assert (err.line, err.path, err.message) == (5, "sources.orders.topic", "duplicate key 'topic'")


def test_duplicate_yaml_keys_reported_with_validation_errors():
    text = BASE.replace("name: t", "name: t\nname: u").replace("from: orders", "from: orders\n    colour: 1")
    errs = errors_of(text, build=False)
    assert {(e.line, e.path, e.message) for e in errs} == {
        (2, "name", "duplicate key 'name'"),
        (11, "pipelines[0].colour", "unknown field"),
    }


def test_yaml_syntax_error():
    text = BASE.replace("    topic: out", "    topic: [out")
    err = only_error(text)
    assert err.message.startswith("YAML syntax error:")
    assert err.line is not None and 7 <= err.line <= 9


def test_yaml_syntax_error_bad_indentation():
    text = "name: t\nsources:\n  orders:\n    topic: orders\n   bad: indent\n"
    err = only_error(text)
    assert err.message.startswith("YAML syntax error:")
    assert err.line == 5


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string\n"])
def test_non_mapping_document(text):
    err = only_error(text)
    assert err.line == 1
    assert "must be a YAML mapping" in err.message


@pytest.mark.parametrize("name", ["'bad name!'", "-leading-dash", "a/b", "''"])
def test_bad_topology_name(name):
    err = only_error(BASE.replace("name: t", f"name: {name}"))
    assert (err.line, err.path) == (1, "name")
    assert "name must start with a letter or digit" in err.message


def test_missing_top_level_sections():
    errs = errors_of("name: t\n", build=False)
    assert {(e.path, e.message, e.line) for e in errs} == {
        ("sources", "required field is missing", 1),
        ("pipelines", "required field is missing", 1),
    }


def test_all_build_errors_are_reported_at_once():
    text = BASE.replace("value['a'] > 1", "open(1)").replace("to: out", "to: nope")
    errs = errors_of(text)
    assert [(e.line, e.path) for e in errs] == [
        (11, "pipelines[0].steps[0].filter"),
        (12, "pipelines[0].steps[1].to"),
    ]


def test_python_step_reference_errors():
    err = only_error(BASE.replace("      - to: out", "      - python: no_such_mod_q:fn"))
    assert (err.line, err.path) == (12, "pipelines[0].steps[1].python")
    assert "cannot import module 'no_such_mod_q'" in err.message
    err = only_error(BASE.replace("      - to: out", "      - python: nocolon"))
    assert (err.line, err.path) == (12, "pipelines[0].steps[1].python")
    assert "should match pattern" in err.message


def test_error_renders_as_file_line_path_message():
    err = only_error(BASE.replace("from: orders", "from: nope"))
    assert err.render() == "t.yaml:9: pipelines[0].from: unknown source 'nope' (sources: orders)"


def test_load_spec_missing_file(tmp_path):
    missing = tmp_path / "missing.yaml"
    with pytest.raises(SpecErrors) as info:
        load_spec(missing)
    (err,) = info.value.errors
    assert err.file == str(missing)
    assert err.message.startswith("cannot read file")


# -- CLI -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda p: p.name)
def test_cli_validate_valid(path, capsys):
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"ok: {path}: topology ")
    assert err == ""


def test_cli_validate_invalid(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(BASE.replace("from: orders", "from: nope").replace("to: out", "to: nope"))
    assert main(["validate", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"error: {path}:9: pipelines[0].from: unknown source 'nope' (sources: orders)",
    ]
    assert "Traceback" not in err


def test_cli_validate_reports_every_error(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(BASE.replace("value['a'] > 1", "open(1)").replace("to: out", "to: nope"))
    assert main(["validate", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"error: {path}:11: pipelines[0].steps[0].filter: invalid expression")
    assert lines[1].startswith(f"error: {path}:12: pipelines[0].steps[1].to: unknown sink 'nope'")


def test_cli_validate_yaml_syntax_error(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("name: t\nsources: [\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}:")
    assert "YAML syntax error" in err
    assert "Traceback" not in err


def test_cli_validate_missing_file(tmp_path, capsys):
    path = tmp_path / "nope.yaml"
    assert main(["validate", str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {path}: cannot read file")


def test_cli_describe(capsys):
    path = next(p for p in TOPOLOGIES if p.name == "revenue_per_user.yaml")
    assert main(["describe", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Topology revenue-per-user" in out
    assert "revenue-per-user-totals-changelog" in out
