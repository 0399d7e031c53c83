"""What every part of the order executor shares: the broker, the clock, the journal, the
settings and the orders it follows (set by ``order_executor.OrderExecutor.__init__``)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from core.clock import Clock
from execution.orders import JournalLike, TrackedOrder


class ExecutorState:
    """The executor's state, declared for its parts; ``OrderExecutor.__init__`` sets it."""

    _broker: Any
    _clock: Clock
    _stop_loss: Decimal
    _take_profit: Decimal
    _journal: JournalLike | None
    _emergency_max_attempts: int
    _emergency_backoff: float
    _emergency_backoff_max: float
    _extended_slippage: Decimal
    _tif: str
    _partial_fill_timeout: float
    tracked: dict[str, TrackedOrder]
    filled_logged: set[str]
    _legs_known: set[tuple[str, tuple[str, ...]]]

    def _journal_update(self, cid: str, **kw: Any) -> None:
        if self._journal is not None:
            self._journal.update_order(cid, at=self._clock.now(), **kw)
