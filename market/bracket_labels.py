"""The one rule that says whether a bracket idea on daily bars won: training, ``evaluate``
and the simulator's daily-bar fills all read it from here.

An idea decided on session ``i`` (known from bars ``0..i``) enters at the **open of session
``i + 1``**. A long bracket puts its stop at ``entry * (1 - stop)`` and its target at
``entry * (1 + target)``; a short one mirrors them. For each session ``j = i + 1 ..
i + horizon`` (the entry session counts as the first of the horizon):

* a low at or below the stop is a **loss** (0) — also when the high reaches the target in
  the same session (a daily bar cannot say which came first, so the stop comes first), and
  a session opening below the stop is a stop;
* otherwise a high at or above the target is a **win** (1);
* neither by the end of the horizon is a **loss** (0): the idea did not pay in time.

The label is blank (NaN) exactly where the horizon runs past the data, whatever happened
before: a row's label never depends on how much later data there is beyond its horizon.

The simulator expands a daily bar into minutes along ``open -> low -> high -> close``
(:func:`daily_path_order`) whatever the bar's colour, so a long bracket whose stop and
target lie inside one daily bar fills its stop first, as the label says. A short bracket's
stop is above, reached after the low: its take-profit waits for the stop on such a bar
(:mod:`simulator.adverse_first`), so it fills its stop first too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Side = Literal["long", "short"]


@dataclass(frozen=True)
class Outcomes:
    """Per decision row ``i`` (``0 .. n - 2``, a session that has a next one)."""

    decision: np.ndarray  # int: the decision session's index i
    entry: np.ndarray  # int: i + 1
    entry_price: np.ndarray
    stop_price: np.ndarray
    target_price: np.ndarray
    horizon: np.ndarray  # int: sessions in the horizon, the entry session first
    label: np.ndarray  # 1.0 win, 0.0 loss, NaN where the horizon runs past the data
    known: np.ndarray  # the outcome where the data already decides it (a stop or target
    #                    touched before the data ends counts although the horizon runs on)
    settled: np.ndarray  # int: the session whose bar decided ``known`` (-1 where not yet)


def bracket_outcomes(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    stop: float | np.ndarray,
    target: float | np.ndarray,
    horizon: int | np.ndarray,
    side: Side = "long",
    decisions: np.ndarray | None = None,
) -> Outcomes:
    """The outcome of a bracket idea decided on each session (or on ``decisions`` only).

    ``stop``/``target`` are fractions of the entry price (scalars or one per decision),
    ``horizon`` a session count (scalar or one per decision). Vectorised: one pass over a
    ``(rows, horizon)`` window per distinct horizon.
    """
    open_ = np.asarray(open_, dtype=float)
    high = np.asarray(high, dtype=float)
    low = np.asarray(low, dtype=float)
    n = len(open_)
    rows = np.arange(max(n - 1, 0)) if decisions is None else np.asarray(decisions, dtype=np.int64)
    if len(rows) and (rows.min() < 0 or rows.max() > n - 2):
        raise ValueError("every decision needs a next session to enter on")
    m = len(rows)
    stop_f = np.broadcast_to(np.asarray(stop, dtype=float), (m,)).copy()
    target_f = np.broadcast_to(np.asarray(target, dtype=float), (m,)).copy()
    hor = np.broadcast_to(np.asarray(horizon, dtype=np.int64), (m,)).copy()
    if m and ((stop_f <= 0).any() or (target_f <= 0).any() or (hor < 1).any()):
        raise ValueError("stop and target must be positive fractions and horizon at least 1")
    entry = rows + 1
    entry_price = open_[entry] if m else np.zeros(0)
    sign = 1.0 if side == "long" else -1.0
    stop_price = entry_price * (1.0 - sign * stop_f)
    target_price = entry_price * (1.0 + sign * target_f)
    label = np.full(m, np.nan)
    known = np.full(m, np.nan)
    settled = np.full(m, -1, dtype=np.int64)
    # Pad so every window of every row exists; padded sessions never touch anything.
    for h in np.unique(hor).tolist():
        pick = np.flatnonzero(hor == h)
        if len(pick) == 0:
            continue
        hi_pad = np.concatenate([high, np.full(h, np.nan)])
        lo_pad = np.concatenate([low, np.full(h, np.nan)])
        starts = entry[pick]
        idx = starts[:, None] + np.arange(h)[None, :]
        highs, lows = hi_pad[idx], lo_pad[idx]
        sp, tp = stop_price[pick][:, None], target_price[pick][:, None]
        if side == "long":
            hit_stop, hit_target = lows <= sp, highs >= tp
        else:
            hit_stop, hit_target = highs >= sp, lows <= tp
        first_stop = np.where(hit_stop.any(axis=1), hit_stop.argmax(axis=1), h)
        first_target = np.where(hit_target.any(axis=1), hit_target.argmax(axis=1), h)
        win = (first_target < first_stop).astype(float)  # stop first on a session touching both
        first = np.minimum(np.minimum(first_stop, first_target), h - 1)
        complete = rows[pick] + h <= n - 1
        decided = complete | (np.minimum(first_stop, first_target) < h)
        label[pick[complete]] = win[complete]
        known[pick[decided]] = win[decided]
        settled[pick[decided]] = (starts + first)[decided]
    return Outcomes(rows, entry, entry_price, stop_price, target_price, hor, label, known, settled)


def label_one(
    open_: np.ndarray, high: np.ndarray, low: np.ndarray, i: int,
    stop: float, target: float, horizon: int, side: Side = "long",
) -> float:
    """The rule for one idea, written as the loop a reader would write (tests pin the
    vectorised :func:`bracket_outcomes` to it)."""
    if i + horizon > len(open_) - 1:
        return float("nan")
    entry = float(open_[i + 1])
    sign = 1.0 if side == "long" else -1.0
    stop_price, target_price = entry * (1 - sign * stop), entry * (1 + sign * target)
    for j in range(i + 1, i + horizon + 1):
        stopped = low[j] <= stop_price if side == "long" else high[j] >= stop_price
        if stopped:
            return 0.0
        reached = high[j] >= target_price if side == "long" else low[j] <= target_price
        if reached:
            return 1.0
    return 0.0


def daily_path_order(open_: float, high: float, low: float, close: float) -> tuple[float, float, float, float]:
    """The order in which the simulator walks a daily bar's prices: open, low, high, close.

    Low first whatever the bar's colour, so a long bracket's stop fills before its target
    when one bar touches both, as :func:`bracket_outcomes` labels it.
    """
    return (open_, low, high, close)
