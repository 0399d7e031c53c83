"""Mean reversion: buy a stretched sell-off, exit a stretched rally, hold at most 5 days.

Triggers (either one) for a buy:

* A. the price is ``mean_reversion.deviation_threshold`` (15%) or more below its medium or
  long moving average (the seed's threshold);
* B. RSI below ``mean_reversion.rsi_oversold`` (30) and the day's low touched the lower
  Bollinger band (20, 2).

and, required, volume of at least ``mean_reversion.volume_confirmation`` (1.2x) the 20-day
average (projected while the session is open): capitulation, not drift.

A "sell" (exit) mirrors it: 15% above an average, or RSI above ``rsi_overbought`` (70) with
the day's high at the upper band, on 1.2x volume.

Confidence: base 0.50; +0.20 when both triggers agree; +0.10 when RSI is 5 points or more
beyond its threshold; +0.10 on strong volume (1.5x the confirmation level); +0.10 when the
day already reverses (close above open for a buy, below for a sell). In a "bear" regime a
buy's confidence is multiplied by 0.80 (fading a falling market).

Buys carry ``max_hold_days`` (5), a stop ``trading.stop_loss`` below the entry and a target
at the reversion to the medium average, capped at ``trading.take_profit``; a buy whose
reward would be smaller than its risk is held instead.
"""

from __future__ import annotations

import math

from market.market_data import MarketData
from strategies.base import BaseStrategy, Scorecard, Signal

BASE = 0.50
BOTH_TRIGGERS = 0.20
DEEP_RSI = 0.10
DEEP_RSI_POINTS = 5.0
STRONG_VOLUME = 0.10
STRONG_VOLUME_FACTOR = 1.5
REVERSAL = 0.10
BEAR_FACTOR = 0.80


class MeanReversion(BaseStrategy):
    """Fade 15% deviations from the moving averages and RSI/Bollinger extremes."""

    name = "mean_reversion"
    description = "15% from the MA or RSI<30/>70 at the Bollinger band, 1.2x volume, 5-day hold"

    async def evaluate_opportunity(self, symbol: str, market_data: MarketData) -> Signal:
        cfg = self.settings.mean_reversion
        strategy = self.settings.strategy
        snap = self.snapshot(market_data)
        needed = max(strategy.ma_medium, strategy.rsi_period + 1, 21)
        if (missing := self.missing_history(snap, needed)) is not None:
            return self.hold(symbol, missing)

        deviations = {
            f"SMA{strategy.ma_medium}": snap.price / snap.sma_medium - 1.0,
            f"SMA{strategy.ma_long}": snap.price / snap.sma_long - 1.0,
        }
        deviations = {k: v for k, v in deviations.items() if math.isfinite(v)}
        low_name, low_dev = min(deviations.items(), key=lambda kv: kv[1])
        high_name, high_dev = max(deviations.items(), key=lambda kv: kv[1])
        day_low = float(market_data.daily.low[-1])
        day_high = float(market_data.daily.high[-1])
        day_open = float(market_data.daily.open[-1])
        threshold = cfg.deviation_threshold

        oversold_dev = low_dev <= -threshold
        oversold_band = snap.rsi < cfg.rsi_oversold and day_low <= snap.bb_lower
        overbought_dev = high_dev >= threshold
        overbought_band = snap.rsi > cfg.rsi_overbought and day_high >= snap.bb_upper
        volume = self.volume_ratio(snap, market_data)
        need_volume = cfg.volume_confirmation

        def facts() -> str:
            return (
                f"price {snap.price:.2f} is {low_dev:+.1%} from {low_name}"
                + (f" and {high_dev:+.1%} from {high_name}" if high_name != low_name else "")
                + f" (threshold {threshold:.0%}); RSI {snap.rsi:.1f}; "
                f"Bollinger {snap.bb_lower:.2f}..{snap.bb_upper:.2f}, day range {day_low:.2f}..{day_high:.2f}; "
                f"volume {volume:.2f}x (need {need_volume:.2f}x)"
            )

        if oversold_dev or oversold_band:
            action = "buy"
            both = oversold_dev and oversold_band
            deep = snap.rsi <= cfg.rsi_oversold - DEEP_RSI_POINTS
            reversing = snap.price > day_open
        elif overbought_dev or overbought_band:
            action = "sell"
            both = overbought_dev and overbought_band
            deep = snap.rsi >= cfg.rsi_overbought + DEEP_RSI_POINTS
            reversing = snap.price < day_open
        else:  # most symbols, every cycle: the reasoning is formatted only when read
            return self.hold(symbol, lambda: f"no extreme: {facts()}")
        if not volume >= cfg.volume_confirmation:
            return self.hold(symbol, f"{action} setup without volume confirmation: {facts()}")

        card = Scorecard(BASE)
        card.check(both, BOTH_TRIGGERS, "deviation and RSI/Bollinger triggers agree")
        card.check(deep, DEEP_RSI, f"RSI {snap.rsi:.1f} {DEEP_RSI_POINTS:g}+ points beyond its threshold")
        card.check(
            volume >= cfg.volume_confirmation * STRONG_VOLUME_FACTOR,
            STRONG_VOLUME,
            f"volume {volume:.2f}x >= {cfg.volume_confirmation * STRONG_VOLUME_FACTOR:.2f}x",
        )
        card.check(
            reversing,
            REVERSAL,
            f"day reversing (open {day_open:.2f}, now {snap.price:.2f})",
        )

        if action == "sell":
            return self.signal(symbol, "sell", card.confidence, f"mean-reversion exit: {facts()}; {card.summary()}")

        if market_data.regime == "bear":
            card.scale(BEAR_FACTOR, "regime bear")
        entry = self.entry_price(snap, market_data)
        stop = self.default_stop(entry)
        target = min(snap.sma_medium, self.default_target(entry))
        reward, risk = target - entry, entry - stop
        if not reward >= risk:
            return self.hold(
                symbol,
                f"reward {reward / entry:+.1%} to SMA{strategy.ma_medium} {snap.sma_medium:.2f} "
                f"is smaller than the risk {risk / entry:.1%}: {facts()}",
            )
        reasoning = (
            f"mean-reversion buy: {facts()}; {card.summary()}; entry {entry:.2f}, stop {stop:.2f}, "
            f"target {target:.2f} (reversion to SMA{strategy.ma_medium} {snap.sma_medium:.2f}, "
            f"capped at +{self.settings.trading.take_profit:.0%}); hold at most {cfg.max_hold_days} days"
        )
        return self.signal(
            symbol, "buy", card.confidence, reasoning, stop=stop, target=target,
            max_hold_days=cfg.max_hold_days, deviation=low_dev,
        )
