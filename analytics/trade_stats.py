"""Statistics of the closed trades: counts and rates, profit factor, expectancy, average and
largest wins and losses, streaks, holding times, exposure and the most trades open at once."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Sequence

import numpy as np

from analytics.performance_inputs import TradeRecord
from analytics.performance_report import TradeStats

_ZERO = Decimal(0)


def profit_factor(profit: Decimal, loss: Decimal, wins: int, losses: int) -> float | None:
    if losses == 0:
        return None
    return float(profit / -loss) if wins else 0.0


def _max_streak(trades: Sequence[TradeRecord], sign: int) -> int:
    best = current = 0
    for trade in trades:
        if (trade.pnl > _ZERO and sign > 0) or (trade.pnl < _ZERO and sign < 0):
            current += 1
            best = max(best, current)
        else:
            current = 0
    return best


def _exposure(trades: Sequence[TradeRecord], start: datetime, end: datetime) -> float | None:
    span = (end - start).total_seconds()
    if span <= 0:
        return None
    covered = 0.0
    run_start: datetime | None = None
    run_end: datetime | None = None
    for trade in sorted(trades, key=lambda t: t.entry_at):
        lo, hi = max(trade.entry_at, start), min(trade.exit_at, end)
        if hi <= lo:
            continue
        if run_end is None or lo > run_end:
            if run_start is not None and run_end is not None:
                covered += (run_end - run_start).total_seconds()
            run_start, run_end = lo, hi
        else:
            run_end = max(run_end, hi)
    if run_start is not None and run_end is not None:
        covered += (run_end - run_start).total_seconds()
    return covered / span


def _max_concurrent(trades: Sequence[TradeRecord]) -> int:
    events = [(t.entry_at, 1) for t in trades] + [(t.exit_at, -1) for t in trades]
    events.sort(key=lambda e: (e[0], e[1]))  # an exit at the same instant frees its slot first
    best = current = 0
    for _, step in events:
        current += step
        best = max(best, current)
    return best


def trade_stats(trades: Sequence[TradeRecord], start: datetime, end: datetime) -> TradeStats:
    """Trade counts and sizes; ``start``/``end`` bound the span used for exposure."""
    wins = [t for t in trades if t.pnl > _ZERO]
    losses = [t for t in trades if t.pnl < _ZERO]
    total = len(trades)
    gross_profit = sum((t.pnl for t in wins), _ZERO)
    gross_loss = sum((t.pnl for t in losses), _ZERO)
    hours = [t.holding_hours for t in trades]
    return TradeStats(
        total=total,
        winning=len(wins),
        losing=len(losses),
        breakeven=total - len(wins) - len(losses),
        win_rate=len(wins) / total if total else None,
        profit_factor=profit_factor(gross_profit, gross_loss, len(wins), len(losses)),
        gross_profit=gross_profit,
        gross_loss=gross_loss,
        net_pnl=gross_profit + gross_loss,
        expectancy=(gross_profit + gross_loss) / total if total else None,
        expectancy_pct=float(np.mean([float(t.return_pct) for t in trades])) if total else None,
        avg_win=gross_profit / len(wins) if wins else None,
        avg_loss=gross_loss / len(losses) if losses else None,
        avg_win_pct=float(np.mean([float(t.return_pct) for t in wins])) if wins else None,
        avg_loss_pct=float(np.mean([float(t.return_pct) for t in losses])) if losses else None,
        largest_win=max(t.pnl for t in wins) if wins else None,
        largest_loss=min(t.pnl for t in losses) if losses else None,
        largest_win_pct=max(float(t.return_pct) for t in wins) if wins else None,
        largest_loss_pct=min(float(t.return_pct) for t in losses) if losses else None,
        payoff_ratio=(
            float((gross_profit / len(wins)) / (-gross_loss / len(losses))) if wins and losses else None
        ),
        max_consecutive_wins=_max_streak(trades, 1),
        max_consecutive_losses=_max_streak(trades, -1),
        avg_holding_hours=float(np.mean(hours)) if hours else None,
        median_holding_hours=float(np.median(hours)) if hours else None,
        max_holding_hours=max(hours) if hours else None,
        exposure=_exposure(trades, start, end),
        max_concurrent_trades=_max_concurrent(trades),
    )
