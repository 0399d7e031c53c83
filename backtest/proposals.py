"""The sessions where the configured pipeline's strategies propose an entry (``evaluate
--population proposals``), each with the bracket and holding horizon the intent would carry.

Each strategy decides at the close of a session, on the daily bars up to and including it
(the last price is that close): nothing of the entry session is known. A proposal's stop and
target are turned into fractions of that close — the analyzer's rule (the signal's levels
when they sit on the right sides, else ``trading.stop_loss`` / ``trading.take_profit``) —
and applied to the next session's open by the labelling rule. Its horizon is the signal's
``max_hold_days`` when it has one (mean reversion: 5), else the default horizon. One row per
(symbol, session): the first strategy in ``strategy.enabled`` order that proposes a buy.
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from ai.features import MIN_HISTORY_BARS, latest_regime
from ai.evaluate import Proposer
from market.market_data import BarSeries, MarketData, exchange_day_numbers

#: Daily bars handed to the strategies at each session (as the live loop's look-back).
WINDOW_BARS = 300


def _bracket(signal: Any, reference: float, stop_loss: float, take_profit: float) -> tuple[float, float]:
    stop = getattr(signal, "stop_price", None)
    target = getattr(signal, "target_price", None)
    stop = stop if isinstance(stop, float | int) and math.isfinite(stop) and 0 < stop < reference else None
    target = target if isinstance(target, float | int) and math.isfinite(target) and target > reference else None
    s = (reference - stop) / reference if stop is not None else stop_loss
    t = (target - reference) / reference if target is not None else take_profit
    return float(s), float(t)


def pipeline_proposer(settings: Any, default_horizon: int) -> Proposer:
    """A :data:`ai.evaluate.Proposer` running ``settings``' enabled strategies."""
    import strategies

    strats = strategies.load_enabled(settings)
    stop_loss, take_profit = float(settings.trading.stop_loss), float(settings.trading.take_profit)

    def propose(symbol: str, bars: BarSeries, market: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        days = exchange_day_numbers(bars.ts)
        bench = None
        if market is not None:
            bench = BarSeries.from_arrays(bars.ts, market, market, market, market, np.ones(len(market)))
        rows: list[tuple[int, float, float, int]] = []

        async def walk() -> None:
            for i in range(MIN_HISTORY_BARS, len(bars) - 1):
                lo = max(0, i + 1 - WINDOW_BARS)
                daily = bars.slice(lo, i + 1)
                close = float(bars.close[i])
                day = decision_time(int(days[i]))
                window = bench.slice(lo, i + 1) if bench is not None else None
                regime = latest_regime(window.close) if window is not None and len(window) >= 60 else None
                data = MarketData(symbol=symbol, now=day, daily=daily, last_price=close,
                                  prev_close=float(bars.close[i - 1]), benchmark=window, regime=regime)
                for strategy in strats:
                    signal = await strategy.evaluate_opportunity(symbol, data)
                    if str(signal.action).lower() != "buy":
                        continue
                    s, t = _bracket(signal, close, stop_loss, take_profit)
                    hold = getattr(signal, "max_hold_days", None) or default_horizon
                    rows.append((i, s, t, int(hold)))
                    break

        asyncio.run(walk())
        if not rows:
            empty = np.zeros(0)
            return np.zeros(0, dtype=np.int64), empty, empty, np.zeros(0, dtype=np.int64)
        arr = np.array(rows, dtype=float)
        return arr[:, 0].astype(np.int64), arr[:, 1], arr[:, 2], arr[:, 3].astype(np.int64)

    return propose


def decision_time(day: int) -> datetime:
    """The moment a decision on session ``day`` is taken: after that session's close."""
    return datetime(1970, 1, 1, 23, 0, tzinfo=UTC) + timedelta(days=int(day))
