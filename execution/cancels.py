"""Cancels that survive the broker's race, and waiting for the broker to confirm them.

Every cancel path goes through :meth:`OrderCancels._cancel_quietly`: an outcome instead of a
cancel (already filled, canceled or expired, not found) is no failure; the order's true
state is read, journaled and logged as ``cancel_outcome``."""

from __future__ import annotations

import structlog

from core.errors import BrokerError, NotFound, OrderNotCancelable, OrderOutcome
from execution.orders import flatten_orders
from execution.tracking import OrderTracking

# The executor's logger name, so the log lines read as before the executor was split.
log = structlog.get_logger("order_executor")


class OrderCancels(OrderTracking):
    """Quiet cancels and confirmation waits (a part of ``order_executor.OrderExecutor``)."""

    async def _cancel_symbol_orders(self, symbol: str) -> list[str]:
        orders = await self._broker.list_orders(status="open", symbols=[symbol], nested=True)
        canceled: list[str] = []
        for order in flatten_orders(orders):
            if order.symbol == symbol and order.is_open and await self._cancel_quietly(order.id):
                canceled.append(order.id)
        return canceled

    async def _cancel_quietly(self, order_id: str) -> bool:
        """Cancel one order: True when the broker took the cancel (204, or already canceled).

        An outcome instead (already filled or expired, not found: the race with a leg that
        fills as it is canceled) is no failure: the order's true state is read, journaled
        (a fill is recorded) and logged as ``cancel_outcome``, and False is returned; every
        caller re-reads the position before it acts on the symbol again.
        """
        try:
            await self._broker.cancel_order(order_id)
        except OrderOutcome as exc:
            await self._settle_outcome(order_id, exc)
            return False
        return True

    async def _settle_outcome(self, order_id: str, exc: OrderOutcome) -> None:
        """Read the true state of an order whose cancel met an outcome, and record it."""
        order = exc.order if isinstance(exc, OrderNotCancelable) else None
        if order is None and not isinstance(exc, NotFound):
            try:
                order = await self._broker.get_order(order_id, nested=False)
            except BrokerError as read_error:
                log.warning("order_lookup_failed", order_id=order_id, error=str(read_error))
        if order is None:
            log.info("cancel_outcome", order_id=order_id, outcome=type(exc).__name__,
                     status=exc.status, code=exc.code, message=exc.message, order_status=None)
            return
        log.info("cancel_outcome", order_id=order_id, outcome=type(exc).__name__, status=exc.status,
                 code=exc.code, message=exc.message, order_status=order.status, symbol=order.symbol,
                 side=order.side, type=order.type, filled_qty=str(order.filled_qty),
                 filled_avg_price=str(order.filled_avg_price) if order.filled_avg_price is not None else None)
        self._record_order_state(order)

    async def _await_no_open_orders(self, symbol: str, attempts: int = 8) -> bool:
        delay = 0.5
        for _ in range(attempts):
            orders = await self._broker.list_orders(status="open", symbols=[symbol], nested=False)
            if not [o for o in orders if o.symbol == symbol and o.is_open]:
                return True
            await self._clock.sleep(delay)
            delay = min(delay * 2, 8.0)
        return False

    async def _await_gone(self, symbol: str, order_ids: set[str], attempts: int = 8) -> bool:
        """Wait until the broker no longer lists any of ``order_ids`` as open."""
        delay = 0.5
        for attempt in range(attempts):
            orders = await self._broker.list_orders(status="open", symbols=[symbol], nested=False)
            if not [o for o in flatten_orders(orders) if o.id in order_ids and o.is_open]:
                return True
            if attempt + 1 < attempts:
                await self._clock.sleep(delay)
                delay = min(delay * 2, 8.0)
        return False

    async def _await_flat(self, symbol: str, attempts: int = 8) -> bool:
        delay = 1.0
        for _ in range(attempts):
            if await self._broker.get_position(symbol) is None:
                return True
            await self._clock.sleep(delay)
            delay = min(delay * 2, 30.0)
        return await self._broker.get_position(symbol) is None
