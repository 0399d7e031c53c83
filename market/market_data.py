"""Market data as the strategies see it: bar series and one symbol's view of the market.

:class:`BarSeries` holds OHLCV bars as read-only float64 numpy arrays, oldest first, with
``ts`` in int64 epoch seconds UTC (the bar's *start*, as Alpaca stamps it; a daily bar is
stamped at midnight New York time of its session). :class:`MarketData` bundles what one
cycle knows about one symbol. :func:`load_csv_bars` reads the bar files of the shared test
data (and any CSV in that format) with one clear error per bad line.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from core.clock import EXCHANGE_TZ
from core.errors import DataQualityError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_COLUMNS = ("open", "high", "low", "close", "volume")
#: Dearest price a CSV bar may hold: no US stock has come near it, and a larger number
#: (1e300) overflows indicator arithmetic. simulator.csv_source.MAX_PRICE is the same rule.
MAX_BAR_PRICE = 10_000_000.0
#: Largest volume of one bar (the whole US market trades ~1e10 shares a day).
MAX_BAR_VOLUME = 1_000_000_000_000.0
_SECONDS_PER_DAY = 86_400


class BarLike(Protocol):
    """Anything with Alpaca's bar attributes (``models.Bar`` and friends)."""

    t: datetime
    o: Any
    h: Any
    l: Any  # noqa: E741 - Alpaca's field name
    c: Any
    v: Any


def _frozen_array(values: Any, dtype: type, name: str) -> npt.NDArray[Any]:
    array = np.array(values, dtype=dtype, copy=True)
    if array.ndim != 1:
        raise ValueError(f"BarSeries.{name} must be one-dimensional, got shape {array.shape}")
    array.flags.writeable = False
    return array


@dataclass(frozen=True, eq=False)
class BarSeries:
    """OHLCV bars, oldest first; arrays are read-only so a series can be shared safely.

    Construction checks that all arrays have the same length and that timestamps strictly
    increase; anything else raises :class:`core.errors.DataQualityError` naming the problem.
    """

    ts: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray

    def __post_init__(self) -> None:
        object.__setattr__(self, "ts", _frozen_array(self.ts, np.int64, "ts"))
        for name in _COLUMNS:
            object.__setattr__(self, name, _frozen_array(getattr(self, name), np.float64, name))
        lengths = {name: len(getattr(self, name)) for name in ("ts", *_COLUMNS)}
        if len(set(lengths.values())) != 1:
            raise DataQualityError(f"bar arrays differ in length: {lengths}")
        if len(self.ts) > 1:
            steps = np.diff(self.ts)
            bad = np.flatnonzero(steps <= 0)
            if bad.size:
                i = int(bad[0]) + 1
                raise DataQualityError(
                    f"bar timestamps must strictly increase: bar {i} at {int(self.ts[i])} "
                    f"follows {int(self.ts[i - 1])}"
                )

    # -- construction -----------------------------------------------------------------

    @classmethod
    def empty(cls) -> BarSeries:
        """A series with no bars."""
        return cls.from_arrays([], [], [], [], [], [])

    @classmethod
    def from_arrays(
        cls,
        ts: Sequence[int] | npt.ArrayLike,
        open: npt.ArrayLike,  # noqa: A002 - OHLC vocabulary
        high: npt.ArrayLike,
        low: npt.ArrayLike,
        close: npt.ArrayLike,
        volume: npt.ArrayLike,
    ) -> BarSeries:
        """Bars from parallel arrays (``ts`` in epoch seconds UTC)."""
        return cls(
            ts=np.asarray(ts, dtype=np.int64),
            open=np.asarray(open, dtype=np.float64),
            high=np.asarray(high, dtype=np.float64),
            low=np.asarray(low, dtype=np.float64),
            close=np.asarray(close, dtype=np.float64),
            volume=np.asarray(volume, dtype=np.float64),
        )

    @classmethod
    def from_bars(cls, bars: Iterable[BarLike]) -> BarSeries:
        """Bars from objects with ``t`` (aware datetime) and ``o, h, l, c, v`` (``models.Bar``).

        Prices may be ``Decimal`` or ``float``; they become float64 here, the edge where
        market data enters the numeric world of indicators.
        """
        rows = list(bars)
        ts = np.empty(len(rows), dtype=np.int64)
        values = np.empty((5, len(rows)), dtype=np.float64)
        for i, bar in enumerate(rows):
            moment = bar.t
            if moment.tzinfo is None:
                raise DataQualityError(f"bar {i} has a naive timestamp {moment!r}")
            ts[i] = int(moment.timestamp())
            values[0, i] = float(bar.o)
            values[1, i] = float(bar.h)
            values[2, i] = float(bar.l)
            values[3, i] = float(bar.c)
            values[4, i] = float(bar.v)
        return cls(ts, values[0], values[1], values[2], values[3], values[4])

    # -- views ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.ts)

    def __repr__(self) -> str:
        if not len(self):
            return "BarSeries(0 bars)"
        first = datetime.fromtimestamp(int(self.ts[0]), timezone.utc).isoformat()
        last = datetime.fromtimestamp(int(self.ts[-1]), timezone.utc).isoformat()
        return f"BarSeries({len(self)} bars, {first} .. {last}, last close {self.close[-1]:g})"

    def tail(self, n: int) -> BarSeries:
        """The last ``n`` bars (all of them when fewer exist); shares memory, no copy."""
        if n < 0:
            raise ValueError(f"tail(n) needs n >= 0, got {n}")
        start = max(0, len(self) - n)
        if start == 0:
            return self  # read-only: the whole series is its own tail
        return BarSeries._trusted(
            self.ts[start:],
            self.open[start:],
            self.high[start:],
            self.low[start:],
            self.close[start:],
            self.volume[start:],
        )

    def slice(self, start: int, stop: int) -> BarSeries:
        """Bars ``start .. stop - 1`` (positions, as ``list[start:stop]``); shares memory, no
        copy, no re-validation (a slice of a valid series is valid)."""
        return BarSeries._trusted(
            self.ts[start:stop],
            self.open[start:stop],
            self.high[start:stop],
            self.low[start:stop],
            self.close[start:stop],
            self.volume[start:stop],
        )

    def append(
        self, ts: int, open: float, high: float, low: float, close: float, volume: float  # noqa: A002
    ) -> BarSeries:
        """A new series with one more bar; a bar with the last bar's ``ts`` replaces it.

        Replacing is how a still-forming bar (today's partial daily bar) is updated.
        A bar older than the last one raises :class:`core.errors.DataQualityError`.
        """
        ts = int(ts)
        keep = len(self)
        if keep and ts == int(self.ts[-1]):
            keep -= 1
        elif keep and ts < int(self.ts[-1]):
            raise DataQualityError(
                f"cannot append bar at {ts}: it is older than the last bar at {int(self.ts[-1])}"
            )
        # Only the new bar needs checking (its time was, just above): the rest is a valid
        # series already, so skip re-validating the whole history on every cycle.
        # One allocation for the five price columns (each row a contiguous read-only array).
        times = np.empty(keep + 1, dtype=np.int64)
        times[:keep] = self.ts[:keep]
        times[keep] = ts
        block = np.empty((5, keep + 1), dtype=np.float64)
        block[0, :keep] = self.open[:keep]
        block[1, :keep] = self.high[:keep]
        block[2, :keep] = self.low[:keep]
        block[3, :keep] = self.close[:keep]
        block[4, :keep] = self.volume[:keep]
        block[:, keep] = (float(open), float(high), float(low), float(close), float(volume))
        times.flags.writeable = False
        block.flags.writeable = False
        series = BarSeries._trusted(times, block[0], block[1], block[2], block[3], block[4])
        # The new series' first ``keep`` bars are this series' bars: what is derived from them
        # (see :meth:`memo`) is shared with this series, which a trading loop keeps all session.
        series.__dict__["_rows_of"] = (self.memo(), keep)
        return series

    def memo(self) -> dict[Any, Any]:
        """A dict for values computed from this series' bars (which never change), so that
        they are computed once per series; keys name what was computed and from which bars."""
        memo: dict[Any, Any] | None = self.__dict__.get("_memo")
        if memo is None:
            memo = self.__dict__["_memo"] = {}
        return memo

    def prefix_memo(self, prefix: int) -> dict[Any, Any] | None:
        """The memo of a series whose first ``prefix`` bars are exactly this series' first
        ``prefix`` bars (the series this one was appended to), or None when unknown."""
        rows_of = self.__dict__.get("_rows_of")
        if rows_of is not None and rows_of[1] == prefix:
            return rows_of[0]  # type: ignore[no-any-return]
        return None

    @classmethod
    def _trusted(cls, *arrays: npt.NDArray[Any]) -> BarSeries:
        """Wrap arrays already validated (slices of a valid series) without copying."""
        series = object.__new__(cls)
        ts, open_, high, low, close, volume = arrays
        # The frozen dataclass's fields live in the instance dict: fill it in one step.
        series.__dict__.update(ts=ts, open=open_, high=high, low=low, close=close, volume=volume)
        return series


# -- exchange dates -------------------------------------------------------------------------


def exchange_day_numbers(ts: npt.ArrayLike) -> IntArray:
    """Days since 1970-01-01 of each timestamp's date on the exchange's clock (New York).

    Daylight-saving offsets are looked up once per distinct UTC hour, so this stays fast
    on long intraday histories.
    """
    seconds = np.asarray(ts, dtype=np.int64)
    if seconds.size == 0:
        return np.empty(0, dtype=np.int64)
    hours, index = np.unique(seconds // 3600, return_inverse=True)
    offsets = np.fromiter(
        (_utc_offset_seconds(int(hour) * 3600) for hour in hours),
        dtype=np.int64,
        count=len(hours),
    )
    local = seconds + offsets[index.reshape(-1)]
    return local // _SECONDS_PER_DAY


def _utc_offset_seconds(epoch: int) -> int:
    offset = datetime.fromtimestamp(epoch, EXCHANGE_TZ).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def session_start_mask(ts: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """True at the first bar of each New York trading date (for per-session VWAP)."""
    days = exchange_day_numbers(ts)
    mask = np.ones(len(days), dtype=bool)
    if len(days) > 1:
        mask[1:] = days[1:] != days[:-1]
    return mask


# Median cumulative share of a regular session's volume traded after m minutes, measured on
# 28 complete sessions of the shared data (AAPL, MSFT, TSLA 2021-08; SPY 2013-10, 2020-01;
# AMZN 2021-01, 2025-01). Volume is U-shaped: a quarter of the session's time holds about
# 44% of its volume. Used to project a partial day's volume to a full day.
_VOLUME_PROFILE_MINUTES = np.array(
    [0, 15, 30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 330, 360, 375, 390], dtype=float
)
_VOLUME_PROFILE_SHARE = np.array(
    [0.0, 0.116, 0.178, 0.285, 0.373, 0.438, 0.501, 0.555, 0.61, 0.656, 0.708, 0.756,
     0.805, 0.864, 0.907, 1.0]
)
_REGULAR_OPEN = time(9, 30)
_REGULAR_MINUTES = 390.0


def expected_volume_share(moment: datetime) -> float:
    """Typical fraction of a regular session's volume already traded at ``moment``.

    0.0 before 09:30 New York, 1.0 from 16:00, the measured intraday profile in between
    (early closes are not modelled: the day is treated as a full session).
    """
    local = moment.astimezone(EXCHANGE_TZ)
    opened = datetime.combine(local.date(), _REGULAR_OPEN, EXCHANGE_TZ)
    minutes = (local - opened).total_seconds() / 60.0
    if minutes <= 0:
        return 0.0
    if minutes >= _REGULAR_MINUTES:
        return 1.0
    return float(np.interp(minutes, _VOLUME_PROFILE_MINUTES, _VOLUME_PROFILE_SHARE))


# -- one symbol's market --------------------------------------------------------------------


@dataclass
class MarketData:
    """What one cycle knows about one symbol, handed to every strategy.

    ``daily`` includes today's partial daily bar as its last row while a session is under
    way; ``benchmark`` is the SPY daily series used for market context; ``regime`` comes
    from the AI analyzer's detector; ``defensive`` is set by the loop when defensive mode
    is on (near the circuit breaker, high volatility, drawdown or gap risk).
    ``derived`` caches values computed from this data (e.g. the indicator snapshot) so
    that several strategies do not recompute them.
    """

    symbol: str
    now: datetime
    daily: BarSeries
    intraday: BarSeries | None = None
    last_price: float = math.nan
    bid: float | None = None
    ask: float | None = None
    prev_close: float = math.nan
    benchmark: BarSeries | None = None
    regime: str | None = None
    defensive: bool = False
    news: list[str] = field(default_factory=list)
    # When the trade (or minute bar) behind ``last_price`` happened: an entry is never based
    # on an older price than the staleness bound (engine.opportunities). None: not known.
    last_price_at: datetime | None = None
    # Completed intraday bars by timeframe ("1Min", "5Min", "15Min", "1Hour"; market.timeframes)
    # for the multi-timeframe analysis; empty where the data has no minutes.
    timeframes: dict[str, BarSeries] = field(default_factory=dict, repr=False, compare=False)
    derived: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.now.tzinfo is None:
            raise ValueError("MarketData.now must be timezone-aware")

    @property
    def spread_pct(self) -> float | None:
        """(ask - bid) / mid, or None without a valid two-sided quote."""
        if self.bid is None or self.ask is None or self.bid <= 0 or self.ask < self.bid:
            return None
        mid = (self.bid + self.ask) / 2.0
        return (self.ask - self.bid) / mid

    @property
    def volume_progress(self) -> float:
        """Expected share of today's volume already in the last daily bar.

        1.0 when the last daily bar is a completed session (or the session is over);
        otherwise the typical intraday share at :attr:`now` (see
        :func:`expected_volume_share`). Strategies divide a partial day's volume ratio by
        this to compare like with like.
        """
        cached = self.derived.get("volume_progress")
        if cached is not None and cached[0] is self.daily:
            return float(cached[1])
        progress = 1.0
        if len(self.daily):
            today, share = _day_and_share(self.now)
            if _exchange_date(int(self.daily.ts[-1])) == today:
                progress = share
        self.derived["volume_progress"] = (self.daily, progress)
        return progress


# Every symbol of a cycle has the same ``now`` and (nearly always) the same last bar stamp:
# their exchange dates and volume share are looked up, not recomputed, per symbol. Small
# memos, cleared when full.
_DATE_MEMO: dict[int, date] = {}
_NOW_MEMO: dict[datetime, tuple[date, float]] = {}
_MEMO_SIZE = 256


def _exchange_date(epoch: int) -> date:
    day = _DATE_MEMO.get(epoch)
    if day is None:
        if len(_DATE_MEMO) >= _MEMO_SIZE:
            _DATE_MEMO.clear()
        day = _DATE_MEMO[epoch] = datetime.fromtimestamp(epoch, EXCHANGE_TZ).date()
    return day


def _day_and_share(now: datetime) -> tuple[date, float]:
    """``now``'s exchange date and :func:`expected_volume_share` at ``now`` (``now`` aware)."""
    known = _NOW_MEMO.get(now)
    if known is None:
        if len(_NOW_MEMO) >= _MEMO_SIZE:
            _NOW_MEMO.clear()
        known = _NOW_MEMO[now] = (now.astimezone(EXCHANGE_TZ).date(), expected_volume_share(now))
    return known


# -- CSV files ------------------------------------------------------------------------------


def load_csv_bars(path: str | Path) -> BarSeries:
    """Bars from a CSV with header ``timestamp,open,high,low,close,volume[,...]``.

    ``timestamp`` is a session date ``YYYY-MM-DD`` (stamped at midnight New York, as Alpaca
    stamps daily bars) or an ISO-8601 time with a UTC offset. Extra columns are ignored.
    Raises :class:`core.errors.DataQualityError` naming the file, line and problem: text that is
    not UTF-8 (a byte-order mark is fine), a price not finite, not > 0 or above
    :data:`MAX_BAR_PRICE`, a date on which the NYSE held no session.
    """
    source = Path(path)
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise DataQualityError(f"{source}: cannot read bar file: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark (spreadsheet export) is accepted
    except UnicodeDecodeError as exc:
        line_no = raw.count(b"\n", 0, exc.start) + 1
        raise DataQualityError(
            f"{source}:{line_no}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8"
        ) from None
    with io.StringIO(text, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise DataQualityError(f"{source}: empty file, expected a header line")
        names = [name.strip().lower() for name in header]
        missing = [name for name in ("timestamp", *_COLUMNS) if name not in names]
        if missing:
            raise DataQualityError(
                f"{source}:1: header lacks column(s) {', '.join(missing)} (found {', '.join(names)})"
            )
        where = [names.index(name) for name in ("timestamp", *_COLUMNS)]
        stamps: list[int] = []
        columns: list[list[float]] = [[] for _ in _COLUMNS]
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) < len(names):
                raise DataQualityError(
                    f"{source}:{line}: expected {len(names)} fields, found {len(row)}"
                )
            stamp = _parse_stamp(row[where[0]].strip(), source, line)
            if stamps and stamp <= stamps[-1]:
                raise DataQualityError(
                    f"{source}:{line}: timestamp {row[where[0]].strip()!r} does not follow "
                    "the previous row (rows must be strictly ascending)"
                )
            stamps.append(stamp)
            for k, name in enumerate(_COLUMNS):
                columns[k].append(_parse_number(row[where[k + 1]], name, source, line))
            _check_ohlc(columns[0][-1], columns[1][-1], columns[2][-1], columns[3][-1], source, line)
    if not stamps:
        raise DataQualityError(f"{source}: no bars after the header")
    return BarSeries.from_arrays(stamps, *columns)


def _check_ohlc(o: float, h: float, lo: float, c: float, source: Path, line: int) -> None:
    """A bar whose high is below its open or close (or low above them) is a broken row: the
    backtest's reader refuses it, and training and ``evaluate`` must too, or their labels
    (stop and target reached by the low and high) are computed from nonsense."""
    if h < max(o, c):
        raise DataQualityError(f"{source}:{line}: high {h:g} is below max(open {o:g}, close {c:g})")
    if lo > min(o, c):
        raise DataQualityError(f"{source}:{line}: low {lo:g} is above min(open {o:g}, close {c:g})")


def _parse_stamp(text: str, source: Path, line: int) -> int:
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            _check_session(day, text, source, line)
            return int(datetime.combine(day, time(0), EXCHANGE_TZ).timestamp())
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise DataQualityError(
            f"{source}:{line}: timestamp {text!r} is neither YYYY-MM-DD nor ISO-8601"
        ) from None
    if moment.tzinfo is None:
        raise DataQualityError(
            f"{source}:{line}: timestamp {text!r} has no UTC offset (write e.g. +00:00)"
        )
    return int(moment.timestamp())


def _parse_number(text: str, name: str, source: Path, line: int) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataQualityError(f"{source}:{line}: {name} {text.strip()!r} is not a number") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and name != "volume"):
        allowed = ">= 0" if name == "volume" else "> 0"
        raise DataQualityError(f"{source}:{line}: {name} {text.strip()!r} must be finite and {allowed}")
    limit = MAX_BAR_VOLUME if name == "volume" else MAX_BAR_PRICE
    if value > limit:
        raise DataQualityError(f"{source}:{line}: {name} {text.strip()!r} must be at most {limit:,.0f}")
    return value


# -- sanity of live market data -------------------------------------------------------------

#: The live data checks hold prices to the same ceiling as CSV bars (one rule, one number).
MAX_SANE_PRICE = MAX_BAR_PRICE
#: A price more than this factor away from the last completed close is not believed (a 50x
#: "quote" is a feed error; real splits stay well inside, the largest common ones are 1:20).
MAX_PRICE_MOVE = 25.0


def price_problem(value: Any, reference: float | None = None) -> str | None:
    """Why ``value`` is no usable price (None when it is): not finite, not positive, absurdly
    large, or more than :data:`MAX_PRICE_MOVE` times away from ``reference`` (a last close)."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return f"not a number: {value!r}"
    if not math.isfinite(number):
        return f"not finite: {value}"
    if number <= 0:
        return f"not positive: {value}"
    if number > MAX_SANE_PRICE:
        return f"absurd: {value} (above {MAX_SANE_PRICE:,.0f})"
    if reference is not None and math.isfinite(reference) and reference > 0:
        ratio = number / reference
        if ratio > MAX_PRICE_MOVE or ratio < 1 / MAX_PRICE_MOVE:
            return f"absurd: {value} is {ratio:.4g}x the last close {reference:g}"
    return None


def series_problem(series: BarSeries) -> str | None:
    """Why a bar series is unusable (None when it is fine): a price that is not finite, not
    positive or absurd, a high below its low, a negative or non-finite volume, or one close
    more than :data:`MAX_PRICE_MOVE` times away from the one before it."""
    if not len(series):
        return None
    prices = np.stack([series.open, series.high, series.low, series.close])
    bad = ~np.isfinite(prices) | (prices <= 0) | (prices > MAX_SANE_PRICE)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        return f"bar {col}: {_COLUMNS[row]} {prices[row, col]!r} is not a usable price"
    if (series.high < series.low).any():
        col = int(np.flatnonzero(series.high < series.low)[0])
        return f"bar {col}: high {series.high[col]:g} below low {series.low[col]:g}"
    volume_bad = ~np.isfinite(series.volume) | (series.volume < 0)
    if volume_bad.any():
        col = int(np.flatnonzero(volume_bad)[0])
        return f"bar {col}: volume {series.volume[col]!r} is not usable"
    if len(series) > 1:
        ratio = series.close[1:] / series.close[:-1]
        jumps = (ratio > MAX_PRICE_MOVE) | (ratio < 1 / MAX_PRICE_MOVE)
        if jumps.any():
            col = int(np.flatnonzero(jumps)[0]) + 1
            return f"bar {col}: close {series.close[col]:g} is {ratio[col - 1]:.4g}x the close before it"
    return None

def _check_session(day: date, text: str, source: Path, line: int) -> None:
    """A daily bar dated on a weekend or NYSE holiday is a data error (checked where the
    calendar reaches, 1990-2035)."""
    from market.trading_calendar import FIRST_DATE, LAST_DATE, TradingCalendar

    if FIRST_DATE <= day <= LAST_DATE and not TradingCalendar().is_session(day):
        what = f"a {day:%A}" if day.weekday() >= 5 else "an NYSE holiday"
        raise DataQualityError(
            f"{source}:{line}: date {text!r} is {what}, not a trading session "
            "(daily rows must be NYSE session dates)"
        )


def day_timestamp(day: date) -> int:
    """Epoch seconds of midnight New York on ``day`` (how daily bars are stamped)."""
    return int(datetime.combine(day, time(0), EXCHANGE_TZ).timestamp())


__all__ = [
    "BarLike",
    "BarSeries",
    "MarketData",
    "day_timestamp",
    "exchange_day_numbers",
    "expected_volume_share",
    "load_csv_bars",
    "price_problem",
    "series_problem",
    "session_start_mask",
]
