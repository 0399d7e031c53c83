"""Breakout: trade a decisive break of the recent range on heavy volume.

Levels: resistance is the highest high and support the lowest low of the 20 daily bars
before today. A buy needs the price above ``resistance x (1 + strategy.breakout_buffer)``
(1% buffer) and volume at least ``strategy.breakout_volume_ratio`` (2x) the 20-day average
(projected while the session is open). A close below ``support x (1 - buffer)`` on the same
volume is a "sell": we trade long only by default, so it means exit a held position.

Confidence: base 0.55; +0.15 on very heavy volume (1.5x the required ratio, 3x by
default); +0.10 when the price is above the medium moving average (the trend agrees);
+0.10 when RSI is not overbought (room to run); +0.10 when the price sits in the top
quarter of the day's range (a strong close; bottom quarter for a sell). In a "bear" regime
a buy's confidence is multiplied by 0.80.

Stop: just under the broken level (``resistance x (1 - buffer)``), but never further than
``trading.stop_loss`` from the entry; target: the stop distance times the configured
reward/risk (2:1 by default).
"""

from __future__ import annotations

from market.indicators import IndicatorSnapshot
from market.market_data import MarketData
from strategies.base import BaseStrategy, Scorecard, Signal

LOOKBACK = 20  # bars of range; matches compute_snapshot's support/resistance
BASE = 0.55
HEAVY_VOLUME = 0.15
HEAVY_VOLUME_FACTOR = 1.5
TREND = 0.10
ROOM = 0.10
STRONG_CLOSE = 0.10
BEAR_FACTOR = 0.80


class Breakout(BaseStrategy):
    """Breaks of 20-day support/resistance by more than 1% on 2x volume."""

    name = "breakout"
    description = "close beyond 20-day resistance/support by 1% on 2x volume"

    async def evaluate_opportunity(self, symbol: str, market_data: MarketData) -> Signal:
        cfg = self.settings.strategy
        snap = self.snapshot(market_data)
        needed = max(LOOKBACK + 1, cfg.ma_medium, cfg.rsi_period + 1)
        if (missing := self.missing_history(snap, needed)) is not None:
            return self.hold(symbol, missing)

        buffer = cfg.breakout_buffer
        upper = snap.resistance * (1.0 + buffer)
        lower = snap.support * (1.0 - buffer)
        volume = self.volume_ratio(snap, market_data)
        need_volume = cfg.breakout_volume_ratio

        def describe() -> str:
            return (
                f"price {snap.price:.2f}, {LOOKBACK}-day resistance {snap.resistance:.2f} "
                f"(break above {upper:.2f}), support {snap.support:.2f} (break below {lower:.2f}); "
                f"volume {volume:.2f}x (need {need_volume:.2f}x)"
            )

        if snap.price > upper:
            action = "buy"
        elif snap.price < lower:
            action = "sell"
        else:  # most symbols, every cycle: the reasoning is formatted only when read
            return self.hold(symbol, lambda: f"inside the range: {describe()}")
        levels = describe()
        if not volume >= cfg.breakout_volume_ratio:
            return self.hold(symbol, f"{action} break without volume: {levels}")

        card = self._score(action, snap, market_data, volume)
        if action == "sell":
            return self.signal(symbol, "sell", card.confidence, f"support broken, exit: {levels}; {card.summary()}")

        if market_data.regime == "bear":
            card.scale(BEAR_FACTOR, "regime bear")
        entry = self.entry_price(snap, market_data)
        stop = max(snap.resistance * (1.0 - buffer), self.default_stop(entry))
        if not stop < entry:  # the last trade already fell back under the level
            return self.hold(symbol, f"entry {entry:.2f} is back under the broken level: {levels}")
        target = entry + (entry - stop) * self.reward_to_risk()
        reasoning = (
            f"breakout buy: {levels}; {card.summary()}; entry {entry:.2f}, stop {stop:.2f} "
            f"(under the broken level, at most {self.settings.trading.stop_loss:.1%}), "
            f"target {target:.2f} ({self.reward_to_risk():.1f}:1)"
        )
        return self.signal(
            symbol, "buy", card.confidence, reasoning, stop=stop, target=target,
            resistance=snap.resistance, support=snap.support,
        )

    def _score(
        self, action: str, snap: IndicatorSnapshot, market_data: MarketData, volume: float
    ) -> Scorecard:
        cfg = self.settings.strategy
        day_high = float(market_data.daily.high[-1])
        day_low = float(market_data.daily.low[-1])
        span = day_high - day_low
        position = (snap.price - day_low) / span if span > 0.0 else 0.5
        heavy = cfg.breakout_volume_ratio * HEAVY_VOLUME_FACTOR
        card = Scorecard(BASE)
        card.check(volume >= heavy, HEAVY_VOLUME, f"volume {volume:.2f}x >= {heavy:.2f}x")
        if action == "buy":
            card.check(snap.price > snap.sma_medium, TREND, f"above SMA{cfg.ma_medium} {snap.sma_medium:.2f}")
            card.check(snap.rsi < cfg.rsi_overbought, ROOM, f"RSI {snap.rsi:.1f} < {cfg.rsi_overbought:g}")
            card.check(position >= 0.75, STRONG_CLOSE, f"price in top quarter of day range ({position:.0%})")
        else:
            card.check(snap.price < snap.sma_medium, TREND, f"below SMA{cfg.ma_medium} {snap.sma_medium:.2f}")
            card.check(snap.rsi > cfg.rsi_oversold, ROOM, f"RSI {snap.rsi:.1f} > {cfg.rsi_oversold:g}")
            card.check(position <= 0.25, STRONG_CLOSE, f"price in bottom quarter of day range ({position:.0%})")
        return card
