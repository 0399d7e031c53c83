"""How good a probability is: Brier score and skill, calibration error and its noise floor,
AUC, reliability tables, and the reliability plot.

The calibration error is measured in **10 equal-count bins** (each holds a tenth of the
forecasts, sorted), so every bin has enough ideas to say something. Even a perfectly
calibrated forecaster shows some calibration error at a finite ``n``; and because the
outcome windows of neighbouring sessions overlap, their labels move together, which makes
that error larger than independent draws would suggest. :func:`ece_noise_floor` measures it
by drawing labels from the forecasts themselves in blocks as long as an outcome window
(one uniform number per block and symbol), the way overlapping windows share their fate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ECE_BINS = 10
FLOOR_DRAWS = 200


def brier_score(p: np.ndarray, y: np.ndarray) -> float:
    """Mean squared difference between forecast probabilities and 0/1 outcomes."""
    return float(np.mean((np.asarray(p, float) - np.asarray(y, float)) ** 2))


def brier_skill(p: np.ndarray, reference: np.ndarray, y: np.ndarray) -> float:
    """``1 - Brier(p) / Brier(reference)``: above 0 beats the reference forecast."""
    ref = brier_score(reference, y)
    return float("nan") if ref == 0 else 1.0 - brier_score(p, y) / ref


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """Count-weighted mean |mean forecast - hit rate| over ``bins`` equal-width bins of [0, 1]
    (the model file's training metric; ``evaluate`` uses :func:`ece_equal_count`)."""
    p = np.asarray(p, float)
    y = np.asarray(y, float)
    if len(p) == 0:
        return float("nan")
    which = np.clip((p * bins).astype(int), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() * abs(p[mask].mean() - y[mask].mean())
    return float(total / len(p))


def reliability_table(p: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Per equal-width bin: count, mean forecast and observed hit rate (non-empty bins only)."""
    p = np.asarray(p, float)
    y = np.asarray(y, float)
    which = np.clip((p * bins).astype(int), 0, bins - 1)
    rows = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            rows.append(
                {
                    "bin_low": b / bins,
                    "bin_high": (b + 1) / bins,
                    "count": int(mask.sum()),
                    "mean_forecast": round(float(p[mask].mean()), 4),
                    "hit_rate": round(float(y[mask].mean()), 4),
                }
            )
    return rows


def _equal_count_bins(p: np.ndarray, bins: int) -> np.ndarray:
    """Bin of each forecast: rank order split into ``bins`` groups of (nearly) equal size."""
    order = np.argsort(p, kind="stable")
    which = np.empty(len(p), dtype=np.int64)
    which[order] = (np.arange(len(p)) * bins) // max(len(p), 1)
    return which


def ece_equal_count(p: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """Count-weighted mean |mean forecast - hit rate| over ``bins`` equal-count bins."""
    p, y = np.asarray(p, float), np.asarray(y, float)
    if len(p) == 0:
        return float("nan")
    which = _equal_count_bins(p, bins)
    ps = np.bincount(which, weights=p, minlength=bins)
    ys = np.bincount(which, weights=y, minlength=bins)
    return float(np.abs(ps - ys).sum() / len(p))


def ece_noise_floor(
    p: np.ndarray, groups: np.ndarray, bins: int = ECE_BINS, draws: int = FLOOR_DRAWS, seed: int = 15,
) -> dict[str, float]:
    """ECE of a perfectly calibrated forecaster at this ``n``: labels drawn as
    ``u < p`` with one uniform ``u`` per ``groups`` id (a symbol's block of sessions as long
    as an outcome window). Returns the mean and the 95th percentile over ``draws`` draws."""
    p = np.asarray(p, float)
    if len(p) == 0:
        return {"mean": float("nan"), "p95": float("nan")}
    _, inverse = np.unique(groups, return_inverse=True)
    rng = np.random.default_rng(seed)
    return ece_of_draws(p, lambda: (rng.random(int(inverse.max()) + 1)[inverse] < p).astype(float), draws, bins)


def ece_of_draws(p: np.ndarray, draw: Callable[[], np.ndarray], draws: int = FLOOR_DRAWS,
                 bins: int = ECE_BINS) -> dict[str, float]:
    """Mean and 95th percentile of the ECE of ``draws`` label sets ``draw()`` makes for the
    forecasts ``p`` (non-empty): the noise floor under the dependence ``draw`` models."""
    which = _equal_count_bins(p, bins)
    ps = np.bincount(which, weights=p, minlength=bins)
    values = np.array([np.abs(ps - np.bincount(which, weights=draw(), minlength=bins)).sum() / len(p)
                       for _ in range(draws)])
    return {"mean": float(values.mean()), "p95": float(np.percentile(values, 95))}


def auc(p: np.ndarray, y: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); NaN with one class."""
    from scipy.stats import rankdata

    p, y = np.asarray(p, float), np.asarray(y, float)
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(p)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def reliability_bins(p: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Per equal-count bin: count, forecast range, mean forecast and observed hit rate."""
    p, y = np.asarray(p, float), np.asarray(y, float)
    if len(p) == 0:
        return []
    which = _equal_count_bins(p, bins)
    rows = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            rows.append({
                "bin": b + 1,
                "count": int(mask.sum()),
                "forecast_low": round(float(p[mask].min()), 4),
                "forecast_high": round(float(p[mask].max()), 4),
                "mean_forecast": round(float(p[mask].mean()), 4),
                "hit_rate": round(float(y[mask].mean()), 4),
            })
    return rows


def render_table(title: str, rows: Sequence[dict[str, float]]) -> str:
    """A reliability table as fixed-width text lines."""
    lines = [title, "  bin  count   forecast range   mean forecast  hit rate"]
    for r in rows:
        lines.append(
            f"  {r['bin']:>3} {r['count']:>6}   {r['forecast_low']:.3f}-{r['forecast_high']:.3f}"
            f"      {r['mean_forecast']:.3f}        {r['hit_rate']:.3f}"
        )
    return "\n".join(lines)


def write_reliability_plot(path: Path, tables: dict[str, list[dict[str, float]]], title: str) -> None:
    """Mean forecast against hit rate per bin, one line per table, the diagonal for reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 6), dpi=100)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    for name, rows in tables.items():
        if not rows:
            continue
        xs = [r["mean_forecast"] for r in rows]
        ys = [r["hit_rate"] for r in rows]
        width = 2.5 if name == "pooled" else 1.0
        ax.plot(xs, ys, marker="o", linewidth=width, markersize=3 + width, label=name)
    ax.set_xlabel("mean forecast probability (equal-count bins)")
    ax.set_ylabel("observed hit rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def summary(p: np.ndarray, y: np.ndarray, climatology: np.ndarray, groups: np.ndarray) -> dict[str, Any]:
    """The numbers ``evaluate`` prints for one set of settled rows."""
    p, y = np.asarray(p, float), np.asarray(y, float)
    floor = ece_noise_floor(p, groups)
    has_clim = np.isfinite(climatology)
    return {
        "n": int(len(p)),
        "base_rate": float(y.mean()) if len(y) else float("nan"),
        "mean_forecast": float(p.mean()) if len(p) else float("nan"),
        "brier": brier_score(p, y) if len(p) else float("nan"),
        "brier_climatology": brier_score(climatology[has_clim], y[has_clim]) if has_clim.any() else float("nan"),
        "brier_model_same_rows": brier_score(p[has_clim], y[has_clim]) if has_clim.any() else float("nan"),
        "n_climatology": int(has_clim.sum()),
        "brier_skill": brier_skill(p[has_clim], climatology[has_clim], y[has_clim]) if has_clim.any() else float("nan"),
        "ece": ece_equal_count(p, y),
        "ece_floor_mean": floor["mean"],
        "ece_floor_p95": floor["p95"],
        "auc": auc(p, y),
    }
