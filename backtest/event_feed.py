"""The backtest's trade events: the simulator engine's own ``trade_updates``, heard in-process.

The live daemon keeps its orders, fills and positions from Alpaca's ``trade_updates`` stream
(:class:`engine.stream_feed.TradeEventFeed` over :class:`engine.order_events.OrderEventBook`).
A backtest runs the same loop over the simulator core in this process, and the simulator's
matching engine emits exactly those events (:attr:`simulator.engine.SimBroker.on_event`, the
hook the simulator's ``/stream`` server pushes to its websockets). :class:`InProcessTradeEvents`
subscribes to that hook directly, with no socket and no serialisation, and feeds the same
:class:`OrderEventBook` handlers the live stream feeds:

* every fill is journaled by :meth:`OrderEventBook.handle` (the reconciler's fill path, the
  trade ledger, PDT day trades), every order state change goes to the executor and journal
  (``source`` ``"stream"``, as live), positions and the open-order list are kept from events;
* the loop reads them through the same ``AccountStep.read_account`` branch as live
  (:meth:`ready_for_cycle` is True once the start-up REST reading has rebased the book), so a
  steady cycle lists no positions, no open orders and no activities. A bracket entry's parent
  arrives without its legs (Alpaca's events carry none) and makes the book re-list open
  orders once, as live.

What differs from the live feed, and why:

* **Events are applied at the cycle's reading**, in the engine's order, after bringing the
  core up to its clock (what the in-process broker does before every call): a backtest has no
  background task, and applying them between two cycles would change nothing the loop reads.
* **The account's money figures** (cash, equity, buying power, last equity, PDT counters)
  come from one in-process ``GET /v2/account`` per cycle: ``trade_updates`` carries no
  account figures (the live book approximates them between its periodic REST
  reconciliations), a backtest's commission model charges cash no event reports, and the
  simulator's margin and PDT rules are its own. Positions are valued at the simulator's
  current price (what the live feed marks them at from the cycle's latest trades).
* **No periodic reconciliation, no watchdog, no fallback**: an in-process event cannot be
  lost, delayed or duplicated. A handler that fails forces the start-up catch-up again.
* **No protection task on a partial fill**: it would run beside the cycle, in an order that
  depends on scheduling; the cycle's own unprotected-position check protects it instead
  (daily backtests fill market entries whole at the open).
"""

from __future__ import annotations

from typing import Any

import structlog

from broker.models import Account, Order, Position
from broker.trade_updates import TradeUpdate
from engine.stream_feed import TradeEventFeed

log = structlog.get_logger(__name__)

__all__ = ["InProcessTradeEvents"]


class InProcessTradeEvents(TradeEventFeed):
    """:class:`TradeEventFeed` fed by the in-process simulator's events (module docstring)."""

    def __init__(self, system: Any, broker: Any) -> None:
        super().__init__(broker=broker, clock=system.clock, journal=system.journal, reconciler=system.reconciler,
                         executor=system.executor, alerter=system.alerter,
                         settings=getattr(system.settings, "stream", None))
        self.book.on_partial_fill = None  # see the module docstring
        self._core = broker.core
        self._pending: list[dict[str, Any]] = []
        self._caught_up = False
        previous = self._core.broker.on_event

        def hear(payload: dict[str, Any]) -> None:  # inside the engine: queue only, never call back
            self._pending.append(payload)
            if previous is not None:
                previous(payload)

        self._core.broker.on_event = hear

    @property
    def enabled(self) -> bool:
        return True

    async def ready_for_cycle(self) -> bool:
        """Always True: the first call (start-up) rebases the book on one REST reading, and
        every later one applies the events since (no request)."""
        if not self._caught_up:
            await self._catch_up_now("connected")
        return True

    async def _catch_up_now(self, reason: str) -> None:
        self._core.sync()
        self._pending.clear()  # the reading below contains them
        await self.catch_up(reason)
        self._caught_up = True

    async def drain(self) -> None:
        """Apply the events emitted since the last call, in order (core brought up to its clock)."""
        self._core.sync()
        while self._pending:
            batch, self._pending = self._pending, []
            for payload in batch:
                update = TradeUpdate.model_validate(payload)
                try:
                    await self.book.handle(update, source="stream")
                except Exception as exc:  # as live: logged, and the book is read again from the broker
                    log.exception("stream_event_failed", trade_event=update.event, order_id=update.order.id,
                                  error=repr(exc))
                    await self._catch_up_now("event_failed")
                    return

    async def read_account(self) -> tuple[Account, list[Position], list[Order]]:
        """The cycle's reading: orders, fills and positions from the events; the account's
        money from the simulator (one in-process request), positions valued at its prices."""
        await self.drain()
        account = await self.broker.get_account()
        now = self._core.clock.now()
        sim_account = self._core.broker.account
        self.book.mark({symbol: sim_account.mark(symbol, now) for symbol in self.book.positions})
        _own, positions, orders = await super().read_account()
        return account, positions, orders
