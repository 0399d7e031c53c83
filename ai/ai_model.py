"""The confidence model: features from daily bars, market regimes, training, the model file.

What the model predicts
-----------------------
For a trade idea on day ``i`` (known only from bars ``0..i``) the model estimates the
probability that a bracket order entered at the **next session's open** reaches its
**target before its stop** within ``horizon_days`` sessions. For a long entry at price ``e``
the stop is ``e * (1 - stop)`` and the target ``e * (1 + target)`` (3% / 6% by default, the
seed's bracket); a short entry mirrors them. Labels are read from later daily bars of the
training data only, by first touch on the daily high/low:

* the target is touched on an earlier day than the stop -> 1 (win);
* the stop is touched first -> 0;
* both are touched on the same day -> 0: a daily bar cannot tell which came first, so the
  label is conservative;
* neither within ``horizon_days`` -> 0: the idea did not reach its target in time;
* ideas whose horizon runs past the end of the data are dropped, as are ideas whose feature
  window or horizon contains an overnight gap beyond +/-40% (an unadjusted split, not a move).

Training and calibration
------------------------
A logistic regression (scikit-learn, standardised and winsorised features) is fitted on the
ideas of the oldest 60% of days, calibrated (Platt scaling by default, isotonic optional) on
the next 20%, and scored on the newest 20%, which it never saw: Brier score, expected
calibration error (10 equal-width bins), AUC, and the Brier scores of two no-skill forecasts
(the calibration split's base rate, and with hindsight the test split's own). The context
table (hit rate per market regime and relative-strength sign) is counted on the calibration
split too. Ideas whose label window reaches into the next split are purged so no
outcome leaks backwards. Because neighbouring days overlap, the effective number of independent
ideas is smaller than the count reported.

Inference is pure numpy (:class:`ConfidenceModel`), so loading the JSON file is instant and
the daemon does not import scikit-learn while trading.

Limitations a user should know
------------------------------
Features are computed on complete daily bars. Intraday, the daemon's last daily bar is the
partial bar of the current session, so its volume ratios read low early in the day; the
probability then leans on the other features. The model knows nothing about news, earnings
dates or order-book state.

Where the code lives (issue 17)
-------------------------------
This module is the face: it re-exports the names of :mod:`ai.features` (features, regimes),
:mod:`ai.labels` (the bracket, outcomes; the rule itself is :mod:`market.bracket_labels`),
:mod:`ai.model` (the model file and numpy inference), :mod:`ai.calibration` (metrics) and
:mod:`ai.training` (data directory, dataset, fit), so ``from ai import ai_model`` keeps working.
"""


from __future__ import annotations

from ai.calibration import ECE_BINS, brier_score, expected_calibration_error, reliability_table
from ai.features import (
    FEATURE_NAMES,
    MIN_HISTORY_BARS,
    REGIME_LONG_MA,
    REGIMES,
    TRADING_DAYS_PER_YEAR,
    TREND_RETURN_20D,
    VOLATILE_ANNUALISED_VOL,
    Regime,
    align_benchmark,
    context_key,
    feature_matrix,
    feature_row,
    latest_regime,
    regime_series,
)
from ai.labels import SIDES, SPLIT_GAP, Bracket, Side, first_touch_labels
from ai.model import (
    MODEL_FORMAT,
    MODEL_FORMAT_VERSION,
    Calibration,
    ConfidenceModel,
    ModelFileError,
    SideModel,
    load_model,
    save_model,
)
from ai.training import (
    CONTEXT_PRIOR_WEIGHT,
    Dataset,
    ModelReport,
    SymbolBars,
    TrainingDataError,
    build_dataset,
    daily_files,
    main,
    read_daily_csv,
    time_splits,
    train_model,
)

__all__ = [
    "CONTEXT_PRIOR_WEIGHT", "ECE_BINS", "FEATURE_NAMES", "MIN_HISTORY_BARS", "MODEL_FORMAT",
    "MODEL_FORMAT_VERSION", "REGIMES", "REGIME_LONG_MA", "SIDES", "SPLIT_GAP", "TRADING_DAYS_PER_YEAR",
    "TREND_RETURN_20D", "VOLATILE_ANNUALISED_VOL", "Bracket", "Calibration", "ConfidenceModel",
    "Dataset", "ModelFileError", "ModelReport", "Regime", "Side", "SideModel", "SymbolBars",
    "TrainingDataError", "align_benchmark", "brier_score", "build_dataset", "context_key",
    "daily_files", "expected_calibration_error", "feature_matrix", "feature_row",
    "first_touch_labels", "latest_regime", "load_model", "main", "read_daily_csv",
    "regime_series", "reliability_table", "save_model", "time_splits", "train_model",
]

if __name__ == "__main__":
    raise SystemExit(main())
