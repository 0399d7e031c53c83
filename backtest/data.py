"""Replayed history for a backtest: each symbol's daily bars as the simulator replays them,
and which symbols a data directory holds.

:class:`DailyHistory` is what the backtest loop reads instead of asking the data API for a
year of bars every session (the same numbers, faster); :func:`symbols_in_dir` is what
``backtest --data DIR`` trades when no ``--symbols`` are given.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np

from core.clock import EXCHANGE_TZ
from market.market_data import BarSeries
from market.trading_calendar import FIRST_DATE, LAST_DATE, TradingCalendar

#: Bar files the simulator replays (its CSV source's names): daily and minute bars.
_BAR_FILE = re.compile(r"^(?P<symbol>[A-Za-z0-9.\-]+?)-1[dm]-(?!quotes-).*\.csv$")


@dataclass(frozen=True)
class DailyHistory:
    """One symbol's daily bars over the whole replay, oldest first (float64 arrays).

    ``ts`` is midnight New York of each session (how Alpaca stamps daily bars), ``days`` the
    session dates. Sessions replayed from recorded minute bars carry their regular-session
    aggregate, as the data API would serve it. The arrays are validated once (timestamps
    strictly increasing) and made read-only; :meth:`window` hands out views of them.
    """

    symbol: str
    days: tuple[date, ...]
    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    minute_days: frozenset[date] = frozenset()
    bars: BarSeries = field(init=False, repr=False, compare=False)
    _positions: dict[date, int] = field(init=False, repr=False, compare=False)
    _stamps: list[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        bars = BarSeries(self.ts, self.open, self.high, self.low, self.close, self.volume)
        object.__setattr__(self, "bars", bars)
        for name in ("ts", "open", "high", "low", "close", "volume"):
            object.__setattr__(self, name, getattr(bars, name))
        object.__setattr__(self, "_positions", {day: i for i, day in enumerate(self.days)})
        object.__setattr__(self, "_stamps", bars.ts.tolist())

    def index(self, day: date) -> int | None:
        """Position of ``day``'s bar, or None when the symbol has no bar that session."""
        return self._positions.get(day)

    def window(self, since_epoch: float, before_epoch: float) -> BarSeries | None:
        """Bars stamped in ``[since, before)`` (None when there are none): a view, no copy."""
        lo = bisect.bisect_left(self._stamps, since_epoch)
        hi = bisect.bisect_left(self._stamps, before_epoch)
        if hi <= lo:
            return None
        return self.bars.slice(lo, hi)


def midnight(day: date) -> int:
    """Epoch seconds of midnight New York on ``day`` (how Alpaca stamps a daily bar)."""
    return int(datetime.combine(day, datetime.min.time(), EXCHANGE_TZ).timestamp())


def load_history(market: Any, symbols: Iterable[str]) -> dict[str, DailyHistory]:
    """Daily bars of ``symbols`` exactly as the simulator replays them.

    CSV daily rows are taken as they are (the simulator's minute expansion reproduces them
    exactly); sessions with recorded minute bars use the market's regular-session aggregate.
    For a source without daily rows (synthetic), every session is aggregated by the market.
    """
    source = getattr(market, "_source", None)
    rows_by_symbol: dict[str, dict[date, Any]] = getattr(source, "_daily", None) or {}
    minutes_by_symbol: dict[str, Any] = getattr(source, "_minutes", None) or {}
    calendar: TradingCalendar = market.calendar
    all_sessions = market.trading_days(FIRST_DATE, LAST_DATE)
    out: dict[str, DailyHistory] = {}
    for symbol in dict.fromkeys(symbols):
        rows = rows_by_symbol.get(symbol, {})
        series = minutes_by_symbol.get(symbol)
        minute_days = frozenset(d for d in (series.days if series is not None else {}) if calendar.is_session(d))
        if source is not None and hasattr(source, "_daily"):
            candidates = sorted({d for d in rows if FIRST_DATE <= d <= LAST_DATE and calendar.is_session(d)} | minute_days)
        else:
            candidates = list(all_sessions)
        days: list[date] = []
        values: list[tuple[float, float, float, float, float]] = []
        for day in candidates:
            if day in minute_days or day not in rows:
                bar = market.daily_bar(symbol, day)
                if bar is None:
                    continue
                values.append((bar.o, bar.h, bar.l, bar.c, float(bar.v)))
            else:
                row = rows[day]
                values.append((row.o, row.h, row.l, row.c, float(row.v)))
            days.append(day)
        if not days:
            continue
        array = np.array(values, dtype=np.float64).reshape(-1, 5)
        ts = np.array([midnight(d) for d in days], dtype=np.int64)
        out[symbol] = DailyHistory(symbol, tuple(days), ts, *(array[:, k].copy() for k in range(5)),
                                   minute_days=minute_days)
    return out


def _folders(data_dir: Path) -> list[Path]:
    return [f for f in (Path(data_dir), Path(data_dir) / "daily", Path(data_dir) / "intraday") if f.is_dir()]


def has_data_for(data_dir: Path, symbol: str) -> bool:
    """Whether ``data_dir`` holds daily or minute bars of ``symbol``."""
    return symbol in symbols_in_dir(data_dir)


def symbols_in_dir(data_dir: Path) -> list[str]:
    """Every symbol with daily or minute bar files in ``data_dir`` (or its ``daily/`` and
    ``intraday/`` folders), sorted: what ``backtest --data DIR`` trades without ``--symbols``."""
    found = {m["symbol"] for folder in _folders(data_dir) for f in folder.glob("*.csv")
             if (m := _BAR_FILE.match(f.name)) is not None}
    return sorted(found)
