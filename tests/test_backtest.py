"""Backtests on real bars: the daemon's loop over history, its report, and its honesty.

Data: the real daily SPY and AAPL files from ``shared/data`` (copied into a temporary
directory, alone, so loading is quick); February to May 2020 trades (the March sell-off
gives the mean-reversion strategy entries).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from dataclasses import replace
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import config
from core import logging_setup
from backtest.cli import main, report_from_journal
from backtest.data import load_history
from backtest.progress import Progress
from backtest.reports import write_backtest_report
from backtest.options import BacktestError, BacktestOptions, BacktestResult
from backtest.runner import run_backtest
from backtest.walk_forward import walk_forward
from core.clock import EXCHANGE_TZ
from journal.journal import Journal
from simulator.market import Market
from market.market_data import BarSeries, MarketData
from backtest.sim_broker import CommissionModel
from strategies.base import BaseStrategy, Signal
from strategies.sma_crossover import SmaCrossover
from tests.conftest import SHARED_DATA, copy_daily_files

DAILY_FILES = ("SPY-1d-1993-01-29-2026-08-07.csv", "AAPL-1d-2013-01-02-2023-12-29.csv")
START, END = date(2020, 2, 3), date(2020, 5, 29)
CUTOFF = date(2020, 3, 20)  # the no-look-ahead test changes every bar after this session


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_daily_files(tmp_path_factory.mktemp("data"), DAILY_FILES)


@pytest.fixture(scope="module")
def settings() -> Any:
    # The scenarios below (entries before 2020-03-20, the stop-outs of 2020-03-17) are those of
    # every strategy trading in every regime on the daily inputs alone: rotation and the
    # multi-timeframe shift (issue 18) are off here and tested in their own files. Every idea the
    # model scores is let through (a flat gate at 0): the bracket model prices these months'
    # 3%/6% brackets at 0.33-0.36, under their break-even gates (ai/gate.py), and these tests
    # are about the backtest's mechanics, not the gate.
    return config.load_settings(env_file=None, overrides={
        "scanning.symbols": ["SPY", "AAPL"], "strategy_rotation.enabled": False, "multi_timeframe.enabled": False,
        "ai.gate_mode": "flat"})


@pytest.fixture(scope="module")
def baseline(settings: Any, data_dir: Path) -> BacktestResult:
    options = BacktestOptions(data_dir=data_dir, symbols=("SPY", "AAPL"), start=START, end=END,
                              slippage_bps=0.0, progress=False)
    return run_backtest(settings, options)


@pytest.fixture
def restore_logging() -> Any:
    yield
    logging_setup.shutdown()


def entries(result: BacktestResult) -> list[dict[str, Any]]:
    return [o for o in result.orders if o.get("intent_id")]


def test_a_backtest_on_real_bars_trades_with_a_bracket_on_every_entry(baseline: BacktestResult) -> None:
    assert baseline.bar_mode == "daily"
    assert baseline.sessions[0] == START and baseline.sessions[-1] == END
    # one equity point per session close, plus the starting cash
    assert len(baseline.equity_curve) == len(baseline.sessions) + 1
    assert baseline.equity_curve[0][1] == Decimal(100000)
    assert baseline.trades, "the first half of 2020 should close some trades"
    assert baseline.performance.trades.total == len(baseline.trades)
    placed = entries(baseline)
    assert placed
    for order in placed:
        assert order["order_class"] == "bracket", order
        payload = order["payload"]
        stop = Decimal(payload["stop_loss"]["stop_price"])
        target = Decimal(payload["take_profit"]["limit_price"])
        assert Decimal(0) < stop < target
        # decided on completed bars, sent at the open: submitted at 09:30 New York
        submitted = order["submitted_at"].astimezone(EXCHANGE_TZ)
        assert (submitted.hour, submitted.minute) == (9, 30)
    # every trade's entry is one of those bracket entries (same symbol, same instant)
    starts = {(o["symbol"], o["submitted_at"]) for o in placed}
    assert all((t["symbol"], t["entry_at"]) in starts for t in baseline.trades)
    assert baseline.final_state == "active"


def test_replayed_history_is_what_the_data_api_serves(data_dir: Path) -> None:
    market = Market.from_csv_dir(data_dir, ["SPY", "AAPL"])
    history = load_history(market, ["SPY", "AAPL"])
    for symbol in ("SPY", "AAPL"):
        served = market.daily_bars(symbol, date(2020, 3, 2), date(2020, 3, 31))
        item = history[symbol]
        first = item.index(date(2020, 3, 2))
        assert first is not None
        for k, bar in enumerate(served):
            i = first + k
            assert int(bar.t.timestamp()) == int(item.ts[i])
            assert (bar.o, bar.h, bar.l, bar.c, bar.v) == pytest.approx(
                (item.open[i], item.high[i], item.low[i], item.close[i], item.volume[i]), rel=1e-9)


def test_the_report_is_written_and_the_summary_printed(settings: Any, data_dir: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str],
                                                       restore_logging: Any) -> None:
    args = argparse.Namespace(data=str(data_dir), start="2020-02-03", end="2020-04-30", strategies=None,
                              report=tmp_path / "report", profile=None)
    run_settings = settings.model_copy(update={"sim": settings.sim.model_copy(update={"start": "2020-02-03"})})
    assert main(run_settings, args) == 0
    out = capsys.readouterr().out
    assert "Backtest 2020-02-03 .. 2020-04-30" in out
    assert "bars/s" in out and "report.html" in out
    html = (tmp_path / "report" / "report.html").read_text()
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert "<img" in html and "SPY" in html
    assert summary["performance"]["trades"]["total"] >= 1
    assert summary["meta"]["commission"].startswith("none")
    assert (tmp_path / "report" / "backtest.jsonl").exists()


def test_a_bad_data_file_names_the_file_and_the_line(settings: Any, data_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str],
                                                     restore_logging: Any) -> None:
    bad = tmp_path / "bad"
    (bad / "daily").mkdir(parents=True)
    shutil.copy(data_dir / "daily" / DAILY_FILES[0], bad / "daily" / DAILY_FILES[0])
    source = (data_dir / "daily" / DAILY_FILES[1]).read_text().splitlines()
    fields = source[4].split(",")
    fields[4] = "12..5"  # the close of the 4th bar
    source[4] = ",".join(fields)
    target = bad / "daily" / DAILY_FILES[1]
    target.write_text("\n".join(source) + "\n")
    args = argparse.Namespace(data=str(bad), start=None, end="2020-03-31", strategies=None,
                              report=tmp_path / "report", profile=None)
    assert main(settings, args) == 2
    err = capsys.readouterr().err
    assert str(target) in err
    assert "line 5" in err
    assert "'12..5' is not a number" in err


def test_missing_data_and_bad_dates_are_one_line_errors(settings: Any, data_dir: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(data=str(tmp_path / "nowhere"), start=None, end=None, strategies=None,
                              report=tmp_path, profile=None)
    assert main(settings, args) == 2
    assert "no such directory" in capsys.readouterr().err
    args = argparse.Namespace(data=str(data_dir), start=None, end="2020-13-01", strategies=None,
                              report=tmp_path, profile=None)
    assert main(settings, args) == 2
    assert "--end '2020-13-01' is not a date" in capsys.readouterr().err
    with pytest.raises(BacktestError, match="before --start"):
        BacktestOptions(data_dir=data_dir, symbols=("SPY",), start=END, end=START)


def _alter_after(source: Path, target: Path, cutoff: date, factor: float) -> None:
    with source.open(newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    for row in body:
        if date.fromisoformat(row[0][:10]) > cutoff:
            for column in range(1, 5):
                row[column] = f"{float(row[column]) * factor:.4f}"
            row[5] = str(int(float(row[5]) * 3))
    with target.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(body)


def test_changing_future_bars_changes_no_earlier_decision(settings: Any, data_dir: Path, tmp_path: Path,
                                                          baseline: BacktestResult) -> None:
    altered = tmp_path / "altered"
    (altered / "daily").mkdir(parents=True)
    for name in DAILY_FILES:
        _alter_after(data_dir / "daily" / name, altered / "daily" / name, CUTOFF, 0.6)
    options = replace(baseline.options, data_dir=altered)
    changed = run_backtest(settings, options)

    cutoff_close = datetime(2020, 3, 20, 16, 0, tzinfo=EXCHANGE_TZ)

    def until_cutoff(result: BacktestResult) -> list[tuple[Any, ...]]:
        return [(o["client_order_id"], o["symbol"], o["side"], o["qty"], o["order_class"], json.dumps(o["payload"]),
                 o["submitted_at"]) for o in result.orders if o["submitted_at"] <= cutoff_close]

    before = until_cutoff(baseline)
    assert before, "the test needs orders before the cutoff to mean anything"
    assert until_cutoff(changed) == before
    assert [p for p in changed.equity_curve if p[0] <= cutoff_close] == \
        [p for p in baseline.equity_curve if p[0] <= cutoff_close]
    # ... and the alteration is real: what came after differs
    assert changed.equity_curve[-1][1] != baseline.equity_curve[-1][1]


def test_indicator_states_computed_ahead_change_no_decision(settings: Any, baseline: BacktestResult,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Daily backtests compute the coming sessions' indicator states in one pass (a cache):
    the same run without it must place the same orders and end with the same equity."""
    from market import indicators

    primed: list[int] = []
    real = indicators.prime_snapshots

    def counted(histories: Any, rsi_n: int) -> int:
        primed.append(real(histories, rsi_n))
        return primed[-1]

    monkeypatch.setattr(indicators, "prime_snapshots", counted)
    indicators._PREFIX_CACHE.clear()
    with_priming = run_backtest(settings, baseline.options)
    assert sum(primed) > 0, "the default strategies read snapshots: their states are primed"

    monkeypatch.setattr(indicators, "prime_snapshots", lambda histories, rsi_n: 0)
    indicators._PREFIX_CACHE.clear()
    indicators._PRIMED.clear()
    without = run_backtest(settings, baseline.options)

    def decisions(result: BacktestResult) -> list[tuple[Any, ...]]:
        return [(o["client_order_id"], o["symbol"], o["side"], o["qty"], json.dumps(o["payload"]))
                for o in result.orders]

    assert decisions(with_priming) == decisions(without) == decisions(baseline)
    assert [(i["intent_id"], i["confidence"]) for i in with_priming.intents] == \
        [(i["intent_id"], i["confidence"]) for i in without.intents]
    assert with_priming.equity_curve == without.equity_curve


def test_commission_and_slippage_cost_money(settings: Any, baseline: BacktestResult) -> None:
    fee = CommissionModel(per_share=Decimal("0.01"), minimum=Decimal("1.00"))
    with_fee = run_backtest(settings, replace(baseline.options, commission=fee))
    with_slippage = run_backtest(settings, replace(baseline.options, slippage_bps=25.0))
    base_equity = baseline.equity_curve[-1][1]
    assert with_fee.commission_paid > 0
    assert baseline.commission_paid == 0
    assert with_fee.equity_curve[-1][1] < base_equity
    assert with_slippage.equity_curve[-1][1] < base_equity
    # the same trades, each net of its fees
    assert len(with_fee.trades) == len(baseline.trades)
    for gross, net in zip(baseline.trades, with_fee.trades):
        assert net["commission"] > 0
        assert net["pnl"] == gross["pnl"] - net["commission"]
    assert sum(t["commission"] for t in with_fee.trades) <= with_fee.commission_paid
    # slippage: the same first entry fills at a worse price
    first = baseline.trades[0]
    slipped = next(t for t in with_slippage.trades if t["symbol"] == first["symbol"] and t["entry_at"] == first["entry_at"])
    assert slipped["entry_price"] > first["entry_price"]


def test_the_circuit_breaker_fires_and_latches_in_a_backtest(settings: Any, baseline: BacktestResult) -> None:
    # Stop-outs of 10% positions at the gap-down open of 2020-03-16 lose more than 0.4% of equity
    # (issue 15 moved it from 03-17: strategies decide on the previous close, the bracket model
    # prices each intent's own bracket).
    # Every idea the model scores is let through (a flat gate at 0): the 3%/6% brackets' own
    # gates (ai/gate.py) with the bracket model leave too few trades in these four months; and
    # entered at a fixed size: sized by their expected return (under break-even) they buy little.
    tight = settings.model_copy(update={"risk": settings.risk.model_copy(update={"circuit_breaker_loss": 0.004}),
                                        "ai": settings.ai.model_copy(update={"gate_mode": "flat"}),
                                        "trading": settings.trading.model_copy(update={"position_sizing": "fixed"})})
    result = run_backtest(tight, baseline.options)
    moves = [(e["payload"]["from"], e["payload"]["to"], e["at"]) for e in result.state_changes]
    assert [(a, b) for a, b, _ in moves] == [("active", "liquidating"), ("liquidating", "halted")]
    tripped = moves[0][2]
    assert tripped.astimezone(EXCHANGE_TZ).date() == date(2020, 3, 16)
    assert result.final_state == "halted"
    # latched: nothing is entered after the trip, for the rest of the backtest
    assert all(o["submitted_at"] < tripped for o in entries(result))
    untripped = run_backtest(tight.model_copy(update={"risk": settings.risk}), baseline.options)
    assert len(entries(result)) < len(entries(untripped))
    assert any("CIRCUIT BREAKER" in a["title"] for a in result.alerts)


def test_walk_forward_trains_before_each_window_and_scores_out_of_sample(settings: Any, data_dir: Path,
                                                                          tmp_path: Path) -> None:
    options = BacktestOptions(data_dir=data_dir, symbols=("SPY", "AAPL"), start=date(2020, 3, 2),
                              end=date(2020, 4, 30), progress=False)
    result = walk_forward(settings, options, train_years=2, test_months=1)
    assert [w.index for w in result.windows] == [1, 2]
    for window in result.windows:
        assert window.train_end < window.test_start
        created = window.model["window"]
        # the model never saw an idea dated in (or after) its test window
        assert date.fromisoformat(created["test_end"]) < window.test_start
        assert window.calibration["n"] > 0 and window.calibration["brier"] is not None
        assert window.result.sessions[0] >= window.test_start and window.result.sessions[-1] <= window.test_end
        assert window.result.model["created_at"] == window.model["created_at"]
    row = result.windows[0].row()
    assert set(row["oos"]) >= {"total_return", "sharpe", "max_drawdown", "trades", "win_rate"}
    assert result.calibration["n"] == sum(w.calibration["n"] for w in result.windows)
    html_path, json_path = write_backtest_report(tmp_path / "wf", result)
    summary = json.loads(json_path.read_text())
    assert len(summary["walk_forward"]) == 2
    assert summary["calibration"]["bins"]
    assert "Walk-forward" in html_path.read_text()


def test_report_from_a_paper_journal(settings: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "state.db"
    journal = Journal(db)
    for day, equity in ((2, "100000"), (3, "100500.5"), (6, "99800")):
        for hour, bump in ((15, "0"), (20, "12.5")):
            journal.record_equity(datetime.fromisoformat(f"2025-01-0{day}T{hour}:00:00+00:00"),
                                  Decimal(equity) + Decimal(bump), Decimal(equity), Decimal(0))
    journal.record_trade("SPY", "breakout", datetime.fromisoformat("2025-01-02T15:00:00+00:00"),
                         datetime.fromisoformat("2025-01-03T15:00:00+00:00"), Decimal(10), Decimal(500),
                         Decimal(550), Decimal(500), "take_profit", mfe_pct=Decimal("0.12"),
                         mae_pct=Decimal("-0.01"))
    journal.close()
    run_settings = settings.model_copy(update={"storage": settings.storage.model_copy(update={"state_db": str(db)})})
    assert report_from_journal(run_settings, argparse.Namespace(out=tmp_path / "out")) == 0
    out = capsys.readouterr().out
    assert "trades  1" in out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    # the first snapshot (the first session's starting equity), then the last of each session
    assert summary["performance"]["points"] == 4
    # returns from the starting equity 100,000 to the last close 99,812.50 (not from the first
    # session's close, 100,012.50)
    assert Decimal(summary["performance"]["start_equity"]) == Decimal(100000)
    assert summary["performance"]["total_return"] == pytest.approx(99812.5 / 100000 - 1, abs=1e-9)
    assert "(-0.19%)" in out
    assert summary["performance"]["trades"]["total"] == 1
    # the backtest's CSVs beside it: the trade with its excursions, the curve the returns use
    with (tmp_path / "out" / "trades.csv").open() as handle:
        trades = list(csv.DictReader(handle))
    assert [(t["symbol"], t["exit_reason"], Decimal(t["pnl"])) for t in trades] == [("SPY", "take_profit", Decimal(500))]
    assert Decimal(trades[0]["mfe_pct"]) == Decimal("0.12") and Decimal(trades[0]["mae_pct"]) == Decimal("-0.01")
    with (tmp_path / "out" / "equity.csv").open() as handle:
        assert [Decimal(r["equity"]) for r in csv.DictReader(handle)][0] == Decimal(100000)
    missing = settings.model_copy(update={"storage": settings.storage.model_copy(update={"state_db": str(tmp_path / "none.db")})})
    assert report_from_journal(missing, argparse.Namespace(out=tmp_path / "out2")) == 2


def test_a_one_session_journal_reports_no_annualized_ratios(settings: Any, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Hours of one session annualized gave "Sharpe 18.43" after a morning's sim run: n/a instead."""
    db = tmp_path / "state.db"
    journal = Journal(db)
    for minute, equity in enumerate(("100000", "100050", "99990", "100080", "100020", "100090")):
        journal.record_equity(datetime.fromisoformat(f"2025-01-02T15:{10 + minute:02d}:00+00:00"),
                              Decimal(equity), Decimal(equity), Decimal(0))
    journal.close()
    run_settings = settings.model_copy(update={"storage": settings.storage.model_copy(update={"state_db": str(db)})})
    assert report_from_journal(run_settings, argparse.Namespace(out=tmp_path / "out")) == 0
    assert "Sharpe n/a" in capsys.readouterr().out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["performance"]["sharpe"] is None and summary["performance"]["annual_return"] is None
    assert summary["performance"]["total_return"] == pytest.approx(0.0009)


class AlwaysBuy(BaseStrategy):
    """Test strategy: buy every symbol it sees, with a tight 1% bracket."""

    name = "test_backtest_always_buy"

    async def evaluate_opportunity(self, symbol: str, market_data: MarketData) -> Signal:
        price = market_data.last_price
        return self.signal(symbol, "buy", 0.9, "test: always buy", stop=price * 0.99, target=price * 1.01)


def test_intraday_bars_run_the_live_loop_every_cycle(tmp_path: Path) -> None:
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
        "ai.min_confidence": 0.0, "ai.calibrated_min_confidence": 0.0, "ai.gate_mode": "flat",
        "trading.position_sizing": "fixed", "trading.cycle_interval_seconds": 1800,
    })
    day = date(2021, 8, 24)
    result = run_backtest(settings, BacktestOptions(data_dir=data, symbols=("AAPL", "MSFT"), start=day, end=day,
                                                    progress=False))
    assert result.bar_mode == "intraday"
    assert result.bars == 2 * 389  # the recorded regular-session minute bars of both symbols
    placed = entries(result)
    assert {o["symbol"] for o in placed} == {"AAPL", "MSFT"}
    for order in placed:
        assert order["order_class"] == "bracket"
        local = order["submitted_at"].astimezone(EXCHANGE_TZ)
        # the first regular-hours cycle, on the loop's own cadence
        assert (local.date(), local.hour, local.minute) == (day, 9, 30)
    assert [p[0].astimezone(EXCHANGE_TZ).date() for p in result.equity_curve[1:]] == [day]


async def test_sma_crossover_signals_on_the_cross_only() -> None:
    settings = config.load_settings(env_file=None)
    strategy = SmaCrossover(settings)

    def market(closes: list[float]) -> MarketData:
        n = len(closes)
        ts = [1_600_000_000 + 86_400 * i for i in range(n)]
        daily = BarSeries.from_arrays(ts, closes, closes, closes, closes, [1e6] * n)
        return MarketData(symbol="XYZ", now=datetime.fromisoformat("2021-01-04T14:30:00+00:00"), daily=daily,
                          last_price=closes[-1], prev_close=closes[-2])

    # SMA10 49.0 <= SMA30 49.67 on the previous bar, 50.1 > 50.0 now
    crossing_up = [50.0] * 30 + [49.0] * 10 + [60.0]
    buy = await strategy.evaluate_opportunity("XYZ", market(crossing_up))
    assert buy.action == "buy", buy.reasoning
    assert buy.stop_price == pytest.approx(60.0 * 0.97) and buy.target_price == pytest.approx(60.0 * 1.06)
    # SMA10 51.0 >= SMA30 50.33 on the previous bar, 49.9 < 50.0 now
    crossing_down = [50.0] * 30 + [51.0] * 10 + [40.0]
    assert (await strategy.evaluate_opportunity("XYZ", market(crossing_down))).action == "sell"
    assert (await strategy.evaluate_opportunity("XYZ", market([50.0] * 30 + [51.0] * 11))).action == "hold"
    assert (await strategy.evaluate_opportunity("XYZ", market([50.0] * 20))).action == "hold"


class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.text = ""

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass


def test_the_progress_line_is_drawn_only_on_a_terminal() -> None:
    piped = _Stream(tty=False)
    bar = Progress(10, piped)
    for done in range(1, 11):
        bar.update(done, "2020-01-02")
    bar.finish()
    assert piped.text == ""
    terminal = _Stream(tty=True)
    bar = Progress(10, terminal)
    bar.update(10, "2020-01-15 equity 100,000")
    bar.finish()
    assert "100%" in terminal.text and "10/10" in terminal.text and "2020-01-15 equity 100,000" in terminal.text
    assert terminal.text.endswith("\n") and terminal.text.count("\n") == 1


def test_a_backtest_on_recorded_bars_reads_no_synthetic_news(settings: Any, baseline: BacktestResult) -> None:
    """The simulator's headlines are invented: on real (CSV) bars they would move the AI's
    confidence with news that never happened, so neither the loop nor the analyzer reads news."""
    from backtest import runner as backtest

    assert settings.ai.use_news_sentiment  # configured on, as by default
    run = backtest._assemble(settings, baseline.options, None, lambda: None)
    assert run.loop.news is None
    assert run.analyzer._news is None
