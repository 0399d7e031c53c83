"""The one broker interface the trading loop talks to.

:class:`Broker` is implemented by :class:`api_gateway.ResilientAlpacaGateway` (HTTP to
Alpaca paper, live, or the embedded simulator) and by the backtester's in-process adapter
over the simulator core, so the loop has one code path in every mode.

Implementations raise only core/errors.py exceptions, classified by :mod:`broker.broker_errors` from
the HTTP status, Alpaca's ``code`` and the request: :class:`core.errors.TemporaryError` (back off),
:class:`core.errors.OrderOutcome` (a fact: :class:`core.errors.NotFound`, :class:`core.errors.OrderNotCancelable`;
re-read and go on), :class:`core.errors.OrderRejected` (definitive refusal, nothing created),
:class:`core.errors.OperationalError` (skip, log raw, alert), :class:`core.errors.OrderInFlight` (fate
unknown: reconcile by ``client_order_id``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Protocol, runtime_checkable

from broker.models import (
    Account,
    Activity,
    Asset,
    Bar,
    CalendarDay,
    Clock,
    MultiStatusItem,
    NewsArticle,
    Order,
    OrderRequest,
    Position,
    Quote,
    Snapshot,
    Trade,
)


@runtime_checkable
class Broker(Protocol):
    """Account, positions, orders and market data, as the trading loop needs them."""

    request_count: int
    """HTTP requests sent so far, retries included (for cycle metrics)."""

    async def get_account(self) -> Account: ...

    async def get_clock(self) -> Clock: ...

    async def get_calendar(self, start: date, end: date) -> list[CalendarDay]: ...

    async def get_asset(self, symbol: str) -> Asset: ...

    async def list_assets(self, status: str = "active") -> list[Asset]: ...

    async def list_positions(self) -> list[Position]: ...

    async def get_position(self, symbol: str) -> Position | None: ...

    async def list_orders(
        self,
        status: str = "open",
        limit: int = 500,
        nested: bool = True,
        symbols: Sequence[str] | None = None,
        after: datetime | None = None,
        until: datetime | None = None,
        direction: str = "desc",
        side: str | None = None,
    ) -> list[Order]: ...

    async def get_order(self, order_id: str, nested: bool = True) -> Order: ...

    async def get_order_by_client_id(self, client_order_id: str) -> Order | None: ...

    async def submit_order(self, request: OrderRequest) -> Order:
        """Idempotent on ``request.client_order_id``; unknown outcome -> OrderInFlight."""
        ...

    async def replace_order(
        self,
        order_id: str,
        qty: Decimal | None = None,
        limit_price: Decimal | None = None,
        stop_price: Decimal | None = None,
        trail: Decimal | None = None,
        time_in_force: str | None = None,
        client_order_id: str | None = None,
    ) -> Order: ...

    async def cancel_order(self, order_id: str) -> None:
        """204 (or already canceled) is success; raises the outcomes OrderNotCancelable
        (already filled/expired; ``.order`` is the re-read order) or NotFound."""
        ...

    async def cancel_all_orders(self) -> list[MultiStatusItem]: ...

    async def close_position(
        self, symbol: str, qty: Decimal | None = None, percentage: Decimal | None = None
    ) -> Order: ...

    async def close_all_positions(self, cancel_orders: bool = True) -> list[MultiStatusItem]: ...

    async def get_activities(
        self,
        activity_types: Sequence[str] = ("FILL",),
        after: datetime | None = None,
        page_size: int = 100,
    ) -> list[Activity]: ...

    async def get_bars(
        self,
        symbols: Sequence[str],
        timeframe: str = "1Day",
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int | None = None,
        feed: str | None = None,
    ) -> dict[str, list[Bar]]: ...

    async def get_latest_quotes(self, symbols: Sequence[str]) -> dict[str, Quote]: ...

    async def get_latest_trades(self, symbols: Sequence[str]) -> dict[str, Trade]: ...

    async def get_snapshots(self, symbols: Sequence[str]) -> dict[str, Snapshot]: ...

    async def get_news(
        self, symbols: Sequence[str], start: datetime | None = None, limit: int = 50
    ) -> list[NewsArticle]: ...
