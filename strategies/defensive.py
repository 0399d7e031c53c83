"""Defensive: when the account or the market is under stress, only take the best setups.

Active only when ``market_data.defensive`` is True: the loop sets it near the circuit
breaker (the day's loss at ``defensive.activation_breaker_fraction`` of it), in high
volatility, in drawdown, or with gap risk. Otherwise every answer is hold with reason
"defensive mode inactive".

When active it trades only ``defensive.symbols`` (large, liquid names), and only with the
trend: a buy requires price > medium MA > long MA. Confidence, base 0.40:

* +0.15 established uptrend (price > SMA medium > SMA long; required);
* +0.15 RSI between 40 and 65: neither stretched nor breaking down;
* +0.10 MACD line above its signal;
* +0.10 calm stock: ATR at most ``defensive.volatility_threshold`` (3%) of the price;
* +0.10 market regime "bull" or "range" (not "bear" or "volatile").

A signal below ``defensive.min_confidence`` (0.75) is held. Buys carry a tight stop
``defensive.stop_loss`` (2%) below the entry, a target at twice that distance, and
``metadata["size_multiplier"] = defensive.size_multiplier`` (0.5) for the risk manager.

A "sell" (exit) of a defensive symbol scores the mirror image: price below the medium MA
(required), RSI below 50, MACD below signal, histogram falling, regime "bear"/"volatile".
"""

from __future__ import annotations

import math

from market.indicators import IndicatorSnapshot
from market.market_data import MarketData
from strategies.base import BaseStrategy, Scorecard, Signal

BASE = 0.40
TREND = 0.15
RSI_BAND = (40.0, 65.0)
RSI_POINTS = 0.15
MACD_POINTS = 0.10
CALM = 0.10
REGIME = 0.10
TARGET_MULTIPLE = 2.0
INACTIVE = "defensive mode inactive"


class Defensive(BaseStrategy):
    """Half-size, tight-stop, high-confidence trades in large liquid names under stress."""

    name = "defensive"
    description = "in defensive mode: trend trades in large liquid names, 2% stops, half size"

    async def evaluate_opportunity(self, symbol: str, market_data: MarketData) -> Signal:
        cfg = self.settings.defensive
        if not market_data.defensive:
            return self.hold(symbol, INACTIVE)
        if symbol not in cfg.symbols:
            return self.hold(
                symbol, f"defensive mode: {symbol} is not one of {', '.join(cfg.symbols)}"
            )
        strategy = self.settings.strategy
        snap = self.snapshot(market_data)
        needed = max(strategy.ma_long, strategy.ma_medium, 35, strategy.rsi_period + 1)
        if (missing := self.missing_history(snap, needed)) is not None:
            return self.hold(symbol, missing)

        if snap.price > snap.sma_medium:
            return self._buy(symbol, market_data, snap)
        return self._sell(symbol, market_data, snap)

    def _buy(self, symbol: str, market_data: MarketData, snap: IndicatorSnapshot) -> Signal:
        cfg = self.settings.defensive
        strategy = self.settings.strategy
        card = Scorecard(BASE)
        uptrend = card.check(
            snap.price > snap.sma_medium > snap.sma_long,
            TREND,
            f"price {snap.price:.2f} > SMA{strategy.ma_medium} {snap.sma_medium:.2f} "
            f"> SMA{strategy.ma_long} {snap.sma_long:.2f}",
        )
        low, high = RSI_BAND
        card.check(low <= snap.rsi <= high, RSI_POINTS, f"RSI {snap.rsi:.1f} within {low:g}..{high:g}")
        card.check(snap.macd > snap.macd_signal, MACD_POINTS, f"MACD {snap.macd:.3f} > signal {snap.macd_signal:.3f}")
        card.check(
            snap.atr_pct <= cfg.volatility_threshold,
            CALM,
            f"ATR {snap.atr_pct:.2%} of price <= {cfg.volatility_threshold:.0%}",
        )
        card.check(market_data.regime in ("bull", "range"), REGIME, f"regime {market_data.regime} is bull/range")
        if not uptrend:
            return self.hold(symbol, f"defensive mode: no established uptrend; {card.summary()}")
        if card.confidence < cfg.min_confidence:
            return self.hold(
                symbol,
                f"defensive mode: confidence {card.confidence:.2f} < {cfg.min_confidence:.2f} required; "
                f"{card.summary()}",
            )
        entry = self.entry_price(snap, market_data)
        stop = self.default_stop(entry, cfg.stop_loss)
        target = self.default_target(entry, cfg.stop_loss * TARGET_MULTIPLE)
        reasoning = (
            f"defensive buy at {cfg.size_multiplier:g}x size: {card.summary()}; entry {entry:.2f}, "
            f"stop {stop:.2f} ({cfg.stop_loss:.0%}), target {target:.2f} ({TARGET_MULTIPLE:g}:1)"
        )
        return self.signal(
            symbol, "buy", card.confidence, reasoning, stop=stop, target=target,
            size_multiplier=cfg.size_multiplier,
        )

    def _sell(self, symbol: str, market_data: MarketData, snap: IndicatorSnapshot) -> Signal:
        cfg = self.settings.defensive
        strategy = self.settings.strategy
        card = Scorecard(BASE)
        card.check(
            snap.price < snap.sma_medium,
            TREND,
            f"price {snap.price:.2f} < SMA{strategy.ma_medium} {snap.sma_medium:.2f}",
        )
        card.check(snap.rsi < 50.0, RSI_POINTS, f"RSI {snap.rsi:.1f} < 50")
        card.check(snap.macd < snap.macd_signal, MACD_POINTS, f"MACD {snap.macd:.3f} < signal {snap.macd_signal:.3f}")
        falling = math.isfinite(snap.macd_hist_prev) and snap.macd_hist < snap.macd_hist_prev
        card.check(falling, CALM, f"histogram falling {snap.macd_hist_prev:+.3f} -> {snap.macd_hist:+.3f}")
        card.check(
            market_data.regime in ("bear", "volatile"),
            REGIME,
            f"regime {market_data.regime} is bear/volatile",
        )
        if card.confidence < cfg.min_confidence:
            return self.hold(
                symbol,
                f"defensive mode: exit confidence {card.confidence:.2f} < {cfg.min_confidence:.2f}; "
                f"{card.summary()}",
            )
        return self.signal(symbol, "sell", card.confidence, f"defensive exit: {card.summary()}")
