"""The model file: the fitted regression, its calibration and context table per side,
loaded and saved as JSON, inference in numpy (issue 17: split out of ``ai/ai_model.py``).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ai.bracket_model import BracketModel
from ai.features import FEATURE_NAMES, context_key
from ai.labels import SIDES, Bracket, Side
from core.errors import ConfigError

MODEL_FORMAT = "trading-daemon-confidence-model"
MODEL_FORMAT_VERSION = 1


class ModelFileError(ConfigError):
    """The model file is missing, unreadable, or of another format version / feature set."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = str(path)
        super().__init__([f"ai.model_path={self.path}: {problem}"])


@dataclass(frozen=True)
class Calibration:
    """Maps the regression's logit to a calibrated probability.

    ``platt``: ``p = 1 / (1 + exp(a * logit + b))``; ``isotonic``: piecewise-linear through
    ``(thresholds, values)``, flat beyond the ends.
    """

    method: Literal["platt", "isotonic"]
    a: float = 0.0
    b: float = 0.0
    thresholds: tuple[float, ...] = ()
    values: tuple[float, ...] = ()

    def apply(self, logit: np.ndarray) -> np.ndarray:
        if self.method == "platt":
            return 1.0 / (1.0 + np.exp(self.a * logit + self.b))
        return np.interp(logit, self.thresholds, self.values)

    def to_json(self) -> dict[str, Any]:
        if self.method == "platt":
            return {"method": "platt", "a": self.a, "b": self.b}
        return {
            "method": "isotonic",
            "thresholds": list(self.thresholds),
            "values": list(self.values),
        }

    @staticmethod
    def from_json(raw: Mapping[str, Any]) -> Calibration:
        method = raw.get("method")
        if method == "platt":
            return Calibration("platt", a=float(raw["a"]), b=float(raw["b"]))
        if method == "isotonic":
            thresholds = tuple(float(v) for v in raw["thresholds"])
            values = tuple(float(v) for v in raw["values"])
            if not thresholds or len(thresholds) != len(values):
                raise ValueError("isotonic calibration needs equal, non-empty thresholds/values")
            return Calibration("isotonic", thresholds=thresholds, values=values)
        raise ValueError(f"unknown calibration method {method!r} (expected platt or isotonic)")


@dataclass(frozen=True)
class SideModel:
    """The fitted regression, its calibration and context table for one side (long/short)."""

    mean: np.ndarray
    scale: np.ndarray
    clip_low: np.ndarray
    clip_high: np.ndarray
    coefficients: np.ndarray
    intercept: float
    calibration: Calibration
    base_rate: float
    context_rates: dict[str, float]
    metrics: dict[str, Any]

    def logits(self, X: np.ndarray) -> np.ndarray:
        Z = (np.clip(X, self.clip_low, self.clip_high) - self.mean) / self.scale
        return Z @ self.coefficients + self.intercept

    def probabilities(self, X: np.ndarray) -> np.ndarray:
        """Calibrated probability that each row's bracket hits its target first."""
        return np.clip(self.calibration.apply(self.logits(X)), 0.0, 1.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "scaler_mean": self.mean.tolist(),
            "scaler_scale": self.scale.tolist(),
            "clip_low": self.clip_low.tolist(),
            "clip_high": self.clip_high.tolist(),
            "coefficients": self.coefficients.tolist(),
            "intercept": self.intercept,
            "calibration": self.calibration.to_json(),
            "base_rate": self.base_rate,
            "context_rates": dict(sorted(self.context_rates.items())),
            "metrics": self.metrics,
        }

    @staticmethod
    def from_json(raw: Mapping[str, Any], width: int) -> SideModel:
        arrays = {}
        for key in ("scaler_mean", "scaler_scale", "clip_low", "clip_high", "coefficients"):
            arr = np.asarray(raw[key], dtype=float)
            if arr.shape != (width,) or not np.isfinite(arr).all():
                raise ValueError(f"{key} must be {width} finite numbers")
            arrays[key] = arr
        if (arrays["scaler_scale"] <= 0).any():
            raise ValueError("scaler_scale must be positive")
        base_rate = float(raw["base_rate"])
        if not 0.0 <= base_rate <= 1.0:
            raise ValueError(f"base_rate={base_rate} is not a probability")
        context = {str(k): float(v) for k, v in dict(raw.get("context_rates", {})).items()}
        return SideModel(
            mean=arrays["scaler_mean"],
            scale=arrays["scaler_scale"],
            clip_low=arrays["clip_low"],
            clip_high=arrays["clip_high"],
            coefficients=arrays["coefficients"],
            intercept=float(raw["intercept"]),
            calibration=Calibration.from_json(raw["calibration"]),
            base_rate=base_rate,
            context_rates=context,
            metrics=dict(raw.get("metrics", {})),
        )


@dataclass(frozen=True)
class ConfidenceModel:
    """A trained, calibrated model loaded from its JSON file; numpy only."""

    feature_names: tuple[str, ...]
    sides: dict[Side, SideModel]
    bracket: Bracket
    created_at: str
    metadata: dict[str, Any] = field(default_factory=dict)
    #: The probability of an intent's own bracket and horizon (None in older model files).
    bracket_model: BracketModel | None = None

    def predict_proba(self, features: Mapping[str, float], side: Side = "long") -> float:
        """Calibrated probability that a ``side`` bracket entered now hits its target first.

        Raises ``ValueError`` naming the missing or non-finite features.
        """
        row = self.vector(features)
        model = self.sides[side]
        # SideModel.probabilities on one row, without the wrappers: np.clip is
        # minimum(maximum()) (the row is finite), the same 1-row product and calibration.
        Z = (np.minimum(np.maximum(row[None, :], model.clip_low), model.clip_high) - model.mean) / model.scale
        p = float(model.calibration.apply(Z @ model.coefficients + model.intercept)[0])
        return min(max(p, 0.0), 1.0)

    def vector(self, features: Mapping[str, float]) -> np.ndarray:
        """``features`` as a row in :attr:`feature_names` order, after checking every value."""
        try:
            values = [float(features[n]) for n in self.feature_names]
        except KeyError:
            values = None
        if values is None:
            missing = [n for n in self.feature_names if n not in features]
            raise ValueError(f"features missing: {', '.join(missing)}")
        row = np.array(values)
        if all(map(math.isfinite, values)):
            return row
        bad = [n for n, v in zip(self.feature_names, row, strict=True) if not math.isfinite(v)]
        if bad:
            raise ValueError(f"features not finite (too little history?): {', '.join(bad)}")
        return row

    def base_rate(self, side: Side = "long") -> float:
        """Share of winning ideas in the calibration split (the no-skill forecast)."""
        return self.sides[side].base_rate

    def context_probability(
        self, side: Side, regime: str | None, relative_strength: float
    ) -> float:
        """Hit rate, in the calibration split, of ideas in the same regime and relative-strength sign.

        Shrunk towards the base rate (so thin cells say little); the base rate when unknown.
        """
        model = self.sides[side]
        return model.context_rates.get(context_key(regime, relative_strength), model.base_rate)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "created_at": self.created_at,
            "feature_names": list(self.feature_names),
            "bracket": {
                "entry": "next session open",
                "stop": self.bracket.stop,
                "target": self.bracket.target,
                "horizon_days": self.bracket.horizon_days,
                "same_bar_touch": "counts as stop",
                "no_touch_in_horizon": "counts as not reaching the target",
            },
            "sides": {side: model.to_json() for side, model in self.sides.items()},
            **self.metadata,
            **({} if self.bracket_model is None else {"bracket_model": self.bracket_model.to_json()}),
        }


def save_model(model: ConfidenceModel, path: Path) -> None:
    """Write the model file atomically: to ``<path>.tmp`` in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(model.to_json(), indent=1, sort_keys=False) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".json.tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # a model file is not a secret: readable like the code
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_model(path: Path | str) -> ConfidenceModel:
    """Load and validate a model file; :class:`ModelFileError` says what is wrong with it."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelFileError(path, "no such file (train one: python main.py train --data DIR)") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(path, f"unreadable model file ({exc.__class__.__name__}: {exc})") from exc
    if not isinstance(raw, dict) or raw.get("format") != MODEL_FORMAT:
        raise ModelFileError(path, f"not a confidence model file (format must be {MODEL_FORMAT!r})")
    version = raw.get("format_version")
    if version != MODEL_FORMAT_VERSION:
        raise ModelFileError(
            path,
            f"format_version={version!r}, this program reads version {MODEL_FORMAT_VERSION}: "
            "retrain with python main.py train --data DIR",
        )
    names = tuple(raw.get("feature_names", ()))
    if names != FEATURE_NAMES:
        missing = [n for n in FEATURE_NAMES if n not in names]
        extra = [n for n in names if n not in FEATURE_NAMES]
        raise ModelFileError(
            path,
            "feature names differ from this program's "
            f"(missing: {missing or 'none'}; unknown: {extra or 'none'}; or reordered): retrain",
        )
    try:
        bracket_raw = raw["bracket"]
        bracket = Bracket(
            stop=float(bracket_raw["stop"]),
            target=float(bracket_raw["target"]),
            horizon_days=int(bracket_raw["horizon_days"]),
        )
        sides: dict[Side, SideModel] = {}
        for side in SIDES:
            if side not in raw["sides"]:
                raise ValueError(f"no {side!r} model")
            sides[side] = SideModel.from_json(raw["sides"][side], len(FEATURE_NAMES))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(path, f"malformed model file: {exc}") from exc
    known = {"format", "format_version", "created_at", "feature_names", "bracket", "sides", "bracket_model"}
    try:
        bracket_model = None if raw.get("bracket_model") is None else BracketModel.from_json(raw["bracket_model"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(path, f"malformed bracket_model: {exc}") from exc
    return ConfidenceModel(
        feature_names=names,
        sides=sides,
        bracket=bracket,
        created_at=str(raw.get("created_at", "")),
        metadata={k: v for k, v in raw.items() if k not in known},
        bracket_model=bracket_model,
    )
