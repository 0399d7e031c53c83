"""The simulator's HTTP face over real loopback sockets: status codes, auth, rate limit,
faults, the control API and the ``python -m simulator`` command line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog

from core.clock import EXCHANGE_TZ
from simulator.core import SimulatorCore, default_start
from simulator.faults import FaultConfig
from simulator.server import RateLimiter, RunningServer, start_server

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
# A Tuesday at 10:00 New York: regular hours, the clock at "max" (moves only when told).
START = "2025-03-04T10:00:00-05:00"
KEY, SECRET = "test-key", "test-secret"
AUTH = {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}


def make_core(**kw: Any) -> SimulatorCore:
    options: dict[str, Any] = {"symbols": ["SPY", "AAPL"], "start": START, "speed": None, "seed": 7}
    options.update(kw)
    return SimulatorCore.create(**options)


class Sim:
    """A running server plus a client session bound to it."""

    def __init__(self, server: RunningServer, core: SimulatorCore, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.core = core
        self.session = session
        self.url = server.base_url

    async def call(
        self, method: str, path: str, *, json_body: Any = None, headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None, data: bytes | None = None,
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        async with self.session.request(
            method, self.url + path, json=json_body, headers=headers, params=params, data=data,
            allow_redirects=False,
        ) as response:
            raw = await response.read()
            body = json.loads(raw) if raw else None
            return response.status, body, response

    async def order(self, **fields: Any) -> dict[str, Any]:
        body = {"symbol": "SPY", "qty": "1", "side": "buy", "type": "market", "time_in_force": "day"}
        body.update(fields)
        status, answer, _ = await self.call("POST", "/v2/orders", json_body=body)
        assert status == 200, answer
        return answer


@pytest.fixture
async def sim_factory() -> AsyncIterator[Callable[..., Any]]:
    running: list[tuple[RunningServer, aiohttp.ClientSession]] = []

    async def factory(core: SimulatorCore | None = None, **server_kw: Any) -> Sim:
        core = core or make_core()
        server_kw.setdefault("rate_limit_per_minute", None)
        server = await start_server(core, **server_kw)
        session = aiohttp.ClientSession()
        running.append((server, session))
        return Sim(server, core, session)

    yield factory
    for server, session in running:
        await session.close()
        await server.stop()


@pytest.fixture
async def sim(sim_factory: Callable[..., Any]) -> Sim:
    return await sim_factory()


# -- the core's defaults -----------------------------------------------------------------


def test_synthetic_default_start_is_the_latest_session_pre_market() -> None:
    core = make_core()
    saturday = date(2025, 3, 8)
    start = default_start(core.market, core.calendar, csv=False, today=saturday)
    assert start.astimezone(EXCHANGE_TZ) == datetime(2025, 3, 7, 9, 0, tzinfo=EXCHANGE_TZ)
    assert core.calendar.session_phase(start) == "pre"


def test_csv_default_start_leaves_250_daily_bars_of_every_symbol_for_warm_up() -> None:
    core = SimulatorCore.create(data_dir=SHARED_DATA, symbols=["SPY", "QQQ"], speed=None)
    now = core.clock.now()
    assert core.calendar.session_phase(now) == "pre"
    day = now.astimezone(EXCHANGE_TZ).date()
    for symbol in ("SPY", "QQQ"):
        history = core.market.daily_bars(symbol, day - timedelta(days=400), day - timedelta(days=1))
        assert len(history) >= 250, symbol


def test_core_runs_without_http_and_counts_state() -> None:
    core = make_core()
    order = core.broker.submit_order(
        {"symbol": "SPY", "qty": "2", "side": "buy", "type": "market", "time_in_force": "day"})
    core.advance(1)
    assert core.broker.get_order(order["id"])["status"] == "filled"
    before = core.market.price_at("SPY", core.clock.now())
    result = core.shock(["SPY"], -10)
    assert result["prices"]["SPY"] == pytest.approx(before * 0.9, rel=0.01)
    state = core.state()
    assert state["speed"] == "max" and state["phase"] == "regular"
    assert state["faults"]["reset"] == 0
    with pytest.raises(ValueError, match="NOPE"):
        core.shock(["NOPE"], 5)


# -- routes and status codes -------------------------------------------------------------


async def test_trading_paths_answer_with_alpaca_status_codes(sim: Sim) -> None:
    status, account, _ = await sim.call("GET", "/v2/account")
    assert status == 200 and account["status"] == "ACTIVE"
    for path in ("/v2/clock", "/v2/calendar", "/v2/assets", "/v2/assets/SPY", "/v2/positions",
                 "/v2/orders", "/v2/account/configurations", "/v2/account/activities",
                 "/v2/account/activities/FILL", "/v2/account/portfolio/history"):
        status, body, _ = await sim.call("GET", path)
        assert status == 200, (path, body)

    order = await sim.order(type="limit", limit_price="1.00", client_order_id="cid-1")
    status, same, _ = await sim.call(
        "GET", "/v2/orders:by_client_order_id", params={"client_order_id": "cid-1"})
    assert status == 200 and same["id"] == order["id"]

    status, dup, _ = await sim.call("POST", "/v2/orders", json_body={
        "symbol": "SPY", "qty": "1", "side": "buy", "type": "limit", "limit_price": "1.00",
        "time_in_force": "day", "client_order_id": "cid-1"})
    assert status == 422 and dup["message"] == "client_order_id must be unique"

    status, body, response = await sim.call("DELETE", f"/v2/orders/{order['id']}")
    assert status == 204 and body is None
    status, body, _ = await sim.call("DELETE", f"/v2/orders/{order['id']}")
    assert status == 422, body

    status, body, _ = await sim.call("GET", f"/v2/orders/{uuid.uuid4()}")
    assert status == 404 and body["code"] == 40410000

    await sim.order(type="limit", limit_price="1.00")
    status, items, _ = await sim.call("DELETE", "/v2/orders")
    assert status == 207 and len(items) == 1 and items[0]["status"] == 200

    await sim.order(qty="3")
    status, positions, _ = await sim.call("GET", "/v2/positions")
    assert status == 200 and positions[0]["qty"] == "3"
    status, closed, _ = await sim.call("DELETE", "/v2/positions", params={"cancel_orders": "true"})
    assert status == 207 and closed[0]["symbol"] == "SPY" and closed[0]["status"] == 200
    status, body, _ = await sim.call("GET", "/v2/positions/SPY")
    assert status == 404


async def test_paths_are_exact_no_redirects(sim: Sim) -> None:
    status, body, response = await sim.call("GET", "/v2/account/")
    assert status == 404 and body["code"] == 40410000
    assert "Location" not in response.headers
    status, body, _ = await sim.call("PUT", "/v2/account")
    assert status == 405


async def test_malformed_json_body_answers_400(sim: Sim) -> None:
    status, body, _ = await sim.call(
        "POST", "/v2/orders", data=b'{"symbol": "SPY", ', headers={"Content-Type": "application/json"})
    assert status == 400
    assert body == {"code": 40010000, "message": "request body format is invalid"}
    status, body, _ = await sim.call("POST", "/v2/orders", json_body=["not", "an", "object"])
    assert status == 400


async def test_unexpected_exception_answers_500_and_is_logged(sim: Sim, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode() -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(sim.core.broker, "get_account", explode)
    with structlog.testing.capture_logs() as logs:
        status, body, _ = await sim.call("GET", "/v2/account")
    assert status == 500
    assert body == {"code": 50010000, "message": "internal server error"}
    assert any(e["event"] == "sim_request_failed" and e["path"] == "/v2/account" for e in logs)


async def test_every_response_carries_a_request_id(sim_factory: Callable[..., Any]) -> None:
    sim = await sim_factory(key=KEY, secret=SECRET, rate_limit_per_minute=1)
    seen = set()
    for method, path, headers in (
        ("GET", "/v2/account", AUTH),          # 200
        ("GET", "/v2/account", AUTH),          # 429
        ("GET", "/v2/clock", None),            # 401
        ("GET", "/_sim/v1/state", None),       # control
        ("GET", "/nowhere", AUTH),             # 404
    ):
        _, _, response = await sim.call(method, path, headers=headers)
        seen.add(response.headers["X-Request-ID"])
    assert len(seen) == 5


# -- auth --------------------------------------------------------------------------------


async def test_auth_required_when_keys_configured(sim_factory: Callable[..., Any]) -> None:
    sim = await sim_factory(key=KEY, secret=SECRET, rate_limit_per_minute=200)
    status, body, response = await sim.call("GET", "/v2/account")
    assert status == 401 and body == {"code": 40110000, "message": "request is not authorized"}
    assert response.headers["X-RateLimit-Remaining"] == "200"  # sent, but a refusal is not counted
    wrong = {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": "nope"}
    status, body, _ = await sim.call("GET", "/v2/account", headers=wrong)
    assert status == 401
    status, body, _ = await sim.call("GET", "/v2/stocks/bars/latest", params={"symbols": "SPY"})
    assert status == 401 and body == {"message": "access key verification failed"}
    status, account, _ = await sim.call("GET", "/v2/account", headers=AUTH)
    assert status == 200 and account["status"] == "ACTIVE"
    for path, body in (("/_sim/v1/state", None), ("/_sim/v1/shock", {"symbols": "*", "pct": -50})):
        method = "GET" if body is None else "POST"
        status, refused, _ = await sim.call(method, path, json_body=body)
        assert status == 401 and refused == {"code": 40110000, "message": "request is not authorized"}
        status, _, _ = await sim.call(method, path, json_body=body, headers=wrong)
        assert status == 401
    status, state, _ = await sim.call("GET", "/_sim/v1/state", headers=AUTH)
    assert status == 200 and state["market"]  # the control API takes the same keys


async def test_any_key_or_none_accepted_without_configured_keys(sim: Sim) -> None:
    for headers in (None, {"APCA-API-KEY-ID": "x", "APCA-API-SECRET-KEY": "y"}):
        status, _, _ = await sim.call("GET", "/v2/account", headers=headers)
        assert status == 200


# -- rate limit --------------------------------------------------------------------------


async def test_rate_limit_answers_429_with_headers(sim_factory: Callable[..., Any]) -> None:
    sim = await sim_factory(rate_limit_per_minute=3)
    remaining = []
    for _ in range(3):
        status, _, response = await sim.call("GET", "/v2/clock")
        assert status == 200
        assert response.headers["X-RateLimit-Limit"] == "3"
        remaining.append(int(response.headers["X-RateLimit-Remaining"]))
    assert remaining == [2, 1, 0]
    status, body, response = await sim.call("GET", "/v2/clock")
    assert status == 429
    assert body == {"code": 42910000, "message": "rate limit exceeded"}
    assert response.headers["X-RateLimit-Remaining"] == "0"
    # Dated by the simulator's clock (here 2025-03-04, at "max": rate 1), the clock its
    # clients follow: the window reopens within a minute of simulated "now".
    reset = int(response.headers["X-RateLimit-Reset"])
    assert 0 <= reset - sim.core.clock.now().timestamp() <= 61
    assert "Retry-After" not in response.headers  # Alpaca sends only X-RateLimit-*
    # Another key has its own window; the control API is exempt.
    status, _, _ = await sim.call("GET", "/v2/clock", headers={"APCA-API-KEY-ID": "other", "APCA-API-SECRET-KEY": "s"})
    assert status == 200
    status, _, response = await sim.call("GET", "/_sim/v1/state")
    assert status == 200 and "X-RateLimit-Limit" not in response.headers


async def test_rate_limit_disabled_sends_no_limit(sim: Sim) -> None:
    for _ in range(5):
        status, _, response = await sim.call("GET", "/v2/clock")
        assert status == 200
    assert "X-RateLimit-Limit" not in response.headers


def test_rate_limiter_window_slides() -> None:
    now = [1000.0]
    limiter = RateLimiter(2, monotonic=lambda: now[0], wall=lambda: 5_000_000.0 + now[0])
    bucket = ("k", "trading")
    assert limiter.hit(bucket)[0]
    now[0] += 30
    assert limiter.hit(bucket)[0]
    allowed, headers = limiter.hit(bucket)
    assert not allowed
    assert headers["X-RateLimit-Reset"] == str(5_000_000 + 1060)  # when the first hit leaves
    now[0] += 30.5  # the first hit has left the window
    allowed, headers = limiter.hit(bucket)
    assert allowed and headers["X-RateLimit-Remaining"] == "0"
    assert limiter.hit(("k", "data"))[0]  # market data counts separately


# -- faults ------------------------------------------------------------------------------


async def set_faults(sim: Sim, **spec: Any) -> None:
    status, body, _ = await sim.call("POST", "/_sim/v1/faults", json_body=spec)
    assert status == 200, body


async def fault_counts(sim: Sim) -> dict[str, int]:
    status, state, _ = await sim.call("GET", "/_sim/v1/state")
    assert status == 200
    return state["faults"]


async def test_error_rate_fault_answers_5xx_with_alpaca_body(sim: Sim) -> None:
    await set_faults(sim, error_rate=1.0)
    statuses = set()
    for _ in range(12):
        status, body, _ = await sim.call("GET", "/v2/account")
        statuses.add(status)
        assert body["code"] in (50010000, 50310000) and body["message"]
    assert statuses <= {500, 503} and 500 in statuses
    assert (await fault_counts(sim))["error_rate"] == 12


async def test_rate_limit_fault_answers_429_with_alpacas_headers(sim: Sim) -> None:
    await set_faults(sim, rate_limit=1.0)
    status, body, response = await sim.call("GET", "/v2/positions")
    assert status == 429 and body == {"code": 42910000, "message": "rate limit exceeded"}
    assert response.headers["X-RateLimit-Limit"] == "200"
    assert response.headers["X-RateLimit-Remaining"] == "0"
    # The window reopens a second later on the simulator's clock (what its clients read).
    assert int(response.headers["X-RateLimit-Reset"]) == int(sim.core.clock.now().timestamp()) + 1
    assert "Retry-After" not in response.headers
    assert (await fault_counts(sim))["rate_limit"] == 1


async def resting_bracket(sim: Sim) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A filled bracket entry with its two working legs: (entry, take-profit, stop)."""
    price = float(sim.core.market.price_at("SPY", sim.core.clock.now()))
    entry = await sim.order(qty="5", order_class="bracket", take_profit={"limit_price": f"{price * 1.05:.2f}"},
                            stop_loss={"stop_price": f"{price * 0.95:.2f}"})
    status, nested, _ = await sim.call("GET", f"/v2/orders/{entry['id']}", params={"nested": "true"})
    assert status == 200 and nested["status"] == "filled"
    take_profit, stop = sorted(nested["legs"], key=lambda leg: leg["type"] != "limit")
    assert take_profit["status"] == "new" and stop["status"] == "new"
    return nested, take_profit, stop


async def test_race_fault_fills_the_leg_a_client_cancels_and_answers_alpacas_422(sim: Sim) -> None:
    _, take_profit, stop = await resting_bracket(sim)
    await set_faults(sim, race=1.0)
    status, body, _ = await sim.call("DELETE", f"/v2/orders/{stop['id']}")
    assert status == 422
    assert body == {"code": 42210000, "message": 'order is already in "filled" state'}
    _, raced, _ = await sim.call("GET", f"/v2/orders/{stop['id']}")
    assert raced["status"] == "filled" and raced["filled_qty"] == "5"
    _, sibling, _ = await sim.call("GET", f"/v2/orders/{take_profit['id']}")
    assert sibling["status"] == "canceled"  # the OCO pair resolved as at the broker
    _, positions, _ = await sim.call("GET", "/v2/positions")
    assert positions == []  # the stop sold the position
    assert (await fault_counts(sim))["race"] == 1


async def test_race_fault_meets_a_replace_too_and_cancel_mode_names_canceled(sim: Sim) -> None:
    _, take_profit, _ = await resting_bracket(sim)
    await set_faults(sim, race=1.0, race_mode="cancel")
    status, body, _ = await sim.call("PATCH", f"/v2/orders/{take_profit['id']}", json_body={"limit_price": "999.00"})
    assert status == 422
    assert body == {"code": 42210000, "message": 'order is already in "canceled" state'}
    _, positions, _ = await sim.call("GET", "/v2/positions")
    assert positions[0]["qty"] == "5"  # canceled, not filled: the shares are still held


async def test_race_fault_at_zero_never_races(sim: Sim) -> None:
    await set_faults(sim, race=0.0, latency_ms=0)  # faults active, race off
    for _ in range(3):
        _, take_profit, stop = await resting_bracket(sim)
        status, _, _ = await sim.call("PATCH", f"/v2/orders/{take_profit['id']}",
                                      json_body={"limit_price": take_profit["limit_price"]})
        assert status == 200
        status, body, _ = await sim.call("DELETE", f"/v2/orders/{stop['id']}")
        assert status == 204, body
        await sim.call("DELETE", "/v2/positions")
    assert (await fault_counts(sim))["race"] == 0


async def test_race_fault_is_seeded(sim_factory: Callable[..., Any]) -> None:
    outcomes = []
    for _ in range(2):
        sim = await sim_factory()
        await set_faults(sim, race=0.5, seed=3)
        statuses = []
        for _ in range(6):
            order = await sim.order(type="limit", limit_price="1.00")
            status, _, _ = await sim.call("DELETE", f"/v2/orders/{order['id']}")
            statuses.append(status)
        assert set(statuses) == {204, 422}
        outcomes.append(statuses)
    assert outcomes[0] == outcomes[1]


async def test_reset_fault_drops_the_connection(sim: Sim) -> None:
    await set_faults(sim, reset=1.0)
    # A POST: aiohttp's client silently retries idempotent requests once after a disconnect.
    body = {"symbol": "SPY", "qty": "1", "side": "buy", "type": "market",
            "time_in_force": "day", "client_order_id": "reset-1"}
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await sim.call("POST", "/v2/orders", json_body=body)
    assert (await fault_counts(sim))["reset"] == 1
    await set_faults(sim, clear=True)
    status, _, _ = await sim.call("GET", "/v2/orders:by_client_order_id", params={"client_order_id": "reset-1"})
    assert status == 404  # dropped before processing


async def test_timeout_fault_holds_without_processing(sim: Sim) -> None:
    await set_faults(sim, timeout=1.0, timeout_s=5, endpoints="/v2/orders")
    timeout = aiohttp.ClientTimeout(total=0.3)
    body = {"symbol": "SPY", "qty": "1", "side": "buy", "type": "market",
            "time_in_force": "day", "client_order_id": "held-1"}
    with pytest.raises(asyncio.TimeoutError):
        async with sim.session.post(sim.url + "/v2/orders", json=body, timeout=timeout) as response:
            await response.read()
    await set_faults(sim, clear=True)
    status, _, _ = await sim.call("GET", "/v2/orders:by_client_order_id", params={"client_order_id": "held-1"})
    assert status == 404  # never processed
    assert (await fault_counts(sim))["timeout"] == 1


async def test_malformed_fault_truncates_the_json(sim: Sim) -> None:
    await set_faults(sim, spec="malformed=1")
    async with sim.session.get(sim.url + "/v2/account") as response:
        assert response.status == 200
        raw = await response.read()
    with pytest.raises(ValueError):
        json.loads(raw)
    assert raw.startswith(b"{")
    assert (await fault_counts(sim))["malformed"] == 1


async def test_accept_then_timeout_creates_the_order_but_loses_the_answer(sim: Sim) -> None:
    await set_faults(sim, accept_then_timeout=1.0, timeout_s=0.2)
    body = {"symbol": "SPY", "qty": "2", "side": "buy", "type": "market",
            "time_in_force": "day", "client_order_id": "lost-answer"}
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, asyncio.TimeoutError)):
        async with sim.session.post(sim.url + "/v2/orders", json=body) as response:
            await response.read()
    # Other calls are unaffected by this fault kind; the order exists at the broker.
    status, order, _ = await sim.call(
        "GET", "/v2/orders:by_client_order_id", params={"client_order_id": "lost-answer"})
    assert status == 200 and order["qty"] == "2"
    await set_faults(sim, clear=True)
    status, dup, _ = await sim.call("POST", "/v2/orders", json_body=body)
    assert status == 422 and dup["message"] == "client_order_id must be unique"
    assert (await fault_counts(sim))["accept_then_timeout"] == 1


async def test_latency_fault_is_applied_and_counted(sim: Sim) -> None:
    await set_faults(sim, latency_ms="5-10")
    for _ in range(3):
        status, _, _ = await sim.call("GET", "/v2/clock")
        assert status == 200
    assert (await fault_counts(sim))["latency_ms"] == 3


async def test_faults_never_touch_the_control_api(sim: Sim) -> None:
    await set_faults(sim, reset=1.0)
    for _ in range(3):
        status, state, _ = await sim.call("GET", "/_sim/v1/state")
        assert status == 200
    assert state["faults"]["reset"] == 0


async def test_faults_from_create_app_and_bad_fault_bodies(sim_factory: Callable[..., Any]) -> None:
    sim = await sim_factory(faults=FaultConfig.parse("error_rate=1,endpoints=/v2/clock"))
    status, _, _ = await sim.call("GET", "/v2/clock")
    assert status in (500, 503)
    status, _, _ = await sim.call("GET", "/v2/account")
    assert status == 200
    status, body, _ = await sim.call("POST", "/_sim/v1/faults", json_body={"explode": 1})
    assert status == 400 and "explode" in body["message"]
    status, body, _ = await sim.call("POST", "/_sim/v1/faults", json_body={"spec": "reset=2"})
    assert status == 400 and "reset" in body["message"]


# -- control API -------------------------------------------------------------------------


async def latest_trade(sim: Sim, symbol: str) -> float:
    status, body, _ = await sim.call(
        "GET", "/v2/stocks/trades/latest", params={"symbols": symbol, "feed": "iex"})
    assert status == 200, body
    return float(body["trades"][symbol]["p"])


async def test_shock_moves_prices_at_once(sim: Sim) -> None:
    before = await latest_trade(sim, "SPY")
    status, body, _ = await sim.call("POST", "/_sim/v1/shock", json_body={"symbols": ["SPY"], "pct": -7.5})
    assert status == 200, body
    after = await latest_trade(sim, "SPY")
    assert after == pytest.approx(before * 0.925, rel=0.01)
    status, quotes, _ = await sim.call(
        "GET", "/v2/stocks/quotes/latest", params={"symbols": "SPY", "feed": "iex"})
    assert quotes["quotes"]["SPY"]["bp"] < before * 0.95
    # The market continues from the new level.
    await sim.call("POST", "/_sim/v1/clock", json_body={"advance_minutes": 5})
    assert await latest_trade(sim, "SPY") == pytest.approx(before * 0.925, rel=0.03)


async def test_shock_all_symbols_with_star(sim: Sim) -> None:
    before = {s: await latest_trade(sim, s) for s in ("SPY", "AAPL")}
    status, body, _ = await sim.call("POST", "/_sim/v1/shock", json_body={"symbols": "*", "pct": 10})
    assert status == 200
    for symbol, price in before.items():
        assert await latest_trade(sim, symbol) == pytest.approx(price * 1.10, rel=0.01)


async def test_gap_applies_at_the_next_open(sim: Sim) -> None:
    status, body, _ = await sim.call("POST", "/_sim/v1/gap", json_body={"symbols": ["AAPL"], "pct": 3})
    assert status == 200, body
    opened = datetime.fromisoformat(body["open"])
    status, clock, _ = await sim.call("GET", "/v2/clock")
    minutes = (opened - datetime.fromisoformat(clock["timestamp"])).total_seconds() / 60
    # Advance past the close and through the night to just after the next open.
    await sim.call("POST", "/_sim/v1/clock", json_body={"advance_minutes": minutes + 1})
    status, bars, _ = await sim.call("GET", "/v2/stocks/bars", params={
        "symbols": "AAPL", "timeframe": "1Day", "start": "2025-03-03", "feed": "iex"})
    daily = bars["bars"]["AAPL"]
    previous_close, today_open = daily[-2]["c"], daily[-1]["o"]
    assert today_open == pytest.approx(previous_close * 1.03, rel=0.002)


async def test_clock_control_advances_and_sets_speed(sim: Sim) -> None:
    _, before, _ = await sim.call("GET", "/v2/clock")
    status, state, _ = await sim.call("POST", "/_sim/v1/clock", json_body={"advance_minutes": 30})
    assert status == 200
    _, after, _ = await sim.call("GET", "/v2/clock")
    moved = datetime.fromisoformat(after["timestamp"]) - datetime.fromisoformat(before["timestamp"])
    assert moved.total_seconds() == pytest.approx(1800, abs=1)
    status, state, _ = await sim.call("POST", "/_sim/v1/clock", json_body={"speed": 120})
    assert status == 200 and state["speed"] == 120
    status, state, _ = await sim.call("POST", "/_sim/v1/clock", json_body={"speed": "max"})
    assert state["speed"] == "max"


async def test_market_order_fills_as_time_advances(sim: Sim) -> None:
    order = await sim.order(qty="4")
    await sim.call("POST", "/_sim/v1/clock", json_body={"advance_minutes": 1})
    status, filled, _ = await sim.call("GET", f"/v2/orders/{order['id']}")
    assert filled["status"] == "filled" and filled["filled_qty"] == "4"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/_sim/v1/shock", {"pct": -5}, "symbols"),
        ("/_sim/v1/shock", {"symbols": ["SPY"]}, "pct"),
        ("/_sim/v1/shock", {"symbols": ["SPY"], "pct": "lots"}, "pct"),
        ("/_sim/v1/shock", {"symbols": ["NOPE"], "pct": 1}, "NOPE"),
        ("/_sim/v1/gap", {"symbols": 5, "pct": 1}, "symbols"),
        ("/_sim/v1/clock", {"advance_minutes": -3}, "advance_minutes"),
        ("/_sim/v1/clock", {"speed": 0}, "speed"),
        ("/_sim/v1/clock", {"speed": 1e12}, "speed"),
        ("/_sim/v1/clock", {"warp": 1}, "advance_minutes"),
    ],
)
async def test_control_api_rejects_bad_bodies_naming_the_field(sim: Sim, path: str, body: dict[str, Any], field: str) -> None:
    status, answer, _ = await sim.call("POST", path, json_body=body)
    assert status == 400
    assert field in answer["message"]


# -- market data on the same base URL ----------------------------------------------------


async def test_bars_paginate_with_tokens(sim: Sim) -> None:
    params = {"symbols": "SPY,AAPL", "timeframe": "1Min", "start": "2025-03-03T14:30:00Z",
              "end": "2025-03-03T15:30:00Z", "limit": "50", "feed": "iex"}
    pages, total = 0, {"SPY": 0, "AAPL": 0}
    while True:
        status, body, _ = await sim.call("GET", "/v2/stocks/bars", params=params)
        assert status == 200
        pages += 1
        for symbol, bars in body["bars"].items():
            total[symbol] += len(bars)
        if body["next_page_token"] is None:
            break
        params["page_token"] = body["next_page_token"]
    assert pages >= 3
    assert total["SPY"] > 0 and total["AAPL"] > 0
    status, single, _ = await sim.call("GET", "/v2/stocks/SPY/bars", params={
        k: v for k, v in params.items() if k not in ("symbols", "page_token", "limit")})
    assert len(single["bars"]) == total["SPY"]


async def test_single_symbol_data_paths(sim: Sim) -> None:
    for path, key in (("/v2/stocks/SPY/quotes/latest", "quote"), ("/v2/stocks/SPY/trades/latest", "trade"),
                      ("/v2/stocks/SPY/bars/latest", "bar")):
        status, body, _ = await sim.call("GET", path, params={"feed": "iex"})
        assert status == 200 and body["symbol"] == "SPY" and key in body
    status, body, _ = await sim.call("GET", "/v2/stocks/SPY/snapshot", params={"feed": "iex"})
    assert status == 200 and body["latestTrade"]["p"] > 0
    status, body, _ = await sim.call("GET", "/v2/stocks/snapshots", params={"symbols": "SPY,AAPL", "feed": "iex"})
    assert set(body) == {"SPY", "AAPL"}
    status, body, _ = await sim.call("GET", "/v1beta1/news", params={"symbols": "SPY"})
    assert status == 200 and "news" in body


# -- the command line --------------------------------------------------------------------


def _run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "simulator", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=timeout,
    )


@pytest.fixture
def cli_server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    log_file = (tmp_path / "simulator.log").open("w")  # a file, so logs never fill a pipe
    process = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--port", "0", "--speed", "max", "--symbols", "SPY,QQQ",
         "--start", START, "--no-rate-limit", "--cash", "25000"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=log_file, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    try:
        assert line.startswith("simulator listening on http://127.0.0.1:"), line
        yield process, line.rsplit(" ", 1)[1]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        log_file.close()


def test_cli_serves_prints_url_and_stops_on_sigterm(cli_server: tuple[subprocess.Popen[str], str]) -> None:
    process, url = cli_server
    state = _run_cli("state", "--url", url)
    assert state.returncode == 0, state.stderr
    first = json.loads(state.stdout)
    assert first["market"]["symbols"] == ["SPY", "QQQ"]
    assert first["broker"]["cash"] == "25000"
    assert first["now"] == "2025-03-04T15:00:00+00:00"
    shock = _run_cli("shock", "--url", url, "SPY", "-6")
    assert shock.returncode == 0, shock.stderr
    assert _run_cli("gap", "--url", url, "*", "3").returncode == 0
    assert _run_cli("advance", "--url", url, "30").returncode == 0
    assert _run_cli("faults", "--url", url, "error_rate=0.1").returncode == 0
    state = json.loads(_run_cli("state", "--url", url).stdout)
    assert state["fault_config"]["error_rate"] == 0.1
    assert [s["kind"] for s in state["market"]["shocks"]] == ["shock", "gap"]
    refused = _run_cli("shock", "--url", url, "NOPE", "-6")
    assert refused.returncode == 1 and "NOPE" in refused.stderr
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0
    assert process.stdout is not None and process.stdout.read() == ""  # only the one line


def test_cli_stops_on_sigint(cli_server: tuple[subprocess.Popen[str], str]) -> None:
    process, _ = cli_server
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=15) == 0


@pytest.mark.parametrize(
    "args",
    [
        ["--port", "70000"],
        ["--speed", "fast"],
        ["--start", "yesterday"],
        ["--faults", "error_rate=2"],
        ["--key", "only-key"],
        ["--host", "0.0.0.0"],
        ["--symbols", "spy"],
        ["--bogus"],
        ["shock", "SPY"],
        ["advance", "--url", "http://127.0.0.1:1", "-5"],
    ],
)
def test_cli_bad_arguments_exit_2_with_one_line(args: list[str]) -> None:
    result = _run_cli(*args)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0]
    assert result.stdout == ""


def test_control_cli_reports_unreachable_simulator() -> None:
    result = _run_cli("state", "--url", "http://127.0.0.1:1", "--timeout", "2")
    assert result.returncode == 1
    assert "cannot reach the simulator" in result.stderr


def test_rate_limit_reset_is_counted_in_the_simulators_seconds_at_its_speed() -> None:
    now = [1000.0]
    limiter = RateLimiter(1, monotonic=lambda: now[0], wall=lambda: 1_700_000_000.0, rate=lambda: 60.0)
    assert limiter.hit(("k", "trading"))[0]
    now[0] += 10
    allowed, headers = limiter.hit(("k", "trading"))
    # 50 real seconds left in the window = 3000 seconds of a clock running at 60x.
    assert not allowed and headers["X-RateLimit-Reset"] == str(1_700_000_000 + 3000)
