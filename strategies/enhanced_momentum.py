"""Enhanced momentum: ride a strong, heavily traded move that the indicators confirm.

Screen (both required): the 1-day move exceeds ``strategy.momentum_min_move`` (2%) in either
direction, and volume exceeds ``strategy.momentum_volume_ratio`` (1.5x) the 20-day average
(projected to a full day while the session is open).

Confirmations for an up move (a buy), each worth +0.15 on a base of 0.40:

1. RSI below ``strategy.rsi_overbought`` (70): required, we do not buy an overbought stock;
2. MACD line above its signal line;
3. MACD histogram rising (today's above yesterday's);
4. price above both the short and the medium moving average.

A buy needs the RSI check and at least three confirmations in all. A down move mirrors this
into a "sell" (exit) signal: RSI above oversold, MACD below signal, histogram falling, price
below both averages, three of four required.

Regime: no new longs when the market regime is "bear"; confidence x0.80 when "volatile".

Stop: two ATRs below the entry, kept within half to one and a half times
``trading.stop_loss``; without an ATR, ``trading.stop_loss``. Target: the stop distance
times the configured reward/risk (take_profit / stop_loss = 2:1 by default).
"""

from __future__ import annotations

import math

from market.indicators import IndicatorSnapshot
from market.market_data import MarketData
from strategies.base import BaseStrategy, Scorecard, Signal

BASE = 0.40
WEIGHT = 0.15
REQUIRED_CONFIRMATIONS = 3
VOLATILE_FACTOR = 0.80
ATR_MULTIPLE = 2.0


class EnhancedMomentum(BaseStrategy):
    """Strong 1-day moves on heavy volume, confirmed by RSI, MACD and moving averages."""

    name = "enhanced_momentum"
    description = "1-day move > 2% on > 1.5x volume with RSI/MACD/MA confirmation"

    async def evaluate_opportunity(self, symbol: str, market_data: MarketData) -> Signal:
        cfg = self.settings.strategy
        snap = self.snapshot(market_data)
        needed = max(cfg.ma_medium, cfg.ma_short, cfg.rsi_period + 1, 35, 21)
        if (missing := self.missing_history(snap, needed)) is not None:
            return self.hold(symbol, missing)

        move = snap.change_1d
        volume = self.volume_ratio(snap, market_data)
        min_move, min_volume = cfg.momentum_min_move, cfg.momentum_volume_ratio

        def screen() -> str:
            return (
                f"1-day move {move:+.2%} (screen {min_move:.2%}), "
                f"volume {volume:.2f}x average (screen {min_volume:.2f}x)"
            )

        # Most symbols stop here every cycle: their reasoning is formatted only when read.
        if not abs(move) > min_move:
            return self.hold(symbol, lambda: f"no momentum: {screen()}")
        if not volume > min_volume:
            return self.hold(symbol, lambda: f"move without volume: {screen()}")

        if move > 0:
            return self._buy(symbol, market_data, snap, screen())
        return self._sell(symbol, snap, screen())

    def _buy(
        self, symbol: str, market_data: MarketData, snap: IndicatorSnapshot, screen: str
    ) -> Signal:
        cfg = self.settings.strategy
        if market_data.regime == "bear":
            return self.hold(symbol, f"up move but no new longs in a bear regime: {screen}")
        card = Scorecard(BASE)
        rsi_ok = card.check(snap.rsi < cfg.rsi_overbought, WEIGHT, f"RSI {snap.rsi:.1f} < {cfg.rsi_overbought:g}")
        card.check(snap.macd > snap.macd_signal, WEIGHT, f"MACD {snap.macd:.3f} > signal {snap.macd_signal:.3f}")
        card.check(
            snap.macd_hist > snap.macd_hist_prev,
            WEIGHT,
            f"histogram rising {snap.macd_hist_prev:+.3f} -> {snap.macd_hist:+.3f}",
        )
        card.check(
            snap.price > snap.sma_short and snap.price > snap.sma_medium,
            WEIGHT,
            f"price {snap.price:.2f} above SMA{cfg.ma_short} {snap.sma_short:.2f} "
            f"and SMA{cfg.ma_medium} {snap.sma_medium:.2f}",
        )
        if market_data.regime == "volatile":
            card.scale(VOLATILE_FACTOR, "regime volatile")
        if not rsi_ok or card.passed < REQUIRED_CONFIRMATIONS:
            why = "overbought" if not rsi_ok else f"{card.passed}/4 confirmations, need {REQUIRED_CONFIRMATIONS}"
            return self.hold(symbol, f"up move not confirmed ({why}): {screen}; {card.summary()}")

        entry = self.entry_price(snap, market_data)
        distance, how = self._stop_distance(entry, snap.atr)
        stop = entry - distance
        target = entry + distance * self.reward_to_risk()
        reasoning = (
            f"momentum buy: {screen}; {card.summary()}; "
            f"entry {entry:.2f}, stop {stop:.2f} ({how}), target {target:.2f} "
            f"({self.reward_to_risk():.1f}:1)"
        )
        return self.signal(
            symbol, "buy", card.confidence, reasoning, stop=stop, target=target,
            regime=market_data.regime, volume_ratio=snap.volume_ratio,
        )

    def _sell(self, symbol: str, snap: IndicatorSnapshot, screen: str) -> Signal:
        cfg = self.settings.strategy
        card = Scorecard(BASE)
        card.check(snap.rsi > cfg.rsi_oversold, WEIGHT, f"RSI {snap.rsi:.1f} > {cfg.rsi_oversold:g}")
        card.check(snap.macd < snap.macd_signal, WEIGHT, f"MACD {snap.macd:.3f} < signal {snap.macd_signal:.3f}")
        card.check(
            snap.macd_hist < snap.macd_hist_prev,
            WEIGHT,
            f"histogram falling {snap.macd_hist_prev:+.3f} -> {snap.macd_hist:+.3f}",
        )
        card.check(
            snap.price < snap.sma_short and snap.price < snap.sma_medium,
            WEIGHT,
            f"price {snap.price:.2f} below SMA{cfg.ma_short} {snap.sma_short:.2f} "
            f"and SMA{cfg.ma_medium} {snap.sma_medium:.2f}",
        )
        if card.passed < REQUIRED_CONFIRMATIONS:
            return self.hold(
                symbol,
                f"down move not confirmed ({card.passed}/4 confirmations, need "
                f"{REQUIRED_CONFIRMATIONS}): {screen}; {card.summary()}",
            )
        return self.signal(symbol, "sell", card.confidence, f"momentum exit: {screen}; {card.summary()}")

    def _stop_distance(self, entry: float, average_range: float) -> tuple[float, str]:
        loss = self.settings.trading.stop_loss
        if not (math.isfinite(average_range) and average_range > 0.0):
            return entry * loss, f"{loss:.1%} configured stop, no ATR"
        raw = ATR_MULTIPLE * average_range
        low, high = entry * loss * 0.5, entry * loss * 1.5
        distance = min(max(raw, low), high)
        note = f"{ATR_MULTIPLE:g}xATR {raw:.2f}"
        if distance != raw:
            note += f" kept within {loss * 0.5:.1%}..{loss * 1.5:.1%} of entry"
        return distance, note
