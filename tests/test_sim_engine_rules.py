"""Account rules of SimBroker: duplicate ids, wash trades, shorting, buying power, PDT."""

from __future__ import annotations

from datetime import date

import pytest
from structlog.testing import capture_logs

from simulator.daytrades import DayTradeBook, regime_for
from simulator.errors import SimApiError
from tests.test_sim_engine_support import et, go, make_broker, order_body, closed, placed


def test_duplicate_client_order_id_is_refused_even_after_cancel() -> None:
    broker, _, _ = make_broker(et(2025, 3, 3, 10))
    order = placed(broker, order_body("AAPL", 1, "buy", "limit", limit_price=90, client_order_id="intent-1"))
    broker.cancel_order(order["id"])
    with pytest.raises(SimApiError) as duplicate:
        placed(broker, order_body("AAPL", 1, "buy", "limit", limit_price=90, client_order_id="intent-1"))
    assert duplicate.value.status == 422
    assert duplicate.value.body == {"code": 40010001, "message": "client_order_id must be unique"}
    assert len(broker.list_orders({"status": "all"})) == 1


def test_buy_while_a_sell_stop_rests_is_a_wash_trade() -> None:
    broker, _, _ = make_broker(et(2025, 3, 3, 10))
    placed(broker, order_body("AAPL", 10, "buy"))
    placed(broker, order_body("AAPL", 10, "sell", "stop", tif="gtc", stop_price=95))
    with pytest.raises(SimApiError) as wash:
        placed(broker, order_body("AAPL", 5, "buy"))
    # Alpaca's real answer (Petersoj/alpaca-java #145): 422 42210000, not 403.
    assert wash.value.status == 422
    assert wash.value.body == {"code": 42210000, "message": "potential wash trade detected. use complex orders"}
    # Two limits whose prices cannot cross are not a wash trade.
    broker.cancel_all()
    placed(broker, order_body("AAPL", 5, "sell", "limit", limit_price=110))
    assert placed(broker, order_body("AAPL", 5, "buy", "limit", limit_price=95))["status"] == "new"
    with pytest.raises(SimApiError):
        placed(broker, order_body("AAPL", 5, "buy", "limit", limit_price=111))


def test_complex_orders_are_exempt_from_the_wash_trade_check() -> None:
    broker, _, _ = make_broker(et(2025, 3, 3, 10))
    placed(broker, order_body("AAPL", 10, "buy"))
    placed(broker, order_body("AAPL", 10, "sell", "limit", tif="gtc", limit_price=120))
    order = placed(broker, order_body("AAPL", 5, "buy", "limit", limit_price=99, order_class="bracket",
                                           take_profit={"limit_price": 105}, stop_loss={"stop_price": 95}))
    assert order["status"] == "new"


def test_short_sales_need_shorting_enabled() -> None:
    broker, _, _ = make_broker(et(2025, 3, 3, 10))
    short = placed(broker, order_body("AAPL", 10, "sell"))
    assert short["status"] == "filled" and short["position_intent"] == "sell_to_open"
    position = broker.get_position("AAPL")
    assert position["qty"] == "-10" and position["side"] == "short" and position["market_value"] == "-1000"
    assert broker.get_account()["short_market_value"] == "-1000"
    with pytest.raises(SimApiError) as flip:
        placed(broker, order_body("AAPL", 11, "buy"))
    assert flip.value.status == 403
    placed(broker, order_body("AAPL", 10, "buy"))
    broker.patch_account_configurations({"no_shorting": True, "pdt_check": None})
    assert broker.get_account()["shorting_enabled"] is False
    with pytest.raises(SimApiError) as refused:
        placed(broker, order_body("AAPL", 1, "sell"))
    assert refused.value.body == {"code": 40310000, "message": "account is not allowed to short"}


def test_insufficient_buying_power_reports_both_amounts() -> None:
    broker, _, _ = make_broker(et(2025, 3, 3, 10), cash="10000")
    with pytest.raises(SimApiError) as refused:
        placed(broker, order_body("AAPL", 300, "buy", "limit", limit_price=100))
    assert refused.value.status == 403
    assert refused.value.body == {
        "code": 40310000, "message": "insufficient buying power", "buying_power": "20000", "cost_basis": "30000",
    }
    placed(broker, order_body("AAPL", 150, "buy", "limit", limit_price=90))  # reserves 13,500
    with pytest.raises(SimApiError) as reserved:
        placed(broker, order_body("AAPL", 70, "buy", "limit", limit_price=100))
    assert reserved.value.body["buying_power"] == "6500"


def test_suspended_account_refuses_new_orders() -> None:
    broker, _, _ = make_broker(et(2025, 3, 3, 10))
    config = broker.patch_account_configurations({"suspend_trade": "true"})
    assert config["suspend_trade"] is True
    with pytest.raises(SimApiError) as refused:
        placed(broker, order_body("AAPL", 1, "buy"))
    assert refused.value.body["message"] == "new orders are rejected by user request"
    with pytest.raises(SimApiError):
        broker.patch_account_configurations({"max_margin_multiplier": "3"})


def _day_trade(broker, clock, when) -> None:
    go(clock, when)
    placed(broker, order_body("AAPL", 1, "buy"))
    placed(broker, order_body("AAPL", 1, "sell"))


def test_pdt_refuses_a_fourth_day_trade_in_2025_under_25k() -> None:
    broker, _, clock = make_broker(et(2025, 3, 3, 10), cash="20000")
    _day_trade(broker, clock, et(2025, 3, 3, 10))
    _day_trade(broker, clock, et(2025, 3, 4, 10))
    _day_trade(broker, clock, et(2025, 3, 5, 10))
    account = broker.get_account()
    assert account["daytrade_count"] == 3 and account["pattern_day_trader"] is False
    assert "daytrading_buying_power" in account
    go(clock, et(2025, 3, 6, 10))
    placed(broker, order_body("AAPL", 1, "buy"))
    with pytest.raises(SimApiError) as refused:
        placed(broker, order_body("AAPL", 1, "sell"))
    assert refused.value.status == 403
    assert refused.value.body == {"code": 40310100, "message": "trade denied due to pattern day trading protection"}
    with pytest.raises(SimApiError):
        broker.close_position("AAPL")
    # The next day the position is overnight: closing it is not a day trade.
    go(clock, et(2025, 3, 7, 10))
    assert closed(broker, "AAPL")["status"] == "filled"
    # A week later the window has rolled.
    go(clock, et(2025, 3, 12, 10))
    assert broker.get_account()["daytrade_count"] == 0
    assert broker.state()["pdt_regime"] == "legacy"


def test_pdt_rule_is_gone_after_2026_06_04() -> None:
    broker, _, clock = make_broker(et(2026, 7, 6, 10), cash="20000")
    for day in (6, 7, 8, 9):
        _day_trade(broker, clock, et(2026, 7, day, 10))
    account = broker.get_account()
    for field in ("pattern_day_trader", "daytrade_count", "daytrading_buying_power"):
        assert field not in account
    assert "pdt_check" not in broker.get_account_configurations()
    state = broker.state()
    assert state["pdt_regime"] == "intraday_margin" and state["daytrade_count"] == 4


def test_accounts_over_25k_may_day_trade_and_become_pattern_day_traders() -> None:
    broker, _, clock = make_broker(et(2025, 3, 3, 10), cash="50000")
    for day in (3, 4, 5, 6):
        _day_trade(broker, clock, et(2025, 3, day, 10))
    account = broker.get_account()
    assert account["daytrade_count"] == 4 and account["pattern_day_trader"] is True


def test_day_trade_counting_follows_alpacas_examples() -> None:
    book = DayTradeBook()
    d = date(2025, 3, 3)
    # buy 250, buy 250, sell 500: one day trade
    book.record(session=d, symbol="A", order_id="1", opened=True, closed=False)
    book.record(session=d, symbol="A", order_id="2", opened=True, closed=False)
    book.record(session=d, symbol="A", order_id="3", opened=False, closed=True)
    # buy 10, sell 5, sell 5: one day trade
    book.record(session=d, symbol="B", order_id="4", opened=True, closed=False)
    book.record(session=d, symbol="B", order_id="5", opened=False, closed=True)
    book.record(session=d, symbol="B", order_id="6", opened=False, closed=True)
    # overnight position: sell then buy back is none
    book.record(session=d, symbol="C", order_id="7", opened=False, closed=True)
    book.record(session=d, symbol="C", order_id="8", opened=True, closed=False)
    assert book.count_since(d) == 2
    # buy, sell, buy, sell: two more
    for i, (opened, closed) in enumerate([(True, False), (False, True), (True, False), (False, True)]):
        book.record(session=d, symbol="D", order_id=f"d{i}", opened=opened, closed=closed)
    assert book.count_since(d) == 4


def test_regime_switches_on_the_retirement_date() -> None:
    assert regime_for("auto", date(2026, 6, 3)) == "legacy"
    assert regime_for("auto", date(2026, 6, 4)) == "intraday_margin"
    assert regime_for("legacy", date(2027, 1, 4)) == "legacy"
    assert regime_for("off", date(2020, 1, 2)) == "intraday_margin"


def test_intraday_margin_checks_buying_power_again_when_an_opening_order_executes() -> None:
    broker, market, clock = make_broker(et(2026, 7, 6, 10), cash="10000")
    stop = placed(broker, order_body("AAPL", 180, "buy", "stop", stop_price=105))  # ~19,467 at submission
    placed(broker, order_body("SPY", 1, "sell"))  # a short whose loss will eat equity
    market.bar("SPY", et(2026, 7, 6, 10, 0), 500, 4000, 500, 4000)
    market.bar("AAPL", et(2026, 7, 6, 10, 1), 110, 111, 109, 110.5)
    go(clock, et(2026, 7, 6, 10, 2))
    with capture_logs() as logs:
        rejected = broker.get_order(stop["id"])
    assert [entry["event"] for entry in logs if entry["log_level"] == "info"] == ["sim_order_rejected_at_fill"]
    assert rejected["status"] == "rejected" and rejected["filled_qty"] == "0"
    assert "rejected" in [e["event"] for e in broker.events if e["order"]["id"] == stop["id"]]
