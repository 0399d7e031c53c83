"""ResilientAlpacaGateway against a scriptable Alpaca-like server on 127.0.0.1.

Every test talks real HTTP to a local aiohttp server (aioresponses 0.7.9 cannot build
responses for aiohttp 3.14). Backoff sleeps and the rate limiter run on a fake time source,
so retries never wait on the wall clock.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from core import errors
from api_gateway import ResilientAlpacaGateway, encode_params, make_client_order_id
from broker.interface import Broker
from broker.models import OrderRequest
from broker.rate_limit import RateLimiter

KEY = "AKTESTKEY7Q2W9E4R"
SECRET = "sEcReT/Value+With=Chars9x8y7"
NOW = datetime(2025, 6, 24, 18, 0, tzinfo=timezone.utc)


# -- test doubles --------------------------------------------------------------------------


class FakeTime:
    """Monotonic time that only moves when something sleeps on it; records every sleep."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class FakeClock:
    """The injected market clock (quote age, X-RateLimit-Reset)."""

    def __init__(self, now: datetime) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current

    async def sleep(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]


Handler = Callable[[web.Request, Seen], Awaitable[web.StreamResponse]]


def reply(status: int = 200, body: Any = None, headers: dict[str, str] | None = None) -> Handler:
    async def respond(request: web.Request, seen: Seen) -> web.StreamResponse:
        if body is None:
            return web.Response(status=status, headers=headers)
        if isinstance(body, (bytes, str)):
            return web.Response(status=status, body=body if isinstance(body, bytes) else body.encode(),
                                headers=headers, content_type="application/json")
        return web.json_response(body, status=status, headers=headers)
    return respond


async def drop_connection(request: web.Request, seen: Seen) -> web.StreamResponse:
    assert request.transport is not None
    request.transport.close()
    return web.Response()


@dataclass
class FakeBroker:
    """Routes (method, path) to a queue of handlers; the last handler repeats."""

    url: str = ""
    routes: dict[tuple[str, str], list[Handler]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def on(self, method: str, path: str, *handlers: Handler) -> None:
        self.routes.setdefault((method, path), []).extend(handlers)

    def calls(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and s.path == path]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        seen = Seen(request.method, request.path, dict(request.query),
                    json.loads(raw) if raw else None, dict(request.headers))
        self.seen.append(seen)
        queue = self.routes.get((request.method, request.path))
        if not queue:
            return web.json_response({"code": 40410000, "message": "no such route"}, status=404)
        handler = queue.pop(0) if len(queue) > 1 else queue[0]
        return await handler(request, seen)


def order_json(cid: str, *, symbol: str = "AAPL", side: str = "buy", status: str = "accepted",
               order_id: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": order_id or str(uuid.uuid4()), "client_order_id": cid,
        "created_at": "2025-06-24T18:00:00.123456789Z", "updated_at": "2025-06-24T18:00:00Z",
        "submitted_at": "2025-06-24T18:00:00Z", "symbol": symbol, "asset_class": "us_equity",
        "qty": "10", "filled_qty": "0", "order_class": "", "type": "market", "side": side,
        "time_in_force": "day", "status": status, "extended_hours": False, "legs": None,
        **extra,
    }


class OrderBook:
    """Alpaca's order idempotency: unique client_order_id, lookup by client id."""

    def __init__(self) -> None:
        self.orders: dict[str, dict[str, Any]] = {}
        self.hidden_lookups = 0  # lookups that answer 404 although the order exists

    async def post(self, request: web.Request, seen: Seen) -> web.StreamResponse:
        cid = seen.body["client_order_id"]
        if cid in self.orders:
            return web.json_response({"code": 40010001, "message": "client_order_id must be unique"},
                                     status=422)
        self.orders[cid] = order_json(cid, symbol=seen.body["symbol"], side=seen.body["side"])
        return web.json_response(self.orders[cid])

    async def lookup(self, request: web.Request, seen: Seen) -> web.StreamResponse:
        cid = seen.query["client_order_id"]
        if cid not in self.orders or self.hidden_lookups > 0:
            self.hidden_lookups = max(0, self.hidden_lookups - 1)
            return web.json_response({"code": 40410000, "message": "order not found"}, status=404)
        return web.json_response(self.orders[cid])


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture
async def fake_broker() -> AsyncIterator[FakeBroker]:
    broker = FakeBroker()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", broker.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    broker.url = str(server.make_url("")).rstrip("/")
    yield broker
    await server.close()


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def make_gateway(fake_broker: FakeBroker, fake_time: FakeTime, fake_clock: FakeClock
                 ) -> Callable[..., ResilientAlpacaGateway]:
    def build(**overrides: Any) -> ResilientAlpacaGateway:
        options: dict[str, Any] = {
            "base_url": fake_broker.url, "data_url": fake_broker.url, "key_id": KEY,
            "secret_key": SECRET, "timeout": 2.0, "clock": fake_clock, "sleep": fake_time.sleep,
            "wall_time": NOW.timestamp,
            "rate_limiter": RateLimiter(monotonic=fake_time.monotonic, sleep=fake_time.sleep),
        }
        options.update(overrides)
        return ResilientAlpacaGateway(**options)
    return build


@pytest.fixture
async def gateway(make_gateway: Callable[..., ResilientAlpacaGateway]
                  ) -> AsyncIterator[ResilientAlpacaGateway]:
    async with make_gateway() as gw:
        yield gw


ACCOUNT = {"id": "acc-1", "account_number": "PA1", "status": "ACTIVE", "cash": "1000",
           "equity": "1000", "buying_power": "2000"}


# -- idempotent orders ---------------------------------------------------------------------


@pytest.mark.parametrize("lose_response", ["connection_closed", "timeout"])
async def test_lost_post_response_yields_exactly_one_order(
    fake_broker: FakeBroker, make_gateway: Callable[..., ResilientAlpacaGateway], lose_response: str
) -> None:
    book = OrderBook()

    async def accept_then_lose(request: web.Request, seen: Seen) -> web.StreamResponse:
        await book.post(request, seen)  # the broker accepted the order...
        if lose_response == "timeout":
            await asyncio.sleep(1.0)  # ...and answered too late
            return web.json_response({})
        return await drop_connection(request, seen)  # ...and the connection died

    fake_broker.on("POST", "/v2/orders", accept_then_lose, book.post)
    fake_broker.on("GET", "/v2/orders:by_client_order_id", book.lookup)
    request = OrderRequest.bracket("AAPL", 10, "buy", take_profit_price="110", stop_loss_price="95",
                                   client_order_id=make_client_order_id("momentum-AAPL-2025-06-24-1"))
    async with make_gateway(timeout=0.3) as gw:
        with capture_logs() as logs:
            order = await gw.submit_order(request)

    assert len(book.orders) == 1
    assert order.client_order_id == request.client_order_id
    assert len(fake_broker.calls("POST", "/v2/orders")) == 1
    recovered = [e for e in logs if e["event"] == "order_recovered"]
    assert recovered and recovered[0]["client_order_id"] == request.client_order_id


async def test_post_outcome_unknown_then_duplicate_means_it_landed(
    fake_broker: FakeBroker, gateway: ResilientAlpacaGateway
) -> None:
    book = OrderBook()
    book.hidden_lookups = 1  # the first lookup does not see the order yet

    async def accept_then_503(request: web.Request, seen: Seen) -> web.StreamResponse:
        await book.post(request, seen)
        return web.json_response({"message": "gateway timeout"}, status=504)

    fake_broker.on("POST", "/v2/orders", accept_then_503, book.post)
    fake_broker.on("GET", "/v2/orders:by_client_order_id", book.lookup)
    with capture_logs() as logs:
        order = await gateway.submit_order(OrderRequest.simple("MSFT", 1, "buy", client_order_id="cid-42"))

    assert len(book.orders) == 1 and order.client_order_id == "cid-42"
    posts = fake_broker.calls("POST", "/v2/orders")
    assert len(posts) == 2 and {p.body["client_order_id"] for p in posts} == {"cid-42"}
    assert any(e["event"] == "order_recovered" and e["via"] == "DuplicateClientOrderId" for e in logs)


async def test_unresolved_submission_is_in_flight_never_a_rejection(
    fake_broker: FakeBroker, gateway: ResilientAlpacaGateway
) -> None:
    fake_broker.on("POST", "/v2/orders", reply(503, {"message": "service unavailable"}))
    fake_broker.on("GET", "/v2/orders:by_client_order_id",
                   reply(404, {"code": 40410000, "message": "order not found"}))
    with pytest.raises(errors.OrderInFlight) as info:
        await gateway.submit_order(OrderRequest.simple("AAPL", 1, "buy", client_order_id="cid-x"))
    assert not isinstance(info.value, errors.OrderRejected)
    assert info.value.client_order_id == "cid-x"
    posts = fake_broker.calls("POST", "/v2/orders")
    assert len(posts) == 4  # max_retries=3: bounded, and always the same id
    assert {p.body["client_order_id"] for p in posts} == {"cid-x"}


async def test_definitive_rejection_is_raised_and_not_retried(
    fake_broker: FakeBroker, gateway: ResilientAlpacaGateway
) -> None:
    fake_broker.on("POST", "/v2/orders", reply(403, {"code": 40310000, "message": "insufficient buying power",
                                                    "buying_power": "10", "cost_basis": "1000"}))
    with pytest.raises(errors.InsufficientBuyingPower):
        await gateway.submit_order(OrderRequest.simple("AAPL", 10, "buy", client_order_id="c1"))
    assert len(fake_broker.calls("POST", "/v2/orders")) == 1
    assert fake_broker.calls("GET", "/v2/orders:by_client_order_id") == []


async def test_submission_without_client_order_id_gets_one(
    fake_broker: FakeBroker, gateway: ResilientAlpacaGateway
) -> None:
    book = OrderBook()
    fake_broker.on("POST", "/v2/orders", book.post)
    with capture_logs() as logs:
        order = await gateway.submit_order(OrderRequest.simple("AAPL", 1, "buy"))
    sent = fake_broker.calls("POST", "/v2/orders")[0].body
    assert sent["client_order_id"] == order.client_order_id and len(order.client_order_id) <= 48
    assert sent["qty"] == "1" and sent["type"] == "market"
    assert any(e["event"] == "client_order_id_generated" for e in logs)


async def test_pdt_rejection_blocks_the_symbol_for_the_session(
    fake_broker: FakeBroker, gateway: ResilientAlpacaGateway
) -> None:
    fake_broker.on("POST", "/v2/orders", reply(403, {
        "code": 40310100, "message": "trade denied due to pattern day trading protection"}))
    with capture_logs() as logs, pytest.raises(errors.PatternDayTraderRejected):
        await gateway.submit_order(OrderRequest.simple("TSLA", 1, "sell", client_order_id="c2"))
    assert gateway.pdt_blocked_symbols == {"TSLA"}
    assert [e["symbol"] for e in logs if e["event"] == "pdt_blocked"] == ["TSLA"]
    gateway.reset_session_blocks()
    assert gateway.pdt_blocked_symbols == set()


async def test_insufficient_qty_on_close_surfaces_held_shares(
    fake_broker: FakeBroker, gateway: ResilientAlpacaGateway
) -> None:
    fake_broker.on("DELETE", "/v2/positions/SQQQ", reply(403, {
        "available": "0", "code": 40310000, "existing_qty": "1000", "held_for_orders": "1000",
        "message": "insufficient qty available for order (requested: 1000, available: 0)",
        "symbol": "SQQQ"}))
    with pytest.raises(errors.InsufficientQuantity) as info:
        await gateway.close_position("SQQQ")
    assert info.value.available == Decimal("0") and info.value.held_for_orders == Decimal("1000")


def test_client_order_ids_are_deterministic_and_short() -> None:
    assert make_client_order_id("momentum-AAPL-20250624-1") == "momentum-AAPL-20250624-1"
    assert make_client_order_id("momentum-AAPL-20250624-1", 2) == "momentum-AAPL-20250624-1~2"
    long_id = "enhanced_momentum|AAPL|2025-06-24|session-sequence-000000000017|extra"
    first, again = make_client_order_id(long_id), make_client_order_id(long_id)
    assert first == again and len(first) <= 48
    assert make_client_order_id(long_id, 1) != first and len(make_client_order_id(long_id, 99)) <= 48
    assert make_client_order_id(long_id + "x") != first  # the digest covers the whole id
    with pytest.raises(ValueError):
        make_client_order_id("")


async def test_replace_with_lost_response_returns_the_new_order_once(
    fake_broker: FakeBroker, gateway: ResilientAlpacaGateway
) -> None:
    old_id, new_id = str(uuid.uuid4()), str(uuid.uuid4())
    fake_broker.on("PATCH", f"/v2/orders/{old_id}", drop_connection)
    fake_broker.on("GET", f"/v2/orders/{old_id}", reply(200, order_json(
        "old", order_id=old_id, status="replaced", replaced_by=new_id)))
    fake_broker.on("GET", f"/v2/orders/{new_id}", reply(200, order_json(
        "new", order_id=new_id, status="new", replaces=old_id, limit_price="101.5", type="limit")))
    order = await gateway.replace_order(old_id, limit_price=Decimal("101.50"))
    assert order.id == new_id and order.limit_price == Decimal("101.5")
    patches = fake_broker.calls("PATCH", f"/v2/orders/{old_id}")
    assert len(patches) == 1 and patches[0].body == {"limit_price": "101.5"}


async def test_full_close_with_lost_response_is_recovered_without_a_second_close(
    fake_broker: FakeBroker, gateway: ResilientAlpacaGateway
) -> None:
    close_order = order_json("auto-close", symbol="AAPL", side="sell", status="new",
                             created_at="2025-06-24T17:59:59Z")
    fake_broker.on("DELETE", "/v2/positions/AAPL", drop_connection, reply(403, {
        "code": 40310000, "available": "0", "held_for_orders": "10", "symbol": "AAPL",
        "message": "insufficient qty available for order (requested: 10, available: 0)"}))
    fake_broker.on("GET", "/v2/orders", reply(200, [close_order]))
    order = await gateway.close_position("AAPL")
    assert order.id == close_order["id"]
    listing = fake_broker.calls("GET", "/v2/orders")[0].query
    assert listing["symbols"] == "AAPL" and listing["status"] == "all" and listing["nested"] == "false"


async def test_unreadable_acceptance_is_resolved_by_lookup_not_resent(
    fake_broker: FakeBroker, gateway: ResilientAlpacaGateway
) -> None:
    book = OrderBook()

    async def accept_garbled(request: web.Request, seen: Seen) -> web.StreamResponse:
        await book.post(request, seen)
        return web.Response(status=200, body=b'{"id": "7b08df51', content_type="application/json")

    fake_broker.on("POST", "/v2/orders", accept_garbled)
    fake_broker.on("GET", "/v2/orders:by_client_order_id", book.lookup)
    order = await gateway.submit_order(OrderRequest.simple("AAPL", 1, "buy", client_order_id="g-1"))
    assert order.client_order_id == "g-1" and len(book.orders) == 1
    assert len(fake_broker.calls("POST", "/v2/orders")) == 1


async def test_partial_close_with_lost_response_is_never_resent(
    fake_broker: FakeBroker, gateway: ResilientAlpacaGateway
) -> None:
    fake_broker.on("DELETE", "/v2/positions/AAPL", drop_connection)
    fake_broker.on("GET", "/v2/orders", reply(200, []))
    with pytest.raises(errors.OrderInFlight):
        await gateway.close_position("AAPL", qty=Decimal("5"))
    deletes = fake_broker.calls("DELETE", "/v2/positions/AAPL")
    assert len(deletes) == 1 and deletes[0].query == {"qty": "5"}


# -- status handling, retries, backoff ------------------------------------------------------


async def test_204_on_cancel_is_success(fake_broker: FakeBroker, gateway: ResilientAlpacaGateway) -> None:
    order_id = str(uuid.uuid4())
    fake_broker.on("DELETE", f"/v2/orders/{order_id}", reply(204))
    assert await gateway.cancel_order(order_id) is None
    response = await gateway.request("DELETE", f"/v2/orders/{order_id}")
    assert response.success and response.status == 204 and response.data is None


async def test_cancel_of_an_already_canceled_order_is_success_but_filled_is_not(
    fake_broker: FakeBroker, gateway: ResilientAlpacaGateway
) -> None:
    not_cancelable = reply(422, {"code": 42210000, "message": "order is not cancelable"})
    fake_broker.on("DELETE", "/v2/orders/o-canceled", not_cancelable)
    fake_broker.on("GET", "/v2/orders/o-canceled", reply(200, order_json("a", status="canceled")))
    fake_broker.on("DELETE", "/v2/orders/o-filled", not_cancelable)
    fake_broker.on("GET", "/v2/orders/o-filled", reply(200, order_json("b", status="filled")))
    assert await gateway.cancel_order("o-canceled") is None
    with pytest.raises(errors.OrderNotCancelable):
        await gateway.cancel_order("o-filled")
    fake_broker.on("DELETE", "/v2/orders/o-unknown", reply(404, {"code": 40410000, "message": "order not found"}))
    with pytest.raises(errors.NotFound):
        await gateway.cancel_order("o-unknown")


async def test_207_cancel_all_is_parsed_item_by_item(
    fake_broker: FakeBroker, gateway: ResilientAlpacaGateway
) -> None:
    fake_broker.on("DELETE", "/v2/orders", reply(207, [
        {"id": "11111111-1111-4111-8111-111111111111", "status": 200},
        {"id": "22222222-2222-4222-8222-222222222222", "status": 404,
         "body": {"code": 40410000, "message": "order not found"}},
    ]))
    with capture_logs() as logs:
        items = await gateway.cancel_all_orders()
    assert [(i.id[:2], i.status, i.ok) for i in items] == [("11", 200, True), ("22", 404, False)]
    assert items[1].error is not None and items[1].error.message == "order not found"
    assert any(e["event"] == "multi_status_failures" and e["failed"] == 1 for e in logs)


async def test_207_close_all_carries_orders_and_errors(
    fake_broker: FakeBroker, gateway: ResilientAlpacaGateway
) -> None:
    fake_broker.on("DELETE", "/v2/positions", reply(207, [
        {"symbol": "AAPL", "status": 200, "body": order_json("x", side="sell")},
        {"symbol": "SQQQ", "status": 403, "body": {"available": "0", "code": 40310000,
                                                   "held_for_orders": "1000", "message": "insufficient qty"}},
    ]))
    items = await gateway.close_all_positions()
    assert fake_broker.calls("DELETE", "/v2/positions")[0].query == {"cancel_orders": "true"}
    assert items[0].order is not None and items[0].order.side == "sell"
    assert items[1].error is not None and items[1].error.code == 40310000


async def test_429_honours_retry_after(
    fake_broker: FakeBroker, gateway: ResilientAlpacaGateway, fake_time: FakeTime
) -> None:
    fake_broker.on("GET", "/v2/account",
                   reply(429, {"message": "rate limit exceeded"}, {"Retry-After": "7"}), reply(200, ACCOUNT))
    with capture_logs() as logs:
        account = await gateway.get_account()
    assert account.equity == Decimal("1000")
    assert 7.0 in fake_time.sleeps
    retry = [e for e in logs if e["event"] == "broker_retry"]
    assert retry == [{"event": "broker_retry", "log_level": "warning", "attempt": 1, "status": 429,
                      "delay": 7.0, "method": "GET", "path": "/v2/account",
                      "reason": "rate limit exceeded"}]
    assert gateway.request_count == 2


async def test_429_honours_x_ratelimit_reset(
    fake_broker: FakeBroker, gateway: ResilientAlpacaGateway, fake_time: FakeTime
) -> None:
    reset = str(int(NOW.timestamp()) + 12)
    fake_broker.on("GET", "/v2/account",
                   reply(429, {"message": "too many requests"}, {"X-RateLimit-Reset": reset}),
                   reply(200, ACCOUNT))
    await gateway.get_account()
    assert fake_time.sleeps[0] == pytest.approx(12.0)


async def test_5xx_is_retried_with_growing_jittered_backoff(
    fake_broker: FakeBroker, gateway: ResilientAlpacaGateway, fake_time: FakeTime
) -> None:
    fake_broker.on("GET", "/v2/clock", reply(500, {"message": "internal"}), reply(502, "<html>bad gateway</html>"),
                   reply(200, {"timestamp": "2025-06-24T14:15:22.123456789-04:00", "is_open": True,
                               "next_open": "2025-06-25T09:30:00-04:00",
                               "next_close": "2025-06-24T16:00:00-04:00"}))
    with capture_logs() as logs:
        clock = await gateway.get_clock()
    assert clock.is_open
    retries = [e for e in logs if e["event"] == "broker_retry"]
    assert [(e["attempt"], e["status"]) for e in retries] == [(1, 500), (2, 502)]
    assert 0.25 <= fake_time.sleeps[0] <= 0.5 and 0.5 <= fake_time.sleeps[1] <= 1.0
    assert gateway.request_count == 3


async def test_retries_are_bounded(fake_broker: FakeBroker, gateway: ResilientAlpacaGateway) -> None:
    fake_broker.on("GET", "/v2/positions", reply(503, {"message": "down"}))
    with capture_logs() as logs, pytest.raises(errors.ServerError):
        await gateway.list_positions()
    assert len(fake_broker.calls("GET", "/v2/positions")) == 4
    assert any(e["event"] == "broker_request_failed" and e["attempts"] == 4 for e in logs)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_4xx_is_never_retried(fake_broker: FakeBroker, gateway: ResilientAlpacaGateway,
                                    fake_time: FakeTime, status: int) -> None:
    fake_broker.on("GET", "/v2/orders/abc", reply(status, {"code": status * 100000, "message": "no"}))
    with pytest.raises(errors.BrokerError):
        await gateway.get_order("abc")
    assert len(fake_broker.calls("GET", "/v2/orders/abc")) == 1
    assert fake_time.sleeps == []


async def test_malformed_json_becomes_an_error_response(
    fake_broker: FakeBroker, gateway: ResilientAlpacaGateway
) -> None:
    fake_broker.on("GET", "/v2/account", reply(200, b'{"id": "acc-1", "equity": '))
    response = await gateway.request("GET", "/v2/account")
    assert not response.success and response.status == 200 and response.error_type == "malformed"
    with pytest.raises(errors.MalformedResponse):
        response.raise_for_error()
    with pytest.raises(errors.MalformedResponse):
        await gateway.get_account()


async def test_valid_json_of_the_wrong_shape_is_malformed(
    fake_broker: FakeBroker, gateway: ResilientAlpacaGateway
) -> None:
    fake_broker.on("GET", "/v2/account", reply(200, {"id": "acc-1", "status": "ACTIVE"}))
    with pytest.raises(errors.MalformedResponse, match="equity"):
        await gateway.get_account()


async def test_network_failures_never_escape_request(
    make_gateway: Callable[..., ResilientAlpacaGateway], fake_time: FakeTime
) -> None:
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()  # nothing listens on this port any more
    dead = f"http://127.0.0.1:{port}"
    async with make_gateway(base_url=dead, data_url=dead) as gw:
        response = await gw.request("GET", "/v2/account")
        assert not response.success and response.status == 0 and response.error_type == "network"
        assert gw.request_count == 4  # connection refused is retried (nothing was sent)
        with pytest.raises(errors.BrokerUnavailable):
            await gw.get_account()


async def test_redirects_are_not_followed(fake_broker: FakeBroker, gateway: ResilientAlpacaGateway) -> None:
    fake_broker.on("GET", "/v2/account", reply(301, None, {"Location": "https://elsewhere.example/v2/account"}))
    with pytest.raises(errors.OperationalError, match="redirect"):
        await gateway.get_account()
    assert len(fake_broker.seen) == 1


async def test_query_booleans_are_lowercase_words(
    fake_broker: FakeBroker, gateway: ResilientAlpacaGateway
) -> None:
    fake_broker.on("GET", "/v2/orders", reply(200, []))
    await gateway.list_orders(status="all", symbols=["AAPL", "MSFT"],
                              after=datetime(2025, 6, 24, 9, 30, tzinfo=timezone(timedelta(hours=-4))))
    query = fake_broker.calls("GET", "/v2/orders")[0].query
    assert query == {"status": "all", "limit": "500", "nested": "true", "symbols": "AAPL,MSFT",
                     "after": "2025-06-24T13:30:00Z", "direction": "desc"}
    assert encode_params({"a": False, "b": None, "c": Decimal("1.50")}) == {"a": "false", "c": "1.5"}


async def test_emergency_calls_pass_a_rate_limit_cooldown(
    fake_broker: FakeBroker, make_gateway: Callable[..., ResilientAlpacaGateway], fake_time: FakeTime
) -> None:
    gate = asyncio.Event()
    limiter_sleeps: list[float] = []

    async def held_sleep(seconds: float) -> None:  # the limiter's waits block until released
        limiter_sleeps.append(seconds)
        await gate.wait()
        fake_time.now += seconds

    limiter = RateLimiter(monotonic=fake_time.monotonic, sleep=held_sleep)
    fake_broker.on("GET", "/v2/account", reply(429, {"message": "rate limit exceeded"}, {"Retry-After": "1"}),
                   reply(200, ACCOUNT))
    fake_broker.on("DELETE", "/v2/orders/o-1", reply(204))
    async with make_gateway(rate_limiter=limiter, sleep=held_sleep) as gw:
        slow = asyncio.create_task(gw.get_account())
        while not limiter_sleeps:  # the account call got its 429 and now waits out Retry-After
            await asyncio.sleep(0.01)
        assert limiter.cooldown_remaining > 0 and not slow.done()
        await gw.cancel_order("o-1")  # an emergency call goes at once
        assert [s.method for s in fake_broker.seen] == ["GET", "DELETE"]
        gate.set()
        account = await slow
    assert account.id == "acc-1" and [s.method for s in fake_broker.seen] == ["GET", "DELETE", "GET"]
    # the normal call waited what the broker asked (Retry-After: 1), not a 60 s cooldown
    assert sum(limiter_sleeps) == pytest.approx(1.0)


# -- market data ---------------------------------------------------------------------------


def bar(t: str, c: float) -> dict[str, Any]:
    return {"t": t, "o": c, "h": c + 1, "l": c - 1, "c": c, "v": 1000, "n": 10, "vw": c}


async def test_bars_are_chunked_paginated_and_concatenated(
    fake_broker: FakeBroker, gateway: ResilientAlpacaGateway
) -> None:
    symbols = [f"S{i:03d}" for i in range(150)]

    async def bars(request: web.Request, seen: Seen) -> web.StreamResponse:
        chunk = seen.query["symbols"].split(",")
        if seen.query.get("page_token") is None:
            return web.json_response({"bars": {chunk[0]: [bar("2025-06-02T04:00:00Z", 1.0)]},
                                      "next_page_token": "page-2"})
        # The first symbol continues on the second page (split across pages).
        page = {chunk[0]: [bar("2025-06-03T04:00:00Z", 2.0)]}
        page.update({name: [bar("2025-06-03T04:00:00Z", 3.0)] for name in chunk[1:2]})
        return web.json_response({"bars": page, "next_page_token": None})

    fake_broker.on("GET", "/v2/stocks/bars", bars)
    start = datetime(2025, 6, 1, tzinfo=timezone.utc)
    result = await gateway.get_bars(symbols, "1Day", start=start)
    calls = fake_broker.calls("GET", "/v2/stocks/bars")
    assert len(calls) == 4  # 2 chunks x 2 pages
    assert [len(c.query["symbols"].split(",")) for c in calls] == [100, 100, 50, 50]
    assert calls[0].query["feed"] == "iex" and calls[0].query["start"] == "2025-06-01T00:00:00Z"
    assert [b.c for b in result["S000"]] == [Decimal("1.0"), Decimal("2.0")]
    assert [b.c for b in result["S100"]] == [Decimal("1.0"), Decimal("2.0")]
    assert set(result) == {"S000", "S001", "S100", "S101"}
    latest = await gateway.get_bars(["S000"], start=start, limit=1)
    assert [b.c for b in latest["S000"]] == [Decimal("2.0")]


async def test_sip_refusal_falls_back_to_iex_once_and_remembers(
    fake_broker: FakeBroker, make_gateway: Callable[..., ResilientAlpacaGateway]
) -> None:
    async def bars(request: web.Request, seen: Seen) -> web.StreamResponse:
        if seen.query.get("feed", "sip") == "sip":
            return web.json_response(
                {"message": "subscription does not permit querying recent SIP data"}, status=403)
        return web.json_response({"bars": {"AAPL": [bar("2025-06-24T17:59:00Z", 5.0)]},
                                  "next_page_token": None})

    fake_broker.on("GET", "/v2/stocks/bars", bars)
    async with make_gateway(data_feed="sip") as gw:
        with capture_logs() as logs:
            first = await gw.get_bars(["AAPL"], "1Min")
            second = await gw.get_bars(["AAPL"], "1Min")
    assert first["AAPL"][0].c == second["AAPL"][0].c == Decimal("5.0")
    feeds = [c.query.get("feed") for c in fake_broker.calls("GET", "/v2/stocks/bars")]
    assert feeds == ["sip", "iex", "iex"]
    fallbacks = [e for e in logs if e["event"] == "data_feed_fallback"]
    assert len(fallbacks) == 1 and fallbacks[0]["endpoint"] == "/v2/stocks/bars"


async def test_sip_refusal_on_iex_is_not_hidden(
    fake_broker: FakeBroker, gateway: ResilientAlpacaGateway
) -> None:
    fake_broker.on("GET", "/v2/stocks/bars", reply(403, {"message": "subscription does not permit querying"}))
    with pytest.raises(errors.AuthenticationFailed):
        await gateway.get_bars(["AAPL"])
    assert len(fake_broker.calls("GET", "/v2/stocks/bars")) == 1


def quote(t: datetime, bid: float, ask: float) -> dict[str, Any]:
    return {"t": t.isoformat().replace("+00:00", "Z"), "ax": "V", "ap": ask, "as": 1,
            "bx": "V", "bp": bid, "bs": 1, "c": ["R"], "z": "C"}


async def test_stale_zero_and_crossed_quotes_are_dropped_with_one_warning_per_minute(
    fake_broker: FakeBroker, gateway: ResilientAlpacaGateway, fake_clock: FakeClock
) -> None:
    fresh = NOW - timedelta(seconds=2)
    fake_broker.on("GET", "/v2/stocks/quotes/latest", reply(200, {"quotes": {
        "AAPL": quote(fresh, 100.0, 100.02),
        "MSFT": quote(NOW - timedelta(minutes=20), 400.0, 400.1),
        "TSLA": quote(fresh, 250.5, 250.0),
        "NVDA": quote(fresh, 0.0, 120.0),
    }}))
    with capture_logs() as logs:
        first = await gateway.get_latest_quotes(["AAPL", "MSFT", "TSLA", "NVDA"])
        second = await gateway.get_latest_quotes(["AAPL", "MSFT", "TSLA", "NVDA"])
    assert set(first) == set(second) == {"AAPL"}
    stale = [e for e in logs if e["event"] == "stale_data_rejected"]
    bad = [e for e in logs if e["event"] == "bad_quote_rejected"]
    assert [e["symbol"] for e in stale] == ["MSFT"] and stale[0]["age_seconds"] == 1200.0
    assert sorted((e["symbol"], e["reason"]) for e in bad) == [("NVDA", "zero_price"), ("TSLA", "crossed")]

    fake_clock.current = NOW + timedelta(seconds=61)
    with capture_logs() as later:
        await gateway.get_latest_quotes(["AAPL", "MSFT", "TSLA", "NVDA"])
    assert sorted(e["symbol"] for e in later) == ["MSFT", "NVDA", "TSLA"]  # warned again after a minute


async def test_snapshots_drop_a_bad_quote_but_keep_the_rest(
    fake_broker: FakeBroker, gateway: ResilientAlpacaGateway
) -> None:
    fake_broker.on("GET", "/v2/stocks/snapshots", reply(200, {
        "AAPL": {"latestQuote": quote(NOW, 10.0, 9.0),
                 "latestTrade": {"t": "2025-06-24T17:59:59Z", "p": 9.5, "s": 100},
                 "dailyBar": bar("2025-06-24T04:00:00Z", 9.5)},
        "MISSING": None,
    }))
    snapshots = await gateway.get_snapshots(["AAPL", "MISSING"])
    assert set(snapshots) == {"AAPL"}
    assert snapshots["AAPL"].latest_quote is None and snapshots["AAPL"].latest_trade is not None
    assert snapshots["AAPL"].daily_bar is not None


async def test_news_and_activities_follow_pages(
    fake_broker: FakeBroker, gateway: ResilientAlpacaGateway
) -> None:
    article = {"id": 1, "headline": "h", "author": "a", "created_at": "2025-06-24T12:00:00Z",
               "updated_at": "2025-06-24T12:00:00Z", "summary": "", "content": "", "url": None,
               "symbols": ["AAPL"], "source": "benzinga"}
    fake_broker.on("GET", "/v1beta1/news", reply(200, {"news": [article], "next_page_token": "t2"}),
                   reply(200, {"news": [{**article, "id": 2}], "next_page_token": None}))
    news = await gateway.get_news(["AAPL"], limit=60)
    assert [a.id for a in news] == [1, 2]
    assert "feed" not in fake_broker.calls("GET", "/v1beta1/news")[0].query

    fill = {"id": "a1", "activity_type": "FILL", "transaction_time": "2025-06-24T14:00:00Z",
            "price": "10", "qty": "1", "side": "buy", "symbol": "AAPL"}
    fake_broker.on("GET", "/v2/account/activities", reply(200, [fill, {**fill, "id": "a2"}]),
                   reply(200, [{**fill, "id": "a3"}]))
    activities = await gateway.get_activities(page_size=2)
    assert [a.id for a in activities] == ["a1", "a2", "a3"]
    second = fake_broker.calls("GET", "/v2/account/activities")[1].query
    assert second["page_token"] == "a2" and second["activity_types"] == "FILL"


# -- security -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"base_url": "http://example.com"}, "HTTPS is required"),
        ({"data_url": "http://data.alpaca.markets"}, "HTTPS is required"),
        ({"base_url": "https://api.alpaca.markets"}, "LIVE"),
        ({"base_url": "https://api.alpaca.markets", "mode": "live"}, "LIVE"),
        ({"base_url": "https://api.alpaca.markets", "live_enabled": True}, "LIVE"),
        ({"base_url": f"https://{KEY}:password@paper-api.alpaca.markets"}, "credentials"),
        ({"base_url": f"https://{KEY}:{SECRET}@paper-api.alpaca.markets"}, "credentials"),  # secret holds a "/"
        ({"base_url": "ftp://paper-api.alpaca.markets"}, "not an http"),
    ],
)
def test_unsafe_endpoints_are_refused(kwargs: dict[str, Any], problem: str) -> None:
    options = {"base_url": "https://paper-api.alpaca.markets", "data_url": "https://data.alpaca.markets",
               "key_id": KEY, "secret_key": SECRET, **kwargs}
    with pytest.raises(errors.UnsafeEndpoint, match=problem) as info:
        ResilientAlpacaGateway(**options)
    assert KEY not in str(info.value) and SECRET not in str(info.value)


def test_live_url_needs_mode_live_and_the_opt_in() -> None:
    gw = ResilientAlpacaGateway(base_url="https://api.alpaca.markets/v2/", data_url="https://data.alpaca.markets",
                                key_id=KEY, secret_key=SECRET, mode="live", live_enabled=True)
    assert gw.base_url == "https://api.alpaca.markets"
    loopback = ResilientAlpacaGateway(base_url="http://localhost:8000", data_url="http://[::1]:8001",
                                      key_id=None, secret_key=None, mode="sim")
    assert loopback.data_url == "http://[::1]:8001"


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(errors.ConfigError, match="required"):
        ResilientAlpacaGateway(base_url="https://paper-api.alpaca.markets",
                               data_url="https://data.alpaca.markets", key_id=None, secret_key=None)
    with pytest.raises(errors.ConfigError) as info:
        ResilientAlpacaGateway(base_url="http://127.0.0.1:1", data_url="http://127.0.0.1:1",
                               key_id=KEY, secret_key=None, mode="yolo", timeout=0)
    assert "mode" in str(info.value) and "timeout" in str(info.value)


async def test_keys_never_appear_in_logs_exceptions_or_repr(
    fake_broker: FakeBroker, make_gateway: Callable[..., ResilientAlpacaGateway]
) -> None:
    book = OrderBook()
    fake_broker.on("GET", "/v2/account", reply(401, {"code": 40110000, "message": "request is not authorized"}))
    fake_broker.on("GET", "/v2/clock", reply(500, f"upstream said: bad key {KEY} / {SECRET}"))
    fake_broker.on("GET", "/v2/positions", reply(200, b"not json"))
    fake_broker.on("GET", "/v2/orders", reply(429, {"message": f"slow down {KEY}"}, {"Retry-After": "1"}))
    fake_broker.on("POST", "/v2/orders", drop_connection)
    fake_broker.on("GET", "/v2/orders:by_client_order_id", book.lookup)
    fake_broker.on("DELETE", "/v2/positions/TSLA", reply(403, {
        "code": 40310100, "message": "trade denied due to pattern day trading protection"}))
    fake_broker.on("GET", "/v2/stocks/bars", reply(403, {"message": "subscription does not permit"}))
    fake_broker.on("GET", "/v2/assets/XYZ", reply(404, {"code": 40410000, "message": "asset not found for XYZ"}))
    fake_broker.on("GET", "/v2/stocks/quotes/latest", reply(200, {"quotes": {
        "AAPL": quote(NOW - timedelta(hours=1), 1.0, 2.0), "MSFT": quote(NOW, 2.0, 1.0)}}))

    problems: list[BaseException] = []
    async with make_gateway(data_feed="sip") as gw:
        with capture_logs() as logs:
            for call in (
                gw.get_account(), gw.get_clock(), gw.list_positions(), gw.list_orders(),
                gw.submit_order(OrderRequest.simple("AAPL", 1, "buy", client_order_id="k1")),
                gw.close_position("TSLA"), gw.get_bars(["AAPL"]), gw.get_asset("XYZ"),
            ):
                with pytest.raises(errors.TradingError) as info:
                    await call
                problems.append(info.value)
            await gw.get_latest_quotes(["AAPL", "MSFT"])
        text = repr(gw) + str(vars(gw))
    assert len(problems) == 8 and len(logs) > 8
    assert isinstance(problems[4], errors.OrderInFlight)
    everything = text + "".join(str(p) + repr(p) + repr(p.__dict__) for p in problems)
    everything += "".join(repr(event) for event in logs)
    for needle in (KEY, SECRET):
        at = everything.find(needle)
        assert at < 0, everything[max(0, at - 300):at + 50]
    assert "[REDACTED]" in everything  # the echoed key was scrubbed, not just absent
    # ...and yet every request carried the credentials.
    assert all(s.headers.get("APCA-API-KEY-ID") == KEY and s.headers.get("APCA-API-SECRET-KEY") == SECRET
               for s in fake_broker.seen)


async def test_gateway_is_a_broker(gateway: ResilientAlpacaGateway) -> None:
    assert isinstance(gateway, Broker)


async def test_injected_session_is_left_open(
    fake_broker: FakeBroker, make_gateway: Callable[..., ResilientAlpacaGateway]
) -> None:
    import aiohttp

    fake_broker.on("GET", "/v2/account", reply(200, ACCOUNT))
    async with aiohttp.ClientSession() as session:
        async with make_gateway(session=session) as gw:
            await gw.get_account()
        assert not session.closed
