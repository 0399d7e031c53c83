"""The daemon's own loop over replayed history: :class:`BacktestLoop` is
:class:`engine.trading_system.TradingSystem` with market history read from the replay and the
daily-data shortcuts (session fast-forward, idle safety cycles) that provably change nothing.
The run around it (assembly, sessions, results) is :mod:`backtest.runner`; orders, fills and
positions come from the simulator's events (:mod:`backtest.event_feed`), as live.

What it still overrides, and why: ``trader_alerts`` (no fill or loss alerts from a replay);
``_load_history`` and ``refresh_market_data`` (history from the replay, no request; none in
the safety cycle); ``entry_candidates`` (the prefilter's masks); ``remember_last_cycle`` and
``shutdown`` (the last cycle journaled once, at the end); ``run_cycle`` (the progress
callback). The safety cycle before the close is the live ``run_cycle`` without market data.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import AbstractSet, Any, Literal

import numpy as np
import structlog

from backtest import prefilter
from backtest.data import DailyHistory, midnight
from backtest.sim_broker import BookState, InProcessBroker
from engine.portfolio import TradingState, loss_fraction
from engine.trading_system import BENCHMARK, TradingSystem, _History
from market import indicators
from market.market_data import BarSeries, MarketData
from market_status_manager import MarketStatus
from order_executor import flatten_orders, protected_quantity
from simulator.core import SimulatorCore

log = structlog.get_logger(__name__)

#: Indicator states computed ahead per pass (daily data): at most this many sessions, and
#: about this many symbol-sessions (bounds the pass's temporary matrices to ~10 MB).
PRIME_SESSIONS = 250
PRIME_HISTORIES = 1500
#: Safety margin of the fast-forward's threshold bounds (fractions of equity or cost).
_MARGIN = Decimal("0.0001")


# -- the loop, with history from the replay ----------------------------------------------------


class BacktestLoop(TradingSystem):
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

    # -- prefilter and fast-forward (daily data) ------------------------------------------

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

    def quiet_kind(self, session: date, book: BookState) -> Literal["flat", "flat_candidates", "holding"] | None:
        """Whether the loop provably does nothing through ``session`` but move the clock and
        mark the book: ``"flat"``, ``"holding"``, ``"flat_candidates"`` (flat, but some
        strategy may buy: :meth:`fast_forward_flat` asks the strategies), or None (run it).

        Both need: fast-forward on, every strategy prefiltered, the last close's equity known,
        trading ACTIVE with nothing latched or pending, every fill in the book recorded by the
        loop, and no strategy able to buy a symbol not held that session.

        ``"flat"``: no position, no open or tracked order. The session's cycles would find
        equity at its baseline (no safety transition), nothing to exit or protect.

        ``"holding"`` (long positions): the book is what the loop saw last (same positions,
        same open orders), every position is fully protected by working stops, no strategy may
        sell a held symbol, no mean-reversion position reaches its maximum holding time, the
        book cannot change before the close (``book_can_change``: no resting order is reached
        within the session's range), and even at every held symbol's low of the session (and
        the day's high equity at its highs) neither the circuit breaker, nor the daily
        drawdown limit, nor an emergency exit threshold is reached. The gap check at the open
        is made by :meth:`fast_forward_holding` itself.
        """
        if not self.fast_forward or self._entry_possible is None or self.closing_equity is None:
            return None
        if self.safety.state is not TradingState.ACTIVE or self.safety.latched or self._pending_alerts:
            return None
        if not book.fills_recorded(self._last_fill_at):
            return None
        if not book.positions:
            k = self._session_index.get(session)
            if k is None or self.executor.tracked or book.open_order_ids:
                return None
            return "flat_candidates" if self._entry_possible[k] else "flat"
        return "holding" if self._quiet_holding(session, book) else None

    def _quiet_holding(self, session: date, book: BookState, *, decisions: bool = True) -> bool:
        """:meth:`quiet_kind`'s "holding" test; ``decisions=False``: the test for the rest of a
        session whose opening cycle has run (:meth:`safety_cycle_is_idle`): no strategy is asked
        again that day and the closing step runs anyway, so neither the strategies' masks, nor
        the maximum holding time, nor the resting orders after the test matter; the safety
        thresholds are measured from the session's own baselines."""
        assert self._sim is not None  # fast-forward is on only with the in-process broker
        events = self.trade_events.book  # what the loop's last reading saw (events are applied at readings)
        if not events.ready:
            return False
        positions, open_orders = list(events.positions.values()), events.open_orders
        seen_positions = {p.symbol: p.qty for p in positions}
        seen_orders = frozenset(o.id for o in flatten_orders(open_orders) if o.is_open)
        if seen_positions != book.positions or seen_orders != book.open_order_ids:
            return False
        if any(t.status == "in_flight" or t.broker_order_id not in book.open_order_ids
               for t in self.executor.tracked.values()):
            return False
        if decisions and self._may_buy_other(session, book):
            return False
        opened, closed = self.calendar.open_close(session)
        emergency = Decimal(str(self.settings.risk.emergency_exit_loss))
        max_hold = int(self.settings.mean_reversion.max_hold_days)
        low_equity = high_equity = book.cash
        for position in positions:
            symbol, qty = position.symbol, position.qty
            if qty <= 0 or protected_quantity(position, open_orders) < qty:
                return False
            if decisions:
                history = self.replay.get(symbol)
                i = history.index(session) if history is not None else None
                if i is None or self._may_sell[symbol][i]:
                    return False
                lots = self.ledger.open_lots(symbol)
                if {lot.strategy for lot in lots} - {None} == {"mean_reversion"}:
                    held_days = self.ledger.holding_sessions(symbol, opened, self.calendar)
                    if held_days is not None and held_days > max_hold:
                        return False
            bounds = self._sim.session_range(symbol, session)
            if bounds is None or not (math.isfinite(bounds[0]) and math.isfinite(bounds[1])):
                return False
            low, high = Decimal(repr(bounds[0])), Decimal(repr(bounds[1]))
            if low <= 0 or position.avg_entry_price <= 0:
                return False
            if (position.avg_entry_price - low) / position.avg_entry_price >= emergency - _MARGIN:
                return False
            low_equity += qty * low
            high_equity += qty * high
        if decisions:
            assert self.closing_equity is not None
            breaker_baseline = day_high = self.closing_equity  # the session would start there
        else:
            breaker_baseline, day_high = self.safety.breaker_baseline, self.safety.day_high_equity
            if breaker_baseline is None or day_high is None:
                return False
        if not self._far_from_limits(breaker_baseline, max(day_high, high_equity), low_equity):
            return False
        return not decisions or not self._sim.book_can_change(closed)

    def _may_buy_other(self, session: date, book: BookState) -> bool:
        """Whether some strategy may buy, on ``session``, a symbol of the universe not held."""
        return any(symbol not in book.positions and symbol in self._universe_set and self._may_buy_on(symbol, session)
                   for symbol in self.replay)

    def _far_from_limits(self, breaker_baseline: Decimal, day_high: Decimal, low_equity: Decimal) -> bool:
        """Whether ``low_equity`` (a lower bound of the equity the cycles would see) stays
        clear of the circuit breaker (from ``breaker_baseline``) and the daily drawdown limit
        (from ``day_high``, which bounds the session's start and high from above)."""
        risk = self.settings.risk
        breaker, daily_limit = Decimal(str(risk.circuit_breaker_loss)), Decimal(str(risk.max_daily_drawdown))
        if low_equity <= 0 or loss_fraction(breaker_baseline, low_equity) >= breaker - _MARGIN:
            return False
        return loss_fraction(day_high, low_equity) < daily_limit - _MARGIN

    def safety_cycle_is_idle(self, session: date) -> bool:
        """Whether the safety cycle a minute before ``session``'s close would only see the
        equity: fast-forward on, trading ACTIVE with nothing latched or pending, every fill
        recorded by the loop, and either a flat book without orders whose equity is clear of
        the limits, or the book the opening cycle left (:meth:`_quiet_holding` with
        ``decisions=False``: positions fully protected, far from every safety threshold even
        at the session's lows). Then :meth:`skip_safety_cycle` books that equity instead."""
        if not self.fast_forward or self._sim is None or self.closing_equity is None:
            return False
        if self.safety.state is not TradingState.ACTIVE or self.safety.latched or self._pending_alerts:
            return False
        if not self.market_status.status_at(self.clock.now()).is_regular:
            return False
        book = self._sim.book()
        if not book.fills_recorded(self._last_fill_at):
            return False
        if book.positions:
            return self._quiet_holding(session, book, decisions=False)
        if self.executor.tracked or book.open_order_ids:
            return False
        baseline, day_high = self.safety.breaker_baseline, self.safety.day_high_equity
        return baseline is not None and day_high is not None and self._far_from_limits(baseline, day_high, book.cash)

    def skip_safety_cycle(self) -> None:
        """Book what an idle safety cycle books (the equity it sees: last, peak, drawdown)."""
        self._observe_equity(self._account_equity())
        self.safety_cycles_skipped += 1

    async def fast_forward_flat(self, session: date, core: SimulatorCore,
                                curve: list[tuple[datetime, Decimal]]) -> bool:
        """Move the book through a ``"flat_candidates"`` session when it would enter nothing;
        the flat book's equity is its closing point.

        First, at the open, the loop's own market data (as the started session will see it:
        its baseline is the flat book's equity) for the symbols some strategy may buy, the
        strategies themselves on those the loop would ask (:meth:`TradingSystem.entry_candidates`),
        and the AI analyzer on each one's strongest buy (:meth:`AIAnalyzer.would_enter`, after
        the loop's news prefetch): if none would become an intent, the session would change
        nothing (a flat book keeps its equity, and there is nothing to exit, protect or enter)
        and it is skipped, with nothing logged of its signals or the analyzer's rejections
        (``--no-fast-forward`` logs every session). Otherwise returns False at the open,
        nothing started, and the caller runs the session. (A ``"flat"`` session, where no
        strategy may buy, is :meth:`fast_forward_flat_run`'s.)"""
        opened, closed = self.calendar.open_close(session)
        if not await self._enters_nothing(session, core, opened):
            return False
        await _at(core, closed)
        assert self.closing_equity is not None
        self._book_skipped(closed, self.closing_equity, curve)
        return True

    async def fast_forward_flat_run(self, first: int, core: SimulatorCore, curve: list[tuple[datetime, Decimal]]) -> int:
        """Move the book through the ``"flat"`` session at index ``first`` (closes recorded,
        nothing to match) and every following one where no strategy may buy: a flat
        book with nothing working stays as it is until a strategy may buy, so the book is moved
        to the last of those closes at once. Returns how many sessions it moved through."""
        assert self._entry_possible is not None and self.closing_equity is not None
        last = first
        while last + 1 < len(self._sessions) and not self._entry_possible[last + 1]:
            last += 1
        await _at(core, self.calendar.open_close(self._sessions[last])[1])
        for session in self._sessions[first:last + 1]:
            self._book_skipped(self.calendar.open_close(session)[1], self.closing_equity, curve)
        return last - first + 1

    async def _enters_nothing(self, session: date, core: SimulatorCore, opened: datetime) -> bool:
        await _at(core, opened)
        now = self.clock.now()
        status = self.market_status.status_at(now)
        if not status.is_regular:
            return False
        if self.protections.global_lock(now) is not None:
            return True  # the loop enters nothing under a global lock
        symbols = [symbol for symbol in self.universe() if self._may_buy_on(symbol, session)]
        # Not started yet: the session would start from the flat book's equity.
        data = self._daily_market_data(status, baseline=self.closing_equity, symbols=symbols)
        candidates = await self.entry_candidates(data, frozenset(), now, log_signals=False)
        if candidates and self.news is not None:
            await self.news.prefetch(signal.symbol for signal, _ in candidates)  # as the cycle would
        for signal, md in candidates:
            if await self.analyzer.would_enter(signal, md):
                return False
        self.skipped_despite_signals += bool(candidates)
        return True

    def _may_buy_on(self, symbol: str, session: date) -> bool:
        """Whether some strategy may buy ``symbol`` on ``session`` (its prefilter masks; True
        for a symbol they do not cover; False without a bar that session)."""
        history = self.replay.get(symbol)
        i = history.index(session) if history is not None else None
        if i is None:
            return False
        buy = self._may_buy.get(symbol)
        return buy is None or bool(buy[i])

    def _book_skipped(self, closed: datetime, equity: Decimal, curve: list[tuple[datetime, Decimal]],
                      *, holding: bool = False) -> None:
        """A fast-forwarded session's close: its equity point, the counters."""
        curve.append((closed, equity))
        self.closing_equity = equity
        self.summary.end_equity = equity
        self.summary.sessions += 1
        self.fast_forwarded += 1
        self.fast_forwarded_holding += holding

    async def fast_forward_holding(self, session: date, core: SimulatorCore, book: BookState,
                                   curve: list[tuple[datetime, Decimal]]) -> bool:
        """Move through a ``"holding"`` session (:meth:`quiet_kind`) doing what the loop's
        cycles would leave behind: the gap check at the open (the loop's gap manager on the
        latest trades; a gap that alerts, or a missing price, makes this return False at the
        open, with nothing changed, and the caller runs the session), the equity the loop
        would see at the open and one minute before the close (peak equity, drawdown), the
        gap manager's closing snapshot, the closing equity."""
        assert self._sim is not None
        opened, closed = self.calendar.open_close(session)
        await _at(core, opened)
        if self.gap.close_date is None:
            return False
        held = book.positions
        prices: dict[str, Decimal] = {}
        for symbol in held:
            price = self._sim.last_trade_price(symbol)
            if price is not None and price > 0:
                prices[symbol] = Decimal(str(price))  # as monitor_gap_risk reads the latest trade
        equity = self._account_equity()
        report = self.gap.assess(prices, held, "regular", equity=equity, log_findings=False)
        if report.alerts or report.defensive_required or report.missing:
            return False
        self._gap_assessed.add((session, "regular"))
        self._observe_equity(equity)
        await _at(core, closed - timedelta(minutes=1))
        self._observe_equity(self._account_equity())
        await _at(core, closed)
        positions = self._sim.positions_now()
        snapshot = self.gap.record_close(
            session,
            {p["symbol"]: Decimal(p["current_price"]) for p in positions if p.get("current_price") is not None},
            {p["symbol"]: Decimal(p["qty"]) for p in positions})
        self.journal.set_state("closing_snapshot", snapshot)
        self._book_skipped(closed, self._account_equity(), curve, holding=True)
        return True

    def _account_equity(self) -> Decimal:
        assert self._sim is not None
        return self._sim.equity_now()

    async def closing_account_equity(self) -> Decimal:
        """The account's equity now, for the session's closing point: read from the in-process
        book (exactly what ``GET /v2/account`` reports), or asked of the broker."""
        if self._sim is not None:
            return self._account_equity()
        return (await self.broker.get_account()).equity

    def _observe_equity(self, equity: Decimal) -> None:
        """Book ``equity`` as a cycle seeing it books it (last equity, peak, drawdown)."""
        self._last_equity = equity
        self._peak_equity = equity if self._peak_equity is None else max(self._peak_equity, equity)
        if self._peak_equity:
            self.summary.max_drawdown = max(self.summary.max_drawdown,
                                            float((self._peak_equity - equity) / self._peak_equity))
        self.summary.end_equity = equity

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




async def _at(core: SimulatorCore, moment: datetime) -> None:
    """Move simulated time to ``moment`` (never backwards) and let the book catch up."""
    if moment > core.clock.now():
        core.clock.set_time(moment)
    core.sync()
    await asyncio.sleep(0)
