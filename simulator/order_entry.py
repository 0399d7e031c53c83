"""Order submission in the simulated broker: the checks Alpaca makes before it accepts an
order, and the creation of the order with its bracket, OCO or OTO legs.

``OrderEntry._submit`` refuses what Alpaca refuses (suspended trading, a taken
``client_order_id``, an unknown asset, fractional or short orders the account may not place,
quantity held by other orders, wash trades, PDT, buying power, leg prices; the checks live in
:mod:`simulator.pretrade` and :mod:`simulator.sim_account`), then ``_create`` books the order
and its legs and executes what is marketable now. A part of :class:`simulator.engine.SimBroker`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from simulator.errors import forbidden, unprocessable, validation_error, wash_trade
from simulator.fills import OrderExecution
from simulator.matching import quote_touch
from simulator.orders import OrderRequest, SimOrder
from simulator.pretrade import check_auction_window, check_leg_prices, opposite, requested_qty, wash_conflict
from simulator.reference import ReferenceData
from simulator.sessions import SessionDay
from simulator.sim_account import cost_estimate, is_opening


class OrderEntry(OrderExecution):
    """Submission: validation and creation with legs (a part of :class:`simulator.engine.SimBroker`)."""

    reference: ReferenceData  # set by SimBroker.__init__

    def _submit(self, req: OrderRequest, now: datetime, *, nested: bool) -> dict[str, Any]:
        """Validate and create the order; answer with it as accepted, rendered before it executes.

        Real Alpaca answers ``POST /v2/orders`` with the order as accepted (``new``/``accepted``,
        ``filled_qty`` "0", bracket legs ``held``); the fill arrives afterwards on the trade stream
        or a later GET. The simulator may execute it in the same instant, but its answer must not
        carry the fill (Alpaca API reference, "Submit an order").
        """
        account = self.account
        if account.config["suspend_trade"]:
            raise forbidden("new orders are rejected by user request")
        if req.client_order_id is not None and self.book.client_id_taken(req.client_order_id):
            raise validation_error("client_order_id must be unique")
        symbol = self.reference.resolve(req.symbol)
        if symbol is None:
            raise unprocessable(f'asset "{req.symbol}" not found')
        if req.fractional and not account.config["fractional_trading"]:
            raise forbidden("fractional trading is disabled for this account")
        check_auction_window(req, now, self.sessions)
        touch = quote_touch(self.market, symbol, now)
        position_qty = account.position_qty(symbol)
        opening = is_opening(req.side, position_qty)
        summary = account.summary(now)

        if req.order_class in ("bracket", "oto") and not opening:
            raise unprocessable(f"{req.order_class} orders must be entry orders")
        if req.order_class == "oco" and opening:
            raise unprocessable("oco orders must be exit orders for an existing position")

        if opening:
            if req.side == "sell":
                if not account.shorting_enabled(summary):
                    raise forbidden("account is not allowed to short")
                if req.fractional or req.notional is not None:
                    raise forbidden("fractional orders cannot be sold short")
        else:
            account.check_available(symbol, req.side, requested_qty(req, touch), position_qty)

        if req.order_class == "simple" and wash_conflict(self._open.values(), symbol, req.side, req.type, req.limit_price):
            raise wash_trade()
        if not opening:
            account.check_pdt(symbol, now, summary)
        if opening:
            cost = cost_estimate(req.side, req.type, req.qty, req.notional, req.limit_price, req.stop_price, touch)
            account.check_buying_power(cost, now, summary=summary)
        if req.order_class != "simple":
            check_leg_prices(req, touch)

        return self._create(req, symbol, now, opening, nested=nested)

    def _initial_status(self, extended: bool, now: datetime) -> str:
        phase = self.sessions.phase(now)
        if phase == "regular" or (extended and phase in ("pre", "post")):
            return "new"
        return "accepted"

    def _create(
        self, req: OrderRequest, symbol: str, now: datetime, opening: bool, *, nested: bool,
    ) -> dict[str, Any]:
        session = self.sessions.trading_session_for(now, extended=req.extended_hours)
        status = self._initial_status(req.extended_hours, now)
        order_class = "" if req.order_class == "simple" else req.order_class
        expires_at = None
        if req.time_in_force == "day":
            expires_at = session.post_end if req.extended_hours else session.close
        intent = ("buy" if req.side == "buy" else "sell") + ("_to_open" if opening else "_to_close")
        parent = self.book.new_order(
            symbol=symbol, side=req.side, kind=req.type, tif=req.time_in_force, qty=req.qty,
            notional=req.notional, limit_price=req.limit_price, stop_price=req.stop_price,
            trail_price=req.trail_price, trail_percent=req.trail_percent, extended=req.extended_hours,
            order_class=order_class, intent=intent, status=status, now=now, session=session.date,
            expires_at=expires_at, client_order_id=req.client_order_id,
        )
        legs: list[SimOrder] = []
        exit_side = opposite(req.side)
        exit_intent = exit_side + "_to_close"
        if req.order_class in ("bracket", "oto"):
            if req.take_profit_limit is not None:
                legs.append(self._leg(parent, exit_side, "limit", req.take_profit_limit, None, exit_intent, now, session))
            if req.stop_loss_stop is not None:
                kind = "stop_limit" if req.stop_loss_limit is not None else "stop"
                legs.append(self._leg(parent, exit_side, kind, req.stop_loss_limit, req.stop_loss_stop, exit_intent, now, session))
        elif req.order_class == "oco":
            kind = "stop_limit" if req.stop_loss_limit is not None else "stop"
            stop_leg = self._leg(parent, req.side, kind, req.stop_loss_limit, req.stop_loss_stop, intent, now, session)
            stop_leg.status = status
            legs.append(stop_leg)
        if len(legs) == 2 or req.order_class == "oco":
            group = parent.id
            for leg in legs:
                leg.oco_group = group
            if req.order_class == "oco":
                parent.oco_group = group
        parent.leg_ids = [leg.id for leg in legs]
        self._emit("new" if status == "new" else "accepted", parent, now)
        for leg in legs:
            if leg.status != "held":
                self._emit("new" if leg.status == "new" else "accepted", leg, now)
        answer = self.book.order_json(parent, nested=nested)
        if parent.is_working and parent.time_in_force not in ("opg", "cls"):
            self._execute_now(parent, now)
        for leg in legs:
            if leg.is_working:
                self._execute_now(leg, now)
        return answer

    def _leg(
        self, parent: SimOrder, side: str, kind: str, limit_price: Decimal | None, stop_price: Decimal | None,
        intent: str, now: datetime, session: SessionDay,
    ) -> SimOrder:
        return self.book.new_order(
            symbol=parent.symbol, side=side, kind=kind, tif=parent.time_in_force, qty=parent.qty, notional=None,
            limit_price=limit_price, stop_price=stop_price, trail_price=None, trail_percent=None, extended=False,
            order_class=parent.order_class, intent=intent, status="held", now=now, session=session.date,
            expires_at=parent.expires_at, client_order_id=None, parent_id=parent.id,
        )
