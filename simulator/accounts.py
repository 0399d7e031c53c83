"""Cash, positions and margin of the simulated account.

**Margin rule (documented, deliberately simple):**

* ``multiplier`` is the configured margin multiplier (``max_margin_multiplier``, default 2),
  except that an account whose equity is below $2,000 is a cash account (multiplier 1),
  as under Reg T.
* ``initial_margin`` = 50% of the absolute market value of every position (100% of long
  market value for a cash account); ``maintenance_margin`` = 25% of long and 30% of short
  market value.
* ``buying_power`` = ``max(equity - initial_margin, 0) * multiplier`` (a cash account:
  ``max(cash, 0)``, since shorting is disabled there). ``regt_buying_power`` equals it and
  ``non_marginable_buying_power`` is ``max(cash, 0)``.
* ``equity = cash + long_market_value + short_market_value`` (short value is negative).
* ``daytrading_buying_power`` (legacy PDT regime only) is ``4 x (last_equity -
  last_maintenance_margin)`` for a pattern day trader with at least $25,000, else 0.

Positions keep a signed quantity (negative for shorts) and a signed cost basis, so the
average entry price survives partial closes; the ledger also keeps every cash/quantity
change with its time, from which equity at any past instant is recomputed on demand.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from simulator.wire import money, num, ts

ZERO = Decimal(0)
HALF = Decimal("0.5")
CASH_ACCOUNT_EQUITY = Decimal(2000)


@dataclass
class Position:
    """An open position: signed ``qty`` and signed ``cost`` (qty x average entry price)."""

    symbol: str
    qty: Decimal
    cost: Decimal
    opened_at: datetime

    @property
    def avg_entry_price(self) -> Decimal:
        return self.cost / self.qty if self.qty else ZERO

    @property
    def side(self) -> str:
        return "long" if self.qty > 0 else "short"


@dataclass(frozen=True)
class FillEffect:
    """What one execution did to the position: quantities opened and closed, P/L realised."""

    position_qty: Decimal
    opened: Decimal
    closed: Decimal
    realized: Decimal


@dataclass(frozen=True)
class LedgerEntry:
    time: datetime
    seq: int
    symbol: str
    qty_delta: Decimal
    cash_delta: Decimal


@dataclass
class Ledger:
    """Cash, positions and the time-ordered journal of every change to them."""

    cash: Decimal
    initial_cash: Decimal
    positions: dict[str, Position] = field(default_factory=dict)
    journal: list[LedgerEntry] = field(default_factory=list)
    _seq: int = 0

    def apply_fill(self, symbol: str, side: str, qty: Decimal, price: Decimal, at: datetime) -> FillEffect:
        """Book one execution: cash moves by ``qty x price``; the position grows or shrinks."""
        delta = qty if side == "buy" else -qty
        self.cash -= delta * price
        self._seq += 1
        entry = LedgerEntry(at, self._seq, symbol, delta, -delta * price)
        bisect.insort(self.journal, entry, key=lambda e: (e.time, e.seq))

        position = self.positions.get(symbol)
        current = position.qty if position else ZERO
        opened = closed = realized = ZERO
        if current == 0 or (current > 0) == (delta > 0):
            opened = abs(delta)
            if position is None:
                position = Position(symbol, ZERO, ZERO, at)
                self.positions[symbol] = position
            position.qty += delta
            position.cost += delta * price
        else:
            closed = min(abs(delta), abs(current))
            avg = position.avg_entry_price if position else ZERO
            sign = Decimal(1) if current > 0 else Decimal(-1)
            realized = closed * (price - avg) * sign
            assert position is not None
            remaining = abs(current) - closed
            position.cost = position.cost * remaining / abs(current) if remaining else ZERO
            position.qty = current + (closed if current < 0 else -closed)
            leftover = abs(delta) - closed
            if position.qty == 0:
                del self.positions[symbol]
                if leftover:
                    # Flips are refused at submission; kept exact here should one ever arrive.
                    signed = leftover if delta > 0 else -leftover
                    self.positions[symbol] = Position(symbol, signed, signed * price, at)
                    opened = leftover
        after = self.positions[symbol].qty if symbol in self.positions else ZERO
        return FillEffect(after, opened, closed, realized)

    def state_at(self, moment: datetime) -> tuple[Decimal, dict[str, Decimal]]:
        """Cash and signed quantities held at ``moment`` (after every change at or before it)."""
        cash = self.initial_cash
        holdings: dict[str, Decimal] = {}
        for entry in self.journal:
            if entry.time > moment:
                break
            cash += entry.cash_delta
            holdings[entry.symbol] = holdings.get(entry.symbol, ZERO) + entry.qty_delta
        return cash, {s: q for s, q in holdings.items() if q != 0}


@dataclass(frozen=True)
class MarginSummary:
    """The account's values at current prices under the margin rule above."""

    cash: Decimal
    long_market_value: Decimal
    short_market_value: Decimal
    equity: Decimal
    initial_margin: Decimal
    maintenance_margin: Decimal
    multiplier: int
    buying_power: Decimal


def margin_summary(cash: Decimal, values: dict[str, Decimal], configured_multiplier: int) -> MarginSummary:
    """Apply the margin rule to ``cash`` and each position's signed market value."""
    long_mv = sum((v for v in values.values() if v > 0), ZERO)
    short_mv = sum((v for v in values.values() if v < 0), ZERO)
    equity = cash + long_mv + short_mv
    multiplier = configured_multiplier if equity >= CASH_ACCOUNT_EQUITY else 1
    if multiplier == 1:
        initial = long_mv + abs(short_mv)
        buying_power = max(cash, ZERO)
    else:
        initial = (long_mv + abs(short_mv)) * HALF
        buying_power = max(equity - initial, ZERO) * multiplier
    maintenance = long_mv * Decimal("0.25") + abs(short_mv) * Decimal("0.30")
    return MarginSummary(cash, long_mv, short_mv, equity, initial, maintenance, multiplier, buying_power)


RATIO_PLACES = Decimal("1e-10")
QTY_PLACES = Decimal("1e-9")


def _ratio(numerator: Decimal, denominator: Decimal) -> str:
    if not denominator:
        return "0"
    return num((numerator / denominator).quantize(RATIO_PLACES)) or "0"


def position_json(
    position: Position,
    *,
    asset_id: str,
    exchange: str,
    price: Decimal,
    lastday_price: Decimal | None,
    held: Decimal,
    overnight: bool,
) -> dict[str, Any]:
    """Alpaca's Position object (every number a string; qty negative for shorts).

    ``held`` is the quantity open exit orders hold; ``overnight`` says the position was
    already held at the previous close, so intraday P/L runs from ``lastday_price``
    instead of the entry price. Percent fields are fractions (0.0084 = 0.84%).
    """
    qty = position.qty
    market_value = qty * price
    unrealized = market_value - position.cost
    free = max(abs(qty) - held, ZERO)
    basis = lastday_price if overnight and lastday_price is not None else position.avg_entry_price
    intraday = qty * (price - basis)
    lastday = lastday_price if lastday_price is not None else price
    return {
        "asset_id": asset_id,
        "symbol": position.symbol,
        "exchange": exchange,
        "asset_class": "us_equity",
        "asset_marginable": True,
        "qty": num(qty),
        "qty_available": num(free if qty > 0 else -free),
        "avg_entry_price": num(position.avg_entry_price.quantize(QTY_PLACES)),
        "side": position.side,
        "market_value": money(market_value),
        "cost_basis": money(position.cost),
        "unrealized_pl": money(unrealized),
        "unrealized_plpc": _ratio(unrealized, abs(position.cost)),
        "unrealized_intraday_pl": money(intraday),
        "unrealized_intraday_plpc": _ratio(intraday, abs(qty * basis)),
        "current_price": num(price),
        "lastday_price": num(lastday),
        "change_today": _ratio(price - lastday, lastday),
    }


@dataclass(frozen=True)
class PdtFields:
    """The legacy pattern-day-trader fields of the account (absent after PDT retirement)."""

    pattern_day_trader: bool
    daytrade_count: int
    last_daytrade_count: int
    daytrading_buying_power: Decimal


def account_json(
    *,
    account_id: str,
    account_number: str,
    created_at: datetime,
    summary: MarginSummary,
    last_equity: Decimal,
    last_maintenance_margin: Decimal,
    reserved: Decimal,
    shorting_enabled: bool,
    suspended: bool,
    balance_asof: str,
    pdt: PdtFields | None,
) -> dict[str, Any]:
    """Alpaca's Account object: money as strings, ``status`` upper case, PDT fields optional."""
    account: dict[str, Any] = {
        "id": account_id,
        "account_number": account_number,
        "status": "ACTIVE",
        "crypto_status": "INACTIVE",
        "currency": "USD",
        "cash": money(summary.cash),
        "portfolio_value": money(summary.equity),
        "equity": money(summary.equity),
        "last_equity": money(last_equity),
        "long_market_value": money(summary.long_market_value),
        "short_market_value": money(summary.short_market_value),
        "position_market_value": money(summary.long_market_value + abs(summary.short_market_value)),
        "buying_power": money(summary.buying_power),
        "regt_buying_power": money(summary.buying_power),
        "effective_buying_power": money(max(summary.buying_power - reserved, ZERO)),
        "non_marginable_buying_power": money(max(summary.cash, ZERO)),
        "options_buying_power": money(max(summary.cash, ZERO)),
        "initial_margin": money(summary.initial_margin),
        "maintenance_margin": money(summary.maintenance_margin),
        "last_maintenance_margin": money(last_maintenance_margin),
        "sma": "0",
        "multiplier": str(summary.multiplier),
        "shorting_enabled": shorting_enabled,
        "trading_blocked": False,
        "transfers_blocked": False,
        "account_blocked": False,
        "trade_suspended_by_user": suspended,
        "accrued_fees": "0",
        "pending_transfer_in": "0",
        "pending_transfer_out": "0",
        "intraday_adjustments": "0",
        "pending_reg_taf_fees": "0",
        "created_at": ts(created_at),
        "balance_asof": balance_asof,
        "crypto_tier": 0,
        "options_approved_level": 0,
        "options_trading_level": 0,
    }
    if pdt is not None:
        account["pattern_day_trader"] = pdt.pattern_day_trader
        account["daytrade_count"] = pdt.daytrade_count
        account["last_daytrade_count"] = pdt.last_daytrade_count
        account["daytrading_buying_power"] = money(pdt.daytrading_buying_power)
        account["last_daytrading_buying_power"] = money(pdt.daytrading_buying_power)
    return account
