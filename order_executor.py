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

from execution.emergency import (
    CENT,
    HUNDREDTH_CENT,
    MAX_CLIENT_ORDER_ID,
    PROTECTIVE_TYPES,
    EmergencyStep,
    EmergencyStopReport,
    ExecutionResult,
    IntentLike,
    JournalLike,
    OrderExecutor,
    TrackedOrder,
    client_order_id_for,
    flatten_orders,
    protected_quantity,
    round_price,
)

# The names the daemon, the backtest and the tests import from here (the face).
__all__ = [
    "CENT", "HUNDREDTH_CENT", "MAX_CLIENT_ORDER_ID", "PROTECTIVE_TYPES", "EmergencyStep",
    "EmergencyStopReport", "ExecutionResult", "IntentLike", "JournalLike", "OrderExecutor",
    "TrackedOrder", "client_order_id_for", "flatten_orders", "protected_quantity", "round_price",
]
