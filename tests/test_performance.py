"""analytics/performance.py: every metric against hand-computed values, the edge cases, and real SPY bars.

The arithmetic behind each expected number is written beside it, so a reader can check the
convention (see analytics/performance.py's docstring) rather than trust the code under test.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from analytics import performance
from core.clock import EXCHANGE_TZ
from analytics.performance import SMALL_SAMPLE_WARNING, compute_performance
from tests.conftest import SHARED_DATA
from analytics.trade_ledger import ClosedTrade

UTC = timezone.utc
SQRT_252 = math.sqrt(252)  # 15.874507866...


def daily(values: list[float | str], start: datetime = datetime(2024, 1, 2, 21, tzinfo=UTC)) -> list:
    return [(start + timedelta(days=i), v) for i, v in enumerate(values)]


def et(*args: int) -> datetime:
    return datetime(*args, tzinfo=EXCHANGE_TZ)


def strict_json(report: performance.PerformanceReport) -> dict:
    return json.loads(json.dumps(report.to_dict(), allow_nan=False))


# -- curve metrics -------------------------------------------------------------------------------


def test_returns_ratios_and_drawdown_by_hand() -> None:
    # equity 1000, 1100, 990, 1089, 1197.9 -> returns r = +0.10, -0.10, +0.10, +0.10
    report = compute_performance(daily([1000, 1100, 990, 1089, "1197.9"]), [], periods_per_year=252)
    assert report.returns_count == 4
    assert report.total_return == pytest.approx(0.1979)  # 1197.9 / 1000 - 1
    assert report.net_profit == Decimal("197.9")
    # mean = 0.05; deviations 0.05, -0.15, 0.05, 0.05; squares sum 0.03; var (ddof 1) = 0.01; sd = 0.1
    assert report.annual_volatility == pytest.approx(0.1 * SQRT_252)  # 1.58745
    assert report.sharpe == pytest.approx(0.05 / 0.1 * SQRT_252)  # 7.93725
    # downside deviation over ALL 4 periods: sqrt((0 + 0.01 + 0 + 0) / 4) = 0.05
    assert report.sortino == pytest.approx(0.05 / 0.05 * SQRT_252)  # 15.8745
    # VaR: sorted -0.1, 0.1, 0.1, 0.1; position 0.05 * 3 = 0.15 -> -0.1 + 0.15 * 0.2 = -0.07
    assert report.var_95 == pytest.approx(-0.07)
    assert report.expected_shortfall_95 == pytest.approx(-0.1)  # mean of returns <= -0.07
    assert report.best_period_return == pytest.approx(0.1)
    assert report.worst_period_return == pytest.approx(-0.1)
    # peak 1100 (day 1), trough 990 (day 2): 110 / 1100 = 10 %; back above 1100 on day 4
    assert report.max_drawdown_pct == pytest.approx(0.10)
    assert report.max_drawdown_amount == Decimal("110")
    assert report.max_drawdown_peak_at == datetime(2024, 1, 3, 21, tzinfo=UTC)
    assert report.max_drawdown_trough_at == datetime(2024, 1, 4, 21, tzinfo=UTC)
    assert report.max_drawdown_recovered_at == datetime(2024, 1, 6, 21, tzinfo=UTC)
    assert report.time_to_recovery_days == pytest.approx(2.0)  # trough day 2 -> day 4
    assert report.max_drawdown_duration_days == pytest.approx(3.0)  # peak day 1 -> day 4
    assert report.longest_drawdown_recovered is True
    assert report.current_drawdown_pct == 0.0
    assert report.recovery_factor == pytest.approx(197.9 / 110)  # 1.79909
    assert SMALL_SAMPLE_WARNING in report.warnings  # 4 returns: computed, but flagged
    data = strict_json(report)
    assert data["sharpe"] == 7.9373 and data["sortino"] == 15.8745
    assert data["max_drawdown_amount"] == "110.00" and data["net_profit"] == "197.90"


def test_risk_free_rate_is_compounded_down_to_one_period() -> None:
    # rf 2.52 % a year -> per period (1.0252)^(1/252) - 1 = 0.0000988...; Sharpe uses mean - rf_p
    report = compute_performance(daily([1000, 1100, 990, 1089, "1197.9"]), [], risk_free_rate=0.0252)
    rf_period = 1.0252 ** (1 / 252) - 1
    assert report.sharpe == pytest.approx((0.05 - rf_period) / 0.1 * SQRT_252)
    assert report.sortino == pytest.approx((0.05 - rf_period) / 0.05 * SQRT_252)


def test_cagr_calmar_and_new_york_months_by_hand() -> None:
    # 365.25 days from first to last point = exactly one year of the CAGR's clock
    curve = [
        (datetime(2023, 1, 1, 0, tzinfo=UTC), 100),  # New York: 2022-12-31 19:00 -> December 2022
        (datetime(2023, 7, 2, 0, tzinfo=UTC), 90),  # New York: 2023-07-01 20:00 -> July 2023
        (datetime(2024, 1, 1, 6, tzinfo=UTC), 121),  # New York: 2024-01-01 01:00 -> January 2024
    ]
    report = compute_performance(curve, [])
    assert report.periods_per_year == 12  # median spacing ~182 days: monthly
    assert report.annual_return == pytest.approx(0.21)  # (121 / 100) ^ (1 / 1 year) - 1
    assert report.max_drawdown_pct == pytest.approx(0.10)  # 100 -> 90
    assert report.calmar == pytest.approx(2.1)  # 0.21 / 0.10
    assert report.recovery_factor == pytest.approx(2.1)  # net profit 21 / drawdown $10
    rows = {row.year: row for row in report.monthly_returns}
    assert sorted(rows) == [2022, 2023, 2024]
    assert rows[2022].months[11] == pytest.approx(0.0)  # the first point is its own base
    assert rows[2023].months[6] == pytest.approx(-0.10)  # 90 / 100 - 1
    assert rows[2023].months[0] is None and rows[2023].total == pytest.approx(-0.10)
    assert rows[2024].months[0] == pytest.approx(121 / 90 - 1)  # 0.344444
    assert rows[2024].total == pytest.approx(121 / 90 - 1)


def test_monthly_returns_compound_within_a_year() -> None:
    # Jan ends 110 (+10 % on 100), Feb ends 99 (-10 %), Mar ends 108.9 (+10 %): year = 1.1*0.9*1.1 - 1
    curve = [
        (et(2024, 1, 2, 16), 100),
        (et(2024, 1, 31, 16), 110),
        (et(2024, 2, 29, 16), 99),
        (et(2024, 3, 28, 16), "108.9"),
    ]
    (row,) = compute_performance(curve, []).monthly_returns
    assert row.months[:3] == pytest.approx((0.10, -0.10, 0.10))
    assert row.total == pytest.approx(0.089)  # 108.9 / 100 - 1


def test_var_and_expected_shortfall_by_hand() -> None:
    returns = [-0.05, -0.04, -0.03] + [0.01] * 17  # 20 returns
    values = [100.0]
    for r in returns:
        values.append(values[-1] * (1 + r))
    report = compute_performance(daily(values), [], periods_per_year=252)
    # 5 % quantile: position 0.05 * 19 = 0.95 between -0.05 and -0.04 -> -0.05 + 0.95 * 0.01
    assert report.var_95 == pytest.approx(-0.0405)
    assert report.expected_shortfall_95 == pytest.approx(-0.05)  # only -0.05 is at or below
    assert SMALL_SAMPLE_WARNING in report.warnings


def test_longest_drawdown_unrecovered_and_current_drawdown() -> None:
    # 100, 120, 90, 120, 110, 100, 105 (one point a day)
    # decline 1: peak 120 (day 1) -> 90 (day 2, -25 %) -> back to 120 on day 3: 2 days underwater
    # decline 2: peak 120 (day 3) -> 110, 100, 105 and never back: 3 days (to the last point)
    report = compute_performance(daily([100, 120, 90, 120, 110, 100, 105]), [])
    assert report.max_drawdown_pct == pytest.approx(0.25)
    assert report.max_drawdown_amount == Decimal(30)
    assert report.time_to_recovery_days == pytest.approx(1.0)  # trough day 2 -> day 3
    assert report.max_drawdown_duration_days == pytest.approx(3.0)
    assert report.longest_drawdown_recovered is False
    assert report.current_drawdown_pct == pytest.approx(0.125)  # 1 - 105 / 120
    assert not any("not recovered" in w for w in report.warnings)  # the deepest one recovered


def test_deepest_drawdown_unrecovered_is_flagged() -> None:
    report = compute_performance(daily([100, 110, 80, 90]), [])
    assert report.max_drawdown_recovered_at is None
    assert report.time_to_recovery_days is None
    assert "maximum drawdown not recovered by the end of the curve" in report.warnings
    assert report.max_drawdown_duration_days == pytest.approx(2.0)  # day 1 -> last point day 3


def test_percent_and_dollar_drawdowns_are_each_the_largest() -> None:
    # 100 -> 50 is -50 % ($50); 1000 -> 800 is only -20 % but $200
    report = compute_performance(daily([100, 50, 1000, 800]), [])
    assert report.max_drawdown_pct == pytest.approx(0.5)
    assert report.max_drawdown_amount == Decimal(200)
    assert report.recovery_factor == pytest.approx(700 / 200)  # net 800 - 100 over $200


# -- trades --------------------------------------------------------------------------------------

# Week of 2024-03-04 (before DST: New York = UTC-5). Holding: 4 h, 24 h, 48 h, 0.5 h, 6 h.
TRADES = [
    dict(symbol="AAPL", strategy="momentum", side="long", qty=100, entry_at=et(2024, 3, 4, 10),
         exit_at=et(2024, 3, 4, 14), entry_price="100", exit_price="103", pnl="300", return_pct="0.03",
         exit_reason="take_profit"),
    dict(symbol="AAPL", strategy="momentum", side="long", qty=100, entry_at=et(2024, 3, 5, 11),
         exit_at=et(2024, 3, 6, 11), entry_price="100", exit_price="99", pnl="-100", return_pct="-0.01",
         exit_reason="stop_loss"),
    dict(symbol="MSFT", strategy="mean_reversion", side="long", qty=50, entry_at=et(2024, 3, 5, 10, 30),
         exit_at=et(2024, 3, 7, 10, 30), entry_price="200", exit_price="204", pnl="200", return_pct="0.02",
         exit_reason="signal"),
    dict(symbol="MSFT", strategy="mean_reversion", side="short", qty=50, entry_at=et(2024, 3, 7, 15),
         exit_at=et(2024, 3, 7, 15, 30), entry_price="200", exit_price="200", pnl="0", return_pct="0",
         exit_reason="signal"),
    dict(symbol="SPY", strategy="breakout", side="long", qty=20, entry_at=et(2024, 3, 8, 9, 45),
         exit_at=et(2024, 3, 8, 15, 45), entry_price="500", exit_price="490", pnl="-200", return_pct="-0.02",
         exit_reason="stop_loss"),
]
WEEK = [(et(2024, 3, 4, 9, 30), "100000"), (et(2024, 3, 8, 16), "100200")]  # 102.5 hours


def test_trade_statistics_by_hand() -> None:
    stats = compute_performance(WEEK, TRADES).trades
    assert (stats.total, stats.winning, stats.losing, stats.breakeven) == (5, 2, 2, 1)
    assert stats.win_rate == pytest.approx(0.4)  # 2 wins / 5 trades (breakeven counts in total)
    assert stats.gross_profit == Decimal(500) and stats.gross_loss == Decimal(-300)
    assert stats.net_pnl == Decimal(200)
    assert stats.profit_factor == pytest.approx(500 / 300)  # 1.6667
    assert stats.expectancy == Decimal(40)  # 200 / 5
    assert stats.expectancy_pct == pytest.approx(0.004)  # (0.03 - 0.01 + 0.02 + 0 - 0.02) / 5
    assert stats.avg_win == Decimal(250) and stats.avg_loss == Decimal(-150)
    assert stats.avg_win_pct == pytest.approx(0.025) and stats.avg_loss_pct == pytest.approx(-0.015)
    assert stats.largest_win == Decimal(300) and stats.largest_loss == Decimal(-200)
    assert stats.largest_win_pct == pytest.approx(0.03) and stats.largest_loss_pct == pytest.approx(-0.02)
    assert stats.payoff_ratio == pytest.approx(250 / 150)
    assert stats.avg_holding_hours == pytest.approx(16.5)  # (4 + 24 + 48 + 0.5 + 6) / 5
    assert stats.median_holding_hours == pytest.approx(6.0)
    assert stats.max_holding_hours == pytest.approx(48.0)
    # open at least one trade: Mon 4 h + Tue 10:30 -> Thu 10:30 48 h (holds the AAPL trade
    # inside it) + Thu 0.5 h + Fri 6 h = 58.5 h of 102.5 h
    assert stats.exposure == pytest.approx(58.5 / 102.5)
    assert stats.max_concurrent_trades == 2


def test_breakdowns_hours_and_weekdays_by_hand() -> None:
    report = compute_performance(WEEK, TRADES)
    strategies = {g.key: g for g in report.by_strategy}
    # ties on pnl are ordered by name: mean_reversion before momentum
    assert [g.key for g in report.by_strategy] == ["mean_reversion", "momentum", "breakout"]
    assert strategies["momentum"].pnl == Decimal(200)
    assert strategies["momentum"].profit_factor == pytest.approx(3.0)  # 300 / 100
    assert strategies["momentum"].win_rate == pytest.approx(0.5)
    assert strategies["momentum"].avg_return == pytest.approx(0.01)  # (0.03 - 0.01) / 2
    assert strategies["mean_reversion"].profit_factor is None  # no loss: infinite
    assert (strategies["mean_reversion"].winning, strategies["mean_reversion"].losing) == (1, 0)
    assert strategies["breakout"].profit_factor == 0.0 and strategies["breakout"].win_rate == 0.0
    assert [(g.key, g.pnl) for g in report.by_symbol] == [
        ("AAPL", Decimal(200)), ("MSFT", Decimal(200)), ("SPY", Decimal(-200))]
    # New York hour of entry: 10 -> +300 and +200; 15 -> 0; 11 -> -100; 9 (09:45) -> -200
    assert [(b.key, b.pnl, b.trades) for b in report.best_hours] == [
        (10, Decimal(500), 2), (15, Decimal(0), 1), (11, Decimal(-100), 1), (9, Decimal(-200), 1)]
    assert report.best_hours[0].win_rate == 1.0
    # Monday +300; Tuesday -100 + 200; Thursday 0; Friday -200
    assert [(b.key, b.pnl) for b in report.best_weekdays] == [
        ("Monday", Decimal(300)), ("Tuesday", Decimal(100)), ("Thursday", Decimal(0)), ("Friday", Decimal(-200))]
    data = strict_json(report)
    assert data["best_hours"][0] == {"key": 10, "trades": 2, "winning": 2, "win_rate": 1.0, "pnl": "500.00"}
    assert data["trades"]["profit_factor"] == 1.6667


def test_streaks_follow_exit_order_and_breakeven_breaks_them() -> None:
    pnls = [50, 60, -10, -20, -30, 0, -5, 70]  # given out of order below; sorted by exit time
    trades = [
        dict(symbol="X", qty=1, entry_at=et(2024, 3, 4, 10), exit_at=et(2024, 3, 4, 10) + timedelta(minutes=i + 1),
             entry_price=100, exit_price=100, pnl=p)
        for i, p in enumerate(pnls)
    ]
    stats = compute_performance(WEEK, list(reversed(trades))).trades
    assert stats.max_consecutive_wins == 2  # 50, 60
    assert stats.max_consecutive_losses == 3  # -10, -20, -30 (the 0 ends the run before -5)


def test_accepts_ledger_trades_and_journal_rows() -> None:
    ledger_trade = ClosedTrade(
        symbol="AAPL", strategy="momentum", side="long", qty=Decimal(10), entry_at=et(2024, 3, 4, 10),
        exit_at=et(2024, 3, 4, 11), entry_price=Decimal(100), exit_price=Decimal(105), pnl=Decimal(50),
        return_pct=Decimal("0.05"), exit_reason="take_profit", holding_seconds=3600.0)
    # a journal row: text money, ISO times, no side, no return_pct (-> pnl / entry value), no strategy
    journal_row = {"symbol": "MSFT", "strategy": None, "qty": "4", "entry_at": "2024-03-05T15:00:00+00:00",
                   "exit_at": "2024-03-05T16:00:00+00:00", "entry_price": "250", "exit_price": "245",
                   "pnl": "-20", "exit_reason": "stop_loss"}
    report = compute_performance(WEEK, [ledger_trade, journal_row])
    assert report.trades.total == 2
    assert report.trades.avg_loss_pct == pytest.approx(-0.02)  # -20 / (4 x 250)
    assert {g.key for g in report.by_strategy} == {"momentum", "unknown"}


# -- edge cases ----------------------------------------------------------------------------------


def test_no_trades() -> None:
    report = compute_performance(WEEK, [])
    stats = report.trades
    assert (stats.total, stats.winning, stats.losing) == (0, 0, 0)
    assert stats.win_rate is None and stats.profit_factor is None and stats.expectancy is None
    assert stats.largest_win is None and stats.avg_holding_hours is None and stats.exposure == 0.0
    assert "no closed trades" in report.warnings
    assert report.by_strategy == () and report.best_hours == ()
    strict_json(report)


def test_no_losing_trades_profit_factor_is_none_with_a_note() -> None:
    report = compute_performance(WEEK, [TRADES[0], TRADES[2]])
    assert report.trades.profit_factor is None
    assert report.trades.win_rate == 1.0 and report.trades.avg_loss is None
    assert "profit factor undefined: no losing trades (infinite)" in report.warnings
    assert strict_json(report)["trades"]["profit_factor"] is None


def test_all_losing_trades() -> None:
    report = compute_performance(WEEK, [TRADES[1], TRADES[4]])
    stats = report.trades
    assert stats.profit_factor == 0.0 and stats.win_rate == 0.0
    assert stats.avg_win is None and stats.payoff_ratio is None
    assert stats.avg_loss == Decimal(-150) and stats.largest_loss == Decimal(-200)
    assert stats.max_consecutive_losses == 2
    strict_json(report)


def test_only_breakeven_trades() -> None:
    report = compute_performance(WEEK, [TRADES[3]])
    assert report.trades.profit_factor is None and report.trades.breakeven == 1
    assert "profit factor undefined: only breakeven trades" in report.warnings


def test_flat_curve_has_no_sharpe_and_no_nan() -> None:
    report = compute_performance(daily([50_000] * 40), [])
    assert report.returns_count == 39
    assert report.annual_volatility == 0.0
    assert report.sharpe is None and report.sortino is None and report.calmar is None
    assert report.max_drawdown_pct == 0.0 and report.max_drawdown_amount == 0
    assert report.recovery_factor is None and report.max_drawdown_peak_at is None
    assert report.var_95 == 0.0 and report.annual_return == 0.0
    assert "zero volatility: Sharpe and Sortino undefined" in report.warnings
    assert SMALL_SAMPLE_WARNING not in report.warnings  # 39 returns
    strict_json(report)


def test_rising_curve_without_a_losing_period_has_no_sortino() -> None:
    report = compute_performance(daily([100, 101, 103, 104]), [])
    assert report.sharpe is not None and report.sortino is None
    assert "no losing periods: Sortino undefined" in report.warnings


def test_single_point_curve() -> None:
    report = compute_performance([(datetime(2024, 1, 2, 21, tzinfo=UTC), Decimal("100000"))], TRADES[:1])
    assert report.points == 1 and report.returns_count == 0
    assert report.sharpe is None and report.sortino is None and report.annual_volatility is None
    assert report.annual_return is None and report.var_95 is None and report.expected_shortfall_95 is None
    assert report.max_drawdown_pct == 0.0 and report.monthly_returns == ()
    assert report.trades.exposure is None  # no span to be exposed in
    assert "equity curve has a single point: no returns to measure" in report.warnings
    assert SMALL_SAMPLE_WARNING in report.warnings
    assert strict_json(report)["net_profit"] == "0.00"


def test_same_instant_keeps_the_later_point() -> None:
    at = datetime(2024, 1, 2, 21, tzinfo=UTC)
    report = compute_performance([(at, 100), (at, 105), (at + timedelta(days=1), 105)], [])
    assert report.points == 2 and report.start_equity == Decimal(105)


@pytest.mark.parametrize(
    ("curve", "message"),
    [
        ([], "equity curve is empty"),
        ([(datetime(2024, 1, 2), 100)], "timezone-aware"),
        ([(datetime(2024, 1, 3, tzinfo=UTC), 100), (datetime(2024, 1, 2, tzinfo=UTC), 101)], "point 1"),
        ([(datetime(2024, 1, 2, tzinfo=UTC), 0)], "must be positive"),
        ([(datetime(2024, 1, 2, tzinfo=UTC), float("nan"))], "must be finite"),
        ([(datetime(2024, 1, 2, tzinfo=UTC), "abc")], "must be a number"),
        ([(datetime(2024, 1, 2, tzinfo=UTC),)], "(time, equity) pair"),
    ],
)
def test_bad_curve_is_one_clear_error(curve: list, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compute_performance(curve, [])


def test_bad_trades_are_one_clear_error() -> None:
    missing = {k: v for k, v in TRADES[0].items() if k != "pnl"}
    with pytest.raises(ValueError, match=r"trade 0 \(AAPL\): pnl is missing"):
        compute_performance(WEEK, [missing])
    backwards = dict(TRADES[0], exit_at=et(2024, 3, 4, 9))
    with pytest.raises(ValueError, match="before entry_at"):
        compute_performance(WEEK, [backwards])
    with pytest.raises(ValueError, match="periods_per_year"):
        compute_performance(WEEK, [], periods_per_year=0)


def test_periods_per_year_inferred_from_spacing() -> None:
    minutes = [
        (et(2024, 3, day, 9, 30) + timedelta(minutes=m), 100 + m * 0.01) for day in (4, 5) for m in range(390)
    ]
    assert compute_performance(minutes, []).periods_per_year == pytest.approx(252 * 390)
    weekly = [(datetime(2024, 1, 5, 21, tzinfo=UTC) + timedelta(weeks=i), 100 + i) for i in range(10)]
    assert compute_performance(weekly, []).periods_per_year == 52
    # a daily curve over weekends and holidays is still daily
    assert compute_performance(daily([100, 101, 102, 103]), []).periods_per_year == 252


def test_benchmark_beta_and_correlation_by_hand() -> None:
    # benchmark 100 -> 110 -> 99 (+10 %, -10 %); strategy exactly twice that: +20 %, -20 %
    bench = [(datetime(2024, 1, 2, 20, tzinfo=UTC) + timedelta(days=i), v) for i, v in enumerate([100, 110, 99])]
    report = compute_performance(daily([1000, 1200, 960]), [], benchmark=bench)
    assert report.benchmark is not None
    assert report.benchmark.aligned_points == 3  # as-of: each 21:00 point takes that day's 20:00 value
    assert report.benchmark.beta == pytest.approx(2.0)
    assert report.benchmark.correlation == pytest.approx(1.0)
    assert report.benchmark.total_return == pytest.approx(-0.01)  # 99 / 100 - 1
    assert report.benchmark.excess_return == pytest.approx(-0.04 - -0.01)  # 960/1000 - 1 minus that
    assert report.benchmark.max_drawdown_pct == pytest.approx(0.10)
    strict_json(report)


def test_benchmark_that_does_not_overlap_is_skipped_with_a_warning() -> None:
    later = [(datetime(2030, 1, 2, tzinfo=UTC), 100), (datetime(2030, 1, 3, tzinfo=UTC), 101)]
    report = compute_performance(daily([100, 101, 102]), [], benchmark=later)
    assert report.benchmark is None
    assert any("benchmark" in w for w in report.warnings)


# -- real data -----------------------------------------------------------------------------------


def test_sharpe_and_drawdown_match_pandas_on_real_spy_closes() -> None:
    frame = pd.read_csv(SHARED_DATA / "daily" / "SPY-1d-1993-01-29-2026-08-07.csv")
    closes = frame["close"].astype(float)
    moments = [
        datetime.fromisoformat(d).replace(hour=16, tzinfo=EXCHANGE_TZ) for d in frame["timestamp"]
    ]
    report = compute_performance(list(zip(moments, closes.tolist())), [])

    returns = closes.pct_change().dropna()
    expected_sharpe = returns.mean() / returns.std() * np.sqrt(252)
    drawdown = closes / closes.cummax() - 1
    assert report.periods_per_year == 252  # inferred: daily
    assert report.returns_count == len(returns)
    assert report.sharpe == pytest.approx(expected_sharpe, rel=1e-9)
    assert report.annual_volatility == pytest.approx(returns.std() * np.sqrt(252), rel=1e-9)
    assert report.max_drawdown_pct == pytest.approx(-drawdown.min(), rel=1e-9)
    trough = int(drawdown.to_numpy().argmin())
    assert report.max_drawdown_trough_at == moments[trough].astimezone(UTC)
    assert report.var_95 == pytest.approx(returns.quantile(0.05), rel=1e-9)
    downside = np.sqrt((np.minimum(returns, 0) ** 2).mean())
    assert report.sortino == pytest.approx(returns.mean() / downside * np.sqrt(252), rel=1e-9)
    # SPY's worst close-to-close decline is 2007-10 -> 2009-03 (about -56 %), recovered in 2013
    assert 0.5 < report.max_drawdown_pct < 0.6
    assert report.max_drawdown_trough_at.year == 2009
    assert report.max_drawdown_recovered_at is not None and report.max_drawdown_recovered_at.year == 2013
    monthly = closes.groupby(pd.to_datetime(frame["timestamp"]).dt.to_period("M")).last()
    expected_march_2020 = monthly[pd.Period("2020-03")] / monthly[pd.Period("2020-02")] - 1
    march_2020 = next(row for row in report.monthly_returns if row.year == 2020).months[2]
    assert march_2020 == pytest.approx(expected_march_2020, rel=1e-9)
    assert SMALL_SAMPLE_WARNING not in report.warnings
    strict_json(report)
