"""Which files an input path means: a file, a directory's files of the format, or a glob.

The order is part of the contract (files are read in sorted path order, each top to bottom),
so a batch run over the same files always sees the rows in the same order.
"""

from __future__ import annotations

import glob
from pathlib import Path

from processor.runtime.files.errors import FileInputError
from processor.spec.bounded import FileFormat, extensions_of, format_of

_GLOB_CHARS = frozenset("*?[")


def expand(path: str, base: Path, fmt: FileFormat) -> list[Path]:
    """The files `path` names, sorted. A relative path is relative to `base` (the topology
    file's directory). A directory gives its direct files whose name implies `fmt` (hidden
    files excluded); a glob (`*`, `?`, `[...]`, `**` for any depth) gives the files it matches."""
    given = Path(path).expanduser()
    full = given if given.is_absolute() else base / given
    if any(c in _GLOB_CHARS for c in path):
        # a `[` or `*` in the base directory's own name is no pattern
        pattern = str(full if given.is_absolute() else Path(glob.escape(str(base))) / given)
        found = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        if not found:
            raise FileInputError(f"input {path!r}: no file matches the pattern {str(full)!r}")
        return found
    if full.is_dir():
        found = sorted(p for p in full.iterdir()
                       if p.is_file() and not p.name.startswith(".") and format_of(p.name) == fmt)
        if not found:
            raise FileInputError(
                f"input {path!r}: the directory {str(full)!r} has no {fmt} file "
                f"(looked for names ending in {', '.join(extensions_of(fmt))})")
        return found
    if full.is_file():
        return [full]
    if full.exists():
        raise FileInputError(f"input {path!r}: {str(full)!r} is not a regular file")
    raise FileInputError(f"input {path!r}: no such file or directory {str(full)!r}")

