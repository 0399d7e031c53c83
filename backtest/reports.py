"""A backtest's files and its terminal summary.

``--report DIR`` gets, side by side: ``report.html`` (equity and drawdown charts, the trades
table, the comparison with benchmarks; :mod:`analytics.reporting`), ``summary.json``,
``trades.csv`` (one row per closed trade: entry and exit dates and prices, the bracket's
``stop_price`` and ``target_price``, the ``exit_reason`` of the fill that closed it, P&L,
the probability at entry and the trade's ``mfe_pct``/``mae_pct`` excursions) and ``equity.csv`` (the equity curve and its drawdown).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from backtest.options import BacktestResult
from backtest.walk_forward import WalkForwardResult, calibration_summary
from core.clock import to_exchange_time

TRADES_NAME = "trades.csv"
EQUITY_NAME = "equity.csv"
TRADE_COLUMNS = ("symbol", "strategy", "side", "qty", "entry_date", "entry_at", "entry_price", "exit_date",
                 "exit_at", "exit_price", "stop_price", "target_price", "exit_reason", "pnl", "return_pct",
                 "commission", "probability", "mfe_pct", "mae_pct")
#: Exit reasons that mean the bracket's target was reached (the model's label 1).
TARGET_REASONS = frozenset({"take_profit"})


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def trade_rows(trades: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """``trades.csv`` rows (times ISO-8601 UTC, dates on the exchange's calendar)."""
    rows = []
    for t in trades:
        entry_at, exit_at = t["entry_at"], t["exit_at"]
        rows.append({
            "symbol": _text(t.get("symbol")), "strategy": _text(t.get("strategy")), "side": _text(t.get("side", "long")),
            "qty": _text(t.get("qty")),
            "entry_date": to_exchange_time(entry_at).date().isoformat(), "entry_at": entry_at.isoformat(),
            "entry_price": _text(t.get("entry_price")),
            "exit_date": to_exchange_time(exit_at).date().isoformat(), "exit_at": exit_at.isoformat(),
            "exit_price": _text(t.get("exit_price")), "stop_price": _text(t.get("stop_price")),
            "target_price": _text(t.get("target_price")), "exit_reason": _text(t.get("exit_reason")),
            "pnl": _text(t.get("pnl")), "return_pct": _text(t.get("return_pct")),
            "commission": _text(t.get("commission")),
            "probability": "" if t.get("probability") is None else f"{float(t['probability']):.6f}",
            "mfe_pct": _text(t.get("mfe_pct")), "mae_pct": _text(t.get("mae_pct")),
        })
    return rows


def write_trades_csv(path: Path, trades: Sequence[Mapping[str, Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=TRADE_COLUMNS)
        writer.writeheader()
        writer.writerows(trade_rows(trades))
    return path


def write_equity_csv(path: Path, curve: Sequence[tuple[Any, Decimal]]) -> Path:
    """The equity curve: time (UTC), session date, equity, drawdown from the running peak."""
    peak = Decimal(0)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "date", "equity", "drawdown"])
        for at, equity in curve:
            peak = max(peak, equity)
            drawdown = (equity / peak - 1) if peak > 0 else Decimal(0)
            writer.writerow([at.isoformat(), to_exchange_time(at).date().isoformat(), str(equity),
                             f"{float(drawdown):.6f}"])
    return path


def traded_calibration(result: BacktestResult) -> dict[str, Any] | None:
    """The probability at entry of each closed trade against the label it predicted: 1 when
    the bracket's target filled (exit reason ``take_profit``), else 0 (stop, timeout,
    strategy or emergency exit). None without a trade that has a probability."""
    pairs = [(float(t["probability"]), 1.0 if t.get("exit_reason") in TARGET_REASONS else 0.0)
             for t in result.trades if t.get("probability") is not None]
    if not pairs:
        return None
    summary = calibration_summary([p for p, _ in pairs], [y for _, y in pairs])
    summary["what"] = "traded intents: probability at entry vs the bracket's target reached (take_profit exit)"
    return summary


def write_backtest_report(out_dir: Path, result: BacktestResult | WalkForwardResult) -> tuple[Path, Path]:
    """``report.html`` and ``summary.json`` (returned), ``trades.csv`` and ``equity.csv``."""
    from analytics import reporting

    out_dir = Path(out_dir)
    if isinstance(result, WalkForwardResult):
        paths = reporting.write_report(
            out_dir, report=result.performance, equity_curve=result.equity_curve, trades=result.trades,
            title="Walk-forward backtest (out of sample)", meta=result.meta(),
            walk_forward=[w.row() for w in result.windows], calibration=result.calibration,
            comparison=result.comparison,
        )
    else:
        paths = reporting.write_report(
            out_dir, report=result.performance, equity_curve=result.equity_curve, trades=result.trades,
            title=f"Backtest {', '.join(result.options.symbols)}", meta=result.meta(),
            calibration=traded_calibration(result), comparison=result.comparison,
        )
    write_trades_csv(out_dir / TRADES_NAME, result.trades)
    write_equity_csv(out_dir / EQUITY_NAME, result.equity_curve)
    return paths


def _pct(value: float | None) -> str:
    """A signed percentage (returns)."""
    return "n/a" if value is None else f"{value * 100:+.2f}%"


def _share(value: float | None) -> str:
    """An unsigned percentage (rates, volatility, drawdown)."""
    return "n/a" if value is None else f"{value * 100:.2f}%"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _ordinal(value: float) -> str:
    """41 -> "41st", 3 -> "3rd", 12 -> "12th" (a percentile, rounded)."""
    n = int(round(value))
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def comparison_lines(comparison: Mapping[str, Any] | None) -> list[str]:
    """The summary's lines on buy-and-hold, the benchmark, random entries and capital."""
    if not comparison:
        return []
    parts = []
    hold = comparison.get("buy_and_hold_universe")
    if hold:
        parts.append(f"buy-and-hold of the universe {_pct(hold['total_return'])}")
    bench = comparison.get("benchmark")
    if bench and bench.get("total_return") is not None:
        parts.append(f"{bench['symbol']} {_pct(bench['total_return'])}")
    lines = [f"  vs           {'; '.join(parts) or 'no benchmark data'}"]
    rand = comparison.get("random_entries")
    if rand:
        lines.append(f"  vs random    closed-trade P&L {rand['run_pnl']:,.2f} is at the {_ordinal(rand['percentile'])} "
                     f"percentile of {rand['draws']} random-entry runs with the same exits and sizing "
                     f"(median {rand['median_pnl']:,.2f}, 5-95% {rand['p5_pnl']:,.2f} .. {rand['p95_pnl']:,.2f})")
    else:
        lines.append("  vs random    no closed trade to compare with random entries")
    capital = comparison.get("capital_deployed")
    if capital:
        lines.append(f"  capital      {_share(capital['average'])} of equity deployed on average "
                     f"(max {_share(capital['max'])})")
    return lines


def render_summary(result: BacktestResult | WalkForwardResult, paths: tuple[Path, Path] | None = None, *,
                   log_file: Path | None = None) -> str:
    """A few lines for stdout: period, return, risk, trades, comparison, safety, speed, files."""
    perf = result.performance
    meta = result.meta()
    t = perf.trades
    lines = [
        f"Backtest {meta['period']} ({meta['sessions']} sessions, {meta['bars']})",
        f"  symbols      {meta['symbols']}",
        f"  strategies   {meta['strategies']}",
        f"  AI model     {meta['ai_model']}",
        f"  costs        commission {meta['commission']}; slippage {meta['slippage']}",
        f"  equity       {perf.start_equity:,.2f} -> {perf.end_equity:,.2f} ({_pct(perf.total_return)}), "
        f"annual {_pct(perf.annual_return)}, volatility {_share(perf.annual_volatility)}",
        f"  risk         Sharpe {_num(perf.sharpe)}, Sortino {_num(perf.sortino)}, "
        f"max drawdown {_share(perf.max_drawdown_pct)}",
        f"  trades       {t.total} (win rate {_share(t.win_rate)}, profit factor {_num(t.profit_factor)}), "
        f"commission paid {meta['commission_paid']}",
        *comparison_lines(result.comparison),
    ]
    if isinstance(result, WalkForwardResult):
        lines.append(f"  walk-forward {meta['walk_forward']}")
        cal = result.calibration
        lines.append(f"  calibration  out of sample: {cal.get('n')} ideas, Brier {cal.get('brier')}, ECE {cal.get('ece')}")
        runs = [w.result for w in result.windows]
    else:
        runs = [result]
        changes = result.state_changes
        lines.append(f"  safety       {len(changes)} trading-state change(s), final state {result.final_state}"
                     + (f"; stopped early: {result.stopped_early}" if result.stopped_early else ""))
    bars = sum(r.bars for r in runs)
    seconds = sum(r.loop_seconds for r in runs)
    lines.append(f"  speed        {bars:,} bars in {seconds:.1f} s "
                 f"({bars / seconds if seconds > 0 else 0:,.0f} bars/s through the full loop)")
    if paths is not None:
        lines.append(f"  report       {paths[0]}")
        lines.append(f"               {paths[1]}")
        lines.append(f"               {paths[0].parent / TRADES_NAME}, {paths[0].parent / EQUITY_NAME}")
    if log_file is not None:
        lines.append(f"  log          {log_file}")
    return "\n".join(lines)


def user_warnings(result: BacktestResult | WalkForwardResult) -> list[str]:
    """At most a few lines the user must see on the terminal (the rest is in the log file)."""
    runs = [w.result for w in result.windows] if isinstance(result, WalkForwardResult) else [result]
    out: list[str] = []
    if any(r.model.get("in_sample") for r in runs):
        out.append("the AI model was trained on dates this backtest covers (in sample): use --walk-forward "
                   "for an out-of-sample result")
    stopped = [r.stopped_early for r in runs if r.stopped_early]
    if stopped:
        out.append(f"the run stopped early: {stopped[0]}")
    missing = sorted({s for r in runs for s in r.late_symbols})
    if missing:
        out.append(f"no data on the first session for {', '.join(missing[:10])}"
                   f"{' ...' if len(missing) > 10 else ''}: traded from their first bar on")
    return out[:3]

