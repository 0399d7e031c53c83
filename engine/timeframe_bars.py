"""Intraday bars for the multi-timeframe analysis: kept from each cycle's snapshots, backfilled
in one batched request only when something is missing.

The loop needs 1Min, 5Min, 15Min and 1Hour bars for every symbol of the universe. The 1-minute
series is the base; the other timeframes are derived by resampling
(:func:`market.timeframes.resample`), which is exactly how the data API builds them.

Issue 14 allows a steady cycle two HTTP requests, and the cycle already reads the snapshots
(``GET /v2/stocks/snapshots``), whose ``minuteBar`` is each symbol's *latest* minute bar. So:

* a steady cycle asks for no bars: the snapshot's ``minuteBar`` is appended when its minute is
  new and replaces the last bar when it is the same minute revised (late trades);
* the batched bars endpoint (one multi-symbol request for *all* symbols that need it, the
  gateway follows the pages) is called only to **backfill**: at start and when a symbol joins
  (:data:`LOAD_DAYS` of minutes), and after a gap (a minute that may have traded was never
  seen: a cycle slower than a minute, a restart, the broker down), from where the symbol's
  series is known to be complete;
* a gap is exact rather than guessed: the snapshot carries the latest bar, so the minutes
  after it had no trade; only minutes between the known end and that bar can be missing;
* each derived timeframe is re-resampled only when a new bar of it can have completed
  (:func:`market.timeframes.new_bar_possible`) or a minute inside one of its completed bars
  changed; in between its cached series is reused;
* only completed bars are kept: the bar of the running minute (or hour) is not a bar yet.

A failed backfill leaves the cached bars in place, logs ``timeframe_bars_unavailable`` and is
retried on the next cycle: the analysis runs on what it has meanwhile (the missing timeframes
are listed in ``ai_decision``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import structlog

from core.errors import BrokerError, DataQualityError
from market import timeframes as tf
from market.market_data import BarSeries

log = structlog.get_logger(__name__)

#: Calendar days of minute bars loaded at the first fetch (a weekend and a holiday included).
LOAD_DAYS = 5
#: Minute bars kept per symbol (about 3 extended-hours sessions: 25+ completed hour bars).
KEEP_MINUTES = 3 * 960
#: Seconds after a minute ends during which its bar may not be published yet (Alpaca computes a
#: minute bar about a second after the minute, and recomputes it at +30 s with late trades): a
#: snapshot taken that soon is no proof that the minute had no trade, so it stays "not yet known".
PUBLISH_GRACE_SECONDS = 10


class TimeframeBars:
    """The universe's completed intraday bars per timeframe, kept between cycles."""

    def __init__(self, settings: Any) -> None:
        cfg = getattr(settings, "multi_timeframe", None)
        weights = dict(cfg.weights) if cfg is not None and cfg.enabled else {}
        self.wanted = [name for name in tf.INTRADAY_SECONDS if float(weights.get(name, 0.0)) > 0]
        self._minutes: dict[str, BarSeries] = {}
        #: Per symbol: every minute starting before this epoch is in ``_minutes`` or had no trade.
        self._known_until: dict[str, int] = {}
        self._behind: set[str] = set()
        self._derived: dict[str, dict[str, BarSeries]] = {}
        self._derived_at: dict[str, float] = {}
        self._stale_from: dict[str, int] = {}
        self.requests = 0

    async def refresh(self, broker: Any, symbols: Sequence[str], now: datetime,
                      snapshots: Mapping[str, Any] | None = None) -> dict[str, dict[str, BarSeries]]:
        """Completed bars by symbol, then timeframe, at ``now``.

        ``snapshots`` (symbol -> broker ``Snapshot``) are this cycle's; their ``minuteBar``
        extends the series. Without them every symbol is behind once the clock enters a new
        minute, and the bars since its known end are fetched (one batched request)."""
        if not self.wanted or not symbols:
            return {}
        now_epoch = now.timestamp()
        for symbol in symbols:
            if symbol not in self._known_until:
                self._behind.add(symbol)
            elif snapshots is None:
                if self._known_until[symbol] < tf.bucket_start(now_epoch, 60):
                    self._behind.add(symbol)
            elif self._observe(symbol, snapshots.get(symbol), now_epoch):
                self._behind.add(symbol)
        behind = sorted(s for s in dict.fromkeys(symbols) if s in self._behind)
        if behind:
            await self._backfill(broker, behind, now)
        return {symbol: self._frames(symbol, now_epoch) for symbol in symbols if symbol in self._minutes}

    def _observe(self, symbol: str, snap: Any, now_epoch: float) -> bool:
        """Take the snapshot's latest minute bar; whether a minute may be missing before it."""
        if snap is None:  # nothing seen this cycle: the known end stays where it is
            return False
        settled = tf.bucket_start(now_epoch - PUBLISH_GRACE_SECONDS, 60)
        known = self._known_until[symbol]
        bar = getattr(snap, "minute_bar", None)
        if bar is None:  # no minute bar at all: nothing traded that could be missing
            self._known_until[symbol] = max(known, settled)
            return False
        minute = int(bar.t.timestamp())
        if minute + 60 > now_epoch:  # the running minute: not a bar yet, and the last one unseen
            return minute - 60 >= known
        try:
            row = BarSeries.from_bars([bar])
        except (DataQualityError, ArithmeticError, ValueError) as exc:
            log.warning("timeframe_bars_unavailable", symbol=symbol, error=str(exc),
                        effect="this minute is fetched again by the next backfill")
            return True
        self._put(symbol, row)
        if minute > known:  # a minute in [known, minute) may have traded: the backfill starts at known
            return True
        self._known_until[symbol] = max(known, minute + 60, settled)
        return False

    def _put(self, symbol: str, row: BarSeries) -> None:
        """Append ``row`` (one minute) when newer than the series' last bar, replace the last
        bar when it is the same minute revised; an older minute is left alone."""
        minutes = self._minutes.get(symbol, BarSeries.empty())
        minute = int(row.ts[0])
        if len(minutes):
            last = int(minutes.ts[-1])
            if minute < last:
                return
            if minute == last and _same_last_bar(minutes, row):
                return
        self._minutes[symbol] = tf.merge(minutes, row, KEEP_MINUTES)
        self._mark_changed(symbol, minute)

    def _mark_changed(self, symbol: str, minute: int) -> None:
        for name in self.wanted:
            key = f"{symbol}/{name}"
            self._stale_from[key] = min(self._stale_from.get(key, minute), minute)

    async def _backfill(self, broker: Any, symbols: list[str], now: datetime) -> None:
        """One batched 1-minute request for every symbol behind, from the earliest known end."""
        floor = now - timedelta(days=LOAD_DAYS)
        ends = [self._known_until.get(symbol) for symbol in symbols]
        start = floor if None in ends else max(
            floor, datetime.fromtimestamp(min(e for e in ends if e is not None), tz=now.tzinfo))
        try:
            raw = await broker.get_bars(symbols, timeframe="1Min", start=start, end=now)
        except BrokerError as exc:
            log.warning("timeframe_bars_unavailable", error=str(exc), symbols=len(symbols),
                        effect="multi-timeframe analysis on the cached bars; backfill retried next cycle")
            return
        finally:
            self.requests += 1
        now_epoch = now.timestamp()
        settled = tf.bucket_start(now_epoch - PUBLISH_GRACE_SECONDS, 60)
        for symbol in symbols:
            bars = raw.get(symbol) or []
            try:
                fresh = tf.completed(BarSeries.from_bars(bars), 60, now_epoch) if bars else BarSeries.empty()
            except (DataQualityError, ArithmeticError, ValueError) as exc:
                log.warning("timeframe_bars_unavailable", symbol=symbol, error=str(exc),
                            effect="this symbol's intraday timeframes are dropped until its next gap")
                self._minutes[symbol] = fresh = BarSeries.empty()
                self._derived.pop(symbol, None)
            if len(fresh):
                self._minutes[symbol] = tf.merge(self._minutes.get(symbol), fresh, KEEP_MINUTES)
                self._mark_changed(symbol, int(fresh.ts[0]))
            self._minutes.setdefault(symbol, BarSeries.empty())
            latest = int(fresh.ts[-1]) + 60 if len(fresh) else settled
            self._known_until[symbol] = max(self._known_until.get(symbol, settled), settled, latest)
            self._behind.discard(symbol)
        log.info("timeframe_bars_backfilled", symbols=len(symbols), since=start.isoformat(),
                 why="load (start or a symbol joined)" if None in ends else "gap (a minute never seen in a snapshot)")

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
            stale = self._stale_from.get(key)
            changed = stale is not None and tf.bucket_start(stale, seconds) + seconds <= now_epoch
            if name not in cached or changed or tf.new_bar_possible(seconds, self._derived_at.get(key), now_epoch):
                cached[name] = tf.completed(tf.resample(minutes, seconds), seconds, now_epoch)
                self._derived_at[key] = now_epoch
                self._stale_from.pop(key, None)
            frames[name] = cached[name]
        return frames


def _same_last_bar(minutes: BarSeries, row: BarSeries) -> bool:
    """Whether ``row`` equals the last bar of ``minutes`` in every column (no revision)."""
    return all(float(getattr(minutes, name)[-1]) == float(getattr(row, name)[0])
               for name in ("open", "high", "low", "close", "volume")) and bool(np.all(minutes.ts[-1:] == row.ts))
