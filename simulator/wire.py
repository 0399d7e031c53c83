"""Alpaca's wire conventions, both ways: parsing request values and writing response values.

Requests: clients send numbers as JSON numbers or strings (alpaca-py sends floats), booleans
in query strings as ``True``/``true``/``False``, timestamps as RFC 3339 or plain dates.
Responses: money and quantities in trading objects are strings (``"100"``, ``"101.25"``),
timestamps are RFC 3339 UTC with ``Z`` and up to nine fraction digits (:func:`ts`). Every
parse error raises a :class:`~simulator.errors.SimApiError` naming the field, never a bare
``ValueError``.
"""

from __future__ import annotations

from datetime import date, datetime, time, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from core.clock import EXCHANGE_TZ
from simulator.errors import SimApiError, validation_error

UTC = timezone.utc
MONEY_PLACES = Decimal("0.01")
MAX_QTY_PLACES = 9


def num(value: Decimal | None) -> str | None:
    """A decimal as Alpaca writes it (``"100"``, ``"101.5"``); ``None`` stays ``None``."""
    if value is None:
        return None
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def money(value: Decimal) -> str:
    """An account amount rounded to the cent, as a string (``"100000"``, ``"99871.12"``)."""
    return num(value.quantize(MONEY_PLACES)) or "0"


def ts(moment: datetime | None) -> str | None:
    """RFC 3339 UTC with ``Z`` as Alpaca writes trading timestamps: Go's ``RFC3339Nano``.

    Alpaca's servers print up to nine fraction digits with trailing zeros dropped, and no
    fraction at all on a whole second: ``"2023-03-06T21:29:41.010557404Z"``,
    ``"2021-03-16T18:38:01.942282Z"``, ``"2025-03-03T21:00:00Z"`` are all real shapes.
    The simulated clock has microseconds; an instant with a fraction gets three
    sub-microsecond digits derived from the instant itself (the same instant always prints
    the same text), so clients meet nine-digit fractions as they do from Alpaca. Parsed
    back at microsecond precision the text is the instant it came from.
    """
    if moment is None:
        return None
    text = _TS_MEMO.get(moment)
    if text is None:
        if len(_TS_MEMO) >= TS_MEMO_SIZE:
            _TS_MEMO.clear()
        text = _TS_MEMO[moment] = _rfc3339_nano(moment.astimezone(UTC))
    return text


def _rfc3339_nano(utc: datetime) -> str:
    head = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if not utc.microsecond:
        return head + "Z"
    sub_micro = (utc.microsecond * 7919 + utc.second * 104729 + utc.minute * 31) % 1000
    fraction = f"{utc.microsecond * 1000 + sub_micro:09d}".rstrip("0")
    return f"{head}.{fraction}Z"


# Formatted instants: the same few timestamps (order times, "now") are written again and
# again. Equal aware datetimes are the same instant, so they share one text.
TS_MEMO_SIZE = 4096
_TS_MEMO: dict[datetime, str] = {}


def et_iso(moment: datetime) -> str:
    """ISO 8601 in America/New_York with its offset (clock and calendar style)."""
    return moment.astimezone(EXCHANGE_TZ).isoformat()


def floor_minute(moment: datetime) -> datetime:
    """The start of the minute containing ``moment`` (UTC)."""
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def et_date(moment: datetime) -> date:
    """The exchange's calendar date at ``moment``."""
    return moment.astimezone(EXCHANGE_TZ).date()


def et_datetime(day: date, at: time) -> datetime:
    """``day`` at wall-clock ``at`` in New York, as an aware UTC datetime."""
    return datetime.combine(day, at, tzinfo=EXCHANGE_TZ).astimezone(UTC)


def parse_decimal(value: Any, field: str) -> Decimal:
    """A JSON number or numeric string as a finite Decimal; 422 naming ``field`` otherwise."""
    if isinstance(value, bool) or value is None:
        raise validation_error(f"invalid {field}: {value!r} is not a number")
    try:
        result = Decimal(str(value).strip()) if not isinstance(value, Decimal) else value
    except (InvalidOperation, ValueError):
        raise validation_error(f"invalid {field}: {value!r} is not a number") from None
    if not result.is_finite():
        raise validation_error(f"invalid {field}: {value!r} is not a finite number")
    return result


def parse_positive(value: Any, field: str) -> Decimal:
    """A number > 0 with at most 9 decimal places."""
    result = parse_decimal(value, field)
    if result <= 0:
        raise validation_error(f"{field} must be > 0")
    if places(result) > MAX_QTY_PLACES:
        raise validation_error(f"{field} can have at most {MAX_QTY_PLACES} decimal places")
    return result


def places(value: Decimal) -> int:
    """Number of decimal places actually used (``1.50`` has 1)."""
    exponent = value.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def parse_bool(value: Any, field: str) -> bool:
    """``True``/``true``/``1`` and their opposites (alpaca-py sends capitalised booleans)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise validation_error(f"invalid {field}: {value!r} is not a boolean")


def parse_int(value: Any, field: str, *, low: int, high: int) -> int:
    """An integer in ``[low, high]``."""
    if isinstance(value, bool):
        raise validation_error(f"invalid {field}: {value!r} is not an integer")
    try:
        result = int(str(value).strip())
    except ValueError:
        raise validation_error(f"invalid {field}: {value!r} is not an integer") from None
    if not low <= result <= high:
        raise validation_error(f"invalid {field}: {result} is outside {low}..{high}")
    return result


def parse_time(value: Any, field: str) -> datetime:
    """An RFC 3339 timestamp (``Z``, offset, up to 9 fraction digits) or a ``YYYY-MM-DD`` date.

    A plain date means midnight New York time; a naive timestamp is taken as UTC, as
    alpaca-py does.
    """
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).strip()
    if len(text) == 10:
        try:
            return et_datetime(date.fromisoformat(text), time(0, 0))
        except ValueError:
            raise bad_time(field, value) from None
    # A "+" in an unencoded query string arrives as a space: "...T00:00:00 00:00".
    normalized = text[:19] + text[19:].replace(" ", "+")
    normalized = normalized.replace("Z", "+00:00").replace("z", "+00:00")
    # Python parses at most 6 fraction digits: trim nanoseconds.
    if "." in normalized:
        head, _, rest = normalized.partition(".")
        digits = "".join(ch for ch in rest if ch.isdigit())
        zone = rest[len(digits):]
        normalized = f"{head}.{digits[:6]}{zone}"
    try:
        result = datetime.fromisoformat(normalized)
    except ValueError:
        raise bad_time(field, value) from None
    return result if result.tzinfo else result.replace(tzinfo=UTC)


def parse_date(value: Any, field: str) -> date:
    """A ``YYYY-MM-DD`` date (or the New York date of a timestamp)."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    text = str(value).strip()
    try:
        return date.fromisoformat(text[:10]) if len(text) == 10 else et_date(parse_time(text, field))
    except ValueError:
        raise bad_time(field, value) from None


def bad_time(field: str, value: Any) -> SimApiError:
    return validation_error(f"invalid {field}: {value!r} is not an RFC 3339 timestamp or date")
