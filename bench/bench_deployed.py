"""How much of the equity the default pipeline keeps deployed, and why (issue 15, item 6).

Runs the backtest on daily bars (``--data DIR``, e.g. ../shared/data) once per sizing mode
and prints, per run: the average share of equity held in positions over the sessions, the
share of sessions holding anything, the trades, and what held the size back: ideas the AI
gate refused (``ai_rejected``), entries the risk manager cut (``risk_reduced``, by the check
that bound) or refused (``risk_veto``), and the average position's share of equity.

    python bench/bench_deployed.py --data ../shared/data --symbols AAPL,MSFT --start 2014-01-02 --end 2023-12-29
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import structlog  # noqa: E402
from structlog.testing import capture_logs  # noqa: E402

import config  # noqa: E402
from backtest.options import BacktestOptions, BacktestResult  # noqa: E402
from backtest.runner import run_backtest  # noqa: E402
from core.clock import to_exchange_time  # noqa: E402


def deployed(result: BacktestResult) -> tuple[float, float, float]:
    """(mean share of equity in positions per session, share of sessions invested, mean
    position size as a share of equity at entry), from the trades and the equity curve."""
    equity = {to_exchange_time(t).date(): float(v) for t, v in result.equity_curve}
    sessions = sorted(equity)
    held: dict[date, float] = Counter()
    sizes: list[float] = []
    for trade in result.trades:
        entry, exit_ = to_exchange_time(trade["entry_at"]).date(), to_exchange_time(trade["exit_at"]).date()
        notional = float(Decimal(str(trade["qty"])) * Decimal(str(trade["entry_price"])))
        for day in sessions:
            if entry <= day < exit_ or (entry == exit_ == day):
                held[day] += notional
        if entry in equity:
            sizes.append(notional / equity[entry])
    shares = [held.get(d, 0.0) / equity[d] for d in sessions if equity[d] > 0]
    mean = sum(shares) / len(shares) if shares else 0.0
    invested = sum(1 for s in shares if s > 0) / len(shares) if shares else 0.0
    return mean, invested, (sum(sizes) / len(sizes) if sizes else 0.0)


def run(data: Path, symbols: tuple[str, ...], start: date, end: date, overrides: dict[str, Any]) -> dict[str, Any]:
    settings = config.load_settings(env_file=None, environ={}, overrides={"scanning.symbols": list(symbols),
                                                                          **overrides})
    with capture_logs() as logs:
        result = run_backtest(settings, BacktestOptions(data_dir=data, symbols=symbols, start=start, end=end,
                                                        progress=False))
    bound = Counter(c for e in logs if e["event"] == "risk_reduced" for c in e.get("checks", []))
    below_gate = {(e["symbol"], e.get("at")) for e in logs if e["event"] == "ai_rejected"}
    vetoes = Counter(e.get("check") for e in logs if e["event"] == "risk_veto")
    mean, invested, size = deployed(result)
    first, last = result.equity_curve[0][1], result.equity_curve[-1][1]
    return {"deployed_mean": mean, "sessions_invested": invested, "mean_position": size,
            "trades": len(result.trades), "intents": len(result.intents),
            "ai_rejected": len(below_gate), "risk_reduced_by": dict(bound), "risk_vetoes": dict(vetoes),
            "return": float(last / first - 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--symbols", default="AAPL,MSFT")
    parser.add_argument("--start", type=date.fromisoformat, default=date(2014, 1, 2))
    parser.add_argument("--end", type=date.fromisoformat, default=date(2023, 12, 29))
    parser.add_argument("--modes", default="fixed,risk,risk25",
                        help="fixed, risk (the default: 10%% positions) and risk25 (risk with 25%% positions)")
    args = parser.parse_args()
    structlog.configure(processors=[structlog.testing.LogCapture()])
    symbols = tuple(s.strip().upper() for s in args.symbols.split(",") if s.strip())
    for mode in args.modes.split(","):
        extra: dict[str, Any] = {"trading.position_sizing": mode.removesuffix("25")}
        if mode == "risk25":  # the loss at the stop carries the risk budget; positions up to 25%
            extra.update({"trading.max_position_size": 0.25, "risk.max_concentration": 0.25})
        out = run(args.data, symbols, args.start, args.end, extra)
        print(f"{mode:7s} deployed {out['deployed_mean']:.1%} of equity on average; invested "
              f"{out['sessions_invested']:.1%} of sessions; mean position {out['mean_position']:.1%}; "
              f"{out['trades']} trades from {out['intents']} intents ({out['ai_rejected']} ideas below the gate); "
              f"sizes cut by {out['risk_reduced_by']}; vetoes {out['risk_vetoes']}; return {out['return']:+.2%}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
