"""The data directory the model learns from: ``DIR/daily/SYMBOL-1d-FIRST-LAST.csv``, one file
chosen per symbol (split out of ``ai/training.py`` so ``evaluate`` reads the same files without
importing the trainer).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ai.features import MIN_HISTORY_BARS
from core.errors import ConfigError, DataQualityError
from market.market_data import BarSeries, load_csv_bars


class TrainingDataError(ConfigError):
    """The training data directory cannot produce a model (missing benchmark, too few bars)."""

    def __init__(self, problem: str) -> None:
        super().__init__([problem])


# -- reading the data directory ----------------------------------------------------------------


@dataclass(frozen=True)
class SymbolBars:
    """One symbol's daily bars read from the data directory."""

    symbol: str
    bars: BarSeries


_DAILY_NAME = re.compile(
    r"^(?P<symbol>[A-Z][A-Z0-9.\-]*)-1d-(?P<first>\d{4}-\d{2}-\d{2})-(?P<last>\d{4}-\d{2}-\d{2})\.csv$"
)
_MIN_FILE_ROWS = MIN_HISTORY_BARS + 250


def daily_files(data_dir: Path) -> dict[str, Path]:
    """The daily CSV used for each symbol in ``data_dir/daily``.

    Files are named ``SYMBOL-1d-FIRST-LAST.csv``. When a symbol has several, the one reaching
    the latest session among those with at least about a year of bars is used (ties: the
    longer file), so split-adjusted recent downloads win over short or raw vendor files.
    """
    folder = Path(data_dir) / "daily"
    if not folder.is_dir():
        raise TrainingDataError(f"--data {data_dir}: no 'daily' folder with SYMBOL-1d-*.csv files")
    candidates: dict[str, list[tuple[bool, str, int, Path]]] = {}
    for path in sorted(folder.glob("*-1d-*.csv")):
        match = _DAILY_NAME.match(path.name)
        if not match:
            continue
        with path.open("rb") as fh:
            rows = sum(1 for _ in fh) - 1
        candidates.setdefault(match["symbol"], []).append(
            (rows >= _MIN_FILE_ROWS, match["last"], rows, path)
        )
    # Prefer files long enough to learn from, then the latest last session, then the longer.
    return {
        symbol: max(files, key=lambda f: (f[0], f[1], f[2]))[3]
        for symbol, files in candidates.items()
    }


def read_daily_csv(path: Path, symbol: str) -> SymbolBars:
    """Read a ``timestamp,open,high,low,close,volume`` daily CSV (extra columns ignored)."""
    try:
        return SymbolBars(symbol, load_csv_bars(path))
    except DataQualityError as exc:
        raise TrainingDataError(str(exc)) from exc
