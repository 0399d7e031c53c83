"""``python main.py --data DIR`` without ``--symbols`` trades every symbol DIR holds bars of, as
``backtest --data DIR`` does (issue 16's complaint, found again on the daemon's sim mode: it
stopped with "no data files for SPY, QQQ, ..." on a folder of other symbols)."""

from __future__ import annotations

from pathlib import Path

import main
from config import load_settings


def _folder(tmp_path: Path) -> Path:
    daily = tmp_path / "bars" / "daily"
    daily.mkdir(parents=True)
    for symbol in ("ZZB", "ZZA"):
        (daily / f"{symbol}-1d-2013-01-02-2013-01-03.csv").write_text(
            "timestamp,open,high,low,close,volume\n2013-01-02,10,11,9,10.5,1000\n2013-01-03,10.5,11,10,10.8,900\n")
    return tmp_path / "bars"


def _settings(argv: list[str]) -> list[str]:
    args = main.build_parser().parse_args(argv)
    settings = load_settings(env_file=None, overrides=main.overrides_from_args(args))
    return list(settings.scanning.symbols)


def test_data_dir_alone_trades_its_symbols(tmp_path: Path) -> None:
    data = _folder(tmp_path)
    assert _settings(["--data", str(data), "--sim-days", "1"]) == ["ZZA", "ZZB"]
    assert _settings(["run", "--data", str(data)]) == ["ZZA", "ZZB"]


def test_symbols_still_win_and_a_folder_without_bars_keeps_the_universe(tmp_path: Path) -> None:
    data = _folder(tmp_path)
    assert _settings(["--data", str(data), "--symbols", "ZZB"]) == ["ZZB"]
    default = _settings([])
    (tmp_path / "empty").mkdir()
    assert _settings(["--data", str(tmp_path / "empty")]) == default
    assert _settings(["--data", str(tmp_path / "missing")]) == default
