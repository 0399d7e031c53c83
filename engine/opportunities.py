"""Lifetimes of a trading idea: how long an analysis, an opportunity and its confidence live.

Without lifetimes an idea lives as long as the cycle keeps seeing it, and its confidence never
ages. The seed gives three clocks (``ai`` settings), all read from the injected clock:

* ``analysis_refresh_minutes`` (15): a symbol's analysis (the AI analyzer's verdict on the
  strategy's signal: an intent or a rejection) is reused for this long and then scored again.
  Between refreshes the cycle re-ranks the cached verdict instead of re-scoring it every
  minute. A cached intent is never older than the staleness bound either (below).
* ``opportunity_timeout_minutes`` (60): an opportunity is "buy this symbol" from the first
  cycle a strategy signalled it. One that has not been entered within the timeout is dropped
  (``opportunity_expired``, once) and stays dropped until its signal disappears for a cycle or
  the session ends: an idea that could not be taken for an hour is no longer the idea it was.
* ``confidence_decay_hours`` (4): the intent's confidence falls linearly from its value at
  the opportunity's first sighting to 0 after this long (the breakdown shows
  ``decay_factor`` and ``opportunity_age_minutes``); an intent whose decayed confidence falls under the threshold it passed is
  dropped (``opportunity_decayed``).

And one bound on prices: an entry is never based on a trade price older than
``data_quality.max_quote_age_seconds`` (900 s = 15 min): the symbol's ``last_price_at`` (the
time of the trade, or minute bar, behind ``last_price``) must be that recent, or the entry is
refused (``entry_price_stale``). A price whose time is unknown (``last_price_at`` None: only
data built outside the loop) is not refused, because there is nothing to measure.

Opportunities belong to a session: a new session starts every idea afresh (a daily signal
seen again the next morning is a new analysis of new data, not an old opportunity).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

import structlog

from ai_analyzer import TradeIntent
from core.clock import Clock, utc
from market.market_data import MarketData

log = structlog.get_logger(__name__)

Analyze = Callable[[Any, MarketData], Awaitable[TradeIntent | None]]


@dataclass
class _Opportunity:
    first_seen: datetime
    analysed_at: datetime | None = None
    analysed_strategy: str | None = None
    intent: TradeIntent | None = None
    expired: bool = False


class OpportunityBook:
    """The session's opportunities, keyed by symbol (the loop only buys to open)."""

    def __init__(self, settings: Any, clock: Clock) -> None:
        ai = settings.ai
        self._ai = ai
        self._clock = clock
        self._refresh = timedelta(minutes=float(ai.analysis_refresh_minutes))
        self._timeout = timedelta(minutes=float(ai.opportunity_timeout_minutes))
        self._decay = timedelta(hours=float(ai.confidence_decay_hours))
        self._max_price_age = timedelta(seconds=float(settings.data_quality.max_quote_age_seconds))
        self._session: date | None = None
        self._open: dict[str, _Opportunity] = {}

    def __len__(self) -> int:
        return len(self._open)

    def start_cycle(self, session: date | None, signalled: Iterable[str]) -> None:
        """Forget every opportunity of another session, and those whose signal is gone
        (``signalled``: the symbols with a buy signal this cycle)."""
        if session != self._session:
            self._session = session
            self._open.clear()
        keep = set(signalled)
        for symbol in [s for s in self._open if s not in keep]:
            del self._open[symbol]

    async def intent_for(self, signal: Any, market_data: MarketData, analyze: Analyze) -> TradeIntent | None:
        """The intent to act on for ``signal`` now, or None (see the module docstring)."""
        now = utc(self._clock.now())
        symbol = str(signal.symbol).upper()
        opportunity = self._open.get(symbol)
        if opportunity is None:
            opportunity = self._open[symbol] = _Opportunity(first_seen=now)
        if opportunity.expired:
            return None
        age = now - opportunity.first_seen
        if age > self._timeout:
            opportunity.expired = True
            log.info("opportunity_expired", symbol=symbol, strategy=str(signal.strategy),
                     first_seen=opportunity.first_seen.isoformat(), age_minutes=round(age.total_seconds() / 60, 1),
                     timeout_minutes=self._timeout.total_seconds() / 60)
            return None
        if not self._price_fresh(symbol, market_data, now):
            return None
        intent = await self._analysis(opportunity, signal, market_data, analyze, now)
        if intent is None:
            return None
        return self._decayed(intent, opportunity, now)

    async def _analysis(self, opportunity: _Opportunity, signal: Any, market_data: MarketData,
                        analyze: Analyze, now: datetime) -> TradeIntent | None:
        """The cached verdict while it is fresh and for the same strategy, else a new one."""
        fresh_for = min(self._refresh, self._max_price_age)
        if (opportunity.analysed_at is not None and now - opportunity.analysed_at < fresh_for
                and opportunity.analysed_strategy == str(signal.strategy)):
            return opportunity.intent
        opportunity.intent = await analyze(signal, market_data)
        opportunity.analysed_at = now
        opportunity.analysed_strategy = str(signal.strategy)
        return opportunity.intent

    def _decayed(self, intent: TradeIntent, opportunity: _Opportunity, now: datetime) -> TradeIntent | None:
        """The intent with its confidence aged from the opportunity's first sighting."""
        age = max(now - opportunity.first_seen, timedelta(0))
        factor = max(0.0, 1.0 - age / self._decay)
        confidence = intent.confidence * factor
        threshold = self._threshold(intent)
        if factor <= 0.0 or confidence < threshold:
            log.info("opportunity_decayed", symbol=intent.symbol, strategy=intent.strategy,
                     confidence=round(confidence, 6), initial_confidence=round(intent.confidence, 6),
                     min_confidence=threshold, age_minutes=round(age.total_seconds() / 60, 1),
                     decay_hours=self._decay.total_seconds() / 3600)
            return None
        breakdown = {**intent.confidence_breakdown, "decay_factor": round(factor, 6),
                     "opportunity_age_minutes": round(age.total_seconds() / 60, 2)}
        return replace(intent, confidence=confidence, confidence_breakdown=breakdown)

    def _threshold(self, intent: TradeIntent) -> float:
        """The bar the analyzer held this intent to (``AIAnalyzer._threshold``): the calibrated
        one for a model's probability, ``ai.min_confidence`` for a transparent score."""
        calibrated = intent.confidence_breakdown.get("method") == "model"
        return float(self._ai.calibrated_min_confidence if calibrated else self._ai.min_confidence)

    def _price_fresh(self, symbol: str, market_data: MarketData, now: datetime) -> bool:
        priced_at = getattr(market_data, "last_price_at", None)
        if priced_at is None:
            return True
        age = now - utc(priced_at)
        if age <= self._max_price_age:
            return True
        log.info("entry_price_stale", symbol=symbol, price=market_data.last_price, price_time=utc(priced_at).isoformat(),
                 age_seconds=round(age.total_seconds(), 1), max_age_seconds=self._max_price_age.total_seconds())
        return False


def snapshot_price_time(snap: Any) -> datetime | None:
    """When the price the loop takes from a snapshot (``_last_price``: the latest trade, else
    the minute bar's close, else the daily bar's) was made: the trade's time, the end of the
    minute bar, or the daily bar's stamp (its midnight: old, so a daily-only price is stale)."""
    trade = getattr(snap, "latest_trade", None)
    if trade is not None and trade.p:
        return utc(trade.t)
    minute = getattr(snap, "minute_bar", None)
    if minute is not None:
        return utc(minute.t) + timedelta(minutes=1)
    daily = getattr(snap, "daily_bar", None)
    return utc(daily.t) if daily is not None else None
