"""Cancel and replace in the simulated broker, and the market's race with them.

``OrderChanges`` answers ``DELETE /v2/orders/{id}``, ``DELETE /v2/orders`` and
``PATCH /v2/orders/{id}`` as Alpaca does (a final order: 422 naming its state; canceling one
leg of an OCO pair cancels the pair), and :meth:`race` lets the market beat a client's cancel
or replace (the ``race`` fault of :mod:`simulator.faults`). A part of
:class:`simulator.engine.SimBroker`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import structlog

from simulator.errors import already_final
from simulator.fills import OrderExecution
from simulator.matching import quote_touch
from simulator.pretrade import parse_replacement
from simulator.sim_account import cost_estimate

# The engine's logger name, so the log lines read as before the engine was split.
log = structlog.get_logger("simulator.engine")


class OrderChanges(OrderExecution):
    """Cancel, cancel-all, replace and the race fault (a part of :class:`simulator.engine.SimBroker`)."""

    _sync: Callable[[], datetime]  # SimBroker._sync: brings the book up to now and returns it

    def cancel_order(self, order_id: str) -> None:
        """``DELETE /v2/orders/{id}``: None (route answers 204); 404 unknown, 422 40010001 for a
        malformed id, 422 42210000 'order is already in "filled" state' (naming the state)
        when the order is final.

        Canceling a bracket entry cancels its held legs; canceling one leg of an OCO pair
        cancels the pair.
        """
        now = self._sync()
        order = self.book.find(order_id)
        if not order.is_open:
            raise already_final(order.status)
        order.cancel_requested_at = now
        self._cancel(order, now, cascade=True)

    def race(self, order_id: str, mode: str) -> str | None:
        """Let the market beat a client's cancel or replace of ``order_id`` (the ``race`` fault).

        ``mode`` ``"fill"``: the open order fills now, as if the market had just reached it: a
        limit or stop-limit at its limit price, any other type at the current quote (plus
        slippage); when it cannot trade now (session closed, no price) it is canceled
        instead. ``"cancel"``: the broker cancels it (with its OCO sibling, as any cancel).
        Returns the order's status afterwards (``"filled"``, ``"canceled"``, ...), or None when
        nothing happened: unknown id, order already final, a ``held`` bracket leg.
        """
        now = self._sync()
        order = self.orders.get(str(order_id))
        if order is None or not order.is_open or order.status == "held":
            return None
        if mode == "fill":
            self._fill_at_market(order, now)
        if order.is_open:
            self._cancel(order, now, cascade=True)
        log.info("sim_order_race", order_id=order.id, symbol=order.symbol, mode=mode, status=order.status)
        return order.status

    def cancel_all(self, raced: Sequence[str] = ()) -> list[dict[str, Any]]:
        """``DELETE /v2/orders``: cancel every open order; one 207 item per order.

        ``raced``: ids of orders the ``race`` fault just made final (filled or canceled by
        the market as the cancel-all arrived): each gets the item Alpaca gives an order it
        could not cancel, 422 with the ``order is already in "<state>" state`` body.
        """
        now = self._sync()
        snapshot = self.book.open_orders()
        for order in snapshot:
            if order.is_open:
                self._cancel(order, now, cascade=True)
        items = [{"id": o.id, "status": 200, "body": self.book.order_json(o, nested=False)} for o in snapshot]
        for order_id in raced:
            order = self.orders.get(str(order_id))
            if order is not None and not order.is_open:
                items.append({"id": order.id, "status": 422, "body": already_final(order.status).body})
        return items

    def replace_order(self, order_id: str, body: Any) -> dict[str, Any]:
        """``PATCH /v2/orders/{id}``: a new order replaces the old one (``replaces``/``replaced_by``).

        Accepts ``qty`` (simple orders only), ``time_in_force``, ``limit_price``,
        ``stop_price``, ``trail`` and ``client_order_id``; the rest is copied. A replaced
        partially filled order keeps its fills; the new order starts from zero and by
        default asks for what was left.
        """
        now = self._sync()
        old = self.book.find(order_id)
        replacement = parse_replacement(old, body, self.book.by_client_id)
        qty, tif, cid = replacement.qty, replacement.time_in_force, replacement.client_order_id
        limit_price, stop_price = replacement.limit_price, replacement.stop_price
        trail_price, trail_percent = replacement.trail_price, replacement.trail_percent

        position_qty = self.account.position_qty(old.symbol)
        closing = old.position_intent in ("sell_to_close", "buy_to_close")
        if closing and old.status != "held":
            self.account.check_available(old.symbol, old.side, qty, position_qty, exclude=old.id)
        if not closing and old.status != "held":
            touch = quote_touch(self.market, old.symbol, now)
            cost = cost_estimate(old.side, old.type, qty, None, limit_price, stop_price, touch)
            self.account.check_buying_power(cost, now, exclude=old.id)

        session, expires_at = old.session, old.expires_at
        if tif != old.time_in_force:
            # A new time in force starts from today's session (a GTC turned DAY ends today).
            day = self.sessions.trading_session_for(now, extended=old.extended_hours)
            session = day.date
            expires_at = (day.post_end if old.extended_hours else day.close) if tif == "day" else None
        new = self.book.new_order(
            symbol=old.symbol, side=old.side, kind=old.type, tif=tif, qty=qty, notional=None,
            limit_price=limit_price, stop_price=stop_price, trail_price=trail_price, trail_percent=trail_percent,
            extended=old.extended_hours, order_class=old.order_class, intent=old.position_intent or "",
            status="held" if old.status == "held" else "new", now=now, session=session,
            expires_at=expires_at, client_order_id=cid, parent_id=old.parent_id,
        )
        new.replaces = old.id
        new.leg_ids = list(old.leg_ids)
        new.oco_group = old.oco_group
        new.hwm = old.hwm
        new.triggered = old.triggered and stop_price == old.stop_price
        old.status = "replaced"
        old.replaced_at = now
        old.replaced_by = new.id
        old.updated_at = now
        self._open.pop(old.id, None)
        if old.parent_id is not None:
            parent = self.orders[old.parent_id]
            parent.leg_ids = [new.id if i == old.id else i for i in parent.leg_ids]
        for leg_id in new.leg_ids:
            self.orders[leg_id].parent_id = new.id
        self._emit("replaced", old, now)
        if new.status == "new":
            self._emit("new", new, now)
            self._execute_now(new, now)
        return self.book.order_json(new, nested=True)
