"""Safe, compiled-once expressions over a record: `key`, `value`, `timestamp`.

An expression is parsed with `ast`, checked against an allow-list (no imports, no lambdas
that escape, no dunder or private attribute access, only whitelisted builtins), then compiled
into a plain Python function `f(key, value, timestamp)` so per-record cost is one call.
`**`, `<<` and `*` are compiled as calls of bounded versions (processor/expression_guards.py)
so that one record cannot hang the worker or exhaust its memory with a huge result.
"""

from __future__ import annotations

import ast
import copy
import importlib
from collections.abc import Callable
from typing import Any

from processor import expression_guards as guards
from processor.errors import ExpressionError

RECORD_NAMES = ("key", "value", "timestamp")

class BroadcastStates:
    """`broadcast` in expressions (and `ctx.broadcast` in process functions): the broadcast
    sources' current {key: value} maps. Expressions are compiled once per topology, before any
    worker exists, so they hold this stable proxy; the graph builder makes one per topology
    (`Topology.broadcast`) and the worker installs its state into it. Expressions compiled
    without one get an empty one: no broadcast source is declared for them."""

    def __init__(self) -> None:
        self.state: Any = None

    def install(self, state: Any) -> None:
        self.state = state

    def __getitem__(self, name: str) -> Any:
        if self.state is None:
            raise KeyError(f"no broadcast state {name!r}: the topology declares no broadcast source")
        return self.state[name]


SAFE_BUILTINS: dict[str, Any] = {
    "abs": abs, "all": all, "any": any, "bool": bool, "dict": dict, "float": float,
    "int": int, "len": len, "list": list, "max": max, "min": min, "round": round,
    "set": set, "sorted": sorted, "str": str, "sum": sum, "tuple": tuple, "isinstance": None,
    "enumerate": enumerate, "range": guards.bounded_range, "zip": zip, "reversed": reversed,
    "True": True, "False": False, "None": None, "math": guards.bounded_math(),
}
del SAFE_BUILTINS["isinstance"]
TOPOLOGY_NAMES = ("broadcast",)
"""Names bound per topology (see `builtins_for`) that every expression may read."""
# Operators compiled as calls. The names start with "__", which no expression may write.
_GUARDED_OPS: dict[type[ast.operator], str] = {
    ast.Pow: "__processor_pow", ast.LShift: "__processor_lshift", ast.Mult: "__processor_mul"}
SAFE_BUILTINS.update({"__processor_pow": guards.guarded_pow,
                      "__processor_lshift": guards.guarded_lshift,
                      "__processor_mul": guards.guarded_mul})
_SMALL_FACTOR = 16  # `x * 2` repeats a sequence at most this many times its own size: no guard

# Attributes that reach frames, code or arbitrary attribute lookups without a leading underscore.
_DENIED_ATTRS = frozenset({
    "format", "format_map", "gi_frame", "gi_code", "cr_frame", "cr_code", "ag_frame",
    "f_back", "f_globals", "f_locals", "f_builtins", "tb_frame", "tb_next", "mro",
})

_ALLOWED_NODES = (
    ast.Expression, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.IfExp, ast.Dict, ast.Set,
    ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.Compare, ast.Call,
    ast.Constant, ast.Attribute, ast.Subscript, ast.Name, ast.List, ast.Tuple, ast.Slice,
    ast.Load, ast.Store, ast.comprehension, ast.keyword, ast.JoinedStr, ast.FormattedValue,
    ast.And, ast.Or, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow,
    ast.USub, ast.UAdd, ast.Not, ast.Invert, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt,
    ast.GtE, ast.In, ast.NotIn, ast.Is, ast.IsNot, ast.BitAnd, ast.BitOr, ast.BitXor,
    ast.LShift, ast.RShift, ast.Starred,
)


def _check(tree: ast.AST, source: str, extra_names: frozenset[str]) -> None:
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.comprehension):
            for target in ast.walk(node.target):
                if isinstance(target, ast.Name):
                    bound.add(target.id)
    allowed_names = set(RECORD_NAMES) | set(SAFE_BUILTINS) | set(TOPOLOGY_NAMES) | bound | extra_names
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            raise ExpressionError(f"{type(node).__name__} is not allowed in an expression")
        if isinstance(node, ast.Attribute) and (
            node.attr.startswith("_") or node.attr in _DENIED_ATTRS
        ):
            raise ExpressionError(f"access to attribute {node.attr!r} is not allowed")
        if isinstance(node, ast.Attribute | ast.Subscript) and isinstance(node.ctx, ast.Store):
            raise ExpressionError("assigning to an attribute or item is not allowed")
        if isinstance(node, ast.Name):
            if node.id.startswith("__"):
                raise ExpressionError(f"name {node.id!r} is not allowed")
            if node.id not in allowed_names:
                raise ExpressionError(
                    f"unknown name {node.id!r} (available: "
                    f"{', '.join((*RECORD_NAMES, *sorted(extra_names)))} and builtins "
                    f"{', '.join(sorted(n for n in (*SAFE_BUILTINS, *TOPOLOGY_NAMES) if n[0].islower()))})"
                )


class _Guard(ast.NodeTransformer):
    """Rewrites `a ** b`, `a << b`, `a * b` into calls of the bounded versions; a product with
    a float or small int literal cannot blow up, and stays an operator (the common case)."""

    def visit_BinOp(self, node: ast.BinOp) -> ast.expr:
        self.generic_visit(node)
        name = _GUARDED_OPS.get(type(node.op))
        if name is None or (isinstance(node.op, ast.Mult)
                            and (_small_number(node.left) or _small_number(node.right))):
            return node
        call = ast.Call(func=ast.Name(id=name, ctx=ast.Load()), args=[node.left, node.right],
                        keywords=[])
        return ast.copy_location(call, node)


def _small_number(node: ast.expr) -> bool:
    if not isinstance(node, ast.Constant) or isinstance(node.value, bool):
        return False
    return isinstance(node.value, float) or (
        isinstance(node.value, int) and abs(node.value) <= _SMALL_FACTOR)


def parse_expression(source: str, extra_names: frozenset[str] = frozenset()) -> ast.Expression:
    """Parse and check an expression; raises ExpressionError with the reason."""
    if not isinstance(source, str) or not source.strip():
        raise ExpressionError("expression must be a non-empty string")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"syntax error: {exc.msg} at column {exc.offset}") from None
    except (ValueError, MemoryError, RecursionError):  # null bytes; nesting the parser refuses
        raise ExpressionError("expression is too deeply nested or not valid text") from None
    _check(tree, source, extra_names)
    return tree


def builtins_for(broadcast: BroadcastStates | None) -> dict[str, Any]:
    """The builtins code compiled for one topology runs with: the safe ones and its broadcast
    states (code generators that inline expressions, as aggregates do, need the same)."""
    return {**SAFE_BUILTINS, "broadcast": BroadcastStates() if broadcast is None else broadcast}


def expression_builtins(fn: Callable[..., Any]) -> dict[str, Any]:
    """The builtins a compiled expression runs with, for code that inlines its source (fusion)."""
    builtins: dict[str, Any] = fn.__globals__["__builtins__"]
    return builtins


def compile_expression(source: str, broadcast: BroadcastStates | None = None,
                       args: tuple[str, ...] = RECORD_NAMES) -> Callable[..., Any]:
    """Compile `source` into `f(key, value, timestamp)` (or `f(*args)`: steps that give their
    expressions more names, e.g. `match` in a pattern); `broadcast` is its topology's."""
    tree = parse_expression(source, frozenset(args) - set(RECORD_NAMES))
    return compile_tree(tree.body, source, broadcast, args)


def guarded_source(source: str) -> str:
    """A checked expression as source text with its operators guarded, for code generators
    that compile expressions into functions of their own (fusion does this from
    `fn.expr_source`; aggregates should too, or their expressions run unguarded)."""
    return ast.unparse(_Guard().visit(parse_expression(source).body))


def compile_tree(body: ast.expr, source: str, broadcast: BroadcastStates | None = None,
                 args: tuple[str, ...] = RECORD_NAMES) -> Callable[..., Any]:
    """Wrap a checked expression body in a lambda, with guarded operators, and compile it once.

    CPython's compiler raises SyntaxError for some trees the parser accepts (`*value` alone),
    and RecursionError for very deep ones: both are an invalid expression."""
    try:
        return _compile(_Guard().visit(copy.deepcopy(body)), source, builtins_for(broadcast), args)
    except SyntaxError as exc:
        raise ExpressionError(f"syntax error: {exc.msg}") from None
    except (ValueError, MemoryError, RecursionError):
        raise ExpressionError("expression is too deeply nested to compile") from None


def _compile(body: ast.expr, source: str, builtins: dict[str, Any],
             args: tuple[str, ...] = RECORD_NAMES) -> Callable[..., Any]:
    lam = ast.Expression(
        body=ast.Lambda(
            args=ast.arguments(
                posonlyargs=[], args=[ast.arg(arg=n) for n in args], vararg=None,
                kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[],
            ),
            body=body,
        )
    )
    ast.fix_missing_locations(lam)
    code = compile(lam, f"<expression: {source}>", "eval")
    fn = eval(code, {"__builtins__": builtins})  # checked AST, restricted builtins
    fn.expr_source = ast.unparse(body)  # checked source, for fusing steps (operators/fusion.py)
    return fn


def load_callable(ref: str) -> Callable[..., Any]:
    """Import `package.module:function`; errors say which part is missing."""
    if not isinstance(ref, str) or ref.count(":") != 1:
        raise ExpressionError(f"python reference must look like 'package.module:function', got {ref!r}")
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ExpressionError(f"cannot import module {module_name!r}: {exc}") from None
    fn = module
    for part in attr.split("."):
        try:
            fn = getattr(fn, part)
        except AttributeError:
            raise ExpressionError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not callable(fn):
        raise ExpressionError(f"{ref!r} is not callable")
    return fn
