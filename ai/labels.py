"""Outcomes of the model's training ideas (issue 17: split out of ``ai/ai_model.py``).

The rule itself lives in :mod:`market.bracket_labels` (one rule for training, ``evaluate``
and the simulator's fills); this module holds the model's bracket and the training set's
helpers around it (sides, split gaps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ai.features import MIN_HISTORY_BARS
from market.bracket_labels import bracket_outcomes

Side = Literal["long", "short"]
SIDES: tuple[Side, ...] = ("long", "short")

# An overnight move beyond this is treated as an unadjusted split, not a market move.
SPLIT_GAP = 0.40


@dataclass(frozen=True)
class Bracket:
    """The bracket the labels describe: entry at the next open, stop and target fractions."""

    stop: float = 0.03
    target: float = 0.06
    horizon_days: int = 20

    def __post_init__(self) -> None:
        if not 0 < self.stop < 1:
            raise ValueError(f"stop={self.stop}: must be a fraction between 0 and 1")
        if not 0 < self.target < 10:
            raise ValueError(f"target={self.target}: must be a positive fraction")
        if self.horizon_days < 1:
            raise ValueError(f"horizon_days={self.horizon_days}: must be at least 1")


def first_touch_labels(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    bracket: Bracket,
    side: Side,
) -> tuple[np.ndarray, np.ndarray]:
    """Outcome of an idea on each day: ``(label, end_index)``.

    ``label[i]`` is 1.0 when a ``side`` entry at ``open_[i+1]`` touches its target strictly
    before its stop within ``bracket.horizon_days`` sessions, 0.0 otherwise (stop first, both
    on one day, or neither), and NaN when the horizon runs past the data. ``end_index[i]``
    is the last bar the outcome looked at.
    """
    n = len(open_)
    label = np.full(n, np.nan)
    end = np.full(n, -1, dtype=np.int64)
    if n < 2:
        return label, end
    out = bracket_outcomes(open_, high, low, bracket.stop, bracket.target, bracket.horizon_days, side)
    label[: n - 1] = out.label
    end[: n - 1] = np.where(np.isfinite(out.label), out.settled, -1)
    return label, end
    entry = open_[1 : 1 + count]
    highs = np.lib.stride_tricks.sliding_window_view(high[1:], h)[:count]
    lows = np.lib.stride_tricks.sliding_window_view(low[1:], h)[:count]
    if side == "long":
        hit_stop = lows <= (entry * (1.0 - bracket.stop))[:, None]
        hit_target = highs >= (entry * (1.0 + bracket.target))[:, None]
    else:
        hit_stop = highs >= (entry * (1.0 + bracket.stop))[:, None]
        hit_target = lows <= (entry * (1.0 - bracket.target))[:, None]
    first_stop = np.where(hit_stop.any(axis=1), hit_stop.argmax(axis=1), h)
    first_target = np.where(hit_target.any(axis=1), hit_target.argmax(axis=1), h)
    label[:count] = (first_target < first_stop).astype(float)
    first = np.minimum(np.minimum(first_stop, first_target), h - 1)
    end[:count] = np.arange(count) + 1 + first
    return label, end


def _split_gap_mask(open_: np.ndarray, close: np.ndarray) -> np.ndarray:
    """True on bars that open more than :data:`SPLIT_GAP` away from the previous close."""
    bad = np.zeros(len(open_), dtype=bool)
    if len(open_) > 1:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = open_[1:] / close[:-1]
        bad[1:] = ~(np.abs(ratio - 1.0) <= SPLIT_GAP)
    return bad


def _gap_nearby(gaps: np.ndarray, horizon: int) -> np.ndarray:
    """True for ideas whose feature window (61 bars back) or horizon holds a split gap."""
    n = len(gaps)
    counts = np.concatenate(([0], np.cumsum(gaps.astype(np.int64))))
    i = np.arange(n)
    lo = np.clip(i - MIN_HISTORY_BARS + 1, 0, n)
    hi = np.clip(i + horizon + 1, 0, n)
    return (counts[hi] - counts[lo]) > 0
