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
  through fills at the quote after the jump, a stop-limit may not fill at all. On a
  session expanded from a daily row, a short's take-profit waits for its OCO stop when the
  session reaches both (``simulator/adverse_first.py``: the labels' stop-first rule).
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

``SimBroker`` is the face: the routes, the account's construction and the walk through time
(the session hooks that activate, auction and expire orders). Its order work lives in parts it
inherits, one job each, along one line (each calls only itself and the parts below it):
``simulator/order_entry.py`` (``OrderEntry``: pre-trade checks, creation with legs) and
``simulator/order_changes.py`` (``OrderChanges``: cancel, cancel-all, replace, the race fault)
over ``simulator/fills.py`` (``OrderExecution``: matching along bars, at the quote, at a jump,
in the auctions; booking each fill) over ``simulator/lifecycle.py`` (``OrderLifecycle``: state
changes, OCO and bracket legs, the trade-update events). It owns the parts with state of their
own: the account (``simulator/sim_account.py``: cash, positions, holds, buying power, fill
booking, day trades, the account and position views), the order book (``simulator/book.py``)
and the walk through time (``simulator/stepping.py``); the pre-trade checks are
``simulator/pretrade.py``'s and the price rules ``simulator/matching.py``'s.

Every order state change is appended to :attr:`SimBroker.events` (a bounded deque of trade
update events, the payload of Alpaca's ``trade_updates`` stream); :attr:`event_count`
counts every event ever emitted so a consumer can tell how many it missed, and
:attr:`SimBroker.on_event` hears each one as it happens (``simulator.trade_stream``). A fill's
``execution_id`` is also the id inside its FILL activity's ``<time>::<id>``.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any

from simulator.accounts import Ledger
from simulator.book import OrderBook
from simulator.daytrades import PdtRule
from simulator.errors import SimApiError, validation_error
from simulator.fills import QTY_PLACES
from simulator.order_changes import OrderChanges
from simulator.order_entry import OrderEntry
from simulator.orders import OrderRequest, parse_order_request
from simulator.reference import ReferenceData
from simulator.sessions import SessionDay, Sessions
from simulator.sim_account import SimAccount
from simulator.stepping import BookClock
from simulator.wire import floor_minute, parse_bool, parse_decimal, parse_positive, ts

DEFAULT_EVENT_BUFFER = 10_000


class SimBroker(OrderEntry, OrderChanges):
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

    # == submission =========================================================================

    def submit_order(self, body: Any) -> dict[str, Any]:
        """``POST /v2/orders``: validate, create (with legs), execute what is marketable now.

        The answer is the order as accepted (before it executed), as real Alpaca answers.
        """
        now = self._sync()
        request = parse_order_request(body)
        return self._submit(request, now, nested=True)

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
        return self._submit(request, now, nested=False)

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
