"""`processor reset TOPOLOGY --to-savepoint DIR`: put an application back at a savepoint.

A reset (tools/reset.py: refused while the group has members; internal topics deleted, this
machine's state removed) that deletes the consumer group instead of moving its offsets, then a
restore of DIR into the now pristine application (tools/savepoint_restore.py), which commits
the savepoint's offsets last. The application resumes from the savepoint's offsets and state:
the same application after a reset, where `savepoint restore` alone goes into a new one. The
topology may be a changed one: the restore migrates as `savepoint restore` does
(tools/savepoint_migrate.py), and that plan is made first, so a savepoint the topology cannot
take is refused before anything is deleted.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, TextIO

import orjson

from processor.graph import Topology
from processor.runtime.config import WorkerConfig
from processor.tools.reset import Target, reset
from processor.tools.savepoint_format import read_manifest
from processor.tools.savepoint_migrate import Migration, plan_migration
from processor.tools.savepoint_restore import restore


def savepoint_target(root: Path, manifest: dict[str, Any]) -> Target:
    offsets = {(t, int(p)): off for t, saved in manifest["source_offsets"].items()
               for p, off in saved["committed"].items()}
    return Target("savepoint", savepoint=str(root), offsets=offsets)


def restore_plan(root: Path, manifest: dict[str, Any], topology: Topology,
                 migration: Migration) -> dict[str, Any]:
    """What the restore after the reset will write (the dry run's second plan)."""
    stores = {name: {"from": plan.source, "entries": plan.entries,
                     "partitions": manifest["stores"][plan.source]["partitions"]}
              for name, plan in migration.stores.items()}
    inflight = {new: sum(manifest["inflight"][old]["records"].values())
                for old, new in migration.topics.items() if new is not None}
    return {"savepoint": str(root), "application": topology.name, "stores": stores,
            "inflight_records": inflight, "migration": migration.describe()}


def render_restore_plan(plan: dict[str, Any], *, dry_run: bool) -> str:
    lines = [f"{'then restore' if dry_run else 'restore'} savepoint {plan['savepoint']} into "
             f"{plan['application']!r}:"]
    lines += [f"  store {name}: {s['entries']} entries in {s['partitions']} partition(s)"
              + (f" (from savepoint store {s['from']})" if s["from"] != name else "")
              for name, s in plan["stores"].items()]
    lines += [f"  in-flight records to re-produce into {t}: {n}"
              for t, n in plan["inflight_records"].items()]
    lines += [f"  {line}" for line in plan["migration"]]
    return "\n".join(lines)


def reset_to_savepoint(topology: Topology, config: WorkerConfig, root: Path, *,
                       renames: Mapping[str, str] | None = None, drops: Collection[str] = (),
                       delete_dlq: bool = False, dry_run: bool = False, as_json: bool = False,
                       out: TextIO = sys.stdout) -> dict[str, Any]:
    """Reset `topology`'s application and restore the savepoint at `root` into it; prints both
    plans (`dry_run`: changes nothing). Returns the restore's plan, or its result."""
    manifest = read_manifest(root)
    migration = plan_migration(manifest, topology, renames, drops)  # refuse before any change
    reset(topology, config, savepoint_target(root, manifest), delete_dlq=delete_dlq,
          dry_run=dry_run, as_json=as_json, out=out)
    plan = restore_plan(root, manifest, topology, migration)
    if dry_run:
        print(orjson.dumps(plan).decode() if as_json else render_restore_plan(plan, dry_run=True),
              file=out)
        return plan
    done = restore(root, topology, config, renames=renames, drops=drops)
    if as_json:
        print(orjson.dumps({**plan, **done}).decode(), file=out)
    else:
        print(render_restore_plan(plan, dry_run=False), file=out)
        print(f"restored: {done['records']} records in {done['seconds']:.1f}s, "
              f"{done['offsets_committed']} group offsets committed; start the workers", file=out)
    return done
