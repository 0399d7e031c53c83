"""Step 6, exits: strategy exits for held positions (a ``sell`` signal, or the maximum holding time).

:class:`ExitStep` is what :meth:`engine.trading_system.TradingSystem.exit_positions` runs. A
position answers to the strategy that opened it (and to the defensive one); another strategy's
sell only takes profit on a position held a while. An exit the PDT manager refuses waits
(``exit_deferred``); one that goes out keeps the symbol from re-entry this session.

It holds a reference to the loop rather than copies of its parts (tests replace the loop's
``strategies``; the ledger is the reconciler's).
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import structlog

from analytics.trade_ledger import TradeLedger
from core.clock import to_exchange_time
from engine.cycle_record import AccountSnapshot
from engine.entries import log_signal, reject_on_arithmetic
from market.market_data import MarketData
from market_status_manager import MarketStatus
from pdt_manager import AccountView, OrderCheck

# The loop's own logger name: the log lines read as before the step moved out of the loop.
log = structlog.get_logger("engine.trading_system")

ZERO = Decimal(0)
MIN_HOLD_BEFORE_FOREIGN_EXIT = timedelta(minutes=30)


class ExitStep:
    """Strategy exits for the loop ``system`` (a TradingSystem; typed loosely because
    importing it here would make a circle)."""

    def __init__(self, system: Any) -> None:
        self.system = system

    async def exit_positions(self, data: dict[str, MarketData], snapshot: AccountSnapshot,
                             status: MarketStatus) -> None:
        """Strategy exits for held positions (a ``sell`` signal, or the maximum holding time)."""
        system = self.system
        for position in snapshot.positions:
            md = data.get(position.symbol)
            if md is None or position.qty <= 0:
                continue
            reason = await self._exit_reason(position, md)
            if reason is None:
                continue
            check = OrderCheck(symbol=position.symbol, side="sell", qty=abs(position.qty),
                               price=Decimal(str(md.last_price)), is_closing=True,
                               opens_today=opened_in(system.ledger, position.symbol, status.session),
                               is_risk_exit=False)
            decision = system.pdt.check_order(check, AccountView.from_account(snapshot.account), status.session)
            if not decision.allowed:
                log.info("exit_deferred", symbol=position.symbol, reason=decision.reason)
                continue
            log.info("strategy_exit", symbol=position.symbol, reason=reason)
            # No re-entry in the session a position was exited: no churn between strategies.
            system._entered_this_session.add(position.symbol)
            await system.executor.emergency_exit(position.symbol, reason, phase=status.phase, kind="exit")

    async def _exit_reason(self, position: Any, md: MarketData) -> str | None:
        """Why ``position`` should go now (a strategy's sell, or held too long), else None."""
        system = self.system
        reason = None
        # A position answers to the strategy that opened it (and to the defensive one).
        # Another strategy's sell only takes profit on a position held a while: mean
        # reversion calling a fresh momentum entry "overbought" a minute after the buy would
        # otherwise churn every trade. Positions of unknown origin listen to every strategy.
        lots = system.ledger.open_lots(position.symbol)
        owners = {lot.strategy for lot in lots} - {None}
        held_for = system.clock.now() - min((lot.at for lot in lots), default=system.clock.now())
        in_profit = (position.unrealized_pl or ZERO) > 0
        for strategy in system.strategies:
            foreign = bool(owners) and strategy.name not in owners and strategy.name != "defensive"
            if foreign and not (in_profit and held_for >= MIN_HOLD_BEFORE_FOREIGN_EXIT):
                continue
            try:
                signal = await strategy.evaluate_opportunity(position.symbol, md)
            except ArithmeticError as exc:  # data no check foresaw: this symbol, not the loop
                reject_on_arithmetic(position.symbol, strategy.name, exc)
                break
            if signal.action == "sell":
                log_signal(signal)
                reason = f"{signal.strategy}: {signal.reasoning}"
                break
        held_days = system.ledger.holding_sessions(position.symbol, system.clock.now(), system.calendar)
        max_hold = int(system.settings.mean_reversion.max_hold_days)
        if reason is None and owners == {"mean_reversion"} and held_days is not None and held_days > max_hold:
            reason = f"mean reversion held {held_days} sessions, more than the maximum of {max_hold}"
        return reason


def opened_in(ledger: TradeLedger, symbol: str, session: date | None) -> bool:
    """Whether an open lot of ``symbol`` was bought in ``session`` (closing it = a day trade)."""
    return session is not None and any(
        to_exchange_time(lot.at).date() == session for lot in ledger.open_lots(symbol))
