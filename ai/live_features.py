"""The model's inputs read from live market data at its last bar: the features of one symbol
(today's partial volume projected to a full day) and the market regime from the benchmark.
Used by :class:`ai_analyzer.AIAnalyzer` for every signal; the training side reads the same
functions of :mod:`ai.ai_model` over whole histories."""

from __future__ import annotations

import math

import numpy as np

from ai import ai_model
from ai.ai_model import FEATURE_NAMES, Regime
from market.market_data import BarSeries, MarketData

#: Bars of daily history used for features (the EMA recursions have converged long before).
FEATURE_WINDOW_BARS = 500
#: Bars of benchmark history used for the regime (MA200 plus the 20-day windows).
REGIME_WINDOW_BARS = ai_model.REGIME_LONG_MA + 60
#: A partial day with less than this share of its usual volume is read as a normal day.
MIN_VOLUME_PROGRESS = 0.10
#: Where the features are cached in ``MarketData.derived`` for the rest of the cycle.
FEATURES_CACHE_KEY = "ai_features"


def extract_features(market_data: MarketData) -> dict[str, float]:
    """The model's features (:data:`ai.ai_model.FEATURE_NAMES`) at the last daily bar.

    Uses only bars up to and including the last one (today's partial bar while a session is
    under way, whose volume is projected to a full day with ``market_data.volume_progress``;
    before about 10% of a day's volume has traded, today's volume is read as a normal day's).
    Beta and relative strength use ``market_data.benchmark`` (SPY); without one they are
    neutral (1.0 and 0.0). Features that need more history than given are NaN (a symbol
    needs :data:`ai.ai_model.MIN_HISTORY_BARS` daily bars).
    """
    daily = market_data.daily.tail(FEATURE_WINDOW_BARS)
    if len(daily) == 0:
        return {name: math.nan for name in FEATURE_NAMES}
    volume = np.array(daily.volume, dtype=float)
    progress = market_data.volume_progress
    if progress < 1.0 and len(volume) > 1:
        if progress >= MIN_VOLUME_PROGRESS:
            volume[-1] = volume[-1] / progress
        else:
            previous = volume[-21:-1]
            volume[-1] = float(previous.mean())
    bench_close = None
    if market_data.benchmark is not None and len(market_data.benchmark):
        bench = market_data.benchmark.tail(FEATURE_WINDOW_BARS + 50)
        bench_close = ai_model.align_benchmark(daily.ts, bench.ts, bench.close)
    return ai_model.feature_row(daily.high, daily.low, daily.close, volume, bench_close)


def detect_regime(benchmark: BarSeries) -> Regime:
    """The market regime at the benchmark's last bar: bull, bear, volatile or range.

    Thresholds (see :func:`ai.ai_model.regime_series`): volatile when the annualised volatility
    of the last 20 daily returns exceeds 30%; bull when the close is above its 50-day average,
    that average above the 200-day one (or the mean of all bars when fewer) and the 20-day
    return above +2%; bear when the close is below its 50-day average and the 20-day return
    below -2%; range otherwise, and with fewer than 51 bars.
    """
    # A function of the series' bars, which never change: every symbol of a cycle shares
    # one benchmark series, so it is computed once per series.
    memo = benchmark.memo() if isinstance(benchmark, BarSeries) else None
    key = ("ai_regime", REGIME_WINDOW_BARS)
    if memo is not None:
        cached = memo.get(key)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
    close = np.asarray(benchmark.tail(REGIME_WINDOW_BARS).close, dtype=float)
    regime: Regime = "range" if len(close) == 0 else ai_model.latest_regime(close)
    if memo is not None:
        memo[key] = regime
    return regime
