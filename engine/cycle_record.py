"""The cycle's record and the run's summary: what the loop writes after each cycle and at the end.

* :class:`AccountSnapshot`: the broker's reading of one cycle (the truth for positions and orders).
* :class:`RunSummary`: what a run did (printed at the end of ``--sim-days`` and on shutdown).
* :class:`CycleRecorder`: step 7 of :class:`engine.trading_system.TradingSystem` (journal equity,
  the ``status`` view of the cycle, one ``cycle_complete`` line) and the shutdown record
  (``open_position`` lines, ``system_shutdown``).

The recorder holds a reference to the loop rather than copies of its parts: tests and the
backtest replace the loop's components (``safety``, ``strategies``) and override its methods
(``remember_last_cycle``, ``shutdown``), and the recorder must see what the loop sees.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import structlog

from alerter import AlertLevel
from broker.models import Account, Order, Position
from core.errors import BrokerError
from engine.portfolio import PortfolioState
from market_status_manager import MarketStatus
from order_executor import flatten_orders, protected_quantity
from pdt_manager import AccountView

log = structlog.get_logger("engine.trading_system")

ZERO = Decimal(0)
#: Wall seconds the shutdown gives queued alert deliveries before abandoning them.
# Within main.SignalStop's grace period (3 s), so that a stop on SIGTERM flushes, then ends.
ALERT_FLUSH_SECONDS = 2.0


@dataclass
class AccountSnapshot:
    """What the broker says this cycle: the source of truth for positions and orders."""

    account: Account
    positions: list[Position]
    open_orders: list[Order]
    portfolio: PortfolioState
    # True when the account reading was implausible and a re-read did not confirm it: the
    # cycle acts on nothing that depends on it (breaker, exits, entries, equity journal).
    rejected: bool = False


@dataclass
class RunSummary:
    """What a run did, printed at the end of ``--sim-days`` and on shutdown."""

    sessions: int = 0  # regular sessions completed (their close seen)
    session_in_progress: bool = False  # stopped inside a regular session
    cycles: int = 0
    trades: int = 0
    wins: int = 0
    losses: int = 0
    realized_pnl: Decimal = ZERO
    start_equity: Decimal | None = None
    end_equity: Decimal | None = None
    max_drawdown: float = 0.0
    orders_submitted: int = 0
    open_positions: int | None = None  # None: the broker could not be asked at shutdown
    protected_positions: int | None = None
    state: str = "ACTIVE"

    @property
    def pnl(self) -> Decimal:
        if self.start_equity is None or self.end_equity is None:
            return ZERO
        return self.end_equity - self.start_equity

    @property
    def win_rate(self) -> float:
        return self.wins / self.trades if self.trades else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions, "session_in_progress": self.session_in_progress,
            "cycles": self.cycles, "trades": self.trades,
            "wins": self.wins, "losses": self.losses, "win_rate": round(self.win_rate, 4),
            "realized_pnl": str(self.realized_pnl), "pnl": str(self.pnl),
            "start_equity": str(self.start_equity) if self.start_equity is not None else None,
            "end_equity": str(self.end_equity) if self.end_equity is not None else None,
            "max_drawdown_pct": round(self.max_drawdown * 100, 3),
            "orders_submitted": self.orders_submitted, "open_positions": self.open_positions,
            "protected_positions": self.protected_positions, "state": self.state,
        }

    def render(self) -> str:
        lines = [
            "=" * 60,
            "Run summary",
            f"  sessions traded   {self.sessions}"
            + (" (+1 in progress at shutdown)" if self.session_in_progress else ""),
            f"  closed trades     {self.trades} (wins {self.wins}, losses {self.losses}, "
            f"win rate {self.win_rate:.1%})",
            f"  realized P&L      {self.realized_pnl:,.2f}",
            f"  equity            {self.start_equity or 0:,.2f} -> {self.end_equity or 0:,.2f} "
            f"(P&L {self.pnl:,.2f})",
            f"  max drawdown      {self.max_drawdown:.2%}",
            f"  entry orders      {self.orders_submitted} (exits, protection and emergency orders not counted)",
            f"  open positions    {self.open_positions} ({self.protected_positions} protected)"
            if self.open_positions is not None else "  open positions    unknown (broker unreachable at shutdown)",
            f"  trading state     {self.state}",
            "=" * 60,
        ]
        return "\n".join(lines)


class CycleRecorder:
    """Step 7 and the shutdown record, for the loop ``system`` (a TradingSystem; typed loosely
    because importing it here would make a circle)."""

    def __init__(self, system: Any) -> None:
        self.system = system
        self.unprotected_last_cycle: set[str] = set()

    def snapshot_data(self, snapshot: AccountSnapshot, phase: str, now: datetime) -> dict[str, Any]:
        """What ``python main.py status`` shows of a broker snapshot (JSON-friendly)."""
        account = snapshot.account
        safety = self.system.safety
        baseline = safety.session_start_equity
        return {
            "at": now.isoformat(), "phase": phase, "equity": str(account.equity),
            "day_pnl": str(account.equity - baseline) if baseline is not None else None,
            "positions": len(snapshot.positions), "open_orders": len(snapshot.open_orders),
            "state": safety.state.value,
            "position_details": [
                {"symbol": p.symbol, "qty": str(p.qty),
                 "unrealized_pl": str(p.unrealized_pl) if p.unrealized_pl is not None else None,
                 "stop": str(snapshot.portfolio.positions[p.symbol].stop_price)
                 if p.symbol in snapshot.portfolio.positions else None,
                 "protected": protected_quantity(p, snapshot.open_orders) >= abs(p.qty)}
                for p in snapshot.positions
            ],
            "order_details": [
                {"symbol": o.symbol, "side": o.side, "type": o.type, "qty": str(o.qty), "status": o.status,
                 "client_order_id": o.client_order_id}
                for o in flatten_orders(snapshot.open_orders) if o.is_open
            ],
        }

    def record_cycle(self, snapshot: AccountSnapshot, status: MarketStatus, started: float,
                     cpu_started: float, requests_before: int, symbols: int) -> None:
        """Journal equity, remember the cycle for ``status``, flag positions unprotected for
        two cycles, and log one ``cycle_complete`` line (never an unconfirmed equity)."""
        system = self.system
        account = snapshot.account
        now = system.clock.now()
        if snapshot.rejected:  # never journal (or summarise) an equity nobody confirmed
            log.info("cycle_complete", market_time=now.isoformat(),
                     duration_ms=round((time.perf_counter() - started) * 1000, 2),
                     cpu_ms=round((time.process_time() - cpu_started) * 1000, 2), symbols=symbols,
                     requests=getattr(system.broker, "request_count", 0) - requests_before, phase=status.phase,
                     equity=None, account_rejected=True, positions=len(snapshot.positions),
                     open_orders=len(snapshot.open_orders), state=system.safety.state.value)
            return
        positions_value = sum((p.market_value or ZERO for p in snapshot.positions), ZERO)
        system.journal.record_equity(now, account.equity, account.cash, positions_value)
        if system._peak_equity:
            drawdown = float((system._peak_equity - account.equity) / system._peak_equity)
            system.summary.max_drawdown = max(system.summary.max_drawdown, drawdown)
        system.summary.end_equity = account.equity
        requests = getattr(system.broker, "request_count", 0) - requests_before
        data = system._snapshot_data(snapshot, status.phase, now)
        system.remember_last_cycle(now, data)
        # positions without a working stop for their full quantity, as seen this cycle
        unprotected = [d["symbol"] for d in data["position_details"] if not d["protected"]]
        still = sorted(set(unprotected) & self.unprotected_last_cycle)
        self.unprotected_last_cycle = set(unprotected)
        if still:
            log.error("position_still_unprotected", symbols=still)
            system._pending_alerts.append((AlertLevel.CRITICAL, "Position unprotected for more than one cycle",
                                           ", ".join(still), "still_unprotected"))
        if status.session is not None:
            system.safety_step.store_state("pdt_status", _jsonable(system.pdt.status(
                status.session, AccountView.from_account(account))))
        log.info("cycle_complete", market_time=now.isoformat(),
                 duration_ms=round((time.perf_counter() - started) * 1000, 2),
                 cpu_ms=round((time.process_time() - cpu_started) * 1000, 2), symbols=symbols,
                 requests=requests, phase=status.phase, equity=str(account.equity),
                 positions=len(snapshot.positions), open_orders=len(snapshot.open_orders),
                 unprotected=unprotected, state=system.safety.state.value)

    async def shutdown(self, bound: float) -> None:
        """Log open positions and their protection, flush state, ``system_shutdown``.

        The broker calls here are only for the record, so they get ``bound`` seconds of wall
        time together: a broker that hangs must not hold up a stop.
        """
        system = self.system
        summary = system.summary
        try:
            async with asyncio.timeout(bound):
                positions = await system.broker.list_positions()
                orders = await system.broker.list_orders(status="open", nested=True, limit=500)
                account = await system.broker.get_account()
            if not system.account_sanity.problems(account, positions):  # a bogus last word is no result
                summary.end_equity = account.equity
            summary.open_positions = len(positions)
            summary.protected_positions = 0
            for p in positions:
                covered = protected_quantity(p, orders)
                if covered >= abs(p.qty):
                    summary.protected_positions += 1
                log.info("open_position", symbol=p.symbol, qty=str(p.qty), protected_qty=str(covered),
                         unrealized_pl=str(p.unrealized_pl) if p.unrealized_pl is not None else None)
        except TimeoutError:
            log.warning("shutdown_broker_unavailable", error=f"no answer within {bound:g}s")
        except (BrokerError, asyncio.CancelledError) as exc:
            log.warning("shutdown_broker_unavailable", error=str(exc))
        system._persist_safety()
        summary.state = system.safety.state.value
        summary.session_in_progress = getattr(system, "_last_phase", None) == "regular"
        # The summary line first: a stalled alert channel's flush below is the slowest part of a
        # shutdown, and a second cancellation (main.SignalStop) must not cost the record.
        log.info("system_shutdown", run_id=system.run_id, **summary.to_dict())
        if hasattr(system.alerter, "drain"):  # queued alerts get a bounded flush, never more
            await system.alerter.drain(ALERT_FLUSH_SECONDS)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (Decimal, date, datetime)):
        return str(value) if isinstance(value, Decimal) else value.isoformat()
    return value
