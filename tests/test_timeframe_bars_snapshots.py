"""Issue 18 item 1 under issue 14's request budget: the intraday bars of the multi-timeframe
analysis are kept from each cycle's snapshot ``minuteBar``; the batched 1Min bars request is
made only to backfill (at start, after a gap, for a symbol that joins), never on a steady cycle,
and the series built this way equal what the bars endpoint returns."""

from __future__ import annotations

import io
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from structlog.testing import capture_logs

import config
from alerter import Alerter
from backtest.sim_broker import InProcessBroker
from broker.models import Bar, Snapshot
from core.errors import TemporaryError
from engine.timeframe_bars import LOAD_DAYS, TimeframeBars
from engine.trading_system import TradingSystem
from journal.journal import Journal
from market import timeframes as tf
from market.market_data import BarSeries
from simulator.core import SimulatorCore
from tests.test_e2e_safety_support import AlwaysBuy, PassThroughAnalyzer, load_test_settings

T0 = datetime(2025, 3, 4, 15, 0, tzinfo=timezone.utc)  # 10:00 New York
MINUTE = timedelta(minutes=1)


def made_up_bar(symbol: str, t: int, revision: float = 0.0) -> Bar:
    """The made-up market's bar of ``symbol`` for the minute starting at ``t``."""
    price = 50 + zlib.crc32(symbol.encode()) % 50 + (t % 7200) / 7200 + revision
    return Bar(t=datetime.fromtimestamp(t, timezone.utc), o=price, h=price + 0.1, l=price - 0.1,
               c=price + revision, v=100)


class MinuteMarket:
    """A broker over a made-up market where every minute of every symbol traded: ``get_bars``
    (recorded) and the snapshots a cycle would read at ``now``."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, ...], datetime, datetime]] = []
        self.down = False

    async def get_bars(self, symbols: list[str], timeframe: str = "1Day", start: datetime | None = None,
                       end: datetime | None = None, **_: Any) -> dict[str, list[Bar]]:
        assert start is not None and end is not None and timeframe == "1Min"
        self.calls.append((tuple(symbols), start, end))
        if self.down:
            raise TemporaryError("503 service unavailable")
        first = tf.bucket_start(start.timestamp() + 59, 60)
        last = tf.bucket_start(end.timestamp(), 60) - 60  # the running minute is not published
        return {s: [made_up_bar(s, t) for t in range(first, last + 1, 60)] for s in symbols}

    @staticmethod
    def snapshots(symbols: list[str], now: datetime) -> dict[str, Snapshot]:
        latest = tf.bucket_start(now.timestamp(), 60) - 60
        return {s: Snapshot(minute_bar=made_up_bar(s, latest)) for s in symbols}


async def cycle(cache: TimeframeBars, broker: MinuteMarket, symbols: list[str],
                now: datetime) -> dict[str, dict[str, BarSeries]]:
    return await cache.refresh(broker, symbols, now, broker.snapshots(symbols, now))


def same_bars(a: BarSeries, b: BarSeries, seconds: int) -> bool:
    """Equal bars where both windows are whole: from the second bucket of the later start on
    (the first bar of a resampled window may hold only part of its bucket)."""
    since = max(int(a.ts[0]), int(b.ts[0])) + seconds
    a, b = a.slice(int(np.searchsorted(a.ts, since)), len(a)), b.slice(int(np.searchsorted(b.ts, since)), len(b))
    return len(a) > 0 and all(np.array_equal(getattr(a, c), getattr(b, c))
                              for c in ("ts", "open", "high", "low", "close", "volume"))


async def test_steady_cycles_append_the_snapshot_minute_without_a_request() -> None:
    symbols = ["AAPL", "MSFT", "SPY"]
    broker, cache = MinuteMarket(), TimeframeBars(config.Settings())
    start = T0 + timedelta(seconds=30)
    await cycle(cache, broker, symbols, start)
    assert len(broker.calls) == 1 and broker.calls[0][0] == tuple(symbols)
    assert broker.calls[0][1] == start - timedelta(days=LOAD_DAYS)
    frames: dict[str, dict[str, BarSeries]] = {}
    for k in range(1, 21):  # twenty regular cycles, a minute apart
        frames = await cycle(cache, broker, symbols, start + k * MINUTE)
    assert len(broker.calls) == 1, "a steady cycle asks for no bars"
    now = start + 20 * MINUTE
    assert int(frames["AAPL"]["1Min"].ts[-1]) == tf.bucket_start(now.timestamp(), 60) - 60
    # the same analysis input as a fresh load of the bars endpoint at that moment
    fresh = await TimeframeBars(config.Settings()).refresh(MinuteMarket(), symbols, now)
    for symbol in symbols:
        assert set(frames[symbol]) == {"1Min", "5Min", "15Min", "1Hour"}
        for name, bars in frames[symbol].items():
            assert same_bars(bars, fresh[symbol][name], tf.INTRADAY_SECONDS[name]), (symbol, name)


async def test_a_revised_minute_replaces_the_last_bar_and_reaches_the_completed_5min_bar() -> None:
    broker, cache = MinuteMarket(), TimeframeBars(config.Settings())
    now = T0 + timedelta(seconds=5)  # 10:00:05: the 09:59 minute completes the 09:55 five-minute bar
    first = await cycle(cache, broker, ["AAPL"], now)
    minutes, five = first["AAPL"]["1Min"], first["AAPL"]["5Min"]
    last = int(minutes.ts[-1])
    # the same minute again, unchanged: nothing moves, the cached series are reused
    same = await cycle(cache, broker, ["AAPL"], now + timedelta(seconds=20))
    assert same["AAPL"]["1Min"] is minutes and same["AAPL"]["5Min"] is five
    # the same minute revised (late trades): replaced, not appended; the 5-minute bar follows
    revised = {"AAPL": Snapshot(minute_bar=made_up_bar("AAPL", last, revision=1.0))}
    out = await cache.refresh(broker, ["AAPL"], now + timedelta(seconds=40), revised)
    assert len(broker.calls) == 1
    assert len(out["AAPL"]["1Min"]) == len(minutes) and int(out["AAPL"]["1Min"].ts[-1]) == last
    assert out["AAPL"]["1Min"].close[-1] == pytest.approx(minutes.close[-1] + 2.0)
    assert out["AAPL"]["5Min"].close[-1] == pytest.approx(five.close[-1] + 2.0)
    assert out["AAPL"]["5Min"].high[-1] == pytest.approx(five.high[-1] + 1.0)


async def test_a_gap_is_backfilled_once_for_every_symbol_in_one_request() -> None:
    symbols = [f"S{k:02d}" for k in range(12)]
    broker, cache = MinuteMarket(), TimeframeBars(config.Settings())
    now = T0 + timedelta(seconds=30)
    await cycle(cache, broker, symbols, now)
    await cycle(cache, broker, symbols, now + MINUTE)
    assert len(broker.calls) == 1
    # a cycle three minutes later: two completed minutes were never seen in a snapshot
    late = now + 4 * MINUTE
    frames = await cycle(cache, broker, symbols, late)
    assert len(broker.calls) == 2
    assert broker.calls[1][0] == tuple(symbols) and broker.calls[1][1] == T0 + MINUTE  # from the known end
    ts = frames["S00"]["1Min"].ts
    assert list(np.diff(ts[-6:])) == [60] * 5, "no minute is missing after the backfill"
    for k in range(5, 9):  # steady again: no more requests
        await cycle(cache, broker, symbols, now + k * MINUTE)
    assert len(broker.calls) == 2


async def test_a_symbol_that_joins_is_backfilled_alone_and_a_failed_backfill_is_retried() -> None:
    broker, cache = MinuteMarket(), TimeframeBars(config.Settings())
    now = T0 + timedelta(seconds=30)
    await cycle(cache, broker, ["AAPL", "MSFT"], now)
    broker.down = True
    with capture_logs() as logs:
        frames = await cycle(cache, broker, ["AAPL", "MSFT", "NVDA"], now + MINUTE)
    assert broker.calls[-1][0] == ("NVDA",) and broker.calls[-1][1] == now + MINUTE - timedelta(days=LOAD_DAYS)
    assert "timeframe_bars_unavailable" in [e["event"] for e in logs]
    assert set(frames) == {"AAPL", "MSFT"}  # the others carry on from their snapshots
    broker.down = False
    frames = await cycle(cache, broker, ["AAPL", "MSFT", "NVDA"], now + 2 * MINUTE)
    assert len(broker.calls) == 3 and broker.calls[-1][0] == ("NVDA",)
    assert set(frames) == {"AAPL", "MSFT", "NVDA"}
    await cycle(cache, broker, ["AAPL", "MSFT", "NVDA"], now + 3 * MINUTE)
    assert len(broker.calls) == 3


async def test_a_minute_without_trades_is_no_gap() -> None:
    broker, cache = MinuteMarket(), TimeframeBars(config.Settings())
    now = T0 + timedelta(seconds=30)
    first = await cycle(cache, broker, ["THIN"], now)
    last = int(first["THIN"]["1Min"].ts[-1])
    # two minutes on, the snapshot's latest bar is still the old one: nothing traded since
    quiet = {"THIN": Snapshot(minute_bar=made_up_bar("THIN", last))}
    await cache.refresh(broker, ["THIN"], now + 2 * MINUTE, quiet)
    # and the next traded minute follows without a backfill
    frames = await cycle(cache, broker, ["THIN"], now + 3 * MINUTE)
    assert len(broker.calls) == 1
    assert int(frames["THIN"]["1Min"].ts[-1]) == last + 180


# -- in the daemon's loop ----------------------------------------------------------------------

START = "2025-03-05T11:00:00-05:00"  # a Wednesday, regular hours: two days of minutes behind


async def loop_requests(tmp_path: Path, symbols: list[str], turns: int) -> tuple[list[int], list[str], TradingSystem]:
    """``cycle_complete.requests`` of each cycle, and the clock time of each 1Min bars request."""
    settings = load_test_settings(tmp_path, {
        "scanning.symbols": symbols, "sim.start": START, "sim.speed": "max", "sim.cash": 100000,
        "ai.use_news_sentiment": False})
    core = SimulatorCore.create(symbols=symbols, seed=7, start=START, speed=None, cash=100000)
    broker = InProcessBroker(core, max_quote_age=settings.data_quality.max_quote_age_seconds,
                             data_feed=settings.api.data_feed)
    journal = Journal(settings.storage.state_db)
    alerter = Alerter(settings.alerts, core.clock, stream=io.StringIO())
    alerter.attach_journal(journal)
    loop = TradingSystem(settings, broker, core.clock, journal=journal, alerter=alerter, run_id="mtf",
                         regime_by_date=True)
    loop.strategies = [AlwaysBuy(settings)]
    loop.analyzer = PassThroughAnalyzer(core.clock)  # type: ignore[assignment]
    minute_requests: list[str] = []
    real = broker.get_bars

    async def counted(symbols: list[str], timeframe: str = "1Day", **kwargs: Any) -> Any:
        if timeframe == "1Min":
            minute_requests.append(core.clock.now().isoformat())
        return await real(symbols, timeframe=timeframe, **kwargs)

    broker.get_bars = counted  # type: ignore[method-assign]
    try:
        with capture_logs() as logs:
            for _ in range(turns):
                await core.clock.sleep(60)
                await loop.step()
        return [e["requests"] for e in logs if e["event"] == "cycle_complete"], minute_requests, loop
    finally:
        await alerter.aclose()
        journal.close()


async def test_in_the_loop_steady_cycles_make_no_bars_request_whatever_the_symbol_count(tmp_path: Path) -> None:
    few, few_minutes, _ = await loop_requests(tmp_path / "few", ["SPY", "AAPL", "MSFT"], 8)
    many_symbols = ["SPY", "AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "JPM", "XOM"]
    many, many_minutes, loop = await loop_requests(tmp_path / "many", many_symbols, 8)
    assert len(few) == len(many) == 8
    assert len(few_minutes) == 1 and len(many_minutes) == 1, "one batched load at start, then none"
    assert few[3:] == many[3:], "a steady cycle's requests do not grow with the symbols"
    assert len(set(many[3:])) == 1
    # what the strategies were shown equals a fresh load of the bars endpoint at that moment
    kept = await loop.timeframe_bars.refresh(loop.broker, many_symbols, loop.clock.now(), None)
    fresh = await TimeframeBars(loop.settings).refresh(loop.broker, many_symbols, loop.clock.now())
    for symbol in many_symbols:
        for name in ("1Min", "5Min", "15Min", "1Hour"):
            assert same_bars(kept[symbol][name], fresh[symbol][name], tf.INTRADAY_SECONDS[name]), (symbol, name)


async def test_a_minute_not_yet_published_at_the_snapshot_is_taken_next_cycle_without_a_request() -> None:
    broker, cache = MinuteMarket(), TimeframeBars(config.Settings())
    now = T0 + timedelta(seconds=30)
    first = await cycle(cache, broker, ["AAPL"], now)
    last = int(first["AAPL"]["1Min"].ts[-1])  # 09:59
    # 10:01:00.5: the 10:00 bar is not published yet; the snapshot still shows 09:59
    early = T0 + MINUTE + timedelta(milliseconds=500)
    await cache.refresh(broker, ["AAPL"], early, {"AAPL": Snapshot(minute_bar=made_up_bar("AAPL", last))})
    # 10:02:00.5: the snapshot shows 10:00 (10:01 not published yet): no minute was missed
    later = T0 + 2 * MINUTE + timedelta(milliseconds=500)
    frames = await cache.refresh(broker, ["AAPL"], later, {"AAPL": Snapshot(minute_bar=made_up_bar("AAPL", last + 60))})
    assert len(broker.calls) == 1
    assert int(frames["AAPL"]["1Min"].ts[-1]) == last + 60
    # a snapshot showing the running minute adds no bar (only completed bars are kept)
    running = {"AAPL": Snapshot(minute_bar=made_up_bar("AAPL", last + 180))}
    frames = await cache.refresh(broker, ["AAPL"], later + timedelta(seconds=50), running)
    assert int(frames["AAPL"]["1Min"].ts[-1]) + 60 <= (later + timedelta(seconds=50)).timestamp()
    # ...and the completed 10:01 it hides was never seen: fetched by one backfill
    assert len(broker.calls) == 2 and int(frames["AAPL"]["1Min"].ts[-1]) == last + 120
