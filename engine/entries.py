"""Step 6, entries: strategies -> AI analyzer -> ranked intents -> risk and PDT -> bracket orders.

:class:`EntryStep` is what :meth:`engine.trading_system.TradingSystem.enter_positions` and
``entry_candidates`` run. Candidates are the symbols that pass the scanner and no protection
lock, each with its strongest buy signal after the regime rotation; their intents are journaled
(``trade_intent``), sized by the risk manager, checked by the PDT manager and submitted.

It holds a reference to the loop rather than copies of its parts: the backtest overrides
``entry_candidates`` on the loop and tests replace ``strategies`` and ``analyzer``, so the step
asks the loop for them at each call.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import AbstractSet, Any

import numpy as np
import structlog

from ai_analyzer import TradeIntent
from engine.cycle_record import AccountSnapshot
from engine.portfolio import PendingEntry
from market.market_data import BarSeries, MarketData
from market_status_manager import MarketStatus
from pdt_manager import AccountView, OrderCheck

# The loop's own logger name: the log lines read as before the step moved out of the loop.
log = structlog.get_logger("engine.trading_system")


class EntryStep:
    """Entries for the loop ``system`` (a TradingSystem; typed loosely because importing it
    here would make a circle)."""

    def __init__(self, system: Any) -> None:
        self.system = system

    async def enter_positions(self, data: dict[str, MarketData], snapshot: AccountSnapshot,
                              status: MarketStatus) -> None:
        """Strategies -> AI analyzer -> ranked intents -> risk and PDT -> bracket orders."""
        system = self.system
        held = {p.symbol for p in snapshot.positions}
        busy = held | {o.symbol for o in snapshot.open_orders if o.is_open} | system._entered_this_session
        now = system.clock.now()
        if system.protections.global_lock(now) is not None:
            return
        intents: list[TradeIntent] = []
        volatility: dict[str, float | None] = {}
        candidates = await system.entry_candidates(data, busy, now)
        system.opportunities.start_cycle(status.session, (sig.symbol for sig, _ in candidates))
        if candidates and system.news is not None:
            await system.news.prefetch(sig.symbol for sig, _ in candidates)  # one request for all
        for best, md in candidates:
            try:
                intent = await system.opportunities.intent_for(best, md, system.analyzer.analyze)
            except ArithmeticError as exc:  # data no check foresaw: this symbol, not the loop
                reject_on_arithmetic(best.symbol, "ai_analyzer", exc)
                continue
            if intent is not None:
                intents.append(intent)
                volatility[intent.symbol] = _daily_volatility(md.daily)
        intents.sort(key=lambda i: i.confidence, reverse=True)
        portfolio = snapshot.portfolio
        account_view = AccountView.from_account(snapshot.account)
        for intent in intents:
            system.journal.record_intent(intent.intent_id, intent.symbol, intent.side, intent.strategy,
                                         float(intent.confidence), _intent_payload(intent), intent.created_at)
            log.info("trade_intent", intent_id=intent.intent_id, symbol=intent.symbol, side=intent.side,
                     strategy=intent.strategy, confidence=round(float(intent.confidence), 4),
                     entry_price=intent.entry_price, stop_price=intent.stop_price,
                     target_price=intent.target_price, reasoning=intent.reasoning)
            decision = system.risk.evaluate(intent, portfolio, volatility=volatility.get(intent.symbol))
            if not decision.approved:
                continue
            qty = decision.qty
            check = OrderCheck(symbol=intent.symbol, side="buy", qty=qty,
                               price=Decimal(str(intent.entry_price)), is_closing=False)
            pdt = system.pdt.check_order(check, account_view, status.session)
            if not pdt.allowed or pdt.qty <= 0:  # the PDT manager logged pdt_blocked with its reason
                continue
            qty = min(qty, pdt.qty)
            result = await system.executor.submit_bracket(intent, qty)
            if result.status == "rejected" and result.error_code == 40310100:
                system.pdt.block_symbol(intent.symbol, status.session)
            if result.status in ("submitted", "in_flight"):
                system.summary.orders_submitted += 1
                system._entered_this_session.add(intent.symbol)
                portfolio = replace(portfolio, pending_entries=portfolio.pending_entries + (
                    PendingEntry(symbol=intent.symbol, qty=qty, price=Decimal(str(intent.entry_price)),
                                 stop_price=Decimal(str(intent.stop_price)) if intent.stop_price else None),))

    async def entry_candidates(self, data: dict[str, MarketData], busy: AbstractSet[str], now: datetime, *,
                               log_signals: bool = True) -> list[tuple[Any, MarketData]]:
        """Each symbol of ``data`` not ``busy`` that passes the scanner and no protection locks
        at ``now``, with its strongest buy signal among the strategies (those with none are left
        out): what :meth:`enter_positions` hands the AI analyzer."""
        system = self.system
        rotation = system.rotation
        candidates: list[tuple[Any, MarketData]] = []
        if data:
            rotation.observe(next(iter(data.values())).benchmark)
        for symbol, md in data.items():
            if symbol in busy or not self.passes_scanner(md):
                continue
            if system.protections.is_locked(symbol, now) is not None:
                continue
            best = None
            for strategy in system.strategies:
                try:
                    signal = await strategy.evaluate_opportunity(symbol, md)
                except ArithmeticError as exc:  # data no check foresaw: this symbol, not the loop
                    reject_on_arithmetic(symbol, strategy.name, exc)
                    best = None
                    break
                if signal.action == "buy":  # long only: a sell on a symbol not held is no trade
                    if log_signals:
                        log_signal(signal)
                    signal = rotation.apply(signal, defensive=md.defensive)  # None: not in this regime
                    if signal is not None and (best is None or rotation.rank(signal) > rotation.rank(best)):
                        best = signal
            if best is not None:
                candidates.append((best, md))
        return candidates

    def passes_scanner(self, md: MarketData) -> bool:
        """Price range, spread and average volume (``scanning`` settings)."""
        s = self.system.settings.scanning
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


def log_signal(signal: Any) -> None:
    """One ``signal`` line per buy or sell a strategy gives."""
    log.info("signal", symbol=signal.symbol, action=signal.action, strategy=signal.strategy,
             confidence=round(float(signal.confidence), 4), reasoning=signal.reasoning,
             stop_price=signal.stop_price, target_price=signal.target_price)


def reject_on_arithmetic(symbol: str, where: str, exc: ArithmeticError) -> None:
    """An overflow, division by zero or invalid decimal operation while evaluating one symbol
    rejects that symbol's data for the cycle (``market_data_rejected``); the loop goes on."""
    log.warning("market_data_rejected", symbol=symbol, reason=f"{where}: {type(exc).__name__}: {exc}",
                source="evaluation")


def _intent_payload(intent: TradeIntent) -> dict[str, Any]:
    return {
        "confidence_breakdown": getattr(intent, "confidence_breakdown", {}),
        "reasoning": intent.reasoning,
        "entry_price": intent.entry_price,
        "stop_price": intent.stop_price,
        "target_price": intent.target_price,
        "decays_at": intent.decays_at.isoformat() if getattr(intent, "decays_at", None) else None,
    }


def _daily_volatility(daily: BarSeries) -> float | None:
    """Standard deviation of the last 20 daily log returns (for volatility-adjusted sizing)."""
    closes = daily.close[-21:]
    if len(closes) < 21 or np.any(closes <= 0):
        return None
    return float(np.std(np.diff(np.log(closes)), ddof=1))
