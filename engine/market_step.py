"""The market-data step's parts that do not need the loop: the session's daily history, what
makes a snapshot or a history unbelievable, today's bar appended to the history, and the count
of cycles in a row a symbol's data was rejected.

:meth:`engine.market_data_step.MarketDataStep.refresh_market_data` runs the step (it also needs
the analyzer's regime and the defensive mode); the loop keeps ``_load_history`` and
``_with_today`` as methods a backtest overrides or a benchmark times; they call what is here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, Sequence

import structlog

from alerter import Alerter, AlertLevel
from broker.models import Snapshot
from core.clock import to_exchange_time
from core.errors import DataQualityError
from market.market_data import MAX_PRICE_MOVE, MAX_SANE_PRICE, BarSeries, price_problem, series_problem

log = structlog.get_logger(__name__)

#: A symbol whose market data is rejected this many cycles in a row raises an alert.
DATA_REJECTION_ALERT_CYCLES = 3


@dataclass
class SessionHistory:
    """Daily bars of completed sessions, fetched once per session."""

    session: date | None = None
    bars: dict[str, BarSeries] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)  # symbol -> why its history is unusable


def completed_history(bars: dict[str, Sequence[Any]], today: date | None,
                      rejected: dict[str, str]) -> SessionHistory:
    """The broker's daily bars before ``today`` as a :class:`SessionHistory`; a symbol whose
    series does not hold together (``market_data.series_problem``) is added to ``rejected``
    (which the caller seeds with the gateway's own rejections) instead of being traded."""
    history: dict[str, BarSeries] = {}
    for symbol, series in bars.items():
        completed = [b for b in series if today is None or to_exchange_time(b.t).date() < today]
        if completed:
            try:
                loaded = BarSeries.from_bars(completed)
                problem = series_problem(loaded)
            except (DataQualityError, ArithmeticError, ValueError) as exc:
                problem = str(exc)
            if problem is not None:
                rejected[symbol] = f"daily history {problem}"
                log.warning("market_data_rejected", symbol=symbol, reason=rejected[symbol], source="history")
                continue
            history[symbol] = loaded
    return SessionHistory(session=today, bars=history, rejected=rejected)


def snapshot_problem(snap: Snapshot, hist: BarSeries | None) -> str | None:
    """Why a symbol's snapshot is not believed this cycle: a price (last trade, quote,
    minute bar, today's bar, yesterday's close) that is not positive, absurd, or more than
    ``market_data.MAX_PRICE_MOVE`` times away from the last completed close of ``hist``.

    Runs for every symbol every cycle: the common case is decided on the lowest and
    highest price alone; only a failing snapshot is searched for the price to name."""
    reference = float(hist.close[-1]) if hist is not None and len(hist) else None
    trade, quote, minute = snap.latest_trade, snap.latest_quote, snap.minute_bar
    values: list[Decimal] = []
    if trade is not None:
        values.append(trade.p)
    if quote is not None:
        values += (quote.bp, quote.ap)
    if minute is not None:
        values.append(minute.c)
    bar, previous = snap.daily_bar, snap.prev_daily_bar
    if bar is not None:
        values += (bar.o, bar.h, bar.l, bar.c)
    if previous is not None:
        values.append(previous.c)
    if not values:
        return None
    low, high = float(min(values)), float(max(values))
    if 0 < low and high <= MAX_SANE_PRICE and (reference is None or (
            high <= reference * MAX_PRICE_MOVE and low * MAX_PRICE_MOVE >= reference)):
        return None
    named: list[tuple[str, Any]] = []
    if trade is not None:
        named.append(("last trade", trade.p))
    if quote is not None:
        named += [("bid", quote.bp), ("ask", quote.ap)]
    if minute is not None:
        named.append(("minute bar close", minute.c))
    if bar is not None:
        named += [(f"daily bar {k}", getattr(bar, k)) for k in ("o", "h", "l", "c")]
    if previous is not None:
        named.append(("previous daily bar close", previous.c))
    for name, value in named:
        problem = price_problem(value, reference)
        if problem is not None:
            return f"{name} {problem}"
    return None


def with_today(hist: BarSeries | None, snap: Snapshot | None) -> BarSeries | None:
    """``hist`` with today's (partial) daily bar from the snapshot appended, once."""
    if hist is None:
        return None
    if snap is None or snap.daily_bar is None:
        return hist
    bar = snap.daily_bar
    ts = int(bar.t.timestamp())
    if len(hist) and hist.ts[-1] >= ts:
        return hist
    return hist.append(ts, float(bar.o), float(bar.h), float(bar.l), float(bar.c), float(bar.v))


class DataRejections:
    """Cycles in a row each symbol's data was rejected; one alert once it persists for
    :data:`DATA_REJECTION_ALERT_CYCLES` cycles (the alerter throttles repeats)."""

    def __init__(self, alerter: Alerter) -> None:
        self.alerter = alerter
        self.cycles: dict[str, int] = {}

    async def track(self, symbols: Sequence[str], rejected: dict[str, str]) -> None:
        """Count this cycle: a symbol not rejected starts again from zero."""
        for symbol in symbols:
            if symbol not in rejected:
                self.cycles.pop(symbol, None)
                continue
            count = self.cycles.get(symbol, 0) + 1
            self.cycles[symbol] = count
            if count == DATA_REJECTION_ALERT_CYCLES:
                await self.alerter.send(
                    AlertLevel.WARNING, f"Market data for {symbol} rejected for {count} cycles",
                    f"{symbol} is not traded while its data is unusable: {rejected[symbol]}",
                    key=f"market_data_rejected:{symbol}", fields={"symbol": symbol, "reason": rejected[symbol]})
