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
from dataclasses import replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import AbstractSet, Any, Sequence

import numpy as np
import structlog

import strategies as strategy_registry
from engine.account_sanity import AccountSanity
from ai_analyzer import AIAnalyzer, TradeIntent
from alerter import Alerter, AlertLevel
from core.clock import Clock, pause_clock, sleep_or_stop, to_exchange_time
from core.errors import (
    AuthenticationFailed,
    BrokerError,
    ConfigError,
    OperationalError,
    TemporaryError,
)
from gap_risk_manager import GapRiskManager
from journal.journal import Journal
from market.market_data import BarSeries, MarketData, price_problem
from market_status_manager import MarketStatus, MarketStatusManager
from broker.models import Account, DroppedItem, Order, Position, Snapshot
from order_executor import OrderExecutor
from pdt_manager import AccountView, OrderCheck, PDTManager
from engine.protections import ProtectionManager
from ai.sentiment import NewsSentiment
from engine.portfolio import PendingEntry, TradingState
from risk_manager import RiskManager
from analytics.trade_ledger import TradeLedger
from engine.reconcile import Reconciler
from engine.stream_feed import TradeEventFeed
from engine.market_step import DATA_REJECTION_ALERT_CYCLES as DATA_REJECTION_ALERT_CYCLES  # re-exported
from engine.market_step import DataRejections, completed_history, snapshot_problem, with_today
from engine.market_step import SessionHistory as _History
from market.trading_calendar import TradingCalendar
from engine.trading_state import SafetyStateMachine, Transition
from engine.opportunities import OpportunityBook, snapshot_price_time
from engine.strategy_rotation import StrategyRotation
from engine.timeframe_bars import TimeframeBars
from engine.alert_rules import AlertRules
from engine.cycle_record import AccountSnapshot as AccountSnapshot  # re-exported
from engine.cycle_record import CycleRecorder, RunSummary
from engine.safety_step import SafetyStep
from engine.account_step import AccountStep

log = structlog.get_logger(__name__)

ZERO = Decimal(0)
BENCHMARK = "SPY"


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
        self._closes_recorded: date | None = None
        self._gap_assessed: set[tuple[date, str]] = set()
        self._entered_this_session: set[str] = set()
        self._failures_in_a_row = 0
        self._faulty_cycles_in_a_row = 0
        self._cycles_since_reconcile = 0
        self._pending_alerts: list[tuple[AlertLevel, str, str, str]] = []
        if getattr(broker, "on_item_dropped", False) is None:
            broker.on_item_dropped = self._alert_dropped_item
        self._intent_seq = 0
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
        self.account_step = AccountStep(self)  # step 2: the account reading, the session baseline
        self.safety_step = SafetyStep(self)  # step 3: operator commands, breaker, emergency exits
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
                    await self._sleep_until_next_cycle(status, backoff=self._faulty_cycles_in_a_row > 0)
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
            await self._pause(self._failure_backoff())
            return None
        except BrokerError as exc:  # operational, unclassified, or any answer nobody expected here
            if not self._started and isinstance(exc, AuthenticationFailed):
                # the keys are refused before the first cycle: configuration, not trading
                await self._stop_on_operational_error(exc)
                return None
            await self._on_operational_error(exc, step="startup" if not self._started else "market_status")
            await self._pause(self._failure_backoff())
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
            await self._reduce_after_faults(repr(exc))
            await self._pause(self._failure_backoff())
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

    async def _stop_on_operational_error(self, exc: OperationalError) -> None:
        """Only for the keys refused at start-up: a configuration error, before any trading."""
        log.critical("operational_error", error=str(exc), code=exc.code, status=exc.status,
                     message=exc.message, step="startup", fatal=True)
        await self.alerter.send(AlertLevel.EMERGENCY, "Trading not started: the broker refuses the keys",
                                str(exc), key="operational_error")
        self.fatal_error = str(exc)
        self.stop_event.set()

    async def _on_operational_error(self, exc: BrokerError, *, step: str) -> None:
        """Skip what failed, keep the raw answer in the log, alert, and count the run."""
        self._faulty_cycles_in_a_row += 1
        log.error("operational_error", step=step, error_type=type(exc).__name__,
                  category=exc.category.value, status=exc.status, code=exc.code,
                  message=exc.message, request_id=exc.request_id, body=exc.body,
                  in_a_row=self._faulty_cycles_in_a_row)
        await self.alerter.send(AlertLevel.CRITICAL, "Broker error: action skipped, trading continues",
                                f"{exc} (step {step}, {self._faulty_cycles_in_a_row} in a row)",
                                key="operational_error")
        await self._reduce_after_faults(f"{type(exc).__name__}: {exc}")

    async def _reduce_after_faults(self, last: str) -> None:
        """A run of failed cycles: exits only (REDUCING) until a human has looked."""
        if self._faulty_cycles_in_a_row < self.FAULTY_CYCLES_BEFORE_REDUCING:
            return
        transitions = self.safety.reduce(
            f"{self._faulty_cycles_in_a_row} cycles in a row failed on broker errors nobody "
            f"classified (last: {last}): exits only", self.clock.now())
        if transitions:
            self._persist_safety()
            await self._announce(transitions)

    def _failure_backoff(self) -> float:
        return min(5.0 * 2 ** min(self._failures_in_a_row, 6), 300.0)

    async def _pause(self, seconds: float) -> None:
        """Back off after a broker failure: in wall time when the clock follows the broker
        (waiting on it would ask the failing broker), and always waking on a stop."""
        self._failures_in_a_row += 1
        await sleep_or_stop(pause_clock(self.clock), seconds, self.stop_event)

    def _sessions_done(self) -> bool:
        return self.sim_days is not None and self.summary.sessions >= self.sim_days

    async def _sleep_until_next_cycle(self, status: MarketStatus, *, backoff: bool = False) -> None:
        """The next cycle at the interval (or the next market event); after failed cycles
        (``backoff``) no sooner than the failure backoff."""
        interval = float(self.settings.trading.cycle_interval_seconds)
        until_event = (status.next_event - self.clock.now()).total_seconds()
        delay = max(1.0, min(interval, until_event)) if until_event > 0 else interval
        if backoff:
            delay = max(delay, min(5.0 * 2 ** min(self._faulty_cycles_in_a_row - 1, 6), 300.0))
        await sleep_or_stop(self.clock, delay, self.stop_event)

    async def startup(self) -> bool:
        """Reconcile with the broker and protect what it holds before trading anything.

        Returns False (and is retried by the loop) while the broker cannot be reached.
        """
        try:
            await self.apply_operator_commands()
            snapshot = await self.refresh_account()
        except TemporaryError as exc:
            log.warning("startup_broker_unavailable", error=str(exc))
            await self._pause(self._failure_backoff())
            return False
        if snapshot.rejected:  # no believable account yet: nothing to start from
            log.warning("startup_deferred", reason="account reading not confirmed")
            await self._pause(self._failure_backoff())
            return False
        self.summary.start_equity = snapshot.account.equity
        await self.reconcile(snapshot)
        self.account_sanity.accept(snapshot.account, snapshot.positions)  # its fills were in that reading
        self._peak_equity = snapshot.account.equity
        unprotected = await self.executor.protect_positions(
            snapshot.positions, snapshot.open_orders, startup=True)
        if unprotected:
            lines = [
                f"{u['symbol']}: qty {u['qty']} (protected {u['protected_qty']}), "
                f"P&L {u['unrealized_pl']}, value {u['market_value']}"
                for u in unprotected
            ]
            await self.alerter.send(
                AlertLevel.CRITICAL, "STARTUP ALERT: unprotected positions",
                "Positions without a protective stop for their full quantity were found at start-up "
                "and given one:\n" + "\n".join(lines),
                key="startup_unprotected", fields={"positions": unprotected},
            )
        await self._remember_reconciled_state(snapshot, protected_now=bool(unprotected))
        self._failures_in_a_row = 0
        return True

    async def _remember_reconciled_state(self, snapshot: AccountSnapshot, *, protected_now: bool) -> None:
        """What ``status`` shows from now on: the broker's state as reconciled at start-up,
        not the last cycle of the previous run (a restart at night would otherwise show
        positions and orders the broker no longer has until the market opens)."""
        if protected_now:  # start-up placed protective orders: show them
            try:
                snapshot = await self.refresh_account()
            except TemporaryError as exc:
                log.warning("startup_snapshot_stale", error=str(exc))
        data = self._snapshot_data(snapshot, "startup", self.clock.now())
        data["source"] = "startup_reconciliation"
        self.remember_last_cycle(self.clock.now(), data)

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
            await self._on_operational_error(exc, step="cycle")
        except Exception as exc:  # a bug or bad data must not kill the safety loop silently
            self._failures_in_a_row += 1
            self._faulty_cycles_in_a_row += 1
            log.exception("cycle_failed", error=repr(exc), failures_in_a_row=self._failures_in_a_row)
            await self.alerter.send(AlertLevel.CRITICAL, "Trading cycle failed", repr(exc), key="cycle_failed")
            await self._reduce_after_faults(repr(exc))

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


    def _opened_in(self, symbol: str, session: date | None) -> bool:
        """Whether an open lot of ``symbol`` was bought in ``session`` (closing it = a day trade)."""
        return session is not None and any(
            to_exchange_time(lot.at).date() == session for lot in self.ledger.open_lots(symbol))

    def _strategy_of_order(self, broker_order_id: str | None) -> str | None:
        for tracked in self.executor.tracked.values():
            if tracked.broker_order_id == broker_order_id:
                return tracked.strategy
        if broker_order_id and hasattr(self.journal, "strategy_for_order"):
            return self.journal.strategy_for_order(broker_order_id)
        return None

    # -- step 3 -----------------------------------------------------------------------------

    async def apply_operator_commands(self) -> None:
        """``halt`` / ``rearm`` queued in the journal, in order (:mod:`engine.safety_step`)."""
        await self.safety_step.apply_operator_commands()

    async def enforce_safety(self, snapshot: AccountSnapshot, status: MarketStatus) -> AccountSnapshot:
        """Breaker, drawdown, emergency exits and protection, every cycle, before anything else
        (:meth:`engine.safety_step.SafetyStep.enforce_safety`)."""
        return await self.safety_step.enforce_safety(snapshot, status)

    async def _announce(self, transitions: Sequence[Transition]) -> None:
        await self.safety_step.announce(transitions)

    def _persist_safety(self) -> None:
        self.safety_step.persist()

    async def on_broker_unavailable(self, exc: TemporaryError, status: MarketStatus) -> None:
        """Disconnect policy: protection orders live at the broker; alert during the session."""
        await self.safety_step.on_broker_unavailable(exc, status)

    # -- step 4 -----------------------------------------------------------------------------

    async def monitor_gap_risk(self, snapshot: AccountSnapshot, status: MarketStatus) -> None:
        if status.session is None or status.phase not in ("pre", "regular") or snapshot.rejected:
            return
        key = (status.session, status.phase)
        if key in self._gap_assessed or not snapshot.positions:
            return
        symbols = [p.symbol for p in snapshot.positions]
        quotes = await self.broker.get_latest_trades(symbols)
        self._gap_assessed.add(key)
        # A price far off the position's last close is a feed error, not a gap to act on.
        references = {p.symbol: p.lastday_price or p.avg_entry_price for p in snapshot.positions}
        prices: dict[str, Decimal] = {}
        for symbol, trade in quotes.items():
            if not getattr(trade, "p", None):
                continue
            reference = references.get(symbol)
            problem = price_problem(trade.p, float(reference) if reference else None)
            if problem is not None:
                log.warning("market_data_rejected", symbol=symbol, reason=f"latest trade {problem}", source="gap_risk")
                continue
            prices[symbol] = Decimal(str(trade.p))
        closing = self.journal.get_state("closing_snapshot")
        if self.gap.close_date is None:
            if not closing:
                return
            self.gap.load_close(closing)
        held = {p.symbol: p.qty for p in snapshot.positions}
        report = self.gap.assess(prices, held, status.phase, equity=snapshot.account.equity)
        payload = report.to_dict()
        log.info("gap_risk_assessed", **payload)
        if report.alerts:
            level = AlertLevel.CRITICAL if report.defensive_required else AlertLevel.WARNING
            await self.alerter.send(level, f"Gap risk {report.level.value}",
                                    "; ".join(str(a.to_dict()) for a in report.alerts),
                                    key=f"gap:{status.session}:{status.phase}", fields=payload)
        if report.defensive_required:
            self._gap_defensive = {"active": True, "reason": f"gap risk {report.level.value}",
                                   "session": status.session.isoformat()}
            self.journal.set_state("defensive", self._gap_defensive)

    async def record_closing_snapshot(self) -> None:
        try:
            positions = await self.broker.list_positions()
        except BrokerError as exc:  # any answer: the session still counts once
            log.warning("closing_snapshot_failed", error=str(exc), error_type=type(exc).__name__)
            return
        closes = {p.symbol: p.current_price for p in positions if p.current_price is not None}
        session = self.safety.session_date
        if session is None:
            return
        snapshot = self.gap.record_close(session, closes, {p.symbol: p.qty for p in positions})
        self.journal.set_state("closing_snapshot", snapshot)

    # -- step 5 -----------------------------------------------------------------------------

    def universe(self) -> list[str]:
        symbols = list(dict.fromkeys(self.settings.scanning.symbols))
        return symbols

    async def refresh_market_data(self, status: MarketStatus) -> dict[str, MarketData]:
        symbols = self.universe()
        wanted = list(dict.fromkeys(symbols + [BENCHMARK]))
        if self._history.session != status.session:
            await self._load_history(wanted, status)
        snapshots = await self.broker.get_snapshots(wanted)
        self.trade_events.mark_snapshots(snapshots)
        if self.trader_alerts:
            await self.alert_rules.stale_data(snapshots, self.clock.now())
        rejected = {**self._history.rejected, **dict(getattr(self.broker, "data_rejections", None) or {})}
        for symbol in wanted:
            if symbol not in rejected and symbol in snapshots:
                problem = snapshot_problem(snapshots[symbol], self._history.bars.get(symbol))
                if problem is not None:
                    rejected[symbol] = problem
                    log.warning("market_data_rejected", symbol=symbol, reason=problem, source="snapshot")
        await self._data_rejections.track(wanted, rejected)
        self.reconciler.observe_prices({s: v for s, v in snapshots.items() if s not in rejected})  # MFE/MAE
        now = self.clock.now()
        benchmark = None if BENCHMARK in rejected else self._with_today(BENCHMARK, snapshots.get(BENCHMARK))
        regime = self.analyzer.detect_regime(benchmark) if benchmark is not None and len(benchmark) >= 60 else None
        defensive = self._defensive_active(status, self._last_equity, benchmark)
        frames = await self.timeframe_bars.refresh(self.broker, [s for s in symbols if s not in rejected], now,
                                                   snapshots)
        data: dict[str, MarketData] = {}
        for symbol in symbols:
            snap = snapshots.get(symbol)
            if symbol in rejected:
                continue
            daily = self._with_today(symbol, snap)
            if snap is None or daily is None or len(daily) < 30:
                continue
            last = _last_price(snap)
            if last is None:
                continue
            quote = snap.latest_quote
            bid = float(quote.bp) if quote is not None and quote.bp else None
            ask = float(quote.ap) if quote is not None and quote.ap else None
            prev_close = float(snap.prev_daily_bar.c) if snap.prev_daily_bar is not None else float(daily.close[-2])
            data[symbol] = MarketData(
                symbol=symbol, now=now, daily=daily, intraday=None, last_price=last, bid=bid, ask=ask,
                prev_close=prev_close, benchmark=benchmark, regime=regime, defensive=defensive, news=[],
                last_price_at=snapshot_price_time(snap), timeframes=frames.get(symbol, {}),
            )
        return data

    def _defensive_active(self, status: MarketStatus, equity: Decimal | None = None,
                          benchmark: BarSeries | None = None, *, baseline: Decimal | None = None) -> bool:
        """Defensive mode: near the breaker, in drawdown, in high volatility or after a gap.

        The day's loss is measured from ``baseline`` (default: the session's starting equity)."""
        d = self.settings.defensive
        reasons: list[str] = []
        state = self._gap_defensive  # kept in memory; journaled when set (no read per cycle)
        if state.get("active") and status.session and state.get("session") == status.session.isoformat():
            reasons.append(str(state.get("reason", "gap risk")))
        if baseline is None:
            baseline = self.safety.session_start_equity
        if equity is not None and baseline:
            day_loss = float((baseline - equity) / baseline)
            near = float(self.settings.risk.circuit_breaker_loss) * float(d.activation_breaker_fraction)
            if day_loss >= near:
                reasons.append(f"day loss {day_loss:.2%} is within reach of the breaker")
        if equity is not None and self._peak_equity:
            drawdown = float((self._peak_equity - equity) / self._peak_equity)
            if drawdown >= float(d.drawdown_threshold):
                reasons.append(f"drawdown {drawdown:.2%} from the peak")
        if benchmark is not None and len(benchmark) >= 21:
            closes = benchmark.close[-21:]
            vol = float(np.std(np.diff(np.log(closes)), ddof=1))
            if vol >= float(d.volatility_threshold):
                reasons.append(f"benchmark daily volatility {vol:.2%}")
        active = bool(reasons)
        if active != self._defensive:
            self._defensive = active
            log.info("defensive_mode", active=active, reasons=reasons)
        return active

    async def _load_history(self, symbols: list[str], status: MarketStatus) -> None:
        now = self.clock.now()
        lookback = max(int(self.settings.strategy.lookback_days) * 2, 300)
        start = now - timedelta(days=lookback)
        bars = await self.broker.get_bars(symbols, timeframe="1Day", start=start, end=now)
        rejected = dict(getattr(self.broker, "data_rejections", None) or {})
        self._history = completed_history(bars, status.session, rejected)
        today = status.session
        log.info("history_loaded", symbols=len(self._history.bars), session=today.isoformat() if today else None)

    def _with_today(self, symbol: str, snap: Snapshot | None) -> BarSeries | None:
        return with_today(self._history.bars.get(symbol), snap)

    # -- step 6 -----------------------------------------------------------------------------

    async def exit_positions(self, data: dict[str, MarketData], snapshot: AccountSnapshot,
                             status: MarketStatus) -> None:
        """Strategy exits for held positions (a ``sell`` signal, or the maximum holding time)."""
        for position in snapshot.positions:
            md = data.get(position.symbol)
            if md is None or position.qty <= 0:
                continue
            reason = None
            # A position answers to the strategy that opened it (and to the defensive one).
            # Another strategy's sell only takes profit on a position held a while: mean
            # reversion calling a fresh momentum entry "overbought" a minute after the buy would
            # otherwise churn every trade. Positions of unknown origin listen to every strategy.
            lots = self.ledger.open_lots(position.symbol)
            owners = {lot.strategy for lot in lots} - {None}
            held_for = self.clock.now() - min((lot.at for lot in lots), default=self.clock.now())
            in_profit = (position.unrealized_pl or ZERO) > 0
            for strategy in self.strategies:
                foreign = bool(owners) and strategy.name not in owners and strategy.name != "defensive"
                if foreign and not (in_profit and held_for >= MIN_HOLD_BEFORE_FOREIGN_EXIT):
                    continue
                try:
                    signal = await strategy.evaluate_opportunity(position.symbol, md)
                except ArithmeticError as exc:  # data no check foresaw: this symbol, not the loop
                    _reject_on_arithmetic(position.symbol, strategy.name, exc)
                    break
                if signal.action == "sell":
                    self._log_signal(signal)
                    reason = f"{signal.strategy}: {signal.reasoning}"
                    break
            held_days = self.ledger.holding_sessions(position.symbol, self.clock.now(), self.calendar)
            max_hold = int(self.settings.mean_reversion.max_hold_days)
            if reason is None and owners == {"mean_reversion"} and held_days is not None and held_days > max_hold:
                reason = f"mean reversion held {held_days} sessions, more than the maximum of {max_hold}"
            if reason is None:
                continue
            check = OrderCheck(symbol=position.symbol, side="sell", qty=abs(position.qty),
                               price=Decimal(str(md.last_price)), is_closing=True,
                               opens_today=self._opened_in(position.symbol, status.session),
                               is_risk_exit=False)
            decision = self.pdt.check_order(check, AccountView.from_account(snapshot.account), status.session)
            if not decision.allowed:
                log.info("exit_deferred", symbol=position.symbol, reason=decision.reason)
                continue
            log.info("strategy_exit", symbol=position.symbol, reason=reason)
            # No re-entry in the session a position was exited: no churn between strategies.
            self._entered_this_session.add(position.symbol)
            await self.executor.emergency_exit(position.symbol, reason, phase=status.phase, kind="exit")

    async def enter_positions(self, data: dict[str, MarketData], snapshot: AccountSnapshot,
                              status: MarketStatus) -> None:
        """Strategies -> AI analyzer -> ranked intents -> risk and PDT -> bracket orders."""
        held = {p.symbol for p in snapshot.positions}
        busy = held | {o.symbol for o in snapshot.open_orders if o.is_open} | self._entered_this_session
        now = self.clock.now()
        if self.protections.global_lock(now) is not None:
            return
        intents: list[TradeIntent] = []
        volatility: dict[str, float | None] = {}
        candidates = await self.entry_candidates(data, busy, now)
        self.opportunities.start_cycle(status.session, (sig.symbol for sig, _ in candidates))
        if candidates and self.news is not None:
            await self.news.prefetch(sig.symbol for sig, _ in candidates)  # one request for all
        for best, md in candidates:
            try:
                intent = await self.opportunities.intent_for(best, md, self.analyzer.analyze)
            except ArithmeticError as exc:  # data no check foresaw: this symbol, not the loop
                _reject_on_arithmetic(best.symbol, "ai_analyzer", exc)
                continue
            if intent is not None:
                intents.append(intent)
                volatility[intent.symbol] = _daily_volatility(md.daily)
        intents.sort(key=lambda i: i.confidence, reverse=True)
        portfolio = snapshot.portfolio
        account_view = AccountView.from_account(snapshot.account)
        for intent in intents:
            self.journal.record_intent(intent.intent_id, intent.symbol, intent.side, intent.strategy,
                                       float(intent.confidence), _intent_payload(intent), intent.created_at)
            log.info("trade_intent", intent_id=intent.intent_id, symbol=intent.symbol, side=intent.side,
                     strategy=intent.strategy, confidence=round(float(intent.confidence), 4),
                     entry_price=intent.entry_price, stop_price=intent.stop_price,
                     target_price=intent.target_price, reasoning=intent.reasoning)
            decision = self.risk.evaluate(intent, portfolio, volatility=volatility.get(intent.symbol))
            if not decision.approved:
                continue
            qty = decision.qty
            check = OrderCheck(symbol=intent.symbol, side="buy", qty=qty,
                               price=Decimal(str(intent.entry_price)), is_closing=False)
            pdt = self.pdt.check_order(check, account_view, status.session)
            if not pdt.allowed or pdt.qty <= 0:  # the PDT manager logged pdt_blocked with its reason
                continue
            qty = min(qty, pdt.qty)
            result = await self.executor.submit_bracket(intent, qty)
            if result.status == "rejected" and result.error_code == 40310100:
                self.pdt.block_symbol(intent.symbol, status.session)
            if result.status in ("submitted", "in_flight"):
                self.summary.orders_submitted += 1
                self._entered_this_session.add(intent.symbol)
                portfolio = replace(portfolio, pending_entries=portfolio.pending_entries + (
                    PendingEntry(symbol=intent.symbol, qty=qty, price=Decimal(str(intent.entry_price)),
                                 stop_price=Decimal(str(intent.stop_price)) if intent.stop_price else None),))

    async def entry_candidates(self, data: dict[str, MarketData], busy: AbstractSet[str], now: datetime, *,
                               log_signals: bool = True) -> list[tuple[Any, MarketData]]:
        """Each symbol of ``data`` not ``busy`` that passes the scanner and no protection locks
        at ``now``, with its strongest buy signal among the strategies (those with none are left
        out): what :meth:`enter_positions` hands the AI analyzer."""
        candidates: list[tuple[Any, MarketData]] = []
        if data:
            self.rotation.observe(next(iter(data.values())).benchmark)
        for symbol, md in data.items():
            if symbol in busy or not self._passes_scanner(md):
                continue
            if self.protections.is_locked(symbol, now) is not None:
                continue
            best = None
            for strategy in self.strategies:
                try:
                    signal = await strategy.evaluate_opportunity(symbol, md)
                except ArithmeticError as exc:  # data no check foresaw: this symbol, not the loop
                    _reject_on_arithmetic(symbol, strategy.name, exc)
                    best = None
                    break
                if signal.action == "buy":  # long only: a sell on a symbol not held is no trade
                    if log_signals:
                        self._log_signal(signal)
                    signal = self.rotation.apply(signal, defensive=md.defensive)  # None: not in this regime
                    if signal is not None and (best is None or self.rotation.rank(signal) > self.rotation.rank(best)):
                        best = signal
            if best is not None:
                candidates.append((best, md))
        return candidates

    def _passes_scanner(self, md: MarketData) -> bool:
        s = self.settings.scanning
        if not (s.min_price <= md.last_price <= s.max_price):
            return False
        spread = md.spread_pct
        if spread is not None and spread > s.max_spread:
            return False
        volume = md.daily.volume
        if len(volume) >= 21:
            avg = float(np.add.reduce(volume[-21:-1]) / 20)  # np.mean's own arithmetic, less overhead
            if avg < s.min_volume:
                return False
        return True

    @staticmethod
    def _log_signal(signal: Any) -> None:
        log.info("signal", symbol=signal.symbol, action=signal.action, strategy=signal.strategy,
                 confidence=round(float(signal.confidence), 4), reasoning=signal.reasoning,
                 stop_price=signal.stop_price, target_price=signal.target_price)

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


def _reject_on_arithmetic(symbol: str, where: str, exc: ArithmeticError) -> None:
    """An overflow, division by zero or invalid decimal operation while evaluating one symbol
    rejects that symbol's data for the cycle (``market_data_rejected``); the loop goes on."""
    log.warning("market_data_rejected", symbol=symbol, reason=f"{where}: {type(exc).__name__}: {exc}",
                source="evaluation")


def _last_price(snap: Snapshot) -> float | None:
    if snap.latest_trade is not None and snap.latest_trade.p:
        return float(snap.latest_trade.p)
    if snap.minute_bar is not None:
        return float(snap.minute_bar.c)
    if snap.daily_bar is not None:
        return float(snap.daily_bar.c)
    return None


def _intent_payload(intent: TradeIntent) -> dict[str, Any]:
    return {
        "confidence_breakdown": getattr(intent, "confidence_breakdown", {}),
        "reasoning": intent.reasoning,
        "entry_price": intent.entry_price,
        "stop_price": intent.stop_price,
        "target_price": intent.target_price,
        "decays_at": intent.decays_at.isoformat() if getattr(intent, "decays_at", None) else None,
    }


RECONCILE_EVERY_CYCLES = 30
MIN_HOLD_BEFORE_FOREIGN_EXIT = timedelta(minutes=30)


def _daily_volatility(daily: BarSeries) -> float | None:
    """Standard deviation of the last 20 daily log returns (for volatility-adjusted sizing)."""
    closes = daily.close[-21:]
    if len(closes) < 21 or np.any(closes <= 0):
        return None
    return float(np.std(np.diff(np.log(closes)), ddof=1))
