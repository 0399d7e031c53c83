"""What an intent says about itself: the confidence breakdown (every component, weight and
input, logged with each decision and kept on the intent) and the one-line reasoning a human
reads in the journal and the logs."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ai.ai_model import Regime
from ai.scoring import Scores
from ai.second_opinion import ENDPOINT_WEIGHT, SecondOpinion


def build_breakdown(
    *,
    scores: Scores,
    pooled: float,
    confidence: float,
    weights: Mapping[str, float],
    regime: Regime | None,
    sentiment_score: float,
    headlines: int,
    strategy_confidence: float,
    opinion: SecondOpinion | None,
    stop_fraction: float,
    target_fraction: float,
) -> dict[str, Any]:
    """The breakdown of one decision (``ai_decision``'s ``breakdown``); the break-even and
    expected return are of the intent's own bracket."""
    breakdown: dict[str, Any] = {
        "method": scores.method,
        "technical": round(scores.technical, 6),
        "context": round(scores.context, 6),
        "sentiment": round(scores.sentiment, 6),
        "pooled": round(pooled, 6),
        "confidence": round(confidence, 6),
        "weights": dict(weights),
        "regime": regime,
        "sentiment_score": round(sentiment_score, 4),
        "headlines": headlines,
        "strategy_confidence": round(strategy_confidence, 6),
        "endpoint_confidence": None if opinion is None else round(opinion.confidence, 6),
        "endpoint_weight": 0.0 if opinion is None else ENDPOINT_WEIGHT,
        "stop_fraction": round(stop_fraction, 6),
        "target_fraction": round(target_fraction, 6),
        "breakeven_probability": round(stop_fraction / (stop_fraction + target_fraction), 6),
        "expected_return": round(confidence * target_fraction - (1 - confidence) * stop_fraction, 6),
        **scores.detail,
    }
    breakdown.setdefault("model_probability", None)
    return breakdown


def reasoning_text(
    signal: Any,
    scores: Scores,
    breakdown: Mapping[str, Any],
    regime: Regime | None,
    opinion: SecondOpinion | None,
    notes: list[str],
    features: Mapping[str, float],
) -> str:
    """The strategy's own reason, then each component in words, the confidence against its
    break-even, and any notes (``signal``: ``strategy``, ``reasoning``, ``confidence``)."""
    parts = [f"{signal.strategy}: {signal.reasoning}".strip()]
    stop_pct = breakdown["stop_fraction"] * 100
    target_pct = breakdown["target_fraction"] * 100
    if scores.method == "model":
        parts.append(
            f"model P(+{target_pct:.1f}% before -{stop_pct:.1f}%) = {scores.technical:.3f} "
            f"(recent base rate {breakdown['base_rate']:.3f})"
        )
        rs = features.get("relative_strength_10d", math.nan)
        context = (
            f"regime {regime}, 10-day relative strength {rs * 100:+.1f}% vs SPY"
            if regime and math.isfinite(rs)
            else "no market context"
        )
        parts.append(f"{context} -> context {scores.context:.3f}")
    else:
        parts.append(
            f"transparent score {scores.technical:.3f} (strategy {float(signal.confidence):.2f}, "
            f"checks passed: {', '.join(scores.detail['checks_passed']) or 'none'}); "
            f"regime {regime or 'unknown'} -> context {scores.context:.3f}"
        )
    parts.append(
        f"news {breakdown['sentiment_score']:+.2f} from {breakdown['headlines']} headline(s) "
        f"-> sentiment {scores.sentiment:.3f}"
    )
    if opinion is not None:
        parts.append(f"external model {opinion.confidence:.3f}: {opinion.reasoning}".rstrip(": "))
    parts.append(
        f"confidence {breakdown['confidence']:.3f} (break-even {breakdown['breakeven_probability']:.3f})"
    )
    parts.extend(notes)
    return "; ".join(p for p in parts if p)
