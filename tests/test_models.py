"""Parsing the broker's objects as the reference shows them, and building order requests."""

from __future__ import annotations

import csv
import json
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest
from pydantic import BaseModel, ValidationError

from core import errors
from core.clock import EXCHANGE_TZ
from broker.models import (
    Account,
    Activity,
    ApiResponse,
    Asset,
    Bar,
    CalendarDay,
    Clock,
    ErrorBody,
    MultiStatusItem,
    NewsArticle,
    Order,
    OrderRequest,
    Position,
    Quote,
    Snapshot,
    Trade,
    parse_bar,
    parse_quote,
    parse_snapshot,
    parse_trade,
)
from tests.conftest import SHARED_DATA

ORDER_JSON = {
    "id": "7b08df51-c1ac-453c-99f9-323a5f075f0d",
    "client_order_id": "5680c4bc-9ac1-4a12-a44c-df427ba53032",
    "created_at": "2023-12-12T22:31:24.668464435Z",
    "updated_at": "2023-12-12T22:31:24.668464435Z",
    "submitted_at": "2023-12-12T22:31:24.577215743Z",
    "filled_at": None, "expired_at": None, "canceled_at": None, "failed_at": None,
    "replaced_at": None, "replaced_by": None, "replaces": None,
    "asset_id": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415", "symbol": "AAPL",
    "asset_class": "us_equity", "notional": None, "qty": "2", "filled_qty": "0",
    "filled_avg_price": None, "order_class": "", "order_type": "limit", "type": "limit",
    "side": "buy", "time_in_force": "gtc", "limit_price": "150", "stop_price": None,
    "status": "accepted", "extended_hours": False, "legs": None, "trail_percent": None,
    "trail_price": None, "hwm": None, "subtag": None, "source": "access_key",
}

ACCOUNT_JSON = {
    "id": "904837e3-3b76-47ec-b432-046db621571b", "account_number": "PA3XXXXXXX",
    "status": "ACTIVE", "currency": "USD", "cash": "-23140.2", "portfolio_value": "103820.56",
    "equity": "103820.56", "last_equity": "103529.24", "buying_power": "262113.632",
    "multiplier": "4", "trading_blocked": False, "account_blocked": False,
    "trade_suspended_by_user": False, "shorting_enabled": True,
    "created_at": "2019-06-12T22:47:07.99658Z", "balance_asof": "2023-09-27",
    "crypto_tier": 1, "admin_configurations": {}, "user_configurations": None,
}


def test_order_from_the_reference_example_parses_nanoseconds_and_strings() -> None:
    order = Order.model_validate(ORDER_JSON)
    assert order.created_at == datetime(2023, 12, 12, 22, 31, 24, 668464, tzinfo=timezone.utc)
    assert order.submitted_at is not None and order.submitted_at.microsecond == 577215
    assert order.qty == Decimal("2") and order.limit_price == Decimal("150")
    assert order.filled_qty == Decimal("0") and isinstance(order.filled_qty, Decimal)
    assert order.order_class == "simple"  # "" on the wire means simple
    assert order.is_open and not order.is_terminal
    assert order.remaining_qty == Decimal("2")


@pytest.mark.parametrize(
    ("status", "terminal"),
    [("filled", True), ("canceled", True), ("expired", True), ("replaced", True),
     ("rejected", True), ("new", False), ("partially_filled", False), ("held", False),
     ("pending_cancel", False), ("done_for_day", False), ("some_future_status", False)],
)
def test_order_open_and_terminal_states(status: str, terminal: bool) -> None:
    order = Order.model_validate({**ORDER_JSON, "status": status})
    assert order.is_terminal is terminal
    assert order.is_open is (not terminal)


def test_order_with_nested_legs_and_fill() -> None:
    leg = {**ORDER_JSON, "id": "leg-1", "client_order_id": "leg-1", "type": "stop",
           "side": "sell", "status": "held", "stop_price": "95.00", "limit_price": None}
    order = Order.model_validate({**ORDER_JSON, "order_class": "bracket", "legs": [leg],
                                  "filled_qty": "1.5", "filled_avg_price": "149.987"})
    assert order.legs is not None and order.legs[0].stop_price == Decimal("95.00")
    assert order.legs[0].status == "held"
    assert order.filled_qty == Decimal("1.5") and order.remaining_qty == Decimal("0.5")
    assert order.filled_avg_price == Decimal("149.987")


def test_missing_required_order_field_is_a_clear_error() -> None:
    broken = dict(ORDER_JSON)
    del broken["client_order_id"]
    with pytest.raises(ValidationError) as info:
        Order.model_validate(broken)
    assert "client_order_id" in str(info.value)
    assert "Field required" in str(info.value)


def test_naive_or_garbage_timestamps_are_refused() -> None:
    with pytest.raises(ValidationError, match="no time zone"):
        Order.model_validate({**ORDER_JSON, "created_at": "2023-12-12T22:31:24"})
    with pytest.raises(ValidationError, match="not an RFC 3339 timestamp"):
        Order.model_validate({**ORDER_JSON, "created_at": "yesterday"})


def test_account_without_the_retired_pdt_fields() -> None:
    account = Account.model_validate(ACCOUNT_JSON)
    assert account.pattern_day_trader is None and account.daytrade_count is None
    assert account.daytrading_buying_power is None
    assert account.cash == Decimal("-23140.2") and account.equity == Decimal("103820.56")
    assert account.balance_asof == date(2023, 9, 27)
    assert account.created_at is not None and account.created_at.tzinfo is not None
    assert account.can_trade


def test_account_with_pdt_fields_and_blocked_trading() -> None:
    account = Account.model_validate({**ACCOUNT_JSON, "pattern_day_trader": True,
                                      "daytrade_count": 3, "daytrading_buying_power": "0",
                                      "trading_blocked": True})
    assert account.pattern_day_trader is True and account.daytrade_count == 3
    assert account.daytrading_buying_power == Decimal("0")
    assert not account.can_trade


def test_account_missing_equity_is_refused_by_name() -> None:
    broken = {k: v for k, v in ACCOUNT_JSON.items() if k != "equity"}
    with pytest.raises(ValidationError, match="equity"):
        Account.model_validate(broken)


def test_account_refuses_a_non_number_money_field() -> None:
    with pytest.raises(ValidationError, match="not a decimal number"):
        Account.model_validate({**ACCOUNT_JSON, "cash": "lots"})
    with pytest.raises(ValidationError, match="not a finite number"):
        Account.model_validate({**ACCOUNT_JSON, "cash": "NaN"})


def test_clock_with_nanoseconds_and_offsets() -> None:
    clock = Clock.model_validate({
        "timestamp": "2025-06-24T14:15:22.123456789-04:00", "is_open": True,
        "next_open": "2025-06-25T09:30:00-04:00", "next_close": "2025-06-24T16:00:00-04:00",
    })
    assert clock.timestamp == datetime(2025, 6, 24, 18, 15, 22, 123456, tzinfo=timezone.utc)
    assert clock.next_close.utcoffset() is not None
    assert clock.next_close == datetime(2025, 6, 24, 20, 0, tzinfo=timezone.utc)


def test_calendar_day_gives_aware_exchange_times_including_early_close() -> None:
    day = CalendarDay.model_validate({"date": "2024-11-29", "open": "09:30", "close": "13:00",
                                      "session_open": "0400", "session_close": "2000",
                                      "settlement_date": "2024-12-02"})
    assert day.open == datetime(2024, 11, 29, 9, 30, tzinfo=EXCHANGE_TZ)
    assert day.close.hour == 13 and day.close.tzinfo is not None
    assert day.close_utc == datetime(2024, 11, 29, 18, 0, tzinfo=timezone.utc)  # EST = UTC-5
    assert day.session_open is not None and day.session_open.hour == 4
    summer = CalendarDay.model_validate({"date": "2025-07-01", "open": "09:30", "close": "16:00"})
    assert summer.open_utc == datetime(2025, 7, 1, 13, 30, tzinfo=timezone.utc)  # EDT = UTC-4
    with pytest.raises(ValidationError, match="HH:MM"):
        CalendarDay.model_validate({"date": "2025-07-01", "open": "half past nine", "close": "16:00"})


def test_asset_class_alias_and_unknown_values() -> None:
    asset = Asset.model_validate({
        "id": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415", "class": "crypto_perp", "exchange": "ASCX",
        "symbol": "AAPL", "name": "Apple Inc.", "status": "active", "tradable": True,
        "marginable": True, "shortable": True, "easy_to_borrow": True, "fractionable": True,
        "attributes": None, "maintenance_margin_requirement": 30, "brand_new_field": 1,
    })
    assert asset.asset_class == "crypto_perp" and asset.exchange == "ASCX"
    assert asset.attributes == [] and asset.maintenance_margin_requirement == Decimal("30")
    assert asset.model_dump(by_alias=True)["class"] == "crypto_perp"


def test_position_qty_is_signed_and_side_is_known() -> None:
    raw = {"asset_id": "x", "symbol": "SQQQ", "exchange": "NASDAQ", "asset_class": "us_equity",
           "qty": "-10", "side": "short", "avg_entry_price": "12.50", "cost_basis": "-125",
           "market_value": "-120", "unrealized_pl": "5", "unrealized_plpc": "0.04",
           "current_price": "12.00", "qty_available": "-10"}
    short = Position.model_validate(raw)
    assert short.qty == Decimal("-10") and short.is_short and short.side == "short"
    # A server sending an unsigned short quantity is normalised from the side.
    assert Position.model_validate({**raw, "qty": "10"}).qty == Decimal("-10")
    long = Position.model_validate({"symbol": "AAPL", "qty": "3", "avg_entry_price": "100"})
    assert long.side == "long" and long.is_long


def test_bar_quote_trade_from_market_data_numbers() -> None:
    bar = Bar.model_validate({"t": "2024-01-03T05:00:00Z", "o": 184.22, "h": 185.88,
                              "l": 183.43, "c": 184.25, "v": 58414460, "n": 656853,
                              "vw": 184.319693})
    assert bar.o == Decimal("184.22") and bar.close == Decimal("184.25")
    assert bar.t.astimezone(EXCHANGE_TZ).hour == 0  # daily bars start at midnight ET
    quote = Quote.model_validate({"t": "2024-01-03T20:59:59.123456789Z", "ax": "V",
                                  "ap": 184.26, "as": 3, "bx": "V", "bp": 184.24, "bs": 2,
                                  "c": ["R"], "z": "C"})
    assert quote.ask == Decimal("184.26") and quote.ask_size == Decimal("3")
    assert quote.t.microsecond == 123456 and not quote.is_crossed
    assert quote.mid == Decimal("184.25")
    trade = Trade.model_validate({"t": "2024-01-03T20:59:59.9Z", "x": "V", "p": "184.25",
                                  "s": 100, "i": 52983525029461, "c": ["@"], "z": "C"})
    assert trade.price == Decimal("184.25") and trade.size == Decimal("100")


def test_snapshot_with_missing_parts() -> None:
    snap = Snapshot.model_validate({
        "latestTrade": {"t": "2024-01-03T20:59:59Z", "p": 10, "s": 1},
        "latestQuote": None,
        "dailyBar": {"t": "2024-01-03T05:00:00Z", "o": 1, "h": 2, "l": 0.5, "c": 1.5, "v": 10,
                     "n": 2, "vw": 1.2},
    })
    assert snap.latest_trade is not None and snap.latest_quote is None
    assert snap.daily_bar is not None and snap.minute_bar is None


def test_news_and_activity() -> None:
    article = NewsArticle.model_validate({
        "id": 24843171, "headline": "Apple ...", "author": "Benzinga Newsdesk",
        "created_at": "2022-01-05T22:00:37Z", "updated_at": "2022-01-05T22:00:38Z",
        "summary": "", "content": "", "url": None, "symbols": ["AAPL"], "source": "benzinga",
    })
    assert article.symbols == ["AAPL"] and article.images == []
    fill = Activity.model_validate({
        "id": "20220202135509981::2d7be4ff-d1f3-43e9-856a-0f5cf5c5088e", "activity_type": "FILL",
        "transaction_time": "2022-02-02T18:55:09.981482Z", "type": "fill", "price": "174.78",
        "qty": "2", "side": "buy", "symbol": "AAPL", "leaves_qty": "0",
        "order_id": "b5abe576-6a8a-49f3-a353-46b72c1ccae9", "cum_qty": "2",
        "order_status": "filled",
    })
    assert fill.price == Decimal("174.78") and fill.transaction_time is not None
    dividend = Activity.model_validate({"id": "d1", "activity_type": "DIV", "date": "2022-02-01",
                                        "net_amount": "1.25", "symbol": "T"})
    assert dividend.date == date(2022, 2, 1) and dividend.net_amount == Decimal("1.25")


def test_multi_status_items_for_cancel_all_and_close_all() -> None:
    ok = MultiStatusItem.model_validate({"id": "a", "status": 200})
    missing = MultiStatusItem.model_validate(
        {"id": "b", "status": 404, "body": {"code": 40410000, "message": "order not found"}})
    assert ok.ok and ok.error is None
    assert not missing.ok and missing.error is not None and missing.error.code == 40410000
    closed = MultiStatusItem.model_validate({"symbol": "AAPL", "status": 200, "body": ORDER_JSON})
    assert closed.order is not None and closed.order.symbol == "AAPL"
    held = MultiStatusItem.model_validate({"symbol": "SQQQ", "status": 403, "body": {
        "available": "0", "code": 40310000, "existing_qty": "1000", "held_for_orders": "1000",
        "message": "insufficient qty available for order (requested: 1000, available: 0)",
        "symbol": "SQQQ"}})
    assert held.error is not None and held.error.model_extra is not None
    assert held.error.model_extra["held_for_orders"] == "1000"
    with pytest.raises(ValidationError, match="neither id nor symbol"):
        MultiStatusItem.model_validate({"status": 200})


def test_error_body_from_data_api_has_no_code() -> None:
    body = ErrorBody.model_validate({"message": "subscription does not permit querying recent SIP data"})
    assert body.code is None and "subscription" in body.message


def _error(status: int, body: dict, *, method: str = "POST", path: str = "/v2/orders",
           **kw: object) -> ApiResponse:
    return ApiResponse(success=False, status=status, data=body, error_code=body.get("code"),
                       message=str(body.get("message", "")), error_type="http",
                       method=method, path=path, **kw)


def test_api_response_maps_every_error_family() -> None:
    cases: list[tuple[ApiResponse, type[Exception]]] = [
        (_error(403, {"code": 40310100, "message": "trade denied due to pattern day trading protection"}),
         errors.PatternDayTraderRejected),
        (_error(403, {"code": 40310000, "message": "insufficient qty available for order (requested: 10, available: 0)",
                      "available": "0", "held_for_orders": "10"}), errors.InsufficientQuantity),
        (_error(403, {"code": 40310000, "message": "insufficient buying power"}), errors.InsufficientBuyingPower),
        (_error(403, {"code": 40310000, "message": "potential wash trade detected. use complex orders"}),
         errors.WashTradeRejected),
        (_error(422, {"code": 40010001, "message": "client_order_id must be unique"}), errors.DuplicateClientOrderId),
        (_error(422, {"code": 42210000, "message": 'order is already in "filled" state'},
                method="DELETE", path="/v2/orders/61e69015-8549-4bfd-b9c3-01e75843f47d"),
         errors.OrderNotCancelable),
        (_error(404, {"code": 40410000, "message": "order not found"}, method="GET",
                path="/v2/orders/61e69015-8549-4bfd-b9c3-01e75843f47d"), errors.NotFound),
        (_error(401, {"code": 40110000, "message": "request is not authorized"}), errors.AuthenticationFailed),
        (_error(429, {"message": "rate limit exceeded"}, retry_after=3.0), errors.RateLimited),
        (_error(503, {"message": "service unavailable"}), errors.ServerError),
        (ApiResponse(success=False, status=0, error_type="network", message="reset"), errors.BrokerUnavailable),
        (ApiResponse(success=False, status=200, error_type="malformed", message="bad json"), errors.MalformedResponse),
    ]
    for response, expected in cases:
        with pytest.raises(expected):
            response.raise_for_error(for_order=True)
    insufficient = cases[1][0].error(for_order=True)
    assert isinstance(insufficient, errors.InsufficientQuantity)
    assert insufficient.available == Decimal("0") and insufficient.held_for_orders == Decimal("10")
    limited = cases[8][0].error()
    assert isinstance(limited, errors.RateLimited) and limited.retry_after == 3.0


def test_unclassified_4xx_is_a_rejection_only_for_orders() -> None:
    # The request decides (broker_errors): refused on a submit, unknown on a read.
    response = _error(422, {"code": 42210000, "message": "invalid symbol"})
    assert type(response.error()) is errors.OrderRejected
    read = _error(422, {"code": 42210000, "message": "invalid symbol"}, method="GET", path="/v2/account")
    assert type(read.error()) is errors.UnclassifiedBrokerError
    assert isinstance(read.error(), errors.OperationalError)
    pathless = _error(418, {"message": "teapot"}, method="", path="")
    assert type(pathless.error(for_order=True)) is errors.OrderRejected
    assert type(pathless.error(for_order=False)) is errors.UnclassifiedBrokerError
    ok = ApiResponse(success=True, status=204)
    assert ok.raise_for_error() is ok and ok.error() is None


# -- order requests ------------------------------------------------------------------------


def test_bracket_payload_has_decimal_strings_and_omits_unset() -> None:
    req = OrderRequest.bracket("AAPL", 2, "buy", take_profit_price=Decimal("110.00"),
                               stop_loss_price="95", stop_loss_limit_price="94.5",
                               limit_price="100", time_in_force="gtc", client_order_id="cid-1")
    assert req.to_payload() == {
        "symbol": "AAPL", "qty": "2", "side": "buy", "type": "limit", "time_in_force": "gtc",
        "limit_price": "100", "client_order_id": "cid-1", "order_class": "bracket",
        "take_profit": {"limit_price": "110"}, "stop_loss": {"stop_price": "95", "limit_price": "94.5"},
    }


def test_simple_payload_keeps_booleans_and_plain_decimal_notation() -> None:
    req = OrderRequest.simple("AAPL", Decimal("1E+2"), "sell", type="limit", limit_price="0.0001",
                              extended_hours=True)
    payload = req.to_payload()
    assert payload["qty"] == "100" and payload["limit_price"] == "0.0001"
    assert payload["extended_hours"] is True
    assert "client_order_id" not in payload and "stop_price" not in payload


def test_trailing_oco_oto_constructors() -> None:
    trail = OrderRequest.trailing_stop("AAPL", 2, "sell", trail_percent="1.5")
    assert trail.to_payload()["trail_percent"] == "1.5" and trail.type == "trailing_stop"
    oco = OrderRequest.oco("AAPL", 2, "sell", take_profit_price="110", stop_loss_price="95")
    assert oco.to_payload()["type"] == "limit" and oco.order_class == "oco"
    oto = OrderRequest.oto("AAPL", 2, "buy", stop_loss_price="95")
    assert "take_profit" not in oto.to_payload() and oto.to_payload()["stop_loss"] == {"stop_price": "95"}


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"symbol": "AAPL", "side": "buy"}, "exactly one of qty and notional"),
        ({"symbol": "AAPL", "side": "hold", "qty": 1}, "side 'hold'"),
        ({"symbol": "AAPL", "side": "buy", "qty": 1, "type": "limit"}, "limit orders need limit_price"),
        ({"symbol": "AAPL", "side": "buy", "qty": -1}, "qty must be positive"),
        ({"symbol": "AAPL", "side": "buy", "qty": 1, "type": "trailing_stop"}, "exactly one of trail_price"),
        ({"symbol": "AAPL", "side": "buy", "notional": 100, "type": "limit", "limit_price": 1},
         "notional orders must be market"),
        ({"symbol": "AAPL", "side": "buy", "qty": 1, "order_class": "bracket",
          "take_profit": {"limit_price": 90}, "stop_loss": {"stop_price": 95}}, "must be above stop_loss"),
        ({"symbol": "AAPL", "side": "buy", "qty": 1, "order_class": "bracket",
          "take_profit": {"limit_price": 110}}, "need both take_profit and stop_loss"),
        ({"symbol": "AAPL", "side": "buy", "qty": 1, "client_order_id": "x" * 129}, "client_order_id"),
        ({"symbol": "AAPL", "side": "buy", "qty": 1, "extended_hours": True}, "extended_hours"),
    ],
)
def test_order_request_refuses_what_the_broker_would_refuse(kwargs: dict, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        OrderRequest(**kwargs)


# -- the market-data fast path (models.parse_bar / parse_quote / parse_trade / parse_snapshot)


def _assert_same(fast: object, slow: object) -> None:
    """Identical instances: type, values and value types (field by field, in order), fields set."""
    assert type(fast) is type(slow)
    if not isinstance(slow, BaseModel):
        assert type(fast) is type(slow) and fast == slow and repr(fast) == repr(slow)
        return
    assert list(fast.__dict__) == list(slow.__dict__)
    for name, value in slow.__dict__.items():
        _assert_same(fast.__dict__[name], value)
    assert fast.model_fields_set == slow.model_fields_set
    assert fast.__pydantic_extra__ == slow.__pydantic_extra__
    assert fast.__pydantic_private__ == slow.__pydantic_private__
    assert fast == slow and repr(fast) == repr(slow)


def _wire_bars(limit: int = 400) -> list[dict]:
    """Daily bars of every shared CSV as market data sends them (JSON numbers)."""
    out: list[dict] = []
    for path in sorted((SHARED_DATA / "daily").glob("*.csv")):
        with path.open() as handle:
            rows = list(csv.DictReader(handle))[-limit:]
        for k, row in enumerate(rows):
            day = date.fromisoformat(row["timestamp"][:10])
            stamp = datetime.combine(day, datetime.min.time(), EXCHANGE_TZ).astimezone(timezone.utc)
            bar = {"t": stamp.isoformat().replace("+00:00", "Z"), "o": float(row["open"]),
                   "h": float(row["high"]), "l": float(row["low"]), "c": float(row["close"]),
                   "v": int(float(row["volume"])), "n": 1000 + k,
                   "vw": round((float(row["high"]) + float(row["low"])) / 2, 4)}
            out.append(json.loads(json.dumps(bar)))
    return out


def _wire_snapshot(bar: dict, prev: dict, k: int) -> dict:
    price = bar["c"]
    return json.loads(json.dumps({
        "latestTrade": {"t": "2025-03-04T14:31:00.123456789Z", "x": "V", "p": price, "s": 100 + k,
                        "i": 13788728647963 + k, "c": ["@"], "z": "C"},
        "latestQuote": {"t": "2025-03-04T14:30:59Z", "ax": "V", "ap": round(price + 0.01, 2), "as": 3,
                        "bx": "V", "bp": round(price - 0.01, 2), "bs": 7, "c": ["R"], "z": "C"},
        "minuteBar": {**bar, "t": "2025-03-04T14:30:00Z"},
        "dailyBar": bar,
        "prevDailyBar": prev,
    }))


def test_fast_path_equals_validation_on_real_bars() -> None:
    bars = _wire_bars()
    assert len(bars) > 3000
    for raw in bars:
        _assert_same(parse_bar(raw), Bar.model_validate(raw))
    for k, (prev, bar) in enumerate(zip(bars, bars[1:])):
        raw = _wire_snapshot(bar, prev, k)
        _assert_same(parse_snapshot(raw), Snapshot.model_validate(raw))
        _assert_same(parse_quote(raw["latestQuote"]), Quote.model_validate(raw["latestQuote"]))
        _assert_same(parse_trade(raw["latestTrade"]), Trade.model_validate(raw["latestTrade"]))


def test_fast_path_equals_validation_on_partial_and_single_symbol_shapes() -> None:
    bar = {"t": "2024-01-03T05:00:00Z", "o": 1, "h": 2.0, "l": 0.5, "c": 1.5, "v": 10}
    shapes = [
        {},
        {"symbol": "AAPL", "latestTrade": None, "latestQuote": None, "minuteBar": None},
        {"symbol": "AAPL", "dailyBar": bar, "prevDailyBar": {**bar, "n": None, "vw": None}},
        {"latestTrade": {"t": "2024-01-03T20:59:59+00:00", "p": 10, "s": 1, "u": "incorrect"}},
        {"latestQuote": {"t": "2024-01-03T15:59:59-05:00", "ap": 0.0, "bp": -0.0, "as": 0, "bs": 0}},
        {"minuteBar": {**bar, "v": 10.0, "n": 3.0, "vw": 1e-7}},  # whole floats, tiny vw
        {"minuteBar": {**bar, "o": 1e22, "h": 123456789.123456789, "vw": 2}},
    ]
    for raw in shapes:
        _assert_same(parse_snapshot(raw), Snapshot.model_validate(raw))


GOOD_BAR = {"t": "2024-01-03T05:00:00Z", "o": 184.22, "h": 185.88, "l": 183.43, "c": 184.25,
            "v": 58414460, "n": 656853, "vw": 184.319693}
GOOD_QUOTE = {"t": "2024-01-03T20:59:59.123456789Z", "ax": "V", "ap": 184.26, "as": 3, "bx": "V",
              "bp": 184.24, "bs": 2, "c": ["R"], "z": "C"}
GOOD_TRADE = {"t": "2024-01-03T20:59:59.9Z", "x": "V", "p": 184.25, "s": 100, "i": 52983525029461,
              "c": ["@"], "z": "C"}
NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("model", "parse", "raw"),
    [
        # refused: bools, non-finite numbers, naive or garbled timestamps, missing fields, junk
        (Bar, parse_bar, {**GOOD_BAR, "o": True}),
        (Bar, parse_bar, {**GOOD_BAR, "h": NAN}),
        (Bar, parse_bar, {**GOOD_BAR, "l": INF}),
        (Bar, parse_bar, {**GOOD_BAR, "c": -INF}),
        (Bar, parse_bar, {**GOOD_BAR, "vw": NAN}),
        (Bar, parse_bar, {**GOOD_BAR, "v": 1.5}),
        (Bar, parse_bar, {**GOOD_BAR, "v": False}),
        (Bar, parse_bar, {**GOOD_BAR, "t": "2024-01-03T05:00:00"}),
        (Bar, parse_bar, {**GOOD_BAR, "t": "yesterday"}),
        (Bar, parse_bar, {**GOOD_BAR, "t": 1704258000}),
        (Bar, parse_bar, {k: v for k, v in GOOD_BAR.items() if k != "c"}),
        (Bar, parse_bar, {**GOOD_BAR, "o": "abc"}),
        (Bar, parse_bar, {**GOOD_BAR, "o": None}),
        (Bar, parse_bar, {**GOOD_BAR, "o": [1]}),
        (Bar, parse_bar, [GOOD_BAR]),
        (Bar, parse_bar, None),
        (Quote, parse_quote, {**GOOD_QUOTE, "as": True}),
        (Quote, parse_quote, {**GOOD_QUOTE, "bp": NAN}),
        (Quote, parse_quote, {**GOOD_QUOTE, "c": ["R", 1]}),
        (Quote, parse_quote, {**GOOD_QUOTE, "c": "R"}),
        (Quote, parse_quote, {**GOOD_QUOTE, "ax": 5}),
        (Quote, parse_quote, {k: v for k, v in GOOD_QUOTE.items() if k != "as"}),
        (Trade, parse_trade, {**GOOD_TRADE, "p": INF}),
        (Trade, parse_trade, {**GOOD_TRADE, "s": True}),
        (Trade, parse_trade, {**GOOD_TRADE, "i": "x"}),
        (Trade, parse_trade, {**GOOD_TRADE, "t": "2024-01-03 20:59"}),
        (Snapshot, parse_snapshot, {"latestTrade": {**GOOD_TRADE, "p": True}}),
        (Snapshot, parse_snapshot, {"dailyBar": {**GOOD_BAR, "t": "2024-01-03T05:00:00"}}),
        (Snapshot, parse_snapshot, {"minuteBar": "bar"}),
        (Snapshot, parse_snapshot, {"symbol": 5}),
        (Snapshot, parse_snapshot, "snapshot"),
        # accepted by validation in shapes the fast path leaves to it: the same result
        (Bar, parse_bar, {**GOOD_BAR, "o": "184.22", "vw": ""}),
        (Bar, parse_bar, {**GOOD_BAR, "o": Decimal("184.22")}),
        (Bar, parse_bar, {**GOOD_BAR, "brand_new_field": 1}),
        (Bar, parse_bar, {**GOOD_BAR, "t": datetime(2024, 1, 3, 5, tzinfo=timezone.utc)}),
        (Quote, parse_quote, {**GOOD_QUOTE, "as_": 4}),
        (Trade, parse_trade, {**GOOD_TRADE, "i": 7.0}),
        (Snapshot, parse_snapshot, {"latest_trade": GOOD_TRADE, "dailyBar": GOOD_BAR}),
        (Snapshot, parse_snapshot, {"latestQuote": {**GOOD_QUOTE, "bp": "184.24"}}),
    ],
)
def test_fast_path_hands_unusual_payloads_to_validation(model: type, parse: object, raw: object) -> None:
    try:
        slow = model.model_validate(raw)
    except ValidationError as slow_error:
        with pytest.raises(ValidationError) as fast_error:
            parse(raw)  # type: ignore[operator]
        def what(error: ValidationError) -> list[tuple]:
            return [(e["type"], e["loc"], e["msg"]) for e in error.errors()]

        assert what(fast_error.value) == what(slow_error)
    else:
        _assert_same(parse(raw), slow)  # type: ignore[operator]


def test_fast_path_refuses_bools_non_finite_and_naive_with_clear_errors() -> None:
    with pytest.raises(ValidationError, match="boolean"):
        parse_bar({**GOOD_BAR, "o": True})
    with pytest.raises(ValidationError, match="finite"):
        parse_quote({**GOOD_QUOTE, "ap": INF})
    with pytest.raises(ValidationError, match="no time zone"):
        parse_trade({**GOOD_TRADE, "t": "2024-01-03T20:59:59"})
    # A snapshot's parts steer trading (Snapshot.STRICT_FIELDS): an unusable trade refuses the
    # whole snapshot, and the gateway rejects that symbol's data for the cycle.
    with pytest.raises(ValidationError, match="no time zone"):
        parse_snapshot({"latestTrade": {**GOOD_TRADE, "t": "2024-01-03T20:59:59"},
                        "latestQuote": GOOD_QUOTE})


def test_fast_path_decimal_memo_keeps_zero_signs_and_int_versus_float() -> None:
    # 3.0 and 3 (and 0.0 and -0.0) are equal dict keys; their Decimals differ.
    first = parse_bar({**GOOD_BAR, "o": 3.0, "h": 3, "l": 0.0, "c": -0.0})
    again = parse_bar({**GOOD_BAR, "o": 3, "h": 3.0, "l": -0.0, "c": 0.0})
    assert (str(first.o), str(first.h), str(first.l), str(first.c)) == ("3.0", "3", "0.0", "-0.0")
    assert (str(again.o), str(again.h), str(again.l), str(again.c)) == ("3", "3.0", "-0.0", "0.0")
