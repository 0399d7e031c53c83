"""The order-event core: the daemon's orders, fills, positions and cash kept from broker events.

:class:`OrderEventBook` is fed plain typed events (:class:`broker.trade_updates.TradeUpdate`)
and knows nothing of websockets or REST: the live daemon feeds it from Alpaca's
``trade_updates`` stream (``engine.stream_feed``), and a backtest can feed it the simulator
engine's own events in-process. Entry points:

* :meth:`OrderEventBook.rebase` -- the broker's REST truth (account, positions, open orders,
  the FILL activities that truth already contains), at start, after a reconnect and on the
  periodic reconciliation;
* :meth:`OrderEventBook.handle` -- one event, in the stream's order;
* :meth:`OrderEventBook.mark` -- latest prices (the cycle's snapshots), for position values;
* :meth:`OrderEventBook.view` -- (account, positions, open orders) for the loop's cycle.

What one event does, in this order:

1. a fill is journaled through :meth:`engine.reconcile.Reconciler.apply_fill` (the same path
   as a REST FILL activity: deduplicated by execution id and by the order's cumulative
   quantity, then the trade ledger, PDT day trades, the fills cursor);
2. a fill moves cash and the position, once: an execution is known by
   ``(order id, cumulative filled qty)``, the key a FILL activity has too, so a fill the
   last REST reading already contained, or seen twice across a reconnect, moves nothing;
3. the order's state goes to the journal: a tracked order through the executor (which logs
   ``order_filled`` / ``order_partially_filled`` / ``order_canceled`` with ``source``), any
   other order the journal knows (bracket legs, protection) directly, and its final fill is
   logged ``order_filled`` here; each order id is logged filled once whatever the source
   (``OrderExecutor.filled_logged``);
4. the open-order list is updated in place (a parent that ends leaves its open legs
   listed); a new simple order, or one that carries its legs, is added; any other order it
   has never seen (a bracket parent without its legs) marks it stale, so the next cycle
   re-lists open orders once (one request) to get the bracket structure right;
5. an event that would reopen an order already seen final (Alpaca replays ``new``/``fill``
   pairs) is ignored; a replayed fill moves nothing (step 2) and logs nothing (step 3);
6. a ``partial_fill`` calls ``on_partial_fill(symbol)`` (the owner protects the position now).

The account the loop reads between REST readings is the last reading with cash moved by
each fill since, equity = cash + the positions at their latest mark (the last fill price or
the cycle's snapshot), and buying power lowered by every buy since (never raised: the
periodic reconciliation restores the broker's own figure).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import structlog

from broker.models import Account, Activity, Order, Position
from broker.trade_updates import TradeUpdate
from order_executor import OrderExecutor

log = structlog.get_logger(__name__)

ZERO = Decimal(0)
FillKey = tuple[str, Decimal]

__all__ = ["OrderEventBook", "activity_key", "fill_activity"]


def fill_activity(update: TradeUpdate) -> Activity:
    """A fill event in the shape of a REST FILL activity (what the journal path reads)."""
    order = update.order
    side = order.side
    if side == "sell" and update.position_qty is not None and update.position_qty < 0:
        side = "sell_short"
    execution_id = update.execution_id or f"{order.id}:{order.filled_qty}"
    return Activity(
        id=execution_id, activity_type="FILL", transaction_time=update.timestamp, type=update.event,
        price=update.price, qty=update.qty, side=side, symbol=order.symbol,
        leaves_qty=order.remaining_qty, cum_qty=order.filled_qty, order_id=order.id,
        order_status=order.status,
    )


def activity_key(activity: Activity) -> FillKey | None:
    """The execution key of a REST FILL activity (order id, cumulative qty after it)."""
    if activity.order_id and activity.cum_qty is not None:
        return (activity.order_id, activity.cum_qty)
    return None


class OrderEventBook:
    """Orders, fills, positions and cash kept from events (see the module docstring)."""

    def __init__(self, *, journal: Any, reconciler: Any, executor: OrderExecutor,
                 on_partial_fill: Callable[[str], None] | None = None) -> None:
        self.journal = journal
        self.reconciler = reconciler
        self.executor = executor
        self.on_partial_fill = on_partial_fill
        self.account: Account | None = None
        self.cash = ZERO
        self.bought_since = ZERO
        self.positions: dict[str, Position] = {}
        self.open_orders: list[Order] = []
        self.orders_stale = True
        self.marks: dict[str, Decimal] = {}
        self._known_keys: set[FillKey] = set()
        self._final: set[str] = set()  # order ids seen in a terminal state
        #: Executions journaled from events: a REST copy of one (another id) is not journaled again.
        self.streamed: set[FillKey] = set()
        self.last_event_at: datetime | None = None
        self.events = 0

    # -- the broker's REST truth -----------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether a REST reading has been taken (the book can answer the loop)."""
        return self.account is not None

    def rebase(self, account: Account, positions: Sequence[Position], open_orders: Sequence[Order],
               fills: Sequence[Activity]) -> None:
        """Take the broker's reading as the truth: ``fills`` are the FILL activities it already
        contains (their events, arriving later, move nothing)."""
        self.account = account
        self.cash = account.cash
        self.bought_since = ZERO
        self.positions = {p.symbol: p for p in positions}
        for p in positions:
            if p.current_price is not None:
                self.marks[p.symbol] = p.current_price
        self.open_orders = list(open_orders)
        self.orders_stale = False
        for activity in fills:
            key = activity_key(activity)
            if key is not None:
                self._known_keys.add(key)

    def replace_open_orders(self, open_orders: Sequence[Order]) -> None:
        """A fresh open-order listing (after the book went stale)."""
        self.open_orders = list(open_orders)
        self.orders_stale = False

    def mark(self, prices: Mapping[str, Decimal]) -> None:
        """Latest prices per symbol (positions are valued at them)."""
        for symbol, price in prices.items():
            if price is not None and price > 0:
                self.marks[symbol] = price

    # -- events ----------------------------------------------------------------------------

    async def handle(self, update: TradeUpdate, *, source: str = "stream") -> None:
        """Apply one event (see the module docstring for the steps)."""
        self.events += 1
        if self.last_event_at is None or update.timestamp > self.last_event_at:
            self.last_event_at = update.timestamp
        order = update.order
        if order.id in self._final and not order.is_terminal:
            # Alpaca replays new/fill pairs after the end (seen in production: Lean
            # Brokerages.Alpaca PR #61): a replayed "new" must not reopen a finished order.
            log.info("stream_event_replayed", trade_event=update.event, broker_order_id=order.id)
            return
        if order.is_terminal:
            self._final.add(order.id)
        if update.is_fill:
            self.reconciler.apply_fill(fill_activity(update))
            if update.fill_key is not None:
                self.streamed.add(update.fill_key)
            self._move_money(update)
        self._journal_order(order, update, source=source)
        self._update_open_orders(order)
        if update.event == "partial_fill" and self.on_partial_fill is not None:
            self.on_partial_fill(order.symbol)

    def _move_money(self, update: TradeUpdate) -> None:
        key = update.fill_key
        if key is None or key in self._known_keys:
            return
        self._known_keys.add(key)
        assert update.qty is not None and update.price is not None
        order = update.order
        qty, price = update.qty, update.price
        signed = qty if order.side == "buy" else -qty
        self.cash -= signed * price
        if order.side == "buy":
            self.bought_since += qty * price
        self.marks[order.symbol] = price
        self._move_position(order.symbol, signed, price, update.position_qty)

    def _move_position(self, symbol: str, signed: Decimal, price: Decimal, reported: Decimal | None) -> None:
        """The position after one execution: the broker's ``position_qty`` when sent, the
        average entry price kept as the broker keeps it (adds average in, reductions keep it)."""
        old = self.positions.get(symbol)
        old_qty = old.qty if old is not None else ZERO
        new_qty = old_qty + signed if reported is None else reported
        if new_qty == 0:
            self.positions.pop(symbol, None)
            return
        if old is None or old_qty == 0 or (old_qty > 0) != (new_qty > 0):
            avg = price
        elif abs(new_qty) > abs(old_qty):
            avg = (old.avg_entry_price * abs(old_qty) + price * (abs(new_qty) - abs(old_qty))) / abs(new_qty)
        else:
            avg = old.avg_entry_price
        self.positions[symbol] = Position(symbol=symbol, qty=new_qty, side="long" if new_qty > 0 else "short",
                                          avg_entry_price=avg, cost_basis=avg * new_qty)

    def _journal_order(self, order: Order, update: TradeUpdate, *, source: str) -> None:
        if self.executor.observe_order(order, source=source):
            return
        row = self.journal.order_by_broker_id(order.id)
        if row is not None:
            self.journal.update_order(row["client_order_id"], status=order.status, at=update.timestamp,
                                      broker_order_id=order.id, filled_qty=order.filled_qty,
                                      filled_avg_price=order.filled_avg_price)
        fields = {"client_order_id": order.client_order_id, "broker_order_id": order.id, "symbol": order.symbol,
                  "side": order.side, "type": order.type, "status": order.status,
                  "filled_qty": str(order.filled_qty), "source": source,
                  "fill_price": str(update.price) if update.price is not None else None}
        if update.event == "fill" and order.status == "filled" and order.id not in self.executor.filled_logged:
            self.executor.filled_logged.add(order.id)
            log.info("order_filled", avg_price=str(order.filled_avg_price), **fields)
        elif update.event == "partial_fill":
            log.info("order_partially_filled", **fields)

    def _update_open_orders(self, order: Order) -> None:
        """Replace ``order`` where it is listed (legs included). An open order the book has not
        seen is added when its shape is complete (a simple order, or one carrying its legs);
        otherwise (a bracket parent or a leg on its own) the list is stale: re-listed once."""
        found, self.open_orders = _replace(self.open_orders, order)
        if found or not order.is_open:
            return
        if order.legs is not None or order.order_class in ("simple", ""):
            self.open_orders.append(order)
        else:
            self.orders_stale = True

    # -- what the loop reads ---------------------------------------------------------------

    def view(self) -> tuple[Account, list[Position], list[Order]]:
        """(account, positions, open orders) as kept from events since the last reading."""
        assert self.account is not None, "view() before the first rebase()"
        positions = [self._valued(p) for p in self.positions.values()]
        long_value = sum((p.market_value or ZERO for p in positions if p.qty > 0), ZERO)
        short_value = sum((p.market_value or ZERO for p in positions if p.qty < 0), ZERO)
        equity = self.cash + long_value + short_value
        base = self.account
        account = base.model_copy(update={
            "cash": self.cash, "equity": equity, "portfolio_value": equity,
            "long_market_value": long_value, "short_market_value": short_value,
            "position_market_value": long_value + short_value,
            "buying_power": max(ZERO, base.buying_power - self.bought_since),
        })
        return account, positions, list(self.open_orders)

    def _valued(self, position: Position) -> Position:
        price = self.marks.get(position.symbol) or position.current_price or position.avg_entry_price
        return position.model_copy(update={
            "current_price": price, "market_value": price * position.qty,
            "unrealized_pl": (price - position.avg_entry_price) * position.qty,
            "cost_basis": position.avg_entry_price * position.qty,
        })


def _replace(orders: Sequence[Order], order: Order) -> tuple[bool, list[Order]]:
    """``orders`` with ``order`` in place of its namesake (searching legs); terminal ones
    leave the top level; a listed order's legs are kept when the event carries none."""
    out: list[Order] = []
    found = False
    for listed in orders:
        if listed.id == order.id:
            found = True
            if order.is_open:
                out.append(order if order.legs is not None else order.model_copy(update={"legs": listed.legs}))
            elif listed.legs:
                out.extend(leg for leg in listed.legs if leg.is_open)  # they work on alone
            continue
        if listed.legs:
            leg_found, legs = _replace(listed.legs, order)
            if leg_found:
                found = True
                listed = listed.model_copy(update={"legs": legs})
                if not listed.is_open and not any(leg.is_open for leg in legs):
                    continue  # a finished parent (listed for its legs) whose legs all ended
        out.append(listed)
    return found, out
