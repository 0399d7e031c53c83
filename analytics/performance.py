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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, is_dataclass
from datetime import date, datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from core.clock import EXCHANGE_TZ
from analytics.excursions import mean_of
from broker.models import to_decimal
from market.market_data import MAX_SANE_PRICE as _MAX_BAR_PRICE

TRADING_DAYS_PER_YEAR = 252
DAYS_PER_YEAR = 365.25
SECONDS_PER_DAY = 86_400.0
MIN_RELIABLE_RETURNS = 30
SMALL_SAMPLE_WARNING = f"fewer than {MIN_RELIABLE_RETURNS} returns: ratios unreliable"
UNKNOWN_STRATEGY = "unknown"
WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

_EPSILON = 1e-12
_CENT = Decimal("0.01")
_ZERO = Decimal(0)
_MAX_EXPONENT = 700.0  # math.exp overflows a little above 709

EquityPoint = tuple[datetime, Decimal]


# -- inputs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TradeRecord:
    """One closed trade, normalised: Decimal money, aware UTC times, ``return_pct`` a fraction."""

    symbol: str
    strategy: str
    side: str
    qty: Decimal
    entry_at: datetime
    exit_at: datetime
    entry_price: Decimal
    exit_price: Decimal
    pnl: Decimal
    return_pct: Decimal
    exit_reason: str | None
    #: Maximum favourable / adverse excursion (fractions of the entry price), when known.
    mfe_pct: Decimal | None = None
    mae_pct: Decimal | None = None

    @property
    def holding_hours(self) -> float:
        """Time from entry to exit, in hours."""
        return (self.exit_at - self.entry_at).total_seconds() / 3600.0


_to_decimal = to_decimal  # one shared coercion (models.to_decimal)

def _to_utc(value: Any, what: str) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{what} is not an ISO-8601 time: {value!r}") from None
    if not isinstance(value, datetime):
        raise ValueError(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(timezone.utc)


def normalize_curve(equity_curve: Iterable[Any], *, name: str = "equity curve") -> list[EquityPoint]:
    """Validate a curve of ``(time, equity)`` pairs (or ``{"at", "equity"}`` mappings).

    Times must be timezone-aware and in order; equity positive and finite. Two points at the
    same instant keep the later one. Raises ``ValueError`` naming the offending point.
    """
    points: list[EquityPoint] = []
    for index, item in enumerate(equity_curve):
        if isinstance(item, Mapping):
            at_raw = item.get("at", item.get("timestamp"))
            value_raw = item.get("equity", item.get("value"))
        else:
            try:
                at_raw, value_raw = item
            except (TypeError, ValueError):
                raise ValueError(f"{name} point {index} must be a (time, equity) pair, got {item!r}") from None
        at = _to_utc(at_raw, f"{name} point {index} time")
        value = _to_decimal(value_raw, f"{name} point {index} value")
        if value <= _ZERO:
            raise ValueError(f"{name} point {index} value must be positive, got {value}")
        if points and at < points[-1][0]:
            raise ValueError(
                f"{name} point {index} ({at.isoformat()}) is earlier than the point before it "
                f"({points[-1][0].isoformat()}): the curve must be in time order"
            )
        if points and at == points[-1][0]:
            points[-1] = (at, value)
        else:
            points.append((at, value))
    if not points:
        raise ValueError(f"{name} is empty: at least one (time, equity) point is needed")
    return points


def _field(trade: Any, key: str) -> Any:
    if isinstance(trade, Mapping):
        return trade.get(key)
    return getattr(trade, key, None)


def normalize_trades(trades: Iterable[Any]) -> list[TradeRecord]:
    """Closed trades (objects such as ``trade_ledger.ClosedTrade`` or dicts) as records.

    Needs symbol, qty, entry_at, exit_at, entry_price, exit_price and pnl; strategy, side,
    return_pct and exit_reason are optional (a missing return is pnl over entry value).
    Strings are parsed (journal rows store Decimal as text and times as ISO-8601).
    The result is ordered by exit time.
    """
    records: list[TradeRecord] = []
    for index, trade in enumerate(trades):
        symbol = _field(trade, "symbol")
        if not isinstance(symbol, str) or not symbol.strip():
            raise ValueError(f"trade {index}: symbol is missing")
        label = f"trade {index} ({symbol})"
        for required in ("qty", "entry_at", "exit_at", "entry_price", "exit_price", "pnl"):
            if _field(trade, required) is None:
                raise ValueError(f"{label}: {required} is missing")
        qty = _to_decimal(_field(trade, "qty"), f"{label} qty")
        entry_price = _to_decimal(_field(trade, "entry_price"), f"{label} entry_price")
        exit_price = _to_decimal(_field(trade, "exit_price"), f"{label} exit_price")
        pnl = _to_decimal(_field(trade, "pnl"), f"{label} pnl")
        entry_at = _to_utc(_field(trade, "entry_at"), f"{label} entry_at")
        exit_at = _to_utc(_field(trade, "exit_at"), f"{label} exit_at")
        if exit_at < entry_at:
            raise ValueError(f"{label}: exit_at {exit_at.isoformat()} is before entry_at {entry_at.isoformat()}")
        raw_return = _field(trade, "return_pct")
        if raw_return is not None:
            return_pct = _to_decimal(raw_return, f"{label} return_pct")
        else:
            notional = abs(qty) * entry_price
            if notional == _ZERO:
                raise ValueError(f"{label}: return_pct is missing and qty x entry_price is zero")
            return_pct = pnl / notional
        strategy = _field(trade, "strategy")
        side = _field(trade, "side")
        reason = _field(trade, "exit_reason")
        mfe, mae = (_field(trade, "mfe_pct"), _field(trade, "mae_pct"))
        records.append(
            TradeRecord(
                symbol=symbol.strip(),
                strategy=str(strategy) if strategy else UNKNOWN_STRATEGY,
                side=str(side) if side else "unknown",
                qty=qty,
                entry_at=entry_at,
                exit_at=exit_at,
                entry_price=entry_price,
                exit_price=exit_price,
                pnl=pnl,
                return_pct=return_pct,
                exit_reason=str(reason) if reason else None,
                mfe_pct=None if mfe is None else _to_decimal(mfe, f"{label} mfe_pct"),
                mae_pct=None if mae is None else _to_decimal(mae, f"{label} mae_pct"),
            )
        )
    records.sort(key=lambda t: (t.exit_at, t.entry_at))
    return records


# -- lenient inputs: a journal that holds anything --------------------------------------------

#: Equity beyond this (more money than exists) is a broken reading, not a result.
MAX_SANE_EQUITY = Decimal("1e15")
#: A share price beyond this is a broken reading (see ``market_data.MAX_SANE_PRICE``).
MAX_SANE_PRICE = Decimal(str(_MAX_BAR_PRICE))


@dataclass(frozen=True)
class SkippedRow:
    """A journal row a report left out, and why (shown in the report, never a traceback)."""

    kind: str  # "equity" or "trade"
    row: str  # the row's id or position, as text
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "row": self.row, "reason": self.reason}


def usable_curve(rows: Iterable[Any]) -> tuple[list[EquityPoint], list[SkippedRow]]:
    """The points of ``rows`` a report can use, in time order, and the rows it skipped.

    ``rows``: ``(time, equity)`` pairs or mappings with ``at``/``equity`` (and ``id``), as
    text or parsed. A point is skipped when its time does not parse or has no zone, or its
    equity is not a finite positive number below :data:`MAX_SANE_EQUITY`. Never raises.
    """
    points: list[EquityPoint] = []
    skipped: list[SkippedRow] = []
    for index, item in enumerate(rows):
        label = str(item.get("id", index)) if isinstance(item, Mapping) else str(index)
        try:
            point = normalize_curve([item], name=f"equity row {label}")[0]
            if point[1] > MAX_SANE_EQUITY:
                raise ValueError(f"equity row {label} value {point[1]} is not a believable equity")
        except (ValueError, TypeError, ArithmeticError) as exc:
            skipped.append(SkippedRow("equity", label, str(exc).replace(" point 0", "", 1)))
            continue
        points.append(point)
    points.sort(key=lambda p: p[0])
    deduped: list[EquityPoint] = []
    for point in points:  # two points at one instant: the later row wins (as normalize_curve)
        if deduped and deduped[-1][0] == point[0]:
            deduped[-1] = point
        else:
            deduped.append(point)
    return deduped, skipped


def usable_trades(rows: Iterable[Any]) -> tuple[list[TradeRecord], list[SkippedRow]]:
    """The closed trades of ``rows`` a report can use, and the rows it skipped.

    Each row goes through :func:`normalize_trades` alone; on top of its checks, a trade with
    a zero quantity, a price that is not positive or absurd (above :data:`MAX_SANE_PRICE`),
    or an absurd P&L is skipped. Never raises.
    """
    records: list[TradeRecord] = []
    skipped: list[SkippedRow] = []
    for index, item in enumerate(rows):
        label = str(item.get("id", index)) if isinstance(item, Mapping) else str(index)
        try:
            record = normalize_trades([item])[0]
            problem = _trade_problem(record)
            if problem is not None:
                raise ValueError(f"trade {label} ({record.symbol}): {problem}")
        except (ValueError, TypeError, ArithmeticError, AttributeError) as exc:
            skipped.append(SkippedRow("trade", label, str(exc).replace("trade 0", f"trade {label}", 1)))
            continue
        records.append(record)
    records.sort(key=lambda t: (t.exit_at, t.entry_at))
    return records, skipped


def _trade_problem(trade: TradeRecord) -> str | None:
    if trade.qty == _ZERO:
        return "zero quantity"
    for name in ("entry_price", "exit_price"):
        price = getattr(trade, name)
        if price <= _ZERO or price > MAX_SANE_PRICE:
            return f"{name} {price} is not a usable price"
    if abs(trade.pnl) > MAX_SANE_EQUITY or abs(trade.return_pct) > MAX_SANE_EQUITY:
        return f"pnl {trade.pnl} is not believable"
    return None


# -- the report --------------------------------------------------------------------------------


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


# -- curve arithmetic --------------------------------------------------------------------------


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


def _sharpe(returns: np.ndarray, ppy: float, rf_period: float) -> float | None:
    if len(returns) < 2:
        return None
    deviation = float(np.std(returns, ddof=1))
    if deviation <= _EPSILON:
        return None
    return float(np.mean(returns - rf_period)) / deviation * math.sqrt(ppy)


def _sortino(returns: np.ndarray, ppy: float, rf_period: float) -> float | None:
    if len(returns) < 2:
        return None
    downside = math.sqrt(float(np.mean(np.minimum(returns, 0.0) ** 2)))
    if downside <= _EPSILON:
        return None
    return float(np.mean(returns - rf_period)) / downside * math.sqrt(ppy)


def _volatility(returns: np.ndarray, ppy: float) -> float | None:
    if len(returns) < 2:
        return None
    return float(np.std(returns, ddof=1)) * math.sqrt(ppy)


def _cagr(total_growth: float, seconds: float) -> float | None:
    """Compound annual growth over ``seconds``; None when the span is empty or it overflows."""
    if seconds <= 0 or total_growth <= 0:
        return None
    exponent = math.log(total_growth) / (seconds / (DAYS_PER_YEAR * SECONDS_PER_DAY))
    if exponent > _MAX_EXPONENT:
        return None
    return math.expm1(exponent)


def _var_es(returns: np.ndarray) -> tuple[float | None, float | None]:
    if len(returns) == 0:
        return None, None
    var = float(np.quantile(returns, 0.05))
    tail = returns[returns <= var]
    return var, float(np.mean(tail)) if len(tail) else var


@dataclass(frozen=True)
class _Drawdown:
    pct: float
    amount: Decimal
    peak_at: datetime | None
    trough_at: datetime | None
    recovered_at: datetime | None
    time_to_recovery_days: float | None
    longest_days: float
    longest_recovered: bool
    current_pct: float


def _drawdown(times: list[datetime], equity: np.ndarray, exact: list[Decimal]) -> _Drawdown:
    n = len(equity)
    peak = np.maximum.accumulate(equity)
    dd = equity / peak - 1.0
    trough = int(np.argmin(dd))
    pct = 0.0 - float(dd[trough])
    if pct <= 0.0:
        return _Drawdown(0.0, _ZERO, None, None, None, None, 0.0, True, 0.0)

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
    return _Drawdown(
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


def _epoch_index(times: Sequence[datetime]) -> pd.DatetimeIndex:
    micros = np.array([round(t.timestamp() * 1_000_000) for t in times], dtype=np.int64)
    return pd.DatetimeIndex(pd.to_datetime(micros, unit="us", utc=True))


def monthly_returns(times: Sequence[datetime], equity: np.ndarray) -> tuple[MonthlyReturns, ...]:
    """Year x month returns, compounded from the curve on America/New_York months.

    Each month's return is its last equity over the previous month's last equity (the first
    month starts from the curve's first point). A year's total is the product of its months.
    """
    if len(equity) < 2:
        return ()
    local = _epoch_index(times).tz_convert(EXCHANGE_TZ)
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


# -- trade arithmetic --------------------------------------------------------------------------


def _profit_factor(profit: Decimal, loss: Decimal, wins: int, losses: int) -> float | None:
    if losses == 0:
        return None
    return float(profit / -loss) if wins else 0.0


def _max_streak(trades: Sequence[TradeRecord], sign: int) -> int:
    best = current = 0
    for trade in trades:
        if (trade.pnl > _ZERO and sign > 0) or (trade.pnl < _ZERO and sign < 0):
            current += 1
            best = max(best, current)
        else:
            current = 0
    return best


def _exposure(trades: Sequence[TradeRecord], start: datetime, end: datetime) -> float | None:
    span = (end - start).total_seconds()
    if span <= 0:
        return None
    covered = 0.0
    run_start: datetime | None = None
    run_end: datetime | None = None
    for trade in sorted(trades, key=lambda t: t.entry_at):
        lo, hi = max(trade.entry_at, start), min(trade.exit_at, end)
        if hi <= lo:
            continue
        if run_end is None or lo > run_end:
            if run_start is not None and run_end is not None:
                covered += (run_end - run_start).total_seconds()
            run_start, run_end = lo, hi
        else:
            run_end = max(run_end, hi)
    if run_start is not None and run_end is not None:
        covered += (run_end - run_start).total_seconds()
    return covered / span


def _max_concurrent(trades: Sequence[TradeRecord]) -> int:
    events = [(t.entry_at, 1) for t in trades] + [(t.exit_at, -1) for t in trades]
    events.sort(key=lambda e: (e[0], e[1]))  # an exit at the same instant frees its slot first
    best = current = 0
    for _, step in events:
        current += step
        best = max(best, current)
    return best


def trade_stats(trades: Sequence[TradeRecord], start: datetime, end: datetime) -> TradeStats:
    """Trade counts and sizes; ``start``/``end`` bound the span used for exposure."""
    wins = [t for t in trades if t.pnl > _ZERO]
    losses = [t for t in trades if t.pnl < _ZERO]
    total = len(trades)
    gross_profit = sum((t.pnl for t in wins), _ZERO)
    gross_loss = sum((t.pnl for t in losses), _ZERO)
    hours = [t.holding_hours for t in trades]
    return TradeStats(
        total=total,
        winning=len(wins),
        losing=len(losses),
        breakeven=total - len(wins) - len(losses),
        win_rate=len(wins) / total if total else None,
        profit_factor=_profit_factor(gross_profit, gross_loss, len(wins), len(losses)),
        gross_profit=gross_profit,
        gross_loss=gross_loss,
        net_pnl=gross_profit + gross_loss,
        expectancy=(gross_profit + gross_loss) / total if total else None,
        expectancy_pct=float(np.mean([float(t.return_pct) for t in trades])) if total else None,
        avg_win=gross_profit / len(wins) if wins else None,
        avg_loss=gross_loss / len(losses) if losses else None,
        avg_win_pct=float(np.mean([float(t.return_pct) for t in wins])) if wins else None,
        avg_loss_pct=float(np.mean([float(t.return_pct) for t in losses])) if losses else None,
        largest_win=max(t.pnl for t in wins) if wins else None,
        largest_loss=min(t.pnl for t in losses) if losses else None,
        largest_win_pct=max(float(t.return_pct) for t in wins) if wins else None,
        largest_loss_pct=min(float(t.return_pct) for t in losses) if losses else None,
        payoff_ratio=(
            float((gross_profit / len(wins)) / (-gross_loss / len(losses))) if wins and losses else None
        ),
        max_consecutive_wins=_max_streak(trades, 1),
        max_consecutive_losses=_max_streak(trades, -1),
        avg_holding_hours=float(np.mean(hours)) if hours else None,
        median_holding_hours=float(np.median(hours)) if hours else None,
        max_holding_hours=max(hours) if hours else None,
        exposure=_exposure(trades, start, end),
        max_concurrent_trades=_max_concurrent(trades),
    )


def _group(key: str, trades: Sequence[TradeRecord]) -> GroupStats:
    wins = [t for t in trades if t.pnl > _ZERO]
    losses = [t for t in trades if t.pnl < _ZERO]
    profit = sum((t.pnl for t in wins), _ZERO)
    loss = sum((t.pnl for t in losses), _ZERO)
    return GroupStats(
        key=key,
        trades=len(trades),
        winning=len(wins),
        losing=len(losses),
        win_rate=len(wins) / len(trades) if trades else None,
        pnl=profit + loss,
        profit_factor=_profit_factor(profit, loss, len(wins), len(losses)),
        avg_return=float(np.mean([float(t.return_pct) for t in trades])) if trades else None,
        avg_mfe=mean_of([t.mfe_pct for t in trades]),
        avg_mae=mean_of([t.mae_pct for t in trades]),
    )


def breakdown(trades: Sequence[TradeRecord], by: str) -> tuple[GroupStats, ...]:
    """Per-``strategy`` or per-``symbol`` statistics, best pnl first."""
    if by not in ("strategy", "symbol"):
        raise ValueError(f"breakdown is by 'strategy' or 'symbol', got {by!r}")
    groups: dict[str, list[TradeRecord]] = {}
    for trade in trades:
        groups.setdefault(getattr(trade, by), []).append(trade)
    rows = [_group(key, members) for key, members in groups.items()]
    return tuple(sorted(rows, key=lambda g: (-g.pnl, g.key)))


def _buckets(trades: Sequence[TradeRecord], key_of: Any) -> tuple[BucketStats, ...]:
    groups: dict[Any, list[TradeRecord]] = {}
    for trade in trades:
        groups.setdefault(key_of(trade.entry_at.astimezone(EXCHANGE_TZ)), []).append(trade)
    rows = []
    for key, members in groups.items():
        winning = sum(1 for t in members if t.pnl > _ZERO)
        rows.append(
            BucketStats(
                key=key,
                trades=len(members),
                winning=winning,
                win_rate=winning / len(members),
                pnl=sum((t.pnl for t in members), _ZERO),
            )
        )
    order = {name: i for i, name in enumerate(WEEKDAY_NAMES)}
    return tuple(sorted(rows, key=lambda b: (-b.pnl, order.get(b.key, b.key) if isinstance(b.key, str) else b.key)))


def best_hours(trades: Sequence[TradeRecord]) -> tuple[BucketStats, ...]:
    """Trades grouped by the ET hour of entry, best pnl first."""
    return _buckets(trades, lambda local: local.hour)


def best_weekdays(trades: Sequence[TradeRecord]) -> tuple[BucketStats, ...]:
    """Trades grouped by the ET weekday of entry, best pnl first."""
    return _buckets(trades, lambda local: WEEKDAY_NAMES[local.weekday()])


# -- benchmark ---------------------------------------------------------------------------------


def _benchmark(
    times: list[datetime], equity: np.ndarray, benchmark: list[EquityPoint], ppy: float, rf_period: float
) -> tuple[BenchmarkStats | None, list[str]]:
    ours = pd.DataFrame({"at": _epoch_index(times), "equity": equity})
    theirs = pd.DataFrame(
        {"at": _epoch_index([t for t, _ in benchmark]), "bench": [float(v) for _, v in benchmark]}
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
            annual_return=_cagr(bench[-1] / bench[0], span),
            annual_volatility=_volatility(bench_returns, ppy),
            sharpe=_sharpe(bench_returns, ppy, rf_period),
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

    volatility = _volatility(returns, ppy)
    sharpe = _sharpe(returns, ppy, rf_period)
    sortino = _sortino(returns, ppy, rf_period)
    if len(returns) >= 2 and sharpe is None:
        warnings.append("zero volatility: Sharpe and Sortino undefined")
    elif len(returns) >= 2 and sortino is None:
        warnings.append("no losing periods: Sortino undefined")

    total_growth = equity[-1] / equity[0]
    annual = _cagr(total_growth, span_seconds)
    if annual is None and span_seconds > 0:
        warnings.append("annual return too large to express: the curve's span is too short")

    dd = _drawdown(times, equity, exact)
    if dd.recovered_at is None and dd.pct > 0:
        warnings.append("maximum drawdown not recovered by the end of the curve")
    calmar = annual / dd.pct if annual is not None and dd.pct > 0 else None
    net_profit = exact[-1] - exact[0]
    recovery = float(net_profit / dd.amount) if dd.amount > _ZERO else None
    var, shortfall = _var_es(returns)

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
