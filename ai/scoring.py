"""The three components of an intent's confidence (technical, market context, sentiment):
from the calibrated model (:func:`model_scores`, probabilities of the intent's own bracket) or,
without one, the documented transparent fallback (:func:`transparent_scores`, plain scores).
:mod:`ai_analyzer`'s docstring explains how they are pooled."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ai import ai_model
from ai.ai_model import FEATURE_NAMES, ConfidenceModel, Regime

Side = Literal["buy", "sell"]

#: Log-odds shift of the sentiment component for a news score of +/-1.
SENTIMENT_LOGIT_SCALE = 0.5


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def bracket_shift(model_stop: float, model_target: float, stop: float, target: float) -> float:
    """Log-odds shift from the model's bracket to another (gambler's-ruin approximation)."""
    if math.isclose(model_stop, stop, abs_tol=1e-6) and math.isclose(model_target, target, abs_tol=1e-6):
        return 0.0
    return _logit(stop / (stop + target)) - _logit(model_stop / (model_stop + model_target))


def sentiment_shift(probability: float, score: float, side: Side) -> float:
    """``probability`` with its log-odds moved by ``0.5 x score`` in the trade's favour."""
    direction = 1.0 if side == "buy" else -1.0
    return _sigmoid(_logit(probability) + direction * SENTIMENT_LOGIT_SCALE * score)


@dataclass(frozen=True)
class Scores:
    """The three components (each in [0, 1]) and how they were obtained."""

    technical: float
    context: float
    sentiment: float
    method: Literal["model", "transparent"]
    detail: dict[str, Any]


def transparent_scores(
    signal_confidence: float,
    features: Mapping[str, float],
    regime: Regime | None,
    sentiment_score: float,
    side: Side,
) -> Scores:
    """The documented fallback when no trained model is available (scores, not probabilities).

    * technical = 0.6 x the strategy's confidence + 0.4 x the share of passed checks among
      those the history allows: close above its 20-day average (below, for a sell), MACD line
      above its signal (below), RSI under 70 (over 30), today's volume at least the 20-day
      mean, relative strength vs SPY above 0 (below); 0.5 when no check can be evaluated;
    * context = technical + 0.05 in a regime that favours the side (bull for buys, bear for
      sells), - 0.10 in the opposite one, - 0.05 when volatile, unchanged in a range;
    * sentiment = technical + 0.10 x the news score (minus for a sell).

    Each is clipped to [0, 1].
    """
    long = side == "buy"

    def check(name: str, passes: bool) -> tuple[str, bool] | None:
        return None if not math.isfinite(features.get(name, math.nan)) else (name, passes)

    f = {k: features.get(k, math.nan) for k in FEATURE_NAMES}
    results = [
        check("distance_ma20", f["distance_ma20"] > 0 if long else f["distance_ma20"] < 0),
        check(
            "macd_above_signal",
            f["macd_above_signal"] >= 0.5 if long else f["macd_above_signal"] < 0.5,
        ),
        check("rsi_14", f["rsi_14"] < 70 if long else f["rsi_14"] > 30),
        check("volume_ratio_1d", f["volume_ratio_1d"] >= 1.0),
        check(
            "relative_strength_10d",
            f["relative_strength_10d"] > 0 if long else f["relative_strength_10d"] < 0,
        ),
    ]
    evaluated = [r for r in results if r is not None]
    passed = [name for name, ok in evaluated if ok]
    share = len(passed) / len(evaluated) if evaluated else 0.5
    technical = clip(0.6 * clip(signal_confidence) + 0.4 * share)
    favoured, opposed = ("bull", "bear") if long else ("bear", "bull")
    adjustment = {favoured: 0.05, opposed: -0.10, "volatile": -0.05}.get(regime or "range", 0.0)
    context = clip(technical + adjustment)
    sentiment = clip(technical + (0.10 if long else -0.10) * sentiment_score)
    return Scores(
        technical=technical,
        context=context,
        sentiment=sentiment,
        method="transparent",
        detail={
            "checks_passed": passed,
            "checks_failed": [name for name, ok in evaluated if not ok],
            "check_share": round(share, 4),
            "regime_adjustment": adjustment,
            "calibrated": False,
        },
    )


def model_scores(
    model: ConfidenceModel,
    features: Mapping[str, float],
    regime: Regime | None,
    sentiment_score: float,
    side: Side,
    stop_fraction: float,
    target_fraction: float,
    bracket_probability: tuple[float, dict[str, Any]] | None = None,
) -> Scores:
    """The three components from the calibrated model (see the module docstring).

    ``bracket_probability`` (from :func:`ai.bracket_model.intent_probability`) is the
    probability of the intent's own bracket and holding horizon; when given it is both the
    technical and the context component (the context table knows only the model's 3%/6%/20
    bracket). Raises ``ValueError`` when a feature is missing or not finite.
    """
    model_side: ai_model.Side = "long" if side == "buy" else "short"
    if bracket_probability is not None:
        p, parts = bracket_probability
        sentiment = sentiment_shift(p, sentiment_score, side) if sentiment_score else p
        return Scores(technical=p, context=p, sentiment=sentiment, method="model", detail={
            "model_probability": round(p, 6), "bracket_model": parts, "context_hit_rate": None,
            "base_rate": round(model.base_rate(model_side), 6), "model_created_at": model.created_at,
            "calibrated": True,
        })
    probability = model.predict_proba(features, model_side)
    shift = bracket_shift(model.bracket.stop, model.bracket.target, stop_fraction, target_fraction)
    technical = _sigmoid(_logit(probability) + shift) if shift else probability
    if regime is None:
        context_rate = None
        context = technical
    else:
        context_rate = model.context_probability(
            model_side, regime, float(features["relative_strength_10d"])
        )
        context = _sigmoid(_logit(context_rate) + shift) if shift else context_rate
    sentiment = sentiment_shift(technical, sentiment_score, side) if sentiment_score else technical
    return Scores(
        technical=technical,
        context=context,
        sentiment=sentiment,
        method="model",
        detail={
            "model_probability": round(probability, 6),
            "bracket_logit_shift": round(shift, 6),
            "context_hit_rate": None if context_rate is None else round(context_rate, 6),
            "base_rate": round(model.base_rate(model_side), 6),
            "model_bracket": {
                "stop": model.bracket.stop,
                "target": model.bracket.target,
                "horizon_days": model.bracket.horizon_days,
            },
            "model_created_at": model.created_at,
            "calibrated": True,
        },
    )


def clip(x: float) -> float:
    """``x`` clipped to [0, 1]."""
    return min(1.0, max(0.0, float(x)))
