"""Technical indicators over numpy arrays, vectorized and incremental, with identical results.

Every vectorized function takes float64 arrays ordered oldest first and returns arrays of the
same length, NaN while the indicator is still warming up. Each ``Incremental*`` class gives,
bar by bar, the value the vectorized function would give for the history so far (tested to
1e-9 relative on real bars), so the loop can update indicators per new bar without
recomputing a history.

Conventions (checked against the ``ta`` library in ``tests/test_indicators.py``):

* SMA: plain mean of the last ``n`` values; first value at index ``n - 1``.
* EMA: smoothing ``alpha = 2 / (n + 1)``, **seeded with the SMA of the first n values** (the
  common charting convention); first value at index ``n - 1``. ``ta`` (pandas
  ``ewm(adjust=False)``) seeds with the first value instead; the two differ by a factor
  ``(1 - alpha) ** k`` that has decayed below 1e-9 after a few hundred bars.
* RSI: Wilder's smoothing (``alpha = 1 / n``) of gains and losses, seeded with their plain
  mean over the first ``n`` changes; first value at index ``n``. ``RSI = 100 * avg_gain /
  (avg_gain + avg_loss)``: 100 when there were only gains, 50 when the price did not move.
  ``ta`` seeds its smoothing at the first bar (same decay argument as for the EMA).
* MACD: ``EMA(fast) - EMA(slow)``; the signal is the EMA of the MACD line seeded from its
  first ``signal`` valid values; histogram = line - signal.
* Bollinger: SMA middle band, population standard deviation (``ddof = 0``, as ``ta``).
* ATR: true range with ``high - low`` for the first bar (no previous close), Wilder's
  smoothing seeded with the mean of the first ``n`` true ranges (index ``n - 1``); this is
  exactly ``ta``'s convention.
* VWAP: cumulative typical-price x volume over cumulative volume, restarting at each
  session start; NaN until some volume has traded in the session.

Recursions (EMA, Wilder) cannot be vectorized directly; short histories use a tight scalar
loop, long ones an exact closed form evaluated in numerically safe chunks (see
``bench/bench_indicators.py`` for the figures).

The functions live by responsibility: :mod:`market.vectorized` (whole histories, and the
recursion helpers), :mod:`market.incremental` (bar by bar) and :mod:`market.snapshot` (the
latest values strategies read, with its caches). Import them from here.
"""

from __future__ import annotations

from market.incremental import (
    BollingerValue,
    IncrementalATR,
    IncrementalBollinger,
    IncrementalEMA,
    IncrementalMACD,
    IncrementalRSI,
    IncrementalSMA,
    IncrementalVWAP,
    MACDValue,
)
from market.snapshot import (
    _PREFIX_CACHE,  # the snapshot caches, cleared by tests
    _PRIMED,
    SNAPSHOT_BARS,
    IndicatorSnapshot,
    _computed_prefix_key,
    _prefix_key,
    compute_snapshot,
    prime_snapshots,
)
from market.vectorized import (
    _LOOP_LIMIT,  # the recursion's internals, which ai.ai_model's batched features mirror
    _MAX_CHUNK_EXPONENT,
    FloatArray,
    _first_finite,
    _seed,
    _smooth,
    _wilder,
    atr,
    bollinger,
    ema,
    macd,
    rate_of_change,
    rsi,
    sma,
    support_resistance,
    true_range,
    volume_ratio,
    vwap,
)

__all__ = [
    "BollingerValue",
    "IncrementalATR",
    "IncrementalBollinger",
    "IncrementalEMA",
    "IncrementalMACD",
    "IncrementalRSI",
    "IncrementalSMA",
    "IncrementalVWAP",
    "IndicatorSnapshot",
    "MACDValue",
    "atr",
    "bollinger",
    "compute_snapshot",
    "prime_snapshots",
    "ema",
    "macd",
    "rate_of_change",
    "rsi",
    "sma",
    "support_resistance",
    "true_range",
    "volume_ratio",
    "vwap",
]
