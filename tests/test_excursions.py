"""MFE / MAE per trade (issue 18, item 5): the range of prices seen while a position was open,
on the ledger's round trips, in the journal, through a restart, and in ``report``."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

from structlog.testing import capture_logs

from analytics.excursions import ExcursionTracker, comparison_lines, excursions
from analytics.performance import compute_performance, normalize_trades
from analytics.reporting import render_html
from analytics.trade_ledger import FillRecord, TradeLedger
from journal.journal import Journal
from tests.test_e2e_safety_support import PassThroughAnalyzer, buy_by_hand, cycle, events, sim_stack

D = Decimal
T0 = datetime(2025, 3, 3, 15, tzinfo=timezone.utc)


def fill(side: str, qty: int, price: str, minutes: int, eid: str, strategy: str = "momentum") -> FillRecord:
    return FillRecord("AAPL", side, D(qty), D(price), T0 + timedelta(minutes=minutes), strategy, eid)  # type: ignore[arg-type]


def test_a_long_trade_carries_the_range_seen_while_it_was_open() -> None:
    tracker = ExcursionTracker()
    ledger = TradeLedger(excursions=tracker)
    ledger.apply(fill("buy", 10, "100", 0, "e1"))
    tracker.observe("AAPL", "104", "99")
    tracker.observe("AAPL", "101", "97")
    tracker.observe("MSFT", "500", "1")  # not held: ignored
    (trade,) = ledger.apply(fill("sell", 10, "102", 30, "e2"))
    assert (trade.mfe_pct, trade.mae_pct) == (D("0.04"), D("-0.03"))
    assert trade.to_dict()["mfe_pct"] == "0.04000000"
    assert not tracker.tracking("AAPL"), "flat again: the next position starts its own range"
    assert tracker.symbols() == []


def test_short_scale_in_partial_exit_and_reversal() -> None:
    tracker = ExcursionTracker()
    ledger = TradeLedger(excursions=tracker)
    ledger.apply(fill("sell", 10, "50", 0, "s1"))
    tracker.observe("AAPL", "52", "47")
    ledger.apply(fill("sell", 10, "49", 5, "s2"))  # scale in: the range carries on
    (first,) = ledger.apply(fill("buy", 5, "48", 10, "b1"))  # partial cover
    assert first.side == "short" and first.mfe_pct == D("0.06") and first.mae_pct == D("-0.04")
    tracker.observe("AAPL", "55", "48")
    trades = ledger.apply(fill("buy", 25, "54", 20, "b2"))  # covers 15 and goes long 10
    entry = (5 * D(50) + 10 * D(49)) / 15  # the VWAP of the short lots it covers
    assert [t.mae_pct for t in trades] == [((entry - 55) / entry).quantize(D("0.00000001"))]
    assert ledger.position("AAPL") == D(10)
    assert tracker.range_of("AAPL").high == tracker.range_of("AAPL").low == D(54), "the long starts fresh"


def test_without_a_tracker_excursions_are_unknown_not_zero() -> None:
    ledger = TradeLedger()
    ledger.apply(fill("buy", 1, "10", 0, "x1"))
    (trade,) = ledger.apply(fill("sell", 1, "11", 1, "x2"))
    assert trade.mfe_pct is None and trade.mae_pct is None
    assert excursions("long", D(100), D(100), D(100)) == (D(0), D(0))


def test_tracker_round_trips_through_json() -> None:
    tracker = ExcursionTracker()
    tracker.open("AAPL", D(100))
    tracker.observe("AAPL", D(103), D(98))
    restored = ExcursionTracker.from_dict(tracker.to_dict())
    assert restored.range_of("AAPL") == tracker.range_of("AAPL")
    assert ExcursionTracker.from_dict({"AAPL": {"high": "x"}}).symbols() == []


def test_journal_records_them_and_the_report_compares_strategies(tmp_path: Path) -> None:
    tracker = ExcursionTracker()
    ledger = TradeLedger(excursions=tracker)
    journal = Journal(tmp_path / "state.db")
    ledger.apply(fill("buy", 10, "100", 0, "a1", "momentum"))
    tracker.observe("AAPL", "106", "99")
    for trade in ledger.apply(fill("sell", 10, "103", 60, "a2", "momentum")):
        assert journal.record_closed_trade(trade)
    ledger.apply(fill("buy", 10, "100", 120, "b1", "mean_reversion"))
    tracker.observe("AAPL", "101", "95")
    for trade in ledger.apply(fill("sell", 10, "97", 180, "b2", "mean_reversion")):
        assert journal.record_closed_trade(trade)
    rows = journal.trades()
    journal.close()
    assert [(r["strategy"], r["mfe_pct"], r["mae_pct"]) for r in rows] == [
        ("momentum", D("0.06"), D("-0.01")), ("mean_reversion", D("0.01"), D("-0.05"))]
    records = normalize_trades(rows)
    curve = [(T0, D(100_000)), (T0 + timedelta(days=1), D(100_000))]
    report = compute_performance(curve, records)
    by = {g.key: g for g in report.by_strategy}
    assert by["momentum"].avg_mfe == 0.06 and by["mean_reversion"].avg_mae == -0.05
    assert report.to_dict()["by_strategy"][0]["avg_mfe"] is not None
    page = render_html(report=report, equity_curve=curve, trades=records, title="t", meta={})
    assert "Avg MFE" in page and "MAE" in page and "6.00 %" in page
    text = "\n".join(comparison_lines(report.by_strategy))
    assert "avg MFE" in text and "mean_reversion" in text and "-5.00%" in text


async def test_the_daemon_measures_them_from_its_bars_through_a_restart(tmp_path: Path) -> None:
    async with sim_stack(tmp_path, start="2025-03-04T10:30:00",
                         overrides={"trading.stop_loss": 0.2, "trading.take_profit": 0.4,
                                    "risk.emergency_exit_loss": 0.3}) as stack:
        await buy_by_hand(stack, {"AAPL": 0.1})
        system = stack.new_system(analyzer=PassThroughAnalyzer(stack.clock))
        system.strategies = []
        await system.startup()
        await cycle(system)
        entry = system.reconciler.excursions.range_of("AAPL")
        assert entry is not None, "the hand-bought position is tracked from its fill"
        await stack.control("shock", {"symbols": ["AAPL"], "pct": 5})
        await cycle(system)
        await cycle(system)
        high = system.reconciler.excursions.range_of("AAPL").high
        assert high > entry.high * D("1.04")

        await system.shutdown()
        stack.reopen_journal()
        system = stack.new_system(analyzer=PassThroughAnalyzer(stack.clock))
        system.strategies = []
        assert system.reconciler.excursions.range_of("AAPL").high == high, "kept in the journal"
        await system.startup()
        await stack.control("shock", {"symbols": ["AAPL"], "pct": -9})
        await cycle(system)
        await cycle(system)
        await stack.gateway.close_all_positions(cancel_orders=True)  # its protective stop too
        with capture_logs() as logs:
            await cycle(system)
        (closed,) = events(logs, "position_closed")
        assert closed["mfe_pct"] >= 4.0 and closed["mae_pct"] <= -3.0, closed
        (row,) = stack.journal.trades()
        assert row["mfe_pct"] >= D("0.04") and row["mae_pct"] <= D("-0.03")
        assert system.reconciler.excursions.symbols() == []
        await system.shutdown()


def test_a_daily_backtest_gives_every_trade_its_excursions(tmp_path: Path) -> None:
    import config
    from backtest.options import BacktestOptions
    from backtest.runner import run_backtest
    from tests.conftest import copy_daily_files

    from datetime import date

    data = copy_daily_files(tmp_path / "data", ("SPY-1d-1993-01-29-2026-08-07.csv",
                                                 "AAPL-1d-2013-01-02-2023-12-29.csv"))
    # a flat gate at 0: the break-even gates reject these months' brackets, and this is about excursions
    settings = config.load_settings(env_file=None, overrides={"scanning.symbols": ["SPY", "AAPL"],
                                                              "ai.gate_mode": "flat"})
    result = run_backtest(settings, BacktestOptions(data_dir=data, symbols=("SPY", "AAPL"), start=date(2020, 2, 3),
                                                    end=date(2020, 5, 29), slippage_bps=0.0, progress=False))
    assert result.trades
    widened = 0
    for t in result.trades:
        mfe, mae = t["mfe_pct"], t["mae_pct"]
        assert mfe is not None and mae is not None, t
        assert mfe >= 0 >= mae
        move = (t["exit_price"] - t["entry_price"]) / t["entry_price"]
        assert mae - D("0.00000001") <= move <= mfe + D("0.00000001"), "the exit is inside the range seen"
        widened += mfe > max(move, 0) or mae < min(move, 0)
    assert widened, "the daily bars while held widened some trade's range beyond its fills"
