"""Restoring a savepoint into a changed topology: which saved store goes into which store, and
how its entries are rewritten on the way (`savepoint restore`, `reset --to-savepoint`).

The changes `upgrade-check` calls "needs a savepoint migration" are carried out here:

- an aggregate (or windowed aggregate) field added at the end, or removed: every accumulator
  the store holds is reshaped (operators/accumulators.py) — an added field starts at its
  initial value, so it aggregates the records processed after the restore;
- a store renamed: only with an explicit `--rename-store OLD=NEW`; its entries go to NEW's
  changelog and its in-flight records to NEW's repartition topic (named after the store);
- a store of the savepoint the topology no longer has: refused, unless `--drop-store NAME`
  drops its state (and its in-flight records) explicitly; a store of the topology the savepoint
  lacks starts empty;
- the application renamed: the topics follow the topology's `name:`.

Anything `upgrade-check` calls incompatible is refused with its reasons. The plan is made
before anything is written, so a refused restore (or `reset --to-savepoint`) changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from processor.graph import Topology
from processor.graph.compat import REPROCESS, Verdict, likely_rename, store_reasons
from processor.graph.layout import StoreLayout, state_layout
from processor.operators.accumulators import entry_rewriter, reshaper
from processor.tools.savepoint_format import SavepointError, decode_bytes, encode_bytes

REPARTITION = "-repartition"


@dataclass
class StoreMigration:
    """One store of the topology restored from the savepoint's store `source`."""

    source: str
    target: str
    entries: int
    rewrite: tuple[bytes, Callable[[Any], Any]] | None = None  # operators/accumulators.py
    changes: list[str] = field(default_factory=list)

    def lines(self, lines: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """The savepoint's entry lines of the store as the target's operator reads them."""
        if self.rewrite is None:
            yield from lines
            return
        prefix, rewrite = self.rewrite
        for line in lines:
            key = decode_bytes(line, "key")
            if key is None or not key.startswith(prefix):
                yield line  # no accumulator in it (a window marker): kept byte for byte
                continue
            try:
                # an operator's value is compact JSON: the line holds it parsed
                value = line["value"] if "value" in line else orjson.loads(
                    decode_bytes(line, "value") or b"")
                value = rewrite(value)
            except (ValueError, TypeError) as exc:  # orjson.JSONDecodeError is a ValueError
                raise SavepointError(f"store {self.source}: entry {key!r} is not the state "
                                     f"its layout describes ({exc})") from None
            yield {**encode_bytes("key", key), "value": value}


@dataclass
class Migration:
    """Every store of the topology with where its state comes from, and what is left out."""

    stores: dict[str, StoreMigration]  # by the topology's store name
    added: list[str]
    dropped: dict[str, int]  # savepoint store -> its entries, not restored
    topics: dict[str, str | None]  # savepoint repartition topic -> the topology's (None: dropped)

    def topic(self, saved: str) -> str | None:
        return self.topics[saved]

    def saved_topic(self, topic: str) -> str | None:
        """The savepoint's name of one of the topology's repartition topics (None: a new one)."""
        return next((s for s, t in self.topics.items() if t == topic), None)

    def describe(self) -> list[str]:
        """One line per store that is not restored as it was saved."""
        out = []
        for name, s in self.stores.items():
            what = [f"from savepoint store {s.source}"] if s.source != name else []
            if s.changes:
                what.append(f"{s.entries} entries rewritten: " + ", ".join(s.changes))
            if what:
                out.append(f"store {name}: " + "; ".join(what))
        out += [f"store {name}: new, starts empty" for name in self.added]
        out += [f"savepoint store {name}: dropped (--drop-store), {n} entries not restored"
                for name, n in self.dropped.items()]
        out += [f"in-flight records of {t}: dropped with their store"
                for t, new in self.topics.items() if new is None]
        return out


def _field_changes(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[str]:
    before, after = {f["name"] for f in old}, {f["name"] for f in new}
    return ([f"field {f['name']!r} ({f['function']}) appended at its initial value"
             for f in new if f["name"] not in before]
            + [f"field {f['name']!r} ({f['function']}) removed" for f in old
               if f["name"] not in after])


def _store(source: str, saved: dict[str, Any], target: StoreLayout, problems: list[str]
           ) -> StoreMigration:
    entries = sum(saved.get("entries", {}).values())
    plan = StoreMigration(source, target.store, entries)
    if "layout" not in saved:  # a savepoint from before layouts: restored as it is
        return plan
    old = StoreLayout.from_json(orjson.dumps(saved["layout"]))
    # the changelog's name follows the application, which a restore may change
    old = StoreLayout(old.store, target.changelog, old.facts)
    reasons = store_reasons(old, target)
    bad = [r for r in reasons if r.verdict is Verdict.INCOMPATIBLE]
    if bad:
        problems += [r.render() for r in bad]
    elif any(r.verdict is Verdict.MIGRATION for r in reasons):
        # graph/compat.py: with the changelog set equal, the only migrations are fields
        # appended or removed, which a reshape carries out
        fields_old, fields_new = old.facts["fields"], target.facts["fields"]
        plan.rewrite = entry_rewriter(target.facts, reshaper(fields_old, fields_new))
        plan.changes = _field_changes(fields_old, fields_new)
    return plan


def _check_options(saved: Mapping[str, Any], targets: Mapping[str, StoreLayout],
                   renames: Mapping[str, str], drops: Collection[str]) -> None:
    have = ", ".join(saved) or "none"
    into: dict[str, str] = {}
    for old, new in renames.items():
        if old in drops:
            raise SavepointError(f"store {old!r}: both --rename-store and --drop-store")
        if old not in saved:
            raise SavepointError(f"--rename-store {old}={new}: the savepoint has no store "
                                 f"{old!r} (it has: {have})")
        if new not in targets:
            raise SavepointError(f"--rename-store {old}={new}: the topology has no store "
                                 f"{new!r} (it has: {', '.join(targets) or 'none'})")
        if new in into:
            raise SavepointError(f"--rename-store {into[new]}={new} and {old}={new}: one store "
                                 "takes the state of one savepoint store")
        if new in saved and new not in renames and new not in drops:
            raise SavepointError(f"--rename-store {old}={new}: store {new!r} of the topology "
                                 f"already restores the savepoint's store {new!r}")
        into[new] = old
    for name in drops:
        if name not in saved:
            raise SavepointError(f"--drop-store {name}: the savepoint has no store {name!r} "
                                 f"(it has: {have})")
        if name in targets and name not in into:
            raise SavepointError(f"--drop-store {name}: the topology has store {name!r}, which "
                                 "restores its state (only a store the topology no longer has "
                                 "is dropped)")


def _unmatched(saved: Mapping[str, Any], targets: Mapping[str, StoreLayout], taken: set[str],
               names: list[str]) -> str:
    """Why the savepoint's stores `names` have no store to go to, naming likely renames."""
    free = [t for n, t in targets.items() if n not in taken]
    out = []
    for name in names:
        layout = saved[name].get("layout")
        twin = (likely_rename(StoreLayout.from_json(orjson.dumps(layout)), free)
                if layout else None)
        if twin is not None:
            out.append(f"store {twin.store}: its layout matches savepoint store {name}'s: "
                       f"probably a rename, and {name}'s state would be lost: restore with "
                       f"--rename-store {name}={twin.store} (or --drop-store {name} to drop "
                       "its state)")
        else:
            out.append(f"savepoint store {name}: the topology has no such store: --drop-store "
                       f"{name} drops its state, --rename-store {name}=NEW restores it into "
                       "store NEW")
    return "; ".join(out)


def _topics(manifest: dict[str, Any], topology: Topology, renames: Mapping[str, str],
            drops: Collection[str]) -> dict[str, str | None]:
    """Each saved repartition topic's new name: `<application>-<store>-repartition`, the
    application and the store renamed as the restore renames them."""
    old_app, app = manifest["application"], topology.name
    internal = {s.source.topic for s in topology.subtopologies if s.source.internal}
    out: dict[str, str | None] = {}
    for topic, saved in manifest["inflight"].items():
        rest = topic[len(old_app):] if topic.startswith(old_app) else None
        label = (rest[1:-len(REPARTITION)] if rest and rest.startswith("-")
                 and rest.endswith(REPARTITION) else None)
        if label is not None:
            new: str = f"{app}-{renames.get(label, label)}{REPARTITION}"
        else:
            new = app + rest if rest is not None else topic
        if new in internal:
            out[topic] = new
            continue
        records = sum(saved.get("records", {}).values())
        if records and label not in drops:
            raise SavepointError(
                f"repartition topic {topic} of the savepoint holds {records} in-flight "
                f"record(s) for a step the topology no longer has (it has no {new}): "
                f"--drop-store {label} drops them with that store's state")
        out[topic] = None
    return out


def plan_migration(manifest: dict[str, Any], topology: Topology,
                   renames: Mapping[str, str] | None = None, drops: Collection[str] = ()
                   ) -> Migration:
    """Where each of `topology`'s stores gets its state from the savepoint, and how it is
    rewritten; raises SavepointError with every reason when the savepoint cannot go there."""
    renames = dict(renames or {})
    saved = manifest["stores"]
    targets = state_layout(topology).stores
    _check_options(saved, targets, renames, drops)
    sources = {renames.get(n, n): n for n in saved if n not in drops}
    unmatched = [n for t, n in sources.items() if t not in targets]
    if unmatched:
        raise SavepointError("the savepoint's stores do not all go into this topology: "
                             + _unmatched(saved, targets, set(sources), unmatched))
    problems: list[str] = []
    stores = {t: _store(n, saved[n], targets[t], problems) for t, n in sources.items()}
    if problems:
        raise SavepointError("the savepoint's state cannot be read by this topology: "
                             + "; ".join(problems) + f" (a savepoint restore migrates fields "
                             f"added at the end or removed and renamed stores, not this; "
                             f"{REPROCESS})")
    return Migration(stores, [n for n in targets if n not in stores],
                     {n: sum(saved[n].get("entries", {}).values()) for n in drops},
                     _topics(manifest, topology, renames, drops))
