"""The typed trading-API methods of :class:`api_gateway.ResilientAlpacaGateway`: account,
clock, calendar, assets, positions, orders (reads, submit/replace/close through the
:class:`broker.order_desk.OrderDesk`, cancels) and account activities. Each raises only
``core.errors`` exceptions and sends through the gateway's ``request`` (the one method an
in-process broker replaces), so this mixin holds no state of its own."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote as urlquote

import structlog

from broker.market_data_client import unique_symbols
from broker.models import (
    Account,
    Activity,
    ApiResponse,
    Asset,
    CalendarDay,
    Clock,
    MultiStatusItem,
    Order,
    OrderRequest,
    Position,
)
from broker.order_desk import OrderDesk
from broker.parsing import TolerantParser
from core import errors

log = structlog.get_logger(__name__)


class TradingEndpoints:
    """Account, orders, positions and activities, over the gateway's ``request``, ``parser``
    and ``orders`` (provided by :class:`api_gateway.ResilientAlpacaGateway`)."""

    parser: TolerantParser
    orders: OrderDesk
    request: Callable[..., Awaitable[ApiResponse]]

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        emergency: bool = False,
        for_order: bool = False,
    ) -> Any:
        response = await self.request(method, path, params=params, json=json, emergency=emergency)
        response.raise_for_error(for_order=for_order)
        return response.data

    # -- account, clock, calendar, assets --------------------------------------------------

    async def get_account(self) -> Account:
        return self.parser.parse(Account, await self._call("GET", "/v2/account"), "GET /v2/account")

    async def get_clock(self) -> Clock:
        return self.parser.parse(Clock, await self._call("GET", "/v2/clock"), "GET /v2/clock")

    async def read_clock_once(self) -> Clock:
        """``GET /v2/clock`` with a single attempt and no backoff: for the broker-following
        clock, whose own loop decides when to read again (a retry inside it nested)."""
        response = await self.request("GET", "/v2/clock", max_retries=0)
        response.raise_for_error()
        return self.parser.parse(Clock, response.data, "GET /v2/clock")

    async def get_calendar(self, start: date, end: date) -> list[CalendarDay]:
        data = await self._call("GET", "/v2/calendar", params={"start": start, "end": end})
        return self.parser.parse_list(CalendarDay, data, "GET /v2/calendar")

    async def get_asset(self, symbol: str) -> Asset:
        path = f"/v2/assets/{urlquote(symbol, safe='')}"
        return self.parser.parse(Asset, await self._call("GET", path), f"GET {path}")

    async def list_assets(self, status: str = "active") -> list[Asset]:
        params = {"status": status, "asset_class": "us_equity"}
        return self.parser.parse_list(Asset, await self._call("GET", "/v2/assets", params=params),
                                "GET /v2/assets")

    # -- positions and orders --------------------------------------------------------------

    async def list_positions(self) -> list[Position]:
        return self.parser.parse_list(Position, await self._call("GET", "/v2/positions"),
                                "GET /v2/positions")

    async def get_position(self, symbol: str) -> Position | None:
        """The open position in ``symbol``, or None when there is none."""
        path = f"/v2/positions/{urlquote(symbol, safe='')}"
        try:
            data = await self._call("GET", path)
        except errors.NotFound:
            return None
        return self.parser.parse(Position, data, f"GET {path}")

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
        *,
        emergency: bool = False,
    ) -> list[Order]:
        """Orders by status (``open``, ``closed``, ``all``); at most 500 (Alpaca's maximum)."""
        if not 1 <= limit <= 500:
            raise ValueError(f"limit must be 1-500, got {limit}")
        params = {
            "status": status, "limit": limit, "nested": nested,
            "symbols": unique_symbols(symbols) if symbols else None,
            "after": after, "until": until, "direction": direction, "side": side,
        }
        data = await self._call("GET", "/v2/orders", params=params, emergency=emergency)
        return self.parser.parse_list(Order, data, "GET /v2/orders")

    async def get_order(self, order_id: str, nested: bool = True, *, emergency: bool = False) -> Order:
        path = f"/v2/orders/{urlquote(order_id, safe='')}"
        data = await self._call("GET", path, params={"nested": nested}, emergency=emergency)
        return self.parser.parse(Order, data, f"GET {path}")

    async def get_order_by_client_id(
        self, client_order_id: str, *, emergency: bool = False
    ) -> Order | None:
        """The order with this ``client_order_id``, or None when the broker has none."""
        try:
            data = await self._call(
                "GET", "/v2/orders:by_client_order_id",
                params={"client_order_id": client_order_id}, emergency=emergency,
            )
        except errors.NotFound:
            return None
        return self.parser.parse(Order, data, "GET /v2/orders:by_client_order_id")

    async def submit_order(self, request: OrderRequest, *, emergency: bool = False) -> Order:
        """Submit an order exactly once, whatever the network does (:meth:`OrderDesk.submit_order`:
        an unknown outcome is looked up by ``client_order_id`` before the same body is resent;
        :class:`core.errors.OrderInFlight` when still unknown after all attempts)."""
        return await self.orders.submit_order(request, emergency=emergency)

    # submit helpers: bracket, OCO, OTO and trailing-stop orders are built with the
    # OrderRequest constructors (models.OrderRequest.bracket/oco/oto/trailing_stop) and sent
    # with submit_order; this shortcut covers the common legless order.

    async def submit_simple_order(
        self,
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
        emergency: bool = False,
    ) -> Order:
        """A market/limit/stop/stop-limit order with no legs (see :meth:`submit_order`)."""
        request = OrderRequest.simple(
            symbol, qty, side, type=type, time_in_force=time_in_force, limit_price=limit_price,
            stop_price=stop_price, extended_hours=extended_hours, client_order_id=client_order_id,
        )
        return await self.submit_order(request, emergency=emergency)

    async def replace_order(
        self,
        order_id: str,
        qty: Decimal | None = None,
        limit_price: Decimal | None = None,
        stop_price: Decimal | None = None,
        trail: Decimal | None = None,
        time_in_force: str | None = None,
        client_order_id: str | None = None,
    ) -> Order:
        """PATCH an order; returns the NEW order (new id); see :meth:`OrderDesk.replace_order`."""
        return await self.orders.replace_order(order_id, qty, limit_price, stop_price, trail,
                                               time_in_force, client_order_id)

    async def cancel_order(self, order_id: str) -> None:
        """Cancel an order (204 is success).

        A 422 ``42210000`` ("order is already in \"filled\" state": the everyday race with
        bracket legs) is an outcome, not a failure: the order is re-read; already canceled
        (or canceling) is success, any other final state raises :class:`core.errors.OrderNotCancelable`
        carrying the re-read order in ``order`` (None if that read failed). An unknown or
        malformed id raises :class:`core.errors.NotFound`. Both are :class:`core.errors.OrderOutcome`.
        """
        path = f"/v2/orders/{urlquote(order_id, safe='')}"
        response = await self.request("DELETE", path, emergency=True)
        if response.success:
            return None
        problem = response.error()
        assert problem is not None
        if isinstance(problem, errors.OrderNotCancelable):
            try:
                order = await self.get_order(order_id, nested=False, emergency=True)
            except errors.BrokerError as exc:
                log.warning("order_lookup_failed", order_id=order_id, reason=str(exc))
                raise problem from None
            if order.status in ("canceled", "pending_cancel"):
                log.info("order_already_canceled", order_id=order_id, status=order.status)
                return None
            problem.order = order
        raise problem

    async def cancel_all_orders(self) -> list[MultiStatusItem]:
        """Cancel every open order (207: one item per order, check ``item.ok``)."""
        data = await self._call("DELETE", "/v2/orders", emergency=True)
        items = self._items(data, "DELETE /v2/orders")
        self._log_failed_items("cancel_all_orders", items)
        return items

    def _items(self, data: Any, where: str) -> list[MultiStatusItem]:
        if data is None:
            return []
        if isinstance(data, list) and all(isinstance(item, MultiStatusItem) for item in data):
            return list(data)
        return self.parser.parse_list(MultiStatusItem, data, where)

    def _log_failed_items(self, action: str, items: list[MultiStatusItem]) -> None:
        failed = [item for item in items if not item.ok]
        if failed:
            log.warning(
                "multi_status_failures",
                action=action,
                failed=len(failed),
                total=len(items),
                items=[{"id": i.id, "symbol": i.symbol, "status": i.status,
                        "message": (i.error.message if i.error else "")} for i in failed[:20]],
            )

    # closing positions ----------------------------------------------------------------------

    async def close_position(
        self,
        symbol: str,
        qty: Decimal | None = None,
        percentage: Decimal | None = None,
    ) -> Order:
        """Close all of a position (or ``qty`` shares, or ``percentage`` 0-100 of it) with a
        market order, an emergency call; see :meth:`OrderDesk.close_position`."""
        return await self.orders.close_position(symbol, qty, percentage)

    async def close_all_positions(self, cancel_orders: bool = True) -> list[MultiStatusItem]:
        """Close every position (first cancelling open orders by default); 207 items."""
        data = await self._call("DELETE", "/v2/positions",
                                params={"cancel_orders": cancel_orders}, emergency=True)
        items = self._items(data, "DELETE /v2/positions")
        self._log_failed_items("close_all_positions", items)
        return items

    # activities -------------------------------------------------------------------------

    async def get_activities(
        self,
        activity_types: Sequence[str] = ("FILL",),
        after: datetime | None = None,
        page_size: int = 100,
        *,
        direction: str = "asc",
    ) -> list[Activity]:
        """Account activities (fills by default), every page, oldest first by default."""
        if not 1 <= page_size <= 100:
            raise ValueError(f"page_size must be 1-100, got {page_size}")
        params: dict[str, Any] = {
            "activity_types": list(activity_types) or None,
            "after": after, "page_size": page_size, "direction": direction,
        }
        out: list[Activity] = []
        seen_tokens: set[str] = set()
        while True:
            data = await self._call("GET", "/v2/account/activities", params=params)
            page = self.parser.parse_list(Activity, data, "GET /v2/account/activities")
            out.extend(page)
            # Paging follows what the broker sent, not what parsed: a dropped item must
            # neither end the paging early nor lose the cursor.
            if not isinstance(data, list) or len(data) < page_size:
                return out
            token = activity_cursor(data[-1]) or (page[-1].id if page else None)
            if token is None:
                raise errors.MalformedResponse(
                    "GET /v2/account/activities: a full page without a usable id to page on")
            if token in seen_tokens:
                raise errors.MalformedResponse("GET /v2/account/activities: pagination repeats")
            seen_tokens.add(token)
            params["page_token"] = token


def activity_cursor(raw: Any) -> str | None:
    """The ``id`` of a raw activity (Alpaca's page_token is the last item's id)."""
    if isinstance(raw, dict) and isinstance(raw.get("id"), str) and raw["id"]:
        return str(raw["id"])
    return None
