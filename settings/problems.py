"""Pydantic's errors as one clear line each: the dotted key, the value (secrets as
``'***'``, URLs without user info or query), what is allowed, and where the value came from;
an unknown key gets the closest known name as a suggestion.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic.fields import FieldInfo

from core.urls import redact_url
from settings.sections import _TOP_LEVEL, _URL_KEYS, SECRET_KEYS, SECTIONS

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _fmt(value: Any) -> str:
    """A value as shown in a problem line: numbers bare (even from env strings), text quoted."""
    if isinstance(value, float):
        return f"{value:.10g}"
    if isinstance(value, str):
        return value if _NUMBER.match(value) else repr(value)
    return str(value)


_RANGE_TYPES = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
_TYPE_MESSAGES = {
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list (or a comma-separated string)",
    "model_type": "must be a table of settings",
    "model_attributes_type": "must be a table of settings",
    "dict_type": "must be a table of settings",
    "date_from_datetime_parsing": "must be a date like 2026-06-04",
    "date_parsing": "must be a date like 2026-06-04",
    "date_type": "must be a date like 2026-06-04",
    "missing": "is required",
}


_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def _range_text(info: FieldInfo | None, ctx: Mapping[str, Any]) -> str:
    """The whole allowed range of a field (``must be > 0 and < 1``), not just the bound hit."""
    parts: list[str] = []
    for item in info.metadata if info is not None else ():
        for attr, op in _BOUNDS:
            bound = getattr(item, attr, None)
            if bound is not None:
                parts.append(f"{op} {_fmt(bound)}")
    if not parts:  # constraint inside an Optional[...]: only the failed bound is known
        parts = [f"{op} {_fmt(ctx[attr])}" for attr, op in _BOUNDS if attr in ctx]
    return "must be " + " and ".join(parts)


def _suggest(name: str, candidates: list[str]) -> str:
    match = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""


def _show_value(dotted: str, value: Any) -> str:
    base = re.sub(r"\[\d+\]$", "", dotted)
    if base in SECRET_KEYS:
        return "'***'"
    if isinstance(value, SecretStr):
        return "'***'"
    if isinstance(value, str) and ("://" in value or base in _URL_KEYS):
        return repr(redact_url(value))
    return _fmt(value)


def _dotted(prefix: tuple[str, ...], loc: tuple[int | str, ...]) -> str:
    text = ".".join(prefix)
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text = f"{text}.{part}" if text else str(part)
    return text


def _error_lines(
    exc: ValidationError,
    prefix: tuple[str, ...],
    model: type[BaseModel],
    sources: Mapping[str, str],
) -> list[str]:
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        kind = err["type"]
        dotted = _dotted(prefix, loc)
        field_name = loc[0] if loc and isinstance(loc[0], str) else None
        info = model.model_fields.get(field_name) if field_name else None
        source = sources.get(re.sub(r"\[\d+\]$", "", dotted))
        suffix = f" [from {source}]" if source else ""
        if kind == "extra_forbidden":
            candidates = list(model.model_fields)
            if not prefix and len(loc) == 1:
                candidates = [*SECTIONS, *_TOP_LEVEL]
            name = str(loc[-1]) if loc else ""
            lines.append(f"{dotted}: unknown key{_suggest(name, candidates)}{suffix}")
            continue
        if kind in _RANGE_TYPES:
            message = _range_text(info, err.get("ctx", {}))
        elif kind == "value_error":
            message = str(err.get("ctx", {}).get("error", err["msg"]))
        elif kind == "literal_error":
            message = "must be one of " + str(err.get("ctx", {}).get("expected", ""))
        else:
            message = _TYPE_MESSAGES.get(kind, err["msg"][:1].lower() + err["msg"][1:])
        if kind == "missing":
            lines.append(f"{dotted}: {message}{suffix}")
        else:
            lines.append(f"{dotted}={_show_value(dotted, err['input'])}: {message}{suffix}")
    return lines
