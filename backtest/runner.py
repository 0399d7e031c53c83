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
Orders, fills and positions reach the loop as they reach the live daemon: as ``trade_updates``
events (the simulator engine's own, heard in-process by :mod:`backtest.event_feed`) applied by
the live stream's handlers (:mod:`engine.order_events`); a cycle lists no positions, orders or
activities. Alerts go to the in-memory journal only (never to email, webhook or SMS), and the journal is
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

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from datetime import time as dtime
from decimal import Decimal
from typing import Any, Literal, TextIO

import structlog

from ai.sentiment import NewsSentiment, load_lexicon
from ai_analyzer import AIAnalyzer
from alerter import Alerter
from analytics.performance import compute_performance
from backtest.benchmarks import Prices, compare
from backtest.data import DailyHistory, has_data_for, load_history
from backtest.event_feed import InProcessTradeEvents
from backtest.loop import BacktestLoop, _at
from backtest.options import WARMUP_SESSIONS, BacktestError, BacktestOptions, BacktestResult, timeframe_note
from backtest.progress import Progress
from backtest.sim_broker import CommissionLedger, InProcessBroker, attach_commission
from backtest.trade_details import with_entry_details
from core.clock import EXCHANGE_TZ, to_exchange_time
from engine.trading_system import BENCHMARK
from journal.journal import Journal
from market.trading_calendar import FIRST_DATE, LAST_DATE, TradingCalendar
from simulator.core import SimulatorCore
from simulator.csv_source import CsvDataError, CsvSource

log = structlog.get_logger(__name__)

UTC = timezone.utc
ZERO = Decimal(0)
#: Where the loop starts: the first session's pre-market.
PRE_MARKET = dtime(4, 0)


# -- the runner --------------------------------------------------------------------------------


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
    # what the model was fitted on: its train and calibration ideas (its test ideas were only
    # scored, so a backtest over them is out of sample in time)
    first = window.get("train_start")
    last = window.get("calibration_end") or window.get("train_end") or window.get("test_end")
    description = f"calibrated model created {model.created_at}, fitted on ideas {first or '?'} .. {last or '?'}"
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
    if BENCHMARK not in market_symbols and has_data_for(options.data_dir, BENCHMARK):
        market_symbols.append(BENCHMARK)
    # start=None: the simulator's CSV default (250 sessions into the data of every symbol,
    # the benchmark's included); the loop then moves the clock on to the first session traded.
    core = _core(options, market_symbols, options.start)
    history = load_history(core.market, market_symbols)
    sessions = _sessions_in_range(core.market, options, history)
    if datetime.combine(sessions[0], PRE_MARKET, EXCHANGE_TZ) < core.clock.now():
        # The traded symbols' data starts before the benchmark's: the simulator's default
        # start lies after the first session traded, and its clock never runs backwards.
        core = _core(options, market_symbols, sessions[0])
    ledger = attach_commission(core, options.commission)
    bar_mode = _bar_mode(options, history, sessions)
    log.info("backtest_timeframes", bar_mode=bar_mode, multi_timeframe=timeframe_note(bar_mode),
             enabled=bool(settings.multi_timeframe.enabled))
    broker = InProcessBroker(core, max_quote_age=settings.data_quality.max_quote_age_seconds,
                             data_feed=settings.api.data_feed)
    journal = _memory_journal()
    alerter = Alerter(settings.alerts, core.clock)
    alerter.attach_journal(journal)
    settings = settings.model_copy(update={"scanning": settings.scanning.model_copy(update={"symbols": universe})})
    # The simulator's news is synthetic: on recorded (CSV) bars it would move confidence with
    # headlines that never happened, so a backtest on real data reads no news at all.
    news = (NewsSentiment(broker, clock=core.clock)
            if settings.ai.use_news_sentiment and not _recorded(core) else None)
    if news is not None:
        load_lexicon()  # part of assembling the run, not of its first scored idea
    analyzer = AIAnalyzer(settings, core.clock, model=model, news_source=news)
    loop = BacktestLoop(settings, broker, core.clock, journal=journal, alerter=alerter, calendar=calendar,
                        analyzer=analyzer, run_id="backtest", regime_by_date=True, history=history,
                        bar_mode=bar_mode, on_cycle=on_cycle, sessions=sessions,
                        fast_forward=options.fast_forward,
                        sim_days=len(sessions) if bar_mode == "intraday" else None)
    loop.news = news  # as live: the loop's one news request per cycle fills the analyzer's cache
    loop.trade_events = InProcessTradeEvents(loop, broker)  # the engine's trade_updates, in-process
    return _Assembly(core, ledger, history, sessions, bar_mode, broker, journal, analyzer, loop, calendar)


def _core(options: BacktestOptions, symbols: list[str], start: date | None) -> SimulatorCore:
    """The simulator over the data, its clock at ``start`` (None: the simulator's default)."""
    try:
        return SimulatorCore.create(data_dir=options.data_dir, symbols=symbols, seed=options.seed,
                                    speed=None, start=start.isoformat() if start else None,
                                    cash=str(options.cash), slippage_bps=options.slippage_bps)
    except CsvDataError:
        raise
    except ValueError as exc:
        raise BacktestError(str(exc)) from None


def _recorded(core: SimulatorCore) -> bool:
    """Whether the market replays recorded bars (CSV files) rather than a synthetic market."""
    return isinstance(getattr(core.market, "_source", None), CsvSource)


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
    orders = journal.orders()
    intents = _intents(journal, orders)
    fills = journal.fills()
    trades = with_entry_details(_net_trades(journal.trades(), run.ledger), fills, orders, intents)
    events = journal.events(kind="trading_state_changed")
    alerts = journal.alerts()
    journal.close()
    benchmark = _benchmark_curve(run.history.get(BENCHMARK), run.sessions, run.calendar)
    report = compute_performance(curve, trades, benchmark=benchmark or None,
                                 periods_per_year=252 if run.bar_mode == "daily" else None)
    universe = list(dict.fromkeys(options.symbols))
    prices = Prices.aligned(run.history, [*universe, BENCHMARK], run.sessions)
    comparison, randoms = compare(trades=trades, fills=fills, prices=prices, universe=universe,
                                  benchmark=BENCHMARK, curve=curve, seed=options.seed,
                                  slippage_bps=options.slippage_bps, limits=_time_limits(run.loop.settings))
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
        loop_cpu_seconds=loop_cpu_seconds, comparison=comparison, random_entries=randoms,
        late_symbols=[s for s in universe if s in run.history and run.history[s].days
                      and run.history[s].days[0] > run.sessions[0]],
    )


def _time_limits(settings: Any) -> dict[str, int]:
    """Strategies' own time limits in sessions (the entry's included) for random entries:
    mean reversion exits after ``max_hold_days``; the others have none but their brackets."""
    return {"mean_reversion": int(settings.mean_reversion.max_hold_days) + 1}


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
