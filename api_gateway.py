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
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote as urlquote

import aiohttp
import structlog
import yarl
from pydantic import BaseModel, SecretStr

from broker import broker_errors
from core import clock as clock_module
from core import errors
from config import has_url_credentials, normalise_host, redact_url
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
from broker.parsing import TolerantParser, mapping
from broker.rate_limit import RateLimiter
from broker.transport import HttpTransport
from market.market_data import price_problem

log = structlog.get_logger(__name__)

LIVE_TRADING_HOST = "api.alpaca.markets"
MODES = ("sim", "paper", "live", "backtest")
MAX_CLIENT_ORDER_ID_LENGTH = 48
SYMBOLS_PER_REQUEST = 100
# Latest quotes/trades and snapshots: one request for a whole universe of up to 500 symbols
# (about 3 KB of query string), so requests per cycle do not grow with the symbol count.
LATEST_SYMBOLS_PER_REQUEST = 500
BARS_PAGE_LIMIT = 10_000
NEWS_PAGE_LIMIT = 50
QUALITY_WARNING_INTERVAL = timedelta(minutes=1)
RECENT_ORDER_WINDOW = timedelta(seconds=30)
SIP_REFUSAL = "subscription does not permit"

_SAFE_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:\-]+$")
_UNSAFE_CLIENT_ID_CHARS = re.compile(r"[^A-Za-z0-9._:\-]")

M = TypeVar("M", bound=BaseModel)


def make_client_order_id(intent_id: str, attempt: int = 0) -> str:
    """A deterministic ``client_order_id`` (at most 48 characters) for one trade intent.

    The same ``(intent_id, attempt)`` always gives the same id, so a retry or a restart
    re-sends the same order instead of a duplicate. ``attempt`` > 0 is for a deliberate new
    order for the same intent (Alpaca refuses a reused id, even of a canceled order).
    Long or unusual intent ids are shortened with a SHA-256 digest of the whole id.
    """
    if not intent_id:
        raise ValueError("intent_id is empty")
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    suffix = f"~{attempt}" if attempt else ""
    if _SAFE_CLIENT_ID.match(intent_id) and len(intent_id) + len(suffix) <= MAX_CLIENT_ORDER_ID_LENGTH:
        return intent_id + suffix
    digest = hashlib.sha256(intent_id.encode("utf-8")).hexdigest()[:20]
    room = MAX_CLIENT_ORDER_ID_LENGTH - len(suffix) - len(digest) - 2
    prefix = _UNSAFE_CLIENT_ID_CHARS.sub("", intent_id)[: max(room, 0)]
    return f"{prefix}~h{digest}{suffix}"


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


def _unique_symbols(symbols: Sequence[str] | str) -> list[str]:
    if isinstance(symbols, str):
        symbols = [symbols]
    seen: dict[str, None] = {}
    for symbol in symbols:
        name = symbol.strip()
        if not name:
            raise ValueError("empty symbol in symbol list")
        seen.setdefault(name, None)
    return list(seen)


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for index in range(0, len(items), size):
        yield items[index : index + size]


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
        base_url: str,
        data_url: str,
        key_id: str | SecretStr | None,
        secret_key: str | SecretStr | None,
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
        self._max_quote_age = float(max_quote_age)
        self.data_feed = data_feed or None
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
        self._feed_fallback: set[str] = set()
        self._last_warning: dict[tuple[str, str], datetime] = {}
        # Symbols whose market data the last batched call dropped, with the reason (the loop
        # counts them to alert on data that stays bad).
        self.data_rejections: dict[str, str] = {}
        self.pdt_blocked_symbols: set[str] = set()

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

    def reset_session_blocks(self) -> None:
        """Forget the symbols blocked by pattern-day-trading rejections (new session)."""
        self.pdt_blocked_symbols.clear()

    @property
    def rate_limiter(self) -> RateLimiter:
        return self.transport.limiter

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
            "symbols": _unique_symbols(symbols) if symbols else None,
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

    async def _lookup_quietly(self, client_order_id: str, emergency: bool) -> Order | None:
        """Like get_order_by_client_id, but a failed lookup is None (unknown, not an error)."""
        try:
            return await self.get_order_by_client_id(client_order_id, emergency=emergency)
        except errors.TemporaryError as exc:
            log.warning("order_lookup_failed", client_order_id=client_order_id, reason=str(exc))
            return None

    async def submit_order(self, request: OrderRequest, *, emergency: bool = False) -> Order:
        """Submit an order exactly once, whatever the network does.

        Without a ``client_order_id`` one is generated (and logged). If the outcome of a
        POST is unknown (timeout, reset, 5xx, unreadable body), the order is looked up by
        its ``client_order_id`` before the same body is sent again; a "client_order_id must
        be unique" answer means it landed and the existing order is returned. Raises an
        :class:`core.errors.OrderRejected` subclass only for a definitive 4xx, and
        :class:`core.errors.OrderInFlight` when the outcome is still unknown after all attempts.
        """
        if request.client_order_id is None:
            generated = make_client_order_id(f"auto-{uuid.uuid4().hex}")
            log.warning("client_order_id_generated", symbol=request.symbol, client_order_id=generated)
            request = request.model_copy(update={"client_order_id": generated})
        cid = request.client_order_id
        assert cid is not None
        payload = request.to_payload()
        uncertain = False
        last: ApiResponse | None = None
        for attempt in range(1, self._max_retries + 2):
            if uncertain:
                await self._sleep(self.transport.backoff(attempt - 1))
                found = await self._lookup_quietly(cid, emergency)
                if found is not None:
                    log.info("order_recovered", client_order_id=cid, order_id=found.id,
                             status=found.status, via="lookup")
                    return found
            response = await self.request(
                "POST", "/v2/orders", json=payload, emergency=emergency, idempotent=False
            )
            last = response
            if response.success:
                try:
                    return self.parser.parse(Order, response.data, "POST /v2/orders")
                except errors.MalformedResponse as exc:
                    # Accepted, but unreadable: resolve it like any other unknown outcome.
                    response = response.model_copy(update={
                        "success": False, "error_type": "malformed", "outcome_unknown": True,
                        "message": str(exc)})
                    last = response
            if response.outcome_unknown:
                uncertain = True
                log.warning("order_outcome_unknown", client_order_id=cid, symbol=request.symbol,
                            attempt=attempt, status=response.status, reason=response.message)
                continue
            problem = response.error(for_order=True)
            assert problem is not None
            duplicate = isinstance(problem, errors.DuplicateClientOrderId)
            validation = problem.status == 422 and problem.code == broker_errors.CODE_VALIDATION
            if duplicate or validation or (uncertain and isinstance(problem, errors.OrderRejected)):
                # It may have landed: a duplicate id certainly did (Alpaca's code for it,
                # 422 40010001, is shared with every validation error, so any of them is
                # checked by looking the id up rather than by reading the text), and after an
                # unknown outcome a rejection of the resend may be caused by the first copy.
                found = await self._lookup_quietly(cid, emergency)
                if found is not None and found.symbol == request.symbol and found.side == request.side:
                    log.info("order_recovered", client_order_id=cid, order_id=found.id,
                             status=found.status, via=type(problem).__name__)
                    return found
                if found is None and duplicate and uncertain:
                    continue  # it landed but is not visible yet: look again
            if not uncertain or isinstance(problem, errors.OrderRejected):
                self._note_rejection(problem, request.symbol)
                raise problem
            # e.g. a 429 after an unknown outcome: still unresolved, try again
        await self._sleep(self.transport.backoff(self._max_retries + 1))
        found = await self._lookup_quietly(cid, emergency)
        if found is not None:
            log.info("order_recovered", client_order_id=cid, order_id=found.id,
                     status=found.status, via="final_lookup")
            return found
        log.error("order_in_flight", client_order_id=cid, symbol=request.symbol,
                  status=last.status if last else None)
        raise errors.OrderInFlight(
            f"order {cid} for {request.symbol}: outcome unknown after "
            f"{self._max_retries + 1} attempts; reconcile by client_order_id",
            client_order_id=cid,
            status=(last.status or None) if last else None,
            request_id=last.request_id if last else None,
        )

    def _note_rejection(self, problem: errors.BrokerError, symbol: str | None) -> None:
        if isinstance(problem, errors.PatternDayTraderRejected) and symbol:
            self.pdt_blocked_symbols.add(symbol)
            log.warning("pdt_blocked", symbol=symbol, code=problem.code)

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
        """PATCH an order; returns the NEW order (new id). An unknown outcome is resolved by
        reading the old order (``replaced_by``) before the PATCH is sent again. An order that
        is already final raises the outcome :class:`core.errors.OrderNotReplaceable` (with the
        re-read order), an unknown one :class:`core.errors.NotFound`."""
        body: dict[str, Any] = {}
        for name, value in (("qty", qty), ("limit_price", limit_price),
                            ("stop_price", stop_price), ("trail", trail)):
            if value is not None:
                body[name] = decimal_text(Decimal(str(value)))
        if time_in_force is not None:
            body["time_in_force"] = time_in_force
        if client_order_id is not None:
            body["client_order_id"] = client_order_id
        if not body:
            raise ValueError("replace_order needs at least one field to change")
        path = f"/v2/orders/{urlquote(order_id, safe='')}"
        uncertain = False
        for attempt in range(1, self._max_retries + 2):
            if uncertain:
                await self._sleep(self.transport.backoff(attempt - 1))
                state = await self._replacement_of(order_id)
                if isinstance(state, Order):
                    return state
                if state == "wait":
                    continue
            response = await self.request("PATCH", path, json=body, idempotent=False)
            if response.success:
                return self.parser.parse(Order, response.data, f"PATCH {path}")
            if response.outcome_unknown:
                uncertain = True
                log.warning("order_outcome_unknown", order_id=order_id, attempt=attempt,
                            status=response.status, reason=response.message)
                continue
            problem = response.error(for_order=True)
            assert problem is not None
            if not uncertain and problem.status == 422 and isinstance(problem, errors.OrderRejected):
                problem = await self._replace_outcome(order_id, problem)
            if uncertain:
                state = await self._replacement_of(order_id)
                if isinstance(state, Order):
                    return state
            if isinstance(problem, errors.PatternDayTraderRejected):
                symbol = await self._symbol_of(order_id)
                self._note_rejection(problem, symbol)
            if not uncertain or isinstance(problem, (errors.OrderRejected, errors.NotFound)):
                raise problem
        state = await self._replacement_of(order_id)
        if isinstance(state, Order):
            return state
        raise errors.OrderInFlight(
            f"replacement of order {order_id}: outcome unknown after "
            f"{self._max_retries + 1} attempts; reconcile before acting",
            client_order_id=client_order_id or f"replace:{order_id}",
        )

    async def _replace_outcome(self, order_id: str, problem: errors.BrokerError) -> errors.BrokerError:
        """A 422 to a PATCH is a refusal unless the order is already final (it filled, was
        canceled or expired in the race): read it; then the answer is the outcome
        :class:`core.errors.OrderNotReplaceable` carrying the order. Decided by the order's
        state, never by the message."""
        try:
            old = await self.get_order(order_id, nested=False)
        except errors.BrokerError as exc:
            log.warning("order_lookup_failed", order_id=order_id, reason=str(exc))
            return problem
        if not old.is_terminal:
            return problem
        outcome = errors.OrderNotReplaceable(problem.message, status=problem.status, code=problem.code,
                                             request_id=problem.request_id, body=problem.body)
        outcome.order = old
        return outcome

    async def _replacement_of(self, order_id: str) -> Order | str:
        """The new order if ``order_id`` was replaced; "wait" while pending; else "resend"."""
        try:
            old = await self.get_order(order_id, nested=False)
        except errors.TemporaryError:
            return "wait"
        if old.status == "replaced" and old.replaced_by:
            try:
                new = await self.get_order(old.replaced_by)
            except errors.TemporaryError:
                return "wait"
            log.info("order_recovered", order_id=new.id, replaces=order_id, via="replaced_by")
            return new
        if old.status == "pending_replace":
            return "wait"
        if old.is_terminal:
            raise errors.OrderRejected(
                f"order {order_id} is {old.status}; it can no longer be replaced"
            )
        return "resend"

    async def _symbol_of(self, order_id: str) -> str | None:
        try:
            return (await self.get_order(order_id, nested=False)).symbol
        except errors.BrokerError:
            return None

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
        market order; returns that order. An emergency call (uses the rate-limit reserve).

        A full close is safe to resend after an unknown outcome: the broker holds the shares
        for the first close order, so a second one is refused (403) or finds no position (404),
        both of which mean the first landed. A partial close is never resent blindly.
        """
        if qty is not None and percentage is not None:
            raise ValueError("give qty or percentage, not both")
        if qty is not None and Decimal(str(qty)) <= 0:
            raise ValueError(f"qty must be positive, got {qty}")
        if percentage is not None and not 0 < Decimal(str(percentage)) <= 100:
            raise ValueError(f"percentage must be in (0, 100], got {percentage}")
        path = f"/v2/positions/{urlquote(symbol, safe='')}"
        params = {
            "qty": None if qty is None else Decimal(str(qty)),
            "percentage": None if percentage is None else Decimal(str(percentage)),
        }
        full_close = qty is None and percentage is None
        since = self._clock.now() - RECENT_ORDER_WINDOW
        response = await self.request("DELETE", path, params=params, emergency=True, idempotent=False)
        if response.success:
            return self.parser.parse(Order, response.data, f"DELETE {path}")
        if not response.outcome_unknown:
            problem = response.error(for_order=True)
            assert problem is not None
            self._note_rejection(problem, symbol)
            raise problem
        log.warning("order_outcome_unknown", symbol=symbol, action="close_position",
                    status=response.status, reason=response.message)
        for attempt in range(1, self._max_retries + 1):
            await self._sleep(self.transport.backoff(attempt))
            if not full_close:
                recent = await self._recent_close_order(symbol, since)
                if recent is not None:
                    return recent
                continue
            response = await self.request("DELETE", path, params=params, emergency=True,
                                          idempotent=False)
            if response.success:
                return self.parser.parse(Order, response.data, f"DELETE {path}")
            if response.outcome_unknown:
                continue
            problem = response.error(for_order=True)
            assert problem is not None
            if isinstance(problem, (errors.NotFound, errors.InsufficientQuantity)):
                recent = await self._recent_close_order(symbol, since)
                if recent is not None:
                    return recent
                continue
            self._note_rejection(problem, symbol)
            raise problem
        raise errors.OrderInFlight(
            f"closing {symbol}: outcome unknown after {self._max_retries + 1} attempts; "
            "check positions and open orders",
            client_order_id=f"close_position:{symbol}",
        )

    async def _recent_close_order(self, symbol: str, since: datetime) -> Order | None:
        """The newest simple market order for ``symbol`` submitted since ``since``."""
        try:
            orders = await self.list_orders(status="all", limit=50, nested=False, symbols=[symbol],
                                            after=since, direction="desc", emergency=True)
        except errors.TemporaryError as exc:
            log.warning("order_lookup_failed", symbol=symbol, reason=str(exc))
            return None
        for order in orders:
            if order.created_at >= since and order.type == "market" and order.order_class == "simple":
                log.info("order_recovered", symbol=symbol, order_id=order.id, status=order.status,
                         via="recent_orders")
                return order
        return None

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

    # -- market data -----------------------------------------------------------------------

    async def _data_call(self, path: str, params: dict[str, Any], endpoint: str) -> Any:
        """GET a market-data endpoint, falling back from SIP to IEX once per endpoint."""
        params = dict(params)
        uses_feed = "feed" in params
        if uses_feed and params["feed"] in (None, "sip") and endpoint in self._feed_fallback:
            params["feed"] = "iex"
        response = await self.request("GET", path, params=params, data_api=True)
        if (
            not response.success
            and response.status == 403
            and SIP_REFUSAL in response.message.lower()
            and uses_feed
            and params["feed"] in (None, "sip")
        ):
            self._feed_fallback.add(endpoint)
            log.warning("data_feed_fallback", endpoint=endpoint,
                        from_feed=params["feed"] or "default", to_feed="iex",
                        reason=response.message)
            params["feed"] = "iex"
            response = await self.request("GET", path, params=params, data_api=True)
        response.raise_for_error()
        return response.data

    async def _pages(
        self, path: str, params: dict[str, Any], endpoint: str
    ) -> AsyncIterator[dict[str, Any]]:
        """Every page of a paginated data endpoint (``next_page_token``)."""
        params = dict(params)
        seen: set[str] = set()
        while True:
            data = await self._data_call(path, params, endpoint)
            if not isinstance(data, dict):
                raise errors.MalformedResponse(f"GET {path}: expected a JSON object")
            yield data
            token = data.get("next_page_token")
            if not token:
                return
            if token in seen:
                raise errors.MalformedResponse(f"GET {path}: next_page_token repeats")
            seen.add(token)
            params["page_token"] = token

    def _bars(self, raw: Any, where: str) -> list[Bar]:
        return self.parser.parse_list(Bar, raw, where)

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
        """Bars per symbol, oldest first, following every page; symbols are sent 100 per
        request. ``limit`` keeps at most that many of the most recent bars per symbol.
        Symbols without data are absent from the result."""
        if limit is not None and limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        names = _unique_symbols(symbols)
        out: dict[str, list[Bar]] = {}
        self.data_rejections = {}
        for chunk in _chunks(names, SYMBOLS_PER_REQUEST):
            params = {
                "symbols": chunk, "timeframe": timeframe, "start": start, "end": end,
                "limit": BARS_PAGE_LIMIT, "feed": feed or self.data_feed,
                "adjustment": adjustment, "sort": "asc",
            }
            async for page in self._pages("/v2/stocks/bars", params, "/v2/stocks/bars"):
                for symbol, raw in mapping(page, "bars", "GET /v2/stocks/bars").items():
                    where = f"GET /v2/stocks/bars {symbol}"
                    bars = self._symbol_data(symbol, lambda: self._whole_bars(raw, where), "/v2/stocks/bars")
                    if bars is not None:
                        out.setdefault(symbol, []).extend(bars)
        for symbol in self.data_rejections:  # one bad bar spoils the symbol's series, not the batch
            out.pop(symbol, None)
        if limit is not None:
            out = {symbol: bars[-limit:] for symbol, bars in out.items()}
        return out

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
        """Bars of one symbol (single-symbol endpoint), oldest first, every page."""
        if limit is not None and limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        path = f"/v2/stocks/{urlquote(symbol, safe='')}/bars"
        params = {
            "timeframe": timeframe, "start": start, "end": end, "limit": BARS_PAGE_LIMIT,
            "feed": feed or self.data_feed, "adjustment": adjustment, "sort": "asc",
        }
        bars: list[Bar] = []
        async for page in self._pages(path, params, "/v2/stocks/{symbol}/bars"):
            bars.extend(self._bars(page.get("bars"), f"GET {path}"))
        return bars[-limit:] if limit is not None else bars

    async def get_latest_quotes(self, symbols: Sequence[str]) -> dict[str, Quote]:
        """Latest quote per symbol; stale, zero and crossed quotes are dropped (and logged)."""
        out: dict[str, Quote] = {}
        self.data_rejections = {}
        for chunk in _chunks(_unique_symbols(symbols), LATEST_SYMBOLS_PER_REQUEST):
            data = await self._data_call("/v2/stocks/quotes/latest",
                                         {"symbols": chunk, "feed": self.data_feed},
                                         "/v2/stocks/quotes/latest")
            for symbol, raw in mapping(data, "quotes", "GET /v2/stocks/quotes/latest").items():
                quote = self._symbol_data(
                    symbol, lambda: self.parser.parse_item(Quote, raw, f"GET /v2/stocks/quotes/latest {symbol}", None),
                    "/v2/stocks/quotes/latest")
                if quote is not None and self._quote_usable(symbol, quote):
                    out[symbol] = quote
        return out

    async def get_latest_quote(self, symbol: str) -> Quote | None:
        """Latest quote of one symbol, or None when it fails the quality checks."""
        path = f"/v2/stocks/{urlquote(symbol, safe='')}/quotes/latest"
        data = await self._data_call(path, {"feed": self.data_feed},
                                     "/v2/stocks/{symbol}/quotes/latest")
        raw = data.get("quote") if isinstance(data, dict) else None
        if raw is None:
            return None
        quote = self.parser.parse(Quote, raw, f"GET {path}")
        return quote if self._quote_usable(symbol, quote) else None

    async def get_latest_trades(self, symbols: Sequence[str]) -> dict[str, Trade]:
        """Latest trade per symbol (unknown symbols are absent)."""
        out: dict[str, Trade] = {}
        self.data_rejections = {}
        for chunk in _chunks(_unique_symbols(symbols), LATEST_SYMBOLS_PER_REQUEST):
            data = await self._data_call("/v2/stocks/trades/latest",
                                         {"symbols": chunk, "feed": self.data_feed},
                                         "/v2/stocks/trades/latest")
            for symbol, raw in mapping(data, "trades", "GET /v2/stocks/trades/latest").items():
                trade = self._symbol_data(
                    symbol, lambda: self.parser.parse_item(Trade, raw, f"GET /v2/stocks/trades/latest {symbol}", None),
                    "/v2/stocks/trades/latest")
                if trade is not None and self._price_usable(symbol, "trade", trade.p, "/v2/stocks/trades/latest"):
                    out[symbol] = trade
        return out

    async def get_latest_trade(self, symbol: str) -> Trade | None:
        """Latest trade of one symbol, or None when there is none."""
        path = f"/v2/stocks/{urlquote(symbol, safe='')}/trades/latest"
        data = await self._data_call(path, {"feed": self.data_feed},
                                     "/v2/stocks/{symbol}/trades/latest")
        raw = data.get("trade") if isinstance(data, dict) else None
        return None if raw is None else self.parser.parse(Trade, raw, f"GET {path}")

    async def get_snapshots(self, symbols: Sequence[str]) -> dict[str, Snapshot]:
        """Snapshot per symbol; a latest quote failing the quality checks is set to None."""
        out: dict[str, Snapshot] = {}
        self.data_rejections = {}
        for chunk in _chunks(_unique_symbols(symbols), LATEST_SYMBOLS_PER_REQUEST):
            data = await self._data_call("/v2/stocks/snapshots",
                                         {"symbols": chunk, "feed": self.data_feed},
                                         "/v2/stocks/snapshots")
            for symbol, raw in mapping(data, None, "GET /v2/stocks/snapshots").items():
                if raw is None:
                    continue
                snapshot = self._symbol_data(
                    symbol, lambda: self.parser.parse_item(Snapshot, raw, f"GET /v2/stocks/snapshots {symbol}", None),
                    "/v2/stocks/snapshots")
                if snapshot is not None:
                    out[symbol] = self._checked_snapshot(symbol, snapshot)
        return out

    async def get_snapshot(self, symbol: str) -> Snapshot:
        """Snapshot of one symbol (the quote is checked as in :meth:`get_snapshots`)."""
        path = f"/v2/stocks/{urlquote(symbol, safe='')}/snapshot"
        data = await self._data_call(path, {"feed": self.data_feed}, "/v2/stocks/{symbol}/snapshot")
        return self._checked_snapshot(symbol, self.parser.parse(Snapshot, data, f"GET {path}"))

    def _checked_snapshot(self, symbol: str, snapshot: Snapshot) -> Snapshot:
        if snapshot.latest_quote is not None and not self._quote_usable(symbol, snapshot.latest_quote):
            return snapshot.model_copy(update={"latest_quote": None})
        return snapshot

    async def get_news(
        self, symbols: Sequence[str], start: datetime | None = None, limit: int = 50
    ) -> list[NewsArticle]:
        """Up to ``limit`` news articles about ``symbols``, newest first."""
        if limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        params: dict[str, Any] = {
            "symbols": _unique_symbols(symbols), "start": start,
            "limit": min(limit, NEWS_PAGE_LIMIT), "sort": "desc",
        }
        articles: list[NewsArticle] = []
        async for page in self._pages("/v1beta1/news", params, "/v1beta1/news"):
            articles.extend(self.parser.parse_list(NewsArticle, page.get("news"), "GET /v1beta1/news"))
            if len(articles) >= limit:
                break
        return articles[:limit]

    # -- data quality ----------------------------------------------------------------------

    def _symbol_data(self, symbol: str, parse: Callable[[], M | None], path: str) -> M | None:
        """One symbol's part of a batched answer, or None (logged, remembered in
        :attr:`data_rejections`) when it does not parse: a NaN or infinite price for one
        symbol spoils that symbol's data for the cycle, not the whole batch, and it is bad
        data, not an unreachable broker. ``parse`` returns None for an item it dropped."""
        try:
            item = parse()
        except errors.MalformedResponse as exc:
            reason = str(exc)
        else:
            if item is not None:
                return item
            last = self.parser.last_dropped
            reason = (f"unusable {last.model} ({', '.join(last.fields) or 'body'}: {last.cause})"
                      if last is not None else "unusable data (see broker_item_dropped)")
        self.data_rejections[symbol] = reason
        log.warning("market_data_rejected", symbol=symbol, reason=reason, source=path)
        return None

    def _whole_bars(self, raw: Any, where: str) -> list[Bar] | None:
        """A symbol's bars, or None when any bar of them was unusable (a series with a hole
        or a NaN is no basis for indicators)."""
        before = self.dropped_items
        bars = self._bars(raw, where)
        return None if self.dropped_items > before else bars

    def _price_usable(self, symbol: str, what: str, price: Decimal, path: str) -> bool:
        problem = price_problem(price)
        if problem is None:
            return True
        reason = f"{what} price {problem}"
        self.data_rejections[symbol] = reason
        log.warning("market_data_rejected", symbol=symbol, reason=reason, source=path)
        return False

    def _quote_usable(self, symbol: str, quote: Quote) -> bool:
        now = self._clock.now()
        age = (now - quote.t).total_seconds()
        if age > self._max_quote_age:
            self._warn_throttled("stale_data_rejected", symbol, now, age_seconds=round(age, 1),
                                 max_age_seconds=self._max_quote_age, quote_time=quote.t.isoformat())
            return False
        reason = None
        if quote.bp <= 0 or quote.ap <= 0:
            reason = "zero_price"
        elif quote.bp > quote.ap:
            reason = "crossed"
        elif price_problem(quote.ap) is not None:
            reason = "absurd_price"
        if reason is not None:
            self._warn_throttled("bad_quote_rejected", symbol, now, reason=reason,
                                 bid=str(quote.bp), ask=str(quote.ap))
            return False
        return True

    def _warn_throttled(self, event: str, symbol: str, now: datetime, **fields: Any) -> None:
        """Log ``event`` for ``symbol`` at most once per minute (of the injected clock)."""
        key = (event, symbol)
        last = self._last_warning.get(key)
        if last is not None and now - last < QUALITY_WARNING_INTERVAL:
            return
        self._last_warning[key] = now
        log.warning(event, symbol=symbol, **fields)


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

