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

This module is the public face: construction (the URL and key checks are
:mod:`broker.endpoint_checks`), the lifecycle, the raw :meth:`ResilientAlpacaGateway.request`
and the market-data methods; the typed trading methods (account, orders, positions,
activities) are :class:`broker.trading_endpoints.TradingEndpoints`, which the gateway inherits.
The gateway owns one of each of the parts that do the work, each its own module
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
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

import aiohttp
import structlog
import yarl
from pydantic import SecretStr

from core import clock as clock_module
from core import errors
from config import load_settings
from broker.endpoint_checks import (
    LIVE_TRADING_HOST,
    MODES,
    checked_url,
    encode_params,
    is_loopback,
    secret_or_none,
)
from broker.models import (
    ApiResponse,
    Bar,
    DroppedItem,
    NewsArticle,
    Quote,
    Snapshot,
    Trade,
)
from broker.market_data_client import MarketDataClient
from broker.embedded_sim import EmbeddedSimulator, gateway_arguments
from broker.order_desk import OrderDesk, make_client_order_id
from broker.parsing import TolerantParser
from broker.rate_limit import RateLimiter
from broker.trading_endpoints import TradingEndpoints
from broker.transport import HttpTransport

log = structlog.get_logger(__name__)


class ResilientAlpacaGateway(TradingEndpoints):
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
        self.base_url = checked_url(base_url, "trading API URL", mode, live_enabled)
        self.data_url = checked_url(data_url, "market data URL", mode, live_enabled)
        key, secret = secret_or_none(key_id), secret_or_none(secret_key)
        if (key is None) != (secret is None):
            raise errors.ConfigError(["API key id and secret key must be given together"])
        if key is None and not is_loopback(yarl.URL(self.base_url).host or ""):
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


__all__ = [
    "LIVE_TRADING_HOST",
    "ResilientAlpacaGateway",
    "encode_params",
    "make_client_order_id",
]

