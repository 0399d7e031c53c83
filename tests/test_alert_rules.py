"""The alerts traders ask for (issue 16, item 3), each made to fire by driving the daemon's loop
against the simulator over HTTP on 127.0.0.1 while the broker misbehaves: a position's loss,
every fill, the rate limit running out, stale market data, the broker and the stream out of
reach for longer than the bound, the emergency exit's outcome with its real quantities, the
summary at the close. The alerter is the real one; what it delivered is read from its
``alert`` log lines and the journal."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import config
from alerter import Alerter, AlertLevel
from engine.alert_rules import AlertRules
from simulator.server import start_server
from tests.test_e2e_safety_support import (
    WIDE_STOPS,
    buy_by_hand,
    cycle,
    et,
    events,
    sim_stack,
    sleep_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SESSION_START = "2025-03-04T10:30:00"


def alerts(logs: list[dict[str, Any]], title_part: str) -> list[dict[str, Any]]:
    """Alerts delivered (not throttled) whose title contains ``title_part``."""
    return [e for e in events(logs, "alert") if title_part in e["title"] and not e.get("throttled")]


async def test_a_position_losing_beyond_the_threshold_alerts_once_per_throttle(tmp_path: Path) -> None:
    overrides = {**WIDE_STOPS, "alerts.position_loss_alert": 0.04}
    async with sim_stack(tmp_path, start=SESSION_START, overrides=overrides) as stack:
        system = stack.new_system()
        await buy_by_hand(stack, {"AAPL": 0.1, "MSFT": 0.1})
        await system.startup()
        await cycle(system)
        await stack.control("shock", {"symbols": ["AAPL"], "pct": -7})
        with capture_logs() as logs:
            await cycle(system)
            await cycle(system)  # still down: throttled, not repeated
        fired = alerts(logs, "Position loss")
        assert len(fired) == 1 and fired[0]["alert_level"] == "warning"
        assert "AAPL" in fired[0]["title"] and not alerts(logs, "MSFT")


async def test_every_fill_alerts_at_info_and_not_by_email_by_default(tmp_path: Path) -> None:
    async with sim_stack(tmp_path, start=SESSION_START, overrides=WIDE_STOPS) as stack:
        system = stack.new_system()
        await system.startup()
        bought = await buy_by_hand(stack, {"AAPL": 0.1})
        with capture_logs() as logs:
            await cycle(system)
        fills = alerts(logs, "Fill: buy")
        assert len(fills) == 1 and fills[0]["alert_level"] == "info"
        assert f"{bought['AAPL']} AAPL" in fills[0]["title"]
        with capture_logs() as logs:
            await cycle(system)
        assert not alerts(logs, "Fill:"), "a fill is alerted once"
    # E-mail: off for INFO unless asked for.
    settings = config.load_settings(env_file=None, environ={}, overrides={
        "alerts.email_enabled": True, "alerts.email_from": "bot@example.com", "alerts.email_to": ["me@example.com"]})
    alerter = Alerter(settings.alerts, stack.clock)
    assert "email" not in alerter.channels_for(AlertLevel.INFO)
    assert "email" in alerter.channels_for(AlertLevel.CRITICAL)
    loud = settings.alerts.model_copy(update={"email_min_level": "info"})
    assert "email" in Alerter(loud, stack.clock).channels_for(AlertLevel.INFO)


async def test_a_broker_rate_budget_running_out_alerts(tmp_path: Path) -> None:
    overrides = {**WIDE_STOPS, "rate_limit.max_requests_per_minute": 40, "alerts.rate_limit_alert_fraction": 0.5}
    async with sim_stack(tmp_path, start=SESSION_START, overrides=overrides) as stack:
        # The broker now counts requests: 40 a minute (real seconds), as Alpaca's headers say.
        await stack.server.stop()
        stack.server = await start_server(stack.core, host="127.0.0.1", port=stack.server.port,
                                          rate_limit_per_minute=40)
        # The client dates the broker's X-RateLimit-Reset on the broker's own clock (the
        # simulator's, here; the wall clock against Alpaca).
        stack.gateway.transport._wall_time = lambda: stack.clock.now().timestamp()
        system = stack.new_system()
        await system.startup()
        with capture_logs() as logs:
            for _ in range(6):
                await cycle(system, minutes=0.1)
                if alerts(logs, "Rate limit"):
                    break
        fired = alerts(logs, "Rate limit near exhaustion") + alerts(logs, "Rate limit exhausted")
        assert fired and fired[0]["alert_level"] in ("warning", "critical")
        remaining = stack.gateway.rate_limiter.remaining()
        assert remaining is not None and remaining < 20


async def test_a_broker_answering_429_raises_a_critical_rate_alert(tmp_path: Path) -> None:
    async with sim_stack(tmp_path, start=SESSION_START, overrides=WIDE_STOPS) as stack:
        system = stack.new_system()
        await system.startup()
        await cycle(system)
        # The broker rate-limits every listing of positions for one cycle.
        await stack.control("faults", {"spec": "rate_limit=1.0,endpoints=/v2/positions"})
        with capture_logs() as logs:
            await cycle(system)
            await stack.control("faults", {"spec": ""})
            await cycle(system)
        fired = alerts(logs, "Rate limit exhausted")
        assert len(fired) == 1 and fired[0]["alert_level"] == "critical"
        assert stack.gateway.rate_limiter.rate_limited_count > 0


async def test_stale_market_data_in_the_session_alerts(tmp_path: Path) -> None:
    async with sim_stack(tmp_path, start=SESSION_START, overrides={**WIDE_STOPS, "alerts.stale_data_seconds": 300}) \
            as stack:
        system = stack.new_system()
        await system.startup()
        real = stack.gateway.get_snapshots

        async def frozen_feed(symbols: list[str], **kw: Any) -> dict[str, Any]:
            """The feed stops updating MSFT: its last trade and quote are 20 minutes old."""
            snaps = await real(symbols, **kw)
            snap = snaps["MSFT"]
            old = stack.clock.now() - timedelta(minutes=20)
            snaps["MSFT"] = snap.model_copy(update={
                "latest_trade": snap.latest_trade.model_copy(update={"t": old}),
                "latest_quote": snap.latest_quote.model_copy(update={"t": old})})
            return snaps

        stack.gateway.get_snapshots = frozen_feed  # type: ignore[method-assign]
        with capture_logs() as logs:
            await cycle(system)
        fired = alerts(logs, "Stale market data")
        assert len(fired) == 1 and fired[0]["alert_level"] == "warning"
        assert "MSFT" in fired[0]["message"] and "AAPL" not in fired[0]["message"]


async def test_broker_unreachable_alerts_only_past_the_bound_and_says_when_it_is_back(tmp_path: Path) -> None:
    overrides = {**WIDE_STOPS, "alerts.unreachable_alert_seconds": 150, "api.max_retries": 0}
    async with sim_stack(tmp_path, start=SESSION_START, overrides=overrides) as stack:
        system = stack.new_system()
        await system.startup()
        await cycle(system)
        await stack.take_broker_offline()
        with capture_logs() as logs:
            await cycle(system)  # t = 0 of the outage
            await cycle(system)  # ~60 s: under the bound, no alert yet
            assert not alerts(logs, "Broker unreachable")
            await cycle(system, minutes=2)  # past 150 s
            fired = alerts(logs, "Broker unreachable")
            assert len(fired) == 1 and fired[0]["alert_level"] == "critical"
            await stack.bring_broker_back()
            await cycle(system)
        back = alerts(logs, "Broker reachable again")
        assert len(back) == 1 and back[0]["alert_level"] == "info"


async def test_the_stream_hook_alerts_an_outage_past_the_bound(tmp_path: Path) -> None:
    async with sim_stack(tmp_path, start=SESSION_START) as stack:
        settings = stack.settings
        stream = io.StringIO()
        alerter = Alerter(settings.alerts, stack.clock, stream=stream)
        rules = AlertRules(alerter, settings, stack.clock)
        with capture_logs() as logs:
            assert await rules.connection_lost("stream", "connection reset") is None
            await stack.clock.sleep(float(settings.alerts.unreachable_alert_seconds) + 1)
            fired = await rules.check_connections()
            await rules.connection_restored("stream")
        assert [o.level for o in fired] == [AlertLevel.WARNING] and fired[0].title == "Stream unreachable"
        assert alerts(logs, "Stream reachable again")


async def test_an_emergency_exit_that_works_says_how_many_shares_it_sold(tmp_path: Path) -> None:
    async with sim_stack(tmp_path, start=SESSION_START) as stack:
        system = stack.new_system()
        await system.startup()
        # Bought by hand while the daemon runs, and -10% before any cycle could protect it:
        # past the 8% emergency-exit loss.
        bought = await buy_by_hand(stack, {"AAPL": 0.15})
        await stack.control("shock", {"symbols": ["AAPL"], "pct": -10})
        with capture_logs() as logs:
            await cycle(system)
        done = alerts(logs, "Emergency exit done: AAPL")
        assert len(done) == 1 and done[0]["alert_level"] == "critical"
        assert f"sold {bought['AAPL']} of {bought['AAPL']} shares" in done[0]["message"]
        assert await stack.positions() == []


async def test_an_emergency_exit_that_fails_says_how_many_shares_are_still_held(tmp_path: Path) -> None:
    async with sim_stack(tmp_path, start=SESSION_START) as stack:
        system = stack.new_system()
        await system.startup()
        # Bought by hand while the daemon runs, and -10% before any cycle could protect it:
        # past the 8% emergency-exit loss.
        bought = await buy_by_hand(stack, {"AAPL": 0.15})
        await stack.control("shock", {"symbols": ["AAPL"], "pct": -10})
        # The broker now fails every request about a single position (the listing still works).
        await stack.control("faults", {"spec": "error_rate=1.0,endpoints=/v2/positions/*"})
        with capture_logs() as logs:
            await cycle(system)
        await stack.control("faults", {"spec": ""})
        failed = alerts(logs, "Emergency stop failed: AAPL")
        assert len(failed) == 1 and failed[0]["alert_level"] == "emergency"
        assert f"Could not sell {bought['AAPL']} shares of AAPL" in failed[0]["message"]
        stopped = events(logs, "emergency_stop_failed")
        assert stopped and stopped[0]["unsold_qty"] == str(bought["AAPL"])
        assert {p.symbol: p.qty for p in await stack.positions()} == bought


async def test_the_close_brings_a_daily_summary(tmp_path: Path) -> None:
    async with sim_stack(tmp_path, start="2025-03-04T15:50:00", overrides=WIDE_STOPS) as stack:
        system = stack.new_system()
        await buy_by_hand(stack, {"AAPL": 0.1})
        await system.startup()
        await cycle(system)
        with capture_logs() as logs:
            await sleep_until(system, et("2025-03-04T16:05"))
            await system.refresh_market_status()
        summary = alerts(logs, "Daily summary 2025-03-04")
        assert len(summary) == 1 and summary[0]["alert_level"] == "info"
        assert "open positions 1" in summary[0]["message"] and "equity" in summary[0]["message"]


def test_fills_already_in_the_journal_at_start_are_not_alerted_again(tmp_path: Path) -> None:
    from journal.journal import Journal

    journal = Journal(tmp_path / "state.db")
    at = datetime(2025, 3, 4, 15, 0, tzinfo=timezone.utc)
    journal.record_fill("e1", None, "o1", "AAPL", "buy", Decimal(5), Decimal(100), at)
    settings = config.load_settings(env_file=None, environ={})

    class Clock:
        def now(self) -> datetime:
            return at

    rules = AlertRules(Alerter(settings.alerts, Clock(), stream=io.StringIO()), settings, Clock(), journal)
    import asyncio

    assert asyncio.run(rules.new_fills()) == []
    journal.record_fill("e2", None, "o2", "AAPL", "sell", Decimal(5), Decimal(101), at)
    fresh = asyncio.run(rules.new_fills())
    assert [o.title for o in fresh] == ["Fill: sell 5 AAPL @ 101"]
    journal.close()
