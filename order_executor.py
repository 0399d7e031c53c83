"""Turning approved trade intents into broker orders, and getting out when it matters.

Three jobs, each findable from the log events it emits:

* **Entries** (:meth:`OrderExecutor.submit_bracket`): one bracket order per intent (entry,
  take-profit and stop as one OCO pair), with a deterministic ``client_order_id`` derived from
  the intent id, so a retry or a restart can never turn one intent into two orders. The order
  is journaled *before* it is sent. An ambiguous outcome leaves it ``in_flight`` until
  reconciled. Events: ``order_submitted``, ``order_rejected``, ``order_in_flight``.
* **Tracking** (:meth:`OrderExecutor.manage_open_orders`): every tracked order is followed to
  its terminal state; fills log price and slippage against the intended entry. Events:
  ``order_filled``, ``order_partially_filled``, ``order_canceled``, ``order_rejected``.
* **Protection and emergency stop** (:meth:`protect_positions`, :meth:`emergency_exit`,
  :meth:`liquidate_all`): a position without a stop for its full quantity gets one sized to
  the held quantity; an emergency exit cancels the symbol's open orders, waits until the
  broker confirms, sells what is sellable (market in regular hours, marketable limit in
  extended hours), retries with backoff on ``insufficient qty`` and broker errors, and
  verifies the position is flat. It never reports a success that did not happen. Events:
  ``position_unprotected``, ``position_protected``, ``emergency_liquidation``,
  ``emergency_stop_failed``, ``position_flat`` (the trade itself is logged as ``position_closed`` by the loop when its fills arrive).

A cancel that meets the broker's race (``already filled``/``canceled``/``expired``, or not
found: an :class:`core.errors.OrderOutcome`) is no failure. Every cancel path goes through
:meth:`OrderExecutor._cancel_quietly`, which reads the order's true state, journals it (a fill
is recorded as a fill) and logs ``cancel_outcome``; the caller then re-reads the position
before acting, so nothing is ever placed for a position that closed in the race
(``position_gone``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from core.clock import Clock
from execution.emergency import EmergencyExit, EmergencyStep, EmergencyStopReport
from execution.orders import (
    CENT,
    HUNDREDTH_CENT,
    MAX_CLIENT_ORDER_ID,
    PROTECTIVE_TYPES,
    ExecutionResult,
    IntentLike,
    JournalLike,
    TrackedOrder,
    client_order_id_for,
    flatten_orders,
    protected_quantity,
    round_price,
)
from execution.protection import PositionProtection

# The names the daemon, the backtest and the tests import from here (the face).
__all__ = [
    "CENT", "HUNDREDTH_CENT", "MAX_CLIENT_ORDER_ID", "PROTECTIVE_TYPES", "EmergencyStep",
    "EmergencyStopReport", "ExecutionResult", "IntentLike", "JournalLike", "OrderExecutor",
    "TrackedOrder", "client_order_id_for", "flatten_orders", "protected_quantity", "round_price",
]


class OrderExecutor(PositionProtection, EmergencyExit):
    """Submits, tracks, protects and, when told, liquidates. One per trading loop."""

    def __init__(
        self,
        broker: Any,
        clock: Clock,
        *,
        stop_loss: float = 0.03,
        take_profit: float = 0.06,
        journal: JournalLike | None = None,
        emergency_max_attempts: int = 5,
        emergency_backoff: float = 1.0,
        emergency_backoff_max: float = 16.0,
        extended_hours_slippage: float = 0.01,
        time_in_force: str = "gtc",
        partial_fill_timeout: float = 60.0,
    ) -> None:
        """``partial_fill_timeout``: a bracket entry still partly filled after this many
        seconds has the rest canceled, so that its legs protect what was filled (Alpaca
        keeps the legs ``held`` until the entry is done)."""
        self._broker = broker
        self._clock = clock
        self._stop_loss = Decimal(str(stop_loss))
        self._take_profit = Decimal(str(take_profit))
        self._journal = journal
        self._emergency_max_attempts = emergency_max_attempts
        self._emergency_backoff = emergency_backoff
        self._emergency_backoff_max = emergency_backoff_max
        self._extended_slippage = Decimal(str(extended_hours_slippage))
        self._tif = time_in_force
        self._partial_fill_timeout = partial_fill_timeout
        self.tracked: dict[str, TrackedOrder] = {}
        #: Broker order ids already logged as ``order_filled`` (by any source: the submit
        #: answer, polling, the trade stream, a REST catch-up), so each is logged once.
        self.filled_logged: set[str] = set()
        # (order id, leg ids) of open orders whose legs the journal already holds.
        self._legs_known: set[tuple[str, tuple[str, ...]]] = set()
