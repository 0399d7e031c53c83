"""Shared test fixtures. Tests never reach the internet; servers bind to 127.0.0.1."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Real historical bars with provenance, beside the repository (tests may read them).
SHARED_DATA = ROOT.parent / "shared" / "data"


def copy_daily_files(root: Path, names: Iterable[str]) -> Path:
    """``root`` with ``daily/`` holding copies of these files of ``shared/data/daily``."""
    (root / "daily").mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(SHARED_DATA / "daily" / name, root / "daily" / name)
    return root
