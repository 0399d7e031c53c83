"""The backtest's command line: ``python main.py backtest`` / ``python -m backtest``, and
``python main.py report`` (the same report for a paper or live run, from its journal).

What the terminal shows: a progress bar on stderr when stderr is a terminal, at most a few
warnings that need the user (one line each, on stderr), and the summary on stdout. Structured
log lines go to a log file only (``REPORT_DIR/backtest.jsonl`` unless ``--log-file``), never
to stdout or stderr, so they cannot bury the bar or the summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import structlog

from analytics.excursions import comparison_lines
from analytics.performance import compute_performance, usable_curve, usable_trades
from backtest.data import symbols_in_dir
from backtest.reports import (EQUITY_NAME, TRADES_NAME, _num, _pct, _share, render_summary, user_warnings,
                              write_backtest_report, write_equity_csv, write_trades_csv)
from backtest.options import BacktestError, BacktestOptions, BacktestResult
from backtest.runner import _intents, run_backtest
from backtest.trade_details import with_entry_details
from backtest.walk_forward import WalkForwardResult, walk_forward
from backtest.sim_broker import CommissionModel
from core.clock import to_exchange_time
from core.errors import ConfigError
from journal.journal import Journal
from simulator.csv_source import CsvDataError

log = structlog.get_logger(__name__)

ZERO = Decimal(0)
EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def _date_arg(value: Any, flag: str) -> date | None:
    if value in (None, ""):
        return None
    try:
        return date.fromisoformat(str(value).strip()[:10])
    except ValueError:
        raise BacktestError(f"{flag} {value!r} is not a date (YYYY-MM-DD)") from None


def _decimal_arg(value: Any, flag: str, default: Decimal) -> Decimal:
    if value is None:
        return default
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise BacktestError(f"{flag} {value!r} is not a number") from None
    if not number.is_finite() or number < 0:
        raise BacktestError(f"{flag} must be a non-negative number, got {value!r}")
    return number


def options_from_args(settings: Any, args: argparse.Namespace) -> BacktestOptions:
    """Backtest options from ``main.py backtest`` arguments and the settings they overrode.

    Flags main.py does not define yet are read when present (``commission_per_share``,
    ``commission_min``, ``slippage_bps``, ``bars``); see :func:`build_parser` for all of them.
    """
    data = getattr(args, "data", None) or settings.sim.data_dir
    if not data:
        raise BacktestError("backtest needs --data DIR (a directory with daily/SYMBOL-1d-*.csv files)")
    data_dir = Path(data)
    if not data_dir.is_dir():
        raise BacktestError(f"--data {data_dir}: no such directory")
    strategies = getattr(args, "strategies", None)
    try:
        slippage = float(getattr(args, "slippage_bps", None) if getattr(args, "slippage_bps", None) is not None else 1.0)
    except ValueError:
        raise BacktestError(f"--slippage-bps {getattr(args, 'slippage_bps', None)!r} is not a number") from None
    max_fraction = getattr(args, "commission_max_pct", None)
    commission = CommissionModel(
        per_share=_decimal_arg(getattr(args, "commission_per_share", None), "--commission-per-share", ZERO),
        minimum=_decimal_arg(getattr(args, "commission_min", None), "--commission-min", ZERO),
        max_fraction=(_decimal_arg(max_fraction, "--commission-max-pct", ZERO) / 100) if max_fraction else None,
    )
    return BacktestOptions(
        data_dir=data_dir,
        symbols=_symbols(settings, args, data_dir),
        start=_date_arg(getattr(args, "start", None) or settings.sim.start, "--start"),
        end=_date_arg(getattr(args, "end", None), "--end"),
        strategies=tuple(s.strip() for s in strategies.split(",") if s.strip()) if strategies else None,
        cash=Decimal(str(settings.sim.cash)),
        commission=commission,
        slippage_bps=slippage,
        seed=int(settings.sim.seed),
        bar_mode=getattr(args, "bars", None) or "auto",
        fast_forward=not getattr(args, "no_fast_forward", False),
    )


def _symbols(settings: Any, args: argparse.Namespace, data_dir: Path) -> tuple[str, ...]:
    """``--symbols`` when given; with ``--data DIR`` alone every symbol DIR holds bars of;
    otherwise the configured ``scanning.symbols``."""
    if not getattr(args, "symbols", None) and getattr(args, "data", None):
        found = symbols_in_dir(data_dir)
        if not found:
            raise BacktestError(f"--data {data_dir}: no bar files (SYMBOL-1d-*.csv or SYMBOL-1m-*.csv) in it, "
                                "its daily/ or its intraday/ folder")
        return tuple(found)
    return tuple(dict.fromkeys(s.strip().upper() for s in settings.scanning.symbols if s.strip()))


def configure_logging(settings: Any, args: argparse.Namespace, report_dir: Path) -> Path:
    """Backtest logs: JSON lines to ``report_dir/backtest.jsonl`` (or ``--log-file``) and
    nowhere else (the terminal keeps the progress bar and the summary), at WARNING unless
    ``--log-level`` asks for more (INFO logs every decision and slows a long backtest
    several-fold). Returns the log file's path."""
    from core import logging_setup

    level = getattr(args, "log_level", None) or "WARNING"
    log_file = Path(getattr(args, "log_file", None) or report_dir / "backtest.jsonl")
    logging_setup.configure(log_file=log_file, level=level, secrets=settings.secret_values(), console=False)
    logging.captureWarnings(True)  # library warnings (numpy, scikit-learn) to the log file as well
    return log_file


def main(settings: Any, args: argparse.Namespace) -> int:
    """``python main.py backtest``: run, write the report, print the summary. Exit codes:
    0 done, 1 the run failed, 2 bad arguments or a bad data file (one line on stderr)."""
    try:
        options = options_from_args(settings, args)
    except BacktestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    report_dir = Path(getattr(args, "report", None) or "reports/backtest")
    log_file = configure_logging(settings, args, report_dir)
    try:
        result: BacktestResult | WalkForwardResult
        if getattr(args, "walk_forward", False):
            result = walk_forward(
                settings, options,
                train_years=float(getattr(args, "train_years", None) or 3.0),
                test_months=int(getattr(args, "test_months", None) or 6),
                roll_months=getattr(args, "roll_months", None),
            )
        else:
            result = run_backtest(settings, options)
        paths = write_backtest_report(report_dir, result)
    except CsvDataError as exc:
        where = f", line {exc.line}" if exc.line is not None else ""
        print(f"error: bad data file {exc.path}{where}: {exc.problem}", file=sys.stderr)
        return EXIT_CONFIG
    except BacktestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    for warning in user_warnings(result):
        print(f"warning: {warning}", file=sys.stderr)
    print(render_summary(result, paths, log_file=log_file), flush=True)
    return EXIT_OK


def session_curve(snapshots: Sequence[tuple[datetime, Decimal]]) -> list[tuple[datetime, Decimal]]:
    """The first snapshot (the first session's starting equity), then the last snapshot of
    each session: returns are measured from what the account held when the run began,
    not from the first session's close (which would drop that session's gain or loss)."""
    ordered = sorted(((at, equity) for at, equity in snapshots), key=lambda point: point[0])
    if not ordered:
        return []
    last: dict[date, tuple[datetime, Decimal]] = {}
    for at, equity in ordered:
        last[to_exchange_time(at).date()] = (at, equity)
    closes = [last[d] for d in sorted(last)]
    return closes if closes[0][0] == ordered[0][0] else [ordered[0], *closes]


def report_command(settings: Any, args: argparse.Namespace) -> int:
    """``python main.py report``: :func:`report_from_journal` with the log in its file only
    (``storage.log_file``, ``--log-file``): the terminal shows the report's summary alone."""
    from core import logging_setup

    logging_setup.configure(log_file=settings.storage.log_file, level=settings.storage.log_level,
                            secrets=settings.secret_values(), console=False)
    return report_from_journal(settings, args)


def report_from_journal(settings: Any, args: argparse.Namespace) -> int:
    """``python main.py report``: the backtest's report for a paper or live run, from the
    journal's equity snapshots (the first one, then the last of each session: see
    :func:`session_curve`) and closed trades.

    Whatever the journal holds, this ends in a report or one line: rows that make no sense
    (equity zero, negative, NaN or absurd, a time without a zone, a trade with a zero
    quantity or a missing price) are left out, counted and listed in the report."""
    path = Path(settings.storage.state_db)
    if not path.exists():
        print(f"error: no journal at {path}: run the daemon first (or give --state-db)", file=sys.stderr)
        return EXIT_CONFIG
    journal = Journal(path)
    try:
        equity_rows = journal.raw_equity_rows()
        trade_rows = journal.raw_trade_rows()
        orders_journaled = journal.order_count()
        fills, orders = journal.fills(), journal.orders()
        intents = _intents(journal, orders)
    finally:
        journal.close()
    if not equity_rows:
        print(f"error: the journal at {path} has no equity snapshots yet: nothing to report", file=sys.stderr)
        return EXIT_CONFIG
    snapshots, skipped = usable_curve(equity_rows)
    trades, skipped_trades = usable_trades(trade_rows)
    skipped += skipped_trades
    if skipped:
        log.warning("report_rows_skipped", count=len(skipped), rows=[r.to_dict() for r in skipped[:50]])
    if not snapshots:
        print(f"error: none of the {len(equity_rows)} equity snapshots in {path} is usable "
              f"(first problem: {skipped[0].reason}): nothing to report", file=sys.stderr)
        return EXIT_CONFIG
    curve = session_curve(snapshots)
    daily = len({to_exchange_time(at).date() for at, _ in curve}) >= 2
    curve, ppy = (curve, 252.0) if daily else (list(snapshots), None)
    report = compute_performance(curve, trades, periods_per_year=ppy)
    if not daily:  # hours of one session annualized are noise (a Sharpe of 18 after a morning): none
        report = dataclasses.replace(report, annual_return=None, annual_volatility=None, sharpe=None,
                                     sortino=None, calmar=None)
    meta: dict[str, Any] = {
        "source": f"journal {path}",
        "mode": settings.mode,
        "period": f"{curve[0][0].isoformat()} .. {curve[-1][0].isoformat()}",
        "equity_points": f"{len(curve)} ({'the first snapshot, then the last of each session' if ppy else 'every snapshot'})",
        "orders_journaled": orders_journaled,
        "symbols": ", ".join(sorted({t.symbol for t in trades})) or "none traded",
    }
    if not daily:
        meta["annualized_ratios"] = "n/a: the journal spans one session (annual return, volatility, Sharpe, Sortino, Calmar need two or more)"
    if skipped:
        meta["journal_rows_skipped"] = len(skipped)
        meta["skipped_rows"] = [r.reason for r in skipped[:20]]
    from analytics import reporting

    out = Path(getattr(args, "out", None) or "reports")
    html_path, json_path = reporting.write_report(out, report=report, equity_curve=curve, trades=trades,
                                                  title=f"Trading report ({settings.mode})", meta=meta)
    # the backtest's CSVs too (issue 18: MFE/MAE per trade in trades.csv), from the journal's trades
    write_trades_csv(out / TRADES_NAME, with_entry_details([dataclasses.asdict(t) for t in trades], fills, orders,
                                                           intents))
    write_equity_csv(out / EQUITY_NAME, curve)
    t = report.trades
    lines = [
        f"Report {meta['period']} from {path}",
        f"  equity  {report.start_equity:,.2f} -> {report.end_equity:,.2f} ({_pct(report.total_return)}), "
        f"Sharpe {_num(report.sharpe)}, max drawdown {_share(report.max_drawdown_pct)}",
        f"  trades  {t.total} (win rate {_share(t.win_rate)}, profit factor {_num(t.profit_factor)})",
    ]
    if skipped:
        lines.append(f"  skipped {len(skipped)} journal row(s) that make no sense (listed in the report)")
    lines += comparison_lines(report.by_strategy)  # per strategy, with MFE/MAE
    lines += [f"  report  {html_path}", f"          {json_path}",
              f"          {out / TRADES_NAME}, {out / EQUITY_NAME}"]
    print("\n".join(lines), flush=True)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """Every backtest flag, for ``python -m backtest`` (main.py's subcommand has a subset)."""
    parser = argparse.ArgumentParser(prog="python -m backtest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="CSV data directory (layout of shared/data)")
    parser.add_argument("--symbols", help="comma-separated symbols (default: scanning.symbols)")
    parser.add_argument("--start", help="first session (YYYY-MM-DD)")
    parser.add_argument("--end", help="last session (YYYY-MM-DD)")
    parser.add_argument("--profile", choices=["default", "conservative", "aggressive"])
    parser.add_argument("--config", type=Path, help="TOML config file")
    parser.add_argument("--strategies", help="comma-separated strategy names")
    parser.add_argument("--report", type=Path, help="directory for report.html and summary.json")
    parser.add_argument("--commission-per-share", help="dollars per share (default 0, as at Alpaca)")
    parser.add_argument("--commission-min", help="minimum dollars per execution (default 0)")
    parser.add_argument("--commission-max-pct", help="at most this percent of an execution's value")
    parser.add_argument("--slippage-bps", help="basis points on market and stop fills (default 1)")
    parser.add_argument("--bars", choices=["auto", "daily", "intraday"], default="auto",
                        help="bar convention (default: intraday when minute bars cover the range)")
    parser.add_argument("--no-fast-forward", action="store_true",
                        help="run the loop on every session, also where it provably has nothing to do")
    parser.add_argument("--walk-forward", action="store_true", help="train/test windows (see --train-years)")
    parser.add_argument("--train-years", type=float, default=3.0, help="walk-forward train length (default 3)")
    parser.add_argument("--test-months", type=int, default=6, help="walk-forward test length (default 6)")
    parser.add_argument("--roll-months", type=int, help="walk-forward step (default: --test-months)")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default WARNING")
    parser.add_argument("--log-file", help="default REPORT_DIR/backtest.jsonl")
    return parser


def cli(argv: Sequence[str] | None = None) -> int:
    """``python -m backtest --data DIR ...`` with every flag (see :func:`build_parser`)."""
    import config

    args = build_parser().parse_args(argv)
    overrides: dict[str, Any] = {"sim.data_dir": args.data}
    if args.symbols:
        overrides["scanning.symbols"] = [s.strip() for s in args.symbols.split(",") if s.strip()]
    if args.start:
        overrides["sim.start"] = args.start
    try:
        settings = config.load_settings(config_file=args.config, profile=args.profile, overrides=overrides)
        return main(settings, args)
    except ConfigError as exc:
        print(config.format_problems(exc), file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(cli())
