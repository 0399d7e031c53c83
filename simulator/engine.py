"""``SimBroker``: the Alpaca-compatible paper broker (Trading API v2) of the simulator.

Each public method mirrors one Trading API route: it takes plain dict bodies / query
params (query values as strings, e.g. ``"True"``), returns Alpaca's JSON shape as plain
dicts and lists (money and quantities as strings, lower-case enums, UUID ids, RFC 3339
``Z`` timestamps), and refuses with :class:`~simulator.errors.SimApiError` carrying Alpaca's
status and error body. Every method first brings the book up to ``clock.now()``
(:meth:`SimBroker.advance_to`), so the broker is consistent whoever drives the clock.

Rules, each emulating Alpaca (details in the modules named):

* Matching (``simulator/matching.py``): market orders fill at the quote (buy at the ask,
  sell at the bid) plus ``slippage_bps``; resting orders trigger along each minute bar's
  OHLC path; gaps fill stops at the (worse) open and limits at the (better) open, and a
  shock in the session is a gap too (:meth:`SimBroker.meet_jump`): a stop it jumps
  through fills at the quote after the jump, a stop-limit may not fill at all.
* Sessions: outside 09:30-16:00 ET only ``extended_hours`` DAY limit orders execute (pre-
  market 04:00-09:30, after-hours to 20:00); other orders are ``accepted`` and become
  ``new`` at the next open, where waiting market orders fill at the opening price.
  ``opg`` orders execute only at the opening auction (the first regular minute's open),
  ``cls`` only at the closing auction (the last regular minute's close); ``ioc``/``fok``
  execute against the quote at once (at the open, if sent while closed) or are canceled.
  DAY orders expire at the close (extended-hours DAY orders at 20:00 ET). GTC orders do
  not expire (Alpaca's 90-day GTC limit is not modelled).
* Classes: bracket (entry + take-profit + stop legs ``held`` until the entry fills, then an
  OCO pair), oco (take-profit parent + stop leg working together), oto (entry + one leg).
  A partial take-profit fill shrinks the stop. If an entry ends (canceled/expired) after a
  partial fill, its legs protect the filled quantity; with no fill they are canceled.
* Quantity held by open exit orders is not available (403 40310000 with ``available``,
  ``existing_qty``, ``held_for_orders``, ``related_orders``, ``symbol``); an OCO pair holds
  its quantity once. Selling more than a long position (or buying more than a short) is
  refused the same way: no long/short flips in one order.
* Wash trades: a simple order facing a resting opposite-side order of the same symbol is
  refused (422 42210000, as Alpaca answers) unless both are limit orders whose prices
  cannot cross. Complex orders (bracket/oco/oto) are exempt.
* Cancel and replace of an order already final: 422 42210000 'order is already in
  "filled" state' (naming the state); a malformed (non-UUID) order id: 422 40010001
  'order_id is missing'; an unknown UUID: 404 40410000 'order not found'.
* Shorting: allowed when ``shorting_enabled`` (margin accounts, i.e. multiplier > 1 and
  ``no_shorting`` off); never for fractional or notional orders.
* Buying power (``simulator/accounts.py``, ``simulator/sim_account.py``): opening orders (buys that open or grow a long,
  sells that open or grow a short) are checked at submission against buying power minus
  what other open opening orders reserve; the order's cost is its limit price x qty, or for
  market/stop orders the ask plus a 3% collar (Alpaca's market-order collar).
* Day trades and the PDT rule: ``simulator/daytrades.py``.
* Partial fills (``partial_fills=True``): at most ``volume_participation`` x the bar's
  volume executes per symbol per minute on bars; immediate executions at submission are
  capped at ``volume_participation`` x the previous minute's volume (or the quote's size
  when that minute has no bar).

The class is the order lifecycle (submission, activation, execution, OCO and bracket legs,
cancel, replace, expiry) and the orchestration of matching; it owns the parts with their own
job: the account (``simulator/sim_account.py``: cash, positions, holds, buying power, fill
booking, day trades, the account and position views), the order book
(``simulator/book.py``), the walk through time (``simulator/stepping.py``), and uses the
pre-trade checks of ``simulator/pretrade.py`` and the price rules of ``simulator/matching.py``.

Every order state change is appended to :attr:`SimBroker.events` (a bounded deque of trade
update events, the payload of Alpaca's ``trade_updates`` stream); :attr:`event_count`
counts every event ever emitted so a consumer can tell how many it missed, and
:attr:`SimBroker.on_event` hears each one as it happens (``simulator.trade_stream``). A fill's
``execution_id`` is also the id inside its FILL activity's ``<time>::<id>``.
"""

from __future__ import annotations

import random
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from decimal import ROUND_DOWN, Decimal
from typing import Any

import structlog

from simulator.accounts import Ledger
from simulator.book import OrderBook
from simulator.daytrades import PdtRule
from simulator.errors import (
    SimApiError,
    already_final,
    forbidden,
    unprocessable,
    validation_error,
    wash_trade,
)
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
from simulator.orders import OrderRequest, SimOrder, parse_order_request
from simulator.pretrade import (
    check_auction_window,
    check_leg_prices,
    opposite,
    parse_replacement,
    requested_qty,
    wash_conflict,
)
from simulator.reference import ReferenceData
from simulator.sessions import SessionDay, Sessions
from simulator.sim_account import SimAccount, cost_estimate, is_opening
from simulator.stepping import BookClock
from simulator.wire import (
    floor_minute,
    num,
    parse_bool,
    parse_decimal,
    parse_positive,
    ts,
)

log = structlog.get_logger(__name__)

UTC = timezone.utc
ZERO = Decimal(0)
ONE_MINUTE = timedelta(minutes=1)
QTY_PLACES = Decimal("1e-9")
DEFAULT_EVENT_BUFFER = 10_000
# Seconds into the minute at which a fill at path position p (0..3) happens: 0, 15, 30, 45.
SECONDS_PER_PATH_STEP = 15


class SimBroker:
    """The simulated Alpaca account and its matching engine (see the module docstring).

    ``cash``: starting cash. ``slippage_bps``: extra cost of market executions.
    ``partial_fills``/``volume_participation``: volume-limited fills. ``margin_multiplier``:
    1, 2 or 4 (``max_margin_multiplier``). ``pdt_rule``: ``auto`` (legacy PDT rule before
    2026-06-04, intraday margin from then), ``legacy`` or ``off``. ``seed`` makes every id
    deterministic. ``max_events``: size of the :attr:`events` buffer.
    """

    def __init__(
        self,
        market: Any,
        clock: Any,
        calendar: Any,
        *,
        cash: Decimal | float | int | str = Decimal("100000"),
        slippage_bps: float = 1.0,
        partial_fills: bool = False,
        volume_participation: float = 0.1,
        margin_multiplier: int = 2,
        pdt_rule: PdtRule = "auto",
        account_id: str | None = None,
        seed: int = 42,
        max_events: int = DEFAULT_EVENT_BUFFER,
    ) -> None:
        starting_cash = Decimal(str(cash))
        if not starting_cash.is_finite() or starting_cash < 0:
            raise ValueError(f"cash must be a non-negative amount, got {cash!r}")
        if not slippage_bps >= 0:
            raise ValueError(f"slippage_bps must be >= 0, got {slippage_bps!r}")
        if not 0 < volume_participation <= 1:
            raise ValueError(f"volume_participation must be in (0, 1], got {volume_participation!r}")
        if margin_multiplier not in (1, 2, 4):
            raise ValueError(f"margin_multiplier must be 1, 2 or 4, got {margin_multiplier!r}")
        if pdt_rule not in ("auto", "legacy", "off"):
            raise ValueError(f"pdt_rule must be auto, legacy or off, got {pdt_rule!r}")
        self.market = market
        self.clock = clock
        self.trading_calendar = calendar
        self.sessions = Sessions(calendar)
        self.reference = ReferenceData(market, calendar, self.sessions)
        self.slippage_bps = Decimal(str(slippage_bps))
        self.partial_fills = partial_fills
        self.volume_participation = Decimal(str(volume_participation))
        self._rng = random.Random(seed)
        account_id = account_id or self._uuid()
        account_number = "PA" + "".join(str(self._rng.randrange(10)) for _ in range(9))
        self.events: deque[dict[str, Any]] = deque(maxlen=max_events)
        self.event_count = 0
        # Called with each event as it is emitted (the ``/stream`` server pushes it to its
        # listeners); must not raise and must not call back into the broker.
        self.on_event: Callable[[dict[str, Any]], None] | None = None
        self.book = OrderBook(self._uuid)
        self.orders = self.book.orders  # every order by id (the book's; read by tests and the backtest)
        self._open = self.book.open  # the open orders by id
        created_at: datetime = clock.now()
        self.account = SimAccount(
            market=market, clock=clock, sessions=self.sessions, reference=self.reference, cash=starting_cash,
            margin_multiplier=margin_multiplier, pdt_rule=pdt_rule, account_id=account_id,
            account_number=account_number, created_at=created_at, open_orders=self._open, orders=self.orders,
        )
        self.clock_book = BookClock(
            market, self.sessions, self._open, floor_minute(created_at),
            on_phase_start=self._on_phase_start, on_phase_end=self._on_phase_end,
            match_minute=self._match_minute, record_close=self.account.record_close,
        )

    @property
    def ledger(self) -> Ledger:
        """The account's cash, positions and journal (:attr:`SimAccount.ledger`); settable, so
        a backtest can put a commission-charging ledger in its place before the first order."""
        return self.account.ledger

    @ledger.setter
    def ledger(self, ledger: Ledger) -> None:
        self.account.ledger = ledger

    # == time ===============================================================================

    def advance_to(self, t: datetime) -> None:
        """Process every complete minute up to ``t`` (:meth:`simulator.stepping.BookClock.advance_to`)."""
        self.clock_book.advance_to(t)

    def book_can_change(self, until: datetime) -> bool:
        """Whether :meth:`advance_to` ``(until)`` might change any order or position
        (:meth:`simulator.stepping.BookClock.book_can_change`; conservative)."""
        return self.clock_book.book_can_change(until)

    @property
    def processed_until(self) -> datetime:
        """The minute up to which the book has been processed (:meth:`advance_to`)."""
        return self.clock_book.cursor

    def _sync(self) -> datetime:
        now: datetime = self.clock.now()
        self.advance_to(now)
        return now

    def _on_phase_start(self, day: SessionDay, phase: str, at: datetime) -> None:
        if phase == "pre":
            for order in self.book.open_orders():
                if order.status == "accepted" and order.extended_hours and order.session <= day.date:
                    self._activate(order, at)
        elif phase == "regular":
            waiting = [o for o in self.book.open_orders() if o.status == "accepted" and o.session <= day.date]
            for order in waiting:
                self._activate(order, at)
            for order in waiting:
                if order.is_working and order.time_in_force == "opg":
                    self._auction(order, day, opening=True)
            for order in waiting:
                if order.is_working and order.time_in_force in ("ioc", "fok"):
                    self._execute_now(order, at)

    def _on_phase_end(self, day: SessionDay, phase: str, at: datetime) -> None:
        if phase == "regular":
            for order in self.book.open_orders():
                if order.is_working and order.time_in_force == "cls" and order.session <= day.date:
                    self._auction(order, day, opening=False)
            for order in self.book.open_orders():
                if order.time_in_force == "day" and not order.extended_hours and order.session <= day.date:
                    self._expire(order, at)
            self.account.record_close(day)
        elif phase == "post":
            for order in self.book.open_orders():
                if order.time_in_force == "day" and order.session <= day.date:
                    self._expire(order, at)

    def _match_minute(self, symbol: str, orders: list[SimOrder], bar: Any, minute: datetime) -> None:
        path = bar_path(to_decimal(bar.o), to_decimal(bar.h), to_decimal(bar.l), to_decimal(bar.c))
        hits: list[tuple[float, int, SimOrder, Hit]] = []
        for order in orders:
            if order.eligible_from > minute:
                continue
            terms = order.terms()
            hit = match_bar(terms, path)
            order.absorb(terms)
            if hit is not None:
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

    # == submission =========================================================================

    def submit_order(self, body: Any) -> dict[str, Any]:
        """``POST /v2/orders``: validate, create (with legs), execute what is marketable now."""
        now = self._sync()
        request = parse_order_request(body)
        order = self._submit(request, now)
        return self.book.order_json(order, nested=True)

    def _submit(self, req: OrderRequest, now: datetime) -> SimOrder:
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

        return self._create(req, symbol, now, opening)

    def _initial_status(self, extended: bool, now: datetime) -> str:
        phase = self.sessions.phase(now)
        if phase == "regular" or (extended and phase in ("pre", "post")):
            return "new"
        return "accepted"

    def _create(self, req: OrderRequest, symbol: str, now: datetime, opening: bool) -> SimOrder:
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
        if parent.is_working and parent.time_in_force not in ("opg", "cls"):
            self._execute_now(parent, now)
        for leg in legs:
            if leg.is_working:
                self._execute_now(leg, now)
        return parent

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

    # == orders: routes =====================================================================

    def list_orders(self, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """``GET /v2/orders`` (:meth:`simulator.book.OrderBook.list_json`)."""
        self._sync()
        return self.book.list_json(params or {})

    def get_order(self, order_id: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``GET /v2/orders/{id}[?nested=true]``; 404 40410000 when unknown."""
        self._sync()
        nested = parse_bool((params or {}).get("nested", False), "nested")
        return self.book.order_json(self.book.find(order_id), nested=nested)

    def get_order_by_client_id(self, client_order_id: str | Mapping[str, Any]) -> dict[str, Any]:
        """``GET /v2/orders:by_client_order_id``: the order (legs nested) or 404.

        Accepts the id itself or the query params holding ``client_order_id``.
        """
        self._sync()
        if isinstance(client_order_id, Mapping):
            value = client_order_id.get("client_order_id")
            if not value:
                raise validation_error("client_order_id is required")
            client_order_id = str(value)
        return self.book.by_client_json(client_order_id)

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

    # == positions ==========================================================================

    def list_positions(self) -> list[dict[str, Any]]:
        """``GET /v2/positions``: every open position, by symbol."""
        return self.account.positions_json(self._sync())

    def get_position(self, symbol: str) -> dict[str, Any]:
        """``GET /v2/positions/{symbol}``; 404 40410000 'position does not exist'."""
        now = self._sync()
        return self.account.position_json(self.account.resolve_position(symbol), now)

    def close_position(self, symbol: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``DELETE /v2/positions/{symbol}[?qty=N|?percentage=P]``: a market order closing it.

        403 40310000 'insufficient qty available' when open orders hold the shares; 404 when
        there is no position.
        """
        now = self._sync()
        params = params or {}
        resolved = self.account.resolve_position(symbol)
        held = abs(self.account.ledger.positions[resolved].qty)
        if params.get("qty") is not None and params.get("percentage") is not None:
            raise validation_error("only one of qty or percentage may be specified")
        if params.get("qty") is not None:
            qty = parse_positive(params["qty"], "qty")
        elif params.get("percentage") is not None:
            pct = parse_decimal(params["percentage"], "percentage")
            if not 0 < pct <= 100:
                raise validation_error("percentage must be greater than 0 and at most 100")
            qty = (held * pct / 100).quantize(QTY_PLACES, rounding=ROUND_DOWN)
            if qty <= 0:
                raise validation_error("percentage is too small to close any quantity")
        else:
            qty = held
        side = "sell" if self.account.ledger.positions[resolved].qty > 0 else "buy"
        request = OrderRequest(
            symbol=resolved, side=side, type="market", time_in_force="day", qty=qty, notional=None,
            limit_price=None, stop_price=None, trail_price=None, trail_percent=None, extended_hours=False,
            client_order_id=None, order_class="simple", take_profit_limit=None, stop_loss_stop=None,
            stop_loss_limit=None,
        )
        return self.book.order_json(self._submit(request, now), nested=False)

    def close_all(self, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """``DELETE /v2/positions[?cancel_orders=true]``: one 207 item per position, each with ``body``."""
        self._sync()
        params = params or {}
        if parse_bool(params.get("cancel_orders", False), "cancel_orders"):
            self.cancel_all()
        items: list[dict[str, Any]] = []
        for symbol in sorted(self.account.ledger.positions):
            try:
                order = self.close_position(symbol, {})
            except SimApiError as exc:
                items.append({"symbol": symbol, "status": exc.status, "body": exc.body})
            else:
                items.append({"symbol": symbol, "status": 200, "order_id": order["id"], "body": order})
        return items

    # == account ============================================================================

    def get_account(self) -> dict[str, Any]:
        """``GET /v2/account`` (PDT fields only under the legacy PDT regime)."""
        return self.account.account_json(self._sync())

    def get_account_configurations(self) -> dict[str, Any]:
        """``GET /v2/account/configurations`` (no pdt_check/dtbp_check after PDT retirement)."""
        return self.account.configurations(self._sync())

    def patch_account_configurations(self, body: Any) -> dict[str, Any]:
        """``PATCH /v2/account/configurations``: nulls are ignored (alpaca-py sends them)."""
        self._sync()
        self.account.patch_configurations(body)
        return self.get_account_configurations()

    # == clock, calendar, assets ============================================================

    def clock_json(self) -> dict[str, Any]:
        """``GET /v2/clock``: timestamps in New York time with their offset."""
        return self.reference.clock_json(self._sync())

    def calendar(self, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """``GET /v2/calendar?start&end`` (inclusive dates; default: a year either side of today)."""
        return self.reference.calendar_json(params or {}, self._sync())

    def assets(self, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """``GET /v2/assets``: the market's symbols, all active us_equity."""
        self._sync()
        return self.reference.assets(params or {})

    def asset(self, symbol: str) -> dict[str, Any]:
        """``GET /v2/assets/{symbol_or_id}``; 404 'asset not found for X'."""
        self._sync()
        return self.reference.asset(symbol)

    # == activities and history =============================================================

    def activities(self, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """``GET /v2/account/activities``: FILL items, cursor-paginated by ``page_token``."""
        self._sync()
        return self.account.activities(params or {})

    def portfolio_history(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``GET /v2/account/portfolio/history`` (numbers, not strings)."""
        now = self._sync()
        return self.account.portfolio_history(params or {}, now)

    def equity_at(self, moments: Iterable[datetime]) -> list[Decimal]:
        """Equity at each of ``moments`` (ascending), recomputed from the journal."""
        return self.account.equity_at(moments)

    # == control API ========================================================================

    def state(self) -> dict[str, Any]:
        """A JSON-ready summary for ``GET /_sim/v1/state``: money, positions, open orders, PDT."""
        now = self._sync()
        return {
            "now": ts(now),
            "processed_until": ts(self.clock_book.cursor),
            **self.account.money_state(now),
            "open_orders": [self.book.order_json(order, nested=False) for order in self.book.open_orders()],
            **self.account.pdt_state(now),
            "event_count": self.event_count,
        }

    # == ids ================================================================================

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

