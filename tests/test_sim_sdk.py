"""The official alpaca-py SDK, pointed at the simulator with ``url_override``, works unchanged.

The server runs on 127.0.0.1 in a background thread with its own event loop (alpaca-py is
synchronous). The clock runs at "max" and moves only through the control API, so fills are
deterministic. The rate limit is off: alpaca-py sleeps 3 s per 429 retry.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

import pytest
import requests
from alpaca.common.exceptions import APIError
from alpaca.data.enums import DataFeed
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.historical.news import NewsClient
from alpaca.data.requests import (
    NewsRequest,
    StockBarsRequest,
    StockLatestQuoteRequest,
    StockLatestTradeRequest,
    StockSnapshotRequest,
)
from alpaca.data.timeframe import TimeFrame
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import AssetStatus, OrderClass, OrderSide, OrderStatus, QueryOrderStatus, TimeInForce
from alpaca.trading.requests import (
    GetAssetsRequest,
    GetCalendarRequest,
    GetOrderByIdRequest,
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
    StopLossRequest,
    StopOrderRequest,
    TakeProfitRequest,
    TrailingStopOrderRequest,
)

from simulator.core import SimulatorCore
from simulator.server import RunningServer, start_server

pytestmark = pytest.mark.e2e

KEY, SECRET = "sdk-key", "sdk-secret"
START = "2025-03-04T10:00:00-05:00"  # a Tuesday, regular hours
SYMBOLS = ["SPY", "AAPL", "MSFT"]


class ThreadedSimulator:
    """The simulator server on its own event loop in a daemon thread."""

    def __init__(self, core: SimulatorCore, **server_kw: Any) -> None:
        self.core = core
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="sim-server", daemon=True)
        self.thread.start()
        future = asyncio.run_coroutine_threadsafe(start_server(core, **server_kw), self.loop)
        self.server: RunningServer = future.result(timeout=30)
        self.url = self.server.base_url
        self.data_calls = 0

    def control(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        keys = {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}  # the control API takes the keys too
        if body is None:
            response = requests.get(self.url + path, headers=keys, timeout=30)
        else:
            response = requests.post(self.url + path, json=body, headers=keys, timeout=30)
        response.raise_for_status()
        return response.json()

    def advance(self, minutes: float) -> None:
        self.control("/_sim/v1/clock", {"advance_minutes": minutes})

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def sim() -> Iterator[ThreadedSimulator]:
    core = SimulatorCore.create(symbols=SYMBOLS, start=START, speed=None, seed=11)
    simulator = ThreadedSimulator(core, key=KEY, secret=SECRET, rate_limit_per_minute=None)
    try:
        yield simulator
    finally:
        simulator.close()


@pytest.fixture(scope="module")
def trading(sim: ThreadedSimulator) -> TradingClient:
    return TradingClient(KEY, SECRET, paper=True, url_override=sim.url)


@pytest.fixture(scope="module")
def data(sim: ThreadedSimulator) -> StockHistoricalDataClient:
    return StockHistoricalDataClient(KEY, SECRET, url_override=sim.url)


def last_price(data: StockHistoricalDataClient, symbol: str) -> Decimal:
    trade = data.get_stock_latest_trade(StockLatestTradeRequest(symbol_or_symbols=symbol, feed=DataFeed.IEX))
    return Decimal(str(trade[symbol].price))


def cents(value: Decimal) -> float:
    return float(value.quantize(Decimal("0.01")))


def test_wrong_keys_are_refused(sim: ThreadedSimulator) -> None:
    client = TradingClient("wrong", "keys", paper=True, url_override=sim.url)
    with pytest.raises(APIError) as info:
        client.get_account()
    assert info.value.status_code == 401


def test_account_clock_calendar_assets(trading: TradingClient) -> None:
    account = trading.get_account()
    assert account.status == "ACTIVE"
    assert Decimal(account.cash) == Decimal("100000")
    assert Decimal(account.equity) == Decimal("100000")

    clock = trading.get_clock()
    assert clock.is_open
    assert clock.timestamp.astimezone(timezone.utc) == datetime(2025, 3, 4, 15, 0, tzinfo=timezone.utc)

    days = trading.get_calendar(GetCalendarRequest(start=date(2025, 3, 1), end=date(2025, 3, 31)))
    assert len(days) == 21  # March 2025: 21 sessions, no holiday
    assert days[0].date == date(2025, 3, 3)
    assert days[0].open.hour == 9 and days[0].open.minute == 30

    assets = trading.get_all_assets(GetAssetsRequest(status=AssetStatus.ACTIVE))
    assert set(SYMBOLS) <= {a.symbol for a in assets}
    spy = trading.get_asset("SPY")
    assert spy.symbol == "SPY" and spy.tradable


def test_orders_positions_and_close_all(sim: ThreadedSimulator, trading: TradingClient, data: StockHistoricalDataClient) -> None:
    # Market order: fills within the next simulated minute.
    market = trading.submit_order(MarketOrderRequest(
        symbol="SPY", qty=10, side=OrderSide.BUY, time_in_force=TimeInForce.DAY, client_order_id="sdk-market-1"))
    assert market.client_order_id == "sdk-market-1"
    sim.advance(1)
    filled = trading.get_order_by_id(market.id)
    assert filled.status == OrderStatus.FILLED
    assert Decimal(str(filled.filled_qty)) == 10
    assert trading.get_order_by_client_id("sdk-market-1").id == market.id
    spy_price = last_price(data, "SPY")

    # Resting orders: a far limit buy, a protective stop and a trailing stop on the SPY position.
    aapl_price = last_price(data, "AAPL")
    limit = trading.submit_order(LimitOrderRequest(
        symbol="AAPL", qty=3, side=OrderSide.BUY, time_in_force=TimeInForce.GTC,
        limit_price=cents(aapl_price * Decimal("0.5"))))
    stop = trading.submit_order(StopOrderRequest(
        symbol="SPY", qty=2, side=OrderSide.SELL, time_in_force=TimeInForce.GTC,
        stop_price=cents(spy_price * Decimal("0.8"))))
    trailing = trading.submit_order(TrailingStopOrderRequest(
        symbol="SPY", qty=3, side=OrderSide.SELL, time_in_force=TimeInForce.DAY, trail_percent=15))
    assert trailing.trail_percent is not None and Decimal(trailing.trail_percent) == 15

    # Bracket: market entry, take-profit and stop-loss legs.
    msft_price = last_price(data, "MSFT")
    bracket = trading.submit_order(MarketOrderRequest(
        symbol="MSFT", qty=5, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, order_class=OrderClass.BRACKET,
        take_profit=TakeProfitRequest(limit_price=cents(msft_price * Decimal("1.2"))),
        stop_loss=StopLossRequest(stop_price=cents(msft_price * Decimal("0.8")))))
    sim.advance(1)
    entry = trading.get_order_by_id(bracket.id, GetOrderByIdRequest(nested=True))
    assert entry.status == OrderStatus.FILLED
    assert entry.order_class == OrderClass.BRACKET
    assert entry.legs is not None and len(entry.legs) == 2
    assert {leg.side for leg in entry.legs} == {OrderSide.SELL}

    # Replace the limit: a new order that replaces the old one.
    new_limit = cents(aapl_price * Decimal("0.6"))
    replaced = trading.replace_order_by_id(limit.id, ReplaceOrderRequest(limit_price=new_limit))
    assert replaced.id != limit.id and replaced.replaces == limit.id
    assert float(replaced.limit_price) == pytest.approx(new_limit)
    assert trading.get_order_by_id(limit.id).status == OrderStatus.REPLACED

    # List with nested legs: the bracket parent carries its legs.
    orders = trading.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, nested=True, limit=500))
    by_id = {o.id: o for o in orders}
    assert by_id[bracket.id].legs is not None and len(by_id[bracket.id].legs) == 2
    assert {market.id, stop.id, trailing.id, replaced.id} <= set(by_id)
    open_orders = trading.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN))
    assert replaced.id in {o.id for o in open_orders}

    # Cancel one, then all.
    trading.cancel_order_by_id(replaced.id)
    assert trading.get_order_by_id(replaced.id).status == OrderStatus.CANCELED
    responses = trading.cancel_orders()
    assert {r.status for r in responses} == {200}
    assert {stop.id, trailing.id} <= {r.id for r in responses}
    assert trading.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN)) == []

    # Positions, then close them all.
    positions = {p.symbol: p for p in trading.get_all_positions()}
    assert Decimal(positions["SPY"].qty) == 10
    assert Decimal(positions["MSFT"].qty) == 5
    assert trading.get_open_position("SPY").side == "long"
    closing = trading.close_all_positions(cancel_orders=True)
    assert {c.symbol for c in closing} == {"SPY", "MSFT"}
    assert {c.status for c in closing} == {200}
    sim.advance(1)
    assert trading.get_all_positions() == []
    account = trading.get_account()
    assert Decimal(account.equity) == Decimal(account.cash)


def test_bars_paginate_across_pages(sim: ThreadedSimulator, data: StockHistoricalDataClient, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = sim.core.data.bars

    def counting(params: Any) -> Any:
        calls.append(dict(params))
        return original(params)

    monkeypatch.setattr(sim.core.data, "bars", counting)
    request = StockBarsRequest(
        symbol_or_symbols=SYMBOLS, timeframe=TimeFrame.Minute, feed=DataFeed.IEX,
        start=datetime(2025, 2, 24, tzinfo=timezone.utc), end=datetime(2025, 3, 4, 14, 0, tzinfo=timezone.utc))
    bars = data.get_stock_bars(request)
    assert len(calls) >= 2, "more than 10,000 bars must take several pages"
    assert calls[1]["page_token"]
    counts = {symbol: len(bars.data[symbol]) for symbol in SYMBOLS}
    assert sum(counts.values()) > 10_000
    for symbol in SYMBOLS:
        stamps = [b.timestamp for b in bars.data[symbol]]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)  # pages joined cleanly
    daily = data.get_stock_bars(StockBarsRequest(
        symbol_or_symbols="SPY", timeframe=TimeFrame.Day, feed=DataFeed.IEX,
        start=datetime(2024, 3, 1, tzinfo=timezone.utc)))
    assert len(daily.data["SPY"]) >= 250
    assert all(b.high >= b.low > 0 for b in daily.data["SPY"])


def test_latest_quotes_trades_and_snapshots(data: StockHistoricalDataClient) -> None:
    quotes = data.get_stock_latest_quote(StockLatestQuoteRequest(symbol_or_symbols=SYMBOLS, feed=DataFeed.IEX))
    assert set(quotes) == set(SYMBOLS)
    for quote in quotes.values():
        assert 0 < quote.bid_price < quote.ask_price
    trades = data.get_stock_latest_trade(StockLatestTradeRequest(symbol_or_symbols=SYMBOLS, feed=DataFeed.IEX))
    for symbol, trade in trades.items():
        assert trade.price > 0 and trade.size > 0
        assert quotes[symbol].bid_price * 0.99 <= trade.price <= quotes[symbol].ask_price * 1.01
    snapshots = data.get_stock_snapshot(StockSnapshotRequest(symbol_or_symbols=SYMBOLS, feed=DataFeed.IEX))
    for symbol in SYMBOLS:
        snap = snapshots[symbol]
        assert snap.latest_trade is not None and snap.latest_quote is not None
        assert snap.daily_bar is not None and snap.previous_daily_bar is not None
        assert snap.minute_bar is not None


def test_news(sim: ThreadedSimulator) -> None:
    news = NewsClient(KEY, SECRET, url_override=sim.url).get_news(NewsRequest(symbols="SPY,AAPL"))
    articles = news.data["news"]
    assert all(a.headline for a in articles)


# -- rejections: the SDK raises what it raises against Alpaca -------------------------------


def flatten(sim: ThreadedSimulator, trading: TradingClient) -> None:
    trading.cancel_orders()
    trading.close_all_positions(cancel_orders=True)
    sim.advance(1)
    assert trading.get_all_positions() == []


def alpaca_error(info: pytest.ExceptionInfo[APIError]) -> tuple[int | None, int, str]:
    return info.value.status_code, info.value.code, info.value.message


def test_every_rejection_reaches_the_sdk_with_alpacas_status_code_and_body(
        sim: ThreadedSimulator, trading: TradingClient, data: StockHistoricalDataClient) -> None:
    try:
        buy = trading.submit_order(MarketOrderRequest(
            symbol="AAPL", qty=10, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))
        sim.advance(1)
        assert trading.get_order_by_id(buy.id).status == OrderStatus.FILLED

        # Cancel or replace of an order in a final state: 422 42210000 naming the state.
        with pytest.raises(APIError) as final:
            trading.cancel_order_by_id(buy.id)
        assert alpaca_error(final) == (422, 42210000, 'order is already in "filled" state')
        with pytest.raises(APIError) as replace:
            trading.replace_order_by_id(buy.id, ReplaceOrderRequest(limit_price=1.0))
        assert alpaca_error(replace) == (422, 42210000, 'order is already in "filled" state')

        # An unknown well-formed id: 404; a malformed one: 422 40010001.
        with pytest.raises(APIError) as unknown:
            trading.get_order_by_id(uuid.uuid4())
        assert alpaca_error(unknown) == (404, 40410000, "order not found")
        # alpaca-py refuses a non-UUID id before sending; the wire answer, for other clients:
        for method in ("GET", "DELETE"):
            answer = requests.request(method, f"{sim.url}/v2/orders/not-an-order-id", timeout=30,
                                      headers={"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET})
            assert answer.status_code == 422
            assert answer.json() == {"code": 40010001, "message": "order_id is missing"}

        # A stop holds every share: a sell is refused with the holding order named.
        stop = trading.submit_order(StopOrderRequest(
            symbol="AAPL", qty=10, side=OrderSide.SELL, time_in_force=TimeInForce.GTC,
            stop_price=cents(last_price(data, "AAPL") * Decimal("0.8"))))
        with pytest.raises(APIError) as held:
            trading.submit_order(MarketOrderRequest(
                symbol="AAPL", qty=10, side=OrderSide.SELL, time_in_force=TimeInForce.DAY))
        status, code, message = alpaca_error(held)
        assert (status, code) == (403, 40310000)
        assert message == "insufficient qty available for order (requested: 10, available: 0)"
        body = json.loads(str(held.value))
        assert body["available"] == "0" and body["existing_qty"] == "10" and body["held_for_orders"] == "10"
        assert body["related_orders"] == [str(stop.id)] and body["symbol"] == "AAPL"

        # A buy while the sell stop rests: a potential wash trade, 422 42210000.
        with pytest.raises(APIError) as wash:
            trading.submit_order(MarketOrderRequest(
                symbol="AAPL", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))
        assert alpaca_error(wash) == (422, 42210000, "potential wash trade detected. use complex orders")
    finally:
        flatten(sim, trading)


def test_rate_limit_and_race_faults_reach_the_sdk_as_alpacas_errors(
        sim: ThreadedSimulator, trading: TradingClient, data: StockHistoricalDataClient) -> None:
    impatient = TradingClient(KEY, SECRET, paper=True, url_override=sim.url)
    impatient._retry = 0  # alpaca-py otherwise sleeps 3 s and retries a 429 three times
    try:
        sim.control("/_sim/v1/faults", {"rate_limit": 1.0, "endpoints": "/v2/account"})
        with pytest.raises(APIError) as limited:
            impatient.get_account()
        assert alpaca_error(limited) == (429, 42910000, "rate limit exceeded")
        headers = limited.value.response.headers
        assert headers["X-RateLimit-Remaining"] == "0" and int(headers["X-RateLimit-Reset"]) > 0
        assert "Retry-After" not in headers

        trading.submit_order(MarketOrderRequest(
            symbol="MSFT", qty=4, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))
        sim.advance(1)
        stop = trading.submit_order(StopOrderRequest(
            symbol="MSFT", qty=4, side=OrderSide.SELL, time_in_force=TimeInForce.GTC,
            stop_price=cents(last_price(data, "MSFT") * Decimal("0.9"))))
        sim.control("/_sim/v1/faults", {"race": 1.0})
        with pytest.raises(APIError) as raced:
            trading.cancel_order_by_id(stop.id)
        assert alpaca_error(raced) == (422, 42210000, 'order is already in "filled" state')
        assert trading.get_order_by_id(stop.id).status == OrderStatus.FILLED
        assert trading.get_all_positions() == []
    finally:
        sim.control("/_sim/v1/faults", {"clear": True})
        flatten(sim, trading)
