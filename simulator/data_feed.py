"""What a market-data stream subscriber is owed as the simulated market moves.

:class:`Subscription` is one connection's channel -> symbols map with Alpaca's subscribe /
unsubscribe arithmetic and its ``subscription`` reply; :class:`MarketFeed` turns the
market between two instants of the simulator's clock into Alpaca's stream messages:

* ``b`` (bars): every minute bar that completed in the window (a bar is complete one
  minute after its start, as the REST API says), oldest first;
* ``d`` (dailyBars): the regular session's running daily bar, after each window in which a
  regular-session minute bar completed;
* ``u`` (updatedBars): the last minute bar sent again when the market now reports it
  differently (a shock can move prices only from its instant on, so the simulator's
  market revises a completed bar rarely; the check costs one bar read per symbol);
* ``t`` (trades): the last trade whenever it changed (the market's tape is one trade per
  minute, stamped at the minute's start, or at its last second after a gap);
* ``q`` (quotes): the quote whenever bid, ask or sizes changed, outside the closed hours.

Nothing is sent for a symbol's state at subscription time: a new subscriber sees the next
change, as at Alpaca. After a jump of the clock (``advance``, speed ``max``) at most one
session's worth of bars is caught up. The market has no halts or LULD bands, so
``statuses`` and ``lulds`` subscriptions are kept and answered but carry no messages.
Messages are plain dicts with ``t`` as an aware datetime; the connection encodes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from core.clock import EXCHANGE_TZ
from simulator.bars import MinuteBar
from simulator.market_data_api import MarketDataApi

__all__ = ["CHANNELS", "MarketFeed", "Subscription", "WILDCARD"]

Json = dict[str, Any]

# The channels a client may name, in the order Alpaca's subscription reply lists them.
CHANNELS = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds")
# Channels counted against a plan's symbol limit (the free IEX plan: 30 for trades and
# quotes; minute bars are unlimited).
LIMITED_CHANNELS = ("trades", "quotes")
WILDCARD = "*"
MAX_CATCHUP = timedelta(minutes=390)
_MINUTE = timedelta(minutes=1)
_EPSILON = timedelta(microseconds=1)


class Subscription:
    """One connection's subscriptions: channel -> symbols, in the order first asked for."""

    def __init__(self, channels: Mapping[str, Iterable[str]] | None = None) -> None:
        self.channels: dict[str, list[str]] = {name: [] for name in CHANNELS}
        for name, symbols in (channels or {}).items():
            self.channels[name] = list(dict.fromkeys(symbols))

    def changed(self, action: str, request: Mapping[str, list[str]]) -> Subscription:
        """A new subscription: this one with ``request``'s symbols added (``subscribe``) or
        removed (``unsubscribe``); this one is left as it was (a refused change is none)."""
        out = Subscription(self.channels)
        for name, symbols in request.items():
            current = out.channels[name]
            if action == "subscribe":
                out.channels[name] = list(dict.fromkeys([*current, *symbols]))
            else:
                gone = set(symbols)
                out.channels[name] = [s for s in current if s not in gone]
        return out

    def limited_symbols(self) -> float:
        """How many symbols count against a plan's limit (a wildcard counts as unlimited)."""
        chosen = {s for name in LIMITED_CHANNELS for s in self.channels[name]}
        return float("inf") if WILDCARD in chosen else float(len(chosen))

    def empty(self) -> bool:
        return not any(self.channels.values())

    def reply(self) -> Json:
        """Alpaca's ``subscription`` message: every channel, the derived ``corrections`` and
        ``cancelErrors`` (they follow ``trades``) included."""
        body: Json = {"T": "subscription"}
        for name in CHANNELS:
            body[name] = list(self.channels[name])
        body["corrections"] = list(self.channels["trades"])
        body["cancelErrors"] = list(self.channels["trades"])
        return body

    def symbols(self, channel: str, universe: Iterable[str]) -> list[str]:
        """The market's symbols this channel covers (the wildcard: all of them)."""
        chosen = self.channels[channel]
        if WILDCARD in chosen:
            return list(universe)
        known = set(universe)
        return [s for s in chosen if s in known]


def bar_message(kind: str, symbol: str, bar: MinuteBar) -> Json:
    """A bar as a stream message of type ``kind`` (``b``, ``u`` or ``d``)."""
    return {"T": kind, "S": symbol, "o": bar.o, "h": bar.h, "l": bar.l, "c": bar.c,
            "v": bar.v, "t": bar.t, "n": bar.n, "vw": bar.vw}


class MarketFeed:
    """The messages one subscriber is owed, window by window of the simulator's clock."""

    def __init__(self, data: MarketDataApi, start: datetime) -> None:
        self.data = data
        self.market = data.market
        self._until = start
        self._trades: dict[str, tuple[Any, ...]] = {}
        self._quotes: dict[str, tuple[Any, ...]] = {}
        self._bars: dict[str, MinuteBar] = {}
        self._revision = data.market.revision

    def prime(self, sub: Subscription, now: datetime) -> None:
        """Remember the trades and quotes a (changed) subscription covers as they are at
        ``now``, so that only later changes are sent."""
        universe = self.market.symbols
        self._changes("t", sub.symbols("trades", universe), now)
        self._changes("q", sub.symbols("quotes", universe), now)

    def step(self, sub: Subscription, now: datetime) -> list[Json]:
        """Messages for the window since the last step up to ``now``: none if time stood
        still, unless a shock or gap moved prices meanwhile (the jump's trade and quote are
        owed at once, even on a clock that only moves when told to)."""
        revised = self.market.revision != self._revision
        if now < self._until or (now == self._until and not revised):
            return []
        self._revision = self.market.revision
        since = max(self._until, now - MAX_CATCHUP)
        self._until = now
        universe = self.market.symbols
        out: list[Json] = []
        out.extend(self._revisions(sub.symbols("updatedBars", universe)))
        out.extend(self._minute_bars(sub, universe, since, now))
        out.extend(self._changes("t", sub.symbols("trades", universe), now))
        if self.market.calendar.session_phase(now) != "closed":
            out.extend(self._changes("q", sub.symbols("quotes", universe), now))
        return out

    def _minute_bars(self, sub: Subscription, universe: list[str], since: datetime,
                     now: datetime) -> list[Json]:
        """``b`` for bars completed in (since, now]; ``d`` where one was a regular minute."""
        wanted_bars = set(sub.symbols("bars", universe))
        wanted_daily = set(sub.symbols("dailyBars", universe))
        watched = set(sub.symbols("updatedBars", universe))
        covered = wanted_bars | wanted_daily | watched
        out: list[Json] = []
        for symbol in [s for s in universe if s in covered]:
            bars = self.market.minute_bars(symbol, since - _MINUTE + _EPSILON, now - _MINUTE + _EPSILON)
            if not bars:
                continue
            self._bars[symbol] = bars[-1]
            if symbol in wanted_bars:
                out.extend(bar_message("b", symbol, bar) for bar in bars)
            if symbol in wanted_daily and any(self._regular(bar.t) for bar in bars):
                session = now.astimezone(EXCHANGE_TZ).date()
                daily = self.market.daily_bar(symbol, session, until=now)
                if daily is not None:
                    out.append(bar_message("d", symbol, daily))
        return out

    def _regular(self, moment: datetime) -> bool:
        return self.market.calendar.session_phase(moment) == "regular"

    def _revisions(self, symbols: list[str]) -> list[Json]:
        """``u`` for a minute bar already sent that the market now reports differently."""
        out: list[Json] = []
        for symbol in symbols:
            sent = self._bars.get(symbol)
            if sent is None:
                continue
            now_seen = self.market.bar_at(symbol, sent.t)
            if now_seen is not None and now_seen != sent:
                self._bars[symbol] = now_seen
                out.append(bar_message("u", symbol, now_seen))
        return out

    def _changes(self, kind: str, symbols: list[str], now: datetime) -> list[Json]:
        """Trades (``t``) or quotes (``q``) whose content changed since last seen; a symbol
        seen for the first time is only remembered."""
        seen = self._trades if kind == "t" else self._quotes
        build = self.data.trade_item if kind == "t" else self.data.quote_item
        active = set(symbols)
        for gone in [s for s in seen if s not in active]:
            del seen[gone]
        out: list[Json] = []
        for symbol in symbols:
            item = build(symbol, now)
            if item is None:
                continue
            key = _content(kind, item)
            previous = seen.get(symbol)
            seen[symbol] = key
            if previous is not None and previous != key:
                out.append({"T": kind, "S": symbol, **item})
        return out


def _content(kind: str, item: Json) -> tuple[Any, ...]:
    """What makes a trade or quote new: a trade's time and price; a quote's prices and
    sizes (its ``t`` is always "now")."""
    if kind == "t":
        return (item["t"], item["p"], item["s"])
    return (item["bp"], item["ap"], item["bs"], item["as"])
