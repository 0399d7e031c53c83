"""The order lifecycle of the simulated broker: every state change of an order and the
trade-update event it emits.

``OrderLifecycle`` is the base of :class:`simulator.engine.SimBroker`'s parts: it ends orders
(canceled, expired, rejected), starts waiting ones, releases a bracket's held legs when its
entry is done, settles an OCO pair after a fill, and appends each change to
:attr:`SimBroker.events` (and hands it to :attr:`SimBroker.on_event`, which feeds
``/stream``). It owns no state: the attributes it reads are :class:`SimBroker`'s.
"""

from __future__ import annotations

import random
import uuid
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from simulator.book import OrderBook
from simulator.orders import SimOrder
from simulator.wire import floor_minute, num, ts

ONE_MINUTE = timedelta(minutes=1)


class OrderLifecycle:
    """Order state changes and their events (the base of :class:`simulator.engine.SimBroker`)."""

    # Set by SimBroker.__init__.
    _rng: random.Random
    book: OrderBook
    orders: dict[str, SimOrder]
    _open: dict[str, SimOrder]
    events: deque[dict[str, Any]]
    event_count: int
    on_event: Callable[[dict[str, Any]], None] | None

    def _after_fill(self, order: SimOrder, at: datetime, done: bool) -> None:
        if order.oco_group is not None:
            for sibling in self.book.siblings(order):
                if done:
                    self._terminate(sibling, "canceled", at)
                elif sibling.qty is not None and order.qty is not None:
                    sibling.qty = sibling.filled_qty + order.remaining
                    sibling.updated_at = at
        if done and order.leg_ids and order.order_class in ("bracket", "oto"):
            self._release_legs(order, at)

    def _release_legs(self, parent: SimOrder, at: datetime) -> None:
        """The entry is done: its held legs start working for the quantity it filled."""
        for leg_id in parent.leg_ids:
            leg = self.orders[leg_id]
            if leg.status != "held":
                continue
            if parent.filled_qty <= 0:
                self._terminate(leg, "canceled", at)
                continue
            leg.qty = parent.filled_qty
            leg.status = "new"
            leg.updated_at = at
            leg.eligible_from = floor_minute(at) + ONE_MINUTE
            self._emit("new", leg, at)

    def _activate(self, order: SimOrder, at: datetime) -> None:
        order.status = "new"
        order.updated_at = at
        order.eligible_from = at
        self._emit("new", order, at)

    def _expire(self, order: SimOrder, at: datetime) -> None:
        if order.is_open:
            self._terminate(order, "expired", at)

    def _cancel(self, order: SimOrder, at: datetime, *, cascade: bool) -> None:
        """Cancel ``order``; with ``cascade`` also the rest of its OCO pair."""
        self._terminate(order, "canceled", at)
        if cascade and order.oco_group is not None:
            for sibling in self.book.siblings(order):
                self._terminate(sibling, "canceled", at)

    def _terminate(self, order: SimOrder, status: str, at: datetime) -> None:
        """End an open order as canceled/expired/rejected; a bracket entry releases its legs."""
        if not order.is_open:
            return
        order.status = status
        order.updated_at = at
        if status == "canceled":
            order.canceled_at = at
        elif status == "expired":
            order.expired_at = at
        elif status == "rejected":
            order.failed_at = at
        self._open.pop(order.id, None)
        self._emit(status, order, at)
        if order.leg_ids and order.order_class in ("bracket", "oto"):
            self._release_legs(order, at)

    def open_orders_snapshot(self) -> list[SimOrder]:
        """The open orders in submission order (a copy: the caller may cancel or fill them)."""
        return self.book.open_orders()

    # == events =============================================================================

    def _emit(
        self, event: str, order: SimOrder, at: datetime, *, price: Decimal | None = None, qty: Decimal | None = None,
        position_qty: Decimal | None = None, execution_id: str | None = None,
    ) -> None:
        self.event_count += 1
        payload = {
            "event": event,
            "order": self.book.order_json(order, nested=False),
            "timestamp": ts(at),
            "price": num(price),
            "qty": num(qty),
            "position_qty": num(position_qty),
            "execution_id": execution_id,
        }
        self.events.append(payload)
        if self.on_event is not None:
            self.on_event(payload)

    # == ids ================================================================================

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

