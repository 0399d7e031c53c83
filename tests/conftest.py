"""Shared test fixtures. Tests never reach the internet; servers bind to 127.0.0.1."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Real historical bars with provenance, beside the repository (tests may read them).
SHARED_DATA = ROOT.parent / "shared" / "data"
