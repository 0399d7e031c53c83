"""ResilientAlpacaGateway's promises, proven with aioresponses instead of a server.

aioresponses patches ``aiohttp.ClientSession._request``: nothing leaves the process, the
gateway is pointed at the real Alpaca hosts (paper trading and market data), and every
request it makes is recorded in ``mock.requests`` keyed by ``(METHOD, URL)`` with the query
sorted. A request nobody registered fails like a refused connection, so the request counts
asserted below also prove that no unplanned call was made.

Backoff sleeps go to a recorder and the rate limiter runs on fake time, so no test waits.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from aioresponses.core import RequestCall
from structlog.testing import capture_logs
from yarl import URL

from core import errors
from api_gateway import ResilientAlpacaGateway
from broker.models import ApiResponse, MultiStatusItem, OrderRequest
from broker.rate_limit import RateLimiter

TRADING = "https://paper-api.alpaca.markets"
DATA = "https://data.alpaca.markets"
KEY = "PKMOCKKEY3V8N2QZ"
SECRET = "mOcK+Secret/Value=9z8y7x6w"
NOW = datetime(2025, 6, 24, 18, 0, tzinfo=timezone.utc)


# -- test doubles --------------------------------------------------------------------------


class SleepRecorder:
    """The gateway's injected ``sleep``: records each requested delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


class FakeTime:
    """Monotonic time for the rate limiter that only moves when the limiter sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


class FakeClock:
    """The injected market clock (quote age)."""

    def __init__(self, now: datetime) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current

    async def sleep(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


def url(base: str, path: str, **query: str) -> URL:
    """The URL as aioresponses records it: query parameters sorted by name."""
    return URL(base + path).with_query(sorted(query.items()))


def calls(mock: aioresponses, method: str, target: URL) -> list[RequestCall]:
    """Every recorded request of ``method`` to exactly ``target`` (query included)."""
    return mock.requests.get((method, target), [])


def calls_to(mock: aioresponses, method: str, path: str) -> list[tuple[URL, RequestCall]]:
    """Every recorded request of ``method`` to ``path`` whatever its query string."""
    return [(target, call) for (verb, target), recorded in mock.requests.items()
            if verb == method and target.path == path for call in recorded]


def order_json(cid: str, *, symbol: str = "AAPL", side: str = "buy", status: str = "accepted",
               order_id: str = "61e69015-8549-4bfd-b9c3-01e75843f47d") -> dict[str, Any]:
    return {
        "id": order_id, "client_order_id": cid, "created_at": "2025-06-24T18:00:00.123456789Z",
        "updated_at": "2025-06-24T18:00:00Z", "submitted_at": "2025-06-24T18:00:00Z",
        "symbol": symbol, "asset_class": "us_equity", "qty": "10", "filled_qty": "0",
        "order_class": "", "type": "market", "side": side, "time_in_force": "day",
        "status": status, "extended_hours": False, "legs": None,
    }


ACCOUNT = {"id": "acc-1", "account_number": "PA1", "status": "ACTIVE", "cash": "1000",
           "equity": "1000", "buying_power": "2000"}
CLOCK = {"timestamp": "2025-06-24T14:15:22.123456789-04:00", "is_open": True,
         "next_open": "2025-06-25T09:30:00-04:00", "next_close": "2025-06-24T16:00:00-04:00"}
ORDERS = url(TRADING, "/v2/orders")


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def mock() -> Iterator[aioresponses]:
    with aioresponses() as responses:
        yield responses


@pytest.fixture
def backoff() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def make_gateway(backoff: SleepRecorder) -> Callable[..., ResilientAlpacaGateway]:
    def build(**overrides: Any) -> ResilientAlpacaGateway:
        limiter_time = FakeTime()
        options: dict[str, Any] = {
            "base_url": TRADING, "data_url": DATA, "key_id": KEY, "secret_key": SECRET,
            "clock": FakeClock(NOW), "sleep": backoff, "wall_time": NOW.timestamp,
            "rate_limiter": RateLimiter(monotonic=limiter_time.monotonic, sleep=limiter_time.sleep),
        }
        options.update(overrides)
        return ResilientAlpacaGateway(**options)
    return build


@pytest.fixture
async def gateway(make_gateway: Callable[..., ResilientAlpacaGateway]
                  ) -> AsyncIterator[ResilientAlpacaGateway]:
    async with make_gateway() as gw:
        yield gw


# -- rate limits and retries ---------------------------------------------------------------


async def test_429_waits_as_long_as_retry_after_says_then_succeeds(
    mock: aioresponses, gateway: ResilientAlpacaGateway, backoff: SleepRecorder
) -> None:
    account = url(TRADING, "/v2/account")
    mock.get(account, status=429, payload={"message": "rate limit exceeded"},
             headers={"Retry-After": "7"})
    mock.get(account, payload=ACCOUNT)
    with capture_logs() as logs:
        result = await gateway.get_account()
    assert result.equity == Decimal("1000")
    assert backoff.delays == [pytest.approx(7.0)]
    assert len(calls(mock, "GET", account)) == 2
    retries = [e for e in logs if e["event"] == "broker_retry"]
    assert [(e["status"], e["delay"]) for e in retries] == [(429, 7.0)]


async def test_429_waits_until_x_ratelimit_reset_then_succeeds(
    mock: aioresponses, gateway: ResilientAlpacaGateway, backoff: SleepRecorder
) -> None:
    account = url(TRADING, "/v2/account")
    reset = str(int(NOW.timestamp()) + 12)  # a Unix time 12 s after the injected wall time
    mock.get(account, status=429, payload={"message": "too many requests"},
             headers={"X-RateLimit-Limit": "200", "X-RateLimit-Remaining": "0",
                      "X-RateLimit-Reset": reset})
    mock.get(account, payload=ACCOUNT)
    result = await gateway.get_account()
    assert result.account_number == "PA1"
    assert backoff.delays == [pytest.approx(12.0)]
    assert len(calls(mock, "GET", account)) == 2


class SharedTime:
    """One fake wall time for the gateway's backoff and the rate limiter's waits: what a
    caller really waits is ``now`` afterwards."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


async def test_a_429_with_retry_after_1_pauses_one_second_not_the_sixty_second_cooldown(
    mock: aioresponses, make_gateway: Callable[..., ResilientAlpacaGateway]
) -> None:
    """Issue 12: a single 429 with ``Retry-After: 1`` froze the daemon's limiter for 60 s."""
    fake = SharedTime()
    limiter = RateLimiter(cooldown_seconds=60, monotonic=fake.monotonic, sleep=fake.sleep)
    account = url(TRADING, "/v2/account")
    mock.get(account, status=429, payload={"code": 42910000, "message": "rate limit exceeded"},
             headers={"Retry-After": "1"})
    mock.get(account, payload=ACCOUNT, repeat=True)
    async with make_gateway(rate_limiter=limiter, sleep=fake.sleep) as gw:
        await gw.get_account()
        await gw.get_account()  # the next normal call is not held either
    assert fake.now == pytest.approx(1.0)


async def test_x_ratelimit_remaining_zero_holds_normal_calls_until_the_reset_exactly(
    mock: aioresponses, make_gateway: Callable[..., ResilientAlpacaGateway]
) -> None:
    fake = SharedTime()
    limiter = RateLimiter(monotonic=fake.monotonic, sleep=fake.sleep)
    account = url(TRADING, "/v2/account")
    exhausted = {"X-RateLimit-Limit": "200", "X-RateLimit-Remaining": "0",
                 "X-RateLimit-Reset": str(int(NOW.timestamp()) + 5)}
    mock.get(account, payload=ACCOUNT, headers=exhausted)
    mock.get(account, payload=ACCOUNT, headers={"X-RateLimit-Remaining": "199",
                                                "X-RateLimit-Reset": str(int(NOW.timestamp()) + 60)})
    mock.delete(url(TRADING, "/v2/orders/o-1"), status=204)
    async with make_gateway(rate_limiter=limiter, sleep=fake.sleep) as gw:
        await gw.get_account()  # succeeded, but the broker says nothing is left for 5 s
        await gw.cancel_order("o-1")  # an emergency call still goes at once
        assert fake.now == 0.0
        await gw.get_account()  # a normal call waits for the reset: no less...
        assert fake.now == pytest.approx(5.0)
    assert len(calls(mock, "GET", account)) == 2
    assert fake.now == pytest.approx(5.0)  # ...and no more


async def test_x_ratelimit_remaining_above_zero_costs_no_wait(
    mock: aioresponses, make_gateway: Callable[..., ResilientAlpacaGateway]
) -> None:
    fake = SharedTime()
    limiter = RateLimiter(monotonic=fake.monotonic, sleep=fake.sleep)
    account = url(TRADING, "/v2/account")
    mock.get(account, payload=ACCOUNT, repeat=True,
             headers={"X-RateLimit-Remaining": "3", "X-RateLimit-Reset": str(int(NOW.timestamp()) + 30)})
    async with make_gateway(rate_limiter=limiter, sleep=fake.sleep) as gw:
        for _ in range(3):
            await gw.get_account()
    assert fake.now == 0.0


async def test_the_single_attempt_clock_read_never_retries_or_sleeps(
    mock: aioresponses, gateway: ResilientAlpacaGateway, backoff: SleepRecorder
) -> None:
    clock_url = url(TRADING, "/v2/clock")
    mock.get(clock_url, status=500, payload={"code": 50010000, "message": "internal server error"},
             repeat=True)
    with pytest.raises(errors.TradingError):
        await gateway.read_clock_once()
    assert len(calls(mock, "GET", clock_url)) == 1 and backoff.delays == []


async def test_5xx_is_retried_with_growing_backoff_then_succeeds(
    mock: aioresponses, gateway: ResilientAlpacaGateway, backoff: SleepRecorder
) -> None:
    clock = url(TRADING, "/v2/clock")
    mock.get(clock, status=500, payload={"message": "internal server error"})
    mock.get(clock, status=502, body="<html>bad gateway</html>", content_type="text/html")
    mock.get(clock, payload=CLOCK)
    with capture_logs() as logs:
        result = await gateway.get_clock()
    assert result.is_open
    assert len(calls(mock, "GET", clock)) == 3
    # backoff_base 0.5 s, jittered between half and all of base x 2^(attempt-1)
    assert len(backoff.delays) == 2
    assert 0.25 <= backoff.delays[0] <= 0.5 and 0.5 <= backoff.delays[1] <= 1.0
    retries = [(e["attempt"], e["status"]) for e in logs if e["event"] == "broker_retry"]
    assert retries == [(1, 500), (2, 502)]


async def test_a_timed_out_read_is_retried(
    mock: aioresponses, gateway: ResilientAlpacaGateway, backoff: SleepRecorder
) -> None:
    positions = url(TRADING, "/v2/positions")
    mock.get(positions, exception=asyncio.TimeoutError())
    mock.get(positions, payload=[])
    assert await gateway.list_positions() == []
    assert len(calls(mock, "GET", positions)) == 2 and len(backoff.delays) == 1


async def test_retries_are_bounded_and_end_in_a_temporary_error(
    mock: aioresponses, make_gateway: Callable[..., ResilientAlpacaGateway], backoff: SleepRecorder
) -> None:
    positions = url(TRADING, "/v2/positions")
    mock.get(positions, status=503, payload={"message": "service unavailable"}, repeat=True)
    async with make_gateway(max_retries=2) as gw:
        with capture_logs() as logs, pytest.raises(errors.TemporaryError) as info:
            await gw.list_positions()
    assert isinstance(info.value, errors.ServerError) and info.value.status == 503
    assert len(calls(mock, "GET", positions)) == 3  # the first try and two retries
    assert len(backoff.delays) == 2
    failed = [e for e in logs if e["event"] == "broker_request_failed"]
    assert len(failed) == 1 and failed[0]["attempts"] == 3


# -- definitive business errors -----------------------------------------------------------


async def test_insufficient_qty_is_not_retried_and_names_the_held_shares(
    mock: aioresponses, gateway: ResilientAlpacaGateway, backoff: SleepRecorder
) -> None:
    mock.post(ORDERS, status=403, repeat=True, payload={
        "available": "0", "code": 40310000, "existing_qty": "1000", "held_for_orders": "1000",
        "message": "insufficient qty available for order (requested: 1000, available: 0)",
        "symbol": "SQQQ"})
    with pytest.raises(errors.InsufficientQuantity) as info:
        await gateway.submit_simple_order("SQQQ", 1000, "sell", client_order_id="exit-SQQQ-1")
    assert info.value.available == Decimal("0")
    assert info.value.held_for_orders == Decimal("1000")
    assert info.value.status == 403 and info.value.code == 40310000
    assert len(calls(mock, "POST", ORDERS)) == 1
    assert calls_to(mock, "GET", "/v2/orders:by_client_order_id") == []
    assert backoff.delays == []


async def test_pdt_rejection_blocks_the_symbol_and_is_logged(
    mock: aioresponses, gateway: ResilientAlpacaGateway
) -> None:
    mock.post(ORDERS, status=403, repeat=True, payload={
        "code": 40310100, "message": "trade denied due to pattern day trading protection"})
    with capture_logs() as logs, pytest.raises(errors.PatternDayTraderRejected) as info:
        await gateway.submit_simple_order("TSLA", 1, "sell", client_order_id="exit-TSLA-1")
    assert info.value.code == 40310100
    assert gateway.pdt_blocked_symbols == {"TSLA"}
    assert [(e["symbol"], e["code"]) for e in logs if e["event"] == "pdt_blocked"] == [
        ("TSLA", 40310100)]
    assert len(calls(mock, "POST", ORDERS)) == 1


# -- success statuses without a plain body -------------------------------------------------


async def test_204_on_cancel_is_success(
    mock: aioresponses, gateway: ResilientAlpacaGateway, backoff: SleepRecorder
) -> None:
    target = url(TRADING, "/v2/orders/61e69015-8549-4bfd-b9c3-01e75843f47d")
    mock.delete(target, status=204)
    assert await gateway.cancel_order("61e69015-8549-4bfd-b9c3-01e75843f47d") is None
    assert len(calls(mock, "DELETE", target)) == 1 and backoff.delays == []


async def test_207_cancel_all_is_parsed_item_by_item(
    mock: aioresponses, gateway: ResilientAlpacaGateway
) -> None:
    mock.delete(ORDERS, status=207, repeat=True, payload=[
        {"id": "11111111-1111-4111-8111-111111111111", "status": 200},
        {"id": "22222222-2222-4222-8222-222222222222", "status": 500,
         "body": {"code": 50010000, "message": "internal error"}},
    ])
    raw = await gateway.request("DELETE", "/v2/orders", emergency=True)
    assert raw.success and raw.status == 207
    assert [type(item) for item in raw.data] == [MultiStatusItem, MultiStatusItem]
    with capture_logs() as logs:
        items = await gateway.cancel_all_orders()
    assert all(isinstance(item, MultiStatusItem) for item in items)
    assert [(i.id, i.status, i.ok) for i in items] == [
        ("11111111-1111-4111-8111-111111111111", 200, True),
        ("22222222-2222-4222-8222-222222222222", 500, False),
    ]
    assert items[0].body is None
    assert items[1].body == {"code": 50010000, "message": "internal error"}
    failures = [e for e in logs if e["event"] == "multi_status_failures"]
    assert len(failures) == 1 and failures[0]["failed"] == 1 and failures[0]["total"] == 2


async def test_207_close_all_reports_a_refused_position_without_raising(
    mock: aioresponses, gateway: ResilientAlpacaGateway
) -> None:
    close_all = url(TRADING, "/v2/positions", cancel_orders="true")
    mock.delete(close_all, status=207, payload=[
        {"symbol": "AAPL", "status": 200, "body": order_json("close-AAPL", side="sell")},
        {"symbol": "SQQQ", "status": 403, "body": {
            "available": "0", "code": 40310000, "existing_qty": "1000", "held_for_orders": "1000",
            "message": "insufficient qty available for order (requested: 1000, available: 0)",
            "symbol": "SQQQ"}},
    ])
    with capture_logs() as logs:
        items = await gateway.close_all_positions()
    assert len(calls(mock, "DELETE", close_all)) == 1
    closed, refused = items
    assert closed.ok and closed.order is not None and closed.order.side == "sell"
    assert closed.order.client_order_id == "close-AAPL"
    assert refused.symbol == "SQQQ" and refused.status == 403 and not refused.ok
    assert refused.error is not None and refused.error.code == 40310000
    assert refused.body is not None and refused.body["held_for_orders"] == "1000"
    failures = [e for e in logs if e["event"] == "multi_status_failures"]
    assert [item["symbol"] for item in failures[0]["items"]] == ["SQQQ"]


# -- malformed bodies ----------------------------------------------------------------------


async def test_malformed_json_becomes_an_error_response_not_an_exception(
    mock: aioresponses, gateway: ResilientAlpacaGateway, backoff: SleepRecorder
) -> None:
    account = url(TRADING, "/v2/account")
    mock.get(account, body='{"id": "acc-1", "equity": ', repeat=True)
    response = await gateway.request("GET", "/v2/account")
    assert isinstance(response, ApiResponse)
    assert not response.success and response.status == 200
    assert response.error_type == "malformed" and response.outcome_unknown
    assert "not JSON" in response.message
    assert len(calls(mock, "GET", account)) == 1 and backoff.delays == []  # not retried
    with pytest.raises(errors.MalformedResponse):  # the typed call raises the core/errors.py kind
        await gateway.get_account()


# -- market data: SIP refusal --------------------------------------------------------------


async def test_sip_refusal_falls_back_to_iex_once_and_remembers(
    mock: aioresponses, make_gateway: Callable[..., ResilientAlpacaGateway]
) -> None:
    bars = re.escape(DATA + "/v2/stocks/bars") + r"\?"
    mock.get(re.compile(bars + r".*\bfeed=sip\b"), status=403, repeat=True,
             payload={"message": "subscription does not permit querying recent SIP data"})
    mock.get(re.compile(bars + r".*\bfeed=iex\b"), repeat=True, payload={
        "bars": {"AAPL": [{"t": "2025-06-24T17:59:00Z", "o": 5.0, "h": 6.0, "l": 4.0, "c": 5.0,
                           "v": 1000, "n": 10, "vw": 5.0}]},
        "next_page_token": None})

    def feeds() -> list[str]:
        return [target.query["feed"] for target, _ in calls_to(mock, "GET", "/v2/stocks/bars")]

    async with make_gateway(data_feed="sip") as gw:
        with capture_logs() as logs:
            first = await gw.get_bars(["AAPL"], "1Min")
            assert sorted(feeds()) == ["iex", "sip"]  # refused on SIP, answered on IEX
            second = await gw.get_bars(["AAPL"], "1Min")
    assert first["AAPL"][0].c == second["AAPL"][0].c == Decimal("5.0")
    assert sorted(feeds()) == ["iex", "iex", "sip"]  # the second call went straight to IEX
    fallbacks = [e for e in logs if e["event"] == "data_feed_fallback"]
    assert len(fallbacks) == 1
    assert fallbacks[0]["endpoint"] == "/v2/stocks/bars" and fallbacks[0]["to_feed"] == "iex"


# -- idempotent order submission -----------------------------------------------------------


async def test_timed_out_post_is_found_by_client_order_id_and_not_sent_again(
    mock: aioresponses, gateway: ResilientAlpacaGateway
) -> None:
    cid = "momentum-AAPL-20250624-1"
    lookup = url(TRADING, "/v2/orders:by_client_order_id", client_order_id=cid)
    mock.post(ORDERS, exception=asyncio.TimeoutError(), repeat=True)
    mock.get(lookup, payload=order_json(cid), repeat=True)
    with capture_logs() as logs:
        order = await gateway.submit_simple_order("AAPL", 10, "buy", client_order_id=cid)
    assert order.client_order_id == cid and order.id == "61e69015-8549-4bfd-b9c3-01e75843f47d"
    posts = calls(mock, "POST", ORDERS)
    assert len(posts) == 1 and posts[0].kwargs["json"]["client_order_id"] == cid
    assert len(calls(mock, "GET", lookup)) == 1
    recovered = [e for e in logs if e["event"] == "order_recovered"]
    assert len(recovered) == 1 and recovered[0]["client_order_id"] == cid


async def test_timed_out_post_not_found_is_resent_with_the_same_client_order_id(
    mock: aioresponses, gateway: ResilientAlpacaGateway
) -> None:
    cid = "momentum-MSFT-20250624-3"
    lookup = url(TRADING, "/v2/orders:by_client_order_id", client_order_id=cid)
    mock.post(ORDERS, exception=asyncio.TimeoutError())
    mock.post(ORDERS, payload=order_json(cid, symbol="MSFT"))
    mock.get(lookup, status=404, payload={"code": 40410000, "message": "order not found"})
    order = await gateway.submit_order(OrderRequest.bracket(
        "MSFT", 10, "buy", take_profit_price="510", stop_loss_price="480", client_order_id=cid))
    assert order.client_order_id == cid and order.symbol == "MSFT"
    posts = calls(mock, "POST", ORDERS)
    assert len(posts) == 2
    assert [p.kwargs["json"]["client_order_id"] for p in posts] == [cid, cid]
    assert posts[0].kwargs["json"] == posts[1].kwargs["json"]  # the very same order, resent
    assert len(calls(mock, "GET", lookup)) == 1  # looked up before resending


# -- secrets -------------------------------------------------------------------------------


async def test_keys_never_appear_in_logs_or_exceptions(
    mock: aioresponses, make_gateway: Callable[..., ResilientAlpacaGateway]
) -> None:
    echo = f"upstream saw key {KEY} and secret {SECRET}"
    mock.get(url(TRADING, "/v2/account"), status=401, payload={"code": 40110000, "message": echo})
    mock.get(url(TRADING, "/v2/clock"), status=500, body=echo, content_type="text/plain",
             repeat=True)
    mock.get(url(TRADING, "/v2/positions"), body=f"not json {SECRET}")
    mock.get(re.compile(re.escape(str(ORDERS)) + r"\?"), status=429, repeat=True,
             payload={"message": f"slow down {KEY}"}, headers={"Retry-After": "1"})
    mock.post(ORDERS, exception=aiohttp.ClientConnectionError(f"reset while sending {KEY}"),
              repeat=True)
    mock.get(url(TRADING, "/v2/orders:by_client_order_id", client_order_id="k1"), status=404,
             payload={"code": 40410000, "message": "order not found"}, repeat=True)
    mock.get(re.compile(re.escape(DATA + "/v2/stocks/bars") + r"\?"), status=403, repeat=True,
             payload={"message": f"subscription does not permit querying recent SIP data {KEY}"})

    problems: list[BaseException] = []
    async with make_gateway(data_feed="sip", max_retries=1) as gw:
        with capture_logs() as logs:
            for call in (
                gw.get_account(), gw.get_clock(), gw.list_positions(), gw.list_orders(),
                gw.submit_simple_order("AAPL", 1, "buy", client_order_id="k1"),
                gw.get_bars(["AAPL"]),
            ):
                with pytest.raises(errors.TradingError) as info:
                    await call
                problems.append(info.value)
        text = repr(gw)
    assert [type(p) for p in problems] == [
        errors.AuthenticationFailed, errors.ServerError, errors.MalformedResponse,
        errors.RateLimited, errors.OrderInFlight, errors.AuthenticationFailed]
    everything = text + "".join(str(p) + repr(p) + repr(vars(p)) for p in problems)
    everything += "".join(repr(event) for event in logs)
    for needle in (KEY, SECRET):
        at = everything.find(needle)
        assert at < 0, everything[max(0, at - 200):at + 50]
    assert "[REDACTED]" in everything  # the echoed keys were scrubbed, not merely absent
    # ...and yet every request carried the credentials.
    sent = [call for recorded in mock.requests.values() for call in recorded]
    assert len(sent) > 6
    assert all(c.kwargs["headers"]["APCA-API-KEY-ID"] == KEY
               and c.kwargs["headers"]["APCA-API-SECRET-KEY"] == SECRET for c in sent)
