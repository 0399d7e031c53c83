"""Maximum favourable and adverse excursion (MFE / MAE) of each trade, from the prices seen while
its position was open.

A trade's MFE is how far the price went its way before the exit, its MAE how far against it,
both as fractions of the entry price (MFE >= 0, MAE <= 0; a long bought at 100 that traded
between 97 and 104 has MFE 0.04 and MAE -0.03). Comparing them with the realized return
tells whether stops are too tight (MAE near the stop on winners) or targets too far (MFE well
above the realized gain on losers).

:class:`ExcursionTracker` keeps, per symbol with an open position, the highest and lowest
price seen since the position opened: the fills themselves (the trade ledger reports them)
and every bar the loop sees while it is open (:meth:`ExcursionTracker.observe`; the daemon
feeds the latest minute bar's high and low and the last trade of each held symbol every
cycle). Only what was seen counts: minutes between two cycles are not, so the figures are a
lower bound of the true excursions (exact when the loop sees every bar).

The range is plain JSON (:meth:`to_dict` / :meth:`from_dict`) that the loop keeps in the
journal, so a restart does not forget what the open position has been through.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterable, Mapping

from broker.models import to_decimal

ZERO = Decimal(0)
#: Excursions are fractions; eight places are a hundredth of a basis point.
PLACES = Decimal("0.00000001")


@dataclass
class PriceRange:
    """The highest and lowest price seen while a symbol's position was open."""

    high: Decimal
    low: Decimal

    def widen(self, high: Decimal, low: Decimal) -> bool:
        """Take ``high``/``low`` in; True when the range grew."""
        grew = False
        if high > self.high:
            self.high, grew = high, True
        if low < self.low:
            self.low, grew = low, True
        return grew


def excursions(side: str, entry_price: Decimal, high: Decimal, low: Decimal) -> tuple[Decimal, Decimal]:
    """(MFE, MAE) as fractions of ``entry_price`` for a ``long`` or ``short`` trade."""
    if entry_price <= ZERO:
        return ZERO, ZERO
    if side == "long":
        mfe, mae = (high - entry_price) / entry_price, (low - entry_price) / entry_price
    else:
        mfe, mae = (entry_price - low) / entry_price, (entry_price - high) / entry_price
    return max(mfe, ZERO).quantize(PLACES), min(mae, ZERO).quantize(PLACES)


class ExcursionTracker:
    """Price ranges of the symbols with open positions."""

    def __init__(self) -> None:
        self._ranges: dict[str, PriceRange] = {}

    def open(self, symbol: str, price: Decimal) -> None:
        """A position in ``symbol`` opened (from flat) at ``price``: its range starts there."""
        self._ranges[symbol] = PriceRange(price, price)

    def close(self, symbol: str) -> None:
        """The position in ``symbol`` is flat again: forget its range."""
        self._ranges.pop(symbol, None)

    def tracking(self, symbol: str) -> bool:
        return symbol in self._ranges

    def symbols(self) -> list[str]:
        return sorted(self._ranges)

    def observe(self, symbol: str, high: Any, low: Any | None = None) -> bool:
        """A bar (or a price: ``low`` omitted) seen while ``symbol`` is held; True when its
        range grew. Ignored for a symbol without an open position or a non-positive price."""
        current = self._ranges.get(symbol)
        if current is None or high is None:
            return False
        top = to_decimal(high, "bar high")
        bottom = to_decimal(low if low is not None else high, "bar low")
        if top <= ZERO or bottom <= ZERO:
            return False
        return current.widen(max(top, bottom), min(top, bottom))

    def observe_many(self, prices: Iterable[tuple[str, Any, Any]]) -> bool:
        """:meth:`observe` for each (symbol, high, low); True when any range grew."""
        grew = False
        for symbol, high, low in prices:
            grew = self.observe(symbol, high, low) or grew
        return grew

    def range_of(self, symbol: str) -> PriceRange | None:
        current = self._ranges.get(symbol)
        return None if current is None else PriceRange(current.high, current.low)

    def for_trade(self, symbol: str, side: str, entry_price: Decimal,
                  exit_price: Decimal) -> tuple[Decimal | None, Decimal | None]:
        """(MFE, MAE) of a trade of ``symbol`` closing at ``exit_price``; (None, None) when the
        position's range was never seen (a trade replayed from fills after a restart)."""
        current = self._ranges.get(symbol)
        if current is None:
            return None, None
        high, low = max(current.high, exit_price, entry_price), min(current.low, exit_price, entry_price)
        return excursions(side, entry_price, high, low)

    def to_dict(self) -> dict[str, Any]:
        return {symbol: {"high": str(r.high), "low": str(r.low)} for symbol, r in sorted(self._ranges.items())}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ExcursionTracker:
        tracker = cls()
        for symbol, item in dict(data or {}).items():
            try:
                high, low = to_decimal(item["high"], "high"), to_decimal(item["low"], "low")
            except (KeyError, TypeError, ValueError):
                continue  # a damaged entry: that position's excursions start over
            tracker._ranges[str(symbol)] = PriceRange(max(high, low), min(high, low))
        return tracker


def mean_of(fractions: Iterable[Decimal | None]) -> float | None:
    """The mean of the known values (MFE or MAE of a group of trades); None when none is known."""
    known = [float(f) for f in fractions if f is not None]
    return sum(known) / len(known) if known else None


def comparison_lines(groups: Iterable[Any]) -> list[str]:
    """A plain-text table of per-strategy statistics (``performance.GroupStats``) for the
    ``report`` command's output: trades, win rate, P&L, average return, MFE and MAE."""
    rows = list(groups)
    if not rows:
        return []
    width = max(8, *(len(str(g.key)) for g in rows))
    lines = [f"  {'strategy':<{width}}  trades  win rate          P&L  avg return  avg MFE  avg MAE"]
    for g in rows:
        lines.append(
            f"  {str(g.key):<{width}}  {g.trades:>6}  {_pct(g.win_rate):>8}  {g.pnl:>11,.2f}"
            f"  {_pct(g.avg_return):>10}  {_pct(g.avg_mfe):>7}  {_pct(g.avg_mae):>7}")
    return lines


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.2f}%"
