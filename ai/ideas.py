"""Bracket ideas of one symbol with everything a forecast of them may know.

For a symbol's daily bars and a set of decision sessions (every session, or the sessions a
strategy proposed an entry on) this builds, per idea: its outcome under the one labelling
rule (:mod:`market.bracket_labels`), the random-walk probability of its own bracket and
horizon, the symbol's past hit rate for the default bracket (settled ideas only), the
baseline forecast and the transferable features; all from bars up to the decision session.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ai import bracket_features as bf
from ai.features import align_benchmark
from market.bracket_labels import Outcomes, bracket_outcomes
from market.market_data import BarSeries

#: Daily volatility assumed before a symbol has 10 returns.
DEFAULT_DAILY_VOL = 0.02
#: Column of the volatility ratio in :func:`ai.bracket_features.session_features`.
TRANSFERABLE_NAMES_RATIO = bf.TRANSFERABLE_NAMES.index("vol_ratio_20_250") - 2


@dataclass(frozen=True)
class DefaultBracket:
    """The bracket of the ``sessions`` population and of the symbol's past hit rate."""

    stop: float = 0.03
    target: float = 0.06
    horizon: int = 20


@dataclass
class SymbolContext:
    """Per-session arrays of one symbol (index = session)."""

    day: np.ndarray
    vol: np.ndarray
    drift: np.ndarray  # bf.past_drift: the log price's assumed mean change per session
    random_walk_default: np.ndarray
    past_default: np.ndarray  # shrunk past hit rate of the default bracket
    session_X: np.ndarray  # bf.session_features
    default_outcomes: Outcomes
    move: np.ndarray  # bf.forward_move over the default horizon (known only later: for fitting)
    past_fall: np.ndarray  # bf.past_fall: the last 5 sessions' fall in volatility units (the reversal's input)
    ahead: np.ndarray  # bf.moves_ahead over bf.REVERSAL_HORIZONS (known only later: for fitting)

    @property
    def ratio(self) -> np.ndarray:
        """log(20-session / 250-session volatility) at each session."""
        return self.session_X[:, TRANSFERABLE_NAMES_RATIO]


def symbol_context(
    day: np.ndarray, open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
    market_close: np.ndarray | None, default: DefaultBracket,
) -> SymbolContext:
    """Every per-session quantity, each from bars at or before its session."""
    n = len(close)
    vol = bf.daily_volatility(close)
    vol = np.where(np.isfinite(vol), vol, DEFAULT_DAILY_VOL)
    drift = bf.past_drift(close)
    rw = bf.random_walk_probability(default.stop, default.target, default.horizon, vol, drift)
    outcomes = bracket_outcomes(open_, high, low, default.stop, default.target, default.horizon)
    past, _ = bf.past_hit_rate(outcomes.known, outcomes.settled, n, rw, bf.CLIMATOLOGY_PRIOR_WEIGHT)
    return SymbolContext(
        day=np.asarray(day, dtype=np.int64), vol=vol, drift=drift, random_walk_default=rw, past_default=past,
        session_X=bf.session_features(close, vol, market_close), default_outcomes=outcomes,
        move=bf.forward_move(close, vol, default.horizon), past_fall=bf.past_fall(close, vol),
        ahead=bf.moves_ahead(open_, close, vol),
    )


@dataclass
class Ideas:
    """One row per idea of one symbol."""

    outcomes: Outcomes
    day: np.ndarray
    entry_day: np.ndarray
    settled_day: np.ndarray
    baseline: np.ndarray  # at past weight 1 (the walk-forward re-makes it: bf.with_past_weight)
    climatology: np.ndarray  # raw past hit rate of this population's settled ideas (NaN before any)
    X: np.ndarray
    walk: np.ndarray  # random-walk probability of the idea's own bracket and horizon
    past_default: np.ndarray  # the symbol's shrunk past hit rate of the default bracket
    walk_default: np.ndarray  # random-walk probability of the default bracket
    stop: np.ndarray  # the idea's stop and target (fractions of the entry)
    target: np.ndarray
    vol: np.ndarray  # the symbol's daily volatility, drift and volatility ratio at the decision
    drift: np.ndarray
    ratio: np.ndarray
    past_fall: np.ndarray  # the last 5 sessions' fall in volatility units at the decision (the reversal's input)


def build_ideas(
    ctx: SymbolContext, open_: np.ndarray, high: np.ndarray, low: np.ndarray,
    decisions: np.ndarray, stop: np.ndarray | float, target: np.ndarray | float,
    horizon: np.ndarray | int,
) -> Ideas:
    """The ideas decided on ``decisions`` (session indices) with their own brackets."""
    out = bracket_outcomes(open_, high, low, stop, target, horizon, decisions=decisions)
    rows = out.decision
    rw = bf.random_walk_probability(
        np.broadcast_to(stop, rows.shape), np.broadcast_to(target, rows.shape), out.horizon, ctx.vol[rows],
        ctx.drift[rows],
    )
    baseline = bf.row_baseline(rw, ctx.past_default[rows], ctx.random_walk_default[rows])
    n = len(ctx.day)
    _, raw = bf.past_hit_rate(out.known, out.settled, n, 0.0, weight=0.0)
    climatology = raw[rows]
    X = np.column_stack([bf.logit(rw), bf.logit(baseline), ctx.session_X[rows]])
    settled_day = np.where(out.settled >= 0, ctx.day[np.maximum(out.settled, 0)], np.iinfo(np.int64).max)
    return Ideas(out, ctx.day[rows], ctx.day[out.entry], settled_day, baseline, climatology, X,
                 rw, ctx.past_default[rows], ctx.random_walk_default[rows],
                 np.broadcast_to(np.asarray(stop, float), rows.shape).copy(),
                 np.broadcast_to(np.asarray(target, float), rows.shape).copy(),
                 ctx.vol[rows], ctx.drift[rows], ctx.ratio[rows], ctx.past_fall[rows])


def market_close_for(bars: BarSeries, bench: BarSeries | None) -> np.ndarray | None:
    """The benchmark's close on each of ``bars``' sessions, a missing bar repeating the last close."""
    if bench is None:
        return None
    aligned = align_benchmark(bars.ts, bench.ts, bench.close)
    # A missing benchmark bar repeats the last known close (past only).
    idx = np.where(np.isfinite(aligned), np.arange(len(aligned)), 0)
    np.maximum.accumulate(idx, out=idx)
    filled = aligned[idx]
    return filled
