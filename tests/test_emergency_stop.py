"""The emergency stop as a state machine made to fire: cancel every order on the symbol,
wait for the broker to confirm, exit (market in regular hours, marketable limit in extended
hours), retry with exponential backoff, verify flat, and never report a success that did not
happen. Against the simulator over HTTP, and against a scripted Alpaca on loopback where a
precise broker answer is needed (403 40310000, 204/404/422 on cancel)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from ai_analyzer import TradeIntent
from api_gateway import ResilientAlpacaGateway
from broker.rate_limit import RateLimiter
from market_status_manager import MarketStatusManager
from broker.models import Order, OrderRequest
from order_executor import EmergencyStep, EmergencyStopReport, OrderExecutor, round_price
from simulator.core import SimulatorCore
from simulator.server import RunningServer, start_server

D = Decimal
UTC = timezone.utc


def unlimited_rate() -> RateLimiter:
    """The client's own rate limit works on wall time; at simulated max speed it only slows tests."""
    return RateLimiter(max_per_minute=1_000_000)


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


def intent(symbol: str, entry: Decimal, now: datetime) -> TradeIntent:
    return TradeIntent(
        intent_id=f"breakout-{symbol}-{now:%Y%m%d%H%M}-1", symbol=symbol, side="buy", confidence=0.8,
        confidence_breakdown={}, reasoning="test", strategy="breakout", entry_price=float(entry),
        stop_price=float(entry) * 0.97, target_price=float(entry) * 1.06,
        created_at=now, decays_at=now + timedelta(hours=4),
    )


class StepClock:
    """A clock that moves only when slept on, recording each sleep (the backoff)."""

    def __init__(self) -> None:
        self._now = datetime(2025, 3, 3, 15, 0, tzinfo=UTC)
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self._now += timedelta(seconds=seconds)


class RecordingBroker:
    """The gateway, with a record of the calls the executor makes (to check their order)."""

    def __init__(self, gw: ResilientAlpacaGateway) -> None:
        self.gw = gw
        self.calls: list[tuple[str, Any]] = []

    async def list_orders(self, *args: Any, **kw: Any) -> list[Order]:
        orders = await self.gw.list_orders(*args, **kw)
        self.calls.append(("list_orders", len([o for o in orders if o.is_open])))
        return orders

    async def cancel_order(self, order_id: str) -> None:
        self.calls.append(("cancel_order", order_id))
        await self.gw.cancel_order(order_id)

    async def submit_order(self, request: OrderRequest) -> Order:
        self.calls.append(("submit_order", request))
        return await self.gw.submit_order(request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.gw, name)


# -- against the simulator -------------------------------------------------------------------


@dataclass
class Sim:
    core: SimulatorCore
    server: RunningServer
    gw: ResilientAlpacaGateway

    def price(self, symbol: str) -> Decimal:
        return D(str(self.core.market.price_at(symbol, self.core.clock.now())))

    async def bracket(self, executor: OrderExecutor, symbol: str, qty: int) -> Order:
        result = await executor.submit_bracket(intent(symbol, self.price(symbol), self.core.clock.now()), D(qty))
        assert result.status == "submitted" and result.order is not None, result.reason
        return result.order


@pytest.fixture
async def make_sim() -> AsyncIterator[Callable[..., Awaitable[Sim]]]:
    started: list[Sim] = []

    async def factory(start: str = "2025-03-03T10:00:00-05:00") -> Sim:
        core = SimulatorCore.create(symbols=["SPY", "AAPL", "MSFT", "NVDA"], seed=9, start=start,
                                    speed=None, cash=1_000_000)
        server = await start_server(core, host="127.0.0.1", port=0, rate_limit_per_minute=None)
        gw = ResilientAlpacaGateway(base_url=server.base_url, data_url=server.base_url, key_id=None,
                                    secret_key=None, mode="paper", clock=core.clock, sleep=core.clock.sleep,
                                    rate_limiter=unlimited_rate())
        await gw.__aenter__()
        started.append(Sim(core, server, gw))
        return started[-1]

    yield factory
    for sim in started:
        await sim.gw.close()
        await sim.server.stop()


async def test_exit_cancels_the_bracket_waits_for_the_broker_then_sells_at_market(make_sim: Any) -> None:
    sim = await make_sim()
    executor = OrderExecutor(sim.gw, sim.core.clock)
    entry = await sim.bracket(executor, "SPY", 10)
    position = await sim.gw.get_position("SPY")
    assert position is not None and position.qty == 10 and position.qty_available == 0  # the stop holds it
    legs = {leg.id for leg in entry.legs or []}

    broker = RecordingBroker(sim.gw)
    with capture_logs() as logs:
        report = await OrderExecutor(broker, sim.core.clock).emergency_exit("SPY", "emergency threshold")

    assert report.succeeded and report.step is EmergencyStep.FLAT and report.attempts == 1
    assert set(report.canceled_orders) == legs
    assert await sim.gw.get_position("SPY") is None
    # order of events: every cancel, then a listing showing nothing open, then the exit
    names = [name for name, _ in broker.calls]
    submit_at = names.index("submit_order")
    assert names.count("submit_order") == 1
    assert max(i for i, n in enumerate(names) if n == "cancel_order") < submit_at
    assert broker.calls[submit_at - 1] == ("list_orders", 0)
    request = broker.calls[submit_at][1]
    assert (request.type, request.time_in_force, request.qty, request.side) == ("market", "day", 10, "sell")
    assert not request.extended_hours
    exit_order = await sim.gw.get_order(report.exit_orders[0])
    assert exit_order.status == "filled"
    for leg in legs:
        assert (await sim.gw.get_order(leg)).status == "canceled"
    flat = events(logs, "position_flat")
    assert len(flat) == 1 and flat[0]["exit_orders"] == report.exit_orders
    assert not events(logs, "emergency_stop_failed")

    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["succeeded"] is True and as_json["step"] == "flat" and as_json["position_qty"] == "10"
    assert datetime.fromisoformat(as_json["started_at"]).tzinfo is not None
    assert datetime.fromisoformat(as_json["finished_at"]) >= datetime.fromisoformat(as_json["started_at"])


async def test_in_pre_market_the_exit_is_a_marketable_extended_hours_limit(make_sim: Any) -> None:
    sim = await make_sim("2025-02-28T15:00:00-05:00")  # a Friday afternoon
    executor = OrderExecutor(sim.gw, sim.core.clock)
    await sim.bracket(executor, "AAPL", 6)
    sim.core.advance(65 * 60)  # Monday 2025-03-03 08:00 New York
    status = MarketStatusManager(sim.core.clock).status_at(sim.core.clock.now())
    assert status.phase == "pre"
    broker = RecordingBroker(sim.gw)
    price = sim.price("AAPL")

    report = await OrderExecutor(broker, sim.core.clock).emergency_exit("AAPL", "gap", phase=status.phase)

    assert report.succeeded, report.failures
    request = next(args for name, args in broker.calls if name == "submit_order")
    assert request.type == "limit" and request.extended_hours is True and request.time_in_force == "day"
    assert request.limit_price < price and request.limit_price == round_price(request.limit_price)
    exit_order = await sim.gw.get_order(report.exit_orders[0])
    assert exit_order.status == "filled" and exit_order.extended_hours
    assert await sim.gw.get_position("AAPL") is None


async def test_while_closed_no_exit_is_attempted_and_the_protection_stays(make_sim: Any) -> None:
    sim = await make_sim("2025-02-28T15:00:00-05:00")
    executor = OrderExecutor(sim.gw, sim.core.clock)
    entry = await sim.bracket(executor, "MSFT", 4)
    sim.core.advance(6 * 60)  # Friday 21:00: closed until Monday's pre-market
    before = await sim.gw.list_orders(status="all", nested=False)
    with capture_logs() as logs:
        report = await executor.emergency_exit("MSFT", "halt", phase="closed")
    assert not report.succeeded and report.step is EmergencyStep.FAILED
    assert "market closed" in report.failures[0] and report.exit_orders == []
    assert await sim.gw.list_orders(status="all", nested=False) == before  # the stop still protects it
    assert {leg.id for leg in entry.legs or []} <= {o.id for o in await sim.gw.list_orders(nested=False)}
    assert events(logs, "emergency_stop_failed") and not events(logs, "position_flat")


async def test_liquidate_all_flattens_every_position_and_cancels_every_order(make_sim: Any) -> None:
    sim = await make_sim()
    executor = OrderExecutor(sim.gw, sim.core.clock)
    for symbol, qty in (("SPY", 3), ("AAPL", 7), ("MSFT", 5)):
        await sim.bracket(executor, symbol, qty)
    resting = await executor.submit_bracket(intent("NVDA", sim.price("NVDA"), sim.core.clock.now()), D(2),
                                            limit_price=round_price(sim.price("NVDA") * D("0.9")))
    assert resting.order is not None and resting.order.status == "new"
    assert len(await sim.gw.list_positions()) == 3

    with capture_logs() as logs:
        reports = await executor.liquidate_all("circuit breaker")

    assert sorted(r.symbol for r in reports) == ["AAPL", "MSFT", "SPY"]
    assert all(r.succeeded for r in reports)
    assert await sim.gw.list_positions() == []
    assert await sim.gw.list_orders(status="open") == []
    assert events(logs, "emergency_liquidation")[0]["reason"] == "circuit breaker"
    done = events(logs, "emergency_liquidation_complete")
    assert done[0]["all_flat"] is True and done[0]["failed"] == []
    assert len(events(logs, "position_flat")) == 3


# -- against a scripted Alpaca on loopback ----------------------------------------------------


def wire_error(status: int, code: int, message: str, **extra: Any) -> tuple[int, dict[str, Any]]:
    return status, {"code": code, "message": message, **extra}


INSUFFICIENT_QTY = wire_error(
    403, 40310000, "insufficient qty available for order (requested: 10, available: 0)",
    available="0", existing_qty="10", held_for_orders="10", symbol="SPY")


@dataclass
class ScriptedAlpaca:
    """Just enough of the Trading API to script an emergency exit, answer by answer.

    ``post_answers``: what each POST /v2/orders answers (an error, or ``None`` to fill the
    exit); ``cancel_answers``: the status each DELETE gets per order id (204 removes the
    order unless it is ``sticky``); orders answer 422 cancels with ``filled``.
    """

    position_qty: int = 10
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    post_answers: list[tuple[int, dict[str, Any]] | None] = field(default_factory=list)
    cancel_answers: dict[str, int] = field(default_factory=dict)
    sticky: set[str] = field(default_factory=set)
    unlisted_hold: int = 0  # shares held by something the order listing does not show
    requests: list[str] = field(default_factory=list)
    posted: list[dict[str, Any]] = field(default_factory=list)

    def add_order(self, oid: str, type_: str = "stop") -> None:
        self.orders[oid] = {
            "id": oid, "client_order_id": f"cid-{oid}", "status": "new", "symbol": "SPY", "side": "sell",
            "type": type_, "time_in_force": "gtc", "created_at": "2025-03-03T14:00:00Z",
            "qty": str(self.position_qty), "filled_qty": "0", "order_class": "simple",
            "stop_price": "480" if type_ == "stop" else None,
            "limit_price": "530" if type_ == "limit" else None,
        }

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v2/positions/{symbol}", self.position)
        app.router.add_get("/v2/orders", self.list_orders)
        app.router.add_get("/v2/orders:by_client_order_id", self.by_client_id)
        app.router.add_post("/v2/orders", self.submit)
        app.router.add_get("/v2/orders/{oid}", self.get_order)
        app.router.add_delete("/v2/orders/{oid}", self.cancel)
        return app

    async def position(self, request: web.Request) -> web.Response:
        self.requests.append("GET position")
        if self.position_qty == 0:
            return web.json_response({"code": 40410000, "message": "position does not exist"}, status=404)
        held = self.unlisted_hold + sum(int(o["qty"]) for o in self.orders.values() if o["status"] == "new")
        return web.json_response({
            "symbol": "SPY", "qty": str(self.position_qty), "side": "long", "avg_entry_price": "500",
            "qty_available": str(max(self.position_qty - held, 0)), "current_price": "490",
            "market_value": str(490 * self.position_qty), "unrealized_pl": str(-10 * self.position_qty),
        })

    async def list_orders(self, request: web.Request) -> web.Response:
        self.requests.append("GET orders")
        return web.json_response([o for o in self.orders.values() if o["status"] == "new"])

    async def by_client_id(self, request: web.Request) -> web.Response:
        return web.json_response({"code": 40410000, "message": "order not found"}, status=404)

    async def get_order(self, request: web.Request) -> web.Response:
        order = self.orders.get(request.match_info["oid"])
        if order is None:
            return web.json_response({"code": 40410000, "message": "order not found"}, status=404)
        return web.json_response(order)

    async def cancel(self, request: web.Request) -> web.Response:
        oid = request.match_info["oid"]
        self.requests.append(f"DELETE {oid}")
        status = self.cancel_answers.get(oid, 204 if oid in self.orders else 404)
        if status == 204:
            if oid not in self.sticky:
                self.orders[oid]["status"] = "canceled"
            return web.Response(status=204)
        if status == 422:
            self.orders[oid]["status"] = "filled"
            return web.json_response({"code": 42210000, "message": "order is not cancelable"}, status=422)
        if oid in self.orders:  # it went away between the listing and the cancel
            self.orders[oid]["status"] = "canceled"
        return web.json_response({"code": 40410000, "message": "order not found"}, status=404)

    async def submit(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append("POST order")
        self.posted.append(body)
        answer = self.post_answers.pop(0) if self.post_answers else None
        if answer is not None:
            return web.json_response(answer[1], status=answer[0])
        self.position_qty -= int(body["qty"])
        return web.json_response({
            "id": str(uuid.uuid4()), "client_order_id": body["client_order_id"], "status": "filled",
            "symbol": body["symbol"], "side": body["side"], "type": body["type"],
            "time_in_force": body["time_in_force"], "created_at": "2025-03-03T15:00:00Z",
            "qty": body["qty"], "filled_qty": body["qty"], "filled_avg_price": "489.9",
            "order_class": "simple",
        })


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[ScriptedAlpaca], Awaitable[tuple[OrderExecutor, StepClock]]]]:
    runners: list[web.AppRunner] = []
    gateways: list[ResilientAlpacaGateway] = []

    async def factory(alpaca: ScriptedAlpaca) -> tuple[OrderExecutor, StepClock]:
        runner = web.AppRunner(alpaca.app())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        clock = StepClock()

        async def no_wait(_seconds: float) -> None:  # the gateway's own retries: not under test
            return None

        gw = ResilientAlpacaGateway(base_url=f"http://127.0.0.1:{port}", data_url=f"http://127.0.0.1:{port}",
                                    key_id=None, secret_key=None, mode="paper", clock=clock, sleep=no_wait,
                                    max_retries=0, rate_limiter=unlimited_rate())
        await gw.__aenter__()
        gateways.append(gw)
        return OrderExecutor(gw, clock, emergency_max_attempts=5, emergency_backoff=1.0,
                             emergency_backoff_max=16.0), clock

    yield factory
    for gw in gateways:
        await gw.close()
    for runner in runners:
        await runner.cleanup()


async def test_insufficient_qty_is_retried_with_growing_backoff_until_the_exit_goes_through(
    scripted: Any,
) -> None:
    alpaca = ScriptedAlpaca(post_answers=[INSUFFICIENT_QTY, INSUFFICIENT_QTY])
    alpaca.add_order("stop-1")
    executor, clock = await scripted(alpaca)
    with capture_logs() as logs:
        report = await executor.emergency_exit("SPY", "emergency threshold")
    assert report.succeeded and report.attempts == 3
    assert clock.sleeps == [1.0, 2.0]  # exponential backoff on the injected clock
    assert len(report.failures) == 2
    assert all("insufficient qty available (available=0, held_for_orders=10)" in f for f in report.failures)
    assert [p["qty"] for p in alpaca.posted] == ["10", "10", "10"]
    assert len({p["client_order_id"] for p in alpaca.posted}) == 3  # a new id per attempt
    assert [r["attempt"] for r in events(logs, "emergency_exit_retry")] == [1, 2]
    assert len(events(logs, "position_flat")) == 1 and not events(logs, "emergency_stop_failed")
    assert alpaca.position_qty == 0


async def test_a_broker_that_keeps_failing_ends_failed_with_every_reason_and_no_success(
    scripted: Any,
) -> None:
    alpaca = ScriptedAlpaca(post_answers=[
        INSUFFICIENT_QTY,
        wire_error(403, 40310100, "trade denied due to pattern day trading protection"),
        wire_error(500, 50010000, "internal server error"),
        wire_error(403, 40310000, "account is not allowed to short"),
        INSUFFICIENT_QTY,
    ])
    alpaca.add_order("stop-1")
    executor, clock = await scripted(alpaca)
    with capture_logs() as logs:
        report = await executor.emergency_exit("SPY", "circuit breaker")

    assert not report.succeeded and report.step is EmergencyStep.FAILED and report.attempts == 5
    assert clock.sleeps == [1.0, 2.0, 4.0, 8.0]  # no pointless wait after the last attempt
    reasons = report.failures
    assert len(reasons) == 5
    assert "insufficient qty available" in reasons[0]
    assert "PatternDayTraderRejected" in reasons[1] and "pattern day trading" in reasons[1]
    assert "OrderInFlight" in reasons[2]
    assert "not allowed to short" in reasons[3]
    assert "insufficient qty available" in reasons[4]
    failed = events(logs, "emergency_stop_failed")
    assert len(failed) == 1 and failed[0]["failures"] == reasons and failed[0]["succeeded"] is False
    assert not events(logs, "position_flat") and not events(logs, "order_submitted")
    assert not events(logs, "position_closed")
    assert alpaca.position_qty == 10
    json.dumps(report.to_dict())


async def test_cancel_204_counts_and_orders_already_gone_do_not_break_the_exit(scripted: Any) -> None:
    alpaca = ScriptedAlpaca(cancel_answers={"stop-1": 204, "gone-404": 404, "filled-422": 422})
    for oid in ("stop-1", "gone-404", "filled-422"):
        alpaca.add_order(oid)
    executor, _ = await scripted(alpaca)
    report = await executor.emergency_exit("SPY", "halt")
    assert report.succeeded, report.failures
    assert report.canceled_orders == ["stop-1"]
    assert alpaca.requests.index("POST order") > max(
        i for i, r in enumerate(alpaca.requests) if r.startswith("DELETE"))
    assert alpaca.position_qty == 0


async def test_no_exit_is_sent_until_the_broker_confirms_the_cancels(scripted: Any) -> None:
    alpaca = ScriptedAlpaca(sticky={"stop-1"})  # answers 204 but keeps listing it as open
    alpaca.add_order("stop-1")
    executor, clock = await scripted(alpaca)
    with capture_logs() as logs:
        report = await executor.emergency_exit("SPY", "halt")
    assert not report.succeeded and "POST order" not in alpaca.requests
    assert all("not confirmed canceled" in f for f in report.failures)
    assert events(logs, "emergency_stop_failed") and not events(logs, "position_flat")
    assert clock.sleeps and max(clock.sleeps) <= 16.0


async def test_nothing_sellable_is_reported_as_such_and_nothing_is_sent(scripted: Any) -> None:
    alpaca = ScriptedAlpaca(unlisted_hold=10)
    executor, clock = await scripted(alpaca)
    report = await executor.emergency_exit("SPY", "halt")
    assert not report.succeeded and "POST order" not in alpaca.requests
    assert len(report.failures) == 5
    assert all("nothing sellable: position 10, available 0" in f for f in report.failures)
    assert clock.sleeps == [1.0, 2.0, 4.0, 8.0]


async def test_a_position_already_flat_is_reported_flat_without_orders(scripted: Any) -> None:
    alpaca = ScriptedAlpaca(position_qty=0)
    executor, _ = await scripted(alpaca)
    report = await executor.emergency_exit("SPY", "halt")
    assert report.succeeded and report.exit_orders == [] and "POST order" not in alpaca.requests


def test_the_report_serialises_with_iso_datetimes() -> None:
    started = datetime(2025, 3, 3, 15, 0, tzinfo=UTC)
    report = EmergencyStopReport(symbol="SPY", reason="x", started_at=started, position_qty=D("-3.5"),
                                 failures=["attempt 1: boom"], finished_at=started + timedelta(seconds=9))
    data = json.loads(json.dumps(report.to_dict()))
    assert data["started_at"] == "2025-03-03T15:00:00+00:00"
    assert data["finished_at"] == "2025-03-03T15:00:09+00:00"
    assert data["position_qty"] == "-3.5" and data["succeeded"] is False



# -- the report says what could not be sold (issue 16) ----------------------------------------


@dataclass
class UnreadablePositionAlpaca(ScriptedAlpaca):
    """A broker that answers every position read with a 500: the stop never learns the qty."""

    async def position(self, request: web.Request) -> web.Response:
        self.requests.append("GET position")
        return web.json_response({"code": 50010000, "message": "internal server error"}, status=500)


async def test_a_failed_stop_reports_the_shares_it_could_not_sell_never_zero(scripted: Any) -> None:
    alpaca = UnreadablePositionAlpaca()
    executor, _ = await scripted(alpaca)
    with capture_logs() as logs:
        report = await executor.emergency_exit("SPY", "circuit breaker", known_qty=D(10))
    assert not report.succeeded
    assert report.unsold_qty == D(10) and report.position_qty == D(10) and report.sold_qty == 0
    failed = events(logs, "emergency_stop_failed")[0]
    assert failed["unsold_qty"] == "10" and failed["position_qty"] == "10"


@dataclass
class PartialThenRefusingAlpaca(ScriptedAlpaca):
    """The first exit sells 4 of the 10 shares; every later one is refused (insufficient qty)."""

    async def submit(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append("POST order")
        self.posted.append(body)
        if len(self.posted) > 1:
            return web.json_response(INSUFFICIENT_QTY[1], status=INSUFFICIENT_QTY[0])
        self.position_qty -= 4
        return web.json_response({
            "id": "part-1", "client_order_id": body["client_order_id"], "status": "partially_filled",
            "symbol": "SPY", "side": "sell", "type": body["type"], "time_in_force": body["time_in_force"],
            "created_at": "2025-03-03T15:00:00Z", "qty": body["qty"], "filled_qty": "4",
            "order_class": "simple"})


async def test_a_partly_sold_stop_reports_what_was_sold_and_what_is_left(scripted: Any) -> None:
    executor, _ = await scripted(PartialThenRefusingAlpaca(position_qty=10))
    report = await executor.emergency_exit("SPY", "halt")
    assert not report.succeeded
    assert (report.position_qty, report.sold_qty, report.unsold_qty) == (D(10), D(4), D(6))
