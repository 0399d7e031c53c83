"""The backtest's daily shortcuts that provably change nothing, as a part of
:class:`backtest.loop.BacktestLoop` (which inherits :class:`FastForwardMixin` first): whether a
session can be skipped (:meth:`FastForwardMixin.quiet_kind`) and skipping it (the flat and
holding fast-forwards, booking the skipped closes), whether the safety cycle before the close
is idle and booking what it would have seen, and the equity read from the in-process book.

Split from ``backtest/loop.py`` by responsibility (issue 17, item 2): the loop keeps market
data, the prefilter and its overrides of the live loop; the decisions here read its state
(declared in :class:`LoopState`, set by ``BacktestLoop.__init__`` and ``TradingSystem``).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Awaitable, Literal

import numpy as np

from backtest.data import DailyHistory
from backtest.sim_broker import BookState, InProcessBroker
from engine.portfolio import TradingState, loss_fraction
from market.market_data import MarketData
from order_executor import flatten_orders, protected_quantity
from simulator.core import SimulatorCore

#: Safety margin of the fast-forward's threshold bounds (fractions of equity or cost).
_MARGIN = Decimal("0.0001")


class LoopState:
    """The loop's state the fast-forward reads and books, declared for the reader (the pattern
    of ``execution.state.ExecutorState``): set by ``BacktestLoop.__init__`` and the inherited
    ``TradingSystem``; holds nothing itself."""

    # Set by BacktestLoop.__init__.
    replay: dict[str, DailyHistory]
    fast_forward: bool
    closing_equity: Decimal | None
    fast_forwarded: int
    fast_forwarded_holding: int
    safety_cycles_skipped: int
    skipped_despite_signals: int
    _sessions: list[date]
    _session_index: dict[date, int]
    _entry_possible: np.ndarray | None
    _may_buy: dict[str, np.ndarray]
    _may_sell: dict[str, np.ndarray]
    _universe_set: frozenset[str]
    _sim: InProcessBroker | None
    _daily_market_data: Callable[..., dict[str, MarketData]]
    # The live loop's (engine.trading_system.TradingSystem).
    settings: Any
    safety: Any
    executor: Any
    trade_events: Any
    calendar: Any
    ledger: Any
    gap: Any
    journal: Any
    summary: Any
    clock: Any
    market_status: Any
    protections: Any
    news: Any
    analyzer: Any
    broker: Any
    _pending_alerts: list[Any]
    _last_fill_at: datetime | None
    _gap_assessed: set[tuple[date, str]]
    _last_equity: Decimal | None
    _peak_equity: Decimal | None
    universe: Callable[[], list[str]]
    entry_candidates: Callable[..., Awaitable[list[tuple[Any, MarketData]]]]


class FastForwardMixin(LoopState):
    """Session fast-forward and idle safety cycles of :class:`backtest.loop.BacktestLoop`
    (which inherits it first): the decisions, the skipping, the booking of what was skipped."""

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


async def _at(core: SimulatorCore, moment: datetime) -> None:
    """Move simulated time to ``moment`` (never backwards) and let the book catch up."""
    if moment > core.clock.now():
        core.clock.set_time(moment)
    core.sync()
    await asyncio.sleep(0)
