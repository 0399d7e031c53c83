"""Arithmetic on one symbol-session of minute bars (:class:`simulator.bars.DayArrays`) that
:class:`simulator.market.Market` applies: shocks, aggregation into a daily bar, the short-window
scan of :meth:`Market.first_bar_reaching`, and the small helpers (epoch seconds, midnight ET,
the bounded memo, a stable symbol hash). The conventions are in :mod:`simulator.market`."""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from typing import TypeVar

import numpy as np

from core.clock import EXCHANGE_TZ
from simulator.bars import DayArrays

UTC = timezone.utc
MEMO_SIZE = 2048  # remembered last trades / quotes per (symbol, instant)
_Value = TypeVar("_Value")
UNKNOWN = object()  # "not known without the minute bars"



@dataclass(frozen=True)
class Shock:
    """A price move by ``factor`` at instant ``at_epoch`` (seconds) for one symbol."""

    at_epoch: float
    factor: float
    reason: str


def to_epoch(moment: datetime) -> float:
    if moment.tzinfo is None:
        raise ValueError("naive datetime: every timestamp in this system must be timezone-aware")
    return moment.timestamp()


@functools.lru_cache(maxsize=32768)
def midnight_et_utc(day: date) -> datetime:
    """Midnight America/New_York of ``day``, in UTC (Alpaca's daily bar timestamp)."""
    return datetime.combine(day, time(0, 0), EXCHANGE_TZ).astimezone(UTC)


def apply_shocks(day: DayArrays, shocks: Sequence[Shock]) -> DayArrays:
    """``day`` with every shock applied (see the module docstring for the rule)."""
    if not shocks or len(day) == 0:
        return day
    start = float(day.ts[0])
    end = float(day.ts[-1]) + 60.0
    relevant = [s for s in shocks if s.at_epoch < end]
    if not relevant:
        return day
    ts = day.ts.astype(np.float64)
    o, h, l, c, vw = (a.copy() for a in (day.o, day.h, day.l, day.c, day.vw))
    for shock in relevant:
        if shock.at_epoch <= start:
            for a in (o, h, l, c, vw):
                a *= shock.factor
            continue
        after = ts >= shock.at_epoch
        for a in (o, h, l, c, vw):
            a[after] *= shock.factor
        inside = (ts < shock.at_epoch) & (ts + 60.0 > shock.at_epoch)
        if inside.any():
            c[inside] *= shock.factor
            h[inside] = np.maximum(h[inside], c[inside])
            l[inside] = np.minimum(l[inside], c[inside])
    # Bars that end before the first shock keep their exact values; the rest are rounded.
    first = int(np.searchsorted(ts + 60.0, min(s.at_epoch for s in relevant), side="right"))
    for a in (o, h, l, c, vw):
        np.round(a[first:], 4, out=a[first:])
    h = np.maximum(h, np.maximum(o, c))
    l = np.minimum(l, np.minimum(o, c))
    vw = np.clip(vw, l, h)
    return DayArrays(day.session, day.ts, o, h, l, c, day.v, day.n, vw)


def remember(memo: dict[tuple[str, float], _Value], key: tuple[str, float], value: _Value) -> None:
    """Store ``value`` in a bounded memo (emptied when full)."""
    if len(memo) >= MEMO_SIZE:
        memo.clear()
    memo[key] = value


def first_reaching_short(
    day: DayArrays, a: int, b: int, tests: Iterable[tuple[float, float, float]]
) -> datetime | None:
    """:meth:`Market.first_bar_reaching` over the few bars ``a..b-1``, without array work."""
    stamps = day.ts[a:b].tolist()
    rows = list(zip(day.o[a:b].tolist(), day.h[a:b].tolist(), day.l[a:b].tolist(), day.c[a:b].tolist()))
    checks = list(tests)
    for stamp, row in zip(stamps, rows):
        low, high = min(row), max(row)
        for from_epoch, low_at_most, high_at_least in checks:
            if stamp >= from_epoch and (low_at_most == math.inf or low <= low_at_most or high >= high_at_least):
                return datetime.fromtimestamp(stamp, UTC)
    return None


def aggregate(day: DayArrays, mask: np.ndarray | None = None) -> tuple[float, float, float, float, int, int, float] | None:
    """(o, h, l, c, v, n, vw) over the bars selected by ``mask`` (all when None)."""
    if mask is not None:
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return None
        lo, hi = int(idx[0]), int(idx[-1]) + 1
        if hi - lo != idx.size:
            raise ValueError("aggregate needs a contiguous selection of bars")
    else:
        lo, hi = 0, len(day)
        if hi == 0:
            return None
    return aggregate_range(day, lo, hi)


def aggregate_range(day: DayArrays, lo: int, hi: int) -> tuple[float, float, float, float, int, int, float]:
    """:func:`aggregate` over bars ``lo..hi-1`` (``lo < hi``)."""
    v = day.v[lo:hi]
    volume = int(v.sum())
    if volume > 0:
        vw = float(np.dot(day.vw[lo:hi], v) / volume)
    else:
        vw = float(day.vw[lo:hi].mean())
    low = float(day.l[lo:hi].min())
    high = float(day.h[lo:hi].max())
    return (
        float(day.o[lo]),
        high,
        low,
        float(day.c[hi - 1]),
        volume,
        int(day.n[lo:hi].sum()),
        round(min(max(vw, low), high), 4),
    )


def pct_factor(pct: float) -> float:
    value = float(pct)
    if not math.isfinite(value) or value <= -100.0:
        raise ValueError(f"pct must be a finite percentage above -100, got {pct!r}")
    return 1.0 + value / 100.0


def hash_symbol(symbol: str) -> int:
    """A stable (process-independent) 32-bit hash of a symbol."""
    return zlib.crc32(symbol.encode("utf-8"))
