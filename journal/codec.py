"""How the journal writes values into SQLite text columns and reads them back.

Decimals as exact TEXT, timestamps as ISO-8601 UTC text with microseconds (sortable as text;
a naive datetime is refused with a ValueError naming it), JSON with Decimals, datetimes,
dates, enums and sets as strings. Shared by the modules of ``journal/``; the leading
underscores say the names are the package's own, not an interface for other packages.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any


def _ts(moment: Any, name: str) -> str:
    """ISO-8601 UTC text with microseconds (sortable as text); naive datetimes refused."""
    if not isinstance(moment, datetime):
        raise ValueError(f"{name} must be a datetime, got {type(moment).__name__}")
    if moment.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {moment.isoformat()}")
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _parse_ts(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _dec(value: Any, name: str) -> Decimal:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got a boolean")
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise ValueError(f"{name} must be a decimal number, got {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def _dec_text(value: Any, name: str) -> str:
    return str(_dec(value, name))


def _opt_dec_text(value: Any, name: str) -> str | None:
    return None if value is None else _dec_text(value, name)


def _parse_dec(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return _ts(value, "datetime in JSON")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _json(value: Any, name: str) -> str:
    try:
        return json.dumps(value, default=_json_default, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} cannot be stored as JSON: {exc}") from None


def _jsonable(value: Any) -> Any:
    """``value`` with Decimals, datetimes and dates as strings (for reports and status)."""
    return json.loads(json.dumps(value, default=_json_default))


def _side(value: Any, name: str = "side") -> str:
    if value not in ("buy", "sell"):
        raise ValueError(f"{name} must be 'buy' or 'sell', got {value!r}")
    return str(value)


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value
