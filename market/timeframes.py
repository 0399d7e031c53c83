"""The seed's timeframes and minute bars resampled into them (pure arithmetic, no I/O).

Bars are stamped with the *start* of their interval, as Alpaca stamps them; buckets are
aligned to the UTC epoch, which is how Alpaca aligns them too (5- and 15-minute bars start
on the clock's 5 and 15 minutes, hour bars on the hour, so the 13:00Z bar of a winter session
holds 09:30-09:59 New York). A bucket with no minute bar (nothing traded) has no bar.

Only *completed* bars are used by the analysis: a bar is complete once its interval has
ended. A timeframe therefore only changes when a new bar of it can exist
(:func:`bucket_start` of ``now`` moved on), which is when its cache is refreshed.
"""

from __future__ import annotations

import numpy as np

from market.market_data import BarSeries

#: The intraday timeframes and their length in seconds (``1Day`` comes from the daily series).
INTRADAY_SECONDS: dict[str, int] = {"1Min": 60, "5Min": 300, "15Min": 900, "1Hour": 3600}
#: Every timeframe the multi-timeframe analysis combines, shortest first.
TIMEFRAMES: tuple[str, ...] = ("1Min", "5Min", "15Min", "1Hour", "1Day")


def bucket_start(epoch_seconds: int | float, seconds: int) -> int:
    """The start of the ``seconds``-long bucket holding ``epoch_seconds`` (UTC-epoch aligned)."""
    t = int(epoch_seconds)
    return t - t % seconds


def new_bar_possible(seconds: int, last_epoch: float | None, now_epoch: float) -> bool:
    """Whether a bar of ``seconds`` may have completed between ``last_epoch`` and ``now``."""
    return last_epoch is None or bucket_start(now_epoch, seconds) > bucket_start(last_epoch, seconds)


def completed(bars: BarSeries, seconds: int, now_epoch: float) -> BarSeries:
    """The bars of ``bars`` (a ``seconds`` timeframe) whose interval has ended by ``now``."""
    if len(bars) == 0:
        return bars
    keep = int(np.searchsorted(bars.ts, int(now_epoch) - seconds, side="right"))
    return bars if keep == len(bars) else bars.slice(0, keep)


def resample(minutes: BarSeries, seconds: int) -> BarSeries:
    """1-minute bars aggregated into ``seconds``-long bars: first open, highest high,
    lowest low, last close, summed volume, stamped with the bucket's start."""
    if seconds == 60 or len(minutes) == 0:
        return minutes
    if seconds % 60:
        raise ValueError(f"a timeframe must be whole minutes, got {seconds} s")
    ts = np.asarray(minutes.ts, dtype=np.int64)
    buckets = ts - ts % seconds
    starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
    ends = np.r_[starts[1:], len(ts)] - 1
    return BarSeries.from_arrays(
        buckets[starts],
        np.asarray(minutes.open)[starts],
        np.maximum.reduceat(np.asarray(minutes.high), starts),
        np.minimum.reduceat(np.asarray(minutes.low), starts),
        np.asarray(minutes.close)[ends],
        np.add.reduceat(np.asarray(minutes.volume), starts),
    )


def merge(older: BarSeries | None, newer: BarSeries, keep_last: int) -> BarSeries:
    """``older``'s bars before ``newer``'s first, then ``newer``; at most ``keep_last`` bars."""
    if older is None or len(older) == 0:
        combined = newer
    elif len(newer) == 0:
        combined = older
    else:
        cut = int(np.searchsorted(older.ts, int(newer.ts[0]), side="left"))
        combined = BarSeries.from_arrays(
            np.r_[older.ts[:cut], newer.ts], np.r_[older.open[:cut], newer.open],
            np.r_[older.high[:cut], newer.high], np.r_[older.low[:cut], newer.low],
            np.r_[older.close[:cut], newer.close], np.r_[older.volume[:cut], newer.volume],
        )
    return combined if len(combined) <= keep_last else combined.tail(keep_last)
