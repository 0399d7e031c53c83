"""Issue 18 in the daemon's own loop (``TradingSystem`` over the simulator core in-process, on
the simulator's clock): the market data the strategies see carries the intraday timeframes and
the time of its price, and a stale trade price never drives an entry."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from alerter import Alerter
from backtest.sim_broker import InProcessBroker
from engine import market_data_step as market_data_step_module
from engine.trading_system import TradingSystem
from journal.journal import Journal
from market.market_data import MarketData
from simulator.core import SimulatorCore
from strategies.base import Signal
from tests.test_e2e_safety_support import AlwaysBuy, PassThroughAnalyzer, load_test_settings

START = "2025-03-05T11:00:00-05:00"  # a Wednesday, regular hours: two days of minutes behind
SYMBOLS = ["SPY", "AAPL", "MSFT"]


class Recording(AlwaysBuy):
    """Buys everything, and keeps the market data it was shown."""

    name = "issue18_recording_buy"
    seen: list[MarketData] = []

    async def evaluate_opportunity(self, symbol: str, market_data: MarketData) -> Signal:
        Recording.seen.append(market_data)
        return await super().evaluate_opportunity(symbol, market_data)


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[tuple[TradingSystem, InProcessBroker]]:
    settings = load_test_settings(tmp_path, {
        "scanning.symbols": SYMBOLS, "sim.start": START, "sim.speed": "max", "sim.cash": 100000,
        "ai.use_news_sentiment": False})
    core = SimulatorCore.create(symbols=SYMBOLS, seed=7, start=START, speed=None, cash=100000)
    broker = InProcessBroker(core, max_quote_age=settings.data_quality.max_quote_age_seconds,
                             data_feed=settings.api.data_feed)
    journal = Journal(settings.storage.state_db)
    alerter = Alerter(settings.alerts, core.clock, stream=io.StringIO())
    alerter.attach_journal(journal)
    loop = TradingSystem(settings, broker, core.clock, journal=journal, alerter=alerter, run_id="i18",
                         regime_by_date=True)
    loop.strategies = [Recording(settings)]
    loop.analyzer = PassThroughAnalyzer(core.clock)  # type: ignore[assignment]
    Recording.seen = []
    try:
        yield loop, broker
    finally:
        await alerter.aclose()
        journal.close()


async def turns(loop: TradingSystem, n: int) -> None:
    for _ in range(n):
        await loop.clock.sleep(60)
        await loop.step()


async def test_the_loop_hands_strategies_every_intraday_timeframe_and_the_price_s_time(
        system: tuple[TradingSystem, InProcessBroker]) -> None:
    loop, broker = system
    with capture_logs() as logs:
        await turns(loop, 3)
    assert Recording.seen, [e["event"] for e in logs]
    md = Recording.seen[-1]
    assert set(md.timeframes) == {"1Min", "5Min", "15Min", "1Hour"}
    assert all(len(bars) > 0 for bars in md.timeframes.values())
    now = md.now
    assert int(md.timeframes["1Min"].ts[-1]) + 60 <= now.timestamp()  # completed bars only
    assert md.last_price_at is not None and now - md.last_price_at <= timedelta(minutes=15)
    assert [e for e in logs if e["event"] == "order_submitted"]


async def test_a_stale_trade_price_never_drives_an_entry(
        system: tuple[TradingSystem, InProcessBroker], monkeypatch: pytest.MonkeyPatch) -> None:
    loop, _ = system

    def twenty_minutes_old(snap: Any) -> datetime:
        return loop.clock.now() - timedelta(minutes=20)

    monkeypatch.setattr(market_data_step_module, "snapshot_price_time", twenty_minutes_old)
    with capture_logs() as logs:
        await turns(loop, 3)
    assert Recording.seen, "the strategies were asked"
    stale = [e for e in logs if e["event"] == "entry_price_stale"]
    offered = {e["symbol"] for e in logs if e["event"] == "signal" and e["action"] == "buy"}
    assert offered and {e["symbol"] for e in stale} == offered  # every symbol that passed the scanner
    assert all(e["age_seconds"] >= 1200 for e in stale)
    assert not [e for e in logs if e["event"] in ("trade_intent", "order_submitted")]


async def test_in_the_loop_an_idea_vetoed_for_an_hour_is_analysed_every_15_minutes_then_dropped(
        tmp_path: Path) -> None:
    settings = load_test_settings(tmp_path, {
        "scanning.symbols": SYMBOLS, "sim.start": START, "sim.speed": "max", "sim.cash": 100000,
        "ai.use_news_sentiment": False, "trading.max_positions": 1})
    core = SimulatorCore.create(symbols=SYMBOLS, seed=7, start=START, speed=None, cash=100000)
    broker = InProcessBroker(core, max_quote_age=settings.data_quality.max_quote_age_seconds,
                             data_feed=settings.api.data_feed)
    journal = Journal(settings.storage.state_db)
    alerter = Alerter(settings.alerts, core.clock, stream=io.StringIO())
    alerter.attach_journal(journal)
    loop = TradingSystem(settings, broker, core.clock, journal=journal, alerter=alerter, run_id="i18",
                         regime_by_date=True)
    loop.strategies = [AlwaysBuy(settings)]
    analyzed: list[tuple[str, datetime]] = []
    inner = PassThroughAnalyzer(core.clock)

    class Counting:
        def detect_regime(self, benchmark: Any) -> str:
            return "range"

        async def analyze(self, signal: Signal, md: MarketData) -> Any:
            analyzed.append((signal.symbol, core.clock.now()))
            return await inner.analyze(signal, md)

    loop.analyzer = Counting()  # type: ignore[assignment]
    try:
        with capture_logs() as logs:
            await turns(loop, 75)  # 75 minutes of one-minute cycles
    finally:
        await alerter.aclose()
        journal.close()
    entered = {e["symbol"] for e in logs if e["event"] == "order_submitted"}
    assert len(entered) == 1  # one position allowed: the other idea is vetoed every cycle
    waiting = {symbol for symbol, _ in analyzed} - entered
    assert waiting
    symbol = sorted(waiting)[0]
    times = [t for s, t in analyzed if s == symbol]
    gaps = [(b - a).total_seconds() / 60 for a, b in zip(times, times[1:])]
    assert len(times) == 5 and gaps == [15.0] * 4, gaps  # at 0, 15, 30, 45 and 60 minutes, not between
    expired = [e for e in logs if e["event"] == "opportunity_expired" and e["symbol"] == symbol]
    assert len(expired) == 1 and 60 < expired[0]["age_minutes"] < 63
    # between the analyses the cached intent was still ranked and vetoed, every cycle, until the timeout
    vetoes = [e for e in logs if e["event"] == "risk_veto" and e.get("symbol") == symbol]
    assert 55 <= len(vetoes) <= 62, len(vetoes)
