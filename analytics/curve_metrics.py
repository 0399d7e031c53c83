"""Returns and curve metrics of an equity curve: period returns and their annualisation,
Sharpe, Sortino, volatility, CAGR, VaR and expected shortfall, drawdowns (depth, amount,
duration, recovery) and monthly returns. Pure arithmetic over numpy arrays; the conventions
are in :mod:`analytics.performance`'s docstring."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Sequence

import numpy as np
import pandas as pd

from analytics.performance_report import MonthlyReturns
from core.clock import EXCHANGE_TZ

TRADING_DAYS_PER_YEAR = 252
DAYS_PER_YEAR = 365.25
SECONDS_PER_DAY = 86_400.0
MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

_EPSILON = 1e-12
_ZERO = Decimal(0)
_MAX_EXPONENT = 700.0  # math.exp overflows a little above 709


def infer_periods_per_year(times: Sequence[datetime]) -> float:
    """Periods per year from a curve's spacing.

    Median spacing of 25 days or more: monthly (12); 5 days or more: weekly (52); 20 hours
    or more: daily (252); shorter: intraday, 252 times the mean number of points per ET
    calendar date (so a curve sampled each regular-hours minute gives 252 x 390).
    """
    if len(times) < 2:
        return float(TRADING_DAYS_PER_YEAR)
    seconds = np.diff(np.array([t.timestamp() for t in times], dtype=float))
    median = float(np.median(seconds))
    if median >= 25 * SECONDS_PER_DAY:
        return 12.0
    if median >= 5 * SECONDS_PER_DAY:
        return 52.0
    if median >= 20 * 3600:
        return float(TRADING_DAYS_PER_YEAR)
    dates = {t.astimezone(EXCHANGE_TZ).date() for t in times}
    return float(TRADING_DAYS_PER_YEAR) * len(times) / len(dates)


def period_returns(equity: np.ndarray) -> np.ndarray:
    """Simple returns between consecutive equity values (one fewer than the values)."""
    if len(equity) < 2:
        return np.zeros(0, dtype=float)
    return equity[1:] / equity[:-1] - 1.0


def drawdown_series(equity: np.ndarray) -> np.ndarray:
    """Fall from the running peak at each point, as a fraction <= 0 (0 at a new high)."""
    if len(equity) == 0:
        return np.zeros(0, dtype=float)
    peak = np.maximum.accumulate(equity)
    return equity / peak - 1.0


def sharpe(returns: np.ndarray, ppy: float, rf_period: float) -> float | None:
    if len(returns) < 2:
        return None
    deviation = float(np.std(returns, ddof=1))
    if deviation <= _EPSILON:
        return None
    return float(np.mean(returns - rf_period)) / deviation * math.sqrt(ppy)


def sortino(returns: np.ndarray, ppy: float, rf_period: float) -> float | None:
    if len(returns) < 2:
        return None
    downside = math.sqrt(float(np.mean(np.minimum(returns, 0.0) ** 2)))
    if downside <= _EPSILON:
        return None
    return float(np.mean(returns - rf_period)) / downside * math.sqrt(ppy)


def volatility(returns: np.ndarray, ppy: float) -> float | None:
    if len(returns) < 2:
        return None
    return float(np.std(returns, ddof=1)) * math.sqrt(ppy)


def cagr(total_growth: float, seconds: float) -> float | None:
    """Compound annual growth over ``seconds``; None when the span is empty or it overflows."""
    if seconds <= 0 or total_growth <= 0:
        return None
    exponent = math.log(total_growth) / (seconds / (DAYS_PER_YEAR * SECONDS_PER_DAY))
    if exponent > _MAX_EXPONENT:
        return None
    return math.expm1(exponent)


def var_es(returns: np.ndarray) -> tuple[float | None, float | None]:
    if len(returns) == 0:
        return None, None
    var = float(np.quantile(returns, 0.05))
    tail = returns[returns <= var]
    return var, float(np.mean(tail)) if len(tail) else var


@dataclass(frozen=True)
class Drawdown:
    pct: float
    amount: Decimal
    peak_at: datetime | None
    trough_at: datetime | None
    recovered_at: datetime | None
    time_to_recovery_days: float | None
    longest_days: float
    longest_recovered: bool
    current_pct: float


def max_drawdown(times: list[datetime], equity: np.ndarray, exact: list[Decimal]) -> Drawdown:
    n = len(equity)
    peak = np.maximum.accumulate(equity)
    dd = equity / peak - 1.0
    trough = int(np.argmin(dd))
    pct = 0.0 - float(dd[trough])
    if pct <= 0.0:
        return Drawdown(0.0, _ZERO, None, None, None, None, 0.0, True, 0.0)

    level = peak[trough]
    # the deepest decline starts at the last point at its peak level before the trough
    peak_index = trough - int(np.argmax(equity[trough::-1] >= level))
    back = np.nonzero(equity[trough:] >= level)[0]
    recovered_index = trough + int(back[0]) if back.size else None
    time_to_recovery = (
        (times[recovered_index] - times[trough]).total_seconds() / SECONDS_PER_DAY
        if recovered_index is not None
        else None
    )

    # largest dollar decline, exact in Decimal
    gap_index = int(np.argmax(peak - equity))
    gap_level = peak[gap_index]
    gap_peak = gap_index - int(np.argmax(equity[gap_index::-1] >= gap_level))
    amount = exact[gap_peak] - exact[gap_index]

    # underwater periods: from the last point at the peak to the first point back at it
    seconds = np.array([t.timestamp() for t in times], dtype=float)
    underwater = np.concatenate(([0], (equity < peak).astype(np.int8), [0]))
    edges = np.diff(underwater)
    starts = np.nonzero(edges == 1)[0]
    ends = np.nonzero(edges == -1)[0]  # index of the recovery point, == n when unrecovered
    start_seconds = seconds[starts - 1]
    end_seconds = np.where(ends < n, seconds[np.minimum(ends, n - 1)], seconds[-1])
    durations = end_seconds - start_seconds
    longest = int(np.argmax(durations))
    return Drawdown(
        pct=pct,
        amount=amount,
        peak_at=times[peak_index],
        trough_at=times[trough],
        recovered_at=times[recovered_index] if recovered_index is not None else None,
        time_to_recovery_days=time_to_recovery,
        longest_days=float(durations[longest]) / SECONDS_PER_DAY,
        longest_recovered=bool(ends[longest] < n),
        current_pct=0.0 - float(dd[-1]),
    )


def epoch_index(times: Sequence[datetime]) -> pd.DatetimeIndex:
    micros = np.array([round(t.timestamp() * 1_000_000) for t in times], dtype=np.int64)
    return pd.DatetimeIndex(pd.to_datetime(micros, unit="us", utc=True))


def monthly_returns(times: Sequence[datetime], equity: np.ndarray) -> tuple[MonthlyReturns, ...]:
    """Year x month returns, compounded from the curve on America/New_York months.

    Each month's return is its last equity over the previous month's last equity (the first
    month starts from the curve's first point). A year's total is the product of its months.
    """
    if len(equity) < 2:
        return ()
    local = epoch_index(times).tz_convert(EXCHANGE_TZ)
    keys = np.asarray(local.year, dtype=np.int64) * 100 + np.asarray(local.month, dtype=np.int64)
    last_rows = np.nonzero(np.concatenate((keys[1:] != keys[:-1], [True])))[0]
    table: dict[int, list[float | None]] = {}
    previous = float(equity[0])
    for row in last_rows:
        year, month = divmod(int(keys[row]), 100)
        value = float(equity[row])
        table.setdefault(year, [None] * 12)[month - 1] = value / previous - 1.0
        previous = value
    rows = []
    for year in sorted(table):
        months = table[year]
        growth = 1.0
        for value in months:
            if value is not None:
                growth *= 1.0 + value
        rows.append(MonthlyReturns(year=year, months=tuple(months), total=growth - 1.0))
    return tuple(rows)
