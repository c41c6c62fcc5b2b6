"""Run one topology over other inputs: sources and sinks switched to files from the command line.

`processor batch TOPOLOGY --input orders=history.parquet --output gmv=gmv.csv` runs the very
YAML that runs live, over files: a topic source becomes a `file:` source (keeping its formats,
event time and watermark; `--key` names the field holding the key, `--partitions` the count
of the topic it would be live on), and a topic written (a sink, a late-records topic) becomes
a file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from processor.errors import ProcessorError
from processor.spec.bounded import FileSinkSpec, FileSourceSpec
from processor.spec.loader import LoadedSpec

M = TypeVar("M", bound=BaseModel)


def parse_assignments(values: list[str] | None, what: str) -> dict[str, str]:
    """`NAME=VALUE` arguments -> {name: value}; a malformed one is a ProcessorError."""
    out: dict[str, str] = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ProcessorError(f"{what} {item!r}: expected NAME=VALUE")
        out[name] = value
    return out


def with_files(loaded: LoadedSpec, inputs: dict[str, str], *,
               keys: dict[str, str] | None = None,
               partitions: dict[str, str] | None = None) -> LoadedSpec:
    """The spec with the named sources reading files. Paths given here are relative to the
    current directory (the YAML's, to the YAML)."""
    spec = loaded.spec
    keys, partitions = keys or {}, partitions or {}
    for name in [*inputs, *keys, *partitions]:
        if name not in spec.sources:
            raise ProcessorError(f"no source {name!r} (the topology's sources: "
                                 f"{', '.join(spec.sources)})")
    sources = dict(spec.sources)
    for name, src in spec.sources.items():
        if name not in inputs and name not in keys and name not in partitions:
            continue
        current = src.file
        if name in inputs:
            path = str(Path(inputs[name]).resolve())
            current = _checked(FileSourceSpec, path=path,
                               key=keys.get(name, current.key if current else None))
        elif current is None:
            raise ProcessorError(f"source {name!r} reads topic {src.topic!r}: give it a file "
                                 f"with --input {name}=PATH")
        elif name in keys:
            current = current.model_copy(update={"key": keys[name]})
        count = src.partitions
        if name in partitions:
            try:
                count = int(partitions[name])
                if count < 1:
                    raise ValueError
            except ValueError:
                raise ProcessorError(f"--partitions {name}={partitions[name]}: expected a "
                                     "count >= 1") from None
        sources[name] = src.model_copy(update={"file": current, "partitions": count,
                                               "bounded": None, "backfill": None})
    new = spec.model_copy(update={"sources": sources})
    return LoadedSpec(new, loaded.file, loaded.lines, loaded.data)


def file_outputs(loaded: LoadedSpec, outputs: dict[str, str], written: list[str], *,
                 key_columns: dict[str, str] | None = None) -> dict[str, FileSinkSpec]:
    """Topic -> file for a batch run: the YAML's `file:` sinks, and `--output NAME=PATH`
    where NAME is a sink's name or a topic the topology writes (`written`: an inline `to`,
    a window's late topic); `key_columns` (`--output-key NAME=COLUMN`): the record's key as
    that column of the rows."""
    spec = loaded.spec
    out = {s.topic: s.file for s in spec.sinks.values() if s.file is not None}
    keys = key_columns or {}
    for name in dict.fromkeys([*outputs, *keys]):
        topic = spec.sinks[name].topic if name in spec.sinks else name
        if topic not in written:
            flag = "--output" if name in outputs else "--output-key"
            raise ProcessorError(f"{flag} {name}: not a sink or a topic the topology writes "
                                 f"(it writes: {', '.join(written)})")
        if name in outputs:
            out[topic] = _checked(FileSinkSpec, path=str(Path(outputs[name]).resolve()),
                                  key=keys.get(name))
        elif topic in out:
            out[topic] = out[topic].model_copy(update={"key": keys[name]})
        else:
            raise ProcessorError(f"--output-key {name}: it is written to a topic (give it a "
                                 f"file with --output {name}=PATH)")
    return out


def _checked(model: type[M], **fields: object) -> M:
    try:
        return model(**fields)
    except ValidationError as exc:
        raise ProcessorError(f"{fields.get('path')}: {exc.errors()[0]['msg']}") from None


def require_topics(loaded: LoadedSpec) -> None:
    """A worker reads and writes topics only: `file:` sources and sinks are for `processor
    batch` (a `backfill:` source is live on its topic; `processor backfill` reads its history)."""
    spec = loaded.spec
    files = [f"source {n!r}" for n, s in spec.sources.items() if s.file is not None]
    files += [f"sink {n!r}" for n, s in spec.sinks.items() if s.file is not None]
    if files:
        raise ProcessorError(f"{loaded.file}: {', '.join(files)} read or write files: run it "
                             f"with `processor batch {loaded.file}` (a worker runs over topics)")
