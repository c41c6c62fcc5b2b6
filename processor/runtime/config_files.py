"""Where a worker setting came from: the config file (with the line of each key), the
PROCESSOR_* environment or a command-line flag, so that an error names the right place."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_settings import SettingsError

from processor.errors import SpecError, SpecErrors

ENV_PREFIX = "PROCESSOR_"


def env_names(setting: str) -> list[str]:
    names = [f"{ENV_PREFIX}{setting.upper()}"]
    return [*names, "KAFKA_BOOTSTRAP_SERVERS"] if setting == "bootstrap_servers" else names


def read_config_file(path: str | Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The file's settings and the line of each top-level key."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.load(text, Loader=yaml.SafeLoader) or {}
    except OSError as exc:
        raise SpecErrors([SpecError(f"cannot read config: {exc.strerror}", file=file)]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise SpecErrors([SpecError(f"YAML syntax error: {exc.problem}", file=file,
                                    line=mark.line + 1 if mark else None)]) from None
    if not isinstance(data, dict):
        raise SpecErrors([SpecError("config must be a YAML mapping", file=file, line=1)])
    lines = {k.value: k.start_mark.line + 1 for k, _ in node.value} if isinstance(
        node, yaml.MappingNode) else {}
    return data, lines


def env_settings() -> dict[str, Any]:
    """PROCESSOR_* variables as raw settings (JSON objects decoded), to find their secrets."""
    out: dict[str, Any] = {}
    for name, value in os.environ.items():
        if name.upper().startswith(ENV_PREFIX):
            try:
                decoded = json.loads(value) if value.lstrip().startswith("{") else value
            except ValueError:
                decoded = value
            out[name[len(ENV_PREFIX):].lower()] = decoded
    return out


def attributed_errors(exc: ValidationError | SettingsError, file: str | None, lines: dict[str, int],
            cli: dict[str, Any]) -> list[SpecError]:
    """Attribute each error to where its setting came from: flag, environment or file."""
    if isinstance(exc, SettingsError):  # an environment variable that is not valid JSON
        match = re.search(r'field "(\w+)"', str(exc))
        name = match[1] if match else ""
        return [SpecError(f"{ENV_PREFIX}{name.upper()} must be a JSON object", file="env",
                          path=name or None)]
    errors = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(p) for p in err["loc"])
        top = str(err["loc"][0]) if err["loc"] else ""
        if top in cli:
            where, line = "command line", None
        elif any(os.environ.get(n) for n in env_names(top)):
            where, line = "env", None
        else:
            where, line = file, lines.get(top)
        msg = "unknown setting" if err["type"] == "extra_forbidden" else err["msg"]
        errors.append(SpecError(msg.removeprefix("Value error, "), file=where, line=line,
                                path=field))
    return errors
