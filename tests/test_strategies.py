"""Strategies on crafted daily bar series: each kind of signal, its stop/target/reasoning,
regime awareness, defensive mode, and the registry that enables strategies from config.

Each scenario asserts its own preconditions (RSI, levels, volume) so that a reader sees
what the series was built to show.
"""

from __future__ import annotations

import sys
import textwrap
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from structlog.testing import capture_logs

import config
import strategies
from core.errors import ConfigError
from market.indicators import compute_snapshot
from market.market_data import BarSeries, MarketData, day_timestamp
from strategies import AVAILABLE_STRATEGIES, BaseStrategy, Signal, load_enabled
from strategies.breakout import Breakout
from strategies.defensive import Defensive
from strategies.enhanced_momentum import EnhancedMomentum
from strategies.macd_crossover import MACDCrossover
from strategies.mean_reversion import MeanReversion

START = date(2024, 1, 2)


@pytest.fixture(scope="module")
def settings() -> config.Settings:
    return config.load_settings(environ={}, env_file=None)


def make_bars(
    closes: np.ndarray,
    volumes: np.ndarray | None = None,
    *,
    opens: np.ndarray | None = None,
    highs: np.ndarray | None = None,
    lows: np.ndarray | None = None,
) -> BarSeries:
    """Daily bars from closes; by default each bar opens at the previous close, its
    range is 0.5% beyond open/close, and volume is 1M shares."""
    c = np.asarray(closes, dtype=float)
    o = np.r_[c[0], c[:-1]] if opens is None else np.asarray(opens, dtype=float)
    h = np.maximum(o, c) * 1.005 if highs is None else np.asarray(highs, dtype=float)
    lo = np.minimum(o, c) * 0.995 if lows is None else np.asarray(lows, dtype=float)
    v = np.full(len(c), 1e6) if volumes is None else np.asarray(volumes, dtype=float)
    ts = [day_timestamp(START + timedelta(days=i)) for i in range(len(c))]
    return BarSeries.from_arrays(ts, o, h, lo, c, v)


def market(bars: BarSeries, symbol: str = "AAPL", *, at: datetime | None = None, **extra: Any) -> MarketData:
    """The market as seen after today's close (the last bar is a complete session)."""
    last = START + timedelta(days=len(bars) - 1)
    now = at or datetime(last.year, last.month, last.day, 21, 30, tzinfo=timezone.utc)
    fields: dict[str, Any] = {"last_price": float(bars.close[-1]), "prev_close": float(bars.close[-2]), **extra}
    return MarketData(symbol, now, bars, **fields)


def trend(steps: list[float], n: int, start: float = 100.0) -> np.ndarray:
    """Closes compounding a repeating pattern of daily returns."""
    returns = np.tile(steps, n // len(steps) + 1)[: n - 1]
    return start * np.cumprod(np.r_[1.0, 1.0 + np.asarray(returns)])


UP = [0.010, -0.008, 0.009, -0.006]  # a steady, choppy uptrend (about +0.12% a day)


# -- enhanced momentum ---------------------------------------------------------------------


@pytest.fixture
def momentum_day() -> BarSeries:
    """60 days of choppy uptrend, then a +3% day on 2.5x volume."""
    closes = trend(UP, 60)
    return make_bars(np.r_[closes, closes[-1] * 1.03], np.r_[np.full(60, 1e6), 2.5e6])


async def test_momentum_buys_a_confirmed_volume_spike_with_atr_stop_and_2_to_1_target(settings, momentum_day) -> None:
    snap = compute_snapshot(momentum_day, settings)
    assert snap.rsi < 70 and snap.macd > snap.macd_signal and snap.macd_hist > snap.macd_hist_prev

    signal = await EnhancedMomentum(settings).evaluate_opportunity("AAPL", market(momentum_day))

    assert signal.action == "buy" and signal.strategy == "enhanced_momentum"
    assert signal.confidence == pytest.approx(1.0)  # 0.40 + 4 x 0.15
    entry = momentum_day.close[-1]
    assert signal.stop_price == pytest.approx(entry - 2 * snap.atr)  # 2xATR = 3.8%, within 1.5..4.5%
    assert signal.target_price == pytest.approx(entry + 2 * (entry - signal.stop_price))
    for number in ("+3.00%", "2.50x", f"RSI {snap.rsi:.1f}", "2xATR", "score 1.00"):
        assert number in signal.reasoning


async def test_momentum_respects_the_regime(settings, momentum_day) -> None:
    strategy = EnhancedMomentum(settings)
    bear = await strategy.evaluate_opportunity("AAPL", market(momentum_day, regime="bear"))
    assert bear.action == "hold" and "no new longs in a bear regime" in bear.reasoning
    volatile = await strategy.evaluate_opportunity("AAPL", market(momentum_day, regime="volatile"))
    assert volatile.action == "buy" and volatile.confidence == pytest.approx(0.80)
    assert "regime volatile x0.80" in volatile.reasoning


async def test_momentum_does_not_buy_an_overbought_stock(settings) -> None:
    closes = trend([0.012, -0.006, 0.010, -0.004], 60)
    bars = make_bars(np.r_[closes, closes[-1] * 1.03], np.r_[np.full(60, 1e6), 2.5e6])
    assert compute_snapshot(bars, settings).rsi > 70
    signal = await EnhancedMomentum(settings).evaluate_opportunity("AAPL", market(bars))
    assert signal.action == "hold" and "overbought" in signal.reasoning


async def test_momentum_exits_on_a_confirmed_fall(settings) -> None:
    closes = trend([-s for s in UP], 60)
    bars = make_bars(np.r_[closes, closes[-1] * 0.97], np.r_[np.full(60, 1e6), 2.5e6])
    signal = await EnhancedMomentum(settings).evaluate_opportunity("AAPL", market(bars))
    assert signal.action == "sell" and signal.stop_price is None
    assert "-3.00%" in signal.reasoning


async def test_momentum_holds_in_a_quiet_market_and_on_a_move_without_volume(settings) -> None:
    strategy = EnhancedMomentum(settings)
    quiet = make_bars(trend([0.003, -0.003], 61))
    signal = await strategy.evaluate_opportunity("AAPL", market(quiet))
    assert signal.action == "hold" and signal.reasoning.startswith("no momentum")
    closes = trend(UP, 60)
    thin = make_bars(np.r_[closes, closes[-1] * 1.03])  # +3% on ordinary volume
    signal = await strategy.evaluate_opportunity("AAPL", market(thin))
    assert signal.action == "hold" and "move without volume" in signal.reasoning
    assert "volume 1.00x" in signal.reasoning


async def test_momentum_projects_a_partial_days_volume(settings) -> None:
    """At 12:00 New York about half a day's volume has traded (measured intraday profile)."""
    closes = trend(UP, 60)
    last = START + timedelta(days=60)
    noon = datetime(last.year, last.month, last.day, 17, 0, tzinfo=timezone.utc)  # 12:00 EST
    strategy = EnhancedMomentum(settings)
    light = make_bars(np.r_[closes, closes[-1] * 1.03], np.r_[np.full(60, 1e6), 0.6e6])
    heavy = make_bars(np.r_[closes, closes[-1] * 1.03], np.r_[np.full(60, 1e6), 0.9e6])
    assert (await strategy.evaluate_opportunity("AAPL", market(light, at=noon))).action == "hold"  # 1.2x
    assert (await strategy.evaluate_opportunity("AAPL", market(heavy, at=noon))).action == "buy"  # 1.8x


async def test_strategies_hold_without_enough_history(settings) -> None:
    short = make_bars(trend(UP, 15))
    for cls in (EnhancedMomentum, MeanReversion, Breakout):
        signal = await cls(settings).evaluate_opportunity("AAPL", market(short))
        assert signal.action == "hold" and "insufficient history: 15 daily bars" in signal.reasoning


# -- mean reversion ------------------------------------------------------------------------


FLAT = 100 * (1 + 0.004 * np.tile([1.0, -1.0], 26))  # 52 calm days around 100


def selloff(volume_today: float) -> BarSeries:
    """Calm days, then an 8-day slide to 80 (-20%); today opened at 79.20 and recovered."""
    closes = np.r_[FLAT, np.linspace(100, 80, 9)[1:]]
    opens = np.r_[closes[0], closes[:-1]]
    opens[-1] = 79.2
    return make_bars(closes, np.r_[np.full(len(closes) - 1, 1e6), volume_today], opens=opens)


async def test_mean_reversion_buys_a_20_percent_selloff_with_a_5_day_limit(settings) -> None:
    bars = selloff(1.6e6)
    snap = compute_snapshot(bars, settings)
    assert snap.price / snap.sma_long - 1 < -0.15 and snap.rsi < 30 and bars.low[-1] <= snap.bb_lower

    signal = await MeanReversion(settings).evaluate_opportunity("AAPL", market(bars))

    assert signal.action == "buy" and signal.max_hold_days == 5
    # 0.50 + both triggers 0.20 + RSI far below 30 0.10 + reversal day 0.10 (1.6x < 1.8x: no volume bonus)
    assert signal.confidence == pytest.approx(0.90)
    assert signal.stop_price == pytest.approx(80 * 0.97)
    assert signal.target_price == pytest.approx(80 * 1.06)  # the SMA20 (95.5) is further: capped
    for number in ("-18.5% from SMA50", "threshold 15%", f"RSI {snap.rsi:.1f}", "1.60x", "at most 5 days"):
        assert number in signal.reasoning


async def test_mean_reversion_needs_volume_confirmation(settings) -> None:
    signal = await MeanReversion(settings).evaluate_opportunity("AAPL", market(selloff(1.1e6)))
    assert signal.action == "hold" and "without volume confirmation" in signal.reasoning
    assert "volume 1.10x (need 1.20x)" in signal.reasoning


async def test_mean_reversion_is_more_careful_in_a_bear_market(settings) -> None:
    signal = await MeanReversion(settings).evaluate_opportunity("AAPL", market(selloff(1.6e6), regime="bear"))
    assert signal.action == "buy" and signal.confidence == pytest.approx(0.72)


async def test_mean_reversion_rsi_and_band_alone_trigger_a_smaller_bet(settings) -> None:
    closes = np.r_[FLAT, np.linspace(100, 92, 6)[1:]]  # -8%: short of the 15% deviation
    bars = make_bars(closes, np.r_[np.full(len(closes) - 1, 1e6), 1.5e6])
    snap = compute_snapshot(bars, settings)
    assert snap.rsi < 30 and snap.price / snap.sma_medium - 1 > -0.15
    signal = await MeanReversion(settings).evaluate_opportunity("AAPL", market(bars))
    assert signal.action == "buy"
    assert signal.confidence == pytest.approx(0.50)  # the base alone: RSI 25.8 is not 5 below 30
    assert "deviation and RSI/Bollinger triggers agree no" in signal.reasoning
    assert signal.target_price == pytest.approx(min(snap.sma_medium, 92 * 1.06))

    wide_stop = settings.model_copy(update={"trading": settings.trading.model_copy(update={"stop_loss": 0.09})})
    held = await MeanReversion(wide_stop).evaluate_opportunity("AAPL", market(bars))
    assert held.action == "hold" and "smaller than the risk 9.0%" in held.reasoning


async def test_mean_reversion_exits_a_stretched_rally_and_ignores_calm(settings) -> None:
    rally = np.r_[FLAT, np.linspace(100, 122, 9)[1:]]
    bars = make_bars(rally, np.r_[np.full(len(rally) - 1, 1e6), 1.6e6])
    signal = await MeanReversion(settings).evaluate_opportunity("AAPL", market(bars))
    assert signal.action == "sell" and signal.max_hold_days is None
    assert "RSI 8" in signal.reasoning and "+19.6% from SMA50" in signal.reasoning
    calm = await MeanReversion(settings).evaluate_opportunity("AAPL", market(make_bars(np.r_[FLAT, FLAT[:8]])))
    assert calm.action == "hold" and calm.reasoning.startswith("no extreme")


# -- breakout ------------------------------------------------------------------------------


RANGE = 100 + 4 * np.sin(np.arange(40) * 0.9)  # 40 sideways days between 96 and 104


def range_then(close: float, high: float, low: float, volume: float) -> BarSeries:
    return make_bars(
        np.r_[RANGE, close], np.r_[np.full(40, 1e6), volume], highs=np.r_[RANGE + 1, high], lows=np.r_[RANGE - 1, low]
    )


async def test_breakout_buys_a_break_above_resistance_on_double_volume(settings) -> None:
    bars = range_then(108.0, 108.3, 104.5, 2.6e6)
    snap = compute_snapshot(bars, settings)
    assert snap.resistance == pytest.approx(RANGE[-20:].max() + 1) and 108 > snap.resistance * 1.01

    signal = await Breakout(settings).evaluate_opportunity("AAPL", market(bars))

    assert signal.action == "buy"
    assert signal.confidence == pytest.approx(0.85)  # 0.55 + trend + RSI room + strong close
    # Under the broken level (104.84 x 0.99 = 103.80) would be wider than 3%: 3% wins.
    assert signal.stop_price == pytest.approx(108 * 0.97)
    assert signal.target_price == pytest.approx(108 + 2 * 108 * 0.03)
    assert f"resistance {snap.resistance:.2f}" in signal.reasoning and "2.60x" in signal.reasoning


async def test_breakout_decides_without_the_entry_sessions_open(settings) -> None:
    # A daily backtest hands the strategies the entry session's opening print as last_price;
    # a decision taken at the previous close cannot know it (issue 15): the same signal,
    # whatever that open is, even one that fell back under the broken level.
    bars = range_then(106.2, 106.4, 104.9, 2.6e6)
    seen = market(bars)
    signal = await Breakout(settings).evaluate_opportunity("AAPL", seen)
    for opening in (101.0, 106.2, 115.0):
        other = await Breakout(settings).evaluate_opportunity("AAPL", market(bars, last_price=opening))
        assert (other.action, other.stop_price, other.target_price, other.confidence) == (
            signal.action, signal.stop_price, signal.target_price, signal.confidence)
    assert signal.action == "buy"


async def test_breakout_stop_sits_under_the_broken_level_when_that_is_tighter(settings) -> None:
    bars = range_then(106.2, 106.4, 104.9, 2.6e6)
    snap = compute_snapshot(bars, settings)
    signal = await Breakout(settings).evaluate_opportunity("AAPL", market(bars))
    assert signal.action == "buy"
    assert signal.stop_price == pytest.approx(snap.resistance * 0.99)
    assert signal.target_price == pytest.approx(106.2 + 2 * (106.2 - snap.resistance * 0.99))


async def test_breakout_needs_volume_and_a_clear_break(settings) -> None:
    strategy = Breakout(settings)
    thin = await strategy.evaluate_opportunity("AAPL", market(range_then(108.0, 108.3, 104.5, 1.5e6)))
    assert thin.action == "hold" and "without volume" in thin.reasoning and "1.50x" in thin.reasoning
    inside = await strategy.evaluate_opportunity("AAPL", market(range_then(105.5, 105.8, 104.0, 3e6)))
    assert inside.action == "hold" and inside.reasoning.startswith("inside the range")  # < 1% buffer


async def test_breakout_support_break_is_an_exit_and_bear_regime_lowers_buys(settings) -> None:
    strategy = Breakout(settings)
    down = await strategy.evaluate_opportunity("AAPL", market(range_then(92.0, 95.5, 91.8, 2.6e6)))
    assert down.action == "sell" and down.stop_price is None and "support broken" in down.reasoning
    bear = await strategy.evaluate_opportunity("AAPL", market(range_then(108.0, 108.3, 104.5, 2.6e6), regime="bear"))
    assert bear.action == "buy" and bear.confidence == pytest.approx(0.68)


# -- defensive -------------------------------------------------------------------------------


@pytest.fixture
def calm_uptrend() -> BarSeries:
    return make_bars(trend([0.008, -0.006, 0.007, -0.005], 80, start=400.0))


async def test_defensive_is_inactive_unless_the_loop_sets_defensive_mode(settings, calm_uptrend) -> None:
    signal = await Defensive(settings).evaluate_opportunity("SPY", market(calm_uptrend, "SPY", regime="bull"))
    assert signal.action == "hold" and signal.reasoning == "defensive mode inactive"


async def test_defensive_buys_large_names_at_half_size_with_a_2_percent_stop(settings, calm_uptrend) -> None:
    data = market(calm_uptrend, "SPY", defensive=True, regime="bull")
    signal = await Defensive(settings).evaluate_opportunity("SPY", data)
    assert signal.action == "buy" and signal.confidence >= 0.75
    entry = calm_uptrend.close[-1]
    assert signal.stop_price == pytest.approx(entry * 0.98)
    assert signal.target_price == pytest.approx(entry * 1.04)
    assert signal.metadata["size_multiplier"] == 0.5
    assert "0.5x size" in signal.reasoning

    other = await Defensive(settings).evaluate_opportunity("TSLA", market(calm_uptrend, "TSLA", defensive=True))
    assert other.action == "hold" and "TSLA is not one of SPY, QQQ, AAPL, MSFT" in other.reasoning


async def test_defensive_requires_75_percent_confidence(settings) -> None:
    wild = make_bars(trend([0.036, -0.018, 0.030, -0.012], 80, start=400.0))  # uptrend, ATR > 3%
    snap = compute_snapshot(wild, settings)
    assert snap.price > snap.sma_medium > snap.sma_long and snap.atr_pct > 0.03 and snap.rsi > 65
    signal = await Defensive(settings).evaluate_opportunity("QQQ", market(wild, "QQQ", defensive=True, regime="volatile"))
    assert signal.action == "hold" and "< 0.75 required" in signal.reasoning


async def test_defensive_exits_a_broken_trend(settings) -> None:
    falling = make_bars(trend([-0.008, 0.006, -0.007, 0.005], 80, start=400.0))
    signal = await Defensive(settings).evaluate_opportunity("SPY", market(falling, "SPY", defensive=True, regime="bear"))
    assert signal.action == "sell" and signal.confidence >= 0.75


# -- the user-strategy example ---------------------------------------------------------------


async def test_macd_crossover_example_signals_at_crossings_only(settings) -> None:
    closes = 100 + 5 * np.sin(np.arange(160) / 8.0)
    bars = make_bars(closes)
    hist = {n: compute_snapshot(_head(bars, n), settings).macd_hist for n in range(36, 160)}
    up = next(n for n in range(37, 160) if hist[n - 1] <= 0 < hist[n])  # bar counts at the crossings
    down = next(n for n in range(37, 160) if hist[n - 1] >= 0 > hist[n])
    strategy = MACDCrossover(settings)
    buy = await strategy.evaluate_opportunity("AAPL", market(_head(bars, up)))
    sell = await strategy.evaluate_opportunity("AAPL", market(_head(bars, down)))
    quiet = await strategy.evaluate_opportunity("AAPL", market(_head(bars, up + 2)))
    assert buy.action == "buy" and "bullish MACD crossover" in buy.reasoning
    entry = closes[up - 1]
    assert buy.stop_price == pytest.approx(entry * 0.97) and buy.target_price == pytest.approx(entry * 1.06)
    assert sell.action == "sell" and quiet.action == "hold" and "no crossover" in quiet.reasoning


def _head(bars: BarSeries, n: int) -> BarSeries:
    return BarSeries.from_arrays(bars.ts[:n], bars.open[:n], bars.high[:n], bars.low[:n], bars.close[:n], bars.volume[:n])


# -- signals and the registry ----------------------------------------------------------------


def test_signal_refuses_impossible_values() -> None:
    with pytest.raises(ValueError, match="action"):
        Signal("AAPL", "short", 0.5, "why", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="confidence"):
        Signal("AAPL", "buy", 1.2, "why", "x")
    with pytest.raises(ValueError, match="reasoning"):
        Signal("AAPL", "buy", 0.5, "  ", "x")
    with pytest.raises(ValueError, match="not below target"):
        Signal("AAPL", "buy", 0.5, "why", "x", stop_price=105.0, target_price=100.0)
    assert not Signal("AAPL", "hold", 0.0, "why", "x").is_actionable


async def test_snapshot_is_computed_once_per_market_data(settings, momentum_day) -> None:
    data = market(momentum_day)
    first = EnhancedMomentum(settings).snapshot(data)
    assert Breakout(settings).snapshot(data) is first


def test_built_in_strategies_are_registered_and_loaded_in_config_order(settings) -> None:
    assert {"enhanced_momentum", "mean_reversion", "breakout", "defensive"} <= set(AVAILABLE_STRATEGIES)
    with capture_logs() as logs:
        loaded = load_enabled(settings)
    assert [s.name for s in loaded] == ["enhanced_momentum", "mean_reversion", "breakout", "defensive"]
    assert all(s.settings is settings for s in loaded)
    assert logs[-1]["event"] == "strategies_loaded"


def test_a_strategy_file_named_in_config_is_loaded(settings) -> None:
    chosen = config.load_settings(environ={}, env_file=None, overrides={"strategy.enabled": ["macd_crossover", "breakout"]})
    loaded = load_enabled(chosen)
    assert [type(s) for s in loaded] == [MACDCrossover, Breakout]


@pytest.fixture
def user_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder searched as part of ``strategies/`` (as if the user dropped files there)."""
    monkeypatch.setattr(strategies, "__path__", [*strategies.__path__, str(tmp_path)])
    registry = dict(AVAILABLE_STRATEGIES)
    modules = set(sys.modules)
    yield tmp_path
    AVAILABLE_STRATEGIES.clear()
    AVAILABLE_STRATEGIES.update(registry)
    for name in set(sys.modules) - modules:
        del sys.modules[name]


async def test_a_users_new_strategy_file_is_imported_by_name(user_folder: Path, momentum_day) -> None:
    (user_folder / "always_buy.py").write_text(
        textwrap.dedent(
            """
            from strategies.base import BaseStrategy

            class AlwaysBuy(BaseStrategy):
                async def evaluate_opportunity(self, symbol, market_data):
                    return self.signal(symbol, "buy", 0.7, "always buys")
            """
        )
    )
    chosen = config.load_settings(environ={}, env_file=None, overrides={"strategy.enabled": ["always_buy"]})
    (strategy,) = load_enabled(chosen)
    assert isinstance(strategy, BaseStrategy) and strategy.name == "always_buy"
    signal = await strategy.evaluate_opportunity("AAPL", market(momentum_day))
    assert signal.action == "buy" and signal.strategy == "always_buy"


def test_unknown_and_broken_strategies_are_config_errors_naming_them(user_folder: Path) -> None:
    (user_folder / "broken.py").write_text("def oops(:\n")
    (user_folder / "empty.py").write_text("X = 1\n")
    chosen = config.load_settings(
        environ={}, env_file=None, overrides={"strategy.enabled": ["breakout", "no_such_thing", "broken", "empty"]}
    )
    with pytest.raises(ConfigError) as caught:
        load_enabled(chosen)
    problems = caught.value.problems
    assert len(problems) == 3
    assert "unknown strategy 'no_such_thing'" in problems[0]
    # Other test modules may register strategies of their own in this process (xdist imports
    # every test module), so check the names a user must see rather than the exact list.
    available = problems[0].split("available: ", 1)[1]
    for name in ("breakout", "broken", "defensive", "empty", "enhanced_momentum", "macd_crossover", "mean_reversion"):
        assert name in available
    assert "strategies/broken.py failed to import: SyntaxError" in problems[1]
    assert "strategies/empty.py defines no BaseStrategy subclass" in problems[2]


def test_two_strategies_cannot_claim_one_name() -> None:
    with pytest.raises(TypeError, match="'breakout' .* already used by strategies.breakout.Breakout"):

        class Impostor(BaseStrategy):
            name = "breakout"

            async def evaluate_opportunity(self, symbol: str, market_data: MarketData) -> Signal:
                return self.hold(symbol, "never")


# -- hold signals: reasoning formatted when first read ---------------------------------------


def test_a_lazy_hold_is_the_same_signal_as_an_eager_one(settings) -> None:
    import copy
    import dataclasses
    import pickle

    strategy = EnhancedMomentum(settings)
    calls: list[int] = []

    def text() -> str:
        calls.append(1)
        return "no momentum: 1-day move +0.10%"

    lazy = strategy.hold("AAPL", text, note=1)
    eager = Signal("AAPL", "hold", 0.0, "no momentum: 1-day move +0.10%", "enhanced_momentum",
                   metadata={"note": 1})
    assert not calls  # nothing formatted yet
    assert lazy.action == "hold" and lazy.confidence == 0.0 and not lazy.is_actionable
    assert lazy.reasoning == eager.reasoning and calls == [1]
    assert lazy.reasoning == eager.reasoning and calls == [1]  # formatted once, then kept
    assert lazy == eager and repr(lazy) == repr(eager)
    assert dataclasses.asdict(lazy) == dataclasses.asdict(eager)
    for other in (strategy.hold("AAPL", text, note=1), strategy.hold("AAPL", eager.reasoning, note=1)):
        assert other == eager and dataclasses.replace(other, confidence=0.0) == eager
        assert copy.deepcopy(other) == eager and pickle.loads(pickle.dumps(other)) == eager
    with pytest.raises(AttributeError):
        lazy.no_such_attribute  # noqa: B018


def test_a_hold_must_still_say_why(settings) -> None:
    strategy = EnhancedMomentum(settings)
    with pytest.raises(ValueError, match="must say why"):
        strategy.hold("AAPL", "  ")
    empty = strategy.hold("AAPL", lambda: "")
    with pytest.raises(ValueError, match="must say why"):
        empty.reasoning  # noqa: B018


async def test_lazy_hold_reasonings_read_as_before(settings) -> None:
    quiet = market(make_bars(trend([0.003, -0.003], 61)))
    snap = compute_snapshot(quiet.daily, settings)
    volume = snap.volume_ratio / max(0.10, quiet.volume_progress)
    momentum = await EnhancedMomentum(settings).evaluate_opportunity("AAPL", quiet)
    assert momentum.reasoning == (
        f"no momentum: 1-day move {snap.change_1d:+.2%} (screen 2.00%), "
        f"volume {volume:.2f}x average (screen 1.50x)"
    )
    calm = market(make_bars(np.r_[FLAT, FLAT[:8]]))
    snap = compute_snapshot(calm.daily, settings)
    reversion = await MeanReversion(settings).evaluate_opportunity("AAPL", calm)
    low = min(snap.price / snap.sma_medium - 1.0, snap.price / snap.sma_long - 1.0)
    assert reversion.reasoning.startswith(f"no extreme: price {snap.price:.2f} is {low:+.1%} from SMA")
    assert reversion.reasoning.endswith(
        f"day range {float(calm.daily.low[-1]):.2f}..{float(calm.daily.high[-1]):.2f}; "
        f"volume {snap.volume_ratio:.2f}x (need 1.20x)"
    )
    inside = market(range_then(101.0, 101.5, 100.5, 1e6))
    snap = compute_snapshot(inside.daily, settings)
    breakout = await Breakout(settings).evaluate_opportunity("AAPL", inside)
    assert breakout.reasoning == (
        f"inside the range: price {snap.price:.2f}, 20-day resistance {snap.resistance:.2f} "
        f"(break above {snap.resistance * 1.01:.2f}), support {snap.support:.2f} "
        f"(break below {snap.support * 0.99:.2f}); volume {snap.volume_ratio:.2f}x (need 2.00x)"
    )
