"""Following orders to their terminal state: the cycle's poll (:meth:`manage_open_orders`),
an event or catch-up (:meth:`observe_order`), and what a cancel's outcome revealed
(:meth:`_record_order_state`). Events: ``order_filled`` (once per order, whatever the
source), ``order_partially_filled``, ``order_canceled``, ``order_rejected``,
``order_never_landed``, ``order_lookup_failed``."""

from __future__ import annotations

from typing import Any, Sequence

import structlog

from core.errors import OperationalError, OrderOutcome, OrderRejected, TemporaryError
from broker.models import Order
from execution.legs import LegJournal
from execution.orders import TrackedOrder, flatten_orders

# The executor's logger name, so the log lines read as before the executor was split.
log = structlog.get_logger("order_executor")


class OrderTracking(LegJournal):
    """Tracking and observing orders (a part of ``order_executor.OrderExecutor``)."""

    def _apply(self, tracked: TrackedOrder, order: Order) -> None:
        tracked.broker_order_id = order.id
        tracked.status = order.status
        tracked.filled_qty = order.filled_qty
        tracked.filled_avg_price = order.filled_avg_price
        self._journal_update(
            tracked.client_order_id, status=order.status, broker_order_id=order.id,
            filled_qty=order.filled_qty, filled_avg_price=order.filled_avg_price,
        )

    async def manage_open_orders(self, open_orders: Sequence[Order] | None = None, *,
                                 source: str = "poll") -> list[TrackedOrder]:
        """Follow every tracked order towards its terminal state; return those that changed.

        ``open_orders`` (from the cycle's one ``list_orders`` call) saves a request per order:
        a tracked order found there is updated from it; one missing from it is looked up once
        by client order id (it filled, was canceled, or never landed).
        """
        changed: list[TrackedOrder] = []
        self._journal_new_legs(open_orders or [])
        by_cid = {o.client_order_id: o for o in flatten_orders(open_orders or [])}
        for cid, tracked in list(self.tracked.items()):
            order = by_cid.get(cid)
            if order is None:
                try:
                    order = await self._broker.get_order_by_client_id(cid)
                except TemporaryError as exc:
                    log.warning("order_lookup_failed", client_order_id=cid, error=str(exc))
                    continue
                except (OperationalError, OrderOutcome, OrderRejected) as exc:
                    # one order's lookup answered oddly: skip it this cycle, keep the others
                    log.error("order_lookup_failed", client_order_id=cid, error_type=type(exc).__name__,
                              status=exc.status, code=exc.code, message=exc.message)
                    continue
                if order is None:
                    if tracked.status == "in_flight":
                        age = (self._clock.now() - tracked.submitted_at).total_seconds()
                        if age > 600:
                            log.warning("order_never_landed", client_order_id=cid, symbol=tracked.symbol)
                            self._journal_update(cid, status="never_landed")
                            self.tracked.pop(cid, None)
                    continue
            if self._observe(tracked, order, source=source):
                changed.append(tracked)
            if order.is_terminal:
                self.tracked.pop(cid, None)
        return changed

    def observe_order(self, order: Order, *, source: str) -> bool:
        """What the broker says of ``order`` (a trade-stream event, a catch-up), for a tracked
        order: journal it and log the change (``source`` in the log line); False when the
        order is not one this executor tracks."""
        tracked = self.tracked.get(order.client_order_id)
        if tracked is None:
            return False
        self._observe(tracked, order, source=source)
        if order.is_terminal:
            self.tracked.pop(order.client_order_id, None)
        return True

    def _observe(self, tracked: TrackedOrder, order: Order, *, source: str = "poll") -> bool:
        previous_status, previous_filled = tracked.status, tracked.filled_qty
        self._apply(tracked, order)
        if order.status == previous_status and order.filled_qty == previous_filled:
            return False
        fields: dict[str, Any] = {
            "client_order_id": tracked.client_order_id, "broker_order_id": order.id,
            "symbol": order.symbol, "side": order.side, "status": order.status,
            "filled_qty": str(order.filled_qty), "strategy": tracked.strategy, "source": source,
        }
        if order.filled_avg_price is not None:
            fields["fill_price"] = str(order.filled_avg_price)
            if tracked.expected_price:
                sign = 1 if order.side == "buy" else -1
                slip = (order.filled_avg_price - tracked.expected_price) / tracked.expected_price
                fields["slippage_bps"] = float(round(sign * slip * 10000, 2))
        if order.status == "filled":
            if order.id not in self.filled_logged:
                self.filled_logged.add(order.id)
                log.info("order_filled", **fields)
        elif order.status == "partially_filled" or (order.filled_qty > previous_filled and not order.is_terminal):
            log.info("order_partially_filled", **fields)
        elif order.status in ("canceled", "expired", "replaced"):
            log.info("order_canceled", reason=order.status, **fields)
        elif order.status == "rejected":
            log.warning("order_rejected", reason="rejected by broker after acceptance", **fields)
        return True

    def _record_order_state(self, order: Order) -> None:
        """Journal what the broker says about an order (a tracked one is observed, so its fill
        is logged as ``order_filled``; a leg the journal knows gets its status and fill)."""
        tracked = self.tracked.get(order.client_order_id)
        if tracked is not None:
            self._observe(tracked, order)
            if order.is_terminal:
                self.tracked.pop(order.client_order_id, None)
            return
        known = getattr(self._journal, "order_by_broker_id", None)
        row = known(order.id) if known is not None else None
        if row is None:
            return  # an order the journal never saw: reconciliation adopts it
        self._journal_update(row["client_order_id"], status=order.status, broker_order_id=order.id,
                             filled_qty=order.filled_qty, filled_avg_price=order.filled_avg_price)
        if order.status == "filled" and order.id not in self.filled_logged:
            self.filled_logged.add(order.id)
            log.info("order_filled", client_order_id=row["client_order_id"], broker_order_id=order.id,
                     symbol=order.symbol, side=order.side, status=order.status,
                     filled_qty=str(order.filled_qty), via="cancel_outcome",
                     fill_price=str(order.filled_avg_price) if order.filled_avg_price is not None else None)
