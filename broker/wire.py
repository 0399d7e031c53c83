"""What every broker model shares: field types, tolerance and dropped-item reporting.

Broker objects are parsed once, at the edge:

* money and quantities become :class:`~decimal.Decimal` (Alpaca sends them as strings;
  market data sends JSON numbers, which are converted through their shortest repr so that
  ``101.1`` stays ``Decimal("101.1")``);
* timestamps become timezone-aware datetimes (RFC 3339, ``Z`` or an offset, up to nine
  fraction digits, truncated to microseconds); a timestamp without a zone is refused;
* unknown extra fields are ignored, and enum-like fields (status, side, type ...) are plain
  ``str`` because Alpaca adds values over time: an unknown value is kept as the raw string
  (one ``broker_enum_unknown`` warning per model, field and value);
* the pattern-day-trader fields Alpaca removed in 2026 are optional.

Tolerance (what one odd field in one object may cost): a malformed *optional* field is
dropped so that its default (usually None) applies, with one ``broker_field_ignored``
warning per model, field and cause for the life of the process (a list of 500 orders with
the same bad ``hwm`` logs once). Optional fields that steer trading (an order's ``qty``,
``filled_qty``, prices; a fill's price and quantity; the account's blocking flags) are
listed in ``STRICT_FIELDS`` and are never guessed. A malformed *required* (or strict) field
is a :class:`pydantic.ValidationError` naming the field; the gateway then drops that one
item of a list (:func:`report_dropped`, ERROR ``broker_item_dropped``) and keeps the rest.
A malformed leg of an order is dropped from ``legs`` the same way, keeping its parent.

The process-wide state of parsing lives here and only here: the tolerance memory
(:func:`tolerated_fields`, :func:`reset_tolerance_memory`), the drop sink and pending-drop
context variables, and the parsed-timestamp memo (the market data fast path shares it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, ClassVar

import structlog
from pydantic import (
    BaseModel,
    ConfigDict,
    PlainValidator,
    StringConstraints,
    ValidationError,
    ValidatorFunctionWrapHandler,
    model_validator,
)

# The name the split kept: operators filter these warnings by logger "broker.models".
log = structlog.get_logger("broker.models")

Date = date  # field annotations use this alias: several models have a field named ``date``

# -- field types ---------------------------------------------------------------------------

_TIMESTAMP = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<time>\d{2}:\d{2}(?::\d{2})?)"
    r"(?:\.(?P<fraction>\d+))?(?P<zone>[Zz]|[+-]\d{2}(?::?\d{2})?)?$"
)


# Parsed timestamp strings: a snapshot batch repeats the same bar stamps for every symbol
# (datetimes are immutable, so sharing one is safe). Cleared when full, so memory stays flat.
_TIMESTAMP_MEMO: dict[str, datetime] = {}
_TIMESTAMP_MEMO_SIZE = 4096


def parse_timestamp(value: Any) -> datetime:
    """An aware datetime from an RFC 3339 string (or an aware datetime); naive is refused."""
    if type(value) is str:
        known = _TIMESTAMP_MEMO.get(value)
        if known is not None:
            return known
        parsed = _parse_timestamp_text(value)
        if len(_TIMESTAMP_MEMO) >= _TIMESTAMP_MEMO_SIZE:
            _TIMESTAMP_MEMO.clear()
        _TIMESTAMP_MEMO[value] = parsed
        return parsed
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("timestamp has no time zone")
        return value
    if not isinstance(value, str):
        raise ValueError(f"timestamp must be an RFC 3339 string, got {type(value).__name__}")
    return _parse_timestamp_text(value)


def _parse_timestamp_text(value: str) -> datetime:
    match = _TIMESTAMP.match(value.strip())
    if match is None:
        raise ValueError(f"not an RFC 3339 timestamp: {value!r}")
    zone = match["zone"]
    if zone is None:
        raise ValueError(f"timestamp has no time zone: {value!r}")
    if zone in ("Z", "z"):
        zone = "+00:00"
    elif len(zone) == 3:
        zone = f"{zone}:00"
    elif ":" not in zone:
        zone = f"{zone[:3]}:{zone[3:]}"
    clock_time = match["time"] if match["time"].count(":") == 2 else f"{match['time']}:00"
    fraction = match["fraction"]
    micros = f".{(fraction + '000000')[:6]}" if fraction else ""
    return datetime.fromisoformat(f"{match['date']}T{clock_time}{micros}{zone}")


def parse_optional_timestamp(value: Any) -> datetime | None:
    """Like :func:`parse_timestamp`, with ``None`` or ``""`` meaning absent."""
    if value is None or value == "":
        return None
    return parse_timestamp(value)


def parse_decimal(value: Any) -> Decimal:
    """A finite Decimal from a string, int, float or Decimal (bools are refused)."""
    if type(value) is float:  # market data's JSON numbers: the common case first
        number = Decimal(repr(value))
        if not number.is_finite():
            raise ValueError(f"not a finite number: {value!r}")
        return number
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"not a decimal number: {value!r}") from None
    else:
        raise ValueError(f"expected a decimal number, got {type(value).__name__}")
    if not number.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    return number


def to_decimal(value: Any, name: str) -> Decimal:
    """A finite Decimal from any number-like value, with errors naming ``name``.

    The one coercion the decision modules (risk, PDT, gap, safety state, ledger, performance)
    share for inputs they did not parse themselves; bools are refused.
    """
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        number = Decimal(repr(value)) if type(value) is float else Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def parse_optional_decimal(value: Any) -> Decimal | None:
    """Like :func:`parse_decimal`, with ``None`` or ``""`` meaning absent."""
    if value is None or value == "":
        return None
    return parse_decimal(value)


Timestamp = Annotated[datetime, PlainValidator(parse_timestamp)]
OptionalTimestamp = Annotated[datetime | None, PlainValidator(parse_optional_timestamp)]
Num = Annotated[Decimal, PlainValidator(parse_decimal)]
OptionalNum = Annotated[Decimal | None, PlainValidator(parse_optional_decimal)]


def decimal_text(value: Decimal) -> str:
    """A Decimal as plain positional text (never scientific notation): ``1E+2`` -> ``"100"``."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


Symbol = Annotated[str, StringConstraints(strip_whitespace=True)]

# -- tolerance: what a malformed field costs -------------------------------------------------

# (model, field, cause) -> how often it was tolerated. The first occurrence is logged; the
# rest only counted, so a payload repeating one oddity does not flood the log.
_TOLERATED: dict[tuple[str, str, str], int] = {}
_UNKNOWN_ENUMS: dict[tuple[str, str, str], int] = {}
_VALUE_TEXT_LIMIT = 80


def tolerated_fields() -> dict[tuple[str, str, str], int]:
    """How often each (model, field, cause) was tolerated since start (or the last reset)."""
    return dict(_TOLERATED)


def reset_tolerance_memory() -> None:
    """Forget which oddities were already logged (tests; a new trading session)."""
    _TOLERATED.clear()
    _UNKNOWN_ENUMS.clear()


def _value_text(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _VALUE_TEXT_LIMIT else text[: _VALUE_TEXT_LIMIT - 3] + "..."


def _cause(error: Any) -> str:
    """A pydantic error as a short cause without the offending value (so it can key a set)."""
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    cause = message.split(": ", 1)[0].strip()
    return cause or str(error.get("type", "invalid"))


def _note_tolerated(model: str, field: str, cause: str, value: Any) -> None:
    key = (model, field, cause)
    seen = _TOLERATED.get(key, 0)
    _TOLERATED[key] = seen + 1
    if seen == 0:
        log.warning("broker_field_ignored", model=model, field=field, cause=cause,
                    value=_value_text(value), note="later occurrences are counted, not logged")


def note_unknown_enum(model: str, field: str, value: str) -> None:
    """Log once that ``value`` is not one we know for ``model.field`` (it is kept as sent)."""
    key = (model, field, value)
    seen = _UNKNOWN_ENUMS.get(key, 0)
    _UNKNOWN_ENUMS[key] = seen + 1
    if seen == 0:
        log.warning("broker_enum_unknown", model=model, field=field, value=_value_text(value))


@dataclass(frozen=True)
class DroppedItem:
    """One object the broker sent that could not be used (a required field was malformed)."""

    model: str
    where: str
    index: int | None
    item_id: str | None
    fields: tuple[str, ...]
    cause: str


# Where report_dropped() also records what it dropped (the gateway counts and alerts).
_DROP_SINK: ContextVar[list[DroppedItem] | None] = ContextVar("broker_drop_sink", default=None)
# While a model validates, the drops inside it (malformed legs) wait here: a first attempt
# that is retried without its malformed optional fields must not report them twice, and a
# parent that fails as a whole is itself the one dropped item.
_PENDING_DROPS: ContextVar[list[DroppedItem] | None] = ContextVar("broker_pending_drops",
                                                                  default=None)


@contextmanager
def collect_dropped() -> Iterator[list[DroppedItem]]:
    """Collect every item :func:`report_dropped` drops inside the block (nested legs too)."""
    sink: list[DroppedItem] = []
    token = _DROP_SINK.set(sink)
    try:
        yield sink
    finally:
        _DROP_SINK.reset(token)


def report_dropped(model: str, where: str, index: int | None, raw: Any,
                   exc: ValidationError) -> DroppedItem:
    """Log (ERROR ``broker_item_dropped``) and record one unusable item of a list."""
    problems = exc.errors()
    fields = tuple(dict.fromkeys(".".join(str(part) for part in e["loc"]) or "body" for e in problems))
    cause = "; ".join(dict.fromkeys(_cause(e) for e in problems))
    item_id = None
    if isinstance(raw, dict):
        for key in ("id", "client_order_id", "symbol"):
            if isinstance(raw.get(key), (str, int)) and not isinstance(raw.get(key), bool):
                item_id = str(raw[key])
                break
    dropped = DroppedItem(model, where, index, item_id, fields, cause)
    _emit_dropped(dropped)
    return dropped


def _emit_dropped(dropped: DroppedItem) -> None:
    pending = _PENDING_DROPS.get()
    if pending is not None:
        pending.append(dropped)
        return
    log.error("broker_item_dropped", model=dropped.model, where=dropped.where,
              index=dropped.index, item_id=dropped.item_id, fields=list(dropped.fields),
              cause=dropped.cause)
    sink = _DROP_SINK.get()
    if sink is not None:
        sink.append(dropped)


class BrokerModel(BaseModel):
    """Base of every object parsed from the broker: extra fields ignored, names or aliases.

    A malformed optional field falls back to its default (see the module docstring);
    ``STRICT_FIELDS`` names the optional fields for which that would be a guess that steers
    trading, so a malformed value there fails validation like a required field.
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    STRICT_FIELDS: ClassVar[frozenset[str]] = frozenset()
    #: True when items inside this model may be dropped (an order's legs).
    HAS_DROPPABLE_PARTS: ClassVar[bool] = False

    @model_validator(mode="wrap")
    @classmethod
    def _tolerate_optional_fields(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if not cls.HAS_DROPPABLE_PARTS:
            try:
                return handler(data)
            except ValidationError as exc:
                repaired = cls._without_tolerable(data, exc)
                if repaired is None:
                    raise
            return handler(repaired)
        pending: list[DroppedItem] = []
        token = _PENDING_DROPS.set(pending)
        try:
            try:
                result = handler(data)
            except ValidationError as exc:
                repaired = cls._without_tolerable(data, exc)
                if repaired is None:
                    raise
                pending.clear()  # the retry validates the legs again
                result = handler(repaired)
        finally:
            _PENDING_DROPS.reset(token)
        for dropped in pending:
            _emit_dropped(dropped)
        return result

    @classmethod
    def _without_tolerable(cls, data: Any, exc: ValidationError) -> dict[str, Any] | None:
        """``data`` without its malformed optional fields, or None if a problem is not one."""
        if not isinstance(data, dict):
            return None
        out = dict(data)
        notes: list[tuple[str, str, Any]] = []
        for error in exc.errors():
            loc = error["loc"]
            name = cls._field_for_key(loc[0]) if loc else None
            if name is None or cls.model_fields[name].is_required() or name in cls.STRICT_FIELDS:
                return None
            notes.append((name, _cause(error), out.get(loc[0])))
            out.pop(loc[0], None)
        for name, cause, value in notes:
            _note_tolerated(cls.__name__, name, cause, value)
        return out

    @classmethod
    def _field_for_key(cls, key: Any) -> str | None:
        if key in cls.model_fields:
            return str(key)
        for name, info in cls.model_fields.items():
            if info.alias == key:
                return name
        return None
