"""Bracket, OCO and OTO orders, partial fills and shares held by open exit orders."""

from __future__ import annotations

import pytest

from simulator.errors import SimApiError
from tests.test_sim_engine_support import et, go, make_broker, order_body, closed, placed

MON = (2025, 3, 3)


def at(hour: int, minute: int = 0):
    return et(*MON, hour, minute)


def bracket(qty: int = 10, limit: float | None = 99, tp: float = 105, sl: float = 95, **extra):
    kind = "limit" if limit is not None else "market"
    body = order_body("AAPL", qty, "buy", kind, order_class="bracket", take_profit={"limit_price": tp},
                      stop_loss={"stop_price": sl}, **extra)
    if limit is not None:
        body["limit_price"] = limit
    return body


def test_bracket_legs_are_held_until_the_entry_fills_then_one_exit_cancels_the_other() -> None:
    broker, market, clock = make_broker(at(10))
    parent = placed(broker, bracket())
    assert parent["order_class"] == "bracket" and parent["status"] == "new"
    take_profit, stop = parent["legs"]
    assert (take_profit["type"], take_profit["status"], take_profit["limit_price"]) == ("limit", "held", "105")
    assert (stop["type"], stop["status"], stop["stop_price"]) == ("stop", "held", "95")
    assert take_profit["side"] == stop["side"] == "sell"

    market.bar("AAPL", at(10, 0), 100, 100.2, 98.9, 99.2)  # entry fills at 99
    go(clock, at(10, 1))
    nested = broker.get_order(parent["id"], {"nested": "True"})
    assert nested["status"] == "filled" and nested["filled_avg_price"] == "99"
    assert [leg["status"] for leg in nested["legs"]] == ["new", "new"]

    market.bar("AAPL", at(10, 1), 99.2, 105.5, 99, 105.2)
    go(clock, at(10, 2))
    tp_now, stop_now = broker.get_order(parent["id"], {"nested": "true"})["legs"]
    assert tp_now["status"] == "filled" and tp_now["filled_avg_price"] == "105"
    assert stop_now["status"] == "canceled"
    assert broker.list_positions() == []
    leg_events = [(e["event"], e["order"]["id"]) for e in broker.events if e["order"]["id"] in (tp_now["id"], stop_now["id"])]
    assert leg_events == [("new", tp_now["id"]), ("new", stop_now["id"]), ("fill", tp_now["id"]), ("canceled", stop_now["id"])]


def test_bracket_stop_leg_wins_when_the_bar_reaches_it_first() -> None:
    broker, market, clock = make_broker(at(10))
    parent = placed(broker, bracket(limit=None, tp=103, sl=97))
    assert parent["status"] == "filled"
    go(clock, at(10, 1))
    market.bar("AAPL", at(10, 1), 100, 104, 96, 103.5)  # up bar: low first, so the stop fires first
    go(clock, at(10, 2))
    tp_now, stop_now = broker.get_order(parent["id"], {"nested": True})["legs"]
    assert stop_now["status"] == "filled" and stop_now["filled_avg_price"] == "97"
    assert tp_now["status"] == "canceled"


def test_bracket_validation_follows_alpaca() -> None:
    broker, _, _ = make_broker(at(10))
    with pytest.raises(SimApiError) as kind:
        placed(broker, order_body("AAPL", 1, "buy", "stop", stop_price=101, order_class="bracket",
                                       take_profit={"limit_price": 105}, stop_loss={"stop_price": 95}))
    assert kind.value.status == 422
    assert kind.value.body == {"code": 40010001, "message": "bracket orders must be market or limit orders"}
    with pytest.raises(SimApiError) as too_close:
        placed(broker, bracket(limit=99, sl=98.995))
    assert too_close.value.body["code"] == 42210000  # sub-penny
    with pytest.raises(SimApiError) as base:
        placed(broker, bracket(limit=99, sl=99))
    assert base.value.body == {"code": 42210000, "message": "stop price must be less than base_price - 0.01"}
    with pytest.raises(SimApiError) as inverted:
        placed(broker, bracket(limit=99, tp=94, sl=95))
    assert inverted.value.status == 422
    with pytest.raises(SimApiError) as tif:
        placed(broker, bracket(tif="ioc"))
    assert tif.value.status == 422
    with pytest.raises(SimApiError) as missing:
        placed(broker, order_body("AAPL", 1, "buy", order_class="bracket", take_profit={"limit_price": 105}))
    assert "stop_loss" in missing.value.body["message"]
    assert broker.list_orders({"status": "all"}) == []


def test_nested_listing_rolls_legs_into_the_parent() -> None:
    broker, _, _ = make_broker(at(10))
    parent = placed(broker, bracket())
    flat = broker.list_orders({"status": "open"})
    assert len(flat) == 3 and all(o["legs"] is None for o in flat)
    nested = broker.list_orders({"status": "open", "nested": "True"})
    assert [o["id"] for o in nested] == [parent["id"]] and len(nested[0]["legs"]) == 2


def test_filled_bracket_parent_still_lists_its_open_legs_when_nested() -> None:
    broker, _, _ = make_broker(at(10))
    parent = placed(broker, bracket(limit=None, tp=103, sl=97))
    nested = broker.list_orders({"status": "open", "nested": "true"})
    assert [o["id"] for o in nested] == [parent["id"]]
    assert [leg["status"] for leg in nested[0]["legs"]] == ["new", "new"]


def test_canceling_a_bracket_entry_cancels_its_held_legs() -> None:
    broker, _, _ = make_broker(at(10))
    parent = placed(broker, bracket())
    broker.cancel_order(parent["id"])
    statuses = [leg["status"] for leg in broker.get_order(parent["id"], {"nested": "true"})["legs"]]
    assert statuses == ["canceled", "canceled"]


def test_oco_on_an_existing_position_holds_the_shares_once() -> None:
    broker, market, clock = make_broker(at(10))
    placed(broker, order_body("AAPL", 10, "buy"))
    oco = placed(broker, order_body("AAPL", 10, "sell", "limit", tif="gtc", order_class="oco",
                                         take_profit={"limit_price": 104}, stop_loss={"stop_price": 96}))
    assert oco["order_class"] == "oco" and oco["limit_price"] == "104" and oco["status"] == "new"
    assert [(leg["type"], leg["status"]) for leg in oco["legs"]] == [("stop", "new")]
    position = broker.get_position("AAPL")
    assert position["qty"] == "10" and position["qty_available"] == "0"
    with pytest.raises(SimApiError) as held:
        placed(broker, order_body("AAPL", 1, "sell"))
    assert held.value.body["held_for_orders"] == "10"
    market.bar("AAPL", at(10, 0), 100, 100.5, 95.5, 96.5)
    go(clock, at(10, 1))
    assert broker.get_order(oco["legs"][0]["id"])["status"] == "filled"
    assert broker.get_order(oco["id"])["status"] == "canceled"


def test_oto_entry_releases_its_single_exit_leg() -> None:
    broker, market, clock = make_broker(at(10))
    parent = placed(broker, order_body("AAPL", 5, "buy", "limit", limit_price=99, order_class="oto",
                                            stop_loss={"stop_price": 97}))
    (stop,) = parent["legs"]
    assert stop["status"] == "held" and stop["type"] == "stop"
    market.bar("AAPL", at(10, 0), 99.5, 99.6, 98.5, 98.8)
    go(clock, at(10, 1))
    assert broker.get_order(stop["id"])["status"] == "new"
    market.bar("AAPL", at(10, 1), 98.8, 98.9, 96.5, 96.8)
    go(clock, at(10, 2))
    assert broker.get_order(stop["id"])["filled_avg_price"] == "97"


def test_bracket_stop_holding_all_shares_refuses_a_market_sell_with_alpacas_body() -> None:
    broker, _, _ = make_broker(at(10))
    entry = placed(broker, bracket(qty=100, limit=None, tp=110, sl=90))
    legs = [leg["id"] for leg in broker.get_order(entry["id"], {"nested": "true"})["legs"]]
    with pytest.raises(SimApiError) as refused:
        placed(broker, order_body("AAPL", 100, "sell"))
    assert refused.value.status == 403
    assert refused.value.body == {
        "code": 40310000,
        "message": "insufficient qty available for order (requested: 100, available: 0)",
        "available": "0",
        "existing_qty": "100",
        "held_for_orders": "100",
        "related_orders": legs,  # both legs of the OCO pair hold the 100 shares
        "symbol": "AAPL",
    }
    with pytest.raises(SimApiError) as closing:
        broker.close_position("AAPL")
    assert closing.value.status == 403 and closing.value.body["held_for_orders"] == "100"
    items = broker.close_all({"cancel_orders": "False"})
    assert items == [{"symbol": "AAPL", "status": 403, "body": refused.value.body}]
    items = broker.close_all({"cancel_orders": "True"})
    assert [(i["symbol"], i["status"]) for i in items] == [("AAPL", 200)]
    assert items[0]["body"]["status"] == "new" and items[0]["order_id"] == items[0]["body"]["id"]
    assert broker.get_order(items[0]["order_id"])["status"] == "filled"
    assert broker.list_positions() == []


def test_selling_more_than_held_or_flipping_is_refused() -> None:
    broker, _, _ = make_broker(at(10))
    placed(broker, order_body("AAPL", 10, "buy"))
    with pytest.raises(SimApiError) as flip:
        placed(broker, order_body("AAPL", 15, "sell"))
    assert flip.value.status == 403 and flip.value.body["available"] == "10"
    placed(broker, order_body("AAPL", 4, "sell", "limit", limit_price=110))
    with pytest.raises(SimApiError) as partly_held:
        placed(broker, order_body("AAPL", 7, "sell"))
    assert partly_held.value.body["message"] == "insufficient qty available for order (requested: 7, available: 6)"
    assert placed(broker, order_body("AAPL", 6, "sell"))["status"] == "filled"


def test_partial_fills_accumulate_qty_and_average_price() -> None:
    broker, market, clock = make_broker(at(10), partial_fills=True, volume_participation=0.1)
    order = placed(broker, order_body("AAPL", 250, "buy", "limit", limit_price=99))
    market.bar("AAPL", at(10, 0), 99, 99.2, 98.8, 99.1, v=1000)  # 100 shares at 99
    market.bar("AAPL", at(10, 1), 98.5, 98.8, 98.4, 98.6, v=1000)  # 100 shares at the 98.5 open
    go(clock, at(10, 2))
    partial = broker.get_order(order["id"])
    assert partial["status"] == "partially_filled" and partial["filled_qty"] == "200"
    assert partial["filled_avg_price"] == "98.75"
    market.bar("AAPL", at(10, 2), 98.6, 99, 98.5, 98.9, v=5000)
    go(clock, at(10, 3))
    done = broker.get_order(order["id"])
    assert done["status"] == "filled" and done["filled_qty"] == "250"
    assert done["filled_avg_price"] == "98.72"  # (100*99 + 100*98.5 + 50*98.6) / 250
    kinds = [e["event"] for e in broker.events if e["order"]["id"] == order["id"]]
    assert kinds == ["new", "partial_fill", "partial_fill", "fill"]


def test_partial_take_profit_fill_shrinks_the_stop() -> None:
    broker, market, clock = make_broker(at(10), partial_fills=True, volume_participation=0.1)
    market.bar("AAPL", at(9, 59), 100, 100, 100, 100, v=100_000)
    parent = placed(broker, bracket(qty=100, limit=None, tp=103, sl=97))
    assert parent["status"] == "filled"
    take_profit, stop = parent["legs"]
    market.bar("AAPL", at(10, 1), 103, 103.5, 102.9, 103.2, v=400)  # 40 shares at 103
    go(clock, at(10, 2))
    tp_now = broker.get_order(take_profit["id"])
    assert tp_now["status"] == "partially_filled" and tp_now["filled_qty"] == "40"
    assert broker.get_order(stop["id"])["qty"] == "60"
    assert broker.get_position("AAPL")["qty_available"] == "0"
    market.bar("AAPL", at(10, 2), 98, 98, 96, 96.5, v=100_000)
    go(clock, at(10, 3))
    stop_now = broker.get_order(stop["id"])
    assert stop_now["status"] == "filled" and stop_now["filled_qty"] == "60"
    assert broker.get_order(take_profit["id"])["status"] == "canceled"
    assert broker.list_positions() == []


def test_replace_that_needs_held_shares_is_refused() -> None:
    broker, _, _ = make_broker(at(10))
    placed(broker, order_body("AAPL", 10, "buy"))
    target = placed(broker, order_body("AAPL", 5, "sell", "limit", tif="gtc", limit_price=110))
    placed(broker, order_body("AAPL", 5, "sell", "stop", tif="gtc", stop_price=90))
    with pytest.raises(SimApiError) as refused:
        broker.replace_order(target["id"], {"qty": 8})
    assert refused.value.status == 403
    assert refused.value.body["message"] == "insufficient qty available for order (requested: 8, available: 5)"
    assert broker.get_order(target["id"])["status"] == "new"
    assert broker.replace_order(target["id"], {"qty": 5, "limit_price": 111})["limit_price"] == "111"


def test_exit_classes_need_a_position_and_entry_classes_must_open() -> None:
    broker, _, _ = make_broker(at(10))
    with pytest.raises(SimApiError) as flat_oco:
        placed(broker, order_body("AAPL", 5, "sell", "limit", order_class="oco",
                                       take_profit={"limit_price": 104}, stop_loss={"stop_price": 96}))
    assert flat_oco.value.status == 422
    placed(broker, order_body("AAPL", 5, "buy"))
    with pytest.raises(SimApiError) as too_big:
        placed(broker, order_body("AAPL", 6, "sell", "limit", order_class="oco",
                                       take_profit={"limit_price": 104}, stop_loss={"stop_price": 96}))
    assert too_big.value.status == 403 and too_big.value.body["available"] == "5"
    with pytest.raises(SimApiError) as exit_bracket:
        placed(broker, order_body("AAPL", 5, "sell", "limit", limit_price=100, order_class="bracket",
                                       take_profit={"limit_price": 95}, stop_loss={"stop_price": 105}))
    assert exit_bracket.value.body["message"] == "bracket orders must be entry orders"
