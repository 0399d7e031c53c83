"""A model that earns each departure from the climatology by skill it has shown out of sample.

Two forecasts of one idea:

* the **baseline**: the symbol's own past hit rate for the same bracket and horizon,
  shrunk towards the random-walk probability while it rests on few settled ideas
  (:func:`ai.bracket_features.past_hit_rate`);
* the **model**: an L2-regularised logistic regression on the transferable features
  (:data:`ai.bracket_features.TRANSFERABLE_NAMES`), fitted on every symbol pooled.

The baseline's past hit rate rests on a 120-session memory, about six independent outcome
windows: noisy, and over-dispersed as a forecast. How far to trust it against the random
walk is estimated from the past itself (:func:`past_weight`, empirical Bayes by the method of
moments) at every refit, instead of a fixed number of pseudo-ideas.

The random walk's drift follows the volatility regime (:func:`drift_slope`, also refitted on
the past).

The forecast is ``baseline + weight * (model - baseline)``. ``weight`` starts at 0 and is
the one in ``[0, 1]`` that minimised the Brier score of *earlier out-of-sample* predictions,
kept only when the improvement it brings is at least twice its standard error (computed on
blocks of sessions as long as the outcome windows, which overlap). So without shown skill
the forecast is the climatology, and it moves away only as far as the past rewarded it.

Pure numpy and deterministic: Newton's method on the penalised log-likelihood (no random
initialisation, no solver tolerance that differs between library versions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ai.bracket_features import TRANSFERABLE_NAMES, sigmoid

#: L2 penalty on the standardised coefficients (per idea: scaled by the row count).
L2_PENALTY = 1e-3
#: Standardised feature values are clipped to this many standard deviations.
Z_CLIP = 4.0
#: Grid of blend weights tried.
WEIGHT_GRID = np.round(np.linspace(0.0, 1.0, 21), 2)
#: The improvement must be this many standard errors above zero to be kept.
SKILL_SIGMAS = 1.0


@dataclass(frozen=True)
class Logistic:
    """A fitted logistic regression on standardised, clipped features."""

    mean: np.ndarray
    scale: np.ndarray
    coefficients: np.ndarray
    intercept: float

    def predict(self, X: np.ndarray) -> np.ndarray:
        Z = np.clip((np.nan_to_num(X, nan=0.0) - self.mean) / self.scale, -Z_CLIP, Z_CLIP)
        Z = np.where(np.isfinite(X), Z, 0.0)  # a missing feature sits at its mean
        return sigmoid(Z @ self.coefficients + self.intercept)

    def to_json(self) -> dict[str, Any]:
        return {
            "feature_names": list(TRANSFERABLE_NAMES),
            "mean": [round(float(v), 12) for v in self.mean],
            "scale": [round(float(v), 12) for v in self.scale],
            "coefficients": [round(float(v), 12) for v in self.coefficients],
            "intercept": round(float(self.intercept), 12),
        }

    @staticmethod
    def from_json(raw: dict[str, Any]) -> Logistic:
        width = len(TRANSFERABLE_NAMES)
        if list(raw.get("feature_names", ())) != list(TRANSFERABLE_NAMES):
            raise ValueError("bracket model feature names differ from this program's: retrain")
        arrays = [np.asarray(raw[k], float) for k in ("mean", "scale", "coefficients")]
        if any(a.shape != (width,) or not np.isfinite(a).all() for a in arrays) or (arrays[1] <= 0).any():
            raise ValueError(f"bracket model arrays must be {width} finite numbers (scale > 0)")
        return Logistic(arrays[0], arrays[1], arrays[2], float(raw["intercept"]))


def fit_logistic(X: np.ndarray, y: np.ndarray, penalty: float = L2_PENALTY, iterations: int = 25) -> Logistic:
    """Newton's method on the mean log-likelihood plus ``penalty/2 * |w|^2`` (not the intercept)."""
    mean = np.nanmean(X, axis=0)
    scale = np.nanstd(X, axis=0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    scale = np.where(np.isfinite(scale) & (scale > 1e-12), scale, 1.0)
    Z = np.clip((np.nan_to_num(X, nan=0.0) - mean) / scale, -Z_CLIP, Z_CLIP)
    Z = np.where(np.isfinite(X), Z, 0.0)
    A = np.column_stack([np.ones(len(Z)), Z])
    n, d = A.shape
    base = float(np.clip(y.mean(), 1e-3, 1 - 1e-3))
    w = np.zeros(d)
    w[0] = float(np.log(base / (1 - base)))
    reg = np.full(d, penalty)
    reg[0] = 0.0
    for _ in range(iterations):
        p = sigmoid(A @ w)
        grad = A.T @ (p - y) / n + reg * w
        hess = (A * (p * (1 - p))[:, None]).T @ A / n + np.diag(reg) + 1e-9 * np.eye(d)
        step = np.linalg.solve(hess, grad)
        w = w - step
        if float(np.abs(step).max()) < 1e-10:
            break
    return Logistic(mean, scale, w[1:], float(w[0]))


#: Fewest settled ideas the empirical-Bayes weight of the past hit rate is estimated on;
#: with fewer (a symbol's first year) it is 0: no evidence yet that the past rate's
#: departures from the walk come true, and every refit measured so far put it at 0 to 0.5.
MIN_PAST_WEIGHT_ROWS = 500


def past_weight(label: np.ndarray, past: np.ndarray, walk: np.ndarray) -> float:
    """How much of the past hit rate's departure from the random walk comes true, in [0, 1].

    Empirical Bayes by the method of moments: if the symbol's true hit rate departs from the
    walk by ``theta`` (variance ``tau^2`` across symbols and periods) and the past hit rate
    measures it with noise (variance ``s^2``, large: a 120-session memory holds about six
    independent outcome windows), the best linear forecast is ``walk + B * (past - walk)``
    with ``B = tau^2 / (tau^2 + s^2)``. ``tau^2`` is the covariance of the later outcome's and
    the past rate's departures from the walk, ``tau^2 + s^2`` the past rate's mean squared
    departure: ``B = sum (y - walk)(past - walk) / sum (past - walk)^2`` over settled ideas,
    clipped to [0, 1] (a variance is not negative). 0 with too few ideas."""
    ok = np.isfinite(label) & np.isfinite(past) & np.isfinite(walk)
    if int(ok.sum()) < MIN_PAST_WEIGHT_ROWS:
        return 0.0
    d = past[ok] - walk[ok]
    total = float(np.dot(d, d))
    if total <= 0.0:
        return 0.0
    return round(float(np.clip(np.dot(label[ok] - walk[ok], d) / total, 0.0, 1.0)), 6)


#: The drift's regime slope is kept only when it is this many standard errors from zero.
SLOPE_SIGMAS = 2.0


def drift_slope(move: np.ndarray, ratio: np.ndarray, block: np.ndarray) -> tuple[float, float]:
    """Least-squares slope of a move ahead, in volatility units, on a predictor known at the
    decision, pooled over every symbol's past sessions; and the predictor's mean it is centred
    on. Two fits use it: the regime drift (``move`` the next horizon's mean return per session,
    :func:`ai.bracket_features.forward_move`, on ``ratio`` the log volatility ratio) and the
    short-term reversal (the move from the entry per horizon on the past fall,
    :func:`ai.walkforward.refit_reversal`).

    The moves of neighbouring sessions overlap, so the slope's standard error is clustered on
    ``block`` (one id per symbol and outcome window); the slope is kept only when it is at
    least :data:`SLOPE_SIGMAS` standard errors from zero (a symbol or two rarely show it),
    else 0. ``(0, 0)`` with too few sessions (:data:`MIN_PAST_WEIGHT_ROWS`)."""
    ok = np.isfinite(move) & np.isfinite(ratio)
    if int(ok.sum()) < MIN_PAST_WEIGHT_ROWS:
        return 0.0, 0.0
    x, y = ratio[ok], move[ok]
    center = float(x.mean())
    dx = x - center
    spread = float(np.dot(dx, dx))
    if spread <= 0.0:
        return 0.0, 0.0
    slope = float(np.dot(dx, y - y.mean()) / spread)
    _, inverse = np.unique(block[ok], return_inverse=True)
    score = np.bincount(inverse, weights=dx * ((y - y.mean()) - slope * dx))
    se = float(np.sqrt(np.dot(score, score)) / spread)
    if not abs(slope) >= SLOPE_SIGMAS * se:
        return 0.0, round(center, 6)
    return round(slope, 6), round(center, 6)


@dataclass(frozen=True)
class BlendChoice:
    """The blend weight chosen on earlier out-of-sample rows, and why."""

    weight: float
    n: int
    brier_baseline: float
    brier_blend: float
    improvement_se: float
    detail: dict[str, Any] = field(default_factory=dict)


def choose_weight(
    model: np.ndarray, baseline: np.ndarray, y: np.ndarray, block: np.ndarray,
) -> BlendChoice:
    """The weight in :data:`WEIGHT_GRID` minimising the Brier score of the blend on these
    out-of-sample rows; 0 unless its improvement over the baseline is at least
    :data:`SKILL_SIGMAS` standard errors (blocks: ``block`` ids, one per outcome window)."""
    n = len(y)
    if n < 200:
        return BlendChoice(0.0, n, float("nan"), float("nan"), float("nan"), {"reason": "too few rows"})
    base_loss = (baseline - y) ** 2
    best_w, best_loss = 0.0, float(base_loss.mean())
    for w in WEIGHT_GRID[1:]:
        loss = float(((baseline + w * (model - baseline) - y) ** 2).mean())
        if loss < best_loss - 1e-12:
            best_w, best_loss = float(w), loss
    if best_w == 0.0:
        return BlendChoice(0.0, n, float(base_loss.mean()), float(base_loss.mean()), 0.0, {"reason": "no skill"})
    gain = base_loss - (baseline + best_w * (model - baseline) - y) ** 2
    ids, inverse = np.unique(block, return_inverse=True)
    sums = np.bincount(inverse, weights=gain)
    counts = np.bincount(inverse)
    per_block = sums / counts
    se = float(per_block.std(ddof=1) / np.sqrt(len(ids))) if len(ids) > 1 else float("inf")
    mean_gain = float(per_block.mean())
    kept = best_w if mean_gain > SKILL_SIGMAS * se else 0.0
    return BlendChoice(
        kept, n, float(base_loss.mean()), best_loss, se,
        {"best_weight": best_w, "mean_block_gain": mean_gain, "blocks": int(len(ids)),
         "reason": "skill shown" if kept else "gain within noise"},
    )


def blend(baseline: np.ndarray, model: np.ndarray, weight: float) -> np.ndarray:
    """``baseline + weight * (model - baseline)``, the forecast."""
    return np.clip(baseline + weight * (model - baseline), 1e-4, 1 - 1e-4)
