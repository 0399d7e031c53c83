"""Which calibrated model the analyzer scores with: the file at ``ai.model_path`` (found in
the working directory, then beside the program), or none (transparent scoring) when
``ai.use_model`` says so, on the synthetic simulator market, or when the file is missing or
invalid. Each such case is logged once per process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog

from ai import ai_model
from ai.ai_model import ConfidenceModel, ModelFileError

log = structlog.get_logger(__name__)

#: The repository root, where the shipped model lives (``ai/`` is one level below it).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
_warned_model_paths: set[str] = set()


def resolve_model_path(configured: str | Path) -> Path:
    """Where ``ai.model_path`` points: absolute as given; a relative path is looked up in
    the working directory first, then beside this program (where the shipped model lives)."""
    path = Path(configured).expanduser()
    if path.is_absolute():
        return path
    in_cwd = Path.cwd() / path
    return in_cwd if in_cwd.exists() else PROJECT_ROOT / path


def configured_model(ai_settings: Any, synthetic_market: bool) -> ConfidenceModel | None:
    """The model ``ai.use_model`` asks for.

    ``auto`` uses the trained model except on the simulator's synthetic market: a model
    calibrated on real history says nothing calibrated about a made-up market, so there
    the analyzer scores transparently (and says so once). ``always``/``never`` force it.
    """
    choice = getattr(ai_settings, "use_model", "auto")
    if choice == "never" or (choice == "auto" and synthetic_market):
        if not _warned_model_paths.__contains__("__not_applicable__"):
            _warned_model_paths.add("__not_applicable__")
            log.info(
                "ai_model_not_applicable",
                reason="ai.use_model=never" if choice == "never" else
                "the synthetic simulator market is not the history the model was calibrated on",
                scoring="transparent (uncalibrated); threshold ai.min_confidence",
            )
        return None
    return load_configured_model(ai_settings)


def load_configured_model(ai_settings: Any) -> ConfidenceModel | None:
    """The model file at ``ai.model_path``, or None (logged once per path) when it is missing
    or invalid."""
    path = resolve_model_path(ai_settings.model_path)
    try:
        return ai_model.load_model(path)
    except ModelFileError as exc:
        key = str(path)
        if key not in _warned_model_paths:
            _warned_model_paths.add(key)
            if path.exists():
                log.error(
                    "ai_model_invalid",
                    path=key,
                    problem=str(exc),
                    scoring="transparent (uncalibrated) until a valid model is trained",
                    how_to_train="python main.py train --data DIR",
                )
            else:
                log.warning(
                    "ai_model_missing",
                    path=key,
                    scoring="transparent (uncalibrated) until a model is trained",
                    how_to_train="python main.py train --data DIR",
                )
        return None
