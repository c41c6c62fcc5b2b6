"""Per-key aggregate over a store, with a write cache flushed at each checkpoint.

The aggregate fields (`count()`, `sum(expr)`, ...) are compiled into one generated function
that updates a list-shaped accumulator in place, so each record costs one Python call no
matter how many fields there are. The accumulator list is what the store and changelog hold.
"""

from __future__ import annotations

import ast
import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from processor.codegen import compile_generated
from processor.errors import ExpressionError
from processor.expressions import (
    BroadcastStates,
    builtins_for,
    guarded_source,
    load_callable,
    parse_expression,
)
from processor.operators.base import (
    Batch,
    Queryable,
    Record,
    StatefulOperator,
    StoreKeys,
    Writes,
    failed_at,
)
from processor.serde.formats import compact_json

AGG_FUNCS = ("count", "sum", "min", "max", "avg", "first", "last")

# the store key is the record key's bytes, the accumulator list its value
STORE_KEYS = StoreKeys("<key>", lambda store_key: store_key)


class KeyValueReader(Protocol):
    """What an aggregate needs from its store: committed values by serialized key."""

    def get(self, key: bytes) -> bytes | None: ...


@dataclass(frozen=True)
class FieldAgg:
    """One output field: an aggregate function over an expression, or a Python reducer."""

    name: str
    func: str  # one of AGG_FUNCS or "python"
    expr: str | None = None
    reducer: str | None = None
    initial: Any = None
    merge: str | None = None  # python reducers: `merge(earlier, later)`, for session windows


def parse_field(name: str, spec: str | Any) -> FieldAgg:
    """Parse `sum(value['x'])`-style text (or a python reducer spec) into a FieldAgg."""
    if not isinstance(spec, str):
        load_callable(spec.python)
        merge = getattr(spec, "merge", None)
        if merge is not None:
            load_callable(merge)
        return FieldAgg(name, "python", reducer=spec.python, initial=spec.initial, merge=merge)
    try:
        tree = ast.parse(spec.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"syntax error: {exc.msg}") from None
    call = tree.body
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
            and call.func.id in AGG_FUNCS and not call.keywords):
        raise ExpressionError(
            f"aggregate field must be one of {', '.join(f + '(...)' for f in AGG_FUNCS)}, "
            f"or {{python: module:function, initial: ...}}; got {spec!r}"
        )
    func = call.func.id
    if func == "count" and not call.args:
        return FieldAgg(name, "count")
    if len(call.args) != 1:
        raise ExpressionError(f"{func}() takes exactly one expression argument")
    expr = ast.unparse(call.args[0])
    parse_expression(expr)
    return FieldAgg(name, func, expr=expr)


SLOTS = {"count": 1, "sum": 1, "min": 1, "max": 1, "avg": 2, "first": 2, "last": 1, "python": 1}
"""How many accumulator slots each function's field takes (its slot group)."""
_INITIAL = {"count": [0], "sum": [0], "min": [None], "max": [None], "avg": [0, 0],
            "first": [0, None], "last": [None]}


def initial_slots(func: str, initial: Any = None) -> list[Any]:
    """A field's slot group before any record: `initial` (a copy) for a python reducer."""
    return [copy.deepcopy(initial)] if func == "python" else list(_INITIAL[func])


def _field_code(f: FieldAgg, i: int, r: int) -> tuple[list[str], list[int]]:
    """(lines computing the new slot values into locals n<slot>, the slots they set).

    All fields are computed before any slot is assigned, so a record whose expression fails
    leaves the accumulator unchanged: the runtime can dead-letter it and go on."""
    x = f"({guarded_source(f.expr)})" if f.expr else None  # `**`, `*`, `<<` bounded
    s0, s1, n0, n1 = f"s[{i}]", f"s[{i + 1}]", f"n{i}", f"n{i + 1}"
    match f.func:
        case "count" if x is None:
            return [f"{n0} = {s0} + 1"], [i]
        case "count":
            return [f"{n0} = {s0} + 1 if {x} is not None else {s0}"], [i]
        case "sum":
            return [f"x = {x}", f"{n0} = {s0} + x if x is not None else {s0}"], [i]
        case "min" | "max":
            op = "<" if f.func == "min" else ">"
            return [f"x = {x}",
                    f"{n0} = x if x is not None and ({s0} is None or x {op} {s0}) else {s0}"], [i]
        case "avg":
            return [f"x = {x}", "if x is not None:", f"    {n0} = {s0} + x", f"    {n1} = {s1} + 1",
                    "else:", f"    {n0} = {s0}", f"    {n1} = {s1}"], [i, i + 1]
        case "first":
            return [f"if not {s0}:", f"    {n0} = 1", f"    {n1} = {x}",
                    "else:", f"    {n0} = {s0}", f"    {n1} = {s1}"], [i, i + 1]
        case "last":
            return [f"{n0} = {x}"], [i]
        case "python":
            return [f"{n0} = _reducer_{r}({s0}, key, value)"], [i]
    raise AssertionError(f.func)


def _result_code(f: FieldAgg, i: int) -> str:
    match f.func:
        case "avg":
            return f"(s[{i}] / s[{i + 1}] if s[{i + 1}] else None)"
        case "first":
            return f"s[{i + 1}]"
        case "python":  # a reducer may mutate its accumulator: emit a snapshot
            return f"_copy(s[{i}])"
        case _:
            return f"s[{i}]"


def _merge_code(f: FieldAgg, i: int, r: int) -> list[str]:
    """Slot expressions of `merge(a, b)`: `a` the earlier accumulator, `b` the later one."""
    a, b = f"a[{i}]", f"b[{i}]"
    match f.func:
        case "count" | "sum":
            return [f"{a} + {b}"]
        case "min" | "max":
            op = "<" if f.func == "min" else ">"
            return [f"({a} if {b} is None or ({a} is not None and not ({b} {op} {a})) else {b})"]
        case "avg":
            return [f"{a} + {b}", f"a[{i + 1}] + b[{i + 1}]"]
        case "first":  # [seen, value]: the earlier one's, unless it saw nothing
            return [f"({a} or {b})", f"(a[{i + 1}] if {a} else b[{i + 1}])"]
        case "last":
            return [f"({a} if {b} is None else {b})"]
        case "python":
            return [f"_merge_{r}({a}, {b})"]
    raise AssertionError(f.func)


@dataclass
class CompiledAggregation:
    """Generated update/result functions plus the initial accumulator layout.

    `merge(earlier, later)` combines two accumulators into a new one (session windows merge
    sessions with it); None when a python field has no `merge` — `no_merge` names them."""

    update: Callable[[list[Any], Any, Any, int], None]
    result: Callable[[list[Any]], dict[str, Any]]
    initial: list[Any]
    merge: Callable[[list[Any], list[Any]], list[Any]] | None = None
    no_merge: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # numbers, strings and None are shared safely: a plain copy of the list will do
        self._flat = all(isinstance(x, int | float | str | type(None)) for x in self.initial)

    def new_state(self) -> list[Any]:
        return list(self.initial) if self._flat else copy.deepcopy(self.initial)


def compile_aggregation(fields: list[FieldAgg], broadcast: BroadcastStates | None = None
                        ) -> CompiledAggregation:
    """Generate one update function and one result function for all fields; their
    expressions read `broadcast` as the topology's."""
    update_lines = ["def _update(s, key, value, timestamp):"]
    result_items: list[str] = []
    merge_items: list[str] = []
    no_merge: list[str] = []
    initial: list[Any] = []
    assigned: list[int] = []
    env: dict[str, Any] = {"__builtins__": builtins_for(broadcast), "_copy": copy.deepcopy}
    slot = 0
    for r, f in enumerate(fields):
        if f.func == "python":
            env[f"_reducer_{r}"] = load_callable(f.reducer or "")
            if f.merge:
                env[f"_merge_{r}"] = load_callable(f.merge)
            else:
                no_merge.append(f.name)
        initial.extend(initial_slots(f.func, f.initial))
        lines, slots = _field_code(f, slot, r)
        update_lines.extend("    " + line for line in lines)
        assigned.extend(slots)
        result_items.append(f"{f.name!r}: {_result_code(f, slot)}")
        merge_items.extend(_merge_code(f, slot, r))
        slot += SLOTS[f.func]
    update_lines.extend(f"    s[{i}] = n{i}" for i in assigned)
    source = "\n".join(update_lines) + "\n\ndef _result(s):\n    return {" + ", ".join(result_items) + "}\n"
    if not no_merge:
        source += "\ndef _merge(a, b):\n    return [" + ", ".join(merge_items) + "]\n"
    exec(compile_generated(source, "aggregate"), env)
    return CompiledAggregation(env["_update"], env["_result"], initial, env.get("_merge"),
                               tuple(no_merge))


def _offset(record: Record) -> int:
    return record[3]


# a cached entry's bytes, estimated as ENTRY_BYTES + its key's length + RAW_FACTOR x its JSON
# length: fitted to the resident memory a million cached accumulators take in a worker (about
# 1.5x what tracemalloc counts for the dict slot, the list, its numbers and the key: the rest
# is the allocator's slack and the per-checkpoint copies)
ENTRY_BYTES = 200
RAW_FACTOR = 9


class Aggregate(StatefulOperator, Queryable):
    """Keyed aggregate. Reads through a cache; dirty keys go to the changelog at flush.

    emit="every_record": one downstream record per input record (a full update stream).
    emit="on_checkpoint": the latest result per changed key, once per checkpoint (the cache
    de-duplicates, as Kafka Streams' record cache does) — far fewer output and changelog records.
    """

    def __init__(self, name: str, store_name: str, agg: CompiledAggregation,
                 key_encode: Callable[[Any], bytes | None], emit: str = "on_checkpoint",
                 cache_max_entries: int = 100_000) -> None:
        self.name = name
        self.store_name = store_name
        self.agg = agg
        self.key_encode = key_encode
        self.every_record = emit == "every_record"
        self.cache_max_entries = cache_max_entries
        self.store: KeyValueReader | None = None
        self.cache: dict[bytes, list[Any]] = {}
        # dirty key bytes -> (key, latest timestamp, latest offset)
        self.dirty: dict[bytes, tuple[Any, int, int]] = {}
        self.recent: set[bytes] = set()  # the keys the last flush wrote: kept by a trim
        self.entry_bytes = ENTRY_BYTES + 64  # running estimate, refined at each flush
        self.skip_below = -1  # input offsets the restored store already reflects

    def bind(self, store: KeyValueReader, skip_below: int = -1) -> None:
        self.store = store
        self.skip_below = skip_below

    def _load(self, kb: bytes) -> list[Any]:
        assert self.store is not None, "aggregate used before bind()"
        raw = self.store.get(kb)
        return self.agg.new_state() if raw is None else orjson.loads(raw)

    def read(self, store: KeyValueReader, kb: bytes) -> Any:
        """The committed result for key bytes `kb` (queryable state), or None."""
        raw = store.get(kb)
        return None if raw is None else self.agg.result(orjson.loads(raw))

    def process(self, batch: Batch) -> Batch:
        cache, dirty, update, enc = self.cache, self.dirty, self.agg.update, self.key_encode
        skip = self.skip_below
        out: Batch = []
        record: Record | None = None
        try:
            for record in batch:
                k, v, t, o = record
                if v is None or o < skip:
                    continue  # tombstones don't aggregate; offsets below skip are already in state
                kb = enc(k)
                if kb is None:
                    raise ValueError("record key is null; an aggregate needs a key (use key_by)")
                s = cache.get(kb)
                if s is None:
                    s = cache[kb] = self._load(kb)
                update(s, k, v, t)
                dirty[kb] = (k, t, o)
                if self.every_record:
                    out.append((k, self.agg.result(s), t, o))
        except Exception as exc:
            raise failed_at(self.name, batch, record, exc, out) from exc
        return out

    def flush(self) -> tuple[Batch, Writes]:
        """Return (records to emit downstream, changelog writes) for keys changed since last flush."""
        cache, result = self.cache, self.agg.result
        # copies: orjson's bytes keep 4 KiB each until the commit, 100 MB for 25k changed keys
        writes: Writes = {kb: compact_json(cache[kb]) for kb in self.dirty}
        if writes:
            sample = len(writes) * ENTRY_BYTES + sum(
                len(kb) + RAW_FACTOR * len(raw) for kb, raw in writes.items())  # type: ignore[arg-type]
            self.entry_bytes = sample // len(writes)
            self.recent = set(writes)
        emits: Batch = []
        if not self.every_record:
            emits = [(k, result(cache[kb]), t, o) for kb, (k, t, o) in self.dirty.items()]
            # in input order: a downstream repartition de-duplicates by increasing source offset
            emits.sort(key=_offset)
        self.dirty = {}
        return emits, writes

    def committed(self) -> None:
        """The flushed writes are now in the store: the cache may be trimmed."""
        if len(self.cache) > self.cache_max_entries:
            self.trim_cache()

    def cache_bytes(self) -> int:
        return len(self.cache) * self.entry_bytes

    def trim_cache(self) -> None:
        """Keep the keys the last checkpoint wrote (the likeliest to come again) and whatever
        is dirty; the rest is in the store. With more recent keys than half the cache, all go."""
        cache, keep = self.cache, self.recent.union(self.dirty)
        if len(keep) * 2 > len(cache):
            keep = set(self.dirty)
        self.cache = {kb: cache[kb] for kb in keep if kb in cache}

    def discard(self) -> None:
        """Forget uncommitted work (dirty close)."""
        self.cache.clear()
        self.dirty.clear()
        self.recent.clear()
