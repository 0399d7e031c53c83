"""Strategy rotation: which strategies may open positions, and how large, in each market regime.

The regime is read from the benchmark's completed daily bars (SPY), with the seed's thresholds
(``strategy_rotation`` in the configuration):

* **volatile** when the standard deviation of the last ``volatility_window_days`` daily log
  returns is at least ``volatility_threshold`` (2% a day, about 32% a year); checked first,
  because a violent week says more about risk than about direction;
* **bull** when the weekly return (the last close against the close five sessions earlier)
  is at least ``+weekly_threshold`` (3%);
* **bear** when it is at most ``-weekly_threshold``;
* **sideways** otherwise, and while the benchmark has too few bars to tell.

Each regime maps strategy names to weights (``strategy_rotation.regimes``): a strategy
weighted 0 opens nothing in that regime; one the table does not name is not rotated (weight
1: a strategy added later is never silently switched off); otherwise its buy signals rank by
``confidence x weight`` and its position size is multiplied by the weight (through the
``size_multiplier`` the risk manager already honours, which only ever shrinks a position).
In defensive mode every strategy other than ``defensive`` is throttled on top of that:
entries off (``defensive_throttle = "off"``) or its size times ``defensive_size_multiplier``.
``strategy_rotation.enabled = false`` turns both off (every strategy at full size, always).

Rotation only gates *entries*: exits always listen to the strategy that opened a position.
It sits in the loop's decision path (:meth:`engine.trading_system.TradingSystem.entry_candidates`),
which the backtester runs unchanged, so a backtest rotates the same way. Every change of
regime logs ``strategy_rotation`` with the numbers that decided it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import structlog

from market.market_data import BarSeries

log = structlog.get_logger(__name__)

RotationRegime = Literal["bull", "bear", "volatile", "sideways"]
#: Sessions in the "weekly" return.
WEEK_SESSIONS = 5
DEFENSIVE = "defensive"


@dataclass(frozen=True)
class RegimeReading:
    """The regime and the two numbers it was decided on (None: not enough bars)."""

    regime: RotationRegime
    weekly_return: float | None
    volatility: float | None


def read_regime(benchmark: BarSeries | None, *, weekly_threshold: float, volatility_threshold: float,
                volatility_window: int) -> RegimeReading:
    """The rotation regime at the benchmark's last bar (see the module docstring)."""
    if benchmark is None or len(benchmark) < 2:
        return RegimeReading("sideways", None, None)
    close = np.asarray(benchmark.close, dtype=float)
    volatility = None
    if len(close) > volatility_window:
        returns = np.diff(np.log(close[-(volatility_window + 1):]))
        volatility = float(np.std(returns, ddof=1))
    weekly = float(close[-1] / close[-1 - WEEK_SESSIONS] - 1.0) if len(close) > WEEK_SESSIONS else None
    if volatility is not None and math.isfinite(volatility) and volatility >= volatility_threshold:
        return RegimeReading("volatile", weekly, volatility)
    if weekly is not None and weekly >= weekly_threshold:
        return RegimeReading("bull", weekly, volatility)
    if weekly is not None and weekly <= -weekly_threshold:
        return RegimeReading("bear", weekly, volatility)
    return RegimeReading("sideways", weekly, volatility)


class StrategyRotation:
    """The regime in force and the weight each strategy gets in it (plain settings in)."""

    def __init__(self, settings: Any) -> None:
        self._cfg = settings.strategy_rotation
        self.reading: RegimeReading | None = None

    @property
    def enabled(self) -> bool:
        return bool(self._cfg.enabled)

    @property
    def regime(self) -> RotationRegime | None:
        return None if self.reading is None else self.reading.regime

    def observe(self, benchmark: BarSeries | None) -> RegimeReading | None:
        """Read the regime from ``benchmark``; log ``strategy_rotation`` when it changes."""
        if not self.enabled:
            return None
        reading = read_regime(benchmark, weekly_threshold=float(self._cfg.weekly_threshold),
                              volatility_threshold=float(self._cfg.volatility_threshold),
                              volatility_window=int(self._cfg.volatility_window_days))
        previous = self.regime
        self.reading = reading
        if reading.regime != previous:
            table = self._table(reading.regime)
            log.info(
                "strategy_rotation",
                regime=reading.regime,
                previous=previous,
                weekly_return=None if reading.weekly_return is None else round(reading.weekly_return, 5),
                volatility=None if reading.volatility is None else round(reading.volatility, 5),
                active={name: weight for name, weight in table.items() if weight > 0},
                inactive=sorted(name for name, weight in table.items() if weight <= 0),
                weekly_threshold=float(self._cfg.weekly_threshold),
                volatility_threshold=float(self._cfg.volatility_threshold),
            )
        return reading

    def weight(self, strategy: str, *, defensive: bool) -> float:
        """The multiplier for ``strategy``'s entries now: 0 means no entries."""
        if not self.enabled:
            return 1.0
        weight = 1.0
        if self.regime is not None:
            weight = float(self._table(self.regime).get(strategy, 1.0))
        if defensive and strategy != DEFENSIVE:
            if self._cfg.defensive_throttle == "off":
                return 0.0
            weight *= float(self._cfg.defensive_size_multiplier)
        return weight

    def apply(self, signal: Any, *, defensive: bool) -> Any | None:
        """``signal`` with its size scaled by the strategy's weight, or None when the strategy
        may not open a position now. A weight of 1 leaves the signal as it is."""
        weight = self.weight(str(signal.strategy), defensive=defensive)
        if weight <= 0:
            return None
        if weight >= 1.0:
            return signal
        metadata = dict(getattr(signal, "metadata", None) or {})
        current = _number(metadata.get("size_multiplier"), 1.0)
        metadata["size_multiplier"] = current * weight
        metadata["rotation_weight"] = weight
        metadata["rotation_regime"] = self.regime
        return replace(signal, metadata=metadata)

    def rank(self, signal: Any) -> float:
        """The signal's confidence times its rotation weight (the weight already applied)."""
        weight = _number((getattr(signal, "metadata", None) or {}).get("rotation_weight"), 1.0)
        return float(signal.confidence) * weight

    def _table(self, regime: str) -> dict[str, float]:
        return dict(self._cfg.regimes.get(regime, {}))


def _number(value: Any, default: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default
