"""Races on demand, end to end (issue 12, item 5): every cancel path of the daemon meets
Alpaca's ``422 42210000 order is already in "filled" state`` because the simulator's ``race``
fault fills (or cancels) the resting order just before the daemon's cancel reaches it.

Each test runs the daemon's own ``TradingSystem`` (real gateway, journal, executor) against
the simulator over HTTP on 127.0.0.1 at ``--speed max`` (``tests/test_e2e_safety_support``),
switches the race on through the control API (``POST /_sim/v1/faults``) with probability 1
for the path under test, and asserts what a user cares about:

- the loop keeps cycling: no ``cycle_failed``, no ``position_protection_failed``, no stop;
- the journal records the fill the race made (its execution id, from the broker's
  activities), and holds exactly the broker's fills;
- the position ends as the path intends: protected by a stop for its full quantity
  (protection), or flat (emergency exit, ``halt``, the circuit breaker's liquidation).

Paths: protecting a position whose exit orders must be replaced (a lone take-profit covers
only part of it), ending the rest of a partly filled bracket entry so that its legs protect
what filled, the emergency exit of a position under a resting bracket, the operator's ``halt``, and
the breaker's liquidation (which cancels everything with ``DELETE /v2/orders``: the race
answers the raced orders with Alpaca's 422 item in the 207 body). The daemon never replaces
an order (``PATCH``): ``replace_order``'s race is proven at the gateway in
``tests/test_error_taxonomy.py``.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any, Mapping, Sequence

import pytest
from structlog.testing import capture_logs

from core import errors
from broker.models import OrderRequest
from tests.test_e2e_safety_support import (
    WIDE_STOPS,
    SimStack,
    buy_by_hand,
    cycle,
    events,
    sim_stack,
    unprotected,
)
from engine.trading_state import TradingState
from engine.trading_system import TradingSystem

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SESSION_START = "2025-03-04T10:30:00"
SYMBOLS = ["SPY", "QQQ", "AAPL", "MSFT"]
# What must never appear while the broker races the daemon.
FAILURES = ("cycle_failed", "position_protection_failed", "emergency_stop_failed", "broker_item_dropped",
            "position_still_unprotected")


async def _race(stack: SimStack, spec: str) -> None:
    await stack.control("faults", {"spec": spec})


async def _races_run(stack: SimStack) -> int:
    """How many races the simulator ran (its fault counter)."""
    return int(stack.core.faults.counts["race"])


async def _quiet_system(stack: SimStack) -> TradingSystem:
    """The daemon's loop without strategies: only its safety paths act on the broker."""
    system = stack.new_system()
    system.strategies = []
    await system.startup()
    return system


def _assert_no_failures(logs: Sequence[Mapping[str, Any]]) -> None:
    bad = [(e["event"], {k: e.get(k) for k in ("symbol", "reason", "error", "symbols")})
           for e in logs if e.get("event") in FAILURES]
    assert bad == [], f"the race made the daemon fail: {bad}"


async def _assert_journal_holds_the_brokers_fills(stack: SimStack) -> list[dict[str, Any]]:
    """Every FILL activity at the broker is in the journal, and nothing else; returns them."""
    activities = await stack.gateway.get_activities(activity_types=("FILL",))
    broker = {a.id: (a.order_id, a.symbol, Decimal(a.qty or 0), Decimal(a.price or 0)) for a in activities}
    journal = {f["execution_id"]: (f["broker_order_id"], f["symbol"], f["qty"], f["price"])
               for f in stack.journal.fills()}
    assert journal == broker
    return [{"execution_id": k, "order_id": v[0], "symbol": v[1], "qty": v[2]} for k, v in broker.items()]


def _raced_fills(logs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The cancel outcomes in which the daemon found its order filled."""
    return [e for e in events(logs, "cancel_outcome") if e.get("order_status") == "filled"]


async def test_protection_replacing_a_lone_take_profit_meets_its_fill_and_protects_what_is_left(
        tmp_path: Path) -> None:
    async with sim_stack(tmp_path, start=SESSION_START, symbols=SYMBOLS) as stack:
        held = (await buy_by_hand(stack, {"SPY": 0.08}))["SPY"]
        # A take-profit for part of it, placed by hand: it holds shares but protects nothing,
        # so the daemon must cancel it and place one OCO for the whole. The market fills it
        # first (the case: a stop placed for a position that just closed).
        price = (await stack.positions())[0].current_price
        assert price is not None
        tp_qty = held - 3
        take_profit = await stack.gateway.submit_order(OrderRequest.simple(
            "SPY", tp_qty, "sell", type="limit", limit_price=(price * Decimal("1.02")).quantize(Decimal("0.01")),
            time_in_force="gtc", client_order_id="hand-take-profit-SPY"))
        await _race(stack, "race=1.0,race_mode=fill")
        with capture_logs() as logs:
            system = await _quiet_system(stack)
            for _ in range(3):
                await cycle(system, minutes=1)
        _assert_no_failures(logs)
        assert await _races_run(stack) == 1
        raced = _raced_fills(logs)
        assert [(e["order_id"], Decimal(e["filled_qty"])) for e in raced] == [(take_profit.id, tp_qty)]
        assert [e["qty"] for e in events(logs, "position_changed")] == ["3"]
        # The new protection is for what the broker holds after the race, not the old snapshot.
        positions, orders = await stack.positions(), await stack.open_orders()
        assert {p.symbol: p.qty for p in positions} == {"SPY": Decimal(3)}
        assert unprotected(positions, orders) == {}
        assert [e["qty"] for e in events(logs, "position_protected")] == ["3"]
        fills = await _assert_journal_holds_the_brokers_fills(stack)
        assert take_profit.id in {f["order_id"] for f in fills}
        assert system.safety.state is TradingState.ACTIVE


async def test_the_emergency_exit_meets_the_brackets_fill_and_ends_flat(tmp_path: Path) -> None:
    async with sim_stack(tmp_path, start=SESSION_START, symbols=SYMBOLS) as stack:
        # A bracket entered by hand with a stop far away: protected, so the daemon leaves it.
        trade = (await stack.gateway.get_latest_trades(["AAPL"]))["AAPL"]
        price = Decimal(str(trade.p))
        qty = Decimal(40)
        entry = await stack.gateway.submit_order(OrderRequest.bracket(
            "AAPL", qty, "buy", time_in_force="gtc",
            take_profit_price=(price * Decimal("1.5")).quantize(Decimal("0.01")),
            stop_loss_price=(price * Decimal("0.5")).quantize(Decimal("0.01")),
            client_order_id="hand-bracket-AAPL"))
        entry = await stack.gateway.get_order(entry.id)  # the POST answer is the order as accepted
        assert entry.status == "filled"
        system = await _quiet_system(stack)
        await cycle(system, minutes=1)
        assert unprotected(await stack.positions(), await stack.open_orders()) == {}
        # A 12% drop: past the 8% emergency exit for the position, far above its stop, and
        # (a small position) well short of the circuit breaker.
        await stack.control("shock", {"symbols": "AAPL", "pct": -12})
        await _race(stack, "race=1.0,race_mode=fill")
        with capture_logs() as logs:
            for _ in range(3):
                await cycle(system, minutes=1)
        _assert_no_failures(logs)
        assert events(logs, "emergency_exit_threshold")
        raced = _raced_fills(logs)
        assert raced and raced[0]["symbol"] == "AAPL" and Decimal(raced[0]["filled_qty"]) == qty
        assert [e["symbol"] for e in events(logs, "position_flat")] == ["AAPL"]
        # Nothing was sold on top of the leg that filled: no short, nothing left working.
        assert not [e for e in events(logs, "order_submitted") if e.get("emergency")]
        assert await stack.positions() == []
        assert await stack.open_orders() == []
        fills = await _assert_journal_holds_the_brokers_fills(stack)
        assert raced[0]["order_id"] in {f["order_id"] for f in fills}
        assert system.safety.state is TradingState.ACTIVE


async def _held_and_protected(stack: SimStack, system: TradingSystem, fractions: Mapping[str, float]) -> None:
    bought = await buy_by_hand(stack, fractions)
    await cycle(system, minutes=1)
    positions, orders = await stack.positions(), await stack.open_orders()
    assert {p.symbol: p.qty for p in positions} == bought
    assert unprotected(positions, orders) == {}


@pytest.mark.parametrize("mode", ["fill", "cancel"])
async def test_halt_meets_the_race_on_every_order_and_ends_flat_and_halted(tmp_path: Path, mode: str) -> None:
    async with sim_stack(tmp_path, start=SESSION_START, symbols=SYMBOLS) as stack:
        system = stack.new_system()
        system.strategies = []
        await system.startup()
        await _held_and_protected(stack, system, {"SPY": 0.05, "AAPL": 0.05, "MSFT": 0.05})
        await _race(stack, f"race=1.0,race_mode={mode}")
        # `python main.py halt` queues this in the journal; the loop applies it next cycle.
        stack.journal.queue_operator_command("halt", "e2e: stop everything", stack.clock.now())
        with capture_logs() as logs:
            for _ in range(3):
                await cycle(system, minutes=1)
        _assert_no_failures(logs)
        assert await _races_run(stack) >= 3, "each protective order met the race"
        refused = [i for e in events(logs, "multi_status_failures") for i in e["items"]]
        assert refused and {i["status"] for i in refused} == {422}
        assert system.safety.state is TradingState.HALTED
        assert await stack.positions() == []
        assert await stack.open_orders() == []
        fills = await _assert_journal_holds_the_brokers_fills(stack)
        sells = {f["symbol"] for f in fills}
        assert {"SPY", "AAPL", "MSFT"} <= sells
        if mode == "fill":  # the race sold them: no exit order was needed
            assert not [e for e in events(logs, "order_submitted") if e.get("emergency")]
        else:  # the broker canceled them: the liquidation sold each position itself
            assert {e["symbol"] for e in events(logs, "order_submitted") if e.get("emergency")} == \
                {"SPY", "AAPL", "MSFT"}


async def test_the_breakers_liquidation_meets_the_race_and_ends_flat_and_halted(tmp_path: Path) -> None:
    async with sim_stack(tmp_path, start=SESSION_START, symbols=SYMBOLS, overrides=WIDE_STOPS) as stack:
        system = await _quiet_system(stack)
        await _held_and_protected(stack, system, {"SPY": 0.21, "QQQ": 0.21, "AAPL": 0.21, "MSFT": 0.21})
        # 8% down everywhere: through the 5% breaker, above every (20%) protective stop.
        await stack.control("shock", {"symbols": "*", "pct": -8})
        assert len(await stack.positions()) == 4
        await _race(stack, "race=1.0,race_mode=mixed")
        with capture_logs() as logs:
            for _ in range(3):
                await cycle(system, minutes=1)
        _assert_no_failures(logs)
        assert events(logs, "circuit_breaker_triggered")
        assert await _races_run(stack) >= 4
        refused = [i for e in events(logs, "multi_status_failures") for i in e["items"]]
        assert len(refused) >= 4 and {i["status"] for i in refused} == {422}
        assert system.safety.state is TradingState.HALTED
        assert await stack.positions() == []
        assert await stack.open_orders() == []
        fills = await _assert_journal_holds_the_brokers_fills(stack)
        assert {f["symbol"] for f in fills} == set(SYMBOLS)


# -- replacing a leg: the daemon never does; the gateway meets the race correctly ----------


async def test_replacing_a_leg_meets_the_race_as_an_outcome_with_the_filled_order(tmp_path: Path) -> None:
    """``OrderExecutor`` and ``TradingSystem`` never call ``replace_order`` (a changed stop is
    canceled and placed again), so no daemon path replaces a leg; this is the gateway's
    answer should one ever do it: the simulator's race fills the stop before the PATCH."""
    async with sim_stack(tmp_path, start=SESSION_START, symbols=SYMBOLS) as stack:
        await buy_by_hand(stack, {"SPY": 0.05})
        qty = (await stack.positions())[0].qty
        stop = await stack.gateway.submit_order(OrderRequest.simple(
            "SPY", qty, "sell", type="stop", stop_price=Decimal("100"), time_in_force="gtc",
            client_order_id="hand-stop-SPY"))
        await _race(stack, "race=1.0,race_mode=fill")
        with pytest.raises(errors.OrderNotReplaceable) as raced:
            await stack.gateway.replace_order(stop.id, stop_price=Decimal("101"))
        assert raced.value.status == 422 and raced.value.code == 42210000
        assert raced.value.order is not None and raced.value.order.status == "filled"
        assert raced.value.order.filled_qty == qty
        assert await stack.positions() == []


async def test_ending_a_partly_filled_entry_meets_the_fill_of_its_rest_and_the_legs_protect_it_all(
        tmp_path: Path) -> None:
    """A bracket entry fills in parts (volume-limited): once it has filled for longer than the
    partial-fill timeout, protection cancels the rest so that its legs protect what filled.
    The market fills the rest first: the legs then protect the whole entry."""
    async with sim_stack(tmp_path, start=SESSION_START, symbols=SYMBOLS) as stack:
        stack.core.broker.partial_fills = True
        stack.core.broker.volume_participation = Decimal("0.00005")  # a few shares a minute
        price = Decimal(str((await stack.gateway.get_latest_trades(["SPY"]))["SPY"].p))
        entry = await stack.gateway.submit_order(OrderRequest.bracket(
            "SPY", 40, "buy", time_in_force="gtc",
            take_profit_price=(price * Decimal("1.2")).quantize(Decimal("0.01")),
            stop_loss_price=(price * Decimal("0.8")).quantize(Decimal("0.01")),
            client_order_id="hand-partial-SPY"))
        system = await _quiet_system(stack)
        await stack.clock.sleep(120)  # past the partial-fill timeout (60 s)
        filling = [o for o in await stack.open_orders() if o.id == entry.id]
        assert filling and Decimal(0) < filling[0].filled_qty < Decimal(40), "the entry must be part filled"
        await _race(stack, "race=1.0,race_mode=fill")
        with capture_logs() as logs:
            for _ in range(3):
                await cycle(system, minutes=1)
        _assert_no_failures(logs)
        assert events(logs, "entry_remainder_canceled")
        raced = _raced_fills(logs)
        assert [e["order_id"] for e in raced] == [entry.id]
        assert Decimal(raced[0]["filled_qty"]) == Decimal(40)
        positions, orders = await stack.positions(), await stack.open_orders()
        assert {p.symbol: p.qty for p in positions} == {"SPY": Decimal(40)}
        assert unprotected(positions, orders) == {}
        # its own legs protect it: nothing new was placed
        assert not events(logs, "order_submitted")
        await _assert_journal_holds_the_brokers_fills(stack)
