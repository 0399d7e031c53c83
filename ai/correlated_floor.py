"""The calibration error's noise floor when outcomes move together across symbols.

:func:`ai.calibration.ece_noise_floor` draws one uniform number per symbol and block of an
outcome window, independently across symbols: it models the overlap of a symbol's own
windows, and it is the floor the issue's acceptance uses. Measured on daily bars, though,
the hit rates of different stocks in the same calendar block move together (the market's
regime: a rising month lifts every long idea). A perfectly calibrated forecaster that knows
only the past shows, on a pool of such symbols, a larger calibration error than independent
draws suggest, because one block's surprise lands on every symbol at once.

This module measures that dependence on the outcomes themselves and reports the floor with
it, beside (never instead of) the independent one:

* **observed correlation**: for each symbol, the hit rate of its ideas in each calendar
  block, standardised over the symbol's blocks; the mean over blocks of the average pairwise
  product across symbols (the mean pairwise correlation of block hit rates);
* **latent correlation**: the ``rho`` of a one-factor Gaussian copula
  (``u = Phi(sqrt(rho) Z_block + sqrt(1 - rho) E_symbol_block)``, labels ``u < p``) whose
  simulated labels show that observed correlation, found on a grid;
* **floor**: the ECE of labels drawn that way from the forecasts, mean and 95th percentile.

Deterministic (fixed seed); numpy and scipy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from ai.calibration import FLOOR_DRAWS, ece_of_draws

#: Latent correlations tried when matching the observed one.
RHO_GRID = np.round(np.linspace(0.0, 0.9, 10), 2)
#: Simulations per grid point when matching (the match is on a mean, so few are needed).
MATCH_DRAWS = 12


@dataclass(frozen=True)
class CorrelatedFloor:
    """The floor with the outcomes' cross-symbol dependence, and how it was measured."""

    observed_correlation: float
    latent_correlation: float
    mean: float
    p95: float


def block_correlation(y: np.ndarray, symbol: np.ndarray, block: np.ndarray) -> float:
    """Mean pairwise correlation across symbols of per-block hit rates (NaN with < 2 symbols
    sharing a block, or when no symbol's hit rate varies)."""
    _, s = np.unique(symbol, return_inverse=True)
    _, b = np.unique(block, return_inverse=True)
    return _block_correlation(np.asarray(y, float), s, b, int(s.max()) + 1, int(b.max()) + 1)


def _block_correlation(y: np.ndarray, s: np.ndarray, b: np.ndarray, n_s: int, n_b: int) -> float:
    """:func:`block_correlation` on integer symbol and block codes."""
    cell = s * n_b + b
    count = np.bincount(cell, minlength=n_s * n_b).reshape(n_s, n_b)
    hits = np.bincount(cell, weights=y, minlength=n_s * n_b).reshape(n_s, n_b)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(count > 0, hits / np.maximum(count, 1), np.nan)
        z = (rate - np.nanmean(rate, axis=1, keepdims=True)) / np.nanstd(rate, axis=1, keepdims=True)
    z = np.where(np.isfinite(z), z, np.nan)
    k = np.isfinite(z).sum(axis=0)
    total = np.nansum(z, axis=0)
    squares = np.nansum(z * z, axis=0)
    ok = k >= 2
    if not ok.any():
        return float("nan")
    pairs = (total[ok] ** 2 - squares[ok]) / (k[ok] * (k[ok] - 1))
    return float(pairs.mean())


def _draw(p: np.ndarray, factor_of: np.ndarray, cell_of: np.ndarray, rho: float,
          rng: np.random.Generator) -> np.ndarray:
    """Labels ``u < p`` with ``u`` from the one-factor copula (shared per block, own per cell)."""
    common = rng.standard_normal(int(factor_of.max()) + 1)[factor_of]
    own = rng.standard_normal(int(cell_of.max()) + 1)[cell_of]
    u = norm.cdf(np.sqrt(rho) * common + np.sqrt(1.0 - rho) * own)
    return (u < p).astype(float)


def correlated_floor(
    p: np.ndarray, y: np.ndarray, symbol: np.ndarray, block: np.ndarray,
    draws: int = FLOOR_DRAWS, seed: int = 15,
) -> CorrelatedFloor | None:
    """The ECE floor of a perfectly calibrated forecaster whose outcomes share the pool's
    measured cross-symbol dependence (``block``: calendar blocks as long as an outcome
    window, the same ids for every symbol). ``None`` with fewer than two symbols or no
    measurable dependence."""
    p, y = np.asarray(p, float), np.asarray(y, float)
    if len(p) == 0 or len(np.unique(symbol)) < 2:
        return None
    _, factor_of = np.unique(block, return_inverse=True)
    _, s = np.unique(symbol, return_inverse=True)
    n_s, n_b = int(s.max()) + 1, int(factor_of.max()) + 1
    observed = _block_correlation(y, s, factor_of, n_s, n_b)
    if not np.isfinite(observed):
        return None
    _, cell_of = np.unique(s.astype(np.int64) * (int(factor_of.max()) + 1) + factor_of, return_inverse=True)
    rng = np.random.default_rng(seed)
    simulated = np.array([
        np.mean([_block_correlation(_draw(p, factor_of, cell_of, float(rho), rng), s, factor_of, n_s, n_b)
                 for _ in range(MATCH_DRAWS)])
        for rho in RHO_GRID
    ])
    # The simulated correlation rises with rho; interpolate the observed one on the grid
    # (clamped to it: a pool more dependent than rho = 0.9 is floored at 0.9).
    order = np.maximum.accumulate(simulated)
    rho = float(np.interp(observed, order, RHO_GRID)) if observed > order[0] else 0.0
    floor = ece_of_draws(p, lambda: _draw(p, factor_of, cell_of, rho, rng), draws)
    return CorrelatedFloor(observed, rho, floor["mean"], floor["p95"])
