"""ResilientAlpacaGateway: the daemon's only door to Alpaca (paper, live, or the simulator).

What it guarantees, so the rest of the daemon does not have to think about HTTP:

* :meth:`ResilientAlpacaGateway.request` never raises for HTTP, network or JSON problems: it
  returns an :class:`broker.models.ApiResponse`. Every 2xx is success (204 empty, 207 parsed item by
  item). Timeouts, resets, 5xx and 429 are retried with exponential backoff and jitter
  (``Retry-After`` / ``X-RateLimit-Reset`` honoured); 4xx business errors never are. Every
  backoff waits in wall time (the injected ``sleep``, ``asyncio.sleep`` by default), never on
  a clock that asks the broker, so a retry can never nest inside another retry.
* The typed methods (the :class:`broker.interface.Broker` protocol and a few extras) raise core/errors.py
  exceptions only.
* Orders are idempotent: every submission carries a ``client_order_id``; a POST whose outcome
  is unknown is looked up by that id before it is sent again (with the same id), and an
  unresolved one is :class:`core.errors.OrderInFlight`, never a rejection.
* Requests pass a token bucket that keeps a reserve for cancels, closes and emergency exits.
* Market data is checked: stale, zero and crossed quotes are dropped (one warning per symbol
  per minute); a free plan's SIP refusal falls back to IEX once and remembers it.
* Parsing is tolerant (see broker/models.py): one unusable item of a list (an order, a position,
  a bar, a symbol's quote ...) is dropped with an ERROR ``broker_item_dropped``, counted in
  :attr:`ResilientAlpacaGateway.dropped_items` and passed to ``on_item_dropped`` (the loop's
  alert hook); the rest of the list stands.
* Plain HTTP is refused for anything but loopback, the live URL needs the live opt-in, and
  the API keys never appear in a log line, an exception or ``repr(gateway)``.

This module is the public face: the URL and key checks, the typed methods and their
signatures. The gateway owns one of each of the parts that do the work, each its own module
in ``broker/``: :class:`broker.transport.HttpTransport` (session, retries and backoff,
``Retry-After`` and ``X-RateLimit-*``, the body size cap, response building, redaction),
:class:`broker.parsing.TolerantParser` (models from JSON, dropped items counted),
:class:`broker.order_desk.OrderDesk` (submit, replace and close with unknown outcomes resolved)
and :class:`broker.market_data_client.MarketDataClient` (batched market data, SIP fallback,
quality checks). Error mapping is :mod:`broker.broker_errors`. Every typed call, the desk's and
the market data client's included, is sent through :meth:`ResilientAlpacaGateway.request`
(which hands it to the transport): the one method an in-process broker replaces.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any
from urllib.parse import quote as urlquote

import aiohttp
import structlog
import yarl
from pydantic import SecretStr

from core import clock as clock_module
from core import errors
from config import has_url_credentials, load_settings, normalise_host, redact_url
from broker.models import (
    Account,
    Activity,
    ApiResponse,
    Asset,
    Bar,
    CalendarDay,
    Clock,
    DroppedItem,
    MultiStatusItem,
    NewsArticle,
    Order,
    OrderRequest,
    Position,
    Quote,
    Snapshot,
    Trade,
    decimal_text,
)
from broker.market_data_client import MarketDataClient, unique_symbols
from broker.embedded_sim import EmbeddedSimulator, gateway_arguments
from broker.order_desk import OrderDesk, make_client_order_id
from broker.parsing import TolerantParser
from broker.rate_limit import RateLimiter
from broker.transport import HttpTransport

log = structlog.get_logger(__name__)

LIVE_TRADING_HOST = "api.alpaca.markets"
MODES = ("sim", "paper", "live", "backtest")


def encode_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Query parameters as Alpaca expects them: None dropped, booleans ``true``/``false``,
    lists comma-joined, datetimes RFC 3339 UTC (aware only), decimals in plain notation."""
    out: dict[str, str] = {}
    for key, value in params.items():
        if value is None:
            continue
        out[key] = _param_text(key, value)
    return out


def _param_text(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return clock_module.utc(value).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, Iterable):
        return ",".join(_param_text(key, item) for item in value)
    raise TypeError(f"query parameter {key!r} has unsupported type {type(value).__name__}")


def _is_loopback(host: str) -> bool:
    """Loopback by name or address, whatever the spelling (case, brackets, trailing dot)."""
    host = normalise_host(host)
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _checked_url(url: str, what: str, mode: str, live_enabled: bool) -> str:
    """``url`` without a trailing slash (or ``/v2``), or UnsafeEndpoint naming the problem."""
    if isinstance(url, str) and has_url_credentials(url):
        raise errors.UnsafeEndpoint(f"{what} must not contain credentials; use the key settings")
    try:
        parsed = yarl.URL(url)
    except (TypeError, ValueError):
        raise errors.UnsafeEndpoint(f"{what} is not a valid URL") from None
    if parsed.user or parsed.password:
        raise errors.UnsafeEndpoint(f"{what} must not contain credentials; use the key settings")
    shown = redact_url(url)  # a query string may hold a pasted key: never echoed
    host = normalise_host(parsed.host)
    scheme = (parsed.scheme or "").lower()
    if scheme not in ("http", "https") or not host:
        raise errors.UnsafeEndpoint(f"{what} {shown!r} is not an http(s) URL with a host")
    if scheme != "https" and not _is_loopback(host):
        raise errors.UnsafeEndpoint(
            f"{what} {shown!r} uses plain HTTP to a non-loopback host; HTTPS is required"
        )
    if host == LIVE_TRADING_HOST and not (mode == "live" and live_enabled):
        raise errors.UnsafeEndpoint(
            f"{what} is the LIVE trading host {LIVE_TRADING_HOST}; refused unless mode is "
            f"'live' and live trading is explicitly enabled (mode={mode!r}, "
            f"live_enabled={live_enabled})"
        )
    text = str(parsed.with_query(None).with_fragment(None)).rstrip("/")
    if text.endswith("/v2"):
        text = text[: -len("/v2")]
    return text


class ResilientAlpacaGateway:
    """The :class:`broker.interface.Broker` over HTTP, with retries, rate limiting and data checks.

    Use as an async context manager (it owns one aiohttp session unless one is injected)::

        async with ResilientAlpacaGateway(base_url=..., data_url=..., key_id=..., secret_key=...) as gw:
            account = await gw.get_account()

    ``clock`` is the injected time source (quote age); ``sleep`` is used for retry backoff
    (injectable so tests never wait); ``wall_time`` (UNIX seconds) dates the broker's
    ``X-RateLimit-Reset`` and ``Retry-After``. ``sleep`` must wait in wall time (or in an in-process
    simulator's own time), never on a clock that reads the broker: the broker-following
    clock's every read is itself a request, and a backoff on it nested retries inside
    retries. ``X-RateLimit-Reset`` and ``Retry-After`` dates are read against the wall clock,
    as the broker stamps them.
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        data_url: str | None = None,
        key_id: str | SecretStr | None = None,
        secret_key: str | SecretStr | None = None,
        mode: str = "paper",
        live_enabled: bool = False,
        timeout: float = 10,
        max_retries: int = 3,
        backoff_base: float = 0.5,
        backoff_max: float = 30,
        rate_limiter: RateLimiter | None = None,
        max_quote_age: float = 900,
        data_feed: str | None = "iex",
        clock: clock_module.Clock | None = None,
        session: aiohttp.ClientSession | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        wall_time: Callable[[], float] = time.time,
    ) -> None:
        #: The simulator a no-argument gateway serves itself (sim mode), else None.
        self._embedded: EmbeddedSimulator | None = None
        if base_url is None and data_url is None:
            # The seed's ``ResilientAlpacaGateway()``: everything from the configuration
            # (environment, .env, credential store, TRADING_CONFIG), the simulator without keys.
            configured, embedded = gateway_arguments(load_settings())
            self.__init__(**{**configured, "session": session, "wall_time": wall_time})  # type: ignore[misc]
            self._embedded = embedded
            return
        problems = []
        if mode not in MODES:
            problems.append(f"mode {mode!r} is not one of {list(MODES)}")
        if timeout <= 0:
            problems.append(f"timeout must be positive, got {timeout}")
        if max_retries < 0:
            problems.append(f"max_retries must be >= 0, got {max_retries}")
        if backoff_base < 0 or backoff_max < backoff_base:
            problems.append(f"backoff needs 0 <= base <= max, got {backoff_base}/{backoff_max}")
        if max_quote_age <= 0:
            problems.append(f"max_quote_age must be positive, got {max_quote_age}")
        if problems:
            raise errors.ConfigError(problems)
        self.mode = mode
        self.live_enabled = live_enabled
        self.base_url = _checked_url(base_url, "trading API URL", mode, live_enabled)
        self.data_url = _checked_url(data_url, "market data URL", mode, live_enabled)
        key, secret = _secret(key_id), _secret(secret_key)
        if (key is None) != (secret is None):
            raise errors.ConfigError(["API key id and secret key must be given together"])
        if key is None and not _is_loopback(yarl.URL(self.base_url).host or ""):
            raise errors.ConfigError(
                [f"API key id and secret key are required for {yarl.URL(self.base_url).host}"]
            )
        self._max_retries = int(max_retries)
        self._clock: clock_module.Clock = clock if clock is not None else clock_module.WallClock()
        self._sleep: Callable[[float], Awaitable[None]] = sleep if sleep is not None else asyncio.sleep
        #: Reads broker JSON into models; counts the unusable items it drops.
        self.parser = TolerantParser()
        #: Sends every call: session, retries, rate limit, size cap, redaction.
        self.transport = HttpTransport(
            base_url=self.base_url, data_url=self.data_url, key_id=key, secret_key=secret,
            timeout=timeout, max_retries=max_retries, backoff_base=backoff_base,
            backoff_max=backoff_max,
            limiter=rate_limiter if rate_limiter is not None else RateLimiter(),
            parser=self.parser, session=session, sleep=self._sleep, wall_time=wall_time,
        )
        #: Market data endpoints, sent through :meth:`request`, with the data checked.
        self.market_data = MarketDataClient(self.request, self.parser, self._clock, max_quote_age,
                                            data_feed or None)
        self.pdt_blocked_symbols: set[str] = set()
        #: Submit, replace and close, with unknown outcomes resolved before any resend.
        self.orders = OrderDesk(self, parser=self.parser, clock=self._clock, sleep=self._sleep,
                                backoff=self.transport.backoff, max_retries=self._max_retries,
                                pdt_blocked_symbols=self.pdt_blocked_symbols)

    def stream_credentials(self) -> tuple[str, str] | None:
        """The key pair for the trading stream's in-band authentication (``engine.stream_feed``)."""
        return self.transport.credentials()

    def __repr__(self) -> str:
        return (
            f"ResilientAlpacaGateway(mode={self.mode!r}, base_url={self.base_url!r}, "
            f"data_url={self.data_url!r}, data_feed={self.data_feed!r}, "
            f"request_count={self.request_count})"
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> ResilientAlpacaGateway:
        self.transport.ensure_session()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session if this gateway created it (an injected one is left open)."""
        await self.transport.close()

    async def initialize(self) -> bool:
        """The seed's start-up call: serve the embedded simulator if this gateway has one,
        open the session and read the account. False (logged) when the broker cannot be used."""
        if self._embedded is not None:
            await self._embedded.start()
        self.transport.ensure_session()
        try:
            account = await self.get_account()
        except errors.TradingError as exc:
            log.error("gateway_initialize_failed", error=str(exc), base_url=self.base_url)
            return False
        log.info("gateway_initialized", mode=self.mode, base_url=self.base_url, equity=str(account.equity))
        return True

    async def shutdown(self) -> None:
        """The seed's stop call: close the session and stop the embedded simulator, if any."""
        await self.close()
        if self._embedded is not None:
            await self._embedded.stop()

    def reset_session_blocks(self) -> None:
        """Forget the symbols blocked by pattern-day-trading rejections (new session)."""
        self.pdt_blocked_symbols.clear()

    @property
    def rate_limiter(self) -> RateLimiter:
        return self.transport.limiter

    @property
    def data_feed(self) -> str | None:
        """The market data feed asked for (None: the account's default)."""
        return self.market_data.data_feed

    @property
    def data_rejections(self) -> dict[str, str]:
        """Symbols whose market data the last batched call dropped, with the reason (the loop
        counts them to alert on data that stays bad)."""
        return self.market_data.data_rejections

    @property
    def request_count(self) -> int:
        """HTTP requests sent since start (every attempt of every call)."""
        return self.transport.request_count

    @request_count.setter
    def request_count(self, value: int) -> None:
        self.transport.request_count = value

    @property
    def dropped_items(self) -> int:
        """Unusable broker items dropped from lists (and order legs) since start: the loop
        compares it between cycles (:class:`broker.parsing.TolerantParser`)."""
        return self.parser.dropped_items

    @property
    def on_item_dropped(self) -> Callable[[DroppedItem], None] | None:
        """The hook (the loop's alert) told of each dropped item; its failure never spreads."""
        return self.parser.on_item_dropped

    @on_item_dropped.setter
    def on_item_dropped(self, hook: Callable[[DroppedItem], None] | None) -> None:
        self.parser.on_item_dropped = hook

    # -- the raw request (sent by the transport) -------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data_api: bool = False,
        emergency: bool = False,
        idempotent: bool = True,
        max_retries: int | None = None,
    ) -> ApiResponse:
        """Send one API call with retries; returns an ApiResponse and never raises for
        HTTP, network or JSON problems.

        Retried: 429 always (the broker did not act), connection failures before sending,
        and, when ``idempotent``, timeouts, resets, 408 and 5xx. Never retried: other 4xx,
        malformed bodies, redirects. ``emergency`` calls may use the rate limiter's reserve.
        ``max_retries`` overrides the gateway's setting for this call (0: a single attempt).
        Every typed method sends through here (an in-process broker replaces just this).
        """
        return await self.transport.request(
            method, path, params=encode_params(params) if params else None, json=json,
            data_api=data_api, emergency=emergency, idempotent=idempotent, max_retries=max_retries,
        )

    def _build_response(
        self, method: str, path: str, status: int, headers: Mapping[str, str], payload: bytes
    ) -> ApiResponse:
        """The transport's reading of one answer (for an in-process broker's refusals)."""
        return self.transport.build_response(method, path, status, headers, payload)

    def _multi_status(self, data: Any, base: dict[str, Any]) -> ApiResponse:
        """The transport's reading of a decoded 207 body (for an in-process broker)."""
        return self.transport.multi_status(data, base)


    # -- typed-call plumbing ---------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        emergency: bool = False,
        for_order: bool = False,
    ) -> Any:
        response = await self.request(method, path, params=params, json=json, emergency=emergency)
        response.raise_for_error(for_order=for_order)
        return response.data

    # -- account, clock, calendar, assets --------------------------------------------------

    async def get_account(self) -> Account:
        return self.parser.parse(Account, await self._call("GET", "/v2/account"), "GET /v2/account")

    async def get_clock(self) -> Clock:
        return self.parser.parse(Clock, await self._call("GET", "/v2/clock"), "GET /v2/clock")

    async def read_clock_once(self) -> Clock:
        """``GET /v2/clock`` with a single attempt and no backoff: for the broker-following
        clock, whose own loop decides when to read again (a retry inside it nested)."""
        response = await self.request("GET", "/v2/clock", max_retries=0)
        response.raise_for_error()
        return self.parser.parse(Clock, response.data, "GET /v2/clock")

    async def get_calendar(self, start: date, end: date) -> list[CalendarDay]:
        data = await self._call("GET", "/v2/calendar", params={"start": start, "end": end})
        return self.parser.parse_list(CalendarDay, data, "GET /v2/calendar")

    async def get_asset(self, symbol: str) -> Asset:
        path = f"/v2/assets/{urlquote(symbol, safe='')}"
        return self.parser.parse(Asset, await self._call("GET", path), f"GET {path}")

    async def list_assets(self, status: str = "active") -> list[Asset]:
        params = {"status": status, "asset_class": "us_equity"}
        return self.parser.parse_list(Asset, await self._call("GET", "/v2/assets", params=params),
                                "GET /v2/assets")

    # -- positions and orders --------------------------------------------------------------

    async def list_positions(self) -> list[Position]:
        return self.parser.parse_list(Position, await self._call("GET", "/v2/positions"),
                                "GET /v2/positions")

    async def get_position(self, symbol: str) -> Position | None:
        """The open position in ``symbol``, or None when there is none."""
        path = f"/v2/positions/{urlquote(symbol, safe='')}"
        try:
            data = await self._call("GET", path)
        except errors.NotFound:
            return None
        return self.parser.parse(Position, data, f"GET {path}")

    async def list_orders(
        self,
        status: str = "open",
        limit: int = 500,
        nested: bool = True,
        symbols: Sequence[str] | None = None,
        after: datetime | None = None,
        until: datetime | None = None,
        direction: str = "desc",
        side: str | None = None,
        *,
        emergency: bool = False,
    ) -> list[Order]:
        """Orders by status (``open``, ``closed``, ``all``); at most 500 (Alpaca's maximum)."""
        if not 1 <= limit <= 500:
            raise ValueError(f"limit must be 1-500, got {limit}")
        params = {
            "status": status, "limit": limit, "nested": nested,
            "symbols": unique_symbols(symbols) if symbols else None,
            "after": after, "until": until, "direction": direction, "side": side,
        }
        data = await self._call("GET", "/v2/orders", params=params, emergency=emergency)
        return self.parser.parse_list(Order, data, "GET /v2/orders")

    async def get_order(self, order_id: str, nested: bool = True, *, emergency: bool = False) -> Order:
        path = f"/v2/orders/{urlquote(order_id, safe='')}"
        data = await self._call("GET", path, params={"nested": nested}, emergency=emergency)
        return self.parser.parse(Order, data, f"GET {path}")

    async def get_order_by_client_id(
        self, client_order_id: str, *, emergency: bool = False
    ) -> Order | None:
        """The order with this ``client_order_id``, or None when the broker has none."""
        try:
            data = await self._call(
                "GET", "/v2/orders:by_client_order_id",
                params={"client_order_id": client_order_id}, emergency=emergency,
            )
        except errors.NotFound:
            return None
        return self.parser.parse(Order, data, "GET /v2/orders:by_client_order_id")

    async def submit_order(self, request: OrderRequest, *, emergency: bool = False) -> Order:
        """Submit an order exactly once, whatever the network does (:meth:`OrderDesk.submit_order`:
        an unknown outcome is looked up by ``client_order_id`` before the same body is resent;
        :class:`core.errors.OrderInFlight` when still unknown after all attempts)."""
        return await self.orders.submit_order(request, emergency=emergency)

    # submit helpers: bracket, OCO, OTO and trailing-stop orders are built with the
    # OrderRequest constructors (models.OrderRequest.bracket/oco/oto/trailing_stop) and sent
    # with submit_order; this shortcut covers the common legless order.

    async def submit_simple_order(
        self,
        symbol: str,
        qty: Decimal | int | str,
        side: str,
        *,
        type: str = "market",  # noqa: A002 - Alpaca's field name
        time_in_force: str = "day",
        limit_price: Decimal | str | None = None,
        stop_price: Decimal | str | None = None,
        extended_hours: bool | None = None,
        client_order_id: str | None = None,
        emergency: bool = False,
    ) -> Order:
        """A market/limit/stop/stop-limit order with no legs (see :meth:`submit_order`)."""
        request = OrderRequest.simple(
            symbol, qty, side, type=type, time_in_force=time_in_force, limit_price=limit_price,
            stop_price=stop_price, extended_hours=extended_hours, client_order_id=client_order_id,
        )
        return await self.submit_order(request, emergency=emergency)

    async def replace_order(
        self,
        order_id: str,
        qty: Decimal | None = None,
        limit_price: Decimal | None = None,
        stop_price: Decimal | None = None,
        trail: Decimal | None = None,
        time_in_force: str | None = None,
        client_order_id: str | None = None,
    ) -> Order:
        """PATCH an order; returns the NEW order (new id); see :meth:`OrderDesk.replace_order`."""
        return await self.orders.replace_order(order_id, qty, limit_price, stop_price, trail,
                                               time_in_force, client_order_id)

    async def cancel_order(self, order_id: str) -> None:
        """Cancel an order (204 is success).

        A 422 ``42210000`` ("order is already in \"filled\" state": the everyday race with
        bracket legs) is an outcome, not a failure: the order is re-read; already canceled
        (or canceling) is success, any other final state raises :class:`core.errors.OrderNotCancelable`
        carrying the re-read order in ``order`` (None if that read failed). An unknown or
        malformed id raises :class:`core.errors.NotFound`. Both are :class:`core.errors.OrderOutcome`.
        """
        path = f"/v2/orders/{urlquote(order_id, safe='')}"
        response = await self.request("DELETE", path, emergency=True)
        if response.success:
            return None
        problem = response.error()
        assert problem is not None
        if isinstance(problem, errors.OrderNotCancelable):
            try:
                order = await self.get_order(order_id, nested=False, emergency=True)
            except errors.BrokerError as exc:
                log.warning("order_lookup_failed", order_id=order_id, reason=str(exc))
                raise problem from None
            if order.status in ("canceled", "pending_cancel"):
                log.info("order_already_canceled", order_id=order_id, status=order.status)
                return None
            problem.order = order
        raise problem

    async def cancel_all_orders(self) -> list[MultiStatusItem]:
        """Cancel every open order (207: one item per order, check ``item.ok``)."""
        data = await self._call("DELETE", "/v2/orders", emergency=True)
        items = self._items(data, "DELETE /v2/orders")
        self._log_failed_items("cancel_all_orders", items)
        return items

    def _items(self, data: Any, where: str) -> list[MultiStatusItem]:
        if data is None:
            return []
        if isinstance(data, list) and all(isinstance(item, MultiStatusItem) for item in data):
            return list(data)
        return self.parser.parse_list(MultiStatusItem, data, where)

    def _log_failed_items(self, action: str, items: list[MultiStatusItem]) -> None:
        failed = [item for item in items if not item.ok]
        if failed:
            log.warning(
                "multi_status_failures",
                action=action,
                failed=len(failed),
                total=len(items),
                items=[{"id": i.id, "symbol": i.symbol, "status": i.status,
                        "message": (i.error.message if i.error else "")} for i in failed[:20]],
            )

    # closing positions ----------------------------------------------------------------------

    async def close_position(
        self,
        symbol: str,
        qty: Decimal | None = None,
        percentage: Decimal | None = None,
    ) -> Order:
        """Close all of a position (or ``qty`` shares, or ``percentage`` 0-100 of it) with a
        market order, an emergency call; see :meth:`OrderDesk.close_position`."""
        return await self.orders.close_position(symbol, qty, percentage)

    async def close_all_positions(self, cancel_orders: bool = True) -> list[MultiStatusItem]:
        """Close every position (first cancelling open orders by default); 207 items."""
        data = await self._call("DELETE", "/v2/positions",
                                params={"cancel_orders": cancel_orders}, emergency=True)
        items = self._items(data, "DELETE /v2/positions")
        self._log_failed_items("close_all_positions", items)
        return items

    # activities -------------------------------------------------------------------------

    async def get_activities(
        self,
        activity_types: Sequence[str] = ("FILL",),
        after: datetime | None = None,
        page_size: int = 100,
        *,
        direction: str = "asc",
    ) -> list[Activity]:
        """Account activities (fills by default), every page, oldest first by default."""
        if not 1 <= page_size <= 100:
            raise ValueError(f"page_size must be 1-100, got {page_size}")
        params: dict[str, Any] = {
            "activity_types": list(activity_types) or None,
            "after": after, "page_size": page_size, "direction": direction,
        }
        out: list[Activity] = []
        seen_tokens: set[str] = set()
        while True:
            data = await self._call("GET", "/v2/account/activities", params=params)
            page = self.parser.parse_list(Activity, data, "GET /v2/account/activities")
            out.extend(page)
            # Paging follows what the broker sent, not what parsed: a dropped item must
            # neither end the paging early nor lose the cursor.
            if not isinstance(data, list) or len(data) < page_size:
                return out
            token = _activity_cursor(data[-1]) or (page[-1].id if page else None)
            if token is None:
                raise errors.MalformedResponse(
                    "GET /v2/account/activities: a full page without a usable id to page on")
            if token in seen_tokens:
                raise errors.MalformedResponse("GET /v2/account/activities: pagination repeats")
            seen_tokens.add(token)
            params["page_token"] = token

    # -- market data (broker/market_data_client.py: batching, SIP fallback, data checks) ---

    async def get_bars(
        self,
        symbols: Sequence[str],
        timeframe: str = "1Day",
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int | None = None,
        feed: str | None = None,
        *,
        adjustment: str = "raw",
    ) -> dict[str, list[Bar]]:
        """Bars per symbol, oldest first, every page (:meth:`MarketDataClient.get_bars`)."""
        return await self.market_data.get_bars(symbols, timeframe, start, end, limit, feed,
                                               adjustment=adjustment)

    async def get_symbol_bars(
        self,
        symbol: str,
        timeframe: str = "1Day",
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int | None = None,
        feed: str | None = None,
        *,
        adjustment: str = "raw",
    ) -> list[Bar]:
        """Bars of one symbol, oldest first, every page (:meth:`MarketDataClient.get_symbol_bars`)."""
        return await self.market_data.get_symbol_bars(symbol, timeframe, start, end, limit, feed,
                                                      adjustment=adjustment)

    async def get_latest_quotes(self, symbols: Sequence[str]) -> dict[str, Quote]:
        """Latest quote per symbol; stale, zero and crossed quotes are dropped (and logged)."""
        return await self.market_data.get_latest_quotes(symbols)

    async def get_latest_quote(self, symbol: str) -> Quote | None:
        """Latest quote of one symbol, or None when it fails the quality checks."""
        return await self.market_data.get_latest_quote(symbol)

    async def get_latest_trades(self, symbols: Sequence[str]) -> dict[str, Trade]:
        """Latest trade per symbol (unknown symbols are absent)."""
        return await self.market_data.get_latest_trades(symbols)

    async def get_latest_trade(self, symbol: str) -> Trade | None:
        """Latest trade of one symbol, or None when there is none."""
        return await self.market_data.get_latest_trade(symbol)

    async def get_snapshots(self, symbols: Sequence[str]) -> dict[str, Snapshot]:
        """Snapshot per symbol; a latest quote failing the quality checks is set to None."""
        return await self.market_data.get_snapshots(symbols)

    async def get_snapshot(self, symbol: str) -> Snapshot:
        """Snapshot of one symbol (the quote is checked as in :meth:`get_snapshots`)."""
        return await self.market_data.get_snapshot(symbol)

    async def get_news(
        self, symbols: Sequence[str], start: datetime | None = None, limit: int = 50
    ) -> list[NewsArticle]:
        """Up to ``limit`` news articles about ``symbols``, newest first."""
        return await self.market_data.get_news(symbols, start, limit)



def _activity_cursor(raw: Any) -> str | None:
    """The ``id`` of a raw activity (Alpaca's page_token is the last item's id)."""
    if isinstance(raw, dict) and isinstance(raw.get("id"), str) and raw["id"]:
        return str(raw["id"])
    return None


def _secret(value: str | SecretStr | None) -> SecretStr | None:
    if value is None:
        return None
    secret = value if isinstance(value, SecretStr) else SecretStr(value)
    return secret if secret.get_secret_value() else None


__all__ = [
    "LIVE_TRADING_HOST",
    "ResilientAlpacaGateway",
    "encode_params",
    "make_client_order_id",
]

