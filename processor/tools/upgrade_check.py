"""`processor upgrade-check OLD.yaml NEW.yaml`: may the new topology run on the old one's state?

A static diff of the two state layouts (graph/layout.py, graph/compat.py): the verdict, one
reason per change, and the internal topics touched. Exit 0 compatible, 3 needs a savepoint
migration, 4 incompatible (an invalid file exits 2 through the CLI's error handling).
"""

from __future__ import annotations

import orjson

from processor.graph import build_topology
from processor.graph.compat import EXIT_CODES, Classification, Verdict, advice, classify
from processor.graph.layout import StateLayout, state_layout
from processor.spec import load_spec


def _layout(path: str) -> StateLayout:
    return state_layout(build_topology(load_spec(path)))


def render_text(old: str, new: str, result: Classification) -> str:
    lines = [f"{result.verdict}: {old} -> {new}"]
    if not result.reasons:
        lines.append("  no change to state or internal topics")
    lines += [f"  {r.verdict}: {r.render()}" for r in result.reasons]
    t = result.topics
    touched = [("created", t.created), ("orphaned (left behind)", t.orphaned),
               ("changed (feeders or keys)", t.changed)]
    if any(topics for _, topics in touched):
        lines.append("internal topics:")
        lines += [f"  {what}: {', '.join(topics)}" for what, topics in touched if topics]
    if result.verdict is not Verdict.COMPATIBLE:
        lines.append(advice(result.verdict))
    return "\n".join(lines)


def render_json(old: str, new: str, result: Classification, layouts: tuple[StateLayout, ...]
                ) -> str:
    t = result.topics
    return orjson.dumps({
        "verdict": str(result.verdict), "exit_code": EXIT_CODES[result.verdict],
        "old": old, "new": new,
        "reasons": [{"verdict": str(r.verdict), "subject": r.subject, "reason": r.text}
                    for r in result.reasons],
        "internal_topics": {"created": t.created, "orphaned": t.orphaned, "changed": t.changed},
        "layouts": {"old": layouts[0].to_dict(), "new": layouts[1].to_dict()},
    }, option=orjson.OPT_INDENT_2).decode()


def upgrade_check(old: str, new: str, *, as_json: bool = False) -> int:
    """Print the verdict of running `new` on `old`'s state; returns the exit code."""
    layouts = (_layout(old), _layout(new))
    result = classify(*layouts)
    print(render_json(old, new, result, layouts) if as_json else render_text(old, new, result))
    return EXIT_CODES[result.verdict]
