"""The simulated market (synthetic and CSV replay), shocks and gaps, and the Market Data API."""

from __future__ import annotations

import csv
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from core.clock import EXCHANGE_TZ
from simulator.clock import SimClock
from simulator.csv_source import CsvDataError
from simulator.errors import SimApiError
from simulator.market import Market, MinuteBar
from simulator.market_data_api import MarketDataApi
from tests.conftest import SHARED_DATA
from market.trading_calendar import TradingCalendar

UTC = timezone.utc
needs_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="shared/data is not present")


@pytest.fixture(scope="module")
def cal() -> TradingCalendar:
    return TradingCalendar()


@pytest.fixture(scope="module")
def market(cal: TradingCalendar) -> Market:
    return Market.synthetic(seed=7, calendar=cal)


@pytest.fixture(scope="module")
def csv_market(cal: TradingCalendar) -> Market:
    if not SHARED_DATA.is_dir():
        pytest.skip("shared/data is not present")
    return Market.from_csv_dir(SHARED_DATA, symbols=["SPY", "QQQ"], calendar=cal)


def et(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=EXCHANGE_TZ).astimezone(UTC)


def arrays_equal(a: object, b: object) -> bool:
    assert a is not None and b is not None
    return all(np.array_equal(x, y) for x, y in zip(a[1:], b[1:]))  # type: ignore[index]


# -- synthetic market -------------------------------------------------------------------------


def test_same_seed_same_market_in_any_access_order(cal: TradingCalendar) -> None:
    first = Market.synthetic(seed=11, calendar=cal)
    second = Market.synthetic(seed=11, calendar=cal)
    days = [date(2024, 3, 4), date(2019, 6, 3), date(2025, 3, 4)]
    a = {(s, d): first.minute_arrays(s, d) for s in ("SPY", "TSLA") for d in days}
    b = {(s, d): second.minute_arrays(s, d) for d in reversed(days) for s in ("TSLA", "SPY")}
    for key in a:
        assert arrays_equal(a[key], b[key]), key
    other = Market.synthetic(seed=12, calendar=cal).minute_arrays("SPY", days[0])
    assert not np.array_equal(other.c, a[("SPY", days[0])].c)  # type: ignore[union-attr]


def test_default_symbols_and_realistic_price_levels(market: Market) -> None:
    assert market.symbols == ["SPY", "QQQ", "AAPL", "MSFT", "NVDA", "TSLA"]
    for symbol in market.symbols:
        price = market.price_at(symbol, et(2025, 3, 4, 12))
        assert price is not None and 20 < price < 3000, (symbol, price)
    custom = Market.synthetic(["XYZ", "SPY"], seed=7, calendar=market.calendar)
    assert custom.symbols == ["XYZ", "SPY"]
    assert custom.price_at("XYZ", et(2025, 3, 4, 12)) is not None


def test_minute_bars_are_consistent_and_inside_extended_hours(market: Market) -> None:
    cal = market.calendar
    for symbol in market.symbols:
        for session in cal.sessions(date(2025, 3, 3), date(2025, 3, 14)):
            day = market.minute_arrays(symbol, session)
            assert day is not None
            assert np.all(day.h >= np.maximum(day.o, day.c))
            assert np.all(day.l <= np.minimum(day.o, day.c))
            assert np.all(day.l > 0) and np.all(day.v > 0) and np.all(day.n >= 1)
            assert np.all((day.vw >= day.l) & (day.vw <= day.h))
            assert np.all(np.diff(day.ts) > 0)
            start, end = cal.extended_hours(session)
            assert day.ts[0] >= start.timestamp() and day.ts[-1] + 60 <= end.timestamp()
            opened, closed = cal.open_close(session)
            regular = (day.ts >= opened.timestamp()) & (day.ts < closed.timestamp())
            assert regular.sum() == 390  # every regular minute trades in these liquid names


def test_no_bars_on_holidays_or_weekends(market: Market) -> None:
    assert market.minute_arrays("SPY", date(2025, 12, 25)) is None
    assert market.minute_arrays("SPY", date(2025, 3, 8)) is None
    days = [b.t.astimezone(EXCHANGE_TZ).date() for b in market.daily_bars("SPY", date(2025, 12, 22), date(2025, 12, 31))]
    assert date(2025, 12, 25) not in days and len(days) == 7
    assert market.bar_at("SPY", et(2025, 12, 25, 11, 0)) is None


def test_regular_volume_is_u_shaped_and_extended_hours_are_thin(market: Market) -> None:
    cal = market.calendar
    opening, midday, closing, extended = [], [], [], []
    for session in cal.sessions(date(2024, 1, 2), date(2024, 2, 28)):
        day = market.minute_arrays("AAPL", session)
        assert day is not None
        opened, closed = cal.open_close(session)
        minute = (day.ts - opened.timestamp()) // 60
        opening.append(day.v[(minute >= 0) & (minute < 30)].mean())
        midday.append(day.v[(minute >= 150) & (minute < 240)].mean())
        closing.append(day.v[(minute >= 360) & (minute < 390)].mean())
        extended.append(day.v[(minute < 0) | (minute >= 390)].mean())
    assert np.mean(opening) > 1.5 * np.mean(midday)
    assert np.mean(closing) > 1.5 * np.mean(midday)
    assert np.mean(extended) < 0.05 * np.mean(midday)


def test_overnight_gaps_and_common_factor(market: Market) -> None:
    bars = {s: market.daily_bars(s, date(2023, 1, 3), date(2024, 12, 31)) for s in ("SPY", "QQQ", "TSLA")}
    tsla = bars["TSLA"]
    gaps = np.array([b.o / a.c - 1 for a, b in zip(tsla[:-1], tsla[1:])])
    assert np.mean(np.abs(gaps) > 0.01) > 0.1  # overnight gaps above 1 % are common for TSLA
    spy = np.array([b.c for b in bars["SPY"]])
    qqq = np.array([b.c for b in bars["QQQ"]])
    correlation = np.corrcoef(np.diff(np.log(spy)), np.diff(np.log(qqq)))[0, 1]
    assert correlation > 0.6


def test_history_before_the_start_is_available(market: Market) -> None:
    start = date(2025, 3, 4)
    daily = market.daily_bars("NVDA", date(2024, 1, 1), start - timedelta(days=1))
    assert len(daily) >= 250
    previous = market.calendar.sessions(date(2025, 2, 1), start - timedelta(days=1))[-10:]
    assert all(market.minute_arrays("NVDA", d) is not None for d in previous)


def test_daily_bar_aggregates_the_regular_session(market: Market) -> None:
    session = date(2025, 3, 5)
    day = market.minute_arrays("MSFT", session)
    bar = market.daily_bars("MSFT", session, session)[0]
    assert bar.t == datetime(2025, 3, 5, 5, 0, tzinfo=UTC)  # midnight ET in UTC
    opened, closed = market.calendar.open_close(session)
    regular = (day.ts >= opened.timestamp()) & (day.ts < closed.timestamp())  # type: ignore[union-attr]
    assert bar.o == day.o[regular][0] and bar.c == day.c[regular][-1]  # type: ignore[union-attr]
    assert bar.h == day.h[regular].max() and bar.l == day.l[regular].min()  # type: ignore[union-attr]
    assert bar.v == int(day.v[regular].sum())  # type: ignore[union-attr]


def test_price_and_quote_follow_the_bars(market: Market) -> None:
    t = et(2025, 3, 4, 11, 15, 20)
    bar = market.bar_at("SPY", t)
    assert bar is not None and bar.t == et(2025, 3, 4, 11, 15)
    assert market.price_at("SPY", t) == bar.o
    previous = market.bar_at("SPY", et(2025, 3, 4, 11, 14))
    assert previous is not None and market.price_at("SPY", et(2025, 3, 4, 11, 15)) == bar.o
    quote = market.quote_at("SPY", t)
    assert quote is not None and quote.bid < bar.o < quote.ask
    assert quote.ask - quote.bid < 0.05  # liquid ETF: about a cent
    pre = market.quote_at("SPY", et(2025, 3, 4, 6, 0))
    tsla = market.quote_at("TSLA", t)
    assert pre is not None and tsla is not None
    assert (tsla.ask - tsla.bid) / tsla.bid > (quote.ask - quote.bid) / quote.bid
    # Overnight the last trade is the after-hours close and the quote is from 20:00.
    night = market.quote_at("SPY", et(2025, 3, 4, 23, 0))
    assert night is not None and night.t == et(2025, 3, 4, 20, 0)
    assert market.price_at("SPY", et(2025, 3, 4, 23, 0)) == market.minute_arrays("SPY", date(2025, 3, 4)).c[-1]  # type: ignore[union-attr]


def test_minute_bars_range_and_cache_is_bounded(cal: TradingCalendar) -> None:
    m = Market.synthetic(["SPY"], seed=3, calendar=cal)
    bars = m.minute_bars("SPY", et(2025, 3, 4, 9, 30), et(2025, 3, 4, 9, 40))
    assert [b.t for b in bars] == [et(2025, 3, 4, 9, 30) + timedelta(minutes=i) for i in range(10)]
    for session in cal.sessions(date(2022, 1, 1), date(2024, 1, 1)):
        m.minute_arrays("SPY", session)
    assert 0 < m.cached_days <= m.cache_days


# -- shocks and gaps -------------------------------------------------------------------------


def test_shock_moves_prices_from_its_instant_on_only(cal: TradingCalendar) -> None:
    m = Market.synthetic(seed=5, calendar=cal)
    clean = Market.synthetic(seed=5, calendar=cal)
    at = et(2025, 3, 4, 11, 0, 30)
    before_price = m.price_at("SPY", at)
    m.shock(["SPY"], -7.5, at)
    factor = 0.925
    base = clean.minute_arrays("SPY", date(2025, 3, 4))
    day = m.minute_arrays("SPY", date(2025, 3, 4))
    assert base is not None and day is not None
    i = int(np.searchsorted(day.ts, et(2025, 3, 4, 11, 0).timestamp()))
    assert np.array_equal(day.c[:i], base.c[:i])  # earlier bars untouched
    assert day.o[i] == base.o[i] and day.c[i] == pytest.approx(base.c[i] * factor, abs=1e-4)
    assert day.l[i] <= day.c[i]
    assert np.allclose(day.o[i + 1 :], base.o[i + 1 :] * factor, atol=1e-4)
    after = m.price_at("SPY", at + timedelta(seconds=1))
    assert after == pytest.approx(before_price * factor, abs=1e-3)  # type: ignore[operator]
    quote = m.quote_at("SPY", at + timedelta(seconds=1))
    assert quote is not None and quote.bid < after < quote.ask  # type: ignore[operator]
    # The next day continues from the new level; other symbols are untouched.
    next_day = m.daily_bars("SPY", date(2025, 3, 5), date(2025, 3, 5))[0]
    clean_next = clean.daily_bars("SPY", date(2025, 3, 5), date(2025, 3, 5))[0]
    assert next_day.o == pytest.approx(clean_next.o * factor, abs=1e-3)
    assert m.daily_bars("QQQ", date(2025, 3, 5), date(2025, 3, 5)) == clean.daily_bars(
        "QQQ", date(2025, 3, 5), date(2025, 3, 5)
    )
    today = m.daily_bars("SPY", date(2025, 3, 4), date(2025, 3, 4))[0]
    clean_today = clean.daily_bars("SPY", date(2025, 3, 4), date(2025, 3, 4))[0]
    assert today.o == clean_today.o
    assert today.c == pytest.approx(clean_today.c * factor, abs=1e-3)
    assert today.l <= after  # type: ignore[operator]


def test_shock_star_moves_everything_and_unknown_symbols_are_refused(cal: TradingCalendar) -> None:
    m = Market.synthetic(["SPY", "AAPL"], seed=5, calendar=cal)
    at = et(2025, 3, 4, 14, 0)
    before = {s: m.price_at(s, at) for s in m.symbols}
    m.shock("*", 10, at)
    for s in m.symbols:
        assert m.price_at(s, at + timedelta(minutes=5)) == pytest.approx(
            Market.synthetic(["SPY", "AAPL"], seed=5, calendar=cal).price_at(s, at + timedelta(minutes=5)) * 1.1,  # type: ignore[operator]
            abs=1e-3,
        )
    assert before["SPY"] is not None
    with pytest.raises(ValueError, match="unknown symbol"):
        m.shock(["NOPE"], 5, at)
    with pytest.raises(ValueError, match="pct"):
        m.shock(["SPY"], -100, at)


def test_gap_applies_at_the_next_open(cal: TradingCalendar) -> None:
    m = Market.synthetic(seed=9, calendar=cal)
    clean = Market.synthetic(seed=9, calendar=cal)
    clock = SimClock(et(2025, 3, 4, 12, 0), speed=None, calendar=cal)
    MarketDataApi(m, clock)  # attaches the clock to the market
    opened = m.schedule_gap(["AAPL"], 3.0)
    assert opened == et(2025, 3, 5, 9, 30)
    prev_close = m.daily_bars("AAPL", date(2025, 3, 4), date(2025, 3, 4))[0].c
    bar = m.bar_at("AAPL", opened)
    assert bar is not None and bar.o == pytest.approx(prev_close * 1.03, abs=1e-3)
    # Today is untouched; the pre-market of the gap day moved with it.
    assert m.daily_bars("AAPL", date(2025, 3, 4), date(2025, 3, 4)) == clean.daily_bars(
        "AAPL", date(2025, 3, 4), date(2025, 3, 4)
    )
    pre = m.minute_arrays("AAPL", date(2025, 3, 5))
    clean_pre = clean.minute_arrays("AAPL", date(2025, 3, 5))
    ratio = pre.o[0] / clean_pre.o[0]  # type: ignore[union-attr]
    assert ratio == pytest.approx(bar.o / clean.bar_at("AAPL", opened).o, rel=1e-4)  # type: ignore[union-attr]
    daily = m.daily_bars("AAPL", date(2025, 3, 5), date(2025, 3, 5))[0]
    assert daily.o == bar.o


def test_gap_without_clock_or_time_is_a_clear_error(cal: TradingCalendar) -> None:
    m = Market.synthetic(["SPY"], seed=9, calendar=cal)
    with pytest.raises(ValueError, match="needs `after` or a clock"):
        m.schedule_gap(["SPY"], 2)


# -- CSV replay ------------------------------------------------------------------------------


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@needs_data
def test_csv_replay_matches_the_file(csv_market: Market) -> None:
    path = SHARED_DATA / "intraday" / "SPY-1m-2023-08-03-2023-08-03.csv"
    rows = _rows(path)
    stamps = set()
    for row in rows[::37]:
        moment = datetime.fromisoformat(row["timestamp"])
        bar = csv_market.bar_at("SPY", moment)
        assert bar == MinuteBar(
            moment, float(row["open"]), float(row["high"]), float(row["low"]),
            float(row["close"]), int(row["volume"]), bar.n, bar.vw,  # type: ignore[union-attr]
        )
    for row in rows:
        stamps.add(datetime.fromisoformat(row["timestamp"]))
    day = csv_market.minute_arrays("SPY", date(2023, 8, 3))
    assert day is not None and len(day) == len(rows)
    missing = next(
        et(2023, 8, 3, 4) + timedelta(minutes=k) for k in range(960)
        if et(2023, 8, 3, 4) + timedelta(minutes=k) not in stamps
    )
    assert csv_market.bar_at("SPY", missing) is None


@needs_data
def test_csv_recorded_quotes_are_used(csv_market: Market) -> None:
    rows = _rows(SHARED_DATA / "intraday" / "SPY-1m-quotes-2023-08-03-2023-08-03.csv")
    row = rows[400]
    moment = datetime.fromisoformat(row["timestamp"]) + timedelta(seconds=30)
    quote = csv_market.quote_at("SPY", moment)
    assert quote is not None
    assert (quote.bid, quote.ask) == (float(row["bid_close"]), float(row["ask_close"]))


@needs_data
def test_daily_csv_expands_to_an_intraday_path_with_the_same_ohlcv(csv_market: Market) -> None:
    rows = {r["timestamp"]: r for r in _rows(SHARED_DATA / "daily" / "QQQ-1d-1999-03-10-2026-08-07.csv")}
    for day_text in ("2019-11-29", "2021-03-01", "2021-03-02", "2024-06-03"):
        row = rows[day_text]
        session = date.fromisoformat(day_text)
        bar = csv_market.daily_bars("QQQ", session, session)[0]
        assert (bar.o, bar.h, bar.l, bar.c, bar.v) == (
            float(row["open"]), float(row["high"]), float(row["low"]), float(row["close"]),
            int(row["volume"]),
        )
        day = csv_market.minute_arrays("QQQ", session)
        opened, closed = csv_market.calendar.open_close(session)
        assert day is not None and len(day) == (closed - opened).total_seconds() // 60
        assert day.ts[0] == opened.timestamp()
        assert np.all(day.h <= bar.h) and np.all(day.l >= bar.l)
        # low first on every bar, falling ones too: a long bracket touching both fills its stop first
        # (a bar opening at its high has reached the high in its first minute, before anything)
        down = int(np.argmin(day.l))
        assert down < int(np.argmax(day.h)) or bar.o == bar.h
        assert np.all(day.h[:down] <= bar.o)  # nothing above the open before the low
    again = Market.from_csv_dir(SHARED_DATA, symbols=["QQQ"], calendar=csv_market.calendar)
    assert arrays_equal(again.minute_arrays("QQQ", date(2021, 3, 1)), csv_market.minute_arrays("QQQ", date(2021, 3, 1)))


@needs_data
def test_csv_union_prefers_intraday_where_it_exists(csv_market: Market) -> None:
    real = csv_market.minute_arrays("SPY", date(2021, 7, 1))  # intraday file starts 16:56Z
    expanded = csv_market.minute_arrays("SPY", date(2021, 6, 30))  # daily file only
    assert real is not None and real.ts[0] == datetime(2021, 7, 1, 16, 56, tzinfo=UTC).timestamp()
    assert expanded is not None and len(expanded) == 390


def test_malformed_csv_names_the_file_line_and_problem(tmp_path: Path, cal: TradingCalendar) -> None:
    daily = tmp_path / "daily"
    daily.mkdir()
    bad = daily / "XYZ-1d-2025-03-03-2025-03-05.csv"
    bad.write_text(
        "timestamp,open,high,low,close,volume\n"
        "2025-03-03,10,11,9,10.5,1000\n"
        "2025-03-04,10,10.2,9,10.5,1000\n"
    )
    with pytest.raises(CsvDataError) as info:
        Market.from_csv_dir(tmp_path, calendar=cal)
    message = str(info.value)
    assert str(bad) in message and ":3:" in message and "high 10.2 is below" in message
    bad.write_text("timestamp,open,high,low,close,volume\n2025-03-03,10,11,9,abc,1000\n")
    with pytest.raises(CsvDataError, match=r":2: column 'close': 'abc' is not a number"):
        Market.from_csv_dir(tmp_path, calendar=cal)
    bad.write_text("timestamp,open,high,low,close\n2025-03-03,10,11,9,10\n")
    with pytest.raises(CsvDataError, match=r":1: header lacks column\(s\) volume"):
        Market.from_csv_dir(tmp_path, calendar=cal)
    bad.unlink()
    intraday = tmp_path / "intraday"
    intraday.mkdir()
    (intraday / "XYZ-1m-2025-03-03-2025-03-03.csv").write_text(
        "timestamp,open,high,low,close,volume\n"
        "2025-03-03T14:31:00+00:00,10,11,9,10.5,100\n"
        "2025-03-03T14:30:00+00:00,10,11,9,10.5,100\n"
    )
    with pytest.raises(CsvDataError, match=r":3: timestamps are not strictly ascending"):
        Market.from_csv_dir(tmp_path, calendar=cal)


def test_csv_directory_problems_are_clear(tmp_path: Path, cal: TradingCalendar) -> None:
    with pytest.raises(ValueError, match="no bar files"):
        Market.from_csv_dir(tmp_path, calendar=cal)
    (tmp_path / "ABC-1d-2025-03-03-2025-03-03.csv").write_text(
        "timestamp,open,high,low,close,volume\n2025-03-03,10,11,9,10.5,1000\n"
    )
    with pytest.raises(ValueError, match="no data files for SPY"):
        Market.from_csv_dir(tmp_path, symbols=["SPY"], calendar=cal)
    m = Market.from_csv_dir(tmp_path, calendar=cal)
    assert m.symbols == ["ABC"]
    assert m.daily_bars("ABC", date(2025, 3, 3), date(2025, 3, 3))[0].c == 10.5
    assert m.price_at("ABC", et(2025, 3, 4, 9, 0)) == 10.5  # pre-market: last close


# -- Market Data API -------------------------------------------------------------------------


@pytest.fixture()
def api(cal: TradingCalendar) -> MarketDataApi:
    m = Market.synthetic(seed=21, calendar=cal)
    clock = SimClock(et(2025, 3, 4, 10, 7, 30), speed=None, calendar=cal)
    return MarketDataApi(m, clock)


def test_bars_never_include_the_future_or_the_current_minute(api: MarketDataApi) -> None:
    body = api.bars({"symbols": "SPY", "timeframe": "1Min", "start": "2025-03-04T14:00:00Z",
                     "end": "2025-03-10T00:00:00Z"})
    bars = body["bars"]["SPY"]
    assert bars[-1]["t"] == "2025-03-04T15:06:00Z"  # 10:06 ET complete, 10:07 still forming
    five = api.bars({"symbols": "SPY", "timeframe": "5Min", "start": "2025-03-04T15:00:00Z"})
    last = five["bars"]["SPY"][-1]
    assert last["t"] == "2025-03-04T15:05:00Z"
    minutes = api.bars({"symbols": "SPY", "timeframe": "1T", "start": "2025-03-04T15:05:00Z"})
    assert last["v"] == sum(b["v"] for b in minutes["bars"]["SPY"])
    daily = api.bars({"symbols": "SPY", "timeframe": "1Day", "start": "2025-03-03"})["bars"]["SPY"]
    assert [d["t"] for d in daily] == ["2025-03-03T05:00:00Z", "2025-03-04T05:00:00Z"]
    regular = api.bars({"symbols": "SPY", "timeframe": "1Min", "start": "2025-03-04T14:30:00Z"})
    assert daily[-1]["v"] == sum(b["v"] for b in regular["bars"]["SPY"])
    assert daily[-1]["c"] == regular["bars"]["SPY"][-1]["c"]


def test_pagination_across_symbols_ends_with_a_null_token(api: MarketDataApi) -> None:
    params = {"symbols": "TSLA,AAPL,SPY", "timeframe": "1Min",
              "start": "2025-03-04T15:00:00Z", "end": "2025-03-04T15:04:00Z", "limit": "6"}
    full = api.bars({**params, "limit": "10000"})
    assert full["next_page_token"] is None
    assert list(full["bars"]) == ["AAPL", "SPY", "TSLA"] and all(
        len(v) == 5 for v in full["bars"].values()
    )
    pages = []
    token = None
    while True:
        body = api.bars({**params, **({"page_token": token} if token else {})})
        pages.append(body)
        assert sum(len(v) for v in body["bars"].values()) <= 6  # limit counts across symbols
        token = body["next_page_token"]
        if token is None:
            break
        assert isinstance(token, str) and token
    assert [sum(len(v) for v in p["bars"].values()) for p in pages] == [6, 6, 3]
    merged: dict[str, list[dict]] = {}
    for page in pages:
        for symbol, bars in page["bars"].items():
            merged.setdefault(symbol, []).extend(bars)
    assert merged == full["bars"]


def test_bars_parameters_and_errors(api: MarketDataApi) -> None:
    with pytest.raises(SimApiError) as info:
        api.bars({"symbols": "SPY", "timeframe": "7Days"})
    assert (info.value.status, info.value.body) == (400, {"message": "invalid timeframe"})
    with pytest.raises(SimApiError) as info:
        api.bars({"timeframe": "1Min"})
    assert info.value.status == 400
    with pytest.raises(SimApiError):
        api.bars({"symbols": "SPY", "timeframe": "1Min", "limit": "10001"})
    body = api.bars({"symbols": "NOPE,SPY", "timeframe": "1H", "start": "2025-03-03",
                     "end": "2025-03-03"})
    assert list(body["bars"]) == ["SPY"]
    hours = [b["t"] for b in body["bars"]["SPY"]]
    assert hours[0] == "2025-03-03T09:00:00Z" and hours[-1] == "2025-03-04T00:00:00Z"
    assert all(t.endswith(":00:00Z") for t in hours)
    assert api.bars({"symbols": "NOPE", "timeframe": "1Day"}) == {
        "bars": {}, "next_page_token": None, "currency": "USD"
    }
    desc = api.bars({"symbols": "SPY", "timeframe": "1Min", "start": "2025-03-04T15:00:00Z",
                     "sort": "desc", "limit": "2"})
    assert [b["t"] for b in desc["bars"]["SPY"]] == ["2025-03-04T15:06:00Z", "2025-03-04T15:05:00Z"]
    for bar in body["bars"]["SPY"]:
        assert set(bar) == {"t", "o", "h", "l", "c", "v", "n", "vw"}
        assert isinstance(bar["v"], int) and isinstance(bar["o"], float)


def test_sip_feed_needs_a_15_minute_delay_unless_enabled(api: MarketDataApi) -> None:
    with pytest.raises(SimApiError) as info:
        api.bars({"symbols": "SPY", "timeframe": "1Min", "feed": "sip"})
    assert info.value.status == 403
    assert info.value.body == {"message": "subscription does not permit querying recent SIP data"}
    old = api.bars({"symbols": "SPY", "timeframe": "1Min", "feed": "sip",
                    "start": "2025-03-04T14:30:00Z", "end": "2025-03-04T14:45:00Z"})
    assert len(old["bars"]["SPY"]) == 16
    with pytest.raises(SimApiError):
        api.latest_quotes({"symbols": "SPY", "feed": "sip"})
    enabled = MarketDataApi(api.market, api.clock, sip_enabled=True)
    assert enabled.bars({"symbols": "SPY", "timeframe": "1Min", "feed": "sip"})["bars"]["SPY"]
    assert api.latest_trades({"symbols": "SPY", "feed": "iex"})["trades"]["SPY"]


def test_snapshot_shape_and_values(api: MarketDataApi) -> None:
    body = api.snapshots({"symbols": "SPY,NOPE,AAPL"})
    assert set(body) == {"SPY", "AAPL"}
    snap = body["SPY"]
    assert set(snap) == {"latestTrade", "latestQuote", "minuteBar", "dailyBar", "prevDailyBar"}
    assert snap["minuteBar"]["t"] == "2025-03-04T15:06:00Z"
    assert snap["dailyBar"]["t"] == "2025-03-04T05:00:00Z"
    assert snap["prevDailyBar"]["t"] == "2025-03-03T05:00:00Z"
    quote, trade = snap["latestQuote"], snap["latestTrade"]
    assert quote["bp"] < trade["p"] < quote["ap"] and quote["bs"] > 0 and quote["as"] > 0
    assert set(quote) >= {"t", "ap", "as", "bp", "bs"} and set(trade) >= {"t", "p", "s"}
    single = api.symbol_snapshot("SPY")
    assert single["symbol"] == "SPY" and single["dailyBar"] == snap["dailyBar"]
    with pytest.raises(SimApiError) as info:
        api.symbol_snapshot("NOPE")
    assert info.value.status == 404
    assert api.snapshots({"symbols": "NOPE"}) == {}
    latest = api.latest_bars({"symbols": "SPY"})["bars"]["SPY"]
    assert latest == snap["minuteBar"]
    assert api.symbol_latest_quote("SPY")["quote"] == quote


def test_pre_market_snapshot_uses_yesterdays_daily_bars(cal: TradingCalendar) -> None:
    m = Market.synthetic(["SPY"], seed=21, calendar=cal)
    api = MarketDataApi(m, SimClock(et(2025, 3, 4, 7, 0), speed=None, calendar=cal))
    snap = api.snapshots({"symbols": "SPY"})["SPY"]
    assert snap["dailyBar"]["t"] == "2025-03-03T05:00:00Z"
    assert snap["prevDailyBar"]["t"] == "2025-02-28T05:00:00Z"
    assert snap["minuteBar"]["t"] < "2025-03-04T12:00:00Z"


def test_json_parses_with_the_official_sdk_models(api: MarketDataApi) -> None:
    from alpaca.data.models import BarSet, Snapshot

    bars = api.bars({"symbols": "SPY,AAPL", "timeframe": "15Min", "start": "2025-03-03"})
    parsed = BarSet(bars["bars"])
    assert parsed["SPY"][0].close == bars["bars"]["SPY"][0]["c"]
    snap = api.snapshots({"symbols": "SPY"})
    assert Snapshot("SPY", snap["SPY"]).latest_quote.ask_price == snap["SPY"]["latestQuote"]["ap"]


def test_news_is_deterministic_past_only_and_paginates(api: MarketDataApi) -> None:
    first = api.news({"symbols": "AAPL,TSLA", "limit": "3", "include_content": "True"})
    assert len(first["news"]) == 3 and first["next_page_token"]
    for article in first["news"]:
        assert set(article) >= {"id", "headline", "author", "created_at", "updated_at", "summary",
                                "content", "url", "images", "symbols", "source"}
        assert article["created_at"] <= "2025-03-04T15:07:30Z"
        assert article["content"].startswith("<p>")
    times = [a["created_at"] for a in first["news"]]
    assert times == sorted(times, reverse=True)
    second = api.news({"symbols": "AAPL,TSLA", "limit": "3", "page_token": first["next_page_token"]})
    assert not {a["id"] for a in first["news"]} & {a["id"] for a in second["news"]}
    assert second["news"][0]["created_at"] <= first["news"][-1]["created_at"]
    assert api.news({"symbols": "AAPL,TSLA", "limit": "3", "include_content": "true"}) == first
    empty = api.news({"symbols": "NOPE"})
    assert empty == {"news": [], "next_page_token": None}


def test_weekly_and_monthly_bars_group_the_daily_bars(api: MarketDataApi) -> None:
    daily = api.bars({"symbols": "QQQ", "timeframe": "1Day", "start": "2025-02-03",
                      "end": "2025-02-28"})["bars"]["QQQ"]
    weekly = api.bars({"symbols": "QQQ", "timeframe": "1Week", "start": "2025-02-03",
                       "end": "2025-02-28"})["bars"]["QQQ"]
    monthly = api.bars({"symbols": "QQQ", "timeframe": "1M", "start": "2025-02-03",
                        "end": "2025-02-28"})["bars"]["QQQ"]
    assert len(weekly) == 4 and len(monthly) == 1
    assert monthly[0]["o"] == daily[0]["o"] and monthly[0]["c"] == daily[-1]["c"]
    assert monthly[0]["v"] == sum(d["v"] for d in daily) == sum(w["v"] for w in weekly)
    assert monthly[0]["h"] == max(d["h"] for d in daily)
    with pytest.raises(SimApiError):
        api.bars({"symbols": "QQQ", "timeframe": "5Month"})


def test_aggregated_bars_are_stamped_by_their_bucket_start(api: MarketDataApi) -> None:
    body = api.bars({"symbols": "SPY", "timeframe": "15Min", "start": "2025-03-04T14:32:00Z",
                     "end": "2025-03-04T15:00:00Z"})
    assert [b["t"] for b in body["bars"]["SPY"]] == [
        "2025-03-04T14:45:00Z", "2025-03-04T15:00:00Z"
    ]
    minutes = api.bars({"symbols": "SPY", "timeframe": "1Min", "start": "2025-03-04T14:45:00Z",
                        "end": "2025-03-04T14:59:00Z"})["bars"]["SPY"]
    first = body["bars"]["SPY"][0]
    assert first["o"] == minutes[0]["o"] and first["c"] == minutes[-1]["c"]
    assert first["h"] == max(m["h"] for m in minutes) and first["l"] == min(m["l"] for m in minutes)


@needs_data
def test_shocks_apply_to_csv_replay_too(cal: TradingCalendar) -> None:
    m = Market.from_csv_dir(SHARED_DATA, symbols=["SPY"], calendar=cal)
    at = datetime(2023, 8, 3, 15, 0, tzinfo=UTC)
    before = m.bar_at("SPY", at)
    earlier = m.bar_at("SPY", at - timedelta(minutes=5))
    m.shock(["SPY"], -6, at)
    assert m.bar_at("SPY", at - timedelta(minutes=5)) == earlier
    after = m.bar_at("SPY", at)
    assert before is not None and after is not None
    assert after.o == pytest.approx(before.o * 0.94, abs=1e-4)
    quote = m.quote_at("SPY", at + timedelta(seconds=10))  # recorded quotes move too
    assert quote is not None and quote.ask < before.o * 0.95
