"""Market data models (bars, quotes, trades, snapshots, news) and their fast parsers.

``parse_bar``, ``parse_quote``, ``parse_trade`` and ``parse_snapshot`` build the models
directly when a payload has the usual shape and fall back to full validation otherwise (the
comment above ``_Unusual`` says exactly when); both paths give identical instances.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, Field, field_validator

from broker.wire import (
    BrokerModel,
    Num,
    OptionalNum,
    OptionalTimestamp,
    Timestamp,
    parse_timestamp,
    _TIMESTAMP_MEMO,
)

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
