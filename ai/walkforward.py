"""Walk-forward, out-of-sample probabilities for a table of bracket ideas.

The models are refitted at the first day of every calendar year (a date that does not
depend on where the data ends). The fit for year ``Y`` sees only ideas whose outcome had
settled before 1 January ``Y`` (an idea whose window reaches past the refit date is purged),
the random walk's drift slope on the volatility regime (:func:`ai.shrinkage.drift_slope`), its
short-term reversal after a fall (:func:`refit_reversal`) and
the weight of the past hit rate against that walk (:func:`ai.shrinkage.past_weight`) are
fitted on every session's default idea settled before it, and the blend weight of
:mod:`ai.shrinkage` is chosen on predictions that earlier fits made out of sample. A row's probability therefore depends only on data before its refit date and
on its own features, which use bars up to and including its decision session: cutting the
data after a row's entry changes nothing of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np

from ai.bracket_features import (
    REVERSAL_HORIZONS, Reversal, random_walk_probability, refit_rows, regime_drift, reversal_drift,
)
from ai.shrinkage import BlendChoice, Logistic, blend, choose_weight, drift_slope, fit_logistic, past_weight

#: Fewest settled ideas a logistic fit needs; fewer and the year is the baseline's.
MIN_FIT_ROWS = 500
_EPOCH = date(1970, 1, 1).toordinal()


@dataclass
class PastRecord:
    """Every session's default-bracket idea of every symbol: what the drift's regime slope
    and the weight of the past hit rate against the walk are fitted on (proposals are too
    few for it)."""

    settled_day: np.ndarray  # day of the bar that decided the label (max int where undecided)
    label: np.ndarray  # NaN where undecided
    past: np.ndarray  # the shrunk past hit rate at the decision
    vol: np.ndarray  # daily volatility, drift and volatility ratio at the decision
    drift: np.ndarray
    ratio: np.ndarray
    move: np.ndarray  # bf.forward_move over the default horizon
    move_day: np.ndarray  # day of the bar that ends that move (max int where the data ends first)
    block: np.ndarray  # one id per symbol and outcome window (the moves' clusters)
    past_fall: np.ndarray  # the last 5 sessions' fall in volatility units (bf.past_fall)
    ahead: np.ndarray  # moves from the entry over bf.REVERSAL_HORIZONS (a column each)
    ahead_day: np.ndarray  # day of the bar that ends each of them (max int where the data ends first)


@dataclass
class IdeaTable:
    """Ideas of every symbol, one row each (arrays of equal length)."""

    day: np.ndarray  # decision day (days since 1970-01-01)
    settled_day: np.ndarray  # day of the bar that decided the label (max int where undecided)
    label: np.ndarray  # 1/0 where the data decides the outcome (even before the horizon ends)
    baseline: np.ndarray  # the shrunk past hit rate for the row's bracket (before any refit)
    X: np.ndarray  # transferable features
    horizon: np.ndarray  # sessions
    stop: np.ndarray  # the row's own bracket (fractions of the entry)
    target: np.ndarray
    vol: np.ndarray  # daily volatility, drift and volatility ratio at the decision
    drift: np.ndarray
    ratio: np.ndarray
    past_default: np.ndarray  # the symbol's shrunk past hit rate of the default bracket
    past_fall: np.ndarray  # the last 5 sessions' fall in volatility units (the reversal's input)
    default: tuple[float, float, int]  # the default bracket: stop, target, horizon
    record: PastRecord


@dataclass
class WalkForward:
    """The out-of-sample forecast and what each refit chose."""

    probability: np.ndarray
    model: np.ndarray  # the logistic's own out-of-sample prediction (baseline where none)
    fits: list[dict[str, Any]] = field(default_factory=list)
    last_model: Logistic | None = None
    last_weight: float = 0.0
    last_past_weight: float = 1.0
    last_drift_slope: tuple[float, float] = (0.0, 0.0)  # slope and center (ai.shrinkage.drift_slope)
    last_reversal: Reversal = field(default_factory=Reversal)


def year_start(year: int) -> int:
    """1 January ``year`` as days since 1970-01-01."""
    return date(year, 1, 1).toordinal() - _EPOCH


def day_year(days: np.ndarray) -> np.ndarray:
    """Calendar year of each day number (vectorised through numpy datetimes)."""
    return np.asarray(days, dtype="datetime64[D]").astype("datetime64[Y]").astype(int) + 1970


def block_ids(days: np.ndarray, horizon: np.ndarray) -> np.ndarray:
    """Blocks of calendar time about as long as an outcome window (horizon sessions)."""
    span = np.maximum(1, (np.asarray(horizon) * 7) // 5)
    return np.asarray(days, dtype=np.int64) // span


def refit_reversal(record: PastRecord, cutoff: int) -> Reversal:
    """The short-term reversal fitted on the record as it stood before ``cutoff``: per
    horizon of :data:`REVERSAL_HORIZONS`, the slope of the move from the entry on the past
    fall (:func:`ai.bracket_features.past_fall`; both in volatility units), kept only where significant (:func:`drift_slope`)."""
    fits = []
    for j in range(len(REVERSAL_HORIZONS)):
        known = record.ahead_day[:, j] < cutoff
        fits.append(drift_slope(record.ahead[known, j], record.past_fall[known], record.block[known]))
    return Reversal(tuple(f[0] for f in fits), tuple(f[1] for f in fits))


def refit_regime(
    record: PastRecord, default: tuple[float, float, int], cutoff: int,
) -> tuple[tuple[float, float, float], Reversal]:
    """The walk's drift slope, its center, the past hit rate's weight and the short-term
    reversal, fitted on the record as it stood before ``cutoff`` (moves and labels settled
    before it)."""
    reversal = refit_reversal(record, cutoff)
    moved = record.move_day < cutoff
    slope, center = drift_slope(record.move[moved], record.ratio[moved], record.block[moved])
    before = np.isfinite(record.label) & (record.settled_day < cutoff)
    mu = regime_drift(record.drift[before], record.vol[before], record.ratio[before], slope, center)
    mu = reversal_drift(mu, record.vol[before], record.past_fall[before], default[2], reversal)
    walk = random_walk_probability(default[0], default[1], default[2], record.vol[before], mu)
    return (slope, center, past_weight(record.label[before], record.past[before], walk)), reversal


def walk_forward(table: IdeaTable) -> WalkForward:
    """Out-of-sample probability of every row (see the module docstring)."""
    n = len(table.day)
    prob = table.baseline.copy()
    base_oos = table.baseline.copy()  # each row's baseline as its own refit made it
    model_oos = np.full(n, np.nan)
    years = day_year(table.day)
    result = WalkForward(probability=prob, model=table.baseline.copy())
    known = np.isfinite(table.label)
    for year in np.unique(years).tolist():
        cutoff = year_start(year)
        rows = np.flatnonzero(years == year)
        train = known & (table.settled_day < cutoff)
        fitted, reversal = refit_regime(table.record, table.default, cutoff)
        used = np.flatnonzero(train | (years == year))  # the walk is re-made only where it is read
        baseline_u, X_u = refit_rows(
            table.X[used], table.stop[used], table.target[used], table.horizon[used], table.vol[used],
            table.drift[used], table.ratio[used], table.past_default[used], table.default, fitted,
            table.past_fall[used], reversal,
        )
        baseline = np.full(n, np.nan)
        X = np.full(table.X.shape, np.nan)
        baseline[used], X[used] = baseline_u, X_u
        base_oos[rows] = baseline[rows]
        prob[rows] = baseline[rows]
        fit_info: dict[str, Any] = {"year": year, "n_train": int(train.sum()), "drift_slope": fitted[0],
                                    "drift_center": fitted[1], "past_weight": fitted[2],
                                    "reversal_slopes": list(reversal.slopes)}
        model: Logistic | None = None
        if train.sum() >= MIN_FIT_ROWS and 0 < table.label[train].sum() < train.sum():
            model = fit_logistic(X[train], table.label[train])
            model_oos[rows] = model.predict(X[rows])
        earlier = train & np.isfinite(model_oos)
        choice: BlendChoice = choose_weight(
            model_oos[earlier], base_oos[earlier], table.label[earlier],
            block_ids(table.day[earlier], table.horizon[earlier]),
        )
        weight = choice.weight if model is not None else 0.0
        if model is not None:
            prob[rows] = blend(baseline[rows], model_oos[rows], weight)
            result.last_model, result.last_weight = model, weight
        result.last_past_weight, result.last_drift_slope = fitted[2], (fitted[0], fitted[1])
        result.last_reversal = reversal
        fit_info.update(weight=weight, n_weight_rows=choice.n, **choice.detail)
        result.fits.append(fit_info)
    result.model = np.where(np.isfinite(model_oos), model_oos, base_oos)
    return result
