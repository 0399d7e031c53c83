"""Journaling a bracket's or OCO's legs (take-profit, stop) as soon as the broker shows them,
so that a stop which fills before the next reconciliation is a fill of a known order
(exit reason ``stop_loss``, the opening strategy for the trade)."""

from __future__ import annotations

from typing import Sequence

from broker.models import Order
from execution.state import ExecutorState


class LegJournal(ExecutorState):
    """Leg journaling (a part of ``order_executor.OrderExecutor``)."""

    def _journal_acknowledged_legs(self, order: Order) -> None:
        """Journal a bracket's legs from the broker's answer to its submission (Alpaca nests
        them there): a stop that fills in the entry's own session, before any listing shows
        the legs, is then a fill of a known order, booked ``stop_loss`` for the stop-loss
        guard instead of an anonymous exit."""
        record_legs = getattr(self._journal, "record_legs", None)
        if not order.legs or record_legs is None:
            return
        record_legs(order, at=self._clock.now())
        self._legs_known.add((order.id, tuple(leg.id for leg in order.legs)))

    def _journal_new_legs(self, open_orders: Sequence[Order]) -> None:
        """Journal the legs (take-profit, stop) of journaled bracket/OCO orders the first time
        the broker lists them, so that a stop which fills before the next reconciliation is
        known by its order: exit reason ``stop_loss`` for the stop-loss guard, the opening
        strategy for the trade. Orders the journal does not know are reconciliation's job."""
        record_legs = getattr(self._journal, "record_legs", None)
        known = getattr(self._journal, "order_by_broker_id", None)
        if record_legs is None or known is None:
            return
        listed: set[tuple[str, tuple[str, ...]]] = set()
        for order in open_orders:
            if not order.legs:
                continue
            key = (order.id, tuple(leg.id for leg in order.legs))
            listed.add(key)
            if key in self._legs_known:  # journal rows are never removed: no need to look again
                continue
            if any(known(leg.id) is None for leg in order.legs):
                if known(order.id) is not None:
                    record_legs(order, at=self._clock.now())
            else:
                self._legs_known.add(key)
        self._legs_known &= listed
