"""Intraday bars for the multi-timeframe analysis: one batched request, cached, per cycle at most.

The loop needs 1Min, 5Min, 15Min and 1Hour bars for every symbol of the universe. Asking for
each timeframe of each symbol would cost ``4 x symbols`` requests a cycle; this cache asks for
*1-minute bars of the whole universe in one multi-symbol request* (the gateway follows the
pages) and derives the other timeframes by resampling (:func:`market.timeframes.resample`),
which is exactly how the data API builds them. So:

* the first regular cycle of a session loads :data:`LOAD_DAYS` calendar days of minutes (enough
  completed hour bars for a signal, weekends included);
* later cycles ask only for the minutes since the last fetch, and only when a new minute bar
  can exist (the clock has entered a new minute), so the number of requests per cycle stays
  one, whatever the number of symbols;
* each derived timeframe is re-resampled only when a new bar of it can have completed
  (:func:`market.timeframes.new_bar_possible`); in between its cached series is reused;
* only completed bars are kept: the bar of the running minute (or hour) is not a bar yet.

A failed request leaves the cached bars in place and logs ``timeframe_bars_unavailable``: the
analysis then runs on what it has (the missing timeframes are listed in ``ai_decision``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog

from core.errors import BrokerError, DataQualityError
from market import timeframes as tf
from market.market_data import BarSeries

log = structlog.get_logger(__name__)

#: Calendar days of minute bars loaded at the first fetch (a weekend and a holiday included).
LOAD_DAYS = 5
#: Minute bars kept per symbol (about 3 extended-hours sessions: 25+ completed hour bars).
KEEP_MINUTES = 3 * 960


class TimeframeBars:
    """The universe's completed intraday bars per timeframe, kept between cycles."""

    def __init__(self, settings: Any) -> None:
        cfg = getattr(settings, "multi_timeframe", None)
        weights = dict(cfg.weights) if cfg is not None and cfg.enabled else {}
        self.wanted = [name for name in tf.INTRADAY_SECONDS if float(weights.get(name, 0.0)) > 0]
        self._minutes: dict[str, BarSeries] = {}
        self._derived: dict[str, dict[str, BarSeries]] = {}
        self._derived_at: dict[str, float] = {}
        self._fetched_at: float | None = None
        self._symbols: frozenset[str] = frozenset()
        self.requests = 0

    async def refresh(self, broker: Any, symbols: Sequence[str], now: datetime) -> dict[str, dict[str, BarSeries]]:
        """Completed bars by symbol, then timeframe, at ``now`` (fetching what is new)."""
        if not self.wanted or not symbols:
            return {}
        wanted = frozenset(symbols)
        now_epoch = now.timestamp()
        if wanted != self._symbols:
            self._symbols, self._fetched_at = wanted, None
            self._minutes, self._derived, self._derived_at = {}, {}, {}
        if tf.new_bar_possible(60, self._fetched_at, now_epoch):
            await self._fetch(broker, sorted(wanted), now)
        return {symbol: self._frames(symbol, now_epoch) for symbol in symbols if symbol in self._minutes}

    async def _fetch(self, broker: Any, symbols: list[str], now: datetime) -> None:
        if self._fetched_at is None:
            start = now - timedelta(days=LOAD_DAYS)
        else:  # the first minute not complete at the last fetch, and everything after it
            start = datetime.fromtimestamp(tf.bucket_start(self._fetched_at, 60), tz=now.tzinfo)
        try:
            raw = await broker.get_bars(symbols, timeframe="1Min", start=start, end=now)
        except BrokerError as exc:
            log.warning("timeframe_bars_unavailable", error=str(exc), symbols=len(symbols),
                        effect="multi-timeframe analysis on the cached bars")
            return
        finally:
            self.requests += 1
        now_epoch = now.timestamp()
        for symbol, bars in raw.items():
            try:
                fresh = tf.completed(BarSeries.from_bars(bars), 60, now_epoch) if bars else BarSeries.empty()
            except (DataQualityError, ArithmeticError, ValueError) as exc:
                log.warning("timeframe_bars_unavailable", symbol=symbol, error=str(exc),
                            effect="this symbol's intraday timeframes are dropped until the next load")
                self._minutes.pop(symbol, None)
                continue
            self._minutes[symbol] = tf.merge(self._minutes.get(symbol), fresh, KEEP_MINUTES)
        for symbol in symbols:
            self._minutes.setdefault(symbol, BarSeries.empty())
        self._fetched_at = now_epoch

    def _frames(self, symbol: str, now_epoch: float) -> dict[str, BarSeries]:
        minutes = self._minutes[symbol]
        frames: dict[str, BarSeries] = {}
        cached = self._derived.setdefault(symbol, {})
        for name in self.wanted:
            seconds = tf.INTRADAY_SECONDS[name]
            if seconds == 60:
                frames[name] = minutes
                continue
            key = f"{symbol}/{name}"
            if name not in cached or tf.new_bar_possible(seconds, self._derived_at.get(key), now_epoch):
                cached[name] = tf.completed(tf.resample(minutes, seconds), seconds, now_epoch)
                self._derived_at[key] = now_epoch
            frames[name] = cached[name]
        return frames
