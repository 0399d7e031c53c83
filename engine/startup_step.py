"""Start-up: reconcile with the broker and protect what it holds before trading anything.

:class:`StartupStep` is what :meth:`engine.trading_system.TradingSystem.startup` runs before the
first cycle (and again, each turn, until it has worked): operator commands, a believed account
reading, journal vs broker reconciliation, protective stops for every position without one
(``STARTUP ALERT``), and the reconciled state for ``python main.py status``.

It holds a reference to the loop rather than copies of its parts (the backtest overrides
``remember_last_cycle`` on the loop, so the step calls the loop's).
"""

from __future__ import annotations

from typing import Any

import structlog

from alerter import AlertLevel
from core.errors import TemporaryError
from engine.cycle_record import AccountSnapshot

# The loop's own logger name: the log lines read as before the step moved out of the loop.
log = structlog.get_logger("engine.trading_system")


class StartupStep:
    """Start-up for the loop ``system`` (a TradingSystem; typed loosely because importing it
    here would make a circle)."""

    def __init__(self, system: Any) -> None:
        self.system = system

    async def startup(self) -> bool:
        """Reconcile with the broker and protect what it holds before trading anything.

        Returns False (and is retried by the loop) while the broker cannot be reached.
        """
        system = self.system
        faults = system.faults
        try:
            await system.apply_operator_commands()
            snapshot = await system.refresh_account()
        except TemporaryError as exc:
            log.warning("startup_broker_unavailable", error=str(exc))
            await faults.pause(faults.failure_backoff())
            return False
        if snapshot.rejected:  # no believable account yet: nothing to start from
            log.warning("startup_deferred", reason="account reading not confirmed")
            await faults.pause(faults.failure_backoff())
            return False
        system.summary.start_equity = snapshot.account.equity
        await system.reconcile(snapshot)
        system.account_sanity.accept(snapshot.account, snapshot.positions)  # its fills were in that reading
        system._peak_equity = snapshot.account.equity
        unprotected = await system.executor.protect_positions(
            snapshot.positions, snapshot.open_orders, startup=True)
        if unprotected:
            lines = [
                f"{u['symbol']}: qty {u['qty']} (protected {u['protected_qty']}), "
                f"P&L {u['unrealized_pl']}, value {u['market_value']}"
                for u in unprotected
            ]
            await system.alerter.send(
                AlertLevel.CRITICAL, "STARTUP ALERT: unprotected positions",
                "Positions without a protective stop for their full quantity were found at start-up "
                "and given one:\n" + "\n".join(lines),
                key="startup_unprotected", fields={"positions": unprotected},
            )
        await self.remember_reconciled_state(snapshot, protected_now=bool(unprotected))
        system._failures_in_a_row = 0
        return True

    async def remember_reconciled_state(self, snapshot: AccountSnapshot, *, protected_now: bool) -> None:
        """What ``status`` shows from now on: the broker's state as reconciled at start-up,
        not the last cycle of the previous run (a restart at night would otherwise show
        positions and orders the broker no longer has until the market opens)."""
        system = self.system
        if protected_now:  # start-up placed protective orders: show them
            try:
                snapshot = await system.refresh_account()
            except TemporaryError as exc:
                log.warning("startup_snapshot_stale", error=str(exc))
        data = system._snapshot_data(snapshot, "startup", system.clock.now())
        data["source"] = "startup_reconciliation"
        system.remember_last_cycle(system.clock.now(), data)
