"""Example user strategy: trade MACD crossovers.

To add your own strategy, copy this file to ``strategies/<your_name>.py``, set ``name`` to
the same name, and list it in the config: ``[strategy] enabled = [..., "<your_name>"]``.
"""

from __future__ import annotations

from market.market_data import MarketData
from strategies.base import BaseStrategy, Signal


class MACDCrossover(BaseStrategy):
    """Buy when the MACD histogram turns positive, exit when it turns negative."""

    name = "macd_crossover"

    async def evaluate_opportunity(self, symbol: str, market_data: MarketData) -> Signal:
        snap = self.snapshot(market_data)  # indicators of the daily bars, shared per cycle
        if snap.bars < 35:
            return self.hold(symbol, f"needs 35 daily bars for MACD(12, 26, 9), has {snap.bars}")

        before, now = snap.macd_hist_prev, snap.macd_hist
        numbers = f"MACD {snap.macd:.3f}, signal {snap.macd_signal:.3f}, histogram {before:+.3f} -> {now:+.3f}"

        if before <= 0.0 < now:
            confidence = 0.60
            confidence += 0.10 if snap.rsi < 70 else 0.0  # room to run
            confidence += 0.10 if snap.price > snap.sma_medium else 0.0  # with the trend
            entry = self.entry_price(snap, market_data)
            return self.signal(
                symbol, "buy", confidence,
                f"bullish MACD crossover: {numbers}; RSI {snap.rsi:.1f}; confidence {confidence:.2f}",
                stop=self.default_stop(entry), target=self.default_target(entry),
            )
        if before >= 0.0 > now:
            return self.signal(symbol, "sell", 0.60, f"bearish MACD crossover: {numbers}")
        return self.hold(symbol, f"no crossover: {numbers}")
