"""Issue 18 item 3: the lifetimes of an analysis, an opportunity, its confidence and its price,
on the simulator's clock (``simulator.clock.SimClock`` at maximum speed, moved by hand)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from structlog.testing import capture_logs

import config
from ai_analyzer import TradeIntent
from engine.opportunities import OpportunityBook, snapshot_price_time
from market.market_data import BarSeries, MarketData
from simulator.clock import SimClock

T0 = datetime(2025, 3, 4, 15, 0, tzinfo=timezone.utc)  # 10:00 New York, a Tuesday
SESSION = date(2025, 3, 4)


@dataclass
class Sig:
    symbol: str = "AAPL"
    action: str = "buy"
    confidence: float = 0.8
    reasoning: str = "test"
    strategy: str = "enhanced_momentum"
    metadata: dict[str, Any] = field(default_factory=dict)


class CountingAnalyzer:
    """Stands in for ``AIAnalyzer.analyze``: a fixed-confidence intent, counted."""

    def __init__(self, clock: SimClock, confidence: float = 0.9, method: str = "transparent") -> None:
        self.clock, self.confidence, self.method, self.calls = clock, confidence, method, 0

    async def __call__(self, signal: Any, md: MarketData) -> TradeIntent | None:
        self.calls += 1
        now = self.clock.now()
        return TradeIntent(
            intent_id=f"x-{self.calls}", symbol=signal.symbol, side="buy", confidence=self.confidence,
            confidence_breakdown={"method": self.method}, reasoning="r", strategy=signal.strategy,
            entry_price=md.last_price, stop_price=md.last_price * 0.97, target_price=md.last_price * 1.06,
            created_at=now, decays_at=now + timedelta(hours=4),
        )


def settings(**ai: Any) -> Any:
    ai.setdefault("min_confidence", 0.5)
    return config.load_settings(env_file=None, environ={}, overrides={"ai": ai})


def market(clock: SimClock, *, price_age: timedelta | None = timedelta(seconds=5)) -> MarketData:
    n = 40
    ts = np.arange(n, dtype=np.int64) * 86400 + int((T0 - timedelta(days=n)).timestamp())
    close = np.linspace(100, 110, n)
    daily = BarSeries.from_arrays(ts, close, close + 1, close - 1, close, np.full(n, 1e6))
    now = clock.now()
    return MarketData(symbol="AAPL", now=now, daily=daily, last_price=110.0,
                      last_price_at=None if price_age is None else now - price_age)


def setup(**ai: Any) -> tuple[SimClock, OpportunityBook, CountingAnalyzer]:
    clock = SimClock(T0, speed=None)
    return clock, OpportunityBook(settings(**ai), clock), CountingAnalyzer(clock)


async def cycle(book: OpportunityBook, clock: SimClock, analyze: Any, signal: Sig | None = None,
                **market_kw: Any) -> TradeIntent | None:
    signal = signal or Sig()
    book.start_cycle(SESSION, [signal.symbol])
    return await book.intent_for(signal, market(clock, **market_kw), analyze)


async def test_an_analysis_is_reused_until_analysis_refresh_minutes_then_scored_again() -> None:
    clock, book, analyze = setup(analysis_refresh_minutes=15)
    first = await cycle(book, clock, analyze)
    for _ in range(14):  # a cycle a minute for 14 more minutes: the same verdict
        clock.advance(1)
        assert (await cycle(book, clock, analyze)) is not None
    assert analyze.calls == 1
    clock.advance(1)  # 15 minutes after the analysis: scored again
    again = await cycle(book, clock, analyze)
    assert analyze.calls == 2
    assert first is not None and again is not None and again.intent_id != first.intent_id


async def test_another_strategy_s_signal_is_analysed_afresh() -> None:
    clock, book, analyze = setup()
    await cycle(book, clock, analyze)
    clock.advance(1)
    await cycle(book, clock, analyze, Sig(strategy="breakout"))
    assert analyze.calls == 2


async def test_an_opportunity_older_than_the_timeout_is_dropped_once_and_stays_dropped() -> None:
    clock, book, analyze = setup(opportunity_timeout_minutes=60, confidence_decay_hours=100)
    assert await cycle(book, clock, analyze) is not None
    clock.advance(60)
    assert await cycle(book, clock, analyze) is not None  # exactly 60 minutes: still alive
    clock.advance(1)
    with capture_logs() as logs:
        assert await cycle(book, clock, analyze) is None
        clock.advance(20)
        assert await cycle(book, clock, analyze) is None
    expired = [e for e in logs if e["event"] == "opportunity_expired"]
    assert len(expired) == 1 and expired[0]["symbol"] == "AAPL" and expired[0]["age_minutes"] == 61.0


async def test_a_signal_that_disappears_starts_a_new_opportunity_and_a_new_session_too() -> None:
    clock, book, analyze = setup(opportunity_timeout_minutes=60)
    await cycle(book, clock, analyze)
    clock.advance(61)
    assert await cycle(book, clock, analyze) is None  # expired
    book.start_cycle(SESSION, [])  # a cycle without the signal: forgotten
    clock.advance(1)
    assert await cycle(book, clock, analyze) is not None
    clock.advance(61)
    assert await cycle(book, clock, analyze) is None
    book.start_cycle(date(2025, 3, 5), ["AAPL"])  # the next session: a new idea
    assert await book.intent_for(Sig(), market(clock), analyze) is not None


async def test_confidence_decays_linearly_to_zero_over_confidence_decay_hours() -> None:
    clock, book, analyze = setup(confidence_decay_hours=4, opportunity_timeout_minutes=1000,
                                 analysis_refresh_minutes=15, min_confidence=0.0)
    seen = []
    for minutes in (0, 60, 120, 180):
        clock.set_time(T0 + timedelta(minutes=minutes))
        intent = await cycle(book, clock, analyze)
        assert intent is not None
        seen.append(intent.confidence)
        assert intent.confidence_breakdown["opportunity_age_minutes"] == pytest.approx(minutes)
    assert seen == pytest.approx([0.9, 0.675, 0.45, 0.225])
    clock.set_time(T0 + timedelta(hours=4))
    with capture_logs() as logs:
        assert await cycle(book, clock, analyze) is None  # zero at four hours
    assert [e["event"] for e in logs] == ["opportunity_decayed"]


async def test_a_decayed_confidence_below_the_threshold_it_passed_is_dropped() -> None:
    clock, book, analyze = setup(confidence_decay_hours=4, min_confidence=0.8, opportunity_timeout_minutes=1000)
    assert await cycle(book, clock, analyze) is not None  # 0.9 >= 0.8
    clock.advance(20)  # 0.9 x (1 - 20/240) = 0.825
    assert await cycle(book, clock, analyze) is not None
    clock.advance(10)  # 0.9 x (1 - 30/240) = 0.7875 < 0.8
    with capture_logs() as logs:
        assert await cycle(book, clock, analyze) is None
    decayed = [e for e in logs if e["event"] == "opportunity_decayed"]
    assert decayed and decayed[0]["min_confidence"] == 0.8 and decayed[0]["confidence"] == pytest.approx(0.7875)


async def test_an_entry_is_never_based_on_a_trade_price_older_than_the_staleness_bound() -> None:
    clock, book, analyze = setup()
    with capture_logs() as logs:
        assert await cycle(book, clock, analyze, price_age=timedelta(minutes=16)) is None
        assert await cycle(book, clock, analyze, price_age=timedelta(minutes=15)) is not None
    stale = [e for e in logs if e["event"] == "entry_price_stale"]
    assert len(stale) == 1 and stale[0]["age_seconds"] == 960.0 and stale[0]["max_age_seconds"] == 900.0
    assert analyze.calls == 1  # the stale price was not even analysed


async def test_the_staleness_bound_is_data_quality_max_quote_age_seconds() -> None:
    clock = SimClock(T0, speed=None)
    s = config.load_settings(env_file=None, environ={}, overrides={"data_quality": {"max_quote_age_seconds": 60}})
    book = OpportunityBook(s, clock)
    book.start_cycle(SESSION, ["AAPL"])
    assert await book.intent_for(Sig(), market(clock, price_age=timedelta(seconds=61)), CountingAnalyzer(clock)) is None


async def test_a_cached_intent_is_never_older_than_the_staleness_bound() -> None:
    clock = SimClock(T0, speed=None)
    s = config.load_settings(env_file=None, environ={}, overrides={
        "data_quality": {"max_quote_age_seconds": 300}, "ai": {"analysis_refresh_minutes": 15}})
    book, analyze = OpportunityBook(s, clock), CountingAnalyzer(clock)
    await cycle(book, clock, analyze)
    clock.advance(5)
    await cycle(book, clock, analyze)
    assert analyze.calls == 2  # re-scored at the price bound (5 min), before the 15-minute refresh


def test_the_price_time_of_a_snapshot_is_its_trade_else_the_end_of_its_minute_bar_else_its_daily_bar() -> None:
    @dataclass
    class Item:
        t: datetime
        p: float = 1.0

    @dataclass
    class Snap:
        latest_trade: Any = None
        minute_bar: Any = None
        daily_bar: Any = None

    t = datetime(2025, 3, 4, 15, 0, tzinfo=timezone.utc)
    assert snapshot_price_time(Snap(Item(t), Item(t - timedelta(minutes=3)))) == t
    assert snapshot_price_time(Snap(None, Item(t))) == t + timedelta(minutes=1)
    assert snapshot_price_time(Snap(None, None, Item(t.replace(hour=5)))) == t.replace(hour=5)
    assert snapshot_price_time(Snap()) is None
