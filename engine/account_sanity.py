"""Is this account reading believable? Checked before the loop acts on it.

One bogus ``GET /v2/account`` (equity ``-50000`` or ``0`` while positions are held) used to
trip the circuit breaker, liquidate every position and land in the journal. A reading now has
to make sense before the breaker, the emergency exits or the sizing may see it:

* every amount finite; equity above zero while positions are held;
* the account agrees with itself: equity = cash + the positions' market value (Alpaca's own
  definition, short market value negative), within the tolerance;
* each position agrees with itself: market value = qty x mark, unrealized P&L = qty x (mark -
  entry), and its mark is positive and within a factor :data:`MAX_MARK_JUMP` of the mark of
  the last accepted reading;
* the change since the last accepted reading is explained: cash moves only by the fills
  recorded since then (buys pay, sells receive), within the tolerance.

A genuine loss passes all of these (the marks fell, equity fell with them), so it trips the
breaker in the cycle it happens. A reading that fails is re-read (:meth:`AccountSanity.confirms`
decides whether the second reading confirms the first) by the loop, which owns the broker.
Nothing here reads the broker, the clock or the disk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

ZERO = Decimal(0)
#: Absolute floor of the tolerance, dollars (fees and rounding on a small account).
TOLERANCE_MIN = Decimal("5")
#: Tolerance as a fraction of equity (fees, dividends, marks moving between two requests).
TOLERANCE_FRACTION = Decimal("0.01")
#: A mark that moved more than this factor since the previous reading is not believed.
MAX_MARK_JUMP = Decimal("10")


@dataclass(frozen=True)
class Reading:
    """The parts of one account reading the checks compare (money as Decimal)."""

    equity: Decimal
    cash: Decimal
    positions_value: Decimal
    marks: Mapping[str, Decimal] = field(default_factory=dict)

    def to_log(self) -> dict[str, Any]:
        return {"equity": str(self.equity), "cash": str(self.cash),
                "positions_value": str(self.positions_value), "positions": len(self.marks)}


def _finite(value: Any) -> bool:
    return isinstance(value, Decimal) and value.is_finite()


def reading_of(account: Any, positions: Sequence[Any]) -> Reading:
    """A :class:`Reading` from ``models.Account`` and ``models.Position`` objects."""
    total = ZERO
    marks: dict[str, Decimal] = {}
    for p in positions:
        price = p.current_price if p.current_price is not None else p.avg_entry_price
        value = p.market_value if p.market_value is not None else p.qty * price
        if _finite(value):
            total += value
        marks[p.symbol] = price
    return Reading(account.equity, account.cash, total, marks)


def fill_cash_flow(side: str | None, qty: Decimal, price: Decimal) -> Decimal:
    """What one fill does to cash: a buy pays ``qty x price``, a sell receives it."""
    amount = qty * price
    return -amount if side == "buy" else amount


class AccountSanity:
    """Remembers the last accepted reading and the fills since; judges the next one."""

    def __init__(self, *, tolerance_min: Decimal = TOLERANCE_MIN,
                 tolerance_fraction: Decimal = TOLERANCE_FRACTION) -> None:
        self.tolerance_min = tolerance_min
        self.tolerance_fraction = tolerance_fraction
        self.last: Reading | None = None
        self._fills_cash = ZERO

    def tolerance(self, *amounts: Decimal) -> Decimal:
        scale = max((abs(a) for a in amounts if _finite(a)), default=ZERO)
        return max(self.tolerance_min, scale * self.tolerance_fraction)

    def add_fill(self, side: str | None, qty: Decimal, price: Decimal) -> None:
        """A fill recorded after the last accepted reading (it explains a cash change)."""
        if _finite(qty) and _finite(price):
            self._fills_cash += fill_cash_flow(side, qty, price)

    def problems(self, account: Any, positions: Sequence[Any]) -> list[str]:
        """Why this reading is not believable (empty when it is)."""
        reading = reading_of(account, positions)
        found: list[str] = []
        for name in ("equity", "cash", "buying_power"):
            value = getattr(account, name, None)
            if value is not None and not _finite(value):
                found.append(f"{name} {value} is not a finite number")
        if found:
            return found
        if positions and reading.equity <= ZERO:
            found.append(f"equity {reading.equity} is not positive while {len(positions)} position(s) are held")
        tol = self.tolerance(reading.equity, reading.cash, reading.positions_value,
                             self.last.equity if self.last else ZERO)
        gap = reading.equity - (reading.cash + reading.positions_value)
        if abs(gap) > tol:
            found.append(f"equity {reading.equity} differs from cash {reading.cash} + positions "
                         f"{reading.positions_value} by {gap}")
        for p in positions:
            found.extend(self._position_problems(p))
        if self.last is not None:
            expected = self.last.cash + self._fills_cash
            moved = reading.cash - expected
            if abs(moved) > tol:
                found.append(f"cash {reading.cash} is {moved} away from the {expected} that the last "
                             f"reading ({self.last.cash}) and the fills since explain")
        return found

    def _position_problems(self, p: Any) -> list[str]:
        values = (p.qty, p.avg_entry_price, p.current_price, p.market_value, p.unrealized_pl)
        if any(v is not None and not _finite(v) for v in values):
            return [f"{p.symbol}: an amount is not a finite number"]
        found: list[str] = []
        mark = p.current_price
        if mark is None:
            return found
        if mark <= ZERO:
            return [f"{p.symbol}: mark {mark} is not positive"]
        previous = self.last.marks.get(p.symbol) if self.last is not None else None
        if previous is not None and previous > ZERO and (
                mark > previous * MAX_MARK_JUMP or mark * MAX_MARK_JUMP < previous):
            found.append(f"{p.symbol}: mark {mark} is more than {MAX_MARK_JUMP}x away from the last reading's {previous}")
        tol = self.tolerance(p.qty * mark)
        if p.market_value is not None and abs(p.market_value - p.qty * mark) > tol:
            found.append(f"{p.symbol}: market value {p.market_value} is not qty {p.qty} x mark {mark}")
        if p.unrealized_pl is not None and p.avg_entry_price is not None:
            expected = p.qty * (mark - p.avg_entry_price)
            if abs(p.unrealized_pl - expected) > tol:
                found.append(f"{p.symbol}: unrealized P&L {p.unrealized_pl} is not qty x (mark - entry) = {expected}")
        return found

    def confirms(self, first: Reading, second: Reading) -> bool:
        """Whether a re-read says the same as an implausible first reading (then it stands)."""
        tol = self.tolerance(first.equity, second.equity)
        return abs(first.equity - second.equity) <= tol and abs(first.cash - second.cash) <= tol

    def accept(self, account: Any, positions: Sequence[Any]) -> Reading:
        """``account`` is what the loop acts on from now; fills are counted from here."""
        self.last = reading_of(account, positions)
        self._fills_cash = ZERO
        return self.last
