"""Features of a bracket idea that mean the same thing on every symbol (they transfer).

A 3%/6% bracket on a quiet utility and on a volatile chip stock are different bets, and a
20-session horizon is not a 5-session one. So the first feature is what a driftless random
walk with the symbol's recent volatility says about *this* bracket and *this* horizon
(:func:`random_walk_probability`); the rest are volatility-scaled (trend, distance from the
average, the market's state) or the symbol's own past hit rate for the same bracket
(:func:`past_hit_rate`, the past-only climatology, shrunk towards a prior while it is thin).

Every array here is computed from bars at or before its row: a row's value never depends on
later bars (tests cut the data and compare).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Sessions of log returns behind the volatility estimate.
VOL_WINDOW = 20
#: Smallest daily volatility used (a halted or flat series would give zero).
MIN_DAILY_VOL = 0.002
#: Terms of the first-exit series; enough for barriers 60 standard deviations away.
SERIES_TERMS = 400
#: Pseudo-ideas of prior weight when shrinking a symbol's past hit rate.
CLIMATOLOGY_PRIOR_WEIGHT = 30.0

#: Sessions of memory of the past hit rate (0: every settled idea weighs the same).
CLIMATOLOGY_MEMORY = 120.0

#: The drift a symbol's log price is assumed to have before its own history says otherwise
#: (per year; stocks rise on average, and a driftless walk under-forecasts targets above
#: the entry in calm uptrends), and how many sessions of prior weight it carries against the
#: symbol's own past mean log return (:func:`past_drift`).
DRIFT_PRIOR_ANNUAL = 0.08
DRIFT_PRIOR_SESSIONS = 2000.0
SESSIONS_PER_YEAR = 252.0

#: Sessions of the past return behind the walk's short-term reversal term (:class:`Reversal`).
REVERSAL_WINDOW = 5
#: Horizons (sessions) on which the reversal's cumulative effect is fitted; between them it
#: is interpolated (0 at 0 sessions), beyond the last it stays at the last.
REVERSAL_HORIZONS: tuple[int, ...] = (1, 2, 3, 5, 10, 20)

#: Names of the columns of :func:`transferable_features`, in order.
TRANSFERABLE_NAMES: tuple[str, ...] = (
    "logit_random_walk",  # logit of the random-walk probability for this bracket and horizon
    "logit_past_hit_rate",  # logit of the symbol's shrunk past hit rate for this bracket
    "trend_20d_z",  # 20-session log return / (vol * sqrt(20))
    "distance_ma50_z",  # log(close / SMA50) / (vol * sqrt(50))
    "vol_ratio_20_250",  # log(20-session vol / 250-session vol): the symbol's vol regime
    "market_trend_20d_z",  # the benchmark's trend_20d_z (0 without a benchmark)
)


def logit(p: np.ndarray | float) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=float), 1e-4, 1 - 1e-4)
    return np.log(q / (1.0 - q))


def sigmoid(x: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=float)))


def daily_volatility(close: np.ndarray, window: int = VOL_WINDOW) -> np.ndarray:
    """Root mean square of the last ``window`` daily log returns at each row (NaN before).

    Rows with fewer than ``window`` returns use all the returns so far (at least 10).
    """
    close = np.asarray(close, dtype=float)
    n = len(close)
    out = np.full(n, np.nan)
    if n < 2:
        return out
    r = np.zeros(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        r[1:] = np.log(close[1:] / close[:-1])
    r = np.where(np.isfinite(r), r, 0.0)
    sq = np.concatenate(([0.0], np.cumsum(r * r)))
    i = np.arange(n)
    count = np.minimum(i, window)  # returns 1..i at row i
    lo = i + 1 - count
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.sqrt((sq[i + 1] - sq[lo]) / count)
    out[count < 10] = np.nan
    return np.maximum(out, MIN_DAILY_VOL)


def random_walk_probability(
    stop: np.ndarray | float, target: np.ndarray | float, horizon: np.ndarray | float,
    daily_vol: np.ndarray | float, drift: np.ndarray | float | None = None,
) -> np.ndarray:
    """P(target before stop within ``horizon`` sessions) for a Brownian log price
    (driftless unless ``drift``, the log price's mean change per session, is given:
    :func:`drift_walk_probability`).

    Barriers at ``log(1 + target)`` above and ``log(1 - stop)`` below the entry, volatility
    ``daily_vol`` per session. First-exit series of the heat equation on an interval:
    ``P = a/L - sum_k 2/(k pi) (-1)^(k+1) sin(k pi a / L) exp(-k^2 pi^2 T / (2 L^2))``
    with ``a`` the distance to the stop, ``L`` the width, both in units of ``daily_vol``,
    ``T`` the horizon. Long brackets; for a short one pass the stop and target swapped in
    meaning (distance up to the stop, down to the target).
    """
    if drift is not None:
        return drift_walk_probability(stop, target, horizon, daily_vol, drift)
    stop, target, horizon, vol = np.broadcast_arrays(
        np.asarray(stop, float), np.asarray(target, float), np.asarray(horizon, float),
        np.asarray(daily_vol, float),
    )
    a = -np.log1p(-stop) / vol
    b = np.log1p(target) / vol
    width = a + b
    # Terms beyond exp(-k^2 pi^2 T / (2 L^2)) < exp(-40) add nothing a float can hold.
    with np.errstate(invalid="ignore", divide="ignore"):
        needed = np.sqrt(80.0 * width * width / (math.pi ** 2 * np.maximum(horizon, 1e-9)))
    top = int(np.clip(np.ceil(np.nanmax(needed, initial=1.0)) + 1, 8, SERIES_TERMS))
    k = np.arange(1, top + 1, dtype=float)
    shape = a.shape
    a1, w1, t1 = a.reshape(-1, 1), width.reshape(-1, 1), horizon.reshape(-1, 1)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        terms = (2.0 / (k * math.pi)) * np.where(k % 2 == 1, 1.0, -1.0) * np.sin(k * math.pi * a1 / w1) \
            * np.exp(-(k * k) * math.pi ** 2 * t1 / (2.0 * w1 * w1))
        p = (a1 / w1)[:, 0] - terms.sum(axis=1)
    return np.clip(p, 1e-4, 1 - 1e-4).reshape(shape)


def drift_walk_probability(
    stop: np.ndarray | float, target: np.ndarray | float, horizon: np.ndarray | float,
    daily_vol: np.ndarray | float, drift: np.ndarray | float,
) -> np.ndarray:
    """P(target before stop within ``horizon`` sessions) for a Brownian log price with
    mean change ``drift`` and volatility ``daily_vol`` per session.

    In volatility units (``m = drift / vol``, stop ``a`` below, target ``b`` above, width
    ``L``) the density of reaching the target at ``t`` is the driftless one times
    ``exp(m b - m^2 t / 2)`` (Girsanov), which integrates term by term:
    ``P = P_inf - exp(m b) sum_k (k pi / L^2) (-1)^(k+1) sin(k pi a / L) exp(-c_k T) / c_k``
    with ``c_k = k^2 pi^2 / (2 L^2) + m^2 / 2`` and ``P_inf = (1 - e^(-2ma)) / (1 - e^(-2mL))``
    the gambler's ruin with drift (``a / L`` as ``m -> 0``).
    """
    stop, target, horizon, vol, mu = np.broadcast_arrays(
        np.asarray(stop, float), np.asarray(target, float), np.asarray(horizon, float),
        np.asarray(daily_vol, float), np.asarray(drift, float),
    )
    shape = stop.shape
    a = (-np.log1p(-stop) / vol).reshape(-1, 1)
    b = (np.log1p(target) / vol).reshape(-1, 1)
    m = (mu / vol).reshape(-1, 1)
    t = horizon.reshape(-1, 1)
    width = a + b
    # As in the driftless series: later terms are below exp(-40) of the first (the drift only
    # makes them smaller), so they are cut (the walk is re-made at every refit); each row
    # keeps its own count of terms, so its value does not depend on the other rows.
    with np.errstate(invalid="ignore", divide="ignore"):
        needed = np.sqrt(80.0 * width * width / (math.pi ** 2 * np.maximum(t, 1e-9)))
    needed = np.clip(np.ceil(np.nan_to_num(needed, nan=SERIES_TERMS)) + 1, 8, SERIES_TERMS)
    k = np.arange(1, int(needed.max(initial=8)) + 1, dtype=float)
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        tiny = np.abs(m * width) < 1e-9
        far = np.where(tiny, a / width, np.expm1(-2.0 * m * a) / np.where(tiny, 1.0, np.expm1(-2.0 * m * width)))
        rate = (k * k) * math.pi ** 2 / (2.0 * width * width) + m * m / 2.0
        terms = (k * math.pi / (width * width)) * np.where(k % 2 == 1, 1.0, -1.0) \
            * np.sin(k * math.pi * a / width) * np.exp(-rate * t) / rate
        terms = np.where(k <= needed, terms, 0.0)
        p = far[:, 0] - np.exp(m * b)[:, 0] * terms.sum(axis=1)
    return np.clip(p, 1e-4, 1 - 1e-4).reshape(shape)


def past_drift(
    close: np.ndarray, prior: float = DRIFT_PRIOR_ANNUAL / SESSIONS_PER_YEAR,
    weight: float = DRIFT_PRIOR_SESSIONS,
) -> np.ndarray:
    """At each session: the mean daily log return of the symbol up to it, shrunk towards
    ``prior`` with ``weight`` sessions (one symbol's decade says little about its drift)."""
    close = np.asarray(close, dtype=float)
    r = np.zeros(len(close))
    if len(close) > 1:
        with np.errstate(divide="ignore", invalid="ignore"):
            r[1:] = np.log(close[1:] / close[:-1])
    r = np.where(np.isfinite(r), r, 0.0)
    return (np.cumsum(r) + weight * prior) / (np.arange(len(close), dtype=float) + weight)


def regime_drift(
    drift: np.ndarray, vol: np.ndarray, ratio: np.ndarray, slope: float, center: float,
) -> np.ndarray:
    """The walk's drift in the symbol's volatility regime: ``drift + vol * slope * (ratio -
    center)``, ``ratio`` the log of the 20- over the 250-session volatility. Calm stocks drift
    up faster than stressed ones (the leverage effect: on every symbol here the next 20
    sessions' return in volatility units falls with the ratio); ``slope`` and ``center`` are
    fitted on the past at each refit (:func:`ai.shrinkage.drift_slope`). A missing ratio
    leaves the drift as it is."""
    shift = np.where(np.isfinite(ratio), np.asarray(ratio, float) - center, 0.0)
    return np.asarray(drift, float) + np.asarray(vol, float) * slope * shift


def forward_move(close: np.ndarray, vol: np.ndarray, horizon: int) -> np.ndarray:
    """At each session ``i``: the mean log return per session over the next ``horizon``
    sessions (close ``i`` to close ``i + horizon``) in units of ``vol[i]``; NaN where the data
    ends first. Known at session ``i + horizon``: only for fitting on the past."""
    close = np.asarray(close, dtype=float)
    out = np.full(len(close), np.nan)
    if len(close) > horizon:
        with np.errstate(divide="ignore", invalid="ignore"):
            out[:-horizon] = np.log(close[horizon:] / close[:-horizon]) / horizon / np.asarray(vol, float)[:-horizon]
    return np.where(np.isfinite(out), out, np.nan)


def past_fall(close: np.ndarray, vol: np.ndarray, window: int = REVERSAL_WINDOW) -> np.ndarray:
    """At each session ``i``: the fall over the last ``window`` sessions (the log return from
    close ``i - window`` to close ``i`` in units of ``vol[i]``, 0 where it rose); NaN before
    ``window`` sessions. Only falls: after a rise the next sessions show no reversal here
    (moves after the largest rises are above average, not below), so a linear term on the
    whole return mispriced both sides."""
    with np.errstate(invalid="ignore", divide="ignore"):
        out = _rolling_log_return(np.asarray(close, float), window) / np.asarray(vol, float)
    return np.where(np.isfinite(out), np.minimum(out, 0.0), np.nan)


def moves_ahead(
    open_: np.ndarray, close: np.ndarray, vol: np.ndarray, horizons: tuple[int, ...] = REVERSAL_HORIZONS,
) -> np.ndarray:
    """At each session ``i`` and horizon ``h`` (a column each): the log return from the next
    session's open (an idea's entry) to close ``i + h``, in units of ``vol[i]``; NaN where the
    data ends first. Known at session ``i + h``: only for fitting on the past."""
    open_, close, vol = (np.asarray(a, float) for a in (open_, close, vol))
    n = len(close)
    out = np.full((n, len(horizons)), np.nan)
    for j, h in enumerate(horizons):
        if n > h:
            with np.errstate(divide="ignore", invalid="ignore"):
                out[: n - h, j] = np.log(close[h:] / open_[1 : n - h + 1]) / vol[: n - h]
    return np.where(np.isfinite(out), out, np.nan)


@dataclass(frozen=True)
class Reversal:
    """The short-term reversal of the walk's drift: after a fall over the last
    :data:`REVERSAL_WINDOW` sessions prices bounce, mostly within a few sessions. For each of
    :data:`REVERSAL_HORIZONS` the expected move from the entry to ``h`` sessions later, in
    volatility units, is ``slope_h * (past fall - center_h)`` (:func:`past_fall`), fitted on
    the past at each refit and kept only where significant (:func:`ai.shrinkage.drift_slope`;
    0 otherwise). Empty slopes: no reversal (files from before it)."""

    slopes: tuple[float, ...] = ()
    centers: tuple[float, ...] = ()

    def cumulative(self, fall: np.ndarray, horizon: np.ndarray | float) -> np.ndarray:
        """The expected move over ``horizon`` sessions in volatility units after a past fall
        of ``fall`` (NaN: none), interpolated between the fitted horizons."""
        fall = np.asarray(fall, float)
        horizon = np.broadcast_to(np.asarray(horizon, float), fall.shape)
        if not any(self.slopes):
            return np.zeros(fall.shape)
        x = np.where(np.isfinite(fall), fall, np.nan).reshape(-1, 1)
        effect = np.asarray(self.slopes) * (x - np.asarray(self.centers))
        effect = np.hstack([np.zeros((len(effect), 1)), np.where(np.isfinite(effect), effect, 0.0)])
        grid = np.array((0, *REVERSAL_HORIZONS), dtype=float)
        t = np.clip(horizon.reshape(-1), 0.0, grid[-1])
        j = np.clip(np.searchsorted(grid, t, side="left"), 1, len(grid) - 1)
        w = (t - grid[j - 1]) / (grid[j] - grid[j - 1])
        r = np.arange(len(t))
        return (effect[r, j - 1] * (1.0 - w) + effect[r, j] * w).reshape(fall.shape)


def reversal_drift(
    drift: np.ndarray, vol: np.ndarray, fall: np.ndarray, horizon: np.ndarray | float, reversal: Reversal,
) -> np.ndarray:
    """The walk's drift over an idea's own ``horizon`` with the reversal's expected move spread
    evenly over it: ``drift + vol * cumulative / horizon``."""
    horizon = np.asarray(horizon, float)
    cum = reversal.cumulative(fall, horizon)
    return np.asarray(drift, float) + np.asarray(vol, float) * cum / np.maximum(horizon, 1.0)


def _rolling_log_return(close: np.ndarray, k: int) -> np.ndarray:
    out = np.full(len(close), np.nan)
    if len(close) > k:
        with np.errstate(divide="ignore", invalid="ignore"):
            out[k:] = np.log(close[k:] / close[:-k])
    return out


def _sma(x: np.ndarray, k: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    if len(x) >= k:
        c = np.concatenate(([0.0], np.cumsum(x)))
        out[k - 1:] = (c[k:] - c[:-k]) / k
    return out


def trend_z(close: np.ndarray, vol: np.ndarray, k: int = 20) -> np.ndarray:
    """The ``k``-session log return in units of its random-walk spread."""
    with np.errstate(invalid="ignore"):
        return _rolling_log_return(close, k) / (vol * math.sqrt(k))


def past_hit_rate(
    label: np.ndarray, settled: np.ndarray, n: int, prior: np.ndarray | float,
    weight: float = CLIMATOLOGY_PRIOR_WEIGHT,
) -> tuple[np.ndarray, np.ndarray]:
    """At each session ``i``: the hit rate of the ideas settled at or before ``i`` (their
    deciding bar is ``settled``), shrunk towards ``prior`` with ``weight`` pseudo-ideas;
    and the raw rate (NaN before the first settled idea: the past-only climatology).
    """
    ok = np.isfinite(label) & (settled >= 0)
    wins = np.zeros(n)
    count = np.zeros(n)
    np.add.at(wins, settled[ok], label[ok])
    np.add.at(count, settled[ok], 1.0)
    if CLIMATOLOGY_MEMORY:
        # Exponential memory: an idea settled ``k`` sessions ago weighs ``exp(-k / memory)``.
        grow = np.exp((np.arange(n) - (n - 1)) / CLIMATOLOGY_MEMORY)
        wins, count = np.cumsum(wins * grow) / grow, np.cumsum(count * grow) / grow
    else:
        wins, count = np.cumsum(wins), np.cumsum(count)
    with np.errstate(invalid="ignore", divide="ignore"):
        raw = np.where(count > 0, wins / count, np.nan)
        shrunk = (wins + weight * np.asarray(prior, float)) / (count + weight)
    return shrunk, raw


def session_features(close: np.ndarray, vol: np.ndarray, market_close: np.ndarray | None) -> np.ndarray:
    """The per-session columns of :data:`TRANSFERABLE_NAMES` (all but the first two)."""
    long_vol = daily_volatility(close, 250)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.log(vol / long_vol)
        dist = np.log(close / _sma(close, 50)) / (vol * math.sqrt(50))
    if market_close is None:
        market = np.zeros(len(close))
    else:
        market = trend_z(market_close, daily_volatility(market_close), 20)
        market = np.where(np.isfinite(market), market, 0.0)
    return np.column_stack([trend_z(close, vol, 20), dist, ratio, market])


def row_baseline(
    random_walk_row: np.ndarray, past_default: np.ndarray, random_walk_default: np.ndarray,
    past_weight: float = 1.0,
) -> np.ndarray:
    """The baseline of an idea with its own bracket: its random-walk probability moved by
    the symbol's excess log-odds over the random walk for the default bracket (the shrunk
    past hit rate, first pulled towards the walk: ``walk + past_weight * (past - walk)``,
    the empirical-Bayes weight of :func:`ai.shrinkage.past_weight`). For an idea with the
    default bracket this is that pulled past hit rate."""
    past = random_walk_default + past_weight * (np.asarray(past_default, float) - random_walk_default)
    return np.asarray(sigmoid(logit(random_walk_row) + logit(past) - logit(random_walk_default)))


def with_past_weight(
    X: np.ndarray, random_walk_row: np.ndarray, past_default: np.ndarray,
    random_walk_default: np.ndarray, past_weight: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The baseline of each row at this ``past_weight`` and the features with their
    ``logit_random_walk`` and ``logit_past_hit_rate`` columns to match (a copy): the one
    place both ``evaluate``'s walk and the shipped model's inference make them."""
    baseline = row_baseline(random_walk_row, past_default, random_walk_default, past_weight)
    X = np.array(X, dtype=float, copy=True)
    X[:, TRANSFERABLE_NAMES.index("logit_random_walk")] = logit(random_walk_row)
    X[:, TRANSFERABLE_NAMES.index("logit_past_hit_rate")] = logit(baseline)
    return baseline, X


def refit_rows(
    X: np.ndarray, stop: np.ndarray, target: np.ndarray, horizon: np.ndarray, vol: np.ndarray,
    drift: np.ndarray, ratio: np.ndarray, past_default: np.ndarray,
    default: tuple[float, float, int], fitted: tuple[float, float, float],
    fall: np.ndarray | None = None, reversal: Reversal | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Baseline and features of ideas under one refit's ``fitted = (drift slope, its center,
    past weight)`` and ``reversal``: the walk of the row's own bracket and of the ``default``
    (stop, target, horizon) with the regime's drift (:func:`regime_drift`) and the short-term
    reversal over each one's horizon after the past ``fall`` (:func:`reversal_drift`),
    the past hit rate pulled towards the latter (:func:`row_baseline`). ``evaluate``'s walk
    and the shipped model's inference both go through here."""
    slope, center, weight = fitted
    mu = regime_drift(drift, vol, ratio, slope, center)
    fall = np.full(np.shape(mu), np.nan) if fall is None else fall
    reversal = reversal or Reversal()
    walk_row = random_walk_probability(stop, target, horizon, vol, reversal_drift(mu, vol, fall, horizon, reversal))
    walk_default = random_walk_probability(
        default[0], default[1], default[2], vol, reversal_drift(mu, vol, fall, default[2], reversal))
    return with_past_weight(X, walk_row, past_default, walk_default, weight)
