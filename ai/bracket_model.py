"""The shipped probability of an intent's *own* bracket and holding horizon.

The model file's ``bracket_model`` section holds the last walk-forward fit of
:mod:`ai.shrinkage` on the training symbols (the logistic on the transferable features and
the blend weight it earned out of sample) and the out-of-sample record of the whole walk.
For an intent it builds the same row ``evaluate`` builds for an idea decided on the last
daily bar: the random-walk probability of the intent's stop, target and horizon at the
symbol's volatility (its drift following the volatility regime by the last refit's
``drift_slope``, and after a fall over the last sessions by the last refit's short-term
``reversal``), the symbol's past hit rate (of ideas settled by that bar), the
transferable features, the past hit rate pulled towards the walk by the empirical-Bayes
``past_weight`` of the last refit (:func:`ai.bracket_features.refit_rows`, as in the walk); then ``baseline + weight * (model - baseline)``. With weight 0 (no skill shown) the
probability is the symbol's pulled past hit rate moved to the intent's bracket and horizon
by the random walk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ai import bracket_features as bf
from ai.ideas import DefaultBracket, build_ideas, market_close_for, symbol_context
from ai.shrinkage import Logistic, blend


@dataclass(frozen=True)
class BracketModel:
    """What the model file stores of the bracket model, and inference from daily bars."""

    logistic: Logistic | None
    weight: float
    default: DefaultBracket
    metrics: dict[str, Any] = field(default_factory=dict)
    past_weight: float = 1.0  # the empirical-Bayes weight of the past hit rate (ai.shrinkage.past_weight)
    drift_slope: float = 0.0  # the walk's drift on the volatility regime (ai.shrinkage.drift_slope)
    drift_center: float = 0.0
    reversal: bf.Reversal = field(default_factory=bf.Reversal)  # the walk's short-term reversal (off: none)

    def probability(
        self, ts: np.ndarray, open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
        market_close: np.ndarray | None, stop: float, target: float, horizon: int,
    ) -> tuple[float, dict[str, float]]:
        """P(target before stop within ``horizon`` sessions) of a long idea decided on the
        last bar, entered at the next open; and the parts it was built from. (``ts`` is
        accepted for the caller's symmetry with the bars; rows are not dated here.)"""
        n = len(close)
        if n < 2:
            raise ValueError("the bracket model needs at least two daily bars")
        # One extra (unknown) session so the last bar can be a decision with a next one;
        # its prices are never read for the row's features, only for its (unused) label.
        pad = lambda a: np.concatenate([np.asarray(a, float), [np.nan]])  # noqa: E731
        day = np.arange(n + 1, dtype=np.int64)  # calendar days only date rows; not read here
        o, h, lo, c = pad(open_), pad(high), pad(low), pad(close)
        o[-1] = c[-2]
        market = None if market_close is None else pad(market_close)
        ctx = symbol_context(day, o, h, lo, c, market, self.default)
        ideas = build_ideas(ctx, o, h, lo, np.array([n - 1]), stop, target, horizon)
        base, X = bf.refit_rows(
            ideas.X, ideas.stop, ideas.target, ideas.outcomes.horizon, ideas.vol, ideas.drift, ideas.ratio,
            ideas.past_default, (self.default.stop, self.default.target, self.default.horizon),
            (self.drift_slope, self.drift_center, self.past_weight), ideas.past_fall, self.reversal,
        )
        baseline = float(base[0])
        model = float(self.logistic.predict(X)[0]) if self.logistic is not None else baseline
        p = float(blend(np.array([baseline]), np.array([model]), self.weight)[0])
        return p, {"baseline": round(baseline, 6), "model": round(model, 6), "weight": self.weight,
                   "past_weight": self.past_weight, "drift_slope": self.drift_slope,
                   "drift_center": self.drift_center,
                   "random_walk": round(float(bf.sigmoid(X[0, bf.TRANSFERABLE_NAMES.index("logit_random_walk")])), 6)}

    def to_json(self) -> dict[str, Any]:
        return {
            "method": "shrink to the past hit rate unless out-of-sample skill is shown (ai/shrinkage.py)",
            "default_bracket": {"stop": self.default.stop, "target": self.default.target,
                                "horizon_sessions": self.default.horizon},
            "climatology_prior_weight": bf.CLIMATOLOGY_PRIOR_WEIGHT,
            "climatology_memory_sessions": bf.CLIMATOLOGY_MEMORY,
            "past_weight": self.past_weight,
            "drift_slope": self.drift_slope,
            "drift_center": self.drift_center,
            "reversal_window": bf.REVERSAL_WINDOW,
            "reversal_horizons": list(bf.REVERSAL_HORIZONS),
            "reversal_slopes": list(self.reversal.slopes),
            "reversal_centers": list(self.reversal.centers),
            "drift_prior_annual": bf.DRIFT_PRIOR_ANNUAL,
            "drift_prior_sessions": bf.DRIFT_PRIOR_SESSIONS,
            "weight": self.weight,
            "logistic": None if self.logistic is None else self.logistic.to_json(),
            "metrics": self.metrics,
        }

    @staticmethod
    def from_json(raw: dict[str, Any]) -> BracketModel:
        d = raw["default_bracket"]
        weight = float(raw["weight"])
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"bracket_model.weight={weight} is not in [0, 1]")
        # A file from before the empirical-Bayes weight used the past hit rate in full.
        past_weight = float(raw.get("past_weight", 1.0))
        if not 0.0 <= past_weight <= 1.0:
            raise ValueError(f"bracket_model.past_weight={past_weight} is not in [0, 1]")
        # ... and a walk whose drift did not follow the volatility regime.
        slope, center = float(raw.get("drift_slope", 0.0)), float(raw.get("drift_center", 0.0))
        if not (np.isfinite(slope) and np.isfinite(center)):
            raise ValueError("bracket_model.drift_slope and drift_center must be finite")
        reversal = _reversal_from_json(raw)
        logistic = None if raw.get("logistic") is None else Logistic.from_json(raw["logistic"])
        return BracketModel(
            logistic=logistic, weight=weight,
            default=DefaultBracket(float(d["stop"]), float(d["target"]), int(d["horizon_sessions"])),
            metrics=dict(raw.get("metrics", {})), past_weight=past_weight, drift_slope=slope, drift_center=center,
            reversal=reversal,
        )


def _reversal_from_json(raw: dict[str, Any]) -> bf.Reversal:
    """The stored short-term reversal; off in a file from before it. A file fitted on other
    horizons or another window than this code's is refused rather than misread."""
    slopes = [float(x) for x in raw.get("reversal_slopes", [])]
    centers = [float(x) for x in raw.get("reversal_centers", [])]
    if not slopes and not centers:
        return bf.Reversal()
    horizons = [int(x) for x in raw.get("reversal_horizons", [])]
    window = int(raw.get("reversal_window", 0))
    if horizons != list(bf.REVERSAL_HORIZONS) or window != bf.REVERSAL_WINDOW:
        raise ValueError(f"bracket_model.reversal fitted on horizons {horizons} and window {window}, "
                         f"this code uses {list(bf.REVERSAL_HORIZONS)} and {bf.REVERSAL_WINDOW}")
    if len(slopes) != len(horizons) or len(centers) != len(horizons) \
            or not all(np.isfinite(slopes + centers)):
        raise ValueError("bracket_model.reversal_slopes and reversal_centers must be finite, one per horizon")
    return bf.Reversal(tuple(slopes), tuple(centers))


#: Daily bars read for an intent's probability (the 250-session volatility and the past hit
#: rate's 120-session memory have long converged).
INTENT_WINDOW_BARS = 750


def intent_probability(
    model: BracketModel, market_data: Any, stop: float, target: float, horizon: int,
) -> tuple[float, dict[str, float]]:
    """The bracket model's probability for a long intent on ``market_data`` (a
    :class:`market.market_data.MarketData`): its daily bars up to the last one, the benchmark
    for the market's state. Raises ``ValueError`` with too little history."""
    daily = market_data.daily.tail(INTENT_WINDOW_BARS)
    if len(daily) < 2:
        raise ValueError("fewer than two daily bars")
    bench = market_data.benchmark if market_data.benchmark is not None and len(market_data.benchmark) else None
    market = market_close_for(daily, bench)
    return model.probability(daily.ts, daily.open, daily.high, daily.low, daily.close, market,
                             stop, target, int(horizon))
