"""Sanity before action (issue 13, item 3), made to fire against the simulator over HTTP.

The daemon's own ``TradingSystem`` talks to the simulator through :class:`TamperProxy`, which
rewrites chosen answers the way a misbehaving broker would send them: an account reading of
equity -50000 or 0, quotes of 1e308 or NaN, a price 50x off, a NaN in the daily history.
What is asserted is what a user sees: positions at the broker, the journal, log events, alerts.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.tamper_proxy import TamperProxy
from tests.test_e2e_safety_support import (
    WIDE_STOPS,
    SimStack,
    build_gateway,
    buy_by_hand,
    cycle,
    et,
    events,
    sim_stack,
    sleep_until,
)
from engine.trading_state import TradingState
from engine.trading_system import DATA_REJECTION_ALERT_CYCLES, TradingSystem

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SESSION_START = "2025-03-04T10:30:00"
HELD = {"SPY": 0.21, "QQQ": 0.21, "AAPL": 0.21, "MSFT": 0.21}


@contextlib.asynccontextmanager
async def tampered(tmp: Path) -> AsyncIterator[tuple[SimStack, TamperProxy, TradingSystem]]:
    """A sim stack whose daemon reads the broker through a tampering proxy, holding four
    positions bought by hand and protected by the daemon's start-up, one cycle run."""
    async with sim_stack(tmp, start=SESSION_START, overrides=WIDE_STOPS) as stack:
        async with TamperProxy(stack.url) as proxy:
            gateway = build_gateway(stack.settings, proxy.url, stack.clock)
            async with gateway:
                direct = stack.gateway
                await buy_by_hand(stack, HELD)
                stack.gateway = gateway
                system = stack.new_system()
                await system.startup()
                await cycle(system)
                assert system.safety.state is TradingState.ACTIVE
                try:
                    yield stack, proxy, system
                finally:
                    stack.gateway = direct


def _equity(value: str) -> Any:
    return lambda account: {**account, "equity": value, "portfolio_value": value}


@pytest.mark.parametrize("bogus", ["-50000", "0"])
async def test_one_bogus_account_reading_is_reread_not_acted_on_nor_journaled(tmp_path: Path, bogus: str) -> None:
    async with tampered(tmp_path) as (stack, proxy, system):
        rule = proxy.rewrite("GET", "/v2/account", _equity(bogus), times=1)
        with capture_logs() as logs:
            await cycle(system)
        assert rule.applied == 1
        # Nothing tripped, nothing sold: the four positions are still held.
        assert system.safety.state is TradingState.ACTIVE and not system.safety.latched
        assert {p.symbol for p in await stack.positions()} == set(HELD)
        assert not events(logs, "circuit_breaker_triggered") and not events(logs, "emergency_liquidation")
        rejected = events(logs, "account_reading_rejected")
        assert len(rejected) == 1 and rejected[0]["rejected"]["equity"] == bogus
        assert Decimal(rejected[0]["reread"]["equity"]) > 90000
        assert any("Implausible account reading" in a["title"] for a in stack.journal.alerts())
        assert all(equity > 90000 for _, equity in stack.journal.equity_curve())
        done = events(logs, "cycle_complete")
        assert len(done) == 1 and Decimal(done[0]["equity"]) > 90000


async def test_an_unconfirmed_reading_acts_on_nothing_and_a_confirmed_one_does(tmp_path: Path) -> None:
    async with tampered(tmp_path) as (stack, proxy, system):
        rows_before = len(stack.journal.equity_curve())
        readings = iter(["-50000", "0", "-50000", "0"])
        proxy.rewrite("GET", "/v2/account", lambda a: _equity(next(readings))(a), times=4)
        with capture_logs() as logs:
            await cycle(system)
            await cycle(system)
        # Two cycles of readings that disagree with themselves: nothing acted, nothing journaled.
        assert [e["outcome"] for e in events(logs, "account_reading_rejected")] == [
            "re-read disagrees, nothing acted on"] * 2
        assert [e.get("account_rejected") for e in events(logs, "cycle_complete")] == [True, True]
        assert system.safety.state is TradingState.ACTIVE
        assert len(await stack.positions()) == 4
        assert len(stack.journal.equity_curve()) == rows_before
        critical = [a for a in stack.journal.alerts() if a["title"] == "Implausible account reading ignored"]
        assert critical and critical[0]["level"] == "critical"

        # A broker that says the same thing twice is believed: the reading stands and acts.
        proxy.clear()
        proxy.rewrite("GET", "/v2/account", _equity("50000"))
        with capture_logs() as logs:
            await cycle(system)
        assert events(logs, "account_reading_confirmed")
        assert events(logs, "circuit_breaker_triggered")
        assert system.safety.latched and await stack.positions() == []


async def test_a_genuine_loss_passes_the_checks_and_trips_the_breaker_in_one_cycle(tmp_path: Path) -> None:
    async with tampered(tmp_path) as (stack, proxy, system):
        await stack.control("shock", {"symbols": "*", "pct": -8})
        with capture_logs() as logs:
            await cycle(system)
        assert not events(logs, "account_reading_rejected") and not events(logs, "account_reading_confirmed")
        assert len(events(logs, "circuit_breaker_triggered")) == 1
        assert system.safety.state is TradingState.HALTED and await stack.positions() == []


# -- market data ----------------------------------------------------------------------------


def _snapshot_prices(symbol: str, value: float) -> Any:
    def rewrite(body: dict[str, Any]) -> dict[str, Any]:
        snap = body[symbol]
        snap["latestTrade"]["p"] = value
        snap["latestQuote"]["ap"] = value
        snap["latestQuote"]["bp"] = value
        for bar in ("minuteBar", "dailyBar"):
            for key in "ohlc":
                snap[bar][key] = value
        return body
    return rewrite


@pytest.mark.parametrize(("value", "reason"), [
    (1e308, "absurd"), (float("nan"), "not a finite number"), (float("inf"), "not a finite number"),
    (-5.0, "not positive"), ("x50", "the last close"),
], ids=["1e308", "nan", "inf", "negative", "50x"])
async def test_bad_quotes_reject_that_symbol_for_the_cycle_and_alert_when_they_persist(
        tmp_path: Path, value: Any, reason: str) -> None:
    async with tampered(tmp_path) as (stack, proxy, system):
        if value == "x50":
            value = float(system._history.bars["AAPL"].close[-1]) * 50
        proxy.rewrite("GET", "/v2/stocks/snapshots", _snapshot_prices("AAPL", value))
        with capture_logs() as logs:
            for _ in range(DATA_REJECTION_ALERT_CYCLES + 1):
                await cycle(system)
        assert not events(logs, "cycle_failed") and not events(logs, "broker_unavailable")
        rejected = events(logs, "market_data_rejected")
        assert {e["symbol"] for e in rejected} == {"AAPL"}
        assert len(rejected) == DATA_REJECTION_ALERT_CYCLES + 1, "one event per cycle"
        assert all(reason in e["reason"] for e in rejected), rejected[0]["reason"]
        done = events(logs, "cycle_complete")
        assert [e["symbols"] for e in done] == [3] * len(done), "the other three are still evaluated"
        alerts = [e for e in events(logs, "alert") if "Market data for AAPL" in e["title"]]
        assert len(alerts) == 1 and alerts[0]["alert_level"] == "warning"
        assert {p.symbol for p in await stack.positions()} == set(HELD)


async def test_a_nan_in_the_daily_history_rejects_that_symbol_not_the_session(tmp_path: Path) -> None:
    async with tampered(tmp_path) as (stack, proxy, system):
        def rewrite(body: dict[str, Any]) -> dict[str, Any]:
            if "MSFT" in body.get("bars", {}):
                body["bars"]["MSFT"][-1]["c"] = float("nan")
            return body
        proxy.rewrite("GET", "/v2/stocks/bars", rewrite)
        system._history.session = None  # the next cycle loads the history again
        with capture_logs() as logs:
            await cycle(system)
            await cycle(system)
        assert not events(logs, "broker_unavailable") and not events(logs, "cycle_failed")
        assert {e["symbol"] for e in events(logs, "market_data_rejected")} == {"MSFT"}
        assert [e["symbols"] for e in events(logs, "cycle_complete")] == [3, 3]


async def test_an_absurd_price_at_the_open_is_no_gap_to_act_on(tmp_path: Path) -> None:
    async with tampered(tmp_path) as (stack, proxy, system):
        await sleep_until(system, et("2025-03-04T16:01"))
        await cycle(system, minutes=0)  # records the closing snapshot
        close = Decimal(str(stack.journal.get_state("closing_snapshot")["closes"]["AAPL"]))

        def rewrite(body: dict[str, Any]) -> dict[str, Any]:
            if "AAPL" in body.get("trades", {}):
                body["trades"]["AAPL"]["p"] = float(close * 50)
            return body
        proxy.rewrite("GET", "/v2/stocks/trades/latest", rewrite)
        with capture_logs() as logs:
            await sleep_until(system, et("2025-03-05T09:00"))
            assert (await cycle(system, minutes=0)).phase == "pre"
        rejected = [e for e in events(logs, "market_data_rejected") if e["source"] == "gap_risk"]
        assert [e["symbol"] for e in rejected] == ["AAPL"] and "the last close" in rejected[0]["reason"]
        assert not [e for e in events(logs, "gap_risk") if e["symbol"] == "AAPL"]
        assert not (stack.journal.get_state("defensive") or {}).get("active")


async def test_a_bogus_last_equity_at_the_session_start_never_becomes_the_breakers_baseline(
        tmp_path: Path) -> None:
    async with tampered(tmp_path) as (stack, proxy, system):
        proxy.rewrite("GET", "/v2/account", lambda a: {**a, "last_equity": "1000000000"}, times=1)
        with capture_logs() as logs:
            await sleep_until(system, et("2025-03-05T09:31"))
            await cycle(system, minutes=0)
        baselines = events(logs, "session_baseline_set")
        assert len(baselines) == 1 and Decimal(baselines[0]["session_start_equity"]) < 200000
        assert not events(logs, "circuit_breaker_triggered")
        assert system.safety.state is TradingState.ACTIVE and len(await stack.positions()) == 4


async def test_start_up_waits_for_a_believable_account(tmp_path: Path) -> None:
    async with sim_stack(tmp_path, start=SESSION_START, overrides=WIDE_STOPS) as stack:
        async with TamperProxy(stack.url) as proxy:
            gateway = build_gateway(stack.settings, proxy.url, stack.clock)
            async with gateway:
                await buy_by_hand(stack, HELD)
                stack.gateway = gateway
                system = stack.new_system()
                readings = iter(["-50000", "0"])
                proxy.rewrite("GET", "/v2/account", lambda a: _equity(next(readings))(a), times=2)
                with capture_logs() as logs:
                    assert await system.startup() is False
                    assert await system.startup() is True
                assert events(logs, "startup_deferred") and events(logs, "account_reading_rejected")
                assert system.summary.start_equity is not None and system.summary.start_equity > 90000
                assert len(await stack.positions()) == 4


async def test_an_account_reading_that_does_not_parse_is_read_again(tmp_path: Path) -> None:
    async with tampered(tmp_path) as (stack, proxy, system):
        proxy.rewrite("GET", "/v2/account", _equity("NaN"), times=1)
        with capture_logs() as logs:
            await cycle(system)
        rejected = events(logs, "account_reading_rejected")
        assert len(rejected) == 1 and "not a finite number" in rejected[0]["problems"][0]
        assert not events(logs, "broker_unavailable") and not events(logs, "circuit_breaker_triggered")
        done = events(logs, "cycle_complete")
        assert len(done) == 1 and Decimal(done[0]["equity"]) > 90000
        assert len(await stack.positions()) == 4
