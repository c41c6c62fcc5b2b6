"""Compiling generated hot-path source so that a traceback through it shows the generated line.

Five places generate Python source at build time to keep the per-record cost down: the batch
decoder, the sink emitters, fused expression steps, aggregate updates and the Avro fast check.
Compiled under a made-up filename, a failure inside that code would point to a line nobody can
read. Here each source is compiled under a filename of its own (the label plus a digest of the
text) and its text is put into `linecache`, where `traceback` looks lines up. The digest keeps
the cache bounded: tasks reopened after a rebalance generate the same text again and reuse one
entry instead of adding another. The generated code itself is compiled exactly as given.
"""

from __future__ import annotations

import hashlib
import linecache
from types import CodeType
from typing import Any, Literal


def compile_generated(source: str, label: str, mode: Literal["exec", "eval"] = "exec") -> CodeType:
    """Compile `source` under the filename `<label #digest>` registered with linecache."""
    digest = hashlib.blake2b(source.encode(), digest_size=6).hexdigest()
    filename = f"<{label} #{digest}>"
    # mtime None: linecache.checkcache keeps the entry (there is no file to compare with)
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    return compile(source, filename, mode)


def define(source: str, label: str, env: dict[str, Any], name: str) -> Any:
    """Run generated definitions in `env` and return the one called `name`."""
    exec(compile_generated(source, label), env)
    return env[name]
