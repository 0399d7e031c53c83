"""InProcessBroker: the gateway's parsing and error mapping over the simulator core, no sockets.

The central promise: an order sequence sent in-process and the same sequence sent over HTTP
(real loopback server + ResilientAlpacaGateway) to an identical simulator end with identical
fills, positions and refusals. Plus the commission model the backtester attaches.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest

from core import errors
from api_gateway import ResilientAlpacaGateway
from broker.interface import Broker
from broker.models import OrderRequest
from backtest.sim_broker import CommissionModel, InProcessBroker, attach_commission
from simulator.core import SimulatorCore
from simulator.server import start_server

# A Tuesday at 10:00 New York: regular hours; the clock moves only when told.
START = "2025-03-04T10:00:00-05:00"


def make_core() -> SimulatorCore:
    return SimulatorCore.create(symbols=["SPY", "AAPL"], start=START, speed=None, seed=11)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[tuple[SimulatorCore, Broker], tuple[SimulatorCore, Broker]]]:
    """Two identical simulators: one in-process, one behind a loopback HTTP server."""
    local_core, remote_core = make_core(), make_core()
    server = await start_server(remote_core, host="127.0.0.1", port=0, rate_limit_per_minute=None)
    gateway = ResilientAlpacaGateway(base_url=server.base_url, data_url=server.base_url, key_id=None,
                                     secret_key=None, mode="sim", clock=remote_core.clock, max_retries=0)
    try:
        async with gateway:
            yield (local_core, InProcessBroker(local_core)), (remote_core, gateway)
    finally:
        await server.stop()


Step = Callable[[SimulatorCore, Broker], Awaitable[Any]]


async def outcome(step: Step, core: SimulatorCore, broker: Broker) -> Any:
    """What a step returned, or the exception class and Alpaca code it raised."""
    try:
        return await step(core, broker)
    except errors.BrokerError as exc:
        return ("raised", type(exc).__name__, exc.code)


def fills(activities: list[Any]) -> list[tuple[Any, ...]]:
    return [(a.symbol, a.side, a.qty, a.price, a.transaction_time, a.order_status) for a in activities]


async def test_the_same_orders_fill_identically_in_process_and_over_http(pair: Any) -> None:
    async def advance(minutes: float) -> Step:
        async def step(core: SimulatorCore, broker: Broker) -> None:
            core.advance(minutes)
        return step

    def submit(request: OrderRequest) -> Step:
        async def step(core: SimulatorCore, broker: Broker) -> Any:
            order = await broker.submit_order(request)
            return (order.symbol, order.side, order.type, order.status, order.order_class, len(order.legs or []))
        return step

    async def cancel_spy_limit(core: SimulatorCore, broker: Broker) -> Any:
        open_orders = await broker.list_orders(status="open", symbols=["SPY"], nested=False)
        limits = [o for o in open_orders if o.type == "limit" and o.side == "buy"]
        for order in limits:
            await broker.cancel_order(order.id)
        return len(limits)

    async def positions(core: SimulatorCore, broker: Broker) -> Any:
        return [(p.symbol, p.qty, p.avg_entry_price, p.qty_available) for p in await broker.list_positions()]

    async def account(core: SimulatorCore, broker: Broker) -> Any:
        a = await broker.get_account()
        return (a.cash, a.equity, a.buying_power)

    async def missing_position(core: SimulatorCore, broker: Broker) -> Any:
        return await broker.get_position("SPY")

    async def cancel_unknown(core: SimulatorCore, broker: Broker) -> Any:
        return await broker.cancel_order("00000000-0000-4000-8000-000000000000")

    async def cancel_aapl_orders(core: SimulatorCore, broker: Broker) -> Any:
        open_orders = await broker.list_orders(status="open", symbols=["AAPL"], nested=True)
        for order in open_orders:
            for member in [order, *(order.legs or [])]:
                if member.is_open and member.status != "held":
                    await broker.cancel_order(member.id)
        return len(open_orders)

    async def close_aapl(core: SimulatorCore, broker: Broker) -> Any:
        order = await broker.close_position("AAPL")
        return (order.symbol, order.side, order.qty, order.type)

    (local_core, local), (remote_core, remote) = pair
    price = Decimal(str(local_core.market.price_at("AAPL", local_core.clock.now())))
    spy = Decimal(str(local_core.market.price_at("SPY", local_core.clock.now())))
    steps: list[Step] = [
        submit(OrderRequest.bracket("AAPL", Decimal(20), "buy", take_profit_price=(price * Decimal("1.05")).quantize(Decimal("0.01")),
                                    stop_loss_price=(price * Decimal("0.95")).quantize(Decimal("0.01")),
                                    time_in_force="gtc", client_order_id="parity-bracket")),
        submit(OrderRequest.simple("SPY", Decimal(5), "buy", type="limit", limit_price=(spy * Decimal("0.95")).quantize(Decimal("0.01")),
                                   time_in_force="day", client_order_id="parity-limit")),
        # refused: the AAPL shares are held by the bracket's legs
        submit(OrderRequest.simple("AAPL", Decimal(20), "sell", type="market", time_in_force="day",
                                   client_order_id="parity-sell")),
        # refused: the same client_order_id again is recovered, not duplicated
        submit(OrderRequest.simple("SPY", Decimal(5), "buy", type="limit", limit_price=(spy * Decimal("0.95")).quantize(Decimal("0.01")),
                                   time_in_force="day", client_order_id="parity-limit")),
        missing_position,
        cancel_unknown,
        await advance(90),
        positions,
        cancel_spy_limit,
        submit(OrderRequest.simple("SPY", Decimal(3), "buy", type="market", time_in_force="day",
                                   client_order_id="parity-market")),
        await advance(60 * 24),
        positions,
        account,
        close_aapl,  # refused: the bracket's legs hold the shares
        cancel_aapl_orders,
        close_aapl,
        await advance(30),
        positions,
        account,
    ]
    seen_local = [await outcome(step, local_core, local) for step in steps]
    seen_remote = [await outcome(step, remote_core, remote) for step in steps]
    assert seen_local == seen_remote
    assert ("raised", "InsufficientQuantity", 40310000) in seen_local
    assert ("raised", "NotFound", 40410000) in seen_local
    assert None in seen_local  # no SPY position: None, not an error

    local_fills = fills(await local.get_activities())
    remote_fills = fills(await remote.get_activities())
    assert local_fills == remote_fills
    assert len(local_fills) == 3  # bracket entry, SPY market buy, AAPL close


async def test_refusals_map_to_the_gateways_exceptions() -> None:
    core = make_core()
    broker = InProcessBroker(core)
    price = Decimal(str(core.market.price_at("AAPL", core.clock.now())))
    with pytest.raises(errors.InsufficientBuyingPower) as refused:
        await broker.submit_order(OrderRequest.simple("AAPL", Decimal(100000), "buy", type="market",
                                                      time_in_force="day", client_order_id="too-big"))
    assert refused.value.status == 403
    with pytest.raises(errors.OrderRejected):
        await broker.submit_order(OrderRequest.simple("ZZZZ", Decimal(1), "buy", type="market",
                                                      time_in_force="day", client_order_id="unknown-asset"))
    await broker.submit_order(OrderRequest.simple("AAPL", Decimal(1), "buy", type="limit",
                                                  limit_price=(price * Decimal("0.9")).quantize(Decimal("0.01")),
                                                  time_in_force="day", client_order_id="resting"))
    with pytest.raises(errors.WashTradeRejected):
        await broker.submit_order(OrderRequest.simple("AAPL", Decimal(1), "sell", type="market",
                                                      time_in_force="day", client_order_id="wash"))
    assert broker.request_count >= 4
    assert isinstance(broker, Broker)


async def test_commission_is_charged_per_execution_in_cash() -> None:
    core = make_core()
    model = CommissionModel(per_share=Decimal("0.005"), minimum=Decimal("1.00"))
    ledger = attach_commission(core, model)
    broker = InProcessBroker(core)
    before = (await broker.get_account()).cash
    await broker.submit_order(OrderRequest.simple("AAPL", Decimal(10), "buy", type="market",
                                                  time_in_force="day", client_order_id="fee-1"))
    (fill,) = await broker.get_activities()
    after = (await broker.get_account()).cash
    # 10 shares x $0.005 = $0.05, below the $1.00 minimum
    assert before - after == fill.qty * fill.price + Decimal("1.00")
    assert [c.fee for c in ledger.charges] == [Decimal("1.00")]
    assert ledger.total == Decimal("1.00")


def test_commission_model_arithmetic() -> None:
    free = CommissionModel()
    assert free.is_free and free.fee(Decimal(500), Decimal(100)) == 0
    ib_like = CommissionModel(per_share=Decimal("0.005"), minimum=Decimal("1"), max_fraction=Decimal("0.01"))
    assert ib_like.fee(Decimal(1000), Decimal(50)) == Decimal("5.00")   # per share
    assert ib_like.fee(Decimal(10), Decimal(50)) == Decimal("1.00")     # minimum
    assert ib_like.fee(Decimal(100), Decimal("0.50")) == Decimal("0.50")  # capped at 1% of $50
    with pytest.raises(ValueError, match="per_share"):
        CommissionModel(per_share=Decimal(-1))
    with pytest.raises(ValueError, match="max_fraction"):
        CommissionModel(max_fraction=Decimal(2))
