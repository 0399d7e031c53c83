"""News sentiment: headlines scored by the VADER lexicon, fetched from the broker's news feed.

:func:`score_headlines` turns headlines into one number in [-1, 1] (the mean VADER compound
score; 0.0 is neutral). VADER is an offline lexicon, so scoring never touches the network.
:class:`NewsSentiment` fetches recent headlines per symbol through the broker's
``get_news(symbols, start, limit)`` and keeps them for a few minutes, so that several signals
on one symbol cost one request. Whatever fails (no lexicon, broker error, timeout) reads as
neutral and is logged once, until it works again.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from core.clock import Clock, WallClock

log = structlog.get_logger(__name__)

_analyzer: Any = None
_lexicon_failed = False


def _vader() -> Any:
    """The shared VADER analyzer, or None (logged once) when the package cannot load."""
    global _analyzer, _lexicon_failed
    if _analyzer is None and not _lexicon_failed:
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

            _analyzer = SentimentIntensityAnalyzer()
        except Exception as exc:  # ImportError, or a damaged lexicon file
            _lexicon_failed = True
            log.warning(
                "sentiment_lexicon_unavailable",
                error=f"{exc.__class__.__name__}: {exc}",
                effect="news sentiment is neutral (0.0)",
            )
    return _analyzer


def load_lexicon() -> bool:
    """Load VADER's lexicon now rather than at the first headline scored (a backtest does it
    while assembling, before its loop); whether it is available."""
    return _vader() is not None


def score_headlines(headlines: Sequence[str]) -> float:
    """Mean VADER compound score of the distinct, non-empty headlines, in [-1, 1].

    0.0 when there are none or when the lexicon is unavailable.
    """
    distinct = list(dict.fromkeys(h.strip() for h in headlines if h and h.strip()))
    if not distinct:
        return 0.0
    analyzer = _vader()
    if analyzer is None:
        return 0.0
    scores = [_compound(analyzer, h) for h in distinct]
    value = sum(scores) / len(scores)
    return max(-1.0, min(1.0, value)) if math.isfinite(value) else 0.0


# VADER's compound score of a headline (a pure function of its text): a live loop re-scores
# the same few headlines of a symbol every cycle. A small memo, cleared when full.
_COMPOUND_MEMO: dict[str, float] = {}
_COMPOUND_MEMO_SIZE = 4096


def _compound(analyzer: Any, headline: str) -> float:
    score = _COMPOUND_MEMO.get(headline)
    if score is None:
        if len(_COMPOUND_MEMO) >= _COMPOUND_MEMO_SIZE:
            _COMPOUND_MEMO.clear()
        score = _COMPOUND_MEMO[headline] = float(analyzer.polarity_scores(headline)["compound"])
    return score


class NewsGateway(Protocol):
    """The part of ``broker.Broker`` this module uses."""

    async def get_news(
        self, symbols: Sequence[str], start: datetime | None = None, limit: int = 50
    ) -> list[Any]: ...


@dataclass(frozen=True)
class SentimentReading:
    """A symbol's news sentiment: ``score`` in [-1, 1] from ``headlines``."""

    score: float
    headlines: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.headlines)


@dataclass
class _Entry:
    headlines: tuple[str, ...]
    fetched_at: datetime
    ttl: float


class NewsSentiment:
    """Recent headlines per symbol from the broker, cached for ``ttl_seconds``.

    A failed fetch is cached as "no news" for ``failure_ttl_seconds`` so a broken news feed
    does not cost a request per signal.
    """

    def __init__(
        self,
        gateway: NewsGateway,
        *,
        clock: Clock | None = None,
        ttl_seconds: float = 900.0,
        failure_ttl_seconds: float = 120.0,
        lookback_hours: float = 24.0,
        limit: int = 20,
    ) -> None:
        if ttl_seconds <= 0 or failure_ttl_seconds <= 0 or lookback_hours <= 0:
            raise ValueError("NewsSentiment: ttl_seconds, failure_ttl_seconds, lookback_hours must be > 0")
        if not 1 <= limit <= 50:
            raise ValueError(f"NewsSentiment: limit={limit} must be 1..50 (Alpaca's maximum)")
        self._gateway = gateway
        self._clock = clock or WallClock()
        self._ttl = float(ttl_seconds)
        self._failure_ttl = float(failure_ttl_seconds)
        self._lookback = timedelta(hours=lookback_hours)
        self._limit = int(limit)
        self._cache: dict[str, _Entry] = {}
        self._failing = False
        self._lock = asyncio.Lock()

    async def headlines(self, symbol: str) -> tuple[str, ...]:
        """Headlines of the last ``lookback_hours`` mentioning ``symbol`` (cached)."""
        symbol = symbol.upper()
        entry = self._fresh(symbol)
        if entry is None:
            await self.prefetch([symbol])
            entry = self._cache.get(symbol)
        return entry.headlines if entry else ()

    async def score(self, symbol: str) -> SentimentReading:
        """Sentiment of ``symbol``'s recent headlines; neutral when there are none."""
        found = await self.headlines(symbol)
        return SentimentReading(score=score_headlines(found), headlines=found)

    async def prefetch(self, symbols: Iterable[str]) -> None:
        """Fetch, in one request, every symbol of ``symbols`` whose cache is stale."""
        async with self._lock:
            stale = sorted({s.upper() for s in symbols if self._fresh(s.upper()) is None})
            if not stale:
                return
            now = self._clock.now()
            try:
                articles = await self._gateway.get_news(
                    stale, start=now - self._lookback, limit=self._limit
                )
            except Exception as exc:  # any broker or network failure means "no news"
                for symbol in stale:
                    self._cache[symbol] = _Entry((), now, self._failure_ttl)
                if not self._failing:
                    self._failing = True
                    log.warning(
                        "news_sentiment_unavailable",
                        symbols=stale,
                        error=exc.__class__.__name__,
                        detail=str(exc)[:200],
                        effect="sentiment is neutral until the news feed answers again",
                    )
                return
            if self._failing:
                self._failing = False
                log.info("news_sentiment_restored", symbols=stale)
            found: dict[str, list[str]] = {s: [] for s in stale}
            for article in articles:
                headline = _field(article, "headline")
                if not isinstance(headline, str) or not headline.strip():
                    continue
                mentioned = _field(article, "symbols") or []
                for symbol in stale:
                    if symbol in mentioned or len(stale) == 1:
                        found[symbol].append(headline.strip())
            for symbol in stale:
                self._cache[symbol] = _Entry(tuple(found[symbol]), now, self._ttl)

    def _fresh(self, symbol: str) -> _Entry | None:
        entry = self._cache.get(symbol)
        if entry is None:
            return None
        age = (self._clock.now() - entry.fetched_at).total_seconds()
        return entry if 0 <= age < entry.ttl else None


def _field(article: Any, name: str) -> Any:
    if isinstance(article, dict):
        return article.get(name)
    return getattr(article, name, None)
