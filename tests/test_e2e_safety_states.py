"""Trading states other than the breaker, made to fire over HTTP (issue 5, item 2).

* the daily loss limit: a day that rises and then falls more than ``risk.max_daily_drawdown``
  from its high (but not past the breaker from the session start) moves ACTIVE -> REDUCING:
  exits only for the rest of the session, with an alert; the next session is ACTIVE again;
* freqtrade-style protections: three stop-outs lock every entry (stop-loss guard), logged as
  ``protection_lock``, while exits and protection go on.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from market.market_data import MarketData
from strategies.base import Signal

from tests.test_e2e_safety_support import (
    WIDE_STOPS,
    AlwaysBuy,
    PassThroughAnalyzer,
    buy_by_hand,
    cycle,
    et,
    events,
    sim_stack,
    sleep_until,
    unprotected,
)
from engine.trading_state import TradingState

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

START = "2025-03-04T10:30:00"


class GatedBuy(AlwaysBuy):
    """:class:`AlwaysBuy` once ``open`` is set (so entries can be tried at a chosen moment)."""

    open = False

    async def evaluate_opportunity(self, symbol: str, market_data: MarketData) -> Signal:
        signal = await super().evaluate_opportunity(symbol, market_data)
        if not self.open:
            return Signal(symbol=symbol, action="hold", confidence=0.0, reasoning="e2e: gate closed",
                          strategy=self.name)
        return signal


async def test_daily_drawdown_from_the_day_high_moves_to_reducing_exits_only_until_next_session(
        tmp_path: Path) -> None:
    symbols = ["SPY", "QQQ", "AAPL", "MSFT", "NVDA", "TSLA"]
    async with sim_stack(tmp_path, start=START, symbols=symbols, overrides=WIDE_STOPS) as stack:
        system = stack.new_system(analyzer=PassThroughAnalyzer(stack.clock))
        gate = GatedBuy(stack.settings)
        system.strategies = [gate]
        # Exposure small enough for the wide stops to leave room in the 12% portfolio-risk cap.
        await buy_by_hand(stack, {"AAPL": 0.18, "MSFT": 0.18, "QQQ": 0.18})
        await system.startup()
        await cycle(system)
        await stack.control("shock", {"symbols": ["AAPL", "MSFT", "QQQ"], "pct": 10})
        await cycle(system)  # a new day high
        high = system.safety.day_high_equity
        await stack.control("shock", {"symbols": ["AAPL", "MSFT", "QQQ"], "pct": -12})
        gate.open = True
        with capture_logs() as logs:
            await cycle(system)
            await cycle(system)
        account = await stack.gateway.get_account()
        start = system.safety.session_start_equity
        assert (high - account.equity) / high >= 0.06, "more than 6% below the day's high"
        assert (start - account.equity) / start < 0.05, "but not past the breaker"
        moves = [(e["from_state"], e["to_state"]) for e in events(logs, "trading_state_changed")]
        assert moves == [("active", "reducing")]
        assert system.safety.state is TradingState.REDUCING and not system.safety.latched
        warned = [e for e in events(logs, "alert") if "reducing" in e["title"]]
        assert warned and warned[0]["alert_level"] == "warning"
        # Exits only: no entry although the strategy wants every symbol; holdings keep
        # their protection.
        assert not [e for e in events(logs, "order_submitted") if e.get("side") == "buy"]
        positions = await stack.positions()
        assert {p.symbol for p in positions} == {"AAPL", "MSFT", "QQQ"}
        assert unprotected(positions, await stack.open_orders()) == {}

        with capture_logs() as logs:
            await sleep_until(system, et("2025-03-05T10:00"))
            await cycle(system, minutes=0)
        assert [(e["from_state"], e["to_state"]) for e in events(logs, "trading_state_changed")] == \
            [("reducing", "active")]
        assert [e for e in events(logs, "order_submitted") if e.get("side") == "buy"], \
            "entries resume the next session"


async def test_three_stop_outs_lock_every_entry(tmp_path: Path) -> None:
    symbols = ["SPY", "QQQ", "AAPL", "MSFT", "NVDA", "TSLA"]
    async with sim_stack(tmp_path, start=START, symbols=symbols) as stack:
        system = stack.new_system(analyzer=PassThroughAnalyzer(stack.clock))
        gate = GatedBuy(stack.settings)
        system.strategies = [gate]
        await buy_by_hand(stack, {"AAPL": 0.1, "MSFT": 0.1, "QQQ": 0.1})
        await system.startup()
        await cycle(system)
        assert unprotected(await stack.positions(), await stack.open_orders()) == {}
        # All three fall through their protective stops at the broker.
        await stack.control("shock", {"symbols": ["AAPL", "MSFT", "QQQ"], "pct": -6})
        gate.open = True
        with capture_logs() as logs:
            await cycle(system)
            await cycle(system)
        assert await stack.positions() == []
        closed = events(logs, "position_closed")
        assert {e["symbol"] for e in closed} == {"AAPL", "MSFT", "QQQ"}
        assert {e["exit_reason"] for e in closed} == {"stop_loss"}, "the broker's stop legs filled"
        locks = [e for e in events(logs, "protection_lock") if e["scope"] == "global"]
        assert locks and locks[0]["protection"] == "stoploss_guard", events(logs, "protection_lock")
        assert not [e for e in events(logs, "order_submitted") if e.get("side") == "buy"], \
            "the guard locks entries although the strategy wants every symbol"
