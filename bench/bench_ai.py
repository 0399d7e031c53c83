"""AI analyzer speed: model load, features per symbol, one decision, and a full training run.

Run: ``.venv/bin/python bench/bench_ai.py`` (or ``make bench``). Prints figures only; nothing
here asserts a speed. Uses the real bars of ``../shared/data`` when present.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import structlog  # noqa: E402

from ai import ai_model  # noqa: E402
import config  # noqa: E402
from ai_analyzer import AIAnalyzer, extract_features  # noqa: E402
from market.market_data import BarSeries, MarketData, load_csv_bars  # noqa: E402
from strategies.base import Signal  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
MODEL = ROOT / "models" / "confidence_model.json"


def microseconds(action: Callable[[], Any], repeat: int) -> float:
    """Best-of-5 mean time of ``action`` in microseconds."""
    return min(timeit.repeat(action, number=repeat, repeat=5)) / repeat * 1e6


class FixedClock:
    def now(self) -> datetime:
        return datetime(2024, 1, 2, 20, 0, tzinfo=UTC)

    async def sleep(self, seconds: float) -> None:
        return None


def main() -> None:
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())  # keep output to figures
    print(f"load_model: {microseconds(lambda: ai_model.load_model(MODEL), 50):.0f} us")
    msft = load_csv_bars(DATA / "daily" / "MSFT-1d-2013-01-02-2023-12-29.csv").tail(600)
    spy_all = load_csv_bars(DATA / "daily" / "SPY-1d-1993-01-29-2026-08-07.csv")
    end = int(spy_all.ts.searchsorted(msft.ts[-1], side="right"))  # the sessions MSFT has
    spy = BarSeries.from_arrays(*(getattr(spy_all, k)[end - 600 : end] for k in
                                  ("ts", "open", "high", "low", "close", "volume")))
    clock = FixedClock()

    def fresh() -> MarketData:
        return MarketData(symbol="MSFT", now=clock.now(), daily=msft,
                          last_price=float(msft.close[-1]), benchmark=spy)

    print(f"extract_features (500 bars + SPY): {microseconds(lambda: extract_features(fresh()), 200):.0f} us")
    model = ai_model.load_model(MODEL)
    features = extract_features(fresh())
    print(f"predict_proba: {microseconds(lambda: model.predict_proba(features), 2000):.1f} us")
    settings = config.load_settings(env_file=None, environ={}, overrides={"ai": {"min_confidence": 0.0}})
    analyzer = AIAnalyzer(settings, clock, model=model)
    signal = Signal(symbol="MSFT", action="buy", confidence=0.7, reasoning="bench", strategy="bench")

    async def decide(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            await analyzer.analyze(signal, fresh())
        return (time.perf_counter() - start) / n * 1e6

    print(f"analyze (one signal, no endpoint): {min(asyncio.run(decide(200)) for _ in range(3)):.0f} us")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        report = ai_model.train_model(
            DATA, Path(tmp) / "m.json",
            symbols=["SPY", "QQQ", "AAPL", "MSFT", "NVDA", "TSLA", "AMZN", "GOOGL"],
        )
        print(f"train_model (8 symbols): {time.perf_counter() - start:.2f} s")
        print(report.render())


if __name__ == "__main__":
    main()
