"""What one odd field in what Alpaca sends may cost: never more than that field or that item.

Proven through the gateway's typed methods (aioresponses, no network), as the daemon reads:
a malformed optional field becomes its default with one warning per model/field/cause; a
malformed required (or trading-steering) field drops that one item with an ERROR, a count
and the alert hook, and the rest of the list stands; a malformed leg drops only that leg.
"""

from __future__ import annotations

import copy
import re
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest
from aioresponses import aioresponses
from structlog.testing import capture_logs

from core import errors
from api_gateway import ResilientAlpacaGateway
from broker.models import (
    Asset,
    Bar,
    CalendarDay,
    DroppedItem,
    Order,
    OrderRequest,
    parse_bar,
    reset_tolerance_memory,
    tolerated_fields,
)
from broker.rate_limit import RateLimiter

TRADING = "https://paper-api.alpaca.markets"
DATA = "https://data.alpaca.markets"
NOW = datetime(2025, 6, 24, 18, 0, tzinfo=timezone.utc)

# Alpaca's documented example order (tests/fixtures/alpaca/trading/order_limit_gtc_nanoseconds).
ORDER: dict[str, Any] = {
    "id": "d27f7175-073d-455d-a95d-89f43bb3ab77", "client_order_id": "ab7dcbfb-f862-4145-b5e0-27d1b562f5f4",
    "created_at": "2024-03-22T20:38:24.849157813Z", "updated_at": "2024-03-22T20:38:24.849157813Z",
    "submitted_at": "2024-03-22T20:38:24.848207033Z", "filled_at": None, "expired_at": None,
    "canceled_at": None, "failed_at": None, "replaced_at": None, "replaced_by": None,
    "replaces": None, "asset_id": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415", "symbol": "AAPL",
    "asset_class": "us_equity", "notional": None, "qty": "2", "filled_qty": "0",
    "filled_avg_price": None, "order_class": "", "order_type": "limit", "type": "limit",
    "side": "buy", "time_in_force": "gtc", "limit_price": "150", "stop_price": None,
    "status": "accepted", "extended_hours": False, "legs": None, "trail_percent": None,
    "trail_price": None, "hwm": None, "subtag": None, "source": None,
}
POSITION = {"asset_id": "904837e3-3b76-47ec-b432-046db621571b", "symbol": "AAPL",
            "exchange": "NASDAQ", "asset_class": "us_equity", "avg_entry_price": "100.0",
            "qty": "5", "side": "long", "market_value": "600.0", "cost_basis": "500.0"}
BAR = {"t": "2022-02-01T05:00:00Z", "o": 174, "h": 174.84, "l": 172.31, "c": 174.61,
       "v": 85998033, "n": 732412, "vw": 173.703516}
QUOTE = {"t": "2025-06-24T17:59:59.5Z", "ax": "V", "ap": 170, "as": 1, "bx": "V", "bp": 168.03,
         "bs": 1, "c": ["R"], "z": "C"}


def order(number: int, **changes: Any) -> dict[str, Any]:
    """The example order with its own ids (``number``) and ``changes``."""
    body = copy.deepcopy(ORDER)
    body["id"] = f"00000000-0000-4000-8000-{number:012d}"
    body["client_order_id"] = f"cid-{number}"
    body.update(changes)
    return body


def url(base: str, path: str) -> re.Pattern[str]:
    return re.compile(re.escape(base + path) + r"(\?.*)?$")


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


class FixedClock:
    def now(self) -> datetime:
        return NOW

    async def sleep(self, seconds: float) -> None:
        return None


async def _no_sleep(seconds: float) -> None:
    return None


@pytest.fixture(autouse=True)
def _fresh_tolerance_memory() -> Iterator[None]:
    reset_tolerance_memory()
    yield
    reset_tolerance_memory()


@pytest.fixture
def mock() -> Iterator[aioresponses]:
    with aioresponses() as responses:
        yield responses


@pytest.fixture
async def gateway() -> AsyncIterator[ResilientAlpacaGateway]:
    limiter_time = FakeTime()
    gw = ResilientAlpacaGateway(
        base_url=TRADING, data_url=DATA, key_id="PKTOLERANT", secret_key="tolerant-secret",
        clock=FixedClock(), sleep=_no_sleep, max_retries=0,
        rate_limiter=RateLimiter(monotonic=limiter_time.monotonic, sleep=limiter_time.sleep),
    )
    async with gw:
        yield gw


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


# -- malformed optional fields: the field goes, the item stays, one warning ---------------


async def test_500_orders_with_a_malformed_hwm_all_stand_with_one_warning(
    mock: aioresponses, gateway: ResilientAlpacaGateway
) -> None:
    mock.get(url(TRADING, "/v2/orders"), payload=[order(n, hwm="abc") for n in range(500)])
    with capture_logs() as logs:
        orders = await gateway.list_orders()
    assert len(orders) == 500 and all(o.hwm is None for o in orders)
    assert orders[0].limit_price == Decimal("150") and gateway.dropped_items == 0
    [warning] = events(logs, "broker_field_ignored")
    assert (warning["model"], warning["field"], warning["cause"]) == (
        "Order", "hwm", "not a decimal number")
    assert warning["log_level"] == "warning" and not events(logs, "broker_item_dropped")
    assert tolerated_fields()[("Order", "hwm", "not a decimal number")] == 500


async def test_each_distinct_cause_is_warned_once(
    mock: aioresponses, gateway: ResilientAlpacaGateway
) -> None:
    mock.get(url(TRADING, "/v2/orders"), payload=[
        order(1, hwm="abc", filled_at="yesterday"), order(2, hwm="NaN", trail_percent=[1]),
        order(3, hwm="abc", extended_hours="perhaps", subtag=7)])
    with capture_logs() as logs:
        orders = await gateway.list_orders()
    assert len(orders) == 3 and orders[2].extended_hours is False and orders[2].subtag is None
    warned = sorted((e["field"], e["cause"]) for e in events(logs, "broker_field_ignored"))
    assert warned == sorted([
        ("hwm", "not a decimal number"), ("hwm", "not a finite number"),
        ("filled_at", "not an RFC 3339 timestamp"), ("trail_percent", "expected a decimal number, got list"),
        ("extended_hours", "Input should be a valid boolean, unable to interpret input"),
        ("subtag", "Input should be a valid string"),
    ])


# -- malformed required or steering fields: that item goes, reported, the rest stands -----


async def test_an_order_with_a_malformed_qty_is_dropped_reported_and_the_rest_stands(
    mock: aioresponses, gateway: ResilientAlpacaGateway
) -> None:
    heard: list[DroppedItem] = []
    gateway.on_item_dropped = heard.append
    missing_id = order(3)
    del missing_id["client_order_id"]
    mock.get(url(TRADING, "/v2/orders"), payload=[order(1), order(2, qty="abc"), missing_id, order(4)])
    with capture_logs() as logs:
        orders = await gateway.list_orders()
    assert [o.client_order_id for o in orders] == ["cid-1", "cid-4"]
    assert gateway.dropped_items == 2
    dropped = events(logs, "broker_item_dropped")
    assert [(e["log_level"], e["model"], e["fields"], e["index"]) for e in dropped] == [
        ("error", "Order", ["qty"], 1), ("error", "Order", ["client_order_id"], 2)]
    assert dropped[0]["cause"] == "not a decimal number" and dropped[0]["item_id"] == order(2)["id"]
    assert dropped[1]["cause"] == "Field required"
    assert [(d.model, d.fields, d.where) for d in heard] == [
        ("Order", ("qty",), "GET /v2/orders"), ("Order", ("client_order_id",), "GET /v2/orders")]


async def test_a_malformed_stop_price_is_never_guessed(
    mock: aioresponses, gateway: ResilientAlpacaGateway
) -> None:
    """A stop whose price cannot be read is not taken for 'no stop price': it is dropped."""
    mock.get(url(TRADING, "/v2/orders"), payload=[order(1, type="stop", stop_price="1O2.5")])
    with capture_logs() as logs:
        assert await gateway.list_orders() == []
    assert [e["fields"] for e in events(logs, "broker_item_dropped")] == [["stop_price"]]
    assert not events(logs, "broker_field_ignored")


async def test_a_malformed_leg_drops_only_that_leg(
    mock: aioresponses, gateway: ResilientAlpacaGateway
) -> None:
    take = order(11, side="sell", status="held", order_class="bracket", limit_price="165")
    stop = order(12, side="sell", status="held", order_class="bracket", type="stop",
                 limit_price=None, stop_price="14O")
    parent = order(10, order_class="bracket", legs=[take, stop])
    mock.get(url(TRADING, f"/v2/orders/{parent['id']}"), payload=parent)
    with capture_logs() as logs:
        got = await gateway.get_order(parent["id"])
    assert got.legs is not None and [leg.id for leg in got.legs] == [take["id"]]
    [dropped] = events(logs, "broker_item_dropped")
    assert dropped["where"] == f"legs of order {parent['id']}" and dropped["item_id"] == stop["id"]
    assert dropped["fields"] == ["stop_price"] and gateway.dropped_items == 1


async def test_a_malformed_position_is_dropped_and_reported(
    mock: aioresponses, gateway: ResilientAlpacaGateway
) -> None:
    mock.get(url(TRADING, "/v2/positions"), payload=[
        {**POSITION, "symbol": "MSFT", "qty": "ten"}, POSITION,
        {**POSITION, "symbol": "TSLA", "market_value": "n/a"}])
    with capture_logs() as logs:
        positions = await gateway.list_positions()
    assert [(p.symbol, p.market_value) for p in positions] == [
        ("AAPL", Decimal("600.0")), ("TSLA", None)]
    assert [(e["item_id"], e["fields"]) for e in events(logs, "broker_item_dropped")] == [
        ("MSFT", ["qty"])]
    assert gateway.dropped_items == 1


async def test_a_dropped_activity_neither_ends_paging_nor_loses_the_cursor(
    mock: aioresponses, gateway: ResilientAlpacaGateway
) -> None:
    def fill(n: int, **changes: Any) -> dict[str, Any]:
        return {"id": f"2022020213550998{n}::fill-{n}", "activity_type": "FILL",
                "transaction_time": "2022-02-02T18:55:09.981482Z", "type": "fill",
                "price": "174.78", "qty": "1", "side": "buy", "symbol": "AAPL", "leaves_qty": "0",
                "order_id": f"order-{n}", "cum_qty": "1", "order_status": "filled", **changes}
    mock.get(url(TRADING, "/v2/account/activities"), payload=[fill(1), fill(2, price="$174")])
    mock.get(url(TRADING, "/v2/account/activities"), payload=[fill(3)])
    with capture_logs() as logs:
        activities = await gateway.get_activities(page_size=2)
    assert [a.order_id for a in activities] == ["order-1", "order-3"]
    second = [u for (verb, u) in mock.requests if verb == "GET" and "page_token" in str(u)]
    assert len(second) == 1 and second[0].query["page_token"] == fill(2)["id"]
    assert [e["fields"] for e in events(logs, "broker_item_dropped")] == [["price"]]


async def test_one_unusable_symbol_does_not_cost_the_others_their_market_data(
    mock: aioresponses, gateway: ResilientAlpacaGateway
) -> None:
    mock.get(url(DATA, "/v2/stocks/quotes/latest"), payload={"quotes": {
        "AAPL": QUOTE, "MSFT": {**QUOTE, "ap": "n/a"}}})
    mock.get(url(DATA, "/v2/stocks/snapshots"), payload={
        "AAPL": {"latestQuote": QUOTE, "dailyBar": BAR}, "MSFT": "garbage",
        "TSLA": {"latestQuote": {**QUOTE, "t": "noon"}, "dailyBar": BAR}})
    mock.get(url(DATA, "/v2/stocks/bars"), payload={"bars": {
        "AAPL": [BAR, {k: v for k, v in BAR.items() if k != "c"}, BAR]}, "next_page_token": None})
    with capture_logs() as logs:
        quotes = await gateway.get_latest_quotes(["AAPL", "MSFT"])
        snapshots = await gateway.get_snapshots(["AAPL", "MSFT", "TSLA"])
        bars = await gateway.get_bars(["AAPL"])
    assert list(quotes) == ["AAPL"]
    # A snapshot's parts steer trading (Snapshot.STRICT_FIELDS): a garbled quote rejects the
    # symbol's snapshot for the cycle rather than leaving a guess behind.
    assert sorted(snapshots) == ["AAPL"]
    assert [(e["symbol"], e["source"]) for e in events(logs, "market_data_rejected")] == [
        ("MSFT", "/v2/stocks/quotes/latest"), ("MSFT", "/v2/stocks/snapshots"),
        ("TSLA", "/v2/stocks/snapshots"), ("AAPL", "/v2/stocks/bars")]
    # A series with an unusable bar is no basis for indicators: the symbol sits the cycle out.
    assert "AAPL" not in bars and "AAPL" in gateway.data_rejections
    assert [e["where"] for e in events(logs, "broker_item_dropped")] == [
        "GET /v2/stocks/quotes/latest MSFT", "GET /v2/stocks/snapshots MSFT",
        "GET /v2/stocks/snapshots TSLA", "GET /v2/stocks/bars AAPL"]
    assert gateway.dropped_items == 4


async def test_a_failing_alert_hook_never_fails_the_read(
    mock: aioresponses, gateway: ResilientAlpacaGateway
) -> None:
    def broken(item: DroppedItem) -> None:
        raise RuntimeError("alert channel down")
    gateway.on_item_dropped = broken
    mock.get(url(TRADING, "/v2/orders"), payload=[order(1), order(2, side=None)])
    with capture_logs() as logs:
        orders = await gateway.list_orders()
    assert len(orders) == 1 and gateway.dropped_items == 1
    assert events(logs, "item_dropped_hook_failed")


# -- single objects, strict fields and enums ------------------------------------------------


async def test_an_unreadable_blocking_flag_fails_the_account_read_instead_of_guessing(
    mock: aioresponses, gateway: ResilientAlpacaGateway
) -> None:
    account = {"id": "a", "account_number": "PA1", "status": "ACTIVE", "cash": "1000",
               "equity": "1000", "buying_power": "2000", "trading_blocked": "maybe",
               "multiplier": "four"}
    mock.get(url(TRADING, "/v2/account"), payload=account)
    with pytest.raises(errors.MalformedResponse, match="trading_blocked"):
        await gateway.get_account()
    mock.get(url(TRADING, "/v2/account"), payload={**account, "trading_blocked": False})
    with capture_logs() as logs:
        read = await gateway.get_account()
    assert read.multiplier is None and read.can_trade
    assert [e["field"] for e in events(logs, "broker_field_ignored")] == ["multiplier"]


def test_unknown_enum_values_are_kept_as_sent_and_warned_once() -> None:
    with capture_logs() as logs:
        first = Order.model_validate(order(1, status="pending_review_v2", order_class="mleg2"))
        Order.model_validate(order(2, status="pending_review_v2"))
        asset = Asset.model_validate({"id": "x", "class": "crypto_perp", "exchange": "ASCX",
                                      "symbol": "BTC-PERP", "status": "active", "tradable": True})
    assert first.status == "pending_review_v2" and first.is_open  # unknown: may still fill
    assert first.order_class == "mleg2" and asset.asset_class == "crypto_perp"
    unknown = [(e["field"], e["value"]) for e in events(logs, "broker_enum_unknown")]
    assert unknown == [("status", "'pending_review_v2'"), ("order_class", "'mleg2'")]


def test_calendar_session_times_are_optional_but_open_and_close_are_not() -> None:
    with capture_logs() as logs:
        day = CalendarDay.model_validate({"date": "2024-11-29", "open": "09:30", "close": "13:00",
                                          "session_open": "4am", "session_close": "2000"})
    assert day.session_open is None and day.session_close is not None
    assert [e["field"] for e in events(logs, "broker_field_ignored")] == ["session_open"]
    with pytest.raises(ValueError, match="HH:MM"):
        CalendarDay.model_validate({"date": "2024-11-29", "open": "9.30am", "close": "13:00"})


def test_fast_path_and_validation_agree_on_a_tolerated_field() -> None:
    raw = {**BAR, "vw": "abc"}
    fast, slow = parse_bar(raw), Bar.model_validate(raw)
    assert fast == slow and fast.vw is None and fast.model_fields_set == slow.model_fields_set


# -- the OCO request Alpaca accepts -------------------------------------------------------


def test_an_oco_with_its_limit_only_in_take_profit_is_accepted_as_alpaca_documents_it() -> None:
    request = OrderRequest(symbol="SPY", qty="100", side="sell", type="limit",
                           time_in_force="gtc", order_class="oco",
                           take_profit={"limit_price": "301"},
                           stop_loss={"stop_price": "299", "limit_price": "298.5"})
    payload = request.to_payload()
    assert "limit_price" not in payload and payload["take_profit"] == {"limit_price": "301"}
    # The rest of the OCO rules still hold, and other limit orders still need their price.
    with pytest.raises(ValueError, match="must be above stop_loss"):
        OrderRequest(symbol="SPY", qty="100", side="sell", type="limit", order_class="oco",
                     take_profit={"limit_price": "290"}, stop_loss={"stop_price": "299"})
    with pytest.raises(ValueError, match="oco orders must be limit orders"):
        OrderRequest(symbol="SPY", qty="100", side="sell", type="market", order_class="oco",
                     take_profit={"limit_price": "301"}, stop_loss={"stop_price": "299"})
    with pytest.raises(ValueError, match="limit orders need limit_price"):
        OrderRequest(symbol="SPY", qty="100", side="buy", type="limit", order_class="bracket",
                     take_profit={"limit_price": "301"}, stop_loss={"stop_price": "299"})


# -- the loop hears of every dropped item ---------------------------------------------------


@pytest.mark.e2e
@pytest.mark.timeout(120)
async def test_the_loop_alerts_when_the_gateway_drops_an_unusable_broker_item(tmp_path: Any) -> None:
    from tests.test_e2e_safety_support import cycle, sim_stack

    async with sim_stack(tmp_path, start="2025-03-04T10:30:00") as stack:
        system = stack.new_system()
        assert stack.gateway.on_item_dropped is not None, "the daemon wires its alert hook"
        await system.startup()
        await cycle(system, minutes=1)
        # An unreadable order arrives in the next list (as the corpus tests show the gateway
        # drops it); the loop raises a CRITICAL alert at the end of that cycle.
        good, bad = order(1), order(2, qty="12 shares")
        with capture_logs():
            kept = stack.gateway.parser.parse_list(Order, [good, bad], "GET /v2/orders")
        assert [o.client_order_id for o in kept] == ["cid-1"] and stack.gateway.dropped_items == 1
        with capture_logs() as logs:
            await cycle(system, minutes=1)
    [alert] = [e for e in events(logs, "alert") if e["title"] == "Broker sent an unusable Order"]
    assert alert["alert_level"] == "critical"
    assert bad["id"] in alert["message"] and "qty" in alert["message"]


def test_a_bad_leg_under_a_parent_with_a_tolerated_field_is_reported_once() -> None:
    bad_leg = order(21, type="stop", stop_price="x", limit_price=None)
    with capture_logs() as logs:
        parent = Order.model_validate(order(20, hwm="abc", legs=[order(22), bad_leg]))
    assert parent.hwm is None and parent.legs is not None and len(parent.legs) == 1
    assert [e["item_id"] for e in events(logs, "broker_item_dropped")] == [bad_leg["id"]]
    with capture_logs() as logs, pytest.raises(ValueError):
        Order.model_validate(order(23, qty="x", legs=[bad_leg]))  # the parent itself goes
    assert not events(logs, "broker_item_dropped"), "its legs are not reported on their own"


async def test_an_unreadable_207_item_is_dropped_and_the_other_results_stand(
    mock: aioresponses, gateway: ResilientAlpacaGateway
) -> None:
    mock.delete(url(TRADING, "/v2/positions"), status=207, payload=[
        {"symbol": "AAPL", "status": 200, "body": order(1, side="sell", qty=None)},
        {"symbol": "MSFT", "status": "two hundred"},
        {"symbol": "TSLA", "status": 200, "body": order(3, side="sell", created_at="now")},
    ])
    with capture_logs() as logs:
        items = await gateway.close_all_positions()
        orders = [item.order for item in items]
    assert [item.symbol for item in items] == ["AAPL", "TSLA"] and gateway.dropped_items == 1
    assert orders[0] is not None and orders[1] is None  # an order no one can read is None
    assert [(e["model"], e["fields"]) for e in events(logs, "broker_item_dropped")] == [
        ("MultiStatusItem", ["status"]), ("Order", ["created_at"])]
