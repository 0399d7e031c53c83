"""SimBroker order types, time in force, sessions, replace, cancel and listing."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from simulator.errors import SimApiError
from tests.test_sim_engine_support import et, go, make_broker, order_body, closed, placed

MON = (2025, 3, 3)  # a regular Monday session, 09:30-16:00 ET


def at(hour: int, minute: int = 0, day: tuple[int, int, int] = MON):
    return et(*day, hour, minute)


def test_the_post_answer_is_the_order_as_accepted_and_the_fill_comes_after() -> None:
    """Alpaca answers POST /v2/orders (and DELETE /v2/positions/{symbol}) before the fill:
    status new, filled_qty 0, bracket legs held; the fill is read back afterwards."""
    broker, _, _ = make_broker(at(10))
    answer = broker.submit_order(order_body(
        "AAPL", 10, "buy", order_class="bracket", take_profit={"limit_price": "110"},
        stop_loss={"stop_price": "90"}))
    assert answer["status"] == "new" and answer["filled_qty"] == "0" and answer["filled_avg_price"] is None
    assert [leg["status"] for leg in answer["legs"]] == ["held", "held"]
    later = broker.get_order(answer["id"], {"nested": True})
    assert later["status"] == "filled" and later["filled_qty"] == "10"
    assert {leg["status"] for leg in later["legs"]} == {"new"}
    broker.submit_order(order_body("SPY", 5, "buy"))
    closing = broker.close_position("SPY")
    assert closing["status"] == "new" and closing["filled_qty"] == "0"
    assert broker.get_order(closing["id"])["status"] == "filled"


def test_market_buy_fills_at_once_at_the_ask_plus_slippage() -> None:
    broker, _, _ = make_broker(at(10), slippage_bps=1.0)
    order = placed(broker, order_body("AAPL", 10, "buy"))
    # quote 99.99 / 100.01; 1 bp of slippage on 100.01 rounds to 100.02
    assert order["status"] == "filled"
    assert order["filled_qty"] == "10" and order["filled_avg_price"] == "100.02"
    assert broker.get_account()["cash"] == "98999.8"
    sold = placed(broker, order_body("AAPL", 10, "sell"))
    assert sold["filled_avg_price"] == "99.98"  # bid 99.99 less 1 bp


def test_limit_rests_then_fills_along_the_bar_path_at_its_price() -> None:
    broker, market, clock = make_broker(at(10))
    order = placed(broker, order_body("AAPL", 5, "buy", "limit", limit_price=99.5))
    assert order["status"] == "new" and order["filled_qty"] == "0"
    market.bar("AAPL", at(10, 0), 100, 100.2, 99.8, 100.1)
    go(clock, at(10, 1))
    assert broker.get_order(order["id"])["status"] == "new"
    market.bar("AAPL", at(10, 1), 100.1, 100.3, 99.2, 99.4)
    go(clock, at(10, 2))
    filled = broker.get_order(order["id"])
    assert filled["status"] == "filled" and filled["filled_avg_price"] == "99.5"


def test_marketable_limit_gets_the_better_quote_price() -> None:
    broker, _, _ = make_broker(at(10))
    order = placed(broker, order_body("AAPL", 5, "buy", "limit", limit_price=101))
    assert order["status"] == "filled" and order["filled_avg_price"] == "100.01"


def test_stop_gapped_through_at_the_open_fills_at_the_worse_open() -> None:
    broker, market, clock = make_broker(at(15, 58))
    placed(broker, order_body("AAPL", 10, "buy"))
    stop = placed(broker, order_body("AAPL", 10, "sell", "stop", tif="gtc", stop_price=95))
    market.bar("AAPL", at(9, 30, (2025, 3, 4)), 90, 91, 89, 90.5)
    go(clock, at(9, 35, (2025, 3, 4)))
    filled = broker.get_order(stop["id"])
    assert filled["status"] == "filled" and filled["filled_avg_price"] == "90"


def test_stop_limit_does_not_fill_below_its_limit_after_a_gap() -> None:
    broker, market, clock = make_broker(at(10))
    placed(broker, order_body("AAPL", 10, "buy"))
    order = placed(broker, order_body("AAPL", 10, "sell", "stop_limit", stop_price=99, limit_price=98.5))
    market.bar("AAPL", at(10, 0), 97, 98, 96, 97.5)
    go(clock, at(10, 1))
    assert broker.get_order(order["id"])["status"] == "new"
    market.bar("AAPL", at(10, 1), 97.5, 98.7, 97.4, 98.6)
    go(clock, at(10, 2))
    filled = broker.get_order(order["id"])
    assert filled["status"] == "filled" and filled["filled_avg_price"] == "98.5"


def test_trailing_stop_tracks_the_high_water_mark_and_shows_its_stop() -> None:
    broker, market, clock = make_broker(at(10))
    placed(broker, order_body("AAPL", 10, "buy"))
    order = placed(broker, order_body("AAPL", 10, "sell", "trailing_stop", trail_percent=2))
    assert order["hwm"] == "100" and order["stop_price"] == "98"
    assert isinstance(order["trail_percent"], str)
    market.bar("AAPL", at(10, 0), 100, 105, 99.5, 104.5)
    go(clock, at(10, 1))
    working = broker.get_order(order["id"])
    assert working["hwm"] == "105" and working["stop_price"] == "102.9"
    market.bar("AAPL", at(10, 1), 104.5, 104.6, 102, 102.2)
    go(clock, at(10, 2))
    filled = broker.get_order(order["id"])
    assert filled["status"] == "filled" and filled["filled_avg_price"] == "102.9"


def test_day_order_expires_at_the_close_and_gtc_survives_the_night() -> None:
    broker, _, clock = make_broker(at(10))
    day = placed(broker, order_body("AAPL", 1, "buy", "limit", limit_price=90))
    gtc = placed(broker, order_body("AAPL", 1, "buy", "limit", tif="gtc", limit_price=90))
    assert day["expires_at"] == "2025-03-03T21:00:00Z"
    go(clock, at(16, 0))
    expired = broker.get_order(day["id"])
    assert expired["status"] == "expired" and expired["expired_at"] == "2025-03-03T21:00:00Z"
    go(clock, at(10, 0, (2025, 3, 4)))
    assert broker.get_order(gtc["id"])["status"] == "new"
    assert [e["event"] for e in broker.events if e["order"]["id"] == day["id"]] == ["new", "expired"]


def test_ioc_fills_what_it_can_and_fok_is_all_or_nothing() -> None:
    broker, market, _ = make_broker(at(10), partial_fills=True, volume_participation=0.1)
    market.bar("AAPL", at(9, 59), 100, 100, 100, 100, v=500)  # previous minute: 50 shares of capacity
    ioc = placed(broker, order_body("AAPL", 80, "buy", tif="ioc"))
    assert ioc["status"] == "canceled" and ioc["filled_qty"] == "50"
    fok = placed(broker, order_body("AAPL", 80, "buy", tif="fok"))
    assert fok["status"] == "canceled" and fok["filled_qty"] == "0"
    small = placed(broker, order_body("AAPL", 40, "buy", tif="fok"))
    assert small["status"] == "filled"
    away = placed(broker, order_body("AAPL", 1, "buy", "limit", tif="ioc", limit_price=90))
    assert away["status"] == "canceled" and away["filled_qty"] == "0"


def test_opg_fills_at_the_opening_auction_and_cls_at_the_closing_auction() -> None:
    broker, market, clock = make_broker(at(8, 0))
    opg = placed(broker, order_body("AAPL", 3, "buy", tif="opg"))
    assert opg["status"] == "accepted"
    market.bar("AAPL", at(9, 30), 101.5, 102, 101, 101.8)
    go(clock, at(9, 31))
    assert broker.get_order(opg["id"])["filled_avg_price"] == "101.5"
    cls = placed(broker, order_body("AAPL", 3, "sell", tif="cls"))
    assert cls["status"] == "new"
    market.bar("AAPL", at(15, 59), 103, 103.5, 102.5, 103.25)
    go(clock, at(16, 0))
    closed = broker.get_order(cls["id"])
    assert closed["status"] == "filled" and closed["filled_avg_price"] == "103.25"
    assert closed["filled_at"] == "2025-03-03T21:00:00Z"


def test_opg_refused_after_928_and_cls_after_1550() -> None:
    broker, _, clock = make_broker(at(9, 29))
    with pytest.raises(SimApiError) as refused:
        placed(broker, order_body("AAPL", 1, "buy", tif="opg"))
    assert refused.value.status == 422
    go(clock, at(15, 55))
    with pytest.raises(SimApiError):
        placed(broker, order_body("AAPL", 1, "buy", tif="cls"))


def test_extended_hours_limit_fills_pre_market_while_a_market_order_waits_for_the_open() -> None:
    broker, market, clock = make_broker(at(7, 0))
    waiting = placed(broker, order_body("AAPL", 2, "buy"))
    early = placed(broker, order_body("AAPL", 2, "buy", "limit", limit_price=99, extended_hours=True))
    plain_limit = placed(broker, order_body("AAPL", 2, "buy", "limit", limit_price=99))
    assert waiting["status"] == "accepted" and early["status"] == "new" and plain_limit["status"] == "accepted"
    market.bar("AAPL", at(7, 0), 100, 100, 98.5, 98.8)
    go(clock, at(7, 1))
    assert broker.get_order(early["id"])["status"] == "filled"
    assert broker.get_order(early["id"])["filled_avg_price"] == "99"
    assert broker.get_order(waiting["id"])["status"] == "accepted"
    assert broker.get_order(plain_limit["id"])["status"] == "accepted"  # regular limit: no pre-market fill
    market.bar("AAPL", at(9, 30), 100.4, 100.6, 100.2, 100.5)
    go(clock, at(9, 31))
    opened = broker.get_order(waiting["id"])
    assert opened["status"] == "filled" and opened["filled_avg_price"] == "100.4"
    assert broker.get_order(plain_limit["id"])["status"] == "new"
    events = [e["event"] for e in broker.events if e["order"]["id"] == waiting["id"]]
    assert events == ["accepted", "new", "fill"]


def test_extended_hours_needs_a_day_limit_order() -> None:
    broker, _, _ = make_broker(at(7, 0))
    with pytest.raises(SimApiError) as refused:
        placed(broker, order_body("AAPL", 1, "buy", extended_hours=True))
    assert refused.value.status == 422
    with pytest.raises(SimApiError):
        placed(broker, order_body("AAPL", 1, "buy", "limit", tif="gtc", limit_price=99, extended_hours=True))


def test_after_hours_market_order_waits_over_the_weekend() -> None:
    broker, market, clock = make_broker(et(2025, 3, 7, 17, 0))  # Friday after the close
    order = placed(broker, order_body("AAPL", 1, "buy"))
    assert order["status"] == "accepted"
    go(clock, et(2025, 3, 9, 12, 0))
    assert broker.get_order(order["id"])["status"] == "accepted"
    market.bar("AAPL", et(2025, 3, 10, 9, 30), 97, 97.5, 96.5, 97.2)
    go(clock, et(2025, 3, 10, 9, 31))
    assert broker.get_order(order["id"])["filled_avg_price"] == "97"


def test_replace_creates_a_new_order_and_marks_the_old_replaced() -> None:
    broker, _, _ = make_broker(at(10))
    old = placed(broker, order_body("AAPL", 5, "buy", "limit", limit_price=95, client_order_id="first"))
    new = broker.replace_order(old["id"], {"limit_price": 96.5, "qty": 7, "client_order_id": "second"})
    assert new["id"] != old["id"] and new["replaces"] == old["id"]
    assert new["limit_price"] == "96.5" and new["qty"] == "7" and new["client_order_id"] == "second"
    replaced = broker.get_order(old["id"])
    assert replaced["status"] == "replaced" and replaced["replaced_by"] == new["id"]
    assert replaced["replaced_at"] is not None
    assert [o["id"] for o in broker.list_orders({"status": "open"})] == [new["id"]]
    events = [(e["event"], e["order"]["id"]) for e in broker.events]
    assert ("replaced", old["id"]) in events and ("new", new["id"]) in events


def test_replace_refuses_filled_and_accepted_orders_and_sub_penny_prices() -> None:
    broker, _, clock = make_broker(at(10))
    filled = placed(broker, order_body("AAPL", 1, "buy"))
    with pytest.raises(SimApiError) as refused:
        broker.replace_order(filled["id"], {"qty": 2})
    assert refused.value.status == 422
    resting = placed(broker, order_body("AAPL", 1, "buy", "limit", tif="gtc", limit_price=90))
    with pytest.raises(SimApiError) as sub_penny:
        broker.replace_order(resting["id"], {"limit_price": "90.123"})
    assert sub_penny.value.body["code"] == 42210000 and "sub-penny" in sub_penny.value.body["message"]
    go(clock, at(17, 0))
    queued = placed(broker, order_body("AAPL", 1, "buy", "limit", tif="gtc", limit_price=90))
    assert queued["status"] == "accepted"
    with pytest.raises(SimApiError):
        broker.replace_order(queued["id"], {"limit_price": 91})
    with pytest.raises(SimApiError) as unknown:
        broker.replace_order("00000000-0000-4000-8000-000000000000", {"qty": 1})
    assert unknown.value.status == 404


def test_gtc_replaced_as_day_after_the_close_expires_at_the_next_close() -> None:
    broker, _, clock = make_broker(at(10))
    order = placed(broker, order_body("AAPL", 1, "buy", "limit", tif="gtc", limit_price=90))
    go(clock, at(17, 0))
    day = broker.replace_order(order["id"], {"time_in_force": "day"})
    assert day["expires_at"] == "2025-03-04T21:00:00Z"
    go(clock, at(21, 0))
    assert broker.get_order(day["id"])["status"] == "new"
    go(clock, at(16, 0, (2025, 3, 4)))
    assert broker.get_order(day["id"])["status"] == "expired"


def test_replace_that_makes_a_limit_marketable_fills_it() -> None:
    broker, _, _ = make_broker(at(10))
    order = placed(broker, order_body("AAPL", 2, "buy", "limit", limit_price=95))
    new = broker.replace_order(order["id"], {"limit_price": 101})
    assert new["status"] == "filled" and new["filled_avg_price"] == "100.01"


def test_cancel_returns_none_then_422_and_404() -> None:
    broker, _, _ = make_broker(at(10))
    order = placed(broker, order_body("AAPL", 1, "buy", "limit", limit_price=90))
    assert broker.cancel_order(order["id"]) is None
    canceled = broker.get_order(order["id"])
    assert canceled["status"] == "canceled" and canceled["canceled_at"] is not None
    with pytest.raises(SimApiError) as again:
        broker.cancel_order(order["id"])
    assert again.value.status == 422
    assert again.value.body == {"code": 42210000, "message": 'order is already in "canceled" state'}
    with pytest.raises(SimApiError) as unknown:
        broker.cancel_order("00000000-0000-4000-8000-000000000000")
    assert unknown.value.status == 404 and unknown.value.body == {"code": 40410000, "message": "order not found"}
    for malformed in ("not-a-uuid", "12345"):
        with pytest.raises(SimApiError) as bad:
            broker.cancel_order(malformed)
        assert bad.value.status == 422 and bad.value.body == {"code": 40010001, "message": "order_id is missing"}


def test_cancel_and_replace_of_a_filled_order_name_the_state_as_alpaca_does() -> None:
    broker, _, _ = make_broker(at(10))
    filled = placed(broker, order_body("AAPL", 1, "buy"))
    assert broker.get_order(filled["id"])["status"] == "filled"
    for call in (lambda: broker.cancel_order(filled["id"]),
                 lambda: broker.replace_order(filled["id"], {"limit_price": 90})):
        with pytest.raises(SimApiError) as final:
            call()
        assert final.value.status == 422
        assert final.value.body == {"code": 42210000, "message": 'order is already in "filled" state'}
    for call in (lambda: broker.get_order("nope"), lambda: broker.replace_order("nope", {"limit_price": 90})):
        with pytest.raises(SimApiError) as bad:
            call()
        assert (bad.value.status, bad.value.body["code"]) == (422, 40010001)


def test_cancel_all_returns_one_207_item_per_order() -> None:
    broker, _, _ = make_broker(at(10))
    a = placed(broker, order_body("AAPL", 1, "buy", "limit", limit_price=90))
    b = placed(broker, order_body("SPY", 1, "buy", "limit", limit_price=400))
    items = broker.cancel_all()
    assert [(i["id"], i["status"]) for i in items] == [(a["id"], 200), (b["id"], 200)]
    assert all(i["body"]["status"] == "canceled" for i in items)
    assert broker.list_orders() == [] and broker.cancel_all() == []


def test_list_orders_filters_limits_and_orders() -> None:
    broker, _, clock = make_broker(at(10))
    first = placed(broker, order_body("AAPL", 1, "buy"))
    go(clock, at(10, 5))
    second = placed(broker, order_body("SPY", 1, "buy", "limit", limit_price=400))
    go(clock, at(10, 10))
    third = placed(broker, order_body("AAPL", 1, "buy", "limit", limit_price=90))
    assert [o["id"] for o in broker.list_orders()] == [third["id"], second["id"]]
    assert [o["id"] for o in broker.list_orders({"status": "closed"})] == [first["id"]]
    everything = broker.list_orders({"status": "all", "direction": "asc"})
    assert [o["id"] for o in everything] == [first["id"], second["id"], third["id"]]
    assert [o["id"] for o in broker.list_orders({"status": "all", "limit": "1"})] == [third["id"]]
    assert [o["id"] for o in broker.list_orders({"status": "all", "symbols": "SPY"})] == [second["id"]]
    after = broker.list_orders({"status": "all", "after": "2025-03-03T15:04:00Z", "until": "2025-03-03T15:09:00Z"})
    assert [o["id"] for o in after] == [second["id"]]
    with pytest.raises(SimApiError):
        broker.list_orders({"limit": "501"})
    with pytest.raises(SimApiError):
        broker.list_orders({"status": "cancelled"})


def test_get_order_by_client_id_and_unknown_symbol() -> None:
    broker, _, _ = make_broker(at(10))
    order = placed(broker, order_body("AAPL", 1, "buy", client_order_id="abc-1"))
    assert broker.get_order_by_client_id("abc-1")["id"] == order["id"]
    assert broker.get_order_by_client_id({"client_order_id": "abc-1"})["id"] == order["id"]
    with pytest.raises(SimApiError) as missing:
        broker.get_order_by_client_id("nope")
    assert missing.value.status == 404
    with pytest.raises(SimApiError) as unknown:
        placed(broker, order_body("ZZZZ", 1, "buy"))
    assert unknown.value.status == 422


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"symbol": "AAPL", "qty": 1, "side": "buy", "type": "limit", "time_in_force": "day"}, 422, "limit_price is required"),
        ({"symbol": "AAPL", "qty": 1, "side": "buy", "type": "limit", "time_in_force": "day", "limit_price": "99.999"}, 422, "sub-penny"),
        ({"symbol": "AAPL", "qty": 1, "side": "hold", "type": "market", "time_in_force": "day"}, 422, "invalid side"),
        ({"symbol": "AAPL", "qty": 1, "side": "buy", "type": "market", "time_in_force": "DAY"}, 422, "invalid time_in_force"),
        ({"symbol": "AAPL", "side": "buy", "type": "market", "time_in_force": "day"}, 422, "qty or notional"),
        ({"symbol": "AAPL", "qty": -1, "side": "buy", "type": "market", "time_in_force": "day"}, 422, "qty must be > 0"),
        ({"symbol": "AAPL", "qty": 1, "side": "sell", "type": "trailing_stop", "time_in_force": "day"}, 422, "trail"),
        ({"symbol": "AAPL", "qty": 1, "side": "buy", "type": "market", "time_in_force": "day", "client_order_id": "x" * 129}, 422, "128"),
    ],
)
def test_invalid_bodies_get_one_clear_422(body: dict, status: int, fragment: str) -> None:
    broker, _, _ = make_broker(at(10))
    with pytest.raises(SimApiError) as refused:
        placed(broker, body)
    assert refused.value.status == status and fragment in refused.value.body["message"]
    assert refused.value.body["code"] in (40010001, 42210000)
    assert broker.list_orders({"status": "all"}) == []


def test_notional_market_order_buys_fractional_shares() -> None:
    broker, _, _ = make_broker(at(10))
    order = placed(broker, {"symbol": "AAPL", "notional": 1000, "side": "buy", "type": "market", "time_in_force": "day"})
    assert order["status"] == "filled" and order["notional"] == "1000"
    assert D(order["filled_qty"]) == D("9.999000099")
    assert broker.get_position("AAPL")["qty"] == "9.999000099"
