"""SMA crossover: the textbook trend signal, and the reference strategy of the backtest benchmark.

Buy when the 10-session simple moving average of the daily close crosses above the 30-session
one (it was at or below it on the previous bar and is above it now), with the configured
bracket (``trading.stop_loss`` below and ``trading.take_profit`` above the entry: 3% / 6% by
default). Exit ("sell") when the 10-session average crosses back below the 30-session one.
Everything else is a hold. The confidence is a fixed 0.60: this strategy makes no claim
about its odds; the AI analyzer scores the idea.

Enable it with ``[strategy] enabled = ["sma_crossover"]`` (it is not in the default set).
``bench/bench_backtest.py`` runs it through the full loop next to backtrader running the
same rule, so the two can be compared bar for bar.
"""

from __future__ import annotations

import math

from market.market_data import MarketData
from strategies.base import BaseStrategy, Signal

FAST = 10
SLOW = 30
CONFIDENCE = 0.60


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


class SmaCrossover(BaseStrategy):
    """10/30 simple-moving-average crossover on daily closes, with a stop and target bracket."""

    name = "sma_crossover"
    description = "SMA(10) crossing SMA(30): buy with a 3%/6% bracket, exit on the cross back"

    async def evaluate_opportunity(self, symbol: str, market_data: MarketData) -> Signal:
        closes = market_data.daily.close[-(SLOW + 1):].tolist()
        if len(closes) < SLOW + 1:
            return self.hold(symbol, f"insufficient history: {len(closes)} daily bars, need {SLOW + 1}")
        fast_now, slow_now = _mean(closes[-FAST:]), _mean(closes[-SLOW:])
        fast_before, slow_before = _mean(closes[-FAST - 1:-1]), _mean(closes[-SLOW - 1:-1])
        numbers = (f"SMA{FAST} {fast_before:.2f} -> {fast_now:.2f}, "
                   f"SMA{SLOW} {slow_before:.2f} -> {slow_now:.2f}")
        if fast_before <= slow_before and fast_now > slow_now:
            entry = closes[-1]  # the decision's close, never the entry session's open
            return self.signal(
                symbol, "buy", CONFIDENCE, f"SMA{FAST} crossed above SMA{SLOW}: {numbers}",
                stop=self.default_stop(entry), target=self.default_target(entry),
            )
        if fast_before >= slow_before and fast_now < slow_now:
            return self.signal(symbol, "sell", CONFIDENCE, f"SMA{FAST} crossed below SMA{SLOW}: {numbers}")
        return self.hold(symbol, f"no crossover: {numbers}")
