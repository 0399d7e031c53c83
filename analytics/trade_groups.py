"""The closed trades grouped: by strategy and by symbol (:func:`breakdown`, with mean MFE and
MAE), and bucketed by the exchange-time hour and weekday of entry, best pnl first."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Sequence

import numpy as np

from analytics.excursions import mean_of
from analytics.performance_inputs import TradeRecord
from analytics.performance_report import BucketStats, GroupStats
from analytics.trade_stats import profit_factor
from core.clock import EXCHANGE_TZ

WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_ZERO = Decimal(0)


def _group(key: str, trades: Sequence[TradeRecord]) -> GroupStats:
    wins = [t for t in trades if t.pnl > _ZERO]
    losses = [t for t in trades if t.pnl < _ZERO]
    profit = sum((t.pnl for t in wins), _ZERO)
    loss = sum((t.pnl for t in losses), _ZERO)
    return GroupStats(
        key=key,
        trades=len(trades),
        winning=len(wins),
        losing=len(losses),
        win_rate=len(wins) / len(trades) if trades else None,
        pnl=profit + loss,
        profit_factor=profit_factor(profit, loss, len(wins), len(losses)),
        avg_return=float(np.mean([float(t.return_pct) for t in trades])) if trades else None,
        avg_mfe=mean_of([t.mfe_pct for t in trades]),
        avg_mae=mean_of([t.mae_pct for t in trades]),
    )


def breakdown(trades: Sequence[TradeRecord], by: str) -> tuple[GroupStats, ...]:
    """Per-``strategy`` or per-``symbol`` statistics, best pnl first."""
    if by not in ("strategy", "symbol"):
        raise ValueError(f"breakdown is by 'strategy' or 'symbol', got {by!r}")
    groups: dict[str, list[TradeRecord]] = {}
    for trade in trades:
        groups.setdefault(getattr(trade, by), []).append(trade)
    rows = [_group(key, members) for key, members in groups.items()]
    return tuple(sorted(rows, key=lambda g: (-g.pnl, g.key)))


def _buckets(trades: Sequence[TradeRecord], key_of: Any) -> tuple[BucketStats, ...]:
    groups: dict[Any, list[TradeRecord]] = {}
    for trade in trades:
        groups.setdefault(key_of(trade.entry_at.astimezone(EXCHANGE_TZ)), []).append(trade)
    rows = []
    for key, members in groups.items():
        winning = sum(1 for t in members if t.pnl > _ZERO)
        rows.append(
            BucketStats(
                key=key,
                trades=len(members),
                winning=winning,
                win_rate=winning / len(members),
                pnl=sum((t.pnl for t in members), _ZERO),
            )
        )
    order = {name: i for i, name in enumerate(WEEKDAY_NAMES)}
    return tuple(sorted(rows, key=lambda b: (-b.pnl, order.get(b.key, b.key) if isinstance(b.key, str) else b.key)))


def best_hours(trades: Sequence[TradeRecord]) -> tuple[BucketStats, ...]:
    """Trades grouped by the ET hour of entry, best pnl first."""
    return _buckets(trades, lambda local: local.hour)


def best_weekdays(trades: Sequence[TradeRecord]) -> tuple[BucketStats, ...]:
    """Trades grouped by the ET weekday of entry, best pnl first."""
    return _buckets(trades, lambda local: WEEKDAY_NAMES[local.weekday()])
