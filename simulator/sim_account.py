"""``SimAccount``: the simulated Alpaca account that the matching engine owns.

The engine (:class:`simulator.engine.SimBroker`) decides when an order executes and at what
price; this class holds what an execution does to the account and what the account allows:

* cash, positions and their time-ordered ledger (``simulator/accounts.py`` has the margin
  rule and the wire shapes), and the FILL activities;
* what open exit orders hold of a position (``held_for_orders``) and what open opening
  orders reserve of buying power, and the checks built on them (403 insufficient qty,
  403 insufficient buying power, the intraday-margin check at fill time);
* day trades and the PDT rule (``simulator/daytrades.py``), closing snapshots of equity and
  maintenance margin (``last_equity``), the account configuration;
* the account-side views: ``/v2/account``, ``/v2/account/configurations``,
  ``/v2/positions``, activities, portfolio history, equity at past instants.

It reads the engine's open-order book through read-only mappings and never changes an order;
it is kept apart so the engine's class is the order lifecycle and matching only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from simulator.accounts import (
    FillEffect,
    Ledger,
    MarginSummary,
    PdtFields,
    account_json,
    margin_summary,
    position_json,
)
from simulator.daytrades import (
    PDT_EQUITY_THRESHOLD,
    PDT_MAX_DAY_TRADES,
    WINDOW_BUSINESS_DAYS,
    DayTradeBook,
    PdtRule,
    Regime,
    regime_for,
)
from simulator.errors import (
    SimApiError,
    insufficient_buying_power,
    insufficient_qty,
    not_found,
    pdt_denied,
    unprocessable,
    validation_error,
)
from simulator.history import ActivityLog, equity_series, portfolio_history
from simulator.matching import Touch, last_price, quote_touch, to_decimal
from simulator.orders import SimOrder
from simulator.reference import ReferenceData, asset_id
from simulator.sessions import SessionDay, Sessions
from simulator.wire import et_date, money, num, parse_bool, parse_int

ZERO = Decimal(0)
ONE_MINUTE = timedelta(minutes=1)
MARKET_COLLAR = Decimal("1.03")
QTY_PLACES = Decimal("1e-9")
CONFIG_ENUMS = {
    "dtbp_check": ("both", "entry", "exit"),
    "pdt_check": ("both", "entry", "exit"),
    "trade_confirm_email": ("all", "none"),
    "max_margin_multiplier": ("1", "2", "4"),
}
CONFIG_BOOLS = ("suspend_trade", "no_shorting", "fractional_trading", "ptp_no_exception_entry", "disable_overnight_trading")


def is_opening(side: str, position_qty: Decimal) -> bool:
    """Whether a ``side`` order opens or grows the position (rather than reducing it)."""
    return position_qty == 0 or (position_qty > 0) == (side == "buy")


def cost_estimate(
    side: str, kind: str, qty: Decimal | None, notional: Decimal | None,
    limit_price: Decimal | None, stop_price: Decimal | None, touch: Touch | None,
) -> Decimal:
    """What an opening order may cost, for the buying-power check (Alpaca's rule: the limit
    price, else the ask plus the 3% market-order collar)."""
    if notional is not None:
        return notional
    assert qty is not None
    reference = touch.ask if touch is not None else None
    if side == "buy":
        if kind in ("limit", "stop_limit") and limit_price is not None:
            return qty * limit_price
        candidates = [p for p in (reference, stop_price) if p is not None]
        if not candidates:
            raise unprocessable("no market price is available to check buying power")
        return qty * max(candidates) * MARKET_COLLAR
    collared = reference * MARKET_COLLAR if reference is not None else None
    candidates = [p for p in (limit_price, collared, stop_price) if p is not None]
    if not candidates:
        raise unprocessable("no market price is available to check buying power")
    return qty * max(candidates)


class SimAccount:
    """Cash, positions, buying power, holds, day trades and configuration of the simulated
    account (see the module docstring). ``open_orders``/``orders``: the engine's open-order
    book and every order by id, read, never written."""

    def __init__(
        self,
        *,
        market: Any,
        clock: Any,
        sessions: Sessions,
        reference: ReferenceData,
        cash: Decimal,
        margin_multiplier: int,
        pdt_rule: PdtRule,
        account_id: str,
        account_number: str,
        created_at: datetime,
        open_orders: Mapping[str, SimOrder],
        orders: Mapping[str, SimOrder],
    ) -> None:
        self.market = market
        self.clock = clock
        self.sessions = sessions
        self.reference = reference
        self.pdt_rule: PdtRule = pdt_rule
        self.account_id = account_id
        self.account_number = account_number
        self.created_at = created_at
        self.ledger = Ledger(cash=cash, initial_cash=cash)
        self.daytrades = DayTradeBook()
        self.activity_log = ActivityLog()
        self._open = open_orders
        self._orders = orders
        self._close_snapshots: dict[date, tuple[Decimal, Decimal]] = {}
        self._lastday_prices: dict[tuple[str, date], Decimal | None] = {}
        self.config: dict[str, Any] = {
            "dtbp_check": "entry",
            "trade_confirm_email": "all",
            "suspend_trade": False,
            "no_shorting": False,
            "fractional_trading": True,
            "max_margin_multiplier": str(margin_multiplier),
            "pdt_check": "entry",
            "ptp_no_exception_entry": False,
            "max_options_trading_level": 0,
            "disable_overnight_trading": False,
        }

    # == prices =============================================================================

    def mark(self, symbol: str, at: datetime) -> Decimal:
        """Price used to value a position: last trade, else last execution, else entry price."""
        price = self.market.price_at(symbol, at)
        if price is not None:
            return to_decimal(price)
        for entry in reversed(self.ledger.journal):
            if entry.symbol == symbol and entry.qty_delta:
                return abs(entry.cash_delta / entry.qty_delta)
        position = self.ledger.positions.get(symbol)
        return position.avg_entry_price if position else ZERO

    def close_price(self, symbol: str, day: SessionDay) -> Decimal | None:
        """The regular-session closing price: close of the last regular minute's bar."""
        known = getattr(self.market, "known_bar_close", None)
        if known is not None:
            close = known(symbol, day.close - ONE_MINUTE)
            if close is not None:
                return to_decimal(close)
        bar = self.market.bar_at(symbol, day.close - ONE_MINUTE)
        if bar is not None:
            return to_decimal(bar.c)
        return last_price(self.market, symbol, day.close - timedelta(microseconds=1))

    def valuation_price(self, symbol: str, moment: datetime) -> Decimal | None:
        """Price for valuing a holding at ``moment``: the closing price at a session close."""
        day = self.sessions.day(et_date(moment))
        if day is not None and moment == day.close:
            return self.close_price(symbol, day)
        return last_price(self.market, symbol, moment)

    def _lastday_price(self, symbol: str, now: datetime) -> Decimal | None:
        previous = self.previous_close_day(now)
        key = (symbol, previous.date)
        if key not in self._lastday_prices:
            self._lastday_prices[key] = self.close_price(symbol, previous)
        return self._lastday_prices[key]

    def previous_close_day(self, now: datetime) -> SessionDay:
        """The last session strictly before today's New York date (source of ``last_*``)."""
        return self.sessions.previous_before(et_date(now))

    # == arithmetic =========================================================================

    def summary(self, at: datetime) -> MarginSummary:
        """Cash, market values, equity, margin and buying power at current prices."""
        values = {s: p.qty * self.mark(s, at) for s, p in self.ledger.positions.items()}
        return margin_summary(self.ledger.cash, values, self._multiplier_setting())

    def _multiplier_setting(self) -> int:
        return int(self.config["max_margin_multiplier"])

    def shorting_enabled(self, summary: MarginSummary) -> bool:
        """Shorting needs a margin account and ``no_shorting`` off."""
        return not self.config["no_shorting"] and summary.multiplier > 1

    def position_qty(self, symbol: str) -> Decimal:
        """The signed quantity held of ``symbol`` (0 when flat)."""
        position = self.ledger.positions.get(symbol)
        return position.qty if position else ZERO

    def held(self, symbol: str, side: str, *, exclude: str | None = None) -> Decimal:
        """Quantity of ``symbol`` held by open ``side`` exit orders (an OCO pair counts once)."""
        return self.holds(symbol, side, exclude=exclude)[0]

    def holds(self, symbol: str, side: str, *, exclude: str | None = None) -> tuple[Decimal, list[str]]:
        """(quantity held, ids of the holding orders in submission order) of ``symbol`` by
        open ``side`` exit orders; an OCO pair holds its quantity once, both ids are listed.
        ``exclude`` (an order being replaced) leaves out that order and its OCO pair: the
        pair holds the shares once, for the replacement too."""
        groups: dict[str, Decimal] = {}
        ids: list[SimOrder] = []
        excluded = self._orders.get(exclude) if exclude is not None else None
        skip_group = excluded.oco_group if excluded is not None else None
        for order in self._open.values():
            if order.symbol != symbol or order.side != side or order.status == "held" or order.id == exclude:
                continue
            if skip_group is not None and order.oco_group == skip_group:
                continue
            if order.position_intent not in ("sell_to_close", "buy_to_close"):
                continue
            key = order.oco_group or order.id
            groups[key] = max(groups.get(key, ZERO), order.remaining)
            ids.append(order)
        ids.sort(key=lambda o: o.seq)
        return sum(groups.values(), ZERO), [o.id for o in ids]

    def reserved(self, at: datetime, *, exclude: str | None = None) -> Decimal:
        """Buying power reserved by open opening orders (their remaining quantity)."""
        total = ZERO
        touches: dict[str, Touch | None] = {}
        for order in self._open.values():
            if order.id == exclude or order.status == "held":
                continue
            if order.position_intent not in ("buy_to_open", "sell_to_open"):
                continue
            if order.symbol not in touches:
                touches[order.symbol] = quote_touch(self.market, order.symbol, at)
            notional = order.notional if order.notional is not None and order.filled_qty == 0 else None
            qty = order.remaining if order.qty is not None else None
            if notional is None and (qty is None or qty <= 0):
                continue
            try:
                total += cost_estimate(
                    order.side, order.type, qty, notional, order.limit_price, order.stop_price, touches[order.symbol]
                )
            except SimApiError:
                continue
        return total

    # == checks =============================================================================

    def check_available(
        self, symbol: str, side: str, requested: Decimal, position_qty: Decimal, *, exclude: str | None = None
    ) -> None:
        """403 40310000 when ``requested`` exceeds the position less what open exits hold."""
        held, holders = self.holds(symbol, side, exclude=exclude)
        available = max(abs(position_qty) - held, ZERO)
        if requested > available:
            raise insufficient_qty(
                symbol=symbol, requested=requested, available=available, existing=position_qty, held=held,
                related_orders=holders,
            )

    def check_buying_power(
        self, cost: Decimal, at: datetime, *, summary: MarginSummary | None = None, exclude: str | None = None
    ) -> None:
        """403 insufficient buying power when ``cost`` exceeds buying power less what other
        open opening orders reserve (``exclude``: the order being replaced)."""
        buying_power = (summary if summary is not None else self.summary(at)).buying_power
        available = buying_power - self.reserved(at, exclude=exclude)
        if cost > available:
            raise insufficient_buying_power(buying_power=max(available, ZERO), cost_basis=cost)

    def check_pdt(self, symbol: str, now: datetime, summary: MarginSummary) -> None:
        """403 PDT denial: a closing order that would be a fourth day trade under $25,000."""
        if self.regime(now) != "legacy" or not self.daytrades.would_day_trade(symbol, et_date(now)):
            return
        if summary.equity >= PDT_EQUITY_THRESHOLD:
            return
        if self.daytrade_count(now) >= PDT_MAX_DAY_TRADES:
            raise pdt_denied()

    def fill_refusal(self, order: SimOrder, qty: Decimal, price: Decimal, at: datetime) -> tuple[Decimal, Decimal] | None:
        """Under intraday margin an execution's opening part must fit the buying power left
        at fill time: ``(cost, available)`` when it does not, None when the fill may book."""
        before = self.position_qty(order.symbol)
        opening_part = qty if is_opening(order.side, before) else max(qty - abs(before), ZERO)
        if opening_part > 0 and self.regime(at) == "intraday_margin":
            available = self.summary(at).buying_power - self.reserved(at, exclude=order.id)
            if opening_part * price > available:
                return opening_part * price, available
        return None

    # == booking ============================================================================

    def book_fill(self, order: SimOrder, qty: Decimal, price: Decimal, at: datetime) -> FillEffect:
        """Move cash and the position for one execution of ``order``."""
        return self.ledger.apply_fill(order.symbol, order.side, qty, price, at)

    def record_day_trade(self, order: SimOrder, effect: FillEffect, at: datetime) -> None:
        """Count a day trade the execution completed; flag a pattern day trader past the limit."""
        self.daytrades.record(session=et_date(at), symbol=order.symbol, order_id=order.id,
                              opened=effect.opened > 0, closed=effect.closed > 0)
        if (
            not self.daytrades.pattern_day_trader
            and self.regime(at) == "legacy"
            and self.daytrade_count(at) > PDT_MAX_DAY_TRADES
        ):
            self.daytrades.pattern_day_trader = True

    def record_close(self, day: SessionDay) -> None:
        """Remember equity and maintenance margin at ``day``'s close (the book is at the close now)."""
        values: dict[str, Decimal] = {}
        for symbol, position in self.ledger.positions.items():
            price = self.close_price(symbol, day)
            values[symbol] = position.qty * (price if price is not None else self.mark(symbol, day.close))
        summary = margin_summary(self.ledger.cash, values, self._multiplier_setting())
        self._close_snapshots[day.date] = (summary.equity, summary.maintenance_margin)

    def close_snapshot(self, day: SessionDay) -> tuple[Decimal, Decimal]:
        """(equity, maintenance margin) at ``day``'s close, recomputed from the journal once."""
        if day.date in self._close_snapshots:
            return self._close_snapshots[day.date]
        cash, holdings = self.ledger.state_at(day.close)
        values: dict[str, Decimal] = {}
        for symbol, qty in holdings.items():
            price = self.close_price(symbol, day)
            values[symbol] = qty * (price if price is not None else self.mark(symbol, day.close))
        summary = margin_summary(cash, values, self._multiplier_setting())
        snapshot = (summary.equity, summary.maintenance_margin)
        if day.close <= self.clock.now():
            self._close_snapshots[day.date] = snapshot
        return snapshot

    # == day trades =========================================================================

    def regime(self, at: datetime) -> Regime:
        """The PDT regime in force on ``at``'s session date."""
        return regime_for(self.pdt_rule, et_date(at))

    def window_start(self, at: datetime) -> date:
        """First session of the five-business-day window ending with ``at``'s session."""
        today = et_date(at)
        anchor = today if self.sessions.day(today) else self.sessions.previous_before(today).date
        first = anchor
        for _ in range(WINDOW_BUSINESS_DAYS - 1):
            first = self.sessions.previous_before(first).date
        return first

    def daytrade_count(self, at: datetime) -> int:
        """Day trades in the window ending with ``at``'s session."""
        return self.daytrades.count_since(self.window_start(at))

    # == views ==============================================================================

    def resolve_position(self, symbol: str) -> str:
        """The held symbol ``symbol`` names; 404 40410000 'position does not exist'."""
        resolved = self.reference.resolve(symbol)
        if resolved is None or resolved not in self.ledger.positions:
            raise not_found("position does not exist")
        return resolved

    def positions_json(self, now: datetime) -> list[dict[str, Any]]:
        """``GET /v2/positions``: every open position, by symbol."""
        return [self.position_json(symbol, now) for symbol in sorted(self.ledger.positions)]

    def position_json(self, symbol: str, now: datetime) -> dict[str, Any]:
        """Alpaca's Position object for the held ``symbol``."""
        position = self.ledger.positions[symbol]
        lastday = self._lastday_price(symbol, now)
        return position_json(
            position,
            asset_id=asset_id(symbol),
            exchange=self.reference.exchange(symbol),
            price=self.mark(symbol, now),
            lastday_price=lastday,
            held=self.held(symbol, "sell" if position.qty > 0 else "buy"),
            overnight=lastday is not None and position.opened_at < self.previous_close_day(now).close,
        )

    def account_json(self, now: datetime) -> dict[str, Any]:
        """``GET /v2/account`` (PDT fields only under the legacy PDT regime)."""
        summary = self.summary(now)
        previous = self.previous_close_day(now)
        last_equity, last_maintenance = self.close_snapshot(previous)
        pdt = None
        if self.regime(now) == "legacy":
            flagged = self.daytrades.pattern_day_trader
            eligible = flagged and summary.equity >= PDT_EQUITY_THRESHOLD
            pdt = PdtFields(
                pattern_day_trader=flagged,
                daytrade_count=self.daytrade_count(now),
                last_daytrade_count=self.daytrades.count_since(self.window_start(previous.close), previous.date),
                daytrading_buying_power=max(last_equity - last_maintenance, ZERO) * 4 if eligible else ZERO,
            )
        return account_json(
            account_id=self.account_id,
            account_number=self.account_number,
            created_at=self.created_at,
            summary=summary,
            last_equity=last_equity,
            last_maintenance_margin=last_maintenance,
            reserved=self.reserved(now),
            shorting_enabled=self.shorting_enabled(summary),
            suspended=bool(self.config["suspend_trade"]),
            balance_asof=previous.date.isoformat(),
            pdt=pdt,
        )

    def configurations(self, now: datetime) -> dict[str, Any]:
        """``GET /v2/account/configurations`` (no pdt_check/dtbp_check after PDT retirement)."""
        config = dict(self.config)
        if self.regime(now) != "legacy":
            config.pop("pdt_check")
            config.pop("dtbp_check")
        return config

    def patch_configurations(self, body: Any) -> None:
        """Apply ``PATCH /v2/account/configurations`` (nulls are ignored: alpaca-py sends
        them); a bad field refuses the whole patch."""
        if not isinstance(body, dict):
            raise validation_error("request body must be a JSON object")
        changes: dict[str, Any] = {}
        for key, value in body.items():
            if value is None:
                continue
            if key in CONFIG_ENUMS:
                text = str(value)
                if text not in CONFIG_ENUMS[key]:
                    raise validation_error(f"invalid {key}: {value!r} (allowed: {', '.join(CONFIG_ENUMS[key])})")
                changes[key] = text
            elif key in CONFIG_BOOLS:
                changes[key] = parse_bool(value, key)
            elif key == "max_options_trading_level":
                changes[key] = parse_int(value, key, low=0, high=3)
            else:
                raise validation_error(f"unknown configuration field: {key}")
        self.config.update(changes)

    def activities(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """``GET /v2/account/activities``: FILL items, cursor-paginated by ``page_token``."""
        return self.activity_log.query(params)

    def portfolio_history(self, params: Mapping[str, Any], now: datetime) -> dict[str, Any]:
        """``GET /v2/account/portfolio/history`` (numbers, not strings)."""
        return portfolio_history(params, now=now, sessions=self.sessions, ledger=self.ledger,
                                 price_at=self.valuation_price)

    def equity_at(self, moments: Iterable[datetime]) -> list[Decimal]:
        """Equity at each of ``moments`` (ascending), recomputed from the journal."""
        return equity_series(self.ledger, list(moments), self.valuation_price)

    def money_state(self, now: datetime) -> dict[str, Any]:
        """Cash, equity, buying power and positions for the control API's state summary."""
        summary = self.summary(now)
        return {
            "cash": money(summary.cash),
            "equity": money(summary.equity),
            "buying_power": money(summary.buying_power),
            "last_equity": money(self.close_snapshot(self.previous_close_day(now))[0]),
            "positions": [
                {
                    "symbol": symbol,
                    "qty": num(position.qty),
                    "avg_entry_price": num(position.avg_entry_price.quantize(QTY_PLACES)),
                    "market_value": money(position.qty * self.mark(symbol, now)),
                }
                for symbol, position in sorted(self.ledger.positions.items())
            ],
        }

    def pdt_state(self, now: datetime) -> dict[str, Any]:
        """The day trades in the window and the PDT flag, for the control API's state summary."""
        window = self.window_start(now)
        return {
            "day_trades": [
                {"session": trade.session.isoformat(), "symbol": trade.symbol, "order_id": trade.order_id}
                for trade in self.daytrades.trades
                if trade.session >= window
            ],
            "daytrade_count": self.daytrades.count_since(window),
            "pattern_day_trader": self.daytrades.pattern_day_trader,
            "pdt_regime": self.regime(now),
        }
