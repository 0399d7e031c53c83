"""Features of a trade idea from daily bars, and the market regime (issue 17: split out of
``ai/ai_model.py``, whose face still re-exports every name).

Every feature at a row uses bars at or before that row only (:func:`feature_matrix` for
every row, :func:`feature_row` for the last one with identical values). The regime of the
benchmark (:func:`regime_series`, :func:`latest_regime`) feeds the context table.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

from market import indicators
from market.market_data import exchange_day_numbers

Regime = Literal["bull", "bear", "volatile", "range"]
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

TRADING_DAYS_PER_YEAR = 252


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
