"""The wire-model catalogue: every model of an Alpaca object the daemon reads, and of the order
requests it sends, importable from one place.

This module defines nothing; it is the single import face over the modules that do, each with
one job:

* :mod:`broker.wire` -- field types (Decimal money, aware UTC timestamps), the tolerant
  :class:`BrokerModel` base, the tolerance memory and dropped-item reporting (the parsing
  rules are told there);
* :mod:`broker.trading_models` -- account, clock, calendar, assets, orders, positions,
  activities;
* :mod:`broker.market_models` -- bars, quotes, trades, snapshots, news, and the fast parsers;
* :mod:`broker.order_requests` -- :class:`OrderRequest` and its legs, checked before sending;
* :mod:`broker.responses` -- the error body, multi-status items and :class:`ApiResponse`.

Callers import from here (``from broker.models import Order``) so that where a model lives
is the catalogue's business, not theirs; module-level state (the tolerance memory, the drop
context variables, the memo caches) lives once, in the defining module.
"""

from __future__ import annotations

from broker.wire import (
    BrokerModel,
    Date,
    DroppedItem,
    Num,
    OptionalNum,
    OptionalTimestamp,
    Symbol,
    Timestamp,
    collect_dropped,
    decimal_text,
    note_unknown_enum,
    parse_decimal,
    parse_optional_decimal,
    parse_optional_timestamp,
    parse_timestamp,
    report_dropped,
    reset_tolerance_memory,
    to_decimal,
    tolerated_fields,
)
from broker.trading_models import (
    Account,
    Activity,
    Asset,
    CalendarDay,
    Clock,
    KNOWN_ORDER_CLASSES,
    KNOWN_ORDER_SIDES,
    KNOWN_ORDER_STATUSES,
    KNOWN_ORDER_TYPES,
    Order,
    OrderLeg,
    Position,
    TERMINAL_ORDER_STATUSES,
)
from broker.market_models import (
    Bar,
    NewsArticle,
    Quote,
    Snapshot,
    Trade,
    parse_bar,
    parse_quote,
    parse_snapshot,
    parse_trade,
)
from broker.order_requests import (
    MAX_CLIENT_ORDER_ID,
    ORDER_CLASSES,
    ORDER_SIDES,
    ORDER_TYPES,
    OrderRequest,
    StopLoss,
    TIMES_IN_FORCE,
    TakeProfit,
)
from broker.responses import (
    ApiResponse,
    ErrorBody,
    MultiStatusItem,
    PDT_CODE,
)

__all__ = [
    "Account",
    "Activity",
    "ApiResponse",
    "Asset",
    "Bar",
    "BrokerModel",
    "CalendarDay",
    "Clock",
    "Date",
    "DroppedItem",
    "ErrorBody",
    "KNOWN_ORDER_CLASSES",
    "KNOWN_ORDER_SIDES",
    "KNOWN_ORDER_STATUSES",
    "KNOWN_ORDER_TYPES",
    "MAX_CLIENT_ORDER_ID",
    "MultiStatusItem",
    "NewsArticle",
    "Num",
    "ORDER_CLASSES",
    "ORDER_SIDES",
    "ORDER_TYPES",
    "OptionalNum",
    "OptionalTimestamp",
    "Order",
    "OrderLeg",
    "OrderRequest",
    "PDT_CODE",
    "Position",
    "Quote",
    "Snapshot",
    "StopLoss",
    "Symbol",
    "TERMINAL_ORDER_STATUSES",
    "TIMES_IN_FORCE",
    "TakeProfit",
    "Timestamp",
    "Trade",
    "collect_dropped",
    "decimal_text",
    "note_unknown_enum",
    "parse_bar",
    "parse_decimal",
    "parse_optional_decimal",
    "parse_optional_timestamp",
    "parse_quote",
    "parse_snapshot",
    "parse_timestamp",
    "parse_trade",
    "report_dropped",
    "reset_tolerance_memory",
    "to_decimal",
    "tolerated_fields",
]
