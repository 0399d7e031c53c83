"""What a backtest's result is measured against: buy-and-hold of its universe, SPY, random
entries with the same exits and sizing, and how much of the equity it kept invested.

A return means little alone: +1.4% over ten years is a loss next to holding the stocks, and
a strategy that beats buy-and-hold in a falling market may still be no better than chance.
:func:`random_entries` answers the last question: each closed trade of the run gets, per
draw, a twin that enters a random symbol of the universe at the open of a random session of
the run, with the same dollar size, the same bracket (stop and target at the same distances
from the entry) and the same entry cost (its fill against that session's open). Its time
limit does not copy the trade's outcome: a trade closed by a strategy or emergency exit
lends its twin the sessions it was held; one closed at its stop or target (whose holding
time *is* its outcome) lends the strategy's own time limit (:data:`HORIZON` sessions, the AI
model's label horizon, unless the caller names a shorter one per strategy: mean reversion's
maximum holding). The twin exits by the labelling rule (a session whose low reaches the stop
is a stop, also when its high reaches the target; a session opening beyond a level fills
there at the open; otherwise the close of its last session). The run's
closed-trade P&L is then placed in the distribution of the twins' totals (its percentile).
Draws are seeded (the run's seed) and vectorized over trades and sessions, in batches.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import numpy as np

from backtest.data import DailyHistory
from core.clock import to_exchange_time

#: Random-entry draws (each a full set of twins of the run's trades).
DRAWS = 1000
#: Sessions a twin of a trade closed at its stop or target may run (the label horizon).
HORIZON = 20
#: Exit reasons set by a decision, not by a price level: the twin keeps the trade's holding.
DECIDED_EXITS = frozenset({"strategy_exit", "emergency_exit", "emergency_stop", "exit"})
#: Elements (draws x trades x sessions) per vectorized batch: bounds the temporary arrays.
BATCH_ELEMENTS = 2_000_000


@dataclass(frozen=True)
class Twin:
    """One closed trade as the random entries copy it: size, bracket, entry cost, holding."""

    notional: float
    stop_frac: float | None
    target_frac: float | None
    entry_cost: float
    sessions: int
    commission: float


@dataclass(frozen=True)
class Prices:
    """The universe's daily bars aligned on the run's sessions (NaN where a symbol has none)."""

    symbols: tuple[str, ...]
    sessions: tuple[date, ...]
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray

    @classmethod
    def aligned(cls, history: Mapping[str, DailyHistory], symbols: Sequence[str], sessions: Sequence[date]) -> Prices:
        names = tuple(s for s in dict.fromkeys(symbols) if s in history)
        shape = (len(names), len(sessions))
        arrays = {k: np.full(shape, np.nan) for k in ("open", "high", "low", "close")}
        for row, symbol in enumerate(names):
            item = history[symbol]
            for col, day in enumerate(sessions):
                i = item.index(day)
                if i is not None:
                    for key in arrays:
                        arrays[key][row, col] = getattr(item, key)[i]
        return cls(names, tuple(sessions), arrays["open"], arrays["high"], arrays["low"], arrays["close"])


@dataclass(frozen=True)
class RandomEntries:
    """Where the run's closed-trade P&L falls among random entries with its exits and sizing."""

    draws: int
    seed: int
    trades: int
    run_pnl: float
    totals: np.ndarray
    percentile: float

    def to_dict(self) -> dict[str, Any]:
        q = np.percentile(self.totals, [5, 50, 95]) if self.totals.size else [math.nan] * 3
        return {
            "draws": self.draws, "seed": self.seed, "trades": self.trades, "run_pnl": round(self.run_pnl, 2),
            "percentile": round(self.percentile, 1), "p5_pnl": round(float(q[0]), 2),
            "median_pnl": round(float(q[1]), 2), "p95_pnl": round(float(q[2]), 2),
            "method": ("each closed trade's twin enters a random symbol at the open of a random session with the "
                       "same dollar size, bracket distances and entry cost; it holds as long as the trade when a "
                       "strategy or emergency exit closed it, else up to the strategy's time limit; stop first "
                       "when a session touches both"),
        }


def percentile_of(value: float, totals: np.ndarray) -> float:
    """Per cent of ``totals`` below ``value`` (ties count half): 50 is the median draw."""
    if totals.size == 0:
        return math.nan
    below = float(np.count_nonzero(totals < value))
    ties = float(np.count_nonzero(totals == value))
    return 100.0 * (below + 0.5 * ties) / totals.size


def _float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    number = float(Decimal(str(value)))
    return number if math.isfinite(number) else None


def twins_of(trades: Sequence[Mapping[str, Any]], prices: Prices,
             limits: Mapping[str, int] | None = None) -> list[Twin]:
    """The random-entry twin of each closed long trade (see the module docstring);
    ``limits``: a strategy's own time limit in sessions (default :data:`HORIZON`)."""
    index = {day: i for i, day in enumerate(prices.sessions)}
    rows = {s: i for i, s in enumerate(prices.symbols)}
    out: list[Twin] = []
    for trade in trades:
        if trade.get("side", "long") != "long":
            continue
        entry = _float(trade.get("entry_price"))
        qty = _float(trade.get("qty"))
        if not entry or not qty:
            continue
        first = index.get(to_exchange_time(_moment(trade["entry_at"])).date())
        last = index.get(to_exchange_time(_moment(trade["exit_at"])).date())
        held = (last - first + 1) if first is not None and last is not None and last >= first else 1
        if (trade.get("exit_reason") or "exit") not in DECIDED_EXITS:
            held = (limits or {}).get(str(trade.get("strategy")), HORIZON)
        stop, target = _float(trade.get("stop_price")), _float(trade.get("target_price"))
        cost = 0.0
        row = rows.get(str(trade.get("symbol")))
        if row is not None and first is not None and math.isfinite(prices.open[row, first]):
            cost = entry / float(prices.open[row, first]) - 1.0
        out.append(Twin(
            notional=qty * entry,
            stop_frac=(stop / entry - 1.0) if stop else None,
            target_frac=(target / entry - 1.0) if target else None,
            entry_cost=cost, sessions=held, commission=_float(trade.get("commission")) or 0.0,
        ))
    return out


def _moment(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def simulate_twins(twins: Sequence[Twin], prices: Prices, draws: int, seed: int, *,
                   slippage_bps: float = 0.0) -> np.ndarray:
    """Total P&L of the twins in each of ``draws`` seeded draws (shape ``(draws,)``)."""
    n = len(twins)
    valid = np.argwhere(np.isfinite(prices.open) & np.isfinite(prices.close))
    if n == 0 or valid.size == 0:
        return np.zeros(0)
    notional = np.array([t.notional for t in twins])
    stop = np.array([t.stop_frac if t.stop_frac is not None else -np.inf for t in twins])
    target = np.array([t.target_frac if t.target_frac is not None else np.inf for t in twins])
    cost = np.array([t.entry_cost for t in twins])
    held = np.array([max(t.sessions, 1) for t in twins])
    commission = np.array([t.commission for t in twins])
    slip = slippage_bps / 10_000.0
    horizon = int(held.max())
    steps = np.arange(horizon)
    rng = np.random.default_rng([int(seed), 20151])
    batch = max(1, BATCH_ELEMENTS // max(n * horizon, 1))
    totals: list[np.ndarray] = []
    sessions = prices.open.shape[1]
    for start in range(0, draws, batch):
        size = min(batch, draws - start)
        pick = valid[rng.integers(0, len(valid), size=(size, n))]
        row, col = pick[..., 0], pick[..., 1]
        cols = col[..., None] + steps
        inside = (steps < held[:, None]) & (cols < sessions)
        cols = np.minimum(cols, sessions - 1)
        rows = np.broadcast_to(row[..., None], cols.shape)
        o, h, lo, c = (a[rows, cols] for a in (prices.open, prices.high, prices.low, prices.close))
        inside &= np.isfinite(c)
        opened = o[..., 0]
        entry = opened * (1.0 + cost)
        stop_px = entry * (1.0 + stop)
        target_px = entry * (1.0 + target)
        hit_stop = inside & (lo <= stop_px[..., None])
        hit_target = inside & (h >= target_px[..., None]) & ~hit_stop
        last = np.where(inside, steps, -1).max(axis=-1)
        never = horizon + 1
        first_stop = np.where(hit_stop.any(-1), hit_stop.argmax(-1), never)
        first_target = np.where(hit_target.any(-1), hit_target.argmax(-1), never)
        at = np.minimum(np.minimum(first_stop, first_target), last)
        day_open = np.take_along_axis(o, at[..., None], -1)[..., 0]
        day_close = np.take_along_axis(c, at[..., None], -1)[..., 0]
        gap_open = np.where(at == 0, np.inf, day_open)  # the entry session opens at the entry
        exit_px = np.where(
            first_stop == at, np.minimum(stop_px, gap_open) * (1.0 - slip),
            np.where(first_target == at, np.maximum(target_px, np.where(at == 0, -np.inf, day_open)),
                     day_close * (1.0 - slip)))
        pnl = notional * (exit_px / entry - 1.0) - commission
        totals.append(pnl.sum(axis=-1))
    return np.concatenate(totals)


def random_entries(trades: Sequence[Mapping[str, Any]], prices: Prices, *, seed: int, draws: int = DRAWS,
                   slippage_bps: float = 0.0, limits: Mapping[str, int] | None = None) -> RandomEntries | None:
    """The run's closed trades against ``draws`` sets of random twins (None without trades)."""
    twins = twins_of(trades, prices, limits)
    if not twins:
        return None
    totals = simulate_twins(twins, prices, draws, seed, slippage_bps=slippage_bps)
    if totals.size == 0:
        return None
    run_pnl = float(sum(float(Decimal(str(t["pnl"]))) for t in trades if t.get("side", "long") == "long"))
    return RandomEntries(draws, seed, len(twins), run_pnl, totals, percentile_of(run_pnl, totals))


def buy_and_hold(prices: Prices, symbols: Sequence[str]) -> dict[str, Any] | None:
    """Equal dollars in each of ``symbols`` at the first session's open, held to the last
    close (a symbol without a bar on the first session is left out and named)."""
    rows = [prices.symbols.index(s) for s in symbols if s in prices.symbols]
    held = [r for r in rows if math.isfinite(prices.open[r, 0])]
    if not held:
        return None
    growth = []
    for r in held:
        closes = prices.close[r][np.isfinite(prices.close[r])]
        growth.append(float(closes[-1] / prices.open[r, 0]))
    return {
        "total_return": round(float(np.mean(growth)) - 1.0, 6),
        "symbols": [prices.symbols[r] for r in held],
        "left_out": [s for s in symbols if s not in [prices.symbols[r] for r in held]],
    }


def capital_deployed(fills: Sequence[Mapping[str, Any]], prices: Prices,
                     closes: Sequence[tuple[datetime, Decimal]]) -> dict[str, Any] | None:
    """The long positions' value at each session's close as a share of the equity then:
    average and maximum over the run (positions rebuilt from every fill)."""
    equity: dict[date, float] = {}
    moment: dict[date, float] = {}
    for at, value in closes:  # the last point of each session
        day = to_exchange_time(at).date()
        equity[day], moment[day] = float(value), at.timestamp()
    days = [d for d in prices.sessions if d in equity]
    if not days:
        return None
    column = {d: i for i, d in enumerate(prices.sessions)}
    ends = np.array([moment[d] for d in days])
    value = np.zeros(len(days))
    for row, symbol in enumerate(prices.symbols):
        mine = [f for f in fills if f.get("symbol") == symbol]
        if not mine:
            continue
        at = np.array([_moment(f["at"]).timestamp() for f in mine])
        # A repeated fill event is journaled with applied_qty 0: it adds nothing (only a
        # missing applied_qty, an older row, falls back to the reported qty).
        signed = np.array([float(Decimal(str(f["qty"] if f.get("applied_qty") is None else f["applied_qty"])))
                           * (1 if f["side"] == "buy" else -1) for f in mine])
        order = np.argsort(at, kind="stable")
        held = np.concatenate(([0.0], np.cumsum(signed[order])))[np.searchsorted(at[order], ends, side="right")]
        price = np.array([prices.close[row, column[d]] for d in days])
        value += np.where(np.isfinite(price), np.maximum(held, 0.0) * np.nan_to_num(price), 0.0)
    share = value / np.array([equity[d] for d in days])
    return {"average": round(float(share.mean()), 6), "max": round(float(share.max()), 6), "sessions": len(days)}


def compare(*, trades: Sequence[Mapping[str, Any]], fills: Sequence[Mapping[str, Any]], prices: Prices,
            universe: Sequence[str], benchmark: str, curve: Sequence[tuple[datetime, Decimal]], seed: int,
            slippage_bps: float, draws: int = DRAWS,
            limits: Mapping[str, int] | None = None) -> tuple[dict[str, Any], RandomEntries | None]:
    """The run against buy-and-hold of its universe, the benchmark (SPY) when present and
    random entries; plus the capital it kept deployed."""
    start, end = float(curve[0][1]), float(curve[-1][1])
    randoms = random_entries(trades, prices, seed=seed, draws=draws, slippage_bps=slippage_bps, limits=limits)
    traded = [s for s in universe if s in prices.symbols]
    return {
        "run": {"total_return": round(end / start - 1.0, 6) if start > 0 else None,
                "closed_trade_pnl": round(sum(float(Decimal(str(t["pnl"]))) for t in trades), 2)},
        "buy_and_hold_universe": buy_and_hold(prices, traded),
        "benchmark": ({"symbol": benchmark, **(buy_and_hold(prices, [benchmark]) or {})}
                      if benchmark in prices.symbols else None),
        "random_entries": randoms.to_dict() if randoms is not None else None,
        "capital_deployed": capital_deployed(fills, prices, curve[1:]),
    }, randoms


def pooled(comparisons: Sequence[Mapping[str, Any] | None], randoms: Sequence[RandomEntries | None],
           total_return: float | None) -> dict[str, Any] | None:
    """Walk-forward windows as one run: returns chained, random draws summed draw by draw
    (each window's draw ``k`` together is one random run of the whole), capital weighted by
    sessions."""
    items = [c for c in comparisons if c]
    if not items:
        return None

    def chained(key: str) -> dict[str, Any] | None:
        parts = [c[key] for c in items if c.get(key) and c[key].get("total_return") is not None]
        if not parts:
            return None
        growth = float(np.prod([1.0 + p["total_return"] for p in parts]))
        merged: dict[str, Any] = {"total_return": round(growth - 1.0, 6), "windows": len(parts)}
        if "symbol" in parts[0]:
            merged["symbol"] = parts[0]["symbol"]
        return merged

    drawn = [r for r in randoms if r is not None]
    random_part = None
    if drawn and len({r.totals.size for r in drawn}) == 1:
        totals = np.sum([r.totals for r in drawn], axis=0)
        run_pnl = sum(r.run_pnl for r in drawn)
        combined = RandomEntries(drawn[0].draws, drawn[0].seed, sum(r.trades for r in drawn), run_pnl, totals,
                                 percentile_of(run_pnl, totals))
        random_part = combined.to_dict()
    capital = [c["capital_deployed"] for c in items if c.get("capital_deployed")]
    sessions = sum(c["sessions"] for c in capital)
    return {
        "run": {"total_return": total_return},
        "buy_and_hold_universe": chained("buy_and_hold_universe"),
        "benchmark": chained("benchmark"),
        "random_entries": random_part,
        "capital_deployed": ({"average": round(sum(c["average"] * c["sessions"] for c in capital) / sessions, 6),
                              "max": max(c["max"] for c in capital), "sessions": sessions} if sessions else None),
    }
