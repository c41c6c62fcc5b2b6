"""A fast yes/maybe check that a value fits a parsed Avro schema, generated once per schema.

fastavro's `validate` costs about as much as writing the record. Encode only needs it to reject
values the writer would silently coerce, and nearly all values are plain dicts, strs, ints and
floats that a few inline class checks can accept. So `fast_check(schema)` compiles one Python
function per record type that answers True only when fastavro's validate would accept the value
too; on False (a wrong or unusual value: a datetime or Decimal, a tuple for a list, an int subclass...)
the caller runs fastavro's validate, which decides and explains. The check never raises and
never accepts what validate would reject: it is an optimisation, not a second definition.

Only literals produced here (repr'd field names, ints) reach the generated source; enum symbol
sets are passed in as globals.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastavro.logical_writers import LOGICAL_WRITERS

from processor.codegen import define

Check = Callable[[Any], bool]
_RANGES = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_CLASSES = {"null": None, "boolean": "bool", "string": "str", "bytes": "bytes"}
# logical types whose fastavro writer passes an int (or, for uuid, a str) through unchanged, so
# that the base type's check stands; the others (decimal) are left to validate
_PASS_THROUGH = {"long-timestamp-millis", "long-local-timestamp-millis", "long-timestamp-micros",
                 "long-local-timestamp-micros", "int-date", "int-time-millis", "long-time-micros",
                 "string-uuid"}


class _Compiler:
    def __init__(self, definitions: dict[str, Any]) -> None:
        self.definitions = definitions
        self.functions: dict[str, str] = {}  # record name -> generated function name
        self.sources: list[str] = []
        self.env: dict[str, Any] = {"_M": object()}

    def expr(self, schema: Any, var: str, depth: int) -> str:
        """A boolean expression: does the value in `var` surely fit `schema`?"""
        if isinstance(schema, list):
            return "(" + " or ".join(self.expr(s, var, depth) for s in schema) + ")"
        if isinstance(schema, str):
            if schema in _CLASSES:
                cls = _CLASSES[schema]
                return f"{var} is None" if cls is None else f"{var}.__class__ is {cls}"
            if schema in _RANGES:
                low, high = _RANGES[schema]
                return f"({var}.__class__ is int and {low} <= {var} <= {high})"
            if schema in ("float", "double"):
                return f"({var}.__class__ is float or {var}.__class__ is int)"
            if schema in self.definitions:
                return self.expr(self.definitions[schema], var, depth)
            return "False"
        if not isinstance(schema, dict):
            return "False"
        kind = schema.get("type")
        logical = f"{kind}-{schema['logicalType']}" if "logicalType" in schema else None
        if logical is not None and logical not in _PASS_THROUGH and logical in LOGICAL_WRITERS:
            return "False"
        item = f"_y{depth}"
        if kind in ("record", "error"):
            return f"{self.record(schema)}({var})"
        if kind == "enum":
            symbols = f"_S{len(self.env)}"
            self.env[symbols] = frozenset(schema.get("symbols", ()))
            return f"({var}.__class__ is str and {var} in {symbols})"
        if kind == "fixed" and isinstance(schema.get("size"), int):
            return f"({var}.__class__ is bytes and len({var}) == {int(schema['size'])})"
        if kind == "array":
            inner = self.expr(schema.get("items"), item, depth + 1)
            return f"({var}.__class__ is list and all({inner} for {item} in {var}))"
        if kind == "map":
            inner = self.expr(schema.get("values"), item, depth + 1)
            return (f"({var}.__class__ is dict and all(_k{depth}.__class__ is str and {inner} "
                    f"for _k{depth}, {item} in {var}.items()))")
        if isinstance(kind, str) and kind not in ("fixed", "enum"):
            return self.expr(kind, var, depth)  # {"type": "string"}
        return "False"

    def record(self, schema: dict[str, Any]) -> str:
        name = schema.get("name", "")
        if name in self.functions:
            return self.functions[name]
        function = self.functions[name] = f"_r{len(self.functions)}"
        # '-type' names the record type for fastavro; validate decides those
        lines = [f"def {function}(v):", "    if v.__class__ is not dict or '-type' in v: return False"]
        for field in schema.get("fields", ()):
            missing = "_M"
            if "default" in field:  # as validate does: a field left out is checked as its default
                missing = f"_D{len(self.env)}"
                self.env[missing] = field["default"]
            lines.append(f"    x = v.get({str(field.get('name'))!r}, {missing})")
            lines.append(f"    if x is _M or not ({self.expr(field.get('type'), 'x', 0)}): return False")
        lines.append("    return True")
        self.sources.append("\n".join(lines))
        return function


def fast_check(schema: Any) -> Check:
    """The check for a schema as `fastavro.parse_schema` returns it."""
    definitions = schema.get("__named_schemas", {}) if isinstance(schema, dict) else {}
    compiler = _Compiler(definitions)
    top = compiler.expr(schema, "v", 0)
    source = "\n\n".join([*compiler.sources, f"def _check(v):\n    return {top}"])
    return define(source, "avro fast check", compiler.env, "_check")
