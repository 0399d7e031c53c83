"""Walk-forward, out-of-sample probabilities for a table of bracket ideas.

The models are refitted at the first day of every calendar year (a date that does not
depend on where the data ends). The fit for year ``Y`` sees only ideas whose outcome had
settled before 1 January ``Y`` (an idea whose window reaches past the refit date is purged),
the weight of the past hit rate against the random walk (:func:`ai.shrinkage.past_weight`)
is estimated on every session's default idea settled before it, and the blend weight of
:mod:`ai.shrinkage` is chosen on predictions that earlier fits made out of sample. A row's probability therefore depends only on data before its refit date and
on its own features, which use bars up to and including its decision session: cutting the
data after a row's entry changes nothing of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np

from ai.bracket_features import with_past_weight
from ai.shrinkage import BlendChoice, Logistic, blend, choose_weight, fit_logistic, past_weight

#: Fewest settled ideas a logistic fit needs; fewer and the year is the baseline's.
MIN_FIT_ROWS = 500
_EPOCH = date(1970, 1, 1).toordinal()


@dataclass
class IdeaTable:
    """Ideas of every symbol, one row each (arrays of equal length)."""

    day: np.ndarray  # decision day (days since 1970-01-01)
    settled_day: np.ndarray  # day of the bar that decided the label (max int where undecided)
    label: np.ndarray  # 1/0 where the data decides the outcome (even before the horizon ends)
    baseline: np.ndarray  # the shrunk past hit rate for the row's bracket (at past weight 1)
    X: np.ndarray  # transferable features
    horizon: np.ndarray  # sessions
    walk: np.ndarray  # random-walk probability of the row's own bracket and horizon
    past_default: np.ndarray  # the symbol's shrunk past hit rate of the default bracket
    walk_default: np.ndarray  # random-walk probability of the default bracket
    record: PastRecord | None = None  # every session's default idea (None: these rows are)


@dataclass
class PastRecord:
    """Every session's default-bracket idea of every symbol: what the weight of the past hit
    rate against the walk is estimated on (the proposals are too few for it)."""

    settled_day: np.ndarray
    label: np.ndarray  # NaN where undecided
    past: np.ndarray  # the shrunk past hit rate at the decision
    walk: np.ndarray  # the walk's probability of the default bracket at the decision


@dataclass
class WalkForward:
    """The out-of-sample forecast and what each refit chose."""

    probability: np.ndarray
    model: np.ndarray  # the logistic's own out-of-sample prediction (baseline where none)
    fits: list[dict[str, Any]] = field(default_factory=list)
    last_model: Logistic | None = None
    last_weight: float = 0.0
    last_past_weight: float = 1.0


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


def walk_forward(table: IdeaTable) -> WalkForward:
    """Out-of-sample probability of every row (see the module docstring)."""
    n = len(table.day)
    prob = table.baseline.copy()
    base_oos = table.baseline.copy()  # each row's baseline at its own refit's past weight
    model_oos = np.full(n, np.nan)
    years = day_year(table.day)
    result = WalkForward(probability=prob, model=table.baseline.copy())
    known = np.isfinite(table.label)
    record = table.record or PastRecord(table.settled_day, table.label, table.past_default, table.walk_default)
    for year in np.unique(years).tolist():
        cutoff = year_start(year)
        rows = np.flatnonzero(years == year)
        train = known & (table.settled_day < cutoff)
        before = np.isfinite(record.label) & (record.settled_day < cutoff)
        b_weight = past_weight(record.label[before], record.past[before], record.walk[before])
        baseline, X = with_past_weight(table.X, table.walk, table.past_default, table.walk_default, b_weight)
        base_oos[rows] = baseline[rows]
        prob[rows] = baseline[rows]
        fit_info: dict[str, Any] = {"year": year, "n_train": int(train.sum()), "past_weight": b_weight}
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
        result.last_past_weight = b_weight
        fit_info.update(weight=weight, n_weight_rows=choice.n, **choice.detail)
        result.fits.append(fit_info)
    result.model = np.where(np.isfinite(model_oos), model_oos, base_oos)
    return result
