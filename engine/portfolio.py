"""The portfolio as the safety and risk checks see it: plain data, no behaviour beyond arithmetic.

:class:`PortfolioState` is the explicit snapshot of the account for one loop cycle that the
risk manager (``risk_manager.RiskManager``) and the safety state machine
(``engine.trading_state.SafetyStateMachine``) both read; :class:`TradingState` is what the
daemon may do right now; :func:`loss_fraction` is the one loss arithmetic both use.

These types live here, below both of their readers, so that the risk manager depends on plain
data only (never on the loop or the state machine), and the state machine can name the
snapshot it reads without importing the risk manager: the two used to import each other.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Mapping

ZERO = Decimal(0)


class TradingState(str, enum.Enum):
    """What the daemon may do right now (the table of each state is in ``engine.trading_state``)."""

    ACTIVE = "active"
    REDUCING = "reducing"
    HALTED = "halted"
    LIQUIDATING = "liquidating"

    @property
    def allows_entry(self) -> bool:
        """New positions may be opened only when ACTIVE."""
        return self is TradingState.ACTIVE

    @property
    def allows_exit(self) -> bool:
        """Positions may be reduced or closed in every state but HALTED."""
        return self is not TradingState.HALTED


def loss_fraction(baseline: Decimal, equity: Decimal) -> Decimal:
    """How much of ``baseline`` has been lost, as a fraction (0.05 = 5 %); 0 when up.

    A non-positive baseline has no meaningful loss fraction and yields 0.
    """
    if baseline <= ZERO:
        return ZERO
    loss = (baseline - equity) / baseline
    return loss if loss > ZERO else ZERO


@dataclass(frozen=True)
class PositionView:
    """One held position as the risk checks see it. ``qty`` is signed (negative = short)."""

    symbol: str
    qty: Decimal
    avg_entry_price: Decimal
    market_price: Decimal
    market_value: Decimal
    unrealized_pl: Decimal
    stop_price: Decimal | None = None

    @property
    def cost_basis(self) -> Decimal:
        return abs(self.qty) * self.avg_entry_price


@dataclass(frozen=True)
class PendingEntry:
    """An entry order that is working at the broker but not yet filled."""

    symbol: str
    qty: Decimal
    price: Decimal
    stop_price: Decimal | None = None

    @property
    def notional(self) -> Decimal:
        return abs(self.qty) * self.price


@dataclass(frozen=True)
class PortfolioState:
    """An explicit snapshot of the account for one loop cycle (Decimal money, aware time).

    ``session_start_equity`` should be the safety state machine's persisted baseline.
    ``open_order_symbols`` lists every symbol with any open order (protective stops too);
    ``pending_entries`` the entry orders not yet filled.
    """

    equity: Decimal
    cash: Decimal
    buying_power: Decimal
    last_equity: Decimal
    session_start_equity: Decimal
    day_high_equity: Decimal
    positions: Mapping[str, PositionView]
    trading_state: TradingState
    now: datetime
    open_order_symbols: frozenset[str] = frozenset()
    pending_entries: tuple[PendingEntry, ...] = ()

    def __post_init__(self) -> None:
        if self.now.tzinfo is None:
            raise ValueError("PortfolioState.now must be timezone-aware")

    @property
    def pending_entry_exposure(self) -> Decimal:
        """The notional of entry orders still working."""
        return sum((p.notional for p in self.pending_entries), ZERO)
