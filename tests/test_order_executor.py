"""The order executor made to fire: bracket entries, idempotent retries, tracking to a
terminal state, partial fills and position protection, against the simulator over HTTP
(and a scripted broker where a precise broker answer is needed)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from ai_analyzer import TradeIntent
from api_gateway import ResilientAlpacaGateway
from broker.rate_limit import RateLimiter
from core.errors import OrderInFlight
from journal.journal import Journal
from broker.models import Order, OrderRequest, Position
from order_executor import (
    MAX_CLIENT_ORDER_ID,
    OrderExecutor,
    client_order_id_for,
    protected_quantity,
    round_price,
)
from simulator.core import SimulatorCore
from simulator.faults import FaultConfig
from simulator.server import RunningServer, start_server

D = Decimal


def unlimited_rate() -> RateLimiter:
    """The client's own rate limit works on wall time; at simulated max speed it only slows tests."""
    return RateLimiter(max_per_minute=1_000_000)
START = "2025-03-03T10:00:00-05:00"  # a Monday, regular hours


@dataclass
class Sim:
    core: SimulatorCore
    server: RunningServer
    gw: ResilientAlpacaGateway

    def price(self, symbol: str) -> Decimal:
        return D(str(self.core.market.price_at(symbol, self.core.clock.now())))

    async def buy(self, symbol: str, qty: int, cid: str) -> Position:
        """A position opened by hand (no protection), as a user or a crash would leave it."""
        await self.gw.submit_order(OrderRequest.simple(symbol, qty, "buy", client_order_id=cid))
        position = await self.gw.get_position(symbol)
        assert position is not None and position.qty == qty
        return position

    async def all_orders(self) -> list[Order]:
        return await self.gw.list_orders(status="all", nested=False)

    async def open_orders(self) -> list[Order]:
        return await self.gw.list_orders(status="open", nested=True)


SimFactory = Callable[..., Awaitable[Sim]]


@pytest.fixture
async def make_sim() -> AsyncIterator[SimFactory]:
    started: list[Sim] = []

    async def factory(*, gateway: dict[str, Any] | None = None, **core_kw: Any) -> Sim:
        options: dict[str, Any] = {
            "symbols": ["SPY", "AAPL", "MSFT"], "seed": 5, "start": START, "speed": None,
            "cash": 1_000_000,
        }
        options.update(core_kw)
        core = SimulatorCore.create(**options)
        server = await start_server(core, host="127.0.0.1", port=0, rate_limit_per_minute=None)
        gw = ResilientAlpacaGateway(
            base_url=server.base_url, data_url=server.base_url, key_id=None, secret_key=None,
            mode="paper", clock=core.clock, sleep=core.clock.sleep, rate_limiter=unlimited_rate(),
            **(gateway or {}),
        )
        await gw.__aenter__()
        sim = Sim(core, server, gw)
        started.append(sim)
        return sim

    yield factory
    for sim in started:
        await sim.gw.close()
        await sim.server.stop()


def intent(
    symbol: str, entry: Decimal, now: datetime, *, stop: float | None = None,
    target: float | None = None, intent_id: str | None = None,
) -> TradeIntent:
    return TradeIntent(
        intent_id=intent_id or f"enhanced_momentum-{symbol}-20250303-1",
        symbol=symbol, side="buy", confidence=0.8, confidence_breakdown={}, reasoning="test",
        strategy="enhanced_momentum", entry_price=float(entry),
        stop_price=stop, target_price=target,  # type: ignore[arg-type]  # None = not given
        created_at=now, decays_at=now + timedelta(hours=4),
    )


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


def legs_of(order: Order) -> tuple[Order, Order]:
    assert order.legs is not None and len(order.legs) == 2, order
    stop = next(leg for leg in order.legs if leg.type == "stop")
    take = next(leg for leg in order.legs if leg.type == "limit")
    return stop, take


def decimals(value: Decimal) -> int:
    return max(0, -value.normalize().as_tuple().exponent)  # type: ignore[operator]


# -- client order ids and prices -------------------------------------------------------------


def test_client_order_id_is_deterministic_short_and_distinct_per_intent_and_attempt() -> None:
    long_id = "enhanced_momentum-" + "VERYLONGSYMBOLNAME" * 4 + "-20250303-17"
    cid = client_order_id_for(long_id)
    assert len(cid) <= MAX_CLIENT_ORDER_ID
    assert client_order_id_for(long_id) == cid
    assert client_order_id_for(long_id, 1) != cid
    assert client_order_id_for(long_id[:-1] + "8") != cid  # same prefix, another intent
    assert client_order_id_for("mr-SPY-20250303-1") == "mr-SPY-20250303-1-0"


def test_prices_obey_the_sub_penny_rule() -> None:
    assert round_price(D("101.23456"), side="down") == D("101.23")
    assert round_price(D("101.23156"), side="up") == D("101.24")
    assert round_price(D("0.123456"), side="down") == D("0.1234")
    assert round_price(D("0.123411"), side="up") == D("0.1235")
    assert round_price(D("0.99999"), side="nearest") == D("1.0000")


# -- submit_bracket --------------------------------------------------------------------------


async def test_bracket_lands_with_the_strategy_levels_as_nested_legs(make_sim: SimFactory) -> None:
    sim = await make_sim()
    entry = sim.price("AAPL")
    stop, target = float(entry) * 0.9812345, float(entry) * 1.0456789
    executor = OrderExecutor(sim.gw, sim.core.clock)
    with capture_logs() as logs:
        result = await executor.submit_bracket(intent("AAPL", entry, sim.core.clock.now(), stop=stop,
                                                      target=target), D(7))
    assert result.status == "submitted", result.reason
    order = await sim.gw.get_order_by_client_id(result.client_order_id)
    assert order is not None and order.order_class == "bracket" and order.qty == 7
    assert order.client_order_id == client_order_id_for("enhanced_momentum-AAPL-20250303-1")
    nested = [o for o in await sim.gw.list_orders(status="all", nested=True) if o.id == order.id]
    stop_leg, take_leg = legs_of(nested[0])
    assert stop_leg.stop_price == round_price(D(str(stop)), side="down")
    assert take_leg.limit_price == round_price(D(str(target)), side="up")
    assert decimals(stop_leg.stop_price) <= 2 and decimals(take_leg.limit_price) <= 2
    assert stop_leg.qty == take_leg.qty == 7
    submitted = events(logs, "order_submitted")
    assert submitted[0]["stop_price"] == str(stop_leg.stop_price)


@pytest.mark.parametrize(("stop_factor", "target_factor"), [(None, None), (1.02, 1.05), (0.97, 0.99)])
async def test_bracket_uses_3_and_6_percent_when_the_strategy_levels_are_missing_or_insane(
    make_sim: SimFactory, stop_factor: float | None, target_factor: float | None
) -> None:
    sim = await make_sim()
    entry = sim.price("MSFT")
    given = intent("MSFT", entry, sim.core.clock.now(),
                   stop=float(entry) * stop_factor if stop_factor else None,
                   target=float(entry) * target_factor if target_factor else None)
    result = await OrderExecutor(sim.gw, sim.core.clock).submit_bracket(given, D(3))
    assert result.status == "submitted", result.reason
    order = await sim.gw.get_order_by_client_id(result.client_order_id)
    assert order is not None
    stop_leg, take_leg = legs_of(order)
    assert stop_leg.stop_price == round_price(entry * D("0.97"), side="down")
    assert take_leg.limit_price == round_price(entry * D("1.06"), side="up")


async def test_retrying_the_same_intent_never_creates_a_second_order(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    # The broker accepts the order but the answer is lost: the gateway finds it by client id.
    sim = await make_sim(gateway={"timeout": 0.3})
    sim.core.faults.configure(FaultConfig.parse("accept_then_timeout=1,timeout_s=2,endpoints=/v2/orders"))
    journal = Journal(tmp_path / "state.db")
    executor = OrderExecutor(sim.gw, sim.core.clock, journal=journal)
    same = intent("SPY", sim.price("SPY"), sim.core.clock.now())
    with capture_logs() as logs:
        first = await executor.submit_bracket(same, D(5))
        sim.core.faults.clear()
        second = await executor.submit_bracket(same, D(5))  # the loop retries the intent
        restarted = await OrderExecutor(sim.gw, sim.core.clock, journal=journal).submit_bracket(same, D(5))
    assert first.status == second.status == restarted.status == "submitted"
    assert first.client_order_id == second.client_order_id == restarted.client_order_id
    assert first.order is not None and second.order is not None and restarted.order is not None
    assert first.order.id == second.order.id == restarted.order.id
    recovered = events(logs, "order_recovered")
    assert [r["via"] for r in recovered] == ["lookup", "DuplicateClientOrderId", "DuplicateClientOrderId"]
    entries = [o for o in await sim.all_orders() if o.client_order_id == first.client_order_id]
    assert len(entries) == 1
    journaled = journal.orders()
    assert [o["client_order_id"] for o in journaled if not o.get("parent_client_order_id")] == [first.client_order_id]
    # its two legs, journaled from the broker's answer (a stop filling at once is then known)
    assert len([o for o in journaled if o.get("parent_client_order_id") == first.client_order_id]) == 2
    assert journal.order_by_client_id(first.client_order_id)["broker_order_id"] == first.order.id  # type: ignore[index]
    journal.close()


class JournalCheckingBroker:
    """Answers like Alpaca, but fails the test if an order is POSTed before it is journaled."""

    def __init__(self, journal: Journal, clock: Any) -> None:
        self.journal = journal
        self.clock = clock
        self.submitted: list[OrderRequest] = []

    async def submit_order(self, request: OrderRequest) -> Order:
        row = self.journal.order_by_client_id(request.client_order_id or "")
        assert row is not None, "order POSTed before its journal row was written"
        assert row["status"] == "submitted" and row["symbol"] == request.symbol
        self.submitted.append(request)
        return broker_order(request, "accepted", self.clock.now())


def broker_order(request: OrderRequest, status: str, at: datetime, *, filled: str = "0",
                 avg: str | None = None, oid: str = "order-1") -> Order:
    return Order.model_validate({
        "id": oid, "client_order_id": request.client_order_id, "status": status,
        "symbol": request.symbol, "side": request.side, "type": request.type,
        "time_in_force": request.time_in_force, "created_at": at.isoformat(),
        "qty": str(request.qty), "filled_qty": filled, "filled_avg_price": avg,
        "order_class": request.order_class or "simple",
    })


async def test_the_journal_row_is_written_before_the_post(tmp_path: Path) -> None:
    clock = StepClock()
    journal = Journal(tmp_path / "state.db")
    broker = JournalCheckingBroker(journal, clock)
    result = await OrderExecutor(broker, clock, journal=journal).submit_bracket(
        intent("SPY", D("500"), clock.now()), D(2))
    assert result.status == "submitted" and len(broker.submitted) == 1
    row = journal.order_by_client_id(result.client_order_id)
    assert row is not None and row["status"] == "accepted" and row["broker_order_id"] == "order-1"
    assert row["payload"]["order_class"] == "bracket"
    journal.close()


# -- tracking to a terminal state --------------------------------------------------------------


async def test_a_market_entry_accepted_on_submission_is_followed_to_its_fill(make_sim: SimFactory) -> None:
    """Alpaca answers the POST with the order as accepted; the fill is learned afterwards."""
    sim = await make_sim()
    entry = sim.price("SPY")
    executor = OrderExecutor(sim.gw, sim.core.clock)
    with capture_logs() as logs:
        result = await executor.submit_bracket(intent("SPY", entry, sim.core.clock.now()), D(4))
        assert result.order is not None and result.order.filled_qty == 0
        assert result.client_order_id in executor.tracked and events(logs, "order_filled") == []
        changed = await executor.manage_open_orders(await sim.open_orders())
    assert [t.client_order_id for t in changed] == [result.client_order_id]
    filled = events(logs, "order_filled")
    assert len(filled) == 1, logs
    fill_price = D(filled[0]["fill_price"])
    expected_bps = float(round((fill_price - entry) / entry * 10000, 2))
    assert filled[0]["slippage_bps"] == pytest.approx(expected_bps)
    assert executor.tracked == {}  # terminal: nothing left to follow


async def test_a_limit_entry_is_followed_until_it_fills(make_sim: SimFactory) -> None:
    sim = await make_sim()
    entry = sim.price("AAPL")
    limit = round_price(entry * D("0.98"))
    executor = OrderExecutor(sim.gw, sim.core.clock)
    result = await executor.submit_bracket(intent("AAPL", entry, sim.core.clock.now()), D(10), limit_price=limit)
    assert result.status == "submitted" and result.order is not None and result.order.status == "new"
    with capture_logs() as logs:
        assert await executor.manage_open_orders(await sim.open_orders()) == []  # nothing new yet
        sim.core.shock(["AAPL"], -4)
        await sim.core.clock.sleep(120)
        changed = await executor.manage_open_orders(await sim.open_orders())
    assert [t.client_order_id for t in changed] == [result.client_order_id]
    filled = events(logs, "order_filled")
    assert len(filled) == 1 and filled[0]["client_order_id"] == result.client_order_id
    fill_price = D(filled[0]["fill_price"])
    assert fill_price <= limit
    assert filled[0]["slippage_bps"] == pytest.approx(float(round((fill_price - entry) / entry * 10000, 2)))
    assert executor.tracked == {}


async def test_a_canceled_entry_is_reported_and_dropped(make_sim: SimFactory) -> None:
    sim = await make_sim()
    entry = sim.price("MSFT")
    executor = OrderExecutor(sim.gw, sim.core.clock)
    result = await executor.submit_bracket(intent("MSFT", entry, sim.core.clock.now()), D(3),
                                           limit_price=round_price(entry * D("0.9")))
    assert result.order is not None
    await sim.gw.cancel_order(result.order.id)  # e.g. canceled by hand in the broker's UI
    with capture_logs() as logs:
        await executor.manage_open_orders(await sim.open_orders())
    canceled = events(logs, "order_canceled")
    assert len(canceled) == 1 and canceled[0]["client_order_id"] == result.client_order_id
    assert executor.tracked == {}


async def test_a_rejected_entry_is_reported_with_the_brokers_code(make_sim: SimFactory) -> None:
    sim = await make_sim(cash=1000)
    entry = sim.price("SPY")
    executor = OrderExecutor(sim.gw, sim.core.clock)
    with capture_logs() as logs:
        result = await executor.submit_bracket(intent("SPY", entry, sim.core.clock.now()), D(100))
    assert result.status == "rejected" and result.error_code == 40310000
    rejected = events(logs, "order_rejected")
    assert len(rejected) == 1 and rejected[0]["code"] == 40310000
    assert "buying power" in rejected[0]["reason"]
    assert executor.tracked == {}
    assert await sim.all_orders() == []


class LostAnswerBroker:
    """Forwards to the simulator, but the answer to the first POST is lost (in flight)."""

    def __init__(self, gw: ResilientAlpacaGateway) -> None:
        self.gw = gw
        self.posts = 0

    async def submit_order(self, request: OrderRequest) -> Order:
        self.posts += 1
        await self.gw.submit_order(request)
        raise OrderInFlight("answer lost", client_order_id=request.client_order_id or "")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.gw, name)


async def test_an_in_flight_order_is_resolved_later_by_client_id(make_sim: SimFactory) -> None:
    sim = await make_sim()
    entry = sim.price("SPY")
    broker = LostAnswerBroker(sim.gw)
    executor = OrderExecutor(broker, sim.core.clock)
    with capture_logs() as logs:
        result = await executor.submit_bracket(intent("SPY", entry, sim.core.clock.now()), D(2))
        assert result.status == "in_flight"
        assert executor.tracked[result.client_order_id].status == "in_flight"
        changed = await executor.manage_open_orders(await sim.open_orders())
    assert [t.status for t in changed] == ["filled"]
    assert events(logs, "order_in_flight") and len(events(logs, "order_filled")) == 1
    assert broker.posts == 1 and len(await sim.all_orders()) == 3  # entry + two legs, once
    assert executor.tracked == {}


class ScriptedBroker:
    """Answers lookups by client order id from a script (one answer per call)."""

    def __init__(self, answers: list[Order | None]) -> None:
        self.answers = answers

    async def submit_order(self, request: OrderRequest) -> Order:
        return self.answers.pop(0) or broker_order(request, "accepted", datetime.now(timezone.utc))

    async def get_order_by_client_id(self, cid: str) -> Order | None:
        return self.answers.pop(0)


async def test_an_order_the_broker_rejects_after_accepting_it_is_reported() -> None:
    clock = StepClock()
    request = OrderRequest.bracket("SPY", 2, "buy", take_profit_price="530", stop_loss_price="485",
                                   time_in_force="gtc", client_order_id="enhanced_momentum-SPY-20250303-1-0")
    broker = ScriptedBroker([
        broker_order(request, "accepted", clock.now()),
        broker_order(request, "rejected", clock.now()),
    ])
    executor = OrderExecutor(broker, clock)
    result = await executor.submit_bracket(intent("SPY", D("500"), clock.now()), D(2))
    assert result.status == "submitted"
    with capture_logs() as logs:
        await executor.manage_open_orders([])
    rejected = events(logs, "order_rejected")
    assert len(rejected) == 1 and rejected[0]["status"] == "rejected"
    assert executor.tracked == {}


async def test_an_order_that_never_landed_is_given_up_after_ten_minutes() -> None:
    clock = StepClock()
    broker = ScriptedBroker([None, None])

    async def lost(request: OrderRequest) -> Order:
        raise OrderInFlight("no answer", client_order_id=request.client_order_id or "")

    broker.submit_order = lost  # type: ignore[method-assign]
    executor = OrderExecutor(broker, clock)
    result = await executor.submit_bracket(intent("SPY", D("500"), clock.now()), D(2))
    assert result.status == "in_flight"
    await executor.manage_open_orders([])
    assert result.client_order_id in executor.tracked  # too early to give up
    await clock.sleep(601)
    with capture_logs() as logs:
        await executor.manage_open_orders([])
    assert events(logs, "order_never_landed") and executor.tracked == {}


# -- partial fills ---------------------------------------------------------------------------


async def test_a_partially_filled_entry_ends_with_protection_sized_to_the_filled_quantity(
    make_sim: SimFactory,
) -> None:
    sim = await make_sim(partial_fills=True, cash=5_000_000)
    sim.core.broker.volume_participation = D("0.001")  # a few hundred shares a minute
    entry = sim.price("SPY")
    executor = OrderExecutor(sim.gw, sim.core.clock, partial_fill_timeout=300)
    result = await executor.submit_bracket(intent("SPY", entry, sim.core.clock.now()), D(5000))
    assert result.order is not None and result.order.status == "new"  # Alpaca answers before any fill
    entry_order = await sim.gw.get_order_by_client_id(result.client_order_id)
    assert entry_order is not None and entry_order.status == "partially_filled"

    await sim.core.clock.sleep(60)
    position = await sim.gw.get_position("SPY")
    assert position is not None and 0 < position.qty < 5000
    with capture_logs() as logs:
        found = await executor.protect_positions([position], await sim.open_orders())
    assert [f["symbol"] for f in found] == ["SPY"]
    assert events(logs, "position_protection_deferred")  # the entry is still filling
    assert len(await sim.all_orders()) == 3

    await sim.core.clock.sleep(300)  # still not done: the rest of the entry is given up
    position = await sim.gw.get_position("SPY")
    assert position is not None
    with capture_logs() as logs:
        await executor.protect_positions([position], await sim.open_orders())
    assert events(logs, "entry_remainder_canceled")
    position = await sim.gw.get_position("SPY")
    assert position is not None and position.qty < 5000
    open_orders = await sim.open_orders()
    assert protected_quantity(position, open_orders) == position.qty
    stops = [o for o in await sim.gw.list_orders(nested=False) if o.type == "stop"]
    assert len(stops) == 1 and stops[0].qty == position.qty  # one stop, for what was filled

    await executor.manage_open_orders(open_orders)
    entry_order = await sim.gw.get_order_by_client_id(result.client_order_id)
    assert entry_order is not None and entry_order.status == "canceled"
    assert entry_order.filled_qty == position.qty
    count = len(await sim.all_orders())
    assert await executor.protect_positions([position], open_orders) == []
    assert len(await sim.all_orders()) == count  # protected: nothing more is sent


# -- position protection ---------------------------------------------------------------------


async def test_a_naked_position_gets_exactly_one_oco_for_the_held_quantity(make_sim: SimFactory) -> None:
    sim = await make_sim()
    position = await sim.buy("AAPL", 12, "by-hand-1")
    executor = OrderExecutor(sim.gw, sim.core.clock)
    before = len(await sim.all_orders())
    with capture_logs() as logs:
        found = await executor.protect_positions([position], await sim.open_orders())
    assert [(f["symbol"], f["qty"]) for f in found] == [("AAPL", "12")]
    assert events(logs, "position_unprotected")[0]["protected_qty"] == "0"
    protected = events(logs, "position_protected")
    assert len(protected) == 1 and protected[0]["qty"] == "12"
    after = await sim.all_orders()
    assert len(after) == before + 2  # one OCO: take-profit parent + stop leg
    open_orders = await sim.open_orders()
    oco = [o for o in open_orders if o.order_class == "oco"]
    assert len(oco) == 1 and oco[0].qty == 12 and oco[0].side == "sell"
    stop_leg = next(leg for leg in oco[0].legs or [] if leg.type == "stop")
    assert stop_leg.qty == 12 and stop_leg.stop_price is not None
    assert stop_leg.stop_price < position.current_price  # type: ignore[operator]
    assert protected_quantity(position, open_orders) == 12
    # the next cycle finds it protected and sends nothing
    assert await executor.protect_positions([position], open_orders) == []
    assert len(await sim.all_orders()) == len(after)


async def test_a_position_protected_by_its_bracket_stop_gets_no_redundant_order(make_sim: SimFactory) -> None:
    sim = await make_sim()
    executor = OrderExecutor(sim.gw, sim.core.clock)
    await executor.submit_bracket(intent("MSFT", sim.price("MSFT"), sim.core.clock.now()), D(9))
    position = await sim.gw.get_position("MSFT")
    assert position is not None and position.qty == 9
    before = len(await sim.all_orders())
    with capture_logs() as logs:
        found = await executor.protect_positions([position], await sim.open_orders(), startup=True)
    assert found == []
    assert not events(logs, "position_unprotected") and not events(logs, "position_protected")
    assert len(await sim.all_orders()) == before


async def test_shares_held_by_a_lone_take_profit_are_freed_and_fully_protected(make_sim: SimFactory) -> None:
    sim = await make_sim()
    position = await sim.buy("SPY", 8, "by-hand-2")
    take_profit = await sim.gw.submit_order(OrderRequest.simple(
        "SPY", 8, "sell", type="limit", limit_price=round_price(sim.price("SPY") * D("1.10")),
        time_in_force="gtc", client_order_id="lone-take-profit"))
    position = await sim.gw.get_position("SPY")
    assert position is not None and position.qty_available == 0  # the limit holds every share
    executor = OrderExecutor(sim.gw, sim.core.clock)
    with capture_logs() as logs:
        found = await executor.protect_positions([position], await sim.open_orders())
    assert len(found) == 1 and events(logs, "position_protected")
    assert (await sim.gw.get_order(take_profit.id)).status == "canceled"
    open_orders = await sim.open_orders()
    assert [o.order_class for o in open_orders] == ["oco"]
    assert protected_quantity(position, open_orders) == 8


async def test_a_partly_protected_position_is_protected_for_its_full_quantity(make_sim: SimFactory) -> None:
    sim = await make_sim()
    await sim.buy("AAPL", 10, "by-hand-3")
    small_stop = await sim.gw.submit_order(OrderRequest.simple(
        "AAPL", 4, "sell", type="stop", stop_price=round_price(sim.price("AAPL") * D("0.95")),
        time_in_force="gtc", client_order_id="small-stop"))
    position = await sim.gw.get_position("AAPL")
    assert position is not None
    assert protected_quantity(position, await sim.open_orders()) == 4
    await OrderExecutor(sim.gw, sim.core.clock).protect_positions([position], await sim.open_orders())
    assert (await sim.gw.get_order(small_stop.id)).status == "canceled"
    assert protected_quantity(position, await sim.open_orders()) == 10


async def test_a_resting_unfilled_entry_does_not_postpone_protecting_held_shares(make_sim: SimFactory) -> None:
    sim = await make_sim()
    position = await sim.buy("SPY", 6, "by-hand-6")
    executor = OrderExecutor(sim.gw, sim.core.clock)
    resting = await executor.submit_bracket(intent("SPY", sim.price("SPY"), sim.core.clock.now()), D(4),
                                            limit_price=round_price(sim.price("SPY") * D("0.95")))
    assert resting.order is not None and resting.order.filled_qty == 0
    with capture_logs() as logs:
        await executor.protect_positions([position], await sim.open_orders())
    assert not events(logs, "position_protection_deferred")
    assert events(logs, "position_protected")
    open_orders = await sim.open_orders()
    assert protected_quantity(position, open_orders) == 6
    entry = next(o for o in open_orders if o.id == resting.order.id)
    assert entry.status == "new"  # the pending entry is left to work


async def test_startup_lists_unprotected_positions_with_quantity_pnl_and_value(make_sim: SimFactory) -> None:
    sim = await make_sim()
    await sim.buy("AAPL", 5, "by-hand-4")
    await sim.buy("MSFT", 3, "by-hand-5")
    executor = OrderExecutor(sim.gw, sim.core.clock)
    await executor.submit_bracket(intent("SPY", sim.price("SPY"), sim.core.clock.now()), D(2))
    sim.core.shock(["AAPL"], -1)
    positions = await sim.gw.list_positions()
    with capture_logs() as logs:
        found = await executor.protect_positions(positions, await sim.open_orders(), startup=True)
    by_symbol = {f["symbol"]: f for f in found}
    assert set(by_symbol) == {"AAPL", "MSFT"}  # SPY is protected by its bracket
    aapl = next(p for p in positions if p.symbol == "AAPL")
    assert by_symbol["AAPL"]["qty"] == "5"
    assert by_symbol["AAPL"]["unrealized_pl"] == str(aapl.unrealized_pl) and D(by_symbol["AAPL"]["unrealized_pl"]) < 0
    assert by_symbol["AAPL"]["market_value"] == str(aapl.market_value)
    assert all(e["startup"] is True for e in events(logs, "position_unprotected"))
    assert len(events(logs, "position_protected")) == 2


class StepClock:
    """A clock that moves only when slept on, recording each sleep."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2025, 3, 3, 15, 0, tzinfo=timezone.utc)
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self._now += timedelta(seconds=seconds)
