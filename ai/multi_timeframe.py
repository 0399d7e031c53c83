"""Multi-timeframe analysis: one trend signal per timeframe, combined with weights.

For each of the seed's timeframes (1Min, 5Min, 15Min, 1Hour, 1Day) with at least
:data:`MIN_BARS` completed bars, a signal in [-1, 1] (positive: up) averages two readings
measured in units of the timeframe's own noise (``sigma``, the standard deviation of the last
20 bar-to-bar log returns), so that a 1-minute and a 1-day reading are comparable:

* **trend**: ``tanh(distance / (sigma x sqrt(10)))``, ``distance`` the log distance of the
  close from its 20-bar exponential average;
* **momentum**: ``tanh(r10 / (sigma x sqrt(10)))``, ``r10`` the 10-bar log return.

The combined score is the weighted mean of the signals present, the configured weights
(``multi_timeframe.weights``) renormalised over the timeframes that have data; a timeframe
without enough bars is listed as missing, never invented. ``agreement`` is the weight share
of the timeframes whose signal has the sign of the combined score.

The score enters the confidence through its inputs: the log-odds of each of the three
(technical, market context, sentiment) move by ``logit_scale x score`` in the trade's favour
(up for a buy on a rising market), so their pooled mean moves with it. Like the news shift, this is a stated prior, not fitted: the calibrated model was
trained on daily features only, so a non-zero ``logit_scale`` trades some calibration for
the intraday information. Its effect on results is measured, not assumed (see the report of
issue 18); ``multi_timeframe.enabled = false`` or ``logit_scale = 0`` turns it off.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from market.market_data import BarSeries
from market.timeframes import TIMEFRAMES

#: Fewest completed bars a timeframe needs for a signal (EMA-20 and 20 returns).
MIN_BARS = 21
EMA_SPAN = 20
MOMENTUM_BARS = 10
VOL_BARS = 20


@dataclass(frozen=True)
class TimeframeSignal:
    """One timeframe's reading: the signal and what it is made of."""

    score: float
    trend: float
    momentum: float
    sigma: float
    bars: int


@dataclass(frozen=True)
class MultiTimeframeView:
    """The combined score and the per-timeframe breakdown (for ``ai_decision``)."""

    score: float
    agreement: float
    signals: dict[str, TimeframeSignal]
    weights: dict[str, float]
    missing: tuple[str, ...]

    def breakdown(self) -> dict[str, Any]:
        per = {
            tf: {"score": round(s.score, 4), "trend": round(s.trend, 4), "momentum": round(s.momentum, 4),
                 "bars": s.bars, "weight": round(self.weights[tf], 4)}
            for tf, s in self.signals.items()
        }
        return {"score": round(self.score, 4), "agreement": round(self.agreement, 4), "timeframes": per,
                "missing": list(self.missing)}


def timeframe_signal(bars: BarSeries | None) -> TimeframeSignal | None:
    """The signal of one timeframe's completed bars, or None with fewer than :data:`MIN_BARS`."""
    if bars is None or len(bars) < MIN_BARS:
        return None
    close = np.asarray(bars.tail(max(MIN_BARS, 3 * EMA_SPAN)).close, dtype=float)
    if not np.all(np.isfinite(close)) or np.any(close <= 0):
        return None
    log_close = np.log(close)
    sigma = float(np.std(np.diff(log_close[-(VOL_BARS + 1):]), ddof=1))
    if not math.isfinite(sigma) or sigma <= 0:
        return TimeframeSignal(0.0, 0.0, 0.0, 0.0, len(bars))  # a flat market says nothing
    alpha = 2.0 / (EMA_SPAN + 1)
    ema = close[0]
    for value in close[1:]:
        ema = alpha * value + (1 - alpha) * ema
    scale = sigma * math.sqrt(MOMENTUM_BARS)
    trend = math.tanh((log_close[-1] - math.log(ema)) / scale)
    momentum = math.tanh((log_close[-1] - log_close[-1 - MOMENTUM_BARS]) / scale)
    return TimeframeSignal((trend + momentum) / 2, trend, momentum, sigma, len(bars))


def combine(frames: Mapping[str, BarSeries | None], weights: Mapping[str, float]) -> MultiTimeframeView:
    """Each weighted timeframe's signal and their weighted mean (see the module docstring)."""
    signals: dict[str, TimeframeSignal] = {}
    missing: list[str] = []
    for tf in TIMEFRAMES:
        if float(weights.get(tf, 0.0)) <= 0:
            continue
        signal = timeframe_signal(frames.get(tf))
        if signal is None:
            missing.append(tf)
        else:
            signals[tf] = signal
    total = sum(float(weights[tf]) for tf in signals)
    if not signals or total <= 0:
        return MultiTimeframeView(0.0, 0.0, {}, {}, tuple(missing))
    norm = {tf: float(weights[tf]) / total for tf in signals}
    score = sum(norm[tf] * s.score for tf, s in signals.items())
    sign = math.copysign(1.0, score) if score else 0.0
    agreement = sum(norm[tf] for tf, s in signals.items() if sign and s.score * sign > 0)
    return MultiTimeframeView(score, agreement, signals, norm, tuple(missing))


def logit_shift(view: MultiTimeframeView, side: str, logit_scale: float) -> float:
    """The log-odds shift of the confidence inputs: ``logit_scale x score`` in the trade's favour."""
    if not view.signals:
        return 0.0
    return (1.0 if side == "buy" else -1.0) * logit_scale * view.score


def shifted(probability: float, shift: float) -> float:
    """``probability`` with its log-odds moved by ``shift``."""
    if shift == 0:
        return probability
    p = min(max(probability, 1e-6), 1 - 1e-6)
    return 1.0 / (1.0 + math.exp(-(math.log(p / (1 - p)) + shift)))


def analyse(market_data: Any, cfg: Any, side: str, *,
            calibrated: bool = False) -> tuple[float, dict[str, Any] | None]:
    """The analyzer's hook: the log-odds shift for the confidence inputs and the breakdown for
    ``ai_decision`` (``0.0, None`` when ``cfg``, the ``multi_timeframe`` settings, is None or
    off). The 1Day frame is the symbol's daily series; the intraday frames come from
    ``market_data.timeframes`` (the loop's batched, cached bars); a backtest on daily data
    has the 1Day frame only. For a ``calibrated`` (model) probability the shift is logged but
    not applied unless ``cfg.shift_calibrated``: it has shown no out-of-sample skill."""
    if cfg is None or not cfg.enabled:
        return 0.0, None
    frames: dict[str, BarSeries | None] = dict(getattr(market_data, "timeframes", None) or {})
    frames["1Day"] = market_data.daily
    view = combine(frames, cfg.weights)
    shift = logit_shift(view, side, float(cfg.logit_scale))
    detail = view.breakdown()
    detail["logit_shift"] = round(shift, 6)
    detail["logit_scale"] = float(cfg.logit_scale)
    if shift and calibrated and not getattr(cfg, "shift_calibrated", False):
        # logged, not applied: a calibrated probability moves only by skill shown out of sample
        detail["applied"] = False
        return 0.0, detail
    return shift, detail
