"""MarketDataClient: the market data endpoints of Alpaca's data API, with the data checked.

One job: fetch bars, latest quotes and trades, snapshots and news, and let through only data
a strategy may act on. Everything is sent through the gateway's ``request`` (so retries, the
rate limit and an in-process broker's replacement of ``request`` all apply) and read by the
gateway's :class:`broker.parsing.TolerantParser`. What it adds:

* batching: up to :data:`SYMBOLS_PER_REQUEST` symbols per bars request and
  :data:`LATEST_SYMBOLS_PER_REQUEST` per latest/snapshot request, every page followed
  (``next_page_token``; a repeating token is MalformedResponse);
* a free plan's SIP refusal (403 "subscription does not permit") falls back to IEX once per
  endpoint and is remembered;
* per-symbol tolerance: one symbol's unusable data (a NaN price, an unreadable bar) is
  dropped and named in :attr:`MarketDataClient.data_rejections` (the loop alerts on data that
  stays bad), the rest of the batch stands; a symbol's bars with any bar dropped are dropped
  whole (a series with a hole is no basis for indicators);
* quality checks: stale, zero, crossed and absurd quotes are refused (one warning per symbol
  per minute of the injected clock).

:class:`api_gateway.ResilientAlpacaGateway` owns one and exposes its methods as its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import quote as urlquote

import structlog
from pydantic import BaseModel

from broker.models import ApiResponse, Bar, NewsArticle, Quote, Snapshot, Trade
from broker.parsing import TolerantParser, mapping
from core import clock as clock_module
from core import errors
from market.market_data import price_problem

log = structlog.get_logger(__name__)

SYMBOLS_PER_REQUEST = 100
# Latest quotes/trades and snapshots: one request for a whole universe of up to 500 symbols
# (about 3 KB of query string), so requests per cycle do not grow with the symbol count.
LATEST_SYMBOLS_PER_REQUEST = 500
BARS_PAGE_LIMIT = 10_000
NEWS_PAGE_LIMIT = 50
QUALITY_WARNING_INTERVAL = timedelta(minutes=1)
SIP_REFUSAL = "subscription does not permit"

M = TypeVar("M", bound=BaseModel)


#: The gateway's ``request`` (called as ``request("GET", path, params=..., data_api=True)``).
Request = Callable[..., Awaitable[ApiResponse]]


def unique_symbols(symbols: Sequence[str] | str) -> list[str]:
    """Symbols stripped, in order, without repeats (a bare string is one symbol)."""
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


class MarketDataClient:
    """Bars, latest quotes and trades, snapshots and news for one gateway, checked.

    ``request`` sends a call (the gateway's, with retries); ``parser`` reads and counts;
    ``clock`` dates quote age against ``max_quote_age`` seconds; ``data_feed`` is the feed
    asked for (None: the account's default).
    """

    def __init__(self, request: Request, parser: TolerantParser, clock: clock_module.Clock,
                 max_quote_age: float, data_feed: str | None) -> None:
        self._request = request
        self.parser = parser
        self._clock = clock
        self._max_quote_age = float(max_quote_age)
        self.data_feed = data_feed
        self._feed_fallback: set[str] = set()
        self._last_warning: dict[tuple[str, str], datetime] = {}
        # Symbols whose market data the last batched call dropped, with the reason (the loop
        # counts them to alert on data that stays bad).
        self.data_rejections: dict[str, str] = {}

    # -- the endpoints --------------------------------------------------------------------

    async def _data_call(self, path: str, params: dict[str, Any], endpoint: str) -> Any:
        """GET a market-data endpoint, falling back from SIP to IEX once per endpoint."""
        params = dict(params)
        uses_feed = "feed" in params
        if uses_feed and params["feed"] in (None, "sip") and endpoint in self._feed_fallback:
            params["feed"] = "iex"
        response = await self._request("GET", path, params=params, data_api=True)
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
            response = await self._request("GET", path, params=params, data_api=True)
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
        names = unique_symbols(symbols)
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

    async def _latest_by_symbol(self, path: str, key: str | None, model: type[M],
                                symbols: Sequence[str]) -> dict[str, M]:
        """One batched multi-symbol request per chunk; each symbol's item is parsed on its own,
        so one unusable item rejects that symbol (:meth:`_symbol_data`), never the batch."""
        out: dict[str, M] = {}
        self.data_rejections = {}
        for chunk in _chunks(unique_symbols(symbols), LATEST_SYMBOLS_PER_REQUEST):
            data = await self._data_call(path, {"symbols": chunk, "feed": self.data_feed}, path)
            for symbol, raw in mapping(data, key, f"GET {path}").items():
                if raw is None:
                    continue
                item = self._symbol_data(
                    symbol, lambda: self.parser.parse_item(model, raw, f"GET {path} {symbol}", None), path)
                if item is not None:
                    out[symbol] = item
        return out

    async def get_latest_quotes(self, symbols: Sequence[str]) -> dict[str, Quote]:
        """Latest quote per symbol; stale, zero and crossed quotes are dropped (and logged)."""
        quotes = await self._latest_by_symbol("/v2/stocks/quotes/latest", "quotes", Quote, symbols)
        return {symbol: q for symbol, q in quotes.items() if self._quote_usable(symbol, q)}

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
        path = "/v2/stocks/trades/latest"
        trades = await self._latest_by_symbol(path, "trades", Trade, symbols)
        return {symbol: t for symbol, t in trades.items() if self._price_usable(symbol, "trade", t.p, path)}

    async def get_latest_trade(self, symbol: str) -> Trade | None:
        """Latest trade of one symbol, or None when there is none."""
        path = f"/v2/stocks/{urlquote(symbol, safe='')}/trades/latest"
        data = await self._data_call(path, {"feed": self.data_feed},
                                     "/v2/stocks/{symbol}/trades/latest")
        raw = data.get("trade") if isinstance(data, dict) else None
        return None if raw is None else self.parser.parse(Trade, raw, f"GET {path}")

    async def get_snapshots(self, symbols: Sequence[str]) -> dict[str, Snapshot]:
        """Snapshot per symbol; a latest quote failing the quality checks is set to None."""
        snapshots = await self._latest_by_symbol("/v2/stocks/snapshots", None, Snapshot, symbols)
        return {symbol: self._checked_snapshot(symbol, snap) for symbol, snap in snapshots.items()}

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
            "symbols": unique_symbols(symbols), "start": start,
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
        before = self.parser.dropped_items
        bars = self._bars(raw, where)
        return None if self.parser.dropped_items > before else bars

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


__all__ = ["MarketDataClient", "unique_symbols"]
