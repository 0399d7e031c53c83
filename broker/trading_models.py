"""The trading objects Alpaca sends: account, clock, calendar, assets, orders, positions and
account activities (fills and non-trade entries). Built on :class:`broker.wire.BrokerModel`,
so they tolerate what it tolerates; the fields that steer trading are in ``STRICT_FIELDS``.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timezone
from decimal import Decimal
from typing import Any, ClassVar

from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from broker.wire import (
    BrokerModel,
    Date,
    Num,
    OptionalNum,
    OptionalTimestamp,
    Symbol,
    Timestamp,
    note_unknown_enum,
    parse_timestamp,
    report_dropped,
    _note_tolerated,
)
from core.clock import EXCHANGE_TZ

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


# -- account activities --------------------------------------------------------------------


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


# ``legs`` is ``list[Order]``: resolve the self-reference now that the class exists.
Order.model_rebuild()
