"""Reading and checking the CSV bar files that :class:`simulator.csv_source.CsvSource` replays.

One function per kind of file (minute bars, daily bars, minute quotes), each returning plain
arrays or rows; a malformed file raises :class:`CsvDataError` naming the file, the line and
the problem (the rules are listed in :mod:`simulator.csv_source`).
"""

from __future__ import annotations

import csv
import functools
import io
import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import numpy as np

from core.clock import EXCHANGE_TZ
from market.trading_calendar import FIRST_DATE, LAST_DATE, TradingCalendar

_MINUTE_FILE = re.compile(r"^(?P<symbol>[A-Za-z0-9.\-]+?)-1m-(?!quotes-).*\.csv$")
_QUOTE_FILE = re.compile(r"^(?P<symbol>[A-Za-z0-9.\-]+?)-1m-quotes-.*\.csv$")
_DAILY_FILE = re.compile(r"^(?P<symbol>[A-Za-z0-9.\-]+?)-1d-.*\.csv$")
_BAR_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
_QUOTE_COLUMNS = ("timestamp", "bid_close", "ask_close", "bid_size", "ask_size")
NOMINAL_TRADE_SIZE = 100
#: Dearest price a bar may hold. No US stock has traded near it (BRK.A peaked below 1e6);
#: a larger number is a data error, and squared in indicators it overflows a float.
#: (market_data.MAX_BAR_PRICE holds the same rule for the daemon's own CSV reader.)
MAX_PRICE = 10_000_000.0
#: Largest volume or trade count of one bar (the whole US market trades ~1e10 shares a day);
#: beyond it a number is a data error and overflows the int64 arrays.
MAX_VOLUME = 1_000_000_000_000


class CsvDataError(ValueError):
    """A CSV data file is malformed: ``path``, ``line`` (1-based) and what is wrong."""

    def __init__(self, path: Path, line: int | None, problem: str) -> None:
        self.path = path
        self.line = line
        self.problem = problem
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")


@dataclass
class _MinuteSeries:
    ts: np.ndarray
    o: np.ndarray
    h: np.ndarray
    l: np.ndarray  # noqa: E741
    c: np.ndarray
    v: np.ndarray
    n: np.ndarray
    vw: np.ndarray
    days: dict[date, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class _DailyRow:
    o: float
    h: float
    l: float  # noqa: E741
    c: float
    v: int
    n: int | None


@dataclass
class _QuoteSeries:
    ts: np.ndarray
    bid: np.ndarray
    ask: np.ndarray
    bid_size: np.ndarray
    ask_size: np.ndarray
    days: dict[date, tuple[int, int]] = field(default_factory=dict)


def _float(path: Path, line: int, name: str, text: str, *, positive: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise CsvDataError(path, line, f"column {name!r}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise CsvDataError(path, line, f"column {name!r}: {text!r} is not a finite number")
    if positive and value <= 0:
        raise CsvDataError(path, line, f"column {name!r}: {text!r} must be greater than 0")
    if abs(value) > MAX_PRICE:
        raise CsvDataError(path, line, f"column {name!r}: {text!r} must be at most {MAX_PRICE:,.0f}")
    return value


def _volume(path: Path, line: int, name: str, text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise CsvDataError(path, line, f"column {name!r}: {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0 or value != int(value) or value > MAX_VOLUME:
        raise CsvDataError(path, line, f"column {name!r}: {text!r} must be a whole number from 0 "
                                       f"to {MAX_VOLUME:,.0f}")
    return int(value)


def _header(path: Path, rows: list[list[str]], required: tuple[str, ...]) -> dict[str, int]:
    if not rows:
        raise CsvDataError(path, 1, "the file is empty (expected a header line)")
    names = [h.strip().lower() for h in rows[0]]
    missing = [c for c in required if c not in names]
    if missing:
        raise CsvDataError(
            path, 1, f"header lacks column(s) {', '.join(missing)} (found: {', '.join(names)})"
        )
    return {name: i for i, name in enumerate(names)}


def _read_rows(path: Path) -> list[list[str]]:
    """The file's rows; a leading UTF-8 byte-order mark (spreadsheet exports) is dropped."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CsvDataError(path, None, f"cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise CsvDataError(path, line, f"not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8") from None
    try:
        return [row for row in csv.reader(io.StringIO(text, newline=""))]
    except csv.Error as exc:
        raise CsvDataError(path, None, f"unreadable CSV ({exc})") from None


def _check_session(path: Path, line: int, day: date) -> None:
    """A bar must fall on an NYSE session day (checked where the calendar reaches)."""
    if FIRST_DATE <= day <= LAST_DATE and not _calendar().is_session(day):
        what = f"a {day:%A}" if day.weekday() >= 5 else "an NYSE holiday"
        raise CsvDataError(path, line, f"date {day.isoformat()} is {what}, not a trading session "
                                       "(bars must be dated on NYSE sessions)")


@functools.lru_cache(maxsize=1)
def _calendar() -> TradingCalendar:
    return TradingCalendar()


def _check_ohlc(path: Path, line: int, o: float, h: float, lo: float, c: float) -> None:
    if h < max(o, c):
        raise CsvDataError(path, line, f"high {h} is below max(open {o}, close {c})")
    if lo > min(o, c):
        raise CsvDataError(path, line, f"low {lo} is above min(open {o}, close {c})")


def _parse_moment(path: Path, line: int, text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CsvDataError(path, line, f"timestamp {text!r} is not ISO-8601") from None
    if moment.tzinfo is None:
        raise CsvDataError(path, line, f"timestamp {text!r} has no UTC offset")
    return moment


def _row_values(path: Path, line: int, row: list[str], width: int) -> list[str]:
    if len(row) != width:
        raise CsvDataError(path, line, f"expected {width} columns, found {len(row)}")
    return row


def read_minute_file(path: Path) -> dict[str, np.ndarray]:
    """Parse and validate one minute-bar file into arrays (see the module docstring)."""
    rows = _read_rows(path)
    cols = _header(path, rows, _BAR_COLUMNS)
    width = len(rows[0])
    has_n = "trade_count" in cols
    has_vw = "vwap" in cols
    count = len(rows) - 1
    ts = np.empty(count, dtype=np.int64)
    prices = np.empty((4, count))
    volume = np.empty(count, dtype=np.int64)
    trades = np.empty(count, dtype=np.int64)
    vwap = np.empty(count)
    lines = np.empty(count, dtype=np.int64)
    previous = None
    kept = 0
    for k, row in enumerate(rows[1:]):
        line = k + 2
        if not row:
            continue
        _row_values(path, line, row, width)
        moment = _parse_moment(path, line, row[cols["timestamp"]])
        stamp = int(moment.timestamp())
        if stamp % 60:
            raise CsvDataError(path, line, f"timestamp {row[cols['timestamp']]!r} is not on a minute")
        if previous is not None and stamp <= previous:
            raise CsvDataError(path, line, "timestamps are not strictly ascending")
        previous = stamp
        o = _float(path, line, "open", row[cols["open"]], positive=True)
        h = _float(path, line, "high", row[cols["high"]], positive=True)
        lo = _float(path, line, "low", row[cols["low"]], positive=True)
        c = _float(path, line, "close", row[cols["close"]], positive=True)
        _check_ohlc(path, line, o, h, lo, c)
        v = _volume(path, line, "volume", row[cols["volume"]])
        n = _volume(path, line, "trade_count", row[cols["trade_count"]]) if has_n else max(
            1 if v > 0 else 0, round(v / NOMINAL_TRADE_SIZE)
        )
        vw = (
            _float(path, line, "vwap", row[cols["vwap"]], positive=True)
            if has_vw
            else (h + lo + c) / 3.0
        )
        ts[kept] = stamp
        prices[:, kept] = (o, h, lo, c)
        volume[kept] = v
        trades[kept] = n
        vwap[kept] = min(max(vw, lo), h)
        lines[kept] = line
        kept += 1
    if kept == 0:
        raise CsvDataError(path, None, "no bars after the header")
    for day, (first, _end) in _group_days(ts[:kept]).items():
        _check_session(path, int(lines[first]), day)
    return {
        "ts": ts[:kept],
        "o": prices[0, :kept].copy(),
        "h": prices[1, :kept].copy(),
        "l": prices[2, :kept].copy(),
        "c": prices[3, :kept].copy(),
        "v": volume[:kept],
        "n": trades[:kept],
        "vw": vwap[:kept],
    }


def read_daily_file(path: Path) -> dict[date, _DailyRow]:
    """Parse and validate one daily-bar file: session date -> row."""
    rows = _read_rows(path)
    cols = _header(path, rows, _BAR_COLUMNS)
    width = len(rows[0])
    has_n = "trade_count" in cols
    out: dict[date, _DailyRow] = {}
    previous: date | None = None
    for k, row in enumerate(rows[1:]):
        line = k + 2
        if not row:
            continue
        _row_values(path, line, row, width)
        text = row[cols["timestamp"]].strip()
        try:
            day = date.fromisoformat(text[:10])
        except ValueError:
            raise CsvDataError(path, line, f"date {text!r} is not YYYY-MM-DD") from None
        if previous is not None and day <= previous:
            raise CsvDataError(path, line, "dates are not strictly ascending")
        _check_session(path, line, day)
        previous = day
        o = _float(path, line, "open", row[cols["open"]], positive=True)
        h = _float(path, line, "high", row[cols["high"]], positive=True)
        lo = _float(path, line, "low", row[cols["low"]], positive=True)
        c = _float(path, line, "close", row[cols["close"]], positive=True)
        _check_ohlc(path, line, o, h, lo, c)
        v = _volume(path, line, "volume", row[cols["volume"]])
        n = _volume(path, line, "trade_count", row[cols["trade_count"]]) if has_n else None
        out[day] = _DailyRow(o, h, lo, c, v, n)
    if not out:
        raise CsvDataError(path, None, "no bars after the header")
    return out


def read_quote_file(path: Path) -> dict[str, np.ndarray]:
    """Parse one minute quote file; crossed or empty quotes are dropped."""
    rows = _read_rows(path)
    cols = _header(path, rows, _QUOTE_COLUMNS)
    width = len(rows[0])
    ts: list[int] = []
    bid: list[float] = []
    ask: list[float] = []
    bid_size: list[int] = []
    ask_size: list[int] = []
    previous = None
    for k, row in enumerate(rows[1:]):
        line = k + 2
        if not row:
            continue
        _row_values(path, line, row, width)
        stamp = int(_parse_moment(path, line, row[cols["timestamp"]]).timestamp())
        if previous is not None and stamp <= previous:
            raise CsvDataError(path, line, "timestamps are not strictly ascending")
        previous = stamp
        b = _float(path, line, "bid_close", row[cols["bid_close"]], positive=False)
        a = _float(path, line, "ask_close", row[cols["ask_close"]], positive=False)
        bs = _volume(path, line, "bid_size", row[cols["bid_size"]])
        az = _volume(path, line, "ask_size", row[cols["ask_size"]])
        if b <= 0 or a <= 0 or b > a:
            continue
        ts.append(stamp)
        bid.append(b)
        ask.append(a)
        bid_size.append(bs)
        ask_size.append(az)
    return {
        "ts": np.asarray(ts, dtype=np.int64),
        "bid": np.asarray(bid),
        "ask": np.asarray(ask),
        "bid_size": np.asarray(bid_size, dtype=np.int64),
        "ask_size": np.asarray(ask_size, dtype=np.int64),
    }


def _group_days(ts: np.ndarray) -> dict[date, tuple[int, int]]:
    """Exchange date -> (first index, end index) for ascending epoch seconds."""
    days: dict[date, tuple[int, int]] = {}
    if ts.size == 0:
        return days
    # Offsets change at most twice a year; converting each distinct hour is enough.
    hours = ts // 3600
    change = np.flatnonzero(np.diff(hours)) + 1
    starts = np.concatenate(([0], change))
    labels: list[date] = []
    for s in starts.tolist():
        labels.append(datetime.fromtimestamp(int(ts[s]), EXCHANGE_TZ).date())
    ends = np.concatenate((change, [ts.size])).tolist()
    for label, s, e in zip(labels, starts.tolist(), ends):
        if label in days:
            days[label] = (days[label][0], e)
        else:
            days[label] = (s, e)
    return days
