"""Replay of historical bars from CSV files (the layout of ``shared/data``).

Files are found in ``DIR``, ``DIR/daily`` and ``DIR/intraday`` by name:

* ``SYMBOL-1m-*.csv``: one-minute bars, header ``timestamp,open,high,low,close,volume``
  (optional ``trade_count``, ``vwap``), ISO-8601 timestamps with a UTC offset, each the
  *start* of its minute. They are replayed as they are: a minute with no bar has no bar.
* ``SYMBOL-1d-*.csv``: daily bars, ``timestamp`` = ``YYYY-MM-DD`` session date (extra
  columns such as ``adj_close`` are ignored).
* ``SYMBOL-1m-quotes-*.csv`` (optional): minute quote bars with ``bid_close``,
  ``ask_close``, ``bid_size``, ``ask_size``; when present, quotes come from them instead of
  the spread model.

Other files (hourly bars, ticks) are ignored. A symbol may have several files: for a
session with minute bars in any intraday file, those minute bars are used (duplicated
timestamps keep the first file's bar, files taken in name order); otherwise the session's
daily bar is expanded. Where daily files overlap, the file whose data ends latest wins.
Files of one symbol should share an adjustment basis (split-adjusted vs raw); they are not
reconciled.

**Daily expansion rule** (regular session only, no extended-hours bars): the session's
minute boundaries follow a piecewise-linear path through four anchors: the open at the
first minute, then the low, then the high, then the close at the last minute
(``market.bracket_labels.daily_path_order``: low first whatever the bar's colour, so a long
bracket whose stop and target both lie inside the day fills its stop first, as the labels
of training and ``evaluate`` count it; until the low the path and its wicks stay at or
under the open). The first extreme falls at a seeded minute in 10-45 % of the
session, the second in 55-90 %. Seeded noise (zero at the anchors, at most 15 % of the
day's range) is added and the path is clipped into ``[low, high]``; each minute's wicks
extend by a seeded amount, also clipped into ``[low, high]``. Volume is U-shaped
(``1 + 2.8 (2x - 1)^2`` over the session) and sums exactly to the daily volume; trade
counts follow the daily ``trade_count`` when given, else a nominal 100 shares per trade.
So the expanded day's open, high, low, close and volume equal the file's row exactly, and
the same seed always gives the same path.

A malformed file raises :class:`CsvDataError` naming the file, the line and the problem:
text that is not UTF-8 (a UTF-8 byte-order mark is accepted), prices that are not finite,
not positive or above :data:`MAX_PRICE`, and daily rows dated on a day the NYSE held no
session (weekends, holidays) within the calendar's range.
"""

from __future__ import annotations

import bisect
import functools
import math
import zlib
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import numpy as np
import structlog

from core.clock import EXCHANGE_TZ
from simulator.bars import DailySummary, DayArrays, SymbolProfile
from market.bracket_labels import daily_path_order
from simulator.csv_files import (
    _DAILY_FILE,
    _MINUTE_FILE,
    _QUOTE_FILE,
    MAX_PRICE,
    NOMINAL_TRADE_SIZE,
    CsvDataError,
    _DailyRow,
    _group_days,
    _MinuteSeries,
    _QuoteSeries,
    read_daily_file,
    read_minute_file,
    read_quote_file,
)
from market.trading_calendar import FIRST_DATE, LAST_DATE, TradingCalendar

# The file readers and their error live in simulator.csv_files; CsvSource raises CsvDataError
# and callers catch it from here.
__all__ = ["MAX_PRICE", "CsvDataError", "CsvSource"]

log = structlog.get_logger(__name__)

#: Sessions whose expansion price paths are remembered (valuing held positions mid-session).
PATH_MEMO = 256

_ETF_TAPE_B = {"SPY", "IWM", "GLD", "TLT", "DIA", "XLF", "XLE", "EEM", "EFA", "VTI"}
_SPREADS = {"SPY": 0.1, "QQQ": 0.12, "IWM": 0.25, "AAPL": 0.25, "MSFT": 0.3, "NVDA": 0.4,
            "TSLA": 0.4, "AMZN": 0.3, "GOOGL": 0.3, "GLD": 0.3, "TLT": 0.3}


#: Below this total, :func:`_allocate`'s shares sum to it exactly (float error < 0.1 share).
EXACT_ALLOCATION = 2**46


def _stable(*parts: object) -> int:
    return zlib.crc32("|".join(str(p) for p in parts).encode("utf-8"))


class CsvSource:
    """Bars from CSV files as a :class:`simulator.market.MarketSource`."""

    def __init__(
        self,
        path: Path,
        symbols: list[str] | None = None,
        seed: int = 42,
        calendar: TradingCalendar | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise ValueError(f"market data directory {self.path} does not exist")
        self.seed = int(seed)
        self.calendar = calendar or TradingCalendar()
        found = self._discover()
        available = sorted(found)
        if not available:
            raise ValueError(
                f"no bar files (SYMBOL-1m-*.csv or SYMBOL-1d-*.csv) in {self.path}, "
                f"{self.path / 'daily'} or {self.path / 'intraday'}"
            )
        if symbols:
            missing = [s for s in symbols if s not in found]
            if missing:
                raise ValueError(
                    f"no data files for {', '.join(missing)} in {self.path} "
                    f"(available: {', '.join(available)})"
                )
            chosen = list(dict.fromkeys(symbols))
        else:
            chosen = available
        self.symbols = chosen
        self._minutes: dict[str, _MinuteSeries] = {}
        self._daily: dict[str, dict[date, _DailyRow]] = {}
        self._daily_days: dict[str, list[date]] = {}
        self._quotes: dict[str, _QuoteSeries] = {}
        self._windows: dict[date, tuple[int, int]] = {}
        self._minute_ranges: dict[tuple[str, date], tuple[float, float]] = {}
        self._paths: dict[tuple[str, date], np.ndarray] = {}
        for symbol in chosen:
            self._load_symbol(symbol, found[symbol])
        all_days: set[date] = set()
        for symbol in chosen:
            if symbol in self._minutes:
                all_days.update(self._minutes[symbol].days)
            all_days.update(self._daily.get(symbol, {}))
        self._sessions = sorted(
            d for d in all_days if FIRST_DATE <= d <= LAST_DATE and self.calendar.is_session(d)
        )

    # -- loading -------------------------------------------------------------------------

    def _discover(self) -> dict[str, dict[str, list[Path]]]:
        found: dict[str, dict[str, list[Path]]] = {}
        for folder in (self.path, self.path / "daily", self.path / "intraday"):
            if not folder.is_dir():
                continue
            for file in sorted(folder.glob("*.csv")):
                for kind, pattern in (("quotes", _QUOTE_FILE), ("minute", _MINUTE_FILE),
                                      ("daily", _DAILY_FILE)):
                    match = pattern.match(file.name)
                    if match:
                        entry = found.setdefault(match["symbol"], {})
                        entry.setdefault(kind, []).append(file)
                        break
        return {s: kinds for s, kinds in found.items() if "minute" in kinds or "daily" in kinds}

    def _load_symbol(self, symbol: str, files: dict[str, list[Path]]) -> None:
        minute_parts = [read_minute_file(p) for p in files.get("minute", [])]
        if minute_parts:
            merged = {k: np.concatenate([part[k] for part in minute_parts]) for k in minute_parts[0]}
            order = np.argsort(merged["ts"], kind="stable")
            merged = {k: a[order] for k, a in merged.items()}
            keep = np.concatenate(([True], np.diff(merged["ts"]) > 0))
            merged = {k: a[keep] for k, a in merged.items()}
            series = _MinuteSeries(**merged)
            series.days = _group_days(series.ts)
            self._minutes[symbol] = series
        daily_parts = [read_daily_file(p) for p in files.get("daily", [])]
        daily_parts.sort(key=lambda rows: max(rows))
        combined: dict[date, _DailyRow] = {}
        for rows in daily_parts:
            combined.update(rows)
        if combined:
            self._daily[symbol] = combined
        quote_parts = [read_quote_file(p) for p in files.get("quotes", [])]
        if quote_parts:
            q = {k: np.concatenate([part[k] for part in quote_parts]) for k in quote_parts[0]}
            order = np.argsort(q["ts"], kind="stable")
            q = {k: a[order] for k, a in q.items()}
            quotes = _QuoteSeries(**q)
            quotes.days = _group_days(quotes.ts)
            self._quotes[symbol] = quotes
        log.debug("sim_csv_symbol_loaded", symbol=symbol,
                  minute_days=len(self._minutes[symbol].days) if symbol in self._minutes else 0,
                  daily_rows=len(combined))

    # -- MarketSource --------------------------------------------------------------------

    def sessions(self, start: date, end: date) -> list[date]:
        lo = bisect.bisect_left(self._sessions, start)
        hi = bisect.bisect_right(self._sessions, end)
        return self._sessions[lo:hi]

    def profile(self, symbol: str) -> SymbolProfile:
        tape = "B" if symbol in _ETF_TAPE_B else "C"
        return SymbolProfile(symbol, _SPREADS.get(symbol, 2.0), NOMINAL_TRADE_SIZE, tape,
                             "ARCA" if tape == "B" else "NASDAQ")

    def volatile(self, symbol: str, session: date) -> bool:
        """Whether ``symbol``'s quotes in ``session`` are wide (the spread model doubles them):
        its last recorded session *before* this one moved more than 4% from low to high.
        Known at the open; the session's own range is not (using it would let the opening
        spread see the day's high and low: a cost look-ahead)."""
        row = self._previous_row(symbol, session)
        return bool(row is not None and (row.h - row.l) / row.o > 0.04)

    def _previous_row(self, symbol: str, session: date) -> _DailyRow | None:
        rows = self._daily.get(symbol)
        if not rows:
            return None
        days = self._daily_days.get(symbol)
        if days is None or len(days) != len(rows):
            days = self._daily_days[symbol] = sorted(rows)
        i = bisect.bisect_left(days, session)
        return rows[days[i - 1]] if i > 0 else None

    def day(self, symbol: str, session: date) -> DayArrays | None:
        series = self._minutes.get(symbol)
        if series is not None:
            span = series.days.get(session)
            if span is not None:
                a, b = span
                return DayArrays(session, series.ts[a:b], series.o[a:b], series.h[a:b],
                                 series.l[a:b], series.c[a:b], series.v[a:b], series.n[a:b],
                                 series.vw[a:b])
        row = self._daily.get(symbol, {}).get(session)
        if row is None or not FIRST_DATE <= session <= LAST_DATE:
            return None
        if not self.calendar.is_session(session):
            return None
        return self._expand(symbol, session, row)

    def daily_summary(self, symbol: str, session: date) -> DailySummary | None:
        """When :meth:`day` of ``(symbol, session)`` is the expansion of a daily row: that
        row's open/high/low/close and the expanded bars' window, without expanding anything.
        None when :meth:`day` gives the session's minute bars instead, or nothing."""
        series = self._minutes.get(symbol)
        if series is not None and session in series.days:
            return None
        row = self._daily.get(symbol, {}).get(session)
        if row is None or not FIRST_DATE <= session <= LAST_DATE or not self.calendar.is_session(session):
            return None
        start, minutes = self._window(session)
        return DailySummary(row.o, row.h, row.l, row.c, start, start + 60 * minutes)

    def daily_volume(self, symbol: str, session: date) -> int | None:
        """The summed volume of the minute bars a daily row expands into (the volume of the
        daily bar aggregated from them), computed without the price path; None when
        :meth:`daily_summary` is None. That is the row's own volume: :func:`_allocate` hands
        out exactly its total (when its float shares are exact to well under one share)."""
        if self.daily_summary(symbol, session) is None:
            return None
        row = self._daily[symbol][session]
        if 0 <= row.v < EXACT_ALLOCATION:
            return int(row.v)
        frame = _frame(self._window(session)[1])
        return int(_allocate(row.v, frame.weights, frame.shares).sum())

    def has_day(self, symbol: str, session: date) -> bool:
        """Whether :meth:`day` of ``(symbol, session)`` has bars (nothing is built)."""
        series = self._minutes.get(symbol)
        if series is not None and session in series.days:
            return True
        return (
            session in self._daily.get(symbol, {})
            and FIRST_DATE <= session <= LAST_DATE
            and self.calendar.is_session(session)
        )

    def session_range(self, symbol: str, session: date) -> tuple[float, float] | None:
        """``(low, high)``: every price (open, high, low, close) of every bar :meth:`day`
        gives for ``(symbol, session)`` lies in ``[low, high]``; read without expanding a
        daily row (its low and high: the expansion is clipped into them). A session
        without bars gives ``(inf, -inf)``."""
        series = self._minutes.get(symbol)
        if series is not None:
            span = series.days.get(session)
            if span is not None:
                key = (symbol, session)
                found = self._minute_ranges.get(key)
                if found is None:
                    a, b = span
                    found = self._minute_ranges[key] = (float(series.l[a:b].min()), float(series.h[a:b].max()))
                return found
        summary = self.daily_summary(symbol, session)
        if summary is None:
            return (math.inf, -math.inf)
        return (summary.l, summary.h)

    def _window(self, session: date) -> tuple[int, int]:
        """(epoch of the open, regular minutes) of ``session``: the expanded bars' frame."""
        found = self._windows.get(session)
        if found is None:
            opened, closed = self.calendar.open_close(session)
            minutes = int(round((closed.timestamp() - opened.timestamp()) / 60))
            found = self._windows[session] = (int(opened.timestamp()), minutes)
        return found

    def recorded_quote(
        self, symbol: str, epoch: float
    ) -> tuple[float, float, int, int, int] | None:
        """(bid, ask, bid_size, ask_size, minute start) of the last quote bar within the
        exchange day of ``epoch``, when a quotes file covers it."""
        quotes = self._quotes.get(symbol)
        if quotes is None:
            return None
        session = datetime.fromtimestamp(epoch, EXCHANGE_TZ).date()
        span = quotes.days.get(session)
        if span is None:
            return None
        a, b = span
        i = int(np.searchsorted(quotes.ts[a:b], epoch, side="right")) - 1
        if i < 0:
            return None
        j = a + i
        return (float(quotes.bid[j]), float(quotes.ask[j]), int(quotes.bid_size[j]),
                int(quotes.ask_size[j]), int(quotes.ts[j]))

    # -- daily expansion -----------------------------------------------------------------

    def minute_path(self, symbol: str, session: date) -> np.ndarray | None:
        """The price path a daily row of ``(symbol, session)`` expands into (``minutes + 1``
        points: bar ``k`` opens at ``path[k]`` and closes at ``path[k + 1]``), computed as
        :meth:`day` computes it but without the bars' highs, lows and volumes; None when
        :meth:`day` gives recorded minute bars or nothing. Remembered for a few sessions."""
        key = (symbol, session)
        found = self._paths.get(key)
        if found is None:
            if self.daily_summary(symbol, session) is None:
                return None
            found = self._path(symbol, session, self._daily[symbol][session])[0]
            found.flags.writeable = False
            if len(self._paths) >= PATH_MEMO:
                self._paths.pop(next(iter(self._paths)))
            self._paths[key] = found
        return found

    def minute_volumes(self, symbol: str, session: date) -> tuple[np.ndarray, np.ndarray] | None:
        """The volumes and trade counts of the bars a daily row of ``(symbol, session)``
        expands into, computed as :meth:`day` computes them (they need no random draw);
        None when :meth:`day` gives recorded minute bars or nothing."""
        if self.daily_summary(symbol, session) is None:
            return None
        row = self._daily[symbol][session]
        frame = _frame(self._window(session)[1])
        return _volumes(row, frame)

    def _path(self, symbol: str, session: date, row: _DailyRow) -> tuple[np.ndarray, np.random.Generator]:
        """The expansion's price path and its random generator, positioned for the wicks."""
        start, minutes = self._window(session)
        frame = _frame(minutes)
        rng = np.random.default_rng([self.seed, _stable("csv-day", symbol), session.toordinal()])
        _, first, second, _ = daily_path_order(row.o, row.h, row.l, row.c)
        a = int(rng.integers(max(1, int(0.10 * minutes)), max(2, int(0.45 * minutes))))
        b = int(rng.integers(max(a + 1, int(0.55 * minutes)), max(a + 2, int(0.90 * minutes))))
        b = min(b, minutes - 1)
        knots_x = [0, a, b, minutes]
        knots_y = [row.o, first, second, row.c]
        grid = frame.grid
        path = np.interp(grid, knots_x, knots_y)
        envelope = np.zeros(minutes + 1)
        for left, right in zip(knots_x[:-1], knots_x[1:]):
            span = right - left
            if span > 1:
                part = envelope[left:right + 1]
                np.maximum(part, np.sin(np.pi * (grid[left:right + 1] - left) / span), out=part)
        day_range = row.h - row.l
        noise = rng.standard_normal(minutes + 1).cumsum()
        scale = np.abs(noise).max() or 1.0
        path = path + envelope * noise / scale * 0.15 * day_range
        path = _clip(path.round(4), row.l, row.h)
        # On the way down to the low the path stays at or under the open: nothing above the
        # open (a long target) is touched before the low (the stop) has been.
        path[: a + 1] = np.minimum(path[: a + 1], row.o)
        path[knots_x] = knots_y
        return path, rng

    def _expand(self, symbol: str, session: date, row: _DailyRow) -> DayArrays:
        start, minutes = self._window(session)
        frame = _frame(minutes)
        path, rng = self._path(symbol, session, row)
        day_range = row.h - row.l
        o = path[:-1].copy()
        c = path[1:].copy()
        wick = np.abs(rng.standard_normal((2, minutes))) * 0.03 * day_range
        top = np.maximum(o, c)
        bottom = np.minimum(o, c)
        h = _clip((top + wick[0]).round(4), top, row.h)
        down = int(np.argmin(path))  # the first minute at the day's low
        h[:down] = np.minimum(h[:down], np.maximum(top[:down], row.o))  # no wick above the open before it
        lo = _clip((bottom - wick[1]).round(4), row.l, bottom)
        v, n = _volumes(row, frame)
        vw = _clip(((h + lo + c) / 3.0).round(4), lo, h)
        ts = frame.offsets + start
        return DayArrays(session, ts, o, h, lo, c, v, n, vw)


@dataclass(frozen=True)
class _Frame:
    """What every expanded session of one length shares: the minute grid, the U-shaped
    volume weights (and their shares of the total), the bar start offsets in seconds."""

    grid: np.ndarray
    weights: np.ndarray
    shares: np.ndarray
    offsets: np.ndarray


@functools.lru_cache(maxsize=8)
def _frame(minutes: int) -> _Frame:
    x = (np.arange(minutes) + 0.5) / minutes
    weights = 1.0 + 2.8 * (2.0 * x - 1.0) ** 2
    frame = _Frame(np.arange(minutes + 1), weights, weights / weights.sum(),
                   (60 * np.arange(minutes)).astype(np.int64))
    for array in (frame.grid, frame.weights, frame.shares, frame.offsets):
        array.flags.writeable = False
    return frame


def _volumes(row: _DailyRow, frame: _Frame) -> tuple[np.ndarray, np.ndarray]:
    """The expanded bars' volumes (the row's, U-shaped over the session) and trade counts."""
    v = _allocate(row.v, frame.weights, frame.shares)
    if row.n is not None:
        n = _allocate(row.n, frame.weights, frame.shares)
    else:
        n = np.where(v > 0, np.maximum(1, np.round(v / NOMINAL_TRADE_SIZE)), 0).astype(np.int64)
    return v, n


def _clip(values: np.ndarray, low: float | np.ndarray, high: float | np.ndarray) -> np.ndarray:
    """``np.clip(values, low, high)`` in place (same numbers, without its Python overhead)."""
    np.maximum(values, low, out=values)
    np.minimum(values, high, out=values)
    return values


def _allocate(total: int, weights: np.ndarray, shares: np.ndarray | None = None) -> np.ndarray:
    """Integers proportional to ``weights`` that sum exactly to ``total`` (``shares``:
    ``weights / weights.sum()`` when already known)."""
    share = (weights / weights.sum() if shares is None else shares) * total
    out = np.floor(share).astype(np.int64)
    remainder = int(total - out.sum())
    if remainder > 0:
        order = np.argsort(-(share - out), kind="stable")[:remainder]
        out[order] += 1
    return out
