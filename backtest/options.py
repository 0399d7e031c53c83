"""What a backtest is asked (:class:`BacktestOptions`) and what it produced
(:class:`BacktestResult`), and the one error a request that cannot run raises."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from analytics.performance import PerformanceReport
from backtest.benchmarks import RandomEntries
from backtest.sim_broker import CommissionModel

#: Sessions of history kept before the first backtested session when no start is given.
WARMUP_SESSIONS = 250

BarMode = Literal["auto", "daily", "intraday"]


class BacktestError(ValueError):
    """A backtest that cannot run as asked (bad range, no data, bad option): one clear line."""


@dataclass(frozen=True)
class BacktestOptions:
    """What to backtest. Dates are sessions (inclusive); None: from the first session with
    :data:`WARMUP_SESSIONS` sessions of history before it / to the last session of the data."""

    data_dir: Path
    symbols: tuple[str, ...]
    start: date | None = None
    end: date | None = None
    strategies: tuple[str, ...] | None = None
    cash: Decimal = Decimal(100000)
    commission: CommissionModel = field(default_factory=CommissionModel)
    slippage_bps: float = 1.0
    seed: int = 42
    bar_mode: BarMode = "auto"
    progress: bool = True
    #: Skip the loop on sessions where it provably does nothing (see :class:`BacktestLoop`).
    fast_forward: bool = True

    def __post_init__(self) -> None:
        if not self.symbols:
            raise BacktestError("no symbols to backtest: give --symbols A,B or set scanning.symbols")
        if self.start is not None and self.end is not None and self.end < self.start:
            raise BacktestError(f"--end {self.end} is before --start {self.start}")
        if not self.slippage_bps >= 0:
            raise BacktestError(f"slippage must be >= 0 basis points, got {self.slippage_bps}")
        if self.cash <= 0:
            raise BacktestError(f"starting cash must be positive, got {self.cash}")
        if self.bar_mode not in ("auto", "daily", "intraday"):
            raise BacktestError(f"bar mode must be auto, daily or intraday, got {self.bar_mode!r}")


@dataclass
class BacktestResult:
    """Everything a run produced; :attr:`analytics.performance` is :func:`analytics.performance.compute_performance`
    over :attr:`equity_curve` and :attr:`trades`."""

    options: BacktestOptions
    bar_mode: Literal["daily", "intraday"]
    sessions: list[date]
    equity_curve: list[tuple[datetime, Decimal]]
    trades: list[dict[str, Any]]
    orders: list[dict[str, Any]]
    intents: list[dict[str, Any]]
    state_changes: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    performance: PerformanceReport
    benchmark: list[tuple[datetime, Decimal]]
    commission_paid: Decimal
    bars: int
    requests: int
    elapsed_seconds: float
    loop_seconds: float
    strategies: list[str]
    model: dict[str, Any]
    final_state: str
    stopped_early: str | None = None
    #: Sessions on which the loop provably had nothing to do and was not run (daily data),
    #: and how many of them held positions.
    fast_forwarded: int = 0
    fast_forwarded_holding: int = 0
    #: Safety cycles a minute before the close skipped in sessions that were run (idle).
    safety_cycles_skipped: int = 0
    #: Wall seconds of the loop spent in the sessions that were run (not fast-forwarded).
    run_sessions_seconds: float = 0.0
    #: CPU seconds of this process in the loop (data loading excluded), beside its wall time.
    loop_cpu_seconds: float = 0.0
    #: The run against buy-and-hold, the benchmark and random entries, and the capital it
    #: kept deployed (:func:`backtest.benchmarks.compare`); None for an intraday run.
    comparison: dict[str, Any] | None = None
    #: The random-entry draws behind ``comparison`` (pooled across walk-forward windows).
    random_entries: RandomEntries | None = None
    #: Traded symbols without a bar on the first session (traded from their first bar on).
    late_symbols: list[str] = field(default_factory=list)

    @property
    def bars_per_second(self) -> float:
        """Symbol-sessions per wall second through the loop (data loading excluded)."""
        return self.bars / self.loop_seconds if self.loop_seconds > 0 else math.inf

    def meta(self) -> dict[str, Any]:
        """The run's description for the report header."""
        o = self.options
        return {
            "period": f"{self.sessions[0].isoformat()} .. {self.sessions[-1].isoformat()}" if self.sessions else "",
            "sessions": len(self.sessions),
            "bars": f"{self.bar_mode} ({self.bars:,} {'symbol-sessions' if self.bar_mode == 'daily' else 'minute bars'})",
            "symbols": ", ".join(o.symbols),
            "strategies": ", ".join(self.strategies),
            "ai_model": self.model.get("description", "transparent scoring (no model)"),
            "starting_cash": str(o.cash),
            "commission": o.commission.describe(),
            "commission_paid": str(self.commission_paid),
            "slippage": f"{o.slippage_bps:g} bps on market and stop fills, plus the simulated spread",
            "multi_timeframe": timeframe_note(self.bar_mode),
            "fills": ("decisions at the open on completed daily bars, orders at the opening quote, "
                      "protective legs along each minute's OHLC path" if self.bar_mode == "daily"
                      else "the live loop every trading.cycle_interval_seconds on recorded minute bars"),
            "final_trading_state": self.final_state,
            "stopped_early": self.stopped_early or "no",
            "orders_submitted": len(self.orders),
            "sessions_fast_forwarded": f"{self.fast_forwarded} ({self.fast_forwarded_holding} holding positions)",
            "idle_safety_cycles_skipped": self.safety_cycles_skipped,
            "data": str(o.data_dir),
        }


def timeframe_note(bar_mode: str) -> str:
    """What the multi-timeframe analysis sees in a backtest of ``bar_mode`` data."""
    if bar_mode == "intraday":
        return "1Min, 5Min, 15Min and 1Hour from the recorded minute bars, plus 1Day"
    return "1Day only: the data has no minute bars for the range (intraday timeframes missing)"
