"""The simulated market's data: per-(symbol, session) minute bars read lazily from a
:class:`simulator.bars.MarketSource` into a bounded LRU cache with shocks applied, symbol
profiles, and the answers a daily-row source gives without expanding minute bars (the fast
paths). :class:`MarketStore` holds all of the market's state; :class:`simulator.market_prices.MarketPrices`
and :class:`simulator.market.Market` build on it."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from datetime import date, datetime

import numpy as np

from core.clock import EXCHANGE_TZ, Clock
from market.trading_calendar import TradingCalendar
from simulator.bars import DailySummary, DayArrays, MarketSource, MinuteBar, SimQuote, SymbolProfile
from simulator.market_arrays import UNKNOWN, Shock, apply_shocks, to_epoch

LOOKBACK_SESSIONS = 10
DEFAULT_CACHE_DAYS = 384


class MarketStore:
    """Minute bars of ``source``'s symbols (cached, shocks applied) and their fast paths."""

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
        return apply_shocks(day, self._shocks.get(symbol, ()))

    def _peek(self, symbol: str, session_date: date) -> DayArrays | None:
        """Like :meth:`minute_arrays` but without disturbing the LRU (for long scans)."""
        cached = self._cache.get((symbol, session_date), False)
        if cached is not False:
            return cached  # type: ignore[return-value]
        return self._load(symbol, session_date)

    def expanded_day(self, symbol: str, session_date: date) -> DayArrays | None:
        """The bars of ``symbol`` on ``session_date`` (shocks applied) when they are the
        expansion of a daily row, else None (recorded minute bars, a synthetic market).

        The fill engine reads it to fill a short's protective stop before its target on a
        daily bar reaching both (:mod:`simulator.adverse_first`). Not a fast path: the same
        answer whether ``fast_paths`` is on or off."""
        summary = getattr(self._source, "daily_summary", None)
        if symbol not in self._known or summary is None or summary(symbol, session_date) is None:
            return None
        return self.minute_arrays(symbol, session_date)

    def trading_days(self, start: date, end: date) -> list[date]:
        """Sessions in ``start..end`` (inclusive) for which the market has data."""
        return self._source.sessions(start, end)

    def bar_at(self, symbol: str, minute_start: datetime) -> MinuteBar | None:
        """The bar starting at ``minute_start`` (any second within the minute), or None."""
        day = self._day_of(symbol, minute_start)
        if day is None:
            return None
        epoch = int(to_epoch(minute_start)) // 60 * 60
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
        epoch = int(to_epoch(minute_start)) // 60 * 60
        return summary.c if epoch == summary.end - 60 else None

    def _known_price(self, symbol: str, t: datetime, epoch: float) -> float | None | object:
        """:meth:`price_at` without expanding minute bars, or ``UNKNOWN`` when that needs them.

        Known: at or after the close of a session expanded from a daily row (until the next
        session's first bar) the last trade is the last bar's close, the row's close; in the
        first minute of such a session it is the first bar's open, the row's open; in any
        later minute, that minute's bar's open, from the expansion's price path alone
        (:meth:`CsvSource.minute_path`, without highs, lows and volumes). The sessions are
        visited as :meth:`_last_trade` visits them.
        """
        found = self._expanded_session(symbol, t, epoch)
        if found is None or found is UNKNOWN:
            return found
        session, summary = found  # type: ignore[misc]
        return self._path_price(symbol, session, summary, epoch)

    def _expanded_session(self, symbol: str, t: datetime, epoch: float) -> tuple[date, DailySummary] | None | object:
        """The session whose bars hold the last trade at ``t``, with its daily row's summary,
        when those bars are an unshocked expansion of a daily row; None when no session has
        bars; ``UNKNOWN`` when only the minute bars can tell. The sessions are visited as
        :meth:`_last_trade` visits them."""
        if not self.fast_paths or not self._has_summaries or self._shocks.get(symbol):
            return UNKNOWN
        source = self._source
        for session in self._candidate_sessions(t):
            summary = source.daily_summary(symbol, session)  # type: ignore[attr-defined]
            if summary is None:
                if source.has_day(symbol, session):  # type: ignore[attr-defined]
                    return UNKNOWN  # minute bars: read them
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
            return UNKNOWN
        # within bar k (which starts at start + 60 k) the last trade is its open, path[k]
        return round(float(path[int((epoch - summary.start) // 60)]), 4)

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
