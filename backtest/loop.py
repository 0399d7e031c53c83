"""The daemon's own loop over replayed history: :class:`BacktestLoop` is
:class:`engine.trading_system.TradingSystem` with market history read from the replay and the
daily-data shortcuts (session fast-forward, idle safety cycles) that provably change nothing.
The shortcuts' decisions and booking are :class:`backtest.fast_forward_steps.FastForwardMixin`,
which the loop inherits. The run around it (assembly, sessions, results) is
:mod:`backtest.runner`; orders, fills and positions come from the simulator's events
(:mod:`backtest.event_feed`), as live.

What it still overrides, and why: ``trader_alerts`` (no fill or loss alerts from a replay);
``_load_history`` and ``refresh_market_data`` (history from the replay, no request; none in
the safety cycle); ``entry_candidates`` (the prefilter's masks); ``remember_last_cycle`` and
``shutdown`` (the last cycle journaled once, at the end); ``run_cycle`` (the progress
callback). The safety cycle before the close is the live ``run_cycle`` without market data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import AbstractSet, Any

import numpy as np
import structlog

from backtest import prefilter
from backtest.data import DailyHistory, midnight
from backtest.fast_forward_steps import FastForwardMixin, _at  # _at: also backtest.runner's
from backtest.sim_broker import InProcessBroker
from engine.trading_system import BENCHMARK, TradingSystem, _History
from market import indicators
from market.market_data import BarSeries, MarketData
from market_status_manager import MarketStatus

log = structlog.get_logger(__name__)

#: Indicator states computed ahead per pass (daily data): at most this many sessions, and
#: about this many symbol-sessions (bounds the pass's temporary matrices to ~10 MB).
PRIME_SESSIONS = 250
PRIME_HISTORIES = 1500


# -- the loop, with history from the replay ----------------------------------------------------


class BacktestLoop(FastForwardMixin, TradingSystem):
    """:class:`TradingSystem` reading market history from the replayed bars.

    Only market data differs from the live loop (see the module docstring); every decision,
    order and safety step is the inherited code. Adds :meth:`safety_cycle` (the live cycle
    without market data and new decisions) for the daily schedule.
    """

    trader_alerts = False  # no fill/loss/outage alerts from a replay (engine/alert_rules.py)

    def __init__(self, *args: Any, history: dict[str, DailyHistory], bar_mode: str,
                 on_cycle: Callable[[], None] | None = None, sessions: Sequence[date] = (),
                 fast_forward: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.replay = history
        self.bar_mode = bar_mode
        self._on_cycle = on_cycle
        self._sessions = list(sessions)
        self._session_index = {day: i for i, day in enumerate(self._sessions)}
        self._primed_until = 0  # sessions before this index have their snapshots primed
        self._snapshots_read = False
        self._last_data: dict[str, MarketData] = {}
        self._today: date | None = None
        #: Equity at the close of the last session the loop ran (what a flat book keeps).
        self.closing_equity: Decimal | None = None
        self.fast_forwarded = 0
        self.fast_forwarded_holding = 0  # of which with positions held
        self.safety_cycles_skipped = 0  # idle safety cycles of sessions that were run
        self.skipped_despite_signals = 0  # flat sessions skipped: buy signals the analyzer would reject
        self.run_sessions_seconds = 0.0  # wall time of the daily sessions run (see _drive)
        self._last_cycle: tuple[datetime, dict[str, Any]] | None = None
        self._entry_possible: np.ndarray | None = None
        self._may_buy: dict[str, np.ndarray] = {}
        self._may_sell: dict[str, np.ndarray] = {}
        self._market_data_off = False
        self._universe_set = frozenset(self.universe())
        if bar_mode == "daily":
            self._entry_possible = self._install_prefilter()
        # The simulated book, read directly to decide and make a fast-forward.
        self._sim = self.broker if isinstance(self.broker, InProcessBroker) else None
        self.fast_forward = fast_forward and self._entry_possible is not None and self._sim is not None

    # -- prefilter (daily data; the fast-forward is FastForwardMixin's) ------------------------

    def _install_prefilter(self) -> np.ndarray | None:
        """Wrap each strategy that :mod:`backtest.prefilter` knows so that it is not evaluated where
        it can only answer hold, and keep, per symbol, where any strategy may buy or sell;
        return, per session, whether any strategy may buy any symbol of the universe (None
        when some strategy has no prefilter: then no session is fast-forwarded).

        The masks are necessary conditions of each strategy's signals computed exactly from
        the bars (a superset of the bars where it signals; ``tests/test_prefilter.py``), for
        both values of the defensive flag.
        """
        wrapped: list[Any] = []
        complete = True
        may_buy: dict[str, np.ndarray] = {}
        may_sell: dict[str, np.ndarray] = {}
        for strategy in self.strategies:
            masks: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
            for symbol, history in self.replay.items():
                off = prefilter.masks_for(strategy, history, self.settings, defensive=False)
                on = prefilter.masks_for(strategy, history, self.settings, defensive=True)
                if off is None or on is None:
                    masks = {}
                    break
                masks[symbol] = (off.may_buy, off.may_sell, on.may_buy, on.may_sell)
            if not masks:
                complete = False
                wrapped.append(strategy)
                continue
            wrapped.append(_Prefiltered(strategy, masks, self))
            for symbol, (buy_off, sell_off, buy_on, sell_on) in masks.items():
                buy, sell = buy_off | buy_on, sell_off | sell_on
                may_buy[symbol] = may_buy[symbol] | buy if symbol in may_buy else buy
                may_sell[symbol] = may_sell[symbol] | sell if symbol in may_sell else sell
        self.strategies = wrapped
        if not complete:
            return None
        self._may_buy, self._may_sell = may_buy, may_sell
        entry = np.zeros(len(self._sessions), dtype=bool)
        for symbol in self.universe():
            history = self.replay.get(symbol)
            if history is None or symbol not in may_buy:
                continue
            for k, day in enumerate(self._sessions):
                i = history.index(day)
                if i is not None and may_buy[symbol][i]:
                    entry[k] = True
        return entry

    def bar_index(self, symbol: str) -> int | None:
        """Index of today's bar in ``symbol``'s replay (daily data), or None."""
        history = self.replay.get(symbol)
        return history.index(self._today) if history is not None and self._today is not None else None

    async def entry_candidates(self, data: dict[str, MarketData], busy: AbstractSet[str], now: datetime, *,
                               log_signals: bool = True) -> list[tuple[Any, MarketData]]:
        """:meth:`TradingSystem.entry_candidates` over the symbols some strategy may buy today
        (the prefilter's masks: on any other symbol every strategy can only hold or sell)."""
        today = self._today
        if self._may_buy and today is not None:
            data = {symbol: md for symbol, md in data.items() if self._may_buy_on(symbol, today)}
        return await super().entry_candidates(data, busy, now, log_signals=log_signals)

    def _lookback(self) -> timedelta:
        return timedelta(days=max(int(self.settings.strategy.lookback_days) * 2, 300))

    def _prime_snapshots(self, today: date) -> None:
        """Indicator states of the coming sessions' histories, computed ahead in one pass.

        Only a cache: :func:`market.indicators.prime_snapshots` computes exactly what the strategies'
        :func:`market.indicators.compute_snapshot` would (and a history it did not foresee is simply
        computed when asked). Each session's history is a different window of the same bars,
        so without this every session pays a pass over a year of bars per symbol. Only the
        bars some strategy may be evaluated on (its prefilter's masks) are primed. Starts once
        the strategies are seen reading snapshots (the reference SMA strategy does not), for
        the configured ``strategy.rsi_period`` (the one the built-in strategies use).
        """
        if not self._snapshots_read:
            self._snapshots_read = any(
                isinstance(value, tuple) and any(isinstance(v, indicators.IndicatorSnapshot) for v in value)
                for md in self._last_data.values() for value in md.derived.values()
            )
        position = self._session_index.get(today)
        if not self._snapshots_read or position is None or position < self._primed_until:
            return
        symbols = [s for s in self.universe() if s in self.replay]
        windows: list[BarSeries] = []
        lookback = self._lookback()
        end = min(len(self._sessions), position + PRIME_SESSIONS)
        k = position
        while k < end and (k == position or len(windows) < PRIME_HISTORIES):
            session = self._sessions[k]
            k += 1
            # What the session's open will read: see _daily_market_data.
            since = (self.calendar.open_close(session)[0] - lookback).timestamp()
            before = midnight(session)
            for symbol in symbols:
                history = self.replay[symbol]
                i = history.index(session)
                if i is None or not self._may_evaluate(symbol, i):
                    continue
                window = history.window(since, before)
                if window is not None and len(window) >= 30:
                    windows.append(window)
        indicators.prime_snapshots(windows, int(self.settings.strategy.rsi_period))
        self._primed_until = k

    def _may_evaluate(self, symbol: str, i: int) -> bool:
        """Whether some strategy may be evaluated on ``symbol``'s bar ``i`` (every bar when
        the strategies are not all prefiltered)."""
        buy = self._may_buy.get(symbol)
        if buy is None:
            return not self._may_buy
        return bool(buy[i] or self._may_sell[symbol][i])

    async def _load_history(self, symbols: list[str], status: MarketStatus) -> None:
        """Completed daily bars within the loop's look-back, from the replay (no request)."""
        now = self.clock.now()
        today = status.session
        before = midnight(today) if today is not None else now.timestamp()
        since = (now - self._lookback()).timestamp()
        bars: dict[str, BarSeries] = {}
        for symbol in symbols:
            history = self.replay.get(symbol)
            series = history.window(since, before) if history is not None else None
            if series is not None:
                bars[symbol] = series
        self._history = _History(session=today, bars=bars)

    async def refresh_market_data(self, status: MarketStatus) -> dict[str, MarketData]:
        if self._market_data_off:
            return {}  # the safety cycle before the close (see safety_cycle)
        if self.bar_mode == "intraday":
            return await super().refresh_market_data(status)
        return self._daily_market_data(status)

    def _daily_market_data(self, status: MarketStatus, *, baseline: Decimal | None = None,
                           symbols: Sequence[str] | None = None) -> dict[str, MarketData]:
        """Completed bars of earlier sessions and today's opening print (daily data);
        ``baseline``: the session's starting equity when the session is not started yet;
        ``symbols``: these of the universe only (default: all of it)."""
        symbols = self.universe() if symbols is None else symbols
        now = self.clock.now()
        today = status.session
        if today is None:
            return {}
        self._today = today
        before = midnight(today)
        since = (now - self._lookback()).timestamp()
        bench_history = self.replay.get(BENCHMARK)
        benchmark = bench_history.window(since, before) if bench_history is not None else None
        regime = self.analyzer.detect_regime(benchmark) if benchmark is not None and len(benchmark) >= 60 else None
        defensive = self._defensive_active(status, self._last_equity, benchmark, baseline=baseline)
        self._prime_snapshots(today)
        data: dict[str, MarketData] = {}
        for symbol in symbols:
            history = self.replay.get(symbol)
            if history is None:
                continue
            i = history.index(today)
            daily = history.window(since, before)
            if i is None or daily is None or len(daily) < 30:
                continue
            data[symbol] = MarketData(
                symbol=symbol, now=now, daily=daily, intraday=None, last_price=float(history.open[i]),
                bid=None, ask=None, prev_close=float(daily.close[-1]), benchmark=benchmark, regime=regime,
                defensive=defensive, news=[], last_price_at=now,  # the opening print, at the open
            )
        self.reconciler.observe_daily_bars({s: d.daily for s, d in data.items()})  # MFE/MAE
        self._last_data = data
        return data

    def remember_last_cycle(self, at: datetime, data: dict[str, Any]) -> None:
        """Kept in memory and journaled once, at shutdown: no ``status`` command reads a
        backtest's journal while it runs, and encoding every cycle's details costs time."""
        self._last_cycle = (at, data)

    async def shutdown(self) -> None:
        if self._last_cycle is not None:
            self.journal.last_cycle(*self._last_cycle)
        await super().shutdown()

    async def run_cycle(self, status: MarketStatus) -> None:
        await super().run_cycle(status)
        if self._on_cycle is not None:
            self._on_cycle()

    async def safety_cycle(self, status: MarketStatus) -> None:
        """The live cycle (:meth:`TradingSystem.run_cycle`) seeing no market data: account,
        fills, open orders and every safety check; no strategy is asked (the daily schedule
        decides at the open only), and no second copy of the cycle to keep equal to it."""
        self._market_data_off = True
        try:
            await self.run_cycle(status)
        finally:
            self._market_data_off = False


class _Prefiltered:
    """A strategy that answers hold without evaluating where its prefilter says it cannot
    signal (daily backtests): today's bar of the symbol, for the data's defensive flag.
    Anything else is the strategy's own answer; every other attribute is the strategy's."""

    def __init__(self, strategy: Any, masks: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
                 loop: BacktestLoop) -> None:
        self.strategy = strategy
        self.name = strategy.name
        self._masks = masks
        self._loop = loop

    def __getattr__(self, item: str) -> Any:
        return getattr(self.strategy, item)

    def __repr__(self) -> str:
        return f"Prefiltered({self.strategy!r})"

    async def evaluate_opportunity(self, symbol: str, market_data: MarketData) -> Any:
        masks = self._masks.get(symbol)
        i = self._loop.bar_index(symbol)
        if masks is not None and i is not None:
            buy, sell = (masks[2], masks[3]) if market_data.defensive else (masks[0], masks[1])
            if not (buy[i] or sell[i]):
                return self.strategy.hold(symbol, "prefilter: no signal is possible on this bar")
        return await self.strategy.evaluate_opportunity(symbol, market_data)

