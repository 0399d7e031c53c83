"""``diagnose`` looks for the AI model where the analyzer does (``ai.model_choice``: the
working directory, then beside the program): run from another directory it said "no AI
model ... transparent scoring" while the daemon and backtest used the shipped model."""

from __future__ import annotations

from pathlib import Path

import pytest

from ai.model_choice import PROJECT_ROOT
from config import load_settings
from ops.diagnostics import _risk_check


def test_diagnose_finds_the_shipped_model_from_another_directory(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(env_file=None, overrides={"storage.state_db": str(tmp_path / "s.db")})
    shipped = PROJECT_ROOT / settings.ai.model_path
    assert shipped.exists()
    name, verdict, detail = _risk_check(settings)
    assert name == "risk systems" and verdict == "PASS", detail
    assert f"AI model {shipped}" in detail and "no AI model" not in detail


def test_diagnose_warns_when_the_configured_model_is_nowhere(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(env_file=None, overrides={"storage.state_db": str(tmp_path / "s.db"),
                                                       "ai.model_path": "models/none-such.json"})
    _, verdict, detail = _risk_check(settings)
    assert verdict == "WARN" and "no AI model at" in detail
