"""Alpaca Market Data API v2 over a :class:`simulator.market.Market`, as plain methods.

Each method takes the raw query parameters (``Mapping[str, str]``, as they arrive in a
URL) and returns the JSON body Alpaca would send (plain dicts; numbers as JSON numbers;
timestamps RFC 3339 with ``Z``), or raises :class:`simulator.errors.SimApiError` with
Alpaca's status and body. The HTTP server and the in-process backtest broker both call
these methods, so they answer identically.

Rules worth knowing:

* Nothing from the future: only bars complete at ``clock.now()`` are returned (a minute
  bar is complete one minute after its start); today's daily bar is the regular session
  so far; an aggregated bar still forming is built from its complete minutes.
* Timeframes: ``[1-59]Min``/``T``, ``[1-23]Hour``/``H``, ``1Day``/``D``, ``1Week``/``W``,
  ``[1,2,3,4,6,12]Month``/``M``. Minute and hour bars are aligned to the clock in UTC
  (``1Hour`` bars start on the hour, so the 13:00Z bar holds 09:30-09:59 ET plus the
  pre-market 09:00-09:29 ET trades, as Alpaca's do). Daily bars are the regular session
  (see ``simulator/market.py``); weekly and monthly bars group daily bars by ISO week or
  calendar month, stamped with the first session's daily timestamp.
* ``start``/``end`` take RFC 3339 or ``YYYY-MM-DD`` (a date alone is the whole day in
  America/New_York: ``start`` at its midnight, ``end`` at its last instant). Defaults:
  start = today's midnight ET, end = now. Both inclusive.
* ``limit`` (1-10000, default 1000) counts bars across all symbols; results are ordered by
  symbol, then time; ``next_page_token`` is an opaque base64 cursor, ``null`` on the last
  page.
* ``feed=sip``: refused with Alpaca's free-plan 403 when the request reaches into the last
  15 minutes, unless the API was built with ``sip_enabled=True``.
* Unknown symbols are omitted from multi-symbol answers.
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from collections.abc import Iterator, Mapping
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import numpy as np

from core.clock import EXCHANGE_TZ, Clock
from simulator.errors import SimApiError
from simulator.bars import DayArrays, MinuteBar
from simulator.market import Market, aggregate, midnight_et_utc

UTC = timezone.utc
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10000
NEWS_DEFAULT_LIMIT = 10
NEWS_MAX_LIMIT = 50
SIP_DELAY = timedelta(minutes=15)
LATEST_LOOKBACK_SESSIONS = 10
LOT_SIZES_UNTIL = date(2025, 11, 3)  # quote sizes were in round lots before this date
_FEEDS = {"sip", "iex", "otc", "boats", "delayed_sip", "overnight"}
_TIMEFRAME = re.compile(r"^(\d+)(Min|T|Hour|H|Day|D|Week|W|Month|M)$")
_UNIT = {"Min": "min", "T": "min", "Hour": "hour", "H": "hour", "Day": "day", "D": "day",
         "Week": "week", "W": "week", "Month": "month", "M": "month"}
SIP_MESSAGE = "subscription does not permit querying recent SIP data"

Json = dict[str, Any]


def _bad(message: str) -> SimApiError:
    return SimApiError(400, {"message": message})


def rfc3339(moment: datetime) -> str:
    """``moment`` as RFC 3339 UTC with ``Z`` (fraction only when there is one)."""
    text = _RFC3339_MEMO.get(moment)
    if text is None:
        if len(_RFC3339_MEMO) >= RFC3339_MEMO_SIZE:
            _RFC3339_MEMO.clear()
        utc = moment.astimezone(UTC)
        text = utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if utc.microsecond else "%Y-%m-%dT%H:%M:%SZ")
        _RFC3339_MEMO[moment] = text
    return text


# Bar and quote times repeat across requests (every daily bar of a history, each minute).
RFC3339_MEMO_SIZE = 4096
ARTICLE_MEMO_SIZE = 4096
_RFC3339_MEMO: dict[datetime, str] = {}


def _parse_time(name: str, text: str, *, is_end: bool) -> datetime:
    raw = text.strip()
    try:
        if len(raw) == 10:
            day = date.fromisoformat(raw)
            if is_end:
                return datetime.combine(day + timedelta(days=1), time(0), EXCHANGE_TZ).astimezone(
                    UTC
                ) - timedelta(microseconds=1)
            return datetime.combine(day, time(0), EXCHANGE_TZ).astimezone(UTC)
        text_iso = raw.replace("Z", "+00:00").replace("z", "+00:00")
        match = re.match(r"^(.*T\d\d:\d\d:\d\d)\.(\d+)(.*)$", text_iso)
        if match:  # nanosecond fractions: keep microseconds
            text_iso = f"{match[1]}.{match[2][:6].ljust(6, '0')}{match[3]}"
        moment = datetime.fromisoformat(text_iso)
    except ValueError:
        raise _bad(f"invalid {name}: {raw!r} is not RFC 3339 or YYYY-MM-DD") from None
    if moment.tzinfo is None:
        raise _bad(f"invalid {name}: {raw!r} has no time zone offset")
    return moment.astimezone(UTC)


def _flag(params: Mapping[str, str], name: str, default: bool = False) -> bool:
    value = params.get(name)
    if value is None or value == "":
        return default
    lowered = str(value).strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise _bad(f"invalid {name}: {value!r} (expected true or false)")


def _limit(params: Mapping[str, str], default: int, maximum: int) -> int:
    raw = params.get("limit")
    if raw is None or raw == "":
        return default
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise _bad(f"invalid limit: {raw!r}") from None
    if not 1 <= value <= maximum:
        raise _bad(f"invalid limit: must be between 1 and {maximum}, got {value}")
    return value


def _symbols(params: Mapping[str, str], *, required: bool = True) -> list[str]:
    raw = params.get("symbols") or ""
    symbols = list(dict.fromkeys(s.strip() for s in str(raw).split(",") if s.strip()))
    if required and not symbols:
        raise _bad("missing symbols")
    return symbols


def _sort_desc(params: Mapping[str, str], default: str = "asc") -> bool:
    value = (params.get("sort") or default).strip().lower()
    if value not in ("asc", "desc"):
        raise _bad(f"invalid sort: {value!r} (expected asc or desc)")
    return value == "desc"


def _encode_token(*parts: object) -> str:
    return base64.b64encode("|".join(str(p) for p in parts).encode("utf-8")).decode("ascii")


def _decode_token(token: str, fields: int) -> list[str]:
    try:
        parts = base64.b64decode(token.encode("ascii"), validate=True).decode("utf-8").split("|")
    except (ValueError, binascii.Error, UnicodeError):
        raise _bad("invalid page_token") from None
    if len(parts) != fields:
        raise _bad("invalid page_token")
    return parts


def _timeframe(params: Mapping[str, str]) -> tuple[int, str]:
    raw = (params.get("timeframe") or "").strip()
    match = _TIMEFRAME.match(raw)
    if not match:
        raise _bad("invalid timeframe")
    amount, unit = int(match[1]), _UNIT[match[2]]
    valid = {
        "min": 1 <= amount <= 59,
        "hour": 1 <= amount <= 23,
        "day": amount == 1,
        "week": amount == 1,
        "month": amount in (1, 2, 3, 4, 6, 12),
    }[unit]
    if not valid:
        raise _bad("invalid timeframe")
    return amount, unit


def bar_json(bar: MinuteBar) -> Json:
    """A bar in Alpaca's market-data shape."""
    return {"t": rfc3339(bar.t), "o": bar.o, "h": bar.h, "l": bar.l, "c": bar.c,
            "v": bar.v, "n": bar.n, "vw": bar.vw}


class MarketDataApi:
    """The Market Data API v2 routes of the simulator (see the module docstring)."""

    def __init__(self, market: Market, clock: Clock, *, sip_enabled: bool = False) -> None:
        self.market = market
        self.clock = clock
        self.sip_enabled = sip_enabled
        if market.clock is None:
            market.attach_clock(clock)
        # Articles per (symbol, session, with content, market revision): the same 30-day
        # window is asked for every cycle; a shock or gap changes the revision.
        self._article_memo: dict[tuple[str, date, bool, int], list[tuple[datetime, Json]]] = {}

    # -- common checks -------------------------------------------------------------------

    def _feed(self, params: Mapping[str, str], *, latest: bool, end: datetime | None,
              now: datetime) -> None:
        feed = (params.get("feed") or "").strip().lower()
        if not feed:
            return
        if feed not in _FEEDS or (not latest and feed in ("delayed_sip", "overnight")):
            raise _bad(f"invalid feed: {feed!r}")
        if feed == "sip" and not self.sip_enabled:
            if latest or end is None or end > now - SIP_DELAY:
                raise SimApiError(403, {"message": SIP_MESSAGE})

    def _known(self, symbols: list[str]) -> list[str]:
        return [s for s in symbols if self.market.has_symbol(s)]

    # -- bars ----------------------------------------------------------------------------

    def bars(self, params: Mapping[str, str]) -> Json:
        """``GET /v2/stocks/bars``: ``{"bars": {sym: [bar...]}, "next_page_token": ...}``."""
        symbols = _symbols(params)
        page, token = self._bar_page(symbols, params)
        grouped: dict[str, list[Json]] = {}
        for symbol, bar in page:
            grouped.setdefault(symbol, []).append(bar_json(bar))
        return {"bars": grouped, "next_page_token": token, "currency": "USD"}

    def symbol_bars(self, symbol: str, params: Mapping[str, str]) -> Json:
        """``GET /v2/stocks/{symbol}/bars``: ``{"symbol", "bars": [...], "next_page_token"}``."""
        page, token = self._bar_page([symbol], params)
        return {"symbol": symbol, "bars": [bar_json(bar) for _, bar in page],
                "next_page_token": token, "currency": "USD"}

    def _bar_page(
        self, symbols: list[str], params: Mapping[str, str]
    ) -> tuple[list[tuple[str, MinuteBar]], str | None]:
        amount, unit = _timeframe(params)
        now = self.clock.now()
        start_raw, end_raw = params.get("start"), params.get("end")
        start = (
            _parse_time("start", start_raw, is_end=False)
            if start_raw
            else datetime.combine(now.astimezone(EXCHANGE_TZ).date(), time(0), EXCHANGE_TZ)
            .astimezone(UTC)
        )
        end = _parse_time("end", end_raw, is_end=True) if end_raw else now
        end = min(end, now)
        self._feed(params, latest=False, end=end, now=now)
        limit = _limit(params, DEFAULT_LIMIT, MAX_LIMIT)
        desc = _sort_desc(params)
        after: tuple[str, int] | None = None
        token_raw = params.get("page_token")
        if token_raw:
            sym, stamp = _decode_token(token_raw, 2)
            try:
                after = (sym, int(stamp))
            except ValueError:
                raise _bad("invalid page_token") from None
        page: list[tuple[str, MinuteBar]] = []
        if start > end:
            return page, None
        for symbol in sorted(self._known(symbols)):
            if after is not None and symbol < after[0]:
                continue
            for bar in self._series(symbol, amount, unit, start, end, now, desc):
                if after is not None and symbol == after[0]:
                    stamp = int(bar.t.timestamp())
                    if (desc and stamp >= after[1]) or (not desc and stamp <= after[1]):
                        continue
                if len(page) == limit:
                    last_symbol, last_bar = page[-1]
                    return page, _encode_token(last_symbol, int(last_bar.t.timestamp()))
                page.append((symbol, bar))
        return page, None

    def _series(self, symbol: str, amount: int, unit: str, start: datetime, end: datetime,
                now: datetime, desc: bool) -> Iterator[MinuteBar]:
        if unit in ("min", "hour"):
            yield from self._intraday(symbol, amount * (60 if unit == "hour" else 1), start,
                                      end, now, desc)
            return
        bars = self._daily_range(symbol, start, end, now)
        if unit == "week":
            bars = _group(bars, lambda b: b.t.astimezone(EXCHANGE_TZ).isocalendar()[:2])
        elif unit == "month":
            bars = _group(bars, lambda b: _month_bucket(b.t, amount))
        yield from (reversed(bars) if desc else bars)

    def _intraday(self, symbol: str, minutes: int, start: datetime, end: datetime,
                  now: datetime, desc: bool) -> Iterator[MinuteBar]:
        sessions = self.market.trading_days(start.astimezone(EXCHANGE_TZ).date(),
                                            end.astimezone(EXCHANGE_TZ).date())
        lo, hi = start.timestamp(), end.timestamp()
        complete_before = now.timestamp() - 60.0
        for session in reversed(sessions) if desc else sessions:
            day = self.market.minute_arrays(symbol, session)
            if day is None:
                continue
            width = minutes * 60
            first = int(np.searchsorted(day.ts, (lo // width) * width, side="left"))
            usable = int(np.searchsorted(day.ts, complete_before, side="right"))
            usable = min(usable, int(np.searchsorted(day.ts, hi // width * width + width)))
            if usable <= first:
                continue
            bars = _bucket(day, first, usable, minutes)
            chosen = [b for b in bars if lo <= b.t.timestamp() <= hi]
            yield from (reversed(chosen) if desc else chosen)

    def _daily_range(self, symbol: str, start: datetime, end: datetime,
                     now: datetime) -> list[MinuteBar]:
        first = start.astimezone(EXCHANGE_TZ).date()
        last = end.astimezone(EXCHANGE_TZ).date()
        out: list[MinuteBar] = []
        today = now.astimezone(EXCHANGE_TZ).date()
        for session in self.market.trading_days(first, min(last, today)):
            stamp = midnight_et_utc(session)
            if not start <= stamp <= end:
                continue
            if session == today:
                bar = self.market.daily_bar(symbol, session, until=now)
            else:
                bar = self.market.daily_bar(symbol, session)
            if bar is not None:
                out.append(bar)
        return out

    # -- latest --------------------------------------------------------------------------

    def _latest_bar(self, symbol: str, now: datetime) -> MinuteBar | None:
        session = now.astimezone(EXCHANGE_TZ).date()
        calendar = self.market.calendar
        probe = session if calendar.is_session(session) else calendar.previous_session(session)
        cutoff = now.timestamp() - 60.0
        for _ in range(LATEST_LOOKBACK_SESSIONS):
            day = self.market.minute_arrays(symbol, probe)
            if day is not None:
                i = int(np.searchsorted(day.ts, cutoff, side="right")) - 1
                if i >= 0:
                    return day.bar(i)
            probe = calendar.previous_session(probe)
        return None

    def trade_item(self, symbol: str, now: datetime) -> Json | None:
        """The last trade at ``now`` in Alpaca's letters, ``t`` still a datetime: REST
        renders it RFC 3339, the stream as a msgpack Timestamp or RFC 3339 per codec."""
        trade = self.market.last_trade(symbol, now)
        if trade is None:
            return None
        price, when, size = trade
        profile = self.market.profile(symbol)
        trade_id = (int(when.timestamp()) * 7919 + zlib.crc32(symbol.encode())) % (2**52)
        return {"t": when, "x": "V", "p": price, "s": size, "i": trade_id,
                "c": ["@"], "z": profile.tape}

    def quote_item(self, symbol: str, now: datetime) -> Json | None:
        """The quote at ``now`` in Alpaca's letters, ``t`` still a datetime (see
        :meth:`trade_item`)."""
        quote = self.market.quote_at(symbol, now)
        if quote is None:
            return None
        profile = self.market.profile(symbol)
        lots = now.astimezone(EXCHANGE_TZ).date() < LOT_SIZES_UNTIL
        bid_size = max(1, quote.bid_size // 100) if lots else quote.bid_size
        ask_size = max(1, quote.ask_size // 100) if lots else quote.ask_size
        return {"t": quote.t, "ax": "V", "ap": quote.ask, "as": ask_size, "bx": "V",
                "bp": quote.bid, "bs": bid_size, "c": ["R"], "z": profile.tape}

    def _trade_json(self, symbol: str, now: datetime) -> Json | None:
        item = self.trade_item(symbol, now)
        if item is not None:
            item["t"] = rfc3339(item["t"])
        return item

    def _quote_json(self, symbol: str, now: datetime) -> Json | None:
        item = self.quote_item(symbol, now)
        if item is not None:
            item["t"] = rfc3339(item["t"])
        return item

    def _latest(self, params: Mapping[str, str], key: str, build: Any) -> Json:
        symbols = _symbols(params)
        now = self.clock.now()
        self._feed(params, latest=True, end=now, now=now)
        out: dict[str, Json] = {}
        for symbol in self._known(symbols):
            item = build(symbol, now)
            if item is not None:
                out[symbol] = item
        return {key: out}

    def latest_bars(self, params: Mapping[str, str]) -> Json:
        """``GET /v2/stocks/bars/latest``: ``{"bars": {sym: bar}}``."""
        return self._latest(params, "bars", lambda s, now: _maybe(self._latest_bar(s, now)))

    def latest_quotes(self, params: Mapping[str, str]) -> Json:
        """``GET /v2/stocks/quotes/latest``: ``{"quotes": {sym: quote}}``."""
        return self._latest(params, "quotes", self._quote_json)

    def latest_trades(self, params: Mapping[str, str]) -> Json:
        """``GET /v2/stocks/trades/latest``: ``{"trades": {sym: trade}}``."""
        return self._latest(params, "trades", self._trade_json)

    def _single(self, symbol: str, params: Mapping[str, str] | None, key: str,
                build: Any) -> Json:
        now = self.clock.now()
        self._feed(params or {}, latest=True, end=now, now=now)
        item = build(symbol, now) if self.market.has_symbol(symbol) else None
        if item is None:
            raise SimApiError(404, {"message": f"no {key} found for {symbol}"})
        return {"symbol": symbol, key: item}

    def symbol_latest_bar(self, symbol: str, params: Mapping[str, str] | None = None) -> Json:
        """``GET /v2/stocks/{symbol}/bars/latest``: ``{"symbol", "bar"}``."""
        return self._single(symbol, params, "bar",
                            lambda s, now: _maybe(self._latest_bar(s, now)))

    def symbol_latest_quote(self, symbol: str, params: Mapping[str, str] | None = None) -> Json:
        """``GET /v2/stocks/{symbol}/quotes/latest``: ``{"symbol", "quote"}``."""
        return self._single(symbol, params, "quote", self._quote_json)

    def symbol_latest_trade(self, symbol: str, params: Mapping[str, str] | None = None) -> Json:
        """``GET /v2/stocks/{symbol}/trades/latest``: ``{"symbol", "trade"}``."""
        return self._single(symbol, params, "trade", self._trade_json)

    # -- snapshots -----------------------------------------------------------------------

    def _snapshot(self, symbol: str, now: datetime) -> Json | None:
        trade = self._trade_json(symbol, now)
        if trade is None:
            return None
        calendar = self.market.calendar
        today = now.astimezone(EXCHANGE_TZ).date()
        daily: MinuteBar | None = None
        daily_session: date | None = None
        if calendar.is_session(today):
            daily = self.market.daily_bar(symbol, today, until=now)
            daily_session = today if daily is not None else None
        probe = today
        for _ in range(LATEST_LOOKBACK_SESSIONS):
            if daily is not None:
                break
            probe = calendar.previous_session(probe)
            daily = self.market.daily_bar(symbol, probe)
            daily_session = probe if daily is not None else None
        previous: MinuteBar | None = None
        if daily_session is not None:
            probe = daily_session
            for _ in range(LATEST_LOOKBACK_SESSIONS):
                probe = calendar.previous_session(probe)
                previous = self.market.daily_bar(symbol, probe)
                if previous is not None:
                    break
        minute = self._latest_bar(symbol, now)
        return {
            "latestTrade": trade,
            "latestQuote": self._quote_json(symbol, now),
            "minuteBar": _maybe(minute),
            "dailyBar": _maybe(daily),
            "prevDailyBar": _maybe(previous),
        }

    def snapshots(self, params: Mapping[str, str]) -> Json:
        """``GET /v2/stocks/snapshots``: a top-level map ``{sym: snapshot}`` (no wrapper)."""
        symbols = _symbols(params)
        now = self.clock.now()
        self._feed(params, latest=True, end=now, now=now)
        out: Json = {}
        for symbol in self._known(symbols):
            snap = self._snapshot(symbol, now)
            if snap is not None:
                out[symbol] = snap
        return out

    def symbol_snapshot(self, symbol: str, params: Mapping[str, str] | None = None) -> Json:
        """``GET /v2/stocks/{symbol}/snapshot``: the snapshot, flat, with ``symbol``."""
        now = self.clock.now()
        self._feed(params or {}, latest=True, end=now, now=now)
        snap = self._snapshot(symbol, now) if self.market.has_symbol(symbol) else None
        if snap is None:
            raise SimApiError(404, {"message": f"no snapshot found for {symbol}"})
        return {"symbol": symbol, **snap}

    # -- news ----------------------------------------------------------------------------

    def news(self, params: Mapping[str, str]) -> Json:
        """``GET /v1beta1/news``: deterministic synthetic headlines per symbol and session.

        Two articles per symbol and session: a pre-market one (07:xx ET) about the previous
        session's move and an after-close one (16:xx ET) about the day's move; only those
        published by ``clock.now()`` are visible.
        """
        now = self.clock.now()
        requested = _symbols(params, required=False)
        symbols = self._known(requested) if requested else list(self.market.symbols)
        end = _parse_time("end", params["end"], is_end=True) if params.get("end") else now
        end = min(end, now)
        start = (
            _parse_time("start", params["start"], is_end=False)
            if params.get("start")
            else end - timedelta(days=30)
        )
        limit = _limit(params, NEWS_DEFAULT_LIMIT, NEWS_MAX_LIMIT)
        desc = _sort_desc(params, default="desc")
        include_content = _flag(params, "include_content")
        _flag(params, "exclude_contentless")
        after: tuple[int, int] | None = None
        if params.get("page_token"):
            stamp, ident = _decode_token(str(params["page_token"]), 2)
            try:
                after = (int(stamp), int(ident))
            except ValueError:
                raise _bad("invalid page_token") from None
        articles: list[Json] = []
        keys: list[tuple[int, int]] = []
        if symbols and start <= end:
            calendar = self.market.calendar
            first = max(start.astimezone(EXCHANGE_TZ).date(), date(1990, 1, 10))
            last = end.astimezone(EXCHANGE_TZ).date()
            sessions = calendar.sessions(first, last)
            for session in reversed(sessions) if desc else sessions:
                day_items = []
                for symbol in symbols:
                    for created, article in self._articles(symbol, session, include_content):
                        if start <= created <= end:
                            day_items.append(((int(created.timestamp()), article["id"]), article))
                day_items.sort(key=lambda item: item[0], reverse=desc)
                for key, article in day_items:
                    if after is not None and ((desc and key >= after) or (not desc and key <= after)):
                        continue
                    articles.append(article)
                    keys.append(key)
                if len(articles) > limit:
                    break
        token = None
        if len(articles) > limit:
            articles = articles[:limit]
            token = _encode_token(*keys[limit - 1])
        return {"news": articles, "next_page_token": token}

    def _articles(
        self, symbol: str, session: date, include_content: bool
    ) -> list[tuple[datetime, Json]]:
        """The session's articles about ``symbol`` (fresh dicts on every call)."""
        key = (symbol, session, include_content, self.market.revision)
        made = self._article_memo.get(key)
        if made is None:
            if len(self._article_memo) >= ARTICLE_MEMO_SIZE:
                self._article_memo.clear()
            made = self._article_memo[key] = self._make_articles(symbol, session, include_content)
        return [(created, {**article, "images": [], "symbols": [symbol]}) for created, article in made]

    def _make_articles(
        self, symbol: str, session: date, include_content: bool
    ) -> list[tuple[datetime, Json]]:
        calendar = self.market.calendar
        out: list[tuple[datetime, Json]] = []
        try:
            previous = calendar.previous_session(session)
        except ValueError:
            return out
        before = calendar.previous_session(previous)
        for slot, (subject, base, hour) in enumerate(
            ((previous, before, 7), (session, previous, 16))
        ):
            # Close and volume of the two daily bars (read without minute bars where possible).
            bar = self.market.daily_close_volume(symbol, subject)
            ref = self.market.daily_close_volume(symbol, base)
            if bar is None or ref is None or ref[0] <= 0:
                continue
            close, volume = bar
            move = (close / ref[0] - 1.0) * 100.0
            seed = zlib.crc32(f"{symbol}|{subject.isoformat()}|{slot}".encode())
            minute = 5 + seed % 50
            created = datetime.combine(session, time(hour, minute), EXCHANGE_TZ).astimezone(UTC)
            headline = _headline(symbol, move, seed, premarket=slot == 0)
            summary = (
                f"{symbol} closed at {close:.2f} on {subject.isoformat()}, "
                f"{'up' if move >= 0 else 'down'} {abs(move):.1f}% from the previous session, "
                f"on volume of {volume:,} shares."
            )
            ident = (session.toordinal() * 2 + slot) * 100_000 + zlib.crc32(symbol.encode()) % 100_000
            out.append((created, {
                "id": ident,
                "headline": headline,
                "author": "Simulator Newswire",
                "created_at": rfc3339(created),
                "updated_at": rfc3339(created),
                "summary": summary,
                "content": f"<p>{summary}</p>" if include_content else "",
                "url": None,
                "images": [],
                "symbols": [symbol],
                "source": "simulator",
            }))
        return out


def _maybe(bar: MinuteBar | None) -> Json | None:
    return None if bar is None else bar_json(bar)


_UP_BIG = ("{s} shares surge {m:.1f}% as buyers pile in", "{s} rallies {m:.1f}% on strong demand")
_UP = ("{s} gains {m:.1f}% in steady trading", "{s} edges higher, up {m:.1f}%")
_FLAT = ("{s} little changed as traders await fresh catalysts", "{s} ends flat in quiet session")
_DOWN = ("{s} slips {m:.1f}% amid broad selling", "{s} falls {m:.1f}% as sentiment weakens")
_DOWN_BIG = ("{s} tumbles {m:.1f}% as investors flee risk", "{s} plunges {m:.1f}% in heavy selling")


def _headline(symbol: str, move: float, seed: int, *, premarket: bool) -> str:
    if move >= 2.0:
        options = _UP_BIG
    elif move >= 0.5:
        options = _UP
    elif move > -0.5:
        options = _FLAT
    elif move > -2.0:
        options = _DOWN
    else:
        options = _DOWN_BIG
    text = options[seed % len(options)].format(s=symbol, m=abs(move))
    return f"Premarket recap: {text}" if premarket else text


def _bucket(day: DayArrays, first: int, usable: int, minutes: int) -> list[MinuteBar]:
    """Bars ``first..usable-1`` of ``day`` grouped into ``minutes``-long clock buckets."""
    if minutes == 1:
        return [day.bar(i) for i in range(first, usable)]
    width = minutes * 60
    ts = day.ts[:usable]
    buckets = ts // width
    starts = first + np.flatnonzero(
        np.concatenate(([True], np.diff(buckets[first:]) != 0))
    )
    ends = np.concatenate((starts[1:], [usable]))
    out: list[MinuteBar] = []
    for a, b in zip(starts.tolist(), ends.tolist()):
        part = DayArrays(day.session, ts[a:b], day.o[a:b], day.h[a:b], day.l[a:b], day.c[a:b],
                         day.v[a:b], day.n[a:b], day.vw[a:b])
        values = aggregate(part)
        if values is not None:
            out.append(MinuteBar(datetime.fromtimestamp(int(buckets[a]) * width, UTC), *values))
    return out


def _month_bucket(moment: datetime, months: int) -> int:
    local = moment.astimezone(EXCHANGE_TZ)
    return (local.year * 12 + local.month - 1) // months


def _group(bars: list[MinuteBar], key: Any) -> list[MinuteBar]:
    out: list[MinuteBar] = []
    group: list[MinuteBar] = []
    current: object = None
    for bar in bars + [None]:  # type: ignore[list-item]
        k = key(bar) if bar is not None else object()
        if group and k != current:
            volume = sum(b.v for b in group)
            vw = (sum(b.vw * b.v for b in group) / volume) if volume else group[-1].vw
            out.append(MinuteBar(group[0].t, group[0].o, max(b.h for b in group),
                                 min(b.l for b in group), group[-1].c, volume,
                                 sum(b.n for b in group), round(vw, 4)))
            group = []
        if bar is not None:
            group.append(bar)
            current = k
    return out
