"""Indicators against the established ``ta`` library on real bars; incremental == vectorized;
market-data containers and the CSV reader.

Conventions that differ from ``ta`` (see the indicators module docstring):

* EMA (and so MACD) is seeded with the SMA of the first n values; ``ta`` uses pandas
  ``ewm(adjust=False)`` seeded with the first value. The seeds' difference decays by
  ``(1 - 2/(n+1))`` per bar, so we compare after ``SETTLED`` bars, where it is far below
  1e-6. We also check the recursion exactly: pandas' ewm started from our seed reproduces
  our EMA from the seed on.
* RSI: Wilder seeds the smoothed gains/losses with their mean over the first n changes;
  ``ta`` seeds at the first bar. Same decay argument (factor 13/14 per bar).
* Bollinger (population std), ATR and SMA follow ``ta``'s conventions exactly and are
  compared from their first value on.
* VWAP: ``ta``'s VWAP is a rolling window; with the window spanning a whole session and
  ``fillna=True`` (min_periods=0) it is the session-cumulative VWAP, compared per session.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import ta

import config
from market import indicators as ind
from core.errors import DataQualityError
from market.market_data import (
    BarSeries,
    MarketData,
    day_timestamp,
    expected_volume_share,
    load_csv_bars,
    session_start_mask,
)
from tests.conftest import SHARED_DATA

RTOL = 1e-6
SETTLED = 400  # bars after which the EMA/Wilder seed difference is below 1e-12

DAILY_FILES = [
    "daily/SPY-1d-1993-01-29-2026-08-07.csv",
    "daily/AAPL-1d-2013-01-02-2023-12-29.csv",
]
INTRADAY_FILES = [
    "intraday/SPY-1m-2020-01-06-2020-01-09.csv",
    "intraday/SPY-1m-2021-07-01-2021-08-13.csv",
    "intraday/MSFT-1m-2021-08-23-2021-08-25.csv",  # holds zero-volume bars
]
ALL_FILES = DAILY_FILES + INTRADAY_FILES


@pytest.fixture(scope="module")
def bars_by_file() -> dict[str, BarSeries]:
    return {name: load_csv_bars(SHARED_DATA / name) for name in ALL_FILES}


@pytest.fixture(scope="module")
def settings() -> config.Settings:
    return config.load_settings(environ={}, env_file=None)


def assert_close(ours: np.ndarray, theirs: pd.Series | np.ndarray, start: int, rtol: float = RTOL) -> None:
    """Same NaN pattern from ``start`` on and relative agreement to ``rtol``."""
    a = np.asarray(ours, dtype=float)[start:]
    b = np.asarray(theirs, dtype=float)[start:]
    assert len(a) > 100, "too few bars compared to mean anything"
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(a, b, rtol=rtol, atol=0)


# -- against ta, on real bars --------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_FILES)
def test_sma_and_bollinger_match_ta_from_the_first_value(name: str, bars_by_file) -> None:
    bars = bars_by_file[name]
    close = pd.Series(bars.close)
    assert_close(ind.sma(bars.close, 20), ta.trend.SMAIndicator(close, 20).sma_indicator(), 19)
    assert_close(ind.sma(bars.close, 50), ta.trend.SMAIndicator(close, 50).sma_indicator(), 49)
    bands = ta.volatility.BollingerBands(close, 20, 2)
    mid, upper, lower = ind.bollinger(bars.close, 20, 2.0)
    assert_close(mid, bands.bollinger_mavg(), 19)
    assert_close(upper, bands.bollinger_hband(), 19)
    assert_close(lower, bands.bollinger_lband(), 19)


@pytest.mark.parametrize("name", ALL_FILES)
def test_ema_matches_ta_once_the_seed_has_decayed(name: str, bars_by_file) -> None:
    bars = bars_by_file[name]
    close = pd.Series(bars.close)
    for n in (12, 26):
        ours = ind.ema(bars.close, n)
        assert_close(ours, ta.trend.EMAIndicator(close, n).ema_indicator(), SETTLED)
        # The recursion itself is pandas' ewm(adjust=False) started from our SMA seed.
        assert ours[n - 1] == pytest.approx(bars.close[:n].mean(), rel=1e-15)
        restarted = pd.Series(np.r_[ours[n - 1], bars.close[n:]]).ewm(span=n, adjust=False).mean()
        assert_close(ours[n - 1 :], restarted, 0, rtol=1e-12)


@pytest.mark.parametrize("name", ALL_FILES)
def test_rsi_matches_ta_once_wilders_seed_has_decayed(name: str, bars_by_file) -> None:
    bars = bars_by_file[name]
    theirs = ta.momentum.RSIIndicator(pd.Series(bars.close), 14).rsi()
    assert_close(ind.rsi(bars.close, 14), theirs, SETTLED)


@pytest.mark.parametrize("name", ALL_FILES)
def test_macd_matches_ta_once_the_seeds_have_decayed(name: str, bars_by_file) -> None:
    bars = bars_by_file[name]
    theirs = ta.trend.MACD(pd.Series(bars.close), 26, 12, 9)
    line, signal, hist = ind.macd(bars.close, 12, 26, 9)
    assert_close(line, theirs.macd(), SETTLED)
    assert_close(signal, theirs.macd_signal(), SETTLED)
    # The histogram is a difference of nearly equal numbers: compare it on the price scale.
    gap = np.abs(hist - theirs.macd_diff().to_numpy())[SETTLED:]
    assert np.all(gap <= RTOL * bars.close[SETTLED:])


@pytest.mark.parametrize("name", ALL_FILES)
def test_atr_matches_ta_from_the_first_value(name: str, bars_by_file) -> None:
    bars = bars_by_file[name]
    theirs = ta.volatility.AverageTrueRange(
        pd.Series(bars.high), pd.Series(bars.low), pd.Series(bars.close), 14
    ).average_true_range()
    assert_close(ind.atr(bars.high, bars.low, bars.close, 14), theirs, 13)


@pytest.mark.parametrize("name", INTRADAY_FILES)
def test_session_vwap_matches_ta_over_each_whole_session(name: str, bars_by_file) -> None:
    bars = bars_by_file[name]
    mask = session_start_mask(bars.ts)
    ours = ind.vwap(bars.high, bars.low, bars.close, bars.volume, mask)
    starts = list(np.flatnonzero(mask)) + [len(bars)]
    assert len(starts) >= 4, "expected several sessions"
    compared = 0
    for a, b in zip(starts, starts[1:]):
        frame = {k: pd.Series(getattr(bars, k)[a:b]) for k in ("high", "low", "close", "volume")}
        theirs = ta.volume.VolumeWeightedAveragePrice(
            frame["high"], frame["low"], frame["close"], frame["volume"], window=b - a, fillna=True
        ).volume_weighted_average_price()
        session = ours[a:b]
        traded = np.cumsum(bars.volume[a:b]) > 0
        np.testing.assert_array_equal(np.isnan(session), ~traded)
        np.testing.assert_allclose(session[traded], theirs.to_numpy()[traded], rtol=RTOL, atol=0)
        compared += int(traded.sum())
    assert compared > 1000


def test_vwap_restarts_at_each_session_and_ignores_nothing_else() -> None:
    high = np.array([11.0, 12.0, 21.0, 22.0])
    low = np.array([9.0, 10.0, 19.0, 20.0])
    close = np.array([10.0, 11.0, 20.0, 21.0])
    volume = np.array([100.0, 300.0, 0.0, 50.0])
    mask = np.array([True, False, True, False])
    out = ind.vwap(high, low, close, volume, mask)
    assert out[0] == pytest.approx(10.0)
    assert out[1] == pytest.approx((10.0 * 100 + 11.0 * 300) / 400)
    assert math.isnan(out[2])  # the new session has traded nothing yet
    assert out[3] == pytest.approx(21.0)
    whole = ind.vwap(high, low, close, volume)
    assert whole[3] == pytest.approx((1000 + 3300 + 21.0 * 50) / 450)


# -- conventions on small hand-checked inputs ------------------------------------------------


def test_warm_up_is_nan_and_first_values_sit_where_documented() -> None:
    x = np.arange(1.0, 61.0) + np.sin(np.arange(60.0))
    assert np.isnan(ind.sma(x, 10)[:9]).all() and not np.isnan(ind.sma(x, 10)[9])
    assert np.isnan(ind.ema(x, 10)[:9]).all() and ind.ema(x, 10)[9] == pytest.approx(x[:10].mean())
    assert np.isnan(ind.rsi(x, 14)[:14]).all() and not np.isnan(ind.rsi(x, 14)[14])
    line, signal, hist = ind.macd(x)
    assert np.isnan(line[:25]).all() and not np.isnan(line[25])
    assert np.isnan(signal[:33]).all() and signal[33] == pytest.approx(line[25:34].mean())
    assert np.isnan(ind.atr(x + 1, x - 1, x, 14)[:13]).all()
    assert ind.atr(x + 1, x - 1, x, 14)[13] == pytest.approx(ind.true_range(x + 1, x - 1, x)[:14].mean())
    assert np.isnan(ind.sma(x[:5], 10)).all() and np.isnan(ind.ema(x[:5], 10)).all()


def test_rsi_is_100_with_only_gains_50_when_flat_and_low_in_a_fall() -> None:
    assert ind.rsi(np.arange(1.0, 31.0), 14)[-1] == 100.0
    assert ind.rsi(np.full(30, 7.0), 14)[-1] == 50.0
    assert ind.rsi(np.arange(30.0, 0.0, -1.0), 14)[-1] == 0.0


def test_volume_ratio_compares_with_the_previous_bars_only() -> None:
    volume = np.array([100.0] * 20 + [250.0, 100.0])
    ratio = ind.volume_ratio(volume, 20)
    assert np.isnan(ratio[:20]).all()
    assert ratio[20] == pytest.approx(2.5)
    assert ratio[21] == pytest.approx(100.0 / ((19 * 100.0 + 250.0) / 20))
    assert np.isnan(ind.volume_ratio(np.zeros(25), 20)[-1])  # no average volume: no ratio


def test_support_and_resistance_exclude_the_current_bar() -> None:
    high = np.array([10.0, 12.0, 11.0, 15.0])
    low = np.array([9.0, 8.0, 10.0, 14.0])
    support, resistance = ind.support_resistance(high, low, high, lookback=3)
    assert np.isnan(support[:3]).all()
    assert support[3] == 8.0 and resistance[3] == 12.0  # bar 3's own high 15 is the breakout


def test_rate_of_change_is_a_fraction() -> None:
    roc = ind.rate_of_change(np.array([100.0, 102.0, 99.0, 110.0]), 2)
    assert np.isnan(roc[:2]).all()
    assert roc[2] == pytest.approx(-0.01) and roc[3] == pytest.approx(110.0 / 102.0 - 1)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="n must be a positive integer"):
        ind.sma(np.ones(5), 0)
    with pytest.raises(ValueError, match="differ in length"):
        ind.atr(np.ones(5), np.ones(4), np.ones(5))
    with pytest.raises(ValueError, match="one-dimensional"):
        ind.ema(np.ones((2, 2)), 2)


# -- incremental == vectorized -------------------------------------------------------------


def _relative_gap(vectorized: np.ndarray, incremental: list[float], scale: np.ndarray | None = None) -> float:
    a = np.asarray(vectorized, dtype=float)
    b = np.asarray(incremental, dtype=float)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    ok = ~np.isnan(a)
    base = np.abs(a[ok]) if scale is None else np.maximum(np.abs(a[ok]), scale[ok])
    return float(np.max(np.abs(a[ok] - b[ok]) / base))


@pytest.mark.parametrize(
    "name", ["daily/SPY-1d-1993-01-29-2026-08-07.csv", "intraday/SPY-1m-2021-07-01-2021-08-13.csv"]
)
def test_incremental_classes_equal_the_vectorized_functions_at_every_bar(name: str, bars_by_file) -> None:
    bars = bars_by_file[name]
    rows = list(zip(bars.high.tolist(), bars.low.tolist(), bars.close.tolist(), bars.volume.tolist()))
    closes = bars.close.tolist()
    limit = 1e-9

    sma, ema, rsi = ind.IncrementalSMA(20), ind.IncrementalEMA(12), ind.IncrementalRSI(14)
    assert _relative_gap(ind.sma(bars.close, 20), [sma.update(c) for c in closes]) < limit
    assert _relative_gap(ind.ema(bars.close, 12), [ema.update(c) for c in closes]) < limit
    assert _relative_gap(ind.rsi(bars.close, 14), [rsi.update(c) for c in closes]) < limit

    atr = ind.IncrementalATR(14)
    assert _relative_gap(ind.atr(bars.high, bars.low, bars.close), [atr.update(h, l, c) for h, l, c, _ in rows]) < limit

    bands = ind.IncrementalBollinger(20, 2.0)
    values = [bands.update(c) for c in closes]
    for got, column in zip(ind.bollinger(bars.close, 20, 2.0), zip(*values)):
        assert _relative_gap(got, list(column)) < limit

    # MACD line/signal/histogram are differences of nearly equal EMAs: their rounding is
    # measured against the price they are computed from, not against their own tiny size.
    macd = ind.IncrementalMACD(12, 26, 9)
    values = [macd.update(c) for c in closes]
    for got, column in zip(ind.macd(bars.close), zip(*values)):
        assert _relative_gap(got, list(column), scale=bars.close) < limit

    starts = session_start_mask(bars.ts)
    vwap = ind.IncrementalVWAP()
    incremental = [vwap.update(h, l, c, v, bool(s)) for (h, l, c, v), s in zip(rows, starts)]
    assert _relative_gap(ind.vwap(bars.high, bars.low, bars.close, bars.volume, starts), incremental) < limit


def test_incremental_values_are_nan_during_warm_up() -> None:
    ema = ind.IncrementalEMA(3)
    assert [math.isnan(ema.update(x)) for x in (1.0, 2.0)] == [True, True]
    assert ema.update(3.0) == 2.0 and ema.value == 2.0
    macd = ind.IncrementalMACD()
    first = [macd.update(float(x)) for x in range(1, 34)]
    assert all(math.isnan(v.signal) for v in first) and not math.isnan(first[-1].line)
    assert not math.isnan(macd.update(34.0).signal)


# -- the snapshot -----------------------------------------------------------------------------


def test_snapshot_equals_the_vectorized_indicators_on_real_bars(bars_by_file, settings) -> None:
    bars = bars_by_file["daily/SPY-1d-1993-01-29-2026-08-07.csv"]
    for end in (60, 300, 2000, len(bars)):
        history = _head(bars, end)
        snap = ind.compute_snapshot(history, settings)
        recent = history.tail(ind.SNAPSHOT_BARS)
        c, h, lo, v = recent.close, recent.high, recent.low, recent.volume
        line, signal, hist = ind.macd(c)
        mid, upper, lower = ind.bollinger(c)
        support, resistance = ind.support_resistance(h, lo, c, 20)
        expected = {
            "price": c[-1],
            "sma_short": ind.sma(c, 10)[-1],
            "sma_medium": ind.sma(c, 20)[-1],
            "sma_long": ind.sma(c, 50)[-1],
            "ema12": ind.ema(c, 12)[-1],
            "ema26": ind.ema(c, 26)[-1],
            "rsi": ind.rsi(c, 14)[-1],
            "macd": line[-1],
            "macd_signal": signal[-1],
            "bb_mid": mid[-1],
            "bb_upper": upper[-1],
            "bb_lower": lower[-1],
            "atr": ind.atr(h, lo, c, 14)[-1],
            "volume_ratio": ind.volume_ratio(v, 20)[-1],
            "support": support[-1],
            "resistance": resistance[-1],
            "change_1d": ind.rate_of_change(c, 1)[-1],
            "change_5d": ind.rate_of_change(c, 5)[-1],
            "change_10d": ind.rate_of_change(c, 10)[-1],
            "volatility_20d": np.std(np.diff(np.log(c[-21:])), ddof=1) * math.sqrt(252),
        }
        for field, value in expected.items():
            assert getattr(snap, field) == pytest.approx(value, rel=1e-9), field
        assert abs(snap.macd_hist - hist[-1]) < 1e-9 * c[-1]
        assert abs(snap.macd_hist_prev - hist[-2]) < 1e-9 * c[-1]
        assert snap.bb_position == pytest.approx((c[-1] - lower[-1]) / (upper[-1] - lower[-1]))
        assert snap.atr_pct == pytest.approx(snap.atr / c[-1])


def test_snapshot_cache_follows_todays_partial_bar_and_misses_on_a_rewritten_history(bars_by_file, settings) -> None:
    history = _head(bars_by_file["daily/AAPL-1d-2013-01-02-2023-12-29.csv"], 300)
    first = ind.compute_snapshot(history, settings)
    assert ind.compute_snapshot(history, settings) == first  # the cached path agrees with itself

    # Today's bar grows during the session: same history, new last bar.
    grown = history.append(int(history.ts[-1]), history.open[-1], history.high[-1] * 1.02, history.low[-1], history.close[-1] * 1.015, history.volume[-1] * 1.3)
    snap = ind.compute_snapshot(grown, settings)
    c, h, lo = grown.close, grown.high, grown.low
    assert snap.rsi == pytest.approx(ind.rsi(c, 14)[-1], rel=1e-9)
    assert snap.atr == pytest.approx(ind.atr(h, lo, c, 14)[-1], rel=1e-9)
    assert snap.macd_signal == pytest.approx(ind.macd(c)[1][-1], rel=1e-9)
    assert snap.macd_hist_prev == first.macd_hist_prev  # yesterday did not change

    # A history re-adjusted in the middle (same ends and length) is recomputed, not reused.
    close = history.close.copy()
    close[150] *= 1.5
    rewritten = BarSeries.from_arrays(history.ts, history.open, np.maximum(history.high, close), history.low, close, history.volume)
    changed = ind.compute_snapshot(rewritten, settings)
    assert changed.ema26 == pytest.approx(ind.ema(close, 26)[-1], rel=1e-9)
    assert changed.ema26 != first.ema26


def test_primed_snapshots_are_identical_to_the_bar_by_bar_pass(bars_by_file, settings) -> None:
    """A backtest primes each session's history (a window sliding over the same bars, so its
    first bar moves too) in one vectorized pass: the snapshots must be exactly the same."""
    bars = bars_by_file["daily/AAPL-1d-2013-01-02-2023-12-29.csv"]
    # Sliding windows as a backtest sees them, plus short, long (> SNAPSHOT_BARS) and ragged ones.
    windows = [bars.slice(i, i + 206 + i % 3) for i in range(0, 400, 7)]
    windows += [bars.slice(900, 900 + n) for n in (30, 35, 36, 60, 499, 501, 700)]
    for rsi_n in (14, 2, 30):
        custom = settings.model_copy(update={"strategy": settings.strategy.model_copy(update={"rsi_period": rsi_n})})
        ind._PREFIX_CACHE.clear()
        ind._PRIMED.clear()
        plain = [ind.compute_snapshot(w, custom) for w in windows]
        ind._PREFIX_CACHE.clear()
        primed = ind.prime_snapshots(windows, rsi_n)
        assert primed == sum(1 for w in windows if min(len(w), ind.SNAPSHOT_BARS) - 1 >= max(34, rsi_n + 1))
        again = [ind.compute_snapshot(w, custom) for w in windows]
        for a, b in zip(plain, again, strict=True):
            assert {k: None if math.isnan(v) else v for k, v in a.as_dict().items()} == {
                k: None if math.isnan(v) else v for k, v in b.as_dict().items()}
    # A history with a gap in its prices is left to the ordinary path.
    close = bars.close[:300].copy()
    close[100] = np.nan
    holed = BarSeries.from_arrays(bars.ts[:300], bars.open[:300], bars.high[:300], bars.low[:300], close, bars.volume[:300])
    assert ind.prime_snapshots([holed], 14) == 0


def _head(bars: BarSeries, n: int) -> BarSeries:
    return BarSeries.from_arrays(bars.ts[:n], bars.open[:n], bars.high[:n], bars.low[:n], bars.close[:n], bars.volume[:n])


def test_snapshot_uses_the_configured_periods_and_is_nan_without_history(settings) -> None:
    x = np.linspace(100.0, 130.0, 40)
    bars = BarSeries.from_arrays(np.arange(40) * 86400, x, x + 1, x - 1, x, np.full(40, 1e6))
    custom = settings.model_copy(
        update={"strategy": settings.strategy.model_copy(update={"ma_short": 5, "ma_long": 30})}
    )
    snap = ind.compute_snapshot(bars, custom)
    assert snap.sma_short == pytest.approx(x[-5:].mean())
    assert snap.sma_long == pytest.approx(x[-30:].mean())
    assert math.isnan(ind.compute_snapshot(bars, settings).sma_long)  # 50 > 40 bars
    tiny = ind.compute_snapshot(bars.tail(3), settings)
    assert tiny.bars == 3 and tiny.price == x[-1]
    assert all(math.isnan(getattr(tiny, f)) for f in ("rsi", "macd", "atr", "bb_mid", "volume_ratio", "support"))


# -- market data --------------------------------------------------------------------------


def test_daily_csv_dates_are_stamped_at_midnight_new_york(bars_by_file) -> None:
    spy = bars_by_file["daily/SPY-1d-1993-01-29-2026-08-07.csv"]
    assert len(spy) == 8438
    assert datetime.fromtimestamp(int(spy.ts[0]), timezone.utc) == datetime(1993, 1, 29, 5, tzinfo=timezone.utc)
    assert spy.close[0] == 43.9375 and spy.volume[0] == 1003200
    summer = bars_by_file["intraday/SPY-1m-2021-07-01-2021-08-13.csv"]
    assert int(session_start_mask(summer.ts).sum()) == 31  # the README's session count


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("timestamp,open,high,low,close,volume\n2020-01-02,1,2,0.5,1.5,100\n2020-01-03,1,2,abc,1.5,100\n", ":3: low 'abc' is not a number"),
        ("timestamp,open,high,low,close\n", "header lacks column(s) volume"),
        ("timestamp,open,high,low,close,volume\n2020-01-02T14:30:00,1,2,0.5,1.5,100\n", ":2: timestamp '2020-01-02T14:30:00' has no UTC offset"),
        ("timestamp,open,high,low,close,volume\n2020-01-03,1,2,0.5,1.5,100\n2020-01-02,1,2,0.5,1.5,100\n", ":3: timestamp '2020-01-02' does not follow"),
        ("timestamp,open,high,low,close,volume\n2020-01-02,1,2,0.5,-1.5,100\n", ":2: close '-1.5' must be finite and > 0"),
        ("timestamp,open,high,low,close,volume\n2020-13-02,1,2,0.5,1.5,100\n", ":2: timestamp '2020-13-02' is neither"),
        ("timestamp,open,high,low,close,volume\n2020-01-02,1,2\n", ":2: expected 6 fields, found 3"),
        ("timestamp,open,high,low,close,volume\n", "no bars after the header"),
        ("", "empty file"),
    ],
)
def test_bad_csv_gets_one_error_naming_file_line_and_problem(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "bars.csv"
    path.write_text(text)
    with pytest.raises(DataQualityError) as caught:
        load_csv_bars(path)
    assert str(path) in str(caught.value)
    assert problem in str(caught.value)


def test_missing_csv_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataQualityError, match="cannot read bar file"):
        load_csv_bars(tmp_path / "nope.csv")


def test_bar_series_from_broker_bars_tail_and_append() -> None:
    t0 = datetime(2024, 3, 1, 5, tzinfo=timezone.utc)
    broker_bars = [
        SimpleNamespace(t=t0.replace(day=d), o=Decimal("10.5"), h=Decimal("11"), l=Decimal("10"), c=Decimal(f"10.{d}"), v=1000 * d)
        for d in (1, 4, 5)
    ]
    series = BarSeries.from_bars(broker_bars)
    assert len(series) == 3 and series.close.dtype == np.float64
    assert series.close.tolist() == [10.1, 10.4, 10.5] and series.volume[-1] == 5000.0
    assert series.ts[0] == int(t0.timestamp())
    with pytest.raises(ValueError):
        series.close[0] = 1.0  # read-only: a shared series cannot be altered by a reader
    assert series.tail(2).close.tolist() == [10.4, 10.5] and len(series.tail(10)) == 3
    middle = series.slice(1, 3)  # a view for the backtest's history windows: no copy
    assert middle.close.tolist() == [10.4, 10.5] and middle.ts.tolist() == series.ts[1:].tolist()
    assert np.shares_memory(middle.close, series.close) and len(series.slice(2, 2)) == 0
    with pytest.raises(ValueError):
        middle.close[0] = 1.0
    updated = series.append(int(series.ts[-1]), 10.5, 12.0, 10.0, 11.9, 9000)  # today's bar grew
    assert len(updated) == 3 and updated.close[-1] == 11.9 and series.close[-1] == 10.5
    grown = updated.append(int(series.ts[-1]) + 86400, 12, 12, 12, 12, 1)
    assert len(grown) == 4
    with pytest.raises(DataQualityError, match="older than the last bar"):
        series.append(int(series.ts[0]), 1, 1, 1, 1, 1)
    with pytest.raises(DataQualityError, match="strictly increase"):
        BarSeries.from_arrays([2, 1], [1, 1], [1, 1], [1, 1], [1, 1], [1, 1])
    with pytest.raises(DataQualityError, match="differ in length"):
        BarSeries.from_arrays([1, 2], [1], [1, 1], [1, 1], [1, 1], [1, 1])
    with pytest.raises(DataQualityError, match="naive"):
        BarSeries.from_bars([SimpleNamespace(t=datetime(2024, 1, 2), o=1, h=1, l=1, c=1, v=1)])


def test_market_data_spread_and_partial_day_volume_progress() -> None:
    day = datetime(2024, 3, 5).date()
    daily = BarSeries.from_arrays([day_timestamp(day)], [10.0], [11.0], [9.0], [10.5], [1000.0])
    at_noon = datetime(2024, 3, 5, 17, 0, tzinfo=timezone.utc)  # 12:00 New York (EST)
    data = MarketData("AAPL", at_noon, daily, last_price=10.5, bid=10.49, ask=10.51, prev_close=10.0)
    assert data.spread_pct == pytest.approx(0.02 / 10.5)
    assert MarketData("AAPL", at_noon, daily, bid=None, ask=10.0).spread_pct is None
    assert data.volume_progress == pytest.approx(0.501)  # 150 minutes in: half the day's volume
    next_day = MarketData("AAPL", at_noon.replace(day=6), daily)
    assert next_day.volume_progress == 1.0  # the last bar is a finished session
    assert expected_volume_share(datetime(2024, 3, 5, 14, 0, tzinfo=timezone.utc)) == 0.0
    assert expected_volume_share(datetime(2024, 3, 5, 21, 5, tzinfo=timezone.utc)) == 1.0
    with pytest.raises(ValueError, match="timezone-aware"):
        MarketData("AAPL", datetime(2024, 3, 5, 12), daily)


def _same_snapshot(a: ind.IndicatorSnapshot, b: ind.IndicatorSnapshot) -> bool:
    return {k: None if math.isnan(v) else v for k, v in a.as_dict().items()} == {
        k: None if math.isnan(v) else v for k, v in b.as_dict().items()}


def test_appended_series_share_their_historys_key_and_give_the_same_snapshots(bars_by_file, settings) -> None:
    """Today's bar appended to (or replacing the last bar of) a session's history: the key of
    the bars before it is computed once for the history; the snapshots are exactly those of
    the same bars built from plain arrays."""
    bars = bars_by_file["daily/SPY-1d-1993-01-29-2026-08-07.csv"]
    for start, n in ((0, 203), (5000, 260), (7000, 40), (100, 600)):
        history = _head(bars.slice(start, start + n + 1), n)
        today = bars.slice(start + n, start + n + 1)
        o, h, lo, c, v = (float(x[0]) for x in (today.open, today.high, today.low, today.close, today.volume))
        for step in range(5):  # a still-forming daily bar, cycle after cycle
            price = o + (c - o) * (step + 1) / 5
            appended = history.append(int(today.ts[0]), o, max(h, price), min(lo, price), price, v * (step + 1) / 5)
            replaced = appended.append(int(today.ts[0]), o, max(h, price), min(lo, price), price, v)
            for series in (appended, replaced):
                plain = _head(series, len(series))
                assert series.prefix_memo(len(series) - 1) is not None
                assert plain.prefix_memo(len(plain) - 1) is None
                assert ind._prefix_key(series, len(series) - 1, 14) == ind._computed_prefix_key(plain, len(plain) - 1, 14)
                ours = ind.compute_snapshot(series, settings)
                ind._PREFIX_CACHE.clear()
                assert _same_snapshot(ours, ind.compute_snapshot(plain, settings))
    memo = history.memo()
    assert memo and all(name[0] == "prefix_key" for name in memo)


def test_volume_progress_memo_matches_the_direct_computation() -> None:
    from market.market_data import EXCHANGE_TZ as NY

    for day in (datetime(2024, 3, 8).date(), datetime(2024, 3, 11).date(), datetime(2024, 11, 4).date()):
        daily = BarSeries.from_arrays([day_timestamp(day)], [10.0], [11.0], [9.0], [10.5], [1000.0])
        opened = datetime.combine(day, datetime.min.time(), NY).replace(hour=9, minute=30)
        for minutes in range(-40, 420, 13):
            now = opened + timedelta(minutes=minutes)
            for stamp in (now, now.astimezone(timezone.utc)):  # equal instants, other zones
                direct = expected_volume_share(stamp) if stamp.astimezone(NY).date() == day else 1.0
                assert MarketData("AAPL", stamp, daily).volume_progress == direct
        after = datetime.combine(day + timedelta(days=1), datetime.min.time(), NY).replace(hour=11)
        assert MarketData("AAPL", after, daily).volume_progress == 1.0
