"""The simulated market: minute bars, last trades, quotes and daily bars for a set of symbols.

A :class:`Market` reads per-(symbol, session) minute data from a source, lazily and with a
bounded LRU cache, and layers shocks and scheduled gaps on top:

* :meth:`Market.synthetic`: a seeded synthetic market (see ``simulator/synthetic.py``);
* :meth:`Market.from_csv_dir`: replay of CSV bar files (see ``simulator/csv_source.py``).

Conventions (shared by the matching engine and the market-data API):

* A minute bar's ``t`` is the *start* of its minute; it is complete at ``t + 60 s``.
* The last trade price at ``t`` (:meth:`Market.price_at`) is the open of the bar of the
  minute containing ``t`` when that minute has a bar, else the close of the last bar before
  it (looking back up to :data:`LOOKBACK_SESSIONS` sessions).
* Quotes (:meth:`Market.quote_at`) straddle that price with the source's spread model:
  wider in extended hours and when closed, tighter for liquid names, never below one cent.
* A daily bar aggregates the *regular-session* minute bars of its session (open of the first,
  max high, min low, close of the last, summed volume and trade count, volume-weighted vw);
  its ``t`` is midnight America/New_York of the session date, in UTC, as Alpaca sends it.
  A session whose data has no regular-session bar aggregates all its bars instead.
* Shocks multiply every price from their instant on: bars starting at or after the instant
  are scaled, the bar containing it keeps its open and moves its close (its high/low stretch
  to include it), earlier bars are untouched. The market continues from the new level.
"""


from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path

import numpy as np
import structlog

from core.clock import EXCHANGE_TZ
from market.trading_calendar import TradingCalendar
# The data types a source hands the market live below both (csv_source and synthetic import
# them without importing this module); they are re-exported here for the market's readers.
from simulator.bars import DailySummary, DayArrays, MarketSource, MinuteBar, SimQuote, SymbolProfile
from simulator.market_arrays import (
    UTC,
    Shock,
    aggregate,
    aggregate_range,
    first_reaching_short,
    hash_symbol,
    midnight_et_utc,
    pct_factor,
    to_epoch,
)
from simulator.market_prices import MarketPrices

log = structlog.get_logger(__name__)

SHORT_WINDOW_BARS = 8  # up to this many bars, first_bar_reaching loops in Python


class Market(MarketPrices):
    """Minute bars, prices, quotes and daily bars for ``symbols``; shocks and gaps on top.

    Build with :meth:`synthetic` or :meth:`from_csv_dir`. Deterministic: the same source
    and seed give the same numbers whatever order they are asked in.
    """

    # -- construction --------------------------------------------------------------------

    @classmethod
    def synthetic(
        cls,
        symbols: list[str] | None = None,
        seed: int = 42,
        calendar: TradingCalendar | None = None,
    ) -> Market:
        """A seeded synthetic market (default symbols SPY, QQQ, AAPL, MSFT, NVDA, TSLA)."""
        from simulator.synthetic import SyntheticSource

        cal = calendar or TradingCalendar()
        return cls(SyntheticSource(symbols, seed=seed, calendar=cal), cal, seed)

    @classmethod
    def from_csv_dir(
        cls,
        path: str | Path,
        symbols: list[str] | None = None,
        calendar: TradingCalendar | None = None,
        seed: int = 42,
    ) -> Market:
        """Replay of the CSV files under ``path`` (layout of ``shared/data``)."""
        from simulator.csv_source import CsvSource

        cal = calendar or TradingCalendar()
        return cls(CsvSource(Path(path), symbols, seed=seed, calendar=cal), cal, seed)

    def first_bar_reaching(
        self, symbol: str, start: datetime, end: datetime, tests: Iterable[tuple[float, float, float]]
    ) -> datetime | None:
        """Start of the first bar of ``symbol`` in ``[start, end)`` that passes any of ``tests``.

        ``start`` and ``end`` lie in one New York day. A test ``(from_epoch, low_at_most,
        high_at_least)`` passes on a bar starting at or after ``from_epoch`` whose lowest
        price (of open, high, low, close) is ``<= low_at_most`` or whose highest is
        ``>= high_at_least``; ``low_at_most = +inf`` passes on every such bar. The matching
        engine uses it to jump over minutes in which no resting order can execute.
        """
        day = self._day_of(symbol, start)
        if day is None:
            return None
        ts = day.ts
        a = int(ts.searchsorted(to_epoch(start)))
        b = int(ts.searchsorted(to_epoch(end)))
        if a >= b:
            return None
        if b - a <= SHORT_WINDOW_BARS:
            return first_reaching_short(day, a, b, tests)
        best = b
        lows: np.ndarray | None = None
        highs: np.ndarray | None = None
        for from_epoch, low_at_most, high_at_least in tests:
            s = max(a, int(ts.searchsorted(from_epoch)))
            if s >= best:
                continue
            if low_at_most == math.inf:
                best = s
                continue
            if lows is None or highs is None:
                o, h, lo, c = day.o[a:b], day.h[a:b], day.l[a:b], day.c[a:b]
                lows = np.minimum(np.minimum(o, lo), np.minimum(h, c))
                highs = np.maximum(np.maximum(o, h), np.maximum(lo, c))
            mask = (lows[s - a:best - a] <= low_at_most) | (highs[s - a:best - a] >= high_at_least)
            i = int(mask.argmax())
            if mask[i]:
                best = s + i
        return None if best >= b else datetime.fromtimestamp(int(ts[best]), UTC)

    def minute_bars(self, symbol: str, start: datetime, end: datetime) -> list[MinuteBar]:
        """Bars whose start lies in ``[start, end)``, oldest first."""
        lo, hi = to_epoch(start), to_epoch(end)
        out: list[MinuteBar] = []
        if symbol not in self._known or hi <= lo:
            return out
        first = start.astimezone(EXCHANGE_TZ).date()
        last = end.astimezone(EXCHANGE_TZ).date()
        for session in self.trading_days(first, last):
            day = self.minute_arrays(symbol, session)
            if day is None:
                continue
            a = int(np.searchsorted(day.ts, lo, side="left"))
            b = int(np.searchsorted(day.ts, hi, side="left"))
            out.extend(day.bar(i) for i in range(a, b))
        return out

    # -- daily bars ----------------------------------------------------------------------

    def daily_bar(self, symbol: str, session: date, until: datetime | None = None) -> MinuteBar | None:
        """The daily bar of ``session`` (regular-session aggregate); partial up to ``until``.

        With ``until``, only minute bars complete by ``until`` count (a bar is complete one
        minute after its start), so today's daily bar is the day so far.
        """
        if symbol not in self._known:
            return None
        if until is None:
            key = (symbol, session)
            if key in self._daily:
                return self._daily[key]
            bar = self._aggregate_day(symbol, session, None)
            self._daily[key] = bar
            return bar
        return self._aggregate_day(symbol, session, to_epoch(until))

    def daily_close_volume(self, symbol: str, session: date) -> tuple[float, int] | None:
        """``(c, v)`` of :meth:`daily_bar` ``(symbol, session)`` (None when it is None), read
        without expanding minute bars when the session is an unshocked daily-row expansion
        (its last bar closes at the row's close; the volume is the expansion's sum)."""
        if symbol not in self._known:
            return None
        summary = self._summary(symbol, session) if (symbol, session) not in self._daily else None
        if summary is not None:
            volume = self._source.daily_volume(symbol, session)  # type: ignore[attr-defined]
            if volume is not None:
                return summary.c, volume
        bar = self.daily_bar(symbol, session)
        return None if bar is None else (bar.c, bar.v)

    def _aggregate_day(self, symbol: str, session: date, until: float | None) -> MinuteBar | None:
        # A partial day is today's: keep it in the cache; full days are scanned in bulk.
        day = self._peek(symbol, session) if until is None else self.minute_arrays(symbol, session)
        if day is None:
            return None
        # The bars aggregated: the regular session's (bar starts are sorted, so they are
        # the range open..close), else the whole day when it has no regular-session bar.
        ts = day.ts
        lo, hi = 0, len(day)
        if self.calendar.is_session(session):
            opened, closed = self.calendar.open_close(session)
            first = int(ts.searchsorted(opened.timestamp(), side="left"))
            end = int(ts.searchsorted(closed.timestamp(), side="left"))
            if first < end:
                lo, hi = first, end
        if until is not None:
            hi = min(hi, int(ts.searchsorted(until - 60.0, side="right")))  # complete bars only
        if hi <= lo:
            return None
        return MinuteBar(midnight_et_utc(session), *aggregate_range(day, lo, hi))

    def daily_bars(self, symbol: str, start: date, end: date) -> list[MinuteBar]:
        """Complete daily bars of the sessions ``start..end``, oldest first."""
        out: list[MinuteBar] = []
        if symbol not in self._known:
            return out
        for session in self.trading_days(start, end):
            bar = self.daily_bar(symbol, session)
            if bar is not None:
                out.append(bar)
        return out

    # -- shocks and gaps -----------------------------------------------------------------

    def _targets(self, symbols: Iterable[str] | str) -> list[str]:
        if isinstance(symbols, str):
            if symbols == "*":
                return list(self.symbols)
            symbols = [symbols]
        chosen = list(symbols)
        if not chosen:
            raise ValueError("no symbols given: pass a list of symbols or \"*\"")
        unknown = [s for s in chosen if s not in self._known]
        if unknown:
            raise ValueError(
                f"unknown symbol(s) {', '.join(unknown)}; the market has {', '.join(self.symbols)}"
            )
        return chosen

    def _forget_from(self, symbol: str, moment: datetime) -> None:
        self._trades.clear()
        self._quotes.clear()
        self._prices.clear()
        first = moment.astimezone(EXCHANGE_TZ).date()
        for key in [k for k in self._cache if k[0] == symbol and k[1] >= first]:
            del self._cache[key]
        for key in [k for k in self._daily if k[0] == symbol and k[1] >= first]:
            del self._daily[key]

    def _add_shock(self, symbol: str, at: datetime, factor: float, reason: str) -> None:
        self._shocks.setdefault(symbol, []).append(Shock(to_epoch(at), factor, reason))
        self._shocks[symbol].sort(key=lambda s: s.at_epoch)
        self.revision += 1
        self._forget_from(symbol, at)

    def shock(self, symbols: list[str] | str, pct: float, at: datetime) -> None:
        """Multiply every price of ``symbols`` (or ``"*"``) by ``1 + pct/100`` from ``at`` on."""
        factor = pct_factor(pct)
        targets = self._targets(symbols)
        for symbol in targets:
            self._add_shock(symbol, at, factor, "shock")
        self._shock_log.append(
            {"kind": "shock", "symbols": targets, "pct": pct, "at": at.astimezone(UTC).isoformat()}
        )
        log.info("sim_market_shock", symbols=targets, pct=pct, at=at.astimezone(UTC).isoformat())

    def schedule_gap(
        self, symbols: list[str] | str, pct: float, after: datetime | None = None
    ) -> datetime:
        """Make the next regular open after ``after`` (default: the attached clock's now)
        gap by ``pct`` percent relative to the previous regular close.

        The jump happens at the start of that session's pre-market (04:00 ET), or at
        ``after`` when that is later, so pre-market prices move with it. Returns the open.
        """
        factor = pct_factor(pct)
        if after is None:
            if self.clock is None:
                raise ValueError("schedule_gap needs `after` or a clock attached to the market")
            after = self.clock.now()
        targets = self._targets(symbols)
        opened = self.calendar.next_open(after)
        session = opened.astimezone(EXCHANGE_TZ).date()
        at = max(after.astimezone(UTC), self.calendar.extended_hours(session)[0])
        previous = self.calendar.previous_session(session)
        applied: list[str] = []
        for symbol in targets:
            prev_bar = self.daily_bar(symbol, previous)
            day = self.minute_arrays(symbol, session)
            if prev_bar is None or day is None:
                log.warning("sim_market_gap_skipped", symbol=symbol, session=session.isoformat(),
                            reason="no data around the open")
                continue
            i = int(np.searchsorted(day.ts, opened.timestamp()))
            if i >= len(day):
                log.warning("sim_market_gap_skipped", symbol=symbol, session=session.isoformat(),
                            reason="no bar at or after the open")
                continue
            natural_open = float(day.o[i])
            target_open = prev_bar.c * factor
            self._add_shock(symbol, at, target_open / natural_open, f"gap {pct}%")
            applied.append(symbol)
        self._shock_log.append(
            {"kind": "gap", "symbols": applied, "pct": pct, "open": opened.isoformat(),
             "at": at.isoformat()}
        )
        log.info("sim_market_gap_scheduled", symbols=applied, pct=pct, open=opened.isoformat())
        return opened

    def shocks(self) -> list[dict[str, object]]:
        """Shocks and gaps applied so far (for the control API's state)."""
        return list(self._shock_log)

    def describe(self) -> dict[str, object]:
        """A short description for the control API's state."""
        return {
            "source": type(self._source).__name__,
            "symbols": list(self.symbols),
            "seed": self.seed,
            "shocks": self.shocks(),
        }


__all__ = [
    "DailySummary",
    "DayArrays",
    "Market",
    "MarketSource",
    "MinuteBar",
    "SimQuote",
    "SymbolProfile",
    "aggregate",
    "hash_symbol",
    "midnight_et_utc",
]
