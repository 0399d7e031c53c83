"""The indicators over whole histories: numpy in, numpy out, NaN while warming up.

Float64 arrays ordered oldest first; every function returns an array of the input's length.
The conventions (seeds, smoothing, first valid index) are listed in :mod:`market.indicators`,
the face callers import from. The recursions (EMA, Wilder) run through :func:`_smooth`: a
tight scalar loop for short histories, an exact chunked closed form for long ones.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

FloatArray = npt.NDArray[np.float64]

# Below this many recursion steps the scalar loop beats the chunked closed form.
_LOOP_LIMIT = 128
# Largest exponent of 1/beta inside one chunk: keeps beta**-k far from overflow while the
# relative rounding error stays at the 1e-15 level.
_MAX_CHUNK_EXPONENT = 200.0


def _array(values: npt.ArrayLike, name: str = "values") -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a one-dimensional array, got shape {array.shape}")
    return array


def _check_period(n: int, name: str = "n") -> None:
    if int(n) != n or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")


def _same_length(**arrays: FloatArray) -> int:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"arrays differ in length: {lengths}")
    return next(iter(lengths.values()), 0)


def _first_finite(x: FloatArray) -> int:
    """Index of the first finite value, or len(x) when there is none."""
    finite = np.flatnonzero(np.isfinite(x))
    return int(finite[0]) if finite.size else len(x)


def _seed(values: FloatArray | list[float]) -> float:
    """The mean that seeds a recursion, correctly rounded (the same in every code path)."""
    items = values.tolist() if isinstance(values, np.ndarray) else values
    return math.fsum(items) / len(items)


def _smooth(x: FloatArray, alpha: float, start: int, seed: float) -> FloatArray:
    """``y[start] = seed``; ``y[i] = y[i-1] + alpha * (x[i] - y[i-1])`` after; NaN before."""
    n = len(x)
    out = np.full(n, np.nan)
    if start >= n:
        return out
    out[start] = seed
    steps = n - start - 1
    if steps <= 0:
        return out
    if steps <= _LOOP_LIMIT:
        y = seed
        values = x[start + 1 :].tolist()
        result = [0.0] * steps
        for i, v in enumerate(values):
            y = y + alpha * (v - y)
            result[i] = y
        out[start + 1 :] = result
        return out
    # Closed form per chunk: y_j = beta**j * (y_0 + alpha * sum_{k<=j} x_k * beta**-k).
    beta = 1.0 - alpha
    if beta <= 0.0:  # alpha == 1: no memory, the output is the input
        out[start + 1 :] = x[start + 1 :]
        return out
    chunk = max(1, int(_MAX_CHUNK_EXPONENT / -math.log(beta)))
    powers = beta ** np.arange(1, min(chunk, steps) + 1, dtype=np.float64)
    previous = seed
    i = start + 1
    while i < n:
        j = min(n, i + chunk)
        p = powers[: j - i]
        y = p * (previous + alpha * np.cumsum(x[i:j] / p))
        out[i:j] = y
        previous = float(y[-1])
        i = j
    return out


# -- vectorized ------------------------------------------------------------------------------


def sma(x: npt.ArrayLike, n: int) -> FloatArray:
    """Simple moving average of the last ``n`` values; NaN where a window holds a NaN."""
    _check_period(n)
    values = _array(x)
    out = np.full(len(values), np.nan)
    if len(values) < n:
        return out
    finite = np.isfinite(values)
    first = _first_finite(values)
    reference = values[first] if first < len(values) else 0.0
    # Sums of deviations from a reference keep the running-sum differences accurate.
    deviation = np.where(finite, values - reference, 0.0)
    sums = np.concatenate(([0.0], np.cumsum(deviation)))
    gaps = np.concatenate(([0], np.cumsum(~finite)))
    window = (sums[n:] - sums[:-n]) / n + reference
    window[(gaps[n:] - gaps[:-n]) > 0] = np.nan
    out[n - 1 :] = window
    return out


def ema(x: npt.ArrayLike, n: int) -> FloatArray:
    """Exponential moving average (``alpha = 2/(n+1)``), seeded with the SMA of its first n.

    Leading NaNs are skipped (the EMA of an indicator that itself warms up, like the MACD
    line, starts ``n - 1`` bars after the first valid value).
    """
    _check_period(n)
    values = _array(x)
    first = _first_finite(values)
    if len(values) - first < n:
        return np.full(len(values), np.nan)
    seed = _seed(values[first : first + n])
    return _smooth(values, 2.0 / (n + 1.0), first + n - 1, seed)


def _wilder(values: FloatArray, n: int, first: int) -> FloatArray:
    """Wilder's smoothing (``alpha = 1/n``) seeded with the mean of ``values[first:first+n]``."""
    if len(values) - first < n:
        return np.full(len(values), np.nan)
    seed = _seed(values[first : first + n])
    return _smooth(values, 1.0 / n, first + n - 1, seed)


def rsi(close: npt.ArrayLike, n: int = 14) -> FloatArray:
    """Relative strength index with Wilder's smoothing; first value at index ``n``."""
    _check_period(n)
    prices = _array(close, "close")
    out = np.full(len(prices), np.nan)
    if len(prices) <= n:
        return out
    change = np.diff(prices)
    gain = _wilder(np.maximum(change, 0.0), n, 0)
    loss = _wilder(np.maximum(-change, 0.0), n, 0)
    total = gain + loss
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.where(total > 0.0, 100.0 * gain / total, 50.0)
    value[np.isnan(total)] = np.nan
    out[1:] = value
    return out


def macd(
    close: npt.ArrayLike, fast: int = 12, slow: int = 26, signal: int = 9
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """MACD line ``EMA(fast) - EMA(slow)``, its ``signal``-period EMA, and the histogram."""
    for name, period in (("fast", fast), ("slow", slow), ("signal", signal)):
        _check_period(period, name)
    prices = _array(close, "close")
    line = ema(prices, fast) - ema(prices, slow)
    signal_line = ema(line, signal)
    return line, signal_line, line - signal_line


def bollinger(
    close: npt.ArrayLike, n: int = 20, k: float = 2.0
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Bollinger bands ``(mid, upper, lower)``: SMA +/- k population standard deviations."""
    _check_period(n)
    prices = _array(close, "close")
    mid = np.full(len(prices), np.nan)
    spread = np.full(len(prices), np.nan)
    if len(prices) >= n:
        windows = sliding_window_view(prices, n)
        mean = windows.mean(axis=1)
        std = np.sqrt(((windows - mean[:, None]) ** 2).mean(axis=1))
        mid[n - 1 :] = mean
        spread[n - 1 :] = k * std
    return mid, mid + spread, mid - spread


def true_range(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike) -> FloatArray:
    """True range; the first bar, having no previous close, uses ``high - low``."""
    h, lo, c = _array(high, "high"), _array(low, "low"), _array(close, "close")
    _same_length(high=h, low=lo, close=c)
    out = h - lo
    if len(c) > 1:
        previous = c[:-1]
        out[1:] = np.maximum(out[1:], np.maximum(np.abs(h[1:] - previous), np.abs(lo[1:] - previous)))
    return out


def atr(
    high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, n: int = 14
) -> FloatArray:
    """Average true range with Wilder's smoothing; first value at index ``n - 1``."""
    _check_period(n)
    return _wilder(true_range(high, low, close), n, 0)


def vwap(
    high: npt.ArrayLike,
    low: npt.ArrayLike,
    close: npt.ArrayLike,
    volume: npt.ArrayLike,
    session_start_mask: npt.ArrayLike | None = None,
) -> FloatArray:
    """Volume-weighted average of the typical price ``(h + l + c) / 3``, per session.

    ``session_start_mask`` is True at the first bar of each session (see
    ``market_data.session_start_mask``); without it the whole array is one session.
    NaN until the session has traded some volume.
    """
    h, lo, c, v = _array(high, "high"), _array(low, "low"), _array(close, "close"), _array(volume, "volume")
    size = _same_length(high=h, low=lo, close=c, volume=v)
    weighted = np.cumsum((h + lo + c) / 3.0 * v)
    traded = np.cumsum(v)
    if session_start_mask is not None:
        mask = np.asarray(session_start_mask, dtype=bool)
        if len(mask) != size:
            raise ValueError(f"session_start_mask has {len(mask)} entries for {size} bars")
        if size:
            mask = mask.copy()
            mask[0] = True  # the first bar always opens a session
        starts = np.flatnonzero(mask)
        segment = np.cumsum(mask) - 1
        before_weighted = np.concatenate(([0.0], weighted))[starts]
        before_traded = np.concatenate(([0.0], traded))[starts]
        weighted = weighted - before_weighted[segment]
        traded = traded - before_traded[segment]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(traded > 0.0, weighted / traded, np.nan)


def volume_ratio(volume: npt.ArrayLike, n: int = 20) -> FloatArray:
    """Each bar's volume over the mean volume of the ``n`` bars before it (NaN for n bars)."""
    _check_period(n)
    v = _array(volume, "volume")
    out = np.full(len(v), np.nan)
    if len(v) <= n:
        return out
    previous = sma(v, n)[n - 1 : -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        out[n:] = np.where(previous > 0.0, v[n:] / previous, np.nan)
    return out


def support_resistance(
    high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, lookback: int = 20
) -> tuple[FloatArray, FloatArray]:
    """Rolling support (lowest low) and resistance (highest high) of the PREVIOUS ``lookback`` bars.

    The current bar is excluded so that a break of a level shows as ``close > resistance``.
    ``close`` is part of the shared signature and checked for length; the levels use highs
    and lows only. NaN for the first ``lookback`` bars.
    """
    _check_period(lookback, "lookback")
    h, lo, c = _array(high, "high"), _array(low, "low"), _array(close, "close")
    size = _same_length(high=h, low=lo, close=c)
    support = np.full(size, np.nan)
    resistance = np.full(size, np.nan)
    if size > lookback:
        support[lookback:] = sliding_window_view(lo, lookback).min(axis=1)[:-1]
        resistance[lookback:] = sliding_window_view(h, lookback).max(axis=1)[:-1]
    return support, resistance


def rate_of_change(close: npt.ArrayLike, n: int) -> FloatArray:
    """Fractional change over ``n`` bars: ``close[i] / close[i - n] - 1`` (0.02 = +2%)."""
    _check_period(n)
    prices = _array(close, "close")
    out = np.full(len(prices), np.nan)
    if len(prices) > n:
        with np.errstate(invalid="ignore", divide="ignore"):
            out[n:] = prices[n:] / prices[:-n] - 1.0
    return out
