"""The trade-updates path below the e2e test: parsing Alpaca's stream messages, the event
core (engine.order_events) fed the simulator engine's own events, the feed's protection on
a partial fill, and the stream client's handshake, watchdog and reconnects.

Bodies are real-shaped: ``tests/fixtures/alpaca/stream/`` (see SOURCES.md) and the events
the simulator emits for its order lifecycle. All sockets are on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from datetime import timezone
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from structlog.testing import capture_logs

from ai_analyzer import TradeIntent
from alerter import Alerter
from backtest.sim_broker import InProcessBroker
from broker.models import OrderRequest
from broker.trade_stream import TradeStreamClient, trading_stream_url
from broker.trade_updates import TradeUpdate, parse_trade_update
from engine.order_events import OrderEventBook
from engine.stream_feed import TradeEventFeed
from engine.trading_system import TradingSystem
from journal.journal import Journal
from order_executor import protected_quantity
from simulator.core import SimulatorCore
from simulator.server import start_server
from tests.e2e_helpers import REPO
from tests.test_e2e_safety_support import load_test_settings

FIXTURES = REPO / "tests" / "fixtures" / "alpaca" / "stream"
START = "2025-03-04T10:00:00-05:00"  # a Tuesday, regular hours
SYMBOLS = ["SPY", "AAPL"]


def fixture(name: str) -> dict[str, Any]:
    raw = json.loads((FIXTURES / f"{name}.json").read_text())
    assert raw["_source"].strip()
    return raw["body"]


# -- parsing at the edge -----------------------------------------------------------------------


def test_a_real_fill_message_becomes_typed_decimal_and_aware_utc() -> None:
    update = parse_trade_update(fixture("trade_update_fill_docs"))
    assert update is not None and update.event == "fill" and update.is_fill
    assert update.price == D("7.09") and update.qty == D("1") and update.position_qty == D("1")
    assert update.execution_id == "adb4f7c7-45fe-4a3a-a0ac-02d9fa3c8264"
    assert update.timestamp.tzinfo == timezone.utc and update.timestamp.microsecond == 888530
    assert update.order.filled_qty == D("1") and update.order.symbol == "SNDL"
    assert update.fill_key == ("417b6eea-5cc2-4e30-9ee4-68e91ceee8ed", D("1"))


def test_a_pending_new_with_nulls_numbers_and_an_odd_key_is_read() -> None:
    update = parse_trade_update(fixture("trade_update_pending_new_lean"))
    assert update is not None and update.event == "pending_new" and not update.is_fill
    assert update.order.qty == D("271.0") and update.order.filled_qty == 0
    assert update.price is None and update.execution_id is None and update.fill_key is None


def test_control_messages_are_not_events_and_an_unreadable_event_is_reported() -> None:
    assert parse_trade_update({"stream": "listening", "data": {"streams": ["trade_updates"]}}) is None
    broken = fixture("trade_update_fill_docs")
    broken["data"]["qty"] = "NaN-ish"
    with capture_logs() as logs:
        assert parse_trade_update(broken) is None
    assert [e for e in logs if e["event"] == "broker_item_dropped" and e["model"] == "TradeUpdate"]


@pytest.mark.parametrize(("base", "url"), [
    ("https://paper-api.alpaca.markets", "wss://paper-api.alpaca.markets/stream"),
    ("https://api.alpaca.markets/v2", "wss://api.alpaca.markets/stream"),
    ("http://127.0.0.1:8765", "ws://127.0.0.1:8765/stream"),
])
def test_the_stream_url_follows_the_trading_url(base: str, url: str) -> None:
    assert trading_stream_url(base) == url
    assert trading_stream_url(base, "wss://elsewhere/stream") == "wss://elsewhere/stream"


# -- the event core, fed the simulator engine's own events ----------------------------------


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[tuple[SimulatorCore, InProcessBroker, TradingSystem]]:
    settings = load_test_settings(tmp_path, {"scanning.symbols": SYMBOLS, "sim.start": START, "sim.speed": "max",
                                             "ai.use_news_sentiment": False})
    core = SimulatorCore.create(symbols=SYMBOLS, seed=7, start=START, speed=None, cash=5_000_000,
                                partial_fills=True)
    broker = InProcessBroker(core)
    journal = Journal(settings.storage.state_db)
    alerter = Alerter(settings.alerts, core.clock, stream=io.StringIO())
    system = TradingSystem(settings, broker, core.clock, journal=journal, alerter=alerter, run_id="events")
    assert not system.trade_events.enabled  # an in-process broker has no stream: the loop polls
    try:
        yield core, broker, system
    finally:
        await alerter.aclose()
        journal.close()


def sim_updates(core: SimulatorCore, since: int) -> list[TradeUpdate]:
    """The simulator's events since event number ``since``, as the stream would carry them."""
    events = list(core.broker.events)[len(core.broker.events) - (core.broker.event_count - since):]
    return [TradeUpdate.model_validate(e) for e in events]


async def rest_truth(broker: InProcessBroker) -> tuple[Any, Any, Any, Any]:
    return (await broker.get_account(), await broker.list_positions(),
            await broker.list_orders(status="open", nested=True), await broker.get_activities())


async def trade_a_little(core: SimulatorCore, broker: InProcessBroker) -> None:
    """Buys, a partial sell, a short and its cover, a resting limit, an order canceled."""
    await broker.submit_order(OrderRequest.simple("SPY", D(10), "buy", type="market", time_in_force="day",
                                                  client_order_id="t-buy-spy"))
    await broker.submit_order(OrderRequest.simple("AAPL", D(7), "sell", type="market", time_in_force="day",
                                                  client_order_id="t-short-aapl"))
    await core.clock.sleep(120)
    await broker.submit_order(OrderRequest.simple("SPY", D(4), "sell", type="market", time_in_force="day",
                                                  client_order_id="t-sell-spy"))
    await broker.submit_order(OrderRequest.simple("AAPL", D(3), "buy", type="market", time_in_force="day",
                                                  client_order_id="t-cover-aapl"))
    resting = await broker.submit_order(OrderRequest.simple("SPY", D(1), "buy", type="limit",
                                                            limit_price=D("1.00"), time_in_force="day",
                                                            client_order_id="t-rest-spy"))
    doomed = await broker.submit_order(OrderRequest.simple("AAPL", D(1), "buy", type="limit",
                                                           limit_price=D("1.00"), time_in_force="day",
                                                           client_order_id="t-cancel-aapl"))
    await broker.cancel_order(doomed.id)
    await core.clock.sleep(60)
    assert resting.status in ("new", "accepted")


async def test_the_book_kept_from_events_matches_the_broker(stack: Any) -> None:
    core, broker, system = stack
    book = OrderEventBook(journal=system.journal, reconciler=system.reconciler, executor=system.executor)
    account, positions, orders, fills = await rest_truth(broker)
    book.rebase(account, positions, orders, fills)
    since = core.broker.event_count
    await trade_a_little(core, broker)
    with capture_logs() as logs:
        for update in sim_updates(core, since):
            await book.handle(update)
    truth_account, truth_positions, truth_orders, truth_fills = await rest_truth(broker)
    book.mark({p.symbol: p.current_price for p in truth_positions})
    view_account, view_positions, view_orders = book.view()
    assert view_account.cash == truth_account.cash
    assert view_account.equity == truth_account.equity
    assert {p.symbol: (p.qty, p.avg_entry_price) for p in view_positions} == \
        {p.symbol: (p.qty, p.avg_entry_price) for p in truth_positions}
    assert {p.symbol: p.qty for p in view_positions} == {"SPY": D(6), "AAPL": D(-4)}
    # the simple orders that appeared (one still resting) are listed without a request
    assert not book.orders_stale
    assert {o.id for o in view_orders} == {o.id for o in truth_orders} and len(truth_orders) == 1
    # each fill journaled once, each filled order logged once, from the stream
    counted = sum((record.qty for record in system.journal.fill_records()), D(0))
    assert counted == sum((a.qty for a in truth_fills), D(0)) == D(24)
    filled = [e for e in logs if e["event"] == "order_filled"]
    assert len(filled) == 4 and {e["source"] for e in filled} == {"stream"}
    assert len({e["broker_order_id"] for e in filled}) == 4


async def test_replayed_and_duplicate_events_move_nothing_twice(stack: Any) -> None:
    """Alpaca replays new/fill pairs with the same execution ids (Lean.Brokerages.Alpaca PR #61)."""
    core, broker, system = stack
    book = OrderEventBook(journal=system.journal, reconciler=system.reconciler, executor=system.executor)
    book.rebase(*(await rest_truth(broker)))
    since = core.broker.event_count
    await trade_a_little(core, broker)
    updates = sim_updates(core, since)
    for update in updates:
        await book.handle(update)
    once = (book.cash, dict(book.positions), len(system.journal.fill_records()))
    with capture_logs() as logs:
        for update in updates + updates:  # the whole run again, twice
            await book.handle(update)
    assert (book.cash, dict(book.positions), len(system.journal.fill_records())) == once
    assert not [e for e in logs if e["event"] == "order_filled"]
    assert [e for e in logs if e["event"] == "stream_event_replayed"]
    spy_buy = system.journal.order_by_broker_id(next(u.order.id for u in updates
                                                     if u.order.client_order_id == "t-buy-spy"))
    assert spy_buy is None or spy_buy["status"] == "filled"


async def test_fills_the_rest_reading_already_holds_are_not_counted_again(stack: Any) -> None:
    """A catch-up read after fills whose events arrive late: the events move nothing."""
    core, broker, system = stack
    book = OrderEventBook(journal=system.journal, reconciler=system.reconciler, executor=system.executor)
    since = core.broker.event_count
    await trade_a_little(core, broker)
    account, positions, orders, fills = await rest_truth(broker)
    book.rebase(account, positions, orders, fills)
    for update in sim_updates(core, since):  # late: already in the reading
        await book.handle(update)
    view_account, view_positions, _ = book.view()
    assert view_account.cash == account.cash
    assert {p.symbol: p.qty for p in view_positions} == {p.symbol: p.qty for p in positions}


# -- the feed: a partial fill is protected on the event ----------------------------------------


def _intent(symbol: str, entry: D, now: Any) -> TradeIntent:
    from datetime import timedelta
    return TradeIntent(intent_id=f"test-{symbol}-1", symbol=symbol, side="buy", confidence=0.8,
                       confidence_breakdown={}, reasoning="test", strategy="enhanced_momentum",
                       entry_price=float(entry), stop_price=None, target_price=None,  # type: ignore[arg-type]
                       created_at=now, decays_at=now + timedelta(hours=4))


async def test_a_partial_fill_event_protects_the_position_at_once(stack: Any) -> None:
    core, broker, system = stack
    core.broker.volume_participation = D("0.001")  # a few hundred shares a minute
    feed = TradeEventFeed(broker=broker, clock=core.clock, journal=system.journal, reconciler=system.reconciler,
                          executor=system.executor, alerter=system.alerter, settings=system.settings.stream)
    async with feed.lock:
        await feed.catch_up("test")
    since = core.broker.event_count
    price = (await broker.get_latest_trades(["SPY"]))["SPY"].p
    result = await system.executor.submit_bracket(_intent("SPY", price, core.clock.now()), D(5000))
    assert result.order is not None and result.order.status == "new"  # the answer precedes the fill
    with capture_logs() as logs:
        for update in sim_updates(core, since):
            await feed._on_update(update)
        assert feed._protect_task is not None
        await asyncio.wait_for(feed._protect_task, timeout=1.0)  # within a second of the event
    names = [e["event"] for e in logs]
    assert "order_partially_filled" in names and "stream_partial_fill_protection" in names
    assert "entry_remainder_canceled" in names and "position_protection_deferred" not in names
    position = await broker.get_position("SPY")
    assert position is not None and 0 < position.qty < 5000
    assert protected_quantity(position, await broker.list_orders(status="open", nested=True)) == position.qty


# -- the stream client: handshake, refused keys, a silent stream -------------------------------


async def test_the_client_hears_the_simulator_and_reconnects_after_a_drop(tmp_path: Path) -> None:
    core = SimulatorCore.create(symbols=["SPY"], seed=3, start=START, speed=None)
    server = await start_server(core, host="127.0.0.1", port=0, rate_limit_per_minute=None, key="k1", secret="s1")
    got: list[TradeUpdate] = []
    connected: list[int] = []

    async def on_update(update: TradeUpdate) -> None:
        got.append(update)

    async def on_connected(n: int) -> None:
        connected.append(n)

    client = TradeStreamClient(trading_stream_url(server.base_url), "k1", "s1", on_update=on_update,
                               on_connected=on_connected, backoff_min_s=0.05, backoff_max_s=0.2)
    stop = asyncio.Event()
    task = asyncio.ensure_future(client.run(stop))
    try:
        with capture_logs() as logs:
            await _until(lambda: client.healthy)
            core.broker.submit_order({"symbol": "SPY", "qty": "2", "side": "buy", "type": "market",
                                      "time_in_force": "day"})
            await _until(lambda: any(u.event == "fill" for u in got))
            from simulator.stream_hub import STREAM_HUB
            assert await server.app[STREAM_HUB].drop_all() == 1
            await _until(lambda: len(connected) == 2)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await server.stop()
    fill = next(u for u in got if u.event == "fill")
    assert fill.qty == 2 and fill.position_qty == 2 and fill.execution_id
    assert [e for e in logs if e["event"] == "stream_reconnected"]
    assert connected == [1, 2]


async def test_refused_keys_are_logged_and_never_listened_with(tmp_path: Path) -> None:
    core = SimulatorCore.create(symbols=["SPY"], seed=3, start=START, speed=None)
    server = await start_server(core, host="127.0.0.1", port=0, rate_limit_per_minute=None, key="k1", secret="s1")

    async def nothing(*_: Any) -> None:
        return None

    client = TradeStreamClient(trading_stream_url(server.base_url), "k1", "wrong-secret-xyz", on_update=nothing,
                               on_connected=nothing, backoff_min_s=0.05, backoff_max_s=0.1)
    stop = asyncio.Event()
    try:
        with capture_logs() as logs:
            task = asyncio.ensure_future(client.run(stop))
            await _until(lambda: client.failures_in_a_row >= 2)
            stop.set()
            await asyncio.wait_for(task, 5)
    finally:
        await server.stop()
    refused = [e for e in logs if e["event"] == "stream_auth_refused"]
    assert refused and not client.healthy and client.connections == 0
    assert "wrong-secret-xyz" not in repr(logs)


async def test_a_silent_stream_is_found_stale_and_replaced() -> None:
    """A server that authorizes, listens, then never answers a ping (a half-dead socket)."""
    sessions: list[int] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        sessions.append(1)
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue  # pings unanswered
            action = json.loads(msg.data)["action"]
            if action == "authenticate":
                await ws.send_bytes(b'{"stream":"authorization","data":{"action":"authenticate","status":"authorized"}}')
            elif action == "listen":
                await ws.send_bytes(b'{"stream":"listening","data":{"streams":["trade_updates"]}}')
        return ws

    app = web.Application()
    app.router.add_get("/stream", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]

    async def nothing(*_: Any) -> None:
        return None

    client = TradeStreamClient(f"ws://127.0.0.1:{port}/stream", "k", "s", on_update=nothing, on_connected=nothing,
                               heartbeat_s=0.1, stale_after_s=0.4, backoff_min_s=0.05, backoff_max_s=0.1)
    stop = asyncio.Event()
    try:
        with capture_logs() as logs:
            task = asyncio.ensure_future(client.run(stop))
            await _until(lambda: client.connections >= 2, timeout=10)
            stop.set()
            await asyncio.wait_for(task, 5)
    finally:
        await runner.cleanup()
    names = [e["event"] for e in logs]
    assert "stream_stale" in names and "stream_reconnected" in names


async def _until(predicate: Any, timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


async def test_no_stream_means_polling_with_one_warning_and_one_alert(stack: Any) -> None:
    """A stream that cannot be had: every cycle polls (never blind), and the operator hears once."""
    import socket

    from config import StreamSettings

    core, broker, system = stack
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    settings = StreamSettings(fallback_after_seconds=0.2, reconnect_min_seconds=0.05, reconnect_max_seconds=0.1)

    def factory(feed: TradeEventFeed) -> TradeStreamClient:
        return TradeStreamClient(f"ws://127.0.0.1:{dead}/stream", "k", "s", on_update=feed._on_update,
                                 on_connected=feed._on_connected, backoff_min_s=0.05, backoff_max_s=0.1)

    sent: list[str] = []

    async def send(level: Any, title: str, message: str, **kw: Any) -> None:
        sent.append(title)

    system.alerter.send = send  # type: ignore[method-assign]
    feed = TradeEventFeed(broker=broker, clock=core.clock, journal=system.journal, reconciler=system.reconciler,
                          executor=system.executor, alerter=system.alerter, settings=settings,
                          client_factory=factory)
    await feed.start()
    try:
        with capture_logs() as logs:
            assert await feed.ready_for_cycle() is False  # too early to warn, but polling already
            await asyncio.sleep(0.4)
            for _ in range(3):
                assert await feed.ready_for_cycle() is False
    finally:
        await feed.stop()
    assert [e["event"] for e in logs].count("stream_unavailable") == 1
    assert sent == ["Trade stream unavailable: polling"]
    assert feed.stream_status == "disconnected"  # /health: degraded (ops/health.py)
    assert system.stream_status == "polling"  # the backtest-style stack has no stream
    assert [e for e in logs if e["event"] == "stream_disconnected"]


async def test_a_bracket_is_followed_through_its_legs_from_events(stack: Any) -> None:
    """Entry, legs working, the take-profit filling and the stop canceled with it: the book
    keeps the protection and then the flat position as the broker has them."""
    core, broker, system = stack
    book = OrderEventBook(journal=system.journal, reconciler=system.reconciler, executor=system.executor)
    book.rebase(*(await rest_truth(broker)))
    since = core.broker.event_count
    price = (await broker.get_latest_trades(["SPY"]))["SPY"].p
    await broker.submit_order(OrderRequest.bracket(
        "SPY", D(5), "buy", take_profit_price=(price * D("1.05")).quantize(D("0.01")),
        stop_loss_price=(price * D("0.95")).quantize(D("0.01")), time_in_force="gtc", client_order_id="b-1"))
    await core.clock.sleep(120)
    for update in sim_updates(core, since):
        await book.handle(update)
    assert book.orders_stale  # a bracket parent without its legs: one re-list
    book.replace_open_orders(await broker.list_orders(status="open", nested=True))
    _account, positions, orders = book.view()
    assert [p.qty for p in positions] == [D(5)] and protected_quantity(positions[0], orders) == D(5)
    since = core.broker.event_count
    core.shock(["SPY"], 10.0)  # through the take-profit
    await core.clock.sleep(120)
    for update in sim_updates(core, since):
        await book.handle(update)
    truth_account, truth_positions, truth_orders, _ = await rest_truth(broker)
    view_account, view_positions, view_orders = book.view()
    assert truth_positions == [] and view_positions == []
    assert view_account.cash == truth_account.cash and view_account.equity == truth_account.equity
    assert {o.id for o in view_orders} == {o.id for o in truth_orders} == set()
    assert not book.orders_stale


async def test_an_unexpected_error_inside_a_connection_reconnects_instead_of_ending_the_stream() -> None:
    """Whatever trips inside one connection (here the on-connected callback), the client logs
    it and reconnects with backoff: the daemon never ends up polling forever without a stream."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            action = json.loads(msg.data)["action"]
            if action == "authenticate":
                await ws.send_bytes(b'{"stream":"authorization","data":{"action":"authenticate","status":"authorized"}}')
            elif action == "listen":
                await ws.send_bytes(b'{"stream":"listening","data":{"streams":["trade_updates"]}}')
        return ws

    app = web.Application()
    app.router.add_get("/stream", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    calls: list[int] = []

    async def nothing(*_: Any) -> None:
        return None

    async def trips_once(connection: int) -> None:
        calls.append(connection)
        if len(calls) == 1:
            raise RuntimeError("a bug in a callback")

    client = TradeStreamClient(f"ws://127.0.0.1:{port}/stream", "k", "s", on_update=nothing, on_connected=trips_once,
                               backoff_min_s=0.05, backoff_max_s=0.1)
    stop = asyncio.Event()
    try:
        with capture_logs() as logs:
            task = asyncio.ensure_future(client.run(stop))
            await _until(lambda: len(calls) >= 2, timeout=10)
            assert not task.done()
            stop.set()
            await asyncio.wait_for(task, 5)
    finally:
        await runner.cleanup()
    assert [e for e in logs if e["event"] == "stream_connection_failed"]
