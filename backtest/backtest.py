"""Backtests: the daemon's own trading loop over history, in-process, as fast as possible.

``python main.py backtest --data DIR [--symbols A,B] [--start D] [--end D] [--profile P]
[--strategies S1,S2] [--report OUTDIR]`` replays CSV bars through the simulator core (the
same matching engine the ``sim`` mode serves over HTTP) and trades them with the daemon's
own loop: :class:`engine.trading_system.TradingSystem` with its strategies, AI analyzer, risk
manager, PDT manager (regime by date), safety state machine (circuit breaker, daily drawdown),
protections, gap-risk monitor and order executor, talking to :class:`backtest.sim_broker.InProcessBroker`
(the HTTP gateway's parsing and error mapping, no sockets). The clock is the simulator's at
maximum speed: nothing waits on wall time.

**What the backtest changes, and only this:** market *history* is read from the replayed
bars instead of being requested through the data API (``TradingSystem._load_history`` and,
for daily bars, ``refresh_market_data`` are overridden). The bars are the same numbers the
data API would serve; asking it for a year of bars every session would only be slower.
Alerts go to the in-memory journal only (never to email, webhook or SMS), and the journal is
an in-memory SQLite database.

Bar conventions (no look-ahead; a test proves that changing bars after a day changes no
order placed up to that day):

* **Daily data** (the default). Each session runs three moments of the loop:

  1. the open (09:30:00 New York): a full cycle. Decisions read the *completed* daily bars of
     earlier sessions (within the loop's usual look-back) and today's opening print as the
     last price; no bar of today is complete yet, so nothing of today beyond the open is
     known. This is the decision "at the close of the previous session", taken when orders
     can execute: bracket entries are market orders and fill at once against the opening
     quote (the open +/- half the simulated spread + ``slippage_bps``); strategy exits
     (sell signals, maximum holding time) go out the same way through the executor's
     verified emergency exit. The protective legs then work along each minute's
     open-high-low-close path (the engine's rule for daily bars expanded to minutes).
  2. one minute before the close: a safety cycle (account, fills, circuit breaker, daily
     drawdown, emergency exits, position protection; no new decisions), so a day that goes
     wrong is acted on before the close, as the live loop would.
  3. the close: the session ends (closing snapshot for gap risk) and the closing equity is
     recorded: the equity curve has one point per session, at the close.

  Sessions, and safety cycles, where the loop provably does nothing but see the equity are
  not run, only booked (:meth:`BacktestLoop.quiet_kind`, :meth:`BacktestLoop.safety_cycle_is_idle`;
  ``fast_forward=False`` runs every one).

  The scanner's spread check is not applied to daily data (there is no recorded quote).

* **Intraday data** (minute bars recorded for every traded symbol on every session of the
  range; chosen automatically, or forced with ``bar_mode``): the live loop itself runs, one
  cycle every ``trading.cycle_interval_seconds`` of simulated time from the pre-market to the
  end of the after-hours, with snapshots from the simulator's data API as in ``sim`` mode.

Costs: commission per :class:`backtest.sim_broker.CommissionModel` (default zero, as at Alpaca);
slippage ``slippage_bps`` (default 1 bp) on market and stop fills plus the simulated spread.
Closed trades in the report are net of commission (each execution's fee is attributed to
the trade it opened or closed, pro rata by quantity). Positions still open at the end are
valued in the final equity and are not listed as trades.

Walk-forward (:func:`walk_forward`): for each window the AI confidence model is trained on the
train dates only (window-restricted copies of the daily files), then the test dates are
backtested with that model; the report shows each window's out-of-sample metrics and the
model's calibration on the test dates, and the combined out-of-sample equity curve.

Output: ``report.html`` and ``summary.json`` (:func:`analytics.reporting.write_report`) and a short text
summary on stdout. A bad data file stops the run with one line naming the file, the line and
the problem (exit code 2).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import csv
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from datetime import time as dtime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import AbstractSet, Any, Literal, TextIO

import numpy as np
import structlog

from ai import ai_model
from market import indicators
from backtest import prefilter
from ai_analyzer import AIAnalyzer
from alerter import Alerter
from core.clock import EXCHANGE_TZ, to_exchange_time
from core.errors import ConfigError
from journal.journal import Journal
from market.market_data import BarSeries, MarketData
from market_status_manager import MarketStatus
from analytics.performance import PerformanceReport, compute_performance, usable_curve, usable_trades
from ai.sentiment import NewsSentiment, load_lexicon
from order_executor import flatten_orders, protected_quantity
from backtest.sim_broker import BookState, CommissionLedger, CommissionModel, InProcessBroker, attach_commission
from simulator.core import SimulatorCore
from simulator.csv_source import CsvDataError
from market.trading_calendar import FIRST_DATE, LAST_DATE, TradingCalendar
from engine.portfolio import TradingState, loss_fraction
from engine.trading_system import BENCHMARK, TradingSystem, _History

log = structlog.get_logger(__name__)

UTC = timezone.utc
ZERO = Decimal(0)
EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2
#: Sessions of history kept before the first backtested session when no start is given.
WARMUP_SESSIONS = 250
#: Where the loop starts: the first session's pre-market.
PRE_MARKET = dtime(4, 0)
#: How often (wall seconds) the terminal progress line is redrawn.
PROGRESS_INTERVAL = 0.1
#: Indicator states computed ahead per pass (daily data): at most this many sessions, and
#: about this many symbol-sessions (bounds the pass's temporary matrices to ~10 MB).
PRIME_SESSIONS = 250
PRIME_HISTORIES = 1500

BarMode = Literal["auto", "daily", "intraday"]
#: Safety margin of the fast-forward's threshold bounds (fractions of equity or cost).
_MARGIN = Decimal("0.0001")


class BacktestError(ValueError):
    """A backtest that cannot run as asked (bad range, no data, bad option): one clear line."""


# -- replayed history --------------------------------------------------------------------------


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


def _midnight(day: date) -> int:
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
        ts = np.array([_midnight(d) for d in days], dtype=np.int64)
        out[symbol] = DailyHistory(symbol, tuple(days), ts, *(array[:, k].copy() for k in range(5)),
                                   minute_days=minute_days)
    return out


# -- options and results -----------------------------------------------------------------------


@dataclass(frozen=True)
class BacktestOptions:
    """What to backtest. Dates are sessions (inclusive); None: from the first session with
    :data:`WARMUP_SESSIONS` sessions of history before it / to the last session of the data."""

    data_dir: Path
    symbols: tuple[str, ...]
    start: date | None = None
    end: date | None = None
    strategies: tuple[str, ...] | None = None
    cash: Decimal = Decimal(100000)
    commission: CommissionModel = field(default_factory=CommissionModel)
    slippage_bps: float = 1.0
    seed: int = 42
    bar_mode: BarMode = "auto"
    progress: bool = True
    #: Skip the loop on sessions where it provably does nothing (see :class:`BacktestLoop`).
    fast_forward: bool = True

    def __post_init__(self) -> None:
        if not self.symbols:
            raise BacktestError("no symbols to backtest: give --symbols A,B or set scanning.symbols")
        if self.start is not None and self.end is not None and self.end < self.start:
            raise BacktestError(f"--end {self.end} is before --start {self.start}")
        if not self.slippage_bps >= 0:
            raise BacktestError(f"slippage must be >= 0 basis points, got {self.slippage_bps}")
        if self.cash <= 0:
            raise BacktestError(f"starting cash must be positive, got {self.cash}")
        if self.bar_mode not in ("auto", "daily", "intraday"):
            raise BacktestError(f"bar mode must be auto, daily or intraday, got {self.bar_mode!r}")


@dataclass
class BacktestResult:
    """Everything a run produced; :attr:`analytics.performance` is :func:`analytics.performance.compute_performance`
    over :attr:`equity_curve` and :attr:`trades`."""

    options: BacktestOptions
    bar_mode: Literal["daily", "intraday"]
    sessions: list[date]
    equity_curve: list[tuple[datetime, Decimal]]
    trades: list[dict[str, Any]]
    orders: list[dict[str, Any]]
    intents: list[dict[str, Any]]
    state_changes: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    performance: PerformanceReport
    benchmark: list[tuple[datetime, Decimal]]
    commission_paid: Decimal
    bars: int
    requests: int
    elapsed_seconds: float
    loop_seconds: float
    strategies: list[str]
    model: dict[str, Any]
    final_state: str
    stopped_early: str | None = None
    #: Sessions on which the loop provably had nothing to do and was not run (daily data),
    #: and how many of them held positions.
    fast_forwarded: int = 0
    fast_forwarded_holding: int = 0
    #: Safety cycles a minute before the close skipped in sessions that were run (idle).
    safety_cycles_skipped: int = 0
    #: Wall seconds of the loop spent in the sessions that were run (not fast-forwarded).
    run_sessions_seconds: float = 0.0
    #: CPU seconds of this process in the loop (data loading excluded), beside its wall time.
    loop_cpu_seconds: float = 0.0

    @property
    def bars_per_second(self) -> float:
        """Symbol-sessions per wall second through the loop (data loading excluded)."""
        return self.bars / self.loop_seconds if self.loop_seconds > 0 else math.inf

    def meta(self) -> dict[str, Any]:
        """The run's description for the report header."""
        o = self.options
        return {
            "period": f"{self.sessions[0].isoformat()} .. {self.sessions[-1].isoformat()}" if self.sessions else "",
            "sessions": len(self.sessions),
            "bars": f"{self.bar_mode} ({self.bars:,} {'symbol-sessions' if self.bar_mode == 'daily' else 'minute bars'})",
            "symbols": ", ".join(o.symbols),
            "strategies": ", ".join(self.strategies),
            "ai_model": self.model.get("description", "transparent scoring (no model)"),
            "starting_cash": str(o.cash),
            "commission": o.commission.describe(),
            "commission_paid": str(self.commission_paid),
            "slippage": f"{o.slippage_bps:g} bps on market and stop fills, plus the simulated spread",
            "fills": ("decisions at the open on completed daily bars, orders at the opening quote, "
                      "protective legs along each minute's OHLC path" if self.bar_mode == "daily"
                      else "the live loop every trading.cycle_interval_seconds on recorded minute bars"),
            "final_trading_state": self.final_state,
            "stopped_early": self.stopped_early or "no",
            "orders_submitted": len(self.orders),
            "sessions_fast_forwarded": f"{self.fast_forwarded} ({self.fast_forwarded_holding} holding positions)",
            "idle_safety_cycles_skipped": self.safety_cycles_skipped,
            "data": str(o.data_dir),
        }


# -- the loop, with history from the replay ----------------------------------------------------


class BacktestLoop(TradingSystem):
    """:class:`TradingSystem` reading market history from the replayed bars.

    Only market data differs from the live loop (see the module docstring); every decision,
    order and safety step is the inherited code. Adds :meth:`safety_cycle` (the live cycle
    without market data and new decisions) for the daily schedule.
    """

    periodic_order_lookup = False  # see TradingSystem: the journal must not depend on skipped cycles
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
        self._last_snapshot: Any = None
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

    async def refresh_account(self) -> Any:
        snapshot = await super().refresh_account()
        self._last_snapshot = snapshot
        return snapshot

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
        snapshot = self._last_snapshot
        if snapshot is None:
            return False
        seen_positions = {p.symbol: p.qty for p in snapshot.positions}
        seen_orders = frozenset(o.id for o in flatten_orders(snapshot.open_orders) if o.is_open)
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
        for position in snapshot.positions:
            symbol, qty = position.symbol, position.qty
            if qty <= 0 or protected_quantity(position, snapshot.open_orders) < qty:
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
            before = _midnight(session)
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
        before = _midnight(today) if today is not None else now.timestamp()
        since = (now - self._lookback()).timestamp()
        bars: dict[str, BarSeries] = {}
        for symbol in symbols:
            history = self.replay.get(symbol)
            series = history.window(since, before) if history is not None else None
            if series is not None:
                bars[symbol] = series
        self._history = _History(session=today, bars=bars)

    async def refresh_market_data(self, status: MarketStatus) -> dict[str, MarketData]:
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
        before = _midnight(today)
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
                defensive=defensive, news=[],
            )
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
        """Account, fills, open orders, and every safety check; no market data, no decisions."""
        from core.errors import OperationalError, TemporaryError

        started = time.perf_counter()
        cpu_started = time.process_time()
        requests_before = self.broker.request_count
        self.summary.cycles += 1
        try:
            await self.apply_operator_commands()
            snapshot = await self.refresh_account()
            await self.executor.manage_open_orders(snapshot.open_orders)
            snapshot = await self.enforce_safety(snapshot, status)
            self.record_cycle(snapshot, status, started, cpu_started, requests_before, 0)
        except OperationalError as exc:
            log.critical("operational_error", error=str(exc), code=exc.code, status=exc.status)
            self.stop_event.set()
        except TemporaryError as exc:
            await self.on_broker_unavailable(exc, status)


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


# -- the runner --------------------------------------------------------------------------------


class Progress:
    """A one-line carriage-return progress bar on ``stream``, drawn only on a terminal."""

    def __init__(self, total: int, stream: TextIO | None = None, *, enabled: bool = True) -> None:
        self.total = max(total, 1)
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = enabled and bool(isatty and isatty())
        self._last = 0.0
        self._started = time.perf_counter()
        self._drawn = False

    def update(self, done: int, label: str = "") -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if done < self.total and now - self._last < PROGRESS_INTERVAL:
            return
        self._last = now
        fraction = min(done / self.total, 1.0)
        width = 30
        filled = int(round(width * fraction))
        elapsed = now - self._started
        eta = elapsed / fraction - elapsed if fraction > 0 else 0.0
        line = f"\r[{'#' * filled}{'.' * (width - filled)}] {fraction:6.1%} {label} eta {eta:5.0f}s"
        self.stream.write(line)
        self.stream.flush()
        self._drawn = True

    def finish(self) -> None:
        if self.enabled and self._drawn:
            self.stream.write("\n")
            self.stream.flush()


def backtest_settings(settings: Any, strategies: Sequence[str] | None = None) -> Any:
    """``settings`` for a backtest: alerts never leave the process; strategies overridden."""
    alerts = settings.alerts.model_copy(update={
        "console": False, "email_enabled": False, "webhook_url": None, "sms_endpoint": None,
    })
    update: dict[str, Any] = {"alerts": alerts}
    if strategies:
        update["strategy"] = settings.strategy.model_copy(update={"enabled": list(strategies)})
    return settings.model_copy(update=update)


def _sessions_in_range(market: Any, options: BacktestOptions, history: dict[str, DailyHistory]) -> list[date]:
    """The sessions to trade: ``options.start..end``; by default from the first session
    with :data:`WARMUP_SESSIONS` sessions of history for every symbol to the last session
    any of them has data for."""
    available = market.trading_days(FIRST_DATE, LAST_DATE)
    own = [history[s].days for s in options.symbols if s in history and history[s].days]
    if not available or not own:
        raise BacktestError(f"no trading session for {', '.join(options.symbols)} in the data under {options.data_dir}")
    start = options.start or max(days[min(WARMUP_SESSIONS, len(days) - 1)] for days in own)
    end = options.end or max(days[-1] for days in own)
    sessions = [d for d in available if start <= d <= end]
    if not sessions:
        first, last = min(days[0] for days in own), max(days[-1] for days in own)
        raise BacktestError(f"no session with data between {start} and {end} (the data covers {first} .. {last})")
    return sessions


def _bar_mode(options: BacktestOptions, history: dict[str, DailyHistory], sessions: list[date]) -> Literal["daily", "intraday"]:
    if options.bar_mode != "auto":
        return options.bar_mode
    wanted = set(sessions)
    for symbol in options.symbols:
        item = history.get(symbol)
        if item is None or not wanted <= item.minute_days:
            return "daily"
    return "intraday"


def _model_description(analyzer: AIAnalyzer, sessions: list[date]) -> dict[str, Any]:
    """Which model scored the ideas, and whether it had seen the backtest's dates."""
    model = analyzer.model
    if model is None:
        return {"description": "transparent scoring (no trained model found)"}
    window = model.metadata.get("training_window", {}) if isinstance(model.metadata, dict) else {}
    first, last = window.get("train_start"), window.get("test_end")
    description = f"calibrated model created {model.created_at}, trained on ideas {first or '?'} .. {last or '?'}"
    overlap = None
    if first and last and sessions:
        overlap = not (date.fromisoformat(last) < sessions[0] or date.fromisoformat(first) > sessions[-1])
        if overlap:
            description += " (overlaps this backtest: in sample; use --walk-forward for out-of-sample)"
    return {"description": description, "created_at": model.created_at, "training_window": window,
            "in_sample": overlap}


@dataclass
class _Assembly:
    """One backtest's parts: the simulator, its broker and commission ledger, the loop."""

    core: SimulatorCore
    ledger: CommissionLedger
    history: dict[str, DailyHistory]
    sessions: list[date]
    bar_mode: Literal["daily", "intraday"]
    broker: InProcessBroker
    journal: Journal
    analyzer: AIAnalyzer
    loop: BacktestLoop
    calendar: TradingCalendar


def _assemble(settings: Any, options: BacktestOptions, model: Any,
              on_cycle: Callable[[], None]) -> _Assembly:
    """Build the simulator over the data and the daemon's loop over it (nothing runs yet)."""
    settings = backtest_settings(settings, options.strategies)
    universe = list(dict.fromkeys(options.symbols))
    calendar = TradingCalendar()
    market_symbols = list(universe)
    if BENCHMARK not in market_symbols and _has_data_for(options.data_dir, BENCHMARK):
        market_symbols.append(BENCHMARK)
    try:
        # start=None: the simulator's CSV default (250 sessions into the data); the loop then
        # moves the clock on to the first session traded.
        core = SimulatorCore.create(data_dir=options.data_dir, symbols=market_symbols, seed=options.seed,
                                    speed=None, start=options.start.isoformat() if options.start else None,
                                    cash=str(options.cash), slippage_bps=options.slippage_bps)
    except CsvDataError:
        raise
    except ValueError as exc:
        raise BacktestError(str(exc)) from None
    ledger = attach_commission(core, options.commission)
    history = load_history(core.market, market_symbols)
    sessions = _sessions_in_range(core.market, options, history)
    bar_mode = _bar_mode(options, history, sessions)
    broker = InProcessBroker(core, max_quote_age=settings.data_quality.max_quote_age_seconds,
                             data_feed=settings.api.data_feed)
    journal = _memory_journal()
    alerter = Alerter(settings.alerts, core.clock)
    alerter.attach_journal(journal)
    settings = settings.model_copy(update={"scanning": settings.scanning.model_copy(update={"symbols": universe})})
    news = NewsSentiment(broker, clock=core.clock) if settings.ai.use_news_sentiment else None
    if news is not None:
        load_lexicon()  # part of assembling the run, not of its first scored idea
    analyzer = AIAnalyzer(settings, core.clock, model=model, news_source=news)
    loop = BacktestLoop(settings, broker, core.clock, journal=journal, alerter=alerter, calendar=calendar,
                        analyzer=analyzer, run_id="backtest", regime_by_date=True, history=history,
                        bar_mode=bar_mode, on_cycle=on_cycle, sessions=sessions,
                        fast_forward=options.fast_forward,
                        sim_days=len(sessions) if bar_mode == "intraday" else None)
    loop.news = news  # as live: the loop's one news request per cycle fills the analyzer's cache
    return _Assembly(core, ledger, history, sessions, bar_mode, broker, journal, analyzer, loop, calendar)


async def _drive(run: _Assembly, curve: list[tuple[datetime, Decimal]], bar: Progress) -> str | None:
    """Trade every session; returns why the run stopped early, or None."""
    loop, core = run.loop, run.core
    if run.bar_mode == "intraday":
        await loop.run()
        curve.extend(_closing_points(run.journal))
        return None
    await loop.startup()
    stopped = None
    done = 0
    while done < len(run.sessions):
        session = run.sessions[done]
        if loop.stop_event.is_set():
            stopped = f"the loop stopped on {session.isoformat()} (operational error: see the log)"
            break
        book = run.broker.book()
        quiet = loop.quiet_kind(session, book)
        if quiet == "flat":
            done += await loop.fast_forward_flat_run(done, core, curve)
        else:
            if quiet == "flat_candidates":
                skipped = await loop.fast_forward_flat(session, core, curve)
            else:
                skipped = quiet == "holding" and await loop.fast_forward_holding(session, core, book, curve)
            if not skipped:
                started = time.perf_counter()
                await _daily_session(loop, core, run.calendar, session, curve)
                loop.run_sessions_seconds += time.perf_counter() - started
            done += 1
        bar.update(done, f"{run.sessions[done - 1].isoformat()} equity {curve[-1][1]:,.0f}")
    await loop.shutdown()
    return stopped


async def run_backtest_async(settings: Any, options: BacktestOptions, *, model: Any = None,
                             progress_stream: TextIO | None = None) -> BacktestResult:
    """:func:`run_backtest` for a caller already inside an event loop."""
    wall_started = time.perf_counter()
    holder: dict[str, Any] = {}

    def tick() -> None:  # intraday progress: after every cycle of the live loop
        run = holder.get("run")
        if run is not None and run.bar_mode == "intraday":
            holder["bar"].update(run.loop.summary.sessions, f"{run.core.clock.now().astimezone(EXCHANGE_TZ):%Y-%m-%d %H:%M}")

    run = _assemble(settings, options, model, tick)
    bar = Progress(len(run.sessions), progress_stream, enabled=options.progress)
    holder.update(run=run, bar=bar)
    loop_started, loop_cpu_started = time.perf_counter(), time.process_time()
    await _at(run.core, datetime.combine(run.sessions[0], PRE_MARKET, EXCHANGE_TZ))
    curve: list[tuple[datetime, Decimal]] = [(run.core.clock.now(), options.cash)]
    try:
        stopped = await _drive(run, curve, bar)
    finally:
        bar.finish()
    loop_seconds = time.perf_counter() - loop_started
    loop_cpu_seconds = time.process_time() - loop_cpu_started
    journal = run.journal
    trades = _net_trades(journal.trades(), run.ledger)
    orders = journal.orders()
    intents = _intents(journal, orders)
    events = journal.events(kind="trading_state_changed")
    alerts = journal.alerts()
    journal.close()
    benchmark = _benchmark_curve(run.history.get(BENCHMARK), run.sessions, run.calendar)
    report = compute_performance(curve, trades, benchmark=benchmark or None,
                                 periods_per_year=252 if run.bar_mode == "daily" else None)
    return BacktestResult(
        options=options, bar_mode=run.bar_mode, sessions=run.sessions, equity_curve=curve, trades=trades,
        orders=orders, intents=intents, state_changes=events, alerts=alerts, performance=report,
        benchmark=benchmark, commission_paid=run.ledger.total,
        bars=_bar_count(run.core, run.history, list(dict.fromkeys(options.symbols)), run.sessions, run.bar_mode),
        requests=run.broker.request_count, elapsed_seconds=time.perf_counter() - wall_started,
        loop_seconds=loop_seconds, strategies=[s.name for s in run.loop.strategies],
        model=_model_description(run.analyzer, run.sessions), final_state=run.loop.safety.state.value,
        stopped_early=stopped, fast_forwarded=run.loop.fast_forwarded,
        fast_forwarded_holding=run.loop.fast_forwarded_holding,
        safety_cycles_skipped=run.loop.safety_cycles_skipped, run_sessions_seconds=run.loop.run_sessions_seconds,
        loop_cpu_seconds=loop_cpu_seconds,
    )


def _bar_count(core: SimulatorCore, history: dict[str, DailyHistory], universe: list[str], sessions: list[date],
               bar_mode: str) -> int:
    """Bars the run processes: symbol-sessions (daily) or minute bars (intraday)."""
    if bar_mode == "daily":
        return sum(1 for s in universe for d in sessions if s in history and history[s].index(d) is not None)
    total = 0
    for symbol in universe:
        for day in sessions:
            arrays = core.market.minute_arrays(symbol, day)
            total += len(arrays) if arrays is not None else 0
    return total


def _memory_journal() -> Journal:
    """An in-memory journal (fast; a backtest has nothing to survive). Its "not in WAL mode"
    warning is meant for the daemon's state file, so it is kept out of the backtest log."""
    import logging

    journal_logger = logging.getLogger("journal")
    level = journal_logger.level
    journal_logger.setLevel(logging.ERROR)
    try:
        return Journal(":memory:")
    finally:
        journal_logger.setLevel(level)


def _has_data_for(data_dir: Path, symbol: str) -> bool:
    folders = [Path(data_dir), Path(data_dir) / "daily", Path(data_dir) / "intraday"]
    return any(f.is_dir() and any(f.glob(f"{symbol}-1[dm]-*.csv")) for f in folders)


async def _at(core: SimulatorCore, moment: datetime) -> None:
    """Move simulated time to ``moment`` (never backwards) and let the book catch up."""
    if moment > core.clock.now():
        core.clock.set_time(moment)
    core.sync()
    await asyncio.sleep(0)


async def _daily_session(loop: BacktestLoop, core: SimulatorCore, calendar: TradingCalendar, session: date,
                         curve: list[tuple[datetime, Decimal]]) -> None:
    opened, closed = calendar.open_close(session)
    await _at(core, opened)
    status = await loop.refresh_market_status()
    if status.is_regular:
        await loop.run_cycle(status)
    await _at(core, closed - timedelta(minutes=1))
    if loop.safety_cycle_is_idle(session):
        loop.skip_safety_cycle()
    else:
        status = await loop.refresh_market_status()
        if status.is_regular:
            await loop.safety_cycle(status)
    await _at(core, closed)
    await loop.refresh_market_status()
    equity = await loop.closing_account_equity()
    curve.append((closed, equity))
    loop.summary.end_equity = equity
    loop.closing_equity = equity


def _closing_points(journal: Journal) -> list[tuple[datetime, Decimal]]:
    """The last equity snapshot of each session (intraday runs record one per cycle)."""
    last: dict[date, tuple[datetime, Decimal]] = {}
    for at, equity in journal.equity_curve():
        last[to_exchange_time(at).date()] = (at, equity)
    return [last[d] for d in sorted(last)]


def _benchmark_curve(history: DailyHistory | None, sessions: list[date],
                     calendar: TradingCalendar) -> list[tuple[datetime, Decimal]]:
    if history is None:
        return []
    points = []
    for day in sessions:
        i = history.index(day)
        if i is not None:
            points.append((calendar.open_close(day)[1], Decimal(repr(float(history.close[i])))))
    return points


def _net_trades(rows: list[dict[str, Any]], ledger: CommissionLedger) -> list[dict[str, Any]]:
    """Closed trades with each execution's commission attributed pro rata by quantity."""
    if not ledger.charges:
        return [dict(r, commission=ZERO) for r in rows]
    fills: dict[tuple[str, str, datetime], tuple[Decimal, Decimal]] = {}
    for charge in ledger.charges:
        key = (charge.symbol, charge.side, charge.at)
        fee, qty = fills.get(key, (ZERO, ZERO))
        fills[key] = (fee + charge.fee, qty + charge.qty)
    out = []
    for row in rows:
        qty = Decimal(str(row["qty"]))
        commission = ZERO
        for side, at_key in (("buy", "entry_at"), ("sell", "exit_at")):
            at = row[at_key]
            at = datetime.fromisoformat(at) if isinstance(at, str) else at
            fee, filled = fills.get((row["symbol"], side, at.astimezone(UTC)), (ZERO, ZERO))
            if filled > 0:
                commission += fee * min(qty / filled, Decimal(1))
        commission = commission.quantize(Decimal("0.01"))
        pnl = Decimal(str(row["pnl"])) - commission
        entry_value = qty * Decimal(str(row["entry_price"]))
        item = dict(row, pnl=pnl, commission=commission)
        if entry_value > 0:
            item["return_pct"] = pnl / entry_value
        out.append(item)
    return out


def _intents(journal: Journal, orders: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The journaled intent behind each submitted entry order (confidence, strategy, time)."""
    out = []
    for order in orders:
        intent_id = order.get("intent_id")
        if not intent_id:
            continue
        row = journal.intent(intent_id)
        if row is not None:
            out.append(dict(row, client_order_id=order["client_order_id"]))
    return out


def run_backtest(settings: Any, options: BacktestOptions, *, model: Any = None,
                 progress_stream: TextIO | None = None) -> BacktestResult:
    """Run one backtest to completion (see the module docstring). Raises
    :class:`simulator.csv_source.CsvDataError` for a malformed data file and
    :class:`BacktestError` / :class:`core.errors.ConfigError` for an impossible request."""
    return asyncio.run(run_backtest_async(settings, options, model=model, progress_stream=progress_stream))


# -- calibration ---------------------------------------------------------------------------------


def calibration_summary(p: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Brier score, expected calibration error and reliability bins of forecasts ``p`` of
    outcomes ``y`` (1 = the bracket reached its target first), as the report shows them."""
    probs = np.asarray(p, dtype=float)
    outcomes = np.asarray(y, dtype=float)
    if probs.size == 0:
        return {"n": 0, "brier": None, "ece": None, "base_rate": None, "mean_forecast": None, "bins": []}
    return {
        "n": int(probs.size),
        "brier": round(ai_model.brier_score(probs, outcomes), 6),
        "ece": round(ai_model.expected_calibration_error(probs, outcomes), 6),
        "base_rate": round(float(outcomes.mean()), 6),
        "mean_forecast": round(float(probs.mean()), 6),
        "bins": ai_model.reliability_table(probs, outcomes),
    }


def traded_calibration(result: BacktestResult) -> dict[str, Any] | None:
    """Confidence of each traded intent against whether its trade made money.

    The analyzer's confidence is the probability that the bracket reaches its target before
    its stop; a closed trade with a positive P&L is counted as a hit. None without trades.
    """
    by_symbol: dict[str, list[tuple[datetime, float]]] = {}
    for intent in result.intents:
        if intent.get("confidence") is None:
            continue
        by_symbol.setdefault(intent["symbol"], []).append((intent["created_at"], float(intent["confidence"])))
    p: list[float] = []
    y: list[float] = []
    for trade in result.trades:
        candidates = [c for at, c in sorted(by_symbol.get(trade["symbol"], [])) if at <= trade["entry_at"]]
        if not candidates:
            continue
        p.append(candidates[-1])
        y.append(1.0 if Decimal(str(trade["pnl"])) > 0 else 0.0)
    if not p:
        return None
    summary = calibration_summary(p, y)
    summary["what"] = "traded intents: confidence vs closed trade profitable"
    return summary


# -- walk-forward --------------------------------------------------------------------------------


@dataclass
class WalkForwardWindow:
    """One train/test window: the model trained on the train dates and its test backtest."""

    index: int
    train_start: date
    train_end: date
    test_start: date
    test_end: date
    model: dict[str, Any]
    calibration: dict[str, Any]
    result: BacktestResult

    def row(self) -> dict[str, Any]:
        """The window's line in the report's walk-forward table (out-of-sample figures)."""
        perf = self.result.performance
        return {
            "window": self.index,
            "train_start": self.train_start.isoformat(),
            "train_end": self.train_end.isoformat(),
            "test_start": self.test_start.isoformat(),
            "test_end": self.test_end.isoformat(),
            "oos": {
                "total_return": _round(perf.total_return),
                "sharpe": _round(perf.sharpe),
                "max_drawdown": _round(perf.max_drawdown_pct),
                "trades": perf.trades.total,
                "win_rate": _round(perf.trades.win_rate),
            },
            "calibration": {
                "ideas": self.calibration.get("n"),
                "brier": self.calibration.get("brier"),
                "ece": self.calibration.get("ece"),
                "base_rate": self.calibration.get("base_rate"),
            },
            "model_test_brier": self.model.get("test_brier"),
        }


@dataclass
class WalkForwardResult:
    """Every window, and the out-of-sample windows chained into one run."""

    windows: list[WalkForwardWindow]
    equity_curve: list[tuple[datetime, Decimal]]
    trades: list[dict[str, Any]]
    performance: PerformanceReport
    calibration: dict[str, Any]
    options: BacktestOptions
    train_years: float
    test_months: int
    roll_months: int

    def meta(self) -> dict[str, Any]:
        first, last = self.windows[0], self.windows[-1]
        base = self.windows[0].result.meta()
        base.update({
            "period": f"{first.test_start.isoformat()} .. {last.test_end.isoformat()} (out of sample)",
            "sessions": sum(len(w.result.sessions) for w in self.windows),
            "bars": f"{first.result.bar_mode} ({sum(w.result.bars for w in self.windows):,} symbol-sessions)",
            "walk_forward": (f"{len(self.windows)} windows: train {self.train_years:g} years, test "
                             f"{self.test_months} months, roll {self.roll_months} months"),
            "ai_model": "retrained on each window's train dates only (see the walk-forward table)",
            "commission_paid": str(sum((w.result.commission_paid for w in self.windows), ZERO)),
            "orders_submitted": sum(len(w.result.orders) for w in self.windows),
            "chaining": "each window starts from the starting cash; the combined curve chains their returns",
        })
        return base


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


def _add_months(day: date, months: int) -> date:
    month = day.month - 1 + months
    year = day.year + month // 12
    month = month % 12 + 1
    for candidate in range(day.day, 0, -1):
        try:
            return date(year, month, candidate)
        except ValueError:
            continue
    raise ValueError(f"cannot add {months} months to {day}")


def _add_years(day: date, years: float) -> date:
    return _add_months(day, int(round(years * 12)))


def _file_span(path: Path) -> tuple[date, date]:
    stem = path.name[: -len(".csv")]
    parts = stem.split("-1d-", 1)[1]
    return date.fromisoformat(parts[:10]), date.fromisoformat(parts[11:21])


def write_window_files(files: dict[str, Path], out_dir: Path, first: date, last: date) -> dict[str, Path]:
    """Copies of daily files holding only the rows dated ``first..last`` (for training).

    Named ``SYMBOL-1d-FIRST-LAST.csv`` after the rows actually kept, in ``out_dir/daily``.
    """
    folder = out_dir / "daily"
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for symbol, path in files.items():
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
        if not rows:
            continue
        header, kept = rows[0], []
        for row in rows[1:]:
            if not row:
                continue
            try:
                day = date.fromisoformat(row[0].strip()[:10])
            except ValueError as exc:
                raise CsvDataError(path, rows.index(row) + 1, f"date {row[0]!r} is not YYYY-MM-DD") from exc
            if first <= day <= last:
                kept.append(row)
        if not kept:
            continue
        name = f"{symbol}-1d-{kept[0][0].strip()[:10]}-{kept[-1][0].strip()[:10]}.csv"
        target = folder / name
        with target.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(kept)
        written[symbol] = target
    return written


def out_of_sample_calibration(model: Any, files: dict[str, Path], benchmark: str, test_start: date,
                              test_end: date) -> dict[str, Any]:
    """The model's long-side forecasts for every labelled idea dated in the test window
    against their first-touch outcomes (entry at the next open, the model's own bracket).

    The model was trained before ``test_start``. Features read the history before each idea;
    an idea's outcome may read bars after ``test_end`` (up to its horizon): that only scores
    the forecast, it decides nothing.
    """
    history_from = test_start - timedelta(days=600)
    outcome_until = test_end + timedelta(days=int(model.bracket.horizon_days * 7 / 5) + 10)
    with tempfile.TemporaryDirectory(prefix="wf-test-") as tmp:
        copies = write_window_files(files, Path(tmp), history_from, outcome_until)
        if benchmark not in copies:
            return calibration_summary([], [])
        bench = ai_model.read_daily_csv(copies[benchmark], benchmark)
        series = [bench if s == benchmark else ai_model.read_daily_csv(p, s) for s, p in copies.items()]
        try:
            data = ai_model.build_dataset(series, bench, model.bracket)
        except ai_model.TrainingDataError:
            return calibration_summary([], [])
    lo, hi = _midnight(test_start), _midnight(test_end)
    keep = (data.ts >= lo) & (data.ts <= hi)
    if not keep.any():
        return calibration_summary([], [])
    p = model.sides["long"].probabilities(data.X[keep])
    return calibration_summary(p, data.y["long"][keep])


def walk_forward(
    settings: Any,
    options: BacktestOptions,
    *,
    train_years: float = 3.0,
    test_months: int = 6,
    roll_months: int | None = None,
    progress_stream: TextIO | None = None,
) -> WalkForwardResult:
    """Train on ``train_years`` before each test window of ``test_months``, backtest the test
    window with that model, then move on by ``roll_months`` (default: ``test_months``).

    Test windows start at ``options.start`` (default: ``train_years`` after the first date
    every symbol and the benchmark have data) and stop at ``options.end``. The model never
    sees a bar dated after its train window; the test backtest cannot look ahead either.
    """
    if train_years <= 0 or test_months < 1:
        raise BacktestError(f"walk-forward needs a positive train length and test months >= 1, got {train_years} / {test_months}")
    roll = roll_months or test_months
    if roll < 1:
        raise BacktestError(f"walk-forward roll must be at least 1 month, got {roll}")
    try:
        files = ai_model.daily_files(options.data_dir)
    except ai_model.TrainingDataError as exc:
        raise BacktestError(str(exc)) from None
    wanted = list(dict.fromkeys([*options.symbols, BENCHMARK]))
    missing = [s for s in wanted if s not in files]
    if missing:
        raise BacktestError(f"walk-forward needs daily files for {', '.join(missing)} under {options.data_dir}/daily")
    chosen = {s: files[s] for s in wanted}
    spans = [_file_span(p) for p in chosen.values()]
    data_first, data_last = max(s[0] for s in spans), min(s[1] for s in spans)
    test_start = options.start or _add_years(data_first, train_years)
    final = min(options.end or data_last, data_last)
    windows: list[WalkForwardWindow] = []
    index = 0
    while test_start <= final:
        index += 1
        test_end = min(_add_months(test_start, test_months) - timedelta(days=1), final)
        train_start, train_end = _add_years(test_start, -train_years), test_start - timedelta(days=1)
        log.info("walk_forward_window", window=index, train_start=train_start.isoformat(),
                 train_end=train_end.isoformat(), test_start=test_start.isoformat(), test_end=test_end.isoformat())
        with tempfile.TemporaryDirectory(prefix="wf-train-") as tmp:
            copies = write_window_files(chosen, Path(tmp), train_start, train_end)
            model_path = Path(tmp) / "model.json"
            try:
                trained = ai_model.train_model(Path(tmp), model_path, symbols=sorted(copies),
                                               stop=float(settings.trading.stop_loss),
                                               target=float(settings.trading.take_profit), benchmark=BENCHMARK)
            except ai_model.TrainingDataError as exc:
                raise BacktestError(
                    f"walk-forward window {index} (train {train_start} .. {train_end}): {exc}"
                ) from None
            model = ai_model.load_model(model_path)
        calibration = out_of_sample_calibration(model, chosen, BENCHMARK, test_start, test_end)
        window_options = replace(options, start=test_start, end=test_end)
        try:
            result = run_backtest(settings, window_options, model=model, progress_stream=progress_stream)
        except BacktestError as exc:
            log.warning("walk_forward_window_skipped", window=index, reason=str(exc))
            test_start = _add_months(test_start, roll)
            continue
        long_metrics = trained.metrics.get("long", {})
        windows.append(WalkForwardWindow(
            index=index, train_start=train_start, train_end=train_end, test_start=test_start, test_end=test_end,
            model={"created_at": model.created_at, "symbols": trained.symbols, "window": trained.window,
                   "test_brier": _round(long_metrics.get("brier")), "test_auc": _round(long_metrics.get("auc"))},
            calibration=calibration, result=result,
        ))
        test_start = _add_months(test_start, roll)
    if not windows:
        raise BacktestError("no walk-forward window could be tested: widen the date range or shorten the windows")
    curve, trades = _chain(windows)
    performance = compute_performance(curve, trades, periods_per_year=252)
    calibration = _pooled_calibration(windows)
    return WalkForwardResult(windows=windows, equity_curve=curve, trades=trades, performance=performance,
                             calibration=calibration, options=options, train_years=train_years,
                             test_months=test_months, roll_months=roll)


def _pooled_calibration(windows: list[WalkForwardWindow]) -> dict[str, Any]:
    """All windows' out-of-sample ideas together (bins merged by count)."""
    merged: dict[tuple[float, float], list[float]] = {}
    briers: list[tuple[float, int]] = []
    for w in windows:
        cal = w.calibration
        if cal.get("n"):
            briers.append((float(cal["brier"]), int(cal["n"])))
        for b in cal.get("bins", []):
            key = (b["bin_low"], b["bin_high"])
            count, forecast, hits = merged.get(key, [0.0, 0.0, 0.0])
            n = float(b["count"])
            merged[key] = [count + n, forecast + n * b["mean_forecast"], hits + n * b["hit_rate"]]
    bins = [
        {"bin_low": lo, "bin_high": hi, "count": int(c), "mean_forecast": round(f / c, 4), "hit_rate": round(h / c, 4)}
        for (lo, hi), (c, f, h) in sorted(merged.items()) if c > 0
    ]
    total = sum(n for _, n in briers)
    ece = sum(b["count"] * abs(b["mean_forecast"] - b["hit_rate"]) for b in bins) / total if total else None
    return {
        "what": "AI model, out of sample: long-side forecasts on every labelled idea of the test windows",
        "n": total,
        "brier": round(sum(b * n for b, n in briers) / total, 6) if total else None,
        "ece": round(ece, 6) if ece is not None else None,
        "bins": bins,
    }


def _chain(windows: list[WalkForwardWindow]) -> tuple[list[tuple[datetime, Decimal]], list[dict[str, Any]]]:
    """One curve from the windows' curves, each scaled to start where the previous ended."""
    curve: list[tuple[datetime, Decimal]] = []
    level: Decimal | None = None
    for w in windows:
        points = w.result.equity_curve
        if not points:
            continue
        base = points[0][1]
        scale = (level / base) if level is not None else Decimal(1)
        for at, equity in points:
            if curve and at <= curve[-1][0]:
                continue
            curve.append((at, equity * scale))
        level = curve[-1][1]
    trades = sorted((t for w in windows for t in w.result.trades), key=lambda t: t["exit_at"])
    return curve, trades


# -- report and summary --------------------------------------------------------------------------


def write_backtest_report(out_dir: Path, result: BacktestResult | WalkForwardResult) -> tuple[Path, Path]:
    """``report.html`` and ``summary.json`` for a backtest or a walk-forward run."""
    from analytics import reporting

    if isinstance(result, WalkForwardResult):
        return reporting.write_report(
            Path(out_dir), report=result.performance, equity_curve=result.equity_curve, trades=result.trades,
            title="Walk-forward backtest (out of sample)", meta=result.meta(),
            walk_forward=[w.row() for w in result.windows], calibration=result.calibration,
        )
    calibration = traded_calibration(result)
    return reporting.write_report(
        Path(out_dir), report=result.performance, equity_curve=result.equity_curve, trades=result.trades,
        title=f"Backtest {', '.join(result.options.symbols)}", meta=result.meta(), calibration=calibration,
    )


def _pct(value: float | None) -> str:
    """A signed percentage (returns)."""
    return "n/a" if value is None else f"{value * 100:+.2f}%"


def _share(value: float | None) -> str:
    """An unsigned percentage (rates, volatility, drawdown)."""
    return "n/a" if value is None else f"{value * 100:.2f}%"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def render_summary(result: BacktestResult | WalkForwardResult, paths: tuple[Path, Path] | None = None) -> str:
    """A few lines for stdout: period, return, risk, trades, safety, speed, report files."""
    perf = result.performance
    meta = result.meta()
    t = perf.trades
    lines = [
        f"Backtest {meta['period']} ({meta['sessions']} sessions, {meta['bars']})",
        f"  symbols      {meta['symbols']}",
        f"  strategies   {meta['strategies']}",
        f"  AI model     {meta['ai_model']}",
        f"  costs        commission {meta['commission']}; slippage {meta['slippage']}",
        f"  equity       {perf.start_equity:,.2f} -> {perf.end_equity:,.2f} ({_pct(perf.total_return)}), "
        f"annual {_pct(perf.annual_return)}, volatility {_share(perf.annual_volatility)}",
        f"  risk         Sharpe {_num(perf.sharpe)}, Sortino {_num(perf.sortino)}, "
        f"max drawdown {_share(perf.max_drawdown_pct)}",
        f"  trades       {t.total} (win rate {_share(t.win_rate)}, profit factor {_num(t.profit_factor)}), "
        f"commission paid {meta['commission_paid']}",
    ]
    if isinstance(result, WalkForwardResult):
        lines.append(f"  walk-forward {meta['walk_forward']}")
        cal = result.calibration
        lines.append(f"  calibration  out of sample: {cal.get('n')} ideas, Brier {cal.get('brier')}, ECE {cal.get('ece')}")
        runs = [w.result for w in result.windows]
    else:
        runs = [result]
        changes = result.state_changes
        lines.append(f"  safety       {len(changes)} trading-state change(s), final state {result.final_state}"
                     + (f"; stopped early: {result.stopped_early}" if result.stopped_early else ""))
    bars = sum(r.bars for r in runs)
    seconds = sum(r.loop_seconds for r in runs)
    lines.append(f"  speed        {bars:,} bars in {seconds:.1f} s "
                 f"({bars / seconds if seconds > 0 else 0:,.0f} bars/s through the full loop)")
    if paths is not None:
        lines.append(f"  report       {paths[0]}")
        lines.append(f"               {paths[1]}")
    return "\n".join(lines)


# -- command line ----------------------------------------------------------------------------------


def _date_arg(value: Any, flag: str) -> date | None:
    if value in (None, ""):
        return None
    try:
        return date.fromisoformat(str(value).strip()[:10])
    except ValueError:
        raise BacktestError(f"{flag} {value!r} is not a date (YYYY-MM-DD)") from None


def _decimal_arg(value: Any, flag: str, default: Decimal) -> Decimal:
    if value is None:
        return default
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise BacktestError(f"{flag} {value!r} is not a number") from None
    if not number.is_finite() or number < 0:
        raise BacktestError(f"{flag} must be a non-negative number, got {value!r}")
    return number


def options_from_args(settings: Any, args: argparse.Namespace) -> BacktestOptions:
    """Backtest options from ``main.py backtest`` arguments and the settings they overrode.

    Flags main.py does not define yet are read when present (``commission_per_share``,
    ``commission_min``, ``slippage_bps``, ``bars``); see :func:`build_parser` for all of them.
    """
    data = getattr(args, "data", None) or settings.sim.data_dir
    if not data:
        raise BacktestError("backtest needs --data DIR (a directory with daily/SYMBOL-1d-*.csv files)")
    data_dir = Path(data)
    if not data_dir.is_dir():
        raise BacktestError(f"--data {data_dir}: no such directory")
    strategies = getattr(args, "strategies", None)
    try:
        slippage = float(getattr(args, "slippage_bps", None) if getattr(args, "slippage_bps", None) is not None else 1.0)
    except ValueError:
        raise BacktestError(f"--slippage-bps {getattr(args, 'slippage_bps', None)!r} is not a number") from None
    max_fraction = getattr(args, "commission_max_pct", None)
    commission = CommissionModel(
        per_share=_decimal_arg(getattr(args, "commission_per_share", None), "--commission-per-share", ZERO),
        minimum=_decimal_arg(getattr(args, "commission_min", None), "--commission-min", ZERO),
        max_fraction=(_decimal_arg(max_fraction, "--commission-max-pct", ZERO) / 100) if max_fraction else None,
    )
    return BacktestOptions(
        data_dir=data_dir,
        symbols=tuple(dict.fromkeys(s.strip().upper() for s in settings.scanning.symbols if s.strip())),
        start=_date_arg(getattr(args, "start", None) or settings.sim.start, "--start"),
        end=_date_arg(getattr(args, "end", None), "--end"),
        strategies=tuple(s.strip() for s in strategies.split(",") if s.strip()) if strategies else None,
        cash=Decimal(str(settings.sim.cash)),
        commission=commission,
        slippage_bps=slippage,
        seed=int(settings.sim.seed),
        bar_mode=getattr(args, "bars", None) or "auto",
        fast_forward=not getattr(args, "no_fast_forward", False),
    )


def _configure_logging(settings: Any, args: argparse.Namespace, report_dir: Path) -> None:
    """Backtest logs: JSON lines to ``report_dir/backtest.jsonl`` and stderr (stdout keeps the
    summary), at WARNING unless ``--log-level`` asks for more (INFO logs every decision and
    slows a long backtest several-fold)."""
    from core import logging_setup

    level = getattr(args, "log_level", None) or "WARNING"
    log_file = getattr(args, "log_file", None) or report_dir / "backtest.jsonl"
    logging_setup.configure(log_file=log_file, level=level, secrets=settings.secret_values(), stream=sys.stderr)


def main(settings: Any, args: argparse.Namespace) -> int:
    """``python main.py backtest``: run, write the report, print the summary. Exit codes:
    0 done, 1 the run failed, 2 bad arguments or a bad data file (one line on stderr)."""
    try:
        options = options_from_args(settings, args)
    except BacktestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    report_dir = Path(getattr(args, "report", None) or "reports/backtest")
    _configure_logging(settings, args, report_dir)
    try:
        result: BacktestResult | WalkForwardResult
        if getattr(args, "walk_forward", False):
            result = walk_forward(
                settings, options,
                train_years=float(getattr(args, "train_years", None) or 3.0),
                test_months=int(getattr(args, "test_months", None) or 6),
                roll_months=getattr(args, "roll_months", None),
            )
        else:
            result = run_backtest(settings, options)
        paths = write_backtest_report(report_dir, result)
    except CsvDataError as exc:
        where = f", line {exc.line}" if exc.line is not None else ""
        print(f"error: bad data file {exc.path}{where}: {exc.problem}", file=sys.stderr)
        return EXIT_CONFIG
    except BacktestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(render_summary(result, paths), flush=True)
    return EXIT_OK


def _daily_closes(curve: list[tuple[datetime, Decimal]]) -> list[tuple[datetime, Decimal]]:
    last: dict[date, tuple[datetime, Decimal]] = {}
    for at, equity in curve:
        last[to_exchange_time(at).date()] = (at, equity)
    return [last[d] for d in sorted(last)]


def report_from_journal(settings: Any, args: argparse.Namespace) -> int:
    """``python main.py report``: the backtest's report for a paper or live run, from the
    journal's equity snapshots (the last of each session) and closed trades.

    Whatever the journal holds, this ends in a report or one line: rows that make no sense
    (equity zero, negative, NaN or absurd, a time without a zone, a trade with a zero
    quantity or a missing price) are left out, counted and listed in the report."""
    path = Path(settings.storage.state_db)
    if not path.exists():
        print(f"error: no journal at {path}: run the daemon first (or give --state-db)", file=sys.stderr)
        return EXIT_CONFIG
    journal = Journal(path)
    try:
        equity_rows = journal.raw_equity_rows()
        trade_rows = journal.raw_trade_rows()
        orders_journaled = journal.order_count()
    finally:
        journal.close()
    if not equity_rows:
        print(f"error: the journal at {path} has no equity snapshots yet: nothing to report", file=sys.stderr)
        return EXIT_CONFIG
    snapshots, skipped = usable_curve(equity_rows)
    trades, skipped_trades = usable_trades(trade_rows)
    skipped += skipped_trades
    if skipped:
        log.warning("report_rows_skipped", count=len(skipped), rows=[r.to_dict() for r in skipped[:50]])
    if not snapshots:
        print(f"error: none of the {len(equity_rows)} equity snapshots in {path} is usable "
              f"(first problem: {skipped[0].reason}): nothing to report", file=sys.stderr)
        return EXIT_CONFIG
    closes = _daily_closes(snapshots)
    curve, ppy = (closes, 252.0) if len(closes) >= 2 else (snapshots, None)
    report = compute_performance(curve, trades, periods_per_year=ppy)
    meta: dict[str, Any] = {
        "source": f"journal {path}",
        "mode": settings.mode,
        "period": f"{curve[0][0].isoformat()} .. {curve[-1][0].isoformat()}",
        "equity_points": f"{len(curve)} ({'last snapshot of each session' if ppy else 'every snapshot'})",
        "orders_journaled": orders_journaled,
        "symbols": ", ".join(sorted({t.symbol for t in trades})) or "none traded",
    }
    if skipped:
        meta["journal_rows_skipped"] = len(skipped)
        meta["skipped_rows"] = [r.reason for r in skipped[:20]]
    from analytics import reporting

    out = Path(getattr(args, "out", None) or "reports")
    html_path, json_path = reporting.write_report(out, report=report, equity_curve=curve, trades=trades,
                                                  title=f"Trading report ({settings.mode})", meta=meta)
    t = report.trades
    lines = [
        f"Report {meta['period']} from {path}",
        f"  equity  {report.start_equity:,.2f} -> {report.end_equity:,.2f} ({_pct(report.total_return)}), "
        f"Sharpe {_num(report.sharpe)}, max drawdown {_share(report.max_drawdown_pct)}",
        f"  trades  {t.total} (win rate {_share(t.win_rate)}, profit factor {_num(t.profit_factor)})",
    ]
    if skipped:
        lines.append(f"  skipped {len(skipped)} journal row(s) that make no sense (listed in the report)")
    lines += [f"  report  {html_path}", f"          {json_path}"]
    print("\n".join(lines), flush=True)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """Every backtest flag, for ``python backtest/backtest.py`` (main.py's subcommand has a subset)."""
    parser = argparse.ArgumentParser(prog="python -m backtest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="CSV data directory (layout of shared/data)")
    parser.add_argument("--symbols", help="comma-separated symbols (default: scanning.symbols)")
    parser.add_argument("--start", help="first session (YYYY-MM-DD)")
    parser.add_argument("--end", help="last session (YYYY-MM-DD)")
    parser.add_argument("--profile", choices=["default", "conservative", "aggressive"])
    parser.add_argument("--config", type=Path, help="TOML config file")
    parser.add_argument("--strategies", help="comma-separated strategy names")
    parser.add_argument("--report", type=Path, help="directory for report.html and summary.json")
    parser.add_argument("--commission-per-share", help="dollars per share (default 0, as at Alpaca)")
    parser.add_argument("--commission-min", help="minimum dollars per execution (default 0)")
    parser.add_argument("--commission-max-pct", help="at most this percent of an execution's value")
    parser.add_argument("--slippage-bps", help="basis points on market and stop fills (default 1)")
    parser.add_argument("--bars", choices=["auto", "daily", "intraday"], default="auto",
                        help="bar convention (default: intraday when minute bars cover the range)")
    parser.add_argument("--no-fast-forward", action="store_true",
                        help="run the loop on every session, also where it provably has nothing to do")
    parser.add_argument("--walk-forward", action="store_true", help="train/test windows (see --train-years)")
    parser.add_argument("--train-years", type=float, default=3.0, help="walk-forward train length (default 3)")
    parser.add_argument("--test-months", type=int, default=6, help="walk-forward test length (default 6)")
    parser.add_argument("--roll-months", type=int, help="walk-forward step (default: --test-months)")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default WARNING")
    parser.add_argument("--log-file", help="default REPORT_DIR/backtest.jsonl")
    return parser


def cli(argv: Sequence[str] | None = None) -> int:
    """``python backtest/backtest.py --data DIR ...`` with every flag (see :func:`build_parser`)."""
    import config

    args = build_parser().parse_args(argv)
    overrides: dict[str, Any] = {"sim.data_dir": args.data}
    if args.symbols:
        overrides["scanning.symbols"] = [s.strip() for s in args.symbols.split(",") if s.strip()]
    if args.start:
        overrides["sim.start"] = args.start
    try:
        settings = config.load_settings(config_file=args.config, profile=args.profile, overrides=overrides)
        return main(settings, args)
    except ConfigError as exc:
        print(config.format_problems(exc), file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(cli())
