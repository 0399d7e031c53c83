"""The broker error taxonomy (broker/broker_errors.py), row by row, with the bodies Alpaca really sends.

Each answer goes through the gateway's own response builder (the bytes as they come off the
wire) and ``ApiResponse.error``, exactly as a live answer does. Sources of the bodies are
noted per case (shared/reference/alpaca-api.md section 1.4 collects them); a few rows guard
answers no public capture shows yet and say so.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from broker import broker_errors
from core import errors
from api_gateway import ResilientAlpacaGateway
from broker.broker_errors import RequestKind, request_kind
from core.errors import ErrorCategory as C

ORDER_ID = "61e69015-8549-4bfd-b9c3-01e75843f47d"


@dataclass(frozen=True)
class Case:
    """One real answer: request, status, body (as bytes on the wire), expected class and row."""

    method: str
    path: str
    status: int
    body: Any
    error: type[errors.BrokerError]
    rule: str
    source: str


def j(**body: Any) -> dict[str, Any]:
    return body


FILLED = j(code=42210000, message='order is already in "filled" state')
INSUFFICIENT_QTY = j(available="0", code=40310000, existing_qty="23", held_for_orders="23",
                     message="insufficient qty available for order (requested: 23, available: 0)",
                     related_orders=["47448ebc-491c-4f59-b716-75f8c3949c53"], symbol="TSLA")

CASES: list[Case] = [
    # temporary
    Case("GET", "/v2/account", 429, j(code=42910000, message="rate limit exceeded"),
         errors.RateLimited, "rate_limited", "issue 12 / alpaca docs: 429 with X-RateLimit-* headers"),
    Case("POST", "/v2/orders", 429, j(message="too many requests"),
         errors.RateLimited, "rate_limited", "observed 429 without code (reference 1.4)"),
    Case("GET", "/v2/orders", 408, None, errors.ServerError, "request_timeout", "HTTP 408, empty body"),
    Case("DELETE", f"/v2/orders/{ORDER_ID}", 500, j(code=50010000, message="internal server error occurred"),
         errors.ServerError, "server_error", "spec lists 500 for DELETE /v2/orders"),
    Case("POST", "/v2/orders", 504, "<html><body><h1>504 Gateway Time-out</h1></body></html>",
         errors.ServerError, "server_error", "nginx 504 page (alpaca-py retries 504)"),
    # operational: the keys
    Case("GET", "/v2/account", 401, j(code=40110000, message="request is not authorized"),
         errors.AuthenticationFailed, "unauthorized", "paper keys on the live host (reference 1.2)"),
    Case("GET", "/v2/stocks/bars", 401, j(message="access key verification failed"),
         errors.AuthenticationFailed, "unauthorized", "data API, bad keys (reference 1.4)"),
    Case("POST", "/v2/orders", 403, j(code=40110000, message="request is not authorized"),
         errors.AuthenticationFailed, "unauthorized_code", "guard: 40110000 under another status"),
    Case("GET", "/v2/stocks/snapshots", 403, j(message="subscription does not permit querying recent SIP data"),
         errors.AuthenticationFailed, "forbidden_data", "free plan asking SIP (reference 1.4)"),
    Case("GET", "/v2/account", 403, j(message="forbidden."),
         errors.AuthenticationFailed, "forbidden", "alpacahq/Alpaca-API #228"),
    # outcomes
    Case("DELETE", f"/v2/orders/{ORDER_ID}", 422, FILLED, errors.OrderNotCancelable, "already_final",
         "bennycode/trading-signals PR #1079 (production capture)"),
    Case("DELETE", f"/v2/orders/{ORDER_ID}", 422, j(code=42210000, message='order is already in "canceled" state'),
         errors.OrderNotCancelable, "already_final", "same answer, state canceled"),
    Case("DELETE", f"/v2/orders/{ORDER_ID}", 422, j(code=42210000, message='order is already in "expired" state'),
         errors.OrderNotCancelable, "already_final", "same answer, state expired"),
    Case("DELETE", f"/v2/orders/{ORDER_ID}", 404, j(code=40410000, message="order not found"),
         errors.NotFound, "not_found", "reference 3.8"),
    Case("GET", f"/v2/orders/{ORDER_ID}", 404, j(code=40410000, message="order not found"),
         errors.NotFound, "not_found", "reference 3.5"),
    Case("GET", "/v2/orders:by_client_order_id", 404, j(code=40410000, message="order not found"),
         errors.NotFound, "not_found", "reference 3.6"),
    Case("GET", "/v2/positions/AAPL", 404, j(code=40410000, message="position does not exist"),
         errors.NotFound, "not_found", "reference 4.1"),
    Case("DELETE", "/v2/positions/AAPL", 404, j(code=40410000, message="position does not exist"),
         errors.NotFound, "not_found", "reference 4.2"),
    Case("PATCH", f"/v2/orders/{ORDER_ID}", 404, j(code=40410000, message="order not found"),
         errors.NotFound, "not_found", "replace of an unknown order"),
    Case("GET", "/v2/assets/XYZQ", 404, j(code=40410000, message="asset not found for XYZQ"),
         errors.NotFound, "not_found", "reference 1.4"),
    Case("DELETE", "/v2/orders/not-a-uuid", 422, j(code=40010001, message="order_id is missing"),
         errors.NotFound, "malformed_order_id", "alpacahq/Alpaca-API #135"),
    Case("GET", "/v2/orders/not-a-uuid", 422, j(code=40010001, message="order_id is missing"),
         errors.NotFound, "malformed_order_id", "alpacahq/Alpaca-API #135"),
    # rejections
    Case("POST", "/v2/orders", 403, j(code=40310100, message="trade denied due to pattern day trading protection"),
         errors.PatternDayTraderRejected, "pdt", "alpacahq/Alpaca-API #156"),
    Case("POST", "/v2/orders", 403, INSUFFICIENT_QTY, errors.InsufficientQuantity, "forbidden_order",
         "alpacahq/Alpaca-API #111 (POST)"),
    Case("DELETE", "/v2/positions/TSLA", 403, INSUFFICIENT_QTY, errors.InsufficientQuantity, "forbidden_order",
         "alpacahq/Alpaca-API #111 (DELETE /v2/positions)"),
    Case("POST", "/v2/orders", 403, j(buying_power="1011.62", code=40310000, cost_basis="1520.4",
                                      message="insufficient buying power"),
         errors.InsufficientBuyingPower, "forbidden_order", "alpaca-py #225"),
    Case("POST", "/v2/orders", 403, j(code=40310000, message="insufficient day trading buying power"),
         errors.InsufficientBuyingPower, "forbidden_order", "alpacahq/Alpaca-API #112"),
    Case("POST", "/v2/orders", 403, j(code=40310000, message="potential wash trade detected. use complex orders"),
         errors.WashTradeRejected, "forbidden_order", "reference 1.4 (403 variant)"),
    Case("POST", "/v2/orders", 403, j(code=40310000, message="account is not allowed to short"),
         errors.OrderRejected, "forbidden_order", "reference 1.4"),
    Case("PATCH", f"/v2/orders/{ORDER_ID}", 403, j(code=40310000, message="insufficient qty available for order "
                                                   "(requested: 10, available: 0)", available="0",
                                                   held_for_orders="10"),
         errors.InsufficientQuantity, "forbidden_order", "reference 9 (a replace is refused the same way)"),
    Case("POST", "/v2/orders", 422, j(code=42210000, message="potential wash trade detected. use complex orders"),
         errors.WashTradeRejected, "order_rule", "Petersoj/alpaca-java #145"),
    Case("POST", "/v2/orders", 422, j(code=42210000, message="invalid limit_price 290.123. sub-penny increment "
                                      "does not fulfill minimum pricing criteria"),
         errors.OrderRejected, "order_rule", "legacy docs, trading/orders.md"),
    Case("POST", "/v2/orders", 422, FILLED, errors.OrderRejected, "order_rule",
         "42210000 on a submit is a rejection whatever the text"),
    Case("PATCH", f"/v2/orders/{ORDER_ID}", 422, j(code=42210000, message="stop price must be less than "
                                                   "base_price - 0.01"),
         errors.OrderRejected, "order_rule", "alpacahq/Alpaca-API #166"),
    Case("POST", "/v2/orders", 422, j(code=40010001, message="client_order_id must be unique"),
         errors.DuplicateClientOrderId, "order_validation", "alpaca-py #260"),
    Case("POST", "/v2/orders", 422, j(code=40010001, message="bracket orders must be market or limit orders"),
         errors.OrderRejected, "order_validation", "Petersoj/alpaca-java #44"),
    Case("POST", "/v2/orders", 404, j(code=40410000, message="asset not found for XYZQ"),
         errors.OrderRejected, "submit_not_found", "guard: a submit for an unknown asset"),
    Case("POST", "/v2/orders", 400, j(code=40010000, message="request body format is invalid"),
         errors.OrderRejected, "bad_order_request", "reference 1.4 (400 invalid parameters)"),
    Case("DELETE", "/v2/positions/AAPL", 400, j(message="One of the request parameters is invalid"),
         errors.OrderRejected, "bad_order_request", "reference 1.4"),
    Case("POST", "/v2/orders", 418, j(code=41810000, message="I'm a teapot"),
         errors.OrderRejected, "other_order_refusal", "unknown 4xx to an order: refused, nothing created"),
    # unknown: skip the action, log raw, alert
    Case("GET", "/v2/account", 422, j(code=99999999, message="something new"),
         errors.UnclassifiedBrokerError, "unknown", "an unknown code on a read"),
    Case("DELETE", f"/v2/orders/{ORDER_ID}", 418, None, errors.UnclassifiedBrokerError, "unknown",
         "an unknown status on a cancel"),
    Case("DELETE", f"/v2/orders/{ORDER_ID}", 403, j(code=40310000, message="new orders are rejected by user request"),
         errors.UnclassifiedBrokerError, "unknown", "a 403 40310000 on a cancel is no known answer"),
    Case("GET", "/v2/positions", 400, j(code=40010000, message="invalid"),
         errors.UnclassifiedBrokerError, "unknown", "a 400 on a read is our bug: skip, log raw"),
]


@pytest.fixture(scope="module")
def gateway() -> ResilientAlpacaGateway:
    return ResilientAlpacaGateway(base_url="http://127.0.0.1:9", data_url="http://127.0.0.1:9",
                                  key_id=None, secret_key=None, mode="paper")


def wire(body: Any) -> bytes:
    if body is None:
        return b""
    return body.encode() if isinstance(body, str) else json.dumps(body).encode()


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.rule}-{c.method}-{c.status}-{c.error.__name__}")
def test_every_row_maps_alpacas_real_body(gateway: ResilientAlpacaGateway, case: Case) -> None:
    response = gateway._build_response(case.method, case.path, case.status, {}, wire(case.body))
    problem = response.error()
    assert type(problem) is case.error, (case.source, problem)
    assert problem.category is case.error.category
    assert problem.status == case.status
    code = case.body.get("code") if isinstance(case.body, dict) else None
    assert problem.code == code
    if isinstance(case.body, dict) and "message" in case.body:
        assert case.body["message"] in problem.message  # kept for the logs
    kind = request_kind(case.method, case.path)
    rule, _ = broker_errors.classify(case.status, code, kind, case.body if isinstance(case.body, dict) else None,
                                     case.body.get("message", "") if isinstance(case.body, dict) else "")
    assert rule.name == case.rule


def test_every_rule_of_the_table_has_a_real_body_above() -> None:
    tested = {case.rule for case in CASES}
    rows = {rule.name for rule in broker_errors.RULES} | {broker_errors.UNKNOWN.name}
    assert rows - tested == set(), "rows without a test"
    assert len(rows) == len(broker_errors.RULES) + 1, "rule names are unique"


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.rule}-{c.method}-{c.status}")
def test_the_message_text_never_decides_the_category(gateway: ResilientAlpacaGateway, case: Case) -> None:
    """Any text (even another row's) gives the same category; only a rejection's subclass
    may follow the text, and only on the rows Alpaca shares between several rejections."""
    body = dict(case.body) if isinstance(case.body, dict) else {}
    for text in ("", "order is not cancelable", 'order is already in "filled" state',
                 "potential wash trade detected", "client_order_id must be unique", "zzz"):
        body["message"] = text
        response = gateway._build_response(case.method, case.path, case.status, {}, wire(body))
        problem = response.error()
        assert problem is not None and problem.category is case.error.category, (text, case)
        rule = broker_errors.rule_for(case.status, body.get("code"), request_kind(case.method, case.path))
        if not rule.refine:
            assert type(problem) is case.error


def test_the_same_code_means_what_the_request_makes_it_mean() -> None:
    same = {"code": 42210000, "message": 'order is already in "filled" state'}
    cancel = broker_errors.classify(422, 42210000, RequestKind.CANCEL, same, same["message"])[1]
    submit = broker_errors.classify(422, 42210000, RequestKind.SUBMIT, same, same["message"])[1]
    assert cancel is errors.OrderNotCancelable and cancel.category is C.OUTCOME
    assert submit is errors.OrderRejected and submit.category is C.REJECTION
    found = broker_errors.classify(404, 40410000, RequestKind.CANCEL)[1]
    refused = broker_errors.classify(404, 40410000, RequestKind.SUBMIT)[1]
    assert found.category is C.OUTCOME and refused.category is C.REJECTION


@pytest.mark.parametrize(("method", "path", "kind"), [
    ("POST", "/v2/orders", RequestKind.SUBMIT),
    ("DELETE", "/v2/orders", RequestKind.CANCEL),
    ("DELETE", f"/v2/orders/{ORDER_ID}", RequestKind.CANCEL),
    ("PATCH", f"/v2/orders/{ORDER_ID}", RequestKind.REPLACE),
    ("GET", f"/v2/orders/{ORDER_ID}", RequestKind.ORDER_READ),
    ("GET", "/v2/orders:by_client_order_id", RequestKind.ORDER_READ),
    ("GET", "/v2/orders", RequestKind.READ),
    ("DELETE", "/v2/positions/AAPL", RequestKind.CLOSE),
    ("DELETE", "/v2/positions", RequestKind.CLOSE),
    ("GET", "/v2/positions/AAPL", RequestKind.READ),
    ("GET", "/v2/account/activities", RequestKind.READ),
    ("GET", "/v2/stocks/AAPL/quotes/latest", RequestKind.DATA),
    ("GET", "/v1beta1/news", RequestKind.DATA),
])
def test_request_kinds(method: str, path: str, kind: RequestKind) -> None:
    assert request_kind(method, path) is kind


def test_categories_of_the_public_exception_classes() -> None:
    assert errors.RateLimited.category is C.TEMPORARY and errors.OrderInFlight.category is C.TEMPORARY
    assert errors.NotFound.category is C.OUTCOME and errors.OrderNotCancelable.category is C.OUTCOME
    assert issubclass(errors.NotFound, errors.OrderOutcome)
    assert issubclass(errors.OrderNotCancelable, errors.OrderOutcome)
    for rejected in (errors.InsufficientQuantity, errors.InsufficientBuyingPower, errors.WashTradeRejected,
                     errors.PatternDayTraderRejected, errors.DuplicateClientOrderId):
        assert rejected.category is C.REJECTION
    for operational in (errors.AuthenticationFailed, errors.AccountBlocked, errors.UnclassifiedBrokerError):
        assert operational.category is C.OPERATIONAL and issubclass(operational, errors.OperationalError)


# -- the gateway's cancel, against a scripted Alpaca on loopback ------------------------------


def order_body(order_id: str, status: str) -> dict[str, Any]:
    return {
        "id": order_id, "client_order_id": f"cid-{order_id[:8]}", "created_at": "2025-06-24T18:00:00Z",
        "symbol": "SPY", "asset_class": "us_equity", "qty": "10", "filled_qty": "10" if status == "filled" else "0",
        "filled_avg_price": "512.3" if status == "filled" else None, "order_class": "", "type": "limit",
        "limit_price": "512.3", "side": "sell", "time_in_force": "gtc", "status": status,
    }


@pytest.fixture
async def alpaca() -> AsyncIterator[tuple[ResilientAlpacaGateway, dict[str, str]]]:
    states: dict[str, str] = {}

    async def cancel(request: web.Request) -> web.Response:
        oid = request.match_info["oid"]
        if oid not in states:
            try:
                uuid.UUID(oid)
            except ValueError:
                return web.json_response({"code": 40010001, "message": "order_id is missing"}, status=422)
            return web.json_response({"code": 40410000, "message": "order not found"}, status=404)
        state = states[oid]
        if state in ("filled", "canceled", "expired"):
            return web.json_response({"code": 42210000, "message": f'order is already in "{state}" state'},
                                     status=422)
        states[oid] = "canceled"
        return web.Response(status=204)

    async def get(request: web.Request) -> web.Response:
        oid = request.match_info["oid"]
        return web.json_response(order_body(oid, states[oid]))

    app = web.Application()
    app.router.add_delete("/v2/orders/{oid}", cancel)
    app.router.add_get("/v2/orders/{oid}", get)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    gw = ResilientAlpacaGateway(base_url=f"http://127.0.0.1:{port}", data_url=f"http://127.0.0.1:{port}",
                                key_id=None, secret_key=None, mode="paper", max_retries=0)
    await gw.__aenter__()
    yield gw, states
    await gw.close()
    await runner.cleanup()


async def test_the_cancel_race_is_an_outcome_carrying_the_orders_true_state(
    alpaca: tuple[ResilientAlpacaGateway, dict[str, str]],
) -> None:
    gw, states = alpaca
    filled, canceled, working = (str(uuid.uuid4()) for _ in range(3))
    states.update({filled: "filled", canceled: "canceled", working: "new"})
    with pytest.raises(errors.OrderNotCancelable) as caught:
        await gw.cancel_order(filled)
    assert caught.value.order is not None and caught.value.order.status == "filled"
    assert caught.value.code == 42210000 and '"filled" state' in caught.value.message
    assert await gw.cancel_order(canceled) is None  # already canceled: what the cancel wanted
    assert await gw.cancel_order(working) is None
    with pytest.raises(errors.NotFound):
        await gw.cancel_order(str(uuid.uuid4()))
    with pytest.raises(errors.NotFound):  # Alpaca answers a malformed id 422 40010001
        await gw.cancel_order("not-a-uuid")


async def test_a_duplicate_id_is_recognised_by_looking_it_up_not_by_the_text() -> None:
    """422 40010001 is Alpaca's code for a duplicate client_order_id and for any validation
    error: whatever its wording, the gateway looks the id up and returns the order it finds."""
    existing = order_body(str(uuid.uuid4()), "new") | {"client_order_id": "intent-1-0", "side": "buy",
                                                        "type": "market", "limit_price": None}

    async def post(request: web.Request) -> web.Response:
        return web.json_response({"code": 40010001, "message": "some future wording"}, status=422)

    async def by_cid(request: web.Request) -> web.Response:
        if request.query.get("client_order_id") == "intent-1-0":
            return web.json_response(existing)
        return web.json_response({"code": 40410000, "message": "order not found"}, status=404)

    app = web.Application()
    app.router.add_post("/v2/orders", post)
    app.router.add_get("/v2/orders:by_client_order_id", by_cid)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    gw = ResilientAlpacaGateway(base_url=f"http://127.0.0.1:{port}", data_url=f"http://127.0.0.1:{port}",
                                key_id=None, secret_key=None, mode="paper", max_retries=0)
    try:
        async with gw:
            found = await gw.submit_simple_order("SPY", 10, "buy", client_order_id="intent-1-0")
            assert found.id == existing["id"]
            with pytest.raises(errors.OrderRejected) as refused:  # a real validation error stays one
                await gw.submit_simple_order("SPY", 10, "buy", client_order_id="intent-2-0")
            assert refused.value.code == 40010001 and type(refused.value) is errors.OrderRejected
    finally:
        await runner.cleanup()


async def test_a_replace_that_meets_a_final_order_is_an_outcome_a_rule_refusal_stays_a_rejection() -> None:
    filled, working = str(uuid.uuid4()), str(uuid.uuid4())
    states = {filled: "filled", working: "new"}

    async def patch(request: web.Request) -> web.Response:
        oid = request.match_info["oid"]
        if states[oid] == "filled":
            return web.json_response({"code": 42210000, "message": 'order is already in "filled" state'}, status=422)
        return web.json_response({"code": 42210000, "message": "invalid limit_price 290.123. sub-penny increment "
                                  "does not fulfill minimum pricing criteria"}, status=422)

    async def get(request: web.Request) -> web.Response:
        oid = request.match_info["oid"]
        return web.json_response(order_body(oid, states[oid]))

    app = web.Application()
    app.router.add_patch("/v2/orders/{oid}", patch)
    app.router.add_get("/v2/orders/{oid}", get)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    gw = ResilientAlpacaGateway(base_url=f"http://127.0.0.1:{port}", data_url=f"http://127.0.0.1:{port}",
                                key_id=None, secret_key=None, mode="paper", max_retries=0)
    from decimal import Decimal

    try:
        async with gw:
            with pytest.raises(errors.OrderNotReplaceable) as final:
                await gw.replace_order(filled, limit_price=Decimal("531"))
            assert final.value.category is C.OUTCOME and final.value.order is not None
            assert final.value.order.status == "filled" and final.value.code == 42210000
            with pytest.raises(errors.OrderRejected) as refused:
                await gw.replace_order(working, limit_price=Decimal("290.123"))
            assert "sub-penny" in refused.value.message
    finally:
        await runner.cleanup()
