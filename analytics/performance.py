"""Performance analytics: what an equity curve and its closed trades say about a strategy.

:func:`compute_performance` is a pure function over explicit inputs (an equity curve, the
closed trades, optionally a benchmark curve) and returns a :class:`PerformanceReport`; the
backtester, ``python main.py report`` and the HTML report all use it, so a paper run and a
backtest are measured by the same arithmetic.

Conventions (the numbers a user reads depend on them):

* Every rate, return and ``*_pct`` value is a **fraction**: ``0.05`` is 5 %. Drawdowns are
  positive fractions (``max_drawdown_pct = 0.10`` is a 10 % fall from the peak).
* Money (equity, P&L, drawdown in dollars) is ``Decimal``; :meth:`PerformanceReport.to_dict`
  writes it as a string rounded to cents.
* Period returns are simple returns between consecutive curve points. ``periods_per_year``
  annualises them (252 for a daily curve; inferred from the spacing when not given).
* Sharpe: mean excess period return over its sample standard deviation (ddof=1), times
  sqrt(periods_per_year). The risk-free rate is annual and compounded down to one period.
* Sortino: the same numerator over the downside deviation with target 0, computed over ALL
  periods (``sqrt(mean(min(r, 0)^2))``, N in the denominator, positive periods count as 0).
* Annual return is the CAGR over the curve's actual calendar span (365.25-day years);
  annual volatility is the period standard deviation times sqrt(periods_per_year);
  Calmar is annual return over maximum drawdown.
* VaR 95 is the historical 5 % quantile of period returns (linear interpolation, as numpy
  and pandas compute it), a return: ``-0.02`` means a 2 % loss in one period at worst on
  19 periods out of 20. Expected shortfall 95 is the mean of the returns at or below it.
* Maximum drawdown in % and in $ are each the largest of their kind (they may come from
  different declines). Durations are in days: the longest underwater period runs from a
  peak to the first point back at or above it (or to the end of the curve, flagged as
  unrecovered); time to recovery runs from the deepest trough back to its peak's level.
* Trades: a win has pnl > 0, a loss pnl < 0, breakeven pnl == 0 (counted separately, but in
  the total). Win rate is wins over all trades. Profit factor is gross profit over gross
  loss; it is None (with a warning) when there are no losing trades or no trades.
* Hours, weekdays and months are America/New_York (the exchange's clock).

A ratio that cannot be computed (zero volatility, no returns, no drawdown) is None, never
NaN or infinity: ``json.dumps(report.to_dict(), allow_nan=False)`` always succeeds.

This module is the face: :func:`compute_performance` and the benchmark comparison. The parts
live beside it, and their public names are re-exported here for the importers:
:mod:`analytics.performance_inputs` (normalised inputs, lenient journal reading),
:mod:`analytics.performance_report` (the report's dataclasses and JSON form),
:mod:`analytics.curve_metrics` (returns and curve metrics), :mod:`analytics.trade_stats`
(trade statistics) and :mod:`analytics.trade_groups` (by strategy, symbol, hour, weekday).
"""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal
from typing import Any, Iterable

import numpy as np
import pandas as pd

from analytics import curve_metrics
from analytics.curve_metrics import (
    DAYS_PER_YEAR,
    MONTH_NAMES,
    SECONDS_PER_DAY,
    TRADING_DAYS_PER_YEAR,
    drawdown_series,
    infer_periods_per_year,
    monthly_returns,
    period_returns,
)
from analytics.performance_inputs import (
    MAX_SANE_EQUITY,
    MAX_SANE_PRICE,
    UNKNOWN_STRATEGY,
    EquityPoint,
    SkippedRow,
    TradeRecord,
    normalize_curve,
    normalize_trades,
    usable_curve,
    usable_trades,
)
from analytics.performance_report import (
    BenchmarkStats,
    BucketStats,
    GroupStats,
    MonthlyReturns,
    PerformanceReport,
    TradeStats,
)
from analytics.trade_groups import WEEKDAY_NAMES, best_hours, best_weekdays, breakdown
from analytics.trade_stats import trade_stats

__all__ = [
    "DAYS_PER_YEAR", "MAX_SANE_EQUITY", "MAX_SANE_PRICE", "MIN_RELIABLE_RETURNS", "MONTH_NAMES",
    "SECONDS_PER_DAY", "SMALL_SAMPLE_WARNING", "TRADING_DAYS_PER_YEAR", "UNKNOWN_STRATEGY", "WEEKDAY_NAMES",
    "BenchmarkStats", "BucketStats", "EquityPoint", "GroupStats", "MonthlyReturns", "PerformanceReport",
    "SkippedRow", "TradeRecord", "TradeStats", "best_hours", "best_weekdays", "breakdown", "compute_performance",
    "drawdown_series", "infer_periods_per_year", "monthly_returns", "normalize_curve", "normalize_trades",
    "period_returns", "trade_stats", "usable_curve", "usable_trades",
]

MIN_RELIABLE_RETURNS = 30
SMALL_SAMPLE_WARNING = f"fewer than {MIN_RELIABLE_RETURNS} returns: ratios unreliable"

_EPSILON = 1e-12
_ZERO = Decimal(0)


# -- benchmark ---------------------------------------------------------------------------------


def _benchmark(
    times: list[datetime], equity: np.ndarray, benchmark: list[EquityPoint], ppy: float, rf_period: float
) -> tuple[BenchmarkStats | None, list[str]]:
    ours = pd.DataFrame({"at": curve_metrics.epoch_index(times), "equity": equity})
    theirs = pd.DataFrame(
        {"at": curve_metrics.epoch_index([t for t, _ in benchmark]), "bench": [float(v) for _, v in benchmark]}
    )
    aligned = pd.merge_asof(ours, theirs, on="at", direction="backward").dropna()
    if len(aligned) < 2:
        return None, ["benchmark does not overlap the equity curve: benchmark metrics skipped"]
    strat = aligned["equity"].to_numpy(dtype=float)
    bench = aligned["bench"].to_numpy(dtype=float)
    strat_returns, bench_returns = period_returns(strat), period_returns(bench)
    beta = correlation = None
    if len(bench_returns) >= 2:
        bench_var = float(np.var(bench_returns, ddof=1))
        strat_var = float(np.var(strat_returns, ddof=1))
        if bench_var > _EPSILON**2:
            beta = float(np.cov(strat_returns, bench_returns, ddof=1)[0, 1]) / bench_var
            if strat_var > _EPSILON**2:
                correlation = float(np.corrcoef(strat_returns, bench_returns)[0, 1])
    first, last = aligned["at"].iloc[0], aligned["at"].iloc[-1]
    span = (last - first).total_seconds()
    bench_total = bench[-1] / bench[0] - 1.0
    return (
        BenchmarkStats(
            total_return=bench_total,
            annual_return=curve_metrics.cagr(bench[-1] / bench[0], span),
            annual_volatility=curve_metrics.volatility(bench_returns, ppy),
            sharpe=curve_metrics.sharpe(bench_returns, ppy, rf_period),
            max_drawdown_pct=0.0 - float(np.min(drawdown_series(bench))),
            beta=beta,
            correlation=correlation,
            excess_return=(strat[-1] / strat[0] - 1.0) - bench_total,
            aligned_points=len(aligned),
        ),
        [],
    )


# -- entry point -------------------------------------------------------------------------------


def compute_performance(
    equity_curve: Iterable[Any],
    trades: Iterable[Any] = (),
    *,
    benchmark: Iterable[Any] | None = None,
    periods_per_year: float | None = None,
    risk_free_rate: float = 0.0,
) -> PerformanceReport:
    """Every metric of a run, from its equity curve and closed trades.

    ``equity_curve``: ``(aware datetime, equity)`` pairs in time order (at least one).
    ``trades``: closed trades (see :func:`normalize_trades`). ``benchmark``: optional curve of
    the benchmark's price or equity, aligned as-of onto the equity curve's instants.
    ``periods_per_year``: how many curve periods make a year (inferred when None).
    ``risk_free_rate``: annual, as a fraction. Raises ``ValueError`` on malformed input.
    """
    curve = normalize_curve(equity_curve)
    records = normalize_trades(trades)
    if periods_per_year is not None and not (math.isfinite(periods_per_year) and periods_per_year > 0):
        raise ValueError(f"periods_per_year must be a positive number, got {periods_per_year!r}")
    if not math.isfinite(risk_free_rate) or risk_free_rate <= -1.0:
        raise ValueError(f"risk_free_rate must be a finite annual fraction above -1, got {risk_free_rate!r}")

    times = [t for t, _ in curve]
    exact = [v for _, v in curve]
    equity = np.array([float(v) for v in exact], dtype=float)
    ppy = float(periods_per_year) if periods_per_year is not None else infer_periods_per_year(times)
    rf_period = (1.0 + risk_free_rate) ** (1.0 / ppy) - 1.0
    returns = period_returns(equity)
    span_seconds = (times[-1] - times[0]).total_seconds()

    warnings: list[str] = []
    if len(curve) == 1:
        warnings.append("equity curve has a single point: no returns to measure")
    if len(returns) < MIN_RELIABLE_RETURNS:
        warnings.append(SMALL_SAMPLE_WARNING)

    volatility = curve_metrics.volatility(returns, ppy)
    sharpe = curve_metrics.sharpe(returns, ppy, rf_period)
    sortino = curve_metrics.sortino(returns, ppy, rf_period)
    if len(returns) >= 2 and sharpe is None:
        warnings.append("zero volatility: Sharpe and Sortino undefined")
    elif len(returns) >= 2 and sortino is None:
        warnings.append("no losing periods: Sortino undefined")

    total_growth = equity[-1] / equity[0]
    annual = curve_metrics.cagr(total_growth, span_seconds)
    if annual is None and span_seconds > 0:
        warnings.append("annual return too large to express: the curve's span is too short")

    dd = curve_metrics.max_drawdown(times, equity, exact)
    if dd.recovered_at is None and dd.pct > 0:
        warnings.append("maximum drawdown not recovered by the end of the curve")
    calmar = annual / dd.pct if annual is not None and dd.pct > 0 else None
    net_profit = exact[-1] - exact[0]
    recovery = float(net_profit / dd.amount) if dd.amount > _ZERO else None
    var, shortfall = curve_metrics.var_es(returns)

    stats = trade_stats(records, times[0], times[-1])
    if stats.total == 0:
        warnings.append("no closed trades")
    elif stats.losing == 0 and stats.winning > 0:
        warnings.append("profit factor undefined: no losing trades (infinite)")
    elif stats.losing == 0:
        warnings.append("profit factor undefined: only breakeven trades")

    bench_stats: BenchmarkStats | None = None
    if benchmark is not None:
        bench_curve = normalize_curve(benchmark, name="benchmark curve")
        bench_stats, bench_warnings = _benchmark(times, equity, bench_curve, ppy, rf_period)
        warnings.extend(bench_warnings)

    return PerformanceReport(
        start=times[0],
        end=times[-1],
        points=len(curve),
        returns_count=len(returns),
        periods_per_year=ppy,
        risk_free_rate=float(risk_free_rate),
        start_equity=exact[0],
        end_equity=exact[-1],
        net_profit=net_profit,
        total_return=float(total_growth - 1.0),
        annual_return=annual,
        annual_volatility=volatility,
        sharpe=sharpe,
        sortino=sortino,
        calmar=calmar,
        var_95=var,
        expected_shortfall_95=shortfall,
        best_period_return=float(np.max(returns)) if len(returns) else None,
        worst_period_return=float(np.min(returns)) if len(returns) else None,
        max_drawdown_pct=dd.pct,
        max_drawdown_amount=dd.amount,
        max_drawdown_peak_at=dd.peak_at,
        max_drawdown_trough_at=dd.trough_at,
        max_drawdown_recovered_at=dd.recovered_at,
        time_to_recovery_days=dd.time_to_recovery_days,
        max_drawdown_duration_days=dd.longest_days,
        longest_drawdown_recovered=dd.longest_recovered,
        current_drawdown_pct=dd.current_pct,
        recovery_factor=recovery,
        trades=stats,
        by_strategy=breakdown(records, "strategy"),
        by_symbol=breakdown(records, "symbol"),
        best_hours=best_hours(records),
        best_weekdays=best_weekdays(records),
        monthly_returns=monthly_returns(times, equity),
        benchmark=bench_stats,
        warnings=tuple(warnings),
    )
