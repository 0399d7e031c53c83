"""``python main.py evaluate`` (and ``train``) as a new user runs it (the acceptance walk of issue 15): on
daily bars of a symbol that is not in ``shared/`` (real bars under a new name), with the
``sessions`` population, the output is the scores alone (the structured log goes to its file,
as for ``backtest`` and ``report``), with a row for every session that has a next one."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA

REPO = Path(__file__).resolve().parent.parent
ORCL = SHARED_DATA / "daily" / "ORCL-1d-1995-01-03-2014-12-31.csv"


def _renamed(folder: Path, symbol: str, first: date, last: date) -> list[str]:
    """ORCL's rows dated first..last as ``folder/daily/SYMBOL-1d-*.csv``; returns their dates."""
    lines = ORCL.read_text(encoding="utf-8").splitlines()
    kept = [row for row in lines[1:] if first <= date.fromisoformat(row[:10]) <= last]
    target = folder / "daily" / f"{symbol}-1d-{kept[0][:10]}-{kept[-1][:10]}.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join([lines[0], *kept]) + "\n", encoding="utf-8")
    return [row[:10] for row in kept]


@pytest.mark.parametrize("population", ["sessions", "proposals"])
def test_evaluate_on_an_unseen_symbol_prints_scores_only_and_a_row_per_session(tmp_path: Path,
                                                                               population: str) -> None:
    data = tmp_path / "data"
    dates = _renamed(data, "NEWCO", date(2009, 1, 2), date(2011, 12, 30))
    out = tmp_path / "eval.csv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APCA_", "TRADING_", "PYTEST_"))}
    run = subprocess.run([sys.executable, str(REPO / "main.py"), "evaluate", "--data", str(data),
                          "--population", population, "--out", str(out), "--log-file", str(tmp_path / "eval.jsonl")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    for line in run.stdout.splitlines():  # no structured log line among the scores
        assert not line.lstrip().startswith("{"), line
    assert f"evaluate ({population})" in run.stdout
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert all(r["symbol"] == "NEWCO" for r in rows)
    if population == "sessions":
        assert "pooled: n=" in run.stdout and "Brier skill" in run.stdout
        assert [r["decision_date"] for r in rows] == dates[:-1]  # every session that has a next one
    log = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines() if line.strip()]
    assert all("event" in entry for entry in log)


def test_train_prints_its_report_alone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _renamed(data, "NEWCO", date(2006, 1, 3), date(2011, 12, 30))
    _renamed(data, "SPY", date(2006, 1, 3), date(2011, 12, 30))  # the benchmark train needs
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APCA_", "TRADING_", "PYTEST_"))}
    run = subprocess.run([sys.executable, str(REPO / "main.py"), "train", "--data", str(data),
                          "--out", str(tmp_path / "model.json"), "--log-file", str(tmp_path / "train.jsonl")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "model written to" in run.stdout
    for line in run.stdout.splitlines():
        assert not line.lstrip().startswith("{"), line
    assert "ai_model_trained" in (tmp_path / "train.jsonl").read_text()
