"""Every cancel path of the executor meets Alpaca's race: the order filled (or expired, or is
gone) between the daemon's read and its cancel. The broker's answer is an outcome, not a
failure: the executor reads the order's true state, journals it, re-reads the position and
goes on from there: a fill is recorded, nothing is placed for a position that closed.

The broker here is a scripted fake that raises exactly what the gateway raises for Alpaca's
real answer (422 42210000 'order is already in "filled" state', 404 40410000).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from structlog.testing import capture_logs

from core import errors
from broker.models import MultiStatusItem, Order, OrderRequest, Position
from order_executor import OrderExecutor, protected_quantity

D = Decimal
NOW = datetime(2025, 3, 3, 15, 0, tzinfo=timezone.utc)


class StepClock:
    def __init__(self) -> None:
        self.at = NOW
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return self.at

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.at += timedelta(seconds=seconds)


def order(oid: str, *, type_: str, side: str = "sell", qty: str = "10", status: str = "new",
          filled: str = "0", price: str | None = None, symbol: str = "SPY") -> Order:
    return Order.model_validate({
        "id": oid, "client_order_id": f"cid-{oid}", "status": status, "symbol": symbol, "side": side,
        "type": type_, "time_in_force": "gtc", "created_at": "2025-03-03T14:00:00Z", "qty": qty,
        "filled_qty": filled, "filled_avg_price": price, "order_class": "simple",
        "limit_price": "530" if type_ == "limit" else None, "stop_price": "480" if type_ == "stop" else None,
    })


def position(qty: str, symbol: str = "SPY") -> Position:
    return Position.model_validate({
        "symbol": symbol, "qty": qty, "side": "long", "avg_entry_price": "500", "current_price": "505",
        "market_value": str(D(qty) * 505), "unrealized_pl": str(D(qty) * 5),
    })


@dataclass
class RaceBroker:
    """Positions and open orders; ``races``: order id -> the state it reaches as it is canceled
    (with the shares it fills), so that the cancel answers Alpaca's 422 (or 404 for "gone")."""

    positions: dict[str, Position] = field(default_factory=dict)
    orders: dict[str, Order] = field(default_factory=dict)
    races: dict[str, tuple[str, Decimal]] = field(default_factory=dict)
    attach_order: bool = True  # the gateway attaches the re-read order; a fake may not
    submitted: list[OrderRequest] = field(default_factory=list)
    canceled: list[str] = field(default_factory=list)
    fail_symbols: dict[str, errors.BrokerError] = field(default_factory=dict)

    def _race(self, oid: str) -> None:
        state, shares = self.races.pop(oid)
        current = self.orders.pop(oid)
        if state == "gone":
            raise errors.NotFound(f"DELETE /v2/orders/{oid}: order not found", status=404, code=40410000)
        filled = current.model_copy(update={"status": state, "filled_qty": shares,
                                            "filled_avg_price": D("530") if shares else None})
        self.orders_done[oid] = filled
        held = self.positions.get(current.symbol)
        if shares and held is not None:
            left = held.qty - shares
            if left == 0:
                del self.positions[current.symbol]
            else:
                self.positions[current.symbol] = held.model_copy(update={"qty": left})
        exc = errors.OrderNotCancelable(f'DELETE /v2/orders/{oid}: order is already in "{state}" state',
                                        status=422, code=42210000)
        if self.attach_order:
            exc.order = filled
        raise exc

    def __post_init__(self) -> None:
        self.orders_done: dict[str, Order] = {}

    async def cancel_order(self, order_id: str) -> None:
        if order_id in self.races:
            self._race(order_id)
        if order_id not in self.orders:
            raise errors.NotFound("order not found", status=404, code=40410000)
        self.canceled.append(order_id)
        del self.orders[order_id]

    async def get_order(self, order_id: str, nested: bool = True) -> Order:
        found = self.orders.get(order_id) or self.orders_done.get(order_id)
        if found is None:
            raise errors.NotFound("order not found", status=404, code=40410000)
        return found

    async def get_position(self, symbol: str) -> Position | None:
        if symbol in self.fail_symbols:
            raise self.fail_symbols[symbol]
        return self.positions.get(symbol)

    async def list_positions(self) -> list[Position]:
        return list(self.positions.values())

    async def list_orders(self, status: str = "open", symbols: list[str] | None = None, **_: Any) -> list[Order]:
        return [o for o in self.orders.values() if symbols is None or o.symbol in symbols]

    async def cancel_all_orders(self) -> list[MultiStatusItem]:
        items = []
        for oid in list(self.orders):
            try:
                await self.cancel_order(oid)
                items.append(MultiStatusItem.model_validate({"id": oid, "status": 200}))
            except errors.OrderOutcome as exc:
                items.append(MultiStatusItem.model_validate(
                    {"id": oid, "status": exc.status, "body": {"code": exc.code, "message": exc.message}}))
        return items

    async def get_order_by_client_id(self, cid: str) -> Order | None:
        return None

    async def submit_order(self, request: OrderRequest) -> Order:
        self.submitted.append(request)
        oid = str(uuid.uuid4())
        if request.order_class == "oco":
            placed = order(oid, type_="limit", qty=str(request.qty))
            stop = order(str(uuid.uuid4()), type_="stop", qty=str(request.qty))
            placed = placed.model_copy(update={"client_order_id": request.client_order_id,
                                               "order_class": "oco", "legs": [stop]})
            self.orders[oid] = placed
            return placed
        if request.type == "market":  # an exit: fills at once
            held = self.positions.pop(request.symbol)
            return order(oid, type_="market", qty=str(abs(held.qty)), status="filled",
                         filled=str(abs(held.qty)), price="505").model_copy(
                update={"client_order_id": request.client_order_id})
        placed = order(oid, type_=request.type, qty=str(request.qty)).model_copy(
            update={"client_order_id": request.client_order_id})
        self.orders[oid] = placed
        return placed


@dataclass
class FakeJournal:
    """Knows the legs by broker id, as the real journal does once it journaled them."""

    known: dict[str, str] = field(default_factory=dict)  # broker id -> client order id
    updates: list[dict[str, Any]] = field(default_factory=list)
    submissions: list[str] = field(default_factory=list)

    def record_order_submission(self, client_order_id: str, *args: Any, **kw: Any) -> None:
        self.submissions.append(client_order_id)

    def update_order(self, client_order_id: str, **kw: Any) -> None:
        self.updates.append({"client_order_id": client_order_id, **kw})

    def order_by_broker_id(self, broker_order_id: str) -> dict[str, Any] | None:
        cid = self.known.get(broker_order_id)
        return {"client_order_id": cid} if cid else None


def executor(broker: RaceBroker, journal: FakeJournal | None = None) -> tuple[OrderExecutor, StepClock]:
    clock = StepClock()
    return OrderExecutor(broker, clock, journal=journal, emergency_max_attempts=3, emergency_backoff=1.0), clock


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


# -- protection --------------------------------------------------------------------------------


async def test_a_lone_take_profit_filling_in_the_cancel_race_gets_no_stop_for_the_closed_position() -> None:
    take_profit = order("tp-1", type_="limit")
    broker = RaceBroker(positions={"SPY": position("10")}, orders={"tp-1": take_profit},
                        races={"tp-1": ("filled", D(10))})
    journal = FakeJournal(known={"tp-1": "cid-tp-1"})
    ex, _ = executor(broker, journal)
    snapshot_positions, snapshot_orders = [position("10")], [take_profit]
    with capture_logs() as logs:
        await ex.protect_positions(snapshot_positions, snapshot_orders)
    assert broker.submitted == []  # no sell stop for a position that no longer exists
    assert broker.positions == {}
    gone = events(logs, "position_gone")
    assert len(gone) == 1 and gone[0]["symbol"] == "SPY"
    outcome = events(logs, "cancel_outcome")
    assert outcome and outcome[0]["order_status"] == "filled" and outcome[0]["code"] == 42210000
    fill = [u for u in journal.updates if u["client_order_id"] == "cid-tp-1"]
    assert fill and fill[-1]["status"] == "filled" and fill[-1]["filled_qty"] == D(10)
    assert events(logs, "order_filled")[0]["via"] == "cancel_outcome"
    assert not events(logs, "position_protected")


async def test_a_take_profit_partly_filled_in_the_race_leaves_protection_for_the_rest_only() -> None:
    take_profit = order("tp-1", type_="limit")
    broker = RaceBroker(positions={"SPY": position("10")}, orders={"tp-1": take_profit},
                        races={"tp-1": ("canceled", D(4))}, attach_order=False)
    ex, _ = executor(broker, FakeJournal(known={"tp-1": "cid-tp-1"}))
    with capture_logs() as logs:
        await ex.protect_positions([position("10")], [take_profit])
    assert len(broker.submitted) == 1
    placed = broker.submitted[0]
    assert placed.order_class == "oco" and placed.side == "sell" and placed.qty == D(6)
    assert events(logs, "position_changed")[0]["qty"] == "6"
    assert protected_quantity(broker.positions["SPY"], list(broker.orders.values())) == D(6)


async def test_an_exit_order_already_gone_counts_as_done_and_the_position_is_protected() -> None:
    take_profit = order("tp-1", type_="limit")
    broker = RaceBroker(positions={"SPY": position("10")}, orders={"tp-1": take_profit},
                        races={"tp-1": ("gone", D(0))})
    ex, _ = executor(broker)
    with capture_logs() as logs:
        await ex.protect_positions([position("10")], [take_profit])
    assert [r.qty for r in broker.submitted] == [D(10)]
    assert events(logs, "cancel_outcome")[0]["outcome"] == "NotFound"
    assert protected_quantity(broker.positions["SPY"], list(broker.orders.values())) == D(10)


async def test_an_odd_answer_for_one_symbol_does_not_leave_the_others_unprotected() -> None:
    tp_spy, tp_aapl = order("tp-spy", type_="limit"), order("tp-aapl", type_="limit", symbol="AAPL")
    broker = RaceBroker(positions={"SPY": position("10"), "AAPL": position("10", "AAPL")},
                        orders={"tp-spy": tp_spy, "tp-aapl": tp_aapl},
                        fail_symbols={"SPY": errors.UnclassifiedBrokerError(
                            "GET /v2/positions/SPY: something new", status=422, code=99999999)})
    ex, _ = executor(broker)
    with capture_logs() as logs:
        await ex.protect_positions(list(broker.positions.values()), [tp_spy, tp_aapl])
    failed = events(logs, "position_protection_failed")
    assert failed and failed[0]["symbol"] == "SPY" and failed[0]["code"] == 99999999
    assert [r.symbol for r in broker.submitted] == ["AAPL"]


# -- emergency exit, liquidation, halt -----------------------------------------------------------


async def test_the_emergency_exit_finds_the_stop_filled_in_the_race_and_sends_nothing() -> None:
    stop = order("stop-1", type_="stop")
    broker = RaceBroker(positions={"SPY": position("10")}, orders={"stop-1": stop},
                        races={"stop-1": ("filled", D(10))})
    journal = FakeJournal(known={"stop-1": "cid-stop-1"})
    ex, _ = executor(broker, journal)
    with capture_logs() as logs:
        report = await ex.emergency_exit("SPY", "emergency threshold")
    assert report.succeeded and report.exit_orders == [] and broker.submitted == []
    assert report.canceled_orders == []  # it was not canceled: it filled
    assert journal.updates[-1]["status"] == "filled"
    assert events(logs, "position_flat")


async def test_the_emergency_exit_sells_only_what_is_left_after_a_partial_race() -> None:
    stop, take_profit = order("stop-1", type_="stop"), order("tp-1", type_="limit")
    broker = RaceBroker(positions={"SPY": position("10")}, orders={"stop-1": stop, "tp-1": take_profit},
                        races={"tp-1": ("canceled", D(3))})
    ex, _ = executor(broker)
    report = await ex.emergency_exit("SPY", "halt")
    assert report.succeeded
    assert [(r.side, r.type, r.qty) for r in broker.submitted] == [("sell", "market", D(7))]


async def test_liquidation_and_halt_survive_legs_filling_while_everything_is_canceled() -> None:
    broker = RaceBroker(
        positions={"SPY": position("10"), "AAPL": position("5", "AAPL")},
        orders={"stop-spy": order("stop-spy", type_="stop"),
                "tp-aapl": order("tp-aapl", type_="limit", qty="5", symbol="AAPL")},
        races={"stop-spy": ("filled", D(10)), "tp-aapl": ("expired", D(0))})
    ex, _ = executor(broker, FakeJournal(known={"stop-spy": "cid-stop-spy"}))
    with capture_logs() as logs:
        reports = await ex.liquidate_all("operator halt: test")
    assert {r.symbol: r.succeeded for r in reports} == {"AAPL": True}  # SPY was already flat
    assert [(r.symbol, r.qty) for r in broker.submitted] == [("AAPL", D(5))]
    assert broker.positions == {}
    assert events(logs, "emergency_liquidation_complete")[0]["all_flat"] is True


async def test_a_canceled_entry_remainder_that_filled_in_the_race_is_protected_for_its_full_fill() -> None:
    entry = Order.model_validate({
        "id": "entry-1", "client_order_id": "cid-entry-1", "status": "partially_filled", "symbol": "SPY",
        "side": "buy", "type": "limit", "time_in_force": "gtc", "created_at": "2025-03-03T13:00:00Z",
        "submitted_at": "2025-03-03T13:00:00Z", "qty": "10", "filled_qty": "4", "limit_price": "500",
        "order_class": "bracket",
        "legs": [order("leg-tp", type_="limit", status="held", qty="10").model_dump(),
                 order("leg-stop", type_="stop", status="held", qty="10").model_dump()],
    })
    broker = RaceBroker(positions={"SPY": position("4")}, orders={"entry-1": entry},
                        races={"entry-1": ("filled", D(0))})
    broker.positions["SPY"] = position("10")  # the rest filled as it was canceled
    ex, _ = executor(broker)
    with capture_logs() as logs:
        await ex.protect_positions([position("4")], [entry])
    assert events(logs, "cancel_outcome")[0]["order_status"] == "filled"
    assert [(r.order_class, r.qty) for r in broker.submitted] == [("oco", D(10))]


# -- through the real gateway: Alpaca's bytes on loopback ----------------------------------------


async def test_through_the_gateway_a_take_profit_filled_in_the_race_leaves_nothing_to_protect() -> None:
    """DELETE answers Alpaca's real 422 (the leg filled a moment before), the position is gone:
    the gateway re-reads the order, the executor journals the fill and sends nothing."""
    from aiohttp import web

    from api_gateway import ResilientAlpacaGateway

    tp_id = str(uuid.uuid4())
    state = {"tp": "new", "qty": 10}
    posted: list[Any] = []

    def tp_json() -> dict[str, Any]:
        filled = state["tp"] == "filled"
        return {"id": tp_id, "client_order_id": "tp-leg", "status": state["tp"], "symbol": "SPY",
                "side": "sell", "type": "limit", "time_in_force": "gtc",
                "created_at": "2025-03-03T14:00:00.123456789Z", "qty": "10",
                "filled_qty": "10" if filled else "0", "filled_avg_price": "530" if filled else None,
                "limit_price": "530", "order_class": "simple"}

    async def list_orders(request: web.Request) -> web.Response:
        return web.json_response([tp_json()] if state["tp"] == "new" else [])

    async def get_order(request: web.Request) -> web.Response:
        return web.json_response(tp_json())

    async def cancel(request: web.Request) -> web.Response:
        state["tp"], state["qty"] = "filled", 0  # the race: it filled just before the cancel
        return web.json_response({"code": 42210000, "message": 'order is already in "filled" state'}, status=422)

    async def get_position(request: web.Request) -> web.Response:
        if not state["qty"]:
            return web.json_response({"code": 40410000, "message": "position does not exist"}, status=404)
        return web.json_response(position("10").model_dump(mode="json"))

    async def submit(request: web.Request) -> web.Response:
        posted.append(await request.json())
        return web.json_response({"code": 40310000, "message": "should not be sent"}, status=403)

    app = web.Application()
    app.router.add_get("/v2/orders", list_orders)
    app.router.add_get("/v2/orders/{oid}", get_order)
    app.router.add_delete("/v2/orders/{oid}", cancel)
    app.router.add_get("/v2/positions/{symbol}", get_position)
    app.router.add_post("/v2/orders", submit)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    clock = StepClock()

    async def no_wait(_seconds: float) -> None:
        return None

    gw = ResilientAlpacaGateway(base_url=f"http://127.0.0.1:{port}", data_url=f"http://127.0.0.1:{port}",
                                key_id=None, secret_key=None, mode="paper", clock=clock, sleep=no_wait,
                                max_retries=0)
    journal = FakeJournal(known={tp_id: "tp-leg"})
    try:
        async with gw:
            ex = OrderExecutor(gw, clock, journal=journal)
            snapshot_orders = await gw.list_orders(status="open")
            with capture_logs() as logs:
                await ex.protect_positions([position("10")], snapshot_orders)
    finally:
        await runner.cleanup()
    assert posted == []  # no sell stop for the position that closed
    assert events(logs, "position_gone") and events(logs, "cancel_outcome")[0]["order_status"] == "filled"
    assert journal.updates[-1]["status"] == "filled" and journal.updates[-1]["filled_qty"] == D(10)
