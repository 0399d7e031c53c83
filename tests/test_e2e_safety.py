"""Safety paths proven by making them fire against the simulator over HTTP (issue 5, item 12).

Each test runs the daemon's own ``TradingSystem`` (real gateway, journal, alerter, executor,
risk/PDT/gap managers) against a simulator served on 127.0.0.1 at ``--speed max``, and moves
the market with the simulator's control API (``/_sim/v1/shock``, ``/_sim/v1/gap``), so a
cycle is one exact step and "within one cycle" can be asserted. What is asserted is what a
user sees: the broker's positions and orders, the journal, alerts and log events.
"""

from __future__ import annotations

import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.test_e2e_safety_support import (
    PYTHON,
    ROOT,
    WIDE_STOPS,
    AlwaysBuy,
    PassThroughAnalyzer,
    buy_by_hand,
    clean_environ,
    cycle,
    et,
    events,
    sim_stack,
    sleep_until,
    unprotected,
)
from trading_state import TradingState

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

# Tuesday 2025-03-04, an hour into the session.
SESSION_START = "2025-03-04T10:30:00"
BREAKER_POSITIONS = {"SPY": 0.21, "QQQ": 0.21, "AAPL": 0.21, "MSFT": 0.21}


async def _held_and_protected(stack, system) -> dict[str, Decimal]:
    """Positions bought by hand, given protective stops by the daemon's start-up."""
    bought = await buy_by_hand(stack, BREAKER_POSITIONS)
    await system.startup()
    await cycle(system, minutes=1)
    positions, orders = await stack.positions(), await stack.open_orders()
    assert {p.symbol: p.qty for p in positions} == bought
    assert unprotected(positions, orders) == {}, "start-up must protect every position"
    return bought


async def test_circuit_breaker_flattens_within_one_cycle_and_latches_until_rearm(tmp_path: Path) -> None:
    async with sim_stack(tmp_path, start=SESSION_START, overrides=WIDE_STOPS) as stack:
        system = stack.new_system()
        await _held_and_protected(stack, system)
        stops = {leg.symbol: leg.stop_price for o in await stack.open_orders() for leg in [o, *(o.legs or [])]
                 if leg.type == "stop"}

        # An 8% drop everywhere: about 6.7% of equity, past the 5% breaker, yet far above
        # every protective stop, so the broker itself closes nothing.
        shocked = await stack.control("shock", {"symbols": "*", "pct": -8})
        assert all(Decimal(str(shocked["prices"][s])) > stops[s] for s in BREAKER_POSITIONS)
        assert len(await stack.positions()) == 4, "the stops must not have fired"

        with capture_logs() as logs:
            await cycle(system, minutes=1)

        # Within that one cycle: tripped, liquidated, halted; nothing left at the broker.
        assert await stack.positions() == []
        assert await stack.open_orders() == []
        tripped = events(logs, "circuit_breaker_triggered")
        assert len(tripped) == 1 and Decimal(tripped[0]["equity"]) < Decimal("95000")
        moves = [(e["from_state"], e["to_state"]) for e in events(logs, "trading_state_changed")]
        assert moves == [("active", "liquidating"), ("liquidating", "halted")]
        emergency = [e for e in events(logs, "alert") if e["alert_level"] == "emergency"]
        assert emergency and "CIRCUIT BREAKER" in emergency[0]["title"]
        assert events(logs, "emergency_liquidation")
        assert system.safety.state is TradingState.HALTED
        assert any(a["level"] == "emergency" and "CIRCUIT BREAKER" in a["title"] for a in stack.journal.alerts())
        saved = stack.journal.get_state("safety")
        assert saved is not None and saved["latched"] and saved["state"] == "halted"
        tripped_at = stack.clock.now()

        # Restart (new process state, same state db) the next session: still HALTED, and a
        # strategy that would buy everything enters nothing.
        stack.reopen_journal()
        await sleep_until(system, et("2025-03-05T10:00"))
        restarted = stack.new_system(analyzer=PassThroughAnalyzer(stack.clock))
        restarted.strategies = [AlwaysBuy(stack.settings)]
        assert restarted.safety.state is TradingState.HALTED
        with capture_logs() as logs:
            await restarted.startup()
            for _ in range(3):
                await cycle(restarted, minutes=1)
        assert restarted.safety.state is TradingState.HALTED
        assert not events(logs, "order_submitted") and not events(logs, "trade_intent")
        entries_after_trip = [o for o in await stack.all_orders()
                              if o.side == "buy" and o.submitted_at and o.submitted_at >= tripped_at]
        assert entries_after_trip == []

        # Only the operator re-arms it: `python main.py rearm --reason ...` (journaled).
        result = subprocess.run(
            [PYTHON, "main.py", "rearm", "--reason", "e2e: loss reviewed", "--state-db",
             stack.settings.storage.state_db, "--log-file", str(tmp_path / "cli.jsonl")],
            cwd=ROOT, env=clean_environ(), capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        with capture_logs() as logs:
            await cycle(restarted, minutes=1)
        assert [e["reason"] for e in events(logs, "rearmed")] == ["e2e: loss reviewed"]
        assert restarted.safety.state is TradingState.ACTIVE
        applied = stack.journal.events(kind="rearm_applied")
        assert [e["payload"]["reason"] for e in applied] == ["e2e: loss reviewed"]
        # ... and the same strategy now enters (the latch, nothing else, was blocking it).
        assert events(logs, "order_submitted"), "entries must resume after the re-arm"
