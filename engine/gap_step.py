"""Step 4 of the loop: gap risk before and at the open, and the closing snapshot it compares to.

:class:`GapStep` is what :meth:`engine.trading_system.TradingSystem.monitor_gap_risk` and
``record_closing_snapshot`` run: once per session and phase (pre-market, the open) the latest
trades of the held symbols against the last close (``gap_risk_assessed``, an alert, and the
defensive mode a large gap turns on), and at the end of each session the closes it will need.

It holds a reference to the loop rather than copies of its parts: the backtest marks phases
assessed on the loop (``_gap_assessed``) and the loop reads the defensive state it sets.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import structlog

from alerter import AlertLevel
from core.errors import BrokerError
from engine.cycle_record import AccountSnapshot
from market.market_data import price_problem
from market_status_manager import MarketStatus

# The loop's own logger name: the log lines read as before the step moved out of the loop.
log = structlog.get_logger("engine.trading_system")


class GapStep:
    """Gap risk for the loop ``system`` (a TradingSystem; typed loosely because importing it
    here would make a circle)."""

    def __init__(self, system: Any) -> None:
        self.system = system

    async def monitor_gap_risk(self, snapshot: AccountSnapshot, status: MarketStatus) -> None:
        """Assess the held positions' gaps once per session and phase (pre-market, the open)."""
        system = self.system
        if status.session is None or status.phase not in ("pre", "regular") or snapshot.rejected:
            return
        key = (status.session, status.phase)
        if key in system._gap_assessed or not snapshot.positions:
            return
        symbols = [p.symbol for p in snapshot.positions]
        quotes = await system.broker.get_latest_trades(symbols)
        system._gap_assessed.add(key)
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
        closing = system.journal.get_state("closing_snapshot")
        if system.gap.close_date is None:
            if not closing:
                return
            system.gap.load_close(closing)
        held = {p.symbol: p.qty for p in snapshot.positions}
        report = system.gap.assess(prices, held, status.phase, equity=snapshot.account.equity)
        payload = report.to_dict()
        log.info("gap_risk_assessed", **payload)
        if report.alerts:
            level = AlertLevel.CRITICAL if report.defensive_required else AlertLevel.WARNING
            await system.alerter.send(level, f"Gap risk {report.level.value}",
                                      "; ".join(str(a.to_dict()) for a in report.alerts),
                                      key=f"gap:{status.session}:{status.phase}", fields=payload)
        if report.defensive_required:
            system._gap_defensive = {"active": True, "reason": f"gap risk {report.level.value}",
                                     "session": status.session.isoformat()}
            system.journal.set_state("defensive", system._gap_defensive)

    async def record_closing_snapshot(self) -> None:
        """The session's closing prices and quantities, for tomorrow's gap assessment."""
        system = self.system
        try:
            positions = await system.broker.list_positions()
        except BrokerError as exc:  # any answer: the session still counts once
            log.warning("closing_snapshot_failed", error=str(exc), error_type=type(exc).__name__)
            return
        closes = {p.symbol: p.current_price for p in positions if p.current_price is not None}
        session = system.safety.session_date
        if session is None:
            return
        snapshot = system.gap.record_close(session, closes, {p.symbol: p.qty for p in positions})
        system.journal.set_state("closing_snapshot", snapshot)
