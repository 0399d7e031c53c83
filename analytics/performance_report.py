"""The report :func:`analytics.performance.compute_performance` returns: plain frozen
dataclasses (trade statistics, groups, buckets, monthly returns, the benchmark, the whole
report) and :meth:`PerformanceReport.to_dict`, which writes money as cent strings, times as
ISO-8601 and floats rounded, never NaN or infinity."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, is_dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Mapping

_CENT = Decimal("0.01")
_ZERO = Decimal(0)


@dataclass(frozen=True)
class TradeStats:
    """Counts, rates and sizes of the closed trades, plus how long and how much they held."""

    total: int
    winning: int
    losing: int
    breakeven: int
    win_rate: float | None
    profit_factor: float | None
    gross_profit: Decimal
    gross_loss: Decimal  # sum of losing trades' pnl (zero or negative)
    net_pnl: Decimal
    expectancy: Decimal | None  # mean pnl per trade, $
    expectancy_pct: float | None  # mean return per trade
    avg_win: Decimal | None
    avg_loss: Decimal | None  # negative
    avg_win_pct: float | None
    avg_loss_pct: float | None
    largest_win: Decimal | None
    largest_loss: Decimal | None  # negative
    largest_win_pct: float | None
    largest_loss_pct: float | None
    payoff_ratio: float | None  # avg win / |avg loss|
    max_consecutive_wins: int
    max_consecutive_losses: int
    avg_holding_hours: float | None
    median_holding_hours: float | None
    max_holding_hours: float | None
    exposure: float | None  # fraction of the curve's span with at least one trade open
    max_concurrent_trades: int


@dataclass(frozen=True)
class GroupStats:
    """Trades of one strategy or one symbol."""

    key: str
    trades: int
    winning: int
    losing: int
    win_rate: float | None
    pnl: Decimal
    profit_factor: float | None
    avg_return: float | None
    #: Mean MFE / MAE over the trades that have them (None when none has).
    avg_mfe: float | None = None
    avg_mae: float | None = None


@dataclass(frozen=True)
class BucketStats:
    """Trades entered in one ET hour (key 0-23) or on one ET weekday (key "Monday"...)."""

    key: int | str
    trades: int
    winning: int
    win_rate: float | None
    pnl: Decimal


@dataclass(frozen=True)
class MonthlyReturns:
    """One year of monthly returns compounded from the equity curve (None: no data that month)."""

    year: int
    months: tuple[float | None, ...]  # 12 entries, January first
    total: float | None


@dataclass(frozen=True)
class BenchmarkStats:
    """The benchmark over the same instants as the equity curve (as-of alignment)."""

    total_return: float
    annual_return: float | None
    annual_volatility: float | None
    sharpe: float | None
    max_drawdown_pct: float
    beta: float | None
    correlation: float | None
    excess_return: float  # strategy total return minus benchmark total return
    aligned_points: int


@dataclass(frozen=True)
class PerformanceReport:
    """Every metric of one run; see the module docstring for the conventions."""

    start: datetime
    end: datetime
    points: int
    returns_count: int
    periods_per_year: float
    risk_free_rate: float
    start_equity: Decimal
    end_equity: Decimal
    net_profit: Decimal
    total_return: float
    annual_return: float | None
    annual_volatility: float | None
    sharpe: float | None
    sortino: float | None
    calmar: float | None
    var_95: float | None
    expected_shortfall_95: float | None
    best_period_return: float | None
    worst_period_return: float | None
    max_drawdown_pct: float
    max_drawdown_amount: Decimal
    max_drawdown_peak_at: datetime | None
    max_drawdown_trough_at: datetime | None
    max_drawdown_recovered_at: datetime | None
    time_to_recovery_days: float | None
    max_drawdown_duration_days: float
    longest_drawdown_recovered: bool
    current_drawdown_pct: float
    recovery_factor: float | None
    trades: TradeStats
    by_strategy: tuple[GroupStats, ...]
    by_symbol: tuple[GroupStats, ...]
    best_hours: tuple[BucketStats, ...]
    best_weekdays: tuple[BucketStats, ...]
    monthly_returns: tuple[MonthlyReturns, ...]
    benchmark: BenchmarkStats | None
    warnings: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: money as cent strings, times ISO-8601 UTC, floats rounded, no NaN/inf."""
        result = _jsonable(self, "")
        assert isinstance(result, dict)
        return result


_FOUR_DIGITS = {
    "sharpe", "sortino", "calmar", "profit_factor", "recovery_factor", "payoff_ratio", "beta",
    "correlation", "periods_per_year", "time_to_recovery_days", "max_drawdown_duration_days",
    "avg_holding_hours", "median_holding_hours", "max_holding_hours",
}


def _round(value: float, digits: int) -> float | None:
    if not math.isfinite(value):
        return None
    return round(value, digits) + 0.0  # + 0.0 turns -0.0 into 0.0


def _money(value: Decimal) -> str:
    cents = value.quantize(_CENT, rounding=ROUND_HALF_EVEN)
    return str(cents.copy_abs() if cents == _ZERO else cents)


def _jsonable(value: Any, name: str) -> Any:
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return _round(value, 4 if name in _FOUR_DIGITS else 6)
    if isinstance(value, Decimal):
        return _money(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name), f.name) for f in fields(value)}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, name) for item in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, name) for k, v in value.items()}
    raise TypeError(f"cannot serialise {type(value).__name__} in field {name!r}")
