"""Pydantic models of the Alpaca objects the daemon reads and the order requests it sends.

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
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, ClassVar, TypeVar

import structlog
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from broker import broker_errors
from core import errors
from core.clock import EXCHANGE_TZ

log = structlog.get_logger(__name__)

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


# -- account, clock, calendar, assets ------------------------------------------------------


class Account(BrokerModel):
    """GET /v2/account. ``equity``, ``cash`` and ``buying_power`` are required: risk needs them.

    The blocking flags decide whether the daemon may trade: a malformed one is never read as
    "not blocked" (strict), it fails the read.
    """

    STRICT_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"trading_blocked", "account_blocked", "trade_suspended_by_user"})

    id: str
    account_number: str
    status: str
    currency: str = "USD"
    cash: Num
    equity: Num
    buying_power: Num
    portfolio_value: OptionalNum = None
    last_equity: OptionalNum = None
    long_market_value: OptionalNum = None
    short_market_value: OptionalNum = None
    position_market_value: OptionalNum = None
    regt_buying_power: OptionalNum = None
    non_marginable_buying_power: OptionalNum = None
    options_buying_power: OptionalNum = None
    effective_buying_power: OptionalNum = None
    initial_margin: OptionalNum = None
    maintenance_margin: OptionalNum = None
    last_maintenance_margin: OptionalNum = None
    sma: OptionalNum = None
    multiplier: OptionalNum = None
    accrued_fees: OptionalNum = None
    pending_transfer_in: OptionalNum = None
    pending_transfer_out: OptionalNum = None
    trading_blocked: bool = False
    transfers_blocked: bool = False
    account_blocked: bool = False
    trade_suspended_by_user: bool = False
    shorting_enabled: bool = False
    created_at: OptionalTimestamp = None
    balance_asof: Date | None = None
    # Removed by Alpaca on 2026-07-06 with the retirement of the PDT rule: optional.
    pattern_day_trader: bool | None = None
    daytrade_count: int | None = None
    daytrading_buying_power: OptionalNum = None
    last_daytrade_count: int | None = None
    last_daytrading_buying_power: OptionalNum = None
    crypto_status: str | None = None
    options_approved_level: int | None = None
    options_trading_level: int | None = None
    intraday_adjustments: OptionalNum = None
    pending_reg_taf_fees: OptionalNum = None

    @property
    def can_trade(self) -> bool:
        """True when the account is ACTIVE and nothing blocks trading."""
        return (
            self.status == "ACTIVE"
            and not self.trading_blocked
            and not self.account_blocked
            and not self.trade_suspended_by_user
        )


class Clock(BrokerModel):
    """GET /v2/clock: the broker's view of the market (times carry the ET offset)."""

    timestamp: Timestamp
    is_open: bool
    next_open: Timestamp
    next_close: Timestamp


def _session_time(day: date, value: Any, field: str) -> datetime:
    """``HH:MM`` (or ``HH:MM:SS`` or ``HHMM``) on ``day`` as an aware ET datetime."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{field} has no time zone")
        return value.astimezone(EXCHANGE_TZ)
    text = str(value).strip()
    match = re.fullmatch(r"(\d{1,2}):?(\d{2})(?::(\d{2}))?", text)
    if match is None:
        raise ValueError(f"{field} must be HH:MM, got {value!r}")
    hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
    return datetime.combine(day, time(hour, minute, second), tzinfo=EXCHANGE_TZ)


class CalendarDay(BrokerModel):
    """One trading day of GET /v2/calendar, with ``open``/``close`` as aware ET datetimes."""

    date: Date
    open: datetime
    close: datetime
    session_open: datetime | None = None
    session_close: datetime | None = None
    settlement_date: Date | None = None

    @model_validator(mode="before")
    @classmethod
    def _combine_date_and_times(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "date" not in data:
            return data
        day = data["date"]
        if isinstance(day, str):
            try:
                day = date.fromisoformat(day)
            except ValueError:
                return data  # the field validator reports the bad date
        if not isinstance(day, date):
            return data
        out = dict(data)
        for field in ("open", "close", "session_open", "session_close"):
            optional = field.startswith("session")
            if out.get(field) in (None, ""):
                if optional:
                    out[field] = None
                continue
            try:
                out[field] = _session_time(day, out[field], field)
            except ValueError as exc:
                if not optional:
                    raise
                _note_tolerated(cls.__name__, field, str(exc).split(", got", 1)[0], out[field])
                out[field] = None
        return out

    @property
    def open_utc(self) -> datetime:
        return self.open.astimezone(timezone.utc)

    @property
    def close_utc(self) -> datetime:
        return self.close.astimezone(timezone.utc)


class Asset(BrokerModel):
    """GET /v2/assets[/{symbol}]. The wire key ``class`` is exposed as ``asset_class``."""

    id: str
    symbol: Symbol
    asset_class: str = Field(alias="class")
    exchange: str = ""
    name: str | None = None
    status: str
    tradable: bool
    marginable: bool = False
    shortable: bool = False
    easy_to_borrow: bool = False
    fractionable: bool = False
    cusip: str | None = None
    maintenance_margin_requirement: OptionalNum = None
    margin_requirement_long: OptionalNum = None
    margin_requirement_short: OptionalNum = None
    min_order_size: OptionalNum = None
    min_trade_increment: OptionalNum = None
    price_increment: OptionalNum = None
    attributes: list[str] = Field(default_factory=list)

    @field_validator("attributes", mode="before")
    @classmethod
    def _null_attributes(cls, value: Any) -> Any:
        return [] if value is None else value


# -- orders and positions ------------------------------------------------------------------

#: Order states after which nothing more will happen to the order.
TERMINAL_ORDER_STATUSES = frozenset({"filled", "canceled", "expired", "replaced", "rejected"})
#: Every order status Alpaca documents; another value is kept as sent (and counts as open).
KNOWN_ORDER_STATUSES = TERMINAL_ORDER_STATUSES | frozenset({
    "new", "partially_filled", "done_for_day", "pending_cancel", "pending_replace",
    "pending_review", "accepted", "pending_new", "accepted_for_bidding", "stopped",
    "suspended", "calculated", "held",
})
KNOWN_ORDER_SIDES = frozenset({"buy", "sell"})
KNOWN_ORDER_TYPES = frozenset({"market", "limit", "stop", "stop_limit", "trailing_stop"})
KNOWN_ORDER_CLASSES = frozenset({"simple", "bracket", "oco", "oto", "mleg"})


class Order(BrokerModel):
    """An order as returned by the trading API (POST, GET, PATCH, stream events).

    Enum-like fields stay ``str``: an unknown ``status`` counts as open (it may still fill),
    an unknown ``side`` or ``type`` matches none of the daemon's predicates (so such an
    order is never taken for a protective stop). The quantities and prices are strict: a
    malformed one fails the order (the gateway drops it from a list), it is never guessed.
    A malformed leg is dropped from ``legs`` (ERROR ``broker_item_dropped``), its parent and
    the other legs kept.
    """

    STRICT_FIELDS: ClassVar[frozenset[str]] = frozenset({
        "qty", "notional", "filled_qty", "filled_avg_price", "limit_price", "stop_price",
    })
    HAS_DROPPABLE_PARTS: ClassVar[bool] = True

    id: str
    client_order_id: str
    status: str
    symbol: Symbol
    side: str
    type: str
    time_in_force: str
    created_at: Timestamp
    updated_at: OptionalTimestamp = None
    submitted_at: OptionalTimestamp = None
    filled_at: OptionalTimestamp = None
    expired_at: OptionalTimestamp = None
    canceled_at: OptionalTimestamp = None
    failed_at: OptionalTimestamp = None
    replaced_at: OptionalTimestamp = None
    expires_at: OptionalTimestamp = None
    replaced_by: str | None = None
    replaces: str | None = None
    asset_id: str | None = None
    asset_class: str | None = None
    qty: OptionalNum = None
    notional: OptionalNum = None
    filled_qty: Num = Decimal(0)
    filled_avg_price: OptionalNum = None
    order_class: str = "simple"
    limit_price: OptionalNum = None
    stop_price: OptionalNum = None
    trail_price: OptionalNum = None
    trail_percent: OptionalNum = None
    hwm: OptionalNum = None
    extended_hours: bool = False
    position_intent: str | None = None
    commission: OptionalNum = None
    commission_type: str | None = None
    subtag: str | None = None
    source: str | None = None
    ratio_qty: OptionalNum = None
    cancel_requested_at: OptionalTimestamp = None
    legs: list[Order] | None = None

    @field_validator("legs", mode="wrap")
    @classmethod
    def _keep_good_legs(cls, value: Any, handler: ValidatorFunctionWrapHandler,
                        info: ValidationInfo) -> Any:
        """All legs at once; if one is malformed, each alone: that one is dropped (reported)."""
        try:
            return handler(value)
        except ValidationError:
            if not isinstance(value, list):
                raise
        parent = info.data.get("id")
        legs: list[Order] = []
        for index, raw in enumerate(value):
            try:
                legs.append(raw if isinstance(raw, Order) else Order.model_validate(raw))
            except ValidationError as exc:
                report_dropped("Order", f"legs of order {parent}", index, raw, exc)
        return legs

    @model_validator(mode="after")
    def _note_unknown_values(self) -> Order:
        for field, known in (("status", KNOWN_ORDER_STATUSES), ("side", KNOWN_ORDER_SIDES),
                             ("type", KNOWN_ORDER_TYPES), ("order_class", KNOWN_ORDER_CLASSES)):
            value = getattr(self, field)
            if value not in known:
                note_unknown_enum("Order", field, value)
        return self

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = dict(data)
        if out.get("type") in (None, "") and out.get("order_type"):
            out["type"] = out["order_type"]
        if out.get("order_class") in (None, ""):
            out["order_class"] = "simple"
        if out.get("filled_qty") in (None, ""):
            out["filled_qty"] = "0"
        if out.get("asset_id") == "":
            out["asset_id"] = None
        return out

    @property
    def is_terminal(self) -> bool:
        """Filled, canceled, expired, replaced or rejected: nothing more will happen."""
        return self.status in TERMINAL_ORDER_STATUSES

    @property
    def is_open(self) -> bool:
        """Anything not terminal (unknown new statuses count as open: it may still fill)."""
        return not self.is_terminal

    @property
    def remaining_qty(self) -> Decimal | None:
        """Quantity still to fill, or None for notional orders."""
        if self.qty is None:
            return None
        return max(self.qty - self.filled_qty, Decimal(0))


OrderLeg = Order


class Position(BrokerModel):
    """An open position. ``qty`` is signed: negative for shorts (normalised from ``side``)."""

    symbol: Symbol
    qty: Num
    side: str = ""
    avg_entry_price: Num
    asset_id: str | None = None
    exchange: str = ""
    asset_class: str = "us_equity"
    asset_marginable: bool | None = None
    qty_available: OptionalNum = None
    cost_basis: OptionalNum = None
    market_value: OptionalNum = None
    unrealized_pl: OptionalNum = None
    unrealized_plpc: OptionalNum = None
    unrealized_intraday_pl: OptionalNum = None
    unrealized_intraday_plpc: OptionalNum = None
    current_price: OptionalNum = None
    lastday_price: OptionalNum = None
    change_today: OptionalNum = None
    swap_rate: OptionalNum = None
    avg_entry_swap_rate: OptionalNum = None

    @model_validator(mode="after")
    def _sign_and_side(self) -> Position:
        if self.side == "short" and self.qty > 0:
            self.qty = -self.qty
        if self.side not in ("long", "short"):
            self.side = "short" if self.qty < 0 else "long"
        return self

    @property
    def is_long(self) -> bool:
        return self.qty > 0

    @property
    def is_short(self) -> bool:
        return self.qty < 0


# -- market data ---------------------------------------------------------------------------


class Bar(BrokerModel):
    """An OHLCV bar; ``t`` is the bar's start (daily bars: midnight ET, in UTC)."""

    t: Timestamp
    o: Num
    h: Num
    l: Num  # noqa: E741 - Alpaca's field letter
    c: Num
    v: int
    n: int | None = None
    vw: OptionalNum = None

    @field_validator("v", "n", mode="before")
    @classmethod
    def _whole_number(cls, value: Any) -> Any:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value

    @property
    def timestamp(self) -> datetime:
        return self.t

    @property
    def open(self) -> Decimal:
        return self.o

    @property
    def high(self) -> Decimal:
        return self.h

    @property
    def low(self) -> Decimal:
        return self.l

    @property
    def close(self) -> Decimal:
        return self.c

    @property
    def volume(self) -> int:
        return self.v


class Quote(BrokerModel):
    """The NBBO (or IEX) quote. A price of 0 means no bid or no ask."""

    t: Timestamp
    ap: Num
    bp: Num
    as_: Num = Field(alias="as")
    bs: Num
    ax: str | None = None
    bx: str | None = None
    c: list[str] | None = None
    z: str | None = None

    @property
    def bid(self) -> Decimal:
        return self.bp

    @property
    def ask(self) -> Decimal:
        return self.ap

    @property
    def bid_size(self) -> Decimal:
        return self.bs

    @property
    def ask_size(self) -> Decimal:
        return self.as_

    @property
    def is_crossed(self) -> bool:
        """Bid above ask: the quote is not tradable as shown."""
        return self.bp > self.ap

    @property
    def has_both_sides(self) -> bool:
        return self.bp > 0 and self.ap > 0

    @property
    def mid(self) -> Decimal:
        return (self.bp + self.ap) / 2


class Trade(BrokerModel):
    """A trade print."""

    t: Timestamp
    p: Num
    s: Num
    x: str | None = None
    i: int | None = None
    c: list[str] | None = None
    z: str | None = None
    u: str | None = None

    @property
    def price(self) -> Decimal:
        return self.p

    @property
    def size(self) -> Decimal:
        return self.s


class Snapshot(BrokerModel):
    """Latest trade and quote plus the minute, daily and previous daily bars of one symbol."""

    # Every part steers trading (entry prices, stops, gap risk): a malformed part (a NaN or
    # garbled quote) rejects the symbol's snapshot for the cycle instead of being guessed away.
    STRICT_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"latest_trade", "latest_quote", "minute_bar", "daily_bar", "prev_daily_bar"})

    symbol: str | None = None
    latest_trade: Trade | None = Field(default=None, alias="latestTrade")
    latest_quote: Quote | None = Field(default=None, alias="latestQuote")
    minute_bar: Bar | None = Field(default=None, alias="minuteBar")
    daily_bar: Bar | None = Field(default=None, alias="dailyBar")
    prev_daily_bar: Bar | None = Field(default=None, alias="prevDailyBar")


# -- market data: a fast path for the common shape ------------------------------------------
#
# A cycle parses a snapshot (a trade, a quote and three bars) per symbol; at 500 symbols
# that is ~10,000 numbers, and pydantic calling the Python validators above for each one was
# a third of the daemon's CPU per cycle. The functions below build the same models directly
# when a payload has exactly the shape market data normally has: known keys only (wire
# names), JSON numbers (finite floats, ints; never bools) where numbers go, RFC 3339 strings
# with a zone for timestamps, strings or null for the codes. On anything else (a string
# price, an unknown or by-name key, NaN, a bool, a naive or garbled timestamp, a missing
# field) they hand the payload to full validation, which gives exactly what it always gave:
# the model, or the ValidationError naming the problem. The fast path produces identical
# instances (same values and value types, same fields set; tests pin this on real bars).


class _Unusual(Exception):
    """Inside the fast path: this payload is not the common shape; validate it fully."""


_set_slot = object.__setattr__
_new = object.__new__
# BaseModel's slots, set through their descriptors (what object.__setattr__ looks up by name).
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


# Decimals of recently seen JSON floats: prices repeat within a snapshot (the minute bar's
# close is the last trade, the daily bar's open and high stay put) and from one cycle to the
# next. Decimals are immutable, so sharing one is safe. Zero is never stored (0.0 and -0.0
# are equal keys but different Decimals). Cleared when full, so memory stays flat.
_DECIMAL_MEMO: dict[float, Decimal] = {}
_DECIMAL_MEMO_SIZE = 16384


def _fast_num(value: Any) -> Decimal:
    if type(value) is float:
        known = _DECIMAL_MEMO.get(value)
        if known is not None:
            return known
        if value - value != 0.0:  # inf - inf and nan - nan are nan
            raise _Unusual
        number = Decimal(repr(value))
        if value:
            if len(_DECIMAL_MEMO) >= _DECIMAL_MEMO_SIZE:
                _DECIMAL_MEMO.clear()
            _DECIMAL_MEMO[value] = number
        return number
    if type(value) is int:
        return Decimal(value)
    raise _Unusual


def _fast_optional_num(value: Any) -> Decimal | None:
    return None if value is None else _fast_num(value)


def _fast_timestamp(value: Any) -> datetime:
    if type(value) is not str:
        raise _Unusual
    known = _TIMESTAMP_MEMO.get(value)
    if known is not None:
        return known
    try:
        return parse_timestamp(value)
    except ValueError:
        raise _Unusual from None


def _fast_whole(value: Any) -> int:
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    raise _Unusual


def _fast_text(value: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    raise _Unusual


def _fast_codes(value: Any) -> list[str] | None:
    if value is None:
        return None
    if type(value) is not list:
        raise _Unusual
    for item in value:
        if type(item) is not str:
            raise _Unusual
    return list(value)


_M = TypeVar("_M", bound=BaseModel)


def _built(cls: type[_M], values: dict[str, Any], fields_set: set[str]) -> _M:
    """An instance of ``cls`` holding ``values`` (in field order), as validation leaves it."""
    instance = _new(cls)
    _set_slot(instance, "__dict__", values)
    _set_fields_set(instance, fields_set)
    _set_extra(instance, None)
    _set_private(instance, None)
    return instance


_BAR_KEYS = frozenset({"t", "o", "h", "l", "c", "v", "n", "vw"})
_QUOTE_KEYS = frozenset({"t", "ap", "bp", "as", "bs", "ax", "bx", "c", "z"})
_TRADE_KEYS = frozenset({"t", "p", "s", "x", "i", "c", "z", "u"})
_SNAPSHOT_FIELDS = {
    "symbol": "symbol", "latestTrade": "latest_trade", "latestQuote": "latest_quote",
    "minuteBar": "minute_bar", "dailyBar": "daily_bar", "prevDailyBar": "prev_daily_bar",
}


def _fast_bar(raw: Any) -> Bar:
    if type(raw) is not dict or not raw.keys() <= _BAR_KEYS:
        raise _Unusual
    get = raw.get
    try:
        values = {
            "t": _fast_timestamp(raw["t"]), "o": _fast_num(raw["o"]), "h": _fast_num(raw["h"]),
            "l": _fast_num(raw["l"]), "c": _fast_num(raw["c"]), "v": _fast_whole(raw["v"]),
        }
    except KeyError:
        raise _Unusual from None
    n = get("n")
    values["n"] = None if n is None else _fast_whole(n)
    values["vw"] = _fast_optional_num(get("vw"))
    return _built(Bar, values, set(raw))


def _fast_quote(raw: Any) -> Quote:
    if type(raw) is not dict or not raw.keys() <= _QUOTE_KEYS:
        raise _Unusual
    get = raw.get
    try:
        values = {
            "t": _fast_timestamp(raw["t"]), "ap": _fast_num(raw["ap"]), "bp": _fast_num(raw["bp"]),
            "as_": _fast_num(raw["as"]), "bs": _fast_num(raw["bs"]),
        }
    except KeyError:
        raise _Unusual from None
    values["ax"] = _fast_text(get("ax"))
    values["bx"] = _fast_text(get("bx"))
    values["c"] = _fast_codes(get("c"))
    values["z"] = _fast_text(get("z"))
    fields_set = set(raw)
    fields_set.discard("as")
    fields_set.add("as_")
    return _built(Quote, values, fields_set)


def _fast_trade(raw: Any) -> Trade:
    if type(raw) is not dict or not raw.keys() <= _TRADE_KEYS:
        raise _Unusual
    get = raw.get
    try:
        values = {"t": _fast_timestamp(raw["t"]), "p": _fast_num(raw["p"]), "s": _fast_num(raw["s"])}
    except KeyError:
        raise _Unusual from None
    values["x"] = _fast_text(get("x"))
    i = get("i")
    if i is not None and type(i) is not int:
        raise _Unusual
    values["i"] = i
    values["c"] = _fast_codes(get("c"))
    values["z"] = _fast_text(get("z"))
    values["u"] = _fast_text(get("u"))
    return _built(Trade, values, set(raw))


def _fast_snapshot(raw: Any) -> Snapshot:
    if type(raw) is not dict or not raw.keys() <= _SNAPSHOT_FIELDS.keys():
        raise _Unusual
    get = raw.get
    trade, quote = get("latestTrade"), get("latestQuote")
    minute, daily, previous = get("minuteBar"), get("dailyBar"), get("prevDailyBar")
    values = {
        "symbol": _fast_text(get("symbol")),
        "latest_trade": None if trade is None else _fast_trade(trade),
        "latest_quote": None if quote is None else _fast_quote(quote),
        "minute_bar": None if minute is None else _fast_bar(minute),
        "daily_bar": None if daily is None else _fast_bar(daily),
        "prev_daily_bar": None if previous is None else _fast_bar(previous),
    }
    return _built(Snapshot, values, {_SNAPSHOT_FIELDS[key] for key in raw})


def parse_bar(raw: Any) -> Bar:
    """``Bar.model_validate(raw)``, faster on market data's common shape (same result)."""
    try:
        return _fast_bar(raw)
    except _Unusual:
        return Bar.model_validate(raw)


def parse_quote(raw: Any) -> Quote:
    """``Quote.model_validate(raw)``, faster on market data's common shape (same result)."""
    try:
        return _fast_quote(raw)
    except _Unusual:
        return Quote.model_validate(raw)


def parse_trade(raw: Any) -> Trade:
    """``Trade.model_validate(raw)``, faster on market data's common shape (same result)."""
    try:
        return _fast_trade(raw)
    except _Unusual:
        return Trade.model_validate(raw)


def parse_snapshot(raw: Any) -> Snapshot:
    """``Snapshot.model_validate(raw)``, faster on market data's common shape (same result)."""
    try:
        return _fast_snapshot(raw)
    except _Unusual:
        return Snapshot.model_validate(raw)


class NewsArticle(BrokerModel):
    """One article of GET /v1beta1/news."""

    id: int
    headline: str
    author: str | None = None
    created_at: Timestamp
    updated_at: OptionalTimestamp = None
    summary: str | None = None
    content: str | None = None
    url: str | None = None
    images: list[dict[str, Any]] = Field(default_factory=list)
    symbols: list[str] = Field(default_factory=list)
    source: str | None = None

    @field_validator("images", "symbols", mode="before")
    @classmethod
    def _null_list(cls, value: Any) -> Any:
        return [] if value is None else value


class Activity(BrokerModel):
    """An account activity: a FILL (trade activity) or a non-trade entry (DIV, FEE, ...).

    A fill's price and quantities become journal entries, so they are strict: a malformed
    one drops the activity (reported), it is never recorded as a guess.
    """

    STRICT_FIELDS: ClassVar[frozenset[str]] = frozenset({"price", "qty", "cum_qty", "leaves_qty"})

    id: str
    activity_type: str
    transaction_time: OptionalTimestamp = None
    type: str | None = None
    price: OptionalNum = None
    qty: OptionalNum = None
    side: str | None = None
    symbol: str | None = None
    leaves_qty: OptionalNum = None
    cum_qty: OptionalNum = None
    order_id: str | None = None
    order_status: str | None = None
    activity_sub_type: str | None = None
    date: Date | None = None
    net_amount: OptionalNum = None
    per_share_amount: OptionalNum = None
    status: str | None = None
    description: str | None = None
    created_at: OptionalTimestamp = None
    cusip: str | None = None
    group_id: str | None = None
    account_id: str | None = None

    @field_validator("date", mode="before")
    @classmethod
    def _date_only(cls, value: Any) -> Any:
        if isinstance(value, str) and len(value) > 10:
            return parse_timestamp(value).date()
        return value


# -- responses -----------------------------------------------------------------------------


class ErrorBody(BrokerModel):
    """An error body: trading API ``{"code", "message", ...}``; data API only ``message``.

    Context fields (``available``, ``held_for_orders``, ``buying_power`` ...) are kept.
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    code: int | None = None
    message: str = ""

    @field_validator("code", mode="before")
    @classmethod
    def _lenient_code(cls, value: Any) -> Any:
        if isinstance(value, str):
            return int(value) if value.strip().isdigit() else None
        return value

    @field_validator("message", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return "" if value is None else str(value)


class MultiStatusItem(BrokerModel):
    """One item of a 207 Multi-Status body (cancel-all: ``id``; close-all: ``symbol``)."""

    id: str | None = None
    symbol: str | None = None
    status: int
    body: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _names_something(self) -> MultiStatusItem:
        if not self.id and not self.symbol:
            raise ValueError("multi-status item has neither id nor symbol")
        return self

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def order(self) -> Order | None:
        """The order in a successful item's body (close-all), if the body is a usable order.

        An unreadable order is reported (ERROR ``broker_item_dropped``) and read as None.
        """
        if not self.ok or not self.body or "client_order_id" not in self.body:
            return None
        try:
            return Order.model_validate(self.body)
        except ValidationError as exc:
            report_dropped("Order", f"207 item {self.symbol or self.id}", None, self.body, exc)
            return None

    @property
    def error(self) -> ErrorBody | None:
        if self.ok:
            return None
        return ErrorBody.model_validate(self.body or {})


class ApiResponse(BaseModel):
    """What :meth:`api_gateway.ResilientAlpacaGateway.request` returns; it never raises.

    ``status`` is the HTTP status, or 0 when no response arrived. ``error_type`` says what
    went wrong: ``"http"`` (an error status), ``"network"`` (timeout, reset, refused),
    ``"malformed"`` (a body that is not the expected JSON), ``"redirect"`` (3xx), ``"closed"``
    (the HTTP session was already closed).
    ``outcome_unknown`` is True when the broker may have acted on the request anyway
    (timeout or reset after sending, 5xx, unreadable 2xx).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    success: bool
    status: int
    data: Any = None
    error_code: int | None = None
    message: str = ""
    request_id: str | None = None
    error_type: str | None = None
    retry_after: float | None = None
    outcome_unknown: bool = False
    method: str = ""
    path: str = ""

    @property
    def error_body(self) -> ErrorBody:
        return ErrorBody.model_validate(self.data if isinstance(self.data, dict) else {})

    def error(self, *, for_order: bool = False) -> errors.BrokerError | None:
        """The core/errors.py exception this response stands for, or None on success.

        HTTP errors are classified by :mod:`broker.broker_errors` from the status, Alpaca's ``code``
        and the request (``method`` and ``path``); never by the message text.
        ``for_order``: a response without a path came from a request that would have created
        or changed an order (an otherwise unclassified 4xx is then a rejection).
        """
        if self.success:
            return None
        where = f"{self.method} {self.path}".strip()
        text = self.message or "broker error"
        message = f"{where}: {text}" if where else text
        body = self.data if isinstance(self.data, dict) else None
        kw: dict[str, Any] = {
            "status": self.status or None,
            "code": self.error_code,
            "request_id": self.request_id,
            "body": body,
        }
        if self.error_type == "network":
            return errors.BrokerUnavailable(message, **kw)
        if self.error_type == "malformed":
            return errors.MalformedResponse(message, **kw)
        if self.error_type in ("redirect", "closed"):
            return errors.OperationalError(message, **kw)
        kind = broker_errors.request_kind(self.method, self.path, for_order=for_order)
        return broker_errors.exception_for(
            self.status, self.error_code, kind, body=body, broker_message=self.message,
            message=message, kw=kw, retry_after=self.retry_after,
        )

    def raise_for_error(self, *, for_order: bool = False) -> ApiResponse:
        """Raise the matching core/errors.py exception unless successful; returns self for chaining."""
        problem = self.error(for_order=for_order)
        if problem is not None:
            raise problem
        return self


PDT_CODE = broker_errors.CODE_PDT


# -- order requests ------------------------------------------------------------------------

ORDER_SIDES = frozenset({"buy", "sell"})
ORDER_TYPES = frozenset({"market", "limit", "stop", "stop_limit", "trailing_stop"})
TIMES_IN_FORCE = frozenset({"day", "gtc", "opg", "cls", "ioc", "fok"})
ORDER_CLASSES = frozenset({"simple", "bracket", "oco", "oto"})
MAX_CLIENT_ORDER_ID = 128


class TakeProfit(BaseModel):
    """The take-profit leg of a bracket, OCO or OTO order."""

    model_config = ConfigDict(extra="forbid")

    limit_price: Num

    def to_payload(self) -> dict[str, str]:
        return {"limit_price": decimal_text(self.limit_price)}


class StopLoss(BaseModel):
    """The stop-loss leg; with ``limit_price`` the leg is a stop-limit order."""

    model_config = ConfigDict(extra="forbid")

    stop_price: Num
    limit_price: OptionalNum = None

    def to_payload(self) -> dict[str, str]:
        payload = {"stop_price": decimal_text(self.stop_price)}
        if self.limit_price is not None:
            payload["limit_price"] = decimal_text(self.limit_price)
        return payload


class OrderRequest(BaseModel):
    """An order to submit (POST /v2/orders), validated before anything is sent.

    Build one with the constructors :meth:`simple`, :meth:`bracket`, :meth:`oco`,
    :meth:`oto` and :meth:`trailing_stop`, or directly. ``to_payload()`` is the JSON body.
    """

    model_config = ConfigDict(extra="forbid")

    symbol: str
    side: str
    type: str = "market"
    time_in_force: str = "day"
    qty: OptionalNum = None
    notional: OptionalNum = None
    limit_price: OptionalNum = None
    stop_price: OptionalNum = None
    trail_price: OptionalNum = None
    trail_percent: OptionalNum = None
    extended_hours: bool | None = None
    client_order_id: str | None = None
    order_class: str | None = None
    take_profit: TakeProfit | None = None
    stop_loss: StopLoss | None = None
    position_intent: str | None = None

    @model_validator(mode="after")
    def _check(self) -> OrderRequest:
        problems = _order_request_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def to_payload(self) -> dict[str, Any]:
        """The JSON body: decimals as strings, unset fields omitted, booleans as booleans."""
        payload: dict[str, Any] = {}
        for name in (
            "symbol", "qty", "notional", "side", "type", "time_in_force", "limit_price",
            "stop_price", "trail_price", "trail_percent", "extended_hours", "client_order_id",
            "order_class", "position_intent",
        ):
            value = getattr(self, name)
            if value is None:
                continue
            payload[name] = decimal_text(value) if isinstance(value, Decimal) else value
        if self.take_profit is not None:
            payload["take_profit"] = self.take_profit.to_payload()
        if self.stop_loss is not None:
            payload["stop_loss"] = self.stop_loss.to_payload()
        return payload

    # -- constructors -----------------------------------------------------------------

    @classmethod
    def simple(
        cls,
        symbol: str,
        qty: Decimal | int | str,
        side: str,
        *,
        type: str = "market",  # noqa: A002 - Alpaca's field name
        time_in_force: str = "day",
        limit_price: Decimal | str | None = None,
        stop_price: Decimal | str | None = None,
        extended_hours: bool | None = None,
        client_order_id: str | None = None,
    ) -> OrderRequest:
        """A market, limit, stop or stop-limit order with no legs."""
        return cls(
            symbol=symbol, qty=qty, side=side, type=type, time_in_force=time_in_force,
            limit_price=limit_price, stop_price=stop_price, extended_hours=extended_hours,
            client_order_id=client_order_id,
        )

    @classmethod
    def bracket(
        cls,
        symbol: str,
        qty: Decimal | int | str,
        side: str,
        *,
        take_profit_price: Decimal | str,
        stop_loss_price: Decimal | str,
        stop_loss_limit_price: Decimal | str | None = None,
        limit_price: Decimal | str | None = None,
        time_in_force: str = "day",
        client_order_id: str | None = None,
    ) -> OrderRequest:
        """An entry (market, or limit when ``limit_price`` is given) with take-profit and stop."""
        return cls(
            symbol=symbol, qty=qty, side=side,
            type="limit" if limit_price is not None else "market",
            limit_price=limit_price, time_in_force=time_in_force, order_class="bracket",
            take_profit=TakeProfit(limit_price=take_profit_price),
            stop_loss=StopLoss(stop_price=stop_loss_price, limit_price=stop_loss_limit_price),
            client_order_id=client_order_id,
        )

    @classmethod
    def oco(
        cls,
        symbol: str,
        qty: Decimal | int | str,
        side: str,
        *,
        take_profit_price: Decimal | str,
        stop_loss_price: Decimal | str,
        stop_loss_limit_price: Decimal | str | None = None,
        time_in_force: str = "gtc",
        client_order_id: str | None = None,
    ) -> OrderRequest:
        """An exit for an existing position: take-profit limit and stop, one cancels the other."""
        return cls(
            symbol=symbol, qty=qty, side=side, type="limit",
            limit_price=take_profit_price, time_in_force=time_in_force, order_class="oco",
            take_profit=TakeProfit(limit_price=take_profit_price),
            stop_loss=StopLoss(stop_price=stop_loss_price, limit_price=stop_loss_limit_price),
            client_order_id=client_order_id,
        )

    @classmethod
    def oto(
        cls,
        symbol: str,
        qty: Decimal | int | str,
        side: str,
        *,
        take_profit_price: Decimal | str | None = None,
        stop_loss_price: Decimal | str | None = None,
        stop_loss_limit_price: Decimal | str | None = None,
        limit_price: Decimal | str | None = None,
        time_in_force: str = "day",
        client_order_id: str | None = None,
    ) -> OrderRequest:
        """An entry with exactly one exit leg (take-profit or stop-loss)."""
        return cls(
            symbol=symbol, qty=qty, side=side,
            type="limit" if limit_price is not None else "market",
            limit_price=limit_price, time_in_force=time_in_force, order_class="oto",
            take_profit=None if take_profit_price is None else TakeProfit(limit_price=take_profit_price),
            stop_loss=None if stop_loss_price is None else StopLoss(
                stop_price=stop_loss_price, limit_price=stop_loss_limit_price),
            client_order_id=client_order_id,
        )

    @classmethod
    def trailing_stop(
        cls,
        symbol: str,
        qty: Decimal | int | str,
        side: str,
        *,
        trail_price: Decimal | str | None = None,
        trail_percent: Decimal | str | None = None,
        time_in_force: str = "day",
        client_order_id: str | None = None,
    ) -> OrderRequest:
        """A trailing stop by a price offset or a percent (exactly one of the two)."""
        return cls(
            symbol=symbol, qty=qty, side=side, type="trailing_stop",
            trail_price=trail_price, trail_percent=trail_percent,
            time_in_force=time_in_force, client_order_id=client_order_id,
        )


def _order_request_problems(req: OrderRequest) -> list[str]:
    """Every reason the broker would refuse this request's shape, one line each."""
    problems: list[str] = []
    if not req.symbol.strip():
        problems.append("symbol is empty")
    if req.side not in ORDER_SIDES:
        problems.append(f"side {req.side!r} is not one of {sorted(ORDER_SIDES)}")
    if req.type not in ORDER_TYPES:
        problems.append(f"type {req.type!r} is not one of {sorted(ORDER_TYPES)}")
    if req.time_in_force not in TIMES_IN_FORCE:
        problems.append(f"time_in_force {req.time_in_force!r} is not one of {sorted(TIMES_IN_FORCE)}")
    if (req.qty is None) == (req.notional is None):
        problems.append("exactly one of qty and notional is required")
    for name in ("qty", "notional", "limit_price", "stop_price", "trail_price", "trail_percent"):
        value = getattr(req, name)
        if value is not None and value <= 0:
            problems.append(f"{name} must be positive, got {value}")
    if req.notional is not None and (req.type != "market" or req.time_in_force != "day"):
        problems.append("notional orders must be market orders with time_in_force day")
    # An OCO's parent is its take-profit: Alpaca takes the limit from take_profit.limit_price
    # when the top-level limit_price is absent (its documented OCO example sends only that).
    oco_limit_in_leg = req.order_class == "oco" and req.take_profit is not None
    if req.type in ("limit", "stop_limit") and req.limit_price is None and not oco_limit_in_leg:
        problems.append(f"{req.type} orders need limit_price")
    if req.type in ("stop", "stop_limit") and req.stop_price is None:
        problems.append(f"{req.type} orders need stop_price")
    if req.type == "trailing_stop" and (req.trail_price is None) == (req.trail_percent is None):
        problems.append("trailing_stop orders need exactly one of trail_price and trail_percent")
    if req.client_order_id is not None and not 0 < len(req.client_order_id) <= MAX_CLIENT_ORDER_ID:
        problems.append(f"client_order_id must be 1-{MAX_CLIENT_ORDER_ID} characters")
    order_class = req.order_class or "simple"
    if order_class not in ORDER_CLASSES:
        problems.append(f"order_class {order_class!r} is not one of {sorted(ORDER_CLASSES)}")
    legs = (req.take_profit is not None) + (req.stop_loss is not None)
    if order_class in ("bracket", "oco") and legs != 2:
        problems.append(f"{order_class} orders need both take_profit and stop_loss")
    if order_class == "oto" and legs != 1:
        problems.append("oto orders need exactly one of take_profit and stop_loss")
    if order_class == "simple" and legs:
        problems.append("take_profit/stop_loss need order_class bracket, oco or oto")
    if order_class == "bracket":
        if req.type not in ("market", "limit"):
            problems.append("bracket orders must be market or limit orders")
        if req.time_in_force not in ("day", "gtc"):
            problems.append("bracket orders need time_in_force day or gtc")
        if req.extended_hours:
            problems.append("bracket orders cannot trade in extended hours")
    if order_class == "oco" and req.type != "limit":
        problems.append("oco orders must be limit orders")
    if req.take_profit is not None and req.stop_loss is not None and not problems:
        take, stop = req.take_profit.limit_price, req.stop_loss.stop_price
        exit_sells = (req.side == "buy") != (order_class == "oco")
        if exit_sells and take <= stop:
            problems.append(f"take_profit {take} must be above stop_loss {stop} for a long position")
        if not exit_sells and take >= stop:
            problems.append(f"take_profit {take} must be below stop_loss {stop} for a short position")
    if req.extended_hours and (req.type != "limit" or req.time_in_force not in ("day", "gtc")):
        problems.append("extended_hours orders must be limit orders with time_in_force day or gtc")
    return problems


Order.model_rebuild()
