"""The pooled noise floor with the outcomes' cross-symbol dependence (``ai.correlated_floor``):
it finds the dependence that is there, finds none where there is none, widens the floor only
when outcomes move together."""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from ai.calibration import ece_noise_floor
from ai.correlated_floor import block_correlation, correlated_floor

SYMBOLS, BLOCKS, PER_BLOCK = 8, 120, 20


def _pool(rho: float, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Forecasts and outcomes of a perfectly calibrated forecaster on SYMBOLS symbols whose
    block outcomes share a common factor of strength ``rho``."""
    rng = np.random.default_rng(seed)
    symbol = np.repeat(np.arange(SYMBOLS), BLOCKS * PER_BLOCK)
    block = np.tile(np.repeat(np.arange(BLOCKS), PER_BLOCK), SYMBOLS)
    p = rng.uniform(0.15, 0.45, len(symbol))
    common = rng.standard_normal(BLOCKS)[block]
    own = rng.standard_normal(SYMBOLS * BLOCKS)[symbol * BLOCKS + block]
    y = (norm.cdf(np.sqrt(rho) * common + np.sqrt(1 - rho) * own) < p).astype(float)
    return p, y, symbol, block


def test_independent_symbols_show_no_dependence_and_the_same_floor() -> None:
    p, y, symbol, block = _pool(0.0)
    found = correlated_floor(p, y, symbol, block)
    assert found is not None
    assert abs(found.observed_correlation) < 0.08
    assert found.latent_correlation < 0.2
    independent = ece_noise_floor(p, symbol * 10_000 + block)
    assert abs(found.p95 - independent["p95"]) < 0.25 * independent["p95"]


def test_co_moving_symbols_are_measured_and_widen_the_floor() -> None:
    p, y, symbol, block = _pool(0.6)
    found = correlated_floor(p, y, symbol, block)
    assert found is not None
    assert found.observed_correlation > 0.25
    assert 0.4 <= found.latent_correlation <= 0.8
    independent = ece_noise_floor(p, symbol * 10_000 + block)
    assert found.p95 > 1.3 * independent["p95"]


def test_one_symbol_has_no_cross_symbol_floor() -> None:
    p, y, symbol, block = _pool(0.5)
    one = symbol == 0
    assert correlated_floor(p[one], y[one], symbol[one], block[one]) is None


def test_block_correlation_of_identical_symbols_is_one() -> None:
    rate = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    y = np.concatenate([rate, rate])
    assert block_correlation(y, np.repeat(["A", "B"], 5), np.tile(np.arange(5), 2)) == 1.0

