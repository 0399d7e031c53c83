"""Matching and fills of the simulated broker: where and at what price an order executes,
and the booking of each execution.

``OrderExecution`` matches resting orders along each minute bar (:meth:`_match_minute`, called
by :class:`simulator.stepping.BookClock`; a short's take-profit waits for its stop on a daily
bar reaching both, :mod:`simulator.adverse_first`), against the quote at submission
(:meth:`_execute_now`), at a price jump (:meth:`meet_jump`) and in the opening and closing
auctions (:meth:`_auction`), with the price rules of :mod:`simulator.matching`; :meth:`_fill`
books one execution in the account (:mod:`simulator.sim_account`) and hands what follows to
the lifecycle (:mod:`simulator.lifecycle`). A part of :class:`simulator.engine.SimBroker`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

import structlog

from simulator.adverse_first import waits_for_stop
from simulator.lifecycle import ONE_MINUTE, OrderLifecycle
from simulator.matching import (
    Hit,
    Touch,
    bar_path,
    last_price,
    match_bar,
    match_jump,
    match_quote,
    quote_touch,
    round_price,
    to_decimal,
    with_slippage,
)
from simulator.orders import SimOrder
from simulator.sessions import SessionDay, Sessions
from simulator.sim_account import SimAccount
from simulator.wire import floor_minute

# The engine's logger name, so the log lines read as before the engine was split.
log = structlog.get_logger("simulator.engine")

ZERO = Decimal(0)
QTY_PLACES = Decimal("1e-9")
# Seconds into the minute at which a fill at path position p (0..3) happens: 0, 15, 30, 45.
SECONDS_PER_PATH_STEP = 15


class OrderExecution(OrderLifecycle):
    """Matching and fill booking (a part of :class:`simulator.engine.SimBroker`)."""

    # Set by SimBroker.__init__.
    market: Any
    sessions: Sessions
    account: SimAccount
    slippage_bps: Decimal
    partial_fills: bool
    volume_participation: Decimal

    advance_to: Callable[[datetime], None]  # SimBroker.advance_to: brings the book up to a moment

    def _match_minute(self, symbol: str, orders: list[SimOrder], bar: Any, minute: datetime) -> None:
        path = bar_path(to_decimal(bar.o), to_decimal(bar.h), to_decimal(bar.l), to_decimal(bar.c))
        hits: list[tuple[float, int, SimOrder, Hit]] = []
        for order in orders:
            if order.eligible_from > minute:
                continue
            terms = order.terms()
            hit = match_bar(terms, path)
            order.absorb(terms)
            if hit is not None and not waits_for_stop(order, hit, self.book, self.market, minute):
                hits.append((hit.position, order.seq, order, hit))
        if not hits:
            return
        hits.sort(key=lambda item: (item[0], item[1]))
        budget = Decimal(int(self.volume_participation * Decimal(int(bar.v)))) if self.partial_fills else None
        for position, _, order, hit in hits:
            if not order.is_working:
                continue  # canceled by its OCO sibling earlier in this bar
            price = with_slippage(hit.price, order.side, self.slippage_bps) if hit.at_market else round_price(hit.price)
            qty = self._fill_qty(order, price)
            if budget is not None and order.notional is None:
                qty = min(qty, budget)
                if qty <= 0:
                    continue
                budget -= qty
            at = minute + timedelta(seconds=round(position * SECONDS_PER_PATH_STEP, 3))
            self._fill(order, qty, price, at)

    # == execution ==========================================================================

    def meet_jump(self, symbols: Iterable[str], at: datetime) -> None:
        """The prices of ``symbols`` just jumped (a shock at ``at``): resting orders meet the
        new price as a gap, now, before any bar is matched.

        A stop the jump crossed fills at the quote after the jump (a real stop becomes a
        market order: SPY shocked -10% through a 3% stop sells near -10%, not at the stop
        price); a stop-limit whose limit the jump also crossed rests as a limit; a limit the
        jump made marketable fills at the better quote (:func:`simulator.matching.match_jump`).
        The minute bar holding the shock starts before it, so an order whose trigger state
        the jump changed (a triggered stop-limit, a moved trailing mark) next meets the bar
        of the following minute.
        """
        self.advance_to(at)
        wanted = set(symbols)
        for order in self.book.open_orders():
            if order.symbol not in wanted or not order.is_working or order.eligible_from > at:
                continue
            if order.time_in_force in ("opg", "cls", "ioc", "fok"):
                continue
            before = (order.triggered, order.hwm)
            self._execute_now(order, at, jump=True)
            if order.is_open and (order.triggered, order.hwm) != before:
                order.eligible_from = max(order.eligible_from, floor_minute(at) + ONE_MINUTE)

    def _execute_now(self, order: SimOrder, at: datetime, *, jump: bool = False) -> None:
        """Execute against the current quote what is marketable now; ioc/fok cancel the rest.

        ``jump``: the price has just jumped (:meth:`meet_jump`); trailing stops may trigger.
        """
        phase = self.sessions.phase(at)
        tradable = phase == "regular" or (order.extended_hours and phase in ("pre", "post"))
        touch = quote_touch(self.market, order.symbol, at) if tradable else None
        if touch is not None:
            terms = order.terms()
            matcher = match_jump if jump else match_quote
            hit = matcher(terms, touch.bid, touch.ask, touch.last)
            order.absorb(terms)
            if hit is not None:
                price = with_slippage(hit.price, order.side, self.slippage_bps) if hit.at_market else round_price(hit.price)
                qty = self._fill_qty(order, price)
                if self.partial_fills and order.notional is None:
                    qty = min(qty, self._immediate_capacity(order, at, touch))
                if order.time_in_force == "fok" and qty < self._fill_qty(order, price):
                    qty = ZERO
                if qty > 0:
                    self._fill(order, qty, price, at)
        if order.is_open and order.time_in_force in ("ioc", "fok"):
            self._cancel(order, at, cascade=True)

    def _immediate_capacity(self, order: SimOrder, at: datetime, touch: Touch) -> Decimal:
        previous = self.market.bar_at(order.symbol, floor_minute(at) - ONE_MINUTE)
        if previous is not None:
            return Decimal(int(self.volume_participation * Decimal(int(previous.v))))
        return Decimal(touch.ask_size if order.side == "buy" else touch.bid_size)

    def _fill_qty(self, order: SimOrder, price: Decimal) -> Decimal:
        if order.qty is not None:
            return order.remaining
        assert order.notional is not None
        return (order.notional / price).quantize(QTY_PLACES, rounding=ROUND_DOWN) if price > 0 else ZERO

    def _auction(self, order: SimOrder, day: SessionDay, *, opening: bool) -> None:
        """Execute an opg (opening auction) or cls (closing auction) order, or cancel it."""
        minute = day.open if opening else day.close - ONE_MINUTE
        at = day.open if opening else day.close
        bar = self.market.bar_at(order.symbol, minute)
        if bar is not None:
            price = round_price(to_decimal(bar.o if opening else bar.c))
        else:
            found = last_price(self.market, order.symbol, at)
            price = round_price(found) if found is not None else None
        marketable = price is not None and (
            order.type == "market"
            or (order.limit_price is not None and (price <= order.limit_price if order.side == "buy" else price >= order.limit_price))
        )
        if marketable and price is not None:
            self._fill(order, self._fill_qty(order, price), price, at)
        if order.is_open:
            self._cancel(order, at, cascade=True)

    def _fill(self, order: SimOrder, qty: Decimal, price: Decimal, at: datetime) -> None:
        """Book one execution and everything that follows from it (status, OCO, legs, PDT)."""
        if qty <= 0:
            return
        refusal = self.account.fill_refusal(order, qty, price, at)
        if refusal is not None:
            cost, available = refusal
            log.info("sim_order_rejected_at_fill", order_id=order.id, symbol=order.symbol,
                     cost=str(cost), buying_power=str(available))
            self._terminate(order, "rejected" if order.filled_qty == 0 else "canceled", at)
            return
        effect = self.account.book_fill(order, qty, price, at)
        order.filled_qty += qty
        order.filled_value += qty * price
        order.updated_at = at
        done = order.qty is None or order.remaining <= 0
        if done:
            order.status = "filled"
            order.filled_at = at
            self._open.pop(order.id, None)
        else:
            order.status = "partially_filled"
        # One id per execution: the FILL activity's id ends in it, as Alpaca's ``<time>::<id>``.
        execution_id = self._uuid()
        self.account.activity_log.add_fill(
            activity_uuid=execution_id, at=at, kind="fill" if done else "partial_fill", price=price, qty=qty,
            side=("sell_short" if order.side == "sell" and effect.opened > 0 else order.side),
            symbol=order.symbol, leaves_qty=ZERO if done else order.remaining, order_id=order.id,
            cum_qty=order.filled_qty, order_status=order.status,
        )
        self._emit("fill" if done else "partial_fill", order, at, price=price, qty=qty,
                   position_qty=effect.position_qty, execution_id=execution_id)
        log.debug("sim_order_filled", order_id=order.id, symbol=order.symbol, side=order.side,
                  qty=str(qty), price=str(price), status=order.status)
        self.account.record_day_trade(order, effect, at)
        self._after_fill(order, at, done)

    def _fill_at_market(self, order: SimOrder, at: datetime) -> None:
        """Fill the rest of ``order`` now if its session lets it trade and a price exists."""
        phase = self.sessions.phase(at)
        if not (phase == "regular" or (order.extended_hours and phase in ("pre", "post"))):
            return
        if order.type in ("limit", "stop_limit") and order.limit_price is not None:
            price = round_price(order.limit_price)
        else:
            touch = quote_touch(self.market, order.symbol, at)
            if touch is None:
                return
            price = with_slippage(touch.ask if order.side == "buy" else touch.bid, order.side, self.slippage_bps)
        self._fill(order, self._fill_qty(order, price), price, at)
