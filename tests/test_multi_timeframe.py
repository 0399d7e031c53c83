"""Issue 18 item 1: multi-timeframe analysis. Resampling, the per-timeframe signals and their
weighted combination, the batched and cached fetch (requests per cycle do not grow with the
symbols), the breakdown in ``ai_decision``, and backtests on minute data and on daily data."""

from __future__ import annotations

import shutil
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from structlog.testing import capture_logs

import config
from ai import multi_timeframe as mtf
from ai_analyzer import AIAnalyzer
from backtest.options import BacktestOptions, timeframe_note
from backtest.runner import run_backtest
from broker.models import Bar
from engine.timeframe_bars import TimeframeBars
from market import timeframes as tf
from market.market_data import BarSeries, MarketData
from simulator.clock import SimClock
from strategies.base import BaseStrategy, Signal
from tests.conftest import SHARED_DATA

T0 = datetime(2025, 3, 4, 15, 0, tzinfo=timezone.utc)  # 10:00 New York


def series(closes: list[float] | np.ndarray, start: int, step: int) -> BarSeries:
    c = np.asarray(closes, dtype=float)
    ts = start + np.arange(len(c), dtype=np.int64) * step
    return BarSeries.from_arrays(ts, c, c * 1.001, c * 0.999, c, np.full(len(c), 100.0))


# -- resampling ------------------------------------------------------------------------------


def test_minutes_resample_into_epoch_aligned_bars_like_the_data_api() -> None:
    start = int(datetime(2025, 3, 4, 14, 58, tzinfo=timezone.utc).timestamp())  # 09:58 New York
    ts = [start + 60 * k for k in (0, 1, 2, 3, 4, 6)]  # no trade at 15:03 UTC
    minutes = BarSeries.from_arrays(ts, [1, 2, 3, 4, 5, 7], [1.5, 2.5, 9, 4.5, 5.5, 7.5],
                                    [0.5, 1.5, 2.5, 0.1, 4.5, 6.5], [1.2, 2.2, 3.2, 4.2, 5.2, 7.2],
                                    [10, 20, 30, 40, 50, 70])
    five = tf.resample(minutes, 300)
    assert list(five.ts) == [start - 180, start + 120]  # the 14:55 and 15:00 UTC buckets
    assert list(five.open) == [1, 3] and list(five.close) == [2.2, 7.2]
    assert list(five.high) == [2.5, 9] and list(five.low) == [0.5, 0.1]
    assert list(five.volume) == [30, 190]
    hour = tf.resample(minutes, 3600)
    assert list(hour.ts) == [start - 58 * 60, start + 120] and list(hour.volume) == [30, 190]
    # only completed bars: at 15:04:30 the 15:00 bucket is still running
    assert list(tf.completed(five, 300, start + 6 * 60 + 30).ts) == [start - 180]
    assert list(tf.completed(five, 300, start + 7 * 60).ts) == [start - 180, start + 120]


def test_a_new_bar_is_possible_only_once_the_clock_enters_a_new_bucket() -> None:
    t = int(T0.timestamp())
    assert tf.new_bar_possible(300, None, t)
    assert not tf.new_bar_possible(300, t + 10, t + 299)
    assert tf.new_bar_possible(300, t + 299, t + 300)


# -- signals and combination -----------------------------------------------------------------


def test_each_timeframe_signals_its_own_trend_and_needs_enough_bars() -> None:
    up = series(100 * np.exp(np.linspace(0, 0.05, 40) + 0.001 * np.sin(np.arange(40))), 0, 60)
    down = series(100 * np.exp(np.linspace(0, -0.05, 40) + 0.001 * np.sin(np.arange(40))), 0, 60)
    assert mtf.timeframe_signal(up).score > 0.5  # type: ignore[union-attr]
    assert mtf.timeframe_signal(down).score < -0.5  # type: ignore[union-attr]
    assert mtf.timeframe_signal(series([100.0] * 20, 0, 60)) is None  # 20 bars: too few
    assert mtf.timeframe_signal(None) is None


def test_weights_combine_the_timeframes_present_and_name_the_missing() -> None:
    up = series(100 * np.exp(np.linspace(0, 0.05, 40) + 0.001 * np.sin(np.arange(40))), 0, 60)
    down = series(100 * np.exp(np.linspace(0, -0.05, 40) + 0.001 * np.sin(np.arange(40))), 0, 60)
    weights = {"1Min": 0.1, "5Min": 0.15, "15Min": 0.2, "1Hour": 0.25, "1Day": 0.3}
    view = mtf.combine({"1Min": up, "1Hour": down, "1Day": None}, weights)
    s_up, s_down = mtf.timeframe_signal(up).score, mtf.timeframe_signal(down).score  # type: ignore[union-attr]
    assert view.weights == pytest.approx({"1Min": 0.1 / 0.35, "1Hour": 0.25 / 0.35})
    assert view.score == pytest.approx((0.1 * s_up + 0.25 * s_down) / 0.35)
    assert view.missing == ("5Min", "15Min", "1Day")
    assert view.agreement == pytest.approx(0.25 / 0.35)  # the hour's weight agrees with the (negative) sum
    b = view.breakdown()
    assert set(b["timeframes"]) == {"1Min", "1Hour"} and b["missing"] == ["5Min", "15Min", "1Day"]
    assert mtf.combine({}, weights).score == 0.0
    # a weight of 0 leaves a timeframe out altogether
    assert "1Min" not in mtf.combine({"1Min": up}, {**weights, "1Min": 0.0}).signals


# -- the analyzer ------------------------------------------------------------------------------


def analyzer_settings(**mt: Any) -> Any:
    return config.load_settings(env_file=None, environ={}, overrides={
        "ai": {"use_model": "never", "min_confidence": 0.0, "use_news_sentiment": False},
        "multi_timeframe": mt})


def market(intraday_trend: float) -> MarketData:
    now = T0
    n_daily = 80
    day0 = int((now - timedelta(days=n_daily)).timestamp())
    daily = series(np.linspace(100, 104, n_daily) * (1 + 0.01 * np.sin(np.arange(n_daily))), day0, 86400)
    frames = {}
    for name, seconds in tf.INTRADAY_SECONDS.items():
        path = 100 * np.exp(np.linspace(0, intraday_trend, 40) + 0.001 * np.sin(np.arange(40)))
        frames[name] = series(path, int(now.timestamp()) - 41 * seconds, seconds)
    return MarketData(symbol="AAPL", now=now, daily=daily, last_price=104.0, timeframes=frames)


def buy() -> Signal:
    return Signal(symbol="AAPL", action="buy", confidence=0.7, reasoning="test", strategy="enhanced_momentum")


async def test_the_breakdown_is_in_ai_decision_and_intraday_trends_move_the_confidence() -> None:
    clock = SimClock(T0, speed=None)
    analyzer = AIAnalyzer(analyzer_settings(), clock)
    with capture_logs() as logs:
        rising = await analyzer.analyze(buy(), market(0.05))
        falling = await analyzer.analyze(buy(), market(-0.05))
    assert rising is not None and falling is not None
    decisions = [e for e in logs if e["event"] == "ai_decision"]
    breakdown = decisions[0]["breakdown"]["multi_timeframe"]
    assert set(breakdown["timeframes"]) == {"1Min", "5Min", "15Min", "1Hour", "1Day"}
    assert breakdown["timeframes"]["1Hour"]["weight"] == pytest.approx(0.25)
    assert breakdown["score"] > 0 > decisions[1]["breakdown"]["multi_timeframe"]["score"]
    assert rising.confidence > falling.confidence
    off = AIAnalyzer(analyzer_settings(enabled=False), clock)
    neutral = await off.analyze(buy(), market(0.05))
    assert neutral is not None and falling.confidence < neutral.confidence < rising.confidence
    assert "multi_timeframe" not in neutral.confidence_breakdown
    flat = AIAnalyzer(analyzer_settings(logit_scale=0.0), clock)
    unmoved = await flat.analyze(buy(), market(0.05))
    assert unmoved is not None and unmoved.confidence == pytest.approx(neutral.confidence)


# -- the batched, cached fetch ----------------------------------------------------------------


class RecordingBroker:
    """``get_bars`` over a made-up minute market: every minute of every symbol traded."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, ...], str, datetime, datetime]] = []

    async def get_bars(self, symbols: list[str], timeframe: str = "1Day", start: datetime | None = None,
                       end: datetime | None = None, **_: Any) -> dict[str, list[Bar]]:
        assert start is not None and end is not None
        self.calls.append((tuple(symbols), timeframe, start, end))
        first = tf.bucket_start(start.timestamp() + 59, 60)
        out: dict[str, list[Bar]] = {}
        for k, symbol in enumerate(symbols):
            bars = []
            for t in range(first, int(end.timestamp()) + 1, 60):
                price = 100 + k + (t % 7200) / 7200
                bars.append(Bar(t=datetime.fromtimestamp(t, timezone.utc), o=price, h=price + 0.1,
                                l=price - 0.1, c=price, v=100))
            out[symbol] = bars
        return out


@pytest.mark.parametrize("count", [3, 40])
async def test_one_batched_request_per_new_minute_whatever_the_number_of_symbols(count: int) -> None:
    symbols = [f"S{k:02d}" for k in range(count)]
    broker, cache = RecordingBroker(), TimeframeBars(config.Settings())
    now = T0 + timedelta(seconds=30)
    frames = await cache.refresh(broker, symbols, now)
    assert len(broker.calls) == 1 and broker.calls[0][0] == tuple(sorted(symbols)) and broker.calls[0][1] == "1Min"
    assert broker.calls[0][2] == now - timedelta(days=5)
    assert set(frames) == set(symbols) and set(frames[symbols[0]]) == {"1Min", "5Min", "15Min", "1Hour"}
    minute = frames[symbols[0]]["1Min"]
    assert int(minute.ts[-1]) == int(T0.timestamp()) - 60  # the running minute is not a bar yet
    five = frames[symbols[0]]["5Min"]
    # the same minute: no request, the same bars
    again = await cache.refresh(broker, symbols, now + timedelta(seconds=20))
    assert len(broker.calls) == 1 and again[symbols[0]]["1Min"] is minute
    # the next minute: one request for what is new only; the 5-minute bars are not resampled
    later = await cache.refresh(broker, symbols, now + timedelta(seconds=60))
    assert len(broker.calls) == 2 and broker.calls[1][2] == T0
    assert int(later[symbols[0]]["1Min"].ts[-1]) == int(T0.timestamp())
    assert later[symbols[0]]["5Min"] is five
    # five minutes on, a new 5-minute bar can exist: resampled, one request still
    fifth = await cache.refresh(broker, symbols, T0 + timedelta(minutes=5, seconds=30))
    assert len(broker.calls) == 3
    assert int(fifth[symbols[0]]["5Min"].ts[-1]) == int(T0.timestamp())


async def test_a_failed_request_keeps_the_cached_bars_and_says_so() -> None:
    from core.errors import TemporaryError

    broker, cache = RecordingBroker(), TimeframeBars(config.Settings())
    first = await cache.refresh(broker, ["AAPL"], T0)

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise TemporaryError("503 service unavailable")

    broker.get_bars = down  # type: ignore[method-assign]
    with capture_logs() as logs:
        later = await cache.refresh(broker, ["AAPL"], T0 + timedelta(minutes=2))
    assert later["AAPL"]["1Min"] is first["AAPL"]["1Min"]
    assert [e["event"] for e in logs] == ["timeframe_bars_unavailable"]


async def test_timeframes_off_fetch_nothing() -> None:
    broker = RecordingBroker()
    s = config.load_settings(env_file=None, environ={}, overrides={"multi_timeframe": {"enabled": False}})
    assert await TimeframeBars(s).refresh(broker, ["AAPL"], T0) == {}
    assert broker.calls == []


# -- backtests ---------------------------------------------------------------------------------


class AlwaysBuy(BaseStrategy):
    """Test strategy: buy every symbol it sees."""

    name = "test_mtf_always_buy"

    async def evaluate_opportunity(self, symbol: str, market_data: MarketData) -> Signal:
        price = market_data.last_price
        return self.signal(symbol, "buy", 0.9, "test: always buy", stop=price * 0.99, target=price * 1.01)


def test_a_backtest_on_minute_data_uses_every_timeframe_and_says_so(tmp_path: Path) -> None:
    data = tmp_path / "intraday-data"
    (data / "daily").mkdir(parents=True)
    (data / "intraday").mkdir()
    for name in ("SPY-1d-1993-01-29-2026-08-07.csv", "AAPL-1d-2013-01-02-2023-12-29.csv",
                 "MSFT-1d-2013-01-02-2023-12-29.csv"):
        shutil.copy(SHARED_DATA / "daily" / name, data / "daily" / name)
    for name in ("AAPL-1m-2021-08-23-2021-08-25.csv", "MSFT-1m-2021-08-23-2021-08-25.csv"):
        shutil.copy(SHARED_DATA / "intraday" / name, data / "intraday" / name)
    settings = config.load_settings(env_file=None, overrides={
        "scanning.symbols": ["AAPL", "MSFT"], "strategy.enabled": [AlwaysBuy.name],
        "ai.min_confidence": 0.0, "ai.calibrated_min_confidence": 0.0, "trading.cycle_interval_seconds": 1800,
    })
    day = date(2021, 8, 25)
    with capture_logs() as logs:
        result = run_backtest(settings, BacktestOptions(data_dir=data, symbols=("AAPL", "MSFT"), start=day,
                                                        end=day, progress=False))
    assert result.bar_mode == "intraday" and result.meta()["multi_timeframe"] == timeframe_note("intraday")
    decisions = [e for e in logs if e["event"] == "ai_decision"]
    assert {e["symbol"] for e in decisions} == {"AAPL", "MSFT"}
    for event in decisions:
        frames = event["breakdown"]["multi_timeframe"]["timeframes"]
        assert {"1Min", "5Min", "15Min", "1Hour", "1Day"} <= set(frames), event["breakdown"]["multi_timeframe"]
    noted = [e for e in logs if e["event"] == "backtest_timeframes"]
    assert noted and noted[0]["bar_mode"] == "intraday"


def test_a_backtest_on_daily_data_says_it_has_the_daily_timeframe_only(tmp_path: Path) -> None:
    data = tmp_path / "daily-data"
    (data / "daily").mkdir(parents=True)
    for name in ("SPY-1d-1993-01-29-2026-08-07.csv", "AAPL-1d-2013-01-02-2023-12-29.csv"):
        shutil.copy(SHARED_DATA / "daily" / name, data / "daily" / name)
    # a flat gate at 0: every scored idea is decided (the break-even gates reject these months')
    settings = config.load_settings(env_file=None, overrides={"scanning.symbols": ["SPY", "AAPL"],
                                                              "ai.gate_mode": "flat"})
    with capture_logs() as logs:
        result = run_backtest(settings, BacktestOptions(data_dir=data, symbols=("SPY", "AAPL"),
                                                        start=date(2020, 2, 3), end=date(2020, 5, 29), progress=False))
    assert result.bar_mode == "daily"
    assert "1Day only" in result.meta()["multi_timeframe"]
    assert [e["multi_timeframe"] for e in logs if e["event"] == "backtest_timeframes"] == [timeframe_note("daily")]
    decisions = [e for e in logs if e["event"] == "ai_decision"]
    assert decisions
    for event in decisions:
        view = event["breakdown"]["multi_timeframe"]
        assert set(view["timeframes"]) == {"1Day"} and view["missing"] == ["1Min", "5Min", "15Min", "1Hour"]
