"""The cumulative loss stop made to fire over several sessions against the simulator over HTTP
(issue 18, item 4), with a restart in the middle: the daemon's own ``TradingSystem``.

Each day a shock costs the account about 3%: never the 5% breaker, never the 6% daily limit,
but after three days the equity is more than 8% below its high-water mark, so the stop latches,
cancels and flattens, alerts, and stays latched through a restart until ``rearm``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from engine.trading_state import TradingState
from ops import status
from tests.test_e2e_safety_support import (
    WIDE_STOPS,
    PassThroughAnalyzer,
    SimStack,
    buy_by_hand,
    cycle,
    et,
    events,
    sim_stack,
    sleep_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

START = "2025-03-04T10:30:00"
LOSSY = ["AAPL", "MSFT", "QQQ"]
OVERRIDES = {**WIDE_STOPS, "risk.max_drawdown_from_peak": 0.08}


def _system(stack: SimStack):  # type: ignore[no-untyped-def]
    system = stack.new_system(analyzer=PassThroughAnalyzer(stack.clock))
    system.strategies = []  # no entries: the loss comes from the hand-bought holdings only
    return system


async def test_losing_days_latch_the_stop_through_a_restart_until_rearm(tmp_path: Path) -> None:
    async with sim_stack(tmp_path, start=START, overrides=OVERRIDES) as stack:
        await buy_by_hand(stack, {"AAPL": 0.2, "MSFT": 0.2, "QQQ": 0.2})
        system = _system(stack)
        await system.startup()
        await cycle(system)
        peak = system.safety.high_water_mark
        assert peak is not None

        for day in ("2025-03-04", "2025-03-05"):
            if day != "2025-03-04":
                await sleep_until(system, et(f"{day}T10:00"))
                await cycle(system, minutes=0)
            await stack.control("shock", {"symbols": LOSSY, "pct": -5.5})
            with capture_logs() as logs:
                await cycle(system)
            assert not system.safety.latched, f"{day}: under every daily limit"
            assert not events(logs, "circuit_breaker_triggered")
            assert system.safety.state is TradingState.ACTIVE

        # a restart between the second and the third losing day
        await system.shutdown()
        stack.reopen_journal()
        system = _system(stack)
        assert system.safety.high_water_mark == peak, "the mark comes back from the journal"
        await system.startup()
        await sleep_until(system, et("2025-03-06T10:00"))
        await cycle(system, minutes=0)
        await stack.control("shock", {"symbols": LOSSY, "pct": -5.5})
        with capture_logs() as logs:
            await cycle(system)
            await cycle(system)
        account = await stack.gateway.get_account()
        assert (peak - account.equity) / peak >= 0.08
        assert system.safety.latched and system.safety.latch_kind == "max_drawdown"
        assert len(events(logs, "max_drawdown_stop_triggered")) == 1
        assert not events(logs, "circuit_breaker_triggered")
        assert await stack.positions() == [], "liquidated"
        assert await stack.open_orders() == [], "every order canceled"
        assert system.safety.state is TradingState.HALTED
        alerts = [e for e in events(logs, "alert") if "MAXIMUM DRAWDOWN STOP" in e["title"]]
        assert alerts and alerts[0]["alert_level"] == "emergency"
        assert [r["payload"]["to"] for r in stack.journal.events(kind="trading_state_changed")][-2:] == \
            ["liquidating", "halted"]

        # a restart keeps it latched, a new session does not open it, status says why
        await system.shutdown()
        stack.reopen_journal()
        system = _system(stack)
        await system.startup()
        await sleep_until(system, et("2025-03-07T10:00"))
        await cycle(system, minutes=0)
        assert system.safety.latched and system.safety.latch_kind == "max_drawdown"
        assert not system.safety.allows_entry()
        text = await status.render_status(stack.settings)
        assert "LATCHED by maximum drawdown stop" in text and "high-water mark" in text
        assert "maximum drawdown stop: maximum drawdown stop" not in text  # the stop named once

        stack.journal.queue_operator_command("rearm", "drawdown reviewed", stack.clock.now())
        with capture_logs() as logs:
            await cycle(system)
        assert [e["reason"] for e in events(logs, "rearmed")] == ["drawdown reviewed"]
        assert not system.safety.latched and system.safety.state is TradingState.ACTIVE
        assert system.safety.high_water_mark < peak, "rebased to the equity at the re-arm"
        await system.shutdown()
