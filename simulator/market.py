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

import functools
import math
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from pathlib import Path
from typing import TypeVar

import numpy as np
import structlog

from core.clock import EXCHANGE_TZ, Clock
from market.trading_calendar import TradingCalendar
# The data types a source hands the market live below both (csv_source and synthetic import
# them without importing this module); they are re-exported here for the market's readers.
from simulator.bars import DailySummary, DayArrays, MarketSource, MinuteBar, SimQuote, SymbolProfile

log = structlog.get_logger(__name__)

UTC = timezone.utc
LOOKBACK_SESSIONS = 10
DEFAULT_CACHE_DAYS = 384
MEMO_SIZE = 2048  # remembered last trades / quotes per (symbol, instant)
SHORT_WINDOW_BARS = 8  # up to this many bars, first_bar_reaching loops in Python
_Value = TypeVar("_Value")
_UNKNOWN = object()  # "not known without the minute bars"


@dataclass(frozen=True)
class Shock:
    """A price move by ``factor`` at instant ``at_epoch`` (seconds) for one symbol."""

    at_epoch: float
    factor: float
    reason: str


def _epoch(moment: datetime) -> float:
    if moment.tzinfo is None:
        raise ValueError("naive datetime: every timestamp in this system must be timezone-aware")
    return moment.timestamp()


@functools.lru_cache(maxsize=32768)
def midnight_et_utc(day: date) -> datetime:
    """Midnight America/New_York of ``day``, in UTC (Alpaca's daily bar timestamp)."""
    return datetime.combine(day, time(0, 0), EXCHANGE_TZ).astimezone(UTC)


def _apply_shocks(day: DayArrays, shocks: Sequence[Shock]) -> DayArrays:
    """``day`` with every shock applied (see the module docstring for the rule)."""
    if not shocks or len(day) == 0:
        return day
    start = float(day.ts[0])
    end = float(day.ts[-1]) + 60.0
    relevant = [s for s in shocks if s.at_epoch < end]
    if not relevant:
        return day
    ts = day.ts.astype(np.float64)
    o, h, l, c, vw = (a.copy() for a in (day.o, day.h, day.l, day.c, day.vw))
    for shock in relevant:
        if shock.at_epoch <= start:
            for a in (o, h, l, c, vw):
                a *= shock.factor
            continue
        after = ts >= shock.at_epoch
        for a in (o, h, l, c, vw):
            a[after] *= shock.factor
        inside = (ts < shock.at_epoch) & (ts + 60.0 > shock.at_epoch)
        if inside.any():
            c[inside] *= shock.factor
            h[inside] = np.maximum(h[inside], c[inside])
            l[inside] = np.minimum(l[inside], c[inside])
    # Bars that end before the first shock keep their exact values; the rest are rounded.
    first = int(np.searchsorted(ts + 60.0, min(s.at_epoch for s in relevant), side="right"))
    for a in (o, h, l, c, vw):
        np.round(a[first:], 4, out=a[first:])
    h = np.maximum(h, np.maximum(o, c))
    l = np.minimum(l, np.minimum(o, c))
    vw = np.clip(vw, l, h)
    return DayArrays(day.session, day.ts, o, h, l, c, day.v, day.n, vw)


def _remember(memo: dict[tuple[str, float], _Value], key: tuple[str, float], value: _Value) -> None:
    """Store ``value`` in a bounded memo (emptied when full)."""
    if len(memo) >= MEMO_SIZE:
        memo.clear()
    memo[key] = value


def _first_reaching_short(
    day: DayArrays, a: int, b: int, tests: Iterable[tuple[float, float, float]]
) -> datetime | None:
    """:meth:`Market.first_bar_reaching` over the few bars ``a..b-1``, without array work."""
    stamps = day.ts[a:b].tolist()
    rows = list(zip(day.o[a:b].tolist(), day.h[a:b].tolist(), day.l[a:b].tolist(), day.c[a:b].tolist()))
    checks = list(tests)
    for stamp, row in zip(stamps, rows):
        low, high = min(row), max(row)
        for from_epoch, low_at_most, high_at_least in checks:
            if stamp >= from_epoch and (low_at_most == math.inf or low <= low_at_most or high >= high_at_least):
                return datetime.fromtimestamp(stamp, UTC)
    return None


def aggregate(day: DayArrays, mask: np.ndarray | None = None) -> tuple[float, float, float, float, int, int, float] | None:
    """(o, h, l, c, v, n, vw) over the bars selected by ``mask`` (all when None)."""
    if mask is not None:
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return None
        lo, hi = int(idx[0]), int(idx[-1]) + 1
        if hi - lo != idx.size:
            raise ValueError("aggregate needs a contiguous selection of bars")
    else:
        lo, hi = 0, len(day)
        if hi == 0:
            return None
    return _aggregate_range(day, lo, hi)


def _aggregate_range(day: DayArrays, lo: int, hi: int) -> tuple[float, float, float, float, int, int, float]:
    """:func:`aggregate` over bars ``lo..hi-1`` (``lo < hi``)."""
    v = day.v[lo:hi]
    volume = int(v.sum())
    if volume > 0:
        vw = float(np.dot(day.vw[lo:hi], v) / volume)
    else:
        vw = float(day.vw[lo:hi].mean())
    low = float(day.l[lo:hi].min())
    high = float(day.h[lo:hi].max())
    return (
        float(day.o[lo]),
        high,
        low,
        float(day.c[hi - 1]),
        volume,
        int(day.n[lo:hi].sum()),
        round(min(max(vw, low), high), 4),
    )


class Market:
    """Minute bars, prices, quotes and daily bars for ``symbols``; shocks and gaps on top.

    Build with :meth:`synthetic` or :meth:`from_csv_dir`. Deterministic: the same source
    and seed give the same numbers whatever order they are asked in.
    """

    def __init__(
        self,
        source: MarketSource,
        calendar: TradingCalendar | None = None,
        seed: int = 42,
        cache_days: int = DEFAULT_CACHE_DAYS,
    ) -> None:
        self._source = source
        self.calendar = calendar or TradingCalendar()
        self.seed = seed
        self.symbols: list[str] = list(source.symbols)
        self._known = set(self.symbols)
        self._cache: OrderedDict[tuple[str, date], DayArrays | None] = OrderedDict()
        self._cache_days = max(8, cache_days)
        self._daily: dict[tuple[str, date], MinuteBar | None] = {}
        self._shocks: dict[str, list[Shock]] = {}
        self._shock_log: list[dict[str, object]] = []
        # Answers per (symbol, instant), dropped whenever a shock or gap changes prices: the
        # broker asks for the same symbol at the same "now" many times per request.
        self._trades: dict[tuple[str, float], tuple[float, datetime, int] | None] = {}
        self._quotes: dict[tuple[str, float], SimQuote | None] = {}
        self._prices: dict[tuple[str, float], float | None] = {}
        self._profiles: dict[str, SymbolProfile] = {}
        self.revision = 0  # bumped by every shock and gap: prices derived before it are stale
        self.clock: Clock | None = None
        # Answers known without expanding daily rows into minute bars (session_range,
        # known_bar_close, price_at around a daily session's open and close). Off: every
        # answer is read from the minute bars (the tests compare both).
        self.fast_paths = True
        self._has_summaries = all(
            callable(getattr(source, name, None)) for name in ("daily_summary", "has_day", "daily_volume")
        )

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

    @property
    def cache_days(self) -> int:
        """How many (symbol, session) day arrays the LRU cache keeps."""
        return self._cache_days

    @cache_days.setter
    def cache_days(self, value: int) -> None:
        self._cache_days = max(8, int(value))
        while len(self._cache) > self._cache_days:
            self._cache.popitem(last=False)

    @property
    def cached_days(self) -> int:
        """How many day arrays are cached right now."""
        return len(self._cache)

    def attach_clock(self, clock: Clock) -> None:
        """Give the market a notion of "now" (used by :meth:`schedule_gap`)."""
        self.clock = clock

    # -- the data ------------------------------------------------------------------------

    def has_symbol(self, symbol: str) -> bool:
        return symbol in self._known

    def profile(self, symbol: str) -> SymbolProfile:
        self._require(symbol)
        return self._profile(symbol)

    def _profile(self, symbol: str) -> SymbolProfile:
        found = self._profiles.get(symbol)
        if found is None:
            found = self._profiles[symbol] = self._source.profile(symbol)
        return found

    def _require(self, symbol: str) -> None:
        if symbol not in self._known:
            raise KeyError(f"unknown symbol {symbol!r}; the market has {', '.join(self.symbols)}")

    def minute_arrays(self, symbol: str, session_date: date) -> DayArrays | None:
        """Every minute bar of ``symbol`` on ``session_date`` (shocks applied), or None."""
        if symbol not in self._known:
            return None
        key = (symbol, session_date)
        cache = self._cache
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        day = self._load(symbol, session_date)
        cache[key] = day
        if len(cache) > self._cache_days:
            cache.popitem(last=False)
        return day

    def _load(self, symbol: str, session_date: date) -> DayArrays | None:
        day = self._source.day(symbol, session_date)
        if day is None or len(day) == 0:
            return None
        return _apply_shocks(day, self._shocks.get(symbol, ()))

    def _peek(self, symbol: str, session_date: date) -> DayArrays | None:
        """Like :meth:`minute_arrays` but without disturbing the LRU (for long scans)."""
        cached = self._cache.get((symbol, session_date), False)
        if cached is not False:
            return cached  # type: ignore[return-value]
        return self._load(symbol, session_date)

    def trading_days(self, start: date, end: date) -> list[date]:
        """Sessions in ``start..end`` (inclusive) for which the market has data."""
        return self._source.sessions(start, end)

    def bar_at(self, symbol: str, minute_start: datetime) -> MinuteBar | None:
        """The bar starting at ``minute_start`` (any second within the minute), or None."""
        day = self._day_of(symbol, minute_start)
        if day is None:
            return None
        epoch = int(_epoch(minute_start)) // 60 * 60
        i = int(np.searchsorted(day.ts, epoch))
        if i < len(day) and int(day.ts[i]) == epoch:
            return day.bar(i)
        return None

    # -- answers without expanding daily rows -------------------------------------------

    def _summary(self, symbol: str, session: date) -> DailySummary | None:
        """The daily row behind ``session``'s bars, when they are an unshocked expansion."""
        if not self.fast_paths or not self._has_summaries or self._shocks.get(symbol):
            return None
        return self._source.daily_summary(symbol, session)  # type: ignore[attr-defined]

    def session_range(self, symbol: str, session: date) -> tuple[float, float] | None:
        """``(low, high)`` bounding every price (open, high, low, close) of every bar of
        ``symbol`` on ``session`` (New York date), read without expanding minute bars:
        ``(inf, -inf)`` when the session has no bars. None when it is not known that way
        (a synthetic market, a symbol with shocks or gaps, fast paths off): ask the bars.

        So a level below ``low`` or above ``high`` is reached by no bar of the session:
        :meth:`first_bar_reaching` would find nothing for it.
        """
        if not self.fast_paths or symbol not in self._known or self._shocks.get(symbol):
            return None
        ranger = getattr(self._source, "session_range", None)
        return None if ranger is None else ranger(symbol, session)

    def known_bar_close(self, symbol: str, minute_start: datetime) -> float | None:
        """The close of the bar starting at ``minute_start`` when it is known without
        expanding minute bars: the last bar of a session expanded from a daily row closes at
        the row's close. None when not known that way (ask :meth:`bar_at`)."""
        if symbol not in self._known:
            return None
        summary = self._summary(symbol, minute_start.astimezone(EXCHANGE_TZ).date())
        if summary is None:
            return None
        epoch = int(_epoch(minute_start)) // 60 * 60
        return summary.c if epoch == summary.end - 60 else None

    def _known_price(self, symbol: str, t: datetime, epoch: float) -> float | None | object:
        """:meth:`price_at` without expanding minute bars, or ``_UNKNOWN`` when that needs them.

        Known: at or after the close of a session expanded from a daily row (until the next
        session's first bar) the last trade is the last bar's close, the row's close; in the
        first minute of such a session it is the first bar's open, the row's open; in any
        later minute, that minute's bar's open, from the expansion's price path alone
        (:meth:`CsvSource.minute_path`, without highs, lows and volumes). The sessions are
        visited as :meth:`_last_trade` visits them.
        """
        found = self._expanded_session(symbol, t, epoch)
        if found is None or found is _UNKNOWN:
            return found
        session, summary = found  # type: ignore[misc]
        return self._path_price(symbol, session, summary, epoch)

    def _expanded_session(self, symbol: str, t: datetime, epoch: float) -> tuple[date, DailySummary] | None | object:
        """The session whose bars hold the last trade at ``t``, with its daily row's summary,
        when those bars are an unshocked expansion of a daily row; None when no session has
        bars; ``_UNKNOWN`` when only the minute bars can tell. The sessions are visited as
        :meth:`_last_trade` visits them."""
        if not self.fast_paths or not self._has_summaries or self._shocks.get(symbol):
            return _UNKNOWN
        source = self._source
        for session in self._candidate_sessions(t):
            summary = source.daily_summary(symbol, session)  # type: ignore[attr-defined]
            if summary is None:
                if source.has_day(symbol, session):  # type: ignore[attr-defined]
                    return _UNKNOWN  # minute bars: read them
                continue  # no bars that session: look further back, as _last_trade does
            if epoch < summary.start:
                continue  # no bar yet at t: the last trade is an earlier session's
            return session, summary
        return None

    def _path_price(self, symbol: str, session: date, summary: DailySummary, epoch: float) -> float | object:
        """The last trade's price at ``epoch`` in the expanded ``session`` (see :meth:`_known_price`)."""
        if epoch >= summary.end:
            return round(summary.c, 4)
        if epoch < summary.start + 60.0:
            return round(summary.o, 4)
        path = self._source.minute_path(symbol, session)  # type: ignore[attr-defined]
        if path is None:
            return _UNKNOWN
        # within bar k (which starts at start + 60 k) the last trade is its open, path[k]
        return round(float(path[int((epoch - summary.start) // 60)]), 4)

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
        a = int(ts.searchsorted(_epoch(start)))
        b = int(ts.searchsorted(_epoch(end)))
        if a >= b:
            return None
        if b - a <= SHORT_WINDOW_BARS:
            return _first_reaching_short(day, a, b, tests)
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
        lo, hi = _epoch(start), _epoch(end)
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

    def _day_of(self, symbol: str, moment: datetime) -> DayArrays | None:
        session = moment.astimezone(EXCHANGE_TZ).date()
        return self.minute_arrays(symbol, session)

    def _shock_factor(self, symbol: str, after_epoch: float, until_epoch: float) -> float:
        """Product of the symbol's shocks with ``after < at <= until``."""
        factor = 1.0
        for shock in self._shocks.get(symbol, ()):
            if after_epoch < shock.at_epoch <= until_epoch:
                factor *= shock.factor
        return factor

    def last_trade(self, symbol: str, t: datetime) -> tuple[float, datetime, int] | None:
        """(price, trade time, size) of the last trade at or before ``t``; None if none."""
        if symbol not in self._known:
            return None
        epoch = _epoch(t)
        key = (symbol, epoch)
        if key in self._trades:
            return self._trades[key]
        known = self._known_trade(symbol, t, epoch)
        trade = self._last_trade(symbol, t, epoch) if known is _UNKNOWN else known
        _remember(self._trades, key, trade)  # type: ignore[arg-type]
        return trade  # type: ignore[return-value]

    def _known_trade(self, symbol: str, t: datetime, epoch: float) -> tuple[float, datetime, int] | None | object:
        """:meth:`last_trade` without expanding minute bars, or ``_UNKNOWN`` when that needs
        them: for a session expanded from a daily row, the price from the expansion's price
        path (:meth:`_known_price`) and the size from its volumes and trade counts alone
        (:meth:`CsvSource.minute_volumes`), the trade's time as :meth:`_last_trade` stamps it."""
        found = self._expanded_session(symbol, t, epoch)
        if found is None or found is _UNKNOWN:
            return found
        session, summary = found  # type: ignore[misc]
        price = self._path_price(symbol, session, summary, epoch)
        volumes = self._source.minute_volumes(symbol, session)  # type: ignore[attr-defined]
        if price is _UNKNOWN or volumes is None:
            return _UNKNOWN
        v, n = volumes
        i = min(int((epoch - summary.start) // 60), len(v) - 1)
        start = summary.start + 60.0 * i
        when = datetime.fromtimestamp(start if epoch < start + 60.0 else start + 59.0, UTC)
        size_unit = max(1, self._profile(symbol).avg_trade_size)
        trades = max(1, int(n[i]))
        size = max(1, min(int(v[i]) // trades, size_unit * 10)) if v[i] > 0 else 1
        return price, when, size

    def _candidate_sessions(self, t: datetime) -> Iterator[date]:
        """``t``'s New York date when it is a session, then up to LOOKBACK_SESSIONS earlier
        sessions, newest first (computed only as far as they are asked for)."""
        local_day = t.astimezone(EXCHANGE_TZ).date()
        if self.calendar.is_session(local_day):
            yield local_day
        probe = local_day
        for _ in range(LOOKBACK_SESSIONS):
            try:
                probe = self.calendar.previous_session(probe)
            except ValueError:
                return
            yield probe

    def _last_trade(self, symbol: str, t: datetime, epoch: float) -> tuple[float, datetime, int] | None:
        size_unit = max(1, self._profile(symbol).avg_trade_size)
        for session in self._candidate_sessions(t):
            day = self.minute_arrays(symbol, session)
            if day is None:
                continue
            i = int(np.searchsorted(day.ts, epoch, side="right")) - 1
            if i < 0:
                continue
            start = float(day.ts[i])
            trades = max(1, int(day.n[i]))
            size = max(1, min(int(day.v[i]) // trades, size_unit * 10)) if day.v[i] > 0 else 1
            if epoch < start + 60.0:
                price = float(day.o[i]) * self._shock_factor(symbol, start, epoch)
                when = datetime.fromtimestamp(start, UTC)
            else:
                price = float(day.c[i]) * self._shock_factor(symbol, start + 60.0, epoch)
                when = datetime.fromtimestamp(start + 59.0, UTC)
            return round(price, 4), when, size
        return None

    def price_at(self, symbol: str, t: datetime) -> float | None:
        """Last trade price at ``t`` (see the module docstring), or None without data."""
        if symbol not in self._known:
            return None
        key = (symbol, _epoch(t))
        prices = self._prices
        if key in prices:
            return prices[key]
        price: float | None
        known = self._known_price(symbol, t, key[1]) if key not in self._trades else _UNKNOWN
        if known is _UNKNOWN:
            trade = self.last_trade(symbol, t)
            price = None if trade is None else trade[0]
        else:
            price = known  # type: ignore[assignment]
        _remember(prices, key, price)
        return price

    def quote_at(self, symbol: str, t: datetime) -> SimQuote | None:
        """Best bid/ask at ``t`` around :meth:`price_at`, with the spread model."""
        key = (symbol, _epoch(t))
        if key in self._quotes:
            return self._quotes[key]
        quote = self._quote_at(symbol, t)
        if symbol in self._known:
            _remember(self._quotes, key, quote)
        return quote

    def _quote_at(self, symbol: str, t: datetime) -> SimQuote | None:
        price = self.price_at(symbol, t)
        if price is None:
            return None
        phase = self.calendar.session_phase(t)
        epoch = _epoch(t)
        if phase != "closed":
            recorded = self._source.recorded_quote(symbol, epoch)
            if recorded is not None:
                factor = self._shock_factor(symbol, float("-inf"), epoch)
                bid, ask, bid_size, ask_size, _ = recorded
                return SimQuote(round(bid * factor, 4), round(ask * factor, 4), bid_size,
                                ask_size, t.astimezone(UTC))
        profile = self._profile(symbol)
        multiplier = {"regular": 1.0, "pre": 4.0, "post": 4.0, "closed": 8.0}[phase]
        session = t.astimezone(EXCHANGE_TZ).date()
        if phase == "regular":
            opened = self.calendar.open_close(session)[0]
            if (t - opened).total_seconds() < 300:
                multiplier *= 2.0
        if self._source.volatile(symbol, session if phase != "closed" else self._last_session(t)):
            multiplier *= 2.0
        half = price * profile.spread_bps * multiplier / 10_000.0
        bid = math.floor((price - half) * 100.0 + 1e-9) / 100.0
        ask = math.ceil((price + half) * 100.0 - 1e-9) / 100.0
        if ask - bid < 0.0099:
            ask = round(bid + 0.01, 2)
        if bid <= 0:
            bid = 0.01
            ask = max(ask, 0.02)
        quote_time = t.astimezone(UTC)
        if phase == "closed":
            last = self._last_session(t)
            quote_time = min(quote_time, self.calendar.extended_hours(last)[1])
        minute = int(epoch) // 60
        mix = (minute * 2654435761 + hash_symbol(symbol)) & 0xFFFFFFFF
        depth = 12 if phase == "regular" else 4
        bid_size = 100 * (1 + (mix >> 3) % depth)
        ask_size = 100 * (1 + (mix >> 11) % depth)
        return SimQuote(round(bid, 2), round(ask, 2), bid_size, ask_size, quote_time)

    def _last_session(self, t: datetime) -> date:
        day = t.astimezone(EXCHANGE_TZ).date()
        local = t.astimezone(EXCHANGE_TZ)
        if self.calendar.is_session(day) and local.time() >= time(4, 0):
            return day
        return self.calendar.previous_session(day)

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
        return self._aggregate_day(symbol, session, _epoch(until))

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
        return MinuteBar(midnight_et_utc(session), *_aggregate_range(day, lo, hi))

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
        self._shocks.setdefault(symbol, []).append(Shock(_epoch(at), factor, reason))
        self._shocks[symbol].sort(key=lambda s: s.at_epoch)
        self.revision += 1
        self._forget_from(symbol, at)

    def shock(self, symbols: list[str] | str, pct: float, at: datetime) -> None:
        """Multiply every price of ``symbols`` (or ``"*"``) by ``1 + pct/100`` from ``at`` on."""
        factor = _factor(pct)
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
        factor = _factor(pct)
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


def _factor(pct: float) -> float:
    value = float(pct)
    if not math.isfinite(value) or value <= -100.0:
        raise ValueError(f"pct must be a finite percentage above -100, got {pct!r}")
    return 1.0 + value / 100.0


def hash_symbol(symbol: str) -> int:
    """A stable (process-independent) 32-bit hash of a symbol."""
    return zlib.crc32(symbol.encode("utf-8"))


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
