"""Walk-forward backtests: for each window the AI model is trained on the train dates only
(window-restricted copies of the daily files), the test dates are backtested with it, and the
windows are chained into one out-of-sample run (its comparison pooled window by window)."""

from __future__ import annotations

import csv
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import structlog

from ai import ai_model
from analytics.performance import PerformanceReport, compute_performance
from backtest.benchmarks import pooled
from backtest.data import midnight
from backtest.options import BacktestError, BacktestOptions, BacktestResult
from backtest.runner import run_backtest
from engine.trading_system import BENCHMARK
from simulator.csv_source import CsvDataError

log = structlog.get_logger(__name__)

ZERO = Decimal(0)


# -- calibration ---------------------------------------------------------------------------------


def calibration_summary(p: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Brier score, expected calibration error and reliability bins of forecasts ``p`` of
    outcomes ``y`` (1 = the bracket reached its target first), as the report shows them."""
    probs = np.asarray(p, dtype=float)
    outcomes = np.asarray(y, dtype=float)
    if probs.size == 0:
        return {"n": 0, "brier": None, "ece": None, "base_rate": None, "mean_forecast": None, "bins": []}
    return {
        "n": int(probs.size),
        "brier": round(ai_model.brier_score(probs, outcomes), 6),
        "ece": round(ai_model.expected_calibration_error(probs, outcomes), 6),
        "base_rate": round(float(outcomes.mean()), 6),
        "mean_forecast": round(float(probs.mean()), 6),
        "bins": ai_model.reliability_table(probs, outcomes),
    }


@dataclass
class WalkForwardWindow:
    """One train/test window: the model trained on the train dates and its test backtest."""

    index: int
    train_start: date
    train_end: date
    test_start: date
    test_end: date
    model: dict[str, Any]
    calibration: dict[str, Any]
    result: BacktestResult

    def row(self) -> dict[str, Any]:
        """The window's line in the report's walk-forward table (out-of-sample figures)."""
        perf = self.result.performance
        return {
            "window": self.index,
            "train_start": self.train_start.isoformat(),
            "train_end": self.train_end.isoformat(),
            "test_start": self.test_start.isoformat(),
            "test_end": self.test_end.isoformat(),
            "oos": {
                "total_return": _round(perf.total_return),
                "sharpe": _round(perf.sharpe),
                "max_drawdown": _round(perf.max_drawdown_pct),
                "trades": perf.trades.total,
                "win_rate": _round(perf.trades.win_rate),
            },
            "calibration": {
                "ideas": self.calibration.get("n"),
                "brier": self.calibration.get("brier"),
                "ece": self.calibration.get("ece"),
                "base_rate": self.calibration.get("base_rate"),
            },
            "model_test_brier": self.model.get("test_brier"),
        }


@dataclass
class WalkForwardResult:
    """Every window, and the out-of-sample windows chained into one run."""

    windows: list[WalkForwardWindow]
    equity_curve: list[tuple[datetime, Decimal]]
    trades: list[dict[str, Any]]
    performance: PerformanceReport
    calibration: dict[str, Any]
    options: BacktestOptions
    train_years: float
    test_months: int
    roll_months: int
    #: The windows' comparisons pooled (:func:`backtest.benchmarks.pooled`).
    comparison: dict[str, Any] | None = None

    def meta(self) -> dict[str, Any]:
        first, last = self.windows[0], self.windows[-1]
        base = self.windows[0].result.meta()
        base.update({
            "period": f"{first.test_start.isoformat()} .. {last.test_end.isoformat()} (out of sample)",
            "sessions": sum(len(w.result.sessions) for w in self.windows),
            "bars": f"{first.result.bar_mode} ({sum(w.result.bars for w in self.windows):,} symbol-sessions)",
            "walk_forward": (f"{len(self.windows)} windows: train {self.train_years:g} years, test "
                             f"{self.test_months} months, roll {self.roll_months} months"),
            "ai_model": "retrained on each window's train dates only (see the walk-forward table)",
            "commission_paid": str(sum((w.result.commission_paid for w in self.windows), ZERO)),
            "orders_submitted": sum(len(w.result.orders) for w in self.windows),
            "chaining": "each window starts from the starting cash; the combined curve chains their returns",
        })
        return base


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


def _add_months(day: date, months: int) -> date:
    month = day.month - 1 + months
    year = day.year + month // 12
    month = month % 12 + 1
    for candidate in range(day.day, 0, -1):
        try:
            return date(year, month, candidate)
        except ValueError:
            continue
    raise ValueError(f"cannot add {months} months to {day}")


def _add_years(day: date, years: float) -> date:
    return _add_months(day, int(round(years * 12)))


def _file_span(path: Path) -> tuple[date, date]:
    stem = path.name[: -len(".csv")]
    parts = stem.split("-1d-", 1)[1]
    return date.fromisoformat(parts[:10]), date.fromisoformat(parts[11:21])


def write_window_files(files: dict[str, Path], out_dir: Path, first: date, last: date) -> dict[str, Path]:
    """Copies of daily files holding only the rows dated ``first..last`` (for training).

    Named ``SYMBOL-1d-FIRST-LAST.csv`` after the rows actually kept, in ``out_dir/daily``.
    """
    folder = out_dir / "daily"
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for symbol, path in files.items():
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
        if not rows:
            continue
        header, kept = rows[0], []
        for row in rows[1:]:
            if not row:
                continue
            try:
                day = date.fromisoformat(row[0].strip()[:10])
            except ValueError as exc:
                raise CsvDataError(path, rows.index(row) + 1, f"date {row[0]!r} is not YYYY-MM-DD") from exc
            if first <= day <= last:
                kept.append(row)
        if not kept:
            continue
        name = f"{symbol}-1d-{kept[0][0].strip()[:10]}-{kept[-1][0].strip()[:10]}.csv"
        target = folder / name
        with target.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(kept)
        written[symbol] = target
    return written


def out_of_sample_calibration(model: Any, files: dict[str, Path], benchmark: str, test_start: date,
                              test_end: date) -> dict[str, Any]:
    """The model's long-side forecasts for every labelled idea dated in the test window
    against their first-touch outcomes (entry at the next open, the model's own bracket).

    The model was trained before ``test_start``. Features read the history before each idea;
    an idea's outcome may read bars after ``test_end`` (up to its horizon): that only scores
    the forecast, it decides nothing.
    """
    history_from = test_start - timedelta(days=600)
    outcome_until = test_end + timedelta(days=int(model.bracket.horizon_days * 7 / 5) + 10)
    with tempfile.TemporaryDirectory(prefix="wf-test-") as tmp:
        copies = write_window_files(files, Path(tmp), history_from, outcome_until)
        if benchmark not in copies:
            return calibration_summary([], [])
        bench = ai_model.read_daily_csv(copies[benchmark], benchmark)
        series = [bench if s == benchmark else ai_model.read_daily_csv(p, s) for s, p in copies.items()]
        try:
            data = ai_model.build_dataset(series, bench, model.bracket)
        except ai_model.TrainingDataError:
            return calibration_summary([], [])
    lo, hi = midnight(test_start), midnight(test_end)
    keep = (data.ts >= lo) & (data.ts <= hi)
    if not keep.any():
        return calibration_summary([], [])
    p = model.sides["long"].probabilities(data.X[keep])
    return calibration_summary(p, data.y["long"][keep])


def walk_forward(
    settings: Any,
    options: BacktestOptions,
    *,
    train_years: float = 3.0,
    test_months: int = 6,
    roll_months: int | None = None,
    progress_stream: TextIO | None = None,
) -> WalkForwardResult:
    """Train on ``train_years`` before each test window of ``test_months``, backtest the test
    window with that model, then move on by ``roll_months`` (default: ``test_months``).

    Test windows start at ``options.start`` (default: ``train_years`` after the first date
    every symbol and the benchmark have data) and stop at ``options.end``. The model never
    sees a bar dated after its train window; the test backtest cannot look ahead either.
    """
    if train_years <= 0 or test_months < 1:
        raise BacktestError(f"walk-forward needs a positive train length and test months >= 1, got {train_years} / {test_months}")
    roll = roll_months or test_months
    if roll < 1:
        raise BacktestError(f"walk-forward roll must be at least 1 month, got {roll}")
    try:
        files = ai_model.daily_files(options.data_dir)
    except ai_model.TrainingDataError as exc:
        raise BacktestError(str(exc)) from None
    wanted = list(dict.fromkeys([*options.symbols, BENCHMARK]))
    missing = [s for s in wanted if s not in files]
    if missing:
        raise BacktestError(f"walk-forward needs daily files for {', '.join(missing)} under {options.data_dir}/daily")
    chosen = {s: files[s] for s in wanted}
    spans = [_file_span(p) for p in chosen.values()]
    data_first, data_last = max(s[0] for s in spans), min(s[1] for s in spans)
    test_start = options.start or _add_years(data_first, train_years)
    final = min(options.end or data_last, data_last)
    windows: list[WalkForwardWindow] = []
    index = 0
    while test_start <= final:
        index += 1
        test_end = min(_add_months(test_start, test_months) - timedelta(days=1), final)
        train_start, train_end = _add_years(test_start, -train_years), test_start - timedelta(days=1)
        log.info("walk_forward_window", window=index, train_start=train_start.isoformat(),
                 train_end=train_end.isoformat(), test_start=test_start.isoformat(), test_end=test_end.isoformat())
        with tempfile.TemporaryDirectory(prefix="wf-train-") as tmp:
            copies = write_window_files(chosen, Path(tmp), train_start, train_end)
            model_path = Path(tmp) / "model.json"
            try:
                trained = ai_model.train_model(Path(tmp), model_path, symbols=sorted(copies),
                                               stop=float(settings.trading.stop_loss),
                                               target=float(settings.trading.take_profit), benchmark=BENCHMARK)
            except (ai_model.TrainingDataError, ValueError) as exc:
                # ValueError: the model library refuses the window's ideas (one outcome class
                # only, say): one line naming the window instead of a traceback
                raise BacktestError(
                    f"walk-forward window {index} (train {train_start} .. {train_end}): "
                    f"the AI model cannot be trained on it: {exc}"
                ) from None
            model = ai_model.load_model(model_path)
        calibration = out_of_sample_calibration(model, chosen, BENCHMARK, test_start, test_end)
        window_options = replace(options, start=test_start, end=test_end)
        try:
            result = run_backtest(settings, window_options, model=model, progress_stream=progress_stream)
        except BacktestError as exc:
            log.warning("walk_forward_window_skipped", window=index, reason=str(exc))
            test_start = _add_months(test_start, roll)
            continue
        long_metrics = trained.metrics.get("long", {})
        windows.append(WalkForwardWindow(
            index=index, train_start=train_start, train_end=train_end, test_start=test_start, test_end=test_end,
            model={"created_at": model.created_at, "symbols": trained.symbols, "window": trained.window,
                   "test_brier": _round(long_metrics.get("brier")), "test_auc": _round(long_metrics.get("auc"))},
            calibration=calibration, result=result,
        ))
        test_start = _add_months(test_start, roll)
    if not windows:
        raise BacktestError("no walk-forward window could be tested: widen the date range or shorten the windows")
    curve, trades = _chain(windows)
    performance = compute_performance(curve, trades, periods_per_year=252)
    calibration = _pooled_calibration(windows)
    return WalkForwardResult(windows=windows, equity_curve=curve, trades=trades, performance=performance,
                             calibration=calibration, options=options, train_years=train_years,
                             test_months=test_months, roll_months=roll,
                             comparison=pooled([w.result.comparison for w in windows],
                                               [w.result.random_entries for w in windows],
                                               performance.total_return))


def _pooled_calibration(windows: list[WalkForwardWindow]) -> dict[str, Any]:
    """All windows' out-of-sample ideas together (bins merged by count)."""
    merged: dict[tuple[float, float], list[float]] = {}
    briers: list[tuple[float, int]] = []
    for w in windows:
        cal = w.calibration
        if cal.get("n"):
            briers.append((float(cal["brier"]), int(cal["n"])))
        for b in cal.get("bins", []):
            key = (b["bin_low"], b["bin_high"])
            count, forecast, hits = merged.get(key, [0.0, 0.0, 0.0])
            n = float(b["count"])
            merged[key] = [count + n, forecast + n * b["mean_forecast"], hits + n * b["hit_rate"]]
    bins = [
        {"bin_low": lo, "bin_high": hi, "count": int(c), "mean_forecast": round(f / c, 4), "hit_rate": round(h / c, 4)}
        for (lo, hi), (c, f, h) in sorted(merged.items()) if c > 0
    ]
    total = sum(n for _, n in briers)
    ece = sum(b["count"] * abs(b["mean_forecast"] - b["hit_rate"]) for b in bins) / total if total else None
    return {
        "what": "AI model, out of sample: long-side forecasts on every labelled idea of the test windows",
        "n": total,
        "brier": round(sum(b * n for b, n in briers) / total, 6) if total else None,
        "ece": round(ece, 6) if ece is not None else None,
        "bins": bins,
    }


def _chain(windows: list[WalkForwardWindow]) -> tuple[list[tuple[datetime, Decimal]], list[dict[str, Any]]]:
    """One curve from the windows' curves, each scaled to start where the previous ended."""
    curve: list[tuple[datetime, Decimal]] = []
    level: Decimal | None = None
    for w in windows:
        points = w.result.equity_curve
        if not points:
            continue
        base = points[0][1]
        scale = (level / base) if level is not None else Decimal(1)
        for at, equity in points:
            if curve and at <= curve[-1][0]:
                continue
            curve.append((at, equity * scale))
        level = curve[-1][1]
    trades = sorted((t for w in windows for t in w.result.trades), key=lambda t: t["exit_at"])
    return curve, trades
