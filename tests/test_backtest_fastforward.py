"""Daily backtests skip what provably changes nothing, and nothing else.

Two shortcuts make daily backtests fast, and each must leave every decision as it was:

* the strategy prefilter (:mod:`backtest.prefilter`): a strategy is not evaluated on a bar where its
  signal's necessary conditions fail (it could only have answered hold);
* session fast-forward (:meth:`backtest.loop.BacktestLoop.quiet_kind`): with ACTIVE trading, a
  settled book (flat, or long positions fully protected by resting stops that the session's
  range cannot reach, far from every safety threshold even at the session's lows, no gap alert
  at the open) and no strategy able to buy a symbol not held or sell one held (or, flat, no buy
  signal the AI analyzer would accept), the session's loop is not run; the equity it would
  have seen is still booked;
* a run session's safety cycle a minute before the close is skipped when it could only see
  the equity (``BacktestLoop.safety_cycle_is_idle``).

Each test runs the same backtest with the shortcuts and without them (``fast_forward=False``
and the prefilter replaced by "always evaluate") and compares orders, intents, trades and the
equity curve, on the real daily bars of ``shared/data``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest

import config
from backtest import prefilter
from backtest.loop import BacktestLoop
from backtest.options import BacktestOptions, BacktestResult
from backtest.runner import run_backtest
from tests.conftest import copy_daily_files

DAILY_FILES = ("SPY-1d-1993-01-29-2026-08-07.csv", "AAPL-1d-2013-01-02-2023-12-29.csv",
               "NVDA-1d-2013-01-02-2023-12-29.csv")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_daily_files(tmp_path_factory.mktemp("ffdata"), DAILY_FILES)


def _settings(symbols: list[str], strategies: list[str] | None = None) -> Any:
    # The sessions these scenarios skip (flat and holding) are those of every strategy trading
    # in every regime on daily inputs: rotation and the multi-timeframe shift (issue 18) are
    # off here; tests/test_strategy_rotation.py runs the same comparison with them on.
    overrides: dict[str, Any] = {"scanning.symbols": symbols, "strategy_rotation.enabled": False,
                                 "multi_timeframe.enabled": False}
    if strategies:
        # as bench/bench_backtest.py runs the reference strategy: the analyzer scores every
        # idea without vetoing it
        overrides.update({"strategy.enabled": strategies, "ai.min_confidence": 0.0,
                          "ai.calibrated_min_confidence": 0.0, "ai.gate_mode": "flat",
                          # every idea gets the same 10% (risk sizing stakes nothing without an edge)
                          "trading.position_sizing": "fixed"})
    else:
        # the default analyzer keeps its break-even gates (it vetoes ideas) without the margin:
        # with it the bracket model's probabilities leave a handful of entries in these years
        overrides["ai.gate_margin"] = 0.0
    return config.load_settings(env_file=None, overrides=overrides)


def _decisions(result: BacktestResult) -> list[tuple[Any, ...]]:
    return [(o["client_order_id"], o["symbol"], o["side"], o["qty"], o["status"], json.dumps(o["payload"], default=str))
            for o in result.orders]


def _same_run(fast: BacktestResult, slow: BacktestResult) -> None:
    assert _decisions(fast) == _decisions(slow)
    assert [(i["intent_id"], i["confidence"]) for i in fast.intents] == \
        [(i["intent_id"], i["confidence"]) for i in slow.intents]
    assert fast.trades == slow.trades
    assert fast.equity_curve == slow.equity_curve
    assert fast.final_state == slow.final_state
    assert fast.performance.to_dict() == slow.performance.to_dict()


def _without_shortcuts(monkeypatch: pytest.MonkeyPatch, settings: Any, options: BacktestOptions) -> BacktestResult:
    with monkeypatch.context() as patch:
        patch.setattr(prefilter, "masks_for", lambda *args, **kwargs: None)
        result = run_backtest(settings, replace(options, fast_forward=False))
    assert result.fast_forwarded == 0
    return result


@pytest.mark.parametrize("strategies, symbols, start, end", [
    (["sma_crossover"], ["SPY", "AAPL"], date(2017, 1, 3), date(2019, 12, 31)),
    (None, ["SPY", "AAPL", "NVDA"], date(2018, 1, 2), date(2020, 6, 30)),
])
def test_shortcuts_change_no_decision(monkeypatch: pytest.MonkeyPatch, data_dir: Path, strategies: list[str] | None,
                                      symbols: list[str], start: date, end: date) -> None:
    settings = _settings(symbols, strategies)
    options = BacktestOptions(data_dir=data_dir, symbols=tuple(symbols), start=start, end=end, progress=False)
    loops: list[Any] = []
    with monkeypatch.context() as patch:
        real_shutdown = BacktestLoop.shutdown

        async def shutdown(self: BacktestLoop) -> None:
            loops.append(self)
            await real_shutdown(self)

        patch.setattr(BacktestLoop, "shutdown", shutdown)
        fast = run_backtest(settings, options)
    (loop,) = loops
    assert loop.safety_cycles_skipped > 0, "idle safety cycles of run sessions were skipped"
    if strategies is None:  # the default analyzer vetoes ideas: sessions are skipped on its look-ahead
        assert loop.skipped_despite_signals > 0
    slow = _without_shortcuts(monkeypatch, settings, options)
    assert fast.orders, "the run trades"
    assert fast.fast_forwarded > fast.fast_forwarded_holding > 0, "flat and holding sessions were skipped"
    _same_run(fast, slow)
    assert fast.meta()["sessions_fast_forwarded"].startswith(f"{fast.fast_forwarded} ")


def test_a_session_after_a_stop_out_is_run_not_skipped(monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
    """Tight brackets stop out often, on fills the loop records the next session: a book that
    is flat but has unrecorded fills is never fast-forwarded, and the breaker still fires."""
    settings = _settings(["SPY", "AAPL", "NVDA"], ["sma_crossover"])
    settings = settings.model_copy(update={
        "trading": settings.trading.model_copy(update={"stop_loss": 0.01, "take_profit": 0.02}),
        "risk": settings.risk.model_copy(update={"circuit_breaker_loss": 0.0015}),
    })
    options = BacktestOptions(data_dir=data_dir, symbols=("SPY", "AAPL", "NVDA"), start=date(2018, 1, 2),
                              end=date(2019, 12, 31), progress=False)
    fast = run_backtest(settings, options)
    slow = _without_shortcuts(monkeypatch, settings, options)
    _same_run(fast, slow)
    assert [e["payload"]["to"] for e in fast.state_changes][:1] == ["liquidating"]


def test_a_strategy_without_a_prefilter_runs_every_session(monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
    """A user's strategy has no prefilter: every session then runs the loop in full."""
    settings = _settings(["SPY", "AAPL"], ["sma_crossover", "macd_crossover"])
    options = BacktestOptions(data_dir=data_dir, symbols=("SPY", "AAPL"), start=date(2019, 1, 2),
                              end=date(2019, 6, 28), progress=False)
    real = prefilter.masks_for
    monkeypatch.setattr(prefilter, "masks_for",
                        lambda strategy, *a, **k: None if strategy.name == "macd_crossover" else real(strategy, *a, **k))
    result = run_backtest(settings, options)
    assert result.fast_forwarded == 0


def test_the_command_line_can_turn_fast_forward_off(data_dir: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from core import logging_setup
    from backtest.cli import cli

    args = ["--data", str(data_dir), "--symbols", "SPY,AAPL", "--start", "2019-01-02", "--end", "2019-03-29",
            "--strategies", "sma_crossover"]
    try:
        assert cli(args + ["--report", str(tmp_path / "fast")]) == 0
        assert cli(args + ["--report", str(tmp_path / "slow"), "--no-fast-forward"]) == 0
    finally:
        logging_setup.shutdown()
    fast = json.loads((tmp_path / "fast" / "summary.json").read_text())
    slow = json.loads((tmp_path / "slow" / "summary.json").read_text())
    assert fast["meta"]["sessions_fast_forwarded"] != "0 (0 holding positions)"
    assert slow["meta"]["sessions_fast_forwarded"] == "0 (0 holding positions)"
    assert fast["performance"] == slow["performance"]
