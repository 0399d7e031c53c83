"""The simulator's HTTP face: Alpaca's Trading API v2 and Market Data API v2 on one base URL.

Every route is a thin wrapper over a :class:`simulator.core.SimulatorCore` method that returns
Alpaca's JSON shape (or raises ``SimApiError``), so the HTTP server and in-process backtests
share every line of matching. Paths are registered exactly as Alpaca spells them (alpaca-py
disables redirects), including the literal ``/v2/orders:by_client_order_id``.

What happens to each request on an Alpaca path, in order:

1. ``X-Request-ID`` is assigned (on every response, control API included).
2. Auth: with a key pair configured, a missing or wrong ``APCA-API-KEY-ID`` /
   ``APCA-API-SECRET-KEY`` answers 401 (trading: ``{"code":40110000,"message":"request is not
   authorized"}``; market data: ``{"message":"access key verification failed"}``). Without a
   configured pair any key (or none) is accepted.
3. Rate limit: a sliding 60-second window per key and per API (trading and market data count
   separately, as at Alpaca), 429 ``{"code":42910000,"message":"rate limit exceeded"}`` when
   full. ``X-RateLimit-Limit/Remaining/Reset`` are sent on every response (``Reset`` in UNIX
   seconds of the simulator's clock, see :class:`RateLimiter`); no ``Retry-After``, as Alpaca.
4. Faults (see :mod:`simulator.faults`; ``race`` first fills or cancels the order a
   ``DELETE``/``PATCH /v2/orders/{id}`` names), then ``core.sync()`` and the route.

Errors: ``SimApiError`` becomes its status and body; malformed JSON bodies 400
``{"code":40010000,"message":"request body format is invalid"}``; anything unexpected 500
``{"code":50010000,"message":"internal server error"}`` (logged as ``sim_request_failed``).

The market-data streams ``/v2/iex``, ``/v2/sip`` and ``/v2/test`` (:mod:`simulator.data_stream`)
and the trading stream ``/stream`` (:mod:`simulator.trade_stream`) skip steps 2-4: a websocket
upgrade carries no ``APCA-*`` headers and authenticates in-band.

The control API under ``/_sim/v1/`` (state, shock, gap, faults, clock, ``streams/drop``:
close every open stream connection, answering ``{"dropped": N}``) needs the same key
pair as the trading API whenever one is configured (401 ``{"code":40110000,...}`` without it:
a web page in a local browser must not be able to POST a shock); it is exempt from rate
limiting and faults.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping

import structlog
from aiohttp import web

from simulator.control_cli import MAX_SPEED, is_loopback
from simulator.core import SimulatorCore
from simulator.data_stream import DATA_STREAMS, STREAM_PATHS, DataStreams
from simulator.errors import SimApiError
from simulator.faults import FaultConfig, FaultInjector
from simulator.stream_hub import STREAM_HUB, StreamHub
from simulator.trade_stream import TRADE_STREAM_PATH, TradeStreams

log = structlog.get_logger(__name__)

__all__ = ["RateLimiter", "RunningServer", "create_app", "is_loopback", "json_response", "start_server"]

CONTROL_PREFIX = "/_sim/"
DEFAULT_RATE_LIMIT = 200  # Alpaca's trading API: 200 requests per minute per key
DATA_PREFIXES = ("/v2/stocks", "/v1beta1/")
JSON_TYPE = "application/json"

_UNAUTHORIZED = {"code": 40110000, "message": "request is not authorized"}
_DATA_UNAUTHORIZED = {"message": "access key verification failed"}
_RATE_LIMITED = {"code": 42910000, "message": "rate limit exceeded"}
_BAD_BODY = {"code": 40010000, "message": "request body format is invalid"}
_INTERNAL = {"code": 50010000, "message": "internal server error"}
_UNAVAILABLE = {"code": 50310000, "message": "service unavailable"}
_NOT_FOUND = {"code": 40410000, "message": "endpoint not found"}
_METHOD_NOT_ALLOWED = {"code": 40510000, "message": "method not allowed"}

Payload = Any
Params = dict[str, str]


# ---------------------------------------------------------------------------------------
# Small parts: JSON responses, body parsing, the rate limiter
# ---------------------------------------------------------------------------------------


def _dumps(payload: Payload) -> bytes:
    return json.dumps(payload, separators=(",", ":"), default=str).encode()


def json_response(payload: Payload, status: int = 200) -> web.Response:
    """A JSON response with compact separators (no content negotiation needed)."""
    return web.Response(body=_dumps(payload), status=status, content_type=JSON_TYPE)


class BadRequest(Exception):
    """A request the simulator cannot read; answered 400 with ``body``."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body.get("message", "bad request"))
        self.body = body


async def _json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; 400 when it is not valid JSON or not an object."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest(dict(_BAD_BODY)) from None
    if not isinstance(body, dict):
        raise BadRequest(dict(_BAD_BODY))
    return body


def _params(request: web.Request) -> Params:
    """Query parameters as a plain dict (the last value wins for repeated keys)."""
    return {key: value for key, value in request.query.items()}


@dataclass
class RateLimiter:
    """Sliding-window request limiter: ``limit`` requests per ``window_s`` per bucket.

    ``monotonic`` measures the window (real seconds); ``wall`` dates ``X-RateLimit-Reset``
    (UNIX seconds) and ``rate`` converts the real seconds left into seconds of that clock.
    The server dates it by the simulator's clock at its speed: a client that follows the
    broker's clock (``broker_clock.BrokerClock``, as the daemon does on loopback) then waits
    exactly until the window reopens. Requests refused with 429 do not count against it.
    """

    limit: int
    window_s: float = 60.0
    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    rate: Callable[[], float] = lambda: 1.0
    _hits: dict[tuple[str, str], deque[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"rate limit {self.limit!r}: must be at least 1 request per minute")

    def peek(self, bucket: tuple[str, str]) -> dict[str, str]:
        """The X-RateLimit-* headers for ``bucket`` without counting a request."""
        now = self.monotonic()
        hits = self._hits.get(bucket) or deque()
        live = [t for t in hits if t > now - self.window_s]
        wait = max(0.0, live[0] + self.window_s - now) if live else 0.0
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, self.limit - len(live))),
            "X-RateLimit-Reset": str(math.ceil(self.wall() + wait * self.rate())),
        }

    def hit(self, bucket: tuple[str, str]) -> tuple[bool, dict[str, str]]:
        """Record one request; returns (allowed, X-RateLimit-* headers). A refusal carries
        the same three headers (``Remaining: 0``, ``Reset``: when the oldest request leaves
        the window) and no ``Retry-After``: Alpaca documents and sends only ``X-RateLimit-*``."""
        now = self.monotonic()
        hits = self._hits.get(bucket)
        if hits is None:
            hits = self._hits[bucket] = deque()
        horizon = now - self.window_s
        while hits and hits[0] <= horizon:
            hits.popleft()
        allowed = len(hits) < self.limit
        if allowed:
            hits.append(now)
        wait = max(0.0, hits[0] + self.window_s - now) if hits else 0.0
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, self.limit - len(hits))),
            "X-RateLimit-Reset": str(math.ceil(self.wall() + wait * self.rate())),
        }
        return allowed, headers


# ---------------------------------------------------------------------------------------
# Application state and middleware
# ---------------------------------------------------------------------------------------


@dataclass
class _ServerState:
    core: SimulatorCore
    key: str | None
    secret: str | None
    limiter: RateLimiter | None
    shutdown: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def faults(self) -> FaultInjector:
        return self.core.faults


STATE: web.AppKey[_ServerState] = web.AppKey("sim_state", _ServerState)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _authorized(state: _ServerState, request: web.Request) -> bool:
    if state.key is None:
        return True
    headers = request.headers
    return (
        headers.get("APCA-API-KEY-ID") == state.key
        and headers.get("APCA-API-SECRET-KEY") == state.secret
    )


async def _call(handler: Handler, request: web.Request) -> web.StreamResponse:
    """Run the route, translating simulator and HTTP errors into Alpaca-shaped JSON."""
    try:
        return await handler(request)
    except SimApiError as exc:
        return json_response(exc.body, exc.status)
    except BadRequest as exc:
        return json_response(exc.body, 400)
    except web.HTTPNotFound:
        return json_response(_NOT_FOUND, 404)
    except web.HTTPMethodNotAllowed:
        return json_response(_METHOD_NOT_ALLOWED, 405)
    except web.HTTPException as exc:
        return json_response({"code": exc.status * 100000, "message": exc.reason.lower()}, exc.status)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("sim_request_failed", method=request.method, path=request.path)
        return json_response(_INTERNAL, 500)


async def _hold_then_drop(state: _ServerState, request: web.Request) -> web.Response:
    """Keep the client waiting past its timeout, then drop the connection unanswered."""
    try:
        await asyncio.wait_for(state.shutdown.wait(), state.faults.config.timeout_s)
    except asyncio.TimeoutError:
        pass
    return _drop(request)


def _drop(request: web.Request) -> web.Response:
    """Abort the connection: the client sees a reset/disconnect and no response."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    return web.Response(status=200)


def _truncated(response: web.StreamResponse) -> web.Response:
    body = response.body if isinstance(response, web.Response) else None
    raw = bytes(body) if isinstance(body, (bytes, bytearray)) and body else b'{"code":'
    cut = raw[: max(1, len(raw) // 2)]
    if cut == raw:
        cut = raw[:-1] or b"{"
    return web.Response(body=cut, status=200, content_type=JSON_TYPE)


def _run_race(state: _ServerState, request: web.Request, mode: str) -> None:
    """The ``race`` fault: the market fills or cancels the order before this cancel/replace."""
    core = state.core
    core.sync()
    outcome = core.broker.race(request.match_info.get("order_id", ""), mode)
    if outcome is not None:
        state.faults.note_race()
        log.info("sim_fault_injected", fault="race", method=request.method, path=request.path,
                 outcome=outcome)


RACED_KEY = "sim_raced_order_ids"


def _run_cancel_all_races(state: _ServerState, request: web.Request) -> None:
    """The ``race`` fault on ``DELETE /v2/orders``: each open order draws the race as its own
    ``DELETE /v2/orders/{id}`` would; the ids the market beat are left on the request for the
    cancel-all handler, which answers them with Alpaca's 422 item."""
    core = state.core
    core.sync()
    raced: list[str] = []
    for order in core.broker.open_orders_snapshot():
        mode = state.faults.choose_race("DELETE", f"/v2/orders/{order.id}")
        if mode is None:
            continue
        outcome = core.broker.race(order.id, mode)
        if outcome is not None:
            state.faults.note_race()
            raced.append(order.id)
            log.info("sim_fault_injected", fault="race", method=request.method, path=request.path,
                     order_id=order.id, outcome=outcome)
    request[RACED_KEY] = raced


def _fault_rate_limit_headers(state: _ServerState) -> dict[str, str]:
    """Alpaca's ``X-RateLimit-*`` headers for an injected 429: nothing left, and the window
    reopens one second later on the simulator's clock (the clock its clients follow, as
    :class:`RateLimiter` dates its own resets; a wall-clock epoch would be months away from
    a replayed day's "now"). Alpaca sends no ``Retry-After``, so neither does the simulator."""
    limit = state.limiter.limit if state.limiter is not None else DEFAULT_RATE_LIMIT
    reset = math.ceil(state.core.clock.now().timestamp() + 1)
    return {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)}


async def _with_faults(
    state: _ServerState, handler: Handler, request: web.Request
) -> web.StreamResponse:
    faults = state.faults
    path = request.path
    delay = faults.latency_seconds(path)
    if delay > 0:
        await asyncio.sleep(delay)
    if request.method == "DELETE" and path == "/v2/orders" and faults.config.race > 0:
        _run_cancel_all_races(state, request)
    race = faults.choose_race(request.method, path)
    if race is not None:
        _run_race(state, request, race)
    kind = faults.choose(request.method, path)
    if kind is None:
        return await _call(handler, request)
    log.info("sim_fault_injected", fault=kind, method=request.method, path=path)
    if kind == "error_rate":
        status = faults.status_for_error()
        return json_response(_UNAVAILABLE if status == 503 else _INTERNAL, status)
    if kind == "rate_limit":
        response = json_response(_RATE_LIMITED, 429)
        response.headers.update(_fault_rate_limit_headers(state))
        return response
    if kind == "timeout":
        return await _hold_then_drop(state, request)
    if kind == "reset":
        return _drop(request)
    if kind == "malformed":
        return _truncated(await _call(handler, request))
    # accept_then_timeout: the order is processed, the answer is lost.
    await _call(handler, request)
    return await _hold_then_drop(state, request)


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE]
    request_id = uuid.uuid4().hex
    path = request.path
    if path == TRADE_STREAM_PATH or path in STREAM_PATHS:  # websockets authenticate in-band, after the upgrade
        return await handler(request)
    if path.startswith(CONTROL_PREFIX):
        if _authorized(state, request):
            response = await _call(handler, request)
        else:
            response = json_response(_UNAUTHORIZED, 401)
        response.headers["X-Request-ID"] = request_id
        return response

    is_data = path.startswith(DATA_PREFIXES)
    headers: Mapping[str, str] = {}
    limiter = state.limiter
    bucket = (request.headers.get("APCA-API-KEY-ID", ""), "data" if is_data else "trading")
    if not _authorized(state, request):
        # Refused requests do not count against the key's window (someone else may hold it).
        response = json_response(_DATA_UNAUTHORIZED if is_data else _UNAUTHORIZED, 401)
        if limiter is not None:
            headers = limiter.peek(bucket)
    else:
        allowed = True
        if limiter is not None:
            allowed, headers = limiter.hit(bucket)
        if not allowed:
            response = json_response(_RATE_LIMITED, 429)
        elif state.faults.active:
            response = await _with_faults(state, handler, request)
        else:
            response = await _call(handler, request)
    response.headers["X-Request-ID"] = request_id
    for name, value in headers.items():
        response.headers.setdefault(name, value)  # an injected 429 keeps its own
    return response


# ---------------------------------------------------------------------------------------
# Routes
# ---------------------------------------------------------------------------------------


def _route(
    fn: Callable[[SimulatorCore, web.Request], Awaitable[Payload]], status: int = 200
) -> Handler:
    """Wrap ``fn(core, request) -> payload`` as a handler that syncs the core first."""

    async def handler(request: web.Request) -> web.StreamResponse:
        core = request.app[STATE].core
        core.sync()
        payload = await fn(core, request)
        if status == 204 or payload is None:
            return web.Response(status=204)
        return json_response(payload, status)

    return handler


def _trading_routes() -> list[tuple[str, str, Handler]]:
    async def account(core: SimulatorCore, r: web.Request) -> Payload:
        return core.broker.get_account()

    async def configurations(core: SimulatorCore, r: web.Request) -> Payload:
        return core.broker.get_account_configurations()

    async def patch_configurations(core: SimulatorCore, r: web.Request) -> Payload:
        return core.broker.patch_account_configurations(await _json_body(r))

    async def clock(core: SimulatorCore, r: web.Request) -> Payload:
        return core.broker.clock_json()

    async def calendar(core: SimulatorCore, r: web.Request) -> Payload:
        return core.broker.calendar(_params(r))

    async def assets(core: SimulatorCore, r: web.Request) -> Payload:
        return core.broker.assets(_params(r))

    async def asset(core: SimulatorCore, r: web.Request) -> Payload:
        return core.broker.asset(r.match_info["symbol"])

    async def list_orders(core: SimulatorCore, r: web.Request) -> Payload:
        return core.broker.list_orders(_params(r))

    async def submit_order(core: SimulatorCore, r: web.Request) -> Payload:
        return core.broker.submit_order(await _json_body(r))

    async def cancel_all(core: SimulatorCore, r: web.Request) -> Payload:
        return core.broker.cancel_all(raced=r.get(RACED_KEY, ()))

    async def get_order(core: SimulatorCore, r: web.Request) -> Payload:
        return core.broker.get_order(r.match_info["order_id"], _params(r))

    async def replace_order(core: SimulatorCore, r: web.Request) -> Payload:
        return core.broker.replace_order(r.match_info["order_id"], await _json_body(r))

    async def cancel_order(core: SimulatorCore, r: web.Request) -> Payload:
        core.broker.cancel_order(r.match_info["order_id"])
        return None

    async def order_by_client_id(core: SimulatorCore, r: web.Request) -> Payload:
        return core.broker.get_order_by_client_id(_params(r))

    async def list_positions(core: SimulatorCore, r: web.Request) -> Payload:
        return core.broker.list_positions()

    async def close_all(core: SimulatorCore, r: web.Request) -> Payload:
        return core.broker.close_all(_params(r))

    async def get_position(core: SimulatorCore, r: web.Request) -> Payload:
        return core.broker.get_position(r.match_info["symbol"])

    async def close_position(core: SimulatorCore, r: web.Request) -> Payload:
        return core.broker.close_position(r.match_info["symbol"], _params(r))

    async def activities(core: SimulatorCore, r: web.Request) -> Payload:
        return core.broker.activities(_params(r))

    async def activities_of_type(core: SimulatorCore, r: web.Request) -> Payload:
        params = _params(r)
        params["activity_types"] = r.match_info["activity_type"]
        return core.broker.activities(params)

    async def portfolio_history(core: SimulatorCore, r: web.Request) -> Payload:
        return core.broker.portfolio_history(_params(r))

    return [
        ("GET", "/v2/account", _route(account)),
        ("GET", "/v2/account/configurations", _route(configurations)),
        ("PATCH", "/v2/account/configurations", _route(patch_configurations)),
        ("GET", "/v2/account/activities", _route(activities)),
        ("GET", "/v2/account/activities/{activity_type}", _route(activities_of_type)),
        ("GET", "/v2/account/portfolio/history", _route(portfolio_history)),
        ("GET", "/v2/clock", _route(clock)),
        ("GET", "/v2/calendar", _route(calendar)),
        ("GET", "/v2/assets", _route(assets)),
        ("GET", "/v2/assets/{symbol}", _route(asset)),
        ("GET", "/v2/orders", _route(list_orders)),
        ("POST", "/v2/orders", _route(submit_order)),
        ("DELETE", "/v2/orders", _route(cancel_all, 207)),
        ("GET", "/v2/orders:by_client_order_id", _route(order_by_client_id)),
        ("GET", "/v2/orders/{order_id}", _route(get_order)),
        ("PATCH", "/v2/orders/{order_id}", _route(replace_order)),
        ("DELETE", "/v2/orders/{order_id}", _route(cancel_order, 204)),
        ("GET", "/v2/positions", _route(list_positions)),
        ("DELETE", "/v2/positions", _route(close_all, 207)),
        ("GET", "/v2/positions/{symbol}", _route(get_position)),
        ("DELETE", "/v2/positions/{symbol}", _route(close_position)),
    ]


def _data_routes() -> list[tuple[str, str, Handler]]:
    def multi(method: str) -> Handler:
        async def fn(core: SimulatorCore, r: web.Request) -> Payload:
            return getattr(core.data, method)(_params(r))

        return _route(fn)

    def single(method: str) -> Handler:
        async def fn(core: SimulatorCore, r: web.Request) -> Payload:
            return getattr(core.data, method)(r.match_info["symbol"], _params(r))

        return _route(fn)

    return [
        ("GET", "/v2/stocks/bars", multi("bars")),
        ("GET", "/v2/stocks/bars/latest", multi("latest_bars")),
        ("GET", "/v2/stocks/quotes/latest", multi("latest_quotes")),
        ("GET", "/v2/stocks/trades/latest", multi("latest_trades")),
        ("GET", "/v2/stocks/snapshots", multi("snapshots")),
        ("GET", "/v2/stocks/{symbol}/bars", single("symbol_bars")),
        ("GET", "/v2/stocks/{symbol}/bars/latest", single("symbol_latest_bar")),
        ("GET", "/v2/stocks/{symbol}/quotes/latest", single("symbol_latest_quote")),
        ("GET", "/v2/stocks/{symbol}/trades/latest", single("symbol_latest_trade")),
        ("GET", "/v2/stocks/{symbol}/snapshot", single("symbol_snapshot")),
        ("GET", "/v1beta1/news", multi("news")),
    ]


# ---------------------------------------------------------------------------------------
# Control API
# ---------------------------------------------------------------------------------------


def _bad(message: str) -> BadRequest:
    return BadRequest({"code": 40010000, "message": message})


def _symbols_field(body: Mapping[str, Any]) -> list[str] | str:
    if "symbols" not in body:
        raise _bad('field "symbols" is required: a list of symbols or "*"')
    symbols = body["symbols"]
    if symbols == "*":
        return "*"
    if isinstance(symbols, str):
        symbols = [s.strip() for s in symbols.split(",") if s.strip()]
    if (
        not isinstance(symbols, list)
        or not symbols
        or not all(isinstance(s, str) and s for s in symbols)
    ):
        raise _bad('field "symbols" must be a non-empty list of symbols or "*"')
    return symbols


def _number_field(body: Mapping[str, Any], name: str) -> float:
    if name not in body:
        raise _bad(f'field "{name}" is required: a number')
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad(f'field "{name}" must be a finite number, got {value!r}')
    return float(value)


def _control_routes() -> list[tuple[str, str, Handler]]:
    async def state(request: web.Request) -> web.StreamResponse:
        core = request.app[STATE].core
        core.sync()
        return json_response(core.state())

    async def shock(request: web.Request) -> web.StreamResponse:
        core = request.app[STATE].core
        body = await _json_body(request)
        symbols = _symbols_field(body)
        pct = _number_field(body, "pct")
        core.sync()
        try:
            result = core.shock(symbols, pct)
        except ValueError as exc:
            raise _bad(str(exc)) from None
        return json_response(result)

    async def gap(request: web.Request) -> web.StreamResponse:
        core = request.app[STATE].core
        body = await _json_body(request)
        symbols = _symbols_field(body)
        pct = _number_field(body, "pct")
        core.sync()
        try:
            result = core.gap(symbols, pct)
        except ValueError as exc:
            raise _bad(str(exc)) from None
        return json_response(result)

    async def faults(request: web.Request) -> web.StreamResponse:
        core = request.app[STATE].core
        body = await _json_body(request)
        try:
            if body.get("clear") is True and len(body) == 1:
                core.faults.clear()
            elif "spec" in body:
                if len(body) != 1 or not isinstance(body["spec"], str):
                    raise _bad('field "spec" must be a string and come alone')
                core.faults.configure(FaultConfig.parse(body["spec"]))
            elif "clear" in body:
                raise _bad('field "clear" must be true and come alone')
            else:
                core.faults.configure(FaultConfig.from_mapping(body))
        except ValueError as exc:
            raise _bad(str(exc)) from None
        log.info("sim_faults_configured", spec=core.faults.config.to_spec())
        return json_response(
            {"fault_config": core.faults.config.to_dict(), "faults": dict(core.faults.counts)}
        )

    async def clock(request: web.Request) -> web.StreamResponse:
        core = request.app[STATE].core
        body = await _json_body(request)
        if not body or not set(body) <= {"advance_minutes", "speed"}:
            raise _bad('body needs "advance_minutes" (a number) and/or "speed" (a number or "max")')
        core.sync()
        if "speed" in body:
            speed = body["speed"]
            if speed == "max" or speed is None:
                core.set_speed(None)
            elif isinstance(speed, bool) or not isinstance(speed, (int, float)) or not (
                math.isfinite(speed) and 0 < speed <= MAX_SPEED
            ):
                raise _bad(f'field "speed" must be a number > 0 and <= {MAX_SPEED:g}, or "max", '
                           f'got {speed!r}')
            else:
                core.set_speed(float(speed))
        if "advance_minutes" in body:
            minutes = _number_field(body, "advance_minutes")
            if minutes < 0:
                raise _bad(f'field "advance_minutes" must not be negative, got {minutes:g}')
            core.advance(minutes)
        return json_response(core.state())

    async def drop_streams(request: web.Request) -> web.StreamResponse:
        dropped = await request.app[STREAM_HUB].drop_all()
        log.info("sim_streams_dropped", connections=dropped)
        return json_response({"dropped": dropped})

    return [
        ("POST", "/_sim/v1/streams/drop", drop_streams),
        ("GET", "/_sim/v1/state", state),
        ("POST", "/_sim/v1/shock", shock),
        ("POST", "/_sim/v1/gap", gap),
        ("POST", "/_sim/v1/faults", faults),
        ("POST", "/_sim/v1/clock", clock),
    ]


# ---------------------------------------------------------------------------------------
# Application and embedding
# ---------------------------------------------------------------------------------------


def create_app(
    core: SimulatorCore,
    *,
    key: str | None = None,
    secret: str | None = None,
    faults: FaultConfig | None = None,
    rate_limit_per_minute: int | None = DEFAULT_RATE_LIMIT,
    stream_connections: int = 1,
) -> web.Application:
    """The aiohttp application serving ``core``.

    ``key``/``secret``: require this key pair (both or neither). ``faults``: replaces the
    core's fault configuration. ``rate_limit_per_minute=None`` disables the rate limit.
    ``stream_connections``: authenticated market-data stream connections per key and
    endpoint (Alpaca's plans: 1; more answer 406).
    """
    if (key is None) != (secret is None):
        raise ValueError("key and secret must be given together (or neither)")
    if key is not None and (not key or not secret):
        raise ValueError("key and secret must be non-empty strings")
    if faults is not None:
        core.faults.configure(faults)
    limiter = None
    if rate_limit_per_minute is not None:
        clock = core.clock
        limiter = RateLimiter(rate_limit_per_minute, wall=lambda: clock.now().timestamp(),
                              rate=lambda: clock.speed or 1.0)
    app = web.Application(middlewares=[_middleware], client_max_size=1024 * 1024)
    state = _ServerState(core=core, key=key, secret=secret, limiter=limiter)
    app[STATE] = state
    app[STREAM_HUB] = StreamHub()
    data_streams = app[DATA_STREAMS] = DataStreams(core, key=key, secret=secret,
                                                   connection_limit=stream_connections)
    trade_streams = TradeStreams(core, app[STREAM_HUB], key=key, secret=secret)

    async def on_shutdown(_app: web.Application) -> None:
        state.shutdown.set()
        await _app[STREAM_HUB].drop_all()

    app.on_startup.append(trade_streams.start)
    app.on_shutdown.append(on_shutdown)
    app.on_shutdown.append(trade_streams.close)
    for method, path, handler in (*_trading_routes(), *_data_routes(), *_control_routes(),
                                  *trade_streams.routes(), *data_streams.routes()):
        app.router.add_route(method, path, handler)
    return app


@dataclass
class RunningServer:
    """A simulator server listening on ``base_url`` (no trailing slash); ``await stop()``."""

    base_url: str
    host: str
    port: int
    app: web.Application
    _runner: web.AppRunner

    async def stop(self) -> None:
        """Stop listening, release held requests, close connections."""
        await self._runner.cleanup()
        log.info("sim_server_stopped", base_url=self.base_url)


async def start_server(
    core: SimulatorCore,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    allow_remote: bool = False,
    **kw: Any,
) -> RunningServer:
    """Serve ``core`` on ``host:port`` (``port=0`` picks a free port) in the running loop.

    Refuses a non-loopback ``host`` unless ``allow_remote``. ``kw`` goes to :func:`create_app`.
    """
    if not allow_remote and not is_loopback(host):
        raise ValueError(
            f"host {host!r} is not a loopback address; the simulator binds 127.0.0.1 "
            "unless remote access is explicitly allowed"
        )
    app = create_app(core, **kw)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = runner.addresses[0][1] if runner.addresses else port
    shown_host = f"[{host}]" if ":" in host else host
    base_url = f"http://{shown_host}:{bound_port}"
    log.info("sim_server_started", base_url=base_url)
    return RunningServer(base_url=base_url, host=host, port=bound_port, app=app, _runner=runner)
