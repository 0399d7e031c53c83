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

Positions keep a signed quantity (negative for shorts) and a signed cost basis, so the
average entry price survives partial closes; the ledger also keeps every cash/quantity
change with its time, from which equity at any past instant is recomputed on demand.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

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
