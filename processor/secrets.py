"""Secret values of the worker settings, and masking them in everything the process prints.

Passwords must reach librdkafka and the schema registry in clear, so the config keeps them;
what must never carry them is output: log lines (ours and exception texts), the effective
settings shown by `describe --config` and the startup log, and config error messages. A value
is secret when its setting is a `SecretStr`, when a property's name says so (`sasl.password`,
`sasl.oauthbearer.client.secret`, ...), or when it is the password of a URL
(`http://user:pass@registry:8081`).

Loading a config registers its secrets here (`register`); `redact` and the logging filter then
mask every registered value, in whatever field of a log record it turns up.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, SecretStr

MASK = "***"
SECRET_WORDS = ("password", "secret", "token", "credential", "private")
# librdkafka properties that hold secrets without saying so in their name
SECRET_PROPERTIES = frozenset({"ssl.key.pem", "sasl.oauthbearer.config"})

_USERINFO = re.compile(r"://[^/@:]*:([^/]*)@")
_secrets: frozenset[str] = frozenset()
_registered: tuple[str, ...] = ()  # every form of every registered secret, longest first


def is_secret_name(name: str) -> bool:
    """Whether a setting or property called `name` holds a secret."""
    lowered = name.lower()
    return lowered in SECRET_PROPERTIES or any(word in lowered for word in SECRET_WORDS)


def url_passwords(text: str) -> set[str]:
    """Passwords in URLs with userinfo (`scheme://user:password@host`), as written and decoded;
    a comma-separated list of URLs is searched whole."""
    found: set[str] = set()
    if "://" not in text or "@" not in text:
        return found
    for part in text.split(","):
        try:
            password = urllib.parse.urlsplit(part.strip()).password
        except ValueError:  # unparsable (e.g. a broken IPv6 host): read the userinfo anyway
            match = _USERINFO.search(part)
            password = match[1] if match else None
        if password:
            found |= {password, urllib.parse.unquote(password)}
    return found


def _collect(name: str, value: Any) -> set[str]:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
        return {value} if value.strip() else set()
    if isinstance(value, Mapping):
        return set().union(*(_collect(str(k), v) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return set().union(*(_collect(name, v) for v in value))
    if value is None or isinstance(value, bool):
        return set()
    if is_secret_name(name):
        text = str(value)
        return {text} if text.strip() else set()
    return url_passwords(value) if isinstance(value, str) else set()


def secret_values(settings: BaseModel | Mapping[str, Any]) -> set[str]:
    """The secret values of a config, or of raw settings (a file's data, the environment)."""
    if isinstance(settings, BaseModel):
        settings = {name: getattr(settings, name) for name in type(settings).model_fields}
    return _collect("", settings)


def _escaped(secret: str) -> set[str]:
    """The secret as written, inside a repr, inside a JSON string, and a repr inside JSON
    (a dict logged as text, then written as a JSON log line)."""
    in_repr = repr(secret)[1:-1]
    return {secret, in_repr, json.dumps(secret)[1:-1], json.dumps(in_repr)[1:-1]}


def _forms(secrets: Iterable[str]) -> tuple[str, ...]:
    """Every form of every secret, longest first so that a secret containing another is
    masked whole."""
    forms = {form for s in secrets if s and s.strip() for form in _escaped(s)}
    return tuple(sorted(forms, key=len, reverse=True))


def register(values: Iterable[str]) -> None:
    """Mask these values from now on in `redact()` and in log records."""
    global _secrets, _registered
    _secrets = _secrets.union(values)
    _registered = _forms(_secrets)  # swapped whole: a reader in another thread sees old or new


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """`text` with every secret (the registered ones unless `secrets` is given) as `***`."""
    forms = _registered if secrets is None else _forms(secrets)
    for form in forms:
        if form in text:
            text = text.replace(form, MASK)
    return text


def _mask_value(name: str, value: Any, secrets: set[str]) -> Any:
    if isinstance(value, Mapping):
        return {k: _mask_value(str(k), v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_value(name, v, secrets) for v in value]
    if value is not None and is_secret_name(name):
        return MASK
    return redact(value, secrets) if isinstance(value, str) else value


def masked_settings(settings: BaseModel) -> dict[str, Any]:
    """The effective settings as JSON-ready data, every secret shown as `***`."""
    secrets = secret_values(settings)
    dumped = settings.model_dump(mode="json")
    out: dict[str, Any] = {}
    for name, value in dumped.items():
        if isinstance(getattr(settings, name), SecretStr):
            out[name] = MASK
        else:
            out[name] = _mask_value(name, value, secrets)
    return out


def _redact_any(value: Any) -> Any:
    """Redact strings inside log extras, keeping containers (JSON logs stay structured);
    another object is replaced by its redacted text only when that text held a secret."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: _redact_any(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_any(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    text = str(value)
    masked = redact(text)
    return value if masked == text else masked


_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


class RedactingFilter(logging.Filter):
    """Masks registered secrets in a record's message, arguments, extras and exception text.

    Install it on handlers (a logger's own filters do not see records of child loggers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _registered:
            return True
        try:
            message = record.getMessage()
        except Exception:  # bad %-args: logging reports it, showing msg and args; mask both
            message = f"{record.msg} {record.args}"
        record.msg, record.args = redact(message), None
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD and not key.startswith("_"):
                setattr(record, key, _redact_any(value))
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
