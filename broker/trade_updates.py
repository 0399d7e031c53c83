"""Alpaca's ``trade_updates`` stream messages, parsed once at the edge into typed events.

A message is ``{"stream": "trade_updates", "data": {...}}``; ``data`` holds the ``event``
(``new``, ``fill``, ``partial_fill``, ``canceled``, ``expired``, ``replaced``, ``rejected``,
``pending_new``, ``done_for_day``, ... kept as the raw string: Alpaca adds values), the full
``order`` (the REST Order shape), the event's ``timestamp`` and, on fills, ``price`` and
``qty`` of this execution, ``position_qty`` (the signed position after it) and
``execution_id`` (a UUID). Money and quantities become ``Decimal``, timestamps aware UTC.

:class:`TradeUpdate` is the one event type the engine's order-event core consumes
(``engine.order_events``), whether it came from the websocket, from a REST catch-up or,
in a backtest, from the simulator's own event list: plain typed data, no transport.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, ClassVar

from pydantic import ValidationError, field_validator

from broker.trading_models import Order
from broker.wire import BrokerModel, OptionalNum, Timestamp, report_dropped

__all__ = ["FILL_EVENTS", "TERMINAL_EVENTS", "TradeUpdate", "parse_trade_update", "trade_update_of"]

TRADE_UPDATES = "trade_updates"
#: Events that carry an execution (``price``, ``qty``, ``position_qty``, ``execution_id``).
FILL_EVENTS = frozenset({"fill", "partial_fill"})
#: Events after which the order is no longer open.
TERMINAL_EVENTS = frozenset({"fill", "canceled", "expired", "replaced", "rejected", "done_for_day"})


class TradeUpdate(BrokerModel):
    """One ``trade_updates`` event: what happened to which order, when, and for a fill, at
    what price and size (``qty`` is this execution's, ``order.filled_qty`` the cumulative)."""

    event: str
    order: Order
    timestamp: Timestamp
    price: OptionalNum = None
    qty: OptionalNum = None
    position_qty: OptionalNum = None
    execution_id: str | None = None

    # an execution whose size or price cannot be read is not an execution without them
    STRICT_FIELDS: ClassVar[frozenset[str]] = frozenset({"price", "qty", "position_qty"})

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(timezone.utc)

    @property
    def is_fill(self) -> bool:
        """A (partial) execution with a positive quantity and price."""
        return (self.event in FILL_EVENTS and self.qty is not None and self.qty > 0
                and self.price is not None and self.price > 0)

    @property
    def fill_key(self) -> tuple[str, Decimal] | None:
        """(order id, cumulative filled qty after this execution): the same key a FILL
        activity gives (``order_id``, ``cum_qty``), so a fill seen both on the stream and
        over REST is recognised whatever ids the two carry."""
        return (self.order.id, self.order.filled_qty) if self.is_fill else None


def parse_trade_update(message: Any) -> TradeUpdate | None:
    """The event in one decoded stream message; None for control messages (authorization,
    listening) and for an event that cannot be read (reported as ``broker_item_dropped``,
    so the REST catch-up is what finds that order's state)."""
    if not isinstance(message, dict) or message.get("stream") != TRADE_UPDATES:
        return None
    data = message.get("data")
    try:
        return TradeUpdate.model_validate(data)
    except ValidationError as exc:
        report_dropped("TradeUpdate", "trade_updates stream", None, data, exc)
        return None


def trade_update_of(order: Order, event: str, at: datetime, *, price: Decimal | None = None,
                    qty: Decimal | None = None, position_qty: Decimal | None = None,
                    execution_id: str | None = None) -> TradeUpdate:
    """A :class:`TradeUpdate` built from an already parsed order (REST catch-up, backtests)."""
    return TradeUpdate(event=event, order=order, timestamp=at, price=price, qty=qty,
                       position_qty=position_qty, execution_id=execution_id)
