"""A backtest that tells the truth (issue 15, item 5) and is pleasant to run (issue 16, item 2).

* exit reasons come from the order that filled: a stop that fills in the entry's own session
  is booked ``stop_loss`` and the stop-loss guard counts it;
* the opening spread is known at the open (the previous session's range, not the day's own);
* data that starts before the benchmark's does not crash;
* ``--report`` writes ``trades.csv`` and ``equity.csv`` beside the HTML, and the summary
  compares the run with buy-and-hold, SPY and random entries (a seeded percentile);
* ``--data DIR`` alone trades every symbol in DIR; log lines go to the log file only.
"""

from __future__ import annotations

import argparse
import csv
import json
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import structlog

import config
from backtest import benchmarks
from backtest.benchmarks import Prices, Twin, percentile_of, random_entries, simulate_twins
from backtest.cli import main, options_from_args
from backtest.data import DailyHistory, midnight
from backtest.options import BacktestOptions
from backtest.runner import run_backtest
from core import logging_setup
from core.clock import EXCHANGE_TZ
from market.market_data import MarketData
from simulator.market import Market
from strategies.base import BaseStrategy, Signal
from tests.conftest import SHARED_DATA, copy_daily_files

SPY_FILE = "SPY-1d-1993-01-29-2026-08-07.csv"
AAPL_FILE = "AAPL-1d-2013-01-02-2023-12-29.csv"
MSFT_FILE = "MSFT-1d-2013-01-02-2023-12-29.csv"


class BuyEveryOpen(BaseStrategy):
    """Test strategy: buy whatever it sees with a tight 1% / 2% bracket."""

    name = "test_truth_buy_every_open"

    async def evaluate_opportunity(self, symbol: str, market_data: MarketData) -> Signal:
        price = market_data.last_price
        return self.signal(symbol, "buy", 0.9, "test: buy", stop=price * 0.99, target=price * 1.02)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_daily_files(tmp_path_factory.mktemp("truth"), (SPY_FILE, AAPL_FILE))


@pytest.fixture
def restore_logging() -> Any:
    yield
    logging_setup.shutdown()


# -- exit reasons from the fill, and the stop-loss guard --------------------------------------


def test_a_stop_filled_in_the_entry_session_is_booked_stop_and_the_guard_counts_it(tmp_path: Path) -> None:
    data = copy_daily_files(tmp_path, (SPY_FILE, AAPL_FILE, MSFT_FILE))
    symbols = ["SPY", "AAPL", "MSFT"]
    settings = config.load_settings(env_file=None, overrides={
        "scanning.symbols": symbols, "strategy.enabled": [BuyEveryOpen.name],
        "ai.min_confidence": 0.0, "ai.calibrated_min_confidence": 0.0,
        # every idea entered at a fixed size: the break-even gate and Kelly sizing (issue 15)
        # would let through one of the three a day, and this is about booking the stops
        "ai.gate_mode": "flat", "trading.position_sizing": "fixed",
    })
    options = BacktestOptions(data_dir=data, symbols=tuple(symbols), start=date(2020, 3, 9),
                              end=date(2020, 3, 20), slippage_bps=0.0, progress=False)
    with structlog.testing.capture_logs() as logs:
        result = run_backtest(settings, options)
    assert result.trades
    stopped = [t for t in result.trades if Decimal(str(t["exit_price"])) <= Decimal(str(t["stop_price"]))]
    same_session = [t for t in stopped
                    if t["entry_at"].astimezone(EXCHANGE_TZ).date() == t["exit_at"].astimezone(EXCHANGE_TZ).date()]
    assert same_session, "March 2020 stops a 1% bracket out on the day it is entered"
    # every stop fill, same-session ones included, is booked by the order that filled
    assert {t["exit_reason"] for t in stopped} == {"stop_loss"}
    assert all("stop" not in (t["exit_reason"] or "") for t in result.trades if t not in stopped)
    closed = [e for e in logs if e["event"] == "position_closed"]
    assert sum(e["exit_reason"] == "stop_loss" for e in closed) == len(stopped)
    # the stop-loss guard (3 stop-outs within a day: three symbols stopped out in one session)
    # saw them and locked new entries
    locks = [e for e in logs if e["event"] == "protection_lock" and e["protection"] == "stoploss_guard"]
    assert locks, "the stop-loss guard never fired: it did not see the stop-outs"


# -- the opening spread is known at the open ---------------------------------------------------


def _write_daily(path: Path, rows: list[tuple[str, float, float, float, float]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "open", "high", "low", "close", "volume"])
        for day, o, h, lo, c in rows:
            writer.writerow([day, o, h, lo, c, 1_000_000])


def test_the_opening_spread_does_not_see_the_sessions_own_range(tmp_path: Path) -> None:
    (tmp_path / "daily").mkdir()
    _write_daily(tmp_path / "daily" / "XYZ-1d-2021-03-01-2021-03-04.csv", [
        ("2021-03-01", 100.0, 100.5, 99.5, 100.0),  # calm
        ("2021-03-02", 100.0, 110.0, 90.0, 100.0),  # a 20% range, unknown at its open
        ("2021-03-03", 100.0, 100.5, 99.5, 100.0),  # calm, after a wild day
        ("2021-03-04", 100.0, 100.5, 99.5, 100.0),
    ])
    market = Market.from_csv_dir(tmp_path, ["XYZ"])

    def opening_spread(day: date) -> float:
        opened = datetime.combine(day, datetime.min.time().replace(hour=9, minute=40), EXCHANGE_TZ)
        quote = market.quote_at("XYZ", opened)
        assert quote is not None
        return quote.ask - quote.bid

    calm = opening_spread(date(2021, 3, 4))
    assert opening_spread(date(2021, 3, 2)) == pytest.approx(calm, abs=0.011)  # its own range is not known yet
    assert opening_spread(date(2021, 3, 3)) > calm + 0.01  # yesterday's 20% range is


# -- data that starts before the benchmark's ---------------------------------------------------


def test_data_starting_before_the_benchmarks_does_not_crash(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            restore_logging: Any) -> None:
    data = copy_daily_files(tmp_path / "data", (AAPL_FILE,))
    with (SHARED_DATA / "daily" / SPY_FILE).open() as source:
        rows = [line for line in source if line.startswith(("timestamp", "2016", "2017", "2018"))]
    (data / "daily" / "SPY-1d-2016-01-04-2018-12-31.csv").write_text("".join(rows))
    settings = config.load_settings(env_file=None, overrides={"scanning.symbols": ["AAPL"]})
    args = argparse.Namespace(data=str(data), symbols="AAPL", end="2014-06-30", report=tmp_path / "report",
                              strategies=None, profile=None)
    assert main(settings, args) == 0
    out = capsys.readouterr().out
    assert "Backtest 2013-12-30 .. 2014-06-30" in out  # 250 sessions into AAPL's data, before SPY's
    assert "Traceback" not in out


# -- report files and the comparison -----------------------------------------------------------


def test_the_report_writes_trades_and_equity_csv_and_compares_with_chance(
        data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: Any) -> None:
    # every scored idea let through (a flat gate at 0): the bracket model prices these months'
    # brackets under their break-even gates, and this is about the report
    settings = config.load_settings(env_file=None, overrides={"scanning.symbols": ["SPY", "AAPL"],
                                                              "ai.gate_mode": "flat"})
    report = tmp_path / "report"
    args = argparse.Namespace(data=str(data_dir), symbols="SPY,AAPL", start="2020-02-03", end="2020-05-29",
                              report=report, strategies=None, profile=None, log_level="INFO")
    run_settings = settings.model_copy(update={"sim": settings.sim.model_copy(update={"start": "2020-02-03"})})
    assert main(run_settings, args) == 0
    captured = capsys.readouterr()
    # the terminal: the summary on stdout, no log line on stdout or stderr (they are in the file)
    assert "bars/s" in captured.out and "percentile of 1000 random-entry runs" in captured.out
    assert "buy-and-hold of the universe" in captured.out and "SPY" in captured.out
    assert "deployed on average" in captured.out
    for stream in (captured.out, captured.err):
        assert '"event"' not in stream and "cycle_complete" not in stream
    log_lines = (report / "backtest.jsonl").read_text().splitlines()
    assert any(json.loads(line)["event"] == "cycle_complete" for line in log_lines)
    with (report / "trades.csv").open() as handle:
        trades = list(csv.DictReader(handle))
    assert trades
    for column in ("entry_date", "entry_price", "exit_date", "exit_price", "stop_price", "target_price",
                   "exit_reason", "pnl", "probability", "mfe_pct", "mae_pct"):
        assert column in trades[0], column
    stops = [t for t in trades if "stop" in t["exit_reason"]]
    assert stops
    for t in stops:  # a stop fill: at or below its stop (slippage and gaps only push it lower)
        assert Decimal(t["exit_price"]) <= Decimal(t["stop_price"])
    for t in trades:
        assert 0.0 < float(t["probability"]) < 1.0
        assert Decimal(t["stop_price"]) < Decimal(t["entry_price"]) < Decimal(t["target_price"])
        # issue 18: every closed trade's excursions, favourable >= 0 >= adverse
        assert Decimal(t["mfe_pct"]) >= 0 >= Decimal(t["mae_pct"])
    with (report / "equity.csv").open() as handle:
        equity = list(csv.DictReader(handle))
    assert Decimal(equity[0]["equity"]) == Decimal(100000) and len(equity) > 60
    summary = json.loads((report / "summary.json").read_text())
    comparison = summary["comparison"]
    assert 0.0 <= comparison["random_entries"]["percentile"] <= 100.0
    assert comparison["benchmark"]["symbol"] == "SPY"
    assert comparison["capital_deployed"]["average"] >= 0.0
    html = (report / "report.html").read_text()
    assert 'id="comparison"' in html and 'id="drawdown"' in html and 'id="trades"' in html
    assert "http://" not in html and "https://" not in html  # nothing to fetch: works offline


def _prices(closes: list[float], *, spread: float = 0.0) -> Prices:
    """One symbol whose sessions open at the previous close and trade in [close - spread, close + spread]."""
    c = np.array(closes, dtype=float)
    o = np.concatenate(([c[0]], c[:-1]))
    sessions = tuple(date(2021, 1, 4) + timedelta(days=i) for i in range(len(c)))
    return Prices(("XYZ",), sessions, o[None, :], (np.maximum(o, c) + spread)[None, :],
                  (np.minimum(o, c) - spread)[None, :], c[None, :])


def test_random_entries_follow_the_same_exits_and_sizing_on_a_known_series() -> None:
    # A steady 1% rise a session: a twin held 3 sessions without stop or target gains exactly
    # 1.01**3 - 1 of its size, wherever it enters.
    prices = _prices([100 * 1.01 ** i for i in range(60)])
    twin = Twin(notional=10_000.0, stop_frac=None, target_frac=None, entry_cost=0.0, sessions=3, commission=0.0)
    totals = simulate_twins([twin], prices, draws=200, seed=7)
    full = totals[totals > 250.0]  # entries late in the data are cut at its last close
    assert full.size > 100
    assert full == pytest.approx(10_000 * (1.01 ** 3 - 1))
    # a 2% target is reached on the second session (1.01**2 >= 1.02 is false, 1.01**3 is not
    # reached in 2 sessions with a 0.5% wick: high = close + 0.5)
    target = Twin(notional=10_000.0, stop_frac=-0.5, target_frac=0.02, entry_cost=0.0, sessions=5, commission=0.0)
    hit = simulate_twins([target], _prices([100 * 1.01 ** i for i in range(60)], spread=0.5), draws=50, seed=7)
    assert np.all(np.isclose(hit, 200.0) | (hit < 200.0))
    assert np.isclose(hit, 200.0).sum() > 40
    # seeded: the same draws every time
    assert np.array_equal(simulate_twins([twin], prices, draws=50, seed=3),
                          simulate_twins([twin], prices, draws=50, seed=3))


def test_a_session_touching_both_levels_is_a_stop_for_a_twin() -> None:
    closes = [100.0] * 30
    prices = _prices(closes, spread=5.0)  # every session: low 95, high 105
    twin = Twin(notional=1_000.0, stop_frac=-0.03, target_frac=0.03, entry_cost=0.0, sessions=5, commission=1.0)
    totals = simulate_twins([twin], prices, draws=20, seed=1)
    assert totals == pytest.approx(1_000.0 * -0.03 - 1.0)  # stop first, then the commission


def test_the_percentile_places_the_run_in_the_random_distribution() -> None:
    totals = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    assert percentile_of(10.0, totals) == 100.0
    assert percentile_of(-10.0, totals) == 0.0
    assert percentile_of(0.0, totals) == 50.0  # ties count half
    # a flat market: every random twin loses only its costs; a run that made money beats them all
    prices = _prices([50.0] * 40)
    trade = {"symbol": "XYZ", "side": "long", "qty": "10", "entry_price": "50", "exit_price": "51", "pnl": "10",
             "entry_at": datetime(2021, 1, 5, 14, 30, tzinfo=EXCHANGE_TZ),
             "exit_at": datetime(2021, 1, 7, 15, 0, tzinfo=EXCHANGE_TZ),
             "stop_price": "48.5", "target_price": "53", "commission": "0"}
    result = random_entries([trade], prices, seed=42, draws=100)
    assert result is not None and result.percentile == 100.0
    assert result.to_dict()["median_pnl"] == 0.0
    losing = dict(trade, pnl="-10")
    assert random_entries([losing], prices, seed=42, draws=100).percentile == 0.0  # type: ignore[union-attr]


def test_buy_and_hold_and_capital_deployed_on_a_known_path() -> None:
    prices = _prices([100.0, 110.0, 121.0])
    assert benchmarks.buy_and_hold(prices, ["XYZ"])["total_return"] == pytest.approx(0.21)  # type: ignore[index]
    closes = [(datetime.combine(d, datetime.min.time().replace(hour=16), EXCHANGE_TZ), Decimal(1000))
              for d in prices.sessions]
    fills = [{"symbol": "XYZ", "side": "buy", "qty": "2", "at": closes[1][0] - timedelta(hours=6)},
             # the same fill reported twice: journaled with nothing applied, it holds nothing more
             {"symbol": "XYZ", "side": "buy", "qty": "2", "applied_qty": Decimal(0), "at": closes[1][0] - timedelta(hours=6)}]
    deployed = benchmarks.capital_deployed(fills, prices, closes)
    assert deployed is not None
    # nothing on the first close, 2 x 110 then 2 x 121 of 1,000
    assert deployed["average"] == pytest.approx((0 + 0.22 + 0.242) / 3, abs=1e-6)
    assert deployed["max"] == pytest.approx(0.242)


# -- the command line ------------------------------------------------------------------------------


def test_data_dir_alone_uses_every_symbol_in_it(data_dir: Path) -> None:
    settings = config.load_settings(env_file=None)  # scanning.symbols: the configured universe
    options = options_from_args(settings, argparse.Namespace(data=str(data_dir), symbols=None))
    assert options.symbols == ("AAPL", "SPY")
    chosen = options_from_args(settings.model_copy(update={"scanning": settings.scanning.model_copy(
        update={"symbols": ["AAPL"]})}), argparse.Namespace(data=str(data_dir), symbols="AAPL"))
    assert chosen.symbols == ("AAPL",)


def test_daily_history_helpers_stamp_sessions_at_midnight_new_york() -> None:
    day = date(2021, 3, 1)
    ts = np.array([midnight(day)], dtype=np.int64)
    item = DailyHistory("XYZ", (day,), ts, *(np.array([1.0]) for _ in range(5)))
    assert datetime.fromtimestamp(int(item.ts[0]), EXCHANGE_TZ).hour == 0
    assert item.index(day) == 0


def test_a_twins_time_limit_does_not_copy_its_trades_outcome() -> None:
    """A trade closed at its target after 2 sessions lends its twin the strategy's own time
    limit (the holding time of a stop or target exit is its outcome); a strategy exit lends
    the sessions it was held."""
    prices = _prices([100.0] * 40)
    base = {"symbol": "XYZ", "side": "long", "qty": "10", "entry_price": "100", "pnl": "60",
            "entry_at": datetime(2021, 1, 5, 14, 30, tzinfo=EXCHANGE_TZ),
            "exit_at": datetime(2021, 1, 6, 15, 0, tzinfo=EXCHANGE_TZ),
            "stop_price": "97", "target_price": "106", "commission": "0"}
    target = benchmarks.twins_of([dict(base, exit_reason="take_profit", strategy="enhanced_momentum")], prices)
    assert target[0].sessions == benchmarks.HORIZON
    limited = benchmarks.twins_of([dict(base, exit_reason="stop_loss", strategy="mean_reversion")], prices,
                                  {"mean_reversion": 6})
    assert limited[0].sessions == 6
    decided = benchmarks.twins_of([dict(base, exit_reason="strategy_exit", strategy="mean_reversion")], prices,
                                  {"mean_reversion": 6})
    assert decided[0].sessions == 2
    assert target[0].stop_frac == pytest.approx(-0.03) and target[0].target_frac == pytest.approx(0.06)


def test_the_reports_calibration_scores_the_label_the_probability_predicted() -> None:
    """The probability at entry is for the bracket's target before its stop: a strategy exit
    at a profit is not a hit (the old section scored "profitable")."""
    from types import SimpleNamespace

    from backtest.reports import traded_calibration

    trades = [
        {"probability": 0.6, "exit_reason": "take_profit", "pnl": "60"},
        {"probability": 0.4, "exit_reason": "strategy_exit", "pnl": "25"},  # profitable, target not reached
        {"probability": 0.3, "exit_reason": "stop_loss", "pnl": "-30"},
        {"probability": None, "exit_reason": "take_profit", "pnl": "60"},  # no probability: not scored
    ]
    summary = traded_calibration(SimpleNamespace(trades=trades))  # type: ignore[arg-type]
    assert summary is not None
    assert summary["n"] == 3 and summary["base_rate"] == pytest.approx(1 / 3)
