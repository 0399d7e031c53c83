"""The one asyncio orchestrator loop.

One iteration reads as a list of named steps, each findable from the log events it emits:

1. ``refresh_market_status``  — ``market_status``; closed -> wait for the next session event.
2. ``refresh_account``        — account, positions, open orders (3 requests); fills since the
   last cycle (1 request) into the journal and the trade ledger (``position_closed``); while
   the trade stream is healthy, none of these: the event book (``engine.stream_feed``).
3. ``enforce_safety``         — operator commands, circuit breaker, daily drawdown, emergency
   exits, unprotected positions (``trading_state_changed``, ``circuit_breaker_triggered``,
   ``emergency_liquidation``, ``position_unprotected``/``position_protected``).
4. ``monitor_gap_risk``       — pre-market and the open (``gap_risk``).
5. ``refresh_market_data``    — one batched snapshot request for the whole universe; daily
   history fetched once per session. Requests per cycle do not grow with the universe.
6. ``exit_positions`` / ``enter_positions`` — strategies -> AI analyzer -> risk + PDT ->
   executor (``signal``, ``trade_intent``, ``risk_veto``, ``order_submitted``).
7. ``record_cycle``           — journal equity + one ``cycle_complete`` line.

:class:`TradingSystem` is the loop and the state it keeps between cycles; each step's body is
a step object in its own module, holding a reference to the loop (so that a backtest's
overrides and a test's replaced components are what the step sees): start-up
(``engine.startup_step``), the account (``engine.account_step``), safety and operator
commands (``engine.safety_step``), gap risk (``engine.gap_step``), market data
(``engine.market_data_step``), exits and entries (``engine.exits``, ``engine.entries``), the
cycle record and shutdown (``engine.cycle_record``), and failure handling
(``engine.fault_policy``). The loop keeps a method per step, which a backtest may override.

Emergency paths (circuit breaker, operator halt, SIGTERM) run inside the loop itself, never
in a detached task that could die silently.

Nothing the broker answers during trading ends the loop: only bad configuration at start-up
(keys refused before the first cycle, a state database of another timeline) or a signal do;
an operator ``halt`` flattens and latches while the loop keeps watching. A temporary error is
waited out; an operational or unknown one skips the cycle, is logged at ERROR
(``operational_error`` with the raw status, code and message) and alerted, and a run of
:attr:`TradingSystem.FAULTY_CYCLES_BEFORE_REDUCING` of them moves the trading state to
REDUCING (exits only), with backoff between the cycles.
"""

from __future__ import annotations

import asyncio
import time
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import AbstractSet, Any

import structlog

import strategies as strategy_registry
from engine.account_sanity import AccountSanity
from ai_analyzer import AIAnalyzer
from alerter import Alerter, AlertLevel
from core.clock import Clock
from core.errors import (
    AuthenticationFailed,
    BrokerError,
    ConfigError,
    TemporaryError,
)
from gap_risk_manager import GapRiskManager
from journal.journal import Journal
from market.market_data import BarSeries, MarketData
from market_status_manager import MarketStatus, MarketStatusManager
from broker.models import Account, DroppedItem, Order, Position, Snapshot
from order_executor import OrderExecutor
from pdt_manager import PDTManager
from engine.protections import ProtectionManager
from ai.sentiment import NewsSentiment
from engine.portfolio import TradingState
from risk_manager import RiskManager
from analytics.trade_ledger import TradeLedger
from engine.reconcile import Reconciler
from engine.stream_feed import TradeEventFeed
from engine.market_step import DATA_REJECTION_ALERT_CYCLES as DATA_REJECTION_ALERT_CYCLES  # re-exported
from engine.market_step import DataRejections, with_today
from engine.market_step import SessionHistory as _History
from market.trading_calendar import TradingCalendar
from engine.trading_state import SafetyStateMachine
from engine.opportunities import OpportunityBook
from engine.strategy_rotation import StrategyRotation
from engine.timeframe_bars import TimeframeBars
from engine.alert_rules import AlertRules
from engine.cycle_record import AccountSnapshot as AccountSnapshot  # re-exported
from engine.cycle_record import CycleRecorder, RunSummary
from engine.safety_step import SafetyStep
from engine.fault_policy import FaultPolicy
from engine.startup_step import StartupStep
from engine.account_step import AccountStep
from engine.gap_step import GapStep
from engine.market_data_step import BENCHMARK as BENCHMARK  # re-exported (the backtest reads it)
from engine.market_data_step import MarketDataStep
from engine.entries import EntryStep
from engine.exits import ExitStep

log = structlog.get_logger(__name__)


class TradingSystem:
    """Drives every component from one loop; see the module docstring for the steps."""

    def __init__(
        self,
        settings: Any,
        broker: Any,
        clock: Clock,
        *,
        journal: Journal,
        alerter: Alerter,
        calendar: TradingCalendar | None = None,
        analyzer: AIAnalyzer | None = None,
        run_id: str = "",
        sim_days: int | None = None,
        stop_event: asyncio.Event | None = None,
        regime_by_date: bool = False,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.clock = clock
        self.journal = journal
        self.alerter = alerter
        self.calendar = calendar or TradingCalendar()
        self.run_id = run_id
        self.sim_days = sim_days
        self.stop_event = stop_event or asyncio.Event()
        self.regime_by_date = regime_by_date
        self.market_status = MarketStatusManager(clock, self.calendar, broker)
        self.risk = RiskManager(settings)
        saved = journal.get_state("safety")
        self.safety = SafetyStateMachine.from_dict(settings, saved) if saved else SafetyStateMachine(settings)
        self.pdt = PDTManager(settings, self.calendar)
        self.pdt.load_day_trades(journal.day_trades(since=clock.now().date() - timedelta(days=30)))
        self.gap = GapRiskManager(settings)
        self.protections = ProtectionManager()
        locks = journal.get_state("protection_locks")
        if locks:
            self.protections.load_locks(locks.get("locks", []))
        self.executor = OrderExecutor(
            broker, clock, stop_loss=settings.trading.stop_loss,
            take_profit=settings.trading.take_profit, journal=journal,
        )
        self.strategies = strategy_registry.load_enabled(settings)
        news = NewsSentiment(broker, clock=clock) if settings.ai.use_news_sentiment else None
        self.analyzer = analyzer or AIAnalyzer(
            settings, clock, news_source=news,
            synthetic_market=settings.mode == "sim" and not settings.sim.data_dir)
        self.summary = RunSummary(state=self.safety.state.value)
        self.account_sanity = AccountSanity()
        self.reconciler = Reconciler(broker, clock, journal=journal, alerter=alerter, pdt=self.pdt,
                                     protections=self.protections, summary=self.summary,
                                     account_sanity=self.account_sanity)
        self.news = news
        self.trade_events = TradeEventFeed.for_system(self)  # trade_updates stream; polls when off
        self._history = _History()
        self._last_phase: str | None = None
        self._peak_equity: Decimal | None = None
        self._gap_assessed: set[tuple[date, str]] = set()
        self._entered_this_session: set[str] = set()
        self._failures_in_a_row = 0
        self._faulty_cycles_in_a_row = 0
        self._cycles_since_reconcile = 0
        self._pending_alerts: list[tuple[AlertLevel, str, str, str]] = []
        if getattr(broker, "on_item_dropped", False) is None:
            broker.on_item_dropped = self._alert_dropped_item
        self._defensive = False
        self._gap_defensive: dict[str, Any] = journal.get_state("defensive") or {}
        self._last_equity: Decimal | None = None
        # Safety never waits on messaging: alerts are delivered beside the loop, not in it.
        if hasattr(alerter, "deliver_in_background"):
            alerter.deliver_in_background()
        self._data_rejections = DataRejections(alerter)
        self.rotation = StrategyRotation(settings)  # issue 18: regime rotation, lifetimes, timeframes
        self.opportunities = OpportunityBook(settings, clock)
        self.timeframe_bars = TimeframeBars(settings)
        self.alert_rules = AlertRules(alerter, settings, clock, journal)
        self.faults = FaultPolicy(self)  # failed steps: skip, alert, back off, REDUCING after a run
        self.startup_step = StartupStep(self)  # reconcile and protect before the first cycle
        self.account_step = AccountStep(self)  # step 2: the account reading, the session baseline
        self.safety_step = SafetyStep(self)  # step 3: operator commands, breaker, emergency exits
        self.gap_step = GapStep(self)  # step 4: gap risk pre-market and at the open
        self.market_data_step = MarketDataStep(self)  # step 5: snapshots, data checks, defensive mode
        self.exits = ExitStep(self)  # step 6: strategy exits
        self.entries = EntryStep(self)  # step 6: entries
        self.recorder = CycleRecorder(self)  # step 7 and the shutdown record

    @property
    def stream_status(self) -> str:
        """The trade stream's state for ``/health`` (ops.telemetry picks this up)."""
        return self.trade_events.stream_status

    def _alert_dropped_item(self, item: DroppedItem) -> None:
        """The gateway dropped an item the broker sent but no one can use: alert (next flush).

        Trading objects (orders, positions, fills) are critical: the daemon is now blind to
        one of them. Alerts are keyed per model, so the alerter's throttle keeps repeats quiet.
        """
        trading = item.model in ("Order", "Position", "Activity", "Account")
        level = AlertLevel.CRITICAL if trading else AlertLevel.WARNING
        what = f"{item.model} {item.item_id}" if item.item_id else item.model
        message = f"{item.where}: {what} dropped, unreadable {', '.join(item.fields)} ({item.cause})"
        self._pending_alerts.append((level, f"Broker sent an unusable {item.model}", message,
                                     f"broker_item_dropped:{item.model}"))

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> RunSummary:
        """Run until stopped (signal, operator, or ``sim_days`` sessions), then shut down."""
        log.info("system_start", run_id=self.run_id, mode=self.settings.mode,
                 symbols=list(self.settings.scanning.symbols),
                 strategies=[s.name for s in self.strategies], state=self.safety.state.value)
        try:
            while not self.stop_event.is_set():
                status = await self.step()
                if self._sessions_done() or self.fatal_error is not None:
                    break
                if status is not None:
                    await self.faults.sleep_until_next_cycle(status, backoff=self._faulty_cycles_in_a_row > 0)
        finally:
            await self.trade_events.stop()
            await self.shutdown()
        return self.summary

    _started = False

    async def step(self) -> MarketStatus | None:
        """One turn of the loop without the sleep after it: start-up until it has worked,
        the market status, then a cycle, or the wait for the next session when closed.

        Returns the status a cycle ran in, else None (it paused after a broker error, waited
        for the market, or the daemon is done). Nothing the broker answers escapes it; only
        the keys refused before the first cycle stop the daemon (``fatal_error``).
        """
        try:
            if not self._started:
                self._started = await self.startup()
            if self._started:
                await self.trade_events.start()
            status = await self.refresh_market_status()
        except TemporaryError as exc:
            log.warning("broker_unavailable", error=str(exc), step="market_status")
            if self.trader_alerts and self._last_phase in ("pre", "regular", "post"):
                await self.alert_rules.connection_lost("broker", str(exc))
            await self.faults.pause(self.faults.failure_backoff())
            return None
        except BrokerError as exc:  # operational, unclassified, or any answer nobody expected here
            if not self._started and isinstance(exc, AuthenticationFailed):
                # the keys are refused before the first cycle: configuration, not trading
                await self.faults.stop_on_operational_error(exc)
                return None
            await self.faults.on_operational_error(exc, step="startup" if not self._started else "market_status")
            await self.faults.pause(self.faults.failure_backoff())
            return None
        except Exception as exc:  # a bug or bad data must not end the safety loop either
            if isinstance(exc, ConfigError) and self.summary.cycles == 0:
                raise  # bad start-up configuration (a state DB of another timeline): exit 2
            self._faulty_cycles_in_a_row += 1
            step = "startup" if not self._started else "market_status"
            log.exception("cycle_failed", step=step, error=repr(exc),
                          in_a_row=self._faulty_cycles_in_a_row)
            await self.alerter.send(AlertLevel.CRITICAL, "Trading step failed", f"{step}: {exc!r}",
                                    key="cycle_failed")
            await self.faults.reduce_after_faults(repr(exc))
            await self.faults.pause(self.faults.failure_backoff())
            return None
        if self._sessions_done():
            return None
        if status.is_closed:
            target = status.next_event
            if status.source == "broker":  # the broker disagreed: look again soon
                target = min(target, self.clock.now() + timedelta(minutes=15))
            await self.market_status.wait_until(target, stop=self.stop_event, label=status.next_event_phase)
            return None
        async with self.trade_events.lock:  # event-driven protection and catch-ups wait for the cycle
            await self.trade_events.reconcile_if_due()  # the stream's periodic REST reconciliation
            await self.run_cycle(status)
        return status

    fatal_error: str | None = None
    #: The trader's alerts (engine/alert_rules.py: losses, fills, rate limit, stale data,
    #: outages, daily summary); a backtest turns them off. Emergency outcomes always alert.
    trader_alerts = True
    #: Failed cycles in a row (operational, unclassified or unexpected errors) that move the
    #: trading state to REDUCING. The daemon itself never stops for them.
    FAULTY_CYCLES_BEFORE_REDUCING = 3

    def _sessions_done(self) -> bool:
        return self.sim_days is not None and self.summary.sessions >= self.sim_days

    async def startup(self) -> bool:
        """Reconcile with the broker and protect what it holds before trading anything
        (:class:`engine.startup_step.StartupStep`); False, and retried, until it has worked."""
        return await self.startup_step.startup()

    async def reconcile(self, snapshot: AccountSnapshot, *, full: bool = True) -> None:
        """Journal vs broker (see :meth:`Reconciler.reconcile`): the broker wins; adopt and
        flag, never place an order. ``full`` at start-up, the periodic check otherwise."""
        await self.reconciler.reconcile(snapshot.open_orders, snapshot.positions, full=full)

    async def run_cycle(self, status: MarketStatus) -> None:
        """One iteration of the loop (market open or extended hours)."""
        started = time.perf_counter()
        cpu_started = time.process_time()
        requests_before = getattr(self.broker, "request_count", 0)
        self.summary.cycles += 1
        try:
            await self.apply_operator_commands()
            snapshot = await self.refresh_account()
            await self.executor.manage_open_orders(snapshot.open_orders)
            snapshot = await self.enforce_safety(snapshot, status)
            await self.monitor_gap_risk(snapshot, status)
            symbols_evaluated = 0
            if status.is_regular and self.safety.state in (TradingState.ACTIVE, TradingState.REDUCING) \
                    and not snapshot.rejected:
                data = await self.refresh_market_data(status)
                symbols_evaluated = len(data)
                await self.exit_positions(data, snapshot, status)
                if self.safety.allows_entry():
                    await self.enter_positions(data, snapshot, status)
            self._cycles_since_reconcile += 1
            if self._cycles_since_reconcile >= RECONCILE_EVERY_CYCLES:
                self._cycles_since_reconcile = 0
                await self.reconcile(snapshot, full=False)
            self.record_cycle(snapshot, status, started, cpu_started, requests_before, symbols_evaluated)
            if self.trader_alerts and not snapshot.rejected:
                await self.alert_rules.after_cycle(snapshot.positions, getattr(self.broker, "rate_limiter", None))
            while self._pending_alerts:
                level, title, message, key = self._pending_alerts.pop(0)
                await self.alerter.send(level, title, message, key=key)
            self._failures_in_a_row = 0
            self._faulty_cycles_in_a_row = 0
        except TemporaryError as exc:
            self._failures_in_a_row += 1
            await self.on_broker_unavailable(exc, status)
        except BrokerError as exc:  # operational, unclassified, or an outcome/rejection nobody caught
            self._failures_in_a_row += 1
            await self.faults.on_operational_error(exc, step="cycle")
        except Exception as exc:  # a bug or bad data must not kill the safety loop silently
            self._failures_in_a_row += 1
            self._faulty_cycles_in_a_row += 1
            log.exception("cycle_failed", error=repr(exc), failures_in_a_row=self._failures_in_a_row)
            await self.alerter.send(AlertLevel.CRITICAL, "Trading cycle failed", repr(exc), key="cycle_failed")
            await self.faults.reduce_after_faults(repr(exc))

    # -- step 1 -----------------------------------------------------------------------------

    async def refresh_market_status(self) -> MarketStatus:
        status = await self.market_status.refresh()
        session = status.session
        if self._last_phase == "regular" and status.phase != "regular":
            self.summary.sessions += 1
            log.info("session_complete", sessions=self.summary.sessions, phase=status.phase)
            await self.record_closing_snapshot()
            if self.trader_alerts:
                await self.alert_rules.daily_summary(self.safety.session_date, state=self.safety.state.value,
                                                     start_equity=self.safety.session_start_equity,
                                                     end_equity=self._last_equity)
        if session is not None and session != self.safety.session_date:
            await self.start_session(session)
        self._last_phase = status.phase
        return status

    async def start_session(self, session: date) -> None:
        """A new session's baseline, believed (:meth:`engine.account_step.AccountStep.start_session`)."""
        await self.account_step.start_session(session)

    # -- step 2 -----------------------------------------------------------------------------

    async def refresh_account(self) -> AccountSnapshot:
        """Account, positions, open orders and new fills, checked for sense before use
        (:meth:`engine.account_step.AccountStep.refresh_account`; ``rejected`` when not believed)."""
        return await self.account_step.refresh_account()

    async def record_fills(self) -> None:
        """Fills since the last cycle: journal (dedup by execution id), ledger, day trades."""
        await self.reconciler.record_fills()

    @property
    def ledger(self) -> TradeLedger:
        """The trade ledger (open lots, closed trades), kept by the reconciler."""
        return self.reconciler.ledger

    @property
    def _last_fill_at(self) -> datetime | None:
        """The fills cursor: the newest fill recorded (a backtest reads it to skip cycles)."""
        return self.reconciler.last_fill_at

    # -- step 3 -----------------------------------------------------------------------------

    async def apply_operator_commands(self) -> None:
        """``halt`` / ``rearm`` queued in the journal, in order (:mod:`engine.safety_step`)."""
        await self.safety_step.apply_operator_commands()

    async def enforce_safety(self, snapshot: AccountSnapshot, status: MarketStatus) -> AccountSnapshot:
        """Breaker, drawdown, emergency exits and protection, every cycle, before anything else
        (:meth:`engine.safety_step.SafetyStep.enforce_safety`)."""
        return await self.safety_step.enforce_safety(snapshot, status)

    def _persist_safety(self) -> None:
        self.safety_step.persist()

    async def on_broker_unavailable(self, exc: TemporaryError, status: MarketStatus) -> None:
        """Disconnect policy: protection orders live at the broker; alert during the session."""
        await self.safety_step.on_broker_unavailable(exc, status)

    # -- step 4 -----------------------------------------------------------------------------

    async def monitor_gap_risk(self, snapshot: AccountSnapshot, status: MarketStatus) -> None:
        """Pre-market and the open (:meth:`engine.gap_step.GapStep.monitor_gap_risk`)."""
        await self.gap_step.monitor_gap_risk(snapshot, status)

    async def record_closing_snapshot(self) -> None:
        await self.gap_step.record_closing_snapshot()

    # -- step 5 -----------------------------------------------------------------------------

    def universe(self) -> list[str]:
        symbols = list(dict.fromkeys(self.settings.scanning.symbols))
        return symbols

    async def refresh_market_data(self, status: MarketStatus) -> dict[str, MarketData]:
        """One batched snapshot request for the universe, checked, one ``MarketData`` per symbol
        (:meth:`engine.market_data_step.MarketDataStep.refresh_market_data`)."""
        return await self.market_data_step.refresh_market_data(status)

    def _defensive_active(self, status: MarketStatus, equity: Decimal | None = None,
                          benchmark: BarSeries | None = None, *, baseline: Decimal | None = None) -> bool:
        """Defensive mode (:meth:`engine.market_data_step.MarketDataStep.defensive_active`)."""
        return self.market_data_step.defensive_active(status, equity, benchmark, baseline=baseline)

    async def _load_history(self, symbols: list[str], status: MarketStatus) -> None:
        """The session's daily history (a backtest reads it from the replay instead)."""
        await self.market_data_step.load_history(symbols, status)

    def _with_today(self, symbol: str, snap: Snapshot | None) -> BarSeries | None:
        return with_today(self._history.bars.get(symbol), snap)

    # -- step 6 -----------------------------------------------------------------------------

    async def exit_positions(self, data: dict[str, MarketData], snapshot: AccountSnapshot,
                             status: MarketStatus) -> None:
        """Strategy exits for held positions (:class:`engine.exits.ExitStep`)."""
        await self.exits.exit_positions(data, snapshot, status)

    async def enter_positions(self, data: dict[str, MarketData], snapshot: AccountSnapshot,
                              status: MarketStatus) -> None:
        """Strategies -> AI analyzer -> risk and PDT -> bracket orders (:class:`engine.entries.EntryStep`)."""
        await self.entries.enter_positions(data, snapshot, status)

    async def entry_candidates(self, data: dict[str, MarketData], busy: AbstractSet[str], now: datetime, *,
                               log_signals: bool = True) -> list[tuple[Any, MarketData]]:
        """The symbols worth an intent, each with its strongest buy signal (the backtest
        narrows ``data`` first; :meth:`engine.entries.EntryStep.entry_candidates`)."""
        return await self.entries.entry_candidates(data, busy, now, log_signals=log_signals)

    # -- step 7 -----------------------------------------------------------------------------

    def _snapshot_data(self, snapshot: AccountSnapshot, phase: str, now: datetime) -> dict[str, Any]:
        """What ``python main.py status`` shows of a broker snapshot (:mod:`engine.cycle_record`)."""
        return self.recorder.snapshot_data(snapshot, phase, now)

    def record_cycle(self, snapshot: AccountSnapshot, status: MarketStatus, started: float,
                     cpu_started: float, requests_before: int, symbols: int) -> None:
        """Journal equity and one ``cycle_complete`` line (:class:`engine.cycle_record.CycleRecorder`)."""
        self.recorder.record_cycle(snapshot, status, started, cpu_started, requests_before, symbols)

    def remember_last_cycle(self, at: datetime, data: dict[str, Any]) -> None:
        """The latest cycle, for ``python main.py status`` (journaled every cycle)."""
        self.journal.last_cycle(at, data)

    # -- shutdown ---------------------------------------------------------------------------

    SHUTDOWN_BROKER_SECONDS = 2.0  # when stopping on request (signal, halt, fatal error)
    SHUTDOWN_BROKER_SECONDS_UNHURRIED = 30.0  # at the natural end of a run (--sim-days)

    async def shutdown(self) -> None:
        """Log open positions and their protection, flush state, ``system_shutdown``.

        The broker calls here are only for the record, so on a stop request they get
        ``SHUTDOWN_BROKER_SECONDS`` of wall time together: a broker that hangs must not hold
        up a stop (SIGTERM ends the daemon within 10 s).
        """
        bound = (self.SHUTDOWN_BROKER_SECONDS if self.stop_event.is_set()
                 else self.SHUTDOWN_BROKER_SECONDS_UNHURRIED)
        await self.recorder.shutdown(bound)


RECONCILE_EVERY_CYCLES = 30
