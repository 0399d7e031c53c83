"""The confidence model: features, regimes, first-touch labels, calibration on real held-out
data, and the versioned model file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ai import ai_model
from ai.ai_model import (
    FEATURE_NAMES,
    Bracket,
    ModelFileError,
    TrainingDataError,
    feature_matrix,
    first_touch_labels,
    load_model,
    regime_series,
)
from market.market_data import BarSeries, exchange_day_numbers, load_csv_bars
from tests.conftest import ROOT, SHARED_DATA

DAILY = SHARED_DATA / "daily"
SPY_FILE = DAILY / "SPY-1d-1993-01-29-2026-08-07.csv"
AAPL_FILE = DAILY / "AAPL-1d-2013-01-02-2023-12-29.csv"
TRAIN_FILES = [
    "SPY-1d-1993-01-29-2026-08-07.csv",
    "QQQ-1d-1999-03-10-2026-08-07.csv",
    "AAPL-1d-2013-01-02-2023-12-29.csv",
    "MSFT-1d-2013-01-02-2023-12-29.csv",
    "NVDA-1d-2013-01-02-2023-12-29.csv",
    "TSLA-1d-2010-06-29-2026-08-07.csv",
]


def _features(bars: BarSeries, bench: BarSeries | None) -> dict[str, np.ndarray]:
    bench_close = None if bench is None else ai_model.align_benchmark(bars.ts, bench.ts, bench.close)
    return feature_matrix(bars.high, bars.low, bars.close, bars.volume, bench_close)


def _wilder_rsi(close: np.ndarray, n: int = 14) -> float:
    """RSI at the last bar, written out the long way (Wilder's 1978 recipe)."""
    change = np.diff(close)
    gains = np.maximum(change, 0)
    losses = np.maximum(-change, 0)
    avg_gain = gains[:n].mean()
    avg_loss = losses[:n].mean()
    for g, loss in zip(gains[n:], losses[n:], strict=True):
        avg_gain = (avg_gain * (n - 1) + g) / n
        avg_loss = (avg_loss * (n - 1) + loss) / n
    return 100.0 * avg_gain / (avg_gain + avg_loss)


@pytest.fixture(scope="module")
def spy() -> BarSeries:
    return load_csv_bars(SPY_FILE)


@pytest.fixture(scope="module")
def aapl() -> BarSeries:
    return load_csv_bars(AAPL_FILE)


# -- features ---------------------------------------------------------------------------------


def test_features_on_real_bars_are_finite_and_match_hand_computation(aapl, spy):
    bars = aapl.tail(300)
    cols = _features(bars, spy)
    last = {name: cols[name][-1] for name in FEATURE_NAMES}
    assert all(math.isfinite(v) for v in last.values()), last
    close = bars.close
    assert last["momentum_1d"] == pytest.approx(close[-1] / close[-2] - 1, rel=1e-12)
    assert last["momentum_5d"] == pytest.approx(close[-1] / close[-6] - 1, rel=1e-12)
    assert last["momentum_10d"] == pytest.approx(close[-1] / close[-11] - 1, rel=1e-12)
    assert last["rsi_14"] == pytest.approx(_wilder_rsi(close), rel=1e-9)
    assert last["volume_ratio_1d"] == pytest.approx(bars.volume[-1] / bars.volume[-21:-1].mean())
    assert last["distance_ma20"] == pytest.approx(close[-1] / close[-20:].mean() - 1)
    # Relative strength: AAPL's 10-day return minus SPY's on the same sessions.
    spy_close = ai_model.align_benchmark(bars.ts, spy.ts, spy.close)
    assert last["relative_strength_10d"] == pytest.approx(
        (close[-1] / close[-11] - 1) - (spy_close[-1] / spy_close[-11] - 1)
    )
    # Beta over 60 daily returns, by the textbook formula.
    a = np.diff(close[-61:]) / close[-61:-1]
    b = np.diff(spy_close[-61:]) / spy_close[-61:-1]
    assert last["beta_60d"] == pytest.approx(np.cov(a, b)[0, 1] / np.var(b, ddof=1), rel=1e-9)
    assert 0.0 <= last["macd_above_signal"] <= 1.0


def test_features_never_look_ahead(aapl, spy):
    bars = aapl.tail(400)
    base = _features(bars, spy)
    rng = np.random.default_rng(7)
    for i in (120, 250, 398):
        # Rewrite every bar after i with different prices and volumes.
        scale = np.ones(len(bars))
        scale[i + 1 :] = rng.uniform(0.5, 1.5, len(bars) - i - 1)
        volume = bars.volume.copy()
        volume[i + 1 :] *= 10
        changed = BarSeries.from_arrays(
            bars.ts, bars.open * scale, bars.high * scale, bars.low * scale, bars.close * scale, volume
        )
        other = _features(changed, spy)
        for name in FEATURE_NAMES:
            assert base[name][i] == other[name][i], (name, i)


def test_features_need_sixty_one_bars(aapl):
    cols = _features(aapl.tail(ai_model.MIN_HISTORY_BARS), None)
    assert all(math.isfinite(cols[name][-1]) for name in FEATURE_NAMES)
    short = _features(aapl.tail(ai_model.MIN_HISTORY_BARS - 1), None)
    assert math.isnan(short["beta_60d"][-1])


def test_benchmark_is_matched_by_session_date_not_exact_timestamp(aapl, spy):
    bars = aapl.tail(100)
    shifted = spy.ts + 14 * 3600  # the same sessions stamped at 09:00/10:00 New York
    aligned = ai_model.align_benchmark(bars.ts, shifted, spy.close)
    exact = ai_model.align_benchmark(bars.ts, spy.ts, spy.close)
    np.testing.assert_array_equal(aligned, exact)
    assert np.isfinite(exact).all()


# -- regimes ----------------------------------------------------------------------------------


def _path(daily_returns: np.ndarray, start: float = 100.0) -> np.ndarray:
    return start * np.cumprod(1.0 + daily_returns)


def test_regimes_on_crafted_series():
    rng = np.random.default_rng(1)
    n = 260
    uptrend = _path(0.003 + rng.normal(0, 0.004, n))
    decline = _path(-0.004 + rng.normal(0, 0.004, n))
    whipsaw = _path(np.where(np.arange(n) % 2 == 0, 0.035, -0.033))
    flat = _path(rng.normal(0, 0.002, n))
    assert regime_series(uptrend)[-1] == "bull"
    assert regime_series(decline)[-1] == "bear"
    assert regime_series(whipsaw)[-1] == "volatile"
    assert regime_series(flat)[-1] == "range"
    # Too little history to judge a trend reads as range.
    assert regime_series(uptrend[:40])[-1] == "range"


def test_regimes_on_real_spy_history(spy):
    regimes = np.array(regime_series(spy.close))
    days = exchange_day_numbers(spy.ts)

    def window(first: str, last: str) -> np.ndarray:
        lo = (np.datetime64(first) - np.datetime64("1970-01-01")).astype(int)
        hi = (np.datetime64(last) - np.datetime64("1970-01-01")).astype(int)
        return regimes[(days >= lo) & (days <= hi)]

    crash = window("2008-10-01", "2008-10-31")
    assert len(crash) > 15 and set(crash) <= {"volatile", "bear"}
    assert (crash == "volatile").sum() > len(crash) / 2
    covid = window("2020-03-09", "2020-03-31")
    assert set(covid) == {"volatile"}
    calm_bull = window("2017-01-01", "2017-12-31")
    assert "volatile" not in set(calm_bull)
    assert (calm_bull == "bull").sum() > 10 * (calm_bull == "bear").sum()


def test_detect_regime_matches_the_series_at_the_last_bar(spy):
    from ai_analyzer import AIAnalyzer, detect_regime

    cut = spy.tail(3000)
    for end in (500, 1200, 2999):
        head = BarSeries.from_arrays(
            cut.ts[: end + 1], cut.open[: end + 1], cut.high[: end + 1],
            cut.low[: end + 1], cut.close[: end + 1], cut.volume[: end + 1],
        )
        assert detect_regime(head) == regime_series(head.close)[-1]
        assert AIAnalyzer.detect_regime(head) == detect_regime(head)
    assert detect_regime(BarSeries.empty()) == "range"


def test_feature_row_equals_the_last_row_of_the_feature_matrix(aapl, spy):
    """The analyzer scores an idea from feature_row: every value must be exactly the
    matrix's last row, for short and long histories, with a benchmark, one with missing
    sessions, none, and a zero last volume."""
    bench = ai_model.align_benchmark(aapl.ts, spy.ts, spy.close)
    holed = bench.copy()
    holed[::37] = np.nan
    ends = list(range(1, 130)) + list(range(130, len(aapl), 97))
    for end in ends:
        lo = max(0, end - 500)
        high, low, close = aapl.high[lo:end], aapl.low[lo:end], aapl.close[lo:end]
        volume = aapl.volume[lo:end].copy()
        if end % 5 == 0:
            volume[-1] = 0.0
        for bench_close in (None, bench[lo:end], holed[lo:end]):
            matrix = feature_matrix(high, low, close, volume, bench_close)
            row = ai_model.feature_row(high, low, close, volume, bench_close)
            expected = {name: float(matrix[name][-1]) for name in FEATURE_NAMES}
            assert {k: None if math.isnan(v) else v for k, v in row.items()} == {
                k: None if math.isnan(v) else v for k, v in expected.items()}, end
    assert all(math.isnan(v) for v in ai_model.feature_row(*(np.array([]),) * 4, None).values())
    with pytest.raises(ValueError, match="volume has 2 rows"):
        ai_model.feature_row(aapl.high[:3], aapl.low[:3], aapl.close[:3], aapl.volume[:2], None)


def test_latest_regime_equals_the_series_label_on_every_window_of_real_history(spy):
    from ai_analyzer import REGIME_WINDOW_BARS
    from ai.ai_model import latest_regime

    closes = spy.close[-2600:]
    # Short histories (every length up to a full window), then every sliding detector window.
    for end in range(1, REGIME_WINDOW_BARS + 1):
        assert latest_regime(closes[:end]) == regime_series(closes[:end])[-1], end
    labels = set()
    for end in range(REGIME_WINDOW_BARS, len(closes) + 1):
        window = closes[end - REGIME_WINDOW_BARS : end]
        label = latest_regime(window)
        assert label == regime_series(window)[-1], end
        labels.add(label)
    assert labels == {"bull", "bear", "volatile", "range"}
    with pytest.raises(ValueError, match="at least one close"):
        latest_regime(np.array([]))


# -- labels -----------------------------------------------------------------------------------


def _bars(rows: list[tuple[float, float, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(open, high, low) arrays from rows."""
    arr = np.array(rows, dtype=float)
    return arr[:, 0], arr[:, 1], arr[:, 2]


def test_first_touch_labels():
    bracket = Bracket(stop=0.03, target=0.06, horizon_days=3)
    # Idea on day 0 enters at day 1's open (100): stop 97, target 106.
    target_first = _bars([(99, 99, 99), (100, 101, 99), (101, 106.5, 100), (100, 100, 90), (100, 100, 100)])
    stop_first = _bars([(99, 99, 99), (100, 101, 96.9), (101, 107, 100), (100, 100, 100), (100, 100, 100)])
    same_day = _bars([(99, 99, 99), (100, 107, 96), (100, 100, 100), (100, 100, 100), (100, 100, 100)])
    neither = _bars([(99, 99, 99), (100, 102, 98), (100, 105, 98), (100, 105.9, 97.1), (100, 100, 100)])
    for rows, expected in ((target_first, 1.0), (stop_first, 0.0), (same_day, 0.0), (neither, 0.0)):
        label, end = first_touch_labels(*rows, bracket, "long")
        assert label[0] == expected
        assert math.isnan(label[-1])  # no complete horizon after the last day
    label, end = first_touch_labels(*target_first, bracket, "long")
    assert end[0] == 2  # decided on day 2
    # A short mirrors the bracket: target 94 below, stop 103 above.
    short_win = _bars([(99, 99, 99), (100, 101, 99), (99, 100, 93.9), (100, 100, 100), (100, 100, 100)])
    assert first_touch_labels(*short_win, bracket, "short")[0][0] == 1.0
    assert first_touch_labels(*short_win, bracket, "long")[0][0] == 0.0


# -- training and calibration on real held-out data --------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[ai_model.ModelReport, Path]:
    data = tmp_path_factory.mktemp("data")
    (data / "daily").mkdir()
    for name in TRAIN_FILES:
        (data / "daily" / name).symlink_to(DAILY / name)
    out = tmp_path_factory.mktemp("model") / "model.json"
    report = ai_model.train_model(data, out)
    return report, out


def test_calibration_on_held_out_data(trained):
    report, _ = trained
    print("\n" + report.render())
    assert "Brier" in str(report) and "ECE" in str(report)
    for side in ("long", "short"):
        m = report.metrics[side]
        print(side, {k: v for k, v in m.items() if k != "reliability"})
        assert m["n_test"] > 3000
        # Calibrated: on data the model never saw, forecasts match frequencies within 0.1.
        assert m["ece"] < 0.1
        assert m["pooled_ece"] < 0.1
        # Skill: at least as good as the no-skill forecasts, even the hindsight one.
        assert m["brier"] < m["brier_climatology"]
        assert m["brier"] <= m["brier_test_base_rate"] + 0.005
        assert m["auc"] > 0.52
    # Splits are ordered in time and never overlap.
    w = report.window
    assert w["train_end"] < w["calibration_start"] <= w["calibration_end"] < w["test_start"]


def test_saved_model_roundtrip_gives_identical_probabilities(trained, aapl, spy):
    _, path = trained
    model = load_model(path)
    raw = json.loads(path.read_text())
    assert raw["format_version"] == ai_model.MODEL_FORMAT_VERSION
    assert raw["feature_names"] == list(FEATURE_NAMES)
    assert {"created_at", "sklearn_version", "training_window", "symbols", "bracket"} <= set(raw)
    assert raw["sides"]["long"]["calibration"]["method"] == "platt"
    cols = _features(aapl.tail(300), spy)
    rows = [{n: float(cols[n][i]) for n in FEATURE_NAMES} for i in range(-50, 0)]
    first = [model.predict_proba(r) for r in rows]
    again = load_model(path)
    assert [again.predict_proba(r) for r in rows] == first
    ai_model.save_model(again, path.with_name("copy.json"))
    copy = load_model(path.with_name("copy.json"))
    assert [copy.predict_proba(r) for r in rows] == first
    assert all(0.0 < p < 1.0 for p in first)
    assert not list(path.parent.glob("*.tmp"))


def test_model_file_problems_are_named(trained, tmp_path):
    _, path = trained
    raw = json.loads(path.read_text())

    def write(data: object) -> Path:
        target = tmp_path / "bad.json"
        target.write_text(json.dumps(data))
        return target

    with pytest.raises(ModelFileError, match="format_version=99"):
        load_model(write({**raw, "format_version": 99}))
    with pytest.raises(ModelFileError, match="feature names differ.*rsi_14"):
        load_model(write({**raw, "feature_names": [n for n in FEATURE_NAMES if n != "rsi_14"]}))
    with pytest.raises(ModelFileError, match="not a confidence model file"):
        load_model(write({"hello": 1}))
    broken = json.loads(json.dumps(raw))
    broken["sides"]["long"]["coefficients"] = [1.0]
    with pytest.raises(ModelFileError, match="coefficients"):
        load_model(write(broken))
    (tmp_path / "garbage.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="unreadable"):
        load_model(tmp_path / "garbage.json")
    with pytest.raises(ModelFileError, match="no such file.*train"):
        load_model(tmp_path / "absent.json")


def test_predict_proba_refuses_incomplete_features(trained):
    model = load_model(trained[1])
    features = {n: 0.0 for n in FEATURE_NAMES}
    del features["beta_60d"]
    with pytest.raises(ValueError, match="beta_60d"):
        model.predict_proba(features)
    with pytest.raises(ValueError, match="rsi_14"):
        model.predict_proba({**{n: 0.0 for n in FEATURE_NAMES}, "rsi_14": math.nan})


def test_training_needs_the_benchmark(tmp_path):
    (tmp_path / "daily").mkdir()
    (tmp_path / "daily" / AAPL_FILE.name).symlink_to(AAPL_FILE)
    with pytest.raises(TrainingDataError, match="benchmark SPY"):
        ai_model.train_model(tmp_path, tmp_path / "m.json")
    with pytest.raises(TrainingDataError, match="no 'daily' folder"):
        ai_model.train_model(tmp_path / "nowhere", tmp_path / "m.json")


def test_daily_file_choice_prefers_recent_adjusted_history():
    files = ai_model.daily_files(SHARED_DATA)
    # AAPL: the split-adjusted 2013-2023 file, not the raw LEAN one with split gaps.
    assert files["AAPL"].name == "AAPL-1d-2013-01-02-2023-12-29.csv"
    # AMZN: not the 4-day or one-year files.
    assert files["AMZN"].name == "AMZN-1d-2013-01-02-2023-12-29.csv"
    assert files["NVDA"].name == "NVDA-1d-2013-01-02-2023-12-29.csv"


def test_shipped_model_loads_and_reports_its_held_out_quality():
    model = load_model(ROOT / "models" / "confidence_model.json")
    assert model.feature_names == FEATURE_NAMES
    assert model.bracket == Bracket(0.03, 0.06, 20)
    assert set(model.metadata["symbols"]) >= {"SPY", "QQQ", "AAPL", "MSFT", "NVDA", "TSLA"}
    for side in ("long", "short"):
        metrics = model.sides[side].metrics
        assert metrics["ece"] < 0.1
        assert metrics["brier"] < metrics["brier_climatology"]


def test_feature_row_is_bit_identical_on_long_and_damaged_histories(aapl, spy):
    """feature_row's own recursions (cached powers, last value only) against the matrix, to the
    bit: histories long enough for several closed-form chunks (>1197 bars for the 12-bar EMA),
    zero closes, NaN highs/lows (finite closes and volumes keep the fast path) and benchmarks
    with holes."""

    def bits(row: dict[str, float]) -> dict[str, str]:
        return {k: float(v).hex() for k, v in row.items()}

    bench_all = ai_model.align_benchmark(aapl.ts, spy.ts, spy.close)
    n = len(aapl)
    cases = [(0, end) for end in range(1, 200, 7)] + [(0, end) for end in (1197, 1198, 1199, 1300, 2400, n)]
    cases += [(lo, lo + size) for lo in range(0, n - 3000, 331) for size in (129, 130, 500, 3000)]
    for lo, end in cases:
        high, low, close = (np.array(a[lo:end]) for a in (aapl.high, aapl.low, aapl.close))
        volume = np.array(aapl.volume[lo:end])
        bench = bench_all[lo:end].copy()
        variants = [(high, low, close, volume, None), (high, low, close, volume, bench)]
        if end - lo > 30:
            damaged_high, zero_close, holed = high.copy(), close.copy(), bench.copy()
            damaged_high[-5] = np.nan
            zero_close[-12] = 0.0
            holed[-30::7] = np.nan
            variants += [(damaged_high, low, close, volume, holed), (high, low, zero_close, volume, bench)]
        for h, lw, c, v, b in variants:
            with np.errstate(all="ignore"):  # the zero close makes infinite returns
                matrix = feature_matrix(h, lw, c, v, b)
            expected = {name: float(matrix[name][-1]) for name in FEATURE_NAMES}
            assert bits(ai_model.feature_row(h, lw, c, v, b)) == bits(expected), (lo, end)
