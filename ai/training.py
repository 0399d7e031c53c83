"""Training the confidence model from a folder of daily CSV files (issue 17: split out of
``ai/ai_model.py``): the dataset of ideas, fitting, calibrating, testing, the bracket model's
walk-forward, and writing the model file (the data directory is read by :mod:`ai.daily_data`).
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import structlog

from ai.bracket_model import BracketModel
from ai.calibration import brier_score, expected_calibration_error, reliability_table, summary
from ai.daily_data import SymbolBars, TrainingDataError, daily_files, read_daily_csv
from ai.evaluate import evaluate
from ai.features import FEATURE_NAMES, REGIMES, align_benchmark, context_key, feature_matrix, regime_series
from ai.ideas import DefaultBracket
from ai.labels import SIDES, Bracket, Side, _gap_nearby, _split_gap_mask, first_touch_labels
from ai.model import Calibration, ConfidenceModel, SideModel, save_model
from core.errors import ConfigError
from market.market_data import exchange_day_numbers

log = structlog.get_logger(__name__)

# Cells of the context table are shrunk towards the base rate with this many pseudo-ideas.
CONTEXT_PRIOR_WEIGHT = 50.0

__all__ = ["CONTEXT_PRIOR_WEIGHT", "Dataset", "ModelReport", "SymbolBars", "TrainingDataError", "build_dataset",
           "daily_files", "fit_bracket_model", "main", "read_daily_csv", "time_splits", "train_model"]


# -- the dataset -------------------------------------------------------------------------------


@dataclass
class Dataset:
    """Ideas (one per symbol and day) with features, outcomes per side and context."""

    symbols: list[str]
    X: np.ndarray  # (n, len(FEATURE_NAMES))
    ts: np.ndarray  # idea day (epoch seconds)
    end_ts: dict[Side, np.ndarray]  # last bar each outcome looked at
    y: dict[Side, np.ndarray]
    context: list[str]  # context_key of each idea


def build_dataset(
    symbols: Sequence[SymbolBars], benchmark: SymbolBars, bracket: Bracket
) -> Dataset:
    """Features and first-touch outcomes for every day of every symbol that has both."""
    bench = benchmark.bars
    regime_by_day = dict(
        zip(exchange_day_numbers(bench.ts).tolist(), regime_series(bench.close), strict=True)
    )
    rs_col = FEATURE_NAMES.index("relative_strength_10d")
    xs, tss, contexts, names = [], [], [], []
    ends: dict[Side, list[np.ndarray]] = {s: [] for s in SIDES}
    ys: dict[Side, list[np.ndarray]] = {s: [] for s in SIDES}
    for item in symbols:
        bars = item.bars
        cols = feature_matrix(
            bars.high,
            bars.low,
            bars.close,
            bars.volume,
            align_benchmark(bars.ts, bench.ts, bench.close),
        )
        X = np.column_stack([cols[name] for name in FEATURE_NAMES])
        keep = np.isfinite(X).all(axis=1)
        keep &= ~_gap_nearby(_split_gap_mask(bars.open, bars.close), bracket.horizon_days)
        labels = {
            side: first_touch_labels(bars.open, bars.high, bars.low, bracket, side)
            for side in SIDES
        }
        for side in SIDES:
            keep &= ~np.isnan(labels[side][0])
        idx = np.flatnonzero(keep)
        if len(idx) == 0:
            continue
        names.append(item.symbol)
        xs.append(X[idx])
        tss.append(bars.ts[idx])
        for side in SIDES:
            label, end = labels[side]
            ys[side].append(label[idx])
            ends[side].append(bars.ts[end[idx]])
        days = exchange_day_numbers(bars.ts[idx]).tolist()
        for day, rs in zip(days, X[idx, rs_col].tolist(), strict=True):
            contexts.append(context_key(regime_by_day.get(day, "range"), rs))
    if not xs:
        raise TrainingDataError("no symbol has enough daily bars to form a single labelled idea")
    return Dataset(
        symbols=names,
        X=np.vstack(xs),
        ts=np.concatenate(tss),
        end_ts={s: np.concatenate(ends[s]) for s in SIDES},
        y={s: np.concatenate(ys[s]) for s in SIDES},
        context=contexts,
    )


# -- the bracket model ---------------------------------------------------------------------------


def fit_bracket_model(series: dict[str, Any], bench: Any, default: DefaultBracket) -> BracketModel:
    """Walk forward over every session of ``series`` (symbol -> BarSeries) with the default
    bracket; the last refit's logistic and weight are the model, the walk's out-of-sample
    record its metrics."""
    ev = evaluate(series, bench, default)
    settled = np.isfinite(ev.label)
    metrics: dict[str, Any] = {}
    if settled.any():
        s = summary(ev.probability[settled], ev.label[settled], ev.climatology[settled], ev.groups[settled])
        metrics = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in s.items()}
        metrics["population"] = "sessions, walk-forward out of sample, the training symbols"
    metrics["refits"] = [{"year": f["year"], "weight": f["weight"], "past_weight": f["past_weight"],
                          "drift_slope": f["drift_slope"], "reversal_slopes": f["reversal_slopes"],
                          "n_train": f["n_train"]} for f in ev.fits]
    last = ev.last_model
    weight = ev.last_weight if last is not None else 0.0
    return BracketModel(logistic=last, weight=weight, default=default, metrics=metrics,
                        past_weight=ev.last_past_weight, drift_slope=ev.last_drift_slope[0],
                        drift_center=ev.last_drift_slope[1], reversal=ev.last_reversal)


# -- training ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelReport:
    """What training produced and how well the model did on data it never saw."""

    path: Path
    created_at: str
    symbols: list[str]
    window: dict[str, str]  # first/last idea day of each split
    metrics: dict[str, dict[str, Any]]  # per side

    def render(self) -> str:
        """A few human-readable lines for the CLI (``python main.py train``)."""
        lines = [
            f"model written to {self.path} ({self.created_at})",
            f"symbols: {', '.join(self.symbols)}",
            "train {train_start}..{train_end}, calibration {calibration_start}..{calibration_end}, "
            "test {test_start}..{test_end}".format(**self.window),
        ]
        for side, m in self.metrics.items():
            lines.append(
                f"{side}: test ideas {m['n_test']}, base rate {m['base_rate_test']:.3f}, "
                f"Brier {m['brier']:.4f} (no-skill {m['brier_climatology']:.4f}), "
                f"ECE {m['ece']:.4f}, AUC {m['auc']:.3f}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()


def _day(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), UTC).date().isoformat()


def _context_rates(keys: Sequence[str], y: np.ndarray, base: float) -> dict[str, float]:
    rates: dict[str, float] = {}
    arr = np.asarray(keys)
    for regime in REGIMES:
        for sign in ("rs_pos", "rs_neg"):
            key = f"{regime}|{sign}"
            mask = arr == key
            wins = float(y[mask].sum())
            count = float(mask.sum())
            rates[key] = round((wins + CONTEXT_PRIOR_WEIGHT * base) / (count + CONTEXT_PRIOR_WEIGHT), 6)
    return rates


def _fit_side(
    data: Dataset,
    side: Side,
    train: np.ndarray,
    calib: np.ndarray,
    test: np.ndarray,
    calibration: Literal["platt", "isotonic"],
    regularization: float,
) -> SideModel:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss, roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    y = data.y[side]
    X_train = data.X[train]
    clip_low = np.percentile(X_train, 1, axis=0)
    clip_high = np.percentile(X_train, 99, axis=0)

    def winsorise(X: np.ndarray) -> np.ndarray:
        return np.clip(X, clip_low, clip_high)

    pipeline = make_pipeline(
        FunctionTransformer(winsorise),
        StandardScaler(),
        LogisticRegression(C=regularization, max_iter=2000),
    )
    pipeline.fit(X_train, y[train])
    calibrated = CalibratedClassifierCV(
        FrozenEstimator(pipeline), method="sigmoid" if calibration == "platt" else "isotonic"
    )
    calibrated.fit(data.X[calib], y[calib])
    fitted = calibrated.calibrated_classifiers_[0].calibrators[0]
    if calibration == "platt":
        mapping = Calibration("platt", a=float(fitted.a_), b=float(fitted.b_))
    else:
        mapping = Calibration(
            "isotonic",
            thresholds=tuple(float(v) for v in fitted.X_thresholds_),
            values=tuple(float(v) for v in fitted.y_thresholds_),
        )
    scaler: StandardScaler = pipeline[1]
    regression: LogisticRegression = pipeline[2]
    # The most recent rate the model has seen (the calibration split's) is the no-skill
    # forecast and the fallback of the context table, which is counted on the same split.
    base_rate = float(y[calib].mean())
    model = SideModel(
        mean=np.asarray(scaler.mean_, float),
        scale=np.asarray(scaler.scale_, float),
        clip_low=clip_low,
        clip_high=clip_high,
        coefficients=np.asarray(regression.coef_[0], float),
        intercept=float(regression.intercept_[0]),
        calibration=mapping,
        base_rate=base_rate,
        context_rates=_context_rates([data.context[i] for i in calib], y[calib], base_rate),
        metrics={},
    )
    # The numpy inference must reproduce scikit-learn's exactly, or the file would lie.
    ours = model.probabilities(data.X[calib])
    theirs = calibrated.predict_proba(data.X[calib])[:, 1]
    if not np.allclose(ours, theirs, rtol=0, atol=1e-9):
        raise RuntimeError("numpy inference disagrees with scikit-learn: calibration export is broken")

    p_test = model.probabilities(data.X[test])
    y_test = y[test]
    test_rate = float(y_test.mean())
    context_test = np.array(
        [model.context_rates.get(data.context[i], base_rate) for i in test], dtype=float
    )
    pooled = 0.7 * p_test + 0.3 * context_test  # default weights, neutral sentiment (ai_analyzer)
    has_both = 0 < y_test.sum() < len(y_test)
    metrics = {
        "n_train": int(len(train)),
        "n_calibration": int(len(calib)),
        "n_test": int(len(test)),
        "base_rate_train": round(float(y[train].mean()), 6),
        "base_rate_calibration": round(base_rate, 6),
        "base_rate_test": round(test_rate, 6),
        "brier": round(brier_score(p_test, y_test), 6),
        # No skill, knowable in advance: always forecast the calibration split's rate.
        "brier_climatology": round(brier_score(np.full(len(test), base_rate), y_test), 6),
        # No skill with hindsight: always forecast the test split's own rate.
        "brier_test_base_rate": round(test_rate * (1.0 - test_rate), 6),
        "ece": round(expected_calibration_error(p_test, y_test), 6),
        "auc": round(float(roc_auc_score(y_test, p_test)), 6) if has_both else None,
        "log_loss": round(float(log_loss(y_test, np.clip(p_test, 1e-6, 1 - 1e-6), labels=[0, 1])), 6),
        "pooled_brier": round(brier_score(pooled, y_test), 6),
        "pooled_ece": round(expected_calibration_error(pooled, y_test), 6),
        "forecast_min": round(float(p_test.min()), 6),
        "forecast_max": round(float(p_test.max()), 6),
        "share_above_0_5": round(float((p_test > 0.5).mean()), 6),
        "reliability": reliability_table(p_test, y_test),
    }
    return SideModel(**{**model.__dict__, "metrics": metrics})


def time_splits(
    data: Dataset, side: Side, fractions: tuple[float, float] = (0.6, 0.8)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of the train / calibration / test ideas, split by idea day.

    Ideas are ordered by day; the first 60% of days train, the next 20% calibrate, the rest
    test. A train (calibration) idea whose outcome was still open when the next split begins
    is dropped, so no later price leaks into an earlier split.
    """
    days = np.unique(data.ts)
    if len(days) < 30:
        raise TrainingDataError(f"only {len(days)} days of labelled ideas: need at least 30")
    calib_start = days[int(len(days) * fractions[0])]
    test_start = days[int(len(days) * fractions[1])]
    end = data.end_ts[side]
    train = np.flatnonzero((data.ts < calib_start) & (end < calib_start))
    calib = np.flatnonzero((data.ts >= calib_start) & (data.ts < test_start) & (end < test_start))
    test = np.flatnonzero(data.ts >= test_start)
    return train, calib, test


def train_model(
    data_dir: Path,
    out_path: Path,
    *,
    symbols: Iterable[str] | None = None,
    stop: float = 0.03,
    target: float = 0.06,
    horizon_days: int = 20,
    benchmark: str = "SPY",
    calibration: Literal["platt", "isotonic"] = "platt",
    regularization: float = 0.1,
    now: datetime | None = None,
) -> ModelReport:
    """Train, calibrate, test and save a model from ``data_dir/daily/SYMBOL-1d-*.csv``.

    ``symbols`` defaults to every symbol with a daily file; ``benchmark`` (SPY) must have one.
    Returns the held-out metrics; the model file is written atomically to ``out_path``.
    """
    import sklearn

    bracket = Bracket(stop=stop, target=target, horizon_days=horizon_days)
    files = daily_files(Path(data_dir))
    if benchmark not in files:
        raise TrainingDataError(
            f"--data {data_dir}: no daily file for the benchmark {benchmark} "
            f"(expected daily/{benchmark}-1d-FIRST-LAST.csv)"
        )
    wanted = sorted(files) if symbols is None else [s.strip().upper() for s in symbols]
    missing = [s for s in wanted if s not in files]
    if missing:
        raise TrainingDataError(f"--data {data_dir}: no daily file for {', '.join(missing)}")
    bench = read_daily_csv(files[benchmark], benchmark)
    series = [bench if s == benchmark else read_daily_csv(files[s], s) for s in wanted]
    data = build_dataset(series, bench, bracket)
    # Not the wall clock: the last bar of the data, so training on the same data writes
    # the same file byte for byte (tests/test_confidence.py trains twice and compares).
    last_bar = datetime.fromtimestamp(max(int(s.bars.ts[-1]) for s in series), UTC)
    created = (now or last_bar).astimezone(UTC).isoformat(timespec="seconds")
    sides: dict[Side, SideModel] = {}
    window: dict[str, str] = {}
    for side in SIDES:
        train, calib, test = time_splits(data, side)
        if min(len(train), len(calib), len(test)) < 100:
            raise TrainingDataError(
                f"too few ideas to train and test honestly (train {len(train)}, "
                f"calibration {len(calib)}, test {len(test)}): add symbols or history"
            )
        for part, idx in (("train", train), ("calibration", calib), ("test", test)):
            window[f"{part}_start"] = _day(data.ts[idx].min())
            window[f"{part}_end"] = _day(data.ts[idx].max())
        sides[side] = _fit_side(data, side, train, calib, test, calibration, regularization)
    bracket_model = fit_bracket_model(
        {s.symbol: s.bars for s in series}, bench.bars,
        DefaultBracket(stop=stop, target=target, horizon=horizon_days),
    )
    model = ConfidenceModel(
        bracket_model=bracket_model,
        feature_names=FEATURE_NAMES,
        sides=sides,
        bracket=bracket,
        created_at=created,
        metadata={
            "sklearn_version": sklearn.__version__,
            "library_versions": {"python": platform.python_version(), "numpy": np.__version__,
                                 "scikit-learn": sklearn.__version__},
            "reproduce": f"python main.py train --data DIR --symbols {','.join(wanted)}",
            "benchmark": benchmark,
            "symbols": data.symbols,
            "training_window": window,
            "source_files": {s: files[s].name for s in data.symbols},
            "model": f"logistic regression (C={regularization}), {calibration} calibration",
        },
    )
    save_model(model, Path(out_path))
    report = ModelReport(
        path=Path(out_path),
        created_at=created,
        symbols=data.symbols,
        window=window,
        metrics={side: m.metrics for side, m in sides.items()},
    )
    log.info(
        "ai_model_trained",
        path=str(out_path),
        symbols=data.symbols,
        **{
            f"{side}_{k}": report.metrics[side][k]
            for side in SIDES
            for k in ("brier", "brier_climatology", "ece", "base_rate_test", "auc")
        },
    )
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``python ai/ai_model.py --data DIR [--out PATH] [--symbols A,B]``: train and report."""
    import argparse

    parser = argparse.ArgumentParser(description="Train the calibrated confidence model.")
    parser.add_argument("--data", required=True, type=Path, help="folder with daily/SYMBOL-1d-*.csv")
    parser.add_argument("--out", type=Path, default=Path("models/confidence_model.json"))
    parser.add_argument("--symbols", default=None, help="comma list (default: every file)")
    parser.add_argument("--calibration", choices=("platt", "isotonic"), default="platt")
    args = parser.parse_args(argv)
    symbols = args.symbols.split(",") if args.symbols else None
    try:
        report = train_model(args.data, args.out, symbols=symbols, calibration=args.calibration)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
