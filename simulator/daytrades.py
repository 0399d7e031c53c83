"""Day-trade counting and the pattern-day-trader regime of the simulated account.

**What counts (Alpaca's rule).** A day trade is an opening (or increasing) execution of a
symbol followed later in the same session by a closing (or reducing) execution of it,
extended hours included. Each such round trip counts once, however the quantities are
split: buy 250 + buy 250 then sell 500 is one day trade; buy 10, sell 5, sell 5 is one;
buy, sell, buy, sell is two; selling from an overnight position then buying back is none.
One closing order counts at most once, even when it fills in several parts.

**Regimes.** FINRA retired the pattern-day-trader rule on 2026-06-04:

* ``legacy`` (simulated dates before 2026-06-04 under ``pdt_rule="auto"``, or always with
  ``pdt_rule="legacy"``): an account with equity below $25,000 that already has 3 day trades
  in the last 5 business days (today included) is refused a closing order that would make a
  4th (403 40310100). The account shows ``pattern_day_trader``, ``daytrade_count`` and
  ``daytrading_buying_power``; it is flagged a pattern day trader once it reaches 4.
* ``intraday_margin`` (from 2026-06-04 under ``auto``, or ``pdt_rule="off"``): no count
  limit and no PDT fields; buying power is checked again at each opening execution.

Simplification: the check runs on closing orders only (Alpaca also counts a pending pair
of opening and closing orders as a potential day trade).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Literal

RETIREMENT_DATE = date(2026, 6, 4)
PDT_EQUITY_THRESHOLD = 25_000
PDT_MAX_DAY_TRADES = 3
WINDOW_BUSINESS_DAYS = 5

Regime = Literal["legacy", "intraday_margin"]
PdtRule = Literal["auto", "legacy", "off"]


def regime_for(rule: PdtRule, session_date: date) -> Regime:
    """The PDT regime in force on ``session_date`` under the configured ``rule``."""
    if rule == "legacy":
        return "legacy"
    if rule == "off":
        return "intraday_margin"
    return "legacy" if session_date < RETIREMENT_DATE else "intraday_margin"


@dataclass(frozen=True)
class DayTrade:
    session: date
    symbol: str
    order_id: str


@dataclass
class DayTradeBook:
    """Open round trips per symbol and the day trades completed so far."""

    # symbol -> session date of an opening execution not yet matched by a close that day
    pending_open: dict[str, date] = field(default_factory=dict)
    trades: list[DayTrade] = field(default_factory=list)
    _counted_orders: set[str] = field(default_factory=set)
    pattern_day_trader: bool = False

    def record(self, *, session: date, symbol: str, order_id: str, opened: bool, closed: bool) -> DayTrade | None:
        """Note one execution; returns the day trade it completed, if any."""
        completed: DayTrade | None = None
        if closed and self.pending_open.get(symbol) == session:
            del self.pending_open[symbol]
            if order_id not in self._counted_orders:
                self._counted_orders.add(order_id)
                completed = DayTrade(session, symbol, order_id)
                self.trades.append(completed)
        if opened:
            self.pending_open[symbol] = session
        return completed

    def would_day_trade(self, symbol: str, session: date) -> bool:
        """Whether closing ``symbol`` now would complete a day trade."""
        return self.pending_open.get(symbol) == session

    def count_since(self, first_session: date, last_session: date | None = None) -> int:
        """Day trades from ``first_session`` (to ``last_session``, both inclusive)."""
        return sum(
            1 for trade in self.trades
            if trade.session >= first_session and (last_session is None or trade.session <= last_session)
        )
