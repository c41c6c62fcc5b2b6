"""Bounds given on the command line (`--start SOURCE=POINT`, `--end SOURCE=POINT`).

They override or add a stream source's `bounded:` range without editing the topology, so
the same file runs live, or over a slice of history: `processor run` and `processor batch`
take the same flags and call `with_bounds`. POINT is `earliest`, `latest`, an ISO-8601 time,
epoch milliseconds, or `partition:offset` pairs (`0:120,1:98`).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from processor.errors import ProcessorError
from processor.spec.bounded import Bound, BoundedSpec, BoundPoint
from processor.spec.loader import LoadedSpec
from processor.spec.models import TopologySpec

_OFFSETS = re.compile(r"^\d+:\d+(,\d+:\d+)*$")


def parse_point(text: str) -> BoundPoint:
    """A POINT as written on the command line; ValueError says what is wrong."""
    text = text.strip()
    if text in ("earliest", "latest"):
        return text  # type: ignore[return-value]
    try:
        if _OFFSETS.match(text):
            pairs = (pair.split(":") for pair in text.split(","))
            offsets: dict[int, int] = {}
            for p, o in pairs:
                if int(p) in offsets:
                    raise ValueError(f"partition {p} is given twice")
                offsets[int(p)] = int(o)
            return Bound(offsets=offsets)
        return Bound(timestamp=text)  # type: ignore[arg-type]  # ISO-8601 or epoch ms
    except ValidationError as exc:
        raise ValueError(_first_message(exc)) from None


def parse_override(arg: str, flag: str) -> tuple[str, BoundPoint]:
    """`SOURCE=POINT` -> (source, point); ProcessorError naming `flag` when malformed."""
    source, sep, point = arg.partition("=")
    if not sep or not source or not point:
        raise ProcessorError(f"{flag} {arg!r}: expected SOURCE=POINT (POINT: earliest, latest, "
                             "an ISO-8601 time, epoch ms, or partition:offset,...)")
    try:
        return source, parse_point(point)
    except ValueError as exc:
        raise ProcessorError(f"{flag} {arg!r}: {exc} (POINT: earliest, latest, an ISO-8601 "
                             "time, epoch ms, or partition:offset,...)") from None


def with_bounds(loaded: LoadedSpec, starts: Mapping[str, BoundPoint],
                ends: Mapping[str, BoundPoint]) -> LoadedSpec:
    """A copy of `loaded` whose sources named in `starts` / `ends` are bounded there; the
    side not given keeps the source's own `bounded:` value, else its default (start:
    earliest, end: latest). A source that is unknown, not a stream, or reads files or a
    backfill is a ProcessorError."""
    if not starts and not ends:
        return loaded
    spec = loaded.spec
    data = copy.deepcopy(loaded.data)
    for name in dict.fromkeys([*starts, *ends]):
        flag = "--start" if name in starts else "--end"
        source = spec.sources.get(name)
        if source is None:
            raise ProcessorError(f"{flag} {name}=...: no source {name!r} (sources: "
                                 f"{', '.join(spec.sources)})")
        if source.kind != "stream" or source.file is not None or source.backfill is not None:
            what = "files" if source.file is not None else (
                "a backfill" if source.backfill is not None else f"a {source.kind}")
            raise ProcessorError(f"{flag} {name}=...: source {name!r} reads {what}; only a "
                                 "stream source reading its topic takes a range")
        current = source.bounded or BoundedSpec()
        try:
            bounded = BoundedSpec(start=starts.get(name, current.start),
                                  end=ends.get(name, current.end))
        except ValidationError as exc:
            raise ProcessorError(f"source {name!r}: {_first_message(exc)}") from None
        data["sources"][name]["bounded"] = bounded.model_dump(exclude_none=True)
    try:
        new_spec = TopologySpec.model_validate(data)
    except ValidationError as exc:  # the overrides were valid alone: not expected
        raise ProcessorError(f"the bounds do not fit the topology: {_first_message(exc)}") from None
    return LoadedSpec(spec=new_spec, file=loaded.file, lines=loaded.lines, data=data)


def bounded_topics(spec: TopologySpec) -> dict[str, tuple[str, BoundedSpec]]:
    """Topic -> (source name, range) of the bounded stream sources. Two sources reading one
    topic with different ranges cannot both hold (one task reads the topic): an error."""
    out: dict[str, tuple[str, BoundedSpec]] = {}
    for name, source in spec.sources.items():
        if source.bounded is None:
            continue
        other = out.setdefault(source.topic, (name, source.bounded))
        if other[1] != source.bounded:
            raise ProcessorError(f"sources {other[0]!r} and {name!r} read topic "
                                 f"{source.topic!r} with different ranges: give them one")
    for name, source in spec.sources.items():
        if source.kind == "stream" and source.bounded is None and source.topic in out:
            raise ProcessorError(f"source {name!r} reads topic {source.topic!r} unbounded, "
                                 f"source {out[source.topic][0]!r} bounded: give them one range")
    return out


def _first_message(exc: ValidationError) -> str:
    err: dict[str, Any] = exc.errors(include_url=False)[0]
    return str(err["msg"]).removeprefix("Value error, ")
