"""Replays the corpus of real Alpaca payloads (tests/fixtures/alpaca) through the gateway.

Every fixture is a JSON wrapper ``{"_source", "request", "status", "headers"?, "body"}``
holding a body Alpaca sent (its docs, its SDK's test fixtures, public bug reports; a few
lifecycle shapes are *derived* and say so in ``_source``/``_note``; tests/fixtures/alpaca/
SOURCES.md lists them all). Each one is served by aioresponses at its path and read back
through the gateway's typed method, as the daemon reads it:

* every success payload parses: money is Decimal (never float), timestamps are aware, the
  key values come out as sent, and nothing is dropped that is usable;
* every error body reaches the caller as a :class:`core.errors.BrokerError` carrying the HTTP
  status, Alpaca's ``code`` and the whole body (the subclass is the error taxonomy's
  business and is not asserted here).

``test_every_fixture_is_replayed`` keeps the corpus and the replays in step.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aioresponses import aioresponses
from pydantic import BaseModel
from structlog.testing import capture_logs

from core import errors
from api_gateway import ResilientAlpacaGateway
from broker.models import (
    Account,
    Activity,
    Asset,
    Bar,
    CalendarDay,
    Clock,
    MultiStatusItem,
    NewsArticle,
    Order,
    OrderRequest,
    Position,
    Quote,
    Snapshot,
    Trade,
    reset_tolerance_memory,
)
from broker.rate_limit import RateLimiter

CORPUS = Path(__file__).parent / "fixtures" / "alpaca"
TRADING = "https://paper-api.alpaca.markets"
DATA = "https://data.alpaca.markets"
NOW = datetime(2025, 6, 24, 18, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Fixture:
    name: str
    method: str
    path: str
    status: int
    headers: dict[str, str]
    body: Any


def load(name: str) -> Fixture:
    """A corpus fixture by name (``trading/account_docs_v2``)."""
    raw = json.loads((CORPUS / f"{name}.json").read_text())
    assert raw["_source"].strip(), f"{name} names no source"
    request = raw["request"]
    return Fixture(name, request["method"], request["path"], raw["status"],
                   raw.get("headers", {}), raw["body"])


def corpus_names(folder: str) -> list[str]:
    return sorted(f"{folder}/{path.stem}" for path in (CORPUS / folder).glob("*.json"))


def serve(mock: aioresponses, fixture: Fixture, *, path: str | None = None) -> None:
    """Answer the next request to the fixture's path (any query) with its status and body."""
    where = path or fixture.path
    base = DATA if where.startswith(("/v2/stocks", "/v1beta1")) else TRADING
    pattern = re.compile(re.escape(base + where) + r"(\?.*)?$")
    mock.add(pattern, method=fixture.method if path is None else "GET", status=fixture.status,
             payload=fixture.body, headers=fixture.headers or None)


class FakeTime:
    """The rate limiter's monotonic time: moves only when the limiter sleeps."""

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
        base_url=TRADING, data_url=DATA, key_id="PKCORPUS", secret_key="corpus-secret",
        clock=FixedClock(), sleep=_no_sleep, max_retries=0, data_feed="iex",
        max_quote_age=1e10,  # the corpus quotes are years old; freshness is tested elsewhere
        rate_limiter=RateLimiter(monotonic=limiter_time.monotonic, sleep=limiter_time.sleep),
    )
    async with gw:
        yield gw


# -- what every parsed payload must look like ---------------------------------------------


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _leaves(getattr(value, name))
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _leaves(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    else:
        yield value


def assert_clean(result: Any) -> None:
    """No float anywhere (money is Decimal), every Decimal finite, every datetime aware."""
    for leaf in _leaves(result):
        assert not isinstance(leaf, float), f"a float leaked out of parsing: {leaf!r}"
        if isinstance(leaf, Decimal):
            assert leaf.is_finite()
        if isinstance(leaf, datetime):
            assert leaf.utcoffset() is not None, f"naive datetime {leaf!r}"


# -- the replays: one per success fixture --------------------------------------------------

Replay = Callable[[ResilientAlpacaGateway, aioresponses], Awaitable[Any]]
REPLAYS: dict[str, Replay] = {}


def replay(*names: str) -> Callable[[Replay], Replay]:
    def register(function: Replay) -> Replay:
        for name in names:
            REPLAYS[name] = function
        return function
    return register


@replay("trading/account_docs_v2")
async def _account_docs(gw: ResilientAlpacaGateway, mock: aioresponses) -> Account:
    account = await gw.get_account()
    assert account.equity == Decimal("103820.56") and account.cash == Decimal("-23140.2")
    assert account.buying_power == Decimal("262113.632") and account.multiplier == Decimal("4")
    assert account.created_at == datetime(2019, 6, 12, 22, 47, 7, 996580, tzinfo=timezone.utc)
    assert account.daytrade_count == 0 and account.can_trade
    return account


@replay("trading/account_openapi_2023")
async def _account_openapi(gw: ResilientAlpacaGateway, mock: aioresponses) -> Account:
    account = await gw.get_account()
    assert account.last_equity == Decimal("122011.09751111286868")
    assert account.options_buying_power == Decimal("122716.305")
    assert account.crypto_status == "ACTIVE" and account.options_trading_level == 2
    assert account.balance_asof == date(2023, 9, 27) and account.pattern_day_trader is True
    assert account.pending_reg_taf_fees == Decimal("0")
    return account


@replay("trading/positions_alpaca_py")
async def _positions(gw: ResilientAlpacaGateway, mock: aioresponses) -> list[Position]:
    positions = await gw.list_positions()
    assert [(p.symbol, p.qty, p.avg_entry_price) for p in positions] == [
        ("AAPL", Decimal("5"), Decimal("100.0"))]
    assert positions[0].unrealized_plpc == Decimal("0.20") and positions[0].is_long
    return positions


@replay("trading/position_docs_single")
async def _position_single(gw: ResilientAlpacaGateway, mock: aioresponses) -> Position | None:
    position = await gw.get_position("AAPL")
    assert position is not None
    assert position.symbol == "AAPL"  # the docs example's "AAPL " with its stray space
    assert position.qty_available == Decimal("5") and position.market_value == Decimal("600.0")
    return position


@replay("trading/positions_fractional_local_currency")
async def _positions_fractional(gw: ResilientAlpacaGateway, mock: aioresponses) -> list[Position]:
    [position] = await gw.list_positions()
    assert position.qty == Decimal("0.173011547")
    assert position.avg_entry_price == Decimal("286.9749783265074366")
    assert position.cost_basis == Decimal("49.6499849505605227113711001112")
    assert position.swap_rate == Decimal("1.499868775739003") and position.asset_marginable
    return [position]


@replay("trading/order_market_accepted_commission")
async def _order_commission(gw: ResilientAlpacaGateway, mock: aioresponses) -> Order:
    order = await gw.get_order("61e69015-8549-4bfd-b9c3-01e75843f47d")
    assert order.commission == Decimal("1.25") and order.qty == Decimal("1")
    assert order.symbol == "AAPL`" and order.status == "accepted" and order.is_open
    assert order.submitted_at == datetime(2021, 3, 16, 18, 38, 1, 937734, tzinfo=timezone.utc)
    return order


@replay("trading/orders_alpaca_py_malformed_hwm")
async def _orders_bad_hwm(gw: ResilientAlpacaGateway, mock: aioresponses) -> list[Order]:
    with capture_logs() as logs:
        orders = await gw.list_orders(status="all")
    [order] = orders
    assert order.hwm is None  # "string" is no number: dropped, the order kept
    assert order.filled_avg_price == Decimal("0") and order.filled_qty == Decimal("0")
    assert order.replaced_by == "0b11f089-722d-4ced-9beb-e2eeed3637dc"
    assert order.replaces == "9f7d75bc-a9a2-40b0-9082-0fc0a09817ff"
    assert order.extended_hours is True and order.type == "stop"
    ignored = [e for e in logs if e["event"] == "broker_field_ignored"]
    assert [(e["model"], e["field"]) for e in ignored] == [("Order", "hwm")]
    return orders


@replay("trading/order_position_intent")
async def _order_intent(gw: ResilientAlpacaGateway, mock: aioresponses) -> Order:
    order = await gw.submit_order(OrderRequest.simple("SPY", 1, "buy", client_order_id="corpus-1"))
    assert order.position_intent == "buy_to_open" and order.commission == Decimal("1.25")
    return order


@replay("trading/order_notional_docs")
async def _order_notional(gw: ResilientAlpacaGateway, mock: aioresponses) -> Order:
    order = await gw.get_order("61e69015-8549-4bfd-b9c3-01e75843f47d")
    assert order.notional == Decimal("500") and order.qty is None and order.remaining_qty is None
    assert order.order_class == "simple"  # "" on the wire
    return order


@replay("trading/order_limit_gtc_nanoseconds")
async def _order_limit(gw: ResilientAlpacaGateway, mock: aioresponses) -> Order:
    order = await gw.get_order("d27f7175-073d-455d-a95d-89f43bb3ab77")
    assert order.created_at == datetime(2024, 3, 22, 20, 38, 24, 849157, tzinfo=timezone.utc)
    assert order.limit_price == Decimal("150") and order.time_in_force == "gtc"
    assert order.subtag is None and order.source is None
    return order


@replay("trading/order_pending_cancel_replacement")
async def _order_pending_cancel(gw: ResilientAlpacaGateway, mock: aioresponses) -> Order:
    order = await gw.get_order("e4f99109-a141-4575-a029-a39a8ee2ea7f")
    assert order.status == "pending_cancel" and order.is_open
    assert order.replaces == "b8639e43-64a9-428a-b829-4726a05acd6a"
    assert order.limit_price == Decimal("12.03") and order.remaining_qty == Decimal("83")
    return order


@replay("trading/order_trailing_stop_hwm")
async def _order_trailing(gw: ResilientAlpacaGateway, mock: aioresponses) -> Order:
    order = await gw.get_order("bcaddbc2-329b-4c5d-ab6b-ee40749aa7b5")
    assert order.type == "trailing_stop" and order.hwm == Decimal("244.67")
    assert order.trail_price == Decimal("7") and order.trail_percent is None
    return order


@replay("trading/order_bracket_accepted_nested")
async def _order_bracket(gw: ResilientAlpacaGateway, mock: aioresponses) -> Order:
    order = await gw.get_order("d27f7175-073d-455d-a95d-89f43bb3ab77")
    assert order.order_class == "bracket" and order.legs is not None
    assert [(leg.type, leg.status, leg.limit_price, leg.stop_price) for leg in order.legs] == [
        ("limit", "held", Decimal("165"), None), ("stop", "held", None, Decimal("140"))]
    return order


@replay("trading/orders_bracket_filled_open_exits")
async def _orders_bracket_filled(gw: ResilientAlpacaGateway, mock: aioresponses) -> list[Order]:
    [entry] = await gw.list_orders(status="all")
    assert entry.is_terminal and entry.filled_avg_price == Decimal("149.98")
    assert entry.filled_at == datetime(2024, 3, 22, 20, 41, 2, 19211, tzinfo=timezone.utc)
    assert entry.legs is not None and [leg.status for leg in entry.legs] == ["new", "held"]
    return [entry]


@replay("trading/orders_partially_filled_and_canceled")
async def _orders_partial(gw: ResilientAlpacaGateway, mock: aioresponses) -> list[Order]:
    partial, canceled = await gw.list_orders(status="all")
    assert partial.status == "partially_filled" and partial.remaining_qty == Decimal("1")
    assert canceled.is_terminal and canceled.canceled_at is not None
    return [partial, canceled]


@replay("trading/orders_replaced_pair")
async def _orders_replaced(gw: ResilientAlpacaGateway, mock: aioresponses) -> list[Order]:
    old, new = await gw.list_orders(status="all")
    assert old.status == "replaced" and old.replaced_by == new.id and new.replaces == old.id
    assert new.limit_price == Decimal("151")
    return [old, new]


@replay("trading/order_oco_nested")
async def _order_oco(gw: ResilientAlpacaGateway, mock: aioresponses) -> Order:
    # The OCO request with its limit only in take_profit, as Alpaca's own example sends it.
    request = OrderRequest(symbol="AAPL", qty=2, side="sell", type="limit", time_in_force="gtc",
                           order_class="oco", take_profit={"limit_price": "165"},
                           stop_loss={"stop_price": "140"}, client_order_id="corpus-oco")
    order = await gw.submit_order(request)
    assert order.order_class == "oco" and order.legs is not None
    assert order.legs[0].stop_price == Decimal("140")
    return order


@replay("trading/order_oto_nested")
async def _order_oto(gw: ResilientAlpacaGateway, mock: aioresponses) -> Order:
    request = OrderRequest.oto("AAPL", 2, "buy", stop_loss_price="140", limit_price="150",
                               time_in_force="gtc", client_order_id="corpus-oto")
    order = await gw.submit_order(request)
    assert order.order_class == "oto" and order.legs is not None and len(order.legs) == 1
    return order


@replay("trading/close_position_notional_order")
async def _close_position(gw: ResilientAlpacaGateway, mock: aioresponses) -> Order:
    order = await gw.close_position("AAPL")
    assert order.notional == Decimal("500") and order.type == "market"
    return order


@replay("trading/close_all_positions_207")
async def _close_all(gw: ResilientAlpacaGateway, mock: aioresponses) -> list[MultiStatusItem]:
    items = await gw.close_all_positions()
    closed, refused = items
    assert closed.order is not None and closed.order.qty == Decimal("0.0283")
    assert refused.error is not None and refused.error.code == 40310000
    assert refused.error.model_extra is not None
    assert refused.error.model_extra["held_for_orders"] == "1000"
    return items


@replay("trading/cancel_all_orders_207")
async def _cancel_all(gw: ResilientAlpacaGateway, mock: aioresponses) -> list[MultiStatusItem]:
    items = await gw.cancel_all_orders()
    assert [(item.id, item.ok) for item in items] == [("497f6eca-6276-4993-bfeb-53cbbbba6f08", True)]
    return items


@replay("trading/clock_alpaca_py")
async def _clock(gw: ResilientAlpacaGateway, mock: aioresponses) -> Clock:
    clock = await gw.get_clock()
    assert clock.timestamp == datetime(2022, 5, 16, 20, 32, 24, 143735, tzinfo=timezone.utc)
    assert not clock.is_open and clock.next_open.utcoffset() is not None
    return clock


@replay("trading/calendar_alpaca_py")
async def _calendar(gw: ResilientAlpacaGateway, mock: aioresponses) -> list[CalendarDay]:
    [day] = await gw.get_calendar(date(2025, 1, 2), date(2025, 1, 3))
    assert day.open_utc == datetime(2025, 1, 2, 14, 30, tzinfo=timezone.utc)
    assert day.session_open is not None and day.session_open.hour == 4
    assert day.settlement_date == date(2025, 1, 3)
    return [day]


@replay("trading/assets_alpaca_py")
async def _assets(gw: ResilientAlpacaGateway, mock: aioresponses) -> list[Asset]:
    [asset] = await gw.list_assets()
    assert asset.asset_class == "us_equity" and asset.tradable and asset.fractionable
    assert asset.attributes == ["attribute1", "attribute2"]
    return [asset]


@replay("trading/asset_docs_single")
async def _asset(gw: ResilientAlpacaGateway, mock: aioresponses) -> Asset:
    asset = await gw.get_asset("AAPL")
    assert asset.maintenance_margin_requirement == Decimal("30") and asset.name is None
    return asset


@replay("trading/activities_csd_and_fill")
async def _activities_mixed(gw: ResilientAlpacaGateway, mock: aioresponses) -> list[Activity]:
    deposit, fill = await gw.get_activities(activity_types=())
    assert deposit.activity_type == "CSD" and deposit.net_amount == Decimal("33324.35")
    assert deposit.date == date(2022, 4, 19) and deposit.transaction_time is None
    assert fill.price == Decimal("2630.95") and fill.cum_qty == Decimal("10.177047834")
    assert fill.transaction_time == datetime(2022, 3, 4, 14, 53, 18, 500245, tzinfo=timezone.utc)
    return [deposit, fill]


@replay("trading/activities_div_alpaca_py")
async def _activities_div(gw: ResilientAlpacaGateway, mock: aioresponses) -> list[Activity]:
    [dividend] = await gw.get_activities(activity_types=("DIV",))
    assert dividend.per_share_amount == Decimal("10.00") and dividend.qty == Decimal("10")
    return [dividend]


@replay("trading/activities_docs_samples")
async def _activities_docs(gw: ResilientAlpacaGateway, mock: aioresponses) -> list[Activity]:
    fill, dividend = await gw.get_activities(activity_types=("FILL", "DIV"))
    assert fill.symbol == "LPCN" and fill.price == Decimal("1.63") and fill.leaves_qty == 0
    assert dividend.cusip == "C00206R102" and dividend.net_amount == Decimal("1.02")
    return [fill, dividend]


@replay("trading/activities_fill_reference")
async def _activities_fills(gw: ResilientAlpacaGateway, mock: aioresponses) -> list[Activity]:
    fill, partial = await gw.get_activities()
    assert (fill.type, fill.order_status) == ("fill", "filled")
    assert (partial.type, partial.leaves_qty, partial.order_status) == (
        "partial_fill", Decimal("1"), "partially_filled")
    return [fill, partial]


@replay("data/bars_single_page1_next_token")
async def _bars_single(gw: ResilientAlpacaGateway, mock: aioresponses) -> list[Bar]:
    serve(mock, load("data/bars_single_empty_last_page"))  # the page the token leads to
    bars = await gw.get_symbol_bars("AAPL")
    assert [(b.t, b.o, b.c, b.v) for b in bars] == [
        (datetime(2022, 2, 1, 5, tzinfo=timezone.utc), Decimal("174"), Decimal("174.61"), 85998033),
        (datetime(2022, 2, 2, 5, tzinfo=timezone.utc), Decimal("174.64"), Decimal("175.84"), 84817432),
    ]
    assert bars[0].vw == Decimal("173.703516") and bars[0].n == 732412
    assert any("page_token" in str(url) for (_, url) in mock.requests)
    return bars


@replay("data/bars_single_empty_last_page")
async def _bars_empty(gw: ResilientAlpacaGateway, mock: aioresponses) -> list[Bar]:
    bars = await gw.get_symbol_bars("AAPL")
    assert bars == []
    return bars


@replay("data/bars_multi_alpaca_py")
async def _bars_multi(gw: ResilientAlpacaGateway, mock: aioresponses) -> dict[str, list[Bar]]:
    bars = await gw.get_bars(["AAPL", "TSLA"])
    assert bars["TSLA"][0].o == Decimal("839") and bars["AAPL"][0].l == Decimal("159.41")
    return bars


@replay("data/bars_multi_docs_next_token")
async def _bars_multi_pages(gw: ResilientAlpacaGateway, mock: aioresponses) -> dict[str, list[Bar]]:
    serve(mock, load("data/bars_multi_empty_last_page"))
    bars = await gw.get_bars(["AAPL", "TSLA"])
    assert bars["TSLA"][0].h == Decimal("1008.4681") and bars["AAPL"][0].c == Decimal("166.975")
    return bars


@replay("data/bars_multi_empty_last_page")
async def _bars_multi_empty(gw: ResilientAlpacaGateway, mock: aioresponses) -> dict[str, list[Bar]]:
    bars = await gw.get_bars(["AAPL"])
    assert bars == {}
    return bars


@replay("data/latest_trades_multi_alpaca_py", "data/latest_trades_multi_docs")
async def _latest_trades(gw: ResilientAlpacaGateway, mock: aioresponses) -> dict[str, Trade]:
    trades = await gw.get_latest_trades(["AAPL", "TSLA"])
    assert set(trades) == {"AAPL", "TSLA"}
    assert all(t.size == Decimal("100") and t.t.tzinfo is not None for t in trades.values())
    return trades


@replay("data/latest_trade_single_docs")
async def _latest_trade(gw: ResilientAlpacaGateway, mock: aioresponses) -> Trade | None:
    trade = await gw.get_latest_trade("AAPL")
    assert trade is not None and trade.price == Decimal("166.81") and trade.i == 10503
    assert trade.t.microsecond == 406302  # nanoseconds truncated
    return trade


@replay("data/latest_quotes_multi_docs")
async def _latest_quotes(gw: ResilientAlpacaGateway, mock: aioresponses) -> dict[str, Quote]:
    quotes = await gw.get_latest_quotes(["AAPL", "TSLA"])
    assert quotes["TSLA"].ask == Decimal("1020") and quotes["AAPL"].bid == Decimal("168.03")
    return quotes


@replay("data/latest_quote_single_alpaca_py")
async def _latest_quote(gw: ResilientAlpacaGateway, mock: aioresponses) -> Quote | None:
    quote = await gw.get_latest_quote("AAPL")
    assert quote is not None and quote.bid_size == Decimal("2") and quote.ax == "P"
    return quote


@replay("data/latest_quote_zero_docs")
async def _latest_quote_zero(gw: ResilientAlpacaGateway, mock: aioresponses) -> Quote | None:
    with capture_logs() as logs:
        quote = await gw.get_latest_quote("AAPL")
    assert quote is None  # parsed fine, then refused by the quality check (no bid, no ask)
    assert [e["reason"] for e in logs if e["event"] == "bad_quote_rejected"] == ["zero_price"]
    return quote


@replay("data/snapshot_single_alpaca_py")
async def _snapshot(gw: ResilientAlpacaGateway, mock: aioresponses) -> Snapshot:
    snap = await gw.get_snapshot("AAPL")
    assert snap.latest_trade is not None and snap.latest_trade.p == Decimal("161.1998")
    assert snap.prev_daily_bar is not None and snap.prev_daily_bar.h == Decimal("161")
    assert snap.latest_quote is not None and snap.latest_quote.bs == Decimal("5")
    return snap


@replay("data/snapshot_single_docs")
async def _snapshot_docs(gw: ResilientAlpacaGateway, mock: aioresponses) -> Snapshot:
    snap = await gw.get_snapshot("AAPL")
    assert snap.daily_bar is not None and snap.daily_bar.n is None and snap.daily_bar.vw is None
    assert snap.latest_quote is not None and snap.latest_quote.z is None
    return snap


@replay("data/snapshots_multi_docs")
async def _snapshots(gw: ResilientAlpacaGateway, mock: aioresponses) -> dict[str, Snapshot]:
    snaps = await gw.get_snapshots(["AAPL", "TSLA"])
    tsla = snaps["TSLA"]
    assert tsla.daily_bar is not None and tsla.daily_bar.h == Decimal("627.0999")
    assert snaps["AAPL"].latest_quote is not None
    return snaps


@replay("data/news_alpaca_py")
async def _news(gw: ResilientAlpacaGateway, mock: aioresponses) -> list[NewsArticle]:
    [article] = await gw.get_news(["AAPL"], limit=1)
    assert article.id == 40432158 and article.symbols == ["AAPL", "QCOM"]
    assert len(article.images) == 3 and article.created_at.tzinfo is not None
    return [article]


SUCCESS = corpus_names("trading") + corpus_names("data")
ERRORS = corpus_names("errors")


def test_every_fixture_is_replayed_and_names_its_source() -> None:
    assert set(SUCCESS) == set(REPLAYS), "a fixture without a replay (or a replay without one)"
    assert len(SUCCESS) + len(ERRORS) >= 55
    for name in SUCCESS + ERRORS:
        load(name)  # asserts the _source note
    sources = (CORPUS / "SOURCES.md").read_text()
    for name in SUCCESS + ERRORS:
        assert f"`{name}.json`" in sources, f"SOURCES.md does not list {name}"


@pytest.mark.parametrize("name", SUCCESS)
async def test_real_payload_parses_through_the_gateway(
    name: str, gateway: ResilientAlpacaGateway, mock: aioresponses
) -> None:
    fixture = load(name)
    serve(mock, fixture)
    with capture_logs() as logs:
        result = await REPLAYS[name](gateway, mock)
    assert_clean(result)
    assert gateway.dropped_items == 0
    assert not [e for e in logs if e["log_level"] in ("error", "critical")], logs


# -- error bodies: the caller sees status, code and body ------------------------------------


async def _typed_call(gw: ResilientAlpacaGateway, fixture: Fixture) -> Any:
    """The daemon's typed call for the fixture's request."""
    method, path = fixture.method, fixture.path
    if method == "POST" and path == "/v2/orders":
        return await gw.submit_order(OrderRequest.simple("AAPL", 1, "buy", client_order_id="corpus-err"))
    if method == "DELETE" and path.startswith("/v2/positions/"):
        return await gw.close_position(path.rsplit("/", 1)[1])
    if method == "DELETE" and path.startswith("/v2/orders/"):
        return await gw.cancel_order(path.rsplit("/", 1)[1])
    if method == "GET" and path.startswith("/v2/orders/"):
        return await gw.get_order(path.rsplit("/", 1)[1])
    if path == "/v2/account":
        return await gw.get_account()
    if path == "/v2/stocks/snapshots":
        return await gw.get_snapshots(["AAPL"])
    raise AssertionError(f"no typed call for {method} {path}")


@pytest.mark.parametrize("name", ERRORS)
async def test_error_body_reaches_the_caller_with_status_code_and_body(
    name: str, gateway: ResilientAlpacaGateway, mock: aioresponses
) -> None:
    fixture = load(name)
    body = fixture.body
    serve(mock, fixture)
    data_api = fixture.path.startswith(("/v2/stocks", "/v1beta1"))
    response = await gateway.request(fixture.method, fixture.path, data_api=data_api)
    assert (response.status, response.error_code, response.data) == (
        fixture.status, body.get("code"), body)
    assert not response.success and response.message == body["message"]

    serve(mock, fixture)
    if fixture.method == "DELETE" and fixture.path.startswith("/v2/orders/"):
        # A cancel that lost the race: the order may be re-read to learn its true state.
        filled = {**load("trading/order_market_accepted_commission").body, "status": "filled"}
        mock.get(re.compile(re.escape(TRADING + fixture.path) + r"(\?.*)?$"), payload=filled,
                 repeat=True)
    try:
        await _typed_call(gateway, fixture)
    except errors.BrokerError as exc:
        assert (exc.status, exc.code) == (fixture.status, body.get("code"))
        assert exc.body == body  # related_orders, held_for_orders ... all kept
    else:
        # Only a cancel may end quietly: "already filled" is a fact about the order.
        assert fixture.name == "errors/422_cancel_already_filled", "an error body was swallowed"
