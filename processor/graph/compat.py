"""Whether existing state can be read by a changed topology: `classify(old, new)` of two layouts.

Each difference between the state layouts (graph/layout.py) gets one reason with a verdict:

- compatible: the new topology reads the existing state as the old one wrote it (a stateless
  step changed, a store or pipeline added, a store removed);
- needs a savepoint migration: the state is still meaningful but its bytes must be rewritten
  or moved first (an aggregate field added at the end or removed, a store renamed, the
  application renamed): `savepoint restore` and `reset --to-savepoint` carry it out
  (tools/savepoint_migrate.py);
- incompatible: the state means something else under the new topology (a field's function
  changed, fields reordered, a window's shape, the state's key or a join's kind changed).

The verdict of a change is the worst of its reasons. `processor upgrade-check` prints them and
the worker refuses to start a store whose recorded layout classifies worse than compatible,
with the same text (`store_reasons`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from processor.graph.layout import StateLayout, StoreLayout


class Verdict(enum.IntEnum):
    COMPATIBLE = 0
    MIGRATION = 1
    INCOMPATIBLE = 2

    def __str__(self) -> str:
        return ("compatible", "needs a savepoint migration", "incompatible")[self]


EXIT_CODES = {Verdict.COMPATIBLE: 0, Verdict.MIGRATION: 3, Verdict.INCOMPATIBLE: 4}

REPROCESS = ("to run it, reprocess: stop the workers and run `processor reset TOPOLOGY` (it "
             "deletes the state and moves the inputs back to the start), or start the new "
             "topology under a new application `name:` and retire the old one")
"""What a user can do about an incompatible change."""

MIGRATE = ("to keep the state, migrate it through a savepoint: stop the workers, `processor "
           "savepoint create OLD.yaml --to DIR`, then `processor reset NEW.yaml --to-savepoint "
           "DIR` (the same application) or `processor savepoint restore DIR NEW.yaml` (a new "
           "application `name:`), adding `--rename-store OLD=NEW` for a renamed store; or "
           + REPROCESS[len("to run it, "):])
"""What a user can do about a change that needs a savepoint migration (the commands)."""


def advice(verdict: Verdict) -> str:
    """The sentence a verdict worse than compatible ends with."""
    text = MIGRATE if verdict is Verdict.MIGRATION else REPROCESS
    return text[0].upper() + text[1:]


_EMPTY = {"count": "0", "sum": "0", "avg": "null", "min": "null", "max": "null", "first": "null",
          "last": "null"}


@dataclass(frozen=True)
class Reason:
    verdict: Verdict
    subject: str  # `store totals`, `repartition topic ...`, `stateless steps`
    text: str

    def render(self) -> str:
        return f"{self.subject}: {self.text}"


@dataclass
class TopicChanges:
    """Internal topics a change touches."""

    created: list[str] = field(default_factory=list)
    orphaned: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)


@dataclass
class Classification:
    reasons: list[Reason]
    topics: TopicChanges

    @property
    def verdict(self) -> Verdict:
        return max((r.verdict for r in self.reasons), default=Verdict.COMPATIBLE)


def _field_desc(f: dict) -> str:
    return f"{f['function']}({f['expression'] or ''})"


def _fields_reasons(old: list[dict], new: list[dict]) -> list[Reason]:
    """An accumulator is a list with one slot group per field, in field order."""
    out: list[tuple[Verdict, str]] = []
    before, after = {f["name"]: f for f in old}, {f["name"]: f for f in new}
    common_old = [n for n in before if n in after]
    common_new = [n for n in after if n in before]
    for name in common_old:
        a, b = before[name], after[name]
        if a["function"] != b["function"]:
            out.append((Verdict.INCOMPATIBLE, f"field {name!r}: function {a['function']} -> "
                        f"{b['function']}: its accumulator holds {a['function']}() state"))
        elif a["function"] == "python" and a["expression"] != b["expression"]:
            out.append((Verdict.INCOMPATIBLE, f"field {name!r}: reducer {a['expression']} -> "
                        f"{b['expression']}: its accumulator was written by {a['expression']}"))
        elif a["expression"] != b["expression"]:
            out.append((Verdict.COMPATIBLE, f"field {name!r}: expression {a['expression']} -> "
                        f"{b['expression']}: existing accumulators keep what the old "
                        "expression added up"))
        elif a != b:
            out.append((Verdict.COMPATIBLE, f"field {name!r}: initial value or merge function "
                        "changed: applies to keys and sessions started from now on"))
    if common_old != common_new:
        out.append((Verdict.INCOMPATIBLE, f"fields reordered ({', '.join(common_old)} -> "
                    f"{', '.join(common_new)}): accumulator slots are read by position"))
    for name in before:
        if name not in after:
            out.append((Verdict.MIGRATION, f"field {name!r} ({_field_desc(before[name])}) "
                        "removed: the slots after it would be read by the wrong fields (a savepoint "
                        "restore drops its slots)"))
    last_common = max((i for i, n in enumerate(after) if n in before), default=-1)
    for i, name in enumerate(after):
        if name in before:
            continue
        f = after[name]
        if i < last_common:
            out.append((Verdict.INCOMPATIBLE, f"field {name!r} ({_field_desc(f)}) inserted "
                        "before existing fields: accumulator slots are read by position (add "
                        "new fields at the end)"))
        else:
            initial = (repr(f.get("initial")) if f["function"] == "python"
                       else _EMPTY.get(f["function"], "null"))
            out.append((Verdict.MIGRATION, f"field {name!r} ({_field_desc(f)}) added at the "
                        f"end: existing accumulators need it appended with its initial value "
                        f"{initial} (a savepoint restore appends it: it then aggregates the "
                        "records after the restore)"))
    return [Reason(v, "", t) for v, t in out]


def _window_reasons(old: dict, new: dict) -> list[Reason]:
    ow, nw = old["window"], new["window"]
    out = []
    if ow["kind"] != nw["kind"]:
        out.append(Reason(Verdict.INCOMPATIBLE, "", f"window kind {ow['kind']} -> {nw['kind']}: "
                          "its entries are keyed by the old kind's windows"))
    elif ow != nw:
        sizes = ", ".join(f"{k} {ow.get(k)} -> {nw.get(k)}" for k in sorted(set(ow) | set(nw))
                          if ow.get(k) != nw.get(k))
        out.append(Reason(Verdict.INCOMPATIBLE, "", f"{ow['kind']} window {sizes}: open windows "
                          "are keyed by their old bounds"))
    for key in ("allowed_lateness", "emit"):
        if old.get(key) != new.get(key):
            out.append(Reason(Verdict.COMPATIBLE, "", f"window {key.replace('_', ' ')} "
                              f"{old.get(key)} -> {new.get(key)}: open windows are read as before"))
    return out


def _join_reasons(old: dict, new: dict) -> list[Reason]:
    out = []
    if old.get("state_format") != new.get("state_format"):
        was, now = old.get("state_format") or "process state", new.get("state_format") or "process state"
        out.append(Reason(Verdict.INCOMPATIBLE, "", f"state format {was} -> {now}: the open state "
                          "is stored in another layout"))
    if old.get("type") != new.get("type"):
        out.append(Reason(Verdict.INCOMPATIBLE, "", f"join type {old.get('type')} -> "
                          f"{new.get('type')}: buffered records carry the old type's matches"))
    os, ns = old["sides"], new["sides"]
    if len(os) != len(ns):
        out.append(Reason(Verdict.INCOMPATIBLE, "", f"inputs {', '.join(os)} -> {', '.join(ns)}: "
                          "open state holds one slot per input, by position"))
    elif os != ns:
        out.append(Reason(Verdict.COMPATIBLE, "", f"inputs renamed {', '.join(os)} -> "
                          f"{', '.join(ns)}: state is kept by input position"))
    for key in ("before", "after", "timeout", "mismatch"):
        if old.get(key) != new.get(key):
            out.append(Reason(Verdict.COMPATIBLE, "", f"{key} {old.get(key)} -> {new.get(key)}: "
                              "records already held keep the timers set when they arrived"))
    return out


def _process_reasons(old: dict, new: dict) -> list[Reason]:
    out = []
    if old["function"] != new["function"]:
        out.append(Reason(Verdict.INCOMPATIBLE, "", f"process function {old['function']} -> "
                          f"{new['function']}: its state was written by {old['function']}"))
    if old.get("on_timer") != new.get("on_timer"):
        out.append(Reason(Verdict.COMPATIBLE, "", f"timer function {old.get('on_timer')} -> "
                          f"{new.get('on_timer')}: registered timers fire into the new one"))
    return out


def _pattern_reasons(old: dict, new: dict) -> list[Reason]:
    if old["stages"] != new["stages"]:
        return [Reason(Verdict.INCOMPATIBLE, "", "pattern stages changed: its partial matches "
                       "refer to stages by position (drain them, or reset)")]
    out = []
    changed = sorted(n for n, c in new["conditions"].items() if old["conditions"].get(n) != c)
    if changed:
        out.append(Reason(Verdict.COMPATIBLE, "", f"conditions of {', '.join(changed)} changed: "
                          "partial matches go on under the new ones"))
    if old["within"] != new["within"]:
        out.append(Reason(Verdict.COMPATIBLE, "", f"within {old['within']} ms -> "
                          f"{new['within']} ms: partial matches expire by the new one"))
    return out


def store_reasons(old: StoreLayout, new: StoreLayout) -> list[Reason]:
    """Why the state of store `old` can (not) be read as `new` (the same store name)."""
    subject = f"store {new.store}"
    a, b = old.facts, new.facts
    if a == b and old.changelog == new.changelog:
        return []
    out: list[Reason] = []
    if old.changelog != new.changelog:
        out.append(Reason(Verdict.MIGRATION, "", f"changelog {old.changelog} -> {new.changelog} "
                          "(the application was renamed): the new one starts with empty state (a "
                          "savepoint restore carries the state over)"))
    if a["operator"] != b["operator"]:
        out.append(Reason(Verdict.INCOMPATIBLE, "", f"operator {a['operator']} -> "
                          f"{b['operator']}: the state was written by another kind of step"))
        return [Reason(r.verdict, subject, r.text) for r in out]
    ak, bk = a["key"], b["key"]
    if ak["format"] != bk["format"]:
        out.append(Reason(Verdict.INCOMPATIBLE, "", f"key format {ak['format']} -> "
                          f"{bk['format']}: state keys are the serialized keys"))
    if ak["from"] != bk["from"]:
        out.append(Reason(Verdict.INCOMPATIBLE, "", f"key {' / '.join(ak['from'])} -> "
                          f"{' / '.join(bk['from'])}: the state is keyed by the old key"))
    if "fields" in a:
        out += _fields_reasons(a["fields"], b["fields"])
    if a["operator"] == "window":
        out += _window_reasons(a, b)
    elif a["operator"] in ("interval_join", "reconcile"):
        out += _join_reasons(a, b)
    elif a["operator"] == "process":
        out += _process_reasons(a, b)
    elif a["operator"] == "pattern":
        out += _pattern_reasons(a, b)
    elif a.get("emit") != b.get("emit"):
        out.append(Reason(Verdict.COMPATIBLE, "", f"emit {a.get('emit')} -> {b.get('emit')}: "
                          "the accumulators are read as before"))
    return [Reason(r.verdict, subject, r.text) for r in out]


def likely_rename(gone: StoreLayout, candidates: list[StoreLayout]) -> StoreLayout | None:
    """The store of `candidates` that `gone` was probably renamed to: the same layout, else
    the first whose state a savepoint migration turns `gone`'s into (same operator and key)."""
    twin = next((s for s in candidates if s.fingerprint == gone.fingerprint), None)
    if twin is not None:
        return twin
    for s in candidates:
        reasons = store_reasons(StoreLayout(gone.store, s.changelog, gone.facts), s)
        if s.operator == gone.operator and max((r.verdict for r in reasons),
                                               default=Verdict.COMPATIBLE) <= Verdict.MIGRATION:
            return s
    return None


def _delete_hint(topic: str) -> str:
    return (f"delete it once no rollback needs it: kafka-topics.sh --bootstrap-server HOST:PORT "
            f"--delete --topic {topic}")


def classify(old: StateLayout, new: StateLayout) -> Classification:
    """Every difference between two topologies' state layouts, with its verdict."""
    reasons: list[Reason] = []
    topics = TopicChanges()
    for name in old.stores.keys() & new.stores.keys():
        reasons += store_reasons(old.stores[name], new.stores[name])
        if old.stores[name].changelog != new.stores[name].changelog:
            topics.created.append(new.stores[name].changelog)
            topics.orphaned.append(old.stores[name].changelog)
    removed = [s for n, s in old.stores.items() if n not in new.stores]
    added = [s for n, s in new.stores.items() if n not in old.stores]
    moved: dict[str, str] = {}  # a renamed store's repartition topic: old name -> new
    for gone in list(removed):
        twin = likely_rename(gone, added)
        if twin is None:
            continue
        removed.remove(gone)
        added.remove(twin)
        moved[f"{old.application}-{gone.store}-repartition"] = (
            f"{new.application}-{twin.store}-repartition")
        same = ("same layout as" if twin.fingerprint == gone.fingerprint
                else "a layout a savepoint restore migrates from that of")
        reasons.append(Reason(Verdict.MIGRATION, f"store {twin.store}", f"{same} removed "
                              f"store {gone.store}: probably a rename, and {gone.store}'s state "
                              f"would be lost (the new store starts empty from {twin.changelog}; a "
                              f"savepoint restore with --rename-store {gone.store}={twin.store} "
                              "carries it over)"))
        reasons += store_reasons(StoreLayout(gone.store, twin.changelog, gone.facts), twin)
        topics.created.append(twin.changelog)
        topics.orphaned.append(gone.changelog)
    for s in removed:
        reasons.append(Reason(Verdict.COMPATIBLE, f"store {s.store}", f"removed: its changelog "
                              f"{s.changelog} is left behind; {_delete_hint(s.changelog)}"))
        topics.orphaned.append(s.changelog)
    for s in added:
        reasons.append(Reason(Verdict.COMPATIBLE, f"store {s.store}", f"added ({s.operator}): "
                              f"starts empty, changelog {s.changelog} is created"))
        topics.created.append(s.changelog)
    for t in sorted(old.repartitions.keys() | new.repartitions.keys()):
        a, b = old.repartitions.get(t), new.repartitions.get(t)
        if a is None:
            topics.created.append(t)
        elif b is None:
            topics.orphaned.append(t)
            if moved.get(t) in new.repartitions:
                why = (f"renamed with its store to {moved[t]}: a savepoint restore with "
                       "--rename-store re-produces the records in flight into it; ")
            else:
                why = "no longer used: records still in it are not processed by the new topology; "
            reasons.append(Reason(Verdict.COMPATIBLE, f"repartition topic {t}", why
                                  + _delete_hint(t)))
        elif a != b:
            topics.changed.append(t)
    gone = sorted(set(old.stateless) - set(new.stateless))
    new_steps = sorted(set(new.stateless) - set(old.stateless))
    if gone or new_steps:
        text = "; ".join(([f"removed {', '.join(gone)}"] if gone else [])
                         + ([f"added {', '.join(new_steps)}"] if new_steps else []))
        reasons.append(Reason(Verdict.COMPATIBLE, "stateless steps", f"{text} (they keep no "
                              "state)"))
    reasons.sort(key=lambda r: -r.verdict)  # stable: the worst first, each in found order
    return Classification(reasons, topics)
