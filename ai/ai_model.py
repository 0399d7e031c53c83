"""The confidence model: features from daily bars, market regimes, training, the model file.

What the model predicts
-----------------------
For a trade idea on day ``i`` (known only from bars ``0..i``) the model estimates the
probability that a bracket order entered at the **next session's open** reaches its
**target before its stop** within ``horizon_days`` sessions. For a long entry at price ``e``
the stop is ``e * (1 - stop)`` and the target ``e * (1 + target)`` (3% / 6% by default, the
seed's bracket); a short entry mirrors them. Labels are read from later daily bars of the
training data only, by first touch on the daily high/low:

* the target is touched on an earlier day than the stop -> 1 (win);
* the stop is touched first -> 0;
* both are touched on the same day -> 0: a daily bar cannot tell which came first, so the
  label is conservative;
* neither within ``horizon_days`` -> 0: the idea did not reach its target in time;
* ideas whose horizon runs past the end of the data are dropped, as are ideas whose feature
  window or horizon contains an overnight gap beyond +/-40% (an unadjusted split, not a move).

Training and calibration
------------------------
A logistic regression (scikit-learn, standardised and winsorised features) is fitted on the
ideas of the oldest 60% of days, calibrated (Platt scaling by default, isotonic optional) on
the next 20%, and scored on the newest 20%, which it never saw: Brier score, expected
calibration error (10 equal-width bins), AUC, and the Brier scores of two no-skill forecasts
(the calibration split's base rate, and with hindsight the test split's own). The context
table (hit rate per market regime and relative-strength sign) is counted on the calibration
split too. Ideas whose label window reaches into the next split are purged so no
outcome leaks backwards. Because neighbouring days overlap, the effective number of independent
ideas is smaller than the count reported.

Inference is pure numpy (:class:`ConfidenceModel`), so loading the JSON file is instant and
the daemon does not import scikit-learn while trading.

Limitations a user should know
------------------------------
Features are computed on complete daily bars. Intraday, the daemon's last daily bar is the
partial bar of the current session, so its volume ratios read low early in the day; the
probability then leans on the other features. The model knows nothing about news, earnings
dates or order-book state.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import structlog

from market import indicators
from core.errors import ConfigError, DataQualityError
from market.market_data import BarSeries, exchange_day_numbers, load_csv_bars

log = structlog.get_logger(__name__)

MODEL_FORMAT = "trading-daemon-confidence-model"
MODEL_FORMAT_VERSION = 1

Regime = Literal["bull", "bear", "volatile", "range"]
Side = Literal["long", "short"]
SIDES: tuple[Side, ...] = ("long", "short")
REGIMES: tuple[Regime, ...] = ("bull", "bear", "volatile", "range")

#: The model's inputs, in the order of the coefficient vectors of the model file.
FEATURE_NAMES: tuple[str, ...] = (
    "momentum_1d",  # close / close 1 session earlier - 1
    "momentum_5d",
    "momentum_10d",
    "volume_ratio_1d",  # today's volume / mean volume of the 20 previous sessions
    "volume_ratio_5d",  # mean volume of the last 5 sessions / mean of the 20 before today
    "rsi_14",  # Wilder RSI, 0..100
    "macd_hist_pct",  # MACD(12, 26, 9) histogram / close
    "macd_above_signal",  # 1.0 when the MACD line is above its signal line, else 0.0
    "bollinger_pct_b",  # (close - lower) / (upper - lower) of Bollinger(20, 2)
    "beta_60d",  # beta of daily returns vs the benchmark over 60 sessions
    "relative_strength_10d",  # 10-day return minus the benchmark's 10-day return
    "volatility_20d",  # annualised standard deviation of 20 daily returns
    "atr_pct",  # ATR(14) / close
    "distance_ma20",  # close / SMA20 - 1
    "distance_ma50",  # close / SMA50 - 1
)

#: Bars of history a symbol needs before every feature is defined (beta needs 60 returns).
MIN_HISTORY_BARS = 61
#: Bars the benchmark needs for a full regime reading (the 200-session moving average).
REGIME_LONG_MA = 200

# Regime thresholds (documented in :func:`regime_series`).
VOLATILE_ANNUALISED_VOL = 0.30
TREND_RETURN_20D = 0.02

# An overnight move beyond this is treated as an unadjusted split, not a market move.
SPLIT_GAP = 0.40
# Cells of the context table are shrunk towards the base rate with this many pseudo-ideas.
CONTEXT_PRIOR_WEIGHT = 50.0
ECE_BINS = 10
TRADING_DAYS_PER_YEAR = 252


class ModelFileError(ConfigError):
    """The model file is missing, unreadable, or of another format version / feature set."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = str(path)
        super().__init__([f"ai.model_path={self.path}: {problem}"])


class TrainingDataError(ConfigError):
    """The training data directory cannot produce a model (missing benchmark, too few bars)."""

    def __init__(self, problem: str) -> None:
        super().__init__([problem])


# -- features ----------------------------------------------------------------------------------


def _daily_returns(close: np.ndarray) -> np.ndarray:
    return indicators.rate_of_change(close, 1)


def _rolling_std(x: np.ndarray, n: int) -> np.ndarray:
    """Sample standard deviation of the last ``n`` values (NaN if any is NaN)."""
    out = np.full(x.shape, np.nan)
    if len(x) >= n:
        windows = np.lib.stride_tricks.sliding_window_view(x, n)
        out[n - 1 :] = windows.std(axis=1, ddof=1)
    return out


def _rolling_beta(asset: np.ndarray, bench: np.ndarray, n: int) -> np.ndarray:
    """cov(asset, bench) / var(bench) over the last ``n`` paired daily returns."""
    out = np.full(asset.shape, np.nan)
    if len(asset) >= n:
        a = np.lib.stride_tricks.sliding_window_view(asset, n)
        b = np.lib.stride_tricks.sliding_window_view(bench, n)
        a_dev = a - a.mean(axis=1, keepdims=True)
        b_dev = b - b.mean(axis=1, keepdims=True)
        var = (b_dev * b_dev).sum(axis=1)
        cov = (a_dev * b_dev).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[n - 1 :] = np.where(var > 0, cov / var, np.nan)
    return out


def feature_matrix(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    benchmark_close: np.ndarray | None,
) -> dict[str, np.ndarray]:
    """Every feature of :data:`FEATURE_NAMES` at every row, from rows at or before that row.

    Arrays are oldest first and of equal length; ``benchmark_close`` is the benchmark's close
    on the same sessions (NaN where it has no bar) or ``None``, in which case beta is 1.0 and
    relative strength 0.0 (neutral). Rows without enough history hold NaN.
    """
    n = len(close)
    for name, arr in (("high", high), ("low", low), ("volume", volume)):
        if len(arr) != n:
            raise ValueError(f"feature_matrix: {name} has {len(arr)} rows, close has {n}")
    returns = _daily_returns(close)
    volume_base = np.full(n, np.nan)
    if n > 1:
        volume_base[1:] = indicators.sma(volume, 20)[:-1]
    volume_1d = indicators.volume_ratio(volume, 20)
    with np.errstate(divide="ignore", invalid="ignore"):
        volume_5d = np.where(volume_base > 0, indicators.sma(volume, 5) / volume_base, np.nan)
    macd_line, macd_signal, macd_hist = indicators.macd(close, 12, 26, 9)
    above = np.where(
        np.isnan(macd_line) | np.isnan(macd_signal), np.nan, (macd_line > macd_signal) * 1.0
    )
    _, upper, lower = indicators.bollinger(close, 20, 2.0)
    width = upper - lower
    with np.errstate(divide="ignore", invalid="ignore"):
        pct_b = np.where(width > 0, (close - lower) / width, 0.5)
    pct_b = np.where(np.isnan(width), np.nan, pct_b)
    momentum_10d = indicators.rate_of_change(close, 10)
    if benchmark_close is None:
        beta = np.where(np.isnan(returns), np.nan, 1.0)
        beta[: min(n, MIN_HISTORY_BARS - 1)] = np.nan
        relative = np.where(np.isnan(momentum_10d), np.nan, 0.0)
    else:
        if len(benchmark_close) != n:
            raise ValueError(
                f"feature_matrix: benchmark has {len(benchmark_close)} rows, close has {n}"
            )
        beta = _rolling_beta(returns, _daily_returns(benchmark_close), 60)
        relative = momentum_10d - indicators.rate_of_change(benchmark_close, 10)
    with np.errstate(divide="ignore", invalid="ignore"):
        columns = {
            "momentum_1d": returns,
            "momentum_5d": indicators.rate_of_change(close, 5),
            "momentum_10d": momentum_10d,
            "volume_ratio_1d": volume_1d,
            "volume_ratio_5d": volume_5d,
            "rsi_14": indicators.rsi(close, 14),
            "macd_hist_pct": macd_hist / close,
            "macd_above_signal": above,
            "bollinger_pct_b": pct_b,
            "beta_60d": beta,
            "relative_strength_10d": relative,
            "volatility_20d": _rolling_std(returns, 20) * math.sqrt(TRADING_DAYS_PER_YEAR),
            "atr_pct": indicators.atr(high, low, close, 14) / close,
            "distance_ma20": close / indicators.sma(close, 20) - 1.0,
            "distance_ma50": close / indicators.sma(close, 50) - 1.0,
        }
    return {name: np.asarray(columns[name], dtype=float) for name in FEATURE_NAMES}


def feature_row(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    benchmark_close: np.ndarray | None,
) -> dict[str, float]:
    """Every feature at the last row only: ``feature_matrix(...)[name][-1]`` for each name.

    The same operations on the same values (the recursive indicators over the whole input
    with the same seeds and the same chunks of :func:`market.indicators._smooth`, the moving
    averages from the same running sums, window statistics on the last window with the same
    reductions), so the values are identical (tested on every prefix of real history); the
    analyzer scores an idea with this instead of building every row. Arguments as
    :func:`feature_matrix`.
    """
    high, low, close, volume = (np.asarray(a, dtype=float) for a in (high, low, close, volume))
    n = len(close)
    if len(high) != n or len(low) != n or len(volume) != n:
        for name, arr in (("high", high), ("low", low), ("volume", volume)):
            if len(arr) != n:
                raise ValueError(f"feature_matrix: {name} has {len(arr)} rows, close has {n}")
    if n == 0:
        return {name: math.nan for name in FEATURE_NAMES}
    if benchmark_close is not None:
        benchmark_close = np.asarray(benchmark_close, dtype=float)
        if len(benchmark_close) != n:
            raise ValueError(
                f"feature_matrix: benchmark has {len(benchmark_close)} rows, close has {n}"
            )
    if not (np.isfinite(close).all() and np.isfinite(volume).all()):
        columns = feature_matrix(high, low, close, volume, benchmark_close)
        return {name: float(columns[name][-1]) for name in FEATURE_NAMES}
    nan = np.float64(math.nan)
    last = close[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        def change(k: int) -> np.float64:  # indicators.rate_of_change at the last row
            return close[-1] / close[-1 - k] - 1.0 if n > k else nan

        closes = _RunningSums(close)
        volumes = _RunningSums(volume)
        volume_base = volumes.average(20, n - 2) if n > 1 else nan
        volume_1d = volume[-1] / volume_base if n > 20 and volume_base > 0.0 else nan
        volume_5d = volumes.average(5, n - 1) / volume_base if volume_base > 0.0 else nan
        line, signal = _macd_last(close)
        above = nan if math.isnan(line) or math.isnan(signal) else np.float64((line > signal) * 1.0)
        pct_b = nan
        if n >= 20:  # the last of indicators.bollinger's windows
            window = close[-20:]
            mean = _add(window) / 20
            deviation = window - mean
            spread = 2.0 * math.sqrt(_add(deviation * deviation) / 20)
            upper, lower = mean + spread, mean - spread
            width = upper - lower
            pct_b = (last - lower) / width if width > 0 else np.float64(0.5)
            if math.isnan(width):
                pct_b = nan
        tail = close[-61:]  # indicators.rate_of_change(close[-61:], 1) from its second row
        returns = tail[1:] / tail[:-1] - 1.0
        momentum_10d = change(10)
        if benchmark_close is None:
            beta = nan if n <= MIN_HISTORY_BARS - 1 or math.isnan(returns[-1]) else np.float64(1.0)
            relative = nan if np.isnan(momentum_10d) else np.float64(0.0)
        else:
            beta = nan
            if n > 60:  # _rolling_beta's last window (NaN with fewer than 60 returns)
                bench = benchmark_close[-61:]
                a = returns[-60:]
                b = bench[1:] / bench[:-1] - 1.0
                a_dev = a - _add(a) / 60
                b_dev = b - _add(b) / 60
                var = _add(b_dev * b_dev)
                cov = _add(a_dev * b_dev)
                beta = cov / var if var > 0 else nan
            bench_10d = (
                benchmark_close[-1] / benchmark_close[-11] - 1.0 if n > 10 else nan
            )
            relative = momentum_10d - bench_10d
        volatility = nan  # _rolling_std's last window
        if n > 20:
            r = returns[-20:]
            deviation = r - _add(r) / 20
            volatility = math.sqrt(_add(deviation * deviation) / 19) * math.sqrt(TRADING_DAYS_PER_YEAR)
        row = {
            "momentum_1d": change(1),
            "momentum_5d": change(5),
            "momentum_10d": momentum_10d,
            "volume_ratio_1d": volume_1d,
            "volume_ratio_5d": volume_5d,
            "rsi_14": _rsi_last(close, 14),
            "macd_hist_pct": (line - signal) / last,
            "macd_above_signal": above,
            "bollinger_pct_b": pct_b,
            "beta_60d": beta,
            "relative_strength_10d": relative,
            "volatility_20d": volatility,
            "atr_pct": _atr_last(high, low, close, 14) / last,
            "distance_ma20": last / closes.average(20, n - 1) - 1.0,
            "distance_ma50": last / closes.average(50, n - 1) - 1.0,
        }
    return {name: float(row[name]) for name in FEATURE_NAMES}


_add = np.add.reduce  # the reduction behind ndarray.sum/mean/std (same pairwise sums)
_POWERS: dict[tuple[float, int], np.ndarray] = {}
_POWERS_SIZE = 4096


def _powers(beta: float, count: int) -> np.ndarray:
    """``beta ** np.arange(1, count + 1)`` as :func:`market.indicators._smooth` computes it (memoised)."""
    key = (beta, count)
    powers = _POWERS.get(key)
    if powers is None:
        if len(_POWERS) >= _POWERS_SIZE:
            _POWERS.clear()
        powers = _POWERS[key] = beta ** np.arange(1, count + 1, dtype=np.float64)
        powers.flags.writeable = False
    return powers


def _smooth(x: np.ndarray, alpha: float, start: int, seed: float, full: bool) -> Any:
    """:func:`market.indicators._smooth` (the same loop or the same chunked closed form, so the
    same values): the whole output when ``full``, else only its last value (a float)."""
    n = len(x)
    if start >= n:
        return np.full(n, np.nan) if full else math.nan
    steps = n - start - 1
    out = None
    if full:
        out = np.full(n, np.nan)
        out[start] = seed
    if steps <= 0:
        return out if full else seed
    if steps <= indicators._LOOP_LIMIT:
        y = seed
        if full:
            values = x[start + 1 :].tolist()
            result = [0.0] * steps
            for i, v in enumerate(values):
                y = y + alpha * (v - y)
                result[i] = y
            out[start + 1 :] = result  # type: ignore[index]
            return out
        for v in x[start + 1 :].tolist():
            y = y + alpha * (v - y)
        return y
    beta = 1.0 - alpha
    if beta <= 0.0:
        if full:
            out[start + 1 :] = x[start + 1 :]  # type: ignore[index]
            return out
        return float(x[-1])
    chunk = max(1, int(indicators._MAX_CHUNK_EXPONENT / -math.log(beta)))
    powers = _powers(beta, min(chunk, steps))
    previous = seed
    i = start + 1
    while i < n:
        j = min(n, i + chunk)
        p = powers[: j - i]
        if full or j < n:
            y = p * (previous + alpha * (x[i:j] / p).cumsum())
            if full:
                out[i:j] = y  # type: ignore[index]
            previous = float(y[-1])
        else:  # the last value of the last chunk: the same operations on its last element
            previous = float(p[-1] * (previous + alpha * (x[i:j] / p).cumsum()[-1]))
        i = j
    return out if full else previous


def _ema_full(values: np.ndarray, n: int) -> np.ndarray:
    """:func:`market.indicators.ema` of finite ``values`` (the recursion starts at the first)."""
    if len(values) < n:
        return np.full(len(values), np.nan)
    return _smooth(values, 2.0 / (n + 1.0), n - 1, indicators._seed(values[:n]), True)  # type: ignore[no-any-return]


def _macd_last(close: np.ndarray) -> tuple[float, float]:
    """The last MACD(12, 26, 9) line and signal values of finite ``close``."""
    line = _ema_full(close, 12) - _ema_full(close, 26)
    # Finite closes: the line starts where the slow EMA does (unless something overflowed).
    first = 25 if len(line) > 25 and math.isfinite(line[25]) else indicators._first_finite(line)
    if len(line) - first < 9:
        return float(line[-1]), math.nan
    seed = indicators._seed(line[first : first + 9])
    return float(line[-1]), float(_smooth(line, 2.0 / 10.0, first + 8, seed, False))


def _wilder_last(values: np.ndarray, n: int) -> float:
    """The last value of ``indicators._wilder(values, n, 0)``."""
    if len(values) < n:
        return math.nan
    return float(_smooth(values, 1.0 / n, n - 1, indicators._seed(values[:n]), False))


def _rsi_last(close: np.ndarray, n: int) -> float:
    """``indicators.rsi(close, n)[-1]``."""
    if len(close) <= n:
        return math.nan
    change = close[1:] - close[:-1]  # np.diff
    gain = _wilder_last(np.maximum(change, 0.0), n)
    loss = _wilder_last(np.maximum(-change, 0.0), n)
    total = gain + loss
    if math.isnan(total):
        return math.nan
    return 100.0 * gain / total if total > 0.0 else 50.0


def _atr_last(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int) -> float:
    """``indicators.atr(high, low, close, n)[-1]``."""
    tr = high - low
    if len(close) > 1:
        previous = close[:-1]
        tr[1:] = np.maximum(tr[1:], np.maximum(np.abs(high[1:] - previous), np.abs(low[1:] - previous)))
    return _wilder_last(tr, n)


class _RunningSums:
    """:func:`market.indicators.sma` at single rows of finite ``values``: the same running sums of
    deviations from the first value, so the same numbers."""

    def __init__(self, values: np.ndarray) -> None:
        self.reference = values[0]
        self.sums = np.cumsum(values - self.reference)

    def average(self, k: int, i: int) -> np.float64:
        """The ``k``-value average ending at row ``i`` (NaN before row ``k - 1``)."""
        if i < k - 1:
            return np.float64(math.nan)
        before = self.sums[i - k] if i >= k else 0.0
        return (self.sums[i] - before) / k + self.reference


def align_benchmark(ts: np.ndarray, bench_ts: np.ndarray, bench_close: np.ndarray) -> np.ndarray:
    """The benchmark's close on each of ``ts``'s sessions (NaN where it has no bar).

    Daily bars are matched on their New York session date, so a series stamped at midnight
    New York pairs with one stamped at any other time of the same session (e.g. today's
    partial bar built from minute bars).
    """
    ts = np.asarray(ts, dtype=np.int64)
    bench_ts = np.asarray(bench_ts, dtype=np.int64)
    bench_close = np.asarray(bench_close, dtype=float)
    n = len(ts)
    if n and len(bench_ts) >= n:
        # Fastest path: ts is a run of consecutive benchmark stamps (the benchmark's own
        # sessions): the same values the lookups below would pick, without the lookups.
        start = int(np.searchsorted(bench_ts, ts[0]))
        if start + n <= len(bench_ts) and bench_ts[start] == ts[0] and bench_ts[start + n - 1] == ts[-1]:
            if np.array_equal(bench_ts[start : start + n], ts):
                return bench_close[start : start + n].copy()
    out = np.full(n, np.nan)
    if n == 0 or len(bench_ts) == 0:
        return out
    # Fast path: identical stamps (both series from one source); bench_ts is ascending.
    pos = np.clip(np.searchsorted(bench_ts, ts), 0, len(bench_ts) - 1)
    hit = bench_ts[pos] == ts
    out[hit] = bench_close[pos[hit]]
    missing = np.flatnonzero(~hit)
    if len(missing) == 0:
        return out
    # The rest by session date, looking only at benchmark bars within two days of them.
    lo = np.searchsorted(bench_ts, ts[missing].min() - 2 * 86_400)
    hi = np.searchsorted(bench_ts, ts[missing].max() + 2 * 86_400, side="right")
    if hi <= lo:
        return out
    theirs = exchange_day_numbers(bench_ts[lo:hi])
    mine = exchange_day_numbers(ts[missing])
    where = np.clip(np.searchsorted(theirs, mine), 0, len(theirs) - 1)
    same_day = theirs[where] == mine
    out[missing[same_day]] = bench_close[lo:hi][where[same_day]]
    return out


# -- regimes -----------------------------------------------------------------------------------


def regime_series(close: np.ndarray) -> list[Regime]:
    """The market regime of the benchmark at every row, from that row's history only.

    In order of precedence:

    * ``volatile``: the annualised standard deviation of the last 20 daily returns exceeds
      30% (about 1.9% a day);
    * ``bull``: the close is above its 50-session average, that average is above the long
      average (200 sessions, or all available sessions when fewer), and the 20-session return
      exceeds +2%;
    * ``bear``: the close is below its 50-session average and the 20-session return is below
      -2%;
    * ``range``: anything else, including too little history (fewer than 51 bars).
    """
    close = np.asarray(close, dtype=float)
    n = len(close)
    if n == 0:
        return []
    vol = _rolling_std(_daily_returns(close), 20) * math.sqrt(TRADING_DAYS_PER_YEAR)
    ret20 = indicators.rate_of_change(close, 20)
    ma50 = indicators.sma(close, 50)
    ma_long = indicators.sma(close, REGIME_LONG_MA)
    # Before 200 bars exist, the long average is the mean of everything so far.
    expanding = np.cumsum(close) / np.arange(1, n + 1)
    ma_long = np.where(np.isnan(ma_long), expanding, ma_long)
    with np.errstate(invalid="ignore"):
        volatile = vol > VOLATILE_ANNUALISED_VOL
        known = ~(np.isnan(ma50) | np.isnan(ret20))
        bull = known & (close > ma50) & (ma50 > ma_long) & (ret20 > TREND_RETURN_20D)
        bear = known & (close < ma50) & (ret20 < -TREND_RETURN_20D)
    labels = np.select([volatile, bull, bear], ["volatile", "bull", "bear"], default="range")
    return [str(v) for v in labels]  # type: ignore[misc]


def latest_regime(close: np.ndarray) -> Regime:
    """``regime_series(close)[-1]`` without labelling every earlier row.

    The same arithmetic on the same values (the moving averages from the same running sums
    as :func:`market.indicators.sma`, the volatility of the last 20 returns), so the label is
    identical (tested on every window of real history); the detector calls this once per
    cycle on a year of benchmark bars. Raises ``ValueError`` for an empty series.
    """
    close = np.asarray(close, dtype=float)
    n = len(close)
    if n == 0:
        raise ValueError("latest_regime needs at least one close")
    if not np.isfinite(close).all():
        return regime_series(close)[-1]
    tail = close[-21:]
    returns = tail[1:] / tail[:-1] - 1.0
    vol = math.nan
    if n >= 21:  # returns.std(ddof=1): the same reductions
        deviation = returns - _add(returns) / 20
        vol = float(math.sqrt(_add(deviation * deviation) / 19) * math.sqrt(TRADING_DAYS_PER_YEAR))
    last = float(close[-1])
    ret20 = last / float(close[-21]) - 1.0 if n > 20 else math.nan
    # indicators.sma: running sums of deviations from the first close.
    reference = close[0]
    sums = (close - reference).cumsum()

    def average(k: int) -> float:
        if n < k:
            return math.nan
        before = sums[n - k - 1] if n > k else 0.0
        return float((sums[-1] - before) / k + reference)

    ma50 = average(50)
    ma_long = average(REGIME_LONG_MA)
    if math.isnan(ma_long):  # fewer than 200 bars: the mean of everything so far
        ma_long = float(np.cumsum(close)[-1] / n)
    if vol > VOLATILE_ANNUALISED_VOL:
        return "volatile"
    known = not (math.isnan(ma50) or math.isnan(ret20))
    if known and last > ma50 and ma50 > ma_long and ret20 > TREND_RETURN_20D:
        return "bull"
    if known and last < ma50 and ret20 < -TREND_RETURN_20D:
        return "bear"
    return "range"


def context_key(regime: str | None, relative_strength: float) -> str:
    """The context-table cell of an idea: ``"<regime>|rs_pos"`` or ``"<regime>|rs_neg"``."""
    sign = "rs_pos" if relative_strength > 0 else "rs_neg"
    return f"{regime or 'range'}|{sign}"


# -- labels ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bracket:
    """The bracket the labels describe: entry at the next open, stop and target fractions."""

    stop: float = 0.03
    target: float = 0.06
    horizon_days: int = 20

    def __post_init__(self) -> None:
        if not 0 < self.stop < 1:
            raise ValueError(f"stop={self.stop}: must be a fraction between 0 and 1")
        if not 0 < self.target < 10:
            raise ValueError(f"target={self.target}: must be a positive fraction")
        if self.horizon_days < 1:
            raise ValueError(f"horizon_days={self.horizon_days}: must be at least 1")


def first_touch_labels(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    bracket: Bracket,
    side: Side,
) -> tuple[np.ndarray, np.ndarray]:
    """Outcome of an idea on each day: ``(label, end_index)``.

    ``label[i]`` is 1.0 when a ``side`` entry at ``open_[i+1]`` touches its target strictly
    before its stop within ``bracket.horizon_days`` sessions, 0.0 otherwise (stop first, both
    on one day, or neither), and NaN when the horizon runs past the data. ``end_index[i]``
    is the last bar the outcome looked at.
    """
    n = len(open_)
    h = bracket.horizon_days
    label = np.full(n, np.nan)
    end = np.full(n, -1, dtype=np.int64)
    count = n - 1 - h + 1  # ideas i = 0 .. n-1-h have a complete horizon i+1 .. i+h
    if count <= 0:
        return label, end
    entry = open_[1 : 1 + count]
    highs = np.lib.stride_tricks.sliding_window_view(high[1:], h)[:count]
    lows = np.lib.stride_tricks.sliding_window_view(low[1:], h)[:count]
    if side == "long":
        hit_stop = lows <= (entry * (1.0 - bracket.stop))[:, None]
        hit_target = highs >= (entry * (1.0 + bracket.target))[:, None]
    else:
        hit_stop = highs >= (entry * (1.0 + bracket.stop))[:, None]
        hit_target = lows <= (entry * (1.0 - bracket.target))[:, None]
    first_stop = np.where(hit_stop.any(axis=1), hit_stop.argmax(axis=1), h)
    first_target = np.where(hit_target.any(axis=1), hit_target.argmax(axis=1), h)
    label[:count] = (first_target < first_stop).astype(float)
    first = np.minimum(np.minimum(first_stop, first_target), h - 1)
    end[:count] = np.arange(count) + 1 + first
    return label, end


def _split_gap_mask(open_: np.ndarray, close: np.ndarray) -> np.ndarray:
    """True on bars that open more than :data:`SPLIT_GAP` away from the previous close."""
    bad = np.zeros(len(open_), dtype=bool)
    if len(open_) > 1:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = open_[1:] / close[:-1]
        bad[1:] = ~(np.abs(ratio - 1.0) <= SPLIT_GAP)
    return bad


# -- reading the data directory ----------------------------------------------------------------


@dataclass(frozen=True)
class SymbolBars:
    """One symbol's daily bars read from the data directory."""

    symbol: str
    bars: BarSeries


_DAILY_NAME = re.compile(
    r"^(?P<symbol>[A-Z][A-Z0-9.\-]*)-1d-(?P<first>\d{4}-\d{2}-\d{2})-(?P<last>\d{4}-\d{2}-\d{2})\.csv$"
)
_MIN_FILE_ROWS = MIN_HISTORY_BARS + 250


def daily_files(data_dir: Path) -> dict[str, Path]:
    """The daily CSV used for each symbol in ``data_dir/daily``.

    Files are named ``SYMBOL-1d-FIRST-LAST.csv``. When a symbol has several, the one reaching
    the latest session among those with at least about a year of bars is used (ties: the
    longer file), so split-adjusted recent downloads win over short or raw vendor files.
    """
    folder = Path(data_dir) / "daily"
    if not folder.is_dir():
        raise TrainingDataError(f"--data {data_dir}: no 'daily' folder with SYMBOL-1d-*.csv files")
    candidates: dict[str, list[tuple[bool, str, int, Path]]] = {}
    for path in sorted(folder.glob("*-1d-*.csv")):
        match = _DAILY_NAME.match(path.name)
        if not match:
            continue
        with path.open("rb") as fh:
            rows = sum(1 for _ in fh) - 1
        candidates.setdefault(match["symbol"], []).append(
            (rows >= _MIN_FILE_ROWS, match["last"], rows, path)
        )
    # Prefer files long enough to learn from, then the latest last session, then the longer.
    return {
        symbol: max(files, key=lambda f: (f[0], f[1], f[2]))[3]
        for symbol, files in candidates.items()
    }


def read_daily_csv(path: Path, symbol: str) -> SymbolBars:
    """Read a ``timestamp,open,high,low,close,volume`` daily CSV (extra columns ignored)."""
    try:
        return SymbolBars(symbol, load_csv_bars(path))
    except DataQualityError as exc:
        raise TrainingDataError(str(exc)) from exc


# -- the dataset -------------------------------------------------------------------------------


@dataclass
class Dataset:
    """Ideas (one per symbol and day) with features, outcomes per side and context."""

    symbols: list[str]
    X: np.ndarray  # (n, len(FEATURE_NAMES))
    ts: np.ndarray  # idea day (epoch seconds)
    end_ts: dict[Side, np.ndarray]  # last bar each outcome looked at
    y: dict[Side, np.ndarray]
    context: list[str]  # context_key of each idea


def build_dataset(
    symbols: Sequence[SymbolBars], benchmark: SymbolBars, bracket: Bracket
) -> Dataset:
    """Features and first-touch outcomes for every day of every symbol that has both."""
    bench = benchmark.bars
    regime_by_day = dict(
        zip(exchange_day_numbers(bench.ts).tolist(), regime_series(bench.close), strict=True)
    )
    rs_col = FEATURE_NAMES.index("relative_strength_10d")
    xs, tss, contexts, names = [], [], [], []
    ends: dict[Side, list[np.ndarray]] = {s: [] for s in SIDES}
    ys: dict[Side, list[np.ndarray]] = {s: [] for s in SIDES}
    for item in symbols:
        bars = item.bars
        cols = feature_matrix(
            bars.high,
            bars.low,
            bars.close,
            bars.volume,
            align_benchmark(bars.ts, bench.ts, bench.close),
        )
        X = np.column_stack([cols[name] for name in FEATURE_NAMES])
        keep = np.isfinite(X).all(axis=1)
        keep &= ~_gap_nearby(_split_gap_mask(bars.open, bars.close), bracket.horizon_days)
        labels = {
            side: first_touch_labels(bars.open, bars.high, bars.low, bracket, side)
            for side in SIDES
        }
        for side in SIDES:
            keep &= ~np.isnan(labels[side][0])
        idx = np.flatnonzero(keep)
        if len(idx) == 0:
            continue
        names.append(item.symbol)
        xs.append(X[idx])
        tss.append(bars.ts[idx])
        for side in SIDES:
            label, end = labels[side]
            ys[side].append(label[idx])
            ends[side].append(bars.ts[end[idx]])
        days = exchange_day_numbers(bars.ts[idx]).tolist()
        for day, rs in zip(days, X[idx, rs_col].tolist(), strict=True):
            contexts.append(context_key(regime_by_day.get(day, "range"), rs))
    if not xs:
        raise TrainingDataError("no symbol has enough daily bars to form a single labelled idea")
    return Dataset(
        symbols=names,
        X=np.vstack(xs),
        ts=np.concatenate(tss),
        end_ts={s: np.concatenate(ends[s]) for s in SIDES},
        y={s: np.concatenate(ys[s]) for s in SIDES},
        context=contexts,
    )


def _gap_nearby(gaps: np.ndarray, horizon: int) -> np.ndarray:
    """True for ideas whose feature window (61 bars back) or horizon holds a split gap."""
    n = len(gaps)
    counts = np.concatenate(([0], np.cumsum(gaps.astype(np.int64))))
    i = np.arange(n)
    lo = np.clip(i - MIN_HISTORY_BARS + 1, 0, n)
    hi = np.clip(i + horizon + 1, 0, n)
    return (counts[hi] - counts[lo]) > 0


# -- metrics -----------------------------------------------------------------------------------


def brier_score(p: np.ndarray, y: np.ndarray) -> float:
    """Mean squared difference between forecast probabilities and 0/1 outcomes."""
    return float(np.mean((np.asarray(p, float) - np.asarray(y, float)) ** 2))


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """Count-weighted mean |mean forecast - hit rate| over ``bins`` equal-width bins of [0, 1]."""
    p = np.asarray(p, float)
    y = np.asarray(y, float)
    if len(p) == 0:
        return float("nan")
    which = np.clip((p * bins).astype(int), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() * abs(p[mask].mean() - y[mask].mean())
    return float(total / len(p))


def reliability_table(p: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Per-bin count, mean forecast and observed hit rate (non-empty bins only)."""
    p = np.asarray(p, float)
    y = np.asarray(y, float)
    which = np.clip((p * bins).astype(int), 0, bins - 1)
    rows = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            rows.append(
                {
                    "bin_low": b / bins,
                    "bin_high": (b + 1) / bins,
                    "count": int(mask.sum()),
                    "mean_forecast": round(float(p[mask].mean()), 4),
                    "hit_rate": round(float(y[mask].mean()), 4),
                }
            )
    return rows


# -- the model ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """Maps the regression's logit to a calibrated probability.

    ``platt``: ``p = 1 / (1 + exp(a * logit + b))``; ``isotonic``: piecewise-linear through
    ``(thresholds, values)``, flat beyond the ends.
    """

    method: Literal["platt", "isotonic"]
    a: float = 0.0
    b: float = 0.0
    thresholds: tuple[float, ...] = ()
    values: tuple[float, ...] = ()

    def apply(self, logit: np.ndarray) -> np.ndarray:
        if self.method == "platt":
            return 1.0 / (1.0 + np.exp(self.a * logit + self.b))
        return np.interp(logit, self.thresholds, self.values)

    def to_json(self) -> dict[str, Any]:
        if self.method == "platt":
            return {"method": "platt", "a": self.a, "b": self.b}
        return {
            "method": "isotonic",
            "thresholds": list(self.thresholds),
            "values": list(self.values),
        }

    @staticmethod
    def from_json(raw: Mapping[str, Any]) -> Calibration:
        method = raw.get("method")
        if method == "platt":
            return Calibration("platt", a=float(raw["a"]), b=float(raw["b"]))
        if method == "isotonic":
            thresholds = tuple(float(v) for v in raw["thresholds"])
            values = tuple(float(v) for v in raw["values"])
            if not thresholds or len(thresholds) != len(values):
                raise ValueError("isotonic calibration needs equal, non-empty thresholds/values")
            return Calibration("isotonic", thresholds=thresholds, values=values)
        raise ValueError(f"unknown calibration method {method!r} (expected platt or isotonic)")


@dataclass(frozen=True)
class SideModel:
    """The fitted regression, its calibration and context table for one side (long/short)."""

    mean: np.ndarray
    scale: np.ndarray
    clip_low: np.ndarray
    clip_high: np.ndarray
    coefficients: np.ndarray
    intercept: float
    calibration: Calibration
    base_rate: float
    context_rates: dict[str, float]
    metrics: dict[str, Any]

    def logits(self, X: np.ndarray) -> np.ndarray:
        Z = (np.clip(X, self.clip_low, self.clip_high) - self.mean) / self.scale
        return Z @ self.coefficients + self.intercept

    def probabilities(self, X: np.ndarray) -> np.ndarray:
        """Calibrated probability that each row's bracket hits its target first."""
        return np.clip(self.calibration.apply(self.logits(X)), 0.0, 1.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "scaler_mean": self.mean.tolist(),
            "scaler_scale": self.scale.tolist(),
            "clip_low": self.clip_low.tolist(),
            "clip_high": self.clip_high.tolist(),
            "coefficients": self.coefficients.tolist(),
            "intercept": self.intercept,
            "calibration": self.calibration.to_json(),
            "base_rate": self.base_rate,
            "context_rates": dict(sorted(self.context_rates.items())),
            "metrics": self.metrics,
        }

    @staticmethod
    def from_json(raw: Mapping[str, Any], width: int) -> SideModel:
        arrays = {}
        for key in ("scaler_mean", "scaler_scale", "clip_low", "clip_high", "coefficients"):
            arr = np.asarray(raw[key], dtype=float)
            if arr.shape != (width,) or not np.isfinite(arr).all():
                raise ValueError(f"{key} must be {width} finite numbers")
            arrays[key] = arr
        if (arrays["scaler_scale"] <= 0).any():
            raise ValueError("scaler_scale must be positive")
        base_rate = float(raw["base_rate"])
        if not 0.0 <= base_rate <= 1.0:
            raise ValueError(f"base_rate={base_rate} is not a probability")
        context = {str(k): float(v) for k, v in dict(raw.get("context_rates", {})).items()}
        return SideModel(
            mean=arrays["scaler_mean"],
            scale=arrays["scaler_scale"],
            clip_low=arrays["clip_low"],
            clip_high=arrays["clip_high"],
            coefficients=arrays["coefficients"],
            intercept=float(raw["intercept"]),
            calibration=Calibration.from_json(raw["calibration"]),
            base_rate=base_rate,
            context_rates=context,
            metrics=dict(raw.get("metrics", {})),
        )


@dataclass(frozen=True)
class ConfidenceModel:
    """A trained, calibrated model loaded from its JSON file; numpy only."""

    feature_names: tuple[str, ...]
    sides: dict[Side, SideModel]
    bracket: Bracket
    created_at: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def predict_proba(self, features: Mapping[str, float], side: Side = "long") -> float:
        """Calibrated probability that a ``side`` bracket entered now hits its target first.

        Raises ``ValueError`` naming the missing or non-finite features.
        """
        row = self.vector(features)
        model = self.sides[side]
        # SideModel.probabilities on one row, without the wrappers: np.clip is
        # minimum(maximum()) (the row is finite), the same 1-row product and calibration.
        Z = (np.minimum(np.maximum(row[None, :], model.clip_low), model.clip_high) - model.mean) / model.scale
        p = float(model.calibration.apply(Z @ model.coefficients + model.intercept)[0])
        return min(max(p, 0.0), 1.0)

    def vector(self, features: Mapping[str, float]) -> np.ndarray:
        """``features`` as a row in :attr:`feature_names` order, after checking every value."""
        try:
            values = [float(features[n]) for n in self.feature_names]
        except KeyError:
            values = None
        if values is None:
            missing = [n for n in self.feature_names if n not in features]
            raise ValueError(f"features missing: {', '.join(missing)}")
        row = np.array(values)
        if all(map(math.isfinite, values)):
            return row
        bad = [n for n, v in zip(self.feature_names, row, strict=True) if not math.isfinite(v)]
        if bad:
            raise ValueError(f"features not finite (too little history?): {', '.join(bad)}")
        return row

    def base_rate(self, side: Side = "long") -> float:
        """Share of winning ideas in the calibration split (the no-skill forecast)."""
        return self.sides[side].base_rate

    def context_probability(
        self, side: Side, regime: str | None, relative_strength: float
    ) -> float:
        """Hit rate, in the calibration split, of ideas in the same regime and relative-strength sign.

        Shrunk towards the base rate (so thin cells say little); the base rate when unknown.
        """
        model = self.sides[side]
        return model.context_rates.get(context_key(regime, relative_strength), model.base_rate)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "created_at": self.created_at,
            "feature_names": list(self.feature_names),
            "bracket": {
                "entry": "next session open",
                "stop": self.bracket.stop,
                "target": self.bracket.target,
                "horizon_days": self.bracket.horizon_days,
                "same_bar_touch": "counts as stop",
                "no_touch_in_horizon": "counts as not reaching the target",
            },
            "sides": {side: model.to_json() for side, model in self.sides.items()},
            **self.metadata,
        }


def save_model(model: ConfidenceModel, path: Path) -> None:
    """Write the model file atomically: to ``<path>.tmp`` in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(model.to_json(), indent=1, sort_keys=False) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".json.tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # a model file is not a secret: readable like the code
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_model(path: Path | str) -> ConfidenceModel:
    """Load and validate a model file; :class:`ModelFileError` says what is wrong with it."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelFileError(path, "no such file (train one: python main.py train --data DIR)") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(path, f"unreadable model file ({exc.__class__.__name__}: {exc})") from exc
    if not isinstance(raw, dict) or raw.get("format") != MODEL_FORMAT:
        raise ModelFileError(path, f"not a confidence model file (format must be {MODEL_FORMAT!r})")
    version = raw.get("format_version")
    if version != MODEL_FORMAT_VERSION:
        raise ModelFileError(
            path,
            f"format_version={version!r}, this program reads version {MODEL_FORMAT_VERSION}: "
            "retrain with python main.py train --data DIR",
        )
    names = tuple(raw.get("feature_names", ()))
    if names != FEATURE_NAMES:
        missing = [n for n in FEATURE_NAMES if n not in names]
        extra = [n for n in names if n not in FEATURE_NAMES]
        raise ModelFileError(
            path,
            "feature names differ from this program's "
            f"(missing: {missing or 'none'}; unknown: {extra or 'none'}; or reordered): retrain",
        )
    try:
        bracket_raw = raw["bracket"]
        bracket = Bracket(
            stop=float(bracket_raw["stop"]),
            target=float(bracket_raw["target"]),
            horizon_days=int(bracket_raw["horizon_days"]),
        )
        sides: dict[Side, SideModel] = {}
        for side in SIDES:
            if side not in raw["sides"]:
                raise ValueError(f"no {side!r} model")
            sides[side] = SideModel.from_json(raw["sides"][side], len(FEATURE_NAMES))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(path, f"malformed model file: {exc}") from exc
    known = {"format", "format_version", "created_at", "feature_names", "bracket", "sides"}
    return ConfidenceModel(
        feature_names=names,
        sides=sides,
        bracket=bracket,
        created_at=str(raw.get("created_at", "")),
        metadata={k: v for k, v in raw.items() if k not in known},
    )


# -- training ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelReport:
    """What training produced and how well the model did on data it never saw."""

    path: Path
    created_at: str
    symbols: list[str]
    window: dict[str, str]  # first/last idea day of each split
    metrics: dict[str, dict[str, Any]]  # per side

    def render(self) -> str:
        """A few human-readable lines for the CLI (``python main.py train``)."""
        lines = [
            f"model written to {self.path} ({self.created_at})",
            f"symbols: {', '.join(self.symbols)}",
            "train {train_start}..{train_end}, calibration {calibration_start}..{calibration_end}, "
            "test {test_start}..{test_end}".format(**self.window),
        ]
        for side, m in self.metrics.items():
            lines.append(
                f"{side}: test ideas {m['n_test']}, base rate {m['base_rate_test']:.3f}, "
                f"Brier {m['brier']:.4f} (no-skill {m['brier_climatology']:.4f}), "
                f"ECE {m['ece']:.4f}, AUC {m['auc']:.3f}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()


def _day(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), UTC).date().isoformat()


def _context_rates(keys: Sequence[str], y: np.ndarray, base: float) -> dict[str, float]:
    rates: dict[str, float] = {}
    arr = np.asarray(keys)
    for regime in REGIMES:
        for sign in ("rs_pos", "rs_neg"):
            key = f"{regime}|{sign}"
            mask = arr == key
            wins = float(y[mask].sum())
            count = float(mask.sum())
            rates[key] = round((wins + CONTEXT_PRIOR_WEIGHT * base) / (count + CONTEXT_PRIOR_WEIGHT), 6)
    return rates


def _fit_side(
    data: Dataset,
    side: Side,
    train: np.ndarray,
    calib: np.ndarray,
    test: np.ndarray,
    calibration: Literal["platt", "isotonic"],
    regularization: float,
) -> SideModel:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss, roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    y = data.y[side]
    X_train = data.X[train]
    clip_low = np.percentile(X_train, 1, axis=0)
    clip_high = np.percentile(X_train, 99, axis=0)

    def winsorise(X: np.ndarray) -> np.ndarray:
        return np.clip(X, clip_low, clip_high)

    pipeline = make_pipeline(
        FunctionTransformer(winsorise),
        StandardScaler(),
        LogisticRegression(C=regularization, max_iter=2000),
    )
    pipeline.fit(X_train, y[train])
    calibrated = CalibratedClassifierCV(
        FrozenEstimator(pipeline), method="sigmoid" if calibration == "platt" else "isotonic"
    )
    calibrated.fit(data.X[calib], y[calib])
    fitted = calibrated.calibrated_classifiers_[0].calibrators[0]
    if calibration == "platt":
        mapping = Calibration("platt", a=float(fitted.a_), b=float(fitted.b_))
    else:
        mapping = Calibration(
            "isotonic",
            thresholds=tuple(float(v) for v in fitted.X_thresholds_),
            values=tuple(float(v) for v in fitted.y_thresholds_),
        )
    scaler: StandardScaler = pipeline[1]
    regression: LogisticRegression = pipeline[2]
    # The most recent rate the model has seen (the calibration split's) is the no-skill
    # forecast and the fallback of the context table, which is counted on the same split.
    base_rate = float(y[calib].mean())
    model = SideModel(
        mean=np.asarray(scaler.mean_, float),
        scale=np.asarray(scaler.scale_, float),
        clip_low=clip_low,
        clip_high=clip_high,
        coefficients=np.asarray(regression.coef_[0], float),
        intercept=float(regression.intercept_[0]),
        calibration=mapping,
        base_rate=base_rate,
        context_rates=_context_rates([data.context[i] for i in calib], y[calib], base_rate),
        metrics={},
    )
    # The numpy inference must reproduce scikit-learn's exactly, or the file would lie.
    ours = model.probabilities(data.X[calib])
    theirs = calibrated.predict_proba(data.X[calib])[:, 1]
    if not np.allclose(ours, theirs, rtol=0, atol=1e-9):
        raise RuntimeError("numpy inference disagrees with scikit-learn: calibration export is broken")

    p_test = model.probabilities(data.X[test])
    y_test = y[test]
    test_rate = float(y_test.mean())
    context_test = np.array(
        [model.context_rates.get(data.context[i], base_rate) for i in test], dtype=float
    )
    pooled = 0.7 * p_test + 0.3 * context_test  # default weights, neutral sentiment (ai_analyzer)
    has_both = 0 < y_test.sum() < len(y_test)
    metrics = {
        "n_train": int(len(train)),
        "n_calibration": int(len(calib)),
        "n_test": int(len(test)),
        "base_rate_train": round(float(y[train].mean()), 6),
        "base_rate_calibration": round(base_rate, 6),
        "base_rate_test": round(test_rate, 6),
        "brier": round(brier_score(p_test, y_test), 6),
        # No skill, knowable in advance: always forecast the calibration split's rate.
        "brier_climatology": round(brier_score(np.full(len(test), base_rate), y_test), 6),
        # No skill with hindsight: always forecast the test split's own rate.
        "brier_test_base_rate": round(test_rate * (1.0 - test_rate), 6),
        "ece": round(expected_calibration_error(p_test, y_test), 6),
        "auc": round(float(roc_auc_score(y_test, p_test)), 6) if has_both else None,
        "log_loss": round(float(log_loss(y_test, np.clip(p_test, 1e-6, 1 - 1e-6), labels=[0, 1])), 6),
        "pooled_brier": round(brier_score(pooled, y_test), 6),
        "pooled_ece": round(expected_calibration_error(pooled, y_test), 6),
        "forecast_min": round(float(p_test.min()), 6),
        "forecast_max": round(float(p_test.max()), 6),
        "share_above_0_5": round(float((p_test > 0.5).mean()), 6),
        "reliability": reliability_table(p_test, y_test),
    }
    return SideModel(**{**model.__dict__, "metrics": metrics})


def time_splits(
    data: Dataset, side: Side, fractions: tuple[float, float] = (0.6, 0.8)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of the train / calibration / test ideas, split by idea day.

    Ideas are ordered by day; the first 60% of days train, the next 20% calibrate, the rest
    test. A train (calibration) idea whose outcome was still open when the next split begins
    is dropped, so no later price leaks into an earlier split.
    """
    days = np.unique(data.ts)
    if len(days) < 30:
        raise TrainingDataError(f"only {len(days)} days of labelled ideas: need at least 30")
    calib_start = days[int(len(days) * fractions[0])]
    test_start = days[int(len(days) * fractions[1])]
    end = data.end_ts[side]
    train = np.flatnonzero((data.ts < calib_start) & (end < calib_start))
    calib = np.flatnonzero((data.ts >= calib_start) & (data.ts < test_start) & (end < test_start))
    test = np.flatnonzero(data.ts >= test_start)
    return train, calib, test


def train_model(
    data_dir: Path,
    out_path: Path,
    *,
    symbols: Iterable[str] | None = None,
    stop: float = 0.03,
    target: float = 0.06,
    horizon_days: int = 20,
    benchmark: str = "SPY",
    calibration: Literal["platt", "isotonic"] = "platt",
    regularization: float = 0.1,
    now: datetime | None = None,
) -> ModelReport:
    """Train, calibrate, test and save a model from ``data_dir/daily/SYMBOL-1d-*.csv``.

    ``symbols`` defaults to every symbol with a daily file; ``benchmark`` (SPY) must have one.
    Returns the held-out metrics; the model file is written atomically to ``out_path``.
    """
    import sklearn

    bracket = Bracket(stop=stop, target=target, horizon_days=horizon_days)
    files = daily_files(Path(data_dir))
    if benchmark not in files:
        raise TrainingDataError(
            f"--data {data_dir}: no daily file for the benchmark {benchmark} "
            f"(expected daily/{benchmark}-1d-FIRST-LAST.csv)"
        )
    wanted = sorted(files) if symbols is None else [s.strip().upper() for s in symbols]
    missing = [s for s in wanted if s not in files]
    if missing:
        raise TrainingDataError(f"--data {data_dir}: no daily file for {', '.join(missing)}")
    bench = read_daily_csv(files[benchmark], benchmark)
    series = [bench if s == benchmark else read_daily_csv(files[s], s) for s in wanted]
    data = build_dataset(series, bench, bracket)
    created = (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds")
    sides: dict[Side, SideModel] = {}
    window: dict[str, str] = {}
    for side in SIDES:
        train, calib, test = time_splits(data, side)
        if min(len(train), len(calib), len(test)) < 100:
            raise TrainingDataError(
                f"too few ideas to train and test honestly (train {len(train)}, "
                f"calibration {len(calib)}, test {len(test)}): add symbols or history"
            )
        for part, idx in (("train", train), ("calibration", calib), ("test", test)):
            window[f"{part}_start"] = _day(data.ts[idx].min())
            window[f"{part}_end"] = _day(data.ts[idx].max())
        sides[side] = _fit_side(data, side, train, calib, test, calibration, regularization)
    model = ConfidenceModel(
        feature_names=FEATURE_NAMES,
        sides=sides,
        bracket=bracket,
        created_at=created,
        metadata={
            "sklearn_version": sklearn.__version__,
            "benchmark": benchmark,
            "symbols": data.symbols,
            "training_window": window,
            "source_files": {s: files[s].name for s in data.symbols},
            "model": f"logistic regression (C={regularization}), {calibration} calibration",
        },
    )
    save_model(model, Path(out_path))
    report = ModelReport(
        path=Path(out_path),
        created_at=created,
        symbols=data.symbols,
        window=window,
        metrics={side: m.metrics for side, m in sides.items()},
    )
    log.info(
        "ai_model_trained",
        path=str(out_path),
        symbols=data.symbols,
        **{
            f"{side}_{k}": report.metrics[side][k]
            for side in SIDES
            for k in ("brier", "brier_climatology", "ece", "base_rate_test", "auc")
        },
    )
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``python ai/ai_model.py --data DIR [--out PATH] [--symbols A,B]``: train and report."""
    import argparse

    parser = argparse.ArgumentParser(description="Train the calibrated confidence model.")
    parser.add_argument("--data", required=True, type=Path, help="folder with daily/SYMBOL-1d-*.csv")
    parser.add_argument("--out", type=Path, default=Path("models/confidence_model.json"))
    parser.add_argument("--symbols", default=None, help="comma list (default: every file)")
    parser.add_argument("--calibration", choices=("platt", "isotonic"), default="platt")
    args = parser.parse_args(argv)
    symbols = args.symbols.split(",") if args.symbols else None
    try:
        report = train_model(args.data, args.out, symbols=symbols, calibration=args.calibration)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
