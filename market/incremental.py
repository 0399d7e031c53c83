"""The indicators bar by bar: each ``Incremental*`` class gives, per new bar, the value the
vectorized function of :mod:`market.vectorized` would give for the history so far (tested
to 1e-9 relative on real bars), so a caller can update without recomputing a history.
"""

from __future__ import annotations

import math
from collections import deque
from typing import NamedTuple

from market.vectorized import _check_period, _seed

class MACDValue(NamedTuple):
    """One bar of MACD: line, signal and histogram."""

    line: float
    signal: float
    hist: float


class BollingerValue(NamedTuple):
    """One bar of Bollinger bands."""

    mid: float
    upper: float
    lower: float


class _Smoother:
    """Exponential smoothing seeded with the mean of its first ``n`` inputs (NaN until then)."""

    __slots__ = ("n", "alpha", "value", "skip_leading_nan", "_seed")

    def __init__(self, n: int, alpha: float, skip_leading_nan: bool = False) -> None:
        self.n = n
        self.alpha = alpha
        self.skip_leading_nan = skip_leading_nan
        self.value = math.nan
        self._seed: list[float] | None = []

    def update(self, x: float) -> float:
        if self.skip_leading_nan and self._seed == [] and math.isnan(x):
            return self.value
        if self._seed is None:
            self.value = self.value + self.alpha * (x - self.value)
        else:
            self._seed.append(x)
            if len(self._seed) == self.n:
                self.value = _seed(self._seed)
                self._seed = None
        return self.value


class IncrementalSMA:
    """Simple moving average, one value at a time; equals :func:`sma` at every step."""

    def __init__(self, n: int) -> None:
        _check_period(n)
        self.n = n
        self._window: deque[float] = deque(maxlen=n)
        self.value = math.nan

    def update(self, x: float) -> float:
        self._window.append(float(x))
        if len(self._window) == self.n:
            self.value = math.fsum(self._window) / self.n
        return self.value


class IncrementalEMA:
    """Exponential moving average, one value at a time; equals :func:`ema` at every step."""

    def __init__(self, n: int) -> None:
        _check_period(n)
        self.n = n
        # Leading NaNs are skipped, as ema() does (the MACD signal starts on a warm line).
        self._smoother = _Smoother(n, 2.0 / (n + 1.0), skip_leading_nan=True)

    @property
    def value(self) -> float:
        return self._smoother.value

    def update(self, x: float) -> float:
        return self._smoother.update(float(x))


class IncrementalRSI:
    """Wilder RSI, one close at a time; equals :func:`rsi` at every step."""

    def __init__(self, n: int = 14) -> None:
        _check_period(n)
        self.n = n
        self._previous: float | None = None
        self._gain = _Smoother(n, 1.0 / n)
        self._loss = _Smoother(n, 1.0 / n)
        self.value = math.nan

    def update(self, close: float) -> float:
        price = float(close)
        if self._previous is not None:
            change = price - self._previous
            gain = self._gain.update(max(change, 0.0))
            loss = self._loss.update(max(-change, 0.0))
            total = gain + loss
            if math.isnan(total):
                self.value = math.nan
            else:
                self.value = 100.0 * gain / total if total > 0.0 else 50.0
        self._previous = price
        return self.value


class IncrementalMACD:
    """MACD line, signal and histogram, one close at a time; equals :func:`macd`."""

    def __init__(self, fast: int = 12, slow: int = 26, signal: int = 9) -> None:
        self._fast = IncrementalEMA(fast)
        self._slow = IncrementalEMA(slow)
        self._signal = IncrementalEMA(signal)
        self.value = MACDValue(math.nan, math.nan, math.nan)

    def update(self, close: float) -> MACDValue:
        line = self._fast.update(close) - self._slow.update(close)
        signal = self._signal.update(line)
        self.value = MACDValue(line, signal, line - signal)
        return self.value


class IncrementalATR:
    """Wilder ATR, one bar at a time; equals :func:`atr` at every step."""

    def __init__(self, n: int = 14) -> None:
        _check_period(n)
        self.n = n
        self._previous_close: float | None = None
        self._smoother = _Smoother(n, 1.0 / n)

    @property
    def value(self) -> float:
        return self._smoother.value

    def update(self, high: float, low: float, close: float) -> float:
        h, lo = float(high), float(low)
        tr = h - lo
        if self._previous_close is not None:
            tr = max(tr, abs(h - self._previous_close), abs(lo - self._previous_close))
        self._previous_close = float(close)
        return self._smoother.update(tr)


class IncrementalBollinger:
    """Bollinger bands, one close at a time; equals :func:`bollinger` at every step."""

    def __init__(self, n: int = 20, k: float = 2.0) -> None:
        _check_period(n)
        self.n = n
        self.k = k
        self._window: deque[float] = deque(maxlen=n)
        self.value = BollingerValue(math.nan, math.nan, math.nan)

    def update(self, close: float) -> BollingerValue:
        self._window.append(float(close))
        if len(self._window) == self.n:
            mean = math.fsum(self._window) / self.n
            spread = self.k * math.sqrt(math.fsum((x - mean) ** 2 for x in self._window) / self.n)
            self.value = BollingerValue(mean, mean + spread, mean - spread)
        return self.value


class IncrementalVWAP:
    """Session VWAP, one bar at a time; equals :func:`vwap` at every step.

    Pass ``new_session=True`` with the first bar of each session.
    """

    def __init__(self) -> None:
        self._weighted = 0.0
        self._traded = 0.0
        self.value = math.nan

    def update(
        self, high: float, low: float, close: float, volume: float, new_session: bool = False
    ) -> float:
        if new_session:
            self._weighted = 0.0
            self._traded = 0.0
        v = float(volume)
        self._weighted += (float(high) + float(low) + float(close)) / 3.0 * v
        self._traded += v
        self.value = self._weighted / self._traded if self._traded > 0.0 else math.nan
        return self.value
