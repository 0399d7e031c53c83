"""Protection when a held leg wakes up during the cancels (found by tests/test_e2e_race_soak.py).

The position's exit orders are canceled so that one protection can cover all of it. While
they are canceled, the entry of a pending ``oto``/bracket fills: the position grows, and the
entry's take-profit leg, ``held`` a moment ago, is now a working sell holding those shares.
A protection sized to the grown position is then refused by the broker (403 insufficient
qty), and the position stays unprotected for another cycle. The executor lists the symbol's
orders again after its cancels and clears the leg that became active before it protects.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from structlog.testing import capture_logs

from core import errors
from broker.models import Order, OrderRequest
from order_executor import protected_quantity
from tests.test_cancel_races import RaceBroker, events, executor, order, position

D = Decimal


@dataclass
class WakingLegBroker(RaceBroker):
    """Canceling ``wake_on`` fills a pending entry of ``grow`` shares: the position grows and
    the entry's take-profit leg ``leg_id`` turns from held to new. Orders are refused when
    open sells would hold more shares than the position has (Alpaca's 403)."""

    wake_on: str = ""
    leg_id: str = ""
    grow: Decimal = D(0)

    async def cancel_order(self, order_id: str) -> None:
        if order_id == self.wake_on and self.leg_id in self.orders:
            leg = self.orders[self.leg_id]
            self.orders[self.leg_id] = leg.model_copy(update={"status": "new"})
            held = self.positions[leg.symbol]
            self.positions[leg.symbol] = held.model_copy(update={"qty": held.qty + self.grow})
        await super().cancel_order(order_id)

    async def submit_order(self, request: OrderRequest) -> Order:
        held = self.positions.get(request.symbol)
        busy = sum((o.qty or D(0) for o in self.orders.values()
                    if o.symbol == request.symbol and o.side == "sell" and o.status != "held"), D(0))
        if request.side == "sell" and held is not None and request.qty is not None \
                and request.qty + busy > held.qty:
            raise errors.InsufficientQuantity(
                f"POST /v2/orders: insufficient qty available for order (requested: {request.qty}, "
                f"available: {held.qty - busy})", status=403, code=40310000,
                body={"available": str(held.qty - busy), "held_for_orders": str(busy)})
        return await super().submit_order(request)


async def test_a_leg_that_became_active_while_exits_were_canceled_is_cleared_before_protecting() -> None:
    take_profit = order("tp-1", type_="limit", qty="10")
    user_leg = order("tp-user", type_="limit", qty="3", status="held")
    broker = WakingLegBroker(positions={"SPY": position("10")}, orders={"tp-1": take_profit, "tp-user": user_leg},
                             wake_on="tp-1", leg_id="tp-user", grow=D(3))
    ex, _ = executor(broker)
    with capture_logs() as logs:
        found = await ex.protect_positions([position("10")], [take_profit, user_leg])
    assert [f["symbol"] for f in found] == ["SPY"]
    assert broker.canceled == ["tp-1", "tp-user"]
    assert [(r.order_class, r.qty) for r in broker.submitted] == [("oco", D(13))]
    assert events(logs, "position_changed")[0]["qty"] == "13"
    assert not events(logs, "position_protection_failed") and not events(logs, "order_rejected")
    assert protected_quantity(broker.positions["SPY"], list(broker.orders.values())) == D(13)


async def test_exit_orders_that_never_stop_appearing_are_reported_not_chased_forever() -> None:
    @dataclass
    class Hydra(RaceBroker):
        """Every cancel makes a new sell appear (someone keeps placing them)."""

        spawned: int = 0

        async def cancel_order(self, order_id: str) -> None:
            await super().cancel_order(order_id)
            self.spawned += 1
            oid = f"again-{self.spawned}"
            self.orders[oid] = order(oid, type_="limit", qty="10")

    broker = Hydra(positions={"SPY": position("10")}, orders={"tp-1": order("tp-1", type_="limit")})
    ex, _ = executor(broker)
    with capture_logs() as logs:
        await ex.protect_positions([position("10")], [broker.orders["tp-1"]])
    assert len(broker.canceled) == 3 and broker.submitted == []
    failed = events(logs, "position_protection_failed")
    assert failed and "3 rounds" in failed[0]["reason"]
