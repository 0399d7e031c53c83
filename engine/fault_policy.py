"""What the loop does when a step fails: skip, log, alert, count, back off, and at worst REDUCING.

:class:`FaultPolicy` holds the policy the module docstring of :mod:`engine.trading_system`
promises: nothing the broker answers during trading ends the loop. A temporary error is waited
out (``_pause`` with exponential backoff, in wall time when the clock follows the broker); an
operational or unknown one skips the cycle, is logged (``operational_error`` with the raw
status, code and message) and alerted; a run of
:attr:`engine.trading_system.TradingSystem.FAULTY_CYCLES_BEFORE_REDUCING` of them moves the
trading state to REDUCING (exits only). Only keys refused before the first cycle stop the daemon.

The counters (``_failures_in_a_row``, ``_faulty_cycles_in_a_row``) stay on the loop, which
moves them as its cycles end; the policy reads and moves them through its reference to it.
"""

from __future__ import annotations

from typing import Any

import structlog

from alerter import AlertLevel
from core.clock import pause_clock, sleep_or_stop
from core.errors import BrokerError, OperationalError
from market_status_manager import MarketStatus

# The loop's own logger name: the log lines read as before the policy moved out of the loop.
log = structlog.get_logger("engine.trading_system")


class FaultPolicy:
    """Failure handling for the loop ``system`` (a TradingSystem; typed loosely because
    importing it here would make a circle)."""

    def __init__(self, system: Any) -> None:
        self.system = system

    async def stop_on_operational_error(self, exc: OperationalError) -> None:
        """Only for the keys refused at start-up: a configuration error, before any trading."""
        system = self.system
        log.critical("operational_error", error=str(exc), code=exc.code, status=exc.status,
                     message=exc.message, step="startup", fatal=True)
        await system.alerter.send(AlertLevel.EMERGENCY, "Trading not started: the broker refuses the keys",
                                  str(exc), key="operational_error")
        system.fatal_error = str(exc)
        system.stop_event.set()

    async def on_operational_error(self, exc: BrokerError, *, step: str) -> None:
        """Skip what failed, keep the raw answer in the log, alert, and count the run."""
        system = self.system
        system._faulty_cycles_in_a_row += 1
        log.error("operational_error", step=step, error_type=type(exc).__name__,
                  category=exc.category.value, status=exc.status, code=exc.code,
                  message=exc.message, request_id=exc.request_id, body=exc.body,
                  in_a_row=system._faulty_cycles_in_a_row)
        await system.alerter.send(AlertLevel.CRITICAL, "Broker error: action skipped, trading continues",
                                  f"{exc} (step {step}, {system._faulty_cycles_in_a_row} in a row)",
                                  key="operational_error")
        await self.reduce_after_faults(f"{type(exc).__name__}: {exc}")

    async def reduce_after_faults(self, last: str) -> None:
        """A run of failed cycles: exits only (REDUCING) until a human has looked."""
        system = self.system
        if system._faulty_cycles_in_a_row < system.FAULTY_CYCLES_BEFORE_REDUCING:
            return
        transitions = system.safety.reduce(
            f"{system._faulty_cycles_in_a_row} cycles in a row failed on broker errors nobody "
            f"classified (last: {last}): exits only", system.clock.now())
        if transitions:
            system.safety_step.persist()
            await system.safety_step.announce(transitions)

    def failure_backoff(self) -> float:
        """Seconds to wait after ``_failures_in_a_row`` failures: 5 s doubling, at most 300 s."""
        return min(5.0 * 2 ** min(self.system._failures_in_a_row, 6), 300.0)

    async def pause(self, seconds: float) -> None:
        """Back off after a broker failure: in wall time when the clock follows the broker
        (waiting on it would ask the failing broker), and always waking on a stop."""
        system = self.system
        system._failures_in_a_row += 1
        await sleep_or_stop(pause_clock(system.clock), seconds, system.stop_event)

    async def sleep_until_next_cycle(self, status: MarketStatus, *, backoff: bool = False) -> None:
        """The next cycle at the interval (or the next market event); after failed cycles
        (``backoff``) no sooner than the failure backoff."""
        system = self.system
        interval = float(system.settings.trading.cycle_interval_seconds)
        until_event = (status.next_event - system.clock.now()).total_seconds()
        delay = max(1.0, min(interval, until_event)) if until_event > 0 else interval
        if backoff:
            delay = max(delay, min(5.0 * 2 ** min(system._faulty_cycles_in_a_row - 1, 6), 300.0))
        await sleep_or_stop(system.clock, delay, system.stop_event)
