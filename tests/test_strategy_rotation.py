"""Issue 18 item 2: strategy rotation by market regime, logged on every change, applied the
same way in backtests, and the throttle of every non-defensive strategy in defensive mode."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from structlog.testing import capture_logs

import config
from backtest import prefilter
from backtest.options import BacktestOptions
from backtest.runner import run_backtest
from core.errors import ConfigError
from engine.strategy_rotation import StrategyRotation, read_regime
from market.market_data import BarSeries
from tests.conftest import copy_daily_files

DAILY_FILES = ("SPY-1d-1993-01-29-2026-08-07.csv", "AAPL-1d-2013-01-02-2023-12-29.csv",
               "NVDA-1d-2013-01-02-2023-12-29.csv")


def bench(closes: list[float]) -> BarSeries:
    n = len(closes)
    c = np.asarray(closes, dtype=float)
    return BarSeries.from_arrays(np.arange(n) * 86400 + 1_600_000_000, c, c, c, c, np.ones(n))


def calm(last_week: float) -> list[float]:
    """30 quiet sessions (+/-0.2% a day), then a week that moved ``last_week`` in total."""
    base = [100.0 * (1.002 if i % 2 else 0.998) for i in range(30)]
    step = (1 + last_week) ** (1 / 5)
    return base + [base[-1] * step ** k for k in range(1, 6)]


def settings(**rotation: Any) -> Any:
    return config.load_settings(env_file=None, environ={}, overrides={"strategy_rotation": rotation} if rotation else {})


@dataclass(frozen=True)
class Sig:
    strategy: str
    confidence: float = 0.8
    symbol: str = "AAPL"
    metadata: dict[str, Any] = field(default_factory=dict)


def test_the_regime_follows_the_seed_s_weekly_and_volatility_thresholds() -> None:
    kw = {"weekly_threshold": 0.03, "volatility_threshold": 0.02, "volatility_window": 20}
    assert read_regime(bench(calm(0.035)), **kw).regime == "bull"
    assert read_regime(bench(calm(-0.035)), **kw).regime == "bear"
    assert read_regime(bench(calm(0.02)), **kw).regime == "sideways"
    assert read_regime(bench(calm(-0.02)), **kw).regime == "sideways"
    wild = [100.0 * (1.03 if i % 2 else 0.97) for i in range(30)]  # 3% swings a day
    reading = read_regime(bench(wild), **kw)
    assert reading.regime == "volatile" and reading.volatility is not None and reading.volatility >= 0.02
    assert read_regime(bench([100.0, 101.0]), **kw).regime == "sideways"  # too few bars to tell
    assert read_regime(None, **kw).regime == "sideways"


def test_every_change_of_regime_is_logged_once_with_the_active_set() -> None:
    rotation = StrategyRotation(settings())
    with capture_logs() as logs:
        rotation.observe(bench(calm(0.035)))
        rotation.observe(bench(calm(0.04)))  # still bull: no line
        rotation.observe(bench(calm(-0.05)))
    changes = [e for e in logs if e["event"] == "strategy_rotation"]
    assert [(e["previous"], e["regime"]) for e in changes] == [(None, "bull"), ("bull", "bear")]
    bear = changes[1]
    assert bear["active"] == {"mean_reversion": 0.5, "defensive": 1.0}
    assert bear["inactive"] == ["breakout", "enhanced_momentum"]
    assert bear["weekly_return"] == pytest.approx(-0.05, abs=1e-4)


def test_the_regime_chooses_which_strategies_may_enter_and_how_large() -> None:
    rotation = StrategyRotation(settings())
    rotation.observe(bench(calm(-0.05)))  # bear
    assert rotation.apply(Sig("enhanced_momentum"), defensive=False) is None
    assert rotation.apply(Sig("breakout"), defensive=False) is None
    half = rotation.apply(Sig("mean_reversion", metadata={"size_multiplier": 0.8}), defensive=False)
    assert half is not None and half.metadata["size_multiplier"] == pytest.approx(0.4)
    assert rotation.rank(half) == pytest.approx(0.4)  # 0.8 confidence x 0.5 weight
    assert rotation.apply(Sig("macd_crossover"), defensive=False) == Sig("macd_crossover")  # not named: not rotated
    rotation.observe(bench(calm(0.05)))  # bull
    assert rotation.apply(Sig("enhanced_momentum"), defensive=False) == Sig("enhanced_momentum")


def test_defensive_mode_throttles_every_non_defensive_strategy_by_size_or_off() -> None:
    sized = StrategyRotation(settings(defensive_throttle="size", defensive_size_multiplier=0.25))
    sized.observe(bench(calm(0.05)))  # bull: momentum at full weight
    throttled = sized.apply(Sig("enhanced_momentum"), defensive=True)
    assert throttled is not None and throttled.metadata["size_multiplier"] == pytest.approx(0.25)
    assert sized.apply(Sig("defensive"), defensive=True) == Sig("defensive")  # never throttled
    off = StrategyRotation(settings(defensive_throttle="off"))
    off.observe(bench(calm(0.05)))
    assert off.apply(Sig("enhanced_momentum"), defensive=True) is None
    assert off.apply(Sig("macd_crossover"), defensive=True) is None  # every non-defensive one
    assert off.apply(Sig("defensive"), defensive=True) == Sig("defensive")
    disabled = StrategyRotation(settings(enabled=False, defensive_throttle="off"))
    assert disabled.apply(Sig("enhanced_momentum"), defensive=False) == Sig("enhanced_momentum")
    assert disabled.apply(Sig("enhanced_momentum"), defensive=True) == Sig("enhanced_momentum")  # off: no throttle


def test_the_rotation_config_names_every_regime_and_nothing_else() -> None:
    with pytest.raises(ConfigError, match="sideways"):
        config.load_settings(env_file=None, environ={}, overrides={
            "strategy_rotation": {"regimes": {"bull": {}, "bear": {}, "volatile": {}}}})
    with pytest.raises(ConfigError, match="defensive_throttle"):
        config.load_settings(env_file=None, environ={}, overrides={"strategy_rotation": {"defensive_throttle": "half"}})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_daily_files(tmp_path_factory.mktemp("rotdata"), DAILY_FILES)


def test_a_backtest_rotates_the_same_way_and_no_entry_comes_from_an_inactive_strategy(
        monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
    # Momentum and breakout rarely signal a buy in a falling market; mean reversion does (it
    # buys the dips): this configuration turns it off in a bear market.
    regimes = config.Settings().strategy_rotation.regimes
    regimes["bear"] = {**regimes["bear"], "mean_reversion": 0.0}
    s = config.load_settings(env_file=None, overrides={"scanning.symbols": ["SPY", "AAPL", "NVDA"],
                                                       "strategy_rotation.regimes": regimes})
    options = BacktestOptions(data_dir=data_dir, symbols=("SPY", "AAPL", "NVDA"), start=date(2018, 1, 2),
                              end=date(2020, 6, 30), progress=False)
    verdicts: list[tuple[str | None, str, bool]] = []
    real_apply = StrategyRotation.apply

    def apply(self: StrategyRotation, signal: Any, *, defensive: bool) -> Any:
        out = real_apply(self, signal, defensive=defensive)
        verdicts.append((self.regime, signal.strategy, out is not None))
        return out

    monkeypatch.setattr(StrategyRotation, "apply", apply)
    with capture_logs() as logs:
        result = run_backtest(s, options)
    regimes = {"bull": 0, "bear": 0, "volatile": 0, "sideways": 0}
    current = None
    for event in logs:
        if event["event"] == "strategy_rotation":
            current = event["regime"]
            regimes[current] += 1
        elif event["event"] == "trade_intent":
            assert current is not None
            assert s.strategy_rotation.regimes[current].get(event["strategy"], 1.0) > 0, (current, event)
    assert all(count > 0 for count in regimes.values()), regimes
    blocked = [v for v in verdicts if not v[2]]
    assert blocked, "some buy signal met a regime that turns its strategy off"
    assert {(regime, strategy) for regime, strategy, _ in blocked} == {("bear", "mean_reversion")}
    assert ("sideways", "mean_reversion", True) in verdicts and result.orders


def test_fast_forward_changes_no_decision_with_rotation_and_timeframes_on(
        monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
    s = config.load_settings(env_file=None, overrides={"scanning.symbols": ["SPY", "AAPL", "NVDA"]})
    assert s.strategy_rotation.enabled and s.multi_timeframe.enabled
    options = BacktestOptions(data_dir=data_dir, symbols=("SPY", "AAPL", "NVDA"), start=date(2018, 1, 2),
                              end=date(2020, 6, 30), progress=False)
    fast = run_backtest(s, options)
    with monkeypatch.context() as patch:
        patch.setattr(prefilter, "masks_for", lambda *args, **kwargs: None)
        slow = run_backtest(s, replace(options, fast_forward=False))
    assert fast.orders and fast.fast_forwarded > 0 and slow.fast_forwarded == 0
    assert [(o["client_order_id"], o["qty"], o["status"]) for o in fast.orders] == \
        [(o["client_order_id"], o["qty"], o["status"]) for o in slow.orders]
    assert [(i["intent_id"], i["confidence"]) for i in fast.intents] == \
        [(i["intent_id"], i["confidence"]) for i in slow.intents]
    assert fast.equity_curve == slow.equity_curve
